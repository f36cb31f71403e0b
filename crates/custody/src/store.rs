//! The custody database: one JSON document per record, in one SQLite file (the embedded
//! default) or in a PostgreSQL database that every gateway of a fleet shares. Each change is
//! one transaction that is committed only after its event is in the transparency log, and
//! each record it writes carries that event's log index.
//!
//! Both stores keep a version that changes exactly when another gateway commits (SQLite's
//! `data_version`; on PostgreSQL a row holding a random stamp per commit). A change is
//! checked against the state in memory, and is committed only if the version under the
//! store's write lock is still the one that state was loaded at: otherwise nothing is written and the change fails with
//! [`CustodyError::Conflict`], so that two gateways can never both act on the same old state
//! (two approvals each recording only their own, two first policy activations).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator as _;
use rusqlite::{Connection, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{CustodyError, Event, LogFn, State};

/// The SQLite schema, one step a version (`sqlitedb::migrate`): version 1 is the first step.
const SCHEMA: &[&str] = &["
CREATE TABLE records (
    kind TEXT NOT NULL,
    id   TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"];

/// The PostgreSQL schema, one step a version (`pgconn::Target::migrate`, under
/// [`PG_SCHEMA_KEY`]). The artifacts of algorithm releases are kept here too, so that every
/// gateway of the fleet reads them.
const PG_SCHEMA: &[&str] = &["
CREATE TABLE custody_records (
    kind TEXT NOT NULL,
    id   TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE TABLE custody_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE custody_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    -- A random stamp per commit, not a counter: a database restored from a backup, or an
    -- asynchronous standby promoted, cannot bring back a stamp a gateway took for current.
    version BIGINT NOT NULL
);
INSERT INTO custody_version (id, version) VALUES (1, 0);
CREATE TABLE custody_artifacts (
    sha256 TEXT PRIMARY KEY,
    bytes  BYTEA NOT NULL
);
"];
const PG_SCHEMA_KEY: &str = "custody";

/// The channel a commit notifies on PostgreSQL (its payload: the new version stamp).
pub const CHANGE_CHANNEL: &str = "sovereign_custody";

pub(crate) const REQUEST: &str = "request";
pub(crate) const POLICY_SET: &str = "policy-set";
pub(crate) const RELEASE: &str = "release";
pub(crate) const SUSPENSION: &str = "suspension";
pub(crate) const ACTIVE_POLICY: &str = "active-policy";
pub(crate) const INVARIANT_SET: &str = "invariant-set";
pub(crate) const ACTIVE_INVARIANTS: &str = "active-invariants";

/// Where the custody state lives.
#[derive(Debug, Clone)]
pub enum Location {
    /// A SQLite file, with algorithm artifacts as files in a folder, named by their SHA-256.
    Sqlite { path: PathBuf, artifacts: PathBuf },
    /// A PostgreSQL database (`postgres://…`), artifacts included, shared by a fleet.
    Postgres { url: String },
}

/// One row to write in a change.
pub(crate) enum Write {
    Record {
        kind: &'static str,
        id: String,
        body: Value,
    },
    Meta {
        key: &'static str,
        value: String,
    },
}

impl Write {
    pub(crate) fn record(kind: &'static str, id: &str, value: &impl Serialize) -> Write {
        Write::Record {
            kind,
            id: id.to_string(),
            body: serde_json::to_value(value).expect("custody records serialise"),
        }
    }

    /// The row as it is stored: without a log index before the change's event is logged,
    /// with the event's once it is.
    fn row(&self, index: Option<u64>) -> Row<'_> {
        match self {
            Write::Record { kind, id, body } => {
                let mut body = body.clone();
                if let (Value::Object(fields), Some(index)) = (&mut body, index) {
                    fields.insert("log_index".into(), index.into());
                }
                Row::Record(kind, id, body.to_string())
            }
            Write::Meta { key, value } => Row::Meta(key, value),
        }
    }
}

/// A row to store: a record (kind, id, JSON body) or a `meta` value (key, value).
enum Row<'a> {
    Record(&'static str, &'a str, String),
    Meta(&'static str, &'a str),
}

/// How long a change waits for another gateway's change to commit (which includes its log
/// append) before it gives up with [`CustodyError::Conflict`].
const CHANGE_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '10s'";

/// Everything stored, as read in one snapshot.
struct Rows {
    /// (kind, id, body).
    records: Vec<(String, String, String)>,
    meta: HashMap<String, String>,
}

pub(crate) struct Store {
    backend: Backend,
    /// The store's version when the state in memory was loaded and verified (see the module's
    /// documentation). It is not advanced past state that failed verification, so that every
    /// refresh looks at such state again until it verifies, and no change is made on it.
    pub(crate) verified_version: Option<i64>,
}

// One per process: the size of the PostgreSQL client does not matter.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Sqlite {
        path: PathBuf,
        conn: Connection,
        artifacts: PathBuf,
    },
    Postgres {
        target: pgconn::Target,
        /// Opened again after a failure: the next use reconnects.
        client: Option<postgres::Client>,
    },
}

