//! Replay: decides every logged access again and compares (`sovereign audit replay`).
//!
//! `audit verify` proves that the log is complete and unaltered; it cannot tell
//! whether the decisions it holds are the ones the policies give. A v2 access entry
//! records every attribute the gateway gave Cedar (principal, resource, context) and
//! the hash of the policy set that decided, so a monitor can fetch that policy set,
//! check its text against the hash, rebuild each Cedar request and decide it
//! itself. A gateway that served data its policies forbid, and logged the access as
//! allowed, is caught here.
//!
//! v1 access entries lack attributes Cedar reads (the site's jurisdiction, the
//! request's time), so they are counted as not replayable rather than guessed at.
//!
//! Replay also reads the custody entries that change which policies decide: every
//! `policy-activated` entry must carry passing proofs that the set satisfies the
//! invariant set in force (the last `invariants-activated` entry before it), and an
//! `invariants-activated` entry made while a policy set was active must carry passing
//! proofs of that set. An activation without them is reported and fails the replay.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::path::PathBuf;

use anyhow::bail;
use policy::{AccessRequest, Action, Context, Decision, PolicyEngine, Principal, Resource};
use serde_json::Value;
use tlog::TileFetcher;
use tlog::checkpoint::Checkpoint;
use tlog::note::Verifier;

use crate::entry::{AccessV2, EntryInfo, Event};
use crate::fetch::{HttpFetcher, local_dir};
use crate::problems::Problems;
use crate::progress::Progress;
use crate::runs::Runs;
use crate::verify::verify_entries;

/// A replayed log: its checkpoint, and what deciding its entries again found.
pub struct Replay {
    pub checkpoint: Checkpoint,
    /// Entries the log's server said it held beyond the checkpoint: not replayed yet.
    pub not_yet_covered: u64,
    replayer: Replayer,
}

impl Replay {
    /// Mismatches, unusable policy sets and activations without passing proofs: the replay
    /// passes only with none.
    pub fn failures(&self) -> u64 {
        self.replayer.failures()
    }

    /// What failed, in one sentence (empty when nothing did).
    pub fn verdict(&self) -> String {
        self.replayer.verdict()
    }

    /// What kind of failure the replay's failures are: only policy sets that could not be
    /// fetched from a source that could not be reached is [`crate::Failure::Unreachable`]
    /// (nothing was found wrong); anything else is a check that failed.
    pub fn failure_kind(&self) -> crate::Failure {
        let r = &self.replayer;
        let found_wrong = r.mismatches.count + r.activations.unproven.count + r.runs.problems.count;
        let unreachable = matches!(&r.source, Source::Http(_, _, unreachable) if unreachable.get());
        if found_wrong == 0 && unreachable {
            crate::Failure::Unreachable
        } else {
            crate::Failure::CheckFailed
        }
    }

    /// `audit replay --json`: what the text report says, as one object.
    pub fn to_json(&self) -> Value {
        let r = &self.replayer;
        let a = &r.activations;
        let unusable: Vec<Value> = r
            .unusable()
            .map(|(hash, set, why)| {
                serde_json::json!({"policy_set": hash, "entries": set.entries, "why": why})
            })
            .collect();
        let kinds: BTreeMap<&str, u64> = r.kinds.iter().map(|(k, n)| (*k, *n)).collect();
        serde_json::json!({
            "ok": self.failures() == 0,
            "verdict": self.verdict(),
            "checkpoint": crate::verify::checkpoint_json(&self.checkpoint),
            "replayed_entries": r.replayed_entries,
            "replayed_decisions": r.replayed_decisions,
            "mismatches": r.mismatches.to_json(),
            "unusable_policy_sets": unusable,
            "activations": {
                "policy_set": a.policy_activations,
                "invariant_set": a.invariant_activations,
                "unproven": a.unproven.to_json(),
                "reproved": a.reproved,
                "shipped_proofs": a.shipped,
                "proven_pairs": a.proven.len(),
            },
            "runs": r.runs.to_json(),
            "v1_access_entries": r.v1_access,
            "kinds": kinds,
            "not_yet_covered": self.not_yet_covered,
        })
    }
}

