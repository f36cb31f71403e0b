//! Checks that state read from the custody database is what the custodian authorised, so that
//! someone who can write the SQLite file but holds no custodian key cannot put anything in
//! force: not a policy set, an invariant set, a release or a kill-switch state without a
//! statement signed by enough configured custodian keys, not a grant without the approvals it
//! needs, and no record without the log index of the event that wrote it.
//!
//! What is not in force (a proposed policy set, a submitted release, a pending request) needs
//! no signature: it only has to carry its log index. What only the log can show is left to the
//! caller: see the crate's documentation.

use std::collections::BTreeMap;

use crate::statement::{self, KillCommand, Statement};
use crate::{
    AccessRequest, CustodyError, InForce, InvariantSetRecord, Keys, Ledger, PolicySetRecord,
    RequestKind, State,
};

/// Refuses `state` with [`CustodyError::Unverified`] naming the first record that fails.
pub(crate) fn check(state: &State, keys: &Keys, ledger: &dyn Ledger) -> Result<(), CustodyError> {
    logged(state)?;
    let invariants = active_invariants(state, keys)?;
    active_policy(state, invariants, keys)?;
    for suspension in state.suspensions.values() {
        let command = if suspension.suspended {
            KillCommand::Suspend
        } else {
            KillCommand::Lift
        };
        let expected = Statement::KillSwitch {
            command,
            jurisdiction: suspension.jurisdiction.clone(),
            serial: suspension.serial,
        };
        signed_as(
            Some(&suspension.signature),
            &expected,
            keys,
            keys.kill_switch_threshold,
        )
        .map_err(|problem| {
            unverified(
                format!("kill switch for {}", suspension.jurisdiction),
                problem,
            )
        })?;
    }
    releases(state, keys)?;
    for request in state.requests.values() {
        grant(request)
            .map_err(|problem| unverified(format!("access request {}", request.id), problem))?;
    }
    in_the_log(state, ledger)
}

/// Each change in force is the one the log recorded at its index (see [`Ledger`]).
fn in_the_log(state: &State, ledger: &dyn Ledger) -> Result<(), CustodyError> {
    let check = |what: String, change: InForce<'_>| {
        ledger
            .check(change)
            .map_err(|problem| unverified(what, format!("the log does not bear it out: {problem}")))
    };
    if let Some(set) = state
        .active_policy
        .as_ref()
        .and_then(|h| state.policy_sets.get(h))
    {
        check(
            format!("active policy set {}", set.hash),
            InForce::PolicySet(set),
        )?;
    }
    if let Some(set) = state
        .active_invariants
        .as_ref()
        .and_then(|h| state.invariant_sets.get(h))
    {
        check(
            format!("active invariant set {}", set.hash),
            InForce::InvariantSet(set),
        )?;
    }
    for suspension in state.suspensions.values() {
        check(
            format!("kill switch for {}", suspension.jurisdiction),
            InForce::Suspension(suspension),
        )?;
    }
    for release in state.releases.values().filter(|r| r.status() == "active") {
        check(
            format!("release {} {}", release.name, release.version),
            InForce::Release(release),
        )?;
    }
    for request in state.requests.values().filter(|r| r.starts_at.is_some()) {
        check(
            format!("access request {}", request.id),
            InForce::Grant(request),
        )?;
    }
    Ok(())
}

fn unverified(what: String, problem: String) -> CustodyError {
    CustodyError::Unverified { what, problem }
}

/// Every record carries the log index of the event that last wrote it: the crate sets it on
/// every write, so a record without one was not written by it.
fn logged(state: &State) -> Result<(), CustodyError> {
    let missing = |what: String| {
        Err(unverified(
            what,
            "it carries no transparency-log index".into(),
        ))
    };
    if let Some(r) = state.requests.values().find(|r| r.log_index.is_none()) {
        return missing(format!("access request {}", r.id));
    }
    if let Some(s) = state.policy_sets.values().find(|s| s.log_index.is_none()) {
        return missing(format!("policy set {}", s.hash));
    }
    if let Some(s) = state
        .invariant_sets
        .values()
        .find(|s| s.log_index.is_none())
    {
        return missing(format!("invariant set {}", s.hash));
    }
    if let Some(r) = state.releases.values().find(|r| r.log_index.is_none()) {
        return missing(format!("release {} {}", r.name, r.version));
    }
    if let Some(s) = state.suspensions.values().find(|s| s.log_index.is_none()) {
        return missing(format!("kill switch for {}", s.jurisdiction));
    }
    Ok(())
}