impl Store {
    pub(crate) fn open(location: &Location) -> Result<Store, CustodyError> {
        let backend = match location {
            Location::Sqlite { path, artifacts } => {
                let fail = |e: sqlitedb::Error| store_error(path, e);
                // Durable, with a busy timeout because two gateways on one data folder share it.
                let mut conn =
                    sqlitedb::open_durable(path, &sqlitedb::Options::default()).map_err(fail)?;
                sqlitedb::migrate(&mut conn, SCHEMA).map_err(fail)?;
                std::fs::create_dir_all(artifacts).map_err(|e| store_error(artifacts, e))?;
                Backend::Sqlite {
                    path: path.clone(),
                    conn,
                    artifacts: artifacts.clone(),
                }
            }
            Location::Postgres { url } => {
                let target =
                    pgconn::Target::parse(url).map_err(|e| store_error(Path::new("custody"), e))?;
                let mut client = target.connect().map_err(|e| pg_error(&target, e))?;
                target
                    .migrate(&mut client, PG_SCHEMA_KEY, PG_SCHEMA)
                    .map_err(|e| pg_error(&target, e))?;
                Backend::Postgres {
                    target,
                    client: Some(client),
                }
            }
        };
        Ok(Store {
            backend,
            verified_version: None,
        })
    }

    /// The store's version now: one cheap query. Read it before [`Store::load`] on SQLite, so
    /// that a commit by another connection in between is seen again at the next look.
    pub(crate) fn version(&mut self) -> Result<i64, CustodyError> {
        match &mut self.backend {
            Backend::Sqlite { path, conn, .. } => conn
                .query_row("PRAGMA data_version", [], |r| r.get(0))
                .map_err(|e| store_error(path, e)),
            Backend::Postgres { target, client } => {
                let target = &*target;
                with_client(target, client, |c| {
                    Ok(c.query_one("SELECT version FROM custody_version", &[])?
                        .get(0))
                })
            }
        }
    }