/// The replay's findings, one line each (after the checkpoint's lines).
impl fmt::Display for Replay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.replayer.report(f)
    }
}

/// Whether [`replay`] proves every logged activation again, here, with cvc5.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reprove<'a> {
    /// Check that every activation logs passing proofs, without proving again.
    #[default]
    No,
    /// Prove each (policy set, invariant set) pair the log says was proven again, with the
    /// invariant sets from `invariants` (default: the gateway's `/v1/invariants` next to its
    /// `/log`); `CVC5` names the solver, else `cvc5` on PATH.
    Yes { invariants: Option<&'a str> },
}

/// Verifies the log at `url` (signed by `verifier`, its checkpoint cosigned by the quorum of
/// `witnesses`) as `verify` does, then decides every v2 access entry again with the policy
/// set it names, fetched from `policies` (default: the gateway's `/v1/policies` next to its
/// `/log`), and checks every activation's proofs.
pub fn replay(
    url: &str,
    verifier: &Verifier,
    witnesses: &tlog::cosignature::WitnessPolicy,
    policies: Option<&str>,
    reprove: Reprove<'_>,
    progress: &mut dyn Progress,
) -> anyhow::Result<Replay> {
    let log = crate::witness::open_witnessed_log(url, verifier, witnesses)?;
    let source = Source::open(POLICY_SETS, policies, url)?;
    // Checked before the log is read, so a missing solver is told at once.
    let prover = match reprove {
        Reprove::Yes { invariants } => Some(Prover {
            invariants: Source::open(INVARIANT_SETS, invariants, url)?,
            solver: prove::Solver::from_env().map_err(|e| {
                crate::failure::usage(format!("--prove needs the cvc5 solver: {e}"))
            })?,
        }),
        Reprove::No => None,
    };
    let mut replayer = Replayer::new(source);
    // What the entries said counts only once the whole log is verified.
    let checkpoint = verify_entries(
        &*log,
        verifier,
        None,
        progress,
        &mut |index, info, entry| {
            replayer.add(index, info, entry);
            Ok(())
        },
    )?;
    if let Some(prover) = &prover {
        replayer.reprove(prover);
    }
    Ok(Replay {
        not_yet_covered: crate::verify::not_yet_covered(&*log, checkpoint.size),
        checkpoint,
        replayer,
    })
}

// ---------------------------------------------------------------------------
// Where policy sets come from

/// What a [`Source`] serves: policy sets or invariant sets, each by hash, as the gateway
/// serves them at `<route>/<hash>`.
struct Kind {
    what: &'static str,
    route: &'static str,
    flag: &'static str,
}

const POLICY_SETS: Kind = Kind {
    what: "policy sets",
    route: "/v1/policies",
    flag: "--policies",
};
const INVARIANT_SETS: Kind = Kind {
    what: "invariant sets",
    route: "/v1/invariants",
    flag: "--invariants",
};

/// Policy or invariant sets, by hash: `GET <prefix>/<hash>` or the file `<dir>/<hash>`, each
/// holding the JSON the gateway serves at `<route>/<hash>`.
enum Source {
    /// The fetcher, its base URL, and whether a fetch could not reach it.
    Http(HttpFetcher, String, std::cell::Cell<bool>),
    Dir(PathBuf),
}

impl Source {
    /// The location given by `kind.flag`, or the gateway's `kind.route` next to its `/log`.
    fn open(kind: Kind, given: Option<&str>, log_url: &str) -> anyhow::Result<Source> {
        let Kind { what, route, flag } = kind;
        let location = match given {
            Some(p) => p.to_string(),
            None => match log_url.trim_end_matches('/').strip_suffix("/log") {
                Some(base) => format!("{base}{route}"),
                None => bail!(
                    "cannot tell where the {what} are from --url {log_url:?} (it does not end in /log): give {flag} (a URL serving {route}/<hash>, or a directory of files named <hash>)"
                ),
            },
        };
        match local_dir(&location)? {
            None => Ok(Source::Http(
                HttpFetcher::new(&location),
                location.trim_end_matches('/').to_string(),
                std::cell::Cell::new(false),
            )),
            Some(dir) if dir.is_dir() => Ok(Source::Dir(dir)),
            Some(dir) => bail!(
                "{flag}: {} is not a directory of {what} (files named <hash>)",
                dir.display()
            ),
        }
    }

