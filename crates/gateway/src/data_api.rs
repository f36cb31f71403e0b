//! Data leaving or moving: egress of interoperable fields to the global platform, erasure of a
//! subject (crypto-shredding), portability exports, and the residency scan and migration.
//! Each is logged (kinds `egress`, `erasure`, `export`, `migration`) with counts and digests,
//! never values.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::api::{ErrorBody, blocking, logged, parse_json, path_param};
use crate::auth::Authenticated;
use crate::entry::{self, DataEvent};
use crate::error::{ApiError, LOG_INDEX_HEADER};
use policy::Action;
use vault::FieldClass;

type AppResult<T> = Result<T, ApiError>;
type Shared = State<Arc<AppState>>;

pub const ROLE_EGRESS: &str = "egress";
/// The header naming the cursor to resume an egress from.
pub const CURSOR_HEADER: &str = "sovereign-cursor";
/// The role a subject's own token carries to export its data.
pub const ROLE_DATA_SUBJECT: &str = "data-subject";

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Appends a data event; 503 if the log cannot take it.
async fn log_event(
    app: &AppState,
    event: DataEvent,
    who: Option<&Authenticated>,
    details: Value,
) -> AppResult<u64> {
    app.append(entry::data_event_entry(event, who, details))
        .await
}

/// Runs `work` to completion on its own task: axum drops a request's future when its client
/// disconnects, and work that changes data must not stop between the change and its entry.
async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = AppResult<T>> + Send + 'static,
) -> AppResult<T> {
    tokio::spawn(work).await.map_err(ApiError::internal)?
}

// ---------------------------------------------------------------------------
// Egress

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EgressQuery {
    since: Option<String>,
    limit: Option<usize>,
}

/// Interoperable fields of a collection, as NDJSON: one line per record,
/// `{"subject": PSEUDONYM, "key", "fields"}`, then a last line `{"cursor", "rows", "done"}`.
/// Subject ids are HMAC-SHA256 pseudonyms under a key that stays in the jurisdiction; no
/// protected field ever appears. Resume with `?since=CURSOR`.
#[utoipa::path(get, path = "/v1/egress/{collection}", tag = "egress",
    params(
        ("collection" = String, Path, description = "a configured collection"),
        ("since" = Option<String>, Query, description = "the cursor of the previous page"),
        ("limit" = Option<usize>, Query, description = "rows in this page (at most egress.page_size)"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "NDJSON rows; header Sovereign-Cursor resumes after them", content_type = "application/x-ndjson"),
        (status = 400, description = "bad cursor or limit", body = ErrorBody),
        (status = 403, description = "no `egress` role", body = ErrorBody),
        (status = 404, description = "no such collection", body = ErrorBody),
    ))]
async fn egress(
    State(app): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<EgressQuery>, QueryRejection>,
) -> AppResult<Response> {
    let who = app.auth.authenticate(&headers, peer.ip())?;
    who.require_role(&[ROLE_EGRESS])?;
    let collection = path_param(path)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    if app.vault.collection(&collection).is_none() {
        return Err(vault::VaultError::UnknownCollection(collection).into());
    }
    let max = app.config.egress.page_size;
    let limit = query.limit.unwrap_or(max);
    if limit == 0 || limit > max {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("`limit` must be between 1 and {max} (egress.page_size)"),
        ));
    }
    let since = match &query.since {
        None => None,
        Some(text) => Some(vault::Cursor::parse(text).map_err(|e| {
            ApiError::bad_request("invalid_cursor", format!("`since` is not a cursor: {e}"))
        })?),
    };

    let vault = app.vault.clone();
    let coll = collection.clone();
    let (rows, next) = blocking(move || vault.records_page(&coll, since.as_ref(), limit)).await??;
    let mut body = Vec::new();
    for (subject, _site, row) in &rows {
        let line = json!({
            "subject": app.egress_pseudonyms.pseudonym(subject),
            "key": row.key,
            "fields": row.fields,
        });
        serde_json::to_writer(&mut body, &line).expect("JSON to a Vec cannot fail");
        body.push(b'\n');
    }
    let cursor = next.map(|c| c.to_string());
    let trailer = json!({"cursor": cursor, "rows": rows.len(), "done": cursor.is_none()});
    serde_json::to_writer(&mut body, &trailer).expect("JSON to a Vec cannot fail");
    body.push(b'\n');

    let details = json!({
        "collection": collection,
        "rows": rows.len(),
        "sha256": sha256_hex(&body),
        "bytes": body.len(),
        "since": query.since,
        "cursor": cursor,
    });
    let index = log_event(&app, DataEvent::Egress, Some(&who), details).await?;
    if let Some(alert) = app.analytics.observe_egress(&collection, rows.len() as u64) {
        app.raise_alert(alert, Some(&who)).await?;
    }
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    h.insert(LOG_INDEX_HEADER, HeaderValue::from(index));
    if let Some(cursor) = &cursor
        && let Ok(value) = HeaderValue::from_str(cursor)
    {
        h.insert(CURSOR_HEADER, value);
    }
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AggregateQuery {
    group_by: String,
}

