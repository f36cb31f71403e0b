//! Log entries in format v2, decided honestly by the `policy` crate with the default policy
//! set, for the replay tests; and a directory of policy sets as `audit replay --policies`
//! reads it.

use std::path::Path;

use policy::{AccessRequest, Action, Context, PolicyEngine, Principal, Resource};
use serde_json::{Value, json};

pub const RESTRICTED: [&str; 4] = ["CN", "RU", "IR", "KP"];
/// The unix time every test request is decided at.
pub const TIME: i64 = 1_763_770_568;

/// The default schema and policies, as a gateway with the default setup runs them.
pub fn default_set() -> (String, String) {
    let restricted: Vec<String> = RESTRICTED.iter().map(|c| c.to_string()).collect();
    (
        policy::DEFAULT_SCHEMA.to_string(),
        policy::default_policies(&restricted),
    )
}

/// Writes `schema` and `policies` as the JSON `GET /v1/policies/<hash>` answers, to
/// `dir/<hash>`, and returns the hash.
pub fn write_policy_set(dir: &Path, schema: &str, policies: &str) -> String {
    let hash = policy::policy_set_hash(schema, policies);
    let body = json!({"hash": hash, "schema": schema, "policies": policies, "status": "active"});
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(&hash), serde_json::to_vec(&body).unwrap()).unwrap();
    hash
}

/// Someone asking, with where they are.
#[derive(Clone)]
pub struct Who {
    pub id: &'static str,
    pub entity: &'static str,
    pub entity_country: &'static str,
    pub location: &'static str,
    pub clearance: &'static [&'static str],
}

pub const ALICE: Who = Who {
    id: "alice",
    entity: "usds",
    entity_country: "US",
    location: "US",
    clearance: &["us-data"],
};
pub const CHEN: Who = Who {
    id: "chen",
    entity: "parent",
    entity_country: "CN",
    location: "CN",
    clearance: &[],
};
pub const BOB: Who = Who {
    id: "bob",
    entity: "usds",
    entity_country: "US",
    location: "CN",
    clearance: &["us-data"],
};
pub const SIEW: Who = Who {
    id: "siew",
    entity: "parent",
    entity_country: "CN",
    location: "SG",
    clearance: &[],
};

/// One access: who, which action, and (for record actions) the collection and the
/// field classes decided.
pub struct Access {
    pub who: Who,
    pub action: Action,
    pub collection: Option<&'static str>,
    pub classes: &'static [&'static str],
    pub purpose: &'static str,
}

/// A v2 access entry for `access` on a US subject at us-east, with the decisions `engine`
/// gives, recorded truthfully.
pub fn access_entry(engine: &PolicyEngine, i: u64, access: &Access) -> Value {
    let principal = Principal {
        id: access.who.id.into(),
        entity: access.who.entity.into(),
        entity_country: access.who.entity_country.into(),
        location: access.who.location.into(),
        clearance: access.who.clearance.iter().map(|c| c.to_string()).collect(),
        roles: Vec::new(),
    };
    let context = Context {
        purpose: access.purpose.into(),
        reason_code: String::new(),
        network_zone: String::new(),
        time: TIME + i as i64,
        grant: String::new(),
        own_data: false,
    };
    let resources: Vec<(Value, Resource)> = match access.collection {
        None => vec![(
            Value::Null,
            Resource::Subject {
                subject_jurisdiction: "US".into(),
                site: "us-east".into(),
                site_jurisdiction: "US".into(),
                suspended: false,
            },
        )],
        Some(collection) => access
            .classes
            .iter()
            .map(|class| {
                (
                    json!(class),
                    Resource::Data {
                        subject_jurisdiction: "US".into(),
                        collection: collection.into(),
                        field_class: class.to_string(),
                        site: "us-east".into(),
                        site_jurisdiction: "US".into(),
                        approval_required: false,
                        suspended: false,
                    },
                )
            })
            .collect(),
    };
    let mut decisions = Vec::new();
    let mut policies: Vec<String> = Vec::new();
    let mut allowed = Vec::new();
    for (class, resource) in resources {
        let d = engine.decide(&AccessRequest {
            principal: principal.clone(),
            action: access.action,
            resource,
            context: context.clone(),
        });
        decisions.push(json!({"field_class": class, "allowed": d.allowed, "policies": d.policies}));
        policies.extend(d.policies.iter().cloned());
        allowed.push(d.allowed);
    }
    policies.sort();
    policies.dedup();
    let outcome = if allowed.iter().all(|a| *a) {
        "allow"
    } else if allowed.iter().all(|a| !a) {
        "deny"
    } else {
        "partial"
    };
    json!({
        "v": 2,
        "kind": "access",
        "time": format!("2026-11-22T00:16:{:02}.439Z", i % 60),
        "principal": {
            "id": access.who.id,
            "entity": access.who.entity,
            "entity_country": access.who.entity_country,
            "location": access.who.location,
            "clearance": access.who.clearance,
            "roles": [],
            "network_zone": "",
        },
        "action": access.action.as_str(),
        "subject": format!("{:032x}", 0xabcdef_u128 + u128::from(i)),
        "subject_jurisdiction": "US",
        "site": "us-east",
        "site_jurisdiction": "US",
        "collection": access.collection,
        "approval_required": false,
        "suspended": false,
        "fields": if access.collection.is_some() { json!(["email", "display_name"]) } else { json!([]) },
        "outcome": outcome,
        "decisions": decisions,
        "policies": policies,
        "policy_set": engine.policy_set_hash(),
        "purpose": access.purpose,
        "reason_code": "",
        "context_time": TIME + i as i64,
        "grant": null,
    })
}

