//! What changes only by custodian signature: the active policy set, the invariant set it
//! must be proven against, algorithm releases and the kill switch.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::statement::{self, KillCommand, Statement};
use crate::store::{
    ACTIVE_INVARIANTS, ACTIVE_POLICY, INVARIANT_SET, POLICY_SET, RELEASE, SUSPENSION, Write,
    release_id,
};
use crate::{Custody, CustodyError, Event, LogFn, Person, Store};

/// A proposed (and perhaps once active) policy set. The hash identifies schema and policies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicySetRecord {
    pub hash: String,
    pub schema: String,
    pub policies: String,
    pub policy_ids: Vec<String>,
    pub proposed_by: Person,
    pub proposed_at: i64,
    /// When it was last made active.
    pub activated_at: Option<i64>,
    /// The signed activation statement and the custodian keys that signed it.
    pub signature: Option<String>,
    pub signers: Vec<String>,
    /// The solver's proofs against the invariant set in force when it was last activated.
    /// Absent only on sets activated before proofs were required.
    #[serde(default)]
    pub proofs: Option<Proofs>,
    /// The transparency-log index of the event that last wrote this record, set by the
    /// custody store in the same transaction that commits the write. Every stored record
    /// carries one (a record without is refused on load). In an [`crate::Event`] the record
    /// still carries the index of the write before (none for a new record).
    #[serde(default)]
    pub log_index: Option<u64>,
}

impl PolicySetRecord {
    /// A set as proposed: never activated, unsigned, without proofs, not yet logged.
    pub fn proposed(
        hash: String,
        (schema, policies): (String, String),
        policy_ids: Vec<String>,
        proposed_by: Person,
        proposed_at: i64,
    ) -> Self {
        PolicySetRecord {
            hash,
            schema,
            policies,
            policy_ids,
            proposed_by,
            proposed_at,
            activated_at: None,
            signature: None,
            signers: Vec::new(),
            proofs: None,
            log_index: None,
        }
    }
}

/// The named invariants every active policy set must be proven to imply, as the custodian
/// signed them. The hash is the prover's canonical hash of the text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvariantSetRecord {
    pub hash: String,
    pub text: String,
    /// The invariants' names, in the file's order.
    pub names: Vec<String>,
    pub proposed_by: Person,
    pub proposed_at: i64,
    pub activated_at: Option<i64>,
    pub signature: Option<String>,
    pub signers: Vec<String>,
    /// Proofs that the policy set active at the time satisfies these invariants (none when
    /// no policy set was active yet: the first start).
    pub proofs: Option<Proofs>,
    /// The transparency-log index of the event that last wrote this record, set by the
    /// custody store in the same transaction that commits the write. Every stored record
    /// carries one (a record without is refused on load). In an [`crate::Event`] the record
    /// still carries the index of the write before (none for a new record).
    #[serde(default)]
    pub log_index: Option<u64>,
}

impl InvariantSetRecord {
    /// A set as proposed: never activated, unsigned, without proofs, not yet logged.
    pub fn proposed(
        hash: String,
        text: String,
        names: Vec<String>,
        proposed_by: Person,
        proposed_at: i64,
    ) -> Self {
        InvariantSetRecord {
            hash,
            text,
            names,
            proposed_by,
            proposed_at,
            activated_at: None,
            signature: None,
            signers: Vec::new(),
            proofs: None,
            log_index: None,
        }
    }
}

/// What a solver established about one policy set against one invariant set: the evidence
/// an activation is logged with. Built by the caller; this crate knows nothing of Cedar or
/// the solver, only that each result must say proven.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proofs {
    pub policy_set: String,
    pub invariant_set: String,
    pub solver: String,
    pub solver_version: String,
    /// The per-query time limit the solver had.
    pub timeout_ms: u64,
    /// Request environments (principal type, action, resource type) each query covered.
    pub environments: usize,
    /// One result per invariant: [`Proofs::PROVEN`] or why not.
    pub invariants: Vec<ProofResult>,
    /// One result per policy of the set: [`Proofs::NEVER_ERRORS`] or why not.
    pub never_errors: Vec<ProofResult>,
    pub duration_ms: f64,
    /// Set when these proofs were not run by this gateway but shipped with its binary: the
    /// default policy set proven against the default invariants when the project was built
    /// and tested (named here, e.g. `sovereign 0.1.0`), used on a first start without a
    /// solver. Monitors prove them again with `audit replay --prove`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipped_with: Option<String>,
}

