//! The witness's state in one SQLite file (`witness.sqlite`, opened and versioned through
//! `sqlitedb`: WAL, every commit synced): the latest cosigned checkpoint of each log, and
//! the evidence of refused inconsistent checkpoints (deduplicated, and bounded per log and
//! kind, see [`keep_evidence`]).
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
const SCHEMA: &[&str] = &[
    "
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
",
    "
    -- Version 2. Evidence rows hold only what the log signed (the checkpoint with the
    -- signature lines of its trusted keys, the proof), so each is small; one row per log,
    -- kind and checkpoint, whose repeats are only counted; and each kind has its own bound,
    -- so failed proofs, which anyone can send with a log's genuine checkpoint, never crowd
    -- out a proven fork (two roots signed by the log for one size).
    ALTER TABLE evidence ADD COLUMN kind TEXT NOT NULL DEFAULT 'inconsistent'
        CHECK (kind IN ('fork', 'inconsistent'));
    -- Rows kept before: their kind from their reason (the refusal's text).
    UPDATE evidence SET kind = 'fork' WHERE reason LIKE 'checkpoint of size % the log forked';
    -- The refused checkpoint's root hash (NULL in rows kept before: those are not merged).
    ALTER TABLE evidence ADD COLUMN hash BLOB;
    -- The log's checkpoint the witness held then (its trusted signatures only), if any.
    ALTER TABLE evidence ADD COLUMN held BLOB;
    -- How many requests brought it, and when the last did.
    ALTER TABLE evidence ADD COLUMN times INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE evidence ADD COLUMN last_seen_at INTEGER NOT NULL DEFAULT 0;
    UPDATE evidence SET last_seen_at = received_at;
    CREATE UNIQUE INDEX evidence_once ON evidence (origin, kind, size, hash);
    -- The bound's tally, per log and kind. Kind 'unknown': refused before version 2 and not
    -- kept, when the tally did not tell forks from failed proofs.
    CREATE TABLE evidence_counts (
        origin TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('fork', 'inconsistent', 'unknown')),
        kept INTEGER NOT NULL,
        kept_bytes INTEGER NOT NULL,
        dropped INTEGER NOT NULL,
        PRIMARY KEY (origin, kind)
    );
    INSERT INTO evidence_counts (origin, kind, kept, kept_bytes, dropped)
        SELECT origin, kind, count(*), sum(length(body)), 0 FROM evidence GROUP BY origin, kind;
    INSERT INTO evidence_counts (origin, kind, kept, kept_bytes, dropped)
        SELECT origin, 'unknown', 0, 0, dropped FROM evidence_tally WHERE dropped > 0;
    DROP TABLE evidence_tally;
",
];

/// The most evidence rows kept per log and kind (proven forks, failed proofs): the first
/// ones are kept (the first fork is the one that matters), later ones only counted, so a log
/// that keeps sending forks cannot fill the disk. Repeats of a kept one are counted in it.
pub const MAX_EVIDENCE_PER_LOG: u64 = 10_000;

/// The most evidence bytes (stripped requests and held checkpoints) kept per log and kind,
/// for the same reason.
pub const MAX_EVIDENCE_BYTES_PER_LOG: u64 = 64 << 20;

/// How much evidence is kept per log and kind (the constants above; tests lower them).
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
    open_at(dir, SCHEMA)
}

/// Opens the state file of `dir` at the schema of `steps` (tests build older files).
pub(crate) fn open_at(dir: &Path, steps: &[&str]) -> Result<Connection, WitnessError> {
    let path = dir.join(STATE_FILE);
    let fail = |source| WitnessError::Store {
        path: path.clone(),
        source,
    };
    let mut conn = sqlitedb::open_durable(&path, &OPTIONS).map_err(fail)?;
    sqlitedb::migrate(&mut conn, steps).map_err(fail)?;
    Ok(conn)
}

/// The schema's steps, for tests that build a file of an older version.
#[cfg(test)]
pub(crate) const SCHEMA_STEPS: &[&str] = SCHEMA;

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
            let hash = to_hash(&hash)?;
            Ok(Latest { size, hash })
        })
        .transpose()
}

