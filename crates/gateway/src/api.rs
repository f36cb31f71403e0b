//! The HTTP API. Each data handler reads top to bottom as the request path:
//! authenticate → check the input → find the subject → decide (Cedar) → touch the vault →
//! respond. Nothing reaches the vault before the decision allows it, and a request that
//! fails changes nothing.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authenticated;
use crate::error::{ApiError, LOG_INDEX_HEADER};
use crate::pipeline::{self, Ask, Scope};
use crate::{AppState, analytics_api, custody_api, data_api, log_api};
use policy::Action;
use vault::{FieldClass, SubjectPlacement};

/// The header that states the purpose of an access.
pub const PURPOSE_HEADER: &str = "sovereign-purpose";
/// The header that gives a reason code for an access.
pub const REASON_HEADER: &str = "sovereign-reason-code";
const MAX_PURPOSE_BYTES: usize = 256;
const MAX_REASON_BYTES: usize = 64;

type AppResult<T> = Result<T, ApiError>;
type Shared = State<Arc<AppState>>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sovereign",
        description = "Data-sovereignty gateway: residency-pinned vault with Cedar-decided access. Errors are JSON `ErrorBody` objects; the answers many routes share (401, 403 `unknown_entity`, 400 `invalid_path`, 413, 503) are added to every operation they apply to."
    ),
    modifiers(&BearerAuth),
    paths(crate::log_api::tile),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The answers that whole kinds of operations share, added to each operation of the kind
/// (once every route is registered) so that the annotations list only what is particular
/// to a route. Where an operation documents the status already, its description gains the
/// shared one.
struct CommonResponses;

impl CommonResponses {
    /// Every operation: the request timeout, and the log on routes that write it.
    const UNAVAILABLE: &str = "`log_unavailable`: the transparency log cannot be written, so nothing was served or changed (routes that log); `custody_unverified`: the custody state failed its checks (custodian routes); `timeout`: the request took longer than `server.request_timeout_seconds`";
    /// Operations that need a bearer token.
    const UNAUTHENTICATED: &str = "`unauthenticated`: no valid bearer token; `reason` says why (`missing`, `malformed`, `expired`, `not_yet_valid`, `unknown_issuer`, `unknown_key`, `unsupported_algorithm`, `bad_signature`, `invalid_claims`)";
    const UNKNOWN_ENTITY: &str =
        "`unknown_entity`: the token's entity is not declared in the configuration";
    /// Operations with path parameters.
    const INVALID_PATH: &str = "`invalid_path`: a path parameter is not UTF-8 once percent-decoded";
    /// Operations with a request body.
    const BODY_TOO_LARGE: &str =
        "`body_too_large`: the body is larger than `server.body_limit_bytes` (1 MiB by default)";
}

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
                let has_path = operation
                    .parameters
                    .iter()
                    .flatten()
                    .any(|p| p.parameter_in == ParameterIn::Path);
                let has_body = operation.request_body.is_some();
                let responses = &mut operation.responses.responses;
                add_error(responses, 503, Self::UNAVAILABLE);
                if secured {
                    add_error(responses, 401, Self::UNAUTHENTICATED);
                    add_error(responses, 403, Self::UNKNOWN_ENTITY);
                }
                if has_path {
                    add_error(responses, 400, Self::INVALID_PATH);
                }
                if has_body {
                    add_error(responses, 413, Self::BODY_TOO_LARGE);
                }
            }
        }
    }
}

/// Documents `status` with an [`ErrorBody`], or adds `description` to the one documented.
fn add_error(
    responses: &mut std::collections::BTreeMap<
        String,
        utoipa::openapi::RefOr<utoipa::openapi::Response>,
    >,
    status: u16,
    description: &str,
) {
    use utoipa::openapi::{RefOr, ResponseBuilder, content::ContentBuilder};
    match responses.get_mut(&status.to_string()) {
        Some(RefOr::T(response)) => {
            if !response.description.contains(description) {
                response.description = format!("{}. Also {description}", response.description);
            }
            if response.content.is_empty() {
                response.content.insert(
                    "application/json".into(),
                    ContentBuilder::new()
                        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                            "ErrorBody",
                        ))))
                        .build(),
                );
            }
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            let response = ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                            "ErrorBody",
                        ))))
                        .build(),
                )
                .build();
            responses.insert(status.to_string(), RefOr::T(response));
        }
    }
}

