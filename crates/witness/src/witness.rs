//! [`Witness`]: the checks of c2sp.org/tlog-witness `add-checkpoint`, in its order, against
//! the state kept in `store.rs`, and the cosignature of what passes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, TransactionBehavior};
use tlog::checkpoint::Checkpoint;
use tlog::cosignature::{Cosigner, WitnessKey};
use tlog::note::{Note, NoteError, Verifier};
use tlog::witness::AddCheckpoint;
use tlog::{EMPTY_TREE_HASH, check_tree};

use crate::error::{AddError, WitnessError};
use crate::files::{DataLock, STATE_FILE, load_cosigner};
use crate::store::{self, EvidenceBound, EvidenceKind, EvidenceList, Kept, Latest, NewEvidence};

/// A witness: its key, the logs it witnesses and their latest cosigned checkpoints.
///
/// Safe to share between threads: signatures are verified in parallel, and each request's
/// check against the state and the write of the new state happen in one immediate SQLite
/// transaction under one mutex, committed (synced) before the cosignature is made, so two
/// concurrent requests can never both advance from the same size (no rollback), and a
/// crash never forgets a cosigned tree. The checkpoint it holds, sent again, is cosigned
/// again without a write.
#[derive(Debug)]
pub struct Witness {
    cosigner: Cosigner,
    /// The trusted keys of each log, by origin (a log's key name is its origin).
    logs: HashMap<String, Vec<Verifier>>,
    state: Mutex<Connection>,
    dir: PathBuf,
    pub(crate) evidence_bound: EvidenceBound,
    _lock: DataLock,
}

impl Witness {
    /// Opens the witness of data folder `dir` (written by [`crate::init`]) for the logs
    /// whose verifier keys are `logs` (several keys of one origin are all trusted). Takes
    /// the folder's lock: fails with [`WitnessError::Locked`] while another witness runs on
    /// it.
    pub fn open(dir: &Path, logs: Vec<Verifier>) -> Result<Witness, WitnessError> {
        let cosigner = load_cosigner(dir)?;
        let lock = DataLock::take(dir)?;
        let mut by_origin: HashMap<String, Vec<Verifier>> = HashMap::new();
        for key in logs {
            let keys = by_origin.entry(key.name().to_string()).or_default();
            if let Some(same_id) = keys.iter().find(|k| k.key_id() == key.key_id()) {
                if *same_id == key {
                    continue;
                }
                // A note signature names its key by name and key ID only: two keys sharing
                // both could not be told apart.
                return Err(WitnessError::Logs(format!(
                    "{key} and {same_id} share a name and key ID"
                )));
            }
            keys.push(key);
        }
        let state = store::open(dir)?;
        Ok(Witness {
            cosigner,
            logs: by_origin,
            state: Mutex::new(state),
            dir: dir.to_path_buf(),
            evidence_bound: EvidenceBound::DEFAULT,
            _lock: lock,
        })
    }

    /// The witness's verifier key (a C2SP vkey of type 0x04 as its `Display`).
    pub fn witness_key(&self) -> WitnessKey {
        self.cosigner.witness_key()
    }

    /// The origins of the logs this witness witnesses, sorted.
    pub fn origins(&self) -> Vec<&str> {
        let mut origins: Vec<&str> = self.logs.keys().map(String::as_str).collect();
        origins.sort_unstable();
        origins
    }

    /// The latest checkpoint cosigned for `origin`, if any.
    pub fn latest(&self, origin: &str) -> Result<Option<Latest>, WitnessError> {
        let conn = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        store::latest(&conn, origin).map_err(|e| self.store_error(e))
    }

    /// The evidence kept of refused inconsistent checkpoints.
    pub fn evidence(&self) -> Result<EvidenceList, WitnessError> {
        let conn = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        store::list_evidence(&conn).map_err(|e| self.store_error(e))
    }

    /// Handles an `add-checkpoint` request body: the checks of c2sp.org/tlog-witness in its
    /// order, then the new state persisted, then the cosignature line (one, ending in a
    /// newline) of the checkpoint at the current time. A refusal says why and carries the
    /// HTTP status ([`AddError::status`]); fork and failed-proof refusals are kept as
    /// evidence (the checkpoint with the log's trusted signatures only, and the proof; one
    /// row per checkpoint and kind, repeats counted).
    pub fn add_checkpoint(&self, body: &[u8]) -> Result<String, AddError> {
        let request =
            AddCheckpoint::parse(body).map_err(|e| AddError::Malformed(e.0.to_string()))?;
        // The signature is checked before the lock: it is the expensive part and needs no
        // state.
        let (checkpoint, note) = self.open_checkpoint(&request.checkpoint)?;
        if request.old_size > checkpoint.size {
            return Err(AddError::OldSizeAbove {
                old: request.old_size,
                size: checkpoint.size,
            });
        }
        self.advance(&request, &checkpoint, &note)?;
        Ok(self.cosigner.cosign(&note.text, now()))
    }

