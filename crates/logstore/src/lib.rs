//! `logstore`: Sovereign's durable transparency log, on an embedded SQLite file.
//!
//! One writer thread owns the database. Callers hand it entries through a bounded queue; it
//! takes every entry waiting (up to a batch limit), appends them and their Merkle hashes in
//! one transaction (one fsync for the whole batch: group commit) and only then tells each
//! caller its index. So an index returned by [`Log::append`] is durable and already part of
//! the tree. The same thread signs a checkpoint (C2SP tlog-checkpoint) whenever the tree has
//! grown and the checkpoint interval has passed, stores it, and only then publishes it.
//!
//! Each entry's row also holds the Merkle hashes its append created (Go sumdb's stored hashes
//! for record n: the leaf hash and the subtree roots it completes), so one row is written per
//! entry, and any stored hash is found from its index ([`tlog::split_stored_hash_index`]).
//! The writer keeps the tree's right edge (at most 64 hashes) in memory and never reads back
//! while appending. Opening a log reads
//! that right edge and the last checkpoint: O(log n), whatever the log's size.
//!
//! Invariants: entries and hashes are only ever appended; a checkpoint is signed only over
//! committed entries; at open, the last signed checkpoint must match the stored tree, or the
//! log refuses to open (it never signs a checkpoint inconsistent with one it signed before).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{Connection, OptionalExtension, params};
use tlog::note::Signer;
use tlog::{Checkpoint, Hash, HashReader, Tile, TileKind};

/// Largest entry: the entry-bundle format prefixes each entry with a 16-bit length.
pub const MAX_ENTRY_BYTES: usize = u16::MAX as usize;
const SCHEMA_VERSION: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("the log is closed")]
    Closed,
    #[error("log storage failed ({path}): {detail}")]
    Storage { path: PathBuf, detail: String },
    #[error("log entry of {0} bytes is larger than the limit of {MAX_ENTRY_BYTES}")]
    EntryTooLarge(usize),
    #[error("the log at {path} is inconsistent: {detail}; refusing to serve or sign it")]
    Inconsistent { path: PathBuf, detail: String },
    #[error("{0}")]
    OutOfRange(String),
}

/// How the log batches and checkpoints.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// A new checkpoint is signed at most this long after the tree grows.
    pub checkpoint_interval: Duration,
    /// Most entries committed in one transaction.
    pub max_batch: usize,
    /// Entries that may wait for the writer; callers wait when it is full.
    pub queue: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            checkpoint_interval: Duration::from_millis(500),
            max_batch: 4096,
            queue: 16384,
        }
    }
}

/// A signed checkpoint as published.
#[derive(Debug, Clone)]
pub struct Published {
    pub size: u64,
    pub hash: Hash,
    /// The signed note, as served at `checkpoint`.
    pub note: Vec<u8>,
    /// When this process signed it, or opened the log it covered whole: the checkpoint was
    /// current then. Analytics measure the checkpoint's age from it.
    pub signed_at: SystemTime,
}

/// How the writer answers one append: async callers wait on a tokio channel, threads on a
/// std one.
type Reply = Box<dyn FnOnce(Result<u64, LogError>) + Send>;

enum Message {
    Append(Vec<u8>, Reply),
    Stop,
}

struct Shared {
    path: PathBuf,
    verifier_key: String,
    origin: String,
    /// Entries durable and integrated into the tree.
    size: AtomicU64,
    checkpoint: RwLock<Arc<Published>>,
    reader: Mutex<Connection>,
}

