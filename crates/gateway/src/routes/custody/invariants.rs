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
#[derive(ToSchema)]
#[allow(dead_code)]
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

#[derive(ToSchema)]
#[allow(dead_code)]
struct InvariantSets {
    /// The hash of the set in force.
    active: Option<String>,
    sets: Vec<InvariantSummary>,
}

/// An invariant set with its text, signature and proofs.
#[derive(ToSchema)]
#[allow(dead_code)]
struct InvariantSetBody {
    hash: String,
    status: SetStatus,
    invariants: Vec<String>,
    proposed_by: PersonBody,
    proposed_at: String,
    activated_at: Option<String>,
    signers: Vec<String>,
    text: String,
    signature: Option<String>,
    #[schema(value_type = Option<Object>)]
    proofs: Option<Value>,
}

/// A proposed invariant set: its hash, the active policy set's proofs against it, and the
/// statement custodians sign.
#[derive(ToSchema)]
#[allow(dead_code)]
struct InvariantsProposed {
    hash: String,
    invariants: Vec<String>,
    #[schema(value_type = Object)]
    proofs: Value,
    statement: String,
}

fn invariants_summary(set: &custody::InvariantSetRecord, active: Option<&str>) -> Value {
    let status = if active == Some(set.hash.as_str()) {
        "active"
    } else if set.activated_at.is_some() {
        "retired"
    } else {
        "proposed"
    };
    json!({
        "hash": set.hash,
        "status": status,
        "invariants": set.names,
        "proposed_by": set.proposed_by,
        "proposed_at": rfc3339(set.proposed_at),
        "activated_at": set.activated_at.map(rfc3339),
        "signers": set.signers,
    })
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
    let record = custody::InvariantSetRecord {
        hash: invariants.hash().to_string(),
        text: request.text,
        names: invariants.iter().map(|i| i.name().to_string()).collect(),
        proposed_by: person(&who),
        proposed_at: now_unix(),
        activated_at: None,
        signature: None,
        signers: Vec::new(),
        proofs: None,
        log_index: None,
    };
    let (set, index) = run(app, who, move |app, who| {
        app.custody
            .propose_invariants(record, &app.log_custody(Some(who)))
    })
    .await?;
    let statement = custody::statement::Statement::InvariantActivation {
        invariant_set: set.hash.clone(),
    };
    let body = json!({
        "hash": set.hash,
        "invariants": set.names,
        "proofs": proofs,
        "statement": statement.text(),
    });
    Ok(match index {
        Some(index) => Logged::with_status(index, StatusCode::CREATED, body).into_response(),
        None => (StatusCode::OK, Json(body)).into_response(),
    })
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
) -> AppResult<Logged<Value>> {
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
    let (set, index) = run(app, who, move |app, who| {
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
        json!({
            "hash": set.hash,
            "activated_at": set.activated_at.map(rfc3339),
            "signers": set.signers,
            "proofs": set.proofs,
        }),
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
            .map_err(|e| ApiError::bad_request("invalid_invariants", e))?;
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
async fn list_invariants(State(app): Shared) -> Json<Value> {
    let (active, sets) = app.custody.invariant_sets();
    let sets: Vec<Value> = sets
        .iter()
        .map(|s| invariants_summary(s, active.as_deref()))
        .collect();
    Json(json!({ "active": active, "sets": sets }))
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
) -> AppResult<Json<Value>> {
    let set = app
        .custody
        .invariant_set(&hash)
        .ok_or_else(|| CustodyError::UnknownInvariantSet(hash.clone()))?;
    let active = app.custody.active_invariants().map(|s| s.hash);
    let mut body = invariants_summary(&set, active.as_deref());
    body["text"] = set.text.into();
    body["signature"] = set.signature.into();
    body["proofs"] = json!(set.proofs);
    Ok(Json(body))
}
