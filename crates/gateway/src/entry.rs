//! Log entries, format v2 (documented in the README, "Log entry format"). An entry says who
//! asked for what, about which subject (as a keyed pseudonym), which fields by name, and what
//! was decided by which policies. It never holds a field value or a raw subject id: entries
//! are built only from the types below, none of which can carry a value.

use serde::Serialize;

use crate::auth::Authenticated;
use policy::{Action, Decision};
use vault::FieldClass;

pub use crate::pseudonym::Pseudonymizer;

pub const ENTRY_VERSION: u32 = 2;

#[derive(Serialize)]
pub struct PrincipalRecord<'a> {
    id: &'a str,
    entity: &'a str,
    entity_country: &'a str,
    location: &'a str,
    clearance: &'a [String],
    roles: &'a [String],
    network_zone: &'a str,
}

#[derive(Serialize)]
struct DecisionRecord<'a> {
    field_class: Option<&'static str>,
    /// On entries about every jurisdiction (`subject_jurisdiction` "*"): the jurisdiction
    /// this decision was about, and whether the kill switch suspended it.
    #[serde(skip_serializing_if = "Option::is_none")]
    subject_jurisdiction: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    suspended: Option<bool>,
    allowed: bool,
    policies: &'a [String],
}

#[derive(Serialize)]
struct AccessRecord<'a> {
    v: u32,
    kind: &'static str,
    time: String,
    principal: PrincipalRecord<'a>,
    action: &'static str,
    /// The subject's pseudonym; null for bulk actions (egress, scan).
    subject: Option<&'a str>,
    subject_jurisdiction: &'a str,
    site: &'a str,
    site_jurisdiction: &'a str,
    collection: Option<&'a str>,
    approval_required: bool,
    suspended: bool,
    fields: &'a [String],
    outcome: &'static str,
    decisions: Vec<DecisionRecord<'a>>,
    policies: Vec<String>,
    policy_set: &'a str,
    purpose: &'a str,
    reason_code: &'a str,
    context_time: i64,
    grant: Option<GrantRecord<'a>>,
    own_data: bool,
}

#[derive(Serialize)]
struct GrantRecord<'a> {
    id: &'a str,
    kind: &'a str,
}

/// What an access concerned, for its log entry.
pub struct AccessTarget<'a> {
    /// None for bulk actions, which concern no one subject.
    pub subject_pseudonym: Option<String>,
    /// The subject's jurisdiction, or `*` when each decision names its own.
    pub subject_jurisdiction: &'a str,
    pub site: &'a str,
    pub site_jurisdiction: &'a str,
    pub collection: Option<&'a str>,
    pub approval_required: bool,
    /// Field names only.
    pub fields: &'a [String],
}

/// One decision of an access, as the log records it.
pub struct LoggedDecision<'a> {
    pub class: Option<FieldClass>,
    /// Set on entries about every jurisdiction: the one this decision was about.
    pub jurisdiction: Option<&'a str>,
    /// The kill switch suspended the jurisdiction: denied whatever the policy says.
    pub suspended: bool,
    pub decision: &'a Decision,
}

impl LoggedDecision<'_> {
    fn allowed(&self) -> bool {
        self.decision.allowed && !self.suspended
    }
}

/// The custodian grant an access used: its id, and its kind as Cedar saw it (`context.grant`).
pub struct GrantUsed<'a> {
    pub id: &'a str,
    pub kind: &'a str,
}

/// Everything one access entry records.
pub struct Access<'a> {
    pub who: &'a Authenticated,
    pub action: Action,
    pub target: &'a AccessTarget<'a>,
    pub decisions: &'a [LoggedDecision<'a>],
    pub context: &'a policy::Context,
    pub grant: Option<&'a GrantUsed<'a>>,
    pub policy_set: &'a str,
}

