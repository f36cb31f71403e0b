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
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::analytics::Observation;
use crate::auth::Authenticated;
use crate::entry::{self, AccessTarget};
use crate::error::{ApiError, LOG_INDEX_HEADER};
use crate::{AppState, analytics_api, custody_api, data_api, log_api};
use policy::{AccessRequest, Action, Decision, Resource};
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
        description = "Data-sovereignty gateway: residency-pinned vault with Cedar-decided access."
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

/// Every route, registered together with its OpenAPI description so the two cannot drift.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
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
        .merge(analytics_api::routes())
}

/// The error body every failing route answers with.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// A stable code, such as `denied`, `undeclared_field` or `unauthenticated`.
    error: String,
    /// What went wrong, for people.
    message: String,
    /// On a denial (403): the ids of the policies that decided it.
    #[serde(skip_serializing_if = "Option::is_none")]
    policies: Option<Vec<String>>,
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
    responses((status = 200, description = "the OpenAPI document")))]
async fn openapi_json(State(app): Shared) -> Json<Value> {
    Json(app.openapi.clone())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RegisterSubject {
    /// The subject's home jurisdiction (ISO 3166-1 alpha-2); its residency rule decides the site.
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
    params(("id" = String, Path, description = "subject id: 1-128 of A-Z a-z 0-9 . _ : -")),
    request_body = RegisterSubject,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "registered", body = SubjectBody),
        (status = 200, description = "already registered with this jurisdiction", body = SubjectBody),
        (status = 400, description = "bad id, body or jurisdiction", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "denied by policy", body = ErrorBody),
        (status = 409, description = "registered with another jurisdiction", body = ErrorBody),
        (status = 422, description = "no residency rule for the jurisdiction", body = ErrorBody),
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
    let context = access_context(&headers, &who)?;

    let site = app.vault.placement_site(&request.jurisdiction)?.to_string();
    let site_jurisdiction = app
        .vault
        .site_jurisdiction(&site)
        .unwrap_or_default()
        .to_string();
    let suspended = app.custody.is_suspended(&request.jurisdiction);
    let resource = Resource::Subject {
        subject_jurisdiction: request.jurisdiction.clone(),
        site: site.clone(),
        site_jurisdiction: site_jurisdiction.clone(),
        suspended,
    };
    let target = AccessTarget {
        subject_pseudonym: app.pseudonyms.pseudonym(&id),
        subject_jurisdiction: &request.jurisdiction,
        site: &site,
        site_jurisdiction: &site_jurisdiction,
        collection: None,
        approval_required: false,
        suspended,
        fields: &[],
    };
    let (index, _) = app
        .decide_and_log(
            &who,
            Action::Register,
            &id,
            &target,
            &[(None, resource)],
            context,
            true,
        )
        .await?;

    let vault = app.vault.clone();
    let (placement, created) = blocking(move || vault.register_subject(&id, &request.jurisdiction))
        .await?
        .map_err(|e| ApiError::from(e).logged(index))?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(logged(index, status, SubjectBody::from(placement)))
}

/// A subject's jurisdiction and the site holding it.
#[utoipa::path(get, path = "/v1/subjects/{id}", tag = "subjects",
    params(("id" = String, Path, description = "subject id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the subject", body = SubjectBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "denied by policy", body = ErrorBody),
        (status = 404, description = "no such subject", body = ErrorBody),
    ))]
async fn get_subject(
    State(app): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> AppResult<Response> {
    let who = app.auth.authenticate(&headers, peer.ip())?;
    let id = path_param(path)?;
    let context = access_context(&headers, &who)?;
    let subject = app.find_subject(&id).await?;
    let (index, _) = app
        .log_subject_access(&who, Action::List, &subject, context)
        .await?;
    Ok(logged(index, StatusCode::OK, SubjectBody::from(subject)))
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
    params(("id" = String, Path, description = "subject id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the subject's records", body = RecordList),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "denied by policy", body = ErrorBody),
        (status = 404, description = "no such subject", body = ErrorBody),
    ))]
