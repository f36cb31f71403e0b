//! pgconn's integration tests, one binary.

// Tests: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod tls;