    /// The checkpoint of a note signed by a trusted key of its log, and the opened note
    /// (its text is what a cosignature signs): 404 for an unknown origin, 403 without a
    /// valid trusted signature, 400 for a note or checkpoint that is malformed.
    fn open_checkpoint(&self, note: &[u8]) -> Result<(Checkpoint, Note), AddError> {
        let first_line = note
            .split(|&b| b == b'\n')
            .next()
            .filter(|_| note.contains(&b'\n'))
            .ok_or_else(|| AddError::Malformed("the checkpoint has no origin line".into()))?;
        let origin = std::str::from_utf8(first_line)
            .map_err(|_| AddError::Malformed("the checkpoint's origin is not UTF-8".into()))?;
        let keys = self
            .logs
            .get(origin)
            .ok_or_else(|| AddError::UnknownOrigin(origin.to_string()))?;
        let opened = tlog::note::open(note, keys).map_err(|e| match e {
            NoteError::Unverified(_)
            | NoteError::InvalidSignature { .. }
            | NoteError::AmbiguousKey { .. } => AddError::Untrusted {
                origin: origin.to_string(),
                reason: e.to_string(),
            },
            other => AddError::Malformed(format!("the checkpoint note: {other}")),
        })?;
        let checkpoint = Checkpoint::parse(&opened.text)
            .map_err(|e| AddError::Malformed(format!("the checkpoint: {e}")))?;
        if checkpoint.origin != origin {
            // The text starts with the origin line; only a bug would get here.
            return Err(AddError::Malformed(
                "the checkpoint's origin is not its first line".into(),
            ));
        }
        // SQLite integers are signed; no real tree comes near 2^63 entries.
        if i64::try_from(checkpoint.size).is_err() {
            return Err(AddError::Malformed(
                "the checkpoint's tree size is above 2^63 - 1".into(),
            ));
        }
        Ok((checkpoint, opened))
    }

    /// Checks the request against the latest cosigned checkpoint of its log and records the
    /// new one, atomically and durably (nothing when it is the one held); or keeps the
    /// evidence of an inconsistent one.
    fn advance(
        &self,
        request: &AddCheckpoint,
        checkpoint: &Checkpoint,
        note: &Note,
    ) -> Result<(), AddError> {
        let mut conn = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        // IMMEDIATE: the write lock is taken before the read, so nothing (another process
        // that bypassed the lock file, say) can change the state between check and write.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage)?;
        let held = store::latest(&tx, &checkpoint.origin).map_err(storage)?;
        let latest = held.unwrap_or(Latest {
            size: 0,
            hash: EMPTY_TREE_HASH,
        });
        let now = now();
        match check(latest, request, checkpoint) {
            Ok(()) if held.is_some_and(|held| held.size == checkpoint.size) => {
                // The checkpoint held, sent again (the check made it the same root): nothing
                // changes, so nothing is written or synced.
                tx.rollback().map_err(storage)
            }
            Ok(()) => {
                let new = Latest {
                    size: checkpoint.size,
                    hash: checkpoint.hash,
                };
                store::set_latest(&tx, &checkpoint.origin, new, &trusted_only(note), now)
                    .map_err(storage)?;
                // synchronous=FULL: on disk when commit returns, before anything is cosigned.
                tx.commit().map_err(storage)
            }
            Err(refusal) => {
                let kind = match refusal {
                    AddError::Fork { .. } => EvidenceKind::Fork,
                    AddError::Inconsistent { .. } => EvidenceKind::Inconsistent,
                    _ => return Err(refusal),
                };
                let reason = match kind {
                    EvidenceKind::Fork => format!(
                        "{refusal} (two root hashes signed by the log's key for one size: proof of a fork)"
                    ),
                    EvidenceKind::Inconsistent => format!(
                        "{refusal} (unverified: anyone can send a log's genuine checkpoint with a wrong proof, so this is a suspicion, not proof)"
                    ),
                };
                let evidence = NewEvidence {
                    origin: &checkpoint.origin,
                    kind,
                    time: now,
                    reason,
                    old_size: request.old_size,
                    size: checkpoint.size,
                    hash: checkpoint.hash,
                    latest_size: latest.size,
                    // Only what the log signed, and the proof (at most 63 hashes): the
                    // lines of unknown keys anyone can add are dropped.
                    body: AddCheckpoint {
                        old_size: request.old_size,
                        proof: request.proof.clone(),
                        checkpoint: trusted_only(note),
                    }
                    .to_bytes(),
                    held: None,
                };
                let kept = self
                    .held_note(&tx, &checkpoint.origin)
                    .and_then(|held| {
                        store::keep_evidence(
                            &tx,
                            &NewEvidence { held, ..evidence },
                            self.evidence_bound,
                        )
                    })
                    .and_then(|kept| tx.commit().map(|()| kept));
                match kept {
                    Ok(Kept::Repeat) => {
                        tracing::debug!(origin = %checkpoint.origin, %refusal, "refused again a checkpoint kept as evidence");
                    }
                    Ok(kept) => {
                        tracing::warn!(origin = %checkpoint.origin, %refusal, kept = (kept == Kept::New), "refused an inconsistent checkpoint signed by the log");
                    }
                    Err(e) => {
                        // The refusal stands; only the evidence is lost.
                        tracing::error!(origin = %checkpoint.origin, error = %e, "cannot keep the evidence");
                    }
                }
                Err(refusal)
            }
        }
    }

