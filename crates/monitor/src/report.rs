//! Transparency reports (`sovereign report`): a signed report of one period, computed from
//! the verified log, and its check.
//!
//! The report counts what the log says happened between two instants (accesses by
//! outcome, location, entity, action and subject jurisdiction; the custodian's controls;
//! data leaving and moving; alerts) and names the checkpoint it was computed from. Its
//! figures are a pure function of the first `tree_size` entries of the log and the
//! period, so anyone holding the log's key can compute them again:
//!
//! * `sovereign report --url LOG --from DATE --to DATE --signer KEY` verifies the whole
//!   log as `audit verify` does, counts, and writes `PREFIX.json`, `PREFIX.md` and
//!   `PREFIX.sig` (a C2SP signed note naming the period, the checkpoint and the SHA-256
//!   of both files);
//! * `sovereign report check PREFIX.json ...` checks the signature and the digests, that
//!   the report's checkpoint is signed by the log and consistent with the log as served
//!   now, computes the figures again from the log and compares them member by member.
//!
//! Entries are read with the monitor's own reading of the format ([`crate::entry`]), not the
//! gateway's types: the report is an outside reading of the log.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tlog::checkpoint::{Checkpoint, open_checkpoint};
use tlog::note::{NoteError, Signer, Verifier};
use tlog::{TileFetcher, hash_to_base64};

use crate::entry::{Access, Event, Head};
use crate::fetch::Pinned;
use crate::plain;
use crate::progress::Progress;
use crate::state::{with_suffix, write_atomically};
use crate::verify::verify_entries;

/// The `format` member of a report's JSON.
const FORMAT: &str = "sovereign-report/v1";
/// The first line of a report's signed note.
const SIGNED_HEADER: &str = "sovereign/report/v1";
/// Differences listed when a report does not match the log; beyond, only counted.
const MAX_DIFFERENCES: usize = 10;
const DAY_MS: i64 = 86_400_000;

// ---------------------------------------------------------------------------
// sovereign report

/// The files of a report, written by [`make`].
pub struct Written {
    pub json: PathBuf,
    pub markdown: PathBuf,
    pub sig: PathBuf,
    /// The checkpoint the figures were computed from.
    pub checkpoint: Checkpoint,
    /// The report's figures in a few sentences.
    pub summary: String,
    /// The end of the period, when it is still to come: entries logged after the checkpoint
    /// are not in the report.
    pub ends_in_future: Option<String>,
}

/// Verifies the log at `url` (signed by `verifier`), counts the entries of `period`, and
/// writes `PREFIX.json`, `PREFIX.md` and `PREFIX.sig` (signed by `signer`), PREFIX by default
/// `sovereign-report-FIRST-LAST` in the current directory.
pub fn make(
    url: &str,
    log: &dyn TileFetcher,
    verifier: &Verifier,
    period: Period,
    signer: &Signer,
    prefix: Option<PathBuf>,
    progress: &mut dyn Progress,
) -> anyhow::Result<Written> {
    let prefix = prefix.unwrap_or_else(|| PathBuf::from(period.default_prefix()));

    // The note kept in the report must be the one verified: fetch it once and serve that
    // same note to the verifier, whatever the log publishes meanwhile.
    let note = log
        .fetch("checkpoint")
        .context("fetching checkpoint")?
        .ok_or_else(|| anyhow!("the log serves no checkpoint"))?;
    let pinned = Pinned {
        log,
        checkpoint: note,
    };
    let (checkpoint, figures) = tally_log(&pinned, verifier, None, period, progress)?;
    let note_text = String::from_utf8(pinned.checkpoint)
        .map_err(|_| anyhow!("internal error: a verified checkpoint is not UTF-8"))?;
    let report = Report::new(period, &checkpoint, note_text, figures);

    let json_path = with_suffix(&prefix, ".json");
    let md_path = with_suffix(&prefix, ".md");
    let sig_path = with_suffix(&prefix, ".sig");
    let mut json = serde_json::to_vec_pretty(&report).context("encoding the report")?;
    json.push(b'\n');
    let json_name = file_name(&json_path);
    let mut markdown = render_markdown(&report);
    markdown.push_str(&render_how_to_check(
        &report,
        &json_name,
        &signer.verifier(),
        url,
        verifier,
    ));
    let signed = Signed {
        from: report.period.from.clone(),
        to: report.period.to.clone(),
        origin: checkpoint.origin.clone(),
        tree_size: checkpoint.size,
        root_hash: hash_to_base64(&checkpoint.hash),
        json_sha256: sha256_hex(&json),
        markdown_sha256: sha256_hex(markdown.as_bytes()),
    };
    let sig = tlog::note::sign(&signed.text(), [signer]).map_err(plain)?;

    // The signature last: a .sig on disk always names files that are there.
    for (path, data) in [
        (&json_path, json.as_slice()),
        (&md_path, markdown.as_bytes()),
        (&sig_path, sig.as_slice()),
    ] {
        write_atomically(path, data).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(Written {
        json: json_path,
        markdown: md_path,
        sig: sig_path,
        checkpoint,
        summary: summary(&report),
        ends_in_future: (period.to > now_millis()).then(|| report.period.to.clone()),
    })
}

/// The log's key as the log itself serves it (`URL/key`), with a warning: whoever
/// controls the log controls this key, so it proves nothing about who signed the log.
/// The caller should say so (with [`key_name`]).
pub fn key_served_by(log: &dyn TileFetcher, url: &str) -> anyhow::Result<Verifier> {
    let where_ = format!("{}/key", url.trim_end_matches('/'));
    let data = log
        .fetch("key")
        .with_context(|| format!("fetching the log's key at {where_}"))?
        .ok_or_else(|| anyhow!("no --key, and the log serves no key at {where_}: give --key"))?;
    let text = String::from_utf8_lossy(&data);
    Verifier::new(text.trim())
        .map_err(|e| anyhow!("the key served at {where_} is not a verifier key: {e}"))
}

/// Verifies the whole log as `audit verify` does (and, with `previous`, its consistency
/// with that checkpoint), counting the entries of the period among the first
/// `previous.size` entries (all entries without `previous`). The figures count only
/// once the whole log is verified.
fn tally_log(
    log: &dyn TileFetcher,
    verifier: &Verifier,
    previous: Option<&Checkpoint>,
    period: Period,
    progress: &mut dyn Progress,
) -> anyhow::Result<(Checkpoint, Figures)> {
    let limit = previous.map_or(u64::MAX, |p| p.size);
    let mut tally = Tally {
        period,
        figures: Figures::default(),
    };
    let checkpoint = verify_entries(log, verifier, previous, progress, &mut |index, _, entry| {
        if index < limit {
            tally.add(index, entry)?;
        }
        Ok(())
    })?;
    Ok((checkpoint, tally.figures))
}

// ---------------------------------------------------------------------------
// sovereign report check

/// A report that passed [`check`]: what was checked, one line each.
pub struct Checked(String);

impl fmt::Display for Checked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The log a report is checked against: where it is served, its key, and the witnesses
/// whose quorum its checkpoints need (none: the log's signature alone).
pub struct LogToCheck<'a> {
    pub url: &'a str,
    pub key: &'a Verifier,
    pub witnesses: &'a tlog::cosignature::WitnessPolicy,
}

