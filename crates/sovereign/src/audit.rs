//! `sovereign audit`: the monitor's tool.
//!
//! A monitor trusts nothing but the log's verifier key and the checkpoint it kept
//! from its previous run. Everything else is fetched (over HTTP(S) from the
//! gateway or any static mirror, or from a local copy) and checked with the
//! standalone `tlog` crate:
//!
//! * `audit key` prints the log's verifier key from a data folder;
//! * `audit verify` checks the signed checkpoint, consistency with the remembered
//!   checkpoint, every tile and every entry, and parses every entry as a v1 or v2
//!   log entry (see [`check_entry`]);
//! * `audit prove` writes an offline-verifiable C2SP tlog-proof of one entry;
//! * `audit check-proof` verifies such a proof;
//! * `audit replay` verifies the log as `verify` does, then decides every v2 access
//!   entry again with the policy set it names (see `replay.rs`).
//!
//! The entry parser is deliberately written from the published entry format, not
//! shared with the gateway: it is the monitor's independent reading of the log.

// Declared here (not in main.rs) so that a test crate including this file alone gets
// the replay too; the path is relative to this file's directory.
#[path = "replay.rs"]
mod replay;

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{IsTerminal as _, Read as _, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use tlog::checkpoint::{Checkpoint, CheckpointError, open_checkpoint};
use tlog::note::{NoteError, Signer, Verifier};
use tlog::proof::{ProofError, TlogProof};
use tlog::{
    DirFetcher, FULL_TILE_WIDTH, FetchError, FetcherTileReader, TILE_HEIGHT, Tile, TileFetcher,
    check_record, decode_bundle, hash_to_base64, leaf_hash, prove_record, tile_hash_reader,
    verify_log,
};

/// Default data folder of `audit key` (the same as `sovereign serve`'s).
const DEFAULT_DATA: &str = "sovereign-data";
/// Where `sovereign init` keeps the log's signer key, below the data folder.
const SIGNER_KEY_FILE: &str = "keys/log-signer.key";
/// Timeout of each HTTP request (connect, and the whole exchange).
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest file a log serves: a full entry bundle of 256 maximal entries.
const MAX_FETCH: u64 = 256 * (2 + 65_535);
/// Without a terminal, how often `audit verify` reports progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// `sovereign audit ...`: verify the transparency log as an outside monitor.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum AuditCommand {
    /// Print the log's verifier key (signed-note vkey form), from a data folder.
    Key {
        /// Data folder holding keys/log-signer.key.
        #[arg(long, default_value = DEFAULT_DATA)]
        data: PathBuf,
    },
    /// Verify the whole log: checkpoint signature, consistency with the checkpoint
    /// kept in --state, every tile and every entry. Exits 0 only if all hold.
    Verify {
        /// The log: an http(s) prefix serving `checkpoint` and `tile/...`
        /// (e.g. http://127.0.0.1:8080/log), a local directory or a file:// URL.
        #[arg(long)]
        url: String,
        /// The log's verifier key (name+keyid+base64), or @FILE to read it from FILE.
        #[arg(long)]
        key: String,
        /// File keeping the last accepted signed checkpoint; read if present,
        /// (over)written on success.
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Write an offline-verifiable inclusion proof (C2SP tlog-proof) of one entry,
    /// and the entry itself next to it (FILE.entry).
    Prove {
        /// The log, as for `verify`.
        #[arg(long)]
        url: String,
        /// The entry's index in the log.
        #[arg(long)]
        index: u64,
        /// Where to write the proof [default: proof-N.tlog-proof].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also check the checkpoint's signature with this verifier key (or @FILE).
        #[arg(long)]
        key: Option<String>,
    },
    /// Verify an inclusion proof written by `prove`. Exits 0 only if it is valid.
    CheckProof {
        /// The proof file.
        file: PathBuf,
        /// The log's verifier key (name+keyid+base64), or @FILE.
        #[arg(long)]
        key: String,
        /// The entry the proof is about [default: FILE.entry].
        #[arg(long)]
        entry: Option<PathBuf>,
    },
    /// Verify the whole log as `verify` does, then decide every v2 access entry again
    /// with the policy set it names and compare. Exits 0 only if every decision matches.
    Replay {
        /// The log, as for `verify`.
        #[arg(long)]
        url: String,
        /// The log's verifier key (name+keyid+base64), or @FILE.
        #[arg(long)]
        key: String,
        /// Where the policy sets are: an http(s) prefix serving `<hash>` (the gateway's
        /// /v1/policies), a directory or file:// URL holding files named `<hash>`
        /// [default: --url with its trailing /log replaced by /v1/policies].
        #[arg(long)]
        policies: Option<String>,
        /// Also prove every logged policy activation again, here, with cvc5 (`CVC5` names
        /// it, or `cvc5` on PATH): the policy set against the invariant set its proofs name,
        /// both fetched by hash and checked against it.
        #[arg(long)]
        prove: bool,
        /// Where the invariant sets are, for --prove: as --policies, for the gateway's
        /// /v1/invariants [default: --url with its trailing /log replaced by /v1/invariants].
        #[arg(long)]
        invariants: Option<String>,
    },
}

/// Runs an audit subcommand, printing its report on standard output.
pub fn run(command: AuditCommand) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    run_to(command, &mut out)
}

