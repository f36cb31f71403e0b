//! The monitor crate's integration tests, in one binary: the library used as a third-party
//! monitor uses it.

// Tests: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod library;
mod subject;