/// Every route, registered together with its OpenAPI description so the two cannot drift.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    let mut router = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(openapi_json))
        // Erasure shares the subject's path; it lives with the other data movements.
        .routes(routes!(put_subject, get_subject, data_api::erase_subject))
        .routes(routes!(list_records))
        .routes(routes!(put_record, get_record, delete_record))
        .routes(routes!(log_api::checkpoint))
        .routes(routes!(log_api::key))
        .routes(routes!(log_api::inclusion))
        .routes(routes!(log_api::consistency))
        // Tile paths have several segments, which the documented `{path}` cannot route.
        .route("/log/tile/{*path}", axum::routing::get(log_api::tile))
        .merge(custody_api::routes())
        .merge(data_api::routes())
        .merge(analytics_api::routes());
    CommonResponses.modify(router.get_openapi_mut());
    router
}

/// The error body every failing route answers with. Besides `error` and `message`, some
/// errors carry members of their own, listed here.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// A stable code, such as `denied`, `undeclared_field` or `unauthenticated`.
    error: String,
    /// What went wrong, for people.
    message: String,
    /// On a denial (403 `denied`, `purpose_required`, `approval_required`): the ids of the
    /// policies that decided it.
    #[serde(skip_serializing_if = "Option::is_none")]
    policies: Option<Vec<String>>,
    /// On 401 `unauthenticated`: why the token was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<UnauthenticatedReason>)]
    reason: Option<String>,
    /// On 400 `undeclared_field`: the field the collection does not declare.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    /// On 404 `unknown_collection`: the collection.
    #[serde(skip_serializing_if = "Option::is_none")]
    collection: Option<String>,
    /// On 409 `residency_violation`: the site that holds the subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    site: Option<String>,
    /// On 422 `policy_not_proven`: the proof report, counterexamples included.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    proof: Option<Value>,
}

/// Why a bearer token was refused (`ErrorBody.reason` of a 401).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // documentation only: `auth.rs` writes these as strings
pub(crate) enum UnauthenticatedReason {
    Missing,
    Malformed,
    Expired,
    NotYetValid,
    UnknownIssuer,
    UnknownKey,
    UnsupportedAlgorithm,
    BadSignature,
    InvalidClaims,
}

/// What subject ids and record keys look like (`vault::validate_id`), for schemas built in
/// code; the `#[param(...)]` attributes below spell it out, as they take only literals.
pub(crate) const ID_PATTERN: &str = r"^[A-Za-z0-9_:-][A-Za-z0-9._:-]{0,127}$";

/// A record as written: field name → value, at least one field (400 `empty_record`), each
/// declared by the collection (400 `undeclared_field`).
pub(crate) struct RecordFields;

impl utoipa::PartialSchema for RecordFields {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .description(Some(
                "field name → value, at least one; every field must be declared in the collection",
            ))
            .min_properties(Some(1))
            .examples([serde_json::json!({"email": "ada@example.com", "display_name": "Ada"})])
            .into()
    }
}

impl ToSchema for RecordFields {}

/// The subject id of a subject route.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // documentation only: the handlers take the path themselves
pub(crate) struct SubjectPath {
    /// Subject id: 1-128 of `A-Z a-z 0-9 . _ : -`, not starting with `.`.
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = r"^[A-Za-z0-9_:-][A-Za-z0-9._:-]{0,127}$",
        example = "u-1001"
    )]
    id: String,
}

/// The path of a record: subject, collection and key.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // documentation only: the handlers take the path themselves
pub(crate) struct RecordPath {
    /// Subject id: 1-128 of `A-Z a-z 0-9 . _ : -`, not starting with `.`.
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = r"^[A-Za-z0-9_:-][A-Za-z0-9._:-]{0,127}$",
        example = "u-1001"
    )]
    id: String,
    /// A configured collection (404 `unknown_collection` otherwise).
    #[param(
        min_length = 1,
        max_length = 64,
        pattern = r"^[a-z][a-z0-9_-]{0,63}$",
        example = "profile"
    )]
    collection: String,
    /// Record key: 1-128 of `A-Z a-z 0-9 . _ : -`, not starting with `.`.
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = r"^[A-Za-z0-9_:-][A-Za-z0-9._:-]{0,127}$",
        example = "main"
    )]
    key: String,
}

