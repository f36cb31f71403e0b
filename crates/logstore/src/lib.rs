//! `logstore`: Sovereign's durable transparency log, on an embedded SQLite file or on
//! PostgreSQL shared by several gateways.
//!
//! An index returned by [`Log::append`] is durable and already part of the Merkle tree; only
//! then may the gateway answer the request the entry records. A checkpoint (C2SP
//! tlog-checkpoint) is signed whenever the tree has grown and the checkpoint interval has
//! passed, stored, and only then published.
//!
//! - On SQLite ([`Log::open`], `sqlite.rs`) one writer thread owns the file: it takes every
//!   entry waiting (up to a batch limit), appends them and their hashes in one transaction
//!   (one fsync for the whole batch: group commit) and signs checkpoints.
//! - On PostgreSQL ([`Log::open_postgres`], `postgres.rs`) every gateway queues entries in a
//!   table, and the one gateway holding an advisory lock integrates them into the tree and
//!   signs; another takes over when it dies.
//!
//! Invariants: entries and hashes are only ever appended; a checkpoint is signed only over
//! committed entries; at open (and at every takeover), the last signed checkpoint must match
//! the stored tree, or the log refuses to open (it never signs a checkpoint inconsistent with
//! one it signed before).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tlog::note::Signer;
use tlog::{Hash, Tile, TileKind};

use tree::{Store, StoredHashes};

mod postgres;
mod sqlite;
mod subject_index;
mod tree;

pub use subject_index::{KeysOf, SubjectIndex};

/// The most entries [`Log::entries`] reads at once.
pub const MAX_ENTRIES_READ: u64 = 1024;

/// The PostgreSQL session advisory lock that the gateway integrating a shared log holds:
/// `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted` names its connection.
pub use postgres::INTEGRATOR_LOCK as POSTGRES_INTEGRATOR_LOCK;

/// Largest entry: the entry-bundle format prefixes each entry with a 16-bit length.
pub const MAX_ENTRY_BYTES: usize = u16::MAX as usize;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("the log is closed")]
    Closed,
    /// `path` is the SQLite file, or a PostgreSQL URL without its password.
    #[error("log storage failed ({path}): {detail}")]
    Storage { path: PathBuf, detail: String },
    #[error("log entry of {0} bytes is larger than the limit of {MAX_ENTRY_BYTES}")]
    EntryTooLarge(usize),
    #[error("the log at {path} is inconsistent: {detail}; refusing to serve or sign it")]
    Inconsistent { path: PathBuf, detail: String },
    #[error("{0}")]
    OutOfRange(String),
    /// A log store setting this build cannot open. Never repeats a password.
    #[error("{0}")]
    InvalidStore(String),
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
    /// Pooled connections that serve reads (tiles, proofs) from a PostgreSQL log.
    pub readers: usize,
    /// How long an append on PostgreSQL waits for some gateway to integrate it before it
    /// fails. The entry stays queued and a later integrator still adds it.
    pub integration_deadline: Duration,
    /// Bytes of full tiles and entry bundles kept in memory for monitors (see `TileCache`);
    /// 0 keeps none.
    pub tile_cache_bytes: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            checkpoint_interval: Duration::from_millis(500),
            max_batch: 4096,
            queue: 16384,
            readers: 4,
            integration_deadline: Duration::from_secs(30),
            tile_cache_bytes: DEFAULT_TILE_CACHE_BYTES,
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
    /// When it was signed (on PostgreSQL, by whichever gateway signed it), or, on SQLite, when
    /// this process opened the log it covered whole: the checkpoint was current then.
    /// Analytics measure the checkpoint's age from it.
    pub signed_at: SystemTime,
}

impl Published {
    /// Stands for "nothing signed yet" (size `u64::MAX`, no note): the writer signs at once.
    pub fn none() -> Published {
        Published {
            size: u64::MAX,
            hash: [0; 32],
            note: Vec::new(),
            signed_at: SystemTime::now(),
        }
    }
}

/// How a writer answers one append: async callers wait on a tokio channel, threads on a
/// std one.
type Reply = Box<dyn FnOnce(Result<u64, LogError>) + Send>;

enum Message {
    Append(Vec<u8>, Reply),
    Stop,
}