/// One invariant's or one policy's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProofResult {
    /// The invariant's name, or the policy's id.
    pub name: String,
    pub result: String,
    pub duration_ms: f64,
}

impl Proofs {
    pub const PROVEN: &'static str = "proven";
    pub const NEVER_ERRORS: &'static str = "never_errors";

    /// Every invariant proven (there is at least one) and no policy can error.
    pub fn all_proven(&self) -> bool {
        !self.invariants.is_empty()
            && self.invariants.iter().all(|r| r.result == Self::PROVEN)
            && self
                .never_errors
                .iter()
                .all(|r| r.result == Self::NEVER_ERRORS)
    }

    /// Refuses unless these are passing proofs of exactly `policy_set` against exactly
    /// `invariant_set`.
    pub(crate) fn require(
        &self,
        policy_set: &str,
        invariant_set: &str,
    ) -> Result<(), CustodyError> {
        if self.policy_set != policy_set || self.invariant_set != invariant_set {
            return Err(CustodyError::NotProven(format!(
                "the proofs given are of policy set {} against invariant set {}, not of {policy_set} against {invariant_set}",
                self.policy_set, self.invariant_set
            )));
        }
        if !self.all_proven() {
            let failed: Vec<String> = self
                .invariants
                .iter()
                .filter(|r| r.result != Self::PROVEN)
                .chain(
                    self.never_errors
                        .iter()
                        .filter(|r| r.result != Self::NEVER_ERRORS),
                )
                .map(|r| format!("{}: {}", r.name, r.result))
                .collect();
            return Err(CustodyError::NotProven(if failed.is_empty() {
                "no invariant was proven".into()
            } else {
                failed.join("; ")
            }));
        }
        Ok(())
    }
}

/// An algorithm artifact: submitted, then released (made active) by custodian signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub size: u64,
    /// Its manifest (`algorithm::Manifest`, JSON text, as submitted) and the manifest's
    /// SHA-256, which the custodian's statement names. Only a release with one runs.
    #[serde(default)]
    pub manifest: Option<String>,
    #[serde(default)]
    pub manifest_sha256: Option<String>,
    pub submitted_by: Person,
    pub submitted_at: i64,
    pub activated_at: Option<i64>,
    /// When another version of the same name replaced it, or the custodian deactivated it.
    pub retired_at: Option<i64>,
    pub signature: Option<String>,
    pub signers: Vec<String>,
    /// The transparency-log index of the event that last wrote this record, set by the
    /// custody store in the same transaction that commits the write. Every stored record
    /// carries one (a record without is refused on load). In an [`crate::Event`] the record
    /// still carries the index of the write before (none for a new record).
    #[serde(default)]
    pub log_index: Option<u64>,
}

impl Release {
    pub fn status(&self) -> &'static str {
        match (self.activated_at, self.retired_at) {
            (_, Some(_)) => "retired",
            (Some(_), None) => "active",
            (None, None) => "submitted",
        }
    }
}

/// The kill switch's state for one jurisdiction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspension {
    pub jurisdiction: String,
    pub suspended: bool,
    /// The serial of the last command applied.
    pub serial: u64,
    /// When the last command was applied.
    pub since: i64,
    pub signature: String,
    pub signers: Vec<String>,
    /// The transparency-log index of the event that last wrote this record, set by the
    /// custody store in the same transaction that commits the write. Every stored record
    /// carries one (a record without is refused on load). In an [`crate::Event`] the record
    /// still carries the index of the write before (none for a new record).
    #[serde(default)]
    pub log_index: Option<u64>,
}

const MAX_NAME_BYTES: usize = 64;

/// Algorithm names and versions: 1-64 of letters, digits, `.`, `_`, `-`; they appear in
/// signed statements (one word) and URL paths.
pub fn check_release_name(what: &str, value: &str) -> Result<(), CustodyError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_NAME_BYTES
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(CustodyError::Invalid(format!(
            "the {what} must be 1-{MAX_NAME_BYTES} characters of A-Z a-z 0-9 . _ -"
        )))
    }
}

impl Custody {
    // ----- policy sets -----

