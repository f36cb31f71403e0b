//! `sovereign audit`: the monitor's tool, over the `monitor` library.
//!
//! A monitor trusts nothing but the log's verifier key and the checkpoint it kept
//! from its previous run. Everything else is fetched (over HTTP(S) from the
//! gateway or any static mirror, or from a local copy) and checked by the
//! `monitor` crate:
//!
//! * `audit key` prints the log's verifier key from a data folder;
//! * `audit verify` checks the signed checkpoint, consistency with the remembered
//!   checkpoint, every tile and every entry, and parses every entry as a v1 or v2
//!   log entry (see [`monitor::check_entry`]);
//! * `audit prove` writes an offline-verifiable C2SP tlog-proof of one entry;
//! * `audit check-proof` verifies such a proof;
//! * `audit replay` verifies the log as `verify` does, then decides every v2 access
//!   entry again with the policy set it names (see [`monitor::replay`]).
//!
//! This module parses the arguments, draws the progress and prints the reports.

use std::fs;
use std::io::{IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use monitor::replay::Reprove;
use monitor::state::{with_suffix, write_atomically};
use monitor::{CheckpointLines, EntryInfo, check_entry, load_verifier, open_log};
use tlog::hash_to_base64;

use crate::client::{DEFAULT_URL, URL_ENV};
use tlog::note::Signer;
use tlog::proof::{ProofError, TlogProof};

/// Default data folder of `audit key` (the same as `sovereign serve`'s).
const DEFAULT_DATA: &str = "sovereign-data";
/// Where `sovereign init` keeps the log's signer key, below the data folder.
const SIGNER_KEY_FILE: &str = "keys/log-signer.key";
/// Without a terminal, how often `audit verify` reports progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// `--witness VKEY... --quorum K`: trust a checkpoint only if at least K of these witnesses
/// cosigned it (C2SP tlog-cosignature), besides the log's own signature.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct WitnessArgs {
    /// A witness's verifier key (C2SP vkey of key type 0x04, as `sovereign witness key`
    /// prints it), or @FILE; repeat for each witness.
    #[arg(long = "witness", value_name = "VKEY|@FILE")]
    pub witnesses: Vec<String>,
    /// How many of the --witness keys must have cosigned the checkpoint.
    #[arg(long, value_name = "K")]
    pub quorum: Option<usize>,
}

impl WitnessArgs {
    /// The policy these arguments state (no witnesses: the log's signature alone).
    pub fn policy(&self) -> anyhow::Result<tlog::cosignature::WitnessPolicy> {
        monitor::load_witness_policy(&self.witnesses, self.quorum)
    }
}

/// `--url`: where the log is, as every command that reads it takes it.
#[derive(clap::Args, Debug, Clone)]
pub struct LogUrl {
    /// The log: the gateway's base URL (its log is at /log), a log prefix serving
    /// `checkpoint` and `tile/...` (a gateway's /log, a static mirror), a local directory
    /// or a file:// URL.
    #[arg(long, env = URL_ENV, default_value = DEFAULT_URL)]
    pub url: String,
    /// First wait (at most DURATION, 60s if not given) until the gateway's checkpoint covers
    /// every entry its log holds now, so that everything it has answered is in the check.
    #[arg(long, value_name = "DURATION", num_args = 0..=1, require_equals = true,
        default_missing_value = "60s", value_parser = humantime::parse_duration)]
    pub wait: Option<Duration>,
}

impl LogUrl {
    /// [`LogUrl::resolve`], once the log's key (if any) and the witnesses' keys have been
    /// read: what can be wrong with the arguments is found before the log is contacted.
    pub fn resolve_for(
        &self,
        key: Option<&str>,
        witnesses: &WitnessArgs,
    ) -> anyhow::Result<String> {
        if let Some(key) = key {
            load_verifier(key)?;
        }
        witnesses.policy()?;
        self.resolve()
    }

