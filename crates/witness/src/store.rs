//! The witness's state in one SQLite file (`witness.sqlite`, opened and versioned through
//! `sqlitedb`: WAL, every commit synced): the latest cosigned checkpoint of each log, and
//! the evidence of refused inconsistent checkpoints.
//!
//! The functions here run inside the caller's transaction; `witness.rs` decides when to
//! begin and commit, so the check of a request against the state and the write of the new
//! state are one transaction.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension as _, params};
use tlog::Hash;

use crate::WitnessError;
use crate::files::STATE_FILE;

/// The schema, one step a version (`sqlitedb::migrate`).
const SCHEMA: &[&str] = &["
    -- The latest checkpoint cosigned for each log: what the next request is checked against.
    CREATE TABLE checkpoints (
        origin TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        hash BLOB NOT NULL,
        note BLOB NOT NULL,
        cosigned_at INTEGER NOT NULL
    );
    -- Requests with a valid log signature that were refused as inconsistent (a fork at the
    -- same size, a consistency proof that fails): possible proof that the log misbehaved.
    CREATE TABLE evidence (
        id INTEGER PRIMARY KEY,
        origin TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        reason TEXT NOT NULL,
        old_size INTEGER NOT NULL,
        size INTEGER NOT NULL,
        latest_size INTEGER NOT NULL,
        body BLOB NOT NULL
    );
    CREATE INDEX evidence_by_origin ON evidence (origin, id);
    -- How much evidence each log has, kept and dropped, so the bound costs no count(*).
    CREATE TABLE evidence_tally (
        origin TEXT PRIMARY KEY,
        kept INTEGER NOT NULL,
        kept_bytes INTEGER NOT NULL,
        dropped INTEGER NOT NULL
    );
"];

/// The most evidence rows kept per log: the first ones are kept (the first fork is the one
/// that matters), later ones only counted, so a log that keeps sending forks cannot fill the
/// disk.
pub const MAX_EVIDENCE_PER_LOG: u64 = 10_000;

/// The most evidence bytes (request bodies) kept per log, for the same reason.
pub const MAX_EVIDENCE_BYTES_PER_LOG: u64 = 64 << 20;

/// How much evidence is kept per log (the constants above; tests lower them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EvidenceBound {
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
}

impl EvidenceBound {
    pub(crate) const DEFAULT: EvidenceBound = EvidenceBound {
        rows: MAX_EVIDENCE_PER_LOG,
        bytes: MAX_EVIDENCE_BYTES_PER_LOG,
    };
}

const OPTIONS: sqlitedb::Options = sqlitedb::Options {
    private_file: true,
    ..sqlitedb::Options::DEFAULT
};

/// Opens (creating) the state file of the data folder `dir`, at the current schema.
pub(crate) fn open(dir: &Path) -> Result<Connection, WitnessError> {
    let path = dir.join(STATE_FILE);
    let fail = |source| WitnessError::Store {
        path: path.clone(),
        source,
    };
    let mut conn = sqlitedb::open_durable(&path, &OPTIONS).map_err(fail)?;
    sqlitedb::migrate(&mut conn, SCHEMA).map_err(fail)?;
    Ok(conn)
}

/// The latest cosigned checkpoint of a log: its size and root hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latest {
    /// The tree size.
    pub size: u64,
    /// The root hash.
    pub hash: Hash,
}

/// The latest checkpoint cosigned for `origin`, if any.
pub(crate) fn latest(conn: &Connection, origin: &str) -> rusqlite::Result<Option<Latest>> {
    // Cached statements: every request runs these two.
    conn.prepare_cached("SELECT size, hash FROM checkpoints WHERE origin = ?1")?
        .query_row([origin], |row| {
            let size: i64 = row.get(0)?;
            let hash: Vec<u8> = row.get(1)?;
            Ok((size, hash))
        })
        .optional()?
        .map(|(size, hash)| {
            let size = u64::try_from(size).map_err(|_| corrupt("a negative size"))?;
            let hash =
                Hash::try_from(hash.as_slice()).map_err(|_| corrupt("a hash not 32 bytes"))?;
            Ok(Latest { size, hash })
        })
        .transpose()
}

/// Records `note` (of tree `size`, `hash`) as the latest checkpoint cosigned for `origin`.
pub(crate) fn set_latest(
    conn: &Connection,
    origin: &str,
    latest: Latest,
    note: &[u8],
    now: u64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO checkpoints (origin, size, hash, note, cosigned_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (origin) DO UPDATE SET
             size = excluded.size, hash = excluded.hash, note = excluded.note,
             cosigned_at = excluded.cosigned_at",
    )?
    .execute(params![
        origin,
        to_sql(latest.size)?,
        latest.hash.as_slice(),
        note,
        to_sql(now)?
    ])?;
    Ok(())
}

