//! Data leaving or moving: egress of interoperable fields to the global platform, erasure of a
//! subject (crypto-shredding), portability exports, and the residency scan and migration.
//! Every one is decided by Cedar and logged through the pipeline (`pipeline/`) before the
//! vault is touched, then logged again as what happened (kinds `egress`, `erasure`,
//! `export`, `migration`) with counts and digests, never values or raw subject ids.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authenticated;
use crate::entry::{self, DataEvent};
use crate::http::error::{ApiError, AppResult, ErrorBody, ErrorCode};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, Caller};
use crate::http::openapi::{AccessHeaders, CollectionPath, SubjectPath};
use crate::http::response::Logged;
use crate::http::tasks::detached;
use crate::http::vocab::{CURSOR_HEADER, LOG_INDEX_HEADER};
use crate::pipeline::Scope;
use crate::state::AppState;
use policy::Action;
use vault::FieldClass;

type Shared = State<Arc<AppState>>;

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

// ---------------------------------------------------------------------------
// The answers: each handler builds one of these, so `/openapi.json` documents exactly what
// is sent (and the property-based API test, `tests/openapi_property.rs`, checks it).

/// A group of an aggregate: the field's value and how many records have it.
#[derive(Serialize, ToSchema)]
struct AggregateGroup {
    /// The value (`(none)` for records without it; non-strings as JSON text).
    value: String,
    count: u64,
}

/// Counts of a collection's records by one interoperable field.
#[derive(Serialize, ToSchema)]
struct Aggregate {
    collection: String,
    group_by: String,
    min_group_size: u64,
    /// The groups of at least `min_group_size` records.
    groups: Vec<AggregateGroup>,
    /// How many groups were too small to show, and their records.
    suppressed_groups: u64,
    suppressed_rows: u64,
}

/// What an erasure did.
#[derive(Serialize, ToSchema)]
pub struct Erased {
    subject: String,
    erased: bool,
    /// The sites that held the subject or its records.
    sites: Vec<String>,
    /// Records deleted over all sites.
    records: u64,
    /// Data keys destroyed.
    keys_destroyed: u64,
}

/// One record of an export.
#[derive(Serialize, ToSchema)]
struct ExportedRecord {
    collection: String,
    key: String,
    /// The fields this principal may take.
    #[schema(value_type = Object)]
    fields: Value,
    /// Fields the record holds that were not allowed (values withheld).
    withheld: Vec<String>,
}

/// All of a subject's data.
#[derive(Serialize, ToSchema)]
struct Export {
    subject: String,
    jurisdiction: String,
    site: String,
    /// The records as `ExportedRecord`s (built by the pipeline's `Governed::export`).
    #[schema(value_type = Vec<ExportedRecord>)]
    records: Vec<Value>,
    /// The subject's history in the log, as `GET /v1/subjects/{id}/accesses` answers its
    /// first page (`history.export_limit` entries, newest first; `next_before` says where the
    /// rest continue), when the caller is the subject and the policy lets them see it
    /// (`history` on the subject, decided and logged); null otherwise.
    accesses: Option<monitor::subject::HistoryPage>,
    /// Why `accesses` is null: not the subject's own export, denied by policy, or not
    /// available now (no checkpoint yet, the index being built); the export is served anyway.
    #[serde(skip_serializing_if = "Option::is_none")]
    accesses_withheld: Option<String>,
}

/// A misplaced subject, by its log pseudonym.
#[derive(Serialize, ToSchema)]
struct ScanItem {
    subject: String,
    jurisdiction: String,
    records: u64,
}

/// The misplaced subjects of one site.
#[derive(Serialize, ToSchema)]
struct ScanSite {
    site: String,
    subjects: u64,
    records: u64,
    items: Vec<ScanItem>,
}

/// The residency scan: whether every subject is at a site its rule allows.
#[derive(Serialize, ToSchema)]
struct Scan {
    ok: bool,
    /// How many subjects are not.
    misplaced: u64,
    sites: Vec<ScanSite>,
}

/// The evidence of a migration.
#[derive(Serialize, ToSchema)]
struct Migrated {
    /// As the request named it: the id, or the pseudonym.
    subject: String,
    from: String,
    to: String,
    /// Records copied by this run (0 when an earlier run moved them).
    records: u64,
    /// SHA-256 (hex) of the records as read at the source and, after the copy, at the
    /// destination.
    source_digest: String,
    destination_digest: String,
}

