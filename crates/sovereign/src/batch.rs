//! `sovereign algo batch`: the active release of an algorithm run for many subjects (a
//! nightly recomputation), one governed run each, at a bounded rate, with progress on a
//! terminal, resumable from a cursor file, the outputs written into an interoperable
//! collection when asked.
//!
//! Each subject is its own run through `POST /v1/algorithms/{name}/runs`, so each is
//! decided and logged; a subject whose run is denied or fails is counted and the batch goes
//! on. Anything that stops every run (the release deactivated, the gateway unreachable, an
//! expired token) stops the batch with the cursor saved: the same command continues after
//! the last subject done.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::client::{ApiError, Body, ServerArgs};

/// Error codes that concern one subject only: the batch counts them and goes on.
const PER_SUBJECT: &[&str] = &[
    "denied",
    "suspended",
    "purpose_required",
    "approval_required",
    "subject_not_found",
    "algorithm_failed",
    "key_destroyed",
    "residency_violation",
];

#[derive(clap::Args, Debug, Clone)]
pub struct BatchArgs {
    /// The algorithm's name (its active release runs).
    #[arg(long)]
    name: String,
    /// The subjects' ids, one per line (blank lines and lines starting with `#` skipped).
    #[arg(long)]
    subjects: PathBuf,
    /// The cursor: where the batch is. Created if absent; the same command with the same
    /// file continues after the last subject done.
    #[arg(long)]
    state: PathBuf,
    /// Write each subject's outputs into this collection (each output an interoperable
    /// field of it), for the platform to read.
    #[arg(long)]
    store: Option<String>,
    /// The record read in each collection the manifest names, and written in `--store`.
    #[arg(long, default_value = "main")]
    key: String,
    /// At most this many runs a second.
    #[arg(long, default_value_t = 50)]
    rate: u32,
}

/// The cursor file.
#[derive(Serialize, Deserialize, Default)]
struct Cursor {
    name: String,
    subjects: String,
    /// Subjects done (lines with an id), and the last one.
    done: u64,
    last: Option<String>,
    ok: u64,
    failed: u64,
    denied: u64,
}

pub fn run(server: &ServerArgs, args: BatchArgs) -> anyhow::Result<()> {
    if args.rate == 0 {
        bail!("--rate must be above 0");
    }
    let text = std::fs::read_to_string(&args.subjects)
        .with_context(|| format!("cannot read {}", args.subjects.display()))?;
    let ids: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let subjects_name = args.subjects.display().to_string();
    let mut cursor = load(&args.state)?.unwrap_or_else(|| Cursor {
        name: args.name.clone(),
        subjects: subjects_name.clone(),
        ..Cursor::default()
    });
    if cursor.name != args.name || cursor.subjects != subjects_name {
        bail!(
            "{} is the cursor of a batch of {} over {}, not of {} over {}; use another --state",
            args.state.display(),
            cursor.name,
            cursor.subjects,
            args.name,
            subjects_name
        );
    }
    let done = usize::try_from(cursor.done).unwrap_or(usize::MAX);
    if done > 0 && ids.get(done - 1).copied() != cursor.last.as_deref() {
        bail!(
            "{} changed since the cursor was saved (subject {done} is no longer {}); start over with a new --state",
            args.subjects.display(),
            cursor.last.as_deref().unwrap_or("?")
        );
    }
    let client = server.client()?;
    let bar = crate::residency::progress(ids.len() as u64, "running");
    bar.set_position(done as u64);
    let path = format!("/v1/algorithms/{}/runs", crate::client::segment(&args.name));
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let started = Instant::now();
    for (n, id) in ids.iter().enumerate().skip(done) {
        // Bounded in rate: the n-th run of this invocation starts no earlier than n/rate.
        let due = started + interval * u32::try_from(n - done).unwrap_or(u32::MAX);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let mut body = json!({"subject": id, "key": args.key});
        if let Some(collection) = &args.store {
            body["store"] = json!({"collection": collection, "key": args.key});
        }
        match client.post(&path, Body::Json(&body)) {
            Ok(_) => cursor.ok += 1,
            Err(e) => match e.downcast_ref::<ApiError>() {
                Some(api) if PER_SUBJECT.contains(&api.code.as_str()) => {
                    if api.code == "algorithm_failed" {
                        cursor.failed += 1;
                    } else {
                        cursor.denied += 1;
                    }
                    bar.println(format!("{id}: {api}"));
                }
                _ => {
                    bar.abandon();
                    save(&args.state, &cursor)?;
                    return Err(anyhow!(
                        "stopped at subject {} of {} ({id}): {e}; {} done, cursor saved in {}: run the same command to continue",
                        n + 1,
                        ids.len(),
                        cursor.done,
                        args.state.display()
                    ));
                }
            },
        }
        cursor.done = n as u64 + 1;
        cursor.last = Some(id.to_string());
        save(&args.state, &cursor)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let summary = json!({
        "algorithm": cursor.name,
        "subjects": cursor.done,
        "ok": cursor.ok,
        "failed": cursor.failed,
        "denied": cursor.denied,
    });
    server.print(&summary, |_| {
        format!(
            "{}: {} subjects, {} ok, {} failed, {} denied or refused (each run decided and logged)\n",
            cursor.name, cursor.done, cursor.ok, cursor.failed, cursor.denied
        )
    });
    Ok(())
}

fn load(path: &Path) -> anyhow::Result<Option<Cursor>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{} is not a batch cursor", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes the cursor whole (a new file renamed over the old), so a batch killed at any
/// moment leaves the last cursor or the one before, never half of one.
fn save(path: &Path, cursor: &Cursor) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(cursor)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}