/// The collection of a collection-wide route.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // documentation only: the handlers take the path themselves
pub(crate) struct CollectionPath {
    /// A configured collection (404 `unknown_collection` otherwise).
    #[param(
        min_length = 1,
        max_length = 64,
        pattern = r"^[a-z][a-z0-9_-]{0,63}$",
        example = "profile"
    )]
    collection: String,
}

/// The headers a data access may carry: claims about the request that the policy reads
/// (`context.purpose`, `context.reason_code`). Malformed ones are refused with 400
/// `invalid_header`.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // documentation only: `access_context` reads the headers
pub(crate) struct AccessHeaders {
    /// Why this access is made: at most 256 bytes of printable ASCII (and tabs). The default
    /// policies require one for protected fields (403 `purpose_required` without).
    #[param(
        rename = "Sovereign-Purpose",
        required = false,
        max_length = 256,
        pattern = r"^[\t -~]*$",
        example = "support ticket 42"
    )]
    purpose: String,
    /// A reason code: at most 64 of lower-case letters, digits, `_` and `-`.
    #[param(
        rename = "Sovereign-Reason-Code",
        required = false,
        max_length = 64,
        pattern = r"^[a-z0-9_-]*$",
        example = "customer-initiated-support"
    )]
    reason_code: String,
}

#[derive(Serialize, ToSchema)]
struct Health {
    status: &'static str,
}

/// Answers 200 once the gateway is ready (configuration, policies and stores loaded).
#[utoipa::path(get, path = "/healthz", tag = "service",
    responses((status = 200, description = "ready", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// This API's OpenAPI 3.1 description, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "service",
    responses((status = 200, description = "the OpenAPI document", body = Object)))]
async fn openapi_json(State(app): Shared) -> Json<Value> {
    Json(app.openapi.clone())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RegisterSubject {
    /// The subject's home jurisdiction (ISO 3166-1 alpha-2); its residency rule decides the
    /// site. 400 `unknown_jurisdiction` if it is not configured, 422 `no_residency_rule` if
    /// it has no rule.
    #[schema(pattern = "^[A-Z]{2}$", example = "US")]
    jurisdiction: String,
}

#[derive(Serialize, ToSchema)]
struct SubjectBody {
    id: String,
    jurisdiction: String,
    /// The site that holds the subject's records.
    site: String,
    /// Whether that site is allowed by the subject's residency rule (false for legacy copies).
    residency_ok: bool,
}

impl From<SubjectPlacement> for SubjectBody {
    fn from(p: SubjectPlacement) -> Self {
        SubjectBody {
            id: p.id,
            jurisdiction: p.jurisdiction,
            site: p.site,
            residency_ok: p.allowed,
        }
    }
}

/// Registers a subject with its home jurisdiction, at the first site its residency rule allows.
/// Idempotent: registering again with the same jurisdiction answers 200.
#[utoipa::path(put, path = "/v1/subjects/{id}", tag = "subjects",
    params(SubjectPath, AccessHeaders),
    request_body = RegisterSubject,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "registered", body = SubjectBody),
        (status = 200, description = "already registered with this jurisdiction", body = SubjectBody),
        (status = 400, description = "`invalid_id`, `invalid_json`, `invalid_body`, `unknown_jurisdiction`, `invalid_header`", body = ErrorBody),
        (status = 403, description = "`denied` by policy (with `policies`), `purpose_required`, `suspended` by the kill switch", body = ErrorBody),
        (status = 409, description = "`subject_conflict`: registered with another jurisdiction", body = ErrorBody),
        (status = 422, description = "`no_residency_rule`: the jurisdiction has no residency rule", body = ErrorBody),
    ))]
