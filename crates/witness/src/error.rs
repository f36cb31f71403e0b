//! What can go wrong: opening a witness ([`WitnessError`]) and one `add-checkpoint` request
//! ([`AddError`], each with its HTTP status from c2sp.org/tlog-witness).

use std::path::PathBuf;

/// Why a witness could not be set up, opened or read.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    /// `init` was given a name a key cannot have.
    #[error("invalid witness name {0:?}: it must be non-empty, without spaces or '+'")]
    BadName(String),
    /// `init` found a key already: replacing it would orphan every cosignature made with it.
    #[error("{} exists already: a witness key is never replaced (remove it yourself if you mean to)", .0.display())]
    KeyExists(PathBuf),
    /// No key in the data folder.
    #[error("no witness key at {}: `sovereign witness init --data DIR --name NAME` writes one", .0.display())]
    NoKey(PathBuf),
    /// A key file that does not hold a witness signer key.
    #[error("{}: {reason}", path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Another witness holds the data folder's lock.
    #[error("another witness is running on {} (it holds {}): one witness per data folder", .0.display(), crate::files::LOCK_FILE)]
    Locked(PathBuf),
    /// The trusted log keys cannot be used together.
    #[error("log keys: {0}")]
    Logs(String),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The state file could not be opened, migrated or read.
    #[error("{}: {source}", path.display())]
    Store {
        /// The state file.
        path: PathBuf,
        /// The error.
        source: sqlitedb::Error,
    },
}

/// Why an `add-checkpoint` request was not cosigned. [`AddError::status`] is the HTTP
/// status c2sp.org/tlog-witness prescribes; the `Display` text says what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    /// The body is not an `add-checkpoint` request, or its checkpoint is not a checkpoint
    /// (400).
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The checkpoint's origin names no log this witness was given (404).
    #[error("unknown log {0:?}: this witness does not witness it")]
    UnknownOrigin(String),
    /// No signature by a trusted key of the log verifies (403).
    #[error("no valid signature by a trusted key of {origin:?}: {reason}")]
    Untrusted {
        /// The checkpoint's origin.
        origin: String,
        /// What the note check said.
        reason: String,
    },
    /// The old size is above the checkpoint's size (400).
    #[error("old size {old} is above the checkpoint's size {size}")]
    OldSizeAbove {
        /// The request's old size.
        old: u64,
        /// The checkpoint's size.
        size: u64,
    },
    /// The old size is not the size of the latest checkpoint cosigned for the log (409; the
    /// answer tells `latest`).
    #[error(
        "old size {old} is not the size of the latest checkpoint cosigned for this log ({latest})"
    )]
    Conflict {
        /// The request's old size.
        old: u64,
        /// The size of the latest cosigned checkpoint (0 if none).
        latest: u64,
    },
    /// A checkpoint of the size of the latest cosigned one with another root hash: a fork
    /// (409; kept as evidence).
    #[error(
        "checkpoint of size {size} has another root hash than the one cosigned at that size: the log forked"
    )]
    Fork {
        /// The size of both trees.
        size: u64,
    },
    /// The consistency proof does not verify (422; kept as evidence).
    #[error("consistency proof from size {old} to {size} does not verify: {reason}")]
    Inconsistent {
        /// The request's old size.
        old: u64,
        /// The checkpoint's size.
        size: u64,
        /// What the check said.
        reason: String,
    },
    /// The state could not be read or written; nothing was cosigned (500).
    #[error("the witness cannot read or write its state: {0}")]
    Storage(String),
}

impl AddError {
    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            AddError::Malformed(_) | AddError::OldSizeAbove { .. } => 400,
            AddError::Untrusted { .. } => 403,
            AddError::UnknownOrigin(_) => 404,
            AddError::Conflict { .. } | AddError::Fork { .. } => 409,
            AddError::Inconsistent { .. } => 422,
            AddError::Storage(_) => 500,
        }
    }

    /// For a 409: the size of the latest checkpoint cosigned for the log, which the answer's
    /// `text/x.tlog.size` body must carry.
    pub fn latest_size(&self) -> Option<u64> {
        match self {
            AddError::Conflict { latest, .. } => Some(*latest),
            AddError::Fork { size } => Some(*size),
            _ => None,
        }
    }
}
