//! Sovereign's policy layer.
//!
//! Turns a Sovereign access (who, doing what, to which subject or field, in which context) into
//! a Cedar request, evaluates it against a strictly validated schema and policy set, and returns
//! the decision together with the ids of the policies that determined it. Every policy must
//! carry an `@id("...")` annotation, which becomes its Cedar policy id, so reasons are stable
//! names a user wrote rather than positional ids.
//!
//! The crate knows nothing of storage or HTTP: callers supply already-verified facts (token
//! claims, configured entity countries, network zones, resource placement).
//!
//! A full Cedar evaluation takes tens of microseconds, so decisions are memoised, keyed on
//! exactly the request fields the loaded policies can read (see `cache.rs`). A decision that
//! is not memoised evaluates only the policies that read the request context; the rest of
//! the outcome is memoised per principal, action and resource (see `pair.rs`).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{
    ActionConstraint, AuthorizationError, Authorizer, Context as CedarContext,
    Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName, EntityUid, Policy,
    PolicyId, PolicySet, Request, ResourceConstraint, RestrictedExpression, Schema, ValidationMode,
    Validator,
};
use sha2::{Digest, Sha256};

use cache::{DecisionCache, field};
use pair::{Outcome, Pair, PairCache};

mod cache;
pub mod diag;
mod pair;

use diag::{describe, excerpt, position};

/// The default Cedar schema (human schema syntax) that Sovereign's requests conform to.
pub const DEFAULT_SCHEMA: &str = include_str!("../defaults/sovereign.cedarschema");

const DEFAULT_POLICIES_TEMPLATE: &str = include_str!("../defaults/default.cedar.tmpl");
const RESTRICTED_PLACEHOLDER: &str = "__RESTRICTED__";

/// Stands in for an empty restricted-country list: strict validation refuses empty set
/// literals, and this value can never equal an ISO 3166-1 alpha-2 code.
const NO_RESTRICTED_COUNTRY: &str = "(none)";

/// Domain separator for [`PolicyEngine::policy_set_hash`]; bump the version if the encoding
/// ever changes so old and new hashes can never collide.
const HASH_DOMAIN: &[u8] = b"sovereign-policy-set-v1\n";

const PRINCIPAL_TYPE: &str = "Sovereign::Principal";
const SUBJECT_TYPE: &str = "Sovereign::Subject";
const DATA_TYPE: &str = "Sovereign::Data";
const ACTION_TYPE: &str = "Sovereign::Action";
// Policies match on resource attributes, never on resource identity, so one constant id each
// keeps requests cheap to build and decisions independent of record names.
const SUBJECT_ID: &str = "subject";
const DATA_ID: &str = "data";

/// Renders the default policy set, forbidding access from (and by entities controlled from)
/// `restricted_countries`.
pub fn default_policies(restricted_countries: &[String]) -> String {
    DEFAULT_POLICIES_TEMPLATE.replace(
        RESTRICTED_PLACEHOLDER,
        &cedar_string_set(restricted_countries),
    )
}

/// A Cedar set literal of string literals, e.g. `["CN", "RU"]`, as the default policies (and
/// the default invariants) write the restricted countries.
pub fn cedar_string_set(values: &[String]) -> String {
    if values.is_empty() {
        return format!("[\"{NO_RESTRICTED_COUNTRY}\"]");
    }
    // Rust's escapes (`\"`, `\\`, `\n`, `\u{..}`, ...) are all valid Cedar string escapes.
    let items: Vec<String> = values
        .iter()
        .map(|v| format!("\"{}\"", v.escape_default()))
        .collect();
    format!("[{}]", items.join(", "))
}

/// Who is asking. All fields come from verified sources (signed token, configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub id: String,
    pub entity: String,
    pub entity_country: String,
    pub location: String,
    pub clearance: Vec<String>,
    pub roles: Vec<String>,
}

/// What the principal wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Register,
    List,
    Read,
    Write,
    Delete,
    /// Hand a subject's data over (portability): decided per field class of each collection.
    Export,
    /// Send interoperable fields of a collection to the global platform: decided per
    /// jurisdiction of the subjects whose rows would leave.
    Egress,
    /// List the subjects held at a site their residency rule does not allow (as pseudonyms):
    /// decided per jurisdiction.
    Scan,
    /// Move a misplaced subject to a site its rule allows.
    Migrate,
    /// Run a custodian-released algorithm for a subject (the caller asks, on the subject).
    Run,
    /// Give a field class of a subject's collection to a released algorithm as its input:
    /// asked with the release as the principal, only by the gateway's run path.
    Compute,
    /// See the log entries about a subject (their access history, with proofs): the list
    /// names the subject's log pseudonym, which links them to their entries in the public log.
    History,
}

impl Action {
    pub const ALL: [Action; 12] = [
        Action::Register,
        Action::List,
        Action::Read,
        Action::Write,
        Action::Delete,
        Action::Export,
        Action::Egress,
        Action::Scan,
        Action::Migrate,
        Action::Run,
        Action::Compute,
        Action::History,
    ];

    /// Parses a Cedar action id.
    pub fn parse(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// Whether the action applies to a whole subject (`Resource::Subject`) rather than to
    /// one field class of a collection (`Resource::Data`).
    pub fn on_subject(self) -> bool {
        matches!(
            self,
            Action::Register
                | Action::List
                | Action::Scan
                | Action::Migrate
                | Action::Run
                | Action::History
        )
    }

    /// The Cedar action id (`Sovereign::Action::"<this>"`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Register => "register",
            Action::List => "list",
            Action::Read => "read",
            Action::Write => "write",
            Action::Delete => "delete",
            Action::Export => "export",
            Action::Egress => "egress",
            Action::Scan => "scan",
            Action::Migrate => "migrate",
            Action::Run => "run",
            Action::Compute => "compute",
            Action::History => "history",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What the action is applied to: a subject as a whole (register, list) or one field class of
/// a subject's record (read, write, delete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Subject {
        subject_jurisdiction: String,
        site: String,
        site_jurisdiction: String,
        /// The custodian's kill switch suspends the subject's jurisdiction.
        suspended: bool,
    },
    Data {
        subject_jurisdiction: String,
        collection: String,
        field_class: String,
        site: String,
        site_jurisdiction: String,
        /// The collection is configured `approval = true`: protected access needs a grant.
        approval_required: bool,
        /// The custodian's kill switch suspends the subject's jurisdiction.
        suspended: bool,
    },
}