    /// Where set `hash` is read from, for messages.
    fn locate(&self, hash: &str) -> String {
        match self {
            Source::Http(_, base, _) => format!("{base}/{hash}"),
            Source::Dir(dir) => dir.join(hash).display().to_string(),
        }
    }

    fn fetch(&self, hash: &str) -> Result<Vec<u8>, String> {
        match self {
            Source::Http(fetcher, _, unreachable) => match fetcher.fetch(hash) {
                Ok(Some(data)) => Ok(data),
                Ok(None) => Err("not found (HTTP 404)".into()),
                Err(e) => {
                    if crate::failure::classify_std(&e) == Some(crate::Failure::Unreachable) {
                        unreachable.set(true);
                    }
                    Err(e.to_string())
                }
            },
            Source::Dir(dir) => fs::read(dir.join(hash)).map_err(|e| e.to_string()),
        }
    }

    /// Fetches policy set `hash`, checks that its text hashes to `hash`, and loads it.
    fn load(&self, hash: &str) -> Result<PolicyEngine, String> {
        let (schema, policies) = self.policy_texts(hash)?;
        PolicyEngine::new(&schema, &policies).map_err(|e| format!("it does not load: {e}"))
    }

    /// Fetches policy set `hash` and checks that its schema and policies hash to `hash`.
    fn policy_texts(&self, hash: &str) -> Result<(String, String), String> {
        let data = self.fetch(hash)?;
        let set: Value =
            serde_json::from_slice(&data).map_err(|e| format!("not a policy set (JSON): {e}"))?;
        let (Some(schema), Some(policies)) = (set["schema"].as_str(), set["policies"].as_str())
        else {
            return Err(
                "not a policy set: it needs string members \"schema\" and \"policies\"".into(),
            );
        };
        if let Some(named) = set.get("hash").and_then(Value::as_str)
            && named != hash
        {
            return Err(format!("it names itself {named}, not {hash}"));
        }
        let computed = policy::policy_set_hash(schema, policies);
        if computed != hash {
            return Err(format!(
                "its schema and policies hash to {computed}, not {hash}: it is not the policy set the log names, refusing to replay with it"
            ));
        }
        Ok((schema.to_string(), policies.to_string()))
    }

    /// Fetches invariant set `hash` and parses it against `schema`, checking that its
    /// canonical hash is `hash`.
    fn invariants(&self, hash: &str, schema: &str) -> Result<prove::Invariants, String> {
        let data = self.fetch(hash)?;
        let set: Value = serde_json::from_slice(&data)
            .map_err(|e| format!("not an invariant set (JSON): {e}"))?;
        let Some(text) = set["text"].as_str() else {
            return Err("not an invariant set: it needs a string member \"text\"".into());
        };
        let invariants = prove::Invariants::parse_with_schema(schema, text)
            .map_err(|e| format!("it does not parse: {e}"))?;
        if invariants.hash() != hash {
            return Err(format!(
                "its text hashes to {}, not {hash}: it is not the invariant set the log names",
                invariants.hash()
            ));
        }
        Ok(invariants)
    }
}

/// What `--prove` needs: where the invariant sets are, and a solver.
struct Prover {
    invariants: Source,
    solver: prove::Solver,
}

// ---------------------------------------------------------------------------
// Replaying

/// One policy set's state during the run.
struct PolicySet {
    /// The loaded set, or why it cannot be used.
    engine: Result<PolicyEngine, String>,
    /// Access entries it decided.
    entries: u64,
}

struct Replayer {
    source: Source,
    sets: BTreeMap<String, PolicySet>,
    /// Entries whose replay differs from what they record.
    mismatches: Problems,
    /// v2 access entries replayed, and their decisions.
    replayed_entries: u64,
    replayed_decisions: u64,
    /// Access entries in format v1.
    v1_access: u64,
    /// Entries by kind, as `audit verify` counts them.
    kinds: HashMap<&'static str, u64>,
    /// Policy and invariant activations, in log order.
    activations: Activations,
    /// Algorithm releases in force, and the runs checked against them.
    runs: Runs,
}