async fn list_records(
    State(app): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> AppResult<Response> {
    let who = app.auth.authenticate(&headers, peer.ip())?;
    let id = path_param(path)?;
    let context = access_context(&headers, &who)?;
    let subject = app.find_subject(&id).await?;
    let (index, _) = app
        .log_subject_access(&who, Action::List, &subject, context)
        .await?;

    let vault = app.vault.clone();
    let subject_id = subject.id.clone();
    let keys = blocking(move || vault.list_records(&subject_id))
        .await?
        .map_err(|e| ApiError::from(e).logged(index))?;
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
    Ok(logged(index, StatusCode::OK, list))
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
    params(
        ("id" = String, Path, description = "subject id"),
        ("collection" = String, Path, description = "a configured collection"),
        ("key" = String, Path, description = "record key: 1-128 of A-Z a-z 0-9 . _ : -"),
        ("Sovereign-Purpose" = Option<String>, Header, description = "why this access is made; required for protected fields by the default policies"),
        ("Sovereign-Reason-Code" = Option<String>, Header, description = "a reason code"),
    ),
    request_body(content = Object, description = "field name → value; every field must be declared in the collection"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "written", body = RecordWritten),
        (status = 400, description = "malformed JSON, undeclared field, bad id or key", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "denied by policy", body = ErrorBody),
        (status = 404, description = "no such subject or collection", body = ErrorBody),
        (status = 409, description = "the subject is held at a site its residency rule does not allow", body = ErrorBody),
        (status = 413, description = "body too large", body = ErrorBody),
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
    let classes = app.vault.validate_fields(&collection, &fields)?;
    let context = access_context(&headers, &who)?;
    let subject = app.find_subject(&id).await?;

    // A write needs every class it touches allowed. It is logged before the store is
    // touched: if the log cannot be written, nothing is changed.
    let names: Vec<String> = fields.keys().cloned().collect();
    let target = app.data_target(&subject, &collection, &names);
    let resources: Vec<(Option<FieldClass>, Resource)> = classes
        .iter()
        .map(|class| (Some(*class), data_resource(&target, &collection, *class)))
        .collect();
    let (index, _) = app
        .decide_and_log(
            &who,
            Action::Write,
            &subject.id,
            &target,
            &resources,
            context,
            true,
        )
        .await?;

    let vault = app.vault.clone();
    let (subject_id, coll, k) = (subject.id.clone(), collection.clone(), key.clone());
    let site = blocking(move || vault.put_record(&subject_id, &coll, &k, fields))
        .await?
        .map_err(|e| ApiError::from(e).logged(index))?;
    let written = RecordWritten {
        subject: subject.id,
        collection,
        key,
        site,
    };
    Ok(logged(index, StatusCode::OK, written))
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
    params(
        ("id" = String, Path, description = "subject id"),
        ("collection" = String, Path, description = "a configured collection"),
        ("key" = String, Path, description = "record key"),
        ("Sovereign-Purpose" = Option<String>, Header, description = "why this access is made"),
        ("Sovereign-Reason-Code" = Option<String>, Header, description = "a reason code"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the record, reduced to the allowed fields", body = RecordBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "denied by policy", body = ErrorBody),
        (status = 404, description = "no such subject, collection or record", body = ErrorBody),
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
    let context = access_context(&headers, &who)?;
    let subject = app.find_subject(&id).await?;

    // One decision per field class the collection declares; the response keeps the fields of
    // the allowed classes. If no class is allowed, the read is denied. Logged before reading.
    let names: Vec<String> = declared.keys().cloned().collect();
    let target = app.data_target(&subject, &collection, &names);
    let resources = declared_resources(&target, &collection, &declared);
    let (index, decisions) = app
        .decide_and_log(
            &who,
            Action::Read,
            &subject.id,
            &target,
            &resources,
            context,
            false,
        )
        .await?;
    let allowed: Vec<FieldClass> = resources
        .iter()
        .zip(&decisions.decisions)
        .filter(|(_, d)| d.allowed)
        .filter_map(|((class, _), _)| *class)
        .collect();
    // A grant scoped to some fields lets only those protected fields through.
    let granted_field = |name: &str, class: FieldClass| {
        class != FieldClass::Protected
            || !target.approval_required
            || decisions
                .grant
                .as_ref()
                .is_none_or(|g| g.fields.is_empty() || g.fields.iter().any(|f| f == name))
    };

    // The custodian's key is unwrapped only when a protected field will be served.
    let protected_allowed = allowed.contains(&FieldClass::Protected);
    let vault = app.vault.clone();
    let (subject_id, coll, k) = (subject.id.clone(), collection.clone(), key.clone());
    let record = blocking(move || {
        if protected_allowed {
            vault.get_record(&subject_id, &coll, &k, vault::UnwrapReason::Access)
        } else {
            vault.get_record_interoperable(&subject_id, &coll, &k)
        }
    })
    .await?
    .map_err(|e| ApiError::from(e).logged(index))?
    .ok_or_else(|| {
        ApiError::not_found(
            "record_not_found",
            format!("subject `{id}` has no `{collection}` record `{key}`"),
        )
        .logged(index)
    })?;
    let mut fields = Map::new();
    let mut withheld = record.withheld;
    for (name, value) in record.fields {
        match declared.get(&name) {
            Some(class) if allowed.contains(class) && granted_field(&name, *class) => {
                fields.insert(name, value);
            }
            _ => withheld.push(name),
        }
    }
    let body = RecordBody {
        subject: subject.id,
        collection,
        key,
        site: record.site,
        fields,
        withheld,
    };
    Ok(logged(index, StatusCode::OK, body))
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
    params(
        ("id" = String, Path, description = "subject id"),
        ("collection" = String, Path, description = "a configured collection"),
        ("key" = String, Path, description = "record key"),
        ("Sovereign-Purpose" = Option<String>, Header, description = "why this access is made"),
        ("Sovereign-Reason-Code" = Option<String>, Header, description = "a reason code"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "deleted", body = RecordDeleted),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "denied by policy", body = ErrorBody),
        (status = 404, description = "no such subject, collection or record", body = ErrorBody),
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
    let context = access_context(&headers, &who)?;
    let subject = app.find_subject(&id).await?;

    let names: Vec<String> = declared.keys().cloned().collect();
    let target = app.data_target(&subject, &collection, &names);
    let resources = declared_resources(&target, &collection, &declared);
    let (index, _) = app
        .decide_and_log(
            &who,
            Action::Delete,
            &subject.id,
            &target,
            &resources,
            context,
            true,
        )
        .await?;

    let vault = app.vault.clone();
    let (subject_id, coll, k) = (subject.id.clone(), collection.clone(), key.clone());
    let deleted = blocking(move || vault.delete_record(&subject_id, &coll, &k))
        .await?
        .map_err(|e| ApiError::from(e).logged(index))?;
    if !deleted {
        return Err(ApiError::not_found(
            "record_not_found",
            format!("subject `{id}` has no `{collection}` record `{key}`"),
        )
        .logged(index));
    }
    let body = RecordDeleted {
        subject: subject.id,
        collection,
        key,
        deleted,
    };
    Ok(logged(index, StatusCode::OK, body))
}

/// The decisions on one access, and the custodian grant Cedar saw, if any.
pub(crate) struct Decided {
    pub decisions: Vec<Decision>,
    pub grant: Option<custody::AccessRequest>,
}

impl AppState {
    fn require_collection(
        &self,
        name: &str,
    ) -> AppResult<std::collections::BTreeMap<String, FieldClass>> {
        self.vault
            .collection(name)
            .map(|c| c.fields.clone())
            .ok_or_else(|| vault::VaultError::UnknownCollection(name.to_string()).into())
    }

    pub(crate) async fn find_subject(&self, id: &str) -> AppResult<SubjectPlacement> {
        vault::validate_id("subject id", id)?;
        let vault = self.vault.clone();
        let owned = id.to_string();
        blocking(move || vault.find_subject(&owned))
            .await??
            .ok_or_else(|| vault::VaultError::SubjectNotFound(id.to_string()).into())
    }

    fn decide_each(
        &self,
        engine: &policy::PolicyEngine,
        who: &Authenticated,
        action: Action,
        resources: &[Resource],
        context: &policy::Context,
    ) -> Vec<Decision> {
        resources
            .iter()
            .map(|resource| {
                engine.decide(&AccessRequest {
                    principal: who.principal.clone(),
                    action,
                    resource: resource.clone(),
                    context: context.clone(),
                })
            })
            .collect()
    }

    /// The active custodian grant that covers this access, if any. A grant scoped to some
    /// fields covers a write only of those fields and never a delete (which touches them all);
    /// for a read, the handler withholds the protected fields outside its scope.
    fn grant_for(
        &self,
        who: &Authenticated,
        action: Action,
        subject_id: &str,
        target: &AccessTarget<'_>,
        now: i64,
    ) -> Option<custody::AccessRequest> {
        let grant = self.custody.find_grant(
            &who.principal.id,
            action.as_str(),
            subject_id,
            target.collection,
            now,
        )?;
        let fields_covered = grant.fields.is_empty()
            || match action {
                Action::Read => true,
                Action::Write => target.fields.iter().all(|f| grant.fields.contains(f)),
                _ => false,
            };
        fields_covered.then_some(grant)
    }

    /// Decides, appends the decision to the log (durably), and answers with the entry's index.
    /// The custodian's controls come first: a suspended jurisdiction is denied whatever the
    /// policy says, and an active grant is put in the context for Cedar to see. A denial
    /// (none allowed, or not all when `need_all`) becomes a 403 that carries the index. If the
    /// log cannot be written the request fails with 503 and nothing is served or changed.
    #[allow(clippy::too_many_arguments)]
    async fn decide_and_log(
        &self,
        who: &Authenticated,
        action: Action,
        subject_id: &str,
        target: &AccessTarget<'_>,
        resources: &[(Option<FieldClass>, Resource)],
        mut context: policy::Context,
        need_all: bool,
    ) -> AppResult<(u64, Decided)> {
        let grant = self.grant_for(who, action, subject_id, target, context.time);
        if let Some(grant) = &grant {
            context.grant = grant_kind(grant).to_string();
        }
        let engine = self.policy();
        let classes: Vec<Option<FieldClass>> = resources.iter().map(|(c, _)| *c).collect();
        let resources: Vec<Resource> = resources.iter().map(|(_, r)| r.clone()).collect();
        let decisions = self.decide_each(&engine, who, action, &resources, &context);
        let used = grant.as_ref().map(|g| entry::GrantUsed {
            id: &g.id,
            kind: grant_kind(g),
        });
        let entry = entry::access_entry(
            who,
            action,
            target,
            &classes,
            &decisions,
            &context,
            used.as_ref(),
            engine.policy_set_hash(),
        );
        let index = self.append(entry).await?;
        self.observe(who, action, target, &decisions, index).await?;
        if target.suspended {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "suspended",
                format!(
                    "all access to {} subjects' data is suspended by the custodian's kill switch",
                    target.subject_jurisdiction
                ),
            )
            .logged(index));
        }
        let allowed = decisions.iter().filter(|d| d.allowed).count();
        if allowed == 0 || (need_all && allowed < decisions.len()) {
            return Err(self
                .denial(
                    &engine, who, action, &resources, &context, &decisions, need_all,
                )
                .logged(index));
        }
        Ok((index, Decided { decisions, grant }))
    }

    /// Tells the analytics about a logged decision, and raises the alerts it calls for (a
    /// restricted-country attempt, bulk access) before the request is answered.
    async fn observe(
        &self,
        who: &Authenticated,
        action: Action,
        target: &AccessTarget<'_>,
        decisions: &[Decision],
        log_index: u64,
    ) -> AppResult<()> {
        let observation = Observation {
            who,
            action: action.as_str(),
            subject_pseudonym: &target.subject_pseudonym,
            subject_jurisdiction: target.subject_jurisdiction,
            site: target.site,
            collection: target.collection,
            outcome: entry::outcome(decisions, target.suspended),
            policies: entry::deciding_policies(decisions),
            log_index,
        };
        let restricted = self
            .config
            .restricted_countries
            .contains(&who.principal.location);
        for alert in self.analytics.observe_access(&observation, restricted) {
            self.raise_alert(alert, Some(who)).await?;
        }
        Ok(())
    }

    /// Decides `action` on every field class of every collection for one subject (erasure and
    /// export concern all of a subject's data), logging one entry per collection. All must be
    /// allowed; the first denial answers.
    pub(crate) async fn decide_every_collection(
        &self,
        who: &Authenticated,
        action: Action,
        subject: &SubjectPlacement,
        context: &policy::Context,
    ) -> AppResult<()> {
        for (collection, config) in &self.config.collections {
            let names: Vec<String> = config.fields.keys().cloned().collect();
            let target = self.data_target(subject, collection, &names);
            let resources = declared_resources(&target, collection, &config.fields);
            self.decide_and_log(
                who,
                action,
                &subject.id,
                &target,
                &resources,
                context.clone(),
                true,
            )
            .await?;
        }
        Ok(())
    }

    /// Decides and logs a subject-level action (`list`, on the subject as held).
    async fn log_subject_access(
        &self,
        who: &Authenticated,
        action: Action,
        subject: &SubjectPlacement,
        context: policy::Context,
    ) -> AppResult<(u64, Decided)> {
        let target = AccessTarget {
            subject_pseudonym: self.pseudonyms.pseudonym(&subject.id),
            subject_jurisdiction: &subject.jurisdiction,
            site: &subject.site,
            site_jurisdiction: &subject.site_jurisdiction,
            collection: None,
            approval_required: false,
            suspended: self.custody.is_suspended(&subject.jurisdiction),
            fields: &[],
        };
        let resource = Resource::Subject {
            subject_jurisdiction: subject.jurisdiction.clone(),
            site: subject.site.clone(),
            site_jurisdiction: subject.site_jurisdiction.clone(),
            suspended: target.suspended,
        };
        self.decide_and_log(
            who,
            action,
            &subject.id,
            &target,
            &[(None, resource)],
            context,
            true,
        )
        .await
    }

    fn data_target<'a>(
        &self,
        subject: &'a SubjectPlacement,
        collection: &'a str,
        fields: &'a [String],
    ) -> AccessTarget<'a> {
        AccessTarget {
            subject_pseudonym: self.pseudonyms.pseudonym(&subject.id),
            subject_jurisdiction: &subject.jurisdiction,
            site: &subject.site,
            site_jurisdiction: &subject.site_jurisdiction,
            collection: Some(collection),
            approval_required: self
                .vault
                .collection(collection)
                .is_some_and(|c| c.approval),
            suspended: self.custody.is_suspended(&subject.jurisdiction),
            fields,
        }
    }

    /// Appends an entry; 503 if the log cannot take it.
    pub async fn append(&self, entry: Vec<u8>) -> AppResult<u64> {
        let started = std::time::Instant::now();
        let appended = self.log.append(entry).await;
        self.analytics.record(|| {
            metrics::histogram!("sovereign_log_append_duration_seconds")
                .record(started.elapsed().as_secs_f64());
        });
        appended.map_err(|e| {
            tracing::error!(error = %e, "cannot append to the transparency log");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "log_unavailable",
                "the transparency log cannot be written; nothing was served or changed",
            )
        })
    }

    /// The 403 for a denial: names the determining policies, and says so plainly when the
    /// only thing missing is a purpose or a custodian grant (the same request with one would
    /// have been allowed).
    #[allow(clippy::too_many_arguments)]
    fn denial(
        &self,
        engine: &policy::PolicyEngine,
        who: &Authenticated,
        action: Action,
        resources: &[Resource],
        context: &policy::Context,
        decisions: &[Decision],
        need_all: bool,
    ) -> ApiError {
        let mut policies: Vec<String> = decisions
            .iter()
            .filter(|d| !d.allowed)
            .flat_map(|d| d.policies.iter().cloned())
            .collect();
        policies.sort();
        policies.dedup();
        let had_errors = decisions.iter().any(|d| !d.errors.is_empty());
        if had_errors {
            tracing::warn!(principal = %who.principal.id, action = action.as_str(),
                "policy evaluation error; denied");
        }
        // Whether the access would pass with `context` instead.
        let allowed_with = |context: policy::Context| {
            let again = self.decide_each(engine, who, action, resources, &context);
            let allowed = again.iter().filter(|d| d.allowed).count();
            allowed > 0 && (!need_all || allowed == again.len())
        };
        if context.purpose.is_empty() && !had_errors {
            let with_purpose = policy::Context {
                purpose: "(any stated purpose)".into(),
                ..context.clone()
            };
            if allowed_with(with_purpose) {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "purpose_required",
                    "this access needs a stated purpose: set the `Sovereign-Purpose` header",
                )
                .with("policies", policies);
            }
        }
        if context.grant.is_empty() && !had_errors {
            let with_grant = policy::Context {
                grant: policy::GRANT_APPROVED.into(),
                ..context.clone()
            };
            if allowed_with(with_grant) {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "approval_required",
                    "this access needs a custodian grant: file one with `sovereign access request` (POST /v1/access/requests) and wait for approval",
                )
                .with("policies", policies);
            }
        }
        let message = if had_errors {
            format!(
                "{} denied: a policy could not be evaluated, and errors deny",
                action.as_str()
            )
        } else if policies.is_empty() {
            format!("{} denied: no policy permits it", action.as_str())
        } else {
            format!(
                "{} denied by policy {}",
                action.as_str(),
                policies.join(", ")
            )
        };
        ApiError::denied(message, policies)
    }
}