/// Runs an audit subcommand, writing its report to `out` (progress and warnings
/// go to standard error).
pub fn run_to(command: AuditCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        AuditCommand::Key { data } => key(&data, out),
        AuditCommand::Verify { url, key, state } => verify(&url, &key, state.as_deref(), out)
            .map_err(|e| anyhow!("audit verify: FAILED: {e:#}")),
        AuditCommand::Prove {
            url,
            index,
            out: file,
            key,
        } => {
            let file = file.unwrap_or_else(|| PathBuf::from(format!("proof-{index}.tlog-proof")));
            prove(&url, index, &file, key.as_deref(), out)
                .map_err(|e| anyhow!("audit prove: FAILED: {e:#}"))
        }
        AuditCommand::CheckProof { file, key, entry } => {
            let entry = entry.unwrap_or_else(|| with_suffix(&file, ".entry"));
            check_proof(&file, &key, &entry, out)
                .map_err(|e| anyhow!("audit check-proof: FAILED: {e:#}"))
        }
        AuditCommand::Replay {
            url,
            key,
            policies,
            prove,
            invariants,
        } => {
            let reprove = prove.then_some(invariants);
            replay::replay(&url, &key, policies.as_deref(), reprove, out)
                .map_err(|e| anyhow!("audit replay: FAILED: {e:#}"))
        }
    }
}

// ---------------------------------------------------------------------------
// audit key

fn key(data: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let path = data.join(SIGNER_KEY_FILE);
    let skey = match fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no log signer key at {}: run `sovereign init --data {}` first",
            path.display(),
            data.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let signer = Signer::new(skey.trim()).map_err(|e| {
        anyhow!(
            "{} does not hold a signed-note signer key (PRIVATE+KEY+name+id+base64): {e}",
            path.display()
        )
    })?;
    writeln!(out, "{}", signer.verifier())?;
    Ok(())
}

/// An error of the `tlog` crate as one message. Its `Display` already includes
/// what its `source` says, so it is not kept as a cause (which `{:#}` would
/// print a second time).
pub(crate) fn plain(e: impl fmt::Display) -> anyhow::Error {
    anyhow!("{e}")
}

/// Parses `--key`: a verifier key string, or `@FILE` holding one.
pub(crate) fn load_verifier(arg: &str) -> anyhow::Result<Verifier> {
    load_verifier_of("--key", arg)
}

/// Parses the verifier key given with `flag`: a key string, or `@FILE` holding one.
pub(crate) fn load_verifier_of(flag: &str, arg: &str) -> anyhow::Result<Verifier> {
    let (text, source) = match arg.strip_prefix('@') {
        Some(file) => (
            fs::read_to_string(file).with_context(|| format!("reading the key file {file}"))?,
            format!("the key in {file}"),
        ),
        // A key file named without its `@` is an easy slip: say so rather than only
        // that the name is not a key.
        None if Path::new(arg).is_file() => {
            bail!("{flag} {arg}: to read the key from that file, write {flag} @{arg}")
        }
        None => (arg.to_string(), flag.to_string()),
    };
    let text = text.trim();
    if text.starts_with("PRIVATE+KEY+") {
        bail!(
            "{source} is a private signer key; give the verifier key (`sovereign audit key` prints it, the gateway serves it at /log/key)"
        );
    }
    Verifier::new(text)
        .map_err(|e| anyhow!("{source} is not a signed-note verifier key (name+keyid+base64): {e}"))
}

// ---------------------------------------------------------------------------
// Fetching the log

/// Opens the log named by `url`: http(s) prefix, file:// URL or directory.
pub(crate) fn open_log(url: &str) -> anyhow::Result<Box<dyn TileFetcher>> {
    match local_dir(url)? {
        None => Ok(Box::new(HttpFetcher::new(url))),
        Some(dir) if dir.is_dir() => Ok(Box::new(DirFetcher::new(dir))),
        Some(dir) => bail!(
            "{} is not a directory holding a log (checkpoint and tile/)",
            dir.display()
        ),
    }
}

/// The directory a file:// URL or a plain path names; `None` for an http(s) URL.
fn local_dir(url: &str) -> anyhow::Result<Option<PathBuf>> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Ok(None);
    }
    let dir = if lower.starts_with("file://") {
        let rest = &url["file://".len()..];
        let rest = rest.strip_prefix("localhost").unwrap_or(rest);
        if !rest.starts_with('/') {
            bail!("{url:?}: a file:// URL must name an absolute path (file:///path/to/log)");
        }
        PathBuf::from(percent_decode(rest).with_context(|| format!("{url:?}"))?)
    } else if url.contains("://") {
        bail!("{url:?}: unsupported URL scheme (use http://, https://, file:// or a directory)");
    } else {
        PathBuf::from(url)
    };
    Ok(Some(dir))
}

/// Decodes `%XX` escapes of a file:// URL path.
fn percent_decode(s: &str) -> anyhow::Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| anyhow!("bad %-escape in the path"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| anyhow!("the path is not UTF-8"))
}

/// Fetches a log's files over HTTP(S) with one keep-alive client.
struct HttpFetcher {
    agent: ureq::Agent,
    base: String,
}

impl HttpFetcher {
    fn new(base: &str) -> HttpFetcher {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(HTTP_TIMEOUT)
            .timeout(HTTP_TIMEOUT)
            .user_agent(concat!("sovereign-audit/", env!("CARGO_PKG_VERSION")))
            .build();
        HttpFetcher {
            agent,
            base: base.trim_end_matches('/').to_string(),
        }
    }
}

impl TileFetcher for HttpFetcher {
    fn fetch(&self, path: &str) -> Result<Option<Vec<u8>>, FetchError> {
        let url = format!("{}/{path}", self.base);
        let response = match self.agent.get(&url).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(404, _)) => return Ok(None),
            Err(ureq::Error::Status(code, r)) => {
                return Err(FetchError::new(format!(
                    "GET {url}: HTTP {code} {}",
                    r.status_text()
                )));
            }
            // The transport error names the URL itself.
            Err(ureq::Error::Transport(t)) => return Err(FetchError::new(t.to_string())),
        };
        let hint = response
            .header("Content-Length")
            .and_then(|l| l.parse::<u64>().ok())
            .unwrap_or(0)
            .min(MAX_FETCH);
        let mut body = Vec::with_capacity(hint as usize);
        response
            .into_reader()
            .take(MAX_FETCH + 1)
            .read_to_end(&mut body)
            .map_err(|e| FetchError::new(format!("GET {url}: reading the body: {e}")))?;
        if body.len() as u64 > MAX_FETCH {
            return Err(FetchError::new(format!(
                "GET {url}: response larger than {MAX_FETCH} bytes"
            )));
        }
        Ok(Some(body))
    }
}

