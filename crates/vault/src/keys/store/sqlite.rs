//! The key store in one SQLite file: the embedded backend of `DataKeyStore`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use rusqlite::{Connection, OptionalExtension, params};

use crate::keys::error::KeyError;
use crate::keys::store::WrappedKey;

/// The schema this build writes and reads, one step a version (`sqlitedb::migrate`).
const SCHEMA: &[&str] = &["
    CREATE TABLE IF NOT EXISTS data_keys (
        subject TEXT NOT NULL,
        site    TEXT NOT NULL,
        key_id  TEXT NOT NULL,
        wrapped BLOB NOT NULL,
        PRIMARY KEY (subject, site)
    ) WITHOUT ROWID;
"];

/// How the key file is opened: durable (`sqlitedb`), and deleted keys overwritten.
const OPTIONS: sqlitedb::Options = sqlitedb::Options {
    secure_delete: true,
    ..sqlitedb::Options::DEFAULT
};

/// A `sqlitedb` failure as the error of the key store at `path`.
fn open_error(path: &Path, error: sqlitedb::Error) -> KeyError {
    let path = path.to_path_buf();
    match error {
        sqlitedb::Error::Io(source) => KeyError::Io { path, source },
        sqlitedb::Error::Sqlite(source) => KeyError::Sqlite { path, source },
        sqlitedb::Error::NewerSchema { found, supported } => KeyError::UnsupportedSchema {
            path,
            found,
            supported,
        },
        not_wal @ sqlitedb::Error::NotWal(_) => KeyError::Corrupt {
            path,
            detail: not_wal.to_string(),
        },
    }
}

/// The wrapped data keys, one per (subject, site), in one SQLite file.
///
/// - `secure_delete`: a deleted key's bytes are overwritten with zeros, and each deletion is
///   followed by a truncating WAL checkpoint, so the bytes are gone from both files.
/// - WAL with `synchronous=FULL`: a key that was used to encrypt is on disk before the
///   ciphertext is.
/// - One connection: key look-ups are short, and a single connection lets the checkpoint after
///   a deletion run without waiting for this process's own readers.
pub(super) struct SqliteKeys {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Reads have a connection of their own, so a read (which may run on an async thread)
    /// never waits for a write's commit and fsync.
    reader: Mutex<Connection>,
}

impl SqliteKeys {
    /// Opens (or creates, with its folders) the key store at `path`.
    pub(super) fn open(path: &Path) -> Result<SqliteKeys, KeyError> {
        let sql_error = |source| KeyError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = sqlitedb::open_durable(path, &OPTIONS).map_err(|e| open_error(path, e))?;
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
        sqlitedb::migrate(&mut conn, SCHEMA).map_err(|e| open_error(path, e))?;
        // After the writer, so that the WAL files it needs exist.
        let reader = sqlitedb::open_reader(path, &OPTIONS).map_err(|e| open_error(path, e))?;
        Ok(SqliteKeys {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            reader: Mutex::new(reader),
        })
    }

    /// The file this store lives in.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    fn with_conn<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, KeyError> {
        self.on(&self.conn, f)
    }

    fn read_with<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, KeyError> {
        self.on(&self.reader, f)
    }

    fn on<T>(
        &self,
        conn: &Mutex<Connection>,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, KeyError> {
        // A panic elsewhere while holding the lock leaves the connection usable: SQLite rolls
        // back any statement that did not finish.
        let conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
        f(&conn).map_err(|source| KeyError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    /// The wrapped data key of (subject, site), if there is one.
    pub(super) fn get(&self, subject: &str, site: &str) -> Result<Option<WrappedKey>, KeyError> {
        self.read_with(|conn| select_key(conn, subject, site))
    }

    /// The sites where `subject` has a data key, sorted.
    pub(super) fn sites_of(&self, subject: &str) -> Result<Vec<String>, KeyError> {
        self.read_with(|conn| {
            conn.prepare_cached("SELECT site FROM data_keys WHERE subject = ?1 ORDER BY site")?
                .query_map([subject], |row| row.get(0))?
                .collect()
        })
    }

    /// Stores `key` for (subject, site) unless one is already there, and returns the one that
    /// is stored afterwards: two writers creating the same key concurrently both end up using
    /// the first one, so nothing gets encrypted under a key that is then replaced.
    pub(super) fn insert_first(
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
            // The row is there now, ours or the first writer's.
            select_key(conn, subject, site)?.ok_or(rusqlite::Error::QueryReturnedNoRows)
        })
    }

    /// Deletes the keys of `subject` (at `site`, or at every site) and overwrites their bytes;
    /// how many were deleted. Running it again is harmless and finishes an overwrite that an
    /// earlier run could not do.
    pub(super) fn delete(&self, subject: &str, site: Option<&str>) -> Result<u64, KeyError> {
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

/// The wrapped data key of (subject, site) as `conn` reads it.
fn select_key(
    conn: &Connection,
    subject: &str,
    site: &str,
) -> rusqlite::Result<Option<WrappedKey>> {
    conn.prepare_cached("SELECT key_id, wrapped FROM data_keys WHERE subject = ?1 AND site = ?2")?
        .query_row([subject, site], |row| {
            Ok(WrappedKey {
                key_id: row.get(0)?,
                wrapped: row.get(1)?,
            })
        })
        .optional()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_store_settings() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteKeys::open(&dir.path().join("keys/keys.db")).unwrap();
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

    /// A key store written before `sqlitedb` (its table, version 1) opens with its keys; one
    /// from a newer build is refused, naming the file.
    #[test]
    fn schema_versions_are_kept_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.db");
        let old_file = format!(
            "{} INSERT INTO data_keys VALUES ('alice', 'us', 'local:k', x'01');
             PRAGMA user_version = 1;",
            SCHEMA[0]
        );
        Connection::open(&path)
            .unwrap()
            .execute_batch(&old_file)
            .unwrap();
        let store = SqliteKeys::open(&path).unwrap();
        assert_eq!(
            store.get("alice", "us").unwrap(),
            Some(WrappedKey {
                key_id: "local:k".into(),
                wrapped: vec![1],
            })
        );
        store
            .with_conn(|conn| conn.pragma_update(None, "user_version", 2))
            .unwrap();
        drop(store);
        let Err(err) = SqliteKeys::open(&path) else {
            panic!("a newer schema was opened");
        };
        let refused = matches!(err, KeyError::UnsupportedSchema { found: 2, .. });
        assert!(refused, "{err:?}");
        assert!(err.to_string().contains("keys.db"), "{err}");
    }
}