/// Circumstances of the request. Empty strings mean "not given".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    pub purpose: String,
    pub reason_code: String,
    pub network_zone: String,
    /// Unix seconds.
    pub time: i64,
    /// The kind of custodian grant covering this access: `approved` (N-of-M approval),
    /// `break-glass`, or empty for none.
    pub grant: String,
    /// The principal is the data subject the access concerns (the token's `sub` is the
    /// subject's id). Policies pair it with a role, such as `data-subject`.
    pub own_data: bool,
}

/// The values of [`Context::grant`].
pub const GRANT_APPROVED: &str = "approved";
pub const GRANT_BREAK_GLASS: &str = "break-glass";
/// For [`Action::Compute`]: the custodian's signed release of the algorithm.
pub const GRANT_RELEASE: &str = "release";
/// The entity of a released algorithm as a principal. Reserved: no token may name it.
pub const ALGORITHM_ENTITY: &str = "algorithm";
/// The role of a released algorithm as a principal.
pub const RELEASED_ALGORITHM_ROLE: &str = "released-algorithm";

#[derive(Debug, Clone)]
pub struct AccessRequest {
    pub principal: Principal,
    pub action: Action,
    pub resource: Resource,
    pub context: Context,
}

/// The outcome of [`PolicyEngine::decide`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    pub allowed: bool,
    /// `@id`s of the policies that determined the decision, sorted: the satisfied permits for
    /// an allow, the satisfied forbids for a deny (empty when nothing permitted the request,
    /// or when an error overrode Cedar's allow).
    pub policies: Vec<String>,
    /// Evaluation (or request construction) errors. Any error denies the request.
    pub errors: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("invalid Cedar schema: {0}")]
    SchemaParse(String),
    #[error("invalid Cedar policy set: {0}")]
    PolicyParse(String),
    #[error("the policy set does not validate against the schema:\n{}", .0.join("\n"))]
    Validation(Vec<String>),
    #[error(
        "policy #{position} in the policy set has no @id(\"...\") annotation; every policy needs one so decisions can name it (policy starts: {excerpt})"
    )]
    MissingId { position: usize, excerpt: String },
    #[error("two or more policies have @id(\"{0}\"); policy ids must be unique")]
    DuplicateId(String),
    #[error(
        "policy id @id(\"{0}\") is not allowed; ids must be non-empty and use only letters, digits, '_', '.', ':' and '-'"
    )]
    InvalidId(String),
    #[error(
        "policy #{position} in the policy set is a template (it uses ?principal or ?resource); templates are not supported"
    )]
    TemplateNotSupported { position: usize },
    #[error("the schema does not describe Sovereign's requests: {0}")]
    SchemaMismatch(String),
}

/// A loaded, validated schema and policy set. Immutable apart from an internal bounded decision
/// cache; `Send + Sync`, share it in an `Arc`.
pub struct PolicyEngine {
    /// The whole set, as loaded; decisions use the per-action subsets in `plans`, and the
    /// tests hold them to a plain evaluation of this.
    #[cfg(test)]
    policies: PolicySet,
    authorizer: Authorizer,
    ids: Vec<String>,
    hash: String,
    principal_type: EntityTypeName,
    subject_uid: EntityUid,
    data_uid: EntityUid,
    /// Indexed by [`Action::index`].
    action_uids: [EntityUid; Action::ALL.len()],
    /// Why the schema refuses an action on a resource kind, by [`Action::index`] and
    /// [`kind_index`]. Whether a request conforms to the schema depends on nothing else (the
    /// context's shape is fixed by this code), so `decide` skips Cedar's per-request check.
    request_errors: [[Option<String>; 2]; Action::ALL.len()],
    /// The schema's action entities when some action belongs to a group; policies such as
    /// `action in Sovereign::Action::"readers"` need them in the store. Empty otherwise.
    action_entities: Vec<Entity>,
    /// `None` when the policies could not be analysed for the fields they read.
    cache: Option<DecisionCache>,
    /// By [`Action::index`] and [`kind_index`].
    plans: [[Plan; 2]; Action::ALL.len()],
    pairs: PairCache,
}

