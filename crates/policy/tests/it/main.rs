//! policy's integration tests, one binary.

mod default_policy_table;
mod engine;
