//! The gateway writes the entry format and the monitor crate reads it; this test keeps the
//! two readings from drifting apart. It builds one entry of every kind `entry.rs` writes
//! (every custody event, every alert, every data event, access and config entries) and has
//! the monitor's reader check each. The `match`es below have no wildcard arm: a new custody
//! event, alert or data event does not compile until it is added here, and then it is read
//! by the monitor too.

use serde_json::json;

use super::*;
use crate::analytics::AlertKind;

fn check(entry: &[u8], kind: &str) {
    let text = String::from_utf8_lossy(entry);
    let info = monitor::check_entry(entry)
        .unwrap_or_else(|e| panic!("the monitor refuses a gateway entry: {e}\n{text}"));
    assert_eq!(info.kind, kind, "{text}");
    assert_eq!(info.version, 2, "{text}");
}

fn who() -> Authenticated {
    Authenticated {
        principal: policy::Principal {
            id: "alice".into(),
            entity: "usds".into(),
            entity_country: "US".into(),
            location: "US".into(),
            clearance: vec!["us-data".into()],
            roles: vec!["engineer".into()],
        },
        network_zone: String::new(),
        public_id: "alice".into(),
    }
}

fn hash(c: char) -> String {
    c.to_string().repeat(64)
}

fn request() -> custody::AccessRequest {
    serde_json::from_value(json!({
        "id": "ar-0123456789abcdef", "kind": "request",
        "requester": {"id": "alice", "entity": "usds"}, "action": "read",
        "subjects": ["u-1"], "collections": ["profile"], "fields": [],
        "purpose": "support ticket 1", "reason_code": "customer-initiated-support",
        "duration_seconds": 3600, "approvals_required": 2,
        "approvals": [{"by": "carol", "entity": "custodian", "at": 1, "comment": ""}],
        "denial": null, "revoked": null, "review": null,
        "created_at": 1, "expires_at": 2, "starts_at": 1, "ends_at": 3601, "log_index": 7,
    }))
    .expect("a sample access request")
}

fn proofs() -> serde_json::Value {
    json!({
        "policy_set": hash('a'), "invariant_set": hash('b'), "solver": "cvc5",
        "solver_version": "1.1.2", "timeout_ms": 10000, "environments": 9,
        "invariants": [{"name": "no-restricted-access", "result": "proven", "duration_ms": 1.0}],
        "never_errors": [{"name": "never_errors", "result": "proven", "duration_ms": 1.0}],
        "duration_ms": 2.0,
    })
}

/// A policy or invariant set record: `members` and what every signed, activated set carries.
fn signed_set<T: serde::de::DeserializeOwned>(members: serde_json::Value) -> T {
    let mut record = json!({
        "proposed_by": {"id": "olga", "entity": "custodian"}, "proposed_at": 1,
        "activated_at": 2, "signature": "signed", "signers": ["custodian"],
        "proofs": proofs(), "log_index": 3,
    });
    if let (Some(record), Some(members)) = (record.as_object_mut(), members.as_object()) {
        record.extend(members.clone());
    }
    serde_json::from_value(record).expect("a sample set record")
}

fn policy_set() -> custody::PolicySetRecord {
    signed_set(json!({
        "hash": hash('a'), "schema": "", "policies": "",
        "policy_ids": ["forbid-restricted-countries"],
    }))
}

fn invariant_set() -> custody::InvariantSetRecord {
    signed_set(json!({"hash": hash('b'), "text": "", "names": ["no-restricted-access"]}))
}

fn release() -> custody::Release {
    custody::Release {
        name: "ranker".into(),
        version: "1.0.0".into(),
        sha256: hash('c'),
        size: 10,
        manifest: Some("{}".into()),
        manifest_sha256: Some(hash('f')),
        submitted_by: custody::Person {
            id: "ada".into(),
            entity: "parent".into(),
        },
        submitted_at: 1,
        activated_at: Some(2),
        retired_at: None,
        signature: Some("signed".into()),
        signers: vec!["custodian".into()],
        log_index: Some(5),
    }
}

fn suspension(suspended: bool) -> custody::Suspension {
    custody::Suspension {
        jurisdiction: "US".into(),
        suspended,
        serial: 1,
        since: 1,
        signature: "signed".into(),
        signers: vec!["custodian".into()],
        log_index: Some(6),
    }
}

