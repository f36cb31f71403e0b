//! Test support shared by the workspace's integration tests (a dev-dependency only).
//!
//! - [`cast`]: the reference cast (who is vetted, who is located where) as data, for tokens
//!   minted in-process and for `sovereign token` flags alike.

pub mod cast;
