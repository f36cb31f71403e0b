//! The log on PostgreSQL, shared by several gateways.
//!
//! Every gateway queues its entries in `log_pending` (one transaction per batch, durable
//! before anything else happens). Exactly one gateway, the one holding the session advisory
//! lock [`INTEGRATOR_LOCK`], integrates: it moves queued entries into `log_entries` with their
//! index and Merkle hashes, in one transaction per batch, and signs checkpoints into
//! `log_checkpoints`. The others try the lock every [`TAKEOVER_POLL`]; PostgreSQL releases a
//! session lock when its connection ends, so when the integrating gateway dies another takes
//! over within about a second, first checking the stored tree against the last signed
//! checkpoint, exactly as a gateway opening the log does.
//!
//! Why this is safe:
//! - An append is answered only once its entry is in `log_entries` (looked up by the id its
//!   queue row had), so an answered request's entry is durable and in the tree; an entry
//!   whose integrator died mid-batch is still queued (the batch's transaction rolled back)
//!   and the next integrator takes it.
//! - The integrator writes only through the connection that holds the lock: if it loses the
//!   lock it has lost that connection, and its writes fail. Each batch also checks that the
//!   stored tree ends where the integrator believes it does, so even a second writer could
//!   not fork the tree; it would stop instead.
//! - Checkpoints are signed only over committed entries and stored before any gateway
//!   publishes them; every gateway checks a stored checkpoint's signature and root against
//!   the stored tree before serving it.
//!
//! Every gateway serves reads (tiles, proofs, the checkpoint) from the database, refreshing
//! its view of the tree size and latest checkpoint every [`REFRESH`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pgconn::{PgError, Pool, Target};
use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;
use tlog::Hash;
use tlog::note::{Signer, Verifier};

use crate::tree::{
    CheckpointProblem, Store, StoredHashes, append_hashes, check_checkpoint, read_frontier,
};
use crate::{Log, LogError, LogOptions, Message, Published, Reply, Shared, next_batch};

/// `SCHEMA[v]` upgrades the log's tables from version `v` to `v + 1`.
const SCHEMA: &[&str] = &["
    CREATE TABLE log_pending (
        id   BIGSERIAL PRIMARY KEY,
        data BYTEA NOT NULL
    );
    CREATE TABLE log_entries (
        idx        BIGINT PRIMARY KEY,
        data       BYTEA NOT NULL,
        hashes     BYTEA NOT NULL,
        pending_id BIGINT NOT NULL UNIQUE
    );
    CREATE TABLE log_checkpoints (
        size         BIGINT PRIMARY KEY,
        note         BYTEA NOT NULL,
        signed_at_ms BIGINT NOT NULL
    );
"];

/// Where `sovereign_meta` keeps the log schema's version (a site store may share the database).
const SCHEMA_KEY: &str = "log_schema_version";

/// The session advisory lock whose holder integrates and signs ("sovlogld" in ASCII).
pub const INTEGRATOR_LOCK: i64 = 0x736f_766c_6f67_6c64;

/// How often a gateway that does not integrate tries to take over.
const TAKEOVER_POLL: Duration = Duration::from_millis(250);

/// How often a gateway with appends waiting looks whether they were integrated.
const POLL: Duration = Duration::from_millis(2);

/// How often every gateway refreshes the tree size and checkpoint it serves.
const REFRESH: Duration = Duration::from_millis(100);

/// How long a gateway waits before connecting again after a database error.
const RETRY: Duration = Duration::from_secs(1);

/// Notified when entries are queued, so the integrator need not poll.
const QUEUED: &str = "sovereign_log_queued";

pub(crate) fn open(url: &str, signer: Signer, options: LogOptions) -> Result<Log, LogError> {
    let target = Target::parse(url).map_err(|e| pg_error(&PathBuf::new(), e))?;
    let tile_cache_bytes = options.tile_cache_bytes;
    let name = PathBuf::from(target.name());
    let mut conn = target.connect().map_err(|e| pg_error(&name, e))?;
    target
        .migrate(&mut conn, SCHEMA_KEY, SCHEMA)
        .map_err(|e| pg_error(&name, e))?;
    let pool = target
        .pool(options.readers)
        .map_err(|e| pg_error(&name, e))?;
    let store = Arc::new(PgStore {
        target: target.clone(),
        pool,
    });

    let size = store.size().map_err(|e| crate::storage(&name, e))?;
    let published = match store
        .last_checkpoint()
        .map_err(|e| crate::storage(&name, e))?
    {
        Some(stored) => store.check(stored, &signer.verifier(), size, &name)?,
        None => Published::none(),
    };
    let shared = Arc::new(Shared::new(name.clone(), &signer, size, published));
    let stop = Arc::new(AtomicBool::new(false));

    let (queue, receiver) = sync_channel(options.queue.max(1));
    let appender = Appender {
        target: target.clone(),
        conn: Some(conn),
        shared: shared.clone(),
        store: store.clone(),
        verifier: signer.verifier(),
        options: options.clone(),
        waiting: HashMap::new(),
        refreshed: Instant::now(),
    };
    let appender_stop = stop.clone();
    let integrator = Integrator {
        target,
        shared: shared.clone(),
        store: store.clone(),
        signer,
        options,
        stop: stop.clone(),
    };
    let spawn = |name: &str, run: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(run)
            .map_err(|e| crate::storage(&shared.name, e))
    };
    let threads = vec![
        spawn(
            "log-appender",
            Box::new(move || {
                appender.run(receiver);
                // The integrator stops only after this gateway's appends were answered.
                appender_stop.store(true, Ordering::Release);
            }),
        )?,
        spawn("log-integrator", Box::new(move || integrator.run()))?,
    ];
    Ok(Log::start(
        queue,
        shared.clone(),
        store,
        threads,
        tile_cache_bytes,
    ))
}