/// The transparency log. Cheap to share behind an `Arc`; dropping it stops the writer after
/// it has committed what it was given and signed a last checkpoint.
pub struct Log {
    queue: SyncSender<Message>,
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Log {
    /// Opens (creating if needed) the log database at `path`, checks it against its last
    /// signed checkpoint, and starts the writer.
    pub fn open(path: &Path, signer: Signer, options: LogOptions) -> Result<Log, LogError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| storage(path, e))?;
        }
        let conn = open_connection(path)?;
        let reader = open_connection(path)?;
        let verifier = signer.verifier();
        let origin = signer.name().to_string();

        let size: u64 = conn
            .query_row("SELECT COALESCE(MAX(idx) + 1, 0) FROM entries", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(|e| storage(path, e))? as u64;
        let frontier = read_frontier(&conn, path, size)?;

        let last: Option<(i64, Vec<u8>)> = conn
            .query_row(
                "SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| storage(path, e))?;
        let published = match last {
            Some((_, note)) => {
                let checkpoint = tlog::open_checkpoint(&note, &verifier).map_err(|e| {
                    inconsistent(path, format!("the last checkpoint does not verify: {e}"))
                })?;
                if checkpoint.size > size {
                    return Err(inconsistent(
                        path,
                        format!(
                            "the last signed checkpoint covers {} entries but only {size} are stored",
                            checkpoint.size
                        ),
                    ));
                }
                let root = tlog::tree_hash(checkpoint.size, &DbHashes(&conn))
                    .map_err(|e| storage(path, e))?;
                if root != checkpoint.hash {
                    return Err(inconsistent(
                        path,
                        format!(
                            "the stored tree of size {} does not match the signed checkpoint",
                            checkpoint.size
                        ),
                    ));
                }
                Published {
                    size: checkpoint.size,
                    hash: checkpoint.hash,
                    note,
                    signed_at: SystemTime::now(),
                }
            }
            None => Published {
                size: u64::MAX, // nothing signed yet: the writer signs at once
                hash: [0; 32],
                note: Vec::new(),
                signed_at: SystemTime::now(),
            },
        };

        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            verifier_key: verifier.to_string(),
            origin,
            size: AtomicU64::new(size),
            checkpoint: RwLock::new(Arc::new(published.clone())),
            reader: Mutex::new(reader),
        });
        let mut writer = Writer {
            conn,
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
        Ok(Log {
            queue,
            shared,
            writer: Mutex::new(Some(handle)),
        })
    }

    /// Appends an entry; returns its index once it is durable and in the tree.
    pub async fn append(&self, entry: Vec<u8>) -> Result<u64, LogError> {
        if entry.len() > MAX_ENTRY_BYTES {
            return Err(LogError::EntryTooLarge(entry.len()));
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let reply: Reply = Box::new(move |result| {
            let _ = reply.send(result);
        });
        let mut message = Message::Append(entry, reply);
        loop {
            match self.queue.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) => {
                    // Back-pressure: the writer is behind; wait instead of queueing without bound.
                    message = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(TrySendError::Disconnected(_)) => return Err(LogError::Closed),
            }
        }
        answer.await.map_err(|_| LogError::Closed)?
    }

    /// Appends from a thread that is not async (tools, tests, benchmarks).
    pub fn append_blocking(&self, entry: Vec<u8>) -> Result<u64, LogError> {
        if entry.len() > MAX_ENTRY_BYTES {
            return Err(LogError::EntryTooLarge(entry.len()));
        }
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let reply: Reply = Box::new(move |result| {
            let _ = reply.send(result);
        });
        self.queue
            .send(Message::Append(entry, reply))
            .map_err(|_| LogError::Closed)?;
        answer.recv().map_err(|_| LogError::Closed)?
    }

    /// Entries durable and integrated into the tree.
    pub fn size(&self) -> u64 {
        self.shared.size.load(Ordering::Acquire)
    }

    /// The latest signed checkpoint.
    pub fn checkpoint(&self) -> Arc<Published> {
        self.shared
            .checkpoint
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The log's verifier key, in signed-note form (`origin+keyhash+base64`).
    pub fn verifier_key(&self) -> &str {
        &self.shared.verifier_key
    }

    pub fn origin(&self) -> &str {
        &self.shared.origin
    }

    /// A tile or entry bundle, exactly as C2SP tlog-tiles serves it; `None` if the log does
    /// not hold it (yet).
    pub fn tile(&self, kind: TileKind, tile: &Tile) -> Result<Option<Vec<u8>>, LogError> {
        let size = self.size();
        let start = tile.n << tile.height;
        let end = start + u64::from(tile.width);
        let reader = self.reader();
        match kind {
            TileKind::Entries => {
                if end > size {
                    return Ok(None);
                }
                let mut statement = reader
                    .prepare_cached(
                        "SELECT data FROM entries WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
                    )
                    .map_err(|e| self.storage(e))?;
                let entries: Vec<Vec<u8>> = statement
                    .query_map(params![start as i64, end as i64], |r| r.get(0))
                    .map_err(|e| self.storage(e))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| self.storage(e))?;
                if entries.len() as u64 != end - start {
                    return Err(self.storage("entries missing from the store"));
                }
                tlog::encode_bundle(entries.iter().map(Vec::as_slice))
                    .map(Some)
                    .map_err(|e| self.storage(e))
            }
            TileKind::Hashes => {
                let level = u32::from(tile.height) * u32::from(tile.level);
                if level >= 64 || end > (size >> level) {
                    return Ok(None);
                }
                tlog::read_tile_data(tile, &DbHashes(&reader))
                    .map(Some)
                    .map_err(|e| self.storage(e))
            }
        }
    }

    /// One entry by index.
    pub fn entry(&self, index: u64) -> Result<Option<Vec<u8>>, LogError> {
        if index >= self.size() {
            return Ok(None);
        }
        let reader = self.reader();
        reader
            .query_row(
                "SELECT data FROM entries WHERE idx = ?1",
                [index as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.storage(e))
    }

    /// The inclusion proof of entry `index` in the tree of `size` entries.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, LogError> {
        if size > self.size() || index >= size {
            return Err(LogError::OutOfRange(format!(
                "no entry {index} in a tree of {size} (the log holds {})",
                self.size()
            )));
        }
        tlog::prove_record(size, index, &DbHashes(&self.reader())).map_err(|e| self.storage(e))
    }

    /// The consistency proof between the trees of `from` and `to` entries.
    pub fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>, LogError> {
        if to > self.size() || from > to {
            return Err(LogError::OutOfRange(format!(
                "no consistency proof from {from} to {to} (the log holds {})",
                self.size()
            )));
        }
        tlog::prove_tree(to, from, &DbHashes(&self.reader())).map_err(|e| self.storage(e))
    }

    /// The root hash of the tree of `size` entries.
    pub fn tree_hash(&self, size: u64) -> Result<Hash, LogError> {
        if size > self.size() {
            return Err(LogError::OutOfRange(format!(
                "the log holds {} entries, not {size}",
                self.size()
            )));
        }
        tlog::tree_hash(size, &DbHashes(&self.reader())).map_err(|e| self.storage(e))
    }

    /// Stops the writer after it has committed everything queued and signed a last checkpoint.
    pub fn close(&self) {
        let _ = self.queue.send(Message::Stop);
        if let Some(handle) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = handle.join();
        }
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.shared.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn storage(&self, e: impl std::fmt::Display) -> LogError {
        storage(&self.shared.path, e)
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.close();
    }
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
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
        let mut stopping = false;
        while !stopping {
            let wait = self
                .options
                .checkpoint_interval
                .saturating_sub(self.signed_at.elapsed());
            let first = match queue.recv_timeout(wait) {
                Ok(message) => Some(message),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = Vec::new();
            let mut next = first;
            while let Some(message) = next {
                match message {
                    Message::Append(entry, reply) => batch.push((entry, reply)),
                    Message::Stop => {
                        stopping = true;
                        break;
                    }
                }
                if batch.len() >= self.options.max_batch {
                    break;
                }
                next = queue.try_recv().ok();
            }
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
                let error = storage(&self.shared.path, &e);
                for (_, reply) in batch {
                    reply(Err(LogError::Storage {
                        path: self.shared.path.clone(),
                        detail: error.to_string(),
                    }));
                }
            }
        }
    }

    fn sign_checkpoint(&mut self) -> Result<(), LogError> {
        let checkpoint = Checkpoint {
            origin: self.signer.name().to_string(),
            size: self.size,
            hash: frontier_root(&self.frontier, self.size),
            extensions: Vec::new(),
        };
        let note = tlog::sign_checkpoint(&checkpoint, &self.signer)
            .map_err(|e| storage(&self.shared.path, e))?;
        // Stored (durably) before it is published, so a restart finds it and checks against it.
        self.conn
            .execute(
                "INSERT OR REPLACE INTO checkpoints (size, note) VALUES (?1, ?2)",
                params![checkpoint.size as i64, note],
            )
            .map_err(|e| storage(&self.shared.path, e))?;
        *self
            .shared
            .checkpoint
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(Published {
            size: checkpoint.size,
            hash: checkpoint.hash,
            note,
            signed_at: SystemTime::now(),
        });
        self.signed_size = self.size;
        self.signed_at = Instant::now();
        Ok(())
    }
}

