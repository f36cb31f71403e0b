//! Proving Sovereign's policy invariants with Cedar's symbolic compiler (SymCC) and cvc5.
//!
//! The reference scenario's promises (no one in a restricted country touches US subjects,
//! monitors never touch user data, ...) are written as *invariants*: named Cedar policy sets,
//! in one file where every policy carries `@invariant("name")`, `@id("...")` and, once per
//! invariant, a one-line `@description("...")` (see [`default_invariants`]). A policy set may
//! become active only if [`prove`] shows it satisfies every invariant.
//!
//! # Design
//!
//! * **Implication.** "The active policies satisfy invariant I" means: every request the active
//!   set allows, I's set allows too (SymCC's `implies`). An invariant is therefore written as
//!   a permit of everything plus forbids stating what must never be allowed. Implication puts
//!   no constraint on what the active set denies, so tightening policies can never break an
//!   invariant, while any loosening that reaches a forbidden request does, and the check
//!   treats the active set as a black box: it does not matter which of its policies, or which
//!   interplay of permits and forbids, lets the request through.
//! * **Every request environment.** SymCC reasons about one (principal type, action, resource
//!   type) environment at a time. [`prove`] checks each invariant in every environment the
//!   schema allows, so adding an action or resource type to the schema cannot leave a hole
//!   the proof silently skipped. It also runs SymCC's never-errors check for every active
//!   policy in every environment: Cedar skips a policy whose evaluation errors, so an
//!   erroring forbid would quietly stop protecting.
//! * **Confirmed by Cedar.** A refutation comes with the solver's model, concretised by
//!   SymCC into a Cedar request and entities. We replay that request through Cedar's own
//!   `Authorizer` with the active policies and with the invariant's policies and record both
//!   decisions; the counterexample is `confirmed` only if the active set allows and the
//!   invariant denies. An unconfirmed refutation points at a solver or encoding problem and
//!   is reported as such; it is never counted as proven. Likewise a solver timeout
//!   (per query, [`Solver::with_timeout`]) or any failure counts as *not* proven.
//!
//! SymCC's API is async (it talks to a cvc5 process through tokio pipes). [`prove`] is
//! synchronous: it runs the queries on a private current-thread tokio runtime on a scoped
//! thread, so it works from plain threads and from `tokio::task::spawn_blocking` alike.

mod invariants;
mod report;
mod solver;

use std::str::FromStr;
use std::time::{Duration, Instant};

use cedar_policy::{
    Entities, Policy, PolicyId, PolicySet, RequestEnv, Schema, ValidationMode, Validator,
};
use cedar_policy_symcc::solver::LocalSolver;
use cedar_policy_symcc::{CedarSymCompiler, CompiledPolicy, CompiledPolicySet, Env};

pub use invariants::{Invariant, InvariantSummary, Invariants, default_invariants};
pub use report::{
    CedarVerdict, ConcreteRequest, Counterexample, Decision, EntityDescription, ErrorsOutcome,
    InvariantResult, NeverErrorsResult, Outcome, ProofReport,
};
pub use solver::{DEFAULT_TIMEOUT, INSTALL_HINT, Solver, SolverInfo};

/// Extra wall-clock time granted beyond the solver's own per-query limit before the query is
/// abandoned and the solver process killed (a backstop; cvc5 normally answers `unknown`).
const WALL_CLOCK_GRACE: Duration = Duration::from_secs(2);

/// Why a proof could not be attempted. (A proof that ran but failed is a [`ProofReport`].)
#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    #[error("invalid Cedar schema: {0}")]
    Schema(String),
    #[error("invalid active policy set: {0}")]
    Policies(#[from] policy::PolicyError),
    #[error("the invariants file is not valid Cedar: {0}")]
    InvariantSyntax(String),
    #[error(
        "policy #{position} in the invariants file is a template (it uses ?principal or ?resource); templates are not supported"
    )]
    InvariantTemplate { position: usize },
    #[error("the invariants file contains no policies, so there is nothing to prove")]
    NoInvariants,
    #[error(
        "policy #{position} in the invariants file has no @{annotation}(\"...\") annotation (every invariant policy needs @id and @invariant): {excerpt}"
    )]
    MissingAnnotation {
        position: usize,
        annotation: &'static str,
        excerpt: String,
    },
    #[error("invalid invariants file: {0}")]
    InvalidInvariant(String),
    #[error("the invariants fail strict validation against the schema:\n{}", .0.join("\n"))]
    InvariantValidation(Vec<String>),
    #[error("no cvc5 SMT solver found (tried {tried}): {hint}")]
    SolverNotFound { tried: String, hint: &'static str },
    #[error("the cvc5 SMT solver cannot be used: {0}")]
    SolverUnusable(String),
    #[error("internal error while proving: {0}")]
    Internal(String),
}

