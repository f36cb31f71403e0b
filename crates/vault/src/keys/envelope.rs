//! Encryption at rest of protected fields: envelope encryption with per-(subject, site) data
//! keys, wrapped by the custodian's key-encryption key.
//!
//! - A [`KeyManager`] holds the custodian's key-encryption key (KEK) and never hands it out:
//!   it only wraps and unwraps data keys. [`LocalKeyManager`] keeps the KEK in a file; a cloud
//!   KMS or an HSM can implement the same trait. Unwrapping names an [`UnwrapReason`], and a
//!   manager refuses every reason it was not configured to allow.
//! - A [`DataKeyStore`] is the custodian's SQLite file of wrapped data keys, one per
//!   (subject, site). It is separate from the site stores, so a copy of a site store holds no
//!   key, and it deletes with `secure_delete` so a destroyed key's bytes are overwritten:
//!   destroying a key makes every copy of the data it protected unreadable (crypto-shredding).
//! - An [`Envelope`] ties the two together and seals field values: a protected field is stored
//!   as `"sov:enc:v1:" + base64(nonce || ciphertext)`, with the field's place (subject, site,
//!   collection, record key, field name) as associated data, so a ciphertext copied to another
//!   place does not decrypt.
//!
//! Both AEADs are XChaCha20-Poly1305 with a random 192-bit nonce: random nonces that long
//! never collide in practice, so no nonce counter has to be kept durable.
//!
//! Errors name subjects, sites, collections, fields and key ids, never a value or a key byte.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use rand::rngs::OsRng;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::sqlite::{DurableOpenError, open_durable};
use serde_json::Value;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// A plaintext data key. Zeroed when dropped.
pub(crate) type DataKey = Zeroizing<[u8; 32]>;

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

/// The custodian's key-encryption key, behind an interface that never hands it out.
pub trait KeyManager: Send + Sync {
    /// Names the key-encryption key (never derived reversibly from it). Stored next to every
    /// data key it wraps, so that a mismatch is reported as such.
    fn key_id(&self) -> &str;

    /// Encrypts a data key; `context` is bound to the result as associated data.
    fn wrap(&self, data_key: &[u8; 32], context: &[u8]) -> Result<Vec<u8>, KeyError>;

    /// Decrypts a data key wrapped with the same `context`. Refuses with
    /// [`KeyError::ReasonNotAllowed`] unless `reason` is allowed (an empty list allows none).
    fn unwrap(
        &self,
        wrapped: &[u8],
        context: &[u8],
        reason: UnwrapReason,
    ) -> Result<Zeroizing<[u8; 32]>, KeyError>;
}

/// A key-encryption key kept in a local file of 64 hex characters, readable by its owner only.
pub struct LocalKeyManager {
    kek: Zeroizing<[u8; 32]>,
    key_id: String,
    allowed: Vec<UnwrapReason>,
}

impl fmt::Debug for LocalKeyManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("LocalKeyManager")
            .field("key_id", &self.key_id)
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

/// A key file is 64 hex characters and perhaps a line end; anything much longer is not one.
const MAX_KEY_FILE_LEN: u64 = 256;

