//! Test support shared by the workspace's integration tests (a dev-dependency only).
//!
//! - [`cast`]: the reference cast (who is vetted, who is located where) as data, for tokens
//!   minted in-process and for `sovereign token` flags alike.
//! - [`server`] (feature `server`): a real gateway in-process on a fresh setup and an HTTP
//!   request builder to talk to it.

pub mod cast;
#[cfg(feature = "server")]
pub mod server;