// ---------------------------------------------------------------------------
// Egress

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct EgressQuery {
    /// The `cursor` of the previous page, exactly as it was given (400 `invalid_cursor`
    /// otherwise).
    #[param(value_type = String, required = false, min_length = 1, max_length = 2048, pattern = "^[A-Za-z0-9_-]+$")]
    since: Option<String>,
    /// Rows in this page: 1 to `egress.page_size` (1000 by default; 400 `invalid_query`
    /// above it).
    #[param(value_type = u64, required = false, minimum = 1)]
    limit: Option<usize>,
}

/// Interoperable fields of a collection, as NDJSON: one line per record,
/// `{"subject": PSEUDONYM, "key", "fields"}`, then a last line `{"cursor", "rows", "done"}`.
/// Subject ids are HMAC-SHA256 pseudonyms under a key that stays in the jurisdiction; no
/// protected field ever appears. Resume with `?since=CURSOR`.
#[utoipa::path(get, path = "/v1/egress/{collection}", tag = "egress",
    params(CollectionPath, EgressQuery, AccessHeaders),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "NDJSON rows; header Sovereign-Cursor resumes after them", content_type = "application/x-ndjson"),
        (status = 400, description = "`invalid_query` (unknown parameter, or `limit` out of range), `invalid_cursor`, `invalid_header`", body = ErrorBody),
        (status = 403, description = "`denied` by policy for every jurisdiction (with `policies`; under the default policies: needs role `egress`), `suspended`", body = ErrorBody),
        (status = 404, description = "`unknown_collection`", body = ErrorBody),
    ))]
async fn egress(
    State(app): Shared,
    Caller(who): Caller,
    headers: HeaderMap,
    ApiPath(collection): ApiPath<String>,
    ApiQuery(query): ApiQuery<EgressQuery>,
) -> AppResult<Response> {
    if app.governed.collection(&collection).is_none() {
        return Err(vault::VaultError::UnknownCollection(collection).into());
    }
    let max = app.config.egress.page_size;
    let limit = query.limit.unwrap_or(max);
    if limit == 0 || limit > max {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidQuery,
            format!("`limit` must be between 1 and {max} (egress.page_size)"),
        ));
    }
    let since = match &query.since {
        None => None,
        Some(text) => Some(app.cursor_seal.open(text)?),
    };

    // Decided per jurisdiction: rows leave only for the jurisdictions allowed now (not
    // suspended, not to a caller located where the policy forbids).
    let ask = app.ask(&who, Action::Egress, &headers)?;
    let scope = Scope::Everywhere {
        collection: Some(&collection),
    };
    let permit = app.decide(ask, scope).await?;
    let (rows, next) = app
        .governed
        .egress_page(&permit, &collection, since, limit)
        .await?;
    let mut body = Vec::new();
    for (subject, row) in &rows {
        let line = json!({
            "subject": app.egress_pseudonyms.pseudonym(subject),
            "key": row.key,
            "fields": row.fields,
        });
        serde_json::to_writer(&mut body, &line).expect("JSON to a Vec cannot fail");
        body.push(b'\n');
    }
    let cursor = next.map(|c| app.cursor_seal.seal(&c));
    let trailer = json!({"cursor": cursor, "rows": rows.len(), "done": cursor.is_none()});
    serde_json::to_writer(&mut body, &trailer).expect("JSON to a Vec cannot fail");
    body.push(b'\n');

    // The cursors are sealed, so logging them reveals nothing; their digests suffice to
    // follow one walk through the log.
    let details = json!({
        "collection": collection,
        "rows": rows.len(),
        "sha256": sha256_hex(&body),
        "bytes": body.len(),
        "since": query.since.as_deref().map(|c| sha256_hex(c.as_bytes())),
        "cursor": cursor.as_deref().map(|c| sha256_hex(c.as_bytes())),
        "decision": permit.index(),
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AggregateQuery {
    /// An interoperable field of the collection (400 `not_interoperable` otherwise).
    #[param(min_length = 1, example = "display_name")]
    group_by: String,
}

/// Counts of a collection's records by the value of one interoperable field. Groups smaller
/// than `egress.min_group_size` are suppressed (only their number is given), so that a count
/// cannot single anyone out.
#[utoipa::path(get, path = "/v1/egress/{collection}/aggregate", tag = "egress",
    params(CollectionPath, AggregateQuery, AccessHeaders),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the counts by value, small groups suppressed", body = Aggregate),
        (status = 400, description = "`invalid_query` (no `group_by`, or an unknown parameter), `not_interoperable` (the field is not an interoperable field of the collection), `invalid_header`", body = ErrorBody),
        (status = 403, description = "`denied` by policy for every jurisdiction (with `policies`; under the default policies: needs role `egress`), `suspended`", body = ErrorBody),
        (status = 404, description = "`unknown_collection`", body = ErrorBody),
    ))]
