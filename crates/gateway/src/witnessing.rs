//! Witnessed checkpoints: the log asks independent witnesses (C2SP tlog-witness) to cosign
//! each new checkpoint, and `/log/checkpoint` serves only the newest one that carries at least
//! `log.witness_quorum` valid cosignatures (C2SP tlog-cosignature), so that no operator can
//! show one history to some monitors and another to others.
//!
//! One task per gateway (`run`) follows the log's latest signed checkpoint. For each witness
//! it remembers the size the witness last cosigned (learned from a 409 answer, or bootstrapped
//! by asking with `old 0`) and sends the checkpoint with the consistency proof from there.
//! Requests never wait for witnesses: they are answered once their entry is in the tree; only
//! the *served* checkpoint waits, and the late-checkpoint alert measures against it. The
//! newest witnessed checkpoint is kept in a file of the data folder, so a restart serves it
//! again at once (after checking it against the log and the quorum). In a fleet on one
//! PostgreSQL log every gateway runs the task: witnesses cosign the same checkpoint for each
//! (same size, same root), at the cost of one request per gateway and checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use logstore::{Log, Published};
use serde_json::{Value, json};
use tlog::cosignature::{WitnessKey, WitnessPolicy, add_signature_lines};
use tlog::note::Verifier;
use tlog::witness::{AddCheckpoint, SIZE_CONTENT_TYPE, parse_size_body};

use crate::config::LogConfig;

/// Where the newest witnessed checkpoint is kept, relative to the data folder.
pub const WITNESSED_FILE: &str = "log/witnessed-checkpoint";

/// How often the task looks for a new checkpoint to send (a read of the log's latest
/// checkpoint in memory: cheap, and at most this much is added to the cosigning latency).
const LOOK_EVERY: Duration = Duration::from_millis(20);

/// The longest wait before a failing witness is asked again.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Checkpoint sizes whose cosignatures are kept while no quorum forms.
const MAX_PENDING: usize = 64;

/// The largest witness answer read (cosignature lines are about 150 bytes each).
const MAX_ANSWER: usize = 64 * 1024;

/// The witnesses of this log, what each last did, and the checkpoint served.
pub struct Witnessing {
    policy: WitnessPolicy,
    log_key: Verifier,
    witnesses: Vec<Witness>,
    served: RwLock<Arc<Published>>,
    /// Cosignatures gathered and not yet served.
    pending: Mutex<Pending>,
    file: PathBuf,
    http: reqwest::Client,
}

/// Cosignatures gathered per checkpoint size not yet served with the quorum (or served with
/// fewer cosignatures than gathered since), one slot per witness; and the size and number of
/// cosignatures of the checkpoint served.
#[derive(Default)]
struct Pending {
    by_size: BTreeMap<u64, (Arc<Published>, Vec<Option<String>>)>,
    served: (Option<u64>, usize),
}

/// What a witness answered a request to cosign.
enum Answer {
    /// Its cosignature line.
    Cosigned(String),
    /// It holds a larger tree than the checkpoint sent.
    Ahead,
}

/// Aborts the witness tasks when the task that spawned them is aborted.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// One witness as the log sees it.
struct Witness {
    /// The submission prefix, without a final `/`.
    url: String,
    key: WitnessKey,
    status: Mutex<WitnessStatus>,
}

#[derive(Default)]
struct WitnessStatus {
    /// The size the witness last cosigned, as far as this gateway knows.
    known_size: Option<u64>,
    last_cosigned: Option<(u64, SystemTime)>,
    last_error: Option<(String, SystemTime)>,
    /// Consecutive failures, for the backoff.
    failures: u32,
    not_before: Option<Instant>,
}

