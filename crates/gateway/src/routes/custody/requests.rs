//! Access requests and break-glass: filing a request, N-of-M approval, denial and revocation,
//! emergency access and its review, and the reason codes a request may give.

use axum::extract::FromRequest;

use super::*;

/// The routes of this module.
pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(reason_codes))
        .routes(routes!(create_request, list_requests))
        .routes(routes!(get_request))
        .routes(routes!(approve_request))
        .routes(routes!(deny_request))
        .routes(routes!(revoke_request))
        .routes(routes!(start_break_glass, list_break_glass))
        .routes(routes!(review_break_glass))
}

/// Approvers and operators see every access request; anyone else only their own.
fn sees_all_requests(who: &Authenticated) -> bool {
    who.has_role(ROLE_APPROVER) || who.has_role(ROLE_OPERATOR)
}

/// An access request's or break-glass use's id.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct RequestPath {
    /// `ar-` (a request) or `bg-` (a break-glass use) and 16 hex digits.
    #[param(pattern = "^(ar|bg)-[0-9a-f]{16}$", example = "ar-63ff84b1c51d2cdb")]
    id: String,
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
    Run,
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

/// A custodian's decision on a request: who, when, why.
#[derive(Serialize, ToSchema)]
struct VerdictBody {
    by: String,
    entity: String,
    /// RFC 3339.
    at: String,
    comment: String,
}

/// One approval of a request.
#[derive(Serialize, ToSchema)]
struct ApprovalBody {
    approver: String,
    entity: String,
    /// RFC 3339.
    at: String,
    comment: String,
}