async fn aggregate(
    State(app): Shared,
    Caller(who): Caller,
    headers: HeaderMap,
    ApiPath(collection): ApiPath<String>,
    ApiQuery(query): ApiQuery<AggregateQuery>,
) -> AppResult<Logged<Aggregate>> {
    let declared = app
        .governed
        .collection(&collection)
        .ok_or_else(|| vault::VaultError::UnknownCollection(collection.clone()))?;
    if declared.fields.get(&query.group_by) != Some(&FieldClass::Interoperable) {
        return Err(ApiError::bad_request(
            ErrorCode::NotInteroperable,
            format!(
                "`{}` is not an interoperable field of `{collection}`; only interoperable fields may be grouped by",
                query.group_by
            ),
        ));
    }

    let ask = app.ask(&who, Action::Egress, &headers)?;
    let scope = Scope::Everywhere {
        collection: Some(&collection),
    };
    let permit = app.decide(ask, scope).await?;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut cursor = None;
    loop {
        let (rows, next) = app
            .governed
            .egress_page(&permit, &collection, cursor, vault::MAX_PAGE_SIZE)
            .await?;
        for (_, row) in rows {
            let value = match row.fields.get(&query.group_by) {
                None | Some(Value::Null) => "(none)".to_string(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            *counts.entry(value).or_insert(0) += 1;
        }
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }

    let min = app.config.egress.min_group_size;
    let (shown, hidden): (Vec<_>, Vec<_>) = counts.into_iter().partition(|(_, n)| *n >= min);
    let body = Aggregate {
        collection: collection.clone(),
        group_by: query.group_by.clone(),
        min_group_size: min,
        groups: shown
            .iter()
            .map(|(value, count)| AggregateGroup {
                value: value.clone(),
                count: *count,
            })
            .collect(),
        suppressed_groups: hidden.len() as u64,
        suppressed_rows: hidden.iter().map(|(_, n)| n).sum(),
    };
    let bytes = serde_json::to_vec(&body).expect("JSON to a Vec cannot fail");
    let details = json!({
        "collection": collection,
        "aggregate": query.group_by,
        "rows": shown.len(),
        "sha256": sha256_hex(&bytes),
        "bytes": bytes.len(),
        "decision": permit.index(),
    });
    let index = log_event(&app, DataEvent::Egress, Some(&who), details).await?;
    Ok(Logged::ok(index, body))
}

// ---------------------------------------------------------------------------
// Erasure and portability

/// Erases a subject: every record at every site, then its data keys (crypto-shredding: copies
/// and backups of the stores can no longer be decrypted). Needs a `delete` decision for every
/// field class of every collection, each logged like any delete, then the erasure is logged.
#[utoipa::path(delete, path = "/v1/subjects/{id}", tag = "subjects",
    params(SubjectPath, AccessHeaders),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "erased: sites, records deleted, keys destroyed", body = Erased),
        (status = 400, description = "`invalid_id`, `invalid_header`", body = ErrorBody),
        (status = 403, description = "`denied` by policy for some collection (with `policies`), `purpose_required`, `approval_required`, `suspended`", body = ErrorBody),
        (status = 404, description = "`subject_not_found`", body = ErrorBody),
    ))]
pub async fn erase_subject(
    State(app): Shared,
    Caller(who): Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> AppResult<Logged<Erased>> {
    let ask = app.ask(&who, Action::Delete, &headers)?;
    let subject = app.find_subject_any_collection(&ask, &id).await?;
    let permits = app.decide_every_collection(&ask, &subject).await?;

    // The erasure and its entry finish together even if the client goes away meanwhile.
    let (erasure, index) = {
        let app = app.clone();
        let subject = subject.clone();
        detached(async move {
            let erasure = app.governed.erase(&permits).await?;
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
    Ok(Logged::ok(
        index,
        Erased {
            subject: subject.id,
            erased: true,
            sites: erasure.sites,
            records: erasure.records,
            keys_destroyed: erasure.keys_destroyed,
        },
    ))
}

/// All of a subject's data as JSON (portability), decided like any access: `export` of every
/// field class of every collection, one logged decision per collection. Under the default
/// policies: the subject's own token (`sub` equal to the subject id, role `data-subject`),
/// or vetted staff, each with a stated purpose; a grant scoped to some fields exports only
/// those protected fields (the others are named under `withheld`).
#[utoipa::path(get, path = "/v1/subjects/{id}/export", tag = "subjects",
    params(SubjectPath, AccessHeaders),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "every record of the subject, each reduced to the fields allowed", body = Export),
        (status = 400, description = "`invalid_id`, `invalid_header`", body = ErrorBody),
        (status = 403, description = "`denied` by policy for some collection (with `policies`), `purpose_required`, `approval_required`, `suspended`, `key_policy`", body = ErrorBody),
        (status = 404, description = "`subject_not_found`", body = ErrorBody),
        (status = 410, description = "`key_destroyed`: a data key of the subject was destroyed", body = ErrorBody),
    ))]