/// The value Cedar sees as `context.grant` for a grant.
fn grant_kind(grant: &custody::AccessRequest) -> &'static str {
    match grant.kind {
        custody::RequestKind::Request => policy::GRANT_APPROVED,
        custody::RequestKind::BreakGlass => policy::GRANT_BREAK_GLASS,
    }
}

fn data_resource(target: &AccessTarget<'_>, collection: &str, class: FieldClass) -> Resource {
    Resource::Data {
        subject_jurisdiction: target.subject_jurisdiction.to_string(),
        collection: collection.to_string(),
        field_class: class.as_str().to_string(),
        site: target.site.to_string(),
        site_jurisdiction: target.site_jurisdiction.to_string(),
        approval_required: target.approval_required,
        suspended: target.suspended,
    }
}

/// One resource per field class the collection declares (reads and deletes concern them all).
fn declared_resources(
    target: &AccessTarget<'_>,
    collection: &str,
    declared: &std::collections::BTreeMap<String, FieldClass>,
) -> Vec<(Option<FieldClass>, Resource)> {
    let mut classes: Vec<FieldClass> = declared.values().copied().collect();
    classes.sort();
    classes.dedup();
    classes
        .into_iter()
        .map(|class| (Some(class), data_resource(target, collection, class)))
        .collect()
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
    })
}

pub(crate) fn path_param<T>(path: Result<Path<T>, PathRejection>) -> AppResult<T> {
    path.map(|Path(v)| v)
        .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))
}

/// Parses a JSON body strictly, with errors that name what is wrong.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> AppResult<T> {
    let bytes = body.map_err(|e| {
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
    })?;
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