/// The note of the latest checkpoint cosigned for `origin`, as recorded (before version 2,
/// verbatim as received; since, with the log's trusted signatures only).
pub(crate) fn latest_note(conn: &Connection, origin: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.query_row(
        "SELECT note FROM checkpoints WHERE origin = ?1",
        [origin],
        |row| row.get(0),
    )
    .optional()
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

/// What a piece of evidence shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvidenceKind {
    /// A checkpoint of the size of the one cosigned, with another root hash, both signed by
    /// the log's key: proof by itself that the log forked (a 409).
    Fork,
    /// A checkpoint signed by the log whose consistency proof from the cosigned one failed
    /// (a 422): a suspicion only, since anyone can send a log's genuine checkpoint with a
    /// wrong proof.
    Inconsistent,
}

impl EvidenceKind {
    fn as_sql(self) -> &'static str {
        match self {
            EvidenceKind::Fork => "fork",
            EvidenceKind::Inconsistent => "inconsistent",
        }
    }

    fn from_sql(kind: &str) -> rusqlite::Result<Option<EvidenceKind>> {
        match kind {
            "fork" => Ok(Some(EvidenceKind::Fork)),
            "inconsistent" => Ok(Some(EvidenceKind::Inconsistent)),
            "unknown" => Ok(None),
            _ => Err(corrupt("an unknown kind of evidence")),
        }
    }
}

/// A refused inconsistent checkpoint, as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// Its number in the state file (for [`crate::read_evidence_body`]).
    pub id: i64,
    /// The log's origin.
    pub origin: String,
    /// What it shows.
    pub kind: EvidenceKind,
    /// When it was first refused (POSIX seconds).
    pub time: u64,
    /// When it was last refused (POSIX seconds).
    pub last_time: u64,
    /// How many requests brought this checkpoint with this refusal (1 and its repeats).
    pub times: u64,
    /// Why it was first refused: the error's text.
    pub reason: String,
    /// The first request's old size.
    pub old_size: u64,
    /// The refused checkpoint's size.
    pub size: u64,
    /// The refused checkpoint's root hash (`None` for evidence kept before the witness
    /// recorded it).
    pub hash: Option<Hash>,
    /// The size of the latest checkpoint cosigned for the log then.
    pub latest_size: u64,
}

/// Evidence refused but not kept (over the bounds), per log and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The log's origin.
    pub origin: String,
    /// The kind (`None`: refused before the witness told kinds apart in its tally).
    pub kind: Option<EvidenceKind>,
    /// How many requests.
    pub count: u64,
}

/// What the state file holds as evidence: the kept rows, in the order they came, and per
/// log and kind how many more were refused but not kept (over the bounds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvidenceList {
    /// The kept evidence, oldest first.
    pub kept: Vec<Evidence>,
    /// Evidence not kept, for logs and kinds with any.
    pub dropped: Vec<Dropped>,
}

/// A refusal to keep as evidence.
#[derive(Debug)]
pub(crate) struct NewEvidence<'a> {
    pub(crate) origin: &'a str,
    pub(crate) kind: EvidenceKind,
    pub(crate) time: u64,
    pub(crate) reason: String,
    pub(crate) old_size: u64,
    pub(crate) size: u64,
    pub(crate) hash: Hash,
    pub(crate) latest_size: u64,
    /// The request, its checkpoint stripped to the log's trusted signatures.
    pub(crate) body: Vec<u8>,
    /// The log's checkpoint the witness held then, stripped the same way.
    pub(crate) held: Option<Vec<u8>>,
}

/// What [`keep_evidence`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kept {
    /// A new row.
    New,
    /// A repeat of a kept row: counted in it.
    Repeat,
    /// Over the bound: only counted.
    Dropped,
}