/// Rewrites an entry to say that everything was allowed: what a gateway that served data
/// its policies forbid would have to log to hide it.
pub fn forge_allowed(entry: &mut Value) {
    for d in entry["decisions"].as_array_mut().unwrap() {
        d["allowed"] = json!(true);
        d["policies"] = json!(["permit-usds-vetted-data"]);
    }
    entry["outcome"] = json!("allow");
    entry["policies"] = json!(["permit-usds-vetted-data"]);
}

pub fn config_entry(policy_set: &str) -> Value {
    json!({
        "v": 2,
        "kind": "config",
        "time": "2026-11-22T00:16:00.000Z",
        "event": "start",
        "policy_set": policy_set,
        "policies": ["forbid-restricted-location"],
        "config_sha256": "cd".repeat(32),
        "version": "0.1.0",
    })
}

/// The invariant set the synthetic log's activations are proven against.
pub const INVARIANT_SET: &str = "1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a";

/// Passing proofs of `policy_set` against [`INVARIANT_SET`], as the gateway logs them.
pub fn proofs(policy_set: &str) -> Value {
    json!({
        "policy_set": policy_set,
        "invariant_set": INVARIANT_SET,
        "solver": "cvc5",
        "solver_version": "1.0.3",
        "timeout_ms": 10000,
        "environments": 5,
        "invariants": [
            {"name": "restricted-location-never-on-us-subjects", "result": "proven", "duration_ms": 20.5},
            {"name": "monitors-never-touch-user-data", "result": "proven", "duration_ms": 12.0},
        ],
        "never_errors": [
            {"name": "forbid-restricted-location", "result": "never_errors", "duration_ms": 1.0},
        ],
        "duration_ms": 40.1,
    })
}

/// The activation of [`INVARIANT_SET`] on the first start, before any policy set.
pub fn invariants_entry() -> Value {
    json!({
        "v": 2,
        "kind": "custody",
        "time": "2026-11-22T00:16:00.500Z",
        "event": "invariants-activated",
        "actor": null,
        "details": {
            "invariant_set": INVARIANT_SET, "previous": null, "signers": ["custodian"],
            "invariants": ["restricted-location-never-on-us-subjects", "monitors-never-touch-user-data"],
            "proofs": null,
        },
    })
}

pub fn custody_entry(policy_set: &str) -> Value {
    json!({
        "v": 2,
        "kind": "custody",
        "time": "2026-11-22T00:16:01.000Z",
        "event": "policy-activated",
        "actor": {
            "id": "olga", "entity": "custodian", "entity_country": "US", "location": "US",
            "clearance": [], "roles": ["custodian-operator"], "network_zone": "",
        },
        "details": {
            "policy_set": policy_set, "previous": "ef".repeat(32), "signers": ["custodian"],
            "invariant_set": INVARIANT_SET, "proofs": proofs(policy_set),
        },
    })
}

pub fn alert_entry() -> Value {
    json!({
        "v": 2,
        "kind": "alert",
        "time": "2026-11-22T00:16:02.000Z",
        "alert": "break-glass",
        "severity": "high",
        "actor": null,
        "details": {"request": "ar-1"},
    })
}

/// The reference scenario's decisions, in order: register, write, then reads by vetted
/// US staff (allowed), parent staff in CN (denied), usds staff travelling in CN (denied),
/// parent staff in SG (interoperable fields only).
pub fn scenario() -> Vec<Access> {
    let profile = Some("profile");
    let both: &[&str] = &["protected", "interoperable"];
    vec![
        Access {
            who: ALICE,
            action: Action::Register,
            collection: None,
            classes: &[],
            purpose: "",
        },
        Access {
            who: ALICE,
            action: Action::Write,
            collection: profile,
            classes: both,
            purpose: "account setup",
        },
        Access {
            who: ALICE,
            action: Action::Read,
            collection: profile,
            classes: both,
            purpose: "support ticket 42",
        },
        Access {
            who: CHEN,
            action: Action::Read,
            collection: profile,
            classes: both,
            purpose: "debug",
        },
        Access {
            who: BOB,
            action: Action::Read,
            collection: profile,
            classes: both,
            purpose: "on call",
        },
        Access {
            who: SIEW,
            action: Action::Read,
            collection: profile,
            classes: both,
            purpose: "",
        },
        Access {
            who: CHEN,
            action: Action::List,
            collection: None,
            classes: &[],
            purpose: "",
        },
    ]
}