/// Passes fetches through, keeping the bytes of the `checkpoint` it served, so the
/// signed note that was verified is the one saved as state.
struct Recording<'a> {
    inner: &'a dyn TileFetcher,
    checkpoint: RefCell<Option<Vec<u8>>>,
}

impl TileFetcher for Recording<'_> {
    fn fetch(&self, path: &str) -> Result<Option<Vec<u8>>, FetchError> {
        let data = self.inner.fetch(path)?;
        if path == "checkpoint" {
            *self.checkpoint.borrow_mut() = data.clone();
        }
        Ok(data)
    }
}

// ---------------------------------------------------------------------------
// audit verify

fn verify(url: &str, key: &str, state: Option<&Path>, out: &mut dyn Write) -> anyhow::Result<()> {
    let verifier = load_verifier(key)?;
    let log = open_log(url)?;
    let previous = match state {
        Some(path) => read_state(path, &verifier)?,
        None => None,
    };
    let fetcher = Recording {
        inner: &*log,
        checkpoint: RefCell::new(None),
    };

    let mut progress = Progress::new("audit verify");
    let mut checker = EntryChecker::start();
    let result = verify_log(
        &fetcher,
        &verifier,
        previous.as_ref(),
        &mut |done, total| progress.update(done, total),
        &mut |index, entry| checker.add(index, entry),
    );
    progress.finish();
    // A bad entry is reported as the sequential check would have: verification stops at the
    // first one, whatever the tree checks found after it was handed over.
    let (stats, checkpoint) = match (checker.finish(), result) {
        (Err(bad_entry), _) => return Err(plain(bad_entry)),
        (Ok(_), Err(e)) => return Err(plain(e)),
        (Ok(stats), Ok(checkpoint)) => (stats, checkpoint),
    };

    if let Some(path) = state {
        let note = fetcher
            .checkpoint
            .into_inner()
            .ok_or_else(|| anyhow!("internal error: the verified checkpoint was not recorded"))?;
        // The note saved must be the one just verified.
        if open_checkpoint(&note, &verifier).ok().as_ref() != Some(&checkpoint) {
            bail!("the log served a different checkpoint during the run; run again");
        }
        write_atomically(path, &note)
            .with_context(|| format!("saving the checkpoint to {}", path.display()))?;
    }

    writeln!(out, "audit verify: OK")?;
    writeln!(out, "origin:     {}", checkpoint.origin)?;
    writeln!(out, "size:       {} entries", checkpoint.size)?;
    writeln!(out, "root hash:  {}", hash_to_base64(&checkpoint.hash))?;
    match (&previous, state) {
        (Some(prev), Some(path)) => writeln!(
            out,
            "history:    consistent with the checkpoint of {} entries kept in {}",
            prev.size,
            path.display()
        )?,
        (None, Some(path)) => writeln!(
            out,
            "history:    no checkpoint kept in {} yet: this one is trusted on first use",
            path.display()
        )?,
        _ => writeln!(
            out,
            "history:    not checked (no --state: the log could have been rewritten since your last run)"
        )?,
    }
    write!(out, "{stats}")?;
    if let Some(path) = state {
        writeln!(out, "state:      checkpoint saved to {}", path.display())?;
    }
    Ok(())
}

/// Reads the checkpoint kept from the previous run, if the file exists.
fn read_state(path: &Path, verifier: &Verifier) -> anyhow::Result<Option<Checkpoint>> {
    let note = match fs::read(path) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    match open_checkpoint(&note, verifier) {
        Ok(cp) => Ok(Some(cp)),
        Err(
            e @ (CheckpointError::Note(
                NoteError::Unverified(_) | NoteError::InvalidSignature { .. },
            )
            | CheckpointError::OriginMismatch { .. }),
        ) => bail!(
            "state file {} is not signed by this key ({e})",
            path.display()
        ),
        Err(e) => bail!(
            "state file {} does not hold a signed checkpoint: {e}",
            path.display()
        ),
    }
}

/// Writes `data` to `path` through a temporary file in the same directory and a
/// rename, so a crash leaves either the old or the new content.
pub(crate) fn write_atomically(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} is not a file name", path.display()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // Make the rename itself durable (best effort: not every platform can).
        if let Ok(d) = fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    Ok(result?)
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Progress of `audit verify` on standard error: a bar on a terminal, otherwise a
/// line every few seconds.
pub(crate) struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_line: Instant,
    /// The command, naming the progress lines.
    label: &'static str,
}

impl Progress {
    pub(crate) fn new(label: &'static str) -> Progress {
        let bar = std::io::stderr()
            .is_terminal()
            .then(|| indicatif::ProgressBar::new(0).with_style(progress_style()));
        Progress {
            bar,
            last_line: Instant::now(),
            label,
        }
    }

    pub(crate) fn update(&mut self, done: u64, total: u64) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(total);
                bar.set_position(done);
            }
            None => {
                if self.last_line.elapsed() >= PROGRESS_EVERY && done < total {
                    eprintln!("{}: {done} of {total} entries checked", self.label);
                    self.last_line = Instant::now();
                }
            }
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The look of the progress bar.
pub fn progress_style() -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(
        "verifying [{bar:40}] {human_pos}/{human_len} entries ({per_sec}, eta {eta})",
    )
    .expect("a valid progress template")
    .progress_chars("=> ")
}