/// Appends entry `n`: returns the hashes it adds to the store (at consecutive stored
/// indexes from `stored_hash_index(0, n)`), as Go's `tlog.StoredHashes` does, using the
/// right edge instead of reading earlier hashes back.
fn append_hashes(frontier: &mut Vec<Option<Hash>>, n: u64, entry: &[u8]) -> Vec<Hash> {
    let mut hash = tlog::leaf_hash(entry);
    let mut added = vec![hash];
    let mut level = 0;
    while (n >> level) & 1 == 1 {
        let left = frontier[level]
            .take()
            .expect("right edge holds every set bit");
        hash = tlog::node_hash(&left, &hash);
        added.push(hash);
        level += 1;
    }
    if frontier.len() <= level {
        frontier.resize(level + 1, None);
    }
    frontier[level] = Some(hash);
    added
}

/// The RFC 6962 root of a tree from its right edge: fold the complete subtrees from the
/// smallest up.
fn frontier_root(frontier: &[Option<Hash>], size: u64) -> Hash {
    let mut root: Option<Hash> = None;
    for (level, hash) in frontier.iter().enumerate() {
        if (size >> level) & 1 == 0 {
            continue;
        }
        let hash = hash.expect("right edge holds every set bit");
        root = Some(match root {
            None => hash,
            Some(right) => tlog::node_hash(&hash, &right),
        });
    }
    root.unwrap_or(tlog::EMPTY_TREE_HASH)
}

