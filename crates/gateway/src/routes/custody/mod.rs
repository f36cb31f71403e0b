//! The custodian's controls over HTTP: access requests and approvals, break-glass, policy
//! custody, algorithm custody and the kill switch. Every change is logged before it is
//! committed (see the `custody` crate); each answer carries its entry's index.
//!
//! Who may do what is decided here by role, not by the Cedar policy set, because these routes
//! are how that policy set itself changes:
//! - `custodian-approver`: approve, deny, revoke access requests; review break-glass uses;
//! - `break-glass`: start a break-glass use;
//! - `custodian-operator`: propose and activate policy sets, activate algorithm releases,
//!   apply kill-switch commands (activations still need custodian signatures);
//! - `algorithm-author` (or `custodian-operator`): submit algorithm artifacts.
//!
//! Nobody located in a restricted country may act on any of them.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::analytics::{AlertKind, AlertRequest};
use crate::auth::{Authenticated, now_unix};
use crate::entry;
use crate::http::error::{ApiError, AppResult, ErrorBody};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, Caller, RawBody, parse_json};
use crate::http::response::Logged;
use crate::http::tasks::blocking;
use crate::http::vocab::{
    LOG_INDEX_HEADER, ROLE_ALGORITHM_AUTHOR, ROLE_APPROVER, ROLE_BREAK_GLASS, ROLE_OPERATOR,
    SHA256_HEADER,
};
use crate::proof;
use crate::state::AppState;
use custody::{AccessRequest, Custody, CustodyError, Event, Person, Status};

type Shared = State<Arc<AppState>>;

/// The response header that carries an artifact's digest.

// ---------------------------------------------------------------------------
// Shared helpers

impl AppState {
    /// Appends a custody event to the log, from a blocking thread.
    fn log_custody<'a>(
        &'a self,
        who: Option<&'a Authenticated>,
    ) -> impl Fn(Event<'_>) -> Result<u64, String> + Sync + 'a {
        move |event| {
            self.log
                .append_blocking(entry::custody_entry(&event, who, &self.pseudonyms))
                .map_err(|e| e.to_string())
        }
    }

    /// The caller, after checking it holds one of `roles` and is not in a restricted country.
    fn custodian(&self, who: &Authenticated, roles: &[&str]) -> AppResult<()> {
        self.not_restricted(who)?;
        if !roles.is_empty() {
            who.require_role(roles)?;
        }
        Ok(())
    }

    fn not_restricted(&self, who: &Authenticated) -> AppResult<()> {
        if self
            .config
            .restricted_countries
            .contains(&who.principal.location)
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "restricted_location",
                format!(
                    "custodian controls are not available from {}, a restricted country",
                    who.principal.location
                ),
            ));
        }
        Ok(())
    }
}

/// Approvers and operators see every access request; anyone else only their own.
fn sees_all_requests(who: &Authenticated) -> bool {
    who.has_role(ROLE_APPROVER) || who.has_role(ROLE_OPERATOR)
}

fn person(who: &Authenticated) -> Person {
    Person {
        id: who.principal.id.clone(),
        entity: who.principal.entity.clone(),
    }
}

fn rfc3339(unix: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

impl From<CustodyError> for ApiError {
    fn from(e: CustodyError) -> ApiError {
        use CustodyError as E;
        let message = e.to_string();
        let (status, code) = match &e {
            E::UnknownRequest(_) => (StatusCode::NOT_FOUND, "unknown_request"),
            E::UnknownPolicySet(_) => (StatusCode::NOT_FOUND, "unknown_policy_set"),
            E::UnknownInvariantSet(_) => (StatusCode::NOT_FOUND, "unknown_invariant_set"),
            E::UnknownRelease { .. } => (StatusCode::NOT_FOUND, "unknown_release"),
            E::NotPending { .. } => (StatusCode::CONFLICT, "not_pending"),
            E::NotActive { .. } => (StatusCode::CONFLICT, "not_active"),
            E::NotARequest(_) | E::NotBreakGlass(_) => (StatusCode::CONFLICT, "wrong_kind"),
            E::AlreadyReviewed(_) => (StatusCode::CONFLICT, "already_reviewed"),
            E::AlreadyApproved(_) => (StatusCode::CONFLICT, "already_approved"),
            E::SelfApproval => (StatusCode::FORBIDDEN, "self_approval"),
            E::SameEntity(_) => (StatusCode::FORBIDDEN, "same_entity"),
            E::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            E::VersionExists { .. } => (StatusCode::CONFLICT, "version_exists"),
            E::DigestMismatch { .. } => (StatusCode::CONFLICT, "digest_mismatch"),
            E::WrongStatement(_) => (StatusCode::BAD_REQUEST, "invalid_signature"),
            E::NotProven(_) => (StatusCode::UNPROCESSABLE_ENTITY, "policy_not_proven"),
            E::Statement(custody::statement::StatementError::ThresholdNotMet { .. }) => {
                (StatusCode::FORBIDDEN, "threshold_not_met")
            }
            E::Statement(_) => (StatusCode::BAD_REQUEST, "invalid_signature"),
            E::StaleSerial { .. } => (StatusCode::CONFLICT, "stale_serial"),
            E::LogUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "log_unavailable"),
            E::Store { .. } => return ApiError::internal(message),
            // The stored custody state failed its own checks: nothing can be decided on it.
            E::Unverified { .. } => (StatusCode::SERVICE_UNAVAILABLE, "custody_unverified"),
        };
        ApiError::new(status, code, message)
    }
}

/// A signed statement sent as the request body.
fn note_body(bytes: Bytes) -> AppResult<Vec<u8>> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_signature",
            "the body must be the signed statement (a signed note); it is empty",
        ));
    }
    Ok(bytes.to_vec())
}