impl LocalKeyManager {
    /// Reads the key-encryption key from `path` (64 hex characters, surrounding whitespace
    /// ignored). On Unix the file must not be readable by group or others. `allowed_reasons`
    /// are the reasons [`KeyManager::unwrap`] accepts; empty allows none.
    pub fn from_file(
        path: &Path,
        allowed_reasons: Vec<UnwrapReason>,
    ) -> Result<LocalKeyManager, KeyError> {
        let problem = |problem: String| KeyError::KeyFile {
            path: path.to_path_buf(),
            problem,
        };
        let mut file = std::fs::File::open(path).map_err(|e| {
            problem(format!(
                "cannot open it ({e}): create one with `LocalKeyManager::generate_key_file` \
                 (`sovereign init` does) or point the configuration at the existing one"
            ))
        })?;
        let metadata = file
            .metadata()
            .map_err(|e| problem(format!("cannot read its metadata ({e})")))?;
        check_private(&metadata).map_err(problem)?;
        if metadata.len() > MAX_KEY_FILE_LEN {
            return Err(problem(format!(
                "it has {} bytes, but a key file holds 64 hex characters",
                metadata.len()
            )));
        }
        let mut text = Zeroizing::new(String::new());
        file.read_to_string(&mut text)
            .map_err(|e| problem(format!("cannot read it ({e})")))?;
        let hex_text = text.trim();
        if hex_text.len() != 64 {
            return Err(problem(format!(
                "it holds {} characters, but a key is 64 hex characters",
                hex_text.chars().count()
            )));
        }
        let mut kek = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex_text, kek.as_mut_slice())
            .map_err(|_| problem("it is not 64 hex characters (0-9, a-f)".into()))?;
        Ok(LocalKeyManager::from_key(kek, allowed_reasons))
    }

    /// Writes a fresh random key-encryption key to `path` (64 hex characters and a line end),
    /// creating its folder if needed, with mode 0600 on Unix. An existing file is never
    /// overwritten: every data key wrapped with it would become unreadable.
    pub fn generate_key_file(path: &Path) -> Result<(), KeyError> {
        let problem = |problem: String| KeyError::KeyFile {
            path: path.to_path_buf(),
            problem,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| problem(format!("cannot create its folder ({e})")))?;
        }
        let mut kek = Zeroizing::new([0u8; 32]);
        random_bytes(kek.as_mut_slice())?;
        let mut text = Zeroizing::new(hex::encode(kek.as_slice()));
        text.push('\n');

        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                problem(
                    "it already exists, and a key file is never overwritten: every data key \
                     wrapped with it would become unreadable"
                        .into(),
                )
            } else {
                problem(format!("cannot create it ({e})"))
            }
        })?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| problem(format!("cannot write it ({e})")))?;
        sync_parent(path).map_err(|e| problem(format!("cannot sync its folder ({e})")))
    }

    fn from_key(kek: Zeroizing<[u8; 32]>, allowed_reasons: Vec<UnwrapReason>) -> Self {
        // A fingerprint, not the key: a one-way hash of it under a fixed label.
        let mut hasher = Sha256::new();
        hasher.update(b"sov:kek-id:v1\0");
        hasher.update(kek.as_slice());
        let key_id = format!("local:{}", &hex::encode(hasher.finalize())[..16]);
        let mut allowed = allowed_reasons;
        allowed.sort();
        allowed.dedup();
        LocalKeyManager {
            kek,
            key_id,
            allowed,
        }
    }

    /// The reasons this manager unwraps for.
    pub fn allowed_reasons(&self) -> &[UnwrapReason] {
        &self.allowed
    }
}

impl KeyManager for LocalKeyManager {
    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn wrap(&self, data_key: &[u8; 32], context: &[u8]) -> Result<Vec<u8>, KeyError> {
        aead_seal(&self.kek, data_key, context).map_err(|e| match e {
            SealError::Randomness(e) => *e,
            SealError::Aead => KeyError::Seal("a data key".into()),
        })
    }