async fn export_subject(
    State(app): Shared,
    Caller(who): Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> AppResult<Logged<Export>> {
    let ask = app.ask(&who, Action::Export, &headers)?;
    let subject = app.find_subject_any_collection(&ask, &id).await?;
    let permits = app.decide_every_collection(&ask, &subject).await?;
    let records = app.governed.export(&permits).await?;
    // The subject's own export carries their history, decided on its own (the default
    // invariants let no one else see it, so nobody else is asked, and nothing is logged for
    // them). A history that cannot be had now leaves the export as it is.
    let own = who.principal.id == subject.id;
    let mut history_decision = None;
    let (accesses, accesses_withheld) = if own {
        let history_ask = app.ask(&who, Action::History, &headers)?;
        match app.decide(history_ask, Scope::Subject(&subject)).await {
            Ok(permit) => {
                history_decision = Some(permit.index());
                let limit = app.config.history.export_limit;
                match app.history_page(&permit, &subject.id, None, limit).await {
                    Ok(page) => (Some(page), None),
                    Err(e) if e.code == ErrorCode::HistoryUnavailable => (None, Some(e.message)),
                    Err(e) => return Err(e),
                }
            }
            Err(e) if e.status == StatusCode::FORBIDDEN => {
                history_decision = e.log_index;
                (None, Some(format!("the history: {}", e.message)))
            }
            Err(e) => return Err(e),
        }
    } else {
        (
            None,
            Some("the history goes only to the subject's own export".into()),
        )
    };
    let body = Export {
        subject: subject.id.clone(),
        jurisdiction: subject.jurisdiction.clone(),
        site: subject.site.clone(),
        records,
        accesses,
        accesses_withheld,
    };
    let bytes = serde_json::to_vec(&body).expect("JSON to a Vec cannot fail");
    let details = json!({
        "subject": app.pseudonyms.pseudonym(&subject.id),
        "basis": if own { "data-subject" } else { "policy" },
        "records": body.records.len(),
        "sha256": sha256_hex(&bytes),
        "decisions": permits.iter().map(|p| p.index()).chain(history_decision).collect::<Vec<_>>(),
    });
    let index = log_event(&app, DataEvent::Export, Some(&who), details).await?;
    Ok(Logged::ok(index, body))
}

// ---------------------------------------------------------------------------
// Residency scan and migration

/// Every subject held at a site its jurisdiction's residency rule does not allow, per site,
/// as log pseudonyms (the ones migration evidence entries carry), for the jurisdictions the
/// policy lets the caller scan. Decided per jurisdiction and logged.
#[utoipa::path(get, path = "/v1/residency/scan", tag = "residency",
    params(AccessHeaders),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the misplaced subjects, per site", body = Scan),
        (status = 400, description = "`invalid_header`", body = ErrorBody),
        (status = 403, description = "`denied` by policy for every jurisdiction (with `policies`; under the default policies: needs role custodian-operator or monitor), `purpose_required`, `suspended`", body = ErrorBody),
    ))]