/// What the custody entries say about which policies and invariants were in force, and
/// which activations lack passing proofs.
#[derive(Default)]
struct Activations {
    policy_set: Option<String>,
    invariant_set: Option<String>,
    policy_activations: u64,
    invariant_activations: u64,
    /// Each (policy set, invariant set) pair logged as proven, with the first entry that says
    /// so: what `--prove` proves again.
    proven: BTreeMap<(String, String), u64>,
    /// Pairs proven again by `--prove`, when it ran.
    reproved: Option<usize>,
    /// Activations without passing proofs.
    unproven: Problems,
    /// Activations whose proofs were shipped with the gateway's binary, not run by it (a
    /// first start without a solver): what `--prove` is for.
    shipped: u64,
}

impl Activations {
    fn add(&mut self, index: u64, entry: &[u8]) {
        let Ok(custody) = serde_json::from_slice::<Event>(entry) else {
            return self.unproven(format!(
                "entry {index}: a custody entry that cannot be read"
            ));
        };
        let d = &custody.details;
        if d["proofs"]["shipped_with"].is_string() {
            self.shipped += 1;
        }
        let named = |key: &str| d[key].as_str().unwrap_or("(none)").to_string();
        match custody.event.as_deref().unwrap_or_default() {
            "policy-activated" => {
                self.policy_activations += 1;
                let policy_set = named("policy_set");
                let checked = match self.invariant_set.as_deref() {
                    None => Err("no invariant set was activated before it".to_string()),
                    Some(invariants) => check_proofs(&d["proofs"], &policy_set, invariants),
                };
                match checked {
                    Ok(()) => self.logged_proven(index, &policy_set),
                    Err(why) => self.unproven(format!(
                        "entry {index}: policy set {policy_set} activated without passing proofs: {why}"
                    )),
                }
                self.policy_set = Some(policy_set);
            }
            "invariants-activated" => {
                self.invariant_activations += 1;
                let invariant_set = named("invariant_set");
                let policy_set = self.policy_set.clone();
                self.invariant_set = Some(invariant_set.clone());
                if let Some(policy_set) = policy_set {
                    match check_proofs(&d["proofs"], &policy_set, &invariant_set) {
                        Ok(()) => self.logged_proven(index, &policy_set),
                        Err(why) => self.unproven(format!(
                            "entry {index}: invariant set {invariant_set} activated while policy set {policy_set} was in force, without passing proofs of it: {why}"
                        )),
                    }
                }
            }
            _ => {}
        }
    }

    /// Remembers that entry `index` logs passing proofs of `policy_set` against the
    /// invariant set in force.
    fn logged_proven(&mut self, index: u64, policy_set: &str) {
        if let Some(invariant_set) = &self.invariant_set {
            self.proven
                .entry((policy_set.to_string(), invariant_set.clone()))
                .or_insert(index);
        }
    }

    fn unproven(&mut self, line: String) {
        self.unproven.push(line);
    }
}

/// Whether `proofs` (the `proofs` member of an activation's details) are passing proofs of
/// `policy_set` against `invariant_set`: every invariant proven (at least one) and every
/// policy proven never to error.
fn check_proofs(proofs: &Value, policy_set: &str, invariant_set: &str) -> Result<(), String> {
    if !proofs.is_object() {
        return Err("the entry has no proofs".into());
    }
    let of = proofs["policy_set"].as_str().unwrap_or("(none)");
    let against = proofs["invariant_set"].as_str().unwrap_or("(none)");
    if of != policy_set || against != invariant_set {
        return Err(format!(
            "its proofs are of policy set {of} against invariant set {against}, not of {policy_set} against {invariant_set} (in force)"
        ));
    }
    let results = |key: &str| proofs[key].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if results("invariants").is_empty() {
        return Err("its proofs prove no invariant".into());
    }
    let failed: Vec<String> = results("invariants")
        .iter()
        .filter(|r| r["result"] != "proven")
        .chain(
            results("never_errors")
                .iter()
                .filter(|r| r["result"] != "never_errors"),
        )
        .map(|r| {
            format!(
                "{}: {}",
                r["name"].as_str().unwrap_or("?"),
                r["result"].as_str().unwrap_or("no result")
            )
        })
        .collect();
    if !failed.is_empty() {
        return Err(format!("not proven: {}", failed.join("; ")));
    }
    Ok(())
}

