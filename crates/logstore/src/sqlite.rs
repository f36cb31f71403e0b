//! The log on an embedded SQLite file.
//!
//! One writer thread owns the database. Callers hand it entries through a bounded queue; it
//! takes every entry waiting (up to a batch limit), appends them and their Merkle hashes in
//! one transaction (one fsync for the whole batch: group commit) and only then tells each
//! caller its index. The same thread signs a checkpoint whenever the tree has grown and the
//! checkpoint interval has passed, stores it, and only then publishes it. Opening a log
//! reads the tree's right edge and the last checkpoint: O(log n), whatever the log's size.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use tlog::Hash;
use tlog::note::Signer;

use crate::tree::{
    CheckpointProblem, Store, StoredHashes, append_hashes, check_checkpoint, read_frontier,
};
use crate::{Log, LogError, LogOptions, Message, Published, Reply, Shared, next_batch, storage};

/// Reads, on their own connection so they never wait for the writer's transaction.
struct SqliteStore(Mutex<Connection>);

impl Store for SqliteStore {
    fn entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, String> {
        let conn = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut statement = conn
            .prepare_cached("SELECT data FROM entries WHERE idx >= ?1 AND idx < ?2 ORDER BY idx")
            .map_err(|e| e.to_string())?;
        statement
            .query_map(params![start as i64, end as i64], |r| r.get(0))
            .map_err(|e| e.to_string())?
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())
    }

    fn hash_rows(&self, rows: &[u64]) -> Result<Vec<Vec<u8>>, String> {
        let conn = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // A level-0 tile's hashes are those of consecutive entries (most tiles a monitor
        // reads): one range query instead of a query per entry.
        if let [first, .., last] = rows
            && rows.windows(2).all(|w| w[1] == w[0] + 1)
        {
            let mut statement = conn
                .prepare_cached(
                    "SELECT idx, hashes FROM entries WHERE idx >= ?1 AND idx <= ?2 ORDER BY idx",
                )
                .map_err(|e| e.to_string())?;
            let mut found = statement
                .query_map(params![*first as i64, *last as i64], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
                })
                .map_err(|e| e.to_string())?;
            return rows
                .iter()
                .map(|&row| match found.next() {
                    Some(Ok((idx, hashes))) if idx as u64 == row => Ok(hashes),
                    Some(Err(e)) => Err(format!("hashes of entry {row}: {e}")),
                    _ => Err(format!("hashes of entry {row}: not in the store")),
                })
                .collect();
        }
        // One read transaction for all the queries: otherwise each query takes and releases
        // the file's lock, which costs more than the query.
        let transaction = conn.unchecked_transaction().map_err(|e| e.to_string())?;
        hash_rows(&transaction, rows)
    }
}

/// The writer's own view of the file, for reads while it opens the log.
struct WriterStore<'c>(&'c Connection);

impl Store for WriterStore<'_> {
    fn entries(&self, _: u64, _: u64) -> Result<Vec<Vec<u8>>, String> {
        Err("the writer never reads entries back".into())
    }

    fn hash_rows(&self, rows: &[u64]) -> Result<Vec<Vec<u8>>, String> {
        hash_rows(self.0, rows)
    }
}

fn hash_rows(conn: &Connection, rows: &[u64]) -> Result<Vec<Vec<u8>>, String> {
    let mut statement = conn
        .prepare_cached("SELECT hashes FROM entries WHERE idx = ?1")
        .map_err(|e| e.to_string())?;
    rows.iter()
        .map(|&row| {
            statement
                .query_row([row as i64], |r| r.get(0))
                .map_err(|e| format!("hashes of entry {row}: {e}"))
        })
        .collect()
}