/// Counts of a collection's records by the value of one interoperable field. Groups smaller
/// than `egress.min_group_size` are suppressed (only their number is given), so that a count
/// cannot single anyone out.
#[utoipa::path(get, path = "/v1/egress/{collection}/aggregate", tag = "egress",
    params(
        ("collection" = String, Path, description = "a configured collection"),
        ("group_by" = String, Query, description = "an interoperable field of the collection"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`{collection, group_by, min_group_size, groups: [{value, count}], suppressed_groups, suppressed_rows}`"),
        (status = 400, description = "the field is not an interoperable field of the collection", body = ErrorBody),
        (status = 403, description = "no `egress` role", body = ErrorBody),
    ))]
async fn aggregate(
    State(app): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<AggregateQuery>, QueryRejection>,
) -> AppResult<Response> {
    let who = app.auth.authenticate(&headers, peer.ip())?;
    who.require_role(&[ROLE_EGRESS])?;
    let collection = path_param(path)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let declared = app
        .vault
        .collection(&collection)
        .ok_or_else(|| vault::VaultError::UnknownCollection(collection.clone()))?;
    if declared.fields.get(&query.group_by) != Some(&FieldClass::Interoperable) {
        return Err(ApiError::bad_request(
            "not_interoperable",
            format!(
                "`{}` is not an interoperable field of `{collection}`; only interoperable fields may be grouped by",
                query.group_by
            ),
        ));
    }

    let vault = app.vault.clone();
    let (coll, field) = (collection.clone(), query.group_by.clone());
    let counts = blocking(
        move || -> Result<BTreeMap<String, u64>, vault::VaultError> {
            let mut counts = BTreeMap::new();
            let mut cursor = None;
            loop {
                let (rows, next) =
                    vault.records_page(&coll, cursor.as_ref(), vault::MAX_PAGE_SIZE)?;
                for (_, _, row) in rows {
                    let value = match row.fields.get(&field) {
                        None | Some(Value::Null) => "(none)".to_string(),
                        Some(Value::String(s)) => s.clone(),
                        Some(other) => other.to_string(),
                    };
                    *counts.entry(value).or_insert(0) += 1;
                }
                match next {
                    Some(next) => cursor = Some(next),
                    None => return Ok(counts),
                }
            }
        },
    )
    .await??;

    let min = app.config.egress.min_group_size;
    let (shown, hidden): (Vec<_>, Vec<_>) = counts.into_iter().partition(|(_, n)| *n >= min);
    let body = json!({
        "collection": collection,
        "group_by": query.group_by,
        "min_group_size": min,
        "groups": shown.iter().map(|(value, count)| json!({"value": value, "count": count})).collect::<Vec<_>>(),
        "suppressed_groups": hidden.len(),
        "suppressed_rows": hidden.iter().map(|(_, n)| n).sum::<u64>(),
    });
    let bytes = serde_json::to_vec(&body).expect("JSON to a Vec cannot fail");
    let details = json!({
        "collection": collection,
        "aggregate": query.group_by,
        "rows": shown.len(),
        "sha256": sha256_hex(&bytes),
        "bytes": bytes.len(),
    });
    let index = log_event(&app, DataEvent::Egress, Some(&who), details).await?;
    Ok(logged(index, StatusCode::OK, body))
}

// ---------------------------------------------------------------------------
// Erasure and portability