/// The policies that can apply to one action on one resource kind, split by whether they
/// read the request context.
#[derive(Default)]
struct Plan {
    /// Policies that never read the context: for one principal and resource their outcome is
    /// fixed, so it is computed once per pair and memoised.
    pair: PolicySet,
    /// Policies that read the context, or that could not be analysed: evaluated every time,
    /// except those their probe rules out for a pair.
    request: PolicySet,
    /// For policies in `request`: a permit, with the same id, that holds when the leading part
    /// of its condition that does not read the context holds (see [`context_free_probe`]).
    probes: PolicySet,
    /// For policies with a probe: the policy with that leading part replaced by `true`, used
    /// for a pair whose probe held.
    rests: HashMap<PolicyId, Policy>,
    /// The context attributes (`field::CONTEXT_*` bits) that `request` can read. Only these
    /// are put in the Cedar context: no policy can tell the others are missing, and building
    /// the context is a good part of what remains of an uncached decision.
    context_fields: u32,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("policy_ids", &self.ids)
            .field("policy_set_hash", &self.hash)
            .finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// Parses `schema_src` (Cedar human schema syntax) and `policies_src`, re-ids every policy
    /// with its `@id` annotation and validates the set in strict mode.
    pub fn new(schema_src: &str, policies_src: &str) -> Result<Self, PolicyError> {
        let (schema, _warnings) = Schema::from_cedarschema_str(schema_src)
            .map_err(|e| PolicyError::SchemaParse(describe(&e, schema_src)))?;
        let parsed = PolicySet::from_str(policies_src)
            .map_err(|e| PolicyError::PolicyParse(describe(&e, policies_src)))?;

        // Cedar numbers policies "policy0", "policy1", ... in source order, but iterates them in
        // no particular order; sort so errors point at the first offender in the file.
        let mut templates: Vec<usize> = parsed.templates().map(|t| position(t.id())).collect();
        templates.sort_unstable();
        if let Some(&position) = templates.first() {
            return Err(PolicyError::TemplateNotSupported { position });
        }
        let mut numbered: Vec<(usize, &Policy)> =
            parsed.policies().map(|p| (position(p.id()), p)).collect();
        numbered.sort_unstable_by_key(|(n, _)| *n);

        let mut policies = PolicySet::new();
        let mut ids = Vec::with_capacity(numbered.len());
        let mut seen = HashSet::new();
        for (position, policy) in numbered {
            let Some(id) = policy.annotation("id") else {
                return Err(PolicyError::MissingId {
                    position,
                    excerpt: excerpt(&policy.to_string()),
                });
            };
            if !is_valid_id(id) {
                return Err(PolicyError::InvalidId(id.to_owned()));
            }
            if !seen.insert(id.to_owned()) {
                return Err(PolicyError::DuplicateId(id.to_owned()));
            }
            policies
                .add(policy.new_id(PolicyId::new(id)))
                .map_err(|e| PolicyError::PolicyParse(e.to_string()))?;
            ids.push(id.to_owned());
        }

        let validation = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        if !validation.validation_passed() {
            let messages = validation
                .validation_errors()
                .map(|e| describe(e, policies_src))
                .collect();
            return Err(PolicyError::Validation(messages));
        }

        let action_entities = schema
            .action_entities()
            .map_err(|e| PolicyError::SchemaMismatch(chain(&e)))?;
        let action_ancestors = |action: &EntityUid| -> HashSet<EntityUid> {
            action_entities
                .ancestors(action)
                .map(|ancestors| ancestors.cloned().collect())
                .unwrap_or_default()
        };
        let has_action_groups = action_entities.iter().any(|a| {
            action_entities
                .ancestors(&a.uid())
                .is_some_and(|mut g| g.next().is_some())
        });
        let action_entities = if has_action_groups {
            action_entities.iter().cloned().collect()
        } else {
            Vec::new()
        };

        let parse_uid = |ty: &str, id: &str| {
            EntityUid::from_type_name_and_id(
                EntityTypeName::from_str(ty).expect("constant entity type names parse"),
                EntityId::new(id),
            )
        };
        let cache = cache::observed_fields(&policies, ACTION_TYPE).map(DecisionCache::new);
        let subject_uid = parse_uid(SUBJECT_TYPE, SUBJECT_ID);
        let data_uid = parse_uid(DATA_TYPE, DATA_ID);
        let action_uids = Action::ALL.map(|a| parse_uid(ACTION_TYPE, a.as_str()));
        let mut plans: [[Plan; 2]; Action::ALL.len()] = Default::default();
        for action in Action::ALL {
            let action_uid = &action_uids[action.index()];
            let ancestors = action_ancestors(action_uid);
            for (kind, resource_uid) in [&subject_uid, &data_uid].into_iter().enumerate() {
                let plan = &mut plans[action.index()][kind];
                for policy in policies.policies() {
                    if !scope_can_match(policy, action_uid, &ancestors, resource_uid) {
                        continue;
                    }
                    let context_fields = cache::policy_fields(policy, ACTION_TYPE)
                        .map_or(field::CONTEXT_ALL, |fields| fields & field::CONTEXT_ALL);
                    plan.context_fields |= context_fields;
                    let policy = without_action_and_resource_scope(policy);
                    if context_fields == 0 {
                        plan.pair.add(policy)
                    } else {
                        if let Some((probe, rest)) = context_free_probe(&policy) {
                            plan.probes
                                .add(probe)
                                .map_err(|e| PolicyError::PolicyParse(e.to_string()))?;
                            plan.rests.insert(policy.id().clone(), rest);
                        }
                        plan.request.add(policy)
                    }
                    .map_err(|e| PolicyError::PolicyParse(e.to_string()))?;
                }
            }
        }
        let mut engine = PolicyEngine {
            #[cfg(test)]
            policies,
            authorizer: Authorizer::new(),
            ids,
            hash: policy_set_hash(schema_src, policies_src),
            principal_type: EntityTypeName::from_str(PRINCIPAL_TYPE)
                .expect("constant entity type names parse"),
            subject_uid,
            data_uid,
            action_uids,
            request_errors: Default::default(),
            action_entities,
            cache,
            plans,
            pairs: PairCache::new(),
        };
        engine.check_request_shapes(&schema)?;
        Ok(engine)
    }

    /// Decides `req`. Fails closed: any error building or evaluating the request denies it.
    pub fn decide(&self, req: &AccessRequest) -> Decision {
        let Some(cache) = &self.cache else {
            return self.evaluate_split(req);
        };
        let key = cache.key(req);
        if let Some(decision) = cache.get(&key) {
            return decision;
        }
        let decision = self.evaluate_split(req);
        // Error texts may quote request values the key leaves out; errors are rare, so
        // simply never cache them.
        if decision.errors.is_empty() {
            cache.insert(key, &decision);
        }
        decision
    }

    /// Lowercase hex SHA-256 identifying exactly this schema and policy source text.
    pub fn policy_set_hash(&self) -> &str {
        &self.hash
    }

    /// The `@id`s of all policies, in source order.
    pub fn policy_ids(&self) -> Vec<String> {
        self.ids.clone()
    }

    /// Decides `req` with Cedar the straightforward way: everything built from scratch and the
    /// whole policy set evaluated. Bypasses both caches; the tests hold the fast path to it.
    #[cfg(test)]
    fn evaluate(&self, req: &AccessRequest) -> Decision {
        let (request, entities) = match self.build(req, None) {
            Ok(built) => built,
            Err(error) => {
                return Decision {
                    allowed: false,
                    policies: Vec::new(),
                    errors: vec![error],
                };
            }
        };
        let response = self
            .authorizer
            .is_authorized(&request, &self.policies, &entities);
        let diagnostics = response.diagnostics();
        let errors: Vec<String> = diagnostics.errors().map(|e| e.to_string()).collect();
        let allowed = response.decision() == CedarDecision::Allow && errors.is_empty();
        // When an error overrides Cedar's allow, the satisfied permits did not determine the
        // outcome; naming them would read as if they had denied it.
        let mut policies: Vec<String> = if allowed || response.decision() == CedarDecision::Deny {
            diagnostics
                .reason()
                .map(|id| AsRef::<str>::as_ref(id).to_owned())
                .collect()
        } else {
            Vec::new()
        };
        policies.sort_unstable();
        Decision {
            allowed,
            policies,
            errors,
        }
    }

    /// Decides `req` with Cedar, bypassing the decision cache: the memoised outcome of the
    /// policies that do not read the context, merged with an evaluation of those that do.
    fn evaluate_split(&self, req: &AccessRequest) -> Decision {
        match self.try_evaluate_split(req) {
            Ok(decision) => decision,
            Err(error) => Decision {
                allowed: false,
                policies: Vec::new(),
                errors: vec![error],
            },
        }
    }