    /// The log prefix (see [`monitor::fetch::resolve_log_url`]), once its checkpoint covers
    /// the log with `--wait`.
    pub fn resolve(&self) -> anyhow::Result<String> {
        let url = monitor::fetch::resolve_log_url(&self.url)?;
        if let Some(timeout) = self.wait
            && let Some(lag) = monitor::fetch::wait_for_checkpoint(&url, timeout)?
            && lag.pending() > 0
        {
            eprintln!(
                "waited for a checkpoint covering the {} entries the log held (the one served covered {})",
                lag.log_size, lag.checkpoint_size
            );
        }
        Ok(url)
    }
}

/// Says on standard error how many entries the gateway held beyond the checkpoint checked:
/// a check straight after an action otherwise shows counts that look stale.
pub(crate) fn say_not_yet_covered(pending: u64) {
    if pending == 0 {
        return;
    }
    eprintln!(
        "note: the gateway's log holds {pending} more entr{} than the checkpoint checked: {} not in this check yet (checkpoints follow within a second, later with witnesses); --wait waits for them",
        if pending == 1 { "y" } else { "ies" },
        if pending == 1 { "it is" } else { "they are" }
    );
}

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
        #[command(flatten)]
        log: LogUrl,
        /// The log's verifier key (name+keyid+base64), or @FILE to read it from FILE.
        #[arg(long)]
        key: String,
        /// File keeping the last accepted signed checkpoint; read if present,
        /// (over)written on success.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Print the result as one JSON object (`ok`, `checkpoint`, `history`, `kinds`, ...).
        #[arg(long)]
        json: bool,
        /// Keep following the live log: verify again every INTERVAL (10s if not given), each
        /// new checkpoint consistent with the last (kept in --state, or in a temporary file),
        /// one line per new checkpoint; stop at the first failure.
        #[arg(long, value_name = "INTERVAL", num_args = 0..=1, require_equals = true,
            default_missing_value = "10s", value_parser = humantime::parse_duration)]
        watch: Option<Duration>,
        #[command(flatten)]
        witnesses: WitnessArgs,
    },
    /// Write an offline-verifiable inclusion proof (C2SP tlog-proof) of one entry,
    /// and the entry itself next to it (FILE.entry).
    Prove {
        #[command(flatten)]
        log: LogUrl,
        /// The entry's index in the log.
        #[arg(long)]
        index: u64,
        /// Where to write the proof [default: proof-N.tlog-proof].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also check the checkpoint's signature with this verifier key (or @FILE).
        #[arg(long)]
        key: Option<String>,
        /// With --key, also require the witnesses' quorum of cosignatures.
        #[command(flatten)]
        witnesses: WitnessArgs,
    },
    /// Show one entry, decoded, after checking that it is in the log: its inclusion proof is
    /// checked against the log's checkpoint, whose signature (and witnesses' quorum, if
    /// asked) is checked with the key. Exits 0 only if all of it holds.
    Get {
        #[command(flatten)]
        log: LogUrl,
        /// The log's verifier key (name+keyid+base64), or @FILE.
        #[arg(long)]
        key: String,
        /// The entry's index in the log.
        #[arg(long)]
        index: u64,
        /// Print `{index, origin, tree_size, root_hash, proof, entry}` as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        witnesses: WitnessArgs,
    },
    /// Verify the whole log as `verify` does, and list the entries that match every filter
    /// given (none: every entry), in log order. Exits 0 only if the log verifies.
    Search {
        #[command(flatten)]
        log: LogUrl,
        /// The log's verifier key (name+keyid+base64), or @FILE.
        #[arg(long)]
        key: String,
        /// The principal's (or a custody or data event's actor's) id.
        #[arg(long)]
        principal: Option<String>,
        /// A subject's log pseudonym.
        #[arg(long)]
        subject: Option<String>,
        /// The entry kind: access, config, custody, alert, egress, erasure, export, migration,
        /// algorithm-run.
        #[arg(long)]
        kind: Option<String>,
        /// An access entry's action (read, write, run, compute, ...).
        #[arg(long)]
        action: Option<String>,
        /// allow, deny or partial (access entries); ok, failed, denied or stopped (runs).
        #[arg(long)]
        outcome: Option<String>,
        /// A policy id among an access entry's determining policies.
        #[arg(long)]
        policy: Option<String>,
        /// Entries at or after this time (RFC 3339, or a date: 2026-12-07), UTC.
        #[arg(long)]
        from: Option<String>,
        /// Entries before this time.
        #[arg(long)]
        to: Option<String>,
        /// Show at most this many (all are counted).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON object per line: `{"index", "entry"}`.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        witnesses: WitnessArgs,
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
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        witnesses: WitnessArgs,
    },
    /// Verify the whole log as `verify` does, then decide every v2 access entry again
    /// with the policy set it names and compare. Exits 0 only if every decision matches.
    Replay {
        #[command(flatten)]
        log: LogUrl,
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
        /// Print the result as one JSON object (also when decisions do not match).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        witnesses: WitnessArgs,
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
    let name = match &command {
        AuditCommand::Key { .. } => return dispatch(command, out),
        AuditCommand::Verify { .. } => "verify",
        AuditCommand::Prove { .. } => "prove",
        AuditCommand::Get { .. } => "get",
        AuditCommand::Search { .. } => "search",
        AuditCommand::CheckProof { .. } => "check-proof",
        AuditCommand::Replay { .. } => "replay",
    };
    dispatch(command, out).map_err(|e| e.context(format!("audit {name}: FAILED")))
}

