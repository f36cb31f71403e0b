//! Memoised decisions.
//!
//! A Cedar evaluation costs tens of microseconds, far above the product's 10 µs budget, yet a
//! decision is a pure function of the request values the policies actually read. The default
//! policies never read the principal's id, the request time, the site or the collection, so
//! requests from many users over many seconds share one decision. This module finds, once per
//! policy set, which request fields any policy can observe, and caches decisions keyed on
//! exactly those fields (plus the action and resource kind).
//!
//! The analysis walks Cedar's JSON form of each policy and errs towards reading more: a
//! variable used in any way other than `var.attr` / `var has attr` counts as reading all of its
//! fields, and an entity literal of a non-action type counts as reading everything.

use std::collections::HashMap;
use std::sync::Mutex;

use cedar_policy::{Policy, PolicySet};
use serde_json::Value;

use crate::{AccessRequest, Decision, Resource};

/// Upper bound on cached decisions. When full the cache is emptied rather than tracking
/// recency: simple, bounded, and a workload that cycles through more distinct keys than this
/// gains little from a cache anyway.
const CAPACITY: usize = 4096;

/// One bit per request field a policy can read.
pub(crate) mod field {
    pub const PRINCIPAL_ID: u32 = 1 << 0;
    pub const PRINCIPAL_ENTITY: u32 = 1 << 1;
    pub const PRINCIPAL_ENTITY_COUNTRY: u32 = 1 << 2;
    pub const PRINCIPAL_LOCATION: u32 = 1 << 3;
    pub const PRINCIPAL_CLEARANCE: u32 = 1 << 4;
    pub const PRINCIPAL_ROLES: u32 = 1 << 5;
    pub const PRINCIPAL_ALL: u32 = (1 << 6) - 1;

    pub const RESOURCE_SUBJECT_JURISDICTION: u32 = 1 << 6;
    pub const RESOURCE_SITE: u32 = 1 << 7;
    pub const RESOURCE_SITE_JURISDICTION: u32 = 1 << 8;
    pub const RESOURCE_COLLECTION: u32 = 1 << 9;
    pub const RESOURCE_FIELD_CLASS: u32 = 1 << 10;
    pub const RESOURCE_APPROVAL_REQUIRED: u32 = 1 << 15;
    pub const RESOURCE_SUSPENDED: u32 = 1 << 16;
    pub const RESOURCE_ALL: u32 = RESOURCE_SUBJECT_JURISDICTION
        | RESOURCE_SITE
        | RESOURCE_SITE_JURISDICTION
        | RESOURCE_COLLECTION
        | RESOURCE_FIELD_CLASS
        | RESOURCE_APPROVAL_REQUIRED
        | RESOURCE_SUSPENDED;

    pub const CONTEXT_PURPOSE: u32 = 1 << 11;
    pub const CONTEXT_REASON_CODE: u32 = 1 << 12;
    pub const CONTEXT_NETWORK_ZONE: u32 = 1 << 13;
    pub const CONTEXT_TIME: u32 = 1 << 14;
    pub const CONTEXT_GRANT: u32 = 1 << 17;
    pub const CONTEXT_OWN_DATA: u32 = 1 << 18;
    pub const CONTEXT_ALL: u32 = CONTEXT_PURPOSE
        | CONTEXT_REASON_CODE
        | CONTEXT_NETWORK_ZONE
        | CONTEXT_TIME
        | CONTEXT_GRANT
        | CONTEXT_OWN_DATA;

    pub const ALL: u32 = PRINCIPAL_ALL | RESOURCE_ALL | CONTEXT_ALL;
}

/// Which request fields any policy in `policies` can observe, or `None` if that cannot be
/// determined (then nothing is cached).
pub(crate) fn observed_fields(policies: &PolicySet, action_type: &str) -> Option<u32> {
    let mut fields = 0;
    for policy in policies.policies() {
        fields |= policy_fields(policy, action_type)?;
    }
    Some(fields)
}

/// Which request fields `policy` can observe, or `None` if that cannot be determined.
pub(crate) fn policy_fields(policy: &Policy, action_type: &str) -> Option<u32> {
    let json = policy.to_json().ok()?;
    let mut fields = scope_fields(json.get("principal")?, field::PRINCIPAL_ALL);
    fields |= scope_fields(json.get("resource")?, field::RESOURCE_ALL);
    // The action is always part of the key, so its scope adds nothing.
    for condition in json.get("conditions")?.as_array()? {
        fields |= expr_fields(condition.get("body")?, action_type);
    }
    Some(fields)
}

