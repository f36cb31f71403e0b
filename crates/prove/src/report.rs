//! The proof report and counterexamples, in plain terms.

use std::collections::BTreeMap;
use std::fmt;

use cedar_policy::{Authorizer, Entities, EntityUid, EvalResult, PolicySet, Request};
use serde::Serialize;

use crate::solver::SolverInfo;

/// Result of proving an active policy set against a set of invariants.
#[derive(Debug, Clone, Serialize)]
pub struct ProofReport {
    /// `policy::PolicyEngine::policy_set_hash` of the same schema and policy source.
    pub policy_set_hash: String,
    /// [`crate::Invariants::hash`].
    pub invariant_set_hash: String,
    pub solver: SolverInfo,
    /// Every request environment checked, e.g.
    /// `Sovereign::Principal, Sovereign::Action::"read", Sovereign::Data`.
    pub environments: Vec<String>,
    pub invariants: Vec<InvariantResult>,
    pub never_errors: Vec<NeverErrorsResult>,
    /// Wall-clock time of the whole proof, milliseconds.
    pub duration_ms: f64,
}

impl ProofReport {
    /// True iff every invariant is proven and no policy can error. A timeout, a failure or a
    /// counterexample (confirmed or not) makes it false.
    pub fn all_proven(&self) -> bool {
        self.invariants
            .iter()
            .all(|i| matches!(i.outcome, Outcome::Proven))
            && self
                .never_errors
                .iter()
                .all(|p| matches!(p.outcome, ErrorsOutcome::NeverErrors))
    }

    /// The invariants not proven.
    pub fn unproven(&self) -> impl Iterator<Item = &InvariantResult> {
        self.invariants
            .iter()
            .filter(|i| !matches!(i.outcome, Outcome::Proven))
    }

    /// The report as one JSON value, for logging.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a proof report serialises")
    }
}

impl fmt::Display for ProofReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "policy set {} against invariants {} with {} {} ({} environments, {:.1} ms): {}",
            short(&self.policy_set_hash),
            short(&self.invariant_set_hash),
            self.solver.name,
            self.solver.version,
            self.environments.len(),
            self.duration_ms,
            if self.all_proven() {
                "all proven"
            } else {
                "NOT proven"
            }
        )?;
        for i in &self.invariants {
            writeln!(
                f,
                "  invariant {} ({}): {}",
                i.name, i.description, i.outcome
            )?;
        }
        for p in &self.never_errors {
            if !matches!(p.outcome, ErrorsOutcome::NeverErrors) {
                writeln!(f, "  policy {}: {}", p.policy_id, p.outcome)?;
            }
        }
        Ok(())
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// One invariant's result.
#[derive(Debug, Clone, Serialize)]
pub struct InvariantResult {
    pub name: String,
    pub description: String,
    pub outcome: Outcome,
    /// Time spent on this invariant (compiling and solving, all environments), milliseconds.
    pub duration_ms: f64,
}

/// Whether the active policies imply an invariant.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "result", content = "detail", rename_all = "snake_case")]
pub enum Outcome {
    /// In every request environment, every request the active policies allow, the invariant
    /// allows too.
    Proven,
    /// A request the active policies allow and the invariant denies (see
    /// [`Counterexample::confirmed`] for whether Cedar's authorizer agrees).
    Refuted(Box<Counterexample>),
    /// The solver ran out of time in `environment`; not proven.
    TimedOut { environment: String },
    /// The proof could not be carried out; not proven.
    Failed(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Proven => write!(f, "proven"),
            Outcome::Refuted(cex) if cex.confirmed => write!(f, "REFUTED: {cex}"),
            Outcome::Refuted(cex) => write!(
                f,
                "NOT proven: the solver's counterexample is not confirmed by Cedar's authorizer (a solver or encoding problem): {cex}"
            ),
            Outcome::TimedOut { environment } => {
                write!(f, "NOT proven: the solver timed out on {environment}")
            }
            Outcome::Failed(message) => write!(f, "NOT proven: {message}"),
        }
    }
}

