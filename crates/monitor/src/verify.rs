//! Verifying a whole log: the signed checkpoint, consistency with the checkpoint kept from
//! the previous run, every tile, every entry bundle, and every entry against the format.
//!
//! [`verify`] parses entries on one worker thread per core while the calling thread checks
//! the tree (parsing is most of the work); [`verify_entries`] hands each checked entry to a
//! visitor on the calling thread, in log order, for replay and the report's tally.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use tlog::checkpoint::{Checkpoint, open_checkpoint};
use tlog::note::Verifier;
use tlog::{TileFetcher, hash_to_base64, verify_log};

use crate::entry::{EntryInfo, check_entry};
use crate::failure::verify_failed;
use crate::fetch::Recording;
use crate::progress::Progress;
use crate::state::{read_state, write_atomically};

/// A log verified by [`verify`]: what it is, what it was checked against, what it holds.
pub struct Verified {
    pub checkpoint: Checkpoint,
    /// The checkpoint kept from the previous run, if there was one.
    pub previous: Option<Checkpoint>,
    /// The state file the checkpoint was saved to.
    pub state: Option<PathBuf>,
    pub stats: Stats,
    /// Entries the log's server said it held beyond this checkpoint when it served it (see
    /// [`TileFetcher::log_size_hint`]): not in this check yet. 0 when it did not say.
    pub not_yet_covered: u64,
}

/// Entries `log`'s server said it held beyond a checkpoint of `size` entries.
pub fn not_yet_covered(log: &dyn TileFetcher, size: u64) -> u64 {
    log.log_size_hint().map_or(0, |n| n.saturating_sub(size))
}

/// Verifies the log `log` signed by `verifier`. With `state`, the log must be consistent with
/// the checkpoint kept there (if the file exists), and the verified checkpoint is saved there.
pub fn verify(
    log: &dyn TileFetcher,
    verifier: &Verifier,
    state: Option<&Path>,
    progress: &mut dyn Progress,
) -> anyhow::Result<Verified> {
    let previous = match state {
        Some(path) => read_state(path, verifier)?,
        None => None,
    };
    let fetcher = Recording {
        inner: log,
        checkpoint: RefCell::new(None),
    };

    let mut checker = EntryChecker::start();
    let result = verify_log(
        &fetcher,
        verifier,
        previous.as_ref(),
        &mut |done, total| progress.update(done, total),
        &mut |index, entry| checker.add(index, entry),
    );
    progress.finish();
    // A bad entry is reported as the sequential check would have: verification stops at the
    // first one, whatever the tree checks found after it was handed over.
    let (stats, checkpoint) = match (checker.finish(), result) {
        (Err(bad_entry), _) => return Err(verify_failed(bad_entry)),
        (Ok(_), Err(e)) => return Err(verify_failed(e)),
        (Ok(stats), Ok(checkpoint)) => (stats, checkpoint),
    };

    if let Some(path) = state {
        let note = fetcher
            .checkpoint
            .into_inner()
            .ok_or_else(|| anyhow!("internal error: the verified checkpoint was not recorded"))?;
        // The note saved must be the one just verified.
        if open_checkpoint(&note, verifier).ok().as_ref() != Some(&checkpoint) {
            bail!("the log served a different checkpoint during the run; run again");
        }
        write_atomically(path, &note)
            .with_context(|| format!("saving the checkpoint to {}", path.display()))?;
    }
    Ok(Verified {
        not_yet_covered: not_yet_covered(log, checkpoint.size),
        checkpoint,
        previous,
        state: state.map(Path::to_path_buf),
        stats,
    })
}

/// Sees each entry of [`verify_entries`]: its index, what the format check found, its bytes;
/// an error stops the run, naming the entry.
pub type EntryVisitor<'a> = dyn FnMut(u64, EntryInfo, &[u8]) -> Result<(), String> + 'a;