/// Proves that the policy set `policies_src` (validated against `schema_src` exactly as the
/// gateway loads it) implies every invariant, in every request environment of the schema,
/// and that none of its policies can error. Each solver query gets `solver`'s timeout.
///
/// Returns `Err` only when the proof cannot be attempted (invalid inputs, no solver); a
/// refuted, timed-out or failed invariant is reported in the [`ProofReport`], whose
/// [`ProofReport::all_proven`] is the verdict.
pub fn prove(
    schema_src: &str,
    policies_src: &str,
    invariants: &Invariants,
    solver: &Solver,
) -> Result<ProofReport, ProveError> {
    let started = Instant::now();
    let engine = policy::PolicyEngine::new(schema_src, policies_src)?;
    let (schema, _) = Schema::from_cedarschema_str(schema_src)
        .map_err(|e| ProveError::Schema(policy::diag::describe(&e, schema_src)))?;
    let (active, active_ids) = active_policies(policies_src)?;

    let validation =
        Validator::new(schema.clone()).validate(invariants.all_policies(), ValidationMode::Strict);
    if !validation.validation_passed() {
        return Err(ProveError::InvariantValidation(
            validation
                .validation_errors()
                .map(|e| e.to_string())
                .collect(),
        ));
    }
    let envs: Vec<RequestEnv> = schema.request_envs().collect();
    if envs.is_empty() {
        return Err(ProveError::Schema(
            "the schema allows no request (no action applies to any principal and resource type)"
                .into(),
        ));
    }
    let action_entities = schema
        .action_entities()
        .map_err(|e| ProveError::Schema(e.to_string()))?;

    let job = Job {
        schema: &schema,
        envs: &envs,
        active: &active,
        active_ids: &active_ids,
        invariants,
        action_entities: &action_entities,
        solver,
    };
    let (invariant_results, never_errors) = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| ProveError::Internal(format!("cannot start a runtime: {e}")))?;
                runtime.block_on(job.run())
            })
            .join()
            .map_err(|_| ProveError::Internal("the proof thread panicked".into()))?
    })?;

    Ok(ProofReport {
        policy_set_hash: engine.policy_set_hash().to_owned(),
        invariant_set_hash: invariants.hash().to_owned(),
        solver: solver.info(),
        environments: envs.iter().map(env_name).collect(),
        invariants: invariant_results,
        never_errors,
        duration_ms: millis(started),
    })
}

fn millis(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

/// The active policies re-ided by `@id` (already checked by `PolicyEngine::new`), and their
/// ids in source order.
fn active_policies(policies_src: &str) -> Result<(PolicySet, Vec<String>), ProveError> {
    let parsed = PolicySet::from_str(policies_src)
        .map_err(|e| ProveError::Internal(format!("re-parsing the active policies: {e}")))?;
    let mut numbered: Vec<(usize, &Policy)> = parsed
        .policies()
        .map(|p| (policy::diag::position(p.id()), p))
        .collect();
    numbered.sort_unstable_by_key(|(n, _)| *n);
    let mut set = PolicySet::new();
    let mut ids = Vec::with_capacity(numbered.len());
    for (_, policy) in numbered {
        let id = policy
            .annotation("id")
            .ok_or_else(|| ProveError::Internal("an active policy lost its @id".into()))?;
        set.add(policy.new_id(PolicyId::new(id)))
            .map_err(|e| ProveError::Internal(e.to_string()))?;
        ids.push(id.to_owned());
    }
    Ok((set, ids))
}

fn env_name(env: &RequestEnv) -> String {
    format!("{}, {}, {}", env.principal(), env.action(), env.resource())
}

struct Job<'a> {
    schema: &'a Schema,
    envs: &'a [RequestEnv],
    active: &'a PolicySet,
    active_ids: &'a [String],
    invariants: &'a Invariants,
    action_entities: &'a Entities,
    solver: &'a Solver,
}

/// Result of one solver query.
enum Query<T> {
    Done(T),
    TimedOut,
    Failed(String),
}