async fn put_subject(
    State(app): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<Response> {
    let who = app.auth.authenticate(&headers, peer.ip())?;
    let id = path_param(path)?;
    vault::validate_id("subject id", &id)?;
    let request: RegisterSubject = parse_json(body)?;
    let ask = app.ask(&who, Action::Register, &headers)?;

    // Registering an id that names a subject already is decided on that subject as it is
    // held, so that only someone allowed to see it learns that it exists (and, from the 409
    // of another jurisdiction, where).
    let permit = match app.governed.placement(&id).await? {
        Some(existing) => app.decide(ask, Scope::Subject(&existing)).await?,
        None => {
            let site = app.governed.placement_site(&request.jurisdiction)?;
            let scope = Scope::NewSubject {
                id: &id,
                jurisdiction: &request.jurisdiction,
                site: &site,
            };
            app.decide(ask, scope).await?
        }
    };
    let (placement, created) = app
        .governed
        .register(&permit, &id, &request.jurisdiction)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(logged(permit.index(), status, SubjectBody::from(placement)))
}

/// A subject's jurisdiction and the site holding it.
#[utoipa::path(get, path = "/v1/subjects/{id}", tag = "subjects",
    params(SubjectPath, AccessHeaders),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the subject", body = SubjectBody),
        (status = 400, description = "`invalid_id`, `invalid_header`", body = ErrorBody),
        (status = 403, description = "`denied` by policy (with `policies`), `purpose_required`, `suspended`; also for an id that names no subject, when a subject of some jurisdiction would be denied", body = ErrorBody),
        (status = 404, description = "`subject_not_found`", body = ErrorBody),
    ))]
async fn get_subject(
    State(app): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> AppResult<Response> {
    let who = app.auth.authenticate(&headers, peer.ip())?;
    let id = path_param(path)?;
    let ask = app.ask(&who, Action::List, &headers)?;
    let subject = app.find_subject(&ask, &id, &[]).await?;
    let permit = app.decide(ask, Scope::Subject(&subject)).await?;
    Ok(logged(
        permit.index(),
        StatusCode::OK,
        SubjectBody::from(subject),
    ))
}

#[derive(Serialize, ToSchema)]
struct RecordRef {
    collection: String,
    key: String,
}

#[derive(Serialize, ToSchema)]
struct RecordList {
    subject: String,
    site: String,
    records: Vec<RecordRef>,
}

/// The collections and keys of a subject's records (no field values).
#[utoipa::path(get, path = "/v1/subjects/{id}/records", tag = "records",
    params(SubjectPath, AccessHeaders),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the subject's records", body = RecordList),
        (status = 400, description = "`invalid_id`, `invalid_header`", body = ErrorBody),
        (status = 403, description = "`denied` by policy (with `policies`), `purpose_required`, `suspended`", body = ErrorBody),
        (status = 404, description = "`subject_not_found`", body = ErrorBody),
    ))]
async fn list_records(
    State(app): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> AppResult<Response> {
    let who = app.auth.authenticate(&headers, peer.ip())?;
    let id = path_param(path)?;
    let ask = app.ask(&who, Action::List, &headers)?;
    let subject = app.find_subject(&ask, &id, &[]).await?;
    let permit = app.decide(ask, Scope::Subject(&subject)).await?;
    let keys = app.governed.list_records(&permit).await?;
    let list = RecordList {
        subject: subject.id,
        site: subject.site,
        records: keys
            .into_iter()
            .map(|k| RecordRef {
                collection: k.collection,
                key: k.key,
            })
            .collect(),
    };
    Ok(logged(permit.index(), StatusCode::OK, list))
}

#[derive(Serialize, ToSchema)]
struct RecordWritten {
    subject: String,
    collection: String,
    key: String,
    /// The site that now holds the record.
    site: String,
}

/// Writes (creates or replaces) a record: a JSON object of the collection's declared fields.
#[utoipa::path(put, path = "/v1/subjects/{id}/records/{collection}/{key}", tag = "records",
    params(RecordPath, AccessHeaders),
    request_body(content = RecordFields, description = "the record's fields"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "written", body = RecordWritten),
        (status = 400, description = "`invalid_id`, `invalid_json`, `invalid_body`, `empty_record`, `undeclared_field` (names `field`), `invalid_header`", body = ErrorBody),
        (status = 403, description = "`denied` by policy (with `policies`), `purpose_required`, `approval_required`, `suspended`, `key_policy` (the custodian's key policy does not allow the unwrap)", body = ErrorBody),
        (status = 404, description = "`subject_not_found`, `unknown_collection`", body = ErrorBody),
        (status = 409, description = "`residency_violation`: the subject is held at a site its residency rule does not allow", body = ErrorBody),
    ))]