/// Verifies the log as [`verify`] does (and, with `previous`, its consistency with that
/// checkpoint), checking every entry against the format and then handing it to `visit`, in
/// log order. What `visit` saw counts only once the whole log is verified: the caller
/// gets the checkpoint only then.
pub fn verify_entries(
    log: &dyn TileFetcher,
    verifier: &Verifier,
    previous: Option<&Checkpoint>,
    progress: &mut dyn Progress,
    visit: &mut EntryVisitor<'_>,
) -> anyhow::Result<Checkpoint> {
    let result = verify_log(
        log,
        verifier,
        previous,
        &mut |done, total| progress.update(done, total),
        &mut |index, entry| {
            let info = check_entry(entry)?;
            visit(index, info, entry)
        },
    );
    progress.finish();
    result.map_err(verify_failed)
}

/// The checkpoint's origin, size and root hash, one line each, as every command reports them.
pub struct CheckpointLines<'a>(pub &'a Checkpoint);

impl fmt::Display for CheckpointLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let checkpoint = self.0;
        writeln!(f, "origin:     {}", checkpoint.origin)?;
        writeln!(f, "size:       {} entries", checkpoint.size)?;
        writeln!(f, "root hash:  {}", hash_to_base64(&checkpoint.hash))
    }
}

/// A checkpoint as the tools' `--json` shows it: `{"origin", "size", "root_hash"}`.
pub fn checkpoint_json(checkpoint: &Checkpoint) -> serde_json::Value {
    serde_json::json!({
        "origin": checkpoint.origin,
        "size": checkpoint.size,
        "root_hash": hash_to_base64(&checkpoint.hash),
    })
}

impl Verified {
    /// `audit verify --json`: the checkpoint, the history checked (`consistent`,
    /// `trusted-on-first-use` or `not-checked`), the entries by kind and access outcome.
    pub fn to_json(&self) -> serde_json::Value {
        let history = match (&self.previous, &self.state) {
            (Some(_), Some(_)) => "consistent",
            (None, Some(_)) => "trusted-on-first-use",
            _ => "not-checked",
        };
        serde_json::json!({
            "ok": true,
            "checkpoint": checkpoint_json(&self.checkpoint),
            "history": history,
            "previous_size": self.previous.as_ref().map(|p| p.size),
            "state": self.state.as_ref().map(|p| p.display().to_string()),
            "kinds": self.stats.kinds,
            "outcomes": self.stats.outcomes,
            "not_yet_covered": self.not_yet_covered,
        })
    }
}

/// The report of `audit verify` after its first line: the checkpoint, the history checked,
/// the entries by kind, and where the state went.
impl fmt::Display for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", CheckpointLines(&self.checkpoint))?;
        match (&self.previous, &self.state) {
            (Some(prev), Some(path)) => writeln!(
                f,
                "history:    consistent with the checkpoint of {} entries kept in {}",
                prev.size,
                path.display()
            )?,
            (None, Some(path)) => writeln!(
                f,
                "history:    no checkpoint kept in {} yet: this one is trusted on first use",
                path.display()
            )?,
            _ => writeln!(
                f,
                "history:    not checked (no --state: the log could have been rewritten since your last run)"
            )?,
        }
        write!(f, "{}", self.stats)?;
        if let Some(path) = &self.state {
            writeln!(f, "state:      checkpoint saved to {}", path.display())?;
        }
        Ok(())
    }
}

/// Entry counts of a verified log.
#[derive(Default)]
pub struct Stats {
    /// Entries by kind (`access`, `config`, `custody`, ...).
    pub kinds: BTreeMap<&'static str, u64>,
    /// Access entries by outcome (`allow`, `deny`, `partial`).
    pub outcomes: BTreeMap<&'static str, u64>,
}

impl Stats {
    fn add(&mut self, info: EntryInfo) {
        *self.kinds.entry(info.kind).or_default() += 1;
        if let Some(outcome) = info.outcome {
            *self.outcomes.entry(outcome).or_default() += 1;
        }
    }

    fn merge(&mut self, other: Stats) {
        for (kind, n) in other.kinds {
            *self.kinds.entry(kind).or_default() += n;
        }
        for (outcome, n) in other.outcomes {
            *self.outcomes.entry(outcome).or_default() += n;
        }
    }
}