impl Job<'_> {
    async fn run(&self) -> Result<(Vec<InvariantResult>, Vec<NeverErrorsResult>), ProveError> {
        let mut session = Session {
            solver: self.solver,
            compiler: None,
        };
        let compiled_active: Vec<Result<CompiledPolicySet, String>> = self
            .envs
            .iter()
            .map(|env| {
                CompiledPolicySet::compile(self.active, env, self.schema).map_err(|e| {
                    format!("compiling the active policies for {}: {e}", env_name(env))
                })
            })
            .collect();

        let mut invariant_results = Vec::with_capacity(self.invariants.len());
        for invariant in self.invariants.iter() {
            let started = Instant::now();
            let outcome = self
                .prove_invariant(&mut session, invariant, &compiled_active)
                .await?;
            invariant_results.push(InvariantResult {
                name: invariant.name().to_owned(),
                description: invariant.description().to_owned(),
                outcome,
                duration_ms: millis(started),
            });
        }

        let mut never_errors = Vec::with_capacity(self.active_ids.len());
        for id in self.active_ids {
            let started = Instant::now();
            let outcome = self.prove_never_errors(&mut session, id).await?;
            never_errors.push(NeverErrorsResult {
                policy_id: id.clone(),
                outcome,
                duration_ms: millis(started),
            });
        }
        session.discard().await;
        Ok((invariant_results, never_errors))
    }

    /// Checks every environment; a refutation wins over a timeout or failure elsewhere.
    async fn prove_invariant(
        &self,
        session: &mut Session<'_>,
        invariant: &Invariant,
        compiled_active: &[Result<CompiledPolicySet, String>],
    ) -> Result<Outcome, ProveError> {
        let mut outcome = Outcome::Proven;
        for (env, active) in self.envs.iter().zip(compiled_active) {
            let active = match active {
                Ok(active) => active,
                Err(message) => {
                    keep_first(&mut outcome, Outcome::Failed(message.clone()));
                    continue;
                }
            };
            let compiled =
                match CompiledPolicySet::compile(invariant.policy_set(), env, self.schema) {
                    Ok(compiled) => compiled,
                    Err(e) => {
                        keep_first(
                            &mut outcome,
                            Outcome::Failed(format!(
                                "compiling the invariant for {}: {e}",
                                env_name(env)
                            )),
                        );
                        continue;
                    }
                };
            match session.implies(active, &compiled).await? {
                Query::Done(None) => {}
                Query::Done(Some(model)) => {
                    return Ok(Outcome::Refuted(Box::new(self.counterexample(
                        env,
                        model,
                        invariant.policy_set(),
                    ))));
                }
                Query::TimedOut => keep_first(
                    &mut outcome,
                    Outcome::TimedOut {
                        environment: env_name(env),
                    },
                ),
                Query::Failed(message) => keep_first(
                    &mut outcome,
                    Outcome::Failed(format!("{}: {message}", env_name(env))),
                ),
            }
        }
        Ok(outcome)
    }

    async fn prove_never_errors(
        &self,
        session: &mut Session<'_>,
        id: &str,
    ) -> Result<ErrorsOutcome, ProveError> {
        let policy = self
            .active
            .policy(&PolicyId::new(id))
            .ok_or_else(|| ProveError::Internal(format!("policy {id} vanished")))?;
        let mut outcome = ErrorsOutcome::NeverErrors;
        for env in self.envs {
            let compiled = match CompiledPolicy::compile(policy, env, self.schema) {
                Ok(compiled) => compiled,
                Err(e) => {
                    if matches!(outcome, ErrorsOutcome::NeverErrors) {
                        outcome =
                            ErrorsOutcome::Failed(format!("compiling for {}: {e}", env_name(env)));
                    }
                    continue;
                }
            };
            match session.never_errors(&compiled).await? {
                Query::Done(None) => {}
                Query::Done(Some(model)) => {
                    let entities = with_actions(model.entities, self.action_entities);
                    let single = PolicySet::from_policies([policy.clone()])
                        .map_err(|e| ProveError::Internal(e.to_string()))?;
                    let verdict = CedarVerdict::evaluate(&model.request, &single, &entities);
                    return Ok(ErrorsOutcome::MayError {
                        request: ConcreteRequest::describe(&model.request, &entities),
                        cedar_errors: verdict.errors,
                    });
                }
                Query::TimedOut => {
                    if matches!(outcome, ErrorsOutcome::NeverErrors) {
                        outcome = ErrorsOutcome::TimedOut {
                            environment: env_name(env),
                        };
                    }
                }
                Query::Failed(message) => {
                    if matches!(outcome, ErrorsOutcome::NeverErrors) {
                        outcome = ErrorsOutcome::Failed(format!("{}: {message}", env_name(env)));
                    }
                }
            }
        }
        Ok(outcome)
    }

    /// Turns SymCC's concretised model into a plain-terms counterexample and replays it
    /// through Cedar's authorizer with both policy sets.
    fn counterexample(
        &self,
        env: &RequestEnv,
        model: Env,
        invariant: &PolicySet,
    ) -> Counterexample {
        let entities = with_actions(model.entities, self.action_entities);
        let active = CedarVerdict::evaluate(&model.request, self.active, &entities);
        let inv = CedarVerdict::evaluate(&model.request, invariant, &entities);
        let confirmed = active.decision == Decision::Allow && inv.decision == Decision::Deny;
        Counterexample {
            environment: env_name(env),
            request: ConcreteRequest::describe(&model.request, &entities),
            cedar_decision_active: active,
            cedar_decision_invariant: inv,
            confirmed,
        }
    }
}