impl Replayer {
    fn new(source: Source) -> Replayer {
        Replayer {
            source,
            sets: BTreeMap::new(),
            mismatches: Problems::default(),
            replayed_entries: 0,
            replayed_decisions: 0,
            v1_access: 0,
            kinds: HashMap::new(),
            activations: Activations::default(),
            runs: Runs::default(),
        }
    }

    /// Replays entry `index` if it is a v2 access entry.
    fn add(&mut self, index: u64, info: EntryInfo, entry: &[u8]) {
        *self.kinds.entry(info.kind).or_default() += 1;
        if matches!(info.kind, "custody" | "algorithm-run")
            && let Ok(event) = serde_json::from_slice::<Event>(entry)
        {
            match event.event.as_deref() {
                Some(custody) => self.runs.custody(index, custody, &event.details),
                None => self.runs.run(index, &event.details),
            }
        }
        if info.kind == "custody" {
            return self.activations.add(index, entry);
        }
        if info.kind != "access" {
            return;
        }
        if info.version < 2 {
            self.v1_access += 1;
            return;
        }
        let access: AccessV2 = match serde_json::from_slice(entry) {
            Ok(a) => a,
            Err(e) => return self.mismatch(format!("entry {index}: cannot be replayed: {e}")),
        };
        let set = self
            .sets
            .entry(access.policy_set.clone())
            .or_insert_with(|| PolicySet {
                engine: self.source.load(&access.policy_set),
                entries: 0,
            });
        set.entries += 1;
        if access.action == Action::Compute.as_str() {
            self.runs.compute(index, &access);
        }
        let result = match &set.engine {
            Ok(engine) => replay_entry(engine, &access),
            // Reported once, with the set, in the summary.
            Err(_) => return,
        };
        self.replayed_entries += 1;
        match result {
            Ok(replayed) => {
                self.replayed_decisions += replayed.decisions;
                if !replayed.problems.is_empty() {
                    let line = format!(
                        "entry {index}: {}: {}",
                        describe(&access),
                        replayed.problems.join("; ")
                    );
                    self.mismatch(line);
                }
            }
            Err(why) => self.mismatch(format!(
                "entry {index}: {}: cannot be replayed: {why}",
                describe(&access)
            )),
        }
    }

    /// Proves every (policy set, invariant set) pair the log says was proven again, here:
    /// both fetched by hash and checked against it, then the same proof the gateway ran.
    fn reprove(&mut self, prover: &Prover) {
        let pairs: Vec<((String, String), u64)> = self
            .activations
            .proven
            .iter()
            .map(|(pair, index)| (pair.clone(), *index))
            .collect();
        let mut reproved = 0;
        for ((policy_set, invariant_set), index) in pairs {
            let result = self
                .source
                .policy_texts(&policy_set)
                .map_err(|e| format!("policy set {}: {e}", self.source.locate(&policy_set)))
                .and_then(|(schema, policies)| {
                    let invariants = prover
                        .invariants
                        .invariants(&invariant_set, &schema)
                        .map_err(|e| {
                            format!(
                                "invariant set {}: {e}",
                                prover.invariants.locate(&invariant_set)
                            )
                        })?;
                    prove::prove(&schema, &policies, &invariants, &prover.solver)
                        .map_err(|e| e.to_string())
                });
            match result {
                Ok(report) if report.all_proven() => reproved += 1,
                Ok(report) => self.activations.unproven(format!(
                    "entry {index}: policy set {policy_set} does not prove against invariant set {invariant_set} here, though the log says it did:\n{report}"
                )),
                Err(why) => self.activations.unproven(format!(
                    "entry {index}: cannot prove policy set {policy_set} against invariant set {invariant_set} again: {why}"
                )),
            }
        }
        self.activations.reproved = Some(reproved);
    }

    fn mismatch(&mut self, line: String) {
        self.mismatches.push(line);
    }