/// Entries handed to a checker thread at a time: large enough that the hand-over costs
/// little, small enough that a bad entry stops the run soon.
const CHECK_BATCH: usize = 1024;

/// Checks entries against the entry format on worker threads while the calling thread
/// fetches, hashes and verifies the tree: parsing every entry is most of `audit verify`'s
/// work. Batches go round-robin to the workers in log order; the first bad entry (the lowest
/// index any worker rejects) is what [`EntryChecker::finish`] reports, as a sequential check
/// would.
struct EntryChecker {
    batch: Batch,
    next_worker: usize,
    workers: Vec<(std::sync::mpsc::SyncSender<Batch>, CheckerThread)>,
    /// Set by a worker that rejected an entry, so that the run stops early.
    failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// A checker thread: the statistics of the entries it checked, or the bad entry it stopped at.
type CheckerThread = std::thread::JoinHandle<Result<Stats, tlog::VerifyError>>;

/// Entries in one buffer: (index, end offset in `bytes`) per entry.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    entries: Vec<(u64, usize)>,
}

impl EntryChecker {
    fn start() -> EntryChecker {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 8));
        let failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers = (0..threads)
            .map(|_| {
                // Two batches in flight per worker bound the memory held.
                let (sender, receiver) = std::sync::mpsc::sync_channel::<Batch>(2);
                let failed = failed.clone();
                let worker = std::thread::spawn(move || {
                    let mut stats = Stats::default();
                    for batch in receiver {
                        let mut start = 0;
                        for (index, end) in batch.entries {
                            let entry = &batch.bytes[start..end];
                            start = end;
                            match check_entry(entry) {
                                Ok(info) => stats.add(info),
                                Err(message) => {
                                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                                    return Err(tlog::VerifyError::Entry { index, message });
                                }
                            }
                        }
                    }
                    Ok(stats)
                });
                (sender, worker)
            })
            .collect();
        EntryChecker {
            batch: Batch::default(),
            next_worker: 0,
            workers,
            failed,
        }
    }

    /// Takes entry `index` for checking. Refuses (stopping the run) once a worker has found
    /// a bad entry; [`EntryChecker::finish`] then says which.
    fn add(&mut self, index: u64, entry: &[u8]) -> Result<(), String> {
        if self.failed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err("stopped: an earlier entry is not valid".into());
        }
        self.batch.bytes.extend_from_slice(entry);
        self.batch.entries.push((index, self.batch.bytes.len()));
        if self.batch.entries.len() == CHECK_BATCH {
            self.send();
        }
        Ok(())
    }

    fn send(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        let (sender, _) = &self.workers[self.next_worker];
        // A worker that stopped on a bad entry has dropped its receiver; its error is kept.
        let _ = sender.send(batch);
        self.next_worker = (self.next_worker + 1) % self.workers.len();
    }

    /// Checks what is left and waits for the workers: the entries' statistics, or the first
    /// bad entry.
    fn finish(mut self) -> Result<Stats, tlog::VerifyError> {
        if !self.batch.entries.is_empty() {
            self.send();
        }
        let mut stats = Stats::default();
        let mut first_bad: Option<tlog::VerifyError> = None;
        for (sender, worker) in self.workers {
            drop(sender);
            match worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            {
                Ok(s) => stats.merge(s),
                Err(e) => {
                    let earlier = match (&e, &first_bad) {
                        (
                            tlog::VerifyError::Entry { index, .. },
                            Some(tlog::VerifyError::Entry { index: first, .. }),
                        ) => index < first,
                        _ => true,
                    };
                    if earlier {
                        first_bad = Some(e);
                    }
                }
            }
        }
        match first_bad {
            Some(e) => Err(e),
            None => Ok(stats),
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "entries by kind:")?;
        if self.kinds.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for (kind, n) in &self.kinds {
            write!(f, "  {kind:<13} {n:>5}")?;
            if *kind == "access" {
                let by: Vec<String> = self
                    .outcomes
                    .iter()
                    .map(|(o, n)| format!("{o} {n}"))
                    .collect();
                write!(f, "  ({})", by.join(", "))?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