/// What every thread of a log sees.
struct Shared {
    /// The SQLite file or the password-free PostgreSQL URL, for errors.
    name: PathBuf,
    verifier_key: String,
    origin: String,
    /// Entries durable and integrated into the tree.
    size: AtomicU64,
    checkpoint: RwLock<Arc<Published>>,
    /// Whether this process integrates and signs the log: always on SQLite; on PostgreSQL,
    /// while it holds the integrator's lock.
    integrating: AtomicBool,
}

impl Shared {
    fn new(name: PathBuf, signer: &Signer, size: u64, published: Published) -> Shared {
        Shared {
            name,
            verifier_key: signer.verifier().to_string(),
            origin: signer.name().to_string(),
            size: AtomicU64::new(size),
            checkpoint: RwLock::new(Arc::new(published)),
            integrating: AtomicBool::new(false),
        }
    }

    fn publish(&self, published: Published) {
        *self.checkpoint.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(published);
    }

    fn checkpoint(&self) -> Arc<Published> {
        self.checkpoint
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn storage(&self, e: impl std::fmt::Display) -> LogError {
        storage(&self.name, e)
    }

    fn inconsistent(&self, detail: String) -> LogError {
        LogError::Inconsistent {
            path: self.name.clone(),
            detail,
        }
    }
}

/// The transparency log. Cheap to share behind an `Arc`; dropping it stops its threads after
/// they have committed what they were given and signed a last checkpoint.
pub struct Log {
    queue: SyncSender<Message>,
    shared: Arc<Shared>,
    store: Arc<dyn Store + Send + Sync>,
    /// Full tiles and entry bundles served lately.
    tiles: Mutex<TileCache>,
    /// Joined in order at close: the thread reading `queue` first.
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Bytes of full tiles and entry bundles a log keeps in memory by default: the first 75,000
/// or so entries of 850 bytes, with their hash tiles.
pub const DEFAULT_TILE_CACHE_BYTES: usize = 64 << 20;

/// Full tiles and entry bundles (they never change), by (is a bundle, tile): those read first,
/// up to [`LogOptions::tile_cache_bytes`]. Once full it keeps what it has: a monitor reads the whole log
/// from the start, so a cache that replaced old tiles with new ones would hold none of the
/// tiles of its next run (each scan pushing out what the next one needs first), while this
/// one serves the start of every run. The rest is read from the store, in one range query
/// per tile.
struct TileCache {
    tiles: HashMap<(bool, Tile), Arc<Vec<u8>>>,
    bytes: usize,
    limit: usize,
}

impl TileCache {
    fn new(limit: usize) -> TileCache {
        TileCache {
            tiles: HashMap::new(),
            bytes: 0,
            limit,
        }
    }

    fn get(&self, key: &(bool, Tile)) -> Option<Arc<Vec<u8>>> {
        self.tiles.get(key).cloned()
    }

    fn insert(&mut self, key: (bool, Tile), data: Arc<Vec<u8>>) {
        if self.bytes + data.len() > self.limit || self.tiles.contains_key(&key) {
            return;
        }
        self.bytes += data.len();
        self.tiles.insert(key, data);
    }
}

impl Log {
    /// Opens (creating if needed) the log database at `path`, checks it against its last
    /// signed checkpoint, and starts the writer.
    pub fn open(path: &Path, signer: Signer, options: LogOptions) -> Result<Log, LogError> {
        sqlite::open(path, signer, options)
    }

    /// Opens (creating or upgrading its tables) the log in the PostgreSQL database at `url`,
    /// which other gateways may share. Its calls block: use it outside async tasks, as the
    /// site stores on PostgreSQL.
    pub fn open_postgres(url: &str, signer: Signer, options: LogOptions) -> Result<Log, LogError> {
        postgres::open(url, signer, options)
    }

