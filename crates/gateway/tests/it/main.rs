//! The gateway's integration tests, one binary: each module is one area, against a real
//! gateway in-process on an ephemeral port (`support`, from `testkit::server`).

// Tests: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod cdp;
mod support;

mod analytics;
mod custody;
mod dashboard;
mod data;
mod errors;
mod hardening;
mod log;
mod openapi_property;
mod proofs;
mod scenario;
mod side_doors;
