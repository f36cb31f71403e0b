//! The embedded site store: one SQLite file.
//!
//! - WAL journal with `synchronous=FULL`: a write that returned survives a crash or power loss,
//!   and readers never block the writer.
//! - One writer connection (SQLite admits one writer at a time anyway), whose single-statement
//!   writes are committed in groups: writes that arrive while a group commits share the next
//!   transaction and its fsync (`group_commit.rs`). A small fixed pool of read-only
//!   connections lets concurrent reads run in parallel.
//! - Statements are prepared once per connection (`prepare_cached`).
//! - Opening, the durable settings and the versioned schema (in `PRAGMA user_version`: a file
//!   from a newer build is refused rather than misread, an older one is brought up to date) are
//!   `sqlitedb`'s, shared with every SQLite file of the gateway.
//! - `secure_delete`: deleted rows are overwritten in the file, so an erased subject's
//!   interoperable values do not linger in free pages (its protected values are ciphertext
//!   whose key is destroyed anyway).

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::{Map, Value};

use crate::store::group_commit::GroupCommit;
use crate::store::{
    HeldRecord, RecordKey, RecordRow, SiteStore, StoreError, SubjectRow, parse_stored_fields,
};

/// The schema this build writes and reads, one step a version (`sqlitedb::migrate`): version 1
/// the tables, version 2 the index that pages through one collection.
const SCHEMA: &[&str] = &[SCHEMA_V1, SCHEMA_V2];