/// Keeps `evidence`: counted in its row if the same log, kind and checkpoint (size and root
/// hash) is kept already; else a new row, unless the bound of its log and kind is reached,
/// then only counted.
pub(crate) fn keep_evidence(
    conn: &Connection,
    evidence: &NewEvidence,
    bound: EvidenceBound,
) -> rusqlite::Result<Kept> {
    let kind = evidence.kind.as_sql();
    let repeated = conn
        .prepare_cached(
            "UPDATE evidence SET times = times + 1, last_seen_at = max(last_seen_at, ?5)
             WHERE origin = ?1 AND kind = ?2 AND size = ?3 AND hash = ?4",
        )?
        .execute(params![
            evidence.origin,
            kind,
            to_sql(evidence.size)?,
            evidence.hash.as_slice(),
            to_sql(evidence.time)?
        ])?;
    if repeated > 0 {
        return Ok(Kept::Repeat);
    }
    let (kept, kept_bytes): (i64, i64) = conn
        .prepare_cached(
            "SELECT kept, kept_bytes FROM evidence_counts WHERE origin = ?1 AND kind = ?2",
        )?
        .query_row(params![evidence.origin, kind], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?
        .unwrap_or((0, 0));
    let held_len = evidence.held.as_ref().map_or(0, Vec::len);
    let bytes = u64::try_from(evidence.body.len() + held_len).unwrap_or(u64::MAX);
    let room = u64::try_from(kept).unwrap_or(u64::MAX) < bound.rows
        && u64::try_from(kept_bytes)
            .unwrap_or(u64::MAX)
            .saturating_add(bytes)
            <= bound.bytes;
    if room {
        conn.prepare_cached(
            "INSERT INTO evidence (origin, kind, received_at, last_seen_at, times, reason,
                 old_size, size, hash, latest_size, body, held)
             VALUES (?1, ?2, ?3, ?3, 1, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            evidence.origin,
            kind,
            to_sql(evidence.time)?,
            evidence.reason,
            to_sql(evidence.old_size)?,
            to_sql(evidence.size)?,
            evidence.hash.as_slice(),
            to_sql(evidence.latest_size)?,
            evidence.body,
            evidence.held
        ])?;
    }
    conn.prepare_cached(
        "INSERT INTO evidence_counts (origin, kind, kept, kept_bytes, dropped)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (origin, kind) DO UPDATE SET
             kept = kept + excluded.kept, kept_bytes = kept_bytes + excluded.kept_bytes,
             dropped = dropped + excluded.dropped",
    )?
    .execute(params![
        evidence.origin,
        kind,
        i64::from(room),
        if room { to_sql(bytes)? } else { 0 },
        i64::from(!room)
    ])?;
    Ok(if room { Kept::New } else { Kept::Dropped })
}

/// The evidence in the state file (without the requests and checkpoints it holds).
pub(crate) fn list_evidence(conn: &Connection) -> rusqlite::Result<EvidenceList> {
    let mut kept = Vec::new();
    let mut rows = conn.prepare(
        "SELECT id, origin, kind, received_at, last_seen_at, times, reason, old_size, size,
             hash, latest_size
         FROM evidence ORDER BY id",
    )?;
    let mut rows = rows.query([])?;
    while let Some(row) = rows.next()? {
        let kind: String = row.get(2)?;
        let hash: Option<Vec<u8>> = row.get(9)?;
        kept.push(Evidence {
            id: row.get(0)?,
            origin: row.get(1)?,
            kind: EvidenceKind::from_sql(&kind)?
                .ok_or_else(|| corrupt("a kept row of unknown kind"))?,
            time: from_sql(row.get(3)?)?,
            last_time: from_sql(row.get(4)?)?,
            times: from_sql(row.get(5)?)?,
            reason: row.get(6)?,
            old_size: from_sql(row.get(7)?)?,
            size: from_sql(row.get(8)?)?,
            hash: hash.as_deref().map(to_hash).transpose()?,
            latest_size: from_sql(row.get(10)?)?,
        });
    }
    let mut dropped = Vec::new();
    let mut rows = conn.prepare(
        "SELECT origin, kind, dropped FROM evidence_counts WHERE dropped > 0
         ORDER BY origin, kind",
    )?;
    let mut rows = rows.query([])?;
    while let Some(row) = rows.next()? {
        let kind: String = row.get(1)?;
        dropped.push(Dropped {
            origin: row.get(0)?,
            kind: EvidenceKind::from_sql(&kind)?,
            count: from_sql(row.get(2)?)?,
        });
    }
    Ok(EvidenceList { kept, dropped })
}

/// The request kept as evidence number `id`: since version 2 its checkpoint carries only
/// the log's trusted signatures; before, verbatim as received.
pub(crate) fn evidence_body(conn: &Connection, id: i64) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.query_row("SELECT body FROM evidence WHERE id = ?1", [id], |row| {
        row.get(0)
    })
    .optional()
}

/// The log's checkpoint the witness held when it refused evidence number `id`: `None` if
/// there is no such evidence, `Some(None)` if none was recorded (a log never cosigned, or
/// evidence kept before version 2).
pub(crate) fn evidence_held(
    conn: &Connection,
    id: i64,
) -> rusqlite::Result<Option<Option<Vec<u8>>>> {
    conn.query_row("SELECT held FROM evidence WHERE id = ?1", [id], |row| {
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

fn to_hash(bytes: &[u8]) -> rusqlite::Result<Hash> {
    Hash::try_from(bytes).map_err(|_| corrupt("a hash not 32 bytes"))
}

fn corrupt(what: &'static str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Integer,
        format!("the state file holds {what}").into(),
    )
}