    fn unwrap(
        &self,
        wrapped: &[u8],
        context: &[u8],
        reason: UnwrapReason,
    ) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        // The reason is checked before any decryption is attempted.
        if !self.allowed.contains(&reason) {
            return Err(KeyError::ReasonNotAllowed {
                key_id: self.key_id.clone(),
                reason,
                allowed: self
                    .allowed
                    .iter()
                    .map(UnwrapReason::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let unwrap_error = || KeyError::Unwrap {
            key_id: self.key_id.clone(),
        };
        let plain = aead_open(&self.kek, wrapped, context).ok_or_else(unwrap_error)?;
        let mut key = Zeroizing::new([0u8; 32]);
        if plain.len() != key.len() {
            return Err(unwrap_error());
        }
        key.copy_from_slice(&plain);
        Ok(key)
    }
}

/// Refuses a key file that group or others can read: the key decrypts every protected field.
#[cfg(unix)]
fn check_private(metadata: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "it is readable or writable by group or others (mode {mode:04o}): restrict it with \
             `chmod 600`"
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_metadata: &std::fs::Metadata) -> Result<(), String> {
    Ok(())
}

/// Makes a new file's directory entry durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    if let Some(parent) = path.parent() {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        std::fs::File::open(parent)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn random_bytes(out: &mut [u8]) -> Result<(), KeyError> {
    OsRng
        .try_fill_bytes(out)
        .map_err(|e| KeyError::Randomness(e.to_string()))
}

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

enum SealError {
    Randomness(Box<KeyError>),
    Aead,
}

/// XChaCha20-Poly1305 under `key` with a fresh random nonce: `nonce || ciphertext || tag`.
fn aead_seal(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut nonce = [0u8; NONCE_LEN];
    random_bytes(&mut nonce).map_err(|e| SealError::Randomness(Box::new(e)))?;
    let cipher = XChaCha20Poly1305::new(key.into());
    let sealed = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| SealError::Aead)?;
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens what [`aead_seal`] made; `None` if it does not authenticate under `key` and `aad`.
fn aead_open(key: &[u8; 32], sealed: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
    let cipher = XChaCha20Poly1305::new(key.into());
    cipher
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
        .map(Zeroizing::new)
}

/// A data key as the key store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// The key manager's [`KeyManager::key_id`] that wrapped it.
    pub key_id: String,
    pub wrapped: Vec<u8>,
}

/// The schema this build writes and reads.
const KEY_STORE_SCHEMA_VERSION: i64 = 1;
const KEY_STORE_SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS data_keys (
        subject TEXT NOT NULL,
        site    TEXT NOT NULL,
        key_id  TEXT NOT NULL,
        wrapped BLOB NOT NULL,
        PRIMARY KEY (subject, site)
    ) WITHOUT ROWID;
";

/// The custodian's store of wrapped data keys, one per (subject, site), in one SQLite file.
///
/// - `secure_delete`: a deleted key's bytes are overwritten with zeros, and each deletion is
///   followed by a truncating WAL checkpoint, so the bytes are gone from both files.
/// - WAL with `synchronous=FULL`: a key that was used to encrypt is on disk before the
///   ciphertext is.
/// - One connection: key look-ups are short, and a single connection lets the checkpoint after
///   a deletion run without waiting for this process's own readers.
pub struct DataKeyStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl fmt::Debug for DataKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKeyStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl DataKeyStore {
    /// Opens (or creates, with its folders) the key store at `path`.
    pub fn open(path: &Path) -> Result<DataKeyStore, KeyError> {
        let sql_error = |source| KeyError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = open_durable(path).map_err(|e| match e {
            DurableOpenError::Io(source) => KeyError::Io {
                path: path.to_path_buf(),
                source,
            },
            DurableOpenError::Sqlite(source) => sql_error(source),
            DurableOpenError::NotWal(detail) => KeyError::Corrupt {
                path: path.to_path_buf(),
                detail,
            },
        })?;
        // Crypto-shredding rests on this setting, so it is read back rather than assumed.
        let secure: i64 = conn
            .query_row("PRAGMA secure_delete", [], |row| row.get(0))
            .map_err(sql_error)?;
        if secure != 1 {
            return Err(KeyError::Corrupt {
                path: path.to_path_buf(),
                detail: "this SQLite build cannot turn `secure_delete` on, so destroyed keys \
                         would stay readable in the file"
                    .into(),
            });
        }
        Self::migrate(path, &mut conn)?;
        Ok(DataKeyStore {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    fn migrate(path: &Path, conn: &mut Connection) -> Result<(), KeyError> {
        let sql_error = |source| KeyError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error)?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(sql_error)?;
        match version {
            0 => {
                tx.execute_batch(KEY_STORE_SCHEMA).map_err(sql_error)?;
                tx.pragma_update(None, "user_version", KEY_STORE_SCHEMA_VERSION)
                    .map_err(sql_error)?;
            }
            KEY_STORE_SCHEMA_VERSION => {}
            found => {
                return Err(KeyError::UnsupportedSchema {
                    path: path.to_path_buf(),
                    found,
                    supported: KEY_STORE_SCHEMA_VERSION,
                });
            }
        }
        tx.commit().map_err(sql_error)
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with_conn<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, KeyError> {
        // A panic elsewhere while holding the lock leaves the connection usable: SQLite rolls
        // back any statement that did not finish.
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        f(&conn).map_err(|source| KeyError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    /// The wrapped data key of (subject, site), if there is one.
    pub fn get(&self, subject: &str, site: &str) -> Result<Option<WrappedKey>, KeyError> {
        self.with_conn(|conn| {
            conn.prepare_cached(
                "SELECT key_id, wrapped FROM data_keys WHERE subject = ?1 AND site = ?2",
            )?
            .query_row([subject, site], |row| {
                Ok(WrappedKey {
                    key_id: row.get(0)?,
                    wrapped: row.get(1)?,
                })
            })
            .optional()
        })
    }

    /// The sites where `subject` has a data key, sorted.
    pub fn sites_of(&self, subject: &str) -> Result<Vec<String>, KeyError> {
        self.with_conn(|conn| {
            conn.prepare_cached("SELECT site FROM data_keys WHERE subject = ?1 ORDER BY site")?
                .query_map([subject], |row| row.get(0))?
                .collect()
        })
    }

    /// Stores `key` for (subject, site) unless one is already there, and returns the one that
    /// is stored afterwards: two writers creating the same key concurrently both end up using
    /// the first one, so nothing gets encrypted under a key that is then replaced.
    fn insert_first(
        &self,
        subject: &str,
        site: &str,
        key: &WrappedKey,
    ) -> Result<WrappedKey, KeyError> {
        self.with_conn(|conn| {
            conn.prepare_cached(
                "INSERT INTO data_keys (subject, site, key_id, wrapped) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (subject, site) DO NOTHING",
            )?
            .execute(params![subject, site, key.key_id, key.wrapped])?;
            conn.prepare_cached(
                "SELECT key_id, wrapped FROM data_keys WHERE subject = ?1 AND site = ?2",
            )?
            .query_row([subject, site], |row| {
                Ok(WrappedKey {
                    key_id: row.get(0)?,
                    wrapped: row.get(1)?,
                })
            })
        })
    }

    /// Deletes the keys of `subject` (at `site`, or at every site) and overwrites their bytes;
    /// how many were deleted. Running it again is harmless and finishes an overwrite that an
    /// earlier run could not do.
    fn delete(&self, subject: &str, site: Option<&str>) -> Result<u64, KeyError> {
        let deleted = self.with_conn(|conn| {
            let deleted = match site {
                Some(site) => conn
                    .prepare_cached("DELETE FROM data_keys WHERE subject = ?1 AND site = ?2")?
                    .execute([subject, site])?,
                None => conn
                    .prepare_cached("DELETE FROM data_keys WHERE subject = ?1")?
                    .execute([subject])?,
            };
            Ok(deleted as u64)
        })?;
        self.overwrite_wal()?;
        Ok(deleted)
    }

    /// `secure_delete` zeroes a deleted key in its page, but the WAL still holds the frames
    /// written when the key was inserted. A truncating checkpoint copies the zeroed pages into
    /// the database file and empties the WAL.
    fn overwrite_wal(&self) -> Result<(), KeyError> {
        let busy: i64 = self.with_conn(|conn| {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
        })?;
        if busy != 0 {
            return Err(KeyError::NotOverwritten {
                path: self.path.clone(),
            });
        }
        Ok(())
    }
}

/// Where a field value lives; bound to its ciphertext as associated data.
pub(crate) struct Place<'a> {
    pub subject: &'a str,
    pub site: &'a str,
    pub collection: &'a str,
    pub key: &'a str,
    pub field: &'a str,
}

impl Place<'_> {
    /// `subject \0 site \0 collection \0 key \0 field`. Ids and names cannot contain `\0`, so
    /// two different places never give the same bytes.
    fn associated_data(&self) -> Vec<u8> {
        [
            self.subject,
            self.site,
            self.collection,
            self.key,
            self.field,
        ]
        .join("\0")
        .into_bytes()
    }

    fn named(&self) -> Box<FieldPlace> {
        Box::new(FieldPlace {
            subject: self.subject.into(),
            site: self.site.into(),
            collection: self.collection.into(),
            key: self.key.into(),
            field: self.field.into(),
        })
    }
}

/// The prefix of an encrypted field value.
pub(crate) const ENCRYPTED_PREFIX: &str = "sov:enc:v1:";

/// A key manager and the key store it wraps data keys for.
#[derive(Clone)]
pub struct Envelope {
    manager: Arc<dyn KeyManager>,
    store: Arc<DataKeyStore>,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("key_id", &self.manager.key_id())
            .field("store", &self.store.path)
            .finish()
    }
}

impl Envelope {
    pub fn new(manager: Arc<dyn KeyManager>, store: DataKeyStore) -> Envelope {
        Envelope {
            manager,
            store: Arc::new(store),
        }
    }

    /// The key manager's key id.
    pub fn key_id(&self) -> &str {
        self.manager.key_id()
    }

    /// The custodian's key store.
    pub fn key_store(&self) -> &DataKeyStore {
        &self.store
    }

    /// The sites where `subject` has a data key, sorted.
    pub fn keys_of(&self, subject: &str) -> Result<Vec<String>, KeyError> {
        self.store.sites_of(subject)
    }

    /// Destroys the data key of (subject, site): whatever it encrypted, in this store or in
    /// any copy of it, can no longer be decrypted. Whether there was one.
    pub fn destroy(&self, subject: &str, site: &str) -> Result<bool, KeyError> {
        Ok(self.store.delete(subject, Some(site))? > 0)
    }

    /// Destroys every data key of `subject`; how many there were.
    pub fn destroy_all(&self, subject: &str) -> Result<u64, KeyError> {
        self.store.delete(subject, None)
    }

    /// The data key of (subject, site), unwrapped for `reason`.
    pub(crate) fn data_key(
        &self,
        subject: &str,
        site: &str,
        reason: UnwrapReason,
    ) -> Result<DataKey, KeyError> {
        let stored = self
            .store
            .get(subject, site)?
            .ok_or_else(|| KeyError::NoDataKey {
                subject: subject.into(),
                site: site.into(),
            })?;
        self.unwrap_stored(subject, site, &stored, reason)
    }

    /// The data key of (subject, site), made, wrapped and stored first if there is none. An
    /// existing key is unwrapped for `reason`; a new one needs no unwrapping.
    pub(crate) fn data_key_or_create(
        &self,
        subject: &str,
        site: &str,
        reason: UnwrapReason,
    ) -> Result<DataKey, KeyError> {
        if let Some(stored) = self.store.get(subject, site)? {
            return self.unwrap_stored(subject, site, &stored, reason);
        }
        let mut fresh = Zeroizing::new([0u8; 32]);
        random_bytes(fresh.as_mut_slice())?;
        let ours = WrappedKey {
            key_id: self.manager.key_id().to_string(),
            wrapped: self.manager.wrap(&fresh, &wrap_context(subject, site))?,
        };
        let stored = self.store.insert_first(subject, site, &ours)?;
        if stored == ours {
            Ok(fresh)
        } else {
            // Another writer created it first: use theirs.
            self.unwrap_stored(subject, site, &stored, reason)
        }
    }

    fn unwrap_stored(
        &self,
        subject: &str,
        site: &str,
        stored: &WrappedKey,
        reason: UnwrapReason,
    ) -> Result<DataKey, KeyError> {
        if stored.key_id != self.manager.key_id() {
            return Err(KeyError::WrongKey {
                subject: subject.into(),
                site: site.into(),
                wrapped_by: stored.key_id.clone(),
                held: self.manager.key_id().into(),
            });
        }
        self.manager
            .unwrap(&stored.wrapped, &wrap_context(subject, site), reason)
    }

    /// Encrypts one field value for its place.
    pub(crate) fn seal_field(
        &self,
        key: &DataKey,
        place: &Place<'_>,
        value: &Value,
    ) -> Result<Value, KeyError> {
        let plaintext = Zeroizing::new(serde_json::to_vec(value).map_err(|_| {
            KeyError::Seal(format!(
                "field `{}` of record {}/{}/{}: it cannot be encoded as JSON",
                place.field, place.subject, place.collection, place.key
            ))
        })?);
        let sealed = aead_seal(key, &plaintext, &place.associated_data()).map_err(|e| match e {
            SealError::Randomness(e) => *e,
            SealError::Aead => KeyError::Seal(format!(
                "field `{}` of record {}/{}/{}",
                place.field, place.subject, place.collection, place.key
            )),
        })?;
        Ok(Value::String(format!(
            "{ENCRYPTED_PREFIX}{}",
            BASE64.encode(sealed)
        )))
    }

    /// Decrypts one field value stored at `place`. Anything but a value sealed for exactly
    /// this place under this key is an error, never a value.
    pub(crate) fn open_field(
        &self,
        key: &DataKey,
        place: &Place<'_>,
        stored: &Value,
    ) -> Result<Value, KeyError> {
        let encoded = stored
            .as_str()
            .and_then(|text| text.strip_prefix(ENCRYPTED_PREFIX))
            .ok_or_else(|| KeyError::NotEncrypted(place.named()))?;
        let failed = || KeyError::Decrypt(place.named());
        let sealed = BASE64.decode(encoded).map_err(|_| failed())?;
        let plaintext = aead_open(key, &sealed, &place.associated_data()).ok_or_else(failed)?;
        serde_json::from_slice(&plaintext).map_err(|_| failed())
    }
}

/// What a data key is wrapped for: a wrapped key moved to another subject's or site's row in
/// the key store does not unwrap.
fn wrap_context(subject: &str, site: &str) -> Vec<u8> {
    format!("sov:dek:v1\0{subject}\0{site}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manager(dir: &Path, allowed: Vec<UnwrapReason>) -> LocalKeyManager {
        let path = dir.join("kek.hex");
        if !path.exists() {
            LocalKeyManager::generate_key_file(&path).unwrap();
        }
        LocalKeyManager::from_file(&path, allowed).unwrap()
    }

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

    #[test]
    fn wrap_round_trip_and_context_binding() {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(dir.path(), vec![UnwrapReason::Access]);
        let data_key = [7u8; 32];
        let wrapped = m.wrap(&data_key, b"ctx").unwrap();
        assert_eq!(wrapped.len(), NONCE_LEN + 32 + TAG_LEN);
        assert_eq!(
            *m.unwrap(&wrapped, b"ctx", UnwrapReason::Access).unwrap(),
            data_key
        );
        assert!(matches!(
            m.unwrap(&wrapped, b"other", UnwrapReason::Access),
            Err(KeyError::Unwrap { .. })
        ));
        let mut tampered = wrapped.clone();
        tampered[30] ^= 1;
        assert!(matches!(
            m.unwrap(&tampered, b"ctx", UnwrapReason::Access),
            Err(KeyError::Unwrap { .. })
        ));
        assert!(matches!(
            m.unwrap(&wrapped[..10], b"ctx", UnwrapReason::Access),
            Err(KeyError::Unwrap { .. })
        ));
        // Random nonces: wrapping twice gives different bytes.
        assert_ne!(m.wrap(&data_key, b"ctx").unwrap(), wrapped);
    }

    #[test]
    fn reasons_are_enforced_before_decryption() {
        let dir = tempfile::tempdir().unwrap();
        let open = manager(dir.path(), UnwrapReason::ALL.to_vec());
        let wrapped = open.wrap(&[1u8; 32], b"c").unwrap();
        let none = manager(dir.path(), vec![]);
        for reason in UnwrapReason::ALL {
            let err = none.unwrap(&wrapped, b"c", reason).unwrap_err();
            assert!(
                matches!(&err, KeyError::ReasonNotAllowed { reason: r, .. } if *r == reason),
                "{err:?}"
            );
        }
        let only_access = manager(dir.path(), vec![UnwrapReason::Access]);
        let err = only_access
            .unwrap(&wrapped, b"c", UnwrapReason::Export)
            .unwrap_err();
        assert!(
            err.to_string().contains("allows only [access]")
                && err.to_string().contains("add `export`"),
            "{err}"
        );
        // Even garbage is refused for the reason first.
        assert!(matches!(
            only_access.unwrap(b"x", b"c", UnwrapReason::Migration),
            Err(KeyError::ReasonNotAllowed { .. })
        ));
    }

    #[test]
    fn key_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deep/kek.hex");
        LocalKeyManager::generate_key_file(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let err = LocalKeyManager::generate_key_file(&path).unwrap_err();
        assert!(err.to_string().contains("never overwritten"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);

        let a = LocalKeyManager::from_file(&path, vec![]).unwrap();
        let b = LocalKeyManager::from_file(&path, vec![]).unwrap();
        assert_eq!(a.key_id(), b.key_id());
        assert!(a.key_id().starts_with("local:"));
        assert!(!format!("{a:?}").contains(text.trim()));
        assert!(!a.key_id().contains(&text[..16]));

        let err = LocalKeyManager::from_file(&dir.path().join("missing"), vec![]).unwrap_err();
        assert!(err.to_string().contains("generate_key_file"), "{err}");

        for (name, content) in [
            ("short", "abcd\n"),
            ("nothex", &"zz".repeat(32)),
            ("long", &"a".repeat(300)),
        ] {
            let bad = dir.path().join(name);
            write_private(&bad, content);
            let err = LocalKeyManager::from_file(&bad, vec![]).unwrap_err();
            assert!(matches!(err, KeyError::KeyFile { .. }), "{name}: {err:?}");
            assert!(!err.to_string().contains("zz"), "{err}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = LocalKeyManager::from_file(&path, vec![]).unwrap_err();
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
    }

    fn write_private(path: &Path, content: &str) {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        options
            .open(path)
            .unwrap()
            .write_all(content.as_bytes())
            .unwrap();
    }

    #[test]
    fn key_store_settings_and_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = DataKeyStore::open(&dir.path().join("keys/keys.db")).unwrap();
        {
            let conn = store.conn.lock().unwrap();
            let secure: i64 = conn
                .query_row("PRAGMA secure_delete", [], |r| r.get(0))
                .unwrap();
            let mode: String = conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            let sync: i64 = conn
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap();
            assert_eq!((secure, mode.as_str(), sync), (1, "wal", 2));
        }
        let m: Arc<dyn KeyManager> = Arc::new(manager(dir.path(), vec![UnwrapReason::Access]));
        let envelope = Envelope::new(m, store);
        let first = envelope
            .data_key_or_create("alice", "us", UnwrapReason::Access)
            .unwrap();
        let again = envelope
            .data_key_or_create("alice", "us", UnwrapReason::Access)
            .unwrap();
        assert_eq!(*first, *again);
        assert_eq!(
            *envelope
                .data_key("alice", "us", UnwrapReason::Access)
                .unwrap(),
            *first
        );
        envelope
            .data_key_or_create("alice", "sg", UnwrapReason::Access)
            .unwrap();
        assert_eq!(envelope.keys_of("alice").unwrap(), vec!["sg", "us"]);
        assert!(envelope.destroy("alice", "us").unwrap());
        assert!(!envelope.destroy("alice", "us").unwrap());
        assert!(matches!(
            envelope.data_key("alice", "us", UnwrapReason::Access),
            Err(KeyError::NoDataKey { .. })
        ));
        assert_eq!(envelope.destroy_all("alice").unwrap(), 1);
        assert_eq!(envelope.keys_of("alice").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_wrapped_key_moved_to_another_row_does_not_unwrap() {
        let dir = tempfile::tempdir().unwrap();
        let m: Arc<dyn KeyManager> = Arc::new(manager(dir.path(), vec![UnwrapReason::Access]));
        let envelope = Envelope::new(m, DataKeyStore::open(&dir.path().join("k.db")).unwrap());
        envelope
            .data_key_or_create("alice", "us", UnwrapReason::Access)
            .unwrap();
        let alice = envelope.store.get("alice", "us").unwrap().unwrap();
        envelope.store.insert_first("bob", "us", &alice).unwrap();
        assert!(matches!(
            envelope.data_key("bob", "us", UnwrapReason::Access),
            Err(KeyError::Unwrap { .. })
        ));
    }

    #[test]
    fn another_kek_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        let a: Arc<dyn KeyManager> = Arc::new(manager(dir.path(), vec![UnwrapReason::Access]));
        Envelope::new(a, DataKeyStore::open(&path).unwrap())
            .data_key_or_create("alice", "us", UnwrapReason::Access)
            .unwrap();
        let b: Arc<dyn KeyManager> = Arc::new(manager(other.path(), vec![UnwrapReason::Access]));
        let err = Envelope::new(b, DataKeyStore::open(&path).unwrap())
            .data_key("alice", "us", UnwrapReason::Access)
            .unwrap_err();
        assert!(matches!(err, KeyError::WrongKey { .. }), "{err:?}");
        assert!(err.to_string().contains("key file that wrote it"), "{err}");
    }

    #[test]
    fn fields_are_bound_to_their_place() {
        let dir = tempfile::tempdir().unwrap();
        let m: Arc<dyn KeyManager> = Arc::new(manager(dir.path(), vec![UnwrapReason::Access]));
        let envelope = Envelope::new(m, DataKeyStore::open(&dir.path().join("k.db")).unwrap());
        let key = envelope
            .data_key_or_create("alice", "us", UnwrapReason::Access)
            .unwrap();
        let place = Place {
            subject: "alice",
            site: "us",
            collection: "profile",
            key: "main",
            field: "email",
        };
        let value = serde_json::json!({"deep": ["secret-marker", 1]});
        let sealed = envelope.seal_field(&key, &place, &value).unwrap();
        let text = sealed.as_str().unwrap();
        assert!(text.starts_with(ENCRYPTED_PREFIX));
        assert!(!text.contains("secret-marker"));
        assert_eq!(envelope.open_field(&key, &place, &sealed).unwrap(), value);

        let moved = Place {
            field: "phone",
            ..place
        };
        let err = envelope.open_field(&key, &moved, &sealed).unwrap_err();
        assert!(matches!(err, KeyError::Decrypt(_)), "{err:?}");
        for bad in [
            serde_json::json!("plain"),
            serde_json::json!(5),
            serde_json::json!(format!("{ENCRYPTED_PREFIX}!!!")),
            serde_json::json!(format!("{ENCRYPTED_PREFIX}AAAA")),
        ] {
            assert!(envelope.open_field(&key, &place, &bad).is_err());
        }
    }
}
