//! Invariant sets: the properties every policy set must keep, proposed and activated like
//! policies, proven against the active policy set before they take effect.

use super::*;

/// The routes of this module.
pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(propose_invariants, list_invariants))
        .routes(routes!(get_invariants))
        .routes(routes!(activate_invariants))
}

/// An invariant set, by hash.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct InvariantHashPath {
    /// The invariant set's SHA-256, hex.
    #[param(pattern = "^[0-9a-f]{64}$")]
    hash: String,
}

/// An invariant set, without its text.
#[derive(Serialize, ToSchema)]
struct InvariantSummary {
    hash: String,
    status: SetStatus,
    /// The invariants' names.
    invariants: Vec<String>,
    proposed_by: PersonBody,
    proposed_at: String,
    activated_at: Option<String>,
    signers: Vec<String>,
}

#[derive(Serialize, ToSchema)]
struct InvariantSets {
    /// The hash of the set in force.
    active: Option<String>,
    sets: Vec<InvariantSummary>,
}

/// An invariant set with its text, signature and proofs.
#[derive(Serialize, ToSchema)]
struct InvariantSetBody {
    #[serde(flatten)]
    summary: InvariantSummary,
    text: String,
    signature: Option<String>,
    /// The proofs of the policy set active when it was activated.
    #[schema(value_type = Option<Object>)]
    proofs: Option<custody::Proofs>,
}

/// A proposed invariant set: its hash, the active policy set's proofs against it, and the
/// statement custodians sign.
#[derive(Serialize, ToSchema)]
struct InvariantsProposed {
    hash: String,
    invariants: Vec<String>,
    #[schema(value_type = Object)]
    proofs: custody::Proofs,
    statement: String,
}

impl InvariantSummary {
    fn new(set: &custody::InvariantSetRecord, active: Option<&str>) -> Self {
        InvariantSummary {
            hash: set.hash.clone(),
            status: SetStatus::of(&set.hash, set.activated_at, active),
            invariants: set.names.clone(),
            proposed_by: PersonBody::new(&set.proposed_by),
            proposed_at: rfc3339(set.proposed_at),
            activated_at: set.activated_at.map(rfc3339),
            signers: set.signers.clone(),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ProposeInvariants {
    /// The invariants: Cedar policies annotated `@invariant("name")` (see the `prove` crate).
    text: String,
}

/// Proposes an invariant set. It is parsed against the active policy set's schema, and the
/// active policy set is proven to keep it now: a set of invariants the active policies break
/// is refused with the counterexample. It takes effect only with the custodian's signed
/// activation statement (and is proven again then).
#[utoipa::path(post, path = "/v1/invariants", tag = "custody",
    request_body = ProposeInvariants,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "proposed: its hash, the proofs of the active policy set against it, and the statement to sign", body = InvariantsProposed),
        (status = 200, description = "already known", body = InvariantsProposed),
        (status = 400, description = "`invalid_json`, `invalid_body`, `invalid_invariants` (they do not parse or validate)", body = ErrorBody),
        (status = 403, description = "`role_required` (custodian-operator), `restricted_location`", body = ErrorBody),
        (status = 422, description = "`policy_not_proven`: the active policy set does not keep them; `proof` holds the report", body = ErrorBody),
        (status = 503, description = "`solver_unavailable`: no SMT solver to prove with", body = ErrorBody),
    ))]
async fn propose_invariants(
    State(app): Shared,
    Caller(who): Caller,
    ApiJson(request): ApiJson<ProposeInvariants>,
) -> AppResult<Response> {
    app.custodian(&who, &[ROLE_OPERATOR])?;
    let (invariants, proofs) = prove_active_policy_against(&app, request.text.clone()).await?;
    let record = custody::InvariantSetRecord::proposed(
        invariants.hash().to_string(),
        request.text,
        invariants.iter().map(|i| i.name().to_string()).collect(),
        person(&who),
        now_unix(),
    );
    let (set, index) = change(app, who, move |app, who| {
        app.custody
            .propose_invariants(record, &app.log_custody(Some(who)))
    })
    .await?;
    let statement = custody::statement::Statement::InvariantActivation {
        invariant_set: set.hash.clone(),
    };
    let body = InvariantsProposed {
        hash: set.hash,
        invariants: set.names,
        proofs,
        statement: statement.text(),
    };
    Ok(created_or_known(index, body))
}

