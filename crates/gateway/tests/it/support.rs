//! What the gateway's tests share: the reference cast and a real server from `testkit`, and
//! small helpers of their own.

pub use testkit::cast::*;
pub use testkit::server::{Reply, Server, claims, custodian_key, now, open_vault, signed};

/// The SHA-256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