/// Entry counts of a verified log.
#[derive(Default)]
struct Stats {
    kinds: BTreeMap<&'static str, u64>,
    outcomes: BTreeMap<&'static str, u64>,
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
            match worker.join().expect("an entry checker thread panicked") {
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
            write!(f, "  {kind:<8} {n:>10}")?;
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

// ---------------------------------------------------------------------------
// audit prove / check-proof

fn prove(
    url: &str,
    index: u64,
    file: &Path,
    key: Option<&str>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let verifier = key.map(load_verifier).transpose()?;
    let log = open_log(url)?;
    let note = log
        .fetch("checkpoint")
        .context("fetching checkpoint")?
        .ok_or_else(|| anyhow!("the log serves no checkpoint"))?;
    let checkpoint = match &verifier {
        Some(v) => open_checkpoint(&note, v).map_err(plain)?,
        None => unverified_checkpoint(&note)?,
    };
    if index >= checkpoint.size {
        bail!(
            "entry {index} is not in the log: its checkpoint has {} entries",
            checkpoint.size
        );
    }
    // Every tile read here is authenticated against the checkpoint's root.
    let reader = tile_hash_reader(checkpoint.size, checkpoint.hash, FetcherTileReader(&*log));
    let hashes = prove_record(checkpoint.size, index, &reader)
        .map_err(|e| anyhow!("computing the inclusion proof of entry {index}: {e}"))?;
    let entry = fetch_entry(&*log, checkpoint.size, index)?;
    check_record(
        &hashes,
        checkpoint.size,
        &checkpoint.hash,
        index,
        &leaf_hash(&entry),
    )
    .map_err(|e| {
        anyhow!("entry {index} as served in its entry bundle is not the one in the tree: {e}")
    })?;
    let proof = TlogProof {
        extra: None,
        index,
        hashes,
        checkpoint: note,
    };
    let entry_file = with_suffix(file, ".entry");
    write_atomically(file, &proof.encode())
        .with_context(|| format!("writing {}", file.display()))?;
    write_atomically(&entry_file, &entry)
        .with_context(|| format!("writing {}", entry_file.display()))?;
    writeln!(
        out,
        "wrote {}: proof that entry {index} is in {} at tree size {} (root {})",
        file.display(),
        checkpoint.origin,
        checkpoint.size,
        hash_to_base64(&checkpoint.hash)
    )?;
    writeln!(
        out,
        "wrote {}: the entry ({} bytes)",
        entry_file.display(),
        entry.len()
    )?;
    if verifier.is_none() {
        writeln!(
            out,
            "note: the checkpoint's signature was not checked (no --key); `audit check-proof` checks it"
        )?;
    }
    Ok(())
}

/// The checkpoint of a signed note, without checking any signature.
fn unverified_checkpoint(note: &[u8]) -> anyhow::Result<Checkpoint> {
    let text = match tlog::note::open(note, std::iter::empty::<&Verifier>()) {
        Err(NoteError::Unverified(n)) => n.text,
        Ok(n) => n.text,
        Err(e) => bail!("checkpoint: {e}"),
    };
    Checkpoint::parse(&text).map_err(plain)
}

/// Fetches entry `index` of a tree of `size` entries from its entry bundle (or
/// from the full bundle of the same number, if the partial one is gone).
fn fetch_entry(log: &dyn TileFetcher, size: u64, index: u64) -> anyhow::Result<Vec<u8>> {
    let full = u64::from(FULL_TILE_WIDTH);
    let n = index >> TILE_HEIGHT;
    let width = (size - n * full).min(full) as u16;
    let tile = Tile::new(0, n, width);
    let mut tries = vec![(tile.entries_path(), usize::from(width))];
    if !tile.is_full() {
        tries.push((tile.full().entries_path(), usize::from(FULL_TILE_WIDTH)));
    }
    for (path, width) in &tries {
        let Some(data) = log
            .fetch(path)
            .with_context(|| format!("fetching {path}"))?
        else {
            continue;
        };
        let entries = decode_bundle(&data, *width).with_context(|| path.clone())?;
        return Ok(entries[(index - n * full) as usize].to_vec());
    }
    match tries.as_slice() {
        [(path, _)] => bail!("{path} is not served by the log"),
        [(path, _), (full, _), ..] => bail!("{path} (nor {full}) is not served by the log"),
        [] => unreachable!("at least one bundle path"),
    }
}

fn check_proof(file: &Path, key: &str, entry: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let verifier = load_verifier(key)?;
    let data = fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let proof = TlogProof::parse(&data).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    let entry_data = fs::read(entry).with_context(|| format!("reading {}", entry.display()))?;
    let checkpoint = tlog::proof::verify(&proof, &verifier, &entry_data).map_err(|e| match e {
        ProofError::Checkpoint(e) => anyhow!(
            "the checkpoint in {} does not open with this key: {e}",
            file.display()
        ),
        e => anyhow!(
            "{} does not prove that {} is entry {} of the log: {e}",
            file.display(),
            entry.display(),
            proof.index
        ),
    })?;
    writeln!(out, "audit check-proof: OK")?;
    writeln!(out, "index:      {}", proof.index)?;
    writeln!(out, "checkpoint: {} entries", checkpoint.size)?;
    writeln!(out, "origin:     {}", checkpoint.origin)?;
    writeln!(out, "root hash:  {}", hash_to_base64(&checkpoint.hash))?;
    match check_entry(&entry_data) {
        Ok(EntryInfo {
            version,
            kind,
            outcome: Some(o),
        }) => writeln!(out, "entry:      v{version} {kind} entry, outcome {o}")?,
        Ok(EntryInfo {
            version,
            kind,
            outcome: None,
        }) => writeln!(out, "entry:      v{version} {kind} entry")?,
        Err(e) => writeln!(
            out,
            "entry:      proven, but not a valid v1 or v2 entry: {e}"
        )?,
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Entry formats v1 and v2
//
// Every entry is checked in one pass of the JSON parser, without building a
// tree: the monitor reads every entry of the log, so the check must cost about
// what parsing does. Each object with known members (the entry, `principal`,
// each decision) records what it saw of each known member; the checks then run
// over those records in a fixed order, so the first problem reported does not
// depend on the order of members in the entry.

/// What a valid entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    /// The format version, `v`: 1 or 2.
    pub version: u8,
    /// `access` or `config`; with v2 also `custody` or `alert`.
    pub kind: &'static str,
    /// For `access`: `allow`, `deny` or `partial`.
    pub outcome: Option<&'static str>,
}

const ACTIONS: &[&str] = &[
    "register", "list", "read", "write", "delete", "export", "egress", "scan", "migrate",
];
const OUTCOMES: &[&str] = &["allow", "deny", "partial"];
const GRANT_KINDS: &[&str] = &["approved", "break-glass"];
const SEVERITIES: &[&str] = &["high", "medium"];
/// The events of `custody` entries (format v2).
const CUSTODY_EVENTS: &[&str] = &[
    "access-request-created",
    "access-request-approved",
    "access-request-denied",
    "grant-revoked",
    "break-glass-started",
    "break-glass-reviewed",
    "policy-proposed",
    "policy-activated",
    "invariants-proposed",
    "invariants-activated",
    "algorithm-submitted",
    "algorithm-activated",
    "algorithm-fetched",
    "jurisdiction-suspended",
    "jurisdiction-lifted",
];

/// Checks one log entry against the entry format, v1 or v2: a single JSON object
/// (no surrounding whitespace, no member twice in any object) with `v` = 1 or 2, a
/// known `kind`, an RFC 3339 UTC `time` with milliseconds, and every member its kind
/// (and version) requires, of the right type and form. Unknown extra members are
/// allowed. v2 adds members to `access` entries (what replay needs) and the kinds
/// `custody` and `alert`.
pub fn check_entry(entry: &[u8]) -> Result<EntryInfo, String> {
    if entry.first() != Some(&b'{') || entry.last() != Some(&b'}') {
        return Err("not a single JSON object (it must start with '{' and end with '}')".into());
    }
    let TopLevel(seen) =
        serde_json::from_slice(entry).map_err(|e| format!("not valid JSON: {e}"))?;
    let e = Members {
        table: TOP,
        seen: &seen,
        nested: false,
    };
    check_top(&e)
}

fn check_top(e: &Members<'_, '_>) -> Result<EntryInfo, String> {
    let version = match e.get("v")? {
        Seen::Number(Number::U(1)) => 1,
        Seen::Number(Number::U(2)) => 2,
        other => return Err(e.wrong("v", "the number 1 or 2", other).to_string()),
    };
    let kind = e.string("kind")?;
    let time = e.string("time")?;
    if !is_rfc3339_utc_millis(time) {
        return Err(format!(
            "member \"time\" must be an RFC 3339 UTC time with milliseconds (like 2026-11-22T00:16:08.439Z), not {}",
            show_str(time)
        ));
    }
    let (kind, outcome) = match (kind, version) {
        ("access", _) => ("access", Some(check_access(e, version)?)),
        ("config", _) => {
            check_config(e)?;
            ("config", None)
        }
        ("custody", 2) => {
            check_custody(e)?;
            ("custody", None)
        }
        ("alert", 2) => {
            check_alert(e)?;
            ("alert", None)
        }
        (data @ ("egress" | "erasure" | "export" | "migration"), 2) => {
            check_data_event(e)?;
            (data_event_kind(data), None)
        }
        ("custody" | "alert" | "egress" | "erasure" | "export" | "migration", _) => {
            return Err(format!(
                "kind {} exists from format v2 on; this entry says \"v\": {version}",
                show_str(kind)
            ));
        }
        (other, _) => return Err(format!("unknown kind {}", show_str(other))),
    };
    Ok(EntryInfo {
        version,
        kind,
        outcome,
    })
}

fn check_access(e: &Members<'_, '_>, version: u8) -> Result<&'static str, Bad> {
    e.object("principal")?;
    e.one_of("action", ACTIONS)?;
    // null on bulk actions (egress, scan), which concern no one subject.
    if !matches!(e.get("subject")?, Seen::Null) {
        e.hex("subject", 32)?;
    }
    e.string("subject_jurisdiction")?;
    e.string("site")?;
    e.string_or_null("collection")?;
    e.strings("fields")?;
    let outcome = e.one_of("outcome", OUTCOMES)?;
    e.array("decisions")?;
    e.strings("policies")?;
    e.hex("policy_set", 64)?;
    e.string("purpose")?;
    e.string("reason_code")?;
    if version >= 2 {
        e.string("site_jurisdiction")?;
        e.bool("approval_required")?;
        e.bool("suspended")?;
        e.integer("context_time")?;
        e.object_or_null("grant")?;
        e.optional_bool("own_data")?;
    }
    Ok(outcome)
}

fn check_grant(g: &Members<'_, '_>) -> Result<(), Bad> {
    g.string("id")?;
    g.one_of("kind", GRANT_KINDS)?;
    Ok(())
}

/// `custody` entries (v2): an event, who caused it, and what it concerned.
fn check_custody(e: &Members<'_, '_>) -> Result<(), Bad> {
    let event = e.one_of("event", CUSTODY_EVENTS)?;
    e.object_or_null("actor")?;
    if event == "policy-activated" {
        // Which policy set now decides, and on whose signatures.
        e.object("details")
    } else {
        e.any_object("details")
    }
}

/// Checked while parsing, wherever `details` appears; reported only for the
/// `policy-activated` event.
fn check_activation_details(d: &Members<'_, '_>) -> Result<(), Bad> {
    d.hex("policy_set", 64)?;
    // null when there was none: the first activation, of the set `sovereign init` wrote.
    if !matches!(d.get("previous")?, Seen::Null) {
        d.hex("previous", 64)?;
    }
    d.strings("signers")?;
    Ok(())
}

/// `alert` entries (v2).
/// `egress`, `erasure`, `export` and `migration`: who (or null) and an object of counts,
/// digests and pseudonyms.
fn check_data_event(e: &Members<'_, '_>) -> Result<(), Bad> {
    e.object_or_null("actor")?;
    e.any_object("details")
}

fn data_event_kind(kind: &str) -> &'static str {
    match kind {
        "egress" => "egress",
        "erasure" => "erasure",
        "export" => "export",
        _ => "migration",
    }
}

fn check_alert(e: &Members<'_, '_>) -> Result<(), Bad> {
    e.string("alert")?;
    e.one_of("severity", SEVERITIES)?;
    e.object_or_null("actor")?;
    e.any_object("details")
}

/// Checked while parsing, wherever `principal` appears; reported only if the
/// entry's kind requires it.
fn check_principal(p: &Members<'_, '_>) -> Result<(), Bad> {
    p.string("id")?;
    p.string("entity")?;
    p.string("entity_country")?;
    let location = p.string("location")?;
    if !(location.len() == 2 && location.bytes().all(|b| b.is_ascii_uppercase())) {
        return Err(Bad {
            path: p.path("location"),
            what: format!("must be 2 upper-case letters, not {}", show_str(location)),
        });
    }
    p.strings("clearance")?;
    p.strings("roles")?;
    p.string("network_zone")?;
    Ok(())
}

fn check_decision(d: &Members<'_, '_>) -> Result<(), Bad> {
    d.string_or_null("field_class")?;
    // Only on entries about every jurisdiction.
    d.optional_string("subject_jurisdiction")?;
    d.optional_bool("suspended")?;
    d.bool("allowed")?;
    d.strings("policies")?;
    Ok(())
}

fn check_config(e: &Members<'_, '_>) -> Result<(), Bad> {
    e.string("event")?;
    e.hex("policy_set", 64)?;
    e.strings("policies")?;
    e.hex("config_sha256", 64)?;
    e.string("version")?;
    Ok(())
}

/// A member that is not what the format wants: where, and what is wrong.
#[derive(Debug)]
struct Bad {
    /// The member's path below the object that reports it: `outcome` at the top,
    /// `.location` or `[2].allowed` below.
    path: String,
    /// What is wrong, e.g. `is missing`, `must be a string, not null`.
    what: String,
}

impl Bad {
    /// The same problem, seen from the enclosing object or array.
    fn under(self, parent: &str) -> Bad {
        Bad {
            path: format!("{parent}{}", self.path),
            what: self.what,
        }
    }
}

impl fmt::Display for Bad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "member \"{}\" {}", self.path, self.what)
    }
}