// ---------------------------------------------------------------------------
// Parameters and answers, for the OpenAPI document only: the handlers take their paths
// themselves and build their bodies with `json!`; the property-based API test
// (`tests/openapi_property.rs`) checks that what they send conforms.

/// An access request's or break-glass use's id.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct RequestPath {
    /// `ar-` (a request) or `bg-` (a break-glass use) and 16 hex digits.
    #[param(pattern = "^(ar|bg)-[0-9a-f]{16}$", example = "ar-63ff84b1c51d2cdb")]
    id: String,
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

/// An invariant set, by hash.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct InvariantHashPath {
    /// The invariant set's SHA-256, hex.
    #[param(pattern = "^[0-9a-f]{64}$")]
    hash: String,
}

/// An algorithm release.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct ReleasePath {
    /// The algorithm's name: 1-64 of `A-Z a-z 0-9 . _ -`.
    #[param(
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9._-]+$",
        example = "ranker"
    )]
    name: String,
    /// Its version: 1-64 of `A-Z a-z 0-9 . _ -`.
    #[param(
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9._-]+$",
        example = "1.0.0"
    )]
    version: String,
}

/// An action a grant can allow (`policy::Action`).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum ActionName {
    Register,
    List,
    Read,
    Write,
    Delete,
    Export,
    Egress,
    Scan,
    Migrate,
}

/// A reason code (`custody::REASON_CODES`, served at GET /v1/access/reason-codes).
#[derive(ToSchema)]
#[schema(rename_all = "kebab-case")]
#[allow(dead_code)]
enum ReasonCodeName {
    CustomerInitiatedSupport,
    LegalRequest,
    IncidentResponse,
    FraudAbuseInvestigation,
    DataSubjectRequest,
    ServiceMaintenance,
    SecurityAudit,
}

/// An access request's status, as of now (`custody::Status`).
#[derive(ToSchema)]
#[schema(rename_all = "kebab-case")]
#[allow(dead_code)]
enum RequestStatus {
    Pending,
    Approved,
    Denied,
    Expired,
    Revoked,
    Ended,
}

/// A request or a break-glass use (`custody::RequestKind`).
#[derive(ToSchema)]
#[schema(rename_all = "kebab-case")]
#[allow(dead_code)]
enum RequestKindName {
    Request,
    BreakGlass,
}

/// Someone acting: a principal's id and employer entity.
#[derive(ToSchema)]
#[allow(dead_code)]
struct PersonBody {
    id: String,
    entity: String,
}

/// A custodian's decision on a request: who, when, why.
#[derive(ToSchema)]
#[allow(dead_code)]
struct VerdictBody {
    by: String,
    entity: String,
    /// RFC 3339.
    at: String,
    comment: String,
}

/// One approval of a request.
#[derive(ToSchema)]
#[allow(dead_code)]
struct ApprovalBody {
    approver: String,
    entity: String,
    /// RFC 3339.
    at: String,
    comment: String,
}