/// Erases a subject: every record at every site, then its data keys (crypto-shredding: copies
/// and backups of the stores can no longer be decrypted). Needs a `delete` decision for every
/// field class of every collection, each logged like any delete, then the erasure is logged.
#[utoipa::path(delete, path = "/v1/subjects/{id}", tag = "subjects",
    params(("id" = String, Path, description = "subject id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "erased: sites, records deleted, keys destroyed"),
        (status = 403, description = "denied by policy", body = ErrorBody),
        (status = 404, description = "no such subject", body = ErrorBody),
    ))]
pub async fn erase_subject(
    State(app): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> AppResult<Response> {
    let who = app.auth.authenticate(&headers, peer.ip())?;
    let id = path_param(path)?;
    let context = crate::api::access_context(&headers, &who)?;
    let subject = app.find_subject(&id).await?;
    app.decide_every_collection(&who, Action::Delete, &subject, &context)
        .await?;

    // The erasure and its entry finish together even if the client goes away meanwhile.
    let (erasure, index) = {
        let app = app.clone();
        let subject = subject.clone();
        detached(async move {
            let vault = app.vault.clone();
            let subject_id = subject.id.clone();
            let erasure = blocking(move || vault.erase_subject(&subject_id)).await??;
            let details = json!({
                "subject": app.pseudonyms.pseudonym(&subject.id),
                "subject_jurisdiction": subject.jurisdiction,
                "sites": erasure.sites,
                "records": erasure.records,
                "keys_destroyed": erasure.keys_destroyed,
            });
            let index = log_event(&app, DataEvent::Erasure, Some(&who), details).await?;
            Ok((erasure, index))
        })
        .await?
    };
    tracing::info!(sites = ?erasure.sites, records = erasure.records, "subject erased");
    Ok(logged(
        index,
        StatusCode::OK,
        json!({
            "subject": subject.id,
            "erased": true,
            "sites": erasure.sites,
            "records": erasure.records,
            "keys_destroyed": erasure.keys_destroyed,
        }),
    ))
}

/// All of a subject's data as JSON (portability): to the subject's own token (`sub` equal to
/// the subject id, role `data-subject`), or to a principal whose `read` of every collection is
/// allowed by policy (for protected fields under the default policies: a support engineer with
/// an approved grant).
#[utoipa::path(get, path = "/v1/subjects/{id}/export", tag = "subjects",
    params(("id" = String, Path, description = "subject id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`{subject, jurisdiction, site, records: [{collection, key, fields}]}`"),
        (status = 403, description = "neither the subject nor allowed by policy", body = ErrorBody),
        (status = 404, description = "no such subject", body = ErrorBody),
    ))]
async fn export_subject(
    State(app): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> AppResult<Response> {
    let who = app.auth.authenticate(&headers, peer.ip())?;
    let id = path_param(path)?;
    let context = crate::api::access_context(&headers, &who)?;
    let subject = app.find_subject(&id).await?;
    let is_subject = who.principal.id == subject.id && who.has_role(ROLE_DATA_SUBJECT);
    if !is_subject {
        app.decide_every_collection(&who, Action::Read, &subject, &context)
            .await?;
    }

    let vault = app.vault.clone();
    let subject_id = subject.id.clone();
    let records = blocking(move || -> Result<Vec<Value>, vault::VaultError> {
        let mut out = Vec::new();
        for key in vault.list_records(&subject_id)? {
            if let Some(record) = vault.get_record(
                &subject_id,
                &key.collection,
                &key.key,
                vault::UnwrapReason::Export,
            )? {
                out.push(
                    json!({"collection": key.collection, "key": key.key, "fields": record.fields}),
                );
            }
        }
        Ok(out)
    })
    .await??;
    let body = json!({
        "subject": subject.id,
        "jurisdiction": subject.jurisdiction,
        "site": subject.site,
        "records": records,
    });
    let bytes = serde_json::to_vec(&body).expect("JSON to a Vec cannot fail");
    let details = json!({
        "subject": app.pseudonyms.pseudonym(&subject.id),
        "basis": if is_subject { "data-subject" } else { "policy" },
        "records": records.len(),
        "sha256": sha256_hex(&bytes),
    });
    let index = log_event(&app, DataEvent::Export, Some(&who), details).await?;
    Ok(logged(index, StatusCode::OK, body))
}

// ---------------------------------------------------------------------------
// Residency scan and migration

/// Every subject held at a site its jurisdiction's residency rule does not allow, per site.
#[utoipa::path(get, path = "/v1/residency/scan", tag = "residency",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`{ok, misplaced: N, sites: [{site, subjects, records, items: [{subject, jurisdiction, records}]}]}`"),
        (status = 403, description = "needs role custodian-operator or monitor", body = ErrorBody),
    ))]
