//! What the key handling fails with, and the reasons a data key may be unwrapped for. The two
//! live together: parsing a reason fails with a [`KeyError`], and a refusal names the reason.

use std::fmt;
use std::path::PathBuf;

/// Why a data key is being unwrapped. A key manager allows only the reasons it was configured
/// with, so that, for example, a gateway that serves requests cannot also export.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum UnwrapReason {
    /// Serving a request through the gateway (reads, and writes to a subject whose data key
    /// already exists).
    Access,
    /// Moving a subject from one site to another.
    Migration,
    /// Handing a subject's data out (for example to the subject itself).
    Export,
}

impl UnwrapReason {
    pub const ALL: [UnwrapReason; 3] = [
        UnwrapReason::Access,
        UnwrapReason::Migration,
        UnwrapReason::Export,
    ];

    /// The name used in configuration and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            UnwrapReason::Access => "access",
            UnwrapReason::Migration => "migration",
            UnwrapReason::Export => "export",
        }
    }

    /// Parses `access`, `migration` or `export`.
    pub fn parse(name: &str) -> Result<UnwrapReason, KeyError> {
        UnwrapReason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == name)
            .ok_or_else(|| {
                // Configuration text, but still kept short in case it is something pasted.
                KeyError::UnknownReason(name.chars().take(32).collect())
            })
    }
}

impl fmt::Display for UnwrapReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for UnwrapReason {
    type Err = KeyError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        UnwrapReason::parse(name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "key manager `{key_id}` refuses to unwrap a data key for `{reason}`: it allows only \
         [{allowed}]; add `{reason}` to its allowed reasons if this use is intended"
    )]
    ReasonNotAllowed {
        key_id: String,
        reason: UnwrapReason,
        /// The allowed reasons, comma-separated (empty: none).
        allowed: String,
    },

    #[error("unknown unwrap reason `{0}`: use `access`, `migration` or `export`")]
    UnknownReason(String),

    /// The key file is missing, malformed or too open. `problem` says which and how to fix it;
    /// it never quotes the file's contents.
    #[error("key file `{}`: {problem}", .path.display())]
    KeyFile { path: PathBuf, problem: String },

    #[error("custodian key store `{}`: {source}", .path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error("custodian key store `{}`: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// `path` is the file, or for a PostgreSQL key store its URL without password.
    #[error(
        "custodian key store `{}` has schema version {found}, but this build only knows versions \
         up to {supported}: open it with a newer Sovereign",
        .path.display()
    )]
    UnsupportedSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },

    /// The PostgreSQL key store (or the connection to it) failed. `target` is the URL
    /// without its password or parameters (`pgconn::Target::name`).
    #[error("custodian key store `{target}`: {}", pgconn::chain(.source.as_ref()))]
    Postgres {
        target: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// A `keys.store` setting that names no key store this build can open. The message never
    /// repeats the whole setting: a PostgreSQL URL may carry a password.
    #[error("{0}")]
    InvalidUrl(String),

    /// A PostgreSQL URL asking for what this build does not support (`sslmode=allow`, client
    /// certificates).
    #[error("{0}")]
    NotImplemented(String),

    #[error("custodian key store `{}` holds unreadable data: {detail}", .path.display())]
    Corrupt { path: PathBuf, detail: String },

    #[error(
        "custodian key store `{}`: a data key was deleted, but its bytes could not be \
         overwritten yet because another connection is reading the store; run the erasure or \
         migration again once it is idle",
        .path.display()
    )]
    NotOverwritten { path: PathBuf },

    #[error(
        "no data key for subject `{subject}` at site `{site}`: it was destroyed (the subject was \
         erased or moved away from that site) or never made, so the protected fields stored \
         there cannot be decrypted"
    )]
    NoDataKey { subject: String, site: String },

    #[error(
        "the data key of subject `{subject}` at site `{site}` was wrapped by key `{wrapped_by}`, \
         but the key manager holds key `{held}`: open the vault with the key file that wrote it"
    )]
    WrongKey {
        subject: String,
        site: String,
        wrapped_by: String,
        held: String,
    },

    #[error(
        "key manager `{key_id}` cannot unwrap this data key: it was wrapped with another key or \
         for another subject or site, or the key store was altered"
    )]
    Unwrap { key_id: String },

    #[error(
        "{0} does not decrypt with its data key: the stored value was altered, or copied from \
         another field, record, subject or site"
    )]
    Decrypt(Box<FieldPlace>),

    #[error(
        "{0} is not stored encrypted (not a `sov:enc:v1` value), so it was not written through \
         the vault; it is not returned"
    )]
    NotEncrypted(Box<FieldPlace>),

    /// The operating system's random source failed; nothing was encrypted.
    #[error("no randomness for a key or nonce: {0}")]
    Randomness(String),

    /// The AEAD refused to encrypt (only possible for absurdly large values).
    #[error("cannot encrypt {0}")]
    Seal(String),
}

impl From<pgconn::PgError> for KeyError {
    fn from(error: pgconn::PgError) -> Self {
        use pgconn::PgError;
        match error {
            PgError::InvalidUrl(message) => KeyError::InvalidUrl(message),
            PgError::NotImplemented(message) => KeyError::NotImplemented(message),
            PgError::Server { target, source } => KeyError::Postgres { target, source },
            PgError::UnsupportedSchema {
                target,
                found,
                supported,
                ..
            } => KeyError::UnsupportedSchema {
                path: target.into(),
                found,
                supported,
            },
        }
    }
}

/// Names one stored field (in errors). Boxed there, to keep errors small.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPlace {
    pub subject: String,
    pub site: String,
    pub collection: String,
    pub key: String,
    pub field: String,
}

impl fmt::Display for FieldPlace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "protected field `{}` of record {}/{}/{} at site `{}`",
            self.field, self.subject, self.collection, self.key, self.site
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_parse_and_print() {
        for reason in UnwrapReason::ALL {
            assert_eq!(UnwrapReason::parse(reason.as_str()).unwrap(), reason);
            assert_eq!(reason.to_string(), reason.as_str());
        }
        let err = UnwrapReason::parse("Access").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown unwrap reason `Access`: use `access`, `migration` or `export`"
        );
    }
}
