//! tlog's integration tests, in one binary (each former test file a module): the public test
//! vectors (`tests/data/`) and whole logs verified as a monitor would. The in-memory log
//! writer they share is `testkit::log_writer`, which the benchmarks use too.

// Tests: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod cosignature_interop;
mod note_vectors;
mod vectors;
mod verify_log;
