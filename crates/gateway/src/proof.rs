//! Proof before activation: a policy set is put in force only once Cedar's symbolic compiler
//! and the cvc5 solver prove that it satisfies the custodian's invariants (the `prove`
//! crate). The proofs travel with the activation into custody and the transparency log.
//!
//! Every path that activates a policy set comes through [`prove_policy`]: proposal and
//! activation over the API, the first start, and a change of invariants. A missing solver
//! refuses the activation with a message saying how to install one; nothing is ever
//! activated unproven.

use std::path::PathBuf;
use std::time::Duration;

use axum::http::StatusCode;

use crate::http::error::{ApiError, ErrorCode};

/// Proofs one gateway runs at once: each takes a core and a cvc5 process for about a tenth
/// of a second, and only custodian operators ask for them.
pub const CONCURRENT_PROOFS: usize = 2;

/// Why a policy set was not proven.
#[derive(Debug)]
pub enum Refusal {
    /// No usable cvc5: the proof could not be attempted.
    SolverUnavailable(String),
    /// The proof ran and something is not proven: a counterexample, a timeout, a policy that
    /// may error.
    NotProven(Box<prove::ProofReport>),
    /// The policies or invariants cannot be proven as given.
    Invalid(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::SolverUnavailable(why) => write!(
                f,
                "there is no solver to prove the policy set with, so it is not activated: {why}"
            ),
            Refusal::NotProven(report) => write!(
                f,
                "the policy set does not satisfy every invariant, so it is not activated:\n{report}"
            ),
            Refusal::Invalid(why) => write!(f, "the policy set cannot be proven: {why}"),
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> ApiError {
        let message = refusal.to_string();
        match refusal {
            Refusal::SolverUnavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::SolverUnavailable,
                message,
            ),
            Refusal::NotProven(report) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::PolicyNotProven,
                message,
            )
            .with("proof", report.to_json()),
            Refusal::Invalid(_) => ApiError::bad_request(ErrorCode::InvalidPolicy, message),
        }
    }
}

/// Which solver proves, and how long each query may take (`[policy]` in the configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `policy.solver`: a cvc5 executable (a path, or a name looked up on PATH); when unset,
    /// the `CVC5` environment variable, else `cvc5` on PATH.
    pub solver: Option<PathBuf>,
    pub timeout: Duration,
}

impl Settings {
    pub fn from_config(policy: &crate::config::PolicyFiles) -> Settings {
        Settings {
            solver: policy.solver.clone(),
            timeout: Duration::from_secs(policy.proof_timeout_seconds),
        }
    }

    fn solver(&self) -> Result<prove::Solver, prove::ProveError> {
        let solver = match &self.solver {
            Some(path) => prove::Solver::at(path)?,
            None => prove::Solver::from_env()?,
        };
        Ok(solver.with_timeout(self.timeout))
    }
}

/// Parses an invariants file against the schema the policies are validated with.
pub fn parse_invariants(schema: &str, text: &str) -> Result<prove::Invariants, String> {
    prove::Invariants::parse_with_schema(schema, text).map_err(|e| e.to_string())
}

/// Proves `policies` (under `schema`) against `invariants` with the solver and per-query
/// time limit of `settings`. Answers the evidence to activate with only when every invariant
/// is proven and no policy can error. Blocking: it runs the solver.
pub fn prove_policy(
    schema: &str,
    policies: &str,
    invariants: &prove::Invariants,
    settings: &Settings,
) -> Result<custody::Proofs, Refusal> {
    let solver = settings
        .solver()
        .map_err(|e| Refusal::SolverUnavailable(e.to_string()))?;
    let report = prove::prove(schema, policies, invariants, &solver).map_err(|e| match e {
        prove::ProveError::SolverNotFound { .. } | prove::ProveError::SolverUnusable(_) => {
            Refusal::SolverUnavailable(e.to_string())
        }
        other => Refusal::Invalid(other.to_string()),
    })?;
    if !report.all_proven() {
        return Err(Refusal::NotProven(Box::new(report)));
    }
    Ok(evidence(&report))
}

/// The parts of a passing report worth keeping as evidence: what was proven against what,
/// by which solver, and each result (counterexamples never occur in a passing report).
fn evidence(report: &prove::ProofReport) -> custody::Proofs {
    let result = |name: &str, result: String, duration_ms: f64| custody::ProofResult {
        name: name.to_string(),
        result,
        duration_ms: round(duration_ms),
    };
    custody::Proofs {
        policy_set: report.policy_set_hash.clone(),
        invariant_set: report.invariant_set_hash.clone(),
        solver: report.solver.name.clone(),
        solver_version: report.solver.version.clone(),
        timeout_ms: report.solver.timeout_ms,
        environments: report.environments.len(),
        invariants: report
            .invariants
            .iter()
            .map(|i| result(&i.name, outcome_name(&i.outcome), i.duration_ms))
            .collect(),
        never_errors: report
            .never_errors
            .iter()
            .map(|p| result(&p.policy_id, errors_name(&p.outcome), p.duration_ms))
            .collect(),
        duration_ms: round(report.duration_ms),
        shipped_with: None,
    }
}

/// The proofs of the default policy set against the default invariants (for the default
/// restricted countries), made with cvc5 when the project was built and tested, and shipped
/// inside the binary. A test (`shipped_proofs_are_a_fresh_proof_of_the_defaults`) keeps
/// this record equal to a fresh proof.
pub const SHIPPED_PROOFS: &str = include_str!("../defaults/proofs.json");

/// The shipped proofs, if they are of exactly `policy_set` against exactly `invariant_set`
/// (both hashes bind every byte of the schema, the policies and the invariants), marked as
/// shipped. Any other set still needs the solver.
pub fn shipped_proofs(policy_set: &str, invariant_set: &str) -> Option<custody::Proofs> {
    let mut proofs: custody::Proofs = serde_json::from_str(SHIPPED_PROOFS).ok()?;
    if proofs.policy_set != policy_set
        || proofs.invariant_set != invariant_set
        || !proofs.all_proven()
    {
        return None;
    }
    proofs.shipped_with = Some(format!("sovereign {}", env!("CARGO_PKG_VERSION")));
    Some(proofs)
}

fn outcome_name(outcome: &prove::Outcome) -> String {
    match outcome {
        prove::Outcome::Proven => custody::Proofs::PROVEN,
        prove::Outcome::Refuted(_) => "refuted",
        prove::Outcome::TimedOut { .. } => "timed_out",
        prove::Outcome::Failed(_) => "failed",
    }
    .to_string()
}

fn errors_name(outcome: &prove::ErrorsOutcome) -> String {
    match outcome {
        prove::ErrorsOutcome::NeverErrors => custody::Proofs::NEVER_ERRORS,
        prove::ErrorsOutcome::MayError { .. } => "may_error",
        prove::ErrorsOutcome::TimedOut { .. } => "timed_out",
        prove::ErrorsOutcome::Failed(_) => "failed",
    }
    .to_string()
}

/// Milliseconds to 0.1 ms: the log records evidence, not benchmark precision.
fn round(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}
