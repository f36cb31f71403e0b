//! SQLite files as Sovereign's stores open them.
//!
//! The vault's site stores, the custodian's data key store, the custody database and the log
//! each keep a SQLite file, and all need the same care, kept here once (as `pgconn` does for
//! PostgreSQL):
//!
//! - **Durable open** ([`open_durable`]): the file's folders are created; the journal is WAL
//!   (readers never block the writer); every commit is synced (`synchronous=FULL`: a write
//!   that returned survives a crash or power loss); a connection waits for a lock another
//!   connection or process holds (`busy_timeout`: two gateways may share a data folder)
//!   instead of failing at once. Asked for, deleted content is overwritten (`secure_delete`)
//!   and a new file is created readable by its owner only.
//! - **Versioned schema** ([`migrate`]): a schema is a list of numbered steps, `steps[n]`
//!   bringing version `n` to `n + 1` (`steps[0]` creates the tables in an empty file). The
//!   version lives in `PRAGMA user_version`, as every store recorded it before this crate; the
//!   missing steps run in one immediate transaction, so two processes opening the same new
//!   file do not race, and a file from a newer build is refused rather than misread.
//!
//! - **Checkpoints off the commit path** ([`Checkpointer`]): a thread copies the WAL into the
//!   database file, so that no commit waits for it.
//!
//! Errors carry no path: each store names its file in its own error type.

use std::path::Path;
use std::time::Duration;

mod checkpoint;

pub use checkpoint::{Checkpointer, no_automatic_checkpoints};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

/// How a durable file is opened beyond what every one gets (WAL, `synchronous=FULL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// How long a connection waits for a lock held by another connection or process.
    pub busy_timeout: Duration,
    /// Overwrite deleted content in the file (`PRAGMA secure_delete`), so that erased data
    /// does not linger in free pages.
    pub secure_delete: bool,
    /// Create a new file with mode 0600 on Unix (an existing file keeps its mode). SQLite
    /// gives the `-wal` and `-shm` files the same mode as the database file.
    pub private_file: bool,
}

impl Options {
    /// A 10 s busy timeout and no extras. A constant, so that stores can name their options
    /// as constants too (`Options { secure_delete: true, ..Options::DEFAULT }`).
    pub const DEFAULT: Options = Options {
        busy_timeout: Duration::from_secs(10),
        secure_delete: false,
        private_file: false,
    };
}

impl Default for Options {
    fn default() -> Self {
        Options::DEFAULT
    }
}

/// Why a file could not be opened or brought to its schema.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file's folder, or the file itself, could not be created.
    #[error("cannot create the file or its folder: {0}")]
    Io(#[source] std::io::Error),

    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),

    /// The journal could not be switched to WAL; says what it stays.
    #[error("cannot switch the journal to WAL mode (it stays `{0}`)")]
    NotWal(String),

    /// The file was written by a newer build, whose schema this one does not know.
    #[error(
        "schema version {found} is newer than this build supports ({supported}): open it with \
         a newer Sovereign"
    )]
    NewerSchema { found: i64, supported: i64 },
}

/// Opens (creating the file and its folders) a connection for durable writes: WAL journal,
/// every commit synced, the busy timeout and the extras of `options`.
pub fn open_durable(path: &Path, options: &Options) -> Result<Connection, Error> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(Error::Io)?;
    }
    if options.private_file {
        create_private(path).map_err(Error::Io)?;
    }
    let conn = Connection::open(path)?;
    conn.busy_timeout(options.busy_timeout)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::NotWal(mode));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    if options.secure_delete {
        conn.pragma_update(None, "secure_delete", "ON")?;
    }
    Ok(conn)
}

/// Opens a read-only connection to a file [`open_durable`] already opened (so the WAL files
/// it needs exist), with the same busy timeout.
pub fn open_reader(path: &Path, options: &Options) -> Result<Connection, Error> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(options.busy_timeout)?;
    Ok(conn)
}

/// The schema version the file records (0 for a new, empty file).
pub fn schema_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// Brings the file to version `steps.len()`: runs the steps it has not had, in order, and
/// records the new version, all in one immediate transaction. A file at the current version
/// is left as it is; one at a newer version is refused with [`Error::NewerSchema`].
pub fn migrate(conn: &mut Connection, steps: &[&str]) -> Result<(), Error> {
    let supported = i64::try_from(steps.len()).unwrap_or(i64::MAX);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found = schema_version(&tx)?;
    if found > supported {
        return Err(Error::NewerSchema { found, supported });
    }
    if found < supported {
        // `found` is between 0 and `steps.len()` here, so it is a valid index.
        let first = usize::try_from(found).unwrap_or_default();
        for step in &steps[first..] {
            tx.execute_batch(step)?;
        }
        tx.pragma_update(None, "user_version", supported)?;
    }
    tx.commit()?;
    Ok(())
}