async fn put_record(
    State(app): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Result<Path<(String, String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<Response> {
    let who = app.auth.authenticate(&headers, peer.ip())?;
    let (id, collection, key) = path_param(path)?;
    vault::validate_id("record key", &key)?;
    app.require_collection(&collection)?;
    let fields: Map<String, Value> = parse_json(body)?;
    if fields.is_empty() {
        return Err(ApiError::bad_request(
            "empty_record",
            "a record must hold at least one field",
        ));
    }
    let classes = app.governed.validate_fields(&collection, &fields)?;
    let ask = app.ask(&who, Action::Write, &headers)?;
    let subject = app.find_subject(&ask, &id, &[&collection]).await?;

    // A write needs every class it touches allowed. It is logged before the store is
    // touched: if the log cannot be written, nothing is changed.
    let names: Vec<String> = fields.keys().cloned().collect();
    let scope = Scope::Collection {
        subject: &subject,
        collection: &collection,
        fields: &names,
        classes,
    };
    let permit = app.decide(ask, scope).await?;
    let site = app
        .governed
        .put_record(&permit, &collection, &key, fields)
        .await?;
    let written = RecordWritten {
        subject: subject.id,
        collection,
        key,
        site,
    };
    Ok(logged(permit.index(), StatusCode::OK, written))
}

#[derive(Serialize, ToSchema)]
struct RecordBody {
    subject: String,
    collection: String,
    key: String,
    site: String,
    /// The fields this principal may see.
    #[schema(value_type = Object)]
    fields: Map<String, Value>,
    /// Names of fields the record holds that the decision did not allow (values withheld).
    withheld: Vec<String>,
}

/// Reads a record. The response holds only the fields whose class the decision allows.
#[utoipa::path(get, path = "/v1/subjects/{id}/records/{collection}/{key}", tag = "records",
    params(RecordPath, AccessHeaders),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the record, reduced to the allowed fields", body = RecordBody),
        (status = 400, description = "`invalid_id`, `invalid_header`", body = ErrorBody),
        (status = 403, description = "`denied` by policy for every field class (with `policies`), `purpose_required`, `approval_required`, `suspended`, `key_policy`", body = ErrorBody),
        (status = 404, description = "`subject_not_found`, `unknown_collection`, `record_not_found`", body = ErrorBody),
        (status = 410, description = "`key_destroyed`: the subject's data key at this site was destroyed", body = ErrorBody),
    ))]
async fn get_record(
    State(app): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Result<Path<(String, String, String)>, PathRejection>,
) -> AppResult<Response> {
    let who = app.auth.authenticate(&headers, peer.ip())?;
    let (id, collection, key) = path_param(path)?;
    vault::validate_id("record key", &key)?;
    let declared = app.require_collection(&collection)?;
    let ask = app.ask(&who, Action::Read, &headers)?;
    let subject = app.find_subject(&ask, &id, &[&collection]).await?;

    // One decision per field class the collection declares; the permit keeps the fields of
    // the allowed classes (and of a field-scoped grant). If no class is allowed, the read is
    // denied. Logged before reading.
    let names: Vec<String> = declared.keys().cloned().collect();
    let scope = Scope::Collection {
        subject: &subject,
        collection: &collection,
        fields: &names,
        classes: pipeline::declared_classes(&declared),
    };
    let permit = app.decide(ask, scope).await?;
    let record = app
        .governed
        .get_record(&permit, &collection, &key)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                "record_not_found",
                format!("subject `{id}` has no `{collection}` record `{key}`"),
            )
            .logged(permit.index())
        })?;
    let body = RecordBody {
        subject: subject.id,
        collection,
        key,
        site: record.site,
        fields: record.fields,
        withheld: record.withheld,
    };
    Ok(logged(permit.index(), StatusCode::OK, body))
}

#[derive(Serialize, ToSchema)]
struct RecordDeleted {
    subject: String,
    collection: String,
    key: String,
    deleted: bool,
}

/// Deletes a record. Needs a delete decision for every field class of the collection.
#[utoipa::path(delete, path = "/v1/subjects/{id}/records/{collection}/{key}", tag = "records",
    params(RecordPath, AccessHeaders),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "deleted", body = RecordDeleted),
        (status = 400, description = "`invalid_id`, `invalid_header`", body = ErrorBody),
        (status = 403, description = "`denied` by policy (with `policies`), `purpose_required`, `approval_required`, `suspended`", body = ErrorBody),
        (status = 404, description = "`subject_not_found`, `unknown_collection`, `record_not_found`", body = ErrorBody),
    ))]
