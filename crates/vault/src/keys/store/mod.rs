//! The custodian's store of wrapped data keys, apart from the site stores so that a copy of a
//! site store holds no key.
//!
//! Two backends behind one type, [`DataKeyStore`], chosen by the `keys.store` setting
//! ([`DataKeyStore::open_url`]):
//!
//! - `sqlite.rs`: one SQLite file beside the gateway (a bare path or `sqlite:PATH`).
//! - `postgres.rs`: one PostgreSQL database (`postgres://…`), so that several gateways on
//!   different machines share one key store and hear each other's key deletions
//!   ([`DataKeyStore::listen`]).

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::keys::error::KeyError;
use crate::layout::{StoreUrl, parse_store_url};
use crate::store::open::{resolve_sqlite_path, scheme_of};

mod postgres;
mod sqlite;

#[cfg(test)]
pub(crate) mod tests;

use self::postgres::PgKeys;
use self::sqlite::SqliteKeys;

/// A data key as the key store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// The key manager's `KeyManager::key_id` that wrapped it.
    pub key_id: String,
    pub wrapped: Vec<u8>,
}

/// Keys another gateway deleted from a shared key store, as [`DataKeyStore::listen`] hears it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// The data keys of `subject` at `site`, or at every site when `site` is `None`.
    Keys {
        subject: String,
        site: Option<String>,
    },
    /// Deletions may have been missed (the listening connection was lost, or a notice could
    /// not be read): any key may be stale, so every cached one should be dropped.
    All,
}

/// Stops the listening thread of [`DataKeyStore::listen`] when dropped.
///
/// Dropping only tells the thread to stop, and does not wait: it ends within its poll interval
/// (a fraction of a second), or once a connection attempt in progress gives up (the URL's
/// `connect_timeout`, 10 s by default). [`ListenerHandle::stop`] waits for it.
#[derive(Debug)]
pub struct ListenerHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ListenerHandle {
    /// A handle with no thread behind it (a SQLite key store).
    fn idle() -> ListenerHandle {
        ListenerHandle {
            stop: Arc::new(AtomicBool::new(true)),
            thread: None,
        }
    }

    /// Whether a thread is listening for other gateways' deletions (never for SQLite).
    pub fn is_listening(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the thread and waits until it has ended.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            // A panic in the callback already ended the thread; there is nothing to undo.
            let _ = thread.join();
        }
    }
}

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Where the keys are.
enum Backend {
    Sqlite(SqliteKeys),
    Postgres(PgKeys),
}

/// The custodian's store of wrapped data keys, one per (subject, site): a SQLite file or a
/// PostgreSQL database (see each backend for what deletion guarantees there).
///
/// Its methods block. On PostgreSQL they must run on a thread that may block (the gateway
/// calls the vault through `spawn_blocking`), never directly inside an async task: the
/// synchronous `postgres` client drives its own small Tokio runtime.
pub struct DataKeyStore {
    backend: Backend,
}

impl fmt::Debug for DataKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKeyStore")
            .field("store", &self.describe())
            .finish_non_exhaustive()
    }
}

impl DataKeyStore {
    /// Opens (or creates, with its folders) the SQLite key store at `path`.
    pub fn open(path: &Path) -> Result<DataKeyStore, KeyError> {
        Ok(DataKeyStore {
            backend: Backend::Sqlite(SqliteKeys::open(path)?),
        })
    }