    fn try_evaluate_split(&self, req: &AccessRequest) -> Result<Decision, String> {
        let (action, kind) = (req.action.index(), kind_index(&req.resource));
        if let Some(error) = &self.request_errors[action][kind] {
            return Err(error.clone());
        }
        let plan = &self.plans[action][kind];
        // Everything but the context: exactly what the entities and the pair's policies see.
        let key = cache::request_key(field::PRINCIPAL_ALL | field::RESOURCE_ALL, req);
        let pair = match self.pairs.get(&key) {
            Some(pair) => pair,
            None => {
                let (principal_uid, principal) = self.principal_entity(&req.principal)?;
                let resource = self.resource_entity(&req.resource)?;
                let entities = self.entities(principal, resource)?;
                let request = self.request(req, principal_uid.clone(), plan.context_fields)?;
                let outcome = self.outcome(&request, &plan.pair, &entities);
                let policies = self.request_policies(plan, &request, &entities)?;
                let pair = Arc::new(Pair {
                    principal_uid,
                    entities,
                    outcome,
                    policies,
                });
                self.pairs.insert(key, Arc::clone(&pair));
                pair
            }
        };
        if pair.policies.is_empty() {
            // Nothing left to evaluate. Building the context cannot fail (literals under
            // distinct names), so skipping it hides no error.
            return Ok(merge(&pair.outcome, &Outcome::default()));
        }
        let request = self.request(req, pair.principal_uid.clone(), plan.context_fields)?;
        let outcome = self.outcome(&request, &pair.policies, &pair.entities);
        Ok(merge(&pair.outcome, &outcome))
    }

    /// The policies of `plan.request` that can still hold or fail for this pair: those whose
    /// probe held or failed, and those without a probe. A probe that is false without error
    /// means the policy's condition stops, false, before it reads the context, whatever the
    /// context is. Where the probe held, the policy's rest (the leading part replaced by
    /// `true`) stands in for it: the leading part would evaluate to `true` again.
    fn request_policies(
        &self,
        plan: &Plan,
        request: &Request,
        entities: &Entities,
    ) -> Result<PolicySet, String> {
        let mut ruled_out = HashSet::new();
        let mut held_ids = HashSet::new();
        if !plan.probes.is_empty() {
            let response = self
                .authorizer
                .is_authorized(request, &plan.probes, entities);
            let diagnostics = response.diagnostics();
            let held: HashSet<&PolicyId> = diagnostics.reason().collect();
            let failed: HashSet<&PolicyId> = diagnostics
                .errors()
                .map(|e| {
                    let AuthorizationError::PolicyEvaluationError(inner) = e;
                    inner.policy_id()
                })
                .collect();
            ruled_out.extend(
                plan.probes
                    .policies()
                    .map(Policy::id)
                    .filter(|id| !held.contains(id) && !failed.contains(id))
                    .cloned(),
            );
            held_ids.extend(held.into_iter().cloned());
        }
        let mut policies = PolicySet::new();
        for policy in plan.request.policies() {
            let id = policy.id();
            if ruled_out.contains(id) {
                continue;
            }
            let policy = match plan.rests.get(id) {
                Some(rest) if held_ids.contains(id) => rest,
                _ => policy,
            };
            policies
                .add(policy.clone())
                .map_err(|e| format!("cannot select policies: {e}"))?;
        }
        Ok(policies)
    }

    /// Evaluates `policies` (part of the policy set) for `request`.
    fn outcome(&self, request: &Request, policies: &PolicySet, entities: &Entities) -> Outcome {
        if policies.is_empty() {
            return Outcome::default();
        }
        let response = self.authorizer.is_authorized(request, policies, entities);
        let diagnostics = response.diagnostics();
        let reasons = diagnostics
            .reason()
            .map(|id| AsRef::<str>::as_ref(id).to_owned())
            .collect();
        let errors = diagnostics
            .errors()
            .map(|e| {
                let AuthorizationError::PolicyEvaluationError(inner) = e;
                let id: &str = inner.policy_id().as_ref();
                let position = self.ids.iter().position(|p| p == id);
                (position.unwrap_or(usize::MAX), e.to_string())
            })
            .collect();
        // Cedar's reasons are the satisfied forbids if any holds, else the satisfied permits;
        // a deny with reasons therefore names forbids.
        let (permits, forbids) = if response.decision() == CedarDecision::Allow {
            (reasons, Vec::new())
        } else {
            (Vec::new(), reasons)
        };
        Outcome {
            permits,
            forbids,
            errors,
        }
    }

    /// The Cedar request for `req`, with only the context attributes in `context_fields`.
    fn request(
        &self,
        req: &AccessRequest,
        principal_uid: EntityUid,
        context_fields: u32,
    ) -> Result<Request, String> {
        Request::new(
            principal_uid,
            self.action_uids[req.action.index()].clone(),
            self.resource_uid(&req.resource).clone(),
            context(&req.context, context_fields)?,
            None,
        )
        .map_err(|e| format!("invalid request: {}", chain(&e)))
    }

    fn entities(&self, principal: Entity, resource: Entity) -> Result<Entities, String> {
        Entities::from_entities(
            [principal, resource]
                .into_iter()
                .chain(self.action_entities.iter().cloned()),
            None,
        )
        .map_err(|e| format!("invalid entities: {}", chain(&e)))
    }

    /// Builds the Cedar request and entities for `req`. With `schema` set, both are checked
    /// against it by Cedar; without, the request's conformance comes from `request_errors`
    /// and the entities' shape is the one [`Self::check_request_shapes`] checked at load.
    fn build(
        &self,
        req: &AccessRequest,
        schema: Option<&Schema>,
    ) -> Result<(Request, Entities), String> {
        if schema.is_none()
            && let Some(error) = &self.request_errors[req.action.index()][kind_index(&req.resource)]
        {
            return Err(error.clone());
        }

        let (principal_uid, principal) = self.principal_entity(&req.principal)?;
        let resource = self.resource_entity(&req.resource)?;
        let context = context(&req.context, field::CONTEXT_ALL)?;
        let request = Request::new(
            principal_uid,
            self.action_uids[req.action.index()].clone(),
            self.resource_uid(&req.resource).clone(),
            context,
            schema,
        )
        .map_err(|e| format!("invalid request: {}", chain(&e)))?;
        let entities = Entities::from_entities(
            [principal, resource]
                .into_iter()
                .chain(self.action_entities.iter().cloned()),
            schema,
        )
        .map_err(|e| format!("invalid entities: {}", chain(&e)))?;
        Ok((request, entities))
    }