    /// The active policy set, if one was ever activated.
    pub fn active_policy(&self) -> Option<PolicySetRecord> {
        let state = self.read();
        let hash = state.active_policy.as_ref()?;
        state.policy_sets.get(hash).cloned()
    }

    pub fn policy_set(&self, hash: &str) -> Option<PolicySetRecord> {
        self.read().policy_sets.get(hash).cloned()
    }

    pub fn policy_sets(&self) -> (Option<String>, Vec<PolicySetRecord>) {
        let state = self.read();
        let mut sets: Vec<PolicySetRecord> = state.policy_sets.values().cloned().collect();
        sets.sort_by_key(|s| s.proposed_at);
        (state.active_policy.clone(), sets)
    }

    /// Stores a proposed policy set, already validated by the caller, under its hash.
    /// Proposing a set that is already known changes nothing and logs nothing.
    pub fn propose_policy(
        &self,
        set: PolicySetRecord,
        log: LogFn<'_>,
    ) -> Result<(PolicySetRecord, Option<u64>), CustodyError> {
        let mut store = self.lock_current()?;
        if let Some(existing) = self.policy_set(&set.hash) {
            return Ok((existing, None));
        }
        let index = store.commit(
            &[Write::record(POLICY_SET, &set.hash, &set)],
            Event::PolicyProposed(&set),
            log,
        )?;
        let set = PolicySetRecord {
            log_index: Some(index),
            ..set
        };
        self.update(|s| {
            s.policy_sets.insert(set.hash.clone(), set.clone());
        });
        Ok((set, Some(index)))
    }

    /// Makes the policy set `hash` active, if `signed` is a policy-activation statement for
    /// exactly that hash, signed by enough custodian keys, and `proofs` show that the set
    /// satisfies the active invariant set. `then` runs after the commit while changes are
    /// still held back, so that the caller's engine swap happens in commit order.
    pub fn activate_policy(
        &self,
        hash: &str,
        signed: &[u8],
        proofs: Proofs,
        now: i64,
        log: LogFn<'_>,
        then: impl FnOnce(&PolicySetRecord),
    ) -> Result<(PolicySetRecord, u64), CustodyError> {
        let verified = statement::verify(signed, &self.keys.verifiers, self.keys.policy_threshold)?;
        match &verified.statement {
            Statement::PolicyActivation { policy_set } if policy_set == hash => {}
            other => {
                return Err(CustodyError::WrongStatement(format!(
                    "it says \"{other}\", not \"activate policy set {hash}\""
                )));
            }
        }
        let mut store = self.lock_current()?;
        let mut set = self
            .policy_set(hash)
            .ok_or_else(|| CustodyError::UnknownPolicySet(hash.to_string()))?;
        // Activating the set in force changes nothing and logs nothing: gateways starting
        // together on an empty store all activate the first set, and only one does.
        if self.read().active_policy.as_deref() == Some(hash)
            && let Some(index) = set.log_index
        {
            drop(store);
            then(&set);
            return Ok((set, index));
        }
        // Checked under the lock: the invariants cannot change between this and the commit.
        let invariants = self.read().active_invariants.clone().ok_or_else(|| {
            CustodyError::NotProven("no invariant set is active to prove it against".into())
        })?;
        proofs.require(hash, &invariants)?;
        let previous = self.read().active_policy.clone();
        set.activated_at = Some(now);
        set.signature = Some(String::from_utf8_lossy(signed).into_owned());
        set.signers = verified.signers;
        set.proofs = Some(proofs);
        let event = Event::PolicyActivated {
            set: &set,
            previous: previous.as_deref(),
        };
        let writes = [
            Write::record(POLICY_SET, hash, &set),
            Write::Meta {
                key: ACTIVE_POLICY,
                value: hash.to_string(),
            },
        ];
        let index = store.commit(&writes, event, log)?;
        set.log_index = Some(index);
        self.update(|s| {
            s.policy_sets.insert(set.hash.clone(), set.clone());
            s.active_policy = Some(set.hash.clone());
        });
        then(&set);
        Ok((set, index))
    }

    // ----- invariant sets -----

    /// The invariant set every policy activation is proven against, once one was activated.
    pub fn active_invariants(&self) -> Option<InvariantSetRecord> {
        let state = self.read();
        let hash = state.active_invariants.as_ref()?;
        state.invariant_sets.get(hash).cloned()
    }