impl From<Bad> for String {
    fn from(b: Bad) -> String {
        b.to_string()
    }
}

/// How a member's value is checked while parsing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Kept as is (scalars), or skipped (arrays and objects).
    Any,
    /// An array whose elements must all be strings.
    Strings,
    /// The `decisions` array.
    Decisions,
    /// The `principal` object.
    Principal,
    /// One element of `decisions`.
    Decision,
    /// The `grant` object of v2 access entries.
    Grant,
    /// The `details` object of v2 custody and alert entries.
    Details,
}

/// The checks of an object with known members, run once it is read.
type ObjectCheck = fn(&Members<'_, '_>) -> Result<(), Bad>;

/// Known members of each object, with how their values are checked. Members of
/// all kinds share one table: a name means the same thing in every kind.
type Table = &'static [(&'static str, Shape)];

const TOP: Table = &[
    ("v", Shape::Any),
    ("kind", Shape::Any),
    ("time", Shape::Any),
    ("principal", Shape::Principal),
    ("action", Shape::Any),
    ("subject", Shape::Any),
    ("subject_jurisdiction", Shape::Any),
    ("site", Shape::Any),
    ("collection", Shape::Any),
    ("fields", Shape::Strings),
    ("outcome", Shape::Any),
    ("decisions", Shape::Decisions),
    ("policies", Shape::Strings),
    ("policy_set", Shape::Any),
    ("purpose", Shape::Any),
    ("reason_code", Shape::Any),
    ("event", Shape::Any),
    ("config_sha256", Shape::Any),
    ("version", Shape::Any),
    // Format v2.
    ("site_jurisdiction", Shape::Any),
    ("approval_required", Shape::Any),
    ("suspended", Shape::Any),
    ("context_time", Shape::Any),
    ("grant", Shape::Grant),
    ("actor", Shape::Principal),
    ("details", Shape::Details),
    ("alert", Shape::Any),
    ("severity", Shape::Any),
    ("own_data", Shape::Any),
];
const PRINCIPAL: Table = &[
    ("id", Shape::Any),
    ("entity", Shape::Any),
    ("entity_country", Shape::Any),
    ("location", Shape::Any),
    ("clearance", Shape::Strings),
    ("roles", Shape::Strings),
    ("network_zone", Shape::Any),
];
const DECISION: Table = &[
    ("field_class", Shape::Any),
    ("subject_jurisdiction", Shape::Any),
    ("suspended", Shape::Any),
    ("allowed", Shape::Any),
    ("policies", Shape::Strings),
];
const GRANT: Table = &[("id", Shape::Any), ("kind", Shape::Any)];
const ACTIVATION_DETAILS: Table = &[
    ("policy_set", Shape::Any),
    ("previous", Shape::Any),
    ("signers", Shape::Strings),
];
/// The most known members of any table.
const MAX_KNOWN: usize = 29;