/// An access request or break-glass use, its status as of now; times in RFC 3339.
#[derive(ToSchema)]
#[allow(dead_code)]
struct AccessRequestBody {
    id: String,
    kind: RequestKindName,
    requester: PersonBody,
    action: ActionName,
    subjects: Vec<String>,
    collections: Vec<String>,
    fields: Vec<String>,
    purpose: String,
    reason_code: String,
    duration_seconds: i64,
    status: RequestStatus,
    approvals_required: u32,
    approvals: Vec<ApprovalBody>,
    denial: Option<VerdictBody>,
    revoked: Option<VerdictBody>,
    review: Option<VerdictBody>,
    created_at: String,
    expires_at: String,
    starts_at: Option<String>,
    ends_at: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct AccessRequests {
    requests: Vec<AccessRequestBody>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct BreakGlassUses {
    uses: Vec<AccessRequestBody>,
}

/// Whether a policy or invariant set is the one in force, was, or never was.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum SetStatus {
    Active,
    Retired,
    Proposed,
}

/// A policy set, without its text.
#[derive(ToSchema)]
#[allow(dead_code)]
struct PolicySummary {
    hash: String,
    status: SetStatus,
    policy_ids: Vec<String>,
    proposed_by: PersonBody,
    proposed_at: String,
    activated_at: Option<String>,
    signers: Vec<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct PolicySets {
    /// The hash of the active set.
    active: Option<String>,
    sets: Vec<PolicySummary>,
}

/// A policy set with its text, signature and the proofs of its last activation.
#[derive(ToSchema)]
#[allow(dead_code)]
struct PolicySetBody {
    hash: String,
    status: SetStatus,
    policy_ids: Vec<String>,
    proposed_by: PersonBody,
    proposed_at: String,
    activated_at: Option<String>,
    signers: Vec<String>,
    schema: String,
    policies: String,
    signature: Option<String>,
    #[schema(value_type = Option<Object>)]
    proofs: Option<Value>,
}

/// A proposed policy set: its hash, its proofs and the statement custodians sign.
#[derive(ToSchema)]
#[allow(dead_code)]
struct PolicyProposed {
    hash: String,
    policy_ids: Vec<String>,
    #[schema(value_type = Object)]
    proofs: Value,
    statement: String,
}

/// An activated policy or invariant set.
#[derive(ToSchema)]
#[allow(dead_code)]
struct Activated {
    hash: String,
    activated_at: Option<String>,
    signers: Vec<String>,
    #[schema(value_type = Option<Object>)]
    proofs: Option<Value>,
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

/// A release's state.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum ReleaseStatus {
    Submitted,
    Active,
    Retired,
}

/// An algorithm release.
#[derive(ToSchema)]
#[allow(dead_code)]
struct ReleaseBody {
    name: String,
    version: String,
    sha256: String,
    size: u64,
    status: ReleaseStatus,
    submitted_by: PersonBody,
    submitted_at: String,
    activated_at: Option<String>,
    signers: Vec<String>,
    /// The signed release statement (active releases, and activation's answer).
    signature: Option<String>,
    /// The statement to sign (submission's answer).
    statement: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct Releases {
    releases: Vec<ReleaseBody>,
}

/// The kill switch's state for one jurisdiction.
#[derive(ToSchema)]
#[allow(dead_code)]
struct JurisdictionState {
    jurisdiction: String,
    suspended: bool,
    /// The serial of the last command applied (0: none).
    serial: u64,
    /// When it was applied, RFC 3339.
    since: Option<String>,
    signers: Vec<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct KillSwitchState {
    jurisdictions: Vec<JurisdictionState>,
}

// ---------------------------------------------------------------------------
// Access requests

#[derive(Serialize, ToSchema)]
struct ReasonCode {
    code: &'static str,
    description: &'static str,
}

#[derive(Serialize, ToSchema)]
struct ReasonCodes {
    reason_codes: Vec<ReasonCode>,
}

/// The reason codes an access request may give.
#[utoipa::path(get, path = "/v1/access/reason-codes", tag = "custody",
    responses((status = 200, description = "the reason codes", body = ReasonCodes)))]
async fn reason_codes() -> Json<ReasonCodes> {
    Json(ReasonCodes {
        reason_codes: custody::REASON_CODES
            .iter()
            .map(|(code, description)| ReasonCode { code, description })
            .collect(),
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewAccessRequest {
    /// The action the grant allows.
    #[schema(value_type = ActionName)]
    action: String,
    /// Subject ids the grant covers (empty: any).
    #[serde(default)]
    #[schema(schema_with = subject_ids)]
    subjects: Vec<String>,
    /// Collections the grant covers (empty: any).
    #[serde(default)]
    collections: Vec<String>,
    /// Fields the grant covers (empty: all of the collections').
    #[serde(default)]
    fields: Vec<String>,
    /// Why: 1 to 256 bytes, not blank.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"\S",
        example = "ticket 42"
    )]
    purpose: String,
    /// One of GET /v1/access/reason-codes.
    #[schema(value_type = ReasonCodeName)]
    reason_code: String,
    /// How long the grant lasts once approved, like `2h` (default 1h, at most
    /// `custody.max_grant_duration`). Ignored for break-glass.
    #[serde(default)]
    #[schema(example = "2h")]
    duration: Option<String>,
}

/// A list of subject ids, each as `vault::validate_id` wants it (400 `invalid_id`).
fn subject_ids() -> utoipa::openapi::Array {
    let id = utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .min_length(Some(1))
        .max_length(Some(128))
        .pattern(Some(crate::http::openapi::ID_PATTERN));
    utoipa::openapi::ArrayBuilder::new().items(id).build()
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct CommentBody {
    /// At most 1024 bytes.
    #[serde(default)]
    #[schema(max_length = 1024)]
    comment: String,
}

impl AppState {
    /// Checks a request's scope against the configuration and turns it into the custody
    /// crate's form.
    fn new_request(&self, body: NewAccessRequest) -> AppResult<custody::NewRequest> {
        let action = policy::Action::ALL
            .into_iter()
            .find(|a| a.as_str() == body.action)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_request",
                    format!(
                        "unknown action `{}`; use one of register, list, read, write, delete, export, egress, scan, migrate",
                        body.action
                    ),
                )
            })?;
        for subject in &body.subjects {
            vault::validate_id("subject id", subject)?;
        }
        for collection in &body.collections {
            if self.governed.collection(collection).is_none() {
                return Err(vault::VaultError::UnknownCollection(collection.clone()).into());
            }
        }
        let in_scope = |field: &str| {
            self.config
                .collections
                .iter()
                .filter(|(name, _)| body.collections.is_empty() || body.collections.contains(name))
                .any(|(_, c)| c.fields.contains_key(field))
        };
        if let Some(field) = body.fields.iter().find(|f| !in_scope(f)) {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!("field `{field}` is not declared in the collections of this request"),
            ));
        }
        let duration_seconds = match &body.duration {
            None => 3600,
            Some(text) => humantime::parse_duration(text)
                .map_err(|e| {
                    ApiError::bad_request(
                        "invalid_request",
                        format!("`duration` must be like 30m or 2h: {e}"),
                    )
                })?
                .as_secs() as i64,
        };
        Ok(custody::NewRequest {
            action: action.as_str().to_string(),
            subjects: body.subjects,
            collections: body.collections,
            fields: body.fields,
            purpose: body.purpose,
            reason_code: body.reason_code,
            duration_seconds,
        })
    }

    /// N of "N of M": the most any collection in the scope asks for (all of them when the
    /// scope names none).
    fn approvals_required(&self, collections: &[String]) -> u32 {
        self.config
            .collections
            .iter()
            .filter(|(name, _)| collections.is_empty() || collections.contains(name))
            .filter(|(_, c)| c.approval)
            .map(|(_, c)| c.approvals)
            .max()
            .unwrap_or(1)
    }

    fn request_rules(&self, collections: &[String]) -> custody::RequestRules {
        custody::RequestRules {
            approvals_required: self.approvals_required(collections),
            pending_ttl_seconds: self.config.custody.request_ttl.as_secs() as i64,
            max_duration_seconds: self.config.custody.max_grant_duration.as_secs() as i64,
        }
    }
}