    pub fn invariant_set(&self, hash: &str) -> Option<InvariantSetRecord> {
        self.read().invariant_sets.get(hash).cloned()
    }

    /// Every invariant set ever proposed, oldest first, and which is in force.
    pub fn invariant_sets(&self) -> (Option<String>, Vec<InvariantSetRecord>) {
        let state = self.read();
        let mut sets: Vec<InvariantSetRecord> = state.invariant_sets.values().cloned().collect();
        sets.sort_by_key(|s| s.proposed_at);
        (state.active_invariants.clone(), sets)
    }

    /// Stores a proposed invariant set, already parsed by the caller, under its hash.
    /// Proposing a set that is already known changes nothing and logs nothing.
    pub fn propose_invariants(
        &self,
        set: InvariantSetRecord,
        log: LogFn<'_>,
    ) -> Result<(InvariantSetRecord, Option<u64>), CustodyError> {
        let mut store = self.lock_current()?;
        if let Some(existing) = self.invariant_set(&set.hash) {
            return Ok((existing, None));
        }
        let index = store.commit(
            &[Write::record(INVARIANT_SET, &set.hash, &set)],
            Event::InvariantsProposed(&set),
            log,
        )?;
        let set = InvariantSetRecord {
            log_index: Some(index),
            ..set
        };
        self.update(|s| {
            s.invariant_sets.insert(set.hash.clone(), set.clone());
        });
        Ok((set, Some(index)))
    }

    /// Makes `set` the active invariant set, if `signed` is an invariant-activation statement
    /// for exactly its hash, signed by as many custodian keys as a policy activation needs.
    /// While a policy set is active, `proofs` must show that it satisfies the new invariants,
    /// so the active policies never stand unproven.
    pub fn activate_invariants(
        &self,
        mut set: InvariantSetRecord,
        signed: &[u8],
        proofs: Option<Proofs>,
        now: i64,
        log: LogFn<'_>,
    ) -> Result<(InvariantSetRecord, u64), CustodyError> {
        let verified = statement::verify(signed, &self.keys.verifiers, self.keys.policy_threshold)?;
        match &verified.statement {
            Statement::InvariantActivation { invariant_set } if *invariant_set == set.hash => {}
            other => {
                return Err(CustodyError::WrongStatement(format!(
                    "it says \"{other}\", not \"activate invariant set {}\"",
                    set.hash
                )));
            }
        }
        let mut store = self.lock_current()?;
        // As for policy sets: activating the set in force changes nothing and logs nothing.
        if self.read().active_invariants.as_deref() == Some(set.hash.as_str())
            && let Some(active) = self.invariant_set(&set.hash)
            && let Some(index) = active.log_index
        {
            return Ok((active, index));
        }
        let (active_policy, previous) = {
            let state = self.read();
            (state.active_policy.clone(), state.active_invariants.clone())
        };
        match (&active_policy, &proofs) {
            (Some(policy_set), Some(proofs)) => proofs.require(policy_set, &set.hash)?,
            (Some(policy_set), None) => {
                return Err(CustodyError::NotProven(format!(
                    "the active policy set {policy_set} must be proven against the new invariants first"
                )));
            }
            (None, _) => {}
        }
        set.activated_at = Some(now);
        set.signature = Some(String::from_utf8_lossy(signed).into_owned());
        set.signers = verified.signers;
        set.proofs = proofs;
        let event = Event::InvariantsActivated {
            set: &set,
            previous: previous.as_deref(),
        };
        let writes = [
            Write::record(INVARIANT_SET, &set.hash, &set),
            Write::Meta {
                key: ACTIVE_INVARIANTS,
                value: set.hash.clone(),
            },
        ];
        let index = store.commit(&writes, event, log)?;
        set.log_index = Some(index);
        self.update(|s| {
            s.invariant_sets.insert(set.hash.clone(), set.clone());
            s.active_invariants = Some(set.hash.clone());
        });
        Ok((set, index))
    }

    // ----- algorithm releases -----

    pub fn releases(&self) -> Vec<Release> {
        let mut all: Vec<Release> = self.read().releases.values().cloned().collect();
        all.sort_by_key(|r| r.submitted_at);
        all
    }