fn pg_error(name: &std::path::Path, error: PgError) -> LogError {
    match error {
        PgError::InvalidUrl(message) => LogError::InvalidStore(message),
        PgError::NotImplemented(message) => LogError::InvalidStore(message),
        other => crate::storage(name, other),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A stored checkpoint row.
struct StoredCheckpoint {
    note: Vec<u8>,
    signed_at_ms: i64,
}

/// Reads from the pool: entries, hashes, size and checkpoint.
struct PgStore {
    target: Target,
    pool: Pool,
}

impl PgStore {
    fn run<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, String> {
        let mut conn = self
            .pool
            .get()
            .map_err(|e| self.target.error(e).to_string())?;
        f(&mut conn).map_err(|e| self.target.error(e).to_string())
    }

    fn size(&self) -> Result<u64, String> {
        self.run(|c| c.query_one("SELECT COALESCE(MAX(idx) + 1, 0) FROM log_entries", &[]))
            .map(|row| row.get::<_, i64>(0) as u64)
    }

    fn last_checkpoint(&self) -> Result<Option<StoredCheckpoint>, String> {
        self.run(|c| {
            c.query_opt(
                "SELECT note, signed_at_ms FROM log_checkpoints ORDER BY size DESC LIMIT 1",
                &[],
            )
        })
        .map(|row| {
            row.map(|row| StoredCheckpoint {
                note: row.get(0),
                signed_at_ms: row.get(1),
            })
        })
    }

    /// Checks a stored checkpoint against the key and the stored tree of `size` entries.
    fn check(
        &self,
        stored: StoredCheckpoint,
        verifier: &Verifier,
        size: u64,
        name: &std::path::Path,
    ) -> Result<Published, LogError> {
        let mut published = check_checkpoint(stored.note, verifier, size, &StoredHashes(self))
            .map_err(|problem| match problem {
                CheckpointProblem::Inconsistent(detail) => LogError::Inconsistent {
                    path: name.to_path_buf(),
                    detail,
                },
                CheckpointProblem::Unreadable(detail) => crate::storage(name, detail),
            })?;
        published.signed_at =
            UNIX_EPOCH + Duration::from_millis(u64::try_from(stored.signed_at_ms).unwrap_or(0));
        Ok(published)
    }
}

impl Store for PgStore {
    fn entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, String> {
        self.run(|c| {
            c.query(
                "SELECT data FROM log_entries WHERE idx >= $1 AND idx < $2 ORDER BY idx",
                &[&(start as i64), &(end as i64)],
            )
        })
        .map(|rows| rows.into_iter().map(|row| row.get(0)).collect())
    }

    fn hash_rows(&self, rows: &[u64]) -> Result<Vec<Vec<u8>>, String> {
        let wanted: Vec<i64> = rows.iter().map(|&row| row as i64).collect();
        let found: HashMap<i64, Vec<u8>> = self
            .run(|c| {
                c.query(
                    "SELECT idx, hashes FROM log_entries WHERE idx = ANY($1)",
                    &[&wanted],
                )
            })?
            .into_iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        wanted
            .iter()
            .map(|row| {
                found
                    .get(row)
                    .cloned()
                    .ok_or_else(|| format!("entry {row} is not stored"))
            })
            .collect()
    }
}

/// Every gateway's thread that queues this gateway's entries, answers their appends once
/// they are integrated, and refreshes the size and checkpoint the gateway serves.
struct Appender {
    target: Target,
    /// `None` after an error, until the next connection.
    conn: Option<Client>,
    shared: Arc<Shared>,
    store: Arc<PgStore>,
    verifier: Verifier,
    options: LogOptions,
    /// Queued entries' ids, with their callers and when they were queued.
    waiting: HashMap<i64, (Reply, Instant)>,
    refreshed: Instant,
}

impl Appender {
    fn run(mut self, queue: Receiver<Message>) {
        let mut stopping = false;
        let mut stop_deadline = None;
        loop {
            if stopping {
                std::thread::sleep(POLL);
            } else {
                let wait = if self.waiting.is_empty() {
                    REFRESH
                } else {
                    POLL
                };
                let (batch, stop) = next_batch(&queue, wait, self.options.max_batch);
                if !batch.is_empty() {
                    self.enqueue(batch);
                }
                if stop {
                    stopping = true;
                    stop_deadline = Some(Instant::now() + self.options.integration_deadline);
                }
            }
            if !self.waiting.is_empty() {
                self.answer_integrated();
            }
            self.expire(stop_deadline);
            if self.refreshed.elapsed() >= REFRESH {
                self.refresh();
            }
            if stopping && self.waiting.is_empty() {
                return;
            }
        }
    }

    fn conn(&mut self) -> Result<&mut Client, LogError> {
        if self.conn.is_none() {
            let conn = self.target.connect().map_err(|e| self.shared.storage(e))?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// Queues a batch durably in one transaction; its callers then wait for integration.
    fn enqueue(&mut self, batch: Vec<(Vec<u8>, Reply)>) {
        let entries: Vec<&[u8]> = batch.iter().map(|(entry, _)| entry.as_slice()).collect();
        let result = match self.conn() {
            Ok(conn) => queue_entries(conn, &entries).map_err(|e| self.target.error(e).to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(ids) if ids.len() == batch.len() => {
                let now = Instant::now();
                for (id, (_, reply)) in ids.into_iter().zip(batch) {
                    self.waiting.insert(id, (reply, now));
                }
            }
            outcome => {
                // Nothing of the batch is queued: the transaction rolled back (or, for a
                // count mismatch that cannot happen, is treated as failed, never as done).
                let detail = match outcome {
                    Err(e) => e,
                    Ok(_) => "the database queued a different number of entries".into(),
                };
                tracing::error!(error = %detail, entries = batch.len(), "log append failed");
                self.conn = None;
                for (_, reply) in batch {
                    reply(Err(self.shared.storage(&detail)));
                }
            }
        }
    }

    /// Answers every waiting append whose entry is now in the tree.
    fn answer_integrated(&mut self) {
        let ids: Vec<i64> = self.waiting.keys().copied().collect();
        let rows = match self.conn() {
            Ok(conn) => conn
                .query(
                    "SELECT pending_id, idx FROM log_entries WHERE pending_id = ANY($1)",
                    &[&ids],
                )
                .map_err(|e| self.target.error(e).to_string()),
            Err(e) => Err(e.to_string()),
        };
        match rows {
            Ok(rows) => {
                for row in rows {
                    let (id, index): (i64, i64) = (row.get(0), row.get(1));
                    if let Some((reply, _)) = self.waiting.remove(&id) {
                        self.shared
                            .size
                            .fetch_max(index as u64 + 1, Ordering::AcqRel);
                        reply(Ok(index as u64));
                    }
                }
            }
            Err(e) => {
                // The entries stay queued in the database; look again once reconnected.
                tracing::warn!(error = %e, "cannot look up integrated log entries");
                self.conn = None;
                std::thread::sleep(POLL);
            }
        }
    }

    /// Fails appends that no gateway integrated in time (and, when stopping, all of them).
    /// Their entries stay queued: a later integrator still adds them to the tree.
    fn expire(&mut self, stop_deadline: Option<Instant>) {
        let deadline = self.options.integration_deadline;
        let stopped = stop_deadline.is_some_and(|at| Instant::now() >= at);
        let expired: Vec<i64> = self
            .waiting
            .iter()
            .filter(|(_, (_, since))| stopped || since.elapsed() >= deadline)
            .map(|(&id, _)| id)
            .collect();
        if !expired.is_empty() {
            tracing::error!(
                entries = expired.len(),
                deadline_seconds = deadline.as_secs(),
                "log entries were not integrated in time: is any gateway integrating the log?"
            );
        }
        for id in expired {
            if let Some((reply, _)) = self.waiting.remove(&id) {
                reply(Err(self.shared.storage(format!(
                    "entry not integrated within {}s; it stays queued and will be added to the \
                     log when a gateway integrates it",
                    deadline.as_secs()
                ))));
            }
        }
    }

    /// Takes up the tree size and the latest checkpoint that the integrating gateway stored,
    /// once they check out against this gateway's key and the stored tree.
    fn refresh(&mut self) {
        self.refreshed = Instant::now();
        let size = match self.store.size() {
            Ok(size) => size,
            Err(e) => return tracing::warn!(error = %e, "cannot read the log's size"),
        };
        self.shared.size.fetch_max(size, Ordering::AcqRel);
        let current = self.shared.checkpoint();
        let stored = match self.store.last_checkpoint() {
            Ok(Some(stored)) => stored,
            Ok(None) => return,
            Err(e) => return tracing::warn!(error = %e, "cannot read the log's checkpoint"),
        };
        match self
            .store
            .check(stored, &self.verifier, size, &self.shared.name)
        {
            Ok(published) if current.size == u64::MAX || published.size > current.size => {
                self.shared.publish(published);
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "the stored checkpoint does not check out"),
        }
    }
}

/// Queues entries in one transaction and answers their ids, in the entries' order.
fn queue_entries(conn: &mut Client, entries: &[&[u8]]) -> Result<Vec<i64>, postgres::Error> {
    let mut tx = conn.transaction()?;
    // `ORDER BY ord` makes the ids increase in the batch's order, so sorting the returned ids
    // gives each entry's id.
    let mut ids: Vec<i64> = tx
        .query(
            "INSERT INTO log_pending (data)
             SELECT data FROM unnest($1::bytea[]) WITH ORDINALITY AS t(data, ord)
             ORDER BY ord RETURNING id",
            &[&entries],
        )?
        .into_iter()
        .map(|row| row.get(0))
        .collect();
    tx.execute("SELECT pg_notify($1, '')", &[&QUEUED])?;
    tx.commit()?;
    ids.sort_unstable();
    Ok(ids)
}

/// Every gateway's thread that waits for the leader lock and, holding it, integrates.
struct Integrator {
    target: Target,
    shared: Arc<Shared>,
    store: Arc<PgStore>,
    signer: Signer,
    options: LogOptions,
    stop: Arc<AtomicBool>,
}

impl Integrator {
    fn run(self) {
        while !self.stop.load(Ordering::Acquire) {
            match self.lead() {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(error = %e, "integrating the log failed; trying again");
                    std::thread::sleep(RETRY);
                }
            }
        }
    }

    /// Waits for the lock, then integrates until told to stop. Returning drops the
    /// connection, which releases the lock.
    fn lead(&self) -> Result<(), LogError> {
        let error = |e: postgres::Error| self.shared.storage(self.target.error(e));
        let mut conn = self.target.connect().map_err(|e| self.shared.storage(e))?;
        loop {
            if self.stop.load(Ordering::Acquire) {
                return Ok(());
            }
            let locked: bool = conn
                .query_one("SELECT pg_try_advisory_lock($1)", &[&INTEGRATOR_LOCK])
                .map_err(error)?
                .get(0);
            if locked {
                break;
            }
            std::thread::sleep(TAKEOVER_POLL);
        }
        conn.batch_execute(&format!("LISTEN {QUEUED}"))
            .map_err(error)?;

        // Taking over: the stored tree must match the last signed checkpoint, whoever signed it.
        let size = self.store.size().map_err(|e| self.shared.storage(e))?;
        let frontier = read_frontier(&StoredHashes(self.store.as_ref()), size)
            .map_err(|e| self.shared.storage(e))?;
        let signed = match self
            .store
            .last_checkpoint()
            .map_err(|e| self.shared.storage(e))?
        {
            Some(stored) => {
                self.store
                    .check(stored, &self.signer.verifier(), size, &self.shared.name)?
                    .size
            }
            None => u64::MAX,
        };
        tracing::info!(size, "this gateway now integrates and signs the log");
        self.shared.integrating.store(true, Ordering::Release);
        // Whichever way this returns, the connection and with it the lock are gone.
        let _released = Released(&self.shared);
        let mut state = Leading {
            size,
            frontier,
            signed,
            signed_at: Instant::now(),
        };
        if state.signed != state.size {
            self.sign(&mut conn, &mut state)?;
        }
        loop {
            let stopping = self.stop.load(Ordering::Acquire);
            let integrated = self.integrate(&mut conn, &mut state)?;
            let due = state.signed_at.elapsed() >= self.options.checkpoint_interval;
            if state.signed != state.size && (due || stopping) {
                self.sign(&mut conn, &mut state)?;
            }
            if stopping && integrated == 0 {
                return Ok(());
            }
            if integrated == 0 {
                let wait = REFRESH.min(
                    self.options
                        .checkpoint_interval
                        .saturating_sub(state.signed_at.elapsed())
                        .max(POLL),
                );
                // Wakes on the next queued batch; the timeout also covers lost notifications.
                let mut notifications = conn.notifications();
                let _ = notifications.timeout_iter(wait).next();
                while let Ok(Some(_)) = notifications.iter().next() {}
            }
        }
    }

    /// Moves up to one batch of queued entries into the tree, in one transaction.
    fn integrate(&self, conn: &mut Client, state: &mut Leading) -> Result<usize, LogError> {
        let error = |e: postgres::Error| self.shared.storage(self.target.error(e));
        let mut tx = conn.transaction().map_err(error)?;
        let queued = tx
            .query(
                "SELECT id, data FROM log_pending ORDER BY id LIMIT $1",
                &[&(self.options.max_batch as i64)],
            )
            .map_err(error)?;
        if queued.is_empty() {
            return Ok(0);
        }
        // Fencing: the tree must end where this integrator believes it does.
        let stored: i64 = tx
            .query_one("SELECT COALESCE(MAX(idx) + 1, 0) FROM log_entries", &[])
            .map_err(error)?
            .get(0);
        if stored as u64 != state.size {
            return Err(self.shared.inconsistent(format!(
                "the log holds {stored} entries but its integrator expected {}: another \
                 integrator wrote to it",
                state.size
            )));
        }
        let mut frontier = state.frontier.clone();
        let mut ids = Vec::with_capacity(queued.len());
        let mut indexes = Vec::with_capacity(queued.len());
        let mut entries: Vec<Vec<u8>> = Vec::with_capacity(queued.len());
        let mut hashes = Vec::with_capacity(queued.len());
        for (offset, row) in queued.into_iter().enumerate() {
            let n = state.size + offset as u64;
            let entry: Vec<u8> = row.get(1);
            hashes.push(append_hashes(&mut frontier, n, &entry).concat());
            ids.push(row.get::<_, i64>(0));
            indexes.push(n as i64);
            entries.push(entry);
        }
        tx.execute(
            "INSERT INTO log_entries (idx, data, hashes, pending_id)
             SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bytea[], $4::bigint[])",
            &[&indexes, &entries, &hashes, &ids],
        )
        .map_err(error)?;
        tx.execute("DELETE FROM log_pending WHERE id = ANY($1)", &[&ids])
            .map_err(error)?;
        tx.commit().map_err(error)?;
        state.size += ids.len() as u64;
        state.frontier = frontier;
        self.shared.size.fetch_max(state.size, Ordering::AcqRel);
        Ok(ids.len())
    }

    fn sign(&self, conn: &mut Client, state: &mut Leading) -> Result<(), LogError> {
        let published = crate::sign(&self.signer, state.size, &state.frontier, &self.shared)?;
        let signed_at_ms = now_ms();
        // Stored (durably) before it is published, so every gateway and every later
        // integrator finds it and checks against it.
        conn.execute(
            "INSERT INTO log_checkpoints (size, note, signed_at_ms) VALUES ($1, $2, $3)
             ON CONFLICT (size) DO NOTHING",
            &[&(published.size as i64), &published.note, &signed_at_ms],
        )
        .map_err(|e| self.shared.storage(self.target.error(e)))?;
        state.signed = published.size;
        state.signed_at = Instant::now();
        self.shared.publish(published);
        Ok(())
    }
}

/// The integrator's view of the tree while it holds the lock.
struct Leading {
    size: u64,
    /// The tree's right edge, as in the SQLite writer.
    frontier: Vec<Option<Hash>>,
    /// Size of the last signed checkpoint (`u64::MAX`: none yet).
    signed: u64,
    signed_at: Instant,
}

/// Clears [`Shared::integrating`] when the integrator lets go of the lock (dropped with the
/// connection that holds it).
struct Released<'a>(&'a Shared);

impl Drop for Released<'_> {
    fn drop(&mut self) {
        self.0.integrating.store(false, Ordering::Release);
    }
}