/// An access request as answered: times in RFC 3339, the status as of now.
fn request_json(r: &AccessRequest, now: i64) -> Value {
    let verdict = |v: &Option<custody::Verdict>| {
        v.as_ref().map(
            |v| json!({"by": v.by, "entity": v.entity, "at": rfc3339(v.at), "comment": v.comment}),
        )
    };
    json!({
        "id": r.id,
        "kind": r.kind,
        "requester": r.requester,
        "action": r.action,
        "subjects": r.subjects,
        "collections": r.collections,
        "fields": r.fields,
        "purpose": r.purpose,
        "reason_code": r.reason_code,
        "duration_seconds": r.duration_seconds,
        "status": r.status(now),
        "approvals_required": r.approvals_required,
        "approvals": r.approvals.iter().map(|a| json!({
            "approver": a.by, "entity": a.entity, "at": rfc3339(a.at), "comment": a.comment,
        })).collect::<Vec<_>>(),
        "denial": verdict(&r.denial),
        "revoked": verdict(&r.revoked),
        "review": verdict(&r.review),
        "created_at": rfc3339(r.created_at),
        "expires_at": rfc3339(r.expires_at),
        "starts_at": r.starts_at.map(rfc3339),
        "ends_at": r.ends_at.map(rfc3339),
    })
}

/// Files an access request; it becomes a grant when enough custodian approvers approve it.
#[utoipa::path(post, path = "/v1/access/requests", tag = "custody",
    request_body = NewAccessRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "the request, pending approval", body = AccessRequestBody),
        (status = 400, description = "`invalid_json`, `invalid_body`, `invalid_request` (action, reason code, purpose, duration, a field outside the collections, too large a scope), `invalid_id` (a subject id)", body = ErrorBody),
        (status = 404, description = "`unknown_collection`", body = ErrorBody),
    ))]
async fn create_request(
    State(app): Shared,
    Caller(who): Caller,
    RawBody(body): RawBody,
) -> AppResult<Logged<Value>> {
    let new = app.new_request(parse_json(&body)?)?;
    let rules = app.request_rules(&new.collections);
    let now = now_unix();
    let (request, index) = run(app, who, move |app, who| {
        app.custody
            .create_request(new, &person(who), rules, now, &app.log_custody(Some(who)))
    })
    .await?;
    Ok(Logged::with_status(
        index,
        StatusCode::CREATED,
        request_json(&request, now),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only the requests with this status now.
    #[param(value_type = RequestStatus, required = false)]
    status: Option<String>,
}

/// Access requests: all of them for approvers and operators, one's own for anyone else.
#[utoipa::path(get, path = "/v1/access/requests", tag = "custody",
    params(ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the requests", body = AccessRequests),
        (status = 400, description = "`invalid_query`: an unknown status or parameter", body = ErrorBody),
    ))]
async fn list_requests(
    State(app): Shared,
    Caller(who): Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> AppResult<Json<Value>> {
    let status = match &query.status {
        None => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                format!(
                    "unknown status `{s}`: use pending, approved, denied, expired, revoked or ended"
                ),
            )
        })?),
    };
    let sees_all = sees_all_requests(&who);
    let now = now_unix();
    let requests: Vec<Value> = app
        .custody
        .requests()
        .iter()
        .filter(|r| r.kind == custody::RequestKind::Request)
        .filter(|r| sees_all || r.requester.id == who.principal.id)
        .filter(|r| status.is_none_or(|s| r.status(now) == s))
        .map(|r| request_json(r, now))
        .collect();
    Ok(Json(json!({ "requests": requests })))
}

/// One access request or break-glass use.
#[utoipa::path(get, path = "/v1/access/requests/{id}", tag = "custody",
    params(RequestPath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the request", body = AccessRequestBody),
        (status = 404, description = "`unknown_request` (also for another's request, unless the caller is an approver or operator)", body = ErrorBody),
    ))]
async fn get_request(
    State(app): Shared,
    Caller(who): Caller,
    ApiPath(id): ApiPath<String>,
) -> AppResult<Json<Value>> {
    let request = app.custody.request(&id)?;
    let sees_all = sees_all_requests(&who);
    if !sees_all && request.requester.id != who.principal.id {
        return Err(CustodyError::UnknownRequest(id).into());
    }
    Ok(Json(request_json(&request, now_unix())))
}

/// Approves a pending request. Nobody approves their own request or one from their entity.
#[utoipa::path(post, path = "/v1/access/requests/{id}/approve", tag = "custody",
    params(RequestPath),
    request_body(content = Option<CommentBody>, description = "optional comment (an empty body is none)"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "approved (a grant once the threshold is met)", body = AccessRequestBody),
        (status = 400, description = "`invalid_json`, `invalid_body`, `invalid_request` (a comment over 1024 bytes)", body = ErrorBody),
        (status = 403, description = "`role_required` (custodian-approver), `restricted_location`, `self_approval`, `same_entity`", body = ErrorBody),
        (status = 404, description = "`unknown_request`", body = ErrorBody),
        (status = 409, description = "`not_pending`, `already_approved` by this approver, `wrong_kind` (a break-glass use)", body = ErrorBody),
    ))]
async fn approve_request(
    State(app): Shared,
    Caller(who): Caller,
    ApiPath(id): ApiPath<String>,
    RawBody(body): RawBody,
) -> AppResult<Logged<Value>> {
    app.custodian(&who, &[ROLE_APPROVER])?;
    let comment = optional_comment(body)?;
    decide_on_request(app, who, id, comment, Custody::approve).await
}

/// Denies a pending request.
#[utoipa::path(post, path = "/v1/access/requests/{id}/deny", tag = "custody",
    params(RequestPath),
    request_body(content = Option<CommentBody>, description = "why (an empty body gives no reason)"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "denied", body = AccessRequestBody),
        (status = 400, description = "`invalid_json`, `invalid_body`, `invalid_request` (a comment over 1024 bytes)", body = ErrorBody),
        (status = 403, description = "`role_required` (custodian-approver), `restricted_location`, `self_approval`, `same_entity`", body = ErrorBody),
        (status = 404, description = "`unknown_request`", body = ErrorBody),
        (status = 409, description = "`not_pending`, `wrong_kind` (a break-glass use)", body = ErrorBody),
    ))]
