//! Policy sets: proposal, listing, and activation with the custodian's signed statement and
//! passing proofs against the invariants in force.

use super::*;

/// The routes of this module.
pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(propose_policy, list_policies))
        .routes(routes!(get_policy))
        .routes(routes!(activate_policy))
}

/// A policy set, by hash.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct PolicyHashPath {
    /// The policy set's SHA-256, hex.
    #[param(pattern = "^[0-9a-f]{64}$")]
    hash: String,
}

/// A policy set, without its text.
#[derive(Serialize, ToSchema)]
struct PolicySummary {
    hash: String,
    status: SetStatus,
    policy_ids: Vec<String>,
    proposed_by: PersonBody,
    proposed_at: String,
    activated_at: Option<String>,
    signers: Vec<String>,
}

#[derive(Serialize, ToSchema)]
struct PolicySets {
    /// The hash of the active set.
    active: Option<String>,
    sets: Vec<PolicySummary>,
}

/// A policy set with its text, signature and the proofs of its last activation.
#[derive(Serialize, ToSchema)]
struct PolicySetBody {
    #[serde(flatten)]
    summary: PolicySummary,
    schema: String,
    policies: String,
    signature: Option<String>,
    /// The proofs of its last activation (none for a set never activated).
    #[schema(value_type = Option<Object>)]
    proofs: Option<custody::Proofs>,
}

/// A proposed policy set: its hash, its proofs and the statement custodians sign.
#[derive(Serialize, ToSchema)]
struct PolicyProposed {
    hash: String,
    policy_ids: Vec<String>,
    #[schema(value_type = Object)]
    proofs: custody::Proofs,
    statement: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ProposePolicy {
    /// The Cedar policy set.
    policies: String,
    /// The Cedar schema; the active set's when absent.
    #[serde(default)]
    schema: Option<String>,
}

impl PolicySummary {
    fn new(set: &custody::PolicySetRecord, active: Option<&str>) -> Self {
        PolicySummary {
            hash: set.hash.clone(),
            status: SetStatus::of(&set.hash, set.activated_at, active),
            policy_ids: set.policy_ids.clone(),
            proposed_by: PersonBody::new(&set.proposed_by),
            proposed_at: rfc3339(set.proposed_at),
            activated_at: set.activated_at.map(rfc3339),
            signers: set.signers.clone(),
        }
    }
}

/// Proposes a policy set. It is validated against the schema and proven against the
/// invariants in force now; it becomes active only with the custodian's signed activation
/// statement (and is proven again then).
#[utoipa::path(post, path = "/v1/policies", tag = "custody",
    request_body = ProposePolicy,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "proposed: its hash, its proofs and the statement to sign", body = PolicyProposed),
        (status = 200, description = "already known", body = PolicyProposed),
        (status = 400, description = "`invalid_json`, `invalid_body`, `invalid_policy` (the set does not parse or validate)", body = ErrorBody),
        (status = 403, description = "`role_required` (custodian-operator), `restricted_location`", body = ErrorBody),
        (status = 422, description = "`policy_not_proven`: not proven to satisfy every invariant; `proof` holds the report with its counterexamples", body = ErrorBody),
        (status = 503, description = "`solver_unavailable`: no SMT solver to prove it with", body = ErrorBody),
    ))]
async fn propose_policy(
    State(app): Shared,
    Caller(who): Caller,
    ApiJson(request): ApiJson<ProposePolicy>,
) -> AppResult<Response> {
    app.custodian(&who, &[ROLE_OPERATOR])?;
    let schema = match request.schema {
        Some(schema) => schema,
        None => app
            .custody
            .active_policy()
            .map(|set| set.schema)
            .unwrap_or_else(|| policy::DEFAULT_SCHEMA.to_string()),
    };
    let engine = policy::PolicyEngine::new(&schema, &request.policies)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidPolicy, e.to_string()))?;
    let proofs = prove_against_invariants(&app, &schema, &request.policies).await?;
    let record = custody::PolicySetRecord::proposed(
        engine.policy_set_hash().to_string(),
        (schema, request.policies),
        engine.policy_ids(),
        person(&who),
        now_unix(),
    );
    let (set, index) = change(app, who, move |app, who| {
        app.custody
            .propose_policy(record, &app.log_custody(Some(who)))
    })
    .await?;
    let statement = custody::statement::Statement::PolicyActivation {
        policy_set: set.hash.clone(),
    };
    let body = PolicyProposed {
        hash: set.hash,
        policy_ids: set.policy_ids,
        proofs,
        statement: statement.text(),
    };
    Ok(created_or_known(index, body))
}

/// Every policy set proposed, and which is active.
#[utoipa::path(get, path = "/v1/policies", tag = "custody",
    responses((status = 200, description = "the policy sets", body = PolicySets)))]