impl Witnessing {
    /// The witnessing of `log` as `[log]` configures it; `None` when the quorum is 0 (the log's
    /// own signature is served alone, as without witnesses).
    pub fn new(
        config: &LogConfig,
        data_dir: &Path,
        log: &Log,
    ) -> anyhow::Result<Option<Witnessing>> {
        if config.witness_quorum == 0 {
            return Ok(None);
        }
        let mut witnesses = Vec::new();
        for w in &config.witnesses {
            let key = WitnessKey::new(&w.key)
                .map_err(|e| anyhow::anyhow!("log.witnesses: key {:?}: {e}", w.key))?;
            witnesses.push(Witness {
                url: w.url.trim_end_matches('/').to_string(),
                key,
                status: Mutex::default(),
            });
        }
        let policy = WitnessPolicy::new(
            witnesses.iter().map(|w| w.key.clone()).collect(),
            config.witness_quorum,
        )
        .map_err(|e| anyhow::anyhow!("log.witness_quorum: {e}"))?;
        let log_key = Verifier::new(log.verifier_key())
            .map_err(|e| anyhow::anyhow!("the log's own verifier key: {e}"))?;
        let http = reqwest::Client::builder()
            // A witness answers where it is asked: it may not send the log elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(config.witness_timeout_ms))
            .connect_timeout(Duration::from_millis(config.witness_timeout_ms))
            .build()
            .context("cannot build the witnesses' HTTP client")?;
        let witnessing = Witnessing {
            policy,
            log_key,
            witnesses,
            served: RwLock::new(Arc::new(Published::none())),
            pending: Mutex::default(),
            file: data_dir.join(WITNESSED_FILE),
            http,
        };
        if let Some((kept, cosignatures)) = witnessing.read_kept(log) {
            witnessing
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .served = (Some(kept.size), cosignatures);
            *witnessing.served.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(kept);
        }
        Ok(Some(witnessing))
    }

    /// The newest checkpoint with the quorum of cosignatures (size `u64::MAX` while there is
    /// none).
    pub fn served(&self) -> Arc<Published> {
        self.served
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The checkpoint kept by an earlier run, if it still opens with the log's key and the
    /// quorum and is a checkpoint of this log's tree; otherwise none, said in the log.
    fn read_kept(&self, log: &Log) -> Option<(Published, usize)> {
        let note = match std::fs::read(&self.file) {
            Ok(note) => note,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(file = %self.file.display(), error = %e, "cannot read the witnessed checkpoint kept");
                return None;
            }
        };
        let checked = self
            .policy
            .open(&note, &self.log_key)
            .map_err(|e| e.to_string())
            .and_then(|(checkpoint, cosignatures)| {
                let root = log.tree_hash(checkpoint.size).map_err(|e| e.to_string())?;
                if root != checkpoint.hash {
                    return Err("its root is not the log's root at its size".to_string());
                }
                Ok((checkpoint, cosignatures.len()))
            });
        match checked {
            Ok((checkpoint, cosignatures)) => Some((
                Published {
                    size: checkpoint.size,
                    hash: checkpoint.hash,
                    note,
                    // Its entries were covered when it was signed; the late-checkpoint alert
                    // measures the entries after it from their own time.
                    signed_at: SystemTime::now(),
                },
                cosignatures,
            )),
            Err(problem) => {
                tracing::warn!(file = %self.file.display(), %problem, "not serving the witnessed checkpoint kept");
                None
            }
        }
    }

    /// Follows the log: one task per witness sends it each new checkpoint, so that a slow or
    /// silent witness never delays the others; the quorum is checked each time one of them
    /// cosigns. Runs until the gateway stops (aborting this task stops the witness tasks).
    pub async fn run(self: Arc<Self>, log: Arc<Log>) {
        let tasks: Vec<_> = (0..self.witnesses.len())
            .map(|i| tokio::spawn(self.clone().follow(i, log.clone())))
            .collect();
        let _stop = AbortOnDrop(tasks);
        std::future::pending::<()>().await;
    }