    /// Opens the log a `log.store` setting names: `sqlite:PATH` (relative to `base_dir`) or
    /// `postgres://…` / `postgresql://…`.
    pub fn open_url(
        store: &str,
        base_dir: &Path,
        signer: Signer,
        options: LogOptions,
    ) -> Result<Log, LogError> {
        if let Some(path) = store.strip_prefix("sqlite:") {
            if path.trim().is_empty() {
                return Err(LogError::InvalidStore(
                    "the SQLite log store has no path: use `sqlite:PATH`".into(),
                ));
            }
            return Log::open(&base_dir.join(path), signer, options);
        }
        if pgconn::is_postgres_url(store) {
            return Log::open_postgres(store, signer, options);
        }
        if store.starts_with("redb:") {
            return Err(LogError::InvalidStore(
                "`redb:` log stores are not implemented yet: use `sqlite:PATH` or `postgres://…`"
                    .into(),
            ));
        }
        let scheme: String = store
            .split(':')
            .next()
            .unwrap_or_default()
            .chars()
            .take(32)
            .collect();
        Err(LogError::InvalidStore(format!(
            "unsupported log store `{scheme}:…`: use `sqlite:PATH` or `postgres://…`"
        )))
    }

    fn start(
        queue: SyncSender<Message>,
        shared: Arc<Shared>,
        store: Arc<dyn Store + Send + Sync>,
        threads: Vec<JoinHandle<()>>,
        tile_cache_bytes: usize,
    ) -> Log {
        Log {
            queue,
            shared,
            store,
            tiles: Mutex::new(TileCache::new(tile_cache_bytes)),
            threads: Mutex::new(threads),
        }
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

    /// Whether this gateway integrates and signs the log now (on a log shared through
    /// PostgreSQL, exactly one gateway does at a time): the one to raise what must be raised
    /// once for the whole fleet.
    pub fn integrates(&self) -> bool {
        self.shared.integrating.load(Ordering::Acquire)
    }

    /// Entries `from..to` (at most [`MAX_ENTRIES_READ`] of them, and only integrated ones),
    /// in order.
    pub fn entries(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, LogError> {
        let to = to
            .min(self.size())
            .min(from.saturating_add(MAX_ENTRIES_READ));
        if from >= to {
            return Ok(Vec::new());
        }
        self.store
            .entries(from, to)
            .map_err(|e| self.shared.storage(e))
    }

    /// The latest signed checkpoint.
    pub fn checkpoint(&self) -> Arc<Published> {
        self.shared.checkpoint()
    }

    /// The log's verifier key, in signed-note form (`origin+keyhash+base64`).
    pub fn verifier_key(&self) -> &str {
        &self.shared.verifier_key
    }

    pub fn origin(&self) -> &str {
        &self.shared.origin
    }

    /// A tile or entry bundle, exactly as C2SP tlog-tiles serves it; `None` if the log does
    /// not hold it (yet). Full tiles never change: the first ones read are kept in memory
    /// (at most [`LogOptions::tile_cache_bytes`]; see `TileCache` for which), so monitors reading the log again
    /// do not rebuild them from the store. Partial tiles are always read from the store: the
    /// log replaces them as it grows.
    pub fn tile(&self, kind: TileKind, tile: &Tile) -> Result<Option<Arc<Vec<u8>>>, LogError> {
        let key = (kind == TileKind::Entries, *tile);
        if tile.is_full()
            && let Some(data) = self
                .tiles
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
        {
            return Ok(Some(data));
        }
        let Some(data) = self.read_tile(kind, tile)? else {
            return Ok(None);
        };
        let data = Arc::new(data);
        if tile.is_full() {
            self.tiles
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, data.clone());
        }
        Ok(Some(data))
    }

    /// A tile or entry bundle built from the store.
    fn read_tile(&self, kind: TileKind, tile: &Tile) -> Result<Option<Vec<u8>>, LogError> {
        let size = self.size();
        let start = tile.n << tile.height;
        let end = start + u64::from(tile.width);
        match kind {
            TileKind::Entries => {
                if end > size {
                    return Ok(None);
                }
                let entries = self
                    .store
                    .entries(start, end)
                    .map_err(|e| self.shared.storage(e))?;
                if entries.len() as u64 != end - start {
                    return Err(self.shared.storage("entries missing from the store"));
                }
                tlog::encode_bundle(entries.iter().map(Vec::as_slice))
                    .map(Some)
                    .map_err(|e| self.shared.storage(e))
            }
            TileKind::Hashes => {
                let level = u32::from(tile.height) * u32::from(tile.level);
                if level >= 64 || end > (size >> level) {
                    return Ok(None);
                }
                tlog::read_tile_data(tile, &self.hashes())
                    .map(Some)
                    .map_err(|e| self.shared.storage(e))
            }
        }
    }

    /// One entry by index.
    pub fn entry(&self, index: u64) -> Result<Option<Vec<u8>>, LogError> {
        if index >= self.size() {
            return Ok(None);
        }
        let mut entries = self
            .store
            .entries(index, index + 1)
            .map_err(|e| self.shared.storage(e))?;
        Ok(entries.pop())
    }

    /// [`Log::entry`], waiting up to `wait` for this gateway's view of the tree to reach
    /// `index`: on a shared log another gateway may have integrated it a moment ago, and each
    /// gateway takes up the tree's size only every so often (100 ms on PostgreSQL).
    pub fn entry_within(&self, index: u64, wait: Duration) -> Result<Option<Vec<u8>>, LogError> {
        let deadline = Instant::now() + wait;
        while index >= self.size() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.entry(index)
    }

    /// The inclusion proof of entry `index` in the tree of `size` entries.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, LogError> {
        if size > self.size() || index >= size {
            return Err(LogError::OutOfRange(format!(
                "no entry {index} in a tree of {size} (the log holds {})",
                self.size()
            )));
        }
        tlog::prove_record(size, index, &self.hashes()).map_err(|e| self.shared.storage(e))
    }