fn dispatch(command: AuditCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        AuditCommand::Key { data } => key(&data, out),
        AuditCommand::Verify {
            log,
            key,
            state,
            json,
            watch: Some(interval),
            witnesses,
        } => watch(
            &log.resolve_for(Some(&key), &witnesses)?,
            &key,
            state,
            json,
            interval,
            &witnesses,
            out,
        ),
        AuditCommand::Verify {
            log,
            key,
            state,
            json,
            watch: None,
            witnesses,
        } => verify(
            &log.resolve_for(Some(&key), &witnesses)?,
            &key,
            state.as_deref(),
            json,
            &witnesses,
            out,
        ),
        AuditCommand::Prove {
            log,
            index,
            out: file,
            key,
            witnesses,
        } => {
            let file = file.unwrap_or_else(|| PathBuf::from(format!("proof-{index}.tlog-proof")));
            prove(
                &log.resolve_for(key.as_deref(), &witnesses)?,
                index,
                &file,
                key.as_deref(),
                &witnesses,
                out,
            )
        }
        AuditCommand::Get {
            log,
            key,
            index,
            json,
            witnesses,
        } => get(
            &log.resolve_for(Some(&key), &witnesses)?,
            &key,
            index,
            json,
            &witnesses,
            out,
        ),
        AuditCommand::Search {
            log,
            key,
            principal,
            subject,
            kind,
            action,
            outcome,
            policy,
            from,
            to,
            limit,
            json,
            witnesses,
        } => {
            let query = monitor::search::Query {
                principal,
                subject,
                kind,
                action,
                outcome,
                policy,
                from,
                to,
            };
            search(
                &log.resolve_for(Some(&key), &witnesses)?,
                &key,
                &query,
                limit,
                json,
                &witnesses,
                out,
            )
        }
        AuditCommand::CheckProof {
            file,
            key,
            entry,
            json,
            witnesses,
        } => {
            let entry = entry.unwrap_or_else(|| with_suffix(&file, ".entry"));
            check_proof(&file, &key, &entry, json, &witnesses, out)
        }
        AuditCommand::Replay {
            log,
            key,
            policies,
            prove,
            invariants,
            json,
            witnesses,
        } => {
            let reprove = if prove {
                Reprove::Yes {
                    invariants: invariants.as_deref(),
                }
            } else {
                Reprove::No
            };
            let url = log.resolve_for(Some(&key), &witnesses)?;
            replay(
                &url,
                &key,
                &witnesses,
                policies.as_deref(),
                reprove,
                json,
                out,
            )
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

// ---------------------------------------------------------------------------
// audit verify and replay

fn verify(
    url: &str,
    key: &str,
    state: Option<&Path>,
    json: bool,
    witnesses: &WitnessArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let verifier = load_verifier(key)?;
    let policy = witnesses.policy()?;
    let log = monitor::open_witnessed_log(url, &verifier, &policy)?;
    let verified = monitor::verify(&*log, &verifier, state, &mut Progress::new("audit verify"))?;
    say_not_yet_covered(verified.not_yet_covered);
    if json {
        let mut answer = verified.to_json();
        answer["witnessed"] = witnessed_json(&policy);
        writeln!(out, "{answer}")?;
        return Ok(());
    }
    write!(out, "audit verify: OK\n{verified}")?;
    if policy.quorum > 0 {
        writeln!(
            out,
            "witnessed:  cosigned by at least {} of the {} witnesses given",
            policy.quorum,
            policy.witnesses.len()
        )?;
    }
    Ok(())
}

/// `audit verify --watch`: verifies the log every `interval`, each checkpoint consistent with
/// the one before, printing a line (or a JSON object) per new checkpoint, until a check fails.
fn watch(
    url: &str,
    key: &str,
    state: Option<PathBuf>,
    json: bool,
    interval: Duration,
    witnesses: &WitnessArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let verifier = load_verifier(key)?;
    let policy = witnesses.policy()?;
    let log = monitor::open_witnessed_log(url, &verifier, &policy)?;
    // Without --state, the checkpoints are chained through a file of this run's own.
    let scratch = tempfile::tempdir()?;
    let state = state.unwrap_or_else(|| scratch.path().join("watch.state"));
    let mut last: Option<u64> = None;
    loop {
        let verified = match monitor::verify(&*log, &verifier, Some(&state), &mut monitor::Silent) {
            Ok(verified) => verified,
            // A log out of reach for a while is waited for; a failed check stops the watch.
            Err(e) if monitor::classify(&e) == Some(monitor::Failure::Unreachable) => {
                eprintln!(
                    "{}  cannot reach the log ({e:#}); trying again",
                    humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                );
                std::thread::sleep(interval);
                continue;
            }
            Err(e) => return Err(e),
        };
        let size = verified.checkpoint.size;
        if last != Some(size) {
            if json {
                writeln!(out, "{}", verified.to_json())?;
            } else {
                let kinds: Vec<String> = verified
                    .stats
                    .kinds
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect();
                writeln!(
                    out,
                    "{}  checkpoint of {size} entries{}: OK, {}; {}",
                    humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
                    last.map(|l| format!(" (+{})", size - l))
                        .unwrap_or_default(),
                    match (last, &verified.previous) {
                        (None, None) => "trusted on first use",
                        _ => "consistent with the last",
                    },
                    kinds.join(", ")
                )?;
            }
            out.flush()?;
            last = Some(size);
        }
        std::thread::sleep(interval);
    }
}

fn replay(
    url: &str,
    key: &str,
    witnesses: &WitnessArgs,
    policies: Option<&str>,
    reprove: Reprove<'_>,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let verifier = load_verifier(key)?;
    let policy = witnesses.policy()?;
    let mut progress = Progress::new("audit replay");
    let replay = monitor::replay(url, &verifier, &policy, policies, reprove, &mut progress)?;
    let failures = replay.failures();
    say_not_yet_covered(replay.not_yet_covered);
    if json {
        let mut answer = replay.to_json();
        answer["witnessed"] = witnessed_json(&policy);
        writeln!(out, "{answer}")?;
        if failures > 0 {
            return Err(replay_failed(&replay));
        }
        return Ok(());
    }
    writeln!(
        out,
        "audit replay: {}",
        if failures == 0 { "OK" } else { "FAILED" }
    )?;
    write!(out, "{}{replay}", CheckpointLines(&replay.checkpoint))?;
    if failures > 0 {
        return Err(replay_failed(&replay));
    }
    Ok(())
}

/// The error of a replay with failures: a failed check, unless all it could not do was fetch
/// policy sets from a source it could not reach.
fn replay_failed(replay: &monitor::replay::Replay) -> anyhow::Error {
    monitor::failure::Failed::new(replay.failure_kind(), replay.verdict()).into()
}

/// `{"quorum", "of"}`: the witnesses' quorum every checkpoint read needed (`null`: none).
fn witnessed_json(policy: &tlog::cosignature::WitnessPolicy) -> serde_json::Value {
    if policy.quorum == 0 {
        return serde_json::Value::Null;
    }
    serde_json::json!({"quorum": policy.quorum, "of": policy.witnesses.len()})
}

/// Progress of a whole-log check (`audit verify`, `audit replay`, `report`) on standard
/// error, as the monitor library reports it: a bar on a terminal, otherwise a
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
}

impl monitor::Progress for Progress {
    fn update(&mut self, done: u64, total: u64) {
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

    fn finish(&mut self) {
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
// ---------------------------------------------------------------------------
// audit prove / check-proof

/// `audit search`: the matching entries of a verified log.
fn search(
    url: &str,
    key: &str,
    query: &monitor::search::Query,
    limit: usize,
    json: bool,
    witnesses: &WitnessArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let verifier = load_verifier(key)?;
    let log = monitor::open_witnessed_log(url, &verifier, &witnesses.policy()?)?;
    let found = monitor::search::search(
        &*log,
        &verifier,
        query,
        limit,
        &mut Progress::new("audit search"),
    )?;
    for (index, entry) in &found.entries {
        if json {
            writeln!(
                out,
                "{}",
                serde_json::json!({"index": index, "entry": entry})
            )?;
            continue;
        }
        let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
        let who = match entry["principal"]["id"].as_str() {
            Some(id) => id.to_string(),
            None => text(&entry["actor"]["id"]),
        };
        let what = match entry["kind"].as_str() {
            Some("access") => format!("{} {}", text(&entry["action"]), text(&entry["outcome"])),
            Some("custody") => text(&entry["event"]),
            Some("alert") => text(&entry["alert"]),
            Some("algorithm-run") => format!(
                "{} {}",
                text(&entry["details"]["algorithm"]),
                text(&entry["details"]["outcome"])
            ),
            _ => String::new(),
        };
        writeln!(
            out,
            "{index:>8}  {}  {:<13}  {who}  {what}",
            text(&entry["time"]),
            text(&entry["kind"])
        )?;
    }
    if !json {
        writeln!(
            out,
            "{} of {} entries match; the log verified{}",
            found.matched,
            found.checkpoint.size,
            if found.matched > found.entries.len() as u64 {
                format!("; the first {} shown (--limit)", found.entries.len())
            } else {
                String::new()
            }
        )?;
    }
    Ok(())
}

/// `audit get`: one entry, proven in the log under a checkpoint checked with the key.
fn get(
    url: &str,
    key: &str,
    index: u64,
    json: bool,
    witnesses: &WitnessArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let verifier = load_verifier(key)?;
    let log = monitor::open_witnessed_log(url, &verifier, &witnesses.policy()?)?;
    let monitor::proof::Proven {
        proof,
        entry,
        checkpoint,
    } = monitor::proof::prove(&*log, index, Some(&verifier))?;
    let info = monitor::entry::check_entry(&entry).map_err(|e| {
        monitor::failure::check_failed(format!(
            "entry {index} is in the log but is not a valid entry: {e}"
        ))
    })?;
    let decoded: serde_json::Value = serde_json::from_slice(&entry)?;
    let root = hash_to_base64(&checkpoint.hash);
    if json {
        let answer = serde_json::json!({
            "index": index,
            "origin": checkpoint.origin,
            "tree_size": checkpoint.size,
            "root_hash": root,
            "proof": proof.hashes.iter().map(hash_to_base64).collect::<Vec<_>>(),
            "entry": decoded,
        });
        writeln!(out, "{answer}")?;
        return Ok(());
    }
    writeln!(
        out,
        "entry {index} of {}: in the tree of size {} (root {root}), checkpoint signed by the log's key{}",
        checkpoint.origin,
        checkpoint.size,
        if witnesses.policy()?.quorum > 0 {
            " and the witnesses' quorum"
        } else {
            ""
        }
    )?;
    writeln!(
        out,
        "kind: {}{}",
        info.kind,
        info.outcome
            .map(|o| format!(", outcome {o}"))
            .unwrap_or_default()
    )?;
    writeln!(out, "{}", serde_json::to_string_pretty(&decoded)?)?;
    Ok(())
}

fn prove(
    url: &str,
    index: u64,
    file: &Path,
    key: Option<&str>,
    witnesses: &WitnessArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let verifier = key.map(load_verifier).transpose()?;
    let policy = witnesses.policy()?;
    let log = match &verifier {
        Some(v) => monitor::open_witnessed_log(url, v, &policy)?,
        None if policy.quorum > 0 => bail!("--witness and --quorum need --key, the log's key"),
        None => open_log(url)?,
    };
    let monitor::proof::Proven {
        proof,
        entry,
        checkpoint,
    } = monitor::proof::prove(&*log, index, verifier.as_ref())?;
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

fn check_proof(
    file: &Path,
    key: &str,
    entry: &Path,
    json: bool,
    witnesses: &WitnessArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    use monitor::failure::{check_failed, usage};
    let verifier = load_verifier(key)?;
    let policy = witnesses.policy()?;
    let read = |p: &Path| fs::read(p).map_err(|e| usage(format!("reading {}: {e}", p.display())));
    let data = read(file)?;
    let entry_data = read(entry)?;
    let proof =
        TlogProof::parse(&data).map_err(|e| check_failed(format!("{}: {e}", file.display())))?;
    let checkpoint = tlog::proof::verify(&proof, &verifier, &entry_data).map_err(|e| match e {
        ProofError::Checkpoint(e) => check_failed(format!(
            "the checkpoint in {} does not open with this key: {e}",
            file.display()
        )),
        e => check_failed(format!(
            "{} does not prove that {} is entry {} of the log: {e}",
            file.display(),
            entry.display(),
            proof.index
        )),
    })?;
    // The proof's checkpoint must carry the quorum, so that it is the tree everyone sees.
    let cosigned = monitor::check_quorum(&proof.checkpoint, &verifier, &policy).map_err(|e| {
        check_failed(format!(
            "the checkpoint in {} is not witnessed: {e}",
            file.display()
        ))
    })?;
    let names: Vec<&str> = cosigned.iter().map(|c| c.witness.as_str()).collect();
    let info = check_entry(&entry_data);
    if json {
        let answer = serde_json::json!({
            "ok": true,
            "index": proof.index,
            "checkpoint": monitor::verify::checkpoint_json(&checkpoint),
            "witnessed": if policy.quorum > 0 {
                serde_json::json!({"quorum": policy.quorum, "cosigned_by": names})
            } else {
                serde_json::Value::Null
            },
            "entry": match &info {
                Ok(i) => serde_json::json!({"valid": true, "version": i.version, "kind": i.kind, "outcome": i.outcome}),
                Err(e) => serde_json::json!({"valid": false, "error": e}),
            },
        });
        writeln!(out, "{answer}")?;
        return Ok(());
    }
    writeln!(out, "audit check-proof: OK")?;
    writeln!(out, "index:      {}", proof.index)?;
    writeln!(out, "checkpoint: {} entries", checkpoint.size)?;
    writeln!(out, "origin:     {}", checkpoint.origin)?;
    writeln!(out, "root hash:  {}", hash_to_base64(&checkpoint.hash))?;
    if policy.quorum > 0 {
        writeln!(
            out,
            "witnessed:  {} of quorum {} ({})",
            cosigned.len(),
            policy.quorum,
            names.join(", ")
        )?;
    }
    match info {
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_progress_bar_draws() {
        // Only a terminal gets the bar, so check its template here.
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(1000),
            indicatif::ProgressDrawTarget::hidden(),
        )
        .with_style(super::progress_style());
        bar.set_position(500);
        bar.finish_and_clear();
    }
}