const SCHEMA_V1: &str = "
    CREATE TABLE IF NOT EXISTS subjects (
        id           TEXT NOT NULL PRIMARY KEY,
        jurisdiction TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS records (
        subject    TEXT NOT NULL,
        collection TEXT NOT NULL,
        key        TEXT NOT NULL,
        fields     TEXT NOT NULL, -- a JSON object
        PRIMARY KEY (subject, collection, key)
    );
";

/// From version 1 to 2: paging through one collection in (subject, key) order.
const SCHEMA_V2: &str = "
    CREATE INDEX IF NOT EXISTS records_by_collection ON records (collection, subject, key);
";

/// How often the checkpointer copies the WAL into the file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// The WAL's size (4 KiB frames, 32 MiB) above which the checkpointer makes it start over.
const WAL_RESTART_FRAMES: u32 = 8192;

/// A site store in one SQLite file.
pub struct SqliteStore {
    path: PathBuf,
    /// The one writer connection, committing concurrent writes in groups.
    writer: GroupCommit,
    /// Copies the WAL into the file off the writers' path; stops with the store.
    _checkpoints: sqlitedb::Checkpointer,
    readers: ReaderPool,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// How the site files are opened: durable (`sqlitedb`), and deleted rows overwritten.
const OPTIONS: sqlitedb::Options = sqlitedb::Options {
    secure_delete: true,
    ..sqlitedb::Options::DEFAULT
};

/// A `sqlitedb` failure as the error of the store at `path`.
fn open_error(path: &Path, error: sqlitedb::Error) -> StoreError {
    let path = path.to_path_buf();
    match error {
        sqlitedb::Error::Io(source) => StoreError::Io { path, source },
        sqlitedb::Error::Sqlite(source) => StoreError::Sqlite { path, source },
        sqlitedb::Error::NewerSchema { found, supported } => StoreError::UnsupportedSchema {
            path,
            found,
            supported,
        },
        not_wal @ sqlitedb::Error::NotWal(_) => StoreError::Corrupt {
            path,
            detail: not_wal.to_string(),
        },
    }
}

impl SqliteStore {
    /// Opens the store at `path`, creating the file and its parent folders if needed, with
    /// `readers` read connections (at least one).
    pub fn open(path: &Path, readers: usize) -> Result<Self, StoreError> {
        let mut writer = sqlitedb::open_durable(path, &OPTIONS).map_err(|e| open_error(path, e))?;
        sqlitedb::migrate(&mut writer, SCHEMA).map_err(|e| open_error(path, e))?;
        // The WAL is copied into the file by a thread of its own, so that no write's commit
        // waits for it (see `sqlitedb::Checkpointer`).
        sqlitedb::no_automatic_checkpoints(&writer).map_err(|e| open_error(path, e.into()))?;
        let checkpoints =
            sqlitedb::Checkpointer::spawn(path, &OPTIONS, CHECKPOINT_EVERY, WAL_RESTART_FRAMES)
                .map_err(|e| open_error(path, e))?;

        // Readers open after the writer so the WAL files they need already exist.
        let mut idle = Vec::with_capacity(readers.max(1));
        for _ in 0..readers.max(1) {
            idle.push(sqlitedb::open_reader(path, &OPTIONS).map_err(|e| open_error(path, e))?);
        }

        Ok(SqliteStore {
            path: path.to_path_buf(),
            writer: GroupCommit::new(writer),
            _checkpoints: checkpoints,
            readers: ReaderPool {
                idle: Mutex::new(idle),
                returned: Condvar::new(),
            },
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql_error(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs one write statement (text parameters) in the next group commit; the rows it
    /// changed, once its group is durable (synchronous=FULL).
    fn write(&self, sql: &'static str, params: Vec<String>) -> Result<usize, StoreError> {
        self.writer
            .execute(sql, params)
            .map_err(|e| self.sql_error(e))
    }

    /// Runs several writes as one immediate transaction on the writer connection: all of them
    /// are durable when this returns, or none happened.
    fn write_all<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut conn = self.writer.connection();
        let run = |conn: &mut Connection| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        };
        run(&mut conn).map_err(|e| self.sql_error(e))
    }

    /// Runs a read on a pooled read-only connection.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let lease = self.readers.lease();
        f(lease.connection()).map_err(|e| self.sql_error(e))
    }

    /// A record's fields as stored: a JSON object's text.
    fn encode_fields(&self, row: &RecordRow) -> Result<String, StoreError> {
        row.encode_fields(self.path.clone())
    }

    /// Parses stored fields. The parser's message is left out: it can quote a value.
    fn parse_fields(&self, text: &str, what: &str) -> Result<Map<String, Value>, StoreError> {
        parse_stored_fields(text, what, self.path.clone())
    }
}

impl SiteStore for SqliteStore {
    fn reads_locally(&self) -> bool {
        true
    }

    fn get_subject(&self, id: &str) -> Result<Option<SubjectRow>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached("SELECT id, jurisdiction FROM subjects WHERE id = ?1")?
                .query_row([id], |row| {
                    Ok(SubjectRow {
                        id: row.get(0)?,
                        jurisdiction: row.get(1)?,
                    })
                })
                .optional()
        })
    }

    fn put_subject(&self, subject: &SubjectRow) -> Result<(), StoreError> {
        self.write(
            "INSERT INTO subjects (id, jurisdiction) VALUES (?1, ?2)
             ON CONFLICT (id) DO UPDATE SET jurisdiction = excluded.jurisdiction",
            vec![subject.id.clone(), subject.jurisdiction.clone()],
        )
        .map(drop)
    }

    fn get_record(
        &self,
        subject: &str,
        collection: &str,
        key: &str,
    ) -> Result<Option<Map<String, Value>>, StoreError> {
        let text: Option<String> = self.read(|conn| {
            conn.prepare_cached(
                "SELECT fields FROM records WHERE subject = ?1 AND collection = ?2 AND key = ?3",
            )?
            .query_row([subject, collection, key], |row| row.get(0))
            .optional()
        })?;
        text.map(|text| self.parse_fields(&text, &format!("record {subject}/{collection}/{key}")))
            .transpose()
    }

    fn get_record_held(
        &self,
        subject: &str,
        collection: &str,
        key: &str,
    ) -> Result<Option<HeldRecord>, StoreError> {
        let held: Option<(String, Option<String>)> = self.read(|conn| {
            conn.prepare_cached(
                "SELECT s.jurisdiction, r.fields FROM subjects s
                 LEFT JOIN records r ON r.subject = s.id AND r.collection = ?2 AND r.key = ?3
                 WHERE s.id = ?1",
            )?
            .query_row([subject, collection, key], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()
        })?;
        HeldRecord::from_row(held, |text| {
            self.parse_fields(text, &format!("record {subject}/{collection}/{key}"))
        })
    }

    fn put_record(&self, row: &RecordRow) -> Result<(), StoreError> {
        let fields = self.encode_fields(row)?;
        self.write(
            "INSERT INTO records (subject, collection, key, fields) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (subject, collection, key) DO UPDATE SET fields = excluded.fields",
            vec![
                row.subject.clone(),
                row.collection.clone(),
                row.key.clone(),
                fields,
            ],
        )
        .map(drop)
    }

    fn put_record_held(&self, row: &RecordRow, jurisdiction: &str) -> Result<bool, StoreError> {
        let fields = self.encode_fields(row)?;
        self.write(
            "INSERT INTO records (subject, collection, key, fields)
             SELECT ?1, ?2, ?3, ?4 WHERE EXISTS
                 (SELECT 1 FROM subjects WHERE id = ?1 AND jurisdiction = ?5)
             ON CONFLICT (subject, collection, key) DO UPDATE SET fields = excluded.fields",
            vec![
                row.subject.clone(),
                row.collection.clone(),
                row.key.clone(),
                fields,
                jurisdiction.to_string(),
            ],
        )
        .map(|written| written > 0)
    }

    fn delete_record(
        &self,
        subject: &str,
        collection: &str,
        key: &str,
    ) -> Result<bool, StoreError> {
        self.write(
            "DELETE FROM records WHERE subject = ?1 AND collection = ?2 AND key = ?3",
            vec![subject.into(), collection.into(), key.into()],
        )
        .map(|deleted| deleted > 0)
    }

    fn list_records(&self, subject: &str) -> Result<Vec<RecordKey>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT collection, key FROM records WHERE subject = ?1 ORDER BY collection, key",
            )?
            .query_map([subject], |row| {
                Ok(RecordKey {
                    collection: row.get(0)?,
                    key: row.get(1)?,
                })
            })?
            .collect()
        })
    }

    fn subjects(&self) -> Result<Vec<SubjectRow>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached("SELECT id, jurisdiction FROM subjects ORDER BY id")?
                .query_map([], |row| {
                    Ok(SubjectRow {
                        id: row.get(0)?,
                        jurisdiction: row.get(1)?,
                    })
                })?
                .collect()
        })
    }

    fn records(&self) -> Result<Vec<RecordRow>, StoreError> {
        let rows: Vec<(String, String, String, String)> = self.read(|conn| {
            conn.prepare_cached(
                "SELECT subject, collection, key, fields FROM records
                 ORDER BY subject, collection, key",
            )?
            .query_map([], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })?
            .collect()
        })?;
        self.parse_rows(rows)
    }

    fn delete_subject(&self, id: &str) -> Result<bool, StoreError> {
        self.write_all(|tx| {
            let records = tx
                .prepare_cached("DELETE FROM records WHERE subject = ?1")?
                .execute([id])?;
            let subjects = tx
                .prepare_cached("DELETE FROM subjects WHERE id = ?1")?
                .execute([id])?;
            Ok(records + subjects > 0)
        })
    }

    fn records_after(
        &self,
        collection: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<RecordRow>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Both queries walk `records_by_collection` in order; SQLite compares TEXT as bytes
        // (BINARY collation), as the trait promises.
        let rows: Vec<(String, String, String, String)> = self.read(|conn| {
            let map =
                |row: &rusqlite::Row<'_>| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?));
            match after {
                None => conn
                    .prepare_cached(
                        "SELECT subject, collection, key, fields FROM records
                         WHERE collection = ?1 ORDER BY subject, key LIMIT ?2",
                    )?
                    .query_map(params![collection, limit], map)?
                    .collect(),
                Some((subject, key)) => conn
                    .prepare_cached(
                        "SELECT subject, collection, key, fields FROM records
                         WHERE collection = ?1 AND (subject, key) > (?2, ?3)
                         ORDER BY subject, key LIMIT ?4",
                    )?
                    .query_map(params![collection, subject, key, limit], map)?
                    .collect(),
            }
        })?;
        self.parse_rows(rows)
    }
}