/// One active policy's never-errors result.
#[derive(Debug, Clone, Serialize)]
pub struct NeverErrorsResult {
    pub policy_id: String,
    pub outcome: ErrorsOutcome,
    /// Time spent on this policy (compiling and solving, all environments), milliseconds.
    pub duration_ms: f64,
}

/// Whether a policy can raise an evaluation error (which Cedar treats as "policy does not
/// apply", so an erroring forbid silently stops protecting).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "result", content = "detail", rename_all = "snake_case")]
pub enum ErrorsOutcome {
    NeverErrors,
    /// A request on which the policy errors, with the errors Cedar's authorizer reports for
    /// it (empty if Cedar does not confirm the error).
    MayError {
        request: ConcreteRequest,
        cedar_errors: Vec<String>,
    },
    TimedOut {
        environment: String,
    },
    Failed(String),
}

impl fmt::Display for ErrorsOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorsOutcome::NeverErrors => write!(f, "never errors"),
            ErrorsOutcome::MayError {
                request,
                cedar_errors,
            } if cedar_errors.is_empty() => write!(
                f,
                "may error (solver says; Cedar's authorizer does not confirm): {request}"
            ),
            ErrorsOutcome::MayError {
                request,
                cedar_errors,
            } => write!(f, "may error: {request}: {}", cedar_errors.join("; ")),
            ErrorsOutcome::TimedOut { environment } => {
                write!(
                    f,
                    "not proven error-free: solver timed out on {environment}"
                )
            }
            ErrorsOutcome::Failed(message) => write!(f, "not proven error-free: {message}"),
        }
    }
}

/// Cedar's decision.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        })
    }
}

/// What Cedar's own authorizer decided on a request.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CedarVerdict {
    pub decision: Decision,
    /// Ids of the policies that determined it (sorted).
    pub policies: Vec<String>,
    /// Evaluation errors, if any.
    pub errors: Vec<String>,
}

impl CedarVerdict {
    pub(crate) fn evaluate(request: &Request, policies: &PolicySet, entities: &Entities) -> Self {
        let response = Authorizer::new().is_authorized(request, policies, entities);
        let mut ids: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|id| id.to_string())
            .collect();
        ids.sort();
        CedarVerdict {
            decision: match response.decision() {
                cedar_policy::Decision::Allow => Decision::Allow,
                cedar_policy::Decision::Deny => Decision::Deny,
            },
            policies: ids,
            errors: response
                .diagnostics()
                .errors()
                .map(|e| e.to_string())
                .collect(),
        }
    }
}

impl fmt::Display for CedarVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.decision)?;
        if !self.policies.is_empty() {
            write!(f, " ({})", self.policies.join(", "))?;
        }
        if !self.errors.is_empty() {
            write!(f, " [errors: {}]", self.errors.join("; "))?;
        }
        Ok(())
    }
}

/// A request the active policies allow and an invariant denies, as found by the solver, with
/// what Cedar's authorizer decides on it.
#[derive(Debug, Clone, Serialize)]
pub struct Counterexample {
    /// The request environment it was found in.
    pub environment: String,
    pub request: ConcreteRequest,
    /// Cedar's decision on the request with the active policies.
    pub cedar_decision_active: CedarVerdict,
    /// Cedar's decision on the request with the invariant's policies.
    pub cedar_decision_invariant: CedarVerdict,
    /// Cedar's authorizer agrees with the solver: the active policies allow the request and
    /// the invariant denies it.
    pub confirmed: bool,
}

impl fmt::Display for Counterexample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; Cedar: active policies {}, invariant {}",
            self.request, self.cedar_decision_active, self.cedar_decision_invariant
        )
    }
}