    fn principal_entity(&self, p: &Principal) -> Result<(EntityUid, Entity), String> {
        let uid =
            EntityUid::from_type_name_and_id(self.principal_type.clone(), EntityId::new(&p.id));
        let entity = Entity::new(
            uid.clone(),
            HashMap::from([
                ("id".to_owned(), string(&p.id)),
                ("entity".to_owned(), string(&p.entity)),
                ("entity_country".to_owned(), string(&p.entity_country)),
                ("location".to_owned(), string(&p.location)),
                ("clearance".to_owned(), string_set(&p.clearance)),
                ("roles".to_owned(), string_set(&p.roles)),
            ]),
            HashSet::new(),
        )
        .map_err(|e| format!("cannot build principal entity: {}", chain(&e)))?;
        Ok((uid, entity))
    }

    fn resource_uid(&self, resource: &Resource) -> &EntityUid {
        match resource {
            Resource::Subject { .. } => &self.subject_uid,
            Resource::Data { .. } => &self.data_uid,
        }
    }

    fn resource_entity(&self, resource: &Resource) -> Result<Entity, String> {
        let attrs = match resource {
            Resource::Subject {
                subject_jurisdiction,
                site,
                site_jurisdiction,
                suspended,
            } => HashMap::from([
                (
                    "subject_jurisdiction".to_owned(),
                    string(subject_jurisdiction),
                ),
                ("site".to_owned(), string(site)),
                ("site_jurisdiction".to_owned(), string(site_jurisdiction)),
                (
                    "suspended".to_owned(),
                    RestrictedExpression::new_bool(*suspended),
                ),
            ]),
            Resource::Data {
                subject_jurisdiction,
                collection,
                field_class,
                site,
                site_jurisdiction,
                approval_required,
                suspended,
            } => HashMap::from([
                (
                    "subject_jurisdiction".to_owned(),
                    string(subject_jurisdiction),
                ),
                ("collection".to_owned(), string(collection)),
                ("field_class".to_owned(), string(field_class)),
                ("site".to_owned(), string(site)),
                ("site_jurisdiction".to_owned(), string(site_jurisdiction)),
                (
                    "approval_required".to_owned(),
                    RestrictedExpression::new_bool(*approval_required),
                ),
                (
                    "suspended".to_owned(),
                    RestrictedExpression::new_bool(*suspended),
                ),
            ]),
        };
        Entity::new(self.resource_uid(resource).clone(), attrs, HashSet::new())
            .map_err(|e| format!("cannot build resource entity: {}", chain(&e)))
    }