    pub fn release(&self, name: &str, version: &str) -> Result<Release, CustodyError> {
        self.read()
            .releases
            .get(&(name.to_string(), version.to_string()))
            .cloned()
            .ok_or_else(|| CustodyError::UnknownRelease {
                name: name.to_string(),
                version: version.to_string(),
            })
    }

    /// Stores an artifact under its SHA-256 and records the submission. A version's bytes never
    /// change: the same bytes again are accepted (and nothing is logged), others refused.
    pub fn submit_algorithm(
        &self,
        name: &str,
        version: &str,
        bytes: &[u8],
        by: &Person,
        now: i64,
        log: LogFn<'_>,
    ) -> Result<(Release, Option<u64>), CustodyError> {
        check_release_name("name", name)?;
        check_release_name("version", version)?;
        let sha256 = hex::encode(Sha256::digest(bytes));
        let mut store = self.lock_current()?;
        if let Ok(existing) = self.release(name, version) {
            if existing.sha256 == sha256 {
                return Ok((existing, None));
            }
            return Err(CustodyError::VersionExists {
                name: name.to_string(),
                version: version.to_string(),
                existing: existing.sha256,
            });
        }
        store.write_artifact(&sha256, bytes)?;
        let release = Release {
            name: name.to_string(),
            version: version.to_string(),
            sha256,
            size: bytes.len() as u64,
            manifest: None,
            manifest_sha256: None,
            submitted_by: by.clone(),
            submitted_at: now,
            activated_at: None,
            retired_at: None,
            signature: None,
            signers: Vec::new(),
            log_index: None,
        };
        let (release, index) =
            self.commit_release(&mut store, release, |r| Event::AlgorithmSubmitted(r), log)?;
        Ok((release, Some(index)))
    }

    /// Activates a release when `signed` is a release statement naming exactly its name,
    /// version and digest, signed by enough custodian keys, and the stored artifact still has
    /// that digest. The previously active version of the same name is retired.
    pub fn activate_algorithm(
        &self,
        name: &str,
        version: &str,
        signed: &[u8],
        now: i64,
        log: LogFn<'_>,
    ) -> Result<(Release, u64), CustodyError> {
        let verified =
            statement::verify(signed, &self.keys.verifiers, self.keys.release_threshold)?;
        let mut store = self.lock_current()?;
        let mut release = self.release(name, version)?;
        // A statement carries no serial: once a release is retired (deactivated, or replaced
        // by another version), its old signature must not bring it back.
        if release.status() == "retired" {
            return Err(CustodyError::Invalid(format!(
                "{name} {version} was retired; a retired release is never activated again: submit a new version"
            )));
        }
        let expected = release.statement();
        if verified.statement != expected {
            return Err(CustodyError::WrongStatement(format!(
                "it says \"{}\", not \"{expected}\"",
                verified.statement
            )));
        }
        check_artifact(&release, store.read_artifact(&release.sha256)?)?;
        check_manifest(&release)?;
        release.activated_at = Some(now);
        release.retired_at = None;
        release.signature = Some(String::from_utf8_lossy(signed).into_owned());
        release.signers = verified.signers;
        let mut writes = vec![Write::record(RELEASE, &release_id(name, version), &release)];
        let mut retired: Vec<Release> = self
            .releases()
            .into_iter()
            .filter(|r| r.name == name && r.version != version && r.status() == "active")
            .map(|mut r| {
                r.retired_at = Some(now);
                r
            })
            .collect();
        for r in &retired {
            writes.push(Write::record(RELEASE, &release_id(&r.name, &r.version), r));
        }
        let index = store.commit(&writes, Event::AlgorithmActivated(&release), log)?;
        // Every record the change wrote now carries its index, the retired ones too.
        release.log_index = Some(index);
        for r in &mut retired {
            r.log_index = Some(index);
        }
        self.update(|s| {
            for r in retired.iter().chain([&release]) {
                s.releases
                    .insert((r.name.clone(), r.version.clone()), r.clone());
            }
        });
        Ok((release, index))
    }