/// A concrete request in plain terms.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConcreteRequest {
    pub principal: EntityDescription,
    /// The action's id, e.g. `read`.
    pub action: String,
    pub resource: EntityDescription,
    pub context: BTreeMap<String, serde_json::Value>,
}

/// An entity's type, id and attributes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EntityDescription {
    #[serde(rename = "type")]
    pub type_name: String,
    pub id: String,
    pub attributes: BTreeMap<String, serde_json::Value>,
}

impl fmt::Display for ConcreteRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "principal {} may {} {} {} with context {}",
            Attrs(&self.principal.attributes),
            self.action,
            self.resource.type_name,
            Attrs(&self.resource.attributes),
            Attrs(&self.context)
        )
    }
}

struct Attrs<'a>(&'a BTreeMap<String, serde_json::Value>);

impl fmt::Display for Attrs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (n, (k, v)) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{k}: {}", Plain(v))?;
        }
        f.write_str("}")
    }
}

/// A value as a custodian reads it: plain words unquoted, anything else (empty, spaces,
/// punctuation) quoted.
struct Plain<'a>(&'a serde_json::Value);

impl fmt::Display for Plain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            serde_json::Value::String(s) => {
                let plain = !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
                if plain {
                    f.write_str(s)
                } else {
                    write!(f, "{}", serde_json::Value::String(s.clone()))
                }
            }
            serde_json::Value::Array(items) => {
                f.write_str("[")?;
                for (n, item) in items.iter().enumerate() {
                    if n > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}", Plain(item))?;
                }
                f.write_str("]")
            }
            serde_json::Value::Object(map) => {
                let sorted: BTreeMap<String, serde_json::Value> =
                    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                write!(f, "{}", Attrs(&sorted))
            }
            other => write!(f, "{other}"),
        }
    }
}

impl ConcreteRequest {
    /// Describes the request of a SymCC counterexample, reading attributes from its entities.
    pub(crate) fn describe(request: &Request, entities: &Entities) -> ConcreteRequest {
        let entity = |uid: Option<&EntityUid>| match uid {
            Some(uid) => EntityDescription {
                type_name: uid.type_name().to_string(),
                id: uid.id().unescaped().to_owned(),
                attributes: entities
                    .get(uid)
                    .map(|e| {
                        e.attrs()
                            .map(|(k, v)| {
                                let value = match v {
                                    Ok(v) => eval_to_json(&v),
                                    Err(e) => serde_json::Value::String(format!("<{e}>")),
                                };
                                (k.to_owned(), value)
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            },
            None => EntityDescription {
                type_name: "<unknown>".into(),
                id: String::new(),
                attributes: BTreeMap::new(),
            },
        };
        let context = request
            .context()
            .and_then(|c| c.to_json_value().ok())
            .and_then(|v| match v {
                serde_json::Value::Object(map) => Some(map.into_iter().collect()),
                _ => None,
            })
            .unwrap_or_default();
        ConcreteRequest {
            principal: entity(request.principal()),
            action: request
                .action()
                .map(|a| a.id().unescaped().to_owned())
                .unwrap_or_else(|| "<unknown action>".into()),
            resource: entity(request.resource()),
            context,
        }
    }
}

fn eval_to_json(value: &EvalResult) -> serde_json::Value {
    match value {
        EvalResult::Bool(b) => serde_json::Value::Bool(*b),
        EvalResult::Long(n) => serde_json::Value::from(*n),
        EvalResult::String(s) => serde_json::Value::String(s.clone()),
        EvalResult::EntityUid(uid) => serde_json::Value::String(uid.to_string()),
        EvalResult::Set(set) => serde_json::Value::Array(set.iter().map(eval_to_json).collect()),
        EvalResult::Record(record) => serde_json::Value::Object(
            record
                .iter()
                .map(|(k, v)| (k.clone(), eval_to_json(v)))
                .collect(),
        ),
        EvalResult::ExtensionValue(s) => serde_json::Value::String(s.clone()),
    }
}