/// Checks a report: its signature by `signer` and the digests it names, its checkpoint
/// (signed with the log's key, and cosigned by the witnesses' quorum) against the log as
/// served now, and its figures computed again from the log. `sig_path` defaults to
/// PREFIX.sig, `markdown_path` to PREFIX.md if it exists.
pub fn check(
    json_path: &Path,
    sig_path: Option<&Path>,
    signer: &Verifier,
    log: &LogToCheck<'_>,
    markdown_path: Option<&Path>,
    progress: &mut dyn Progress,
) -> anyhow::Result<Checked> {
    let prefix = match json_path.to_str().and_then(|p| p.strip_suffix(".json")) {
        Some(p) => PathBuf::from(p),
        None => json_path.to_path_buf(),
    };
    let sig_path = sig_path.map_or_else(|| with_suffix(&prefix, ".sig"), Path::to_path_buf);
    let markdown_path = match markdown_path {
        Some(p) => Some(p.to_path_buf()),
        None => Some(with_suffix(&prefix, ".md")).filter(|p| p.exists()),
    };
    let read = |p: &Path| {
        fs::read(p).map_err(|e| crate::failure::usage(format!("reading {}: {e}", p.display())))
    };
    let json = read(json_path)?;
    let sig = read(&sig_path)?;
    let markdown = markdown_path.as_deref().map(read).transpose()?;

    // 1. Who signed, and what: the signature names both files by digest.
    let note = tlog::note::open(&sig, [signer]).map_err(|e| match e {
        NoteError::Unverified(note) => anyhow!(
            "{} is not signed by the --signer-key key {} (it is signed by {})",
            sig_path.display(),
            key_name(signer),
            note.unverified_sigs
                .iter()
                .map(|s| format!("{}+{:08x}", s.name, s.key_id))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        e => anyhow!("{}: {e}", sig_path.display()),
    })?;
    let signed = Signed::parse(&note.text)
        .map_err(|e| anyhow!("{} is not a signed report: {e}", sig_path.display()))?;
    if sha256_hex(&json) != signed.json_sha256 {
        bail!(
            "{} is not the JSON the signature names: its SHA-256 is {}, {} says json_sha256 {}",
            json_path.display(),
            sha256_hex(&json),
            sig_path.display(),
            signed.json_sha256
        );
    }
    if let (Some(path), Some(markdown)) = (&markdown_path, &markdown)
        && sha256_hex(markdown) != signed.markdown_sha256
    {
        bail!(
            "{} is not the Markdown the signature names: its SHA-256 is {}, {} says markdown_sha256 {}",
            path.display(),
            sha256_hex(markdown),
            sig_path.display(),
            signed.markdown_sha256
        );
    }

    // 2. The JSON says what the signature says.
    let claimed: Value = serde_json::from_slice(&json)
        .with_context(|| format!("{} is not JSON", json_path.display()))?;
    if claimed["format"] != FORMAT {
        bail!(
            "{} is not a report of format {FORMAT} (its format is {})",
            json_path.display(),
            claimed["format"]
        );
    }
    let member = |path: &[&str]| -> anyhow::Result<String> {
        let value = path.iter().fold(&claimed, |v, name| &v[name]);
        match value {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            _ => bail!(
                "{}: member {} is missing or not a string",
                json_path.display(),
                path.join(".")
            ),
        }
    };
    let from = member(&["period", "from"])?;
    let to = member(&["period", "to"])?;
    for (name, in_json, in_sig) in [
        ("from", from.clone(), signed.from.clone()),
        ("to", to.clone(), signed.to.clone()),
        ("origin", member(&["log", "origin"])?, signed.origin.clone()),
        (
            "tree_size",
            member(&["log", "tree_size"])?,
            signed.tree_size.to_string(),
        ),
        (
            "root_hash",
            member(&["log", "root_hash"])?,
            signed.root_hash.clone(),
        ),
    ] {
        if in_json != in_sig {
            bail!(
                "the signature says {name} {in_sig}, the JSON says {name} {in_json}: they do not describe the same report"
            );
        }
    }
    let bound = |s: &str| {
        parse_rfc3339(s)
            .ok_or_else(|| anyhow!("the report's period bound {s:?} is not an RFC 3339 time"))
    };
    let period = Period::new(bound(&from)?, bound(&to)?)?;

    // 3. The checkpoint is the log's, and the log as served now still contains it.
    let note_text = member(&["log", "checkpoint"])?;
    let log_key = log.key;
    let embedded = open_checkpoint(note_text.as_bytes(), log_key).map_err(|e| {
        anyhow!(
            "the checkpoint in {} is not one of the log key {}: {e}",
            json_path.display(),
            key_name(log_key)
        )
    })?;
    crate::witness::check_quorum(note_text.as_bytes(), log_key, log.witnesses).map_err(|e| {
        anyhow!(
            "the checkpoint in {} is not witnessed: {e}",
            json_path.display()
        )
    })?;
    let log = crate::witness::open_witnessed_log(log.url, log_key, log.witnesses)?;
    let (current, figures) = tally_log(&*log, log_key, Some(&embedded), period, progress)
        .map_err(|e| e.context("verifying the log against the report's checkpoint"))?;

    // 4. The figures are those of the log's first tree_size entries.
    let recomputed = Report::new(period, &embedded, note_text, figures);
    let expected = serde_json::to_value(&recomputed).context("encoding the report")?;
    let mut differences = Vec::new();
    compare("", &claimed, &expected, &mut differences);
    if !differences.is_empty() {
        let shown = differences.len().min(MAX_DIFFERENCES);
        let mut message = format!(
            "the report's figures are not those of the log's first {} entries: {}",
            embedded.size,
            differences[..shown].join("; ")
        );
        if differences.len() > shown {
            write!(message, "; and {} more", differences.len() - shown)?;
        }
        bail!("{message}");
    }

    // 5. The Markdown shows those figures (the part after them says how to check, which
    //    names files and URLs that may since have changed, so it is not compared).
    if let (Some(path), Some(markdown)) = (&markdown_path, &markdown)
        && !markdown.starts_with(render_markdown(&recomputed).as_bytes())
    {
        bail!(
            "{} does not show the report's figures (it is signed, but it is not the rendering of {})",
            path.display(),
            json_path.display()
        );
    }

    let mut out = String::new();
    writeln!(&mut out, "period:     {from} to {to} (excluded)")?;
    writeln!(
        &mut out,
        "signed by:  {} ({})",
        key_name(signer),
        sig_path.display()
    )?;
    match &markdown_path {
        Some(path) => writeln!(
            &mut out,
            "markdown:   {} matches the signature and shows the report's figures",
            path.display()
        )?,
        None => writeln!(
            &mut out,
            "markdown:   not checked (no {} next to the JSON; give --markdown)",
            with_suffix(&prefix, ".md").display()
        )?,
    }
    writeln!(
        &mut out,
        "log:        {}: the report's checkpoint of {} entries is consistent with the log as served now ({} entries)",
        embedded.origin, embedded.size, current.size
    )?;
    writeln!(
        &mut out,
        "figures:    computed again from the first {} entries: identical",
        embedded.size
    )?;
    Ok(Checked(out))
}

/// Lists, in plain words, where `claimed` (the report) differs from `expected` (what the
/// log gives). `path` is the member's dotted path.
fn compare(path: &str, claimed: &Value, expected: &Value, out: &mut Vec<String>) {
    let name = if path.is_empty() { "the report" } else { path };
    match (claimed, expected) {
        (Value::Object(c), Value::Object(e)) => {
            let child = |key: &str| {
                if path.is_empty() {
                    key.to_string()
                } else {
                    format!("{path}.{key}")
                }
            };
            let mut keys: Vec<&String> = c.keys().chain(e.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                match (c.get(key), e.get(key)) {
                    (Some(cv), Some(ev)) => compare(&child(key), cv, ev, out),
                    (Some(cv), None) => out.push(format!(
                        "{}: the report says {}, the log gives no such member",
                        child(key),
                        brief(cv)
                    )),
                    (None, Some(ev)) => out.push(format!(
                        "{}: missing from the report, the log gives {}",
                        child(key),
                        brief(ev)
                    )),
                    (None, None) => unreachable!("the key comes from one of the two"),
                }
            }
        }
        (c, e) if c == e => {}
        (c, e) => out.push(format!(
            "{name}: the report says {}, the log gives {}",
            brief(c),
            brief(e)
        )),
    }
}

/// A value for a difference line: scalars as they are, containers by size.
fn brief(v: &Value) -> String {
    match v {
        Value::Object(m) => format!("an object of {} members", m.len()),
        Value::Array(a) => format!("an array of {} elements", a.len()),
        Value::String(s) if s.chars().count() > 80 => {
            format!("{:?}...", s.chars().take(80).collect::<String>())
        }
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------
// The signed note

/// What the report's signature says: the period, the checkpoint, and the digest of
/// each file. One `key value` line each, in this order, after the header.
#[derive(Debug, PartialEq, Eq)]
struct Signed {
    from: String,
    to: String,
    origin: String,
    tree_size: u64,
    root_hash: String,
    json_sha256: String,
    markdown_sha256: String,
}

impl Signed {
    fn text(&self) -> String {
        format!(
            "{SIGNED_HEADER}\nfrom {}\nto {}\norigin {}\ntree_size {}\nroot_hash {}\njson_sha256 {}\nmarkdown_sha256 {}\n",
            self.from,
            self.to,
            self.origin,
            self.tree_size,
            self.root_hash,
            self.json_sha256,
            self.markdown_sha256
        )
    }

    fn parse(text: &str) -> Result<Signed, String> {
        let mut lines = text
            .strip_suffix('\n')
            .ok_or("its text does not end in a newline")?
            .split('\n');
        if lines.next() != Some(SIGNED_HEADER) {
            return Err(format!("its text does not start with {SIGNED_HEADER}"));
        }
        let mut field = |name: &str| -> Result<String, String> {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .and_then(|l| l.strip_prefix(' '))
                .map(str::to_string)
                .ok_or_else(|| format!("its line {name:?} is missing or out of place"))
        };
        let signed = Signed {
            from: field("from")?,
            to: field("to")?,
            origin: field("origin")?,
            tree_size: field("tree_size")?
                .parse()
                .map_err(|_| "its tree_size is not a number")?,
            root_hash: field("root_hash")?,
            json_sha256: field("json_sha256")?,
            markdown_sha256: field("markdown_sha256")?,
        };
        if lines.next().is_some() {
            return Err("it has lines after markdown_sha256".into());
        }
        Ok(signed)
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

// ---------------------------------------------------------------------------
// The report and its figures

/// The report as its JSON holds it. Every map is a BTreeMap so that the same log and
/// period always give the same bytes.
#[derive(Serialize)]
struct Report {
    /// The period as numbers, for the Markdown's title.
    #[serde(skip)]
    span: Period,
    format: &'static str,
    period: PeriodOut,
    log: LogOut,
    #[serde(flatten)]
    figures: Figures,
}

#[derive(Serialize)]
pub struct PeriodOut {
    from: String,
    to: String,
}

#[derive(Serialize)]
struct LogOut {
    origin: String,
    tree_size: u64,
    root_hash: String,
    /// The signed checkpoint note, as the log served it.
    checkpoint: String,
}

impl Report {
    fn new(period: Period, checkpoint: &Checkpoint, note: String, figures: Figures) -> Report {
        Report {
            span: period,
            format: FORMAT,
            period: PeriodOut {
                from: format_time(period.from),
                to: format_time(period.to),
            },
            log: LogOut {
                origin: checkpoint.origin.clone(),
                tree_size: checkpoint.size,
                root_hash: hash_to_base64(&checkpoint.hash),
                checkpoint: note,
            },
            figures,
        }
    }
}

#[derive(Serialize, Default)]
struct Figures {
    entries: EntryFigures,
    accesses: AccessFigures,
    custody: CustodyFigures,
    data: DataFigures,
    alerts: AlertFigures,
}

/// The entries of the period: which indexes, how many, of which kinds.
#[derive(Serialize, Default)]
struct EntryFigures {
    first_index: Option<u64>,
    last_index: Option<u64>,
    count: u64,
    by_kind: BTreeMap<String, u64>,
}

/// Access decisions by outcome.
#[derive(Serialize, Default, Clone, Copy)]
struct Outcomes {
    allow: u64,
    deny: u64,
    partial: u64,
}

impl Outcomes {
    fn add(&mut self, outcome: &str) {
        // `check_entry` admits these three only.
        match outcome {
            "allow" => self.allow += 1,
            "deny" => self.deny += 1,
            _ => self.partial += 1,
        }
    }

    fn total(&self) -> u64 {
        self.allow + self.deny + self.partial
    }
}

#[derive(Serialize, Default)]
struct AccessFigures {
    total: u64,
    by_outcome: Outcomes,
    /// By where the principal was located: attempts from restricted countries show here.
    by_location: BTreeMap<String, Outcomes>,
    by_entity: BTreeMap<String, Outcomes>,
    by_action: BTreeMap<String, Outcomes>,
    by_subject_jurisdiction: BTreeMap<String, Outcomes>,
    /// Accesses decided with a custodian grant, by the grant's kind.
    by_grant: BTreeMap<String, Outcomes>,
    /// Accesses to a jurisdiction the kill switch suspended (all denied).
    suspended: u64,
}

#[derive(Serialize, Default)]
struct CustodyFigures {
    access_requests: u64,
    /// Approvals given (`access-request-approved`), and those that completed a grant.
    approvals: u64,
    grants: u64,
    requests_denied: u64,
    grants_revoked: u64,
    break_glass_uses: u64,
    break_glass_reviews: u64,
    policy_activations: u64,
    /// Kill-switch commands, by jurisdiction.
    jurisdictions_suspended: BTreeMap<String, u64>,
    jurisdictions_lifted: BTreeMap<String, u64>,
    /// Every custody event, by name.
    events: BTreeMap<String, u64>,
}

#[derive(Serialize, Default)]
struct DataFigures {
    exports: u64,
    erasures: u64,
    migrations: u64,
    egress_pages: u64,
    egress_rows: u64,
    /// Runs of custodian-released algorithms: `algorithm outcome` → count (outcomes `ok`,
    /// `failed`, `denied`, `stopped`).
    algorithm_runs: BTreeMap<String, u64>,
}

#[derive(Serialize, Default)]
struct AlertFigures {
    total: u64,
    by_name: BTreeMap<String, u64>,
    by_severity: BTreeMap<String, u64>,
}

/// Counts the entries of a period, one at a time, in index order.
struct Tally {
    period: Period,
    figures: Figures,
}

impl Tally {
    fn add(&mut self, index: u64, entry: &[u8]) -> Result<(), String> {
        let read = |e: serde_json::Error| format!("cannot be read for the report: {e}");
        let head: Head = serde_json::from_slice(entry).map_err(read)?;
        let time = parse_rfc3339(&head.time)
            .ok_or_else(|| format!("its time {:?} cannot be read", head.time))?;
        if !self.period.contains(time) {
            return Ok(());
        }
        let f = &mut self.figures;
        f.entries.first_index.get_or_insert(index);
        f.entries.last_index = Some(index);
        f.entries.count += 1;
        *f.entries.by_kind.entry(head.kind.clone()).or_default() += 1;

        match head.kind.as_str() {
            "access" => {
                let a: Access = serde_json::from_slice(entry).map_err(read)?;
                let outcome = a.outcome.as_str();
                let by = &mut f.accesses;
                by.total += 1;
                by.by_outcome.add(outcome);
                for (table, key) in [
                    (&mut by.by_location, a.principal.location),
                    (&mut by.by_entity, a.principal.entity),
                    (&mut by.by_action, a.action),
                    (&mut by.by_subject_jurisdiction, a.subject_jurisdiction),
                ] {
                    table.entry(key).or_default().add(outcome);
                }
                if let Some(kind) = a.grant["kind"].as_str() {
                    by.by_grant
                        .entry(kind.to_string())
                        .or_default()
                        .add(outcome);
                }
                if a.suspended == Value::Bool(true) {
                    by.suspended += 1;
                }
            }
            "custody" => {
                let e: Event = serde_json::from_slice(entry).map_err(read)?;
                let event = e.event.unwrap_or_default();
                let c = &mut f.custody;
                let jurisdiction = || {
                    e.details["jurisdiction"]
                        .as_str()
                        .unwrap_or("(none)")
                        .to_string()
                };
                match event.as_str() {
                    "access-request-created" => c.access_requests += 1,
                    "access-request-approved" => {
                        c.approvals += 1;
                        // The approval that reaches the threshold says so.
                        if e.details["granted"] == Value::Bool(true) {
                            c.grants += 1;
                        }
                    }
                    "access-request-denied" => c.requests_denied += 1,
                    "grant-revoked" => c.grants_revoked += 1,
                    "break-glass-started" => c.break_glass_uses += 1,
                    "break-glass-reviewed" => c.break_glass_reviews += 1,
                    "policy-activated" => c.policy_activations += 1,
                    "jurisdiction-suspended" => {
                        *c.jurisdictions_suspended.entry(jurisdiction()).or_default() += 1
                    }
                    "jurisdiction-lifted" => {
                        *c.jurisdictions_lifted.entry(jurisdiction()).or_default() += 1
                    }
                    _ => {}
                }
                *c.events.entry(event).or_default() += 1;
            }
            "alert" => {
                let e: Event = serde_json::from_slice(entry).map_err(read)?;
                let a = &mut f.alerts;
                a.total += 1;
                *a.by_name.entry(e.alert.unwrap_or_default()).or_default() += 1;
                *a.by_severity
                    .entry(e.severity.unwrap_or_default())
                    .or_default() += 1;
            }
            "egress" => {
                let e: Event = serde_json::from_slice(entry).map_err(read)?;
                f.data.egress_pages += 1;
                // `check_entry` takes any details object: a page without a row count
                // counts as a page of none, the same for whoever computes the report.
                f.data.egress_rows += e.details["rows"].as_u64().unwrap_or(0);
            }
            "export" => f.data.exports += 1,
            "erasure" => f.data.erasures += 1,
            "migration" => f.data.migrations += 1,
            "algorithm-run" => {
                let e: Event = serde_json::from_slice(entry).map_err(read)?;
                let text = |key: &str| e.details[key].as_str().unwrap_or("(none)").to_string();
                let key = format!("{} {}", text("algorithm"), text("outcome"));
                *f.data.algorithm_runs.entry(key).or_default() += 1;
            }
            // `config`: counted by kind only.
            _ => {}
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Markdown

/// The report's figures as Markdown, from the title to the checkpoint. `report check`
/// compares this part with the Markdown file; the section after it says how to check.
fn render_markdown(r: &Report) -> String {
    let mut md = String::new();
    write_figures(&mut md, r).expect("writing to a String cannot fail");
    md
}

fn write_figures(md: &mut String, r: &Report) -> std::fmt::Result {
    let f = &r.figures;
    writeln!(
        md,
        "# Transparency report, {} to {}",
        format_date(r.span.from),
        format_date(r.span.to - 1)
    )?;
    writeln!(md)?;
    writeln!(md, "| | |")?;
    writeln!(md, "|---|---|")?;
    writeln!(
        md,
        "| period | from {} (included) to {} (excluded) |",
        r.period.from, r.period.to
    )?;
    writeln!(md, "| log | `{}` |", r.log.origin)?;
    writeln!(
        md,
        "| computed from | its first {} entries, root hash `{}` |",
        r.log.tree_size, r.log.root_hash
    )?;
    let span = match (f.entries.first_index, f.entries.last_index) {
        (Some(first), Some(last)) => format!(" (indexes {first} to {last})"),
        _ => String::new(),
    };
    writeln!(md, "| entries in the period | {}{span} |", f.entries.count)?;
    writeln!(md)?;
    writeln!(md, "## Summary")?;
    writeln!(md)?;
    writeln!(md, "{}", summary(r))?;
    writeln!(md)?;

    writeln!(md, "## Accesses")?;
    writeln!(md)?;
    writeln!(md, "| outcome | accesses |")?;
    writeln!(md, "|---|---:|")?;
    writeln!(md, "| allow | {} |", f.accesses.by_outcome.allow)?;
    writeln!(md, "| deny | {} |", f.accesses.by_outcome.deny)?;
    writeln!(
        md,
        "| partial (some fields withheld) | {} |",
        f.accesses.by_outcome.partial
    )?;
    writeln!(md, "| **total** | **{}** |", f.accesses.total)?;
    writeln!(md)?;
    let a = &f.accesses;
    for (title, column, table) in [
        (
            "By principal location (where the principal was)",
            "location",
            &a.by_location,
        ),
        ("By the principal's entity", "entity", &a.by_entity),
        ("By action", "action", &a.by_action),
        (
            "By the subject's jurisdiction",
            "jurisdiction",
            &a.by_subject_jurisdiction,
        ),
        ("Under a custodian grant", "grant", &a.by_grant),
    ] {
        writeln!(md, "### {title}")?;
        writeln!(md)?;
        outcome_table(md, column, table)?;
        writeln!(md)?;
    }
    writeln!(
        md,
        "Accesses to a jurisdiction suspended by the kill switch (all denied): {}",
        a.suspended
    )?;
    writeln!(md)?;

    let c = &f.custody;
    writeln!(md, "## Custodian controls")?;
    writeln!(md)?;
    writeln!(md, "| | count |")?;
    writeln!(md, "|---|---:|")?;
    for (what, n) in [
        ("access requests", c.access_requests),
        ("approvals given", c.approvals),
        ("grants (requests fully approved)", c.grants),
        ("requests denied", c.requests_denied),
        ("grants revoked", c.grants_revoked),
        ("break-glass uses", c.break_glass_uses),
        ("break-glass reviews", c.break_glass_reviews),
        ("policy activations", c.policy_activations),
    ] {
        writeln!(md, "| {what} | {n} |")?;
    }
    for (what, table) in [
        (
            "jurisdiction suspended (kill switch)",
            &c.jurisdictions_suspended,
        ),
        ("jurisdiction lifted (kill switch)", &c.jurisdictions_lifted),
    ] {
        if table.is_empty() {
            writeln!(md, "| {what} | 0 |")?;
        }
        for (jurisdiction, n) in table {
            writeln!(md, "| {what}: {jurisdiction} | {n} |")?;
        }
    }
    writeln!(md)?;
    writeln!(md, "Every custody event in the period:")?;
    writeln!(md)?;
    count_table(md, "event", &c.events)?;
    writeln!(md)?;

    let d = &f.data;
    writeln!(md, "## Data leaving and moving")?;
    writeln!(md)?;
    writeln!(md, "| | count |")?;
    writeln!(md, "|---|---:|")?;
    writeln!(md, "| portability exports | {} |", d.exports)?;
    writeln!(md, "| erasures | {} |", d.erasures)?;
    writeln!(md, "| residency migrations | {} |", d.migrations)?;
    writeln!(md, "| egress pages | {} |", d.egress_pages)?;
    writeln!(md, "| egress rows | {} |", d.egress_rows)?;
    writeln!(md)?;
    writeln!(md, "Runs of custodian-released algorithms, by outcome:")?;
    writeln!(md)?;
    count_table(md, "algorithm and outcome", &d.algorithm_runs)?;
    writeln!(md)?;

    writeln!(md, "## Alerts")?;
    writeln!(md)?;
    count_table(md, "alert", &f.alerts.by_name)?;
    writeln!(md)?;
    count_table(md, "severity", &f.alerts.by_severity)?;
    writeln!(md)?;

    writeln!(md, "## Log entries in the period, by kind")?;
    writeln!(md)?;
    count_table(md, "kind", &f.entries.by_kind)?;
    writeln!(md)?;

    writeln!(md, "## The checkpoint")?;
    writeln!(md)?;
    writeln!(
        md,
        "The figures are those of the log's first {} entries, the tree this signed checkpoint commits to:",
        r.log.tree_size
    )?;
    writeln!(md)?;
    writeln!(md, "```text")?;
    write!(md, "{}", r.log.checkpoint)?;
    writeln!(md, "```")?;
    writeln!(md)?;
    Ok(())
}

/// The closing section: how to check the report, with the exact command.
fn render_how_to_check(
    r: &Report,
    json_name: &str,
    signer: &Verifier,
    url: &str,
    log_key: &Verifier,
) -> String {
    let sig_name = json_name
        .strip_suffix(".json")
        .map_or_else(|| format!("{json_name}.sig"), |p| format!("{p}.sig"));
    let command = format!(
        "sovereign report check {} --signer-key {} --url {} --key {}",
        shell_quote(json_name),
        shell_quote(&signer.to_string()),
        shell_quote(url),
        shell_quote(&log_key.to_string())
    );
    format!(
        "## How to check this report\n\
         \n\
         `{sig_name}` is a signed note (C2SP signed-note) by `{signer}` that names the period, \
         the checkpoint above and the SHA-256 of `{json_name}` and of this file. The figures \
         depend on nothing but the log's first {size} entries and the period, so anyone can \
         compute them again. With the three files in one folder:\n\
         \n\
         ```sh\n\
         {command}\n\
         ```\n\
         \n\
         It checks the signature and both digests, that the checkpoint is signed by the log's \
         key and that the log as served now still holds it, and computes every figure again; \
         it exits 0 only if all hold. Take both keys from a source you trust, not from this \
         report: the signer's is `{signer_name}`, the log's `{log_name}`.\n",
        signer = signer.name(),
        size = r.log.tree_size,
        signer_name = key_name(signer),
        log_name = key_name(log_key),
    )
}

fn outcome_table(
    md: &mut String,
    column: &str,
    table: &BTreeMap<String, Outcomes>,
) -> std::fmt::Result {
    if table.is_empty() {
        return writeln!(md, "(none)");
    }
    writeln!(md, "| {column} | allow | deny | partial | total |")?;
    writeln!(md, "|---|---:|---:|---:|---:|")?;
    for (key, o) in table {
        writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            cell(key),
            o.allow,
            o.deny,
            o.partial,
            o.total()
        )?;
    }
    Ok(())
}

fn count_table(md: &mut String, column: &str, table: &BTreeMap<String, u64>) -> std::fmt::Result {
    if table.is_empty() {
        return writeln!(md, "(none)");
    }
    writeln!(md, "| {column} | count |")?;
    writeln!(md, "|---|---:|")?;
    for (key, n) in table {
        writeln!(md, "| {} | {n} |", cell(key))?;
    }
    Ok(())
}

/// A table cell from a name the log holds: its pipes and line breaks cannot break the
/// table.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// The report in one paragraph, for the terminal and the Markdown.
fn summary(r: &Report) -> String {
    let f = &r.figures;
    let a = &f.accesses;
    let c = &f.custody;
    let d = &f.data;
    let alerts = if f.alerts.by_name.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = f
            .alerts
            .by_name
            .iter()
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        format!(" ({})", names.join(", "))
    };
    format!(
        "From {} to {}, the log records {}: {} allowed, {} denied and {} partially allowed. \
         Custodian controls: {}, {} ({} reviewed), {}, {}. \
         Data: {}, {}, {}, {} ({}). {}{alerts}.",
        r.period.from,
        r.period.to,
        plural(a.total, "access decision", "access decisions"),
        a.by_outcome.allow,
        a.by_outcome.deny,
        a.by_outcome.partial,
        plural(c.grants, "grant", "grants"),
        plural(c.break_glass_uses, "break-glass use", "break-glass uses"),
        c.break_glass_reviews,
        plural(
            c.policy_activations,
            "policy activation",
            "policy activations"
        ),
        plural(
            c.jurisdictions_suspended.values().sum::<u64>()
                + c.jurisdictions_lifted.values().sum::<u64>(),
            "kill-switch command",
            "kill-switch commands"
        ),
        plural(d.exports, "export", "exports"),
        plural(d.erasures, "erasure", "erasures"),
        plural(d.migrations, "migration", "migrations"),
        plural(d.egress_pages, "egress page", "egress pages"),
        plural(d.egress_rows, "row", "rows"),
        plural(f.alerts.total, "alert", "alerts"),
    )
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `name+keyid`, how a key is named in messages.
pub fn key_name(v: &Verifier) -> String {
    format!("{}+{:08x}", v.name(), v.key_id())
}

/// `s` as one shell word: as is when safe, otherwise in single quotes.
fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

// ---------------------------------------------------------------------------
// Time

/// The period a report covers, in milliseconds since the Unix epoch: `from` included,
/// `to` excluded, as entry times (which have millisecond precision) are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    pub from: i64,
    pub to: i64,
}

impl Period {
    pub fn new(from: i64, to: i64) -> anyhow::Result<Period> {
        if to <= from {
            bail!(
                "--to ({}) is not after --from ({}): the period would be empty",
                format_time(to),
                format_time(from)
            );
        }
        Ok(Period { from, to })
    }

    fn contains(&self, time: i64) -> bool {
        (self.from..self.to).contains(&time)
    }

    /// `sovereign-report-FIRST-LAST`, FIRST and LAST the first and last days covered.
    fn default_prefix(&self) -> String {
        format!(
            "sovereign-report-{}-{}",
            format_date(self.from),
            format_date(self.to - 1)
        )
    }
}

/// `--from`: a date is its midnight (UTC).
pub fn parse_from(s: &str) -> Result<i64, String> {
    parse_date_or_time(s, false)
}

/// `--to`: a date is the end of that day (the next midnight, UTC, excluded).
pub fn parse_to(s: &str) -> Result<i64, String> {
    parse_date_or_time(s, true)
}

fn parse_date_or_time(s: &str, end_of_day: bool) -> Result<i64, String> {
    let s = s.trim();
    let ms = if s.len() == 10 {
        let midnight = parse_rfc3339(&format!("{s}T00:00:00Z"))
            .ok_or_else(|| format!("{s:?} is not a date: give YYYY-MM-DD, like 2026-11-01"))?;
        midnight + if end_of_day { DAY_MS } else { 0 }
    } else {
        parse_rfc3339(s).ok_or_else(|| {
            format!(
                "{s:?} is neither a date (YYYY-MM-DD) nor an RFC 3339 time in UTC (like 2026-11-01T09:00:00Z)"
            )
        })?
    };
    // Beyond year 9999 a time has no RFC 3339 form to write in the report.
    if ms >= YEAR_10000 {
        return Err(format!("{s:?} is after the year 9999"));
    }
    Ok(ms)
}

/// 10000-01-01T00:00:00Z, in milliseconds since the epoch.
const YEAR_10000: i64 = 253_402_300_800_000;

/// Milliseconds since the epoch of an RFC 3339 time in UTC (`Z`), as entries carry. A
/// fraction finer than a millisecond is rounded up: entry times are whole milliseconds, and
/// for those `t >= x` and `t < x` mean the same with `x` rounded up.
fn parse_rfc3339(s: &str) -> Option<i64> {
    // humantime reads times from 1970 on, as every entry's is.
    let since = humantime::parse_rfc3339(s)
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()?;
    Some(since.as_secs() as i64 * 1_000 + i64::from(since.subsec_nanos().div_ceil(1_000_000)))
}

fn system_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// RFC 3339 in UTC: whole seconds when the milliseconds are zero, else milliseconds.
fn format_time(ms: i64) -> String {
    let time = system_time(ms);
    if ms.rem_euclid(1_000) == 0 {
        humantime::format_rfc3339_seconds(time).to_string()
    } else {
        humantime::format_rfc3339_millis(time).to_string()
    }
}

/// `YYYY-MM-DD` of the UTC day holding `ms`.
fn format_date(ms: i64) -> String {
    let mut text = humantime::format_rfc3339_seconds(system_time(ms)).to_string();
    text.truncate(10);
    text
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOV_1: i64 = 1_793_491_200_000; // 2026-11-01T00:00:00Z

    #[test]
    fn a_plain_date_is_midnight_utc_and_to_covers_the_whole_day() {
        assert_eq!(parse_from("2026-11-01"), Ok(NOV_1));
        assert_eq!(parse_to("2026-11-01"), Ok(NOV_1 + DAY_MS));
        // November, the whole month, from its first to its last day.
        let period = Period::new(
            parse_from("2026-11-01").unwrap(),
            parse_to("2026-11-30").unwrap(),
        )
        .unwrap();
        assert_eq!(format_time(period.from), "2026-11-01T00:00:00Z");
        assert_eq!(format_time(period.to), "2026-12-01T00:00:00Z");
        assert_eq!(
            period.default_prefix(),
            "sovereign-report-2026-11-01-2026-11-30"
        );
        assert!(period.contains(parse_rfc3339("2026-11-30T23:59:59.999Z").unwrap()));
        assert!(!period.contains(parse_rfc3339("2026-12-01T00:00:00.000Z").unwrap()));
        assert!(!period.contains(parse_rfc3339("2026-10-31T23:59:59.999Z").unwrap()));
    }

    #[test]
    fn rfc3339_times_with_fractions() {
        assert_eq!(parse_to("2026-11-01T00:00:00Z"), Ok(NOV_1));
        assert_eq!(parse_from("2026-11-01T00:00:00.250Z"), Ok(NOV_1 + 250));
        assert_eq!(parse_from("2026-11-01T00:00:00.5Z"), Ok(NOV_1 + 500));
        // Finer than a millisecond rounds up, as entry times are whole milliseconds.
        assert_eq!(parse_from("2026-11-01T00:00:00.000001Z"), Ok(NOV_1 + 1));
        assert_eq!(
            parse_rfc3339("2026-11-22T00:16:08.439Z")
                .map(format_time)
                .as_deref(),
            Some("2026-11-22T00:16:08.439Z")
        );
        assert_eq!(format_time(NOV_1 + 1), "2026-11-01T00:00:00.001Z");
        // Leap years.
        assert!(parse_from("2028-02-29").is_ok());
        assert_eq!(
            format_date(parse_from("2000-03-01").unwrap() - 1),
            "2000-02-29"
        );
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn what_is_not_a_date_is_refused_with_the_forms_that_are() {
        for bad in [
            "2026-13-01",
            "2026-02-30",
            "2027-02-29",
            "2026-11-1",
            "yesterday",
            "2026-11-01T24:00:00Z",
            "2026-11-01T00:00:00",
            "2026-11-01T00:00:00+08:00",
            "2026-11-01T00:00Z",
            "２026-11-01",
            "1969-12-31T23:59:59Z",
        ] {
            let err = match parse_from(bad) {
                Ok(ms) => panic!("{bad:?} was read as {}", format_time(ms)),
                Err(err) => err,
            };
            assert!(err.contains("YYYY-MM-DD"), "{bad}: {err}");
        }
        assert!(parse_to("9999-12-31").unwrap_err().contains("9999"));
        assert!(parse_from("9999-12-31").is_ok());
    }

    #[test]
    fn an_empty_or_reversed_period_is_refused() {
        let err = Period::new(NOV_1, NOV_1 - 1).unwrap_err().to_string();
        assert_eq!(
            err,
            "--to (2026-10-31T23:59:59.999Z) is not after --from (2026-11-01T00:00:00Z): the period would be empty"
        );
        assert!(Period::new(NOV_1, NOV_1).is_err());
        assert!(Period::new(NOV_1, NOV_1 + 1).is_ok());
    }

    #[test]
    fn the_signed_text_reads_back_and_nothing_else_does() {
        let signed = Signed {
            from: "2026-11-01T00:00:00Z".into(),
            to: "2026-12-01T00:00:00Z".into(),
            origin: "sovereign.example/log".into(),
            tree_size: 42,
            root_hash: "AAAA".into(),
            json_sha256: "ab".repeat(32),
            markdown_sha256: "cd".repeat(32),
        };
        let text = signed.text();
        assert!(text.starts_with("sovereign/report/v1\nfrom 2026-11-01T00:00:00Z\nto "));
        assert_eq!(Signed::parse(&text), Ok(signed));
        assert!(Signed::parse(&text.replace("tree_size 42", "tree_size x")).is_err());
        assert!(Signed::parse(&text.replace("from ", "to ")).is_err());
        assert!(Signed::parse(&format!("{text}extra 1\n")).is_err());
        assert!(Signed::parse(text.trim_end()).is_err());
    }

    #[test]
    fn differences_are_named_by_member() {
        let claimed = serde_json::json!({"a": {"b": 1, "c": 2}, "d": "x", "extra": true});
        let expected = serde_json::json!({"a": {"b": 1, "c": 3}, "d": "x", "e": 0});
        let mut out = Vec::new();
        compare("", &claimed, &expected, &mut out);
        assert_eq!(
            out,
            [
                "a.c: the report says 2, the log gives 3",
                "e: missing from the report, the log gives 0",
                "extra: the report says true, the log gives no such member",
            ]
        );
    }

    #[test]
    fn shell_words() {
        assert_eq!(
            shell_quote("http://127.0.0.1:8080/log"),
            "http://127.0.0.1:8080/log"
        );
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