/// A record's stored signed note must verify with the configured keys, meet `threshold`, and
/// say exactly `expected`: a signature for something else (another hash, another serial, the
/// other command) authorises nothing here.
fn signed_as(
    signature: Option<&str>,
    expected: &Statement,
    keys: &Keys,
    threshold: usize,
) -> Result<(), String> {
    let signed = signature.ok_or("it carries no custodian signature")?;
    let verified = statement::verify(signed.as_bytes(), &keys.verifiers, threshold)
        .map_err(|e| format!("its custodian signature does not verify: {e}"))?;
    if verified.statement != *expected {
        return Err(format!(
            "its signature says \"{}\", not \"{expected}\"",
            verified.statement
        ));
    }
    Ok(())
}

/// The set in force must be the one activated last: pointing `meta` back at an older set that
/// was once legitimately activated is refused, as far as the stored indices tell. (They are
/// not signed; only the log shows whether they are true.)
fn newest_activation<'a>(
    active: Option<u64>,
    activated: impl Iterator<Item = (&'a str, Option<u64>)>,
) -> Result<(), String> {
    match activated
        .filter(|(_, index)| *index > active)
        .max_by_key(|(_, index)| *index)
    {
        Some((later, Some(index))) => Err(format!(
            "{later} was activated after it (log index {index}): it is not the newest activation"
        )),
        _ => Ok(()),
    }
}

fn active_invariants<'a>(
    state: &'a State,
    keys: &Keys,
) -> Result<Option<&'a InvariantSetRecord>, CustodyError> {
    let Some(hash) = &state.active_invariants else {
        // Once a set was activated one is always in force: nothing the crate does removes it.
        if let Some(set) = state
            .invariant_sets
            .values()
            .find(|s| s.activated_at.is_some())
        {
            return Err(unverified(
                "the active invariant set".into(),
                format!(
                    "none is in force, though invariant set {} was activated",
                    set.hash
                ),
            ));
        }
        return Ok(None);
    };
    let what = format!("active invariant set {hash}");
    let set = state
        .invariant_sets
        .get(hash)
        .ok_or_else(|| unverified(what.clone(), "no such set is stored".into()))?;
    let check = || {
        if set.activated_at.is_none() {
            return Err("it was never activated".to_string());
        }
        let expected = Statement::InvariantActivation {
            invariant_set: hash.clone(),
        };
        // Invariant activations need as many signatures as policy activations.
        signed_as(
            set.signature.as_deref(),
            &expected,
            keys,
            keys.policy_threshold,
        )?;
        newest_activation(
            set.log_index,
            state
                .invariant_sets
                .values()
                .filter(|s| s.activated_at.is_some())
                .map(|s| (s.hash.as_str(), s.log_index)),
        )
    };
    check().map_err(|problem| unverified(what, problem))?;
    Ok(Some(set))
}

fn active_policy(
    state: &State,
    invariants: Option<&InvariantSetRecord>,
    keys: &Keys,
) -> Result<(), CustodyError> {
    let Some(hash) = &state.active_policy else {
        if let Some(set) = state
            .policy_sets
            .values()
            .find(|s| s.activated_at.is_some())
        {
            return Err(unverified(
                "the active policy set".into(),
                format!(
                    "none is in force, though policy set {} was activated",
                    set.hash
                ),
            ));
        }
        return Ok(());
    };
    let what = format!("active policy set {hash}");
    let set = state
        .policy_sets
        .get(hash)
        .ok_or_else(|| unverified(what.clone(), "no such set is stored".into()))?;
    let check = || {
        if set.activated_at.is_none() {
            return Err("it was never activated".to_string());
        }
        let expected = Statement::PolicyActivation {
            policy_set: hash.clone(),
        };
        signed_as(
            set.signature.as_deref(),
            &expected,
            keys,
            keys.policy_threshold,
        )?;
        proven(set, invariants)?;
        newest_activation(
            set.log_index,
            state
                .policy_sets
                .values()
                .filter(|s| s.activated_at.is_some())
                .map(|s| (s.hash.as_str(), s.log_index)),
        )
    };
    check().map_err(|problem| unverified(what, problem))
}

