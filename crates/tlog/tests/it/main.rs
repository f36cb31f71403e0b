//! tlog's integration tests, one binary. `common` stays in `tests/common/` (the benches
//! include it too).

#[path = "../common/mod.rs"]
mod common;

mod note_vectors;
mod vectors;
mod verify_log;
