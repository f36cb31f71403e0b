//! Invariants as configuration: parsing, validation and hashing.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

use cedar_policy::{Effect, Policy, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::ProveError;
use policy::diag::{describe, excerpt, position};

const DEFAULT_INVARIANTS_TEMPLATE: &str = include_str!("../defaults/invariants.cedar.tmpl");
const RESTRICTED_PLACEHOLDER: &str = "__RESTRICTED__";
/// Domain separator for [`Invariants::hash`]; bump the version if the encoding changes.
const HASH_DOMAIN: &[u8] = b"sovereign-invariant-set-v1\n";

/// Renders the default invariants (the reference scenario's promises) for
/// `restricted_countries`, exactly as `policy::default_policies` renders the policies.
pub fn default_invariants(restricted_countries: &[String]) -> String {
    DEFAULT_INVARIANTS_TEMPLATE.replace(
        RESTRICTED_PLACEHOLDER,
        &policy::cedar_string_set(restricted_countries),
    )
}

/// One named invariant: a Cedar policy set the active policies must imply.
#[derive(Debug, Clone)]
pub struct Invariant {
    name: String,
    description: String,
    policy_ids: Vec<String>,
    policies: PolicySet,
}

impl Invariant {
    /// The `@invariant("...")` name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The one-line `@description("...")`.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// `@id`s of the policies forming this invariant, in source order.
    pub fn policy_ids(&self) -> &[String] {
        &self.policy_ids
    }

    /// The invariant's policy set (policies re-ided by their `@id`).
    pub fn policy_set(&self) -> &PolicySet {
        &self.policies
    }
}

/// A parsed, validated set of invariants, in order of first appearance in the source.
#[derive(Debug, Clone)]
pub struct Invariants {
    invariants: Vec<Invariant>,
    all: PolicySet,
    hash: String,
}

/// Summary of one invariant, e.g. for listing (`Serialize`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InvariantSummary {
    pub name: String,
    pub description: String,
    pub policy_ids: Vec<String>,
}

impl Invariants {
    /// Parses an invariants file and strictly validates it against Sovereign's default schema
    /// (`policy::DEFAULT_SCHEMA`). Use [`Invariants::parse_with_schema`] for another schema.
    pub fn parse(src: &str) -> Result<Invariants, ProveError> {
        Self::parse_with_schema(policy::DEFAULT_SCHEMA, src)
    }

    /// Parses an invariants file and strictly validates it against `schema_src`.
    ///
    /// Every policy needs `@id("...")` (unique) and `@invariant("name")`; each invariant needs
    /// exactly one one-line `@description("...")` on one of its policies, and at least one
    /// permit (an invariant set without a permit denies everything).
    pub fn parse_with_schema(schema_src: &str, src: &str) -> Result<Invariants, ProveError> {
        let (schema, _) = Schema::from_cedarschema_str(schema_src)
            .map_err(|e| ProveError::Schema(describe(&e, schema_src)))?;
        let parsed =
            PolicySet::from_str(src).map_err(|e| ProveError::InvariantSyntax(describe(&e, src)))?;
        if let Some(position) = parsed.templates().map(|t| position(t.id())).min() {
            return Err(ProveError::InvariantTemplate { position });
        }
        let mut numbered: Vec<(usize, &Policy)> =
            parsed.policies().map(|p| (position(p.id()), p)).collect();
        numbered.sort_unstable_by_key(|(n, _)| *n);
        if numbered.is_empty() {
            return Err(ProveError::NoInvariants);
        }

        struct Group {
            description: Option<String>,
            ids: Vec<String>,
            policies: Vec<Policy>,
        }
        let mut order: Vec<String> = Vec::new();
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        let mut seen = HashSet::new();
        let mut all = PolicySet::new();
        for (position, policy) in numbered {
            let missing = |annotation: &'static str| ProveError::MissingAnnotation {
                position,
                annotation,
                excerpt: excerpt(&policy.to_string()),
            };
            let id = policy.annotation("id").ok_or_else(|| missing("id"))?;
            if !is_valid_id(id) {
                return Err(ProveError::InvalidInvariant(format!(
                    "policy #{position}: @id(\"{id}\") may only contain ASCII letters, digits, '_', '.', ':' and '-'"
                )));
            }
            if !seen.insert(id.to_owned()) {
                return Err(ProveError::InvalidInvariant(format!(
                    "@id(\"{id}\") is used by more than one policy"
                )));
            }
            let name = policy
                .annotation("invariant")
                .ok_or_else(|| missing("invariant"))?;
            if name.trim().is_empty() {
                return Err(ProveError::InvalidInvariant(format!(
                    "policy \"{id}\": @invariant(...) must name the invariant, it is empty"
                )));
            }
            let renamed = policy.new_id(PolicyId::new(id));
            all.add(renamed.clone())
                .map_err(|e| ProveError::InvalidInvariant(e.to_string()))?;
            let group = groups.entry(name.to_owned()).or_insert_with(|| {
                order.push(name.to_owned());
                Group {
                    description: None,
                    ids: Vec::new(),
                    policies: Vec::new(),
                }
            });
            if let Some(description) = policy.annotation("description") {
                if description.contains('\n') || description.trim().is_empty() {
                    return Err(ProveError::InvalidInvariant(format!(
                        "policy \"{id}\": the @description of invariant \"{name}\" must be one non-empty line"
                    )));
                }
                if let Some(previous) = &group.description
                    && previous != description
                {
                    return Err(ProveError::InvalidInvariant(format!(
                        "invariant \"{name}\" has two different @description annotations (policy \"{id}\" disagrees with an earlier one)"
                    )));
                }
                group.description = Some(description.to_owned());
            }
            group.ids.push(id.to_owned());
            group.policies.push(renamed);
        }