    /// Policy sets that could not be used.
    fn unusable(&self) -> impl Iterator<Item = (&String, &PolicySet, &String)> {
        self.sets
            .iter()
            .filter_map(|(hash, set)| set.engine.as_ref().err().map(|why| (hash, set, why)))
    }

    fn failures(&self) -> u64 {
        self.mismatches.count
            + self.unusable().count() as u64
            + self.activations.unproven.count
            + self.runs.problems.count
    }

    fn verdict(&self) -> String {
        let mut problems = Vec::new();
        let mismatches = self.mismatches.count;
        if mismatches > 0 {
            problems.push(format!(
                "{mismatches} access {} not match the policy set that decided them",
                if mismatches == 1 {
                    "entry does"
                } else {
                    "entries do"
                }
            ));
        }
        let unusable = self.unusable().count();
        if unusable > 0 {
            problems.push(format!(
                "{unusable} policy set{} could not be used",
                if unusable == 1 { "" } else { "s" }
            ));
        }
        let unproven = self.activations.unproven.count;
        if unproven > 0 {
            problems.push(format!(
                "{unproven} activation{} without passing proofs",
                if unproven == 1 { "" } else { "s" }
            ));
        }
        let runs = self.runs.problems.count;
        if runs > 0 {
            problems.push(format!(
                "{runs} algorithm run{} or input decision{} outside the release in force",
                if runs == 1 { "" } else { "s" },
                if runs == 1 { "" } else { "s" }
            ));
        }
        problems.join(", and ")
    }

    fn report(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.mismatches.write(out, "mismatch:  ")?;
        for (hash, set, why) in self.unusable() {
            writeln!(
                out,
                "policy set: {hash} ({}): {why}; its {} access entr{} were not replayed",
                self.source.locate(hash),
                set.entries,
                if set.entries == 1 { "y" } else { "ies" }
            )?;
        }
        let usable = self.sets.len() - self.unusable().count();
        writeln!(
            out,
            "replayed:   {} decisions of {} access entries, under {usable} policy set{}",
            self.replayed_decisions,
            self.replayed_entries,
            if usable == 1 { "" } else { "s" }
        )?;
        writeln!(out, "mismatches: {}", self.mismatches.count)?;
        let a = &self.activations;
        a.unproven.write(out, "unproven:  ")?;
        writeln!(
            out,
            "activations: {} policy set, {} invariant set; {} without passing proofs",
            a.policy_activations, a.invariant_activations, a.unproven.count
        )?;
        if a.shipped > 0 {
            writeln!(
                out,
                "shipped:    {} activation{} with the proofs shipped with the gateway's binary, not run by it{}",
                a.shipped,
                if a.shipped == 1 { "" } else { "s" },
                if a.reproved.is_some() {
                    " (proven again here, below)"
                } else {
                    "; --prove proves them again here"
                }
            )?;
        }
        if let Some(reproved) = a.reproved {
            writeln!(
                out,
                "reproved:   {reproved} of {} (policy set, invariant set) pairs the log says were proven",
                a.proven.len()
            )?;
        }
        self.runs.write(out)?;
        if self.v1_access > 0 {
            writeln!(
                out,
                "not replayable: {} v1 access entries (format v1 lacks attributes the policies read)",
                self.v1_access
            )?;
        }
        let mut kinds: Vec<_> = self.kinds.iter().collect();
        kinds.sort();
        let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        writeln!(out, "entries:    {}", kinds.join(", "))?;
        Ok(())
    }
}

/// What replaying one entry found.
struct Replayed {
    decisions: u64,
    problems: Vec<String>,
}