    /// Refuses a schema that Sovereign's requests do not conform to (otherwise every decision
    /// would be a deny with an error, discovered only at request time), and records which
    /// action and resource kind pairs the schema allows.
    fn check_request_shapes(&mut self, schema: &Schema) -> Result<(), PolicyError> {
        let principal = Principal {
            id: "probe".into(),
            entity: String::new(),
            entity_country: String::new(),
            location: String::new(),
            clearance: vec![String::new()],
            roles: vec![String::new()],
        };
        let subject = Resource::Subject {
            subject_jurisdiction: String::new(),
            site: String::new(),
            site_jurisdiction: String::new(),
            suspended: false,
        };
        let data = Resource::Data {
            subject_jurisdiction: String::new(),
            collection: String::new(),
            field_class: String::new(),
            site: String::new(),
            site_jurisdiction: String::new(),
            approval_required: false,
            suspended: false,
        };
        for action in Action::ALL {
            for resource in [&subject, &data] {
                let probe = AccessRequest {
                    principal: principal.clone(),
                    action,
                    resource: resource.clone(),
                    context: Context::default(),
                };
                let outcome = self.build(&probe, Some(schema));
                let natural = action.on_subject() == matches!(resource, Resource::Subject { .. });
                match outcome {
                    Ok(_) => {}
                    Err(e) if natural => {
                        return Err(PolicyError::SchemaMismatch(format!(
                            "action \"{}\": {e}",
                            action.as_str()
                        )));
                    }
                    Err(e) => {
                        self.request_errors[action.index()][kind_index(resource)] = Some(e);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether `policy`'s action and resource scope can hold for `action` (with its action-group
/// `ancestors`) on the resource `resource`. Cedar checks the scope before the conditions and
/// stops at the first part that is false, so a policy whose scope cannot hold is neither
/// satisfied nor in error: leaving it out changes no decision. Errs towards `true`.
fn scope_can_match(
    policy: &Policy,
    action: &EntityUid,
    ancestors: &HashSet<EntityUid>,
    resource: &EntityUid,
) -> bool {
    let action_matches = match policy.action_constraint() {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(uid) => &uid == action,
        ActionConstraint::In(uids) => uids
            .iter()
            .any(|uid| uid == action || ancestors.contains(uid)),
    };
    // The resource entity has no parents, so `in` holds only for the resource itself.
    let resource_matches = match policy.resource_constraint() {
        ResourceConstraint::Any => true,
        ResourceConstraint::Eq(uid) | ResourceConstraint::In(uid) => &uid == resource,
        ResourceConstraint::Is(ty) => &ty == resource.type_name(),
        ResourceConstraint::IsIn(ty, uid) => &ty == resource.type_name() && &uid == resource,
    };
    action_matches && resource_matches
}

/// `policy` with its action and resource scope removed, for a subset of policies whose scope
/// [`scope_can_match`] found to hold. That check is exact: the action and resource are fixed
/// per subset, the resource has no parents and the action groups are the schema's. Cedar
/// would otherwise rebuild an `action in [...]` set literal on every evaluation, a good part
/// of an uncached decision. The conditions are kept as written, so the policy is satisfied,
/// or fails with the same error, exactly when the original is. Returns the policy unchanged
/// if the rewrite does not go through.
fn without_action_and_resource_scope(policy: &Policy) -> Policy {
    let rewritten = policy.to_json().ok().and_then(|mut json| {
        let scope = json.as_object_mut()?;
        scope.insert("action".to_owned(), serde_json::json!({ "op": "All" }));
        scope.insert("resource".to_owned(), serde_json::json!({ "op": "All" }));
        Policy::from_json(Some(policy.id().clone()), json).ok()
    });
    rewritten.unwrap_or_else(|| policy.clone())
}

/// For `policy` (with no action or resource scope), its probe and its rest, or `None` if its
/// first condition is not a `when` that starts with a part not reading the context.
///
/// The probe is a permit with `policy`'s id and principal scope whose condition is the
/// longest leading part of that `when` condition that does not read the context. Cedar
/// evaluates `a && b && c`, that is `(a && b) && c`, left operand first and stops at the
/// first false one, so when the probe is false without error, so is `policy`, for every
/// context. The rest is `policy` with that leading part replaced by `true`: when the probe
/// holds, the leading part evaluates to `true` in `policy` too, so the two agree.
fn context_free_probe(policy: &Policy) -> Option<(Policy, Policy)> {
    let json = policy.to_json().ok()?;
    let first = json.get("conditions")?.as_array()?.first()?;
    if first.get("kind")?.as_str()? != "when" {
        return None;
    }
    // The path of `&&` left operands from the condition's root down to the leading part.
    let mut depth = 0;
    let mut part = first.get("body")?;
    while cache::expr_fields(part, ACTION_TYPE) & field::CONTEXT_ALL != 0 {
        part = part.get("&&")?.get("left")?;
        depth += 1;
    }
    let prefix = part.clone();

    let mut probe = json.clone();
    let object = probe.as_object_mut()?;
    object.insert("effect".to_owned(), serde_json::json!("permit"));
    object.insert(
        "conditions".to_owned(),
        serde_json::json!([{ "kind": "when", "body": prefix }]),
    );

    let mut rest = json;
    let mut slot = rest.get_mut("conditions")?.get_mut(0)?.get_mut("body")?;
    for _ in 0..depth {
        slot = slot.get_mut("&&")?.get_mut("left")?;
    }
    *slot = serde_json::json!({ "Value": true });

    let id = policy.id().clone();
    Some((
        Policy::from_json(Some(id.clone()), probe).ok()?,
        Policy::from_json(Some(id), rest).ok()?,
    ))
}

/// Combines the outcomes of two disjoint parts of the policy set into the decision one
/// evaluation of their union gives (see [`PolicyEngine::evaluate`]).
fn merge(a: &Outcome, b: &Outcome) -> Decision {
    let mut errors: Vec<&(usize, String)> = a.errors.iter().chain(&b.errors).collect();
    errors.sort_by_key(|(position, _)| *position);
    let errors: Vec<String> = errors.into_iter().map(|(_, e)| e.clone()).collect();
    let forbids: Vec<&String> = a.forbids.iter().chain(&b.forbids).collect();
    let permits: Vec<&String> = a.permits.iter().chain(&b.permits).collect();
    let (allowed, policies) = if !forbids.is_empty() {
        (false, forbids)
    } else if permits.is_empty() {
        (false, Vec::new())
    } else if errors.is_empty() {
        (true, permits)
    } else {
        // An error overrides Cedar's allow; the permits did not determine the outcome.
        (false, Vec::new())
    };
    let mut policies: Vec<String> = policies.into_iter().cloned().collect();
    policies.sort_unstable();
    Decision {
        allowed,
        policies,
        errors,
    }
}

/// The Cedar context for `c`, with the attributes whose `field::CONTEXT_*` bit is in `fields`.
fn context(c: &Context, fields: u32) -> Result<CedarContext, String> {
    let mut pairs = Vec::with_capacity(6);
    let mut put = |bit: u32, name: &str, value: fn(&Context) -> RestrictedExpression| {
        if fields & bit != 0 {
            pairs.push((name.to_owned(), value(c)));
        }
    };
    put(field::CONTEXT_PURPOSE, "purpose", |c| string(&c.purpose));
    put(field::CONTEXT_REASON_CODE, "reason_code", |c| {
        string(&c.reason_code)
    });
    put(field::CONTEXT_NETWORK_ZONE, "network_zone", |c| {
        string(&c.network_zone)
    });
    put(field::CONTEXT_TIME, "time", |c| {
        RestrictedExpression::new_long(c.time)
    });
    put(field::CONTEXT_GRANT, "grant", |c| string(&c.grant));
    put(field::CONTEXT_OWN_DATA, "own_data", |c| {
        RestrictedExpression::new_bool(c.own_data)
    });
    CedarContext::from_pairs(pairs)
        .map_err(|e| format!("cannot build request context: {}", chain(&e)))
}

fn kind_index(resource: &Resource) -> usize {
    match resource {
        Resource::Subject { .. } => 0,
        Resource::Data { .. } => 1,
    }
}

fn string(s: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(s.to_owned())
}

fn string_set(values: &[String]) -> RestrictedExpression {
    RestrictedExpression::new_set(values.iter().map(|v| string(v)))
}

/// An error and its causes on one line; several Cedar errors keep the useful detail (which
/// attribute, which type) only in their source.
fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !out.contains(&cause_text) {
            let _ = write!(out, ": {cause_text}");
        }
        source = cause.source();
    }
    out
}

/// Lowercase hex SHA-256 identifying a schema and policy source text: over a domain
/// separator, then each text prefixed by its length (u64, big-endian). Anyone holding the
/// two texts can recompute it; a monitor checks fetched policy sets with it.
pub fn policy_set_hash(schema_src: &str, policies_src: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(HASH_DOMAIN);
    hasher.update((schema_src.len() as u64).to_be_bytes());
    hasher.update(schema_src.as_bytes());
    hasher.update((policies_src.len() as u64).to_be_bytes());
    hasher.update(policies_src.as_bytes());
    hex::encode(hasher.finalize())
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
    fn engine_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PolicyEngine>();
    }

    #[test]
    fn restricted_set_literal_escapes_and_handles_empty() {
        assert_eq!(
            cedar_string_set(&["CN".into(), "RU".into()]),
            r#"["CN", "RU"]"#
        );
        assert_eq!(cedar_string_set(&[r#"a"b\"#.into()]), r#"["a\"b\\"]"#);
        assert_eq!(cedar_string_set(&[]), r#"["(none)"]"#);
    }

    #[test]
    fn ids_are_checked_for_allowed_characters() {
        assert!(is_valid_id("permit-usds.vetted:data_1"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("has space"));
        assert!(!is_valid_id("quote\""));
        assert!(!is_valid_id("ünïcode"));
    }

    /// Requests varying every field, including ones the default policies never read.
    fn request_grid() -> Vec<AccessRequest> {
        let principals = [
            ("usds", "US", "US", &["us-data"][..], &["engineer"][..]),
            ("usds", "US", "US", &[], &["engineer"]),
            ("usds", "US", "CN", &["us-data"], &[]),
            ("parent", "CN", "SG", &[], &["engineer"]),
            ("parent", "CN", "US", &[], &[]),
            ("monitor", "US", "US", &[], &["monitor"]),
            ("usds", "US", "US", &["us-data"], &["service", "monitor"]),
        ];
        let mut grid = Vec::new();
        for (entity, country, location, clearance, roles) in principals {
            for id in ["alice", "bob"] {
                for action in Action::ALL {
                    for (jurisdiction, site) in
                        [("US", "us-east"), ("SG", "sg-legacy"), ("US", "sg-legacy")]
                    {
                        for class in ["-", "protected", "interoperable"] {
                            for (purpose, time) in [("", 0), ("audit", 0), ("audit", 200)] {
                                let resource = if class == "-" {
                                    Resource::Subject {
                                        subject_jurisdiction: jurisdiction.into(),
                                        site: site.into(),
                                        site_jurisdiction: site[..2].to_uppercase(),
                                        suspended: time == 200,
                                    }
                                } else {
                                    Resource::Data {
                                        subject_jurisdiction: jurisdiction.into(),
                                        collection: if time == 0 { "profile" } else { "activity" }
                                            .into(),
                                        field_class: class.into(),
                                        site: site.into(),
                                        site_jurisdiction: site[..2].to_uppercase(),
                                        approval_required: class == "protected" && time == 0,
                                        suspended: false,
                                    }
                                };
                                grid.push(AccessRequest {
                                    principal: Principal {
                                        id: id.into(),
                                        entity: entity.into(),
                                        entity_country: country.into(),
                                        location: location.into(),
                                        clearance: clearance
                                            .iter()
                                            .map(|c| c.to_string())
                                            .collect(),
                                        roles: roles.iter().map(|r| r.to_string()).collect(),
                                    },
                                    action,
                                    resource,
                                    context: Context {
                                        purpose: purpose.into(),
                                        time,
                                        grant: if id == "alice" {
                                            GRANT_APPROVED.into()
                                        } else {
                                            String::new()
                                        },
                                        ..Context::default()
                                    },
                                });
                            }
                        }
                    }
                }
            }
        }
        grid
    }

    /// The cache must never change a decision: compare, request by request, the cached path
    /// (warmed by every other request first) with a fresh Cedar evaluation.
    #[test]
    fn cached_decisions_equal_fresh_evaluations() {
        let policy_sets = [
            default_policies(&["CN".into(), "RU".into()]),
            r#"@id("alice-only") permit (principal, action, resource) when { principal.id == "alice" };"#.into(),
            r#"@id("early") permit (principal, action, resource) when { context.time < 100 };"#.into(),
            r#"@id("us-site") permit (principal, action, resource is Sovereign::Data) when { resource.site == "us-east" && resource.collection == "profile" };"#.into(),
            r#"@id("literal") permit (principal, action, resource) when { principal == Sovereign::Principal::"bob" };"#.into(),
            r#"@id("overflow") permit (principal, action, resource) when { context.time * 9223372036854775807 == 0 };"#.into(),
        ];
        let grid = request_grid();
        for policies in &policy_sets {
            let engine = PolicyEngine::new(DEFAULT_SCHEMA, policies).expect("test policies load");
            assert!(
                engine.cache.is_some(),
                "policies should be analysable: {policies}"
            );
            for req in &grid {
                engine.decide(req);
            }
            let mut allowed = 0;
            for req in &grid {
                let fresh = engine.evaluate(req);
                assert_eq!(
                    engine.decide(req),
                    fresh,
                    "policies:\n{policies}\nrequest: {req:?}"
                );
                allowed += usize::from(fresh.allowed);
            }
            // Each set allows some requests and denies others, so the comparison has teeth.
            assert!(allowed > 0 && allowed < grid.len(), "{policies}: {allowed}");
        }
    }

    /// Requests covering what the default policies distinguish: every action on both resource
    /// kinds (the schema refuses half of those pairs), restricted locations and entity
    /// countries, monitors, data subjects, egress and operator roles, suspension, approval,
    /// each kind of grant, own data and an empty purpose.
    fn split_grid() -> Vec<AccessRequest> {
        let principals = [
            ("usds", "US", "US", &["us-data"][..], &["engineer"][..]),
            ("usds", "US", "CN", &["us-data"], &["engineer"]),
            ("usds", "US", "US", &[], &[]),
            ("parent", "CN", "SG", &[], &["engineer"]),
            ("parent", "RU", "US", &[], &[]),
            ("monitor", "US", "US", &[], &[]),
            ("usds", "US", "US", &["us-data"], &["monitor"]),
            ("public", "US", "US", &[], &["data-subject"]),
            ("public", "US", "KP", &[], &["data-subject"]),
            ("global", "SG", "SG", &[], &["egress"]),
            ("custodian", "US", "US", &[], &["custodian-operator"]),
            ("parent", "SG", "US", &[], &["algorithm-runner"]),
            ("algorithm", "US", "US", &[], &["released-algorithm"]),
            ("algorithm", "US", "CN", &[], &["released-algorithm"]),
        ];
        let mut resources = Vec::new();
        for jurisdiction in ["US", "SG"] {
            for suspended in [false, true] {
                resources.push(Resource::Subject {
                    subject_jurisdiction: jurisdiction.into(),
                    site: "us-east".into(),
                    site_jurisdiction: "US".into(),
                    suspended,
                });
            }
            for class in ["protected", "interoperable"] {
                for (approval_required, suspended) in [(false, false), (true, false), (false, true)]
                {
                    resources.push(Resource::Data {
                        subject_jurisdiction: jurisdiction.into(),
                        collection: "profile".into(),
                        field_class: class.into(),
                        site: "sg-legacy".into(),
                        site_jurisdiction: "SG".into(),
                        approval_required,
                        suspended,
                    });
                }
            }
        }
        let contexts = [
            ("support", "", false),
            ("", "", false),
            ("support", GRANT_APPROVED, false),
            ("support", GRANT_BREAK_GLASS, true),
            ("support", GRANT_RELEASE, false),
            ("", "", true),
            ("support", "", true),
        ];
        let mut grid = Vec::new();
        for (entity, country, location, clearance, roles) in principals {
            for action in Action::ALL {
                for resource in &resources {
                    for (purpose, grant, own_data) in contexts {
                        grid.push(AccessRequest {
                            principal: Principal {
                                id: format!("{entity}-{location}"),
                                entity: entity.into(),
                                entity_country: country.into(),
                                location: location.into(),
                                clearance: clearance.iter().map(|c| c.to_string()).collect(),
                                roles: roles.iter().map(|r| r.to_string()).collect(),
                            },
                            action,
                            resource: resource.clone(),
                            context: Context {
                                purpose: purpose.into(),
                                grant: grant.into(),
                                own_data,
                                time: 50,
                                ..Context::default()
                            },
                        });
                    }
                }
            }
        }
        grid
    }

    /// The split evaluation (memoised context-free outcome, per-action policy subsets) must
    /// decide exactly as one plain Cedar evaluation of the whole set, built from scratch:
    /// same allow, same determining policies, same errors in the same order. Each request
    /// is checked both when its pair is new and when the pair was memoised for another
    /// context.
    #[test]
    fn split_decisions_equal_plain_evaluations() {
        let groups_schema = DEFAULT_SCHEMA.replace(
            r#"action "read", "write", "delete", "export", "egress", "compute" appliesTo"#,
            "action \"data-actions\";\n  action \"read\", \"write\", \"delete\", \"export\", \"egress\", \"compute\" in [\"data-actions\"] appliesTo",
        );
        assert_ne!(groups_schema, DEFAULT_SCHEMA);
        let sets: [(&str, String); 5] = [
            (DEFAULT_SCHEMA, default_policies(&["CN".into(), "RU".into(), "KP".into()])),
            (DEFAULT_SCHEMA, default_policies(&[])),
            // Errors in both halves (a context-free and a context-reading policy), next to
            // permits and forbids in both halves.
            (
                DEFAULT_SCHEMA,
                r#"@id("z-ctx-error") permit (principal, action, resource) when { context.purpose == "" && context.time * 9223372036854775807 > 0 };
@id("a-pair-error") forbid (principal, action, resource) when { principal.location == "CN" && 9223372036854775807 + 1 > 0 };
@id("pair-permit") permit (principal, action, resource is Sovereign::Data) when { resource.field_class == "interoperable" };
@id("ctx-permit") permit (principal, action == Sovereign::Action::"list", resource) when { context.purpose != "" };
@id("pair-forbid") forbid (principal, action, resource) when { resource.suspended };
@id("ctx-forbid") forbid (principal, action, resource) when { context.own_data };
@id("probe-error") permit (principal, action, resource) when { principal.location == "CN" && 9223372036854775807 + 1 > 0 && context.own_data };
@id("ctx-has") permit (principal, action == Sovereign::Action::"scan", resource) when { context has network_zone && context.network_zone == "" };"#
                    .into(),
            ),
            (
                &groups_schema,
                r#"@id("data") permit (principal, action in Sovereign::Action::"data-actions", resource) when { principal.entity == "usds" };
@id("data-purpose") permit (principal, action in [Sovereign::Action::"data-actions"], resource is Sovereign::Data) when { context.purpose != "" };
@id("scan") permit (principal, action == Sovereign::Action::"scan", resource is Sovereign::Subject);
@id("no-subject") forbid (principal, action, resource in Sovereign::Subject::"subject") when { principal.entity == "parent" };"#
                    .into(),
            ),
            (
                &groups_schema,
                default_policies(&["CN".into()]),
            ),
        ];
        let grid = split_grid();
        for (schema, policies) in &sets {
            let engine = PolicyEngine::new(schema, policies).expect("test policies load");
            let (mut allowed, mut errors) = (0, 0);
            for (n, req) in grid.iter().enumerate() {
                let plain = engine.evaluate(req);
                // Memoise the pair with another context first, half of the time.
                if n % 2 == 0 {
                    let mut other = req.clone();
                    other.context.purpose = format!("other-{n}");
                    other.context.own_data = !req.context.own_data;
                    other.context.time = -50;
                    assert_eq!(engine.evaluate_split(&other), engine.evaluate(&other));
                }
                assert_eq!(
                    engine.evaluate_split(req),
                    plain,
                    "policies:\n{policies}\nrequest: {req:?}"
                );
                allowed += usize::from(plain.allowed);
                errors += usize::from(!plain.errors.is_empty());
            }
            assert!(allowed > 0 && allowed < grid.len(), "{policies}: {allowed}");
            assert!(errors > 0, "the refused action/resource pairs give errors");
        }
    }

    /// The subsets' policies really are rewritten (a failed rewrite falls back silently to
    /// the original) and keep their ids.
    #[test]
    fn subsets_drop_the_scope_they_were_selected_by() {
        let engine = PolicyEngine::new(DEFAULT_SCHEMA, &default_policies(&["CN".into()]))
            .expect("default policies load");
        // Reads apply to data, kind 1.
        let plan = &engine.plans[Action::Read.index()][1];
        assert!(plan.request.policies().count() > 0 && plan.pair.policies().count() > 0);
        // Every context-reading default policy starts with a part that does not.
        assert_eq!(
            plan.probes.policies().count(),
            plan.request.policies().count()
        );
        assert_eq!(plan.rests.len(), plan.request.policies().count());
        let rest = &plan.rests[&PolicyId::new("permit-usds-vetted-data")];
        assert!(
            rest.to_string()
                .contains(r#"when { true && (context.purpose != "") }"#),
            "{rest}"
        );
        for p in plan.request.policies().chain(plan.pair.policies()) {
            assert_eq!(p.action_constraint(), ActionConstraint::Any, "{p}");
            assert_eq!(p.resource_constraint(), ResourceConstraint::Any, "{p}");
            assert_eq!(p.annotation("id"), Some(AsRef::<str>::as_ref(p.id())));
        }
    }

    #[test]
    fn pair_cache_stays_bounded() {
        let engine = PolicyEngine::new(DEFAULT_SCHEMA, &default_policies(&[]))
            .expect("default policies load");
        let mut req = split_grid().remove(0);
        for i in 0..pair::capacity() * 2 + 1 {
            req.principal.id = i.to_string();
            engine.evaluate_split(&req);
            assert!(engine.pairs.len() <= pair::capacity());
        }
    }

    #[test]
    fn line_column_counts_from_one() {
        let src = "ab\ncd\nef";
        assert_eq!(diag::line_column(src, 0), Some((1, 1)));
        assert_eq!(diag::line_column(src, 4), Some((2, 2)));
        assert_eq!(diag::line_column(src, 100), None);
    }
}