/// Passing proofs of exactly this policy set against exactly the invariant set in force, as
/// `activate_policy` requires them. They are on the policy set's record when it was activated
/// under these invariants, or on the invariant set's record when the invariants were activated
/// while it was in force.
fn proven(set: &PolicySetRecord, invariants: Option<&InvariantSetRecord>) -> Result<(), String> {
    let invariants = invariants.ok_or("no invariant set is in force to prove it against")?;
    let mut why = Vec::new();
    for proofs in [set.proofs.as_ref(), invariants.proofs.as_ref()]
        .into_iter()
        .flatten()
    {
        match proofs.require(&set.hash, &invariants.hash) {
            Ok(()) => return Ok(()),
            Err(e) => why.push(e.to_string()),
        }
    }
    if why.is_empty() {
        why.push("it carries no proofs".into());
    }
    Err(why.join("; "))
}

/// Each active release is signed for exactly its name, version and digest, and a name has at
/// most one active version (activating one retires the others). Retired releases are not in
/// force and not checked: un-retiring one makes it active, and then it is.
fn releases(state: &State, keys: &Keys) -> Result<(), CustodyError> {
    let mut active: BTreeMap<&str, &str> = BTreeMap::new();
    for release in state.releases.values().filter(|r| r.status() == "active") {
        let what = || format!("release {} {}", release.name, release.version);
        crate::signed::check_manifest(release)?;
        let expected = release.statement();
        signed_as(
            release.signature.as_deref(),
            &expected,
            keys,
            keys.release_threshold,
        )
        .map_err(|problem| unverified(what(), problem))?;
        if let Some(other) = active.insert(&release.name, &release.version) {
            return Err(unverified(
                what(),
                format!("version {other} of the same algorithm is active too"),
            ));
        }
    }
    Ok(())
}

/// A request that is or was a grant (it has a start) must have been granted as `approve`
/// grants: by at least `approvals_required` (at least one) distinct approvers, none of them the
/// requester or from the requester's entity, for the duration asked. A break-glass use needs no
/// approval, only the window it asked for. Approvers are names, not signatures: approvals
/// invented whole are for the log to show.
fn grant(request: &AccessRequest) -> Result<(), String> {
    let Some(starts_at) = request.starts_at else {
        return Ok(());
    };
    if request.ends_at != Some(starts_at + request.duration_seconds) {
        return Err(format!(
            "its grant runs from {starts_at} to {:?}, not for the {} seconds asked",
            request.ends_at, request.duration_seconds
        ));
    }
    if request.kind == RequestKind::BreakGlass {
        return Ok(());
    }
    if request.approvals_required < 1 {
        return Err("a request needs at least one approval".into());
    }
    let requester = &request.requester;
    let mut approvers: Vec<&str> = Vec::new();
    for approval in &request.approvals {
        if approval.by == requester.id {
            return Err(format!("it is approved by its requester {}", requester.id));
        }
        if approval.entity == requester.entity {
            return Err(format!(
                "it is approved by {} of the requester's own entity {}",
                approval.by, requester.entity
            ));
        }
        if approvers.contains(&approval.by.as_str()) {
            return Err(format!("{} approved it more than once", approval.by));
        }
        approvers.push(&approval.by);
    }
    if approvers.len() < request.approvals_required as usize {
        return Err(format!(
            "it is granted with {} approval(s), but {} are required",
            approvers.len(),
            request.approvals_required
        ));
    }
    Ok(())
}