    /// The note of the checkpoint held for `origin`, with only the signatures of its
    /// currently trusted keys (a state written before version 2 kept notes verbatim);
    /// `None` if there is none, or none of its signatures is by a key trusted now.
    fn held_note(&self, conn: &Connection, origin: &str) -> rusqlite::Result<Option<Vec<u8>>> {
        let Some(note) = store::latest_note(conn, origin)? else {
            return Ok(None);
        };
        let keys = self.logs.get(origin).map_or(&[][..], Vec::as_slice);
        Ok(tlog::note::open(&note, keys)
            .ok()
            .map(|opened| trusted_only(&opened)))
    }

    fn store_error(&self, e: rusqlite::Error) -> WitnessError {
        WitnessError::Store {
            path: self.dir.join(STATE_FILE),
            source: e.into(),
        }
    }
}

/// The state checks of c2sp.org/tlog-witness, in its order, of a request whose signature
/// and sizes passed, against `latest` (size 0 and the empty tree's hash for a log never
/// cosigned).
fn check(latest: Latest, request: &AddCheckpoint, checkpoint: &Checkpoint) -> Result<(), AddError> {
    let old = request.old_size;
    if old != latest.size {
        return Err(AddError::Conflict {
            old,
            latest: latest.size,
        });
    }
    if old == checkpoint.size {
        if checkpoint.hash != latest.hash {
            return Err(AddError::Fork { size: old });
        }
        if !request.proof.is_empty() {
            return Err(inconsistent(
                old,
                checkpoint.size,
                "the proof between two trees of one size must be empty",
            ));
        }
        return Ok(());
    }
    if old == 0 {
        if !request.proof.is_empty() {
            return Err(inconsistent(
                old,
                checkpoint.size,
                "the proof must be empty when the old size is 0",
            ));
        }
        return Ok(());
    }
    check_tree(
        &request.proof,
        checkpoint.size,
        &checkpoint.hash,
        old,
        &latest.hash,
    )
    .map_err(|e| inconsistent(old, checkpoint.size, &e.to_string()))
}

/// The note of `note`'s text and its verified signatures only, without the lines of unknown
/// keys (anyone can add those, up to the note size limit): what the log signed, as small
/// as the log made it.
fn trusted_only(note: &Note) -> Vec<u8> {
    let mut out = Vec::with_capacity(note.text.len() + 1 + 128 * note.sigs.len());
    out.extend_from_slice(note.text.as_bytes());
    out.push(b'\n');
    for sig in &note.sigs {
        out.extend_from_slice("\u{2014} ".as_bytes());
        out.extend_from_slice(sig.name.as_bytes());
        out.push(b' ');
        out.extend_from_slice(sig.base64.as_bytes());
        out.push(b'\n');
    }
    out
}

fn inconsistent(old: u64, size: u64, reason: &str) -> AddError {
    AddError::Inconsistent {
        old,
        size,
        reason: reason.to_string(),
    }
}

fn storage(e: rusqlite::Error) -> AddError {
    tracing::error!(error = %e, "the witness state cannot be read or written");
    AddError::Storage(e.to_string())
}

/// The evidence kept in the data folder `dir`, read without the witness's lock (so while it
/// runs); empty if it has no state yet.
pub fn read_evidence(dir: &Path) -> Result<EvidenceList, WitnessError> {
    let path = dir.join(STATE_FILE);
    let Some(conn) = store::open_existing(dir)? else {
        return Ok(EvidenceList::default());
    };
    store::list_evidence(&conn).map_err(|e| WitnessError::Store {
        path,
        source: e.into(),
    })
}

/// The request kept as evidence number `id` in the data folder `dir`: the `add-checkpoint`
/// body with its proof, its checkpoint carrying only the log's trusted signatures (evidence
/// kept before the witness stripped it: verbatim).
pub fn read_evidence_body(dir: &Path, id: i64) -> Result<Option<Vec<u8>>, WitnessError> {
    let path = dir.join(STATE_FILE);
    let Some(conn) = store::open_existing(dir)? else {
        return Ok(None);
    };
    store::evidence_body(&conn, id).map_err(|e| WitnessError::Store {
        path,
        source: e.into(),
    })
}

/// The log's checkpoint note the witness held when it refused evidence number `id` in the
/// data folder `dir` (for a fork: the other root at that size, signed by the log): `None`
/// if there is no such evidence, `Some(None)` if none was recorded (a log never cosigned,
/// or evidence kept before the witness recorded it).
pub fn read_evidence_held(dir: &Path, id: i64) -> Result<Option<Option<Vec<u8>>>, WitnessError> {
    let path = dir.join(STATE_FILE);
    let Some(conn) = store::open_existing(dir)? else {
        return Ok(None);
    };
    store::evidence_held(&conn, id).map_err(|e| WitnessError::Store {
        path,
        source: e.into(),
    })
}

/// Now, in POSIX seconds (a cosignature's timestamp).
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