async fn deny_request(
    State(app): Shared,
    Caller(who): Caller,
    ApiPath(id): ApiPath<String>,
    RawBody(body): RawBody,
) -> AppResult<Logged<Value>> {
    app.custodian(&who, &[ROLE_APPROVER])?;
    let comment = optional_comment(body)?;
    decide_on_request(app, who, id, comment, Custody::deny).await
}

/// Ends an active grant at once: by a custodian approver, or by its holder.
#[utoipa::path(post, path = "/v1/access/requests/{id}/revoke", tag = "custody",
    params(RequestPath),
    request_body(content = Option<CommentBody>, description = "why (an empty body gives no reason)"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "revoked", body = AccessRequestBody),
        (status = 400, description = "`invalid_json`, `invalid_body`, `invalid_request` (a comment over 1024 bytes)", body = ErrorBody),
        (status = 403, description = "`role_required` (neither a custodian-approver nor the grant's holder), `restricted_location`", body = ErrorBody),
        (status = 404, description = "`unknown_request`", body = ErrorBody),
        (status = 409, description = "`not_active`: not an active grant", body = ErrorBody),
    ))]
async fn revoke_request(
    State(app): Shared,
    Caller(who): Caller,
    ApiPath(id): ApiPath<String>,
    RawBody(body): RawBody,
) -> AppResult<Logged<Value>> {
    app.custodian(&who, &[])?;
    let comment = optional_comment(body)?;
    let request = app.custody.request(&id)?;
    if !who.has_role(ROLE_APPROVER) && request.requester.id != who.principal.id {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "role_required",
            format!("only a {ROLE_APPROVER} or the grant's holder may revoke it"),
        ));
    }
    decide_on_request(app, who, id, comment, Custody::revoke).await
}

/// Starts a break-glass use: a grant at once for the configured window, with an alert.
#[utoipa::path(post, path = "/v1/access/break-glass", tag = "custody",
    request_body = NewAccessRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "the break-glass grant", body = AccessRequestBody),
        (status = 400, description = "`invalid_json`, `invalid_body`, `invalid_request`, `invalid_id`", body = ErrorBody),
        (status = 403, description = "`role_required` (break-glass), `restricted_location`", body = ErrorBody),
        (status = 404, description = "`unknown_collection`", body = ErrorBody),
    ))]
async fn start_break_glass(
    State(app): Shared,
    Caller(who): Caller,
    RawBody(body): RawBody,
) -> AppResult<Logged<Value>> {
    app.custodian(&who, &[ROLE_BREAK_GLASS])?;
    let new = app.new_request(parse_json(&body)?)?;
    let window = app.config.custody.break_glass_window.as_secs() as i64;
    let now = now_unix();
    let (request, index) = run(app.clone(), who.clone(), move |app, who| {
        app.custody
            .break_glass(new, &person(who), window, now, &app.log_custody(Some(who)))
    })
    .await?;
    let alert = AlertRequest {
        kind: AlertKind::BreakGlass,
        message: format!(
            "{} ({}) started break-glass access {} ({}) for {window}s; a custodian must review it",
            who.principal.id, who.principal.entity, request.id, request.reason_code
        ),
        details: json!({"id": request.id, "reason_code": request.reason_code, "window_seconds": window}),
    };
    app.raise_alert(alert, Some(&who)).await?;
    Ok(Logged::with_status(
        index,
        StatusCode::CREATED,
        request_json(&request, now),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct BreakGlassQuery {
    /// Only the uses not yet reviewed.
    #[serde(default)]
    unreviewed: bool,
}

/// Break-glass uses; `?unreviewed=true` lists those still waiting for a custodian's review.
#[utoipa::path(get, path = "/v1/access/break-glass", tag = "custody",
    params(BreakGlassQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the uses: all of them for approvers and operators, one's own for anyone else", body = BreakGlassUses),
        (status = 400, description = "`invalid_query`: `unreviewed` is not a boolean, or an unknown parameter", body = ErrorBody),
    ))]
async fn list_break_glass(
    State(app): Shared,
    Caller(who): Caller,
    ApiQuery(query): ApiQuery<BreakGlassQuery>,
) -> AppResult<Json<Value>> {
    let sees_all = sees_all_requests(&who);
    let now = now_unix();
    let uses: Vec<Value> = app
        .custody
        .requests()
        .iter()
        .filter(|r| r.kind == custody::RequestKind::BreakGlass)
        .filter(|r| sees_all || r.requester.id == who.principal.id)
        .filter(|r| !query.unreviewed || r.review.is_none())
        .map(|r| request_json(r, now))
        .collect();
    Ok(Json(json!({ "uses": uses })))
}

/// A custodian's review of a break-glass use.
#[utoipa::path(post, path = "/v1/access/break-glass/{id}/review", tag = "custody",
    params(RequestPath),
    request_body(content = Option<CommentBody>, description = "the review (an empty body is none)"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "reviewed", body = AccessRequestBody),
        (status = 400, description = "`invalid_json`, `invalid_body`, `invalid_request` (a comment over 1024 bytes)", body = ErrorBody),
        (status = 403, description = "`role_required` (custodian-approver), `restricted_location`, `self_approval`, `same_entity`", body = ErrorBody),
        (status = 404, description = "`unknown_request`", body = ErrorBody),
        (status = 409, description = "`already_reviewed`, `wrong_kind` (not a break-glass use)", body = ErrorBody),
    ))]