    /// The consistency proof between the trees of `from` and `to` entries.
    pub fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>, LogError> {
        if to > self.size() || from > to {
            return Err(LogError::OutOfRange(format!(
                "no consistency proof from {from} to {to} (the log holds {})",
                self.size()
            )));
        }
        tlog::prove_tree(to, from, &self.hashes()).map_err(|e| self.shared.storage(e))
    }

    /// The root hash of the tree of `size` entries.
    pub fn tree_hash(&self, size: u64) -> Result<Hash, LogError> {
        if size > self.size() {
            return Err(LogError::OutOfRange(format!(
                "the log holds {} entries, not {size}",
                self.size()
            )));
        }
        tlog::tree_hash(size, &self.hashes()).map_err(|e| self.shared.storage(e))
    }

    /// Stops the writer after it has committed everything queued and signed a last checkpoint.
    pub fn close(&self) {
        let _ = self.queue.send(Message::Stop);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for handle in threads {
            let _ = handle.join();
        }
    }

    fn hashes(&self) -> StoredHashes<'_, dyn Store + Send + Sync> {
        StoredHashes(self.store.as_ref())
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.close();
    }
}

/// Signs the checkpoint of the tree of `size` entries whose right edge is `frontier`.
fn sign(
    signer: &Signer,
    size: u64,
    frontier: &[Option<Hash>],
    shared: &Shared,
) -> Result<Published, LogError> {
    let checkpoint = tlog::Checkpoint {
        origin: signer.name().to_string(),
        size,
        hash: tree::frontier_root(frontier, size),
        extensions: Vec::new(),
    };
    let note = tlog::sign_checkpoint(&checkpoint, signer).map_err(|e| shared.storage(e))?;
    Ok(Published {
        size,
        hash: checkpoint.hash,
        note,
        signed_at: SystemTime::now(),
    })
}

fn storage(path: &Path, e: impl std::fmt::Display) -> LogError {
    LogError::Storage {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// Waits up to `wait` for a first message, then takes whatever else is queued, up to `max`
/// entries. Answers the entries and whether the log is stopping (told to, or every sender
/// gone).
fn next_batch(
    queue: &std::sync::mpsc::Receiver<Message>,
    wait: Duration,
    max: usize,
) -> (Vec<(Vec<u8>, Reply)>, bool) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut batch = Vec::new();
    let mut next = match queue.recv_timeout(wait) {
        Ok(message) => Some(message),
        Err(RecvTimeoutError::Timeout) => None,
        Err(RecvTimeoutError::Disconnected) => return (batch, true),
    };
    while let Some(message) = next {
        match message {
            Message::Append(entry, reply) => batch.push((entry, reply)),
            Message::Stop => return (batch, true),
        }
        if batch.len() >= max {
            break;
        }
        next = queue.try_recv().ok();
    }
    (batch, false)
}