    /// Sends witness `i` every new checkpoint of the log, once each, until it cosigns it.
    async fn follow(self: Arc<Self>, i: usize, log: Arc<Log>) {
        let witness = &self.witnesses[i];
        // The size of the last checkpoint this witness cosigned or, being ahead, was spared.
        let mut done = u64::MAX;
        let mut interval = tokio::time::interval(LOOK_EVERY);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let target = log.checkpoint();
            if target.size == u64::MAX || target.size == done || !witness.may_ask() {
                continue;
            }
            match self.ask(witness, &log, &target).await {
                Ok(Answer::Cosigned(line)) => {
                    witness.succeeded(target.size);
                    done = target.size;
                    // Publishing writes and syncs a file: not on an async thread.
                    let this = self.clone();
                    let _ =
                        tokio::task::spawn_blocking(move || this.cosigned(i, &target, line)).await;
                }
                // Another gateway of a fleet sent it a newer checkpoint than this gateway has
                // seen yet: not a failure; the next one this gateway sees is sent.
                Ok(Answer::Ahead) => done = target.size,
                Err(problem) => {
                    tracing::warn!(witness = witness.key.name(), url = %witness.url, %problem, "witness did not cosign");
                    witness.failed(problem);
                }
            }
        }
    }

    /// Records witness `i`'s cosignature of `target`, and serves `target` once the quorum
    /// has cosigned it (again, with more cosignatures, as later ones arrive).
    fn cosigned(&self, i: usize, target: &Arc<Published>, line: String) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let (served_size, served_count) = pending.served;
        if served_size.is_some_and(|served| target.size < served) {
            return;
        }
        let (_, lines) = pending
            .by_size
            .entry(target.size)
            .or_insert_with(|| (target.clone(), vec![None; self.witnesses.len()]));
        lines[i] = Some(line);
        let count = lines.iter().flatten().count();
        let more = served_size != Some(target.size) || count > served_count;
        if count >= self.policy.quorum && more {
            let lines: String = lines.iter().flatten().map(String::as_str).collect();
            if self.publish(target, &lines) {
                pending.served = (Some(target.size), count);
                // Nothing smaller than what is served will be served.
                pending.by_size.retain(|&size, _| size >= target.size);
            }
        }
        // A quorum that never forms must not hold memory: keep the newest sizes only.
        while pending.by_size.len() > MAX_PENDING {
            pending.by_size.pop_first();
        }
    }

    /// Serves `target` with the cosignatures `lines`, once it is kept for the next start: a
    /// checkpoint served and then forgotten by a restart would look to monitors like a log
    /// that shrank.
    fn publish(&self, target: &Published, lines: &str) -> bool {
        let note = add_signature_lines(&target.note, lines);
        // Never serve what a monitor would refuse.
        if let Err(e) = self.policy.open(&note, &self.log_key) {
            tracing::error!(error = %e, "the cosigned checkpoint does not meet the quorum; not served");
            return false;
        }
        if let Err(e) = keep(&self.file, &note, target.size) {
            tracing::error!(file = %self.file.display(), error = %e, "cannot keep the witnessed checkpoint; not served until it can be kept");
            return false;
        }
        tracing::debug!(size = target.size, "witnessed checkpoint");
        *self.served.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Published {
            size: target.size,
            hash: target.hash,
            note,
            signed_at: target.signed_at,
        });
        true
    }

    /// Asks one witness to cosign `target`: its valid cosignature line, `Ahead` if it holds
    /// a larger tree than `target`, or what went wrong.
    async fn ask(
        &self,
        witness: &Witness,
        log: &Arc<Log>,
        target: &Published,
    ) -> Result<Answer, String> {
        // The text the log signed, extension lines and all, is what a cosignature covers.
        let text = tlog::note::open(&target.note, [&self.log_key])
            .map_err(|e| format!("the log's own checkpoint does not open: {e}"))?
            .text;
        let mut old = witness.known_size().unwrap_or(0);
        // One retry: a 409 tells the size the witness holds.
        for _ in 0..2 {
            if old > target.size {
                return Ok(Answer::Ahead);
            }
            let proof = if old == 0 || old == target.size {
                Vec::new()
            } else {
                let log = log.clone();
                let size = target.size;
                tokio::task::spawn_blocking(move || log.consistency_proof(old, size))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("cannot prove consistency from {old}: {e}"))?
            };
            let body = AddCheckpoint {
                old_size: old,
                proof,
                checkpoint: target.note.clone(),
            }
            .to_bytes();
            let response = self
                .http
                .post(format!("{}/add-checkpoint", witness.url))
                .body(body)
                .send()
                .await
                .map_err(|e| format!("unreachable: {}", plain(&e)))?;
            let status = response.status();
            let is_size = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(SIZE_CONTENT_TYPE.as_bytes()));
            let answer = read_limited(response).await?;
            match status.as_u16() {
                200 => {
                    return witness
                        .key
                        .find_cosignature(&text, &String::from_utf8_lossy(&answer))
                        .map(|(line, _)| Answer::Cosigned(line))
                        .ok_or_else(|| {
                            "answered 200 without a valid cosignature by its key".to_string()
                        });
                }
                409 if is_size => {
                    let Some(size) = parse_size_body(&answer) else {
                        return Err("answered 409 with a malformed size".to_string());
                    };
                    witness.learned(size);
                    if size == old {
                        // Same size, other root: the witness saw another tree of this size.
                        return Err(format!(
                            "refused: it holds another tree of {size} entries (a fork, or another log under this key)"
                        ));
                    }
                    old = size;
                }
                code => {
                    let said = String::from_utf8_lossy(&answer);
                    let said: String = said.trim().chars().take(200).collect();
                    return Err(format!("answered {code}: {said}"));
                }
            }
        }
        Err("the witness's size kept changing".to_string())
    }

    /// Sets the witnessing gauges: `sovereign_log_witnessed_size_entries` (the served
    /// checkpoint's size), and per witness `sovereign_witness_up` (1 if its last request
    /// cosigned) and `sovereign_witness_failures` (consecutive failed requests).
    pub fn record_gauges(&self) {
        let served = self.served();
        if served.size != u64::MAX {
            metrics::gauge!("sovereign_log_witnessed_size_entries").set(served.size as f64);
        }
        for w in &self.witnesses {
            let s = w.status.lock().unwrap_or_else(|p| p.into_inner());
            let up = s.failures == 0 && s.last_cosigned.is_some();
            let name = w.key.name().to_string();
            metrics::gauge!("sovereign_witness_up", "witness" => name.clone()).set(if up {
                1.0
            } else {
                0.0
            });
            metrics::gauge!("sovereign_witness_failures", "witness" => name)
                .set(f64::from(s.failures));
        }
    }

    /// What the dashboard and the summary show: the quorum, the witnessed size and each
    /// witness's last success and last error.
    pub fn status(&self) -> Value {
        let served = self.served();
        let ago = |t: SystemTime| {
            SystemTime::now()
                .duration_since(t)
                .unwrap_or_default()
                .as_secs_f64()
        };
        json!({
            "quorum": self.policy.quorum,
            "witnessed_size": (served.size != u64::MAX).then_some(served.size),
            "witnesses": self.witnesses.iter().map(|w| {
                let s = w.status.lock().unwrap_or_else(|p| p.into_inner());
                json!({
                    "name": w.key.name(),
                    "url": w.url,
                    "ok": s.failures == 0 && s.last_cosigned.is_some(),
                    "cosigned_size": s.last_cosigned.map(|(size, _)| size),
                    "cosigned_seconds_ago": s.last_cosigned.map(|(_, t)| ago(t)),
                    "failures": s.failures,
                    "last_error": s.last_error.as_ref().map(|(e, _)| e),
                    "last_error_seconds_ago": s.last_error.as_ref().map(|(_, t)| ago(*t)),
                })
            }).collect::<Vec<_>>(),
        })
    }
}