/// Creates `path` with mode 0600 if it does not exist yet.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);";
    const V2: &str = "CREATE INDEX items_by_name ON items (name);";

    fn pragma<T: rusqlite::types::FromSql>(conn: &Connection, name: &str) -> T {
        conn.query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))
            .unwrap()
    }

    /// A durable connection to `path` with default options, brought to `steps`.
    fn opened(path: &Path, steps: &[&str]) -> Connection {
        let mut conn = open_durable(path, &Options::default()).unwrap();
        migrate(&mut conn, steps).unwrap();
        conn
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |row| row.get(0)).unwrap()
    }

    fn index_count(conn: &Connection) -> i64 {
        count(
            conn,
            "SELECT count(*) FROM sqlite_master WHERE name = 'items_by_name'",
        )
    }

    #[test]
    fn a_fresh_file_is_durable_and_current() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/folder/a.db");
        let conn = opened(&path, &[V1, V2]);
        assert_eq!(pragma::<String>(&conn, "journal_mode"), "wal");
        assert_eq!(
            pragma::<i64>(&conn, "synchronous"),
            2,
            "synchronous must be FULL"
        );
        assert_eq!(pragma::<i64>(&conn, "secure_delete"), 0);
        assert_eq!(schema_version(&conn).unwrap(), 2);
        assert_eq!(index_count(&conn), 1);
    }

    #[test]
    fn busy_timeout_and_secure_delete_are_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let options = Options {
            busy_timeout: Duration::from_millis(2500),
            secure_delete: true,
            private_file: false,
        };
        let conn = open_durable(&path, &options).unwrap();
        assert_eq!(pragma::<i64>(&conn, "busy_timeout"), 2500);
        assert_eq!(pragma::<i64>(&conn, "secure_delete"), 1);
        let reader = open_reader(&path, &options).unwrap();
        assert_eq!(pragma::<i64>(&reader, "busy_timeout"), 2500);
        let default = open_durable(&dir.path().join("b.db"), &Options::default()).unwrap();
        assert_eq!(pragma::<i64>(&default, "busy_timeout"), 10_000);
    }

    #[test]
    fn reopening_keeps_data_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        opened(&path, &[V1, V2])
            .execute("INSERT INTO items (name) VALUES ('kept')", [])
            .unwrap();
        let conn = opened(&path, &[V1, V2]);
        let name: String = conn
            .query_row("SELECT name FROM items", [], |row| row.get(0))
            .unwrap();
        assert_eq!((name.as_str(), schema_version(&conn).unwrap()), ("kept", 2));
    }

    #[test]
    fn a_file_at_version_n_gets_only_the_later_steps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        {
            let conn = opened(&path, &[V1]);
            conn.execute("INSERT INTO items (name) VALUES ('old')", [])
                .unwrap();
            assert_eq!(schema_version(&conn).unwrap(), 1);
            assert_eq!(index_count(&conn), 0);
        }
        // Step 1 has no `IF NOT EXISTS`: running it again would fail.
        let conn = opened(&path, &[V1, V2]);
        assert_eq!(schema_version(&conn).unwrap(), 2);
        assert_eq!(index_count(&conn), 1);
        assert_eq!(count(&conn, "SELECT count(*) FROM items"), 1);
    }

    #[test]
    fn a_failing_step_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let mut conn = open_durable(&path, &Options::default()).unwrap();
        let err = migrate(&mut conn, &[V1, "NOT SQL"]).unwrap_err();
        assert!(matches!(err, Error::Sqlite(_)), "{err:?}");
        assert_eq!(schema_version(&conn).unwrap(), 0);
        assert_eq!(count(&conn, "SELECT count(*) FROM sqlite_master"), 0);
    }

    #[test]
    fn a_newer_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        drop(opened(&path, &[V1, V2]));
        let mut conn = open_durable(&path, &Options::default()).unwrap();
        let err = migrate(&mut conn, &[V1]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NewerSchema {
                    found: 2,
                    supported: 1
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "schema version 2 is newer than this build supports (1): open it with a newer \
             Sovereign"
        );
        assert_eq!(
            schema_version(&conn).unwrap(),
            2,
            "a refused file is not changed"
        );
    }

    #[test]
    fn private_files_are_created_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("private.db");
        let options = Options {
            private_file: true,
            ..Options::default()
        };
        let mut conn = open_durable(&path, &options).unwrap();
        migrate(&mut conn, &[V1]).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        drop(conn);
        // Reopening an existing private file is fine.
        open_durable(&path, &options).unwrap();
    }

    #[test]
    fn not_a_database_is_an_sqlite_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.db");
        std::fs::write(&path, vec![0x42u8; 4096]).unwrap();
        let err = open_durable(&path, &Options::default()).unwrap_err();
        assert!(matches!(err, Error::Sqlite(_)), "{err:?}");
    }
}