/// What the parser saw of a value, as far as the checks need it.
enum Seen<'de> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'de, str>),
    /// An array, and the first problem of its elements (for checked shapes).
    Array(Option<Box<Bad>>),
    /// An object, and the first problem of its members (for checked shapes).
    Object(Option<Box<Bad>>),
}

/// A JSON number, as the parser read it.
enum Number {
    U(u64),
    I(i64),
    F(f64),
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Number::U(n) => write!(f, "{n}"),
            Number::I(n) => write!(f, "{n}"),
            Number::F(n) => write!(f, "{n:?}"),
        }
    }
}

/// A value for a message: short strings quoted, other types by name.
fn show(v: &Seen<'_>) -> String {
    match v {
        Seen::Null => "null".into(),
        Seen::Bool(b) => b.to_string(),
        Seen::Number(n) => format!("the number {n}"),
        Seen::String(s) => show_str(s),
        Seen::Array(_) => "an array".into(),
        Seen::Object(_) => "an object".into(),
    }
}

/// The known members of one object, as seen.
struct Members<'s, 'de> {
    table: Table,
    seen: &'s [Option<Seen<'de>>],
    /// Whether the object is below the entry (paths then start with a dot).
    nested: bool,
}

impl<'s, 'de> Members<'s, 'de> {
    fn path(&self, name: &str) -> String {
        if self.nested {
            format!(".{name}")
        } else {
            name.to_string()
        }
    }