async fn list_policies(State(app): Shared) -> Json<PolicySets> {
    let (active, sets) = app.custody.policy_sets();
    let sets = sets
        .iter()
        .map(|s| PolicySummary::new(s, active.as_deref()))
        .collect();
    Json(PolicySets { active, sets })
}

/// One policy set, by hash, with its full text: monitors fetch the set a log entry names and
/// check it against the hash.
#[utoipa::path(get, path = "/v1/policies/{hash}", tag = "custody",
    params(PolicyHashPath),
    responses(
        (status = 200, description = "the policy set", body = PolicySetBody),
        (status = 404, description = "`unknown_policy_set`", body = ErrorBody),
    ))]
async fn get_policy(
    State(app): Shared,
    ApiPath(hash): ApiPath<String>,
) -> AppResult<Json<PolicySetBody>> {
    let set = app
        .custody
        .policy_set(&hash)
        .ok_or(CustodyError::UnknownPolicySet(hash))?;
    let active = app.custody.active_policy().map(|s| s.hash);
    Ok(Json(PolicySetBody {
        summary: PolicySummary::new(&set, active.as_deref()),
        schema: set.schema,
        policies: set.policies,
        signature: set.signature,
        proofs: set.proofs,
    }))
}

/// Activates a proposed policy set. The body is the custodian's signed statement
/// `activate policy set HASH`, signed by at least the configured number of custodian keys.
/// The set is proven against the invariants in force first; the proofs go into the log with
/// the activation.
#[utoipa::path(post, path = "/v1/policies/{hash}/activate", tag = "custody",
    params(PolicyHashPath),
    request_body(content = String, content_type = "text/plain", description = "the signed statement (signed note)"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "active", body = Activated),
        (status = 400, description = "`invalid_signature` (not a valid signed statement for this set, or an empty body), `invalid_policy`, `invalid_body`", body = ErrorBody),
        (status = 403, description = "`role_required` (custodian-operator), `restricted_location`, `threshold_not_met` (not enough custodian signatures)", body = ErrorBody),
        (status = 404, description = "`unknown_policy_set`", body = ErrorBody),
        (status = 422, description = "`policy_not_proven`: not proven to satisfy every invariant; `proof` holds the report with its counterexamples", body = ErrorBody),
        (status = 503, description = "`solver_unavailable`: no SMT solver to prove it with", body = ErrorBody),
    ))]
async fn activate_policy(
    State(app): Shared,
    Caller(who): Caller,
    ApiPath(hash): ApiPath<String>,
    RawBody(body): RawBody,
) -> AppResult<Logged<Activated>> {
    app.custodian(&who, &[ROLE_OPERATOR])?;
    let signed = note_body(body)?;
    let set = app
        .custody
        .policy_set(&hash)
        .ok_or_else(|| CustodyError::UnknownPolicySet(hash.clone()))?;
    let engine = policy::PolicyEngine::new(&set.schema, &set.policies)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidPolicy, e.to_string()))?;
    check_statement_first(
        &app,
        &signed,
        &custody::statement::Statement::PolicyActivation {
            policy_set: hash.clone(),
        },
    )?;
    let proofs = prove_against_invariants(&app, &set.schema, &set.policies).await?;
    let now = now_unix();
    let (set, index) = change(app, who, move |app, who| {
        app.custody.activate_policy(
            &hash,
            &signed,
            proofs,
            now,
            &app.log_custody(Some(who)),
            |_| app.set_policy(engine),
        )
    })
    .await?;
    tracing::info!(policy_set = %set.hash, signers = ?set.signers, "policy set activated");
    Ok(Logged::ok(
        index,
        Activated {
            hash: set.hash,
            activated_at: set.activated_at.map(rfc3339),
            signers: set.signers,
            proofs: set.proofs,
        },
    ))
}

/// Proves a policy set against the invariants in force, on a blocking thread (the solver
/// runs for a tenth of a second or more). Refuses unless everything is proven.
async fn prove_against_invariants(
    app: &Arc<AppState>,
    schema: &str,
    policies: &str,
) -> AppResult<custody::Proofs> {
    let active = app
        .custody
        .active_invariants()
        .ok_or_else(|| ApiError::internal("no invariant set is active"))?;
    let (schema, policies) = (schema.to_string(), policies.to_string());
    in_proof_slot(app, move |settings| {
        let invariants = proof::parse_invariants(&schema, &active.text).map_err(|e| {
            ApiError::bad_request(
                ErrorCode::InvalidPolicy,
                format!(
                    "the invariants in force ({}) do not validate against this schema: {e}",
                    active.hash
                ),
            )
        })?;
        proof::prove_policy(&schema, &policies, &invariants, settings).map_err(ApiError::from)
    })
    .await
}
