//! The `sovereign` binary's integration tests, in one test binary (each former test file a
//! module): one link of the whole gateway instead of one per file.
//!
//! Shared helpers are in [`support`] (this crate's: the binary, servers, tokens, load) and in
//! the `testkit` crate (the workspace's: the reference cast, static logs, served logs).

// Tests: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod support;

mod algorithms;
mod audit;
mod audit_e2e;
mod bench;
mod cli;
mod crash;
mod custody_cli;
mod demo;
mod fleet;
mod freshness;
mod history;
mod no_values;
mod policy_prove;
mod postgres_failover;
mod postgres_site;
mod replay;
mod report;
mod residency;
mod witness;
mod witnessed;