/// An access request or break-glass use, its status as of now; times in RFC 3339.
#[derive(Serialize, ToSchema)]
struct AccessRequestBody {
    id: String,
    #[schema(value_type = RequestKindName)]
    kind: custody::RequestKind,
    requester: PersonBody,
    #[schema(value_type = ActionName)]
    action: String,
    subjects: Vec<String>,
    collections: Vec<String>,
    fields: Vec<String>,
    purpose: String,
    reason_code: String,
    duration_seconds: i64,
    #[schema(value_type = RequestStatus)]
    status: Status,
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

#[derive(Serialize, ToSchema)]
struct AccessRequests {
    requests: Vec<AccessRequestBody>,
}

#[derive(Serialize, ToSchema)]
struct BreakGlassUses {
    uses: Vec<AccessRequestBody>,
}

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
        // `compute` is a released algorithm's own decision, `history` a data subject's: no
        // one else is granted either.
        let action = policy::Action::ALL
            .into_iter()
            .filter(|a| !matches!(a, policy::Action::Compute | policy::Action::History))
            .find(|a| a.as_str() == body.action)
            .ok_or_else(|| {
                ApiError::bad_request(
                    ErrorCode::InvalidRequest,
                    format!(
                        "unknown action `{}`; use one of register, list, read, write, delete, export, egress, scan, migrate, run",
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
                ErrorCode::InvalidRequest,
                format!("field `{field}` is not declared in the collections of this request"),
            ));
        }
        let duration_seconds = match &body.duration {
            None => 3600,
            Some(text) => humantime::parse_duration(text)
                .map_err(|e| {
                    ApiError::bad_request(
                        ErrorCode::InvalidRequest,
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
impl VerdictBody {
    fn new(v: &custody::Verdict) -> Self {
        VerdictBody {
            by: v.by.clone(),
            entity: v.entity.clone(),
            at: rfc3339(v.at),
            comment: v.comment.clone(),
        }
    }
}

impl AccessRequestBody {
    /// The request as its status is at `now`.
    fn new(r: &AccessRequest, now: i64) -> Self {
        AccessRequestBody {
            id: r.id.clone(),
            kind: r.kind,
            requester: PersonBody::new(&r.requester),
            action: r.action.clone(),
            subjects: r.subjects.clone(),
            collections: r.collections.clone(),
            fields: r.fields.clone(),
            purpose: r.purpose.clone(),
            reason_code: r.reason_code.clone(),
            duration_seconds: r.duration_seconds,
            status: r.status(now),
            approvals_required: r.approvals_required,
            approvals: r
                .approvals
                .iter()
                .map(|a| ApprovalBody {
                    approver: a.by.clone(),
                    entity: a.entity.clone(),
                    at: rfc3339(a.at),
                    comment: a.comment.clone(),
                })
                .collect(),
            denial: r.denial.as_ref().map(VerdictBody::new),
            revoked: r.revoked.as_ref().map(VerdictBody::new),
            review: r.review.as_ref().map(VerdictBody::new),
            created_at: rfc3339(r.created_at),
            expires_at: rfc3339(r.expires_at),
            starts_at: r.starts_at.map(rfc3339),
            ends_at: r.ends_at.map(rfc3339),
        }
    }
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
) -> AppResult<Logged<AccessRequestBody>> {
    let new = app.new_request(parse_json(&body)?)?;
    let rules = app.request_rules(&new.collections);
    let now = now_unix();
    let (request, index) = change(app, who, move |app, who| {
        app.custody
            .create_request(new, &person(who), rules, now, &app.log_custody(Some(who)))
    })
    .await?;
    Ok(Logged::with_status(
        index,
        StatusCode::CREATED,
        AccessRequestBody::new(&request, now),
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
) -> AppResult<Json<AccessRequests>> {
    let status = match &query.status {
        None => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::InvalidQuery,
                format!(
                    "unknown status `{s}`: use pending, approved, denied, expired, revoked or ended"
                ),
            )
        })?),
    };
    let sees_all = sees_all_requests(&who);
    let now = now_unix();
    let requests = app
        .custody
        .requests()
        .iter()
        .filter(|r| r.kind == custody::RequestKind::Request)
        .filter(|r| sees_all || r.requester.id == who.principal.id)
        .filter(|r| status.is_none_or(|s| r.status(now) == s))
        .map(|r| AccessRequestBody::new(r, now))
        .collect();
    Ok(Json(AccessRequests { requests }))
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
) -> AppResult<Json<AccessRequestBody>> {
    let request = app.custody.request(&id)?;
    let sees_all = sees_all_requests(&who);
    if !sees_all && request.requester.id != who.principal.id {
        return Err(CustodyError::UnknownRequest(id).into());
    }
    Ok(Json(AccessRequestBody::new(&request, now_unix())))
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
    Comment(comment): Comment,
) -> AppResult<Logged<AccessRequestBody>> {
    app.custodian(&who, &[ROLE_APPROVER])?;
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
    Comment(comment): Comment,
) -> AppResult<Logged<AccessRequestBody>> {
    app.custodian(&who, &[ROLE_APPROVER])?;
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
    Comment(comment): Comment,
) -> AppResult<Logged<AccessRequestBody>> {
    app.custodian(&who, &[])?;
    let request = app.custody.request(&id)?;
    if !who.has_role(ROLE_APPROVER) && request.requester.id != who.principal.id {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::RoleRequired,
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
) -> AppResult<Logged<AccessRequestBody>> {
    app.custodian(&who, &[ROLE_BREAK_GLASS])?;
    let new = app.new_request(parse_json(&body)?)?;
    let window = app.config.custody.break_glass_window.as_secs() as i64;
    let now = now_unix();
    let (request, index) = change(app.clone(), who.clone(), move |app, who| {
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
        AccessRequestBody::new(&request, now),
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
) -> AppResult<Json<BreakGlassUses>> {
    let sees_all = sees_all_requests(&who);
    let now = now_unix();
    let uses = app
        .custody
        .requests()
        .iter()
        .filter(|r| r.kind == custody::RequestKind::BreakGlass)
        .filter(|r| sees_all || r.requester.id == who.principal.id)
        .filter(|r| !query.unreviewed || r.review.is_none())
        .map(|r| AccessRequestBody::new(r, now))
        .collect();
    Ok(Json(BreakGlassUses { uses }))
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
    Comment(comment): Comment,
) -> AppResult<Logged<AccessRequestBody>> {
    app.custodian(&who, &[ROLE_APPROVER])?;
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
) -> AppResult<Logged<AccessRequestBody>> {
    let now = now_unix();
    let (request, index) = change(app, who, move |app, who| {
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
    Ok(Logged::ok(index, AccessRequestBody::new(&request, now)))
}

/// An optional comment on a custodian's decision: an empty body is none, else a JSON
/// `CommentBody`.
struct Comment(String);

impl<S: Send + Sync> FromRequest<S> for Comment {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> AppResult<Self> {
        let RawBody(body) = RawBody::from_request(request, state).await?;
        if body.is_empty() {
            return Ok(Comment(String::new()));
        }
        Ok(Comment(parse_json::<CommentBody>(&body)?.comment))
    }
}
