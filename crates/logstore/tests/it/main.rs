//! The log store's integration tests, on SQLite and PostgreSQL.
//!
//! One integration test binary (each former test file a module): one link instead of one per
//! file. Tests may unwrap: a panic is how a test fails.

#![allow(clippy::unwrap_used)]

mod common;

mod log;
mod postgres;
mod subject_index;
