//! `witness`: a transparency-log witness, per [C2SP tlog-witness](https://c2sp.org/tlog-witness)
//! with [cosignature/v1](https://c2sp.org/tlog-cosignature) Ed25519 keys (type 0x04).
//!
//! A witness remembers, for each log it was given the key of, the latest checkpoint it
//! cosigned, and cosigns a new one only if it is consistent with it: never a smaller tree,
//! never two trees of one size with different roots, across restarts and crashes. Clients
//! that trust a checkpoint only with a quorum of cosignatures cannot then be shown a tree
//! other clients do not see.
//!
//! - [`init`] writes a key pair into a data folder, [`read_key`] reads its verifier key;
//! - [`Witness::open`] opens the folder (one process at a time: a lock file) for a set of
//!   log keys, and [`Witness::add_checkpoint`] answers a request body;
//! - [`http::serve`] serves it over HTTP;
//! - [`read_evidence`] lists the refused inconsistent checkpoints, also while it runs:
//!   proven forks (two roots signed by the log for one size) and failed consistency proofs
//!   (a suspicion only: anyone can send a genuine checkpoint with a wrong proof), each kind
//!   bounded on its own so the second can never crowd out the first.
//!
//! It uses `tlog` and `sqlitedb` only of this workspace.
//!
//! Modules: `files.rs` (the data folder: key files, lock), `store.rs` (the SQLite state),
//! `witness.rs` (the checks), `http.rs` (the server), `error.rs`.

#![warn(missing_docs)]

mod error;
mod files;
pub mod http;
mod store;
mod witness;

pub use error::{AddError, WitnessError};
pub use files::{KEY_FILE, LOCK_FILE, STATE_FILE, VKEY_FILE, init, read_key};
pub use store::{
    Dropped, Evidence, EvidenceKind, EvidenceList, Latest, MAX_EVIDENCE_BYTES_PER_LOG,
    MAX_EVIDENCE_PER_LOG,
};
pub use witness::{Witness, read_evidence, read_evidence_body, read_evidence_held};

#[cfg(test)]
mod tests;
