//! Test support shared by the workspace's integration tests (a dev-dependency only).
//!
//! - [`cast`]: the reference cast (who is vetted, who is located where) as data, for tokens
//!   minted in-process and for `sovereign token` flags alike.
//! - [`static_log`]: a static log on disk (tiles, bundles, signed checkpoint) of valid v1
//!   entries, as a monitor fetches it.
//! - [`v2_log`]: format v2 entries decided honestly by the default policies, and policy sets
//!   on disk, for replay.
//! - [`log_writer`]: an in-memory log that publishes only what changed, for `tlog`'s tests
//!   and benchmarks.
//! - [`served`]: a running gateway's log over HTTP, and waiting for its checkpoint.
//! - [`server`] (feature `server`): a real gateway in-process on a fresh setup and an HTTP
//!   request builder to talk to it.

// Test support: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

pub mod cast;
pub mod log_writer;
pub mod served;
#[cfg(feature = "server")]
pub mod server;
pub mod static_log;
pub mod v2_log;

use sha2::{Digest as _, Sha256};

/// The SHA-256 of `data` in lower-case hex, as reports and logged digests write it.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}