/// `principal`/`resource` scope: `All` and a bare `is` depend on nothing the key lacks (the
/// resource kind is in the key, the principal type is fixed); `==` / `in` compare identities.
fn scope_fields(scope: &Value, all: u32) -> u32 {
    let bare_is = scope.get("op") == Some(&Value::from("is")) && scope.get("in").is_none();
    if scope.get("op") == Some(&Value::from("All")) || bare_is {
        0
    } else {
        all
    }
}

pub(crate) fn expr_fields(expr: &Value, action_type: &str) -> u32 {
    match expr {
        Value::Object(map) => {
            for op in [".", "has"] {
                if let Some(access) = map.get(op)
                    && let Some(var) = access.get("left").and_then(|l| l.get("Var"))
                    && let Some(var) = var.as_str()
                {
                    // `has a.b` carries the path as an array; only its first step is on `var`.
                    let attr = match access.get("attr") {
                        Some(Value::String(a)) => Some(a.as_str()),
                        Some(Value::Array(path)) => path.first().and_then(Value::as_str),
                        _ => None,
                    };
                    return match attr {
                        Some(attr) => attr_field(var, attr),
                        None => var_fields(var),
                    };
                }
            }
            if let Some(Value::String(var)) = map.get("Var") {
                return var_fields(var);
            }
            if let Some(entity) = map.get("__entity")
                && entity.get("type").and_then(Value::as_str) != Some(action_type)
            {
                // A literal principal or resource entity reads whatever the store holds for it.
                return field::ALL;
            }
            map.values()
                .fold(0, |acc, v| acc | expr_fields(v, action_type))
        }
        Value::Array(items) => items
            .iter()
            .fold(0, |acc, v| acc | expr_fields(v, action_type)),
        _ => 0,
    }
}

fn var_fields(var: &str) -> u32 {
    match var {
        "principal" => field::PRINCIPAL_ALL,
        "resource" => field::RESOURCE_ALL,
        "context" => field::CONTEXT_ALL,
        "action" => 0,
        _ => field::ALL,
    }
}

fn attr_field(var: &str, attr: &str) -> u32 {
    use field::*;
    match (var, attr) {
        ("principal", "id") => PRINCIPAL_ID,
        ("principal", "entity") => PRINCIPAL_ENTITY,
        ("principal", "entity_country") => PRINCIPAL_ENTITY_COUNTRY,
        ("principal", "location") => PRINCIPAL_LOCATION,
        ("principal", "clearance") => PRINCIPAL_CLEARANCE,
        ("principal", "roles") => PRINCIPAL_ROLES,
        ("resource", "subject_jurisdiction") => RESOURCE_SUBJECT_JURISDICTION,
        ("resource", "site") => RESOURCE_SITE,
        ("resource", "site_jurisdiction") => RESOURCE_SITE_JURISDICTION,
        ("resource", "collection") => RESOURCE_COLLECTION,
        ("resource", "field_class") => RESOURCE_FIELD_CLASS,
        ("resource", "approval_required") => RESOURCE_APPROVAL_REQUIRED,
        ("resource", "suspended") => RESOURCE_SUSPENDED,
        ("context", "grant") => CONTEXT_GRANT,
        ("context", "purpose") => CONTEXT_PURPOSE,
        ("context", "reason_code") => CONTEXT_REASON_CODE,
        ("context", "network_zone") => CONTEXT_NETWORK_ZONE,
        ("context", "time") => CONTEXT_TIME,
        ("context", "own_data") => CONTEXT_OWN_DATA,
        // An attribute this code does not supply: reading it fails, whatever else is
        // in the request, but stay on the safe side.
        (var, _) => var_fields(var),
    }
}

pub(crate) struct DecisionCache {
    fields: u32,
    map: Mutex<HashMap<Vec<u8>, Decision>>,
}