    /// Reads every record, as one snapshot, and the version it is at: another gateway's
    /// change is seen whole or not at all (an activation writes the set and `meta` together,
    /// and a half-read one would not verify). Each row must be stored under its record's own
    /// key, so that no second row can stand in for a record depending on the order rows are
    /// read in. Whether the state is authorised is checked afterwards (`verify.rs`).
    pub(crate) fn load(&mut self) -> Result<(i64, State), CustodyError> {
        let (version, rows) = match &mut self.backend {
            Backend::Sqlite { path, conn, .. } => {
                let fail = |e: rusqlite::Error| store_error(path, e);
                let version = conn
                    .query_row("PRAGMA data_version", [], |r| r.get(0))
                    .map_err(fail)?;
                let tx = conn.unchecked_transaction().map_err(fail)?;
                let records = tx
                    .prepare("SELECT kind, id, body FROM records")
                    .and_then(|mut stmt| {
                        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .map_err(fail)?;
                let meta = tx
                    .prepare("SELECT key, value FROM meta")
                    .and_then(|mut stmt| {
                        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                            .collect::<Result<HashMap<_, _>, _>>()
                    })
                    .map_err(fail)?;
                // Only read: ending the transaction without committing changes nothing.
                drop(tx);
                (version, Rows { records, meta })
            }
            Backend::Postgres { target, client } => {
                let target = &*target;
                with_client(target, client, |c| {
                    let mut tx = c
                        .build_transaction()
                        .isolation_level(postgres::IsolationLevel::RepeatableRead)
                        .read_only(true)
                        .start()?;
                    let version: i64 = tx
                        .query_one("SELECT version FROM custody_version", &[])?
                        .get(0);
                    let records = tx
                        .query("SELECT kind, id, body FROM custody_records", &[])?
                        .iter()
                        .map(|r| (r.get(0), r.get(1), r.get(2)))
                        .collect();
                    let meta = tx
                        .query("SELECT key, value FROM custody_meta", &[])?
                        .iter()
                        .map(|r| (r.get(0), r.get(1)))
                        .collect();
                    tx.commit()?;
                    Ok((version, Rows { records, meta }))
                })?
            }
        };
        Ok((version, state_from(rows)?))
    }

    /// Writes `writes` in one transaction, appends `event` to the log, sets the event's log
    /// index on every record written, then commits. If the log refuses, or another gateway
    /// committed since the state in memory was loaded ([`CustodyError::Conflict`]), nothing
    /// is committed. Returns the event's log index; the caller sets it on its copies of the
    /// records.
    pub(crate) fn commit(
        &mut self,
        writes: &[Write],
        event: Event<'_>,
        log: LogFn<'_>,
    ) -> Result<u64, CustodyError> {
        let verified = self.verified_version;
        match &mut self.backend {
            Backend::Sqlite { path, conn, .. } => {
                let fail = |e: rusqlite::Error| store_error(path, e);
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(fail)?;
                let version: i64 = tx
                    .query_row("PRAGMA data_version", [], |r| r.get(0))
                    .map_err(fail)?;
                if Some(version) != verified {
                    return Err(CustodyError::Conflict);
                }
                // Written before the log is, so that a write that fails is never logged; each
                // record gets the event's log index once it is known.
                let put = |tx: &rusqlite::Transaction<'_>, row: Row<'_>| match row {
                    Row::Record(kind, id, body) => tx.execute(
                        "INSERT OR REPLACE INTO records (kind, id, body) VALUES (?1, ?2, ?3)",
                        params![kind, id, body],
                    ),
                    Row::Meta(key, value) => tx.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                        params![key, value],
                    ),
                };
                for write in writes {
                    put(&tx, write.row(None)).map_err(fail)?;
                }
                let index = log(event).map_err(CustodyError::LogUnavailable)?;
                for write in writes.iter().filter(|w| matches!(w, Write::Record { .. })) {
                    put(&tx, write.row(Some(index))).map_err(fail)?;
                }
                tx.commit().map_err(fail)?;
                // This connection's own commit leaves `data_version` as it was.
                Ok(index)
            }
            Backend::Postgres { target, client } => {
                let target = &*target;
                let mut logged = None;
                let new_version = with_client(target, client, |c| {
                    let mut tx = c.transaction()?;
                    // The row lock orders the fleet's changes: held until commit, which waits
                    // for the log. Waiting longer for another gateway's change than a change
                    // itself may take counts as a conflict (try again), not a hang.
                    tx.batch_execute(CHANGE_LOCK_TIMEOUT)?;
                    let locked = tx.query_one(
                        "SELECT version FROM custody_version WHERE id = 1 FOR UPDATE",
                        &[],
                    );
                    let version: i64 = match locked {
                        Ok(row) => row.get(0),
                        Err(e)
                            if e.code() == Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE) =>
                        {
                            return Ok(None);
                        }
                        Err(e) => return Err(e),
                    };
                    if Some(version) != verified {
                        return Ok(None);
                    }
                    let put = |tx: &mut postgres::Transaction<'_>, row: Row<'_>| match row {
                        Row::Record(kind, id, body) => tx.execute(
                            "INSERT INTO custody_records (kind, id, body) VALUES ($1, $2, $3)
                             ON CONFLICT (kind, id) DO UPDATE SET body = EXCLUDED.body",
                            &[&kind, &id, &body],
                        ),
                        Row::Meta(key, value) => tx.execute(
                            "INSERT INTO custody_meta (key, value) VALUES ($1, $2)
                             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                            &[&key, &value],
                        ),
                    };
                    for write in writes {
                        put(&mut tx, write.row(None))?;
                    }
                    let index = match log(event) {
                        Ok(index) => index,
                        Err(e) => {
                            logged = Some(Err(e));
                            return Ok(None);
                        }
                    };
                    logged = Some(Ok(index));
                    for write in writes.iter().filter(|w| matches!(w, Write::Record { .. })) {
                        put(&mut tx, write.row(Some(index)))?;
                    }
                    let next = new_stamp(version);
                    tx.execute("UPDATE custody_version SET version = $1", &[&next])?;
                    // Delivered to every listening gateway when (and only if) this commits.
                    tx.execute(
                        "SELECT pg_notify($1, $2)",
                        &[&CHANGE_CHANNEL, &next.to_string()],
                    )?;
                    tx.commit()?;
                    Ok(Some(next))
                })?;
                match (new_version, logged) {
                    (Some(next), Some(Ok(index))) => {
                        self.verified_version = Some(next);
                        Ok(index)
                    }
                    (_, Some(Err(e))) => Err(CustodyError::LogUnavailable(e)),
                    _ => Err(CustodyError::Conflict),
                }
            }
        }
    }