    /// Opens the key store a `keys.store` setting names:
    ///
    /// - `postgres://…` or `postgresql://…`: a PostgreSQL database, its table created or
    ///   upgraded (TLS as the URL's `sslmode` says, as for the PostgreSQL site store);
    /// - `sqlite:PATH`, or a bare `PATH`: a SQLite file, created with its folders if missing;
    ///   a relative path is relative to `base_dir`.
    ///
    /// Errors never repeat a URL's password.
    pub fn open_url(store: &str, base_dir: &Path) -> Result<DataKeyStore, KeyError> {
        let path = match parse_store_url(store) {
            StoreUrl::Postgres(url) => {
                return Ok(DataKeyStore {
                    backend: Backend::Postgres(PgKeys::open(url)?),
                });
            }
            StoreUrl::Sqlite(path) => path,
            // A bare path, as the setting has always been; but a URL of another kind is not
            // taken for a file name.
            StoreUrl::Other if !store.contains("://") => store,
            StoreUrl::Other => {
                return Err(KeyError::InvalidUrl(format!(
                    "unsupported key store scheme `{}`: use a file path, `sqlite:PATH` or \
                     `postgres://…`",
                    scheme_of(store)
                )));
            }
        };
        if path.trim().is_empty() {
            return Err(KeyError::InvalidUrl(
                "the key store has no path: use a file path, `sqlite:PATH` or `postgres://…`"
                    .into(),
            ));
        }
        DataKeyStore::open(&resolve_sqlite_path(path, base_dir))
    }

    /// The store as messages name it: the file's path, or the PostgreSQL URL without its
    /// password or parameters.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Sqlite(keys) => keys.path().display().to_string(),
            Backend::Postgres(keys) => keys.target().to_string(),
        }
    }

    /// The wrapped data key of (subject, site), if there is one.
    pub fn get(&self, subject: &str, site: &str) -> Result<Option<WrappedKey>, KeyError> {
        match &self.backend {
            Backend::Sqlite(keys) => keys.get(subject, site),
            Backend::Postgres(keys) => keys.get(subject, site),
        }
    }

    /// The sites where `subject` has a data key, sorted (bytewise).
    pub fn sites_of(&self, subject: &str) -> Result<Vec<String>, KeyError> {
        match &self.backend {
            Backend::Sqlite(keys) => keys.sites_of(subject),
            Backend::Postgres(keys) => keys.sites_of(subject),
        }
    }

    /// Stores `key` for (subject, site) unless one is already there, and returns the one that
    /// is stored afterwards: two writers creating the same key concurrently (in one gateway or
    /// in two sharing a PostgreSQL store) both end up using the first one, so nothing gets
    /// encrypted under a key that is then replaced.
    pub(crate) fn insert_first(
        &self,
        subject: &str,
        site: &str,
        key: &WrappedKey,
    ) -> Result<WrappedKey, KeyError> {
        match &self.backend {
            Backend::Sqlite(keys) => keys.insert_first(subject, site, key),
            Backend::Postgres(keys) => keys.insert_first(subject, site, key),
        }
    }

    /// Deletes the keys of `subject` (at `site`, or at every site); how many were deleted.
    /// Running it again is harmless, and finishes what an earlier run could not (on SQLite
    /// the overwrite, on PostgreSQL the notice to other gateways).
    pub(crate) fn delete(&self, subject: &str, site: Option<&str>) -> Result<u64, KeyError> {
        match &self.backend {
            Backend::Sqlite(keys) => keys.delete(subject, site),
            Backend::Postgres(keys) => keys.delete(subject, site),
        }
    }

    /// Calls `on_deleted` on a thread of its own for each deletion another gateway (or this
    /// one) makes in this key store, until the returned handle is dropped.
    ///
    /// On PostgreSQL the thread keeps a connection of its own that `LISTEN`s for the notice
    /// each deletion sends in its transaction. When that connection is lost it reconnects,
    /// backing off up to a few seconds, and calls `on_deleted(Deleted::All)` when it notices
    /// the loss, after each failed attempt and once listening again: notices sent while it was
    /// away are lost. The first connection is made here, so a store that cannot be reached
    /// fails now.
    ///
    /// On SQLite it does nothing and the handle has no thread: a SQLite key store is one file
    /// in one data folder, read by the gateways on that machine, which rely on the key cache's
    /// short lifetime instead (`keys.data_key_cache_ttl`).
    pub fn listen(
        &self,
        on_deleted: impl Fn(Deleted) + Send + 'static,
    ) -> Result<ListenerHandle, KeyError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(ListenerHandle::idle()),
            Backend::Postgres(keys) => {
                let stop = Arc::new(AtomicBool::new(false));
                let thread = keys.listen(Arc::clone(&stop), Box::new(on_deleted))?;
                Ok(ListenerHandle {
                    stop,
                    thread: Some(thread),
                })
            }
        }
    }
}