impl SqliteStore {
    fn parse_rows(
        &self,
        rows: Vec<(String, String, String, String)>,
    ) -> Result<Vec<RecordRow>, StoreError> {
        rows.into_iter()
            .map(|(subject, collection, key, text)| {
                let fields =
                    self.parse_fields(&text, &format!("record {subject}/{collection}/{key}"))?;
                Ok(RecordRow {
                    subject,
                    collection,
                    key,
                    fields,
                })
            })
            .collect()
    }
}

/// A fixed set of read-only connections; a reader waits only when all are busy.
struct ReaderPool {
    idle: Mutex<Vec<Connection>>,
    returned: Condvar,
}

impl ReaderPool {
    fn lease(&self) -> Lease<'_> {
        let mut idle = self.lock();
        loop {
            if let Some(conn) = idle.pop() {
                return Lease {
                    pool: self,
                    conn: Some(conn),
                };
            }
            idle = self
                .returned
                .wait(idle)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A borrowed reader; it goes back to the pool when dropped, even on panic.
struct Lease<'a> {
    pool: &'a ReaderPool,
    conn: Option<Connection>,
}

impl Lease<'_> {
    fn connection(&self) -> &Connection {
        self.conn
            .as_ref()
            .expect("a lease holds its connection until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.lock().push(conn);
            self.pool.returned.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::conformance;

    const SCHEMA_VERSION: i64 = SCHEMA.len() as i64;

    #[test]
    fn conforms() {
        let dir = tempfile::tempdir().unwrap();
        let counter = std::sync::atomic::AtomicUsize::new(0);
        conformance::conformance_suite(&|| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Arc::new(SqliteStore::open(&dir.path().join(format!("s{n}.db")), 2).unwrap())
        });
    }

    #[test]
    fn reopen_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/folders/site.db");
        conformance::reopen_keeps_data(&|| Arc::new(SqliteStore::open(&path, 1).unwrap()));
    }