/// Rebuilds each Cedar request the entry records, decides it, and compares.
fn replay_entry(engine: &PolicyEngine, e: &AccessV2) -> Result<Replayed, String> {
    let action = action(&e.action)?;
    if e.decisions.is_empty() {
        return Err("it records no decision".into());
    }
    let principal = Principal {
        id: e.principal.id.clone(),
        entity: e.principal.entity.clone(),
        entity_country: e.principal.entity_country.clone(),
        location: e.principal.location.clone(),
        clearance: e.principal.clearance.clone(),
        roles: e.principal.roles.clone(),
    };
    let context = Context {
        purpose: e.purpose.clone(),
        reason_code: e.reason_code.clone(),
        network_zone: e.principal.network_zone.clone(),
        time: e.context_time,
        grant: e.grant.as_ref().map(|g| g.kind.clone()).unwrap_or_default(),
        own_data: e.own_data,
    };

    let mut problems = Vec::new();
    let mut allowed = Vec::with_capacity(e.decisions.len());
    for d in &e.decisions {
        let jurisdiction = d
            .subject_jurisdiction
            .clone()
            .unwrap_or_else(|| e.subject_jurisdiction.clone());
        let suspended = d.suspended.unwrap_or(e.suspended);
        let resource = if action.on_subject() {
            Resource::Subject {
                subject_jurisdiction: jurisdiction,
                site: e.site.clone(),
                site_jurisdiction: e.site_jurisdiction.clone(),
                suspended,
            }
        } else {
            let (Some(collection), Some(class)) = (&e.collection, &d.field_class) else {
                return Err(format!(
                    "a decision of action {:?} names no collection and field class",
                    e.action
                ));
            };
            Resource::Data {
                subject_jurisdiction: jurisdiction,
                collection: collection.clone(),
                field_class: class.clone(),
                site: e.site.clone(),
                site_jurisdiction: e.site_jurisdiction.clone(),
                approval_required: e.approval_required,
                suspended,
            }
        };
        let decision = engine.decide(&AccessRequest {
            principal: principal.clone(),
            action,
            resource,
            context: context.clone(),
        });
        let what = match (&d.subject_jurisdiction, &d.field_class) {
            (Some(j), Some(c)) => format!("{j} {c}"),
            (Some(j), None) => j.clone(),
            (None, Some(c)) => c.clone(),
            (None, None) => "subject".into(),
        };
        if decision.allowed != d.allowed {
            problems.push(format!(
                "{what}: recorded {}, the policy set {}",
                if d.allowed { "allowed" } else { "denied" },
                gives(&decision)
            ));
        } else if decision.policies != d.policies {
            // The right outcome for the wrong reason is still not what the policies say.
            problems.push(format!(
                "{what}: recorded as decided by [{}], the policy set {}",
                d.policies.join(", "),
                gives(&decision)
            ));
        }
        allowed.push(decision.allowed && !suspended);
    }

    let expected = expected_outcome(&allowed);
    if e.outcome != expected {
        let why = if e.suspended {
            " (the subject's jurisdiction was suspended by the kill switch)"
        } else {
            ""
        };
        problems.push(format!(
            "outcome: recorded {}, the decisions give {expected}{why}",
            e.outcome
        ));
    }
    Ok(Replayed {
        decisions: e.decisions.len() as u64,
        problems,
    })
}

/// The outcome an entry must record: a decision on a suspended jurisdiction counts as
/// denied whatever the policies say; all allowed is allow, none is deny, some is partial.
fn expected_outcome(allowed: &[bool]) -> &'static str {
    if allowed.iter().all(|a| !a) {
        "deny"
    } else if allowed.iter().all(|a| *a) {
        "allow"
    } else {
        "partial"
    }
}

/// What Cedar decided, and by which policies.
fn gives(d: &Decision) -> String {
    let verb = if d.allowed { "allows" } else { "denies" };
    if !d.errors.is_empty() {
        return format!("{verb} (evaluation errors: {})", d.errors.join("; "));
    }
    if d.policies.is_empty() {
        return format!("{verb} (no policy permits it)");
    }
    format!("{verb} by {}", d.policies.join(", "))
}

fn action(name: &str) -> Result<Action, String> {
    Action::parse(name).ok_or_else(|| format!("unknown action {name:?}"))
}

/// Who did what to what, for a mismatch line.
fn describe(e: &AccessV2) -> String {
    let target = match &e.collection {
        Some(c) => format!("collection {c}"),
        None => "subject".to_string(),
    };
    let grant = match &e.grant {
        Some(g) => format!(", under a {} grant", g.kind),
        None => String::new(),
    };
    format!(
        "{} of {target} of a {} subject by {} ({}, located {}{grant}), recorded {}",
        e.action,
        e.subject_jurisdiction,
        e.principal.id,
        e.principal.entity,
        e.principal.location,
        e.outcome
    )
}