    /// Keeps an artifact's bytes under its SHA-256 (writing the same bytes again is harmless).
    pub(crate) fn write_artifact(
        &mut self,
        sha256: &str,
        bytes: &[u8],
    ) -> Result<(), CustodyError> {
        match &mut self.backend {
            Backend::Sqlite { artifacts, .. } => {
                let path = artifacts.join(sha256);
                let fail = |e: std::io::Error| store_error(&path, e);
                let tmp = path.with_extension("tmp");
                let mut file = std::fs::File::create(&tmp).map_err(fail)?;
                file.write_all(bytes).map_err(fail)?;
                file.sync_all().map_err(fail)?;
                std::fs::rename(&tmp, &path).map_err(fail)
            }
            Backend::Postgres { target, client } => {
                let target = &*target;
                with_client(target, client, |c| {
                    c.execute(
                        "INSERT INTO custody_artifacts (sha256, bytes) VALUES ($1, $2)
                         ON CONFLICT (sha256) DO NOTHING",
                        &[&sha256, &bytes],
                    )?;
                    Ok(())
                })
            }
        }
    }

    /// Sets the `meta` value under `key`, whatever was there. Not part of the custody state.
    pub(crate) fn meta_set(&mut self, key: &str, value: &str) -> Result<(), CustodyError> {
        match &mut self.backend {
            Backend::Sqlite { path, conn, .. } => conn
                .execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                    params![key, value],
                )
                .map(drop)
                .map_err(|e| store_error(path, e)),
            Backend::Postgres { target, client } => {
                let target = &*target;
                with_client(target, client, |c| {
                    c.execute(
                        "INSERT INTO custody_meta (key, value) VALUES ($1, $2)
                         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                        &[&key, &value],
                    )
                    .map(drop)
                })
            }
        }
    }

    /// The `meta` value under `key`, storing `value` there first if there is none: the first
    /// writer wins, whoever it is. Not part of the custody state (no version bump).
    pub(crate) fn meta_or_insert(
        &mut self,
        key: &str,
        value: &str,
    ) -> Result<String, CustodyError> {
        match &mut self.backend {
            Backend::Sqlite { path, conn, .. } => {
                let fail = |e: rusqlite::Error| store_error(path, e);
                conn.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
                    params![key, value],
                )
                .map_err(fail)?;
                conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                    .map_err(fail)
            }
            Backend::Postgres { target, client } => {
                let target = &*target;
                with_client(target, client, |c| {
                    c.execute(
                        "INSERT INTO custody_meta (key, value) VALUES ($1, $2)
                         ON CONFLICT (key) DO NOTHING",
                        &[&key, &value],
                    )?;
                    Ok(
                        c.query_one("SELECT value FROM custody_meta WHERE key = $1", &[&key])?
                            .get(0),
                    )
                })
            }
        }
    }

    /// The bytes kept under `sha256` (the caller checks them against the digest).
    pub(crate) fn read_artifact(&mut self, sha256: &str) -> Result<Vec<u8>, CustodyError> {
        match &mut self.backend {
            Backend::Sqlite { artifacts, .. } => {
                let path = artifacts.join(sha256);
                std::fs::read(&path).map_err(|e| store_error(&path, e))
            }
            Backend::Postgres { target, client } => {
                let target = &*target;
                let row = with_client(target, client, |c| {
                    c.query_opt(
                        "SELECT bytes FROM custody_artifacts WHERE sha256 = $1",
                        &[&sha256],
                    )
                })?;
                row.map(|r| r.get(0)).ok_or_else(|| CustodyError::Store {
                    path: PathBuf::from(target.name()),
                    problem: format!("no artifact with SHA-256 {sha256}"),
                })
            }
        }
    }

    /// Starts a thread that calls `on_change` whenever another gateway commits a change, as
    /// PostgreSQL notifies it, and after every reconnection (notifications sent while it was
    /// away are lost). `None` on SQLite, which has no notifications: the gateway's periodic
    /// check of the version is what finds changes there.
    pub(crate) fn listen(
        &self,
        on_change: Box<dyn Fn() + Send>,
    ) -> Result<Option<ChangeListener>, CustodyError> {
        let Backend::Postgres { target, .. } = &self.backend else {
            return Ok(None);
        };
        let target = target.clone();
        // The first connection is made here, so that a store that cannot be listened to
        // fails the start rather than a thread later.
        let first = listening(&target).map_err(|e| pg_error(&target, e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("custody-listener".into())
            .spawn(move || listen_loop(&target, first, &*on_change, &stopping))
            .map_err(|e| store_error(Path::new("custody-listener"), e))?;
        Ok(Some(ChangeListener {
            stop,
            _thread: thread,
        }))
    }
}

/// A thread hearing another gateway's custody changes. Dropping it tells the thread to stop,
/// which it does within [`LISTEN_POLL`], without waiting for it (it may be dropped on an
/// async thread).
pub struct ChangeListener {
    stop: Arc<AtomicBool>,
    _thread: JoinHandle<()>,
}

impl Drop for ChangeListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// How long the listener waits for a notification before it looks at its stop flag.
const LISTEN_POLL: Duration = Duration::from_millis(200);

fn listening(target: &pgconn::Target) -> Result<postgres::Client, pgconn::PgError> {
    let mut client = target.connect()?;
    client
        .batch_execute(&format!("LISTEN {CHANGE_CHANNEL}"))
        .map_err(|e| target.error(e))?;
    Ok(client)
}

fn listen_loop(
    target: &pgconn::Target,
    first: postgres::Client,
    on_change: &dyn Fn(),
    stop: &AtomicBool,
) {
    let mut client = Some(first);
    let mut backoff = LISTEN_POLL;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = client.as_mut() else {
            std::thread::sleep(backoff);
            match listening(target) {
                Ok(c) => {
                    client = Some(c);
                    backoff = LISTEN_POLL;
                    // Whatever was committed while this gateway was not listening.
                    on_change();
                }
                Err(e) => {
                    // Once per failure; the once-a-second look still takes up changes.
                    if backoff == LISTEN_POLL {
                        tracing::warn!(error = %e, "cannot listen for the custody store's changes; trying again");
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            continue;
        };
        let (heard, failed) = {
            let mut notifications = c.notifications();
            let first = notifications.timeout_iter(LISTEN_POLL).next();
            match first {
                // One reload takes up every change, so the ones queued behind it are dropped.
                Ok(Some(_)) => (true, notifications.iter().count().is_err()),
                Ok(None) => (false, false),
                Err(_) => (false, true),
            }
        };
        let closed = failed || c.is_closed();
        if heard {
            on_change();
        }
        if closed {
            client = None;
        }
    }
}

/// Runs `f` on the store's connection, connecting first if the last one failed; a failed
/// call drops the connection so that the next one starts afresh.
fn with_client<T>(
    target: &pgconn::Target,
    client: &mut Option<postgres::Client>,
    f: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error>,
) -> Result<T, CustodyError> {
    if client.as_ref().is_none_or(postgres::Client::is_closed) {
        *client = Some(target.connect().map_err(|e| pg_error(target, e))?);
    }
    let Some(c) = client.as_mut() else {
        unreachable!("connected above");
    };
    f(c).map_err(|e| {
        *client = None;
        pg_error(target, target.error(e))
    })
}

/// A random version stamp for a PostgreSQL commit, other than `current`: versions are only
/// compared for equality, and a counter could repeat after a restore (see `PG_SCHEMA`).
fn new_stamp(current: i64) -> i64 {
    loop {
        let mut bytes = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        let stamp = i64::from_le_bytes(bytes);
        if stamp != current {
            return stamp;
        }
    }
}

fn store_error(path: &Path, e: impl std::fmt::Display) -> CustodyError {
    CustodyError::Store {
        path: path.to_path_buf(),
        problem: e.to_string(),
    }
}

fn pg_error(target: &pgconn::Target, e: pgconn::PgError) -> CustodyError {
    CustodyError::Store {
        path: PathBuf::from(target.name()),
        problem: pgconn::chain(&e),
    }
}

/// The state the rows hold, each record checked to be stored under its own key.
fn state_from(rows: Rows) -> Result<State, CustodyError> {
    let mut by_kind: HashMap<&str, Vec<(&str, &str)>> = HashMap::new();
    for (kind, id, body) in &rows.records {
        by_kind
            .entry(kind.as_str())
            .or_default()
            .push((id.as_str(), body.as_str()));
    }
    let all = |kind: &str| by_kind.get(kind).map(Vec::as_slice).unwrap_or_default();
    let mut state = State::default();
    for request in parse(REQUEST, all(REQUEST), |r: &crate::AccessRequest| {
        r.id.clone()
    })? {
        state.put_request(request);
    }
    for set in parse(POLICY_SET, all(POLICY_SET), |s: &crate::PolicySetRecord| {
        s.hash.clone()
    })? {
        state.policy_sets.insert(set.hash.clone(), set);
    }
    for release in parse(RELEASE, all(RELEASE), |r: &crate::Release| {
        release_id(&r.name, &r.version)
    })? {
        state
            .releases
            .insert((release.name.clone(), release.version.clone()), release);
    }
    for suspension in parse(SUSPENSION, all(SUSPENSION), |s: &crate::Suspension| {
        s.jurisdiction.clone()
    })? {
        state
            .suspensions
            .insert(suspension.jurisdiction.clone(), suspension);
    }
    for set in parse(
        INVARIANT_SET,
        all(INVARIANT_SET),
        |s: &crate::InvariantSetRecord| s.hash.clone(),
    )? {
        state.invariant_sets.insert(set.hash.clone(), set);
    }
    state.active_policy = rows.meta.get(ACTIVE_POLICY).cloned();
    state.active_invariants = rows.meta.get(ACTIVE_INVARIANTS).cloned();
    Ok(state)
}

/// Every record of `kind`, each checked to be stored under `key` of itself.
fn parse<T: DeserializeOwned>(
    kind: &str,
    rows: &[(&str, &str)],
    key: impl Fn(&T) -> String,
) -> Result<Vec<T>, CustodyError> {
    let mut out = Vec::with_capacity(rows.len());
    for (id, body) in rows {
        let unverified = |problem: String| CustodyError::Unverified {
            what: format!("{kind} row `{id}`"),
            problem,
        };
        let value: T =
            serde_json::from_str(body).map_err(|e| unverified(format!("cannot be read: {e}")))?;
        let own = key(&value);
        if own != *id {
            return Err(unverified(format!("it holds the record of `{own}`")));
        }
        out.push(value);
    }
    Ok(out)
}

/// The row id of a release: releases are stored by name and version.
pub(crate) fn release_id(name: &str, version: &str) -> String {
    format!("{name}/{version}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(store: &Store) -> &Connection {
        match &store.backend {
            Backend::Sqlite { conn, .. } => conn,
            Backend::Postgres { .. } => unreachable!("a SQLite store"),
        }
    }

    fn pragma(conn: &Connection, name: &str) -> i64 {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .unwrap()
    }

    fn at(path: &Path) -> Location {
        Location::Sqlite {
            path: path.to_path_buf(),
            artifacts: path.with_extension("artifacts"),
        }
    }

    /// Two gateways on one data folder share the file: a busy one is waited for.
    #[test]
    fn the_file_is_durable_and_waits_for_locks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&at(&dir.path().join("nested/custody.db"))).unwrap();
        let conn = sqlite(&store);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(pragma(conn, "synchronous"), 2);
        assert!(pragma(conn, "busy_timeout") > 0);
        assert_eq!(pragma(conn, "user_version"), 1);
    }

    /// A file written before `sqlitedb` (its tables, version 1) opens unchanged; one from a
    /// newer build is refused.
    #[test]
    fn schema_versions_are_kept_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("custody.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA[0]).unwrap();
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('active-policy', 'p1')",
                [],
            )
            .unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
        }
        let mut store = Store::open(&at(&path)).unwrap();
        let (_, state) = store.load().unwrap();
        assert_eq!(state.active_policy.as_deref(), Some("p1"));
        sqlite(&store)
            .pragma_update(None, "user_version", 2)
            .unwrap();
        drop(store);
        let Err(err) = Store::open(&at(&path)) else {
            panic!("a newer file must be refused");
        };
        assert!(
            err.to_string().contains("schema version 2 is newer"),
            "{err}"
        );
    }
}