    fn get(&self, name: &str) -> Result<&'s Seen<'de>, Bad> {
        let id = self
            .table
            .iter()
            .position(|(n, _)| *n == name)
            .expect("checks ask for known members only");
        self.seen[id].as_ref().ok_or_else(|| Bad {
            path: self.path(name),
            what: "is missing".into(),
        })
    }

    /// A member that may be absent (added to format v2 later); if present, of this type.
    fn optional(&self, name: &str) -> Option<&'s Seen<'de>> {
        let id = self
            .table
            .iter()
            .position(|(n, _)| *n == name)
            .expect("checks ask for known members only");
        self.seen[id].as_ref()
    }

    fn optional_bool(&self, name: &str) -> Result<(), Bad> {
        match self.optional(name) {
            None | Some(Seen::Bool(_)) => Ok(()),
            Some(other) => Err(self.wrong(name, "true or false", other)),
        }
    }

    fn optional_string(&self, name: &str) -> Result<(), Bad> {
        match self.optional(name) {
            None | Some(Seen::String(_)) => Ok(()),
            Some(other) => Err(self.wrong(name, "a string", other)),
        }
    }

    fn wrong(&self, name: &str, want: &str, got: &Seen<'_>) -> Bad {
        Bad {
            path: self.path(name),
            what: format!("must be {want}, not {}", show(got)),
        }
    }

    fn string(&self, name: &str) -> Result<&'s str, Bad> {
        match self.get(name)? {
            Seen::String(s) => Ok(s),
            other => Err(self.wrong(name, "a string", other)),
        }
    }

    fn string_or_null(&self, name: &str) -> Result<Option<&'s str>, Bad> {
        match self.get(name)? {
            Seen::String(s) => Ok(Some(s)),
            Seen::Null => Ok(None),
            other => Err(self.wrong(name, "a string or null", other)),
        }
    }

    fn bool(&self, name: &str) -> Result<bool, Bad> {
        match self.get(name)? {
            Seen::Bool(b) => Ok(*b),
            other => Err(self.wrong(name, "true or false", other)),
        }
    }

    /// A checked object (its shape says how).
    fn object(&self, name: &str) -> Result<(), Bad> {
        match self.get(name)? {
            Seen::Object(None) => Ok(()),
            Seen::Object(Some(bad)) => Err(clone_bad(bad).under(&self.path(name))),
            other => Err(self.wrong(name, "an object", other)),
        }
    }

    /// A checked array (its shape says how).
    fn array(&self, name: &str) -> Result<(), Bad> {
        match self.get(name)? {
            Seen::Array(None) => Ok(()),
            Seen::Array(Some(bad)) => Err(clone_bad(bad).under(&self.path(name))),
            other => Err(self.wrong(name, "an array", other)),
        }
    }

    /// A checked object (its shape says how), or null.
    fn object_or_null(&self, name: &str) -> Result<(), Bad> {
        match self.get(name)? {
            Seen::Null => Ok(()),
            _ => self.object(name),
        }
    }

    /// An object, whatever its members.
    fn any_object(&self, name: &str) -> Result<(), Bad> {
        match self.get(name)? {
            Seen::Object(_) => Ok(()),
            other => Err(self.wrong(name, "an object", other)),
        }
    }

    /// A whole number (not a float).
    fn integer(&self, name: &str) -> Result<(), Bad> {
        match self.get(name)? {
            Seen::Number(Number::U(_) | Number::I(_)) => Ok(()),
            other => Err(self.wrong(name, "a whole number", other)),
        }
    }

    /// An array of strings (a member of shape [`Shape::Strings`]).
    fn strings(&self, name: &str) -> Result<(), Bad> {
        self.array(name)
    }

    fn one_of(&self, name: &str, allowed: &[&'static str]) -> Result<&'static str, Bad> {
        let s = self.string(name)?;
        allowed
            .iter()
            .copied()
            .find(|a| *a == s)
            .ok_or_else(|| Bad {
                path: self.path(name),
                what: format!("must be one of {}, not {}", allowed.join("|"), show_str(s)),
            })
    }

    fn hex(&self, name: &str, len: usize) -> Result<(), Bad> {
        let s = self.string(name)?;
        if s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(())
        } else {
            Err(Bad {
                path: self.path(name),
                what: format!("must be {len} lower-case hex digits, not {}", show_str(s)),
            })
        }
    }
}