async fn delete_record(
    State(app): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Result<Path<(String, String, String)>, PathRejection>,
) -> AppResult<Response> {
    let who = app.auth.authenticate(&headers, peer.ip())?;
    let (id, collection, key) = path_param(path)?;
    vault::validate_id("record key", &key)?;
    let declared = app.require_collection(&collection)?;
    let ask = app.ask(&who, Action::Delete, &headers)?;
    let subject = app.find_subject(&ask, &id, &[&collection]).await?;

    let names: Vec<String> = declared.keys().cloned().collect();
    let scope = Scope::Collection {
        subject: &subject,
        collection: &collection,
        fields: &names,
        classes: pipeline::declared_classes(&declared),
    };
    let permit = app.decide(ask, scope).await?;
    let deleted = app
        .governed
        .delete_record(&permit, &collection, &key)
        .await?;
    if !deleted {
        return Err(ApiError::not_found(
            "record_not_found",
            format!("subject `{id}` has no `{collection}` record `{key}`"),
        )
        .logged(permit.index()));
    }
    let body = RecordDeleted {
        subject: subject.id,
        collection,
        key,
        deleted,
    };
    Ok(logged(permit.index(), StatusCode::OK, body))
}

impl AppState {
    fn require_collection(
        &self,
        name: &str,
    ) -> AppResult<std::collections::BTreeMap<String, FieldClass>> {
        self.governed
            .collection(name)
            .map(|c| c.fields.clone())
            .ok_or_else(|| vault::VaultError::UnknownCollection(name.to_string()).into())
    }

    /// What a request asks: its principal, action and the policy context from its headers.
    pub(crate) fn ask<'a>(
        &self,
        who: &'a Authenticated,
        action: Action,
        headers: &HeaderMap,
    ) -> AppResult<Ask<'a>> {
        Ok(Ask {
            who,
            action,
            context: access_context(headers, who)?,
        })
    }
}

/// The policy context: the stated purpose and reason code (headers a client may set, since
/// they are claims about the request, not about who is asking), the zone and the time.
pub(crate) fn access_context(
    headers: &HeaderMap,
    who: &Authenticated,
) -> AppResult<policy::Context> {
    let text_header = |name: &'static str, max: usize| -> AppResult<String> {
        let Some(value) = headers.get(name) else {
            return Ok(String::new());
        };
        let text = value.to_str().map_err(|_| {
            ApiError::bad_request(
                "invalid_header",
                format!("`{name}` must be printable ASCII"),
            )
        })?;
        let text = text.trim();
        if text.len() > max {
            return Err(ApiError::bad_request(
                "invalid_header",
                format!("`{name}` is longer than {max} bytes"),
            ));
        }
        Ok(text.to_string())
    };
    let purpose = text_header(PURPOSE_HEADER, MAX_PURPOSE_BYTES)?;
    let reason_code = text_header(REASON_HEADER, MAX_REASON_BYTES)?;
    if !reason_code
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(ApiError::bad_request(
            "invalid_header",
            "`Sovereign-Reason-Code` must be lower-case letters, digits, `_` and `-`",
        ));
    }
    Ok(policy::Context {
        purpose,
        reason_code,
        network_zone: who.network_zone.clone(),
        time: crate::auth::now_unix(),
        grant: String::new(),
        own_data: false,
    })
}

pub(crate) fn path_param<T>(path: Result<Path<T>, PathRejection>) -> AppResult<T> {
    path.map(|Path(v)| v)
        .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))
}

/// A request body, or the error for one that could not be read: 413 `body_too_large` over
/// the limit.
pub(crate) fn body_bytes(body: Result<Bytes, BytesRejection>) -> AppResult<Bytes> {
    body.map_err(|e| {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "body_too_large",
                "the request body is larger than the limit",
            )
        } else {
            ApiError::new(status, "invalid_body", e.body_text())
        }
    })
}

/// Parses a JSON body strictly, with errors that name what is wrong.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> AppResult<T> {
    let bytes = body_bytes(body)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let code = if e.is_data() {
            "invalid_body"
        } else {
            "invalid_json"
        };
        ApiError::bad_request(code, format!("request body: {e}"))
    })
}

/// A JSON response to a logged request, carrying its entry's index.
pub(crate) fn logged(index: u64, status: StatusCode, body: impl Serialize) -> Response {
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(LOG_INDEX_HEADER, HeaderValue::from(index));
    response
}

/// Runs store work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> AppResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)
}