/// `allow` if every decision allowed, `deny` if none did, `partial` otherwise; a decision
/// on a jurisdiction the kill switch suspends counts as denied.
pub fn outcome(decisions: &[LoggedDecision<'_>]) -> &'static str {
    let allowed = decisions.iter().filter(|d| d.allowed()).count();
    if allowed == decisions.len() && allowed > 0 {
        "allow"
    } else if allowed == 0 {
        "deny"
    } else {
        "partial"
    }
}

/// The ids of every policy that decided any of `decisions`, sorted, once each.
pub fn deciding_policies(decisions: &[Decision]) -> Vec<String> {
    let mut policies: Vec<String> = decisions
        .iter()
        .flat_map(|d| d.policies.iter().cloned())
        .collect();
    policies.sort();
    policies.dedup();
    policies
}

/// The entry for one access decision (one decision per field class and jurisdiction, or one
/// per jurisdiction for subject-level actions, where the class is `None`).
pub fn access_entry(a: &Access<'_>) -> Vec<u8> {
    let plain: Vec<Decision> = a.decisions.iter().map(|d| d.decision.clone()).collect();
    let target = a.target;
    let record = AccessRecord {
        v: ENTRY_VERSION,
        kind: "access",
        time: now_rfc3339(),
        principal: principal_record(a.who),
        action: a.action.as_str(),
        subject: target.subject_pseudonym.as_deref(),
        subject_jurisdiction: target.subject_jurisdiction,
        site: target.site,
        site_jurisdiction: target.site_jurisdiction,
        collection: target.collection,
        approval_required: target.approval_required,
        // One jurisdiction: its suspension. Every jurisdiction: each decision says its own.
        suspended: a
            .decisions
            .iter()
            .all(|d| d.jurisdiction.is_none() && d.suspended)
            && !a.decisions.is_empty(),
        fields: target.fields,
        outcome: outcome(a.decisions),
        decisions: a
            .decisions
            .iter()
            .map(|d| DecisionRecord {
                field_class: d.class.map(|c| c.as_str()),
                subject_jurisdiction: d.jurisdiction,
                suspended: d.jurisdiction.map(|_| d.suspended),
                allowed: d.decision.allowed,
                policies: &d.decision.policies,
            })
            .collect(),
        policies: deciding_policies(&plain),
        policy_set: a.policy_set,
        purpose: &a.context.purpose,
        reason_code: &a.context.reason_code,
        context_time: a.context.time,
        grant: a.grant.map(|g| GrantRecord {
            id: g.id,
            kind: g.kind,
        }),
        own_data: a.context.own_data,
    };
    serde_json::to_vec(&record).expect("entries always serialise")
}

pub fn principal_record(who: &Authenticated) -> PrincipalRecord<'_> {
    PrincipalRecord {
        id: &who.public_id,
        entity: &who.principal.entity,
        entity_country: &who.principal.entity_country,
        location: &who.principal.location,
        clearance: &who.principal.clearance,
        roles: &who.principal.roles,
        network_zone: &who.network_zone,
    }
}

#[derive(Serialize)]
struct CustodyRecord<'a> {
    v: u32,
    kind: &'static str,
    time: String,
    event: &'static str,
    actor: Option<PrincipalRecord<'a>>,
    details: serde_json::Value,
}