fn keep_first(outcome: &mut Outcome, new: Outcome) {
    if matches!(outcome, Outcome::Proven) {
        *outcome = new;
    }
}

/// The model's entities plus the schema's action entities it lacks (policies may test
/// `action in` a group).
fn with_actions(entities: Entities, actions: &Entities) -> Entities {
    let missing: Vec<_> = actions
        .iter()
        .filter(|a| entities.get(&a.uid()).is_none())
        .cloned()
        .collect();
    if missing.is_empty() {
        return entities;
    }
    match entities.clone().add_entities(missing, None) {
        Ok(merged) => merged,
        Err(_) => entities,
    }
}

/// One cvc5 process, reused across queries (SymCC resets it between them), replaced after
/// anything that may have left it in an unknown state.
struct Session<'a> {
    solver: &'a Solver,
    compiler: Option<CedarSymCompiler<LocalSolver>>,
}

impl Session<'_> {
    fn compiler(&mut self) -> Result<&mut CedarSymCompiler<LocalSolver>, ProveError> {
        if self.compiler.is_none() {
            let mut command = tokio::process::Command::new(self.solver.path());
            command
                .arg("--lang")
                .arg("smt")
                .arg(format!("--tlimit-per={}", self.solver.timeout_ms()))
                .kill_on_drop(true);
            let local = LocalSolver::from_command(&mut command).map_err(|e| {
                ProveError::SolverUnusable(format!(
                    "cannot start {}: {e} ({INSTALL_HINT})",
                    self.solver.path().display()
                ))
            })?;
            let compiler = CedarSymCompiler::new(local)
                .map_err(|e| ProveError::SolverUnusable(e.to_string()))?;
            self.compiler = Some(compiler);
        }
        Ok(self.compiler.as_mut().expect("just set"))
    }

    async fn discard(&mut self) {
        if let Some(mut compiler) = self.compiler.take() {
            let _ = compiler.solver_mut().clean_up().await;
        }
    }

    async fn implies(
        &mut self,
        active: &CompiledPolicySet,
        invariant: &CompiledPolicySet,
    ) -> Result<Query<Option<Env>>, ProveError> {
        let limit = self.solver.timeout() + WALL_CLOCK_GRACE;
        let started = Instant::now();
        let compiler = self.compiler()?;
        let result = tokio::time::timeout(
            limit,
            compiler.check_implies_with_counterexample_opt(active, invariant),
        )
        .await;
        Ok(self.classify(result, started).await)
    }

    async fn never_errors(
        &mut self,
        policy: &CompiledPolicy,
    ) -> Result<Query<Option<Env>>, ProveError> {
        let limit = self.solver.timeout() + WALL_CLOCK_GRACE;
        let started = Instant::now();
        let compiler = self.compiler()?;
        let result = tokio::time::timeout(
            limit,
            compiler.check_never_errors_with_counterexample_opt(policy),
        )
        .await;
        Ok(self.classify(result, started).await)
    }

    async fn classify<T>(
        &mut self,
        result: Result<cedar_policy_symcc::err::Result<T>, tokio::time::error::Elapsed>,
        started: Instant,
    ) -> Query<T> {
        match result {
            Ok(Ok(value)) => Query::Done(value),
            Ok(Err(cedar_policy_symcc::err::Error::SolverUnknown)) => {
                // cvc5 answers `unknown` when --tlimit-per runs out; an early `unknown`
                // (incomplete theory) is a failure, not a timeout. Neither is a proof.
                if started.elapsed() >= self.solver.timeout().mul_f64(0.9) {
                    Query::TimedOut
                } else {
                    Query::Failed("the solver answered `unknown`".into())
                }
            }
            Ok(Err(e)) => {
                self.discard().await;
                Query::Failed(e.to_string())
            }
            Err(_elapsed) => {
                self.discard().await;
                Query::TimedOut
            }
        }
    }
}