#[test]
fn every_custody_event_is_read_by_the_monitor() {
    use custody::Event as E;
    let pseudonyms = Pseudonymizer::from_hex(&"11".repeat(32)).expect("a key");
    let (request, policies, invariants, release) =
        (request(), policy_set(), invariant_set(), release());
    let (on, off) = (suspension(true), suspension(false));
    let events = [
        E::RequestCreated(&request),
        E::RequestApproved {
            request: &request,
            granted: true,
        },
        E::RequestDenied(&request),
        E::GrantRevoked(&request),
        E::BreakGlassStarted(&request),
        E::BreakGlassReviewed(&request),
        E::PolicyProposed(&policies),
        E::PolicyActivated {
            set: &policies,
            previous: Some(&hash('d')),
        },
        E::PolicyActivated {
            set: &policies,
            previous: None,
        },
        E::InvariantsProposed(&invariants),
        E::InvariantsActivated {
            set: &invariants,
            previous: None,
        },
        E::AlgorithmSubmitted(&release),
        E::AlgorithmActivated(&release),
        E::AlgorithmFetched(&release),
        E::AlgorithmDeactivated(&release),
        E::KillSwitch(&on),
        E::KillSwitch(&off),
    ];
    for event in &events {
        // Every variant is in the list above (this match fails to compile otherwise).
        match event {
            E::RequestCreated(_)
            | E::RequestApproved { .. }
            | E::RequestDenied(_)
            | E::GrantRevoked(_)
            | E::BreakGlassStarted(_)
            | E::BreakGlassReviewed(_)
            | E::PolicyProposed(_)
            | E::PolicyActivated { .. }
            | E::InvariantsProposed(_)
            | E::InvariantsActivated { .. }
            | E::AlgorithmSubmitted(_)
            | E::AlgorithmActivated(_)
            | E::AlgorithmFetched(_)
            | E::AlgorithmDeactivated(_)
            | E::KillSwitch(_) => {}
        }
        check(&custody_entry(event, Some(&who()), &pseudonyms), "custody");
        check(&custody_entry(event, None, &pseudonyms), "custody");
    }
}

#[test]
fn every_alert_data_event_access_and_config_entry_is_read_by_the_monitor() {
    for kind in AlertKind::ALL {
        match kind {
            AlertKind::RestrictedCountry
            | AlertKind::BulkAccess
            | AlertKind::BreakGlass
            | AlertKind::EgressSpike
            | AlertKind::CheckpointLate
            | AlertKind::CustodyUnverified => {}
        }
        let details = json!({"location": "CN"});
        check(
            &alert_entry(
                kind.as_str(),
                kind.severity(),
                Some(&who()),
                details.clone(),
            ),
            "alert",
        );
        check(
            &alert_entry(kind.as_str(), kind.severity(), None, details),
            "alert",
        );
    }

    let data_events = [
        DataEvent::Egress,
        DataEvent::Erasure,
        DataEvent::Export,
        DataEvent::Migration,
        DataEvent::AlgorithmRun,
    ];
    for event in data_events {
        match event {
            DataEvent::Egress
            | DataEvent::Erasure
            | DataEvent::Export
            | DataEvent::Migration
            | DataEvent::AlgorithmRun => {}
        }
        let details = json!({"rows": 1, "sha256": hash('e')});
        check(
            &data_event_entry(event, Some(&who()), details),
            event.kind(),
        );
    }

    let allow = Decision {
        allowed: true,
        policies: vec!["permit-vetted-us-staff".into()],
        errors: vec![],
    };
    let deny = Decision {
        allowed: false,
        policies: vec!["forbid-restricted-countries".into()],
        errors: vec![],
    };
    let fields = ["email".to_string()];
    let who = who();
    let context = policy::Context {
        purpose: "support ticket 1".into(),
        reason_code: "customer-initiated-support".into(),
        network_zone: String::new(),
        time: 1,
        grant: String::new(),
        own_data: false,
    };
    for action in Action::ALL {
        let one = AccessTarget {
            subject_pseudonym: Some(hash('f')[..32].to_string()),
            subject_jurisdiction: "US",
            site: "us-east",
            site_jurisdiction: "US",
            collection: Some("profile"),
            approval_required: false,
            fields: &fields,
        };
        let bulk = AccessTarget {
            subject_pseudonym: None,
            subject_jurisdiction: crate::pipeline::EVERY_JURISDICTION,
            collection: None,
            ..one
        };
        let decisions = [
            LoggedDecision {
                class: Some(FieldClass::Protected),
                jurisdiction: None,
                suspended: false,
                decision: &allow,
            },
            LoggedDecision {
                class: Some(FieldClass::Interoperable),
                jurisdiction: Some("SG"),
                suspended: true,
                decision: &deny,
            },
        ];
        let grant = GrantUsed {
            id: "ar-0123456789abcdef",
            kind: "approved",
        };
        for (target, grant) in [(&one, Some(&grant)), (&bulk, None)] {
            let access = Access {
                who: &who,
                action,
                target,
                decisions: &decisions,
                context: &context,
                grant,
                policy_set: &hash('a'),
            };
            check(&access_entry(&access), "access");
        }
    }

    check(
        &config_entry("start", &hash('a'), &["p".to_string()], &hash('9')),
        "config",
    );
}