/// The entry for a custodian control changing: an access request decided, a grant revoked, a
/// policy set or algorithm release activated, the kill switch used. Subject ids in access
/// requests' scopes become pseudonyms.
pub fn custody_entry(
    event: &custody::Event<'_>,
    actor: Option<&Authenticated>,
    pseudonyms: &Pseudonymizer,
) -> Vec<u8> {
    use custody::Event as E;
    use serde_json::json;
    let request = |r: &custody::AccessRequest| {
        json!({
            "id": r.id,
            "kind": r.kind,
            "requester": r.requester,
            "action": r.action,
            "subjects": r.subjects.iter().map(|s| pseudonyms.pseudonym(s)).collect::<Vec<_>>(),
            "collections": r.collections,
            "fields": r.fields,
            "purpose": r.purpose,
            "reason_code": r.reason_code,
            "duration_seconds": r.duration_seconds,
            "approvals_required": r.approvals_required,
            "approvers": r.approvals.iter().map(|a| &a.by).collect::<Vec<_>>(),
            "starts_at": r.starts_at,
            "ends_at": r.ends_at,
        })
    };
    let release = |r: &custody::Release| {
        json!({
            "name": r.name,
            "version": r.version,
            "sha256": r.sha256,
            "size": r.size,
            "manifest_sha256": r.manifest_sha256,
            "signers": r.signers,
        })
    };
    let (name, details) = match *event {
        E::RequestCreated(r) => ("access-request-created", request(r)),
        E::RequestApproved {
            request: r,
            granted,
        } => {
            let mut details = request(r);
            details["granted"] = granted.into();
            ("access-request-approved", details)
        }
        E::RequestDenied(r) => ("access-request-denied", request(r)),
        E::GrantRevoked(r) => ("grant-revoked", request(r)),
        E::BreakGlassStarted(r) => ("break-glass-started", request(r)),
        E::BreakGlassReviewed(r) => ("break-glass-reviewed", request(r)),
        E::PolicyProposed(set) => (
            "policy-proposed",
            json!({"policy_set": set.hash, "policy_ids": set.policy_ids}),
        ),
        E::PolicyActivated { set, previous } => (
            "policy-activated",
            json!({
                "policy_set": set.hash,
                "previous": previous,
                "policy_ids": set.policy_ids,
                "signers": set.signers,
                "invariant_set": set.proofs.as_ref().map(|p| &p.invariant_set),
                "proofs": set.proofs,
            }),
        ),
        E::InvariantsProposed(set) => (
            "invariants-proposed",
            json!({"invariant_set": set.hash, "invariants": set.names}),
        ),
        E::InvariantsActivated { set, previous } => (
            "invariants-activated",
            json!({
                "invariant_set": set.hash,
                "previous": previous,
                "invariants": set.names,
                "signers": set.signers,
                "proofs": set.proofs,
            }),
        ),
        E::AlgorithmSubmitted(r) => ("algorithm-submitted", release(r)),
        E::AlgorithmActivated(r) => {
            // The manifest itself, so that a monitor knows what the release may read.
            let mut details = release(r);
            details["manifest"] = r.manifest.clone().into();
            ("algorithm-activated", details)
        }
        E::AlgorithmFetched(r) => ("algorithm-fetched", release(r)),
        E::AlgorithmDeactivated(r) => ("algorithm-deactivated", release(r)),
        E::KillSwitch(s) => (
            if s.suspended {
                "jurisdiction-suspended"
            } else {
                "jurisdiction-lifted"
            },
            json!({
                "jurisdiction": s.jurisdiction,
                "serial": s.serial,
                "signers": s.signers,
            }),
        ),
    };
    serde_json::to_vec(&CustodyRecord {
        v: ENTRY_VERSION,
        kind: "custody",
        time: now_rfc3339(),
        event: name,
        actor: actor.map(principal_record),
        details,
    })
    .expect("entries always serialise")
}

#[derive(Serialize)]
struct DataEventRecord<'a> {
    v: u32,
    kind: &'static str,
    time: String,
    actor: Option<PrincipalRecord<'a>>,
    details: serde_json::Value,
}

/// What happened to data in bulk, as opposed to one access decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataEvent {
    /// Interoperable fields sent out of the jurisdiction: rows and the digest of the bytes.
    Egress,
    /// A subject erased: records deleted and data keys destroyed.
    Erasure,
    /// A subject's data handed over (portability).
    Export,
    /// One subject moved out of a non-compliant site: the evidence of the move.
    Migration,
    /// A released algorithm ran (or was stopped or refused) for one subject.
    AlgorithmRun,
}