/// Activates a proposed invariant set with the custodian's signed statement `activate
/// invariant set HASH` (as many signatures as a policy activation needs), once the active
/// policy set is proven to keep it; the proofs go into the log with the activation.
#[utoipa::path(post, path = "/v1/invariants/{hash}/activate", tag = "custody",
    params(InvariantHashPath),
    request_body(content = String, content_type = "text/plain", description = "the signed statement (signed note)"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "in force", body = Activated),
        (status = 400, description = "`invalid_signature` (not a valid signed statement for this set, or an empty body), `invalid_invariants`, `invalid_body`", body = ErrorBody),
        (status = 403, description = "`role_required` (custodian-operator), `restricted_location`, `threshold_not_met` (not enough custodian signatures)", body = ErrorBody),
        (status = 404, description = "`unknown_invariant_set`", body = ErrorBody),
        (status = 422, description = "`policy_not_proven`: the active policy set does not keep them", body = ErrorBody),
        (status = 503, description = "`solver_unavailable`: no SMT solver to prove with", body = ErrorBody),
    ))]
async fn activate_invariants(
    State(app): Shared,
    Caller(who): Caller,
    ApiPath(hash): ApiPath<String>,
    RawBody(body): RawBody,
) -> AppResult<Logged<Activated>> {
    app.custodian(&who, &[ROLE_OPERATOR])?;
    let signed = note_body(body)?;
    let set = app
        .custody
        .invariant_set(&hash)
        .ok_or_else(|| CustodyError::UnknownInvariantSet(hash.clone()))?;
    check_statement_first(
        &app,
        &signed,
        &custody::statement::Statement::InvariantActivation {
            invariant_set: hash.clone(),
        },
    )?;
    let (_, proofs) = prove_active_policy_against(&app, set.text.clone()).await?;
    let now = now_unix();
    let (set, index) = change(app, who, move |app, who| {
        app.custody.activate_invariants(
            set,
            &signed,
            Some(proofs),
            now,
            &app.log_custody(Some(who)),
        )
    })
    .await?;
    tracing::info!(invariant_set = %set.hash, signers = ?set.signers, "invariant set activated");
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

/// Parses `text` as invariants against the active policy set's schema and proves the active
/// set keeps them, on a blocking thread.
async fn prove_active_policy_against(
    app: &Arc<AppState>,
    text: String,
) -> AppResult<(prove::Invariants, custody::Proofs)> {
    let active = app
        .custody
        .active_policy()
        .ok_or_else(|| ApiError::internal("no policy set is active"))?;
    in_proof_slot(app, move |settings| {
        let invariants = proof::parse_invariants(&active.schema, &text)
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidInvariants, e))?;
        let proofs = proof::prove_policy(&active.schema, &active.policies, &invariants, settings)
            .map_err(|refusal| {
            let mut error = ApiError::from(refusal);
            error.message = format!(
                "the active policy set {} does not keep these invariants, so they are refused: {}",
                active.hash, error.message
            );
            error
        })?;
        Ok((invariants, proofs))
    })
    .await
}

/// Every invariant set the custodian activated, and which is in force.
#[utoipa::path(get, path = "/v1/invariants", tag = "custody",
    responses((status = 200, description = "the invariant sets", body = InvariantSets)))]
async fn list_invariants(State(app): Shared) -> Json<InvariantSets> {
    let (active, sets) = app.custody.invariant_sets();
    let sets = sets
        .iter()
        .map(|s| InvariantSummary::new(s, active.as_deref()))
        .collect();
    Json(InvariantSets { active, sets })
}

/// One invariant set, by hash, with its text, signature and the proofs of the policy set
/// active when it was activated: monitors fetch the set an activation's proofs name and
/// prove again (`sovereign audit replay --prove`).
#[utoipa::path(get, path = "/v1/invariants/{hash}", tag = "custody",
    params(InvariantHashPath),
    responses(
        (status = 200, description = "the invariant set", body = InvariantSetBody),
        (status = 404, description = "`unknown_invariant_set`", body = ErrorBody),
    ))]
async fn get_invariants(
    State(app): Shared,
    ApiPath(hash): ApiPath<String>,
) -> AppResult<Json<InvariantSetBody>> {
    let set = app
        .custody
        .invariant_set(&hash)
        .ok_or_else(|| CustodyError::UnknownInvariantSet(hash.clone()))?;
    let active = app.custody.active_invariants().map(|s| s.hash);
    Ok(Json(InvariantSetBody {
        summary: InvariantSummary::new(&set, active.as_deref()),
        text: set.text,
        signature: set.signature,
        proofs: set.proofs,
    }))
}