    #[test]
    fn settings_are_durable_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("site.db"), 1).unwrap();
        let conn = store.writer.connection();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        let secure: i64 = conn
            .query_row("PRAGMA secure_delete", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "synchronous must be FULL");
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(secure, 1, "deleted rows must be overwritten");
    }

    #[test]
    fn a_version_1_file_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA_V1).unwrap();
            conn.execute(
                "INSERT INTO records VALUES ('s', 'profile', 'k', '{\"n\":1}')",
                [],
            )
            .unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
        }
        let store = SqliteStore::open(&path, 1).unwrap();
        let conn = store.writer.connection();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        let index: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'records_by_collection'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        drop(conn);
        assert_eq!((version, index), (SCHEMA_VERSION, 1));
        assert_eq!(store.records_after("profile", None, 10).unwrap().len(), 1);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.db");
        drop(SqliteStore::open(&path, 1).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = SqliteStore::open(&path, 1).unwrap_err();
        assert!(
            matches!(err, StoreError::UnsupportedSchema { found, .. } if found == SCHEMA_VERSION + 1),
            "{err}"
        );
        assert!(err.to_string().contains("site.db"), "{err}");
    }

    #[test]
    fn not_a_database_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.db");
        std::fs::write(&path, vec![0x42u8; 4096]).unwrap();
        let err = SqliteStore::open(&path, 1).unwrap_err();
        assert!(matches!(err, StoreError::Sqlite { .. }), "{err:?}");
        assert!(err.to_string().contains("garbage.db"), "{err}");
    }

    #[test]
    fn corrupt_fields_do_not_leak_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.db");
        let store = SqliteStore::open(&path, 1).unwrap();
        store
            .write(
                "INSERT INTO records VALUES ('s', 'c', 'k', '\"secret-value\"')",
                vec![],
            )
            .unwrap();
        let err = store.get_record("s", "c", "k").unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert!(!err.to_string().contains("secret"), "{err}");
        let err = store.records().unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn readers_run_concurrently_with_a_busy_pool() {
        // More threads than readers: leases must be waited for and handed back.
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("site.db"), 2).unwrap());
        store
            .put_subject(&SubjectRow {
                id: "a".into(),
                jurisdiction: "US".into(),
            })
            .unwrap();
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        assert!(store.get_subject("a").unwrap().is_some());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(store.readers.lock().len(), 2);
    }
}