/// A refused inconsistent checkpoint, as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// Its number in the state file (for [`evidence_body`]).
    pub id: i64,
    /// The log's origin.
    pub origin: String,
    /// When it was refused (POSIX seconds).
    pub time: u64,
    /// Why it was refused: the error's text.
    pub reason: String,
    /// The request's old size.
    pub old_size: u64,
    /// The refused checkpoint's size.
    pub size: u64,
    /// The size of the latest checkpoint cosigned for the log then.
    pub latest_size: u64,
}

/// What the state file holds as evidence: the kept rows, in the order they came, and per
/// log how many more were refused but not kept (over the bounds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvidenceList {
    /// The kept evidence, oldest first.
    pub kept: Vec<Evidence>,
    /// `(origin, count)` of evidence not kept, for logs with any.
    pub dropped: Vec<(String, u64)>,
}

/// Keeps the request `body` as evidence against `evidence.origin`, unless the log's bound
/// (`bound`) is reached; then only counts it. Returns whether it was kept.
pub(crate) fn keep_evidence(
    conn: &Connection,
    evidence: &Evidence,
    body: &[u8],
    bound: EvidenceBound,
) -> rusqlite::Result<bool> {
    let (kept, kept_bytes): (i64, i64) = conn
        .query_row(
            "SELECT kept, kept_bytes FROM evidence_tally WHERE origin = ?1",
            [&evidence.origin],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?
        .unwrap_or((0, 0));
    let bytes = u64::try_from(body.len()).unwrap_or(u64::MAX);
    let room = u64::try_from(kept).unwrap_or(u64::MAX) < bound.rows
        && u64::try_from(kept_bytes)
            .unwrap_or(u64::MAX)
            .saturating_add(bytes)
            <= bound.bytes;
    if room {
        conn.execute(
            "INSERT INTO evidence (origin, received_at, reason, old_size, size, latest_size, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                evidence.origin,
                to_sql(evidence.time)?,
                evidence.reason,
                to_sql(evidence.old_size)?,
                to_sql(evidence.size)?,
                to_sql(evidence.latest_size)?,
                body
            ],
        )?;
    }
    conn.execute(
        "INSERT INTO evidence_tally (origin, kept, kept_bytes, dropped) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (origin) DO UPDATE SET
             kept = kept + excluded.kept, kept_bytes = kept_bytes + excluded.kept_bytes,
             dropped = dropped + excluded.dropped",
        params![
            evidence.origin,
            i64::from(room),
            if room { to_sql(bytes)? } else { 0 },
            i64::from(!room)
        ],
    )?;
    Ok(room)
}

/// The evidence in the state file (without the request bodies, which may be large).
pub(crate) fn list_evidence(conn: &Connection) -> rusqlite::Result<EvidenceList> {
    let mut kept = Vec::new();
    let mut rows = conn.prepare(
        "SELECT id, origin, received_at, reason, old_size, size, latest_size
         FROM evidence ORDER BY id",
    )?;
    let mut rows = rows.query([])?;
    while let Some(row) = rows.next()? {
        kept.push(Evidence {
            id: row.get(0)?,
            origin: row.get(1)?,
            time: from_sql(row.get(2)?)?,
            reason: row.get(3)?,
            old_size: from_sql(row.get(4)?)?,
            size: from_sql(row.get(5)?)?,
            latest_size: from_sql(row.get(6)?)?,
        });
    }
    let mut dropped = Vec::new();
    let mut rows = conn
        .prepare("SELECT origin, dropped FROM evidence_tally WHERE dropped > 0 ORDER BY origin")?;
    let mut rows = rows.query([])?;
    while let Some(row) = rows.next()? {
        dropped.push((row.get(0)?, from_sql(row.get(1)?)?));
    }
    Ok(EvidenceList { kept, dropped })
}

/// The request body kept as evidence number `id`, verbatim.
pub(crate) fn evidence_body(conn: &Connection, id: i64) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.query_row("SELECT body FROM evidence WHERE id = ?1", [id], |row| {
        row.get(0)
    })
    .optional()
}

/// Opens the state file of `dir` for reading evidence, without the witness's lock (a
/// running witness may hold it); `None` if the folder has no state yet.
pub(crate) fn open_existing(dir: &Path) -> Result<Option<Connection>, WitnessError> {
    if !dir.join(STATE_FILE).exists() {
        return Ok(None);
    }
    open(dir).map(Some)
}

fn to_sql(n: u64) -> rusqlite::Result<i64> {
    i64::try_from(n).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

fn from_sql(n: i64) -> rusqlite::Result<u64> {
    u64::try_from(n).map_err(|_| corrupt("a negative number"))
}

fn corrupt(what: &'static str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Integer,
        format!("the state file holds {what}").into(),
    )
}
