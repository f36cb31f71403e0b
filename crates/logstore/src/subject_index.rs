//! An index of log entries by the keys each names (for the gateway: the subject pseudonyms
//! an entry is about), so that one subject's entries are found without reading the log.
//!
//! It is derived from the log and nothing else: the caller says which keys an entry names
//! (this crate knows no entry format) and names that rule, the index reads the entries it has
//! not seen yet from the log and records `(key, index)` rows in its own SQLite file, with the
//! log's root hash at the size it has reached and the rule's name. A file that does not match
//! the log it is opened with (a restored or replaced log: that root hash differs), or was
//! built by another rule, is rebuilt from the log's first entry; a file that cannot be opened
//! is replaced, and a deleted file is simply rebuilt. Nothing depends on the index being
//! right: what the gateway answers from it is checked against the log entry by entry, and a
//! monitor with a copy of the log finds any entry it left out.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use crate::{Log, LogError, MAX_ENTRIES_READ, storage};

const SCHEMA: &[&str] = &[
    "CREATE TABLE keyed (key TEXT NOT NULL, idx INTEGER NOT NULL,
        PRIMARY KEY (key, idx)) WITHOUT ROWID;
     CREATE TABLE progress (one INTEGER PRIMARY KEY CHECK (one = 1),
        size INTEGER NOT NULL, root BLOB NOT NULL, rule TEXT NOT NULL);",
];

const OPTIONS: sqlitedb::Options = sqlitedb::Options {
    private_file: true,
    ..sqlitedb::Options::DEFAULT
};

/// How many entries [`SubjectIndex::catch_up`] commits at once, at most. Keys spread over
/// many subjects dirty a page per subject, so a commit writes about as many pages for a
/// thousand entries as for sixty thousand: small commits wrote as much to disk as the log
/// itself (issue 16). A request catching up may wait for a commit of that size before making
/// its own.
const ENTRIES_PER_COMMIT: u64 = 64 * MAX_ENTRIES_READ;

/// Which keys an entry names; entries that are not what the caller expects name none.
pub type KeysOf = dyn Fn(&[u8]) -> Vec<String> + Send + Sync;

/// See the module documentation.
pub struct SubjectIndex {
    path: PathBuf,
    /// One connection: catching up and reading take turns (both are short).
    conn: Mutex<Connection>,
    /// The name of the rule `keys_of` follows; an index built by another is rebuilt.
    rule: String,
    keys_of: Box<KeysOf>,
}

fn open_file(path: &Path) -> Result<Connection, sqlitedb::Error> {
    let mut conn = sqlitedb::open_durable(path, &OPTIONS)?;
    // Derived data: a commit is not synced to disk (only the WAL checkpoints SQLite runs now
    // and then are). In WAL mode `NORMAL` still keeps every commit whole (rows and progress
    // together). A crash of the process loses nothing; a crash of the machine or a power loss
    // may take the last commits back, and the index then reads those entries again. It never
    // gets ahead of the log, whose entries are durable before they can be read.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    sqlitedb::migrate(&mut conn, SCHEMA)?;
    Ok(conn)
}