impl DecisionCache {
    pub(crate) fn new(fields: u32) -> Self {
        DecisionCache {
            fields,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The cache key: the action, the resource kind and every observed field, each
    /// length-prefixed so distinct requests can never encode alike.
    pub(crate) fn key(&self, req: &AccessRequest) -> Vec<u8> {
        request_key(self.fields, req)
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<Decision> {
        self.lock().get(key).cloned()
    }

    pub(crate) fn insert(&self, key: Vec<u8>, decision: &Decision) {
        let mut map = self.lock();
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(key, decision.clone());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Decision>> {
        // The map is only ever replaced whole-entry, so a panic elsewhere cannot leave it
        // half-updated; keep serving rather than propagate the poison.
        self.map.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

/// A key for `req`: the action, the resource kind and every field in `fields`, each
/// length-prefixed so distinct requests can never encode alike.
pub(crate) fn request_key(fields: u32, req: &AccessRequest) -> Vec<u8> {
    use field::*;
    let mut key = Vec::with_capacity(128);
    key.push(req.action as u8);
    key.push(matches!(req.resource, Resource::Data { .. }) as u8);
    let p = &req.principal;
    let mut put = |bit: u32, value: &str| {
        if fields & bit != 0 {
            put_str(&mut key, value);
        }
    };
    put(PRINCIPAL_ID, &p.id);
    put(PRINCIPAL_ENTITY, &p.entity);
    put(PRINCIPAL_ENTITY_COUNTRY, &p.entity_country);
    put(PRINCIPAL_LOCATION, &p.location);
    let c = &req.context;
    put(CONTEXT_PURPOSE, &c.purpose);
    put(CONTEXT_REASON_CODE, &c.reason_code);
    put(CONTEXT_NETWORK_ZONE, &c.network_zone);
    put(CONTEXT_GRANT, &c.grant);
    // Subjects have no `approval_required`; `None` keeps the two kinds' keys apart anyway.
    let (suspended, approval_required) = match &req.resource {
        Resource::Subject {
            subject_jurisdiction,
            site,
            site_jurisdiction,
            suspended,
        } => {
            put(RESOURCE_SUBJECT_JURISDICTION, subject_jurisdiction);
            put(RESOURCE_SITE, site);
            put(RESOURCE_SITE_JURISDICTION, site_jurisdiction);
            (*suspended, None)
        }
        Resource::Data {
            subject_jurisdiction,
            collection,
            field_class,
            site,
            site_jurisdiction,
            approval_required,
            suspended,
        } => {
            put(RESOURCE_SUBJECT_JURISDICTION, subject_jurisdiction);
            put(RESOURCE_COLLECTION, collection);
            put(RESOURCE_FIELD_CLASS, field_class);
            put(RESOURCE_SITE, site);
            put(RESOURCE_SITE_JURISDICTION, site_jurisdiction);
            (*suspended, Some(*approval_required))
        }
    };
    if fields & CONTEXT_OWN_DATA != 0 {
        key.push(u8::from(c.own_data));
    }
    if fields & RESOURCE_SUSPENDED != 0 {
        key.push(u8::from(suspended));
    }
    if fields & RESOURCE_APPROVAL_REQUIRED != 0
        && let Some(required) = approval_required
    {
        key.push(u8::from(required));
    }
    for (bit, set) in [
        (PRINCIPAL_CLEARANCE, &p.clearance),
        (PRINCIPAL_ROLES, &p.roles),
    ] {
        if fields & bit != 0 {
            key.extend_from_slice(&(set.len() as u64).to_le_bytes());
            for item in set {
                put_str(&mut key, item);
            }
        }
    }
    if fields & CONTEXT_TIME != 0 {
        key.extend_from_slice(&c.time.to_le_bytes());
    }
    key
}

fn put_str(key: &mut Vec<u8>, value: &str) {
    key.extend_from_slice(&(value.len() as u64).to_le_bytes());
    key.extend_from_slice(value.as_bytes());
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    const ACTION: &str = "Sovereign::Action";

    fn fields_of(src: &str) -> u32 {
        let set = PolicySet::from_str(src).expect("test policy parses");
        observed_fields(&set, ACTION).expect("analysable")
    }

    #[test]
    fn default_policies_read_only_what_they_name() {
        use field::*;
        let src = crate::default_policies(&["CN".into(), "RU".into()]);
        assert_eq!(
            fields_of(&src),
            PRINCIPAL_ENTITY
                | PRINCIPAL_ENTITY_COUNTRY
                | PRINCIPAL_LOCATION
                | PRINCIPAL_CLEARANCE
                | PRINCIPAL_ROLES
                | RESOURCE_SUBJECT_JURISDICTION
                | RESOURCE_COLLECTION
                | RESOURCE_FIELD_CLASS
                | RESOURCE_APPROVAL_REQUIRED
                | RESOURCE_SUSPENDED
                | CONTEXT_PURPOSE
                | CONTEXT_GRANT
                | CONTEXT_OWN_DATA
        );
    }

    #[test]
    fn attribute_forms_are_recognised() {
        use field::*;
        assert_eq!(
            fields_of(r#"permit(principal, action, resource) when { principal["id"] == "a" };"#),
            PRINCIPAL_ID
        );
        assert_eq!(
            fields_of(r#"permit(principal, action, resource) when { context has time };"#),
            CONTEXT_TIME
        );
        assert_eq!(
            fields_of(
                r#"permit(principal, action, resource) unless { resource.site like "us-*" };"#
            ),
            RESOURCE_SITE
        );
        assert_eq!(
            fields_of(
                r#"permit(principal, action in [Sovereign::Action::"read"], resource) when { action == Sovereign::Action::"read" };"#
            ),
            0
        );
    }

    #[test]
    fn whole_variable_uses_read_everything_of_it() {
        use field::*;
        assert_eq!(
            fields_of(r#"permit(principal == Sovereign::Principal::"a", action, resource);"#),
            PRINCIPAL_ALL
        );
        assert_eq!(
            fields_of(r#"permit(principal, action, resource) when { context == {} };"#),
            CONTEXT_ALL
        );
        assert_eq!(
            fields_of(
                r#"permit(principal, action, resource) when { principal.getTag("x") == 1 };"#
            ),
            PRINCIPAL_ALL
        );
        assert_eq!(
            fields_of(r#"permit(principal, action, resource in Sovereign::Data::"data");"#),
            RESOURCE_ALL
        );
        assert_eq!(
            fields_of(
                r#"permit(principal, action, resource) when { Sovereign::Principal::"a".location == "US" };"#
            ),
            ALL
        );
    }

    fn request() -> AccessRequest {
        AccessRequest {
            principal: crate::Principal {
                id: "a".into(),
                entity: "usds".into(),
                entity_country: "US".into(),
                location: "US".into(),
                clearance: vec!["x".into()],
                roles: vec![],
            },
            action: crate::Action::Read,
            resource: Resource::Data {
                subject_jurisdiction: "US".into(),
                collection: "profile".into(),
                field_class: "protected".into(),
                site: "us-east".into(),
                site_jurisdiction: "US".into(),
                approval_required: false,
                suspended: false,
            },
            context: crate::Context::default(),
        }
    }

    #[test]
    fn keys_ignore_unobserved_fields_and_separate_observed_ones() {
        let cache = DecisionCache::new(field::PRINCIPAL_LOCATION | field::PRINCIPAL_CLEARANCE);
        let base = request();

        let mut other_user = base.clone();
        other_user.principal.id = "b".into();
        other_user.context.time = 99;
        assert_eq!(cache.key(&base), cache.key(&other_user));

        let mut elsewhere = base.clone();
        elsewhere.principal.location = "CN".into();
        assert_ne!(cache.key(&base), cache.key(&elsewhere));

        // Same concatenated bytes, different set elements.
        let mut split = base.clone();
        split.principal.clearance = vec!["".into(), "x".into()];
        assert_ne!(cache.key(&base), cache.key(&split));

        let mut write = base.clone();
        write.action = crate::Action::Write;
        assert_ne!(cache.key(&base), cache.key(&write));
    }

    #[test]
    fn cache_stays_bounded() {
        let cache = DecisionCache::new(field::PRINCIPAL_ID);
        let decision = Decision {
            allowed: true,
            policies: vec![],
            errors: vec![],
        };
        let mut req = request();
        for i in 0..CAPACITY * 2 + 1 {
            req.principal.id = i.to_string();
            cache.insert(cache.key(&req), &decision);
            assert!(cache.lock().len() <= CAPACITY);
        }
        assert_eq!(cache.get(&cache.key(&req)), Some(decision));
    }
}