async fn review_break_glass(
    State(app): Shared,
    Caller(who): Caller,
    ApiPath(id): ApiPath<String>,
    RawBody(body): RawBody,
) -> AppResult<Logged<Value>> {
    app.custodian(&who, &[ROLE_APPROVER])?;
    let comment = optional_comment(body)?;
    decide_on_request(app, who, id, comment, Custody::review).await
}

/// A custodian's decision on one request (approve, deny, revoke, review): the custody
/// crate's methods all take the same arguments.
type RequestDecision = fn(
    &Custody,
    &str,
    &Person,
    &str,
    i64,
    custody::LogFn<'_>,
) -> Result<(AccessRequest, u64), CustodyError>;

/// Applies `decision` by `who` to request `id` and answers with the request as it now is.
async fn decide_on_request(
    app: Arc<AppState>,
    who: Authenticated,
    id: String,
    comment: String,
    decision: RequestDecision,
) -> AppResult<Logged<Value>> {
    let now = now_unix();
    let (request, index) = run(app, who, move |app, who| {
        decision(
            &app.custody,
            &id,
            &person(who),
            &comment,
            now,
            &app.log_custody(Some(who)),
        )
    })
    .await?;
    Ok(Logged::ok(index, request_json(&request, now)))
}

fn optional_comment(body: Bytes) -> AppResult<String> {
    if body.is_empty() {
        return Ok(String::new());
    }
    Ok(parse_json::<CommentBody>(&body)?.comment)
}

/// Runs a custody change on a blocking thread (it waits for the log's fsync), with no
/// decision in flight across it (`AppState::custody_change`).
async fn run<T: Send + 'static>(
    app: Arc<AppState>,
    who: Authenticated,
    f: impl FnOnce(&AppState, &Authenticated) -> Result<T, CustodyError> + Send + 'static,
) -> AppResult<T> {
    Ok(app.custody_change(move |app| f(app, &who)).await??)
}

// ---------------------------------------------------------------------------
// Policy custody

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ProposePolicy {
    /// The Cedar policy set.
    policies: String,
    /// The Cedar schema; the active set's when absent.
    #[serde(default)]
    schema: Option<String>,
}

fn policy_summary(set: &custody::PolicySetRecord, active: Option<&str>) -> Value {
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
        "policy_ids": set.policy_ids,
        "proposed_by": set.proposed_by,
        "proposed_at": rfc3339(set.proposed_at),
        "activated_at": set.activated_at.map(rfc3339),
        "signers": set.signers,
    })
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
        .map_err(|e| ApiError::bad_request("invalid_policy", e.to_string()))?;
    let proofs = prove_against_invariants(&app, &schema, &request.policies).await?;
    let record = custody::PolicySetRecord {
        hash: engine.policy_set_hash().to_string(),
        schema,
        policies: request.policies,
        policy_ids: engine.policy_ids(),
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
            .propose_policy(record, &app.log_custody(Some(who)))
    })
    .await?;
    let statement = custody::statement::Statement::PolicyActivation {
        policy_set: set.hash.clone(),
    };
    let body = json!({
        "hash": set.hash,
        "policy_ids": set.policy_ids,
        "proofs": proofs,
        "statement": statement.text(),
    });
    Ok(match index {
        Some(index) => Logged::with_status(index, StatusCode::CREATED, body).into_response(),
        None => (StatusCode::OK, Json(body)).into_response(),
    })
}

/// Every policy set proposed, and which is active.
#[utoipa::path(get, path = "/v1/policies", tag = "custody",
    responses((status = 200, description = "the policy sets", body = PolicySets)))]
async fn list_policies(State(app): Shared) -> Json<Value> {
    let (active, sets) = app.custody.policy_sets();
    let sets: Vec<Value> = sets
        .iter()
        .map(|s| policy_summary(s, active.as_deref()))
        .collect();
    Json(json!({ "active": active, "sets": sets }))
}

/// One policy set, by hash, with its full text: monitors fetch the set a log entry names and
/// check it against the hash.
#[utoipa::path(get, path = "/v1/policies/{hash}", tag = "custody",
    params(PolicyHashPath),
    responses(
        (status = 200, description = "the policy set", body = PolicySetBody),
        (status = 404, description = "`unknown_policy_set`", body = ErrorBody),
    ))]
async fn get_policy(State(app): Shared, ApiPath(hash): ApiPath<String>) -> AppResult<Json<Value>> {
    let set = app
        .custody
        .policy_set(&hash)
        .ok_or(CustodyError::UnknownPolicySet(hash))?;
    let active = app.custody.active_policy().map(|s| s.hash);
    let mut body = policy_summary(&set, active.as_deref());
    body["schema"] = set.schema.into();
    body["policies"] = set.policies.into();
    body["signature"] = set.signature.into();
    // The proofs of its last activation (none for a set never activated).
    body["proofs"] = json!(set.proofs);
    Ok(Json(body))
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

/// Runs `prove` on a blocking thread (the solver runs for a tenth of a second or more) once
/// one of the gateway's proof slots is free, with the configured solver settings.
async fn in_proof_slot<T: Send + 'static>(
    app: &AppState,
    prove: impl FnOnce(&proof::Settings) -> AppResult<T> + Send + 'static,
) -> AppResult<T> {
    let settings = proof::Settings::from_config(&app.config.policy);
    let _slot = app
        .proof_slots
        .acquire()
        .await
        .map_err(ApiError::internal)?;
    blocking(move || prove(&settings)).await?
}