async fn residency_scan(
    State(app): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> AppResult<Json<Value>> {
    let who = app.auth.authenticate(&headers, peer.ip())?;
    who.require_role(&[
        crate::custody_api::ROLE_OPERATOR,
        crate::analytics_api::ROLE_MONITOR,
    ])?;
    let vault = app.vault.clone();
    let misplaced = blocking(move || vault.misplaced()).await??;
    let mut sites: BTreeMap<String, (u64, u64, Vec<Value>)> = BTreeMap::new();
    for m in &misplaced {
        let site = sites.entry(m.site.clone()).or_default();
        site.0 += 1;
        site.1 += m.records;
        site.2.push(
            json!({"subject": m.subject, "jurisdiction": m.jurisdiction, "records": m.records}),
        );
    }
    let sites: Vec<Value> = sites
        .into_iter()
        .map(|(site, (subjects, records, items))| {
            json!({"site": site, "subjects": subjects, "records": records, "items": items})
        })
        .collect();
    Ok(Json(json!({
        "ok": misplaced.is_empty(),
        "misplaced": misplaced.len(),
        "sites": sites,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MigrateBody {
    subject: String,
    from: String,
    #[serde(default)]
    to: Option<String>,
}

/// Moves one misplaced subject to a site its rule allows: copy, verify by digest, delete the
/// source, destroy the source's data key. Safe to repeat. Logs one evidence entry.
#[utoipa::path(post, path = "/v1/residency/migrate", tag = "residency",
    request_body(content = Object, description = "`{subject, from, to?}`"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the evidence: `{subject, from, to, records, source_digest, destination_digest}`"),
        (status = 403, description = "needs role custodian-operator", body = ErrorBody),
        (status = 409, description = "the destination is not allowed by the subject's rule", body = ErrorBody),
    ))]
async fn residency_migrate(
    State(app): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<Response> {
    let who = app.auth.authenticate(&headers, peer.ip())?;
    who.require_role(&[crate::custody_api::ROLE_OPERATOR])?;
    let request: MigrateBody = parse_json(body)?;
    vault::validate_id("subject id", &request.subject)?;
    if !app.config.sites.contains_key(&request.from) {
        return Err(ApiError::bad_request(
            "unknown_site",
            format!("there is no site `{}`", request.from),
        ));
    }
    // The move and its evidence entry finish together even if the client goes away
    // meanwhile (a killed `residency migrate` must not leave a moved subject unlogged).
    let (migration, index) = detached({
        let app = app.clone();
        async move {
            let vault = app.vault.clone();
            let (subject, from, to) = (request.subject.clone(), request.from, request.to);
            let migration =
                blocking(move || vault.migrate_subject(&subject, &from, to.as_deref())).await??;
            let details = json!({
                "subject": app.pseudonyms.pseudonym(&migration.subject),
                "from": migration.from,
                "to": migration.to,
                "records": migration.records,
                "source_digest": migration.source_digest,
                "destination_digest": migration.destination_digest,
            });
            let index = log_event(&app, DataEvent::Migration, Some(&who), details).await?;
            Ok((migration, index))
        }
    })
    .await?;
    tracing::info!(from = %migration.from, to = %migration.to, records = migration.records, "subject migrated");
    Ok(logged(
        index,
        StatusCode::OK,
        json!({
            "subject": migration.subject,
            "from": migration.from,
            "to": migration.to,
            "records": migration.records,
            "source_digest": migration.source_digest,
            "destination_digest": migration.destination_digest,
        }),
    ))
}

/// The data-movement routes, for `api::routes`.
pub fn routes() -> utoipa_axum::router::OpenApiRouter<Arc<AppState>> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(egress))
        .routes(routes!(aggregate))
        .routes(routes!(export_subject))
        .routes(routes!(residency_scan))
        .routes(routes!(residency_migrate))
}