impl SubjectIndex {
    /// Opens (creating) the index file at `path` for `log`, with the keys `keys_of` names
    /// under the rule called `rule`. It starts again from the log's first entry if the file
    /// was built from another log or by another rule, and replaces a file it cannot open.
    pub fn open(
        path: &Path,
        log: &Log,
        rule: &str,
        keys_of: Box<KeysOf>,
    ) -> Result<SubjectIndex, LogError> {
        let conn = match open_file(path) {
            Ok(conn) => conn,
            Err(e) => {
                // Derived data: a file that cannot be opened is built again.
                tracing::warn!(index = %path.display(), error = %e,
                    "cannot open the subject index: replacing it, to be built again from the log");
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = path.as_os_str().to_owned();
                    file.push(suffix);
                    let _ = std::fs::remove_file(file);
                }
                open_file(path).map_err(|e| storage(path, e))?
            }
        };
        let index = SubjectIndex {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            rule: rule.to_string(),
            keys_of,
        };
        let (size, root, built_by) = index.progress()?;
        let same_log = size <= log.size() && log.tree_hash(size)?.as_slice() == root.as_slice();
        if size > 0 && (!same_log || built_by != rule) {
            tracing::warn!(index = %path.display(), size,
                "the subject index was built from another log (or the log was restored), or by another rule: rebuilding it from the log's first entry");
            index.reset()?;
        }
        Ok(index)
    }

    /// Forgets everything: the index is built again from the log's first entry.
    pub fn reset(&self) -> Result<(), LogError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.execute_batch("DELETE FROM keyed; DELETE FROM progress;")
            .map_err(|e| storage(&self.path, e))
    }

    /// How far the index has read the log, the log's root hash at that size, and the rule
    /// it was built by.
    fn progress(&self) -> Result<(u64, Vec<u8>, String), LogError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let found: Option<(i64, Vec<u8>, String)> = conn
            .query_row("SELECT size, root, rule FROM progress", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .map_err(|e| storage(&self.path, e))?;
        Ok(found.map_or_else(
            || (0, tlog::EMPTY_TREE_HASH.to_vec(), self.rule.clone()),
            |(size, root, rule)| (size as u64, root, rule),
        ))
    }

    /// Entries of the log the index has read.
    pub fn size(&self) -> Result<u64, LogError> {
        Ok(self.progress()?.0)
    }

    /// Reads the log's entries up to `to` (at most the log's size) that the index has not
    /// read yet, [`MAX_ENTRIES_READ`] at a time, and commits them with its progress every
    /// [`ENTRIES_PER_COMMIT`]. The connection is taken per commit, so that a long build (a log
    /// the index has not read) and a request catching up to its checkpoint take turns.
    /// Returns the size reached.
    pub fn catch_up(&self, log: &Log, to: u64) -> Result<u64, LogError> {
        let to = to.min(log.size());
        let fail = |e: rusqlite::Error| storage(&self.path, e);
        loop {
            let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
            let mut size: u64 = conn
                .query_row("SELECT size FROM progress", [], |r| r.get::<_, i64>(0))
                .optional()
                .map_err(fail)?
                .map_or(0, |s| s as u64);
            if size >= to {
                return Ok(size);
            }
            let until = to.min(size + ENTRIES_PER_COMMIT);
            let tx = conn.transaction().map_err(fail)?;
            {
                let mut insert = tx
                    .prepare_cached("INSERT OR IGNORE INTO keyed (key, idx) VALUES (?1, ?2)")
                    .map_err(fail)?;
                while size < until {
                    let end = until.min(size + MAX_ENTRIES_READ);
                    let entries = log.entries(size, end)?;
                    if entries.len() as u64 != end - size {
                        return Err(storage(
                            &self.path,
                            "the log answered fewer entries than it holds",
                        ));
                    }
                    for (offset, entry) in entries.iter().enumerate() {
                        for key in (self.keys_of)(entry) {
                            insert
                                .execute(params![key, (size + offset as u64) as i64])
                                .map_err(fail)?;
                        }
                    }
                    size = end;
                }
            }
            let root = log.tree_hash(size)?;
            tx.execute(
                "INSERT INTO progress (one, size, root, rule) VALUES (1, ?1, ?2, ?3)
                 ON CONFLICT (one) DO UPDATE
                 SET size = excluded.size, root = excluded.root, rule = excluded.rule",
                params![size as i64, root.as_slice(), self.rule],
            )
            .map_err(fail)?;
            tx.commit().map_err(fail)?;
        }
    }

    /// The indexes of entries naming `key` in `from..below`, newest first, at most `limit`.
    pub fn newest(
        &self,
        key: &str,
        from: u64,
        below: u64,
        limit: usize,
    ) -> Result<Vec<u64>, LogError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut statement = conn
            .prepare_cached(
                "SELECT idx FROM keyed WHERE key = ?1 AND idx >= ?2 AND idx < ?3
                 ORDER BY idx DESC LIMIT ?4",
            )
            .map_err(|e| storage(&self.path, e))?;
        statement
            .query_map(params![key, from as i64, below as i64, limit as i64], |r| {
                r.get::<_, i64>(0)
            })
            .and_then(|rows| rows.map(|r| r.map(|i| i as u64)).collect())
            .map_err(|e| storage(&self.path, e))
    }

    /// How many entries in `from..below` name `key`.
    pub fn count(&self, key: &str, from: u64, below: u64) -> Result<u64, LogError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.query_row(
            "SELECT count(*) FROM keyed WHERE key = ?1 AND idx >= ?2 AND idx < ?3",
            params![key, from as i64, below as i64],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n as u64)
        .map_err(|e| storage(&self.path, e))
    }
}