    /// Attaches a manifest (its text, already checked by the caller to be a manifest of this
    /// release's name, version and module digest) to a submitted release, before the
    /// custodian signs it. Kept in the release's record and logged as a submission.
    /// The same manifest again changes nothing; another one, or any once the release was
    /// activated, is refused: a signed release never changes.
    pub fn attach_manifest(
        &self,
        name: &str,
        version: &str,
        manifest: &str,
        log: LogFn<'_>,
    ) -> Result<(Release, Option<u64>), CustodyError> {
        let sha256 = hex::encode(Sha256::digest(manifest));
        let mut store = self.lock_current()?;
        let mut release = self.release(name, version)?;
        if release.manifest_sha256.as_deref() == Some(sha256.as_str()) {
            return Ok((release, None));
        }
        if release.manifest_sha256.is_some() || release.status() != "submitted" {
            return Err(CustodyError::Invalid(format!(
                "{name} {version} already has {}; a release never changes: submit a new version",
                match &release.manifest_sha256 {
                    Some(m) => format!("manifest {m}"),
                    None => format!("status {}", release.status()),
                }
            )));
        }
        release.manifest = Some(manifest.to_string());
        release.manifest_sha256 = Some(sha256);
        let (release, index) =
            self.commit_release(&mut store, release, |r| Event::AlgorithmSubmitted(r), log)?;
        Ok((release, Some(index)))
    }

    /// Deactivates an active release: it runs no more, from this change on. No signature is
    /// needed to stop an algorithm (the custodian's operator role, checked by the caller);
    /// it is retired for good: to run again the algorithm needs a new version, signed.
    pub fn deactivate_algorithm(
        &self,
        name: &str,
        version: &str,
        now: i64,
        log: LogFn<'_>,
    ) -> Result<(Release, u64), CustodyError> {
        let mut store = self.lock_current()?;
        let mut release = self.release(name, version)?;
        if release.status() != "active" {
            return Err(CustodyError::Invalid(format!(
                "{name} {version} is {}, not active",
                release.status()
            )));
        }
        release.retired_at = Some(now);
        self.commit_release(&mut store, release, |r| Event::AlgorithmDeactivated(r), log)
    }

