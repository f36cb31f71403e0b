//! The Sovereign gateway: an axum service that composes authentication (`auth`), Cedar
//! decisions (the `policy` crate) and the residency-pinned vault (the `vault` crate) into one
//! request path.
//!
//! Where things are (ARCHITECTURE.md has the whole map):
//! - `pipeline`: the request path every access to subject data takes (decide, log, permit);
//! - `routes`: the handlers, one module per area, thin callers of the pipeline, and the router;
//! - `http`: the HTTP vocabulary they share (extractors, errors, responses, headers, roles);
//! - `start`: loading everything and serving; `state`: what every handler shares;
//! - `config` the configuration file; `setup` the default setup that `sovereign init` writes.

// `ApiError` carries a JSON body's extra members; it is built once per failed request, so
// boxing it to shrink `Result` would buy nothing measurable.
#![allow(clippy::result_large_err)]

pub mod algorithms;
pub mod analytics;
pub mod auth;
pub mod config;
pub mod cursor;
pub mod custody_log;
pub mod entry;
pub mod fleet_view;
pub mod http;
pub mod pipeline;
pub mod proof;
pub mod pseudonym;
pub mod routes;
pub mod serve;
pub mod setup;
pub mod start;
pub mod state;
pub mod witnessing;

pub use start::{
    Gateway, PolicyFiles, StartOptions, open_custody, open_envelope, open_log, read_policy_files,
};
pub use state::AppState;
