//! Subjects and their records: register, look up, list, write, read, delete. Each handler
//! reads top to bottom as the request path: the caller (extractor) → check the input → find
//! the subject → decide and log (the pipeline) → touch the vault with the permit → respond
//! with the log index. Nothing reaches the vault before the decision allows it, and a request
//! that fails changes nothing.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use monitor::subject::HistoryPage;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authenticated;
use crate::http::error::{ApiError, AppResult, ErrorBody, ErrorCode};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, Caller};
use crate::http::openapi::{AccessHeaders, CollectionPath, KeyPath, RecordFields, SubjectPath};
use crate::http::response::Logged;
use crate::pipeline::{Permit, Scope};
use crate::routes::data;
use crate::state::AppState;
use policy::Action;
use vault::SubjectPlacement;

type Shared = State<Arc<AppState>>;

/// The routes of subjects and records.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        // Erasure shares the subject's path; it lives with the other data movements.
        .routes(routes!(put_subject, get_subject, data::erase_subject))
        .routes(routes!(list_records))
        .routes(routes!(subject_history))
        .routes(routes!(put_record, get_record, delete_record))
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
    Caller(who): Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<RegisterSubject>,
) -> AppResult<Logged<SubjectBody>> {
    vault::validate_id("subject id", &id)?;
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
    Ok(Logged::with_status(
        permit.index(),
        status,
        SubjectBody::from(placement),
    ))
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
    Caller(who): Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> AppResult<Logged<SubjectBody>> {
    let ask = app.ask(&who, Action::List, &headers)?;
    let subject = app.find_subject(&ask, &id, &[]).await?;
    let permit = app.decide(ask, Scope::Subject(&subject)).await?;
    Ok(Logged::ok(permit.index(), SubjectBody::from(subject)))
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
    Caller(who): Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> AppResult<Logged<RecordList>> {
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
    Ok(Logged::ok(permit.index(), list))
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
    params(SubjectPath, CollectionPath, KeyPath, AccessHeaders),
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
    Caller(who): Caller,
    headers: HeaderMap,
    ApiPath((id, collection, key)): ApiPath<(String, String, String)>,
    ApiJson(fields): ApiJson<Map<String, Value>>,
) -> AppResult<Logged<RecordWritten>> {
    vault::validate_id("record key", &key)?;
    app.governed.declared(&collection)?;
    if fields.is_empty() {
        return Err(ApiError::bad_request(
            ErrorCode::EmptyRecord,
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
    Ok(Logged::ok(permit.index(), written))
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
    params(SubjectPath, CollectionPath, KeyPath, AccessHeaders),
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
    Caller(who): Caller,
    headers: HeaderMap,
    ApiPath((id, collection, key)): ApiPath<(String, String, String)>,
) -> AppResult<Logged<RecordBody>> {
    // The permit keeps the fields of the allowed classes (and of a field-scoped grant). If
    // no class is allowed, the read is denied. Logged before reading.
    let (subject, permit) =
        decide_on_record(&app, &who, &headers, Action::Read, (&id, &collection, &key)).await?;
    let record = app
        .governed
        .get_record(&permit, &collection, &key)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                ErrorCode::RecordNotFound,
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
    Ok(Logged::ok(permit.index(), body))
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
    params(SubjectPath, CollectionPath, KeyPath, AccessHeaders),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "deleted", body = RecordDeleted),
        (status = 400, description = "`invalid_id`, `invalid_header`", body = ErrorBody),
        (status = 403, description = "`denied` by policy (with `policies`), `purpose_required`, `approval_required`, `suspended`", body = ErrorBody),
        (status = 404, description = "`subject_not_found`, `unknown_collection`, `record_not_found`", body = ErrorBody),
    ))]
async fn delete_record(
    State(app): Shared,
    Caller(who): Caller,
    headers: HeaderMap,
    ApiPath((id, collection, key)): ApiPath<(String, String, String)>,
) -> AppResult<Logged<RecordDeleted>> {
    let (subject, permit) = decide_on_record(
        &app,
        &who,
        &headers,
        Action::Delete,
        (&id, &collection, &key),
    )
    .await?;
    let deleted = app
        .governed
        .delete_record(&permit, &collection, &key)
        .await?;
    if !deleted {
        return Err(ApiError::not_found(
            ErrorCode::RecordNotFound,
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
    Ok(Logged::ok(permit.index(), body))
}

/// Decides `action` on every field class `collection` declares, for the subject `id`'s record
/// `key`: one decision per class, logged before the record is touched.
async fn decide_on_record(
    app: &AppState,
    who: &Authenticated,
    headers: &HeaderMap,
    action: Action,
    (id, collection, key): (&str, &str, &str),
) -> AppResult<(SubjectPlacement, Permit)> {
    vault::validate_id("record key", key)?;
    // An unknown collection is a 404 before the subject is looked up (the pipeline checks
    // it again when it resolves the collection's classes: a map look-up).
    app.governed.declared(collection)?;
    let ask = app.ask(who, action, headers)?;
    let subject = app.find_subject(&ask, id, &[collection]).await?;
    let scope = Scope::Declared {
        subject: &subject,
        collection,
    };
    let permit = app.decide(ask, scope).await?;
    Ok((subject, permit))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    /// Entries below this log index (the `next_before` of the previous page).
    #[param(minimum = 0)]
    before: Option<u64>,
    /// Entries in this page: 1 to 1000 (`history.page_size`, 100, by default; 400
    /// `invalid_query` outside).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Every log entry about the subject since its last erasure (their accesses, decided or
/// denied; exports, erasure, migration, algorithm runs; access requests and alerts naming
/// them), newest first, paged, each with what it shows (time, action, collections, field
/// classes, outcome, who by entity, location and roles, by id only with
/// `history.show_accessor_ids`, purpose, reason code, grant), its exact bytes (the log's,
/// which name who acted by id, as the public log does) and its inclusion proof against the
/// signed checkpoint the page carries; and the subject's log pseudonym, with which a copy of
/// the public log lists every entry about them (`sovereign subject verify --mirror`). Decided
/// (`history` on the subject) and logged like any access; under the default policies and
/// invariants only the subject's own token (`sub` the subject id, entity `public`, role
/// `data-subject`) may.
#[utoipa::path(get, path = "/v1/subjects/{id}/accesses", tag = "subjects",
    params(SubjectPath, HistoryQuery, AccessHeaders),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "one page of the subject's history", body = HistoryPage),
        (status = 400, description = "`invalid_id`, `invalid_query`, `invalid_header`", body = ErrorBody),
        (status = 403, description = "`denied` by policy (with `policies`), `suspended`; also for an id that names no subject, when a subject of some jurisdiction would be denied", body = ErrorBody),
        (status = 404, description = "`subject_not_found`", body = ErrorBody),
        (status = 503, description = "`history_unavailable`: no signed checkpoint yet, the index is being built, or `before` is beyond the served checkpoint (retry)", body = ErrorBody),
    ))]
async fn subject_history(
    State(app): Shared,
    Caller(who): Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> AppResult<Logged<HistoryPage>> {
    let limit = query.limit.unwrap_or(app.config.history.page_size);
    if !(1..=crate::config::MAX_HISTORY_PAGE).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidQuery,
            format!(
                "`limit` must be between 1 and {}",
                crate::config::MAX_HISTORY_PAGE
            ),
        ));
    }
    let ask = app.ask(&who, Action::History, &headers)?;
    let subject = app.find_subject(&ask, &id, &[]).await?;
    let permit = app.decide(ask, Scope::Subject(&subject)).await?;
    let page = app
        .history_page(&permit, &subject.id, query.before, limit)
        .await?;
    Ok(Logged::ok(permit.index(), page))
}