    /// Commits one release record with the event `event` makes of it; the record then
    /// carries the entry's index, in the store and in memory.
    fn commit_release(
        &self,
        store: &mut Store,
        mut release: Release,
        event: impl for<'r> Fn(&'r Release) -> Event<'r>,
        log: LogFn<'_>,
    ) -> Result<(Release, u64), CustodyError> {
        let id = release_id(&release.name, &release.version);
        let index = store.commit(
            &[Write::record(RELEASE, &id, &release)],
            event(&release),
            log,
        )?;
        release.log_index = Some(index);
        self.update(|s| {
            s.releases.insert(
                (release.name.clone(), release.version.clone()),
                release.clone(),
            );
        });
        Ok((release, index))
    }

    /// The active release of `name`, with its manifest and module, both checked against
    /// their digests: what a run needs. `None` when no version of `name` is active.
    pub fn runnable(&self, name: &str) -> Result<Option<Runnable>, CustodyError> {
        let Some(release) = self
            .read()
            .releases
            .values()
            .find(|r| r.name == name && r.status() == "active")
            .cloned()
        else {
            return Ok(None);
        };
        let Some(manifest) = check_manifest(&release)? else {
            return Err(CustodyError::Invalid(format!(
                "{name} {} was released without a manifest, so it cannot run",
                release.version
            )));
        };
        let module = check_artifact(&release, self.lock_store().read_artifact(&release.sha256)?)?;
        Ok(Some(Runnable {
            release,
            manifest,
            module,
        }))
    }

    /// The active releases, by name.
    pub fn active_releases(&self) -> Vec<Release> {
        let mut active: Vec<Release> = self
            .read()
            .releases
            .values()
            .filter(|r| r.status() == "active")
            .cloned()
            .collect();
        active.sort_by(|a, b| a.name.cmp(&b.name));
        active
    }

    /// The artifact's bytes, after checking them against the recorded digest. The fetch is
    /// logged; a mismatch is an error and nothing is served.
    pub fn fetch_algorithm(
        &self,
        name: &str,
        version: &str,
        log: LogFn<'_>,
    ) -> Result<(Release, Vec<u8>, u64), CustodyError> {
        let release = self.release(name, version)?;
        let bytes = self.read_artifact(&release)?;
        let index = log(Event::AlgorithmFetched(&release)).map_err(CustodyError::LogUnavailable)?;
        Ok((release, bytes, index))
    }

    fn read_artifact(&self, release: &Release) -> Result<Vec<u8>, CustodyError> {
        let bytes = self.lock_store().read_artifact(&release.sha256)?;
        check_artifact(release, bytes)
    }

    // ----- kill switch -----

    /// Whether the kill switch suspends `jurisdiction`.
    pub fn is_suspended(&self, jurisdiction: &str) -> bool {
        self.read()
            .suspensions
            .get(jurisdiction)
            .is_some_and(|s| s.suspended)
    }

    pub fn suspensions(&self) -> Vec<Suspension> {
        self.read().suspensions.values().cloned().collect()
    }

    /// Applies a signed kill-switch command whose serial is above the last one applied for
    /// its jurisdiction. `known` says whether a jurisdiction is one the gateway serves.
    pub fn apply_kill_switch(
        &self,
        signed: &[u8],
        known: impl Fn(&str) -> bool,
        now: i64,
        log: LogFn<'_>,
    ) -> Result<(Suspension, u64), CustodyError> {
        let verified = statement::verify(
            signed,
            &self.keys.verifiers,
            self.keys.kill_switch_threshold,
        )?;
        let Statement::KillSwitch {
            command,
            jurisdiction,
            serial,
        } = verified.statement
        else {
            return Err(CustodyError::WrongStatement(format!(
                "it says \"{}\", not a kill-switch command",
                verified.statement
            )));
        };
        if !known(&jurisdiction) {
            return Err(CustodyError::WrongStatement(format!(
                "`{jurisdiction}` is not a configured jurisdiction"
            )));
        }
        let mut store = self.lock_current()?;
        let last = self
            .read()
            .suspensions
            .get(&jurisdiction)
            .map_or(0, |s| s.serial);
        if serial <= last {
            return Err(CustodyError::StaleSerial {
                jurisdiction,
                got: serial,
                last,
            });
        }
        let suspension = Suspension {
            jurisdiction: jurisdiction.clone(),
            suspended: command == KillCommand::Suspend,
            serial,
            since: now,
            signature: String::from_utf8_lossy(signed).into_owned(),
            signers: verified.signers,
            log_index: None,
        };
        let index = store.commit(
            &[Write::record(SUSPENSION, &jurisdiction, &suspension)],
            Event::KillSwitch(&suspension),
            log,
        )?;
        let suspension = Suspension {
            log_index: Some(index),
            ..suspension
        };
        self.update(|s| {
            s.suspensions.insert(jurisdiction, suspension.clone());
        });
        Ok((suspension, index))
    }
}

/// An active release's manifest and module, as stored and checked against their digests.
#[derive(Debug, Clone)]
pub struct Runnable {
    pub release: Release,
    pub manifest: String,
    pub module: Vec<u8>,
}

impl Release {
    /// The statement the custodian signs to release exactly this version.
    pub fn statement(&self) -> Statement {
        Statement::AlgorithmRelease {
            name: self.name.clone(),
            version: self.version.clone(),
            sha256: self.sha256.clone(),
            manifest: self.manifest_sha256.clone(),
        }
    }
}

/// The release's manifest, if it has one, when it still has the digest recorded (and
/// signed) for it. A digest without a manifest, or the reverse, is a mismatch too.
pub(crate) fn check_manifest(release: &Release) -> Result<Option<String>, CustodyError> {
    let actual = release
        .manifest
        .as_ref()
        .map(|m| hex::encode(Sha256::digest(m)));
    if actual != release.manifest_sha256 {
        return Err(CustodyError::DigestMismatch {
            name: release.name.clone(),
            version: format!("{} (its manifest)", release.version),
            expected: release.manifest_sha256.clone().unwrap_or("none".into()),
            actual: actual.unwrap_or("none".into()),
        });
    }
    Ok(release.manifest.clone())
}

/// The artifact's bytes, when they still have the digest recorded for the release.
fn check_artifact(release: &Release, bytes: Vec<u8>) -> Result<Vec<u8>, CustodyError> {
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != release.sha256 {
        return Err(CustodyError::DigestMismatch {
            name: release.name.clone(),
            version: release.version.clone(),
            expected: release.sha256.clone(),
            actual,
        });
    }
    Ok(bytes)
}