async fn residency_scan(
    State(app): Shared,
    Caller(who): Caller,
    headers: HeaderMap,
) -> AppResult<Logged<Scan>> {
    let ask = app.ask(&who, Action::Scan, &headers)?;
    let permit = app
        .decide(ask, Scope::Everywhere { collection: None })
        .await?;
    let misplaced = app.governed.misplaced(&permit).await?;
    let mut sites: BTreeMap<String, ScanSite> = BTreeMap::new();
    for m in &misplaced {
        let site = sites.entry(m.site.clone()).or_insert_with(|| ScanSite {
            site: m.site.clone(),
            subjects: 0,
            records: 0,
            items: Vec::new(),
        });
        site.subjects += 1;
        site.records += m.records;
        site.items.push(ScanItem {
            subject: app.pseudonyms.pseudonym(&m.subject),
            jurisdiction: m.jurisdiction.clone(),
            records: m.records,
        });
    }
    Ok(Logged::ok(
        permit.index(),
        Scan {
            ok: misplaced.is_empty(),
            misplaced: misplaced.len() as u64,
            sites: sites.into_values().collect(),
        },
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MigrateBody {
    /// The subject's id, or
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[A-Za-z0-9_:-][A-Za-z0-9._:-]{0,127}$"
    )]
    subject: Option<String>,
    /// its log pseudonym, as the scan shows it (exactly one of the two).
    #[serde(default)]
    #[schema(pattern = "^[0-9a-f]{32}$")]
    subject_pseudonym: Option<String>,
    /// The site that holds the subject now (400 `unknown_site` if not configured).
    #[schema(pattern = "^[a-z][a-z0-9_-]{0,63}$", example = "sg-legacy")]
    from: String,
    /// The site to move it to; the first its rule allows by default.
    #[serde(default)]
    #[schema(pattern = "^[a-z][a-z0-9_-]{0,63}$")]
    to: Option<String>,
}

/// Moves one misplaced subject to a site its rule allows: copy, verify by digest, delete the
/// source, destroy the source's data key. Safe to repeat. Decided (`migrate` on the subject)
/// and logged, then logs one evidence entry.
#[utoipa::path(post, path = "/v1/residency/migrate", tag = "residency",
    params(AccessHeaders),
    request_body(content = MigrateBody, description = "the subject by id, or by the pseudonym the scan shows; the site it is at; optionally where to"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the evidence", body = Migrated),
        (status = 400, description = "`invalid_json`, `invalid_body` (also: not exactly one of `subject` and `subject_pseudonym`), `invalid_id`, `unknown_site`, `invalid_site` (an unknown destination, or the site it is at), `invalid_header`", body = ErrorBody),
        (status = 403, description = "`denied` by policy (with `policies`; under the default policies: needs role custodian-operator), `purpose_required`, `suspended`, `key_policy`", body = ErrorBody),
        (status = 404, description = "`subject_not_found`", body = ErrorBody),
        (status = 409, description = "`residency_violation`: the destination is not allowed by the subject's rule", body = ErrorBody),
        (status = 410, description = "`key_destroyed`: the subject's data key at the source was destroyed", body = ErrorBody),
    ))]
async fn residency_migrate(
    State(app): Shared,
    Caller(who): Caller,
    headers: HeaderMap,
    ApiJson(request): ApiJson<MigrateBody>,
) -> AppResult<Logged<Migrated>> {
    if !app.config.sites.contains_key(&request.from) {
        return Err(ApiError::bad_request(
            ErrorCode::UnknownSite,
            format!("there is no site `{}`", request.from),
        ));
    }
    let (named, id) = match (&request.subject, &request.subject_pseudonym) {
        (Some(id), None) => (id.clone(), id.clone()),
        (None, Some(pseudonym)) => {
            // A pseudonym that names no misplaced subject there is decided as an unknown id.
            let found = app
                .governed
                .misplaced_by_pseudonym(&app.pseudonyms, &request.from, pseudonym)
                .await?;
            (
                pseudonym.clone(),
                found.unwrap_or_else(|| pseudonym.clone()),
            )
        }
        _ => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidBody,
                "give exactly one of `subject` (an id) and `subject_pseudonym` (as the scan shows it)",
            ));
        }
    };
    let ask = app.ask(&who, Action::Migrate, &headers)?;
    let subject = app.find_subject(&ask, &id, &[]).await?;
    let permit = app.decide(ask, Scope::Subject(&subject)).await?;

    // The move and its evidence entry finish together even if the client goes away
    // meanwhile (a killed `residency migrate` must not leave a moved subject unlogged).
    let (migration, index) = detached({
        let app = app.clone();
        async move {
            let migration = app
                .governed
                .migrate(&permit, &request.from, request.to.as_deref())
                .await?;
            let details = json!({
                "subject": app.pseudonyms.pseudonym(&migration.subject),
                "from": migration.from,
                "to": migration.to,
                "records": migration.records,
                "source_digest": migration.source_digest,
                "destination_digest": migration.destination_digest,
                "decision": permit.index(),
            });
            let index = log_event(&app, DataEvent::Migration, Some(&who), details).await?;
            Ok((migration, index))
        }
    })
    .await?;
    tracing::info!(from = %migration.from, to = %migration.to, records = migration.records, "subject migrated");
    Ok(Logged::ok(
        index,
        Migrated {
            subject: named,
            from: migration.from,
            to: migration.to,
            records: migration.records,
            source_digest: migration.source_digest,
            destination_digest: migration.destination_digest,
        },
    ))
}

/// The routes of data leaving and moving (erasure is registered with the subject routes).
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(egress))
        .routes(routes!(aggregate))
        .routes(routes!(export_subject))
        .routes(routes!(residency_scan))
        .routes(routes!(residency_migrate))
}
