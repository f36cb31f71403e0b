//! The custody crate's integration tests: its rules, and its state refusing tampering.
//!
//! One integration test binary (each former test file a module): one link instead of one per
//! file. Tests may unwrap: a panic is how a test fails.

#![allow(clippy::unwrap_used)]

mod common;

mod custody;
mod tampering;