impl DataEvent {
    pub fn kind(self) -> &'static str {
        match self {
            DataEvent::Egress => "egress",
            DataEvent::Erasure => "erasure",
            DataEvent::Export => "export",
            DataEvent::Migration => "migration",
            DataEvent::AlgorithmRun => "algorithm-run",
        }
    }
}

/// The entry for a bulk data event. `details` must hold no field value and no raw subject
/// id (callers put pseudonyms, counts and digests in it).
pub fn data_event_entry(
    event: DataEvent,
    actor: Option<&Authenticated>,
    details: serde_json::Value,
) -> Vec<u8> {
    serde_json::to_vec(&DataEventRecord {
        v: ENTRY_VERSION,
        kind: event.kind(),
        time: now_rfc3339(),
        actor: actor.map(principal_record),
        details,
    })
    .expect("entries always serialise")
}

#[derive(Serialize)]
struct AlertRecord<'a> {
    v: u32,
    kind: &'static str,
    time: String,
    alert: &'a str,
    severity: &'a str,
    actor: Option<PrincipalRecord<'a>>,
    details: serde_json::Value,
}

/// The entry for an alert (such as a break-glass use), which monitors watch for.
pub fn alert_entry(
    alert: &str,
    severity: &str,
    actor: Option<&Authenticated>,
    details: serde_json::Value,
) -> Vec<u8> {
    serde_json::to_vec(&AlertRecord {
        v: ENTRY_VERSION,
        kind: "alert",
        time: now_rfc3339(),
        alert,
        severity,
        actor: actor.map(principal_record),
        details,
    })
    .expect("entries always serialise")
}

#[derive(Serialize)]
struct ConfigRecord<'a> {
    v: u32,
    kind: &'static str,
    time: String,
    event: &'a str,
    policy_set: &'a str,
    policies: &'a [String],
    config_sha256: &'a str,
    version: &'static str,
}

/// The entry written when the gateway starts with a configuration and policy set.
pub fn config_entry(
    event: &str,
    policy_set: &str,
    policies: &[String],
    config_sha256: &str,
) -> Vec<u8> {
    serde_json::to_vec(&ConfigRecord {
        v: ENTRY_VERSION,
        kind: "config",
        time: now_rfc3339(),
        event,
        policy_set,
        policies,
        config_sha256,
        version: env!("CARGO_PKG_VERSION"),
    })
    .expect("entries always serialise")
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod monitor_reads_every_kind;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_keyed_and_stable() {
        let a = Pseudonymizer::from_hex(&"11".repeat(32)).unwrap();
        let b = Pseudonymizer::from_hex(&"22".repeat(32)).unwrap();
        assert_eq!(a.pseudonym("u-1"), a.pseudonym("u-1"));
        assert_ne!(a.pseudonym("u-1"), a.pseudonym("u-2"));
        assert_ne!(a.pseudonym("u-1"), b.pseudonym("u-1"));
        assert_eq!(a.pseudonym("u-1").len(), 32);
        assert!(!a.pseudonym("u-1").contains("u-1"));
        assert!(Pseudonymizer::from_hex("abcd").is_err());
    }

    #[test]
    fn outcome_names_partial_reads() {
        let allow = Decision {
            allowed: true,
            policies: vec![],
            errors: vec![],
        };
        let deny = Decision {
            allowed: false,
            policies: vec![],
            errors: vec![],
        };
        fn d(decision: &Decision, suspended: bool) -> LoggedDecision<'_> {
            LoggedDecision {
                class: None,
                jurisdiction: None,
                suspended,
                decision,
            }
        }
        let allow_ = d(&allow, false);
        assert_eq!(outcome(&[d(&allow, false), d(&allow, false)]), "allow");
        assert_eq!(outcome(&[d(&allow, true)]), "deny");
        assert_eq!(outcome(&[allow_, d(&deny, false)]), "partial");
        assert_eq!(outcome(&[d(&deny, false)]), "deny");
        assert_eq!(outcome(&[]), "deny");
    }
}