        let validation = Validator::new(schema).validate(&all, ValidationMode::Strict);
        if !validation.validation_passed() {
            let messages = validation
                .validation_errors()
                .map(|e| describe(e, src))
                .collect();
            return Err(ProveError::InvariantValidation(messages));
        }

        let mut invariants = Vec::with_capacity(order.len());
        for name in order {
            let group = groups.remove(&name).expect("every name has a group");
            let Some(description) = group.description else {
                return Err(ProveError::InvalidInvariant(format!(
                    "invariant \"{name}\" has no @description(\"...\"); give one of its policies a one-line description"
                )));
            };
            if !group.policies.iter().any(|p| p.effect() == Effect::Permit) {
                return Err(ProveError::InvalidInvariant(format!(
                    "invariant \"{name}\" has no permit policy, so it denies every request and only a policy set that allows nothing could satisfy it; add `permit (principal, action, resource);` to it and state the promise as forbids"
                )));
            }
            let policies = PolicySet::from_policies(group.policies)
                .map_err(|e| ProveError::InvalidInvariant(e.to_string()))?;
            invariants.push(Invariant {
                name,
                description,
                policy_ids: group.ids,
                policies,
            });
        }
        let hash = hash_invariants(&invariants)?;
        Ok(Invariants {
            invariants,
            all,
            hash,
        })
    }

    /// The invariants, in order of first appearance.
    pub fn iter(&self) -> impl Iterator<Item = &Invariant> {
        self.invariants.iter()
    }

    /// Number of invariants.
    pub fn len(&self) -> usize {
        self.invariants.len()
    }

    /// Never true for a parsed set (parsing refuses an empty file); provided for clippy.
    pub fn is_empty(&self) -> bool {
        self.invariants.is_empty()
    }

    /// Looks an invariant up by name.
    pub fn get(&self, name: &str) -> Option<&Invariant> {
        self.invariants.iter().find(|i| i.name == name)
    }

    /// Names, descriptions and policy ids of every invariant.
    pub fn summaries(&self) -> Vec<InvariantSummary> {
        self.invariants
            .iter()
            .map(|i| InvariantSummary {
                name: i.name.clone(),
                description: i.description.clone(),
                policy_ids: i.policy_ids.clone(),
            })
            .collect()
    }

    /// Lowercase hex SHA-256 of a canonical encoding of the invariants: a domain separator,
    /// then, invariants sorted by name, each name, description and its policies (sorted by
    /// `@id`) in Cedar's JSON policy format with sorted keys, every item length-prefixed
    /// (u64, big-endian). Comments, whitespace and policy order do not change it.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// All invariant policies in one set (ids are unique across invariants).
    pub(crate) fn all_policies(&self) -> &PolicySet {
        &self.all
    }
}

fn hash_invariants(invariants: &[Invariant]) -> Result<String, ProveError> {
    let mut sorted: Vec<&Invariant> = invariants.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut hasher = Sha256::new();
    hasher.update(HASH_DOMAIN);
    let put = |hasher: &mut Sha256, bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    hasher.update((sorted.len() as u64).to_be_bytes());
    for invariant in sorted {
        put(&mut hasher, invariant.name.as_bytes());
        put(&mut hasher, invariant.description.as_bytes());
        let mut policies: Vec<(String, String)> = Vec::new();
        for policy in invariant.policies.policies() {
            let json = policy
                .to_json()
                .map_err(|e| ProveError::InvalidInvariant(e.to_string()))?;
            policies.push((policy.id().to_string(), canonical_json(&json)));
        }
        policies.sort();
        hasher.update((policies.len() as u64).to_be_bytes());
        for (id, json) in policies {
            put(&mut hasher, id.as_bytes());
            put(&mut hasher, json.as_bytes());
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// JSON text with object keys sorted, independent of serde_json's map ordering feature.
fn canonical_json(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let items: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| {
                    format!(
                        "{}:{}",
                        serde_json::Value::String(k.clone()),
                        canonical_json(v)
                    )
                })
                .collect();
            format!("{{{}}}", items.join(","))
        }
        serde_json::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}

fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_invariants_parse_and_hash_is_stable_under_reformatting() {
        let restricted: Vec<String> = ["CN", "RU"].iter().map(|s| s.to_string()).collect();
        let src = default_invariants(&restricted);
        assert!(src.contains(r#"["CN", "RU"]"#));
        let parsed = Invariants::parse(&src).unwrap();
        assert_eq!(parsed.len(), 8);
        assert_eq!(parsed.hash().len(), 64);
        // Comments and blank lines do not change the hash; content does.
        let reformatted = src
            .lines()
            .filter(|l| !l.starts_with("//") && !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            Invariants::parse(&reformatted).unwrap().hash(),
            parsed.hash()
        );
        let other = Invariants::parse(&default_invariants(&["CN".to_string()])).unwrap();
        assert_ne!(other.hash(), parsed.hash());
    }
}