impl Witness {
    fn known_size(&self) -> Option<u64> {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .known_size
    }

    fn learned(&self, size: u64) {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .known_size = Some(size);
    }

    fn may_ask(&self) -> bool {
        let s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        s.not_before.is_none_or(|t| Instant::now() >= t)
    }

    fn succeeded(&self, size: u64) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        s.known_size = Some(size);
        s.last_cosigned = Some((size, SystemTime::now()));
        s.failures = 0;
        s.not_before = None;
    }

    fn failed(&self, problem: String) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        s.failures = s.failures.saturating_add(1);
        s.last_error = Some((problem, SystemTime::now()));
        let backoff = Duration::from_millis(250)
            .saturating_mul(1 << s.failures.min(6))
            .min(MAX_BACKOFF);
        s.not_before = Some(Instant::now() + backoff);
    }
}

/// Reads at most [`MAX_ANSWER`] bytes of a witness's answer.
async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("answer cut short: {}", plain(&e)))?
    {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(format!("answered more than {MAX_ANSWER} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A reqwest error with its causes.
fn plain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Writes the note of a checkpoint of `size` entries to `path` atomically (a temporary file
/// of this process, fsync, rename), unless the file already holds a larger checkpoint (two
/// gateways sharing a data folder may both write it).
fn keep(path: &Path, note: &[u8], size: u64) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    static WRITES: AtomicU64 = AtomicU64::new(0);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let kept_size = std::fs::read(path).ok().and_then(|kept| {
        let text = String::from_utf8(kept).ok()?;
        text.lines().nth(1)?.parse::<u64>().ok()
    });
    if kept_size.is_some_and(|kept| kept > size) {
        return Ok(());
    }
    let tmp = path.with_extension(format!(
        "tmp.{}.{}",
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(note)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