fn read_frontier(conn: &Connection, path: &Path, size: u64) -> Result<Vec<Option<Hash>>, LogError> {
    let mut frontier = vec![None; 64];
    let reader = DbHashes(conn);
    for (level, slot) in frontier.iter_mut().enumerate() {
        if (size >> level) & 1 == 1 {
            let index = tlog::stored_hash_index(level as u32, (size >> level) - 1);
            let hash = reader.read_hashes(&[index]).map_err(|e| storage(path, e))?;
            *slot = Some(hash[0]);
        }
    }
    Ok(frontier)
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ReadError(String);

/// Stored hashes read from the database. The hash at (level L, index k) was created by the
/// append of entry ((k + 1) << L) - 1, and is the L-th hash of that entry's row.
struct DbHashes<'c>(&'c Connection);

impl HashReader for DbHashes<'_> {
    type Error = ReadError;

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, ReadError> {
        let mut statement = self
            .0
            .prepare_cached("SELECT hashes FROM entries WHERE idx = ?1")
            .map_err(|e| ReadError(e.to_string()))?;
        indexes
            .iter()
            .map(|&index| {
                let (level, k) = tlog::split_stored_hash_index(index);
                let entry = ((k + 1) << level) - 1;
                let bytes: Vec<u8> = statement
                    .query_row([entry as i64], |r| r.get(0))
                    .map_err(|e| ReadError(format!("stored hash {index} (entry {entry}): {e}")))?;
                let at = level as usize * 32;
                bytes
                    .get(at..at + 32)
                    .and_then(|h| h.try_into().ok())
                    .ok_or_else(|| ReadError(format!("entry {entry} lacks its level-{level} hash")))
            })
            .collect()
    }
}

fn open_connection(path: &Path) -> Result<Connection, LogError> {
    let conn = Connection::open(path).map_err(|e| storage(path, e))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA busy_timeout = 5000;
         PRAGMA cache_size = -65536;
         PRAGMA wal_autocheckpoint = 16384;
         CREATE TABLE IF NOT EXISTS entries (
             idx INTEGER PRIMARY KEY, data BLOB NOT NULL, hashes BLOB NOT NULL);
         CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, note BLOB NOT NULL);",
    )
    .map_err(|e| storage(path, e))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| storage(path, e))?;
    match version {
        0 => conn
            .execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
            .map_err(|e| storage(path, e))?,
        SCHEMA_VERSION => {}
        other => {
            return Err(storage(
                path,
                format!(
                    "schema version {other} is newer than this build supports ({SCHEMA_VERSION})"
                ),
            ));
        }
    }
    Ok(conn)
}

fn storage(path: &Path, e: impl std::fmt::Display) -> LogError {
    LogError::Storage {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

fn inconsistent(path: &Path, detail: String) -> LogError {
    LogError::Inconsistent {
        path: path.to_path_buf(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn right_edge_hashes_match_tlog() {
        let mut stored: Vec<Hash> = Vec::new();
        let mut frontier = vec![None; 64];
        for n in 0..1000u64 {
            let entry = n.to_be_bytes();
            let expected = tlog::stored_hashes(n, &entry, &stored).unwrap();
            let ours = append_hashes(&mut frontier, n, &entry);
            assert_eq!(ours, expected, "entry {n}");
            stored.extend(ours);
            assert_eq!(
                frontier_root(&frontier, n + 1),
                tlog::tree_hash(n + 1, &stored).unwrap(),
                "root at size {}",
                n + 1
            );
        }
        assert_eq!(frontier_root(&[], 0), tlog::EMPTY_TREE_HASH);
    }
}