pub(crate) fn open(path: &Path, signer: Signer, options: LogOptions) -> Result<Log, LogError> {
    let mut conn = open_connection(path)?;
    sqlitedb::migrate(&mut conn, SCHEMA).map_err(|e| storage(path, e))?;
    // The WAL is copied into the file by a thread of its own, so that no batch's commit waits
    // for it (see `sqlitedb::Checkpointer`).
    sqlitedb::no_automatic_checkpoints(&conn).map_err(|e| storage(path, e))?;
    let checkpoints =
        sqlitedb::Checkpointer::spawn(path, &OPTIONS, CHECKPOINT_EVERY, WAL_RESTART_FRAMES)
            .map_err(|e| storage(path, e))?;
    // Opened after the schema is in place, which it reads.
    let reader = open_connection(path)?;

    let size: u64 = conn
        .query_row("SELECT COALESCE(MAX(idx) + 1, 0) FROM entries", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(|e| storage(path, e))? as u64;
    let hashes = StoredHashes(&WriterStore(&conn));
    let frontier = read_frontier(&hashes, size).map_err(|e| storage(path, e))?;

    let last: Option<Vec<u8>> = conn
        .query_row(
            "SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| storage(path, e))?;
    let published = match last {
        Some(note) => {
            check_checkpoint(note, &signer.verifier(), size, &hashes).map_err(|problem| {
                match problem {
                    CheckpointProblem::Inconsistent(detail) => LogError::Inconsistent {
                        path: path.to_path_buf(),
                        detail,
                    },
                    CheckpointProblem::Unreadable(detail) => storage(path, detail),
                }
            })?
        }
        None => Published::none(),
    };

    let shared = Arc::new(Shared::new(
        path.to_path_buf(),
        &signer,
        size,
        published.clone(),
    ));
    // One process owns a SQLite log and integrates everything appended to it.
    shared
        .integrating
        .store(true, std::sync::atomic::Ordering::Release);
    let mut writer = Writer {
        conn,
        _checkpoints: checkpoints,
        shared: shared.clone(),
        signer,
        options: options.clone(),
        size,
        frontier,
        signed_size: published.size,
        signed_at: Instant::now(),
    };
    if writer.signed_size != size {
        writer.sign_checkpoint()?;
    }
    let (queue, receiver) = sync_channel(options.queue.max(1));
    let handle = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || writer.run(receiver))
        .map_err(|e| storage(path, e))?;
    Ok(Log::start(
        queue,
        shared,
        Arc::new(SqliteStore(Mutex::new(reader))),
        vec![handle],
        options.tile_cache_bytes,
    ))
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    /// Stops when the writer does.
    _checkpoints: sqlitedb::Checkpointer,
    shared: Arc<Shared>,
    signer: Signer,
    options: LogOptions,
    size: u64,
    /// `frontier[j]`: the hash of the complete subtree at level j on the tree's right edge,
    /// present exactly when bit j of `size` is set.
    frontier: Vec<Option<Hash>>,
    signed_size: u64,
    signed_at: Instant,
}

impl Writer {
    fn run(mut self, queue: Receiver<Message>) {
        loop {
            let wait = self
                .options
                .checkpoint_interval
                .saturating_sub(self.signed_at.elapsed());
            let (batch, stopping) = next_batch(&queue, wait, self.options.max_batch);
            if !batch.is_empty() {
                self.commit(batch);
            }
            let due = self.signed_at.elapsed() >= self.options.checkpoint_interval;
            if self.signed_size != self.size && (due || stopping) {
                if let Err(e) = self.sign_checkpoint() {
                    tracing::error!(error = %e, "cannot sign a checkpoint");
                }
            } else if due {
                self.signed_at = Instant::now();
            }
            if stopping {
                return;
            }
        }
    }

    /// Appends a batch in one transaction, then answers every caller.
    fn commit(&mut self, batch: Vec<(Vec<u8>, Reply)>) {
        let mut frontier = self.frontier.clone();
        let result = (|| -> rusqlite::Result<()> {
            let tx = self.conn.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO entries (idx, data, hashes) VALUES (?1, ?2, ?3)",
                )?;
                for (offset, (entry, _)) in batch.iter().enumerate() {
                    let n = self.size + offset as u64;
                    let hashes = append_hashes(&mut frontier, n, entry).concat();
                    insert.execute(params![n as i64, entry, hashes])?;
                }
            }
            tx.commit()
        })();
        match result {
            Ok(()) => {
                let first = self.size;
                self.size += batch.len() as u64;
                self.frontier = frontier;
                self.shared.size.store(self.size, Ordering::Release);
                for (offset, (_, reply)) in batch.into_iter().enumerate() {
                    reply(Ok(first + offset as u64));
                }
            }
            Err(e) => {
                // Nothing of the batch is stored (the transaction rolled back); the in-memory
                // tree was only changed on a copy.
                tracing::error!(error = %e, entries = batch.len(), "log append failed");
                for (_, reply) in batch {
                    reply(Err(self.shared.storage(&e)));
                }
            }
        }
    }

    fn sign_checkpoint(&mut self) -> Result<(), LogError> {
        let published = crate::sign(&self.signer, self.size, &self.frontier, &self.shared)?;
        // Stored (durably) before it is published, so a restart finds it and checks against it.
        self.conn
            .execute(
                "INSERT OR REPLACE INTO checkpoints (size, note) VALUES (?1, ?2)",
                params![published.size as i64, published.note],
            )
            .map_err(|e| self.shared.storage(e))?;
        self.shared.publish(published);
        self.signed_size = self.size;
        self.signed_at = Instant::now();
        Ok(())
    }
}

/// The schema, one step a version (`sqlitedb::migrate`). Files written before `sqlitedb`
/// recorded version 1 with these tables, so they open unchanged.
const SCHEMA: &[&str] = &["
    CREATE TABLE IF NOT EXISTS entries (
        idx INTEGER PRIMARY KEY, data BLOB NOT NULL, hashes BLOB NOT NULL);
    CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, note BLOB NOT NULL);
"];

/// How the log's file is opened: durable (`sqlitedb`), waiting up to 5 s for a lock held by
/// another connection.
const OPTIONS: sqlitedb::Options = sqlitedb::Options {
    busy_timeout: Duration::from_secs(5),
    ..sqlitedb::Options::DEFAULT
};

/// How often the checkpointer copies the WAL into the file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// The WAL's size (4 KiB frames, 64 MiB) above which the checkpointer makes it start over.
const WAL_RESTART_FRAMES: u32 = 16384;

/// Opens a durable connection (`sqlitedb`) with the log's cache settings: a large page cache
/// and rare automatic checkpoints, as appends are sequential and batched (the writer's
/// connection turns them off: a thread of its own checkpoints).
fn open_connection(path: &Path) -> Result<Connection, LogError> {
    let conn = sqlitedb::open_durable(path, &OPTIONS).map_err(|e| storage(path, e))?;
    conn.execute_batch(
        "PRAGMA cache_size = -65536;
         PRAGMA wal_autocheckpoint = 16384;",
    )
    .map_err(|e| storage(path, e))?;
    Ok(conn)
}