/// Checks a signed activation statement before the (slower) proof, so that a wrong or badly
/// signed one is told at once; custody checks it again, with the proofs, under its lock.
fn check_statement_first(
    app: &AppState,
    signed: &[u8],
    expected: &custody::statement::Statement,
) -> AppResult<()> {
    let keys = app.custody.keys();
    let verified = custody::statement::verify(signed, &keys.verifiers, keys.policy_threshold)
        .map_err(CustodyError::from)?;
    if verified.statement != *expected {
        return Err(CustodyError::WrongStatement(format!(
            "it says \"{}\", not \"{expected}\"",
            verified.statement
        ))
        .into());
    }
    Ok(())
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
) -> AppResult<Logged<Value>> {
    app.custodian(&who, &[ROLE_OPERATOR])?;
    let signed = note_body(body)?;
    let set = app
        .custody
        .policy_set(&hash)
        .ok_or_else(|| CustodyError::UnknownPolicySet(hash.clone()))?;
    let engine = policy::PolicyEngine::new(&set.schema, &set.policies)
        .map_err(|e| ApiError::bad_request("invalid_policy", e.to_string()))?;
    check_statement_first(
        &app,
        &signed,
        &custody::statement::Statement::PolicyActivation {
            policy_set: hash.clone(),
        },
    )?;
    let proofs = prove_against_invariants(&app, &set.schema, &set.policies).await?;
    let now = now_unix();
    let (set, index) = run(app, who, move |app, who| {
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
        json!({
            "hash": set.hash,
            "activated_at": set.activated_at.map(rfc3339),
            "signers": set.signers,
            "proofs": set.proofs,
        }),
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
                "invalid_policy",
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

// ---------------------------------------------------------------------------
// Algorithm custody

fn release_json(r: &custody::Release, with_signature: bool) -> Value {
    let mut body = json!({
        "name": r.name,
        "version": r.version,
        "sha256": r.sha256,
        "size": r.size,
        "status": r.status(),
        "submitted_by": r.submitted_by,
        "submitted_at": rfc3339(r.submitted_at),
        "activated_at": r.activated_at.map(rfc3339),
        "signers": r.signers,
    });
    if with_signature {
        body["signature"] = r.signature.clone().into();
    }
    body
}

/// Submits an algorithm artifact (the raw bytes). It is stored under its SHA-256 and runs
/// nowhere until the custodian signs its release.
#[utoipa::path(post, path = "/v1/algorithms/{name}/{version}", tag = "custody",
    params(ReleasePath),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the artifact"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "stored: its digest and the statement to sign", body = ReleaseBody),
        (status = 200, description = "the identical artifact was already stored", body = ReleaseBody),
        (status = 400, description = "`invalid_request`: the name or version is not 1-64 of `A-Z a-z 0-9 . _ -`", body = ErrorBody),
        (status = 403, description = "`role_required` (algorithm-author or custodian-operator), `restricted_location`", body = ErrorBody),
        (status = 409, description = "`version_exists` with other bytes", body = ErrorBody),
        (status = 413, description = "`body_too_large`: larger than custody.max_artifact_bytes", body = ErrorBody),
    ))]
async fn submit_algorithm(
    State(app): Shared,
    Caller(who): Caller,
    ApiPath((name, version)): ApiPath<(String, String)>,
    body: Body,
) -> AppResult<Response> {
    app.custodian(&who, &[ROLE_ALGORITHM_AUTHOR, ROLE_OPERATOR])?;
    custody::check_release_name("name", &name)?;
    custody::check_release_name("version", &version)?;
    // Artifacts have their own limit, larger than the API's body limit.
    let limit = app.config.custody.max_artifact_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the artifact is larger than custody.max_artifact_bytes ({limit} bytes), or the upload broke off"),
        )
    })?;
    let now = now_unix();
    let (release, index) = run(app, who, move |app, who| {
        app.custody.submit_algorithm(
            &name,
            &version,
            &bytes,
            &person(who),
            now,
            &app.log_custody(Some(who)),
        )
    })
    .await?;
    let statement = custody::statement::Statement::AlgorithmRelease {
        name: release.name.clone(),
        version: release.version.clone(),
        sha256: release.sha256.clone(),
    };
    let mut body = release_json(&release, false);
    body["statement"] = statement.text().into();
    Ok(match index {
        Some(index) => Logged::with_status(index, StatusCode::CREATED, body).into_response(),
        None => (StatusCode::OK, Json(body)).into_response(),
    })
}

/// Every algorithm version submitted.
#[utoipa::path(get, path = "/v1/algorithms", tag = "custody",
    responses((status = 200, description = "the releases", body = Releases)))]
async fn list_algorithms(State(app): Shared) -> Json<Value> {
    let releases: Vec<Value> = app
        .custody
        .releases()
        .iter()
        .map(|r| release_json(r, false))
        .collect();
    Json(json!({ "releases": releases }))
}

/// The active releases with the custodian's signed statements, for monitors.
#[utoipa::path(get, path = "/v1/algorithms/active", tag = "custody",
    responses((status = 200, description = "the active releases, with their signed statements", body = Releases)))]
async fn active_algorithms(State(app): Shared) -> Json<Value> {
    let releases: Vec<Value> = app
        .custody
        .active_releases()
        .iter()
        .map(|r| release_json(r, true))
        .collect();
    Json(json!({ "releases": releases }))
}

/// Activates a release. The body is the custodian's signed statement naming exactly this
/// name, version and digest; the stored artifact is re-hashed first.
#[utoipa::path(post, path = "/v1/algorithms/{name}/{version}/activate", tag = "custody",
    params(ReleasePath),
    request_body(content = String, content_type = "text/plain", description = "the signed statement (signed note)"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "active", body = ReleaseBody),
        (status = 400, description = "`invalid_signature` (not a valid signed statement for this release, or an empty body), `invalid_body`", body = ErrorBody),
        (status = 403, description = "`role_required` (custodian-operator), `restricted_location`, `threshold_not_met` (not enough custodian signatures)", body = ErrorBody),
        (status = 404, description = "`unknown_release`", body = ErrorBody),
        (status = 409, description = "`digest_mismatch`: the stored artifact no longer matches its digest", body = ErrorBody),
    ))]
