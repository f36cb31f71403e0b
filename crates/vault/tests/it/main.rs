//! The vault's integration tests: residency, encryption, paging, migration, the stores.
//!
//! One integration test binary (each former test file a module): one link instead of one per
//! file. Tests may unwrap: a panic is how a test fails.

#![allow(clippy::unwrap_used)]

mod common;

mod encryption;
mod migration;
mod paging;
mod placements;
mod postgres;
mod residency_property;
mod vault;