fn clone_bad(b: &Bad) -> Bad {
    Bad {
        path: b.path.clone(),
        what: b.what.clone(),
    }
}

/// The entry's top-level object: what was seen of each member of [`TOP`].
struct TopLevel<'de>([Option<Seen<'de>>; MAX_KNOWN]);

impl<'de> Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TopLevel<'de>, D::Error> {
        struct TopVisitor;
        impl<'de> Visitor<'de> for TopVisitor {
            type Value = TopLevel<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TopLevel<'de>, A::Error> {
                read_members(map, TOP).map(TopLevel)
            }
        }
        d.deserialize_map(TopVisitor)
    }
}

/// Reads an object's members: those of `table` are kept (as their shape says),
/// others are skipped. Any member name twice is an error: a generic JSON reader
/// would silently keep one of them, and a monitor must not read an entry
/// differently from another reader.
fn read_members<'de, A: MapAccess<'de>>(
    mut map: A,
    table: Table,
) -> Result<[Option<Seen<'de>>; MAX_KNOWN], A::Error> {
    let mut seen: [Option<Seen<'de>>; MAX_KNOWN] = Default::default();
    let mut others: Vec<Cow<'de, str>> = Vec::new();
    let twice = |name: &str| de::Error::custom(format_args!("member {name:?} appears twice"));
    while let Some(MemberName(name)) = map.next_key()? {
        if let Some(id) = table.iter().position(|(n, _)| *n == name) {
            if seen[id].is_some() {
                return Err(twice(&name));
            }
            seen[id] = Some(map.next_value_seed(ValueSeed(table[id].1))?);
        } else {
            // Linear while small; huge objects are checked by sorting, below.
            if others.len() < 32 && others.contains(&name) {
                return Err(twice(&name));
            }
            map.next_value_seed(ValueSeed(Shape::Any))?;
            others.push(name);
        }
    }
    if others.len() > 32 {
        let mut names: Vec<&str> = others.iter().map(|n| n.as_ref()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(twice(w[0]));
        }
    }
    Ok(seen)
}

/// Parses one value, checking it as `Shape` says.
#[derive(Clone, Copy)]
struct ValueSeed(Shape);

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Seen<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Seen<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = Seen<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Seen<'de>, E> {
        Ok(Seen::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Seen<'de>, E> {
        Ok(Seen::Number(Number::I(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Seen<'de>, E> {
        Ok(Seen::Number(Number::U(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Seen<'de>, E> {
        Ok(Seen::Number(Number::F(v)))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Seen<'de>, E> {
        Ok(Seen::String(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Seen<'de>, E> {
        Ok(Seen::String(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Seen<'de>, E> {
        Ok(Seen::String(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<Seen<'de>, E> {
        Ok(Seen::Null)
    }

    fn visit_none<E>(self) -> Result<Seen<'de>, E> {
        Ok(Seen::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Seen<'de>, A::Error> {
        let element = match self.0 {
            Shape::Strings => Shape::Any,
            Shape::Decisions => Shape::Decision,
            _ => Shape::Any,
        };
        let mut bad = None;
        let mut i = 0usize;
        while let Some(v) = seq.next_element_seed(ValueSeed(element))? {
            if bad.is_none() {
                bad = match (self.0, v) {
                    (Shape::Strings, Seen::String(_)) => None,
                    (Shape::Strings, other) => Some(Box::new(Bad {
                        path: format!("[{i}]"),
                        what: format!("must be a string, not {}", show(&other)),
                    })),
                    (Shape::Decisions, Seen::Object(None)) => None,
                    (Shape::Decisions, Seen::Object(Some(b))) => {
                        Some(Box::new(b.under(&format!("[{i}]"))))
                    }
                    (Shape::Decisions, other) => Some(Box::new(Bad {
                        path: format!("[{i}]"),
                        what: format!("must be an object, not {}", show(&other)),
                    })),
                    _ => None,
                };
            }
            i += 1;
        }
        Ok(Seen::Array(bad))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Seen<'de>, A::Error> {
        let (table, check): (Table, ObjectCheck) = match self.0 {
            Shape::Principal => (PRINCIPAL, check_principal),
            Shape::Decision => (DECISION, check_decision),
            Shape::Grant => (GRANT, check_grant),
            Shape::Details => (ACTIVATION_DETAILS, check_activation_details),
            _ => (&[], |_| Ok(())),
        };
        let seen = read_members(map, table)?;
        let members = Members {
            table,
            seen: &seen,
            nested: true,
        };
        Ok(Seen::Object(check(&members).err().map(Box::new)))
    }
}

/// An object member's name, borrowed from the entry when it has no escapes.
struct MemberName<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for MemberName<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MemberName<'de>, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = MemberName<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<MemberName<'de>, E> {
                Ok(MemberName(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<MemberName<'de>, E> {
                Ok(MemberName(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<MemberName<'de>, E> {
                Ok(MemberName(Cow::Owned(v)))
            }
        }
        d.deserialize_str(NameVisitor)
    }
}

fn show_str(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut:?}...")
    }
}
fn is_rfc3339_utc_millis(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 24 {
        return false;
    }
    for (i, &c) in b.iter().enumerate() {
        let ok = match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            23 => c == b'Z',
            _ => c.is_ascii_digit(),
        };
        if !ok {
            return false;
        }
    }
    let num = |from: usize, to: usize| {
        b[from..to]
            .iter()
            .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'))
    };
    let (year, month, day) = (num(0, 4), num(5, 7), num(8, 10));
    let (hour, minute, second) = (num(11, 13), num(14, 16), num(17, 19));
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day) && hour <= 23 && minute <= 59 && second <= 60
}