async fn activate_algorithm(
    State(app): Shared,
    Caller(who): Caller,
    ApiPath((name, version)): ApiPath<(String, String)>,
    RawBody(body): RawBody,
) -> AppResult<Logged<Value>> {
    app.custodian(&who, &[ROLE_OPERATOR])?;
    let signed = note_body(body)?;
    let now = now_unix();
    let (release, index) = run(app, who, move |app, who| {
        app.custody
            .activate_algorithm(&name, &version, &signed, now, &app.log_custody(Some(who)))
    })
    .await?;
    Ok(Logged::ok(index, release_json(&release, true)))
}

/// An artifact's bytes, served only after they are checked against the recorded digest.
#[utoipa::path(get, path = "/v1/algorithms/{name}/{version}/artifact", tag = "custody",
    params(ReleasePath),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the artifact; header Sovereign-Sha256 gives its digest", content_type = "application/octet-stream"),
        (status = 403, description = "`restricted_location`", body = ErrorBody),
        (status = 404, description = "`unknown_release`", body = ErrorBody),
        (status = 500, description = "`artifact_corrupt`: the stored artifact does not match its digest, so it is not served", body = ErrorBody),
    ))]
async fn fetch_algorithm(
    State(app): Shared,
    Caller(who): Caller,
    ApiPath((name, version)): ApiPath<(String, String)>,
) -> AppResult<Response> {
    app.custodian(&who, &[])?;
    let (release, bytes, index) = run(app, who, move |app, who| {
        app.custody
            .fetch_algorithm(&name, &version, &app.log_custody(Some(who)))
    })
    .await
    .map_err(|e| {
        if e.code == "digest_mismatch" {
            tracing::error!("an algorithm artifact does not match its digest; not served");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "artifact_corrupt",
                e.message,
            )
        } else {
            e
        }
    })?;
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        SHA256_HEADER,
        HeaderValue::from_str(&release.sha256).expect("hex is a valid header value"),
    );
    headers.insert(LOG_INDEX_HEADER, HeaderValue::from(index));
    Ok(response)
}

// ---------------------------------------------------------------------------
// Kill switch

fn kill_switch_json(app: &AppState) -> Value {
    let suspensions = app.custody.suspensions();
    let jurisdictions: Vec<Value> = app
        .config
        .jurisdictions
        .iter()
        .map(|j| match suspensions.iter().find(|s| &s.jurisdiction == j) {
            Some(s) => json!({
                "jurisdiction": j,
                "suspended": s.suspended,
                "serial": s.serial,
                "since": rfc3339(s.since),
                "signers": s.signers,
            }),
            None => json!({"jurisdiction": j, "suspended": false, "serial": 0, "since": null, "signers": []}),
        })
        .collect();
    json!({ "jurisdictions": jurisdictions })
}

/// The kill switch's state for every jurisdiction.
#[utoipa::path(get, path = "/v1/kill-switch", tag = "custody",
    responses((status = 200, description = "per jurisdiction: suspended or not, the last serial", body = KillSwitchState)))]
async fn kill_switch_status(State(app): Shared) -> Json<Value> {
    Json(kill_switch_json(&app))
}

/// Applies a signed kill-switch command: suspend or lift all access to one jurisdiction's
/// data. Its serial must be above the last one applied, so old commands cannot be replayed.
#[utoipa::path(post, path = "/v1/kill-switch", tag = "custody",
    request_body(content = String, content_type = "text/plain", description = "the signed statement (signed note)"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "applied; the new state", body = KillSwitchState),
        (status = 400, description = "`invalid_signature` (not a valid signed kill-switch command for a configured jurisdiction, or an empty body), `invalid_body`", body = ErrorBody),
        (status = 403, description = "`role_required` (custodian-operator), `restricted_location`, `threshold_not_met` (not enough custodian signatures)", body = ErrorBody),
        (status = 409, description = "`stale_serial`: not above the last serial applied", body = ErrorBody),
    ))]
async fn apply_kill_switch(
    State(app): Shared,
    Caller(who): Caller,
    RawBody(body): RawBody,
) -> AppResult<Logged<Value>> {
    app.custodian(&who, &[ROLE_OPERATOR])?;
    let signed = note_body(body)?;
    let now = now_unix();
    let (suspension, index) = run(app.clone(), who, move |app, who| {
        app.custody.apply_kill_switch(
            &signed,
            |j| app.config.jurisdictions.contains(j),
            now,
            &app.log_custody(Some(who)),
        )
    })
    .await?;
    tracing::warn!(
        jurisdiction = %suspension.jurisdiction,
        suspended = suspension.suspended,
        serial = suspension.serial,
        "kill switch applied"
    );
    Ok(Logged::ok(index, kill_switch_json(&app)))
}

/// The custody routes, for `api::routes`.
/// The custodian's routes.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(reason_codes))
        .routes(routes!(create_request, list_requests))
        .routes(routes!(get_request))
        .routes(routes!(approve_request))
        .routes(routes!(deny_request))
        .routes(routes!(revoke_request))
        .routes(routes!(start_break_glass, list_break_glass))
        .routes(routes!(review_break_glass))
        .routes(routes!(propose_policy, list_policies))
        .routes(routes!(get_policy))
        .routes(routes!(activate_policy))
        .routes(routes!(propose_invariants, list_invariants))
        .routes(routes!(get_invariants))
        .routes(routes!(activate_invariants))
        .routes(routes!(submit_algorithm))
        .routes(routes!(list_algorithms))
        .routes(routes!(active_algorithms))
        .routes(routes!(activate_algorithm))
        .routes(routes!(fetch_algorithm))
        .routes(routes!(kill_switch_status, apply_kill_switch))
}
