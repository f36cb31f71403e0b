//! Runs of custodian-released algorithms, next to the data: the caller gets the outputs the
//! signed manifest declares, never the data the algorithm read.
//!
//! ```text
//! the active release of the name, its manifest and module checked against their digests
//!   → decide `run` on the subject, the caller as principal (logged)
//!   → decide `compute` on each collection's field classes the manifest reads, the release
//!     as principal (logged, one entry per collection)
//!   → read only the fields allowed and named, run the module in the sandbox within the
//!     manifest's limits, check its output against the manifest
//!   → under the custody gate: still active and not suspended, or the run is `stopped`;
//!     the `algorithm-run` entry (release, digests, caller, pseudonym, fields read,
//!     decisions, fuel, duration, output digest, outcome)
//!   → the output, only when the outcome is `ok`
//! ```
//!
//! A denied decision is logged as a run too (outcome `denied`), so that a monitor sees which
//! algorithm was asked for.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::algorithms::release_principal;
use crate::auth::Authenticated;
use crate::entry::{self, DataEvent};
use crate::http::context::access_context;
use crate::http::error::{ApiError, AppResult, ErrorBody, ErrorCode};
use crate::http::extract::{ApiJson, ApiPath, Caller};
use crate::http::openapi::AccessHeaders;
use crate::http::response::Logged;
use crate::http::tasks::{blocking, detached};
use crate::pipeline::{Ask, Permit, Scope};
use crate::state::AppState;
use policy::Action;
use vault::FieldClass;

type Shared = State<Arc<AppState>>;

/// The record each collection is read from when the request names none.
const DEFAULT_KEY: &str = "main";

/// The routes of this module.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(run_algorithm))
}

/// A run for one subject.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    /// The subject's id.
    subject: String,
    /// The record read in each collection the manifest names (default `main`).
    #[serde(default)]
    key: Option<String>,
    /// Where to write the outputs as well, for the platform to read later (batch
    /// recomputation): a record of the subject in a collection that declares every output
    /// as an interoperable field. The write is decided and logged as the caller's.
    #[serde(default)]
    store: Option<StoreIn>,
}

/// Where a run's outputs are written.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct StoreIn {
    collection: String,
    /// The record's key (default `main`).
    #[serde(default)]
    key: Option<String>,
}

/// Where a run's outputs were written.
#[derive(Serialize, ToSchema)]
struct Stored {
    collection: String,
    key: String,
    /// The log index of the write's decision.
    log_index: u64,
}

/// A run that produced its output.
#[derive(Serialize, ToSchema)]
struct RunBody {
    algorithm: String,
    version: String,
    /// The module's SHA-256.
    sha256: String,
    manifest_sha256: String,
    /// The outputs the manifest declares (interoperable), as checked against it.
    #[schema(value_type = Object)]
    output: Map<String, Value>,
    output_sha256: String,
    /// The fuel it used, rounded up to a power of two (as its log entry says).
    fuel_used: u64,
    duration_us: u64,
    /// The log indexes of the run's decisions: `run`, then `compute` per collection.
    decisions: Vec<u64>,
    /// Where the outputs were written, when the request asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    stored: Option<Stored>,
}

/// Runs the active release of an algorithm for one subject. Two decisions, both by Cedar and
/// both logged: may the caller run an algorithm for this subject (`run`), and may the release
/// read each field class its signed manifest names (`compute`, the release as principal).
/// The purpose is the manifest's; a `Sovereign-Purpose` header, if given, must be the same.
#[utoipa::path(post, path = "/v1/algorithms/{name}/runs", tag = "algorithms",
    params(("name" = String, Path, description = "the algorithm's name", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$"), AccessHeaders),
    request_body = RunRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the outputs; header Sovereign-Log-Index gives the run's entry (with `store`: the write's decision)", body = RunBody),
        (status = 400, description = "`invalid_json`, `invalid_body` (also: a `store` collection with protected fields, or without every output as an interoperable field), `invalid_id`, `invalid_header` (also: a purpose other than the release's), `invalid_request` (the release has no manifest, so it never runs)", body = ErrorBody),
        (status = 403, description = "`denied` by policy (with `policies`; under the default policies the caller needs role algorithm-runner), `suspended`", body = ErrorBody),
        (status = 404, description = "`unknown_release` (no active release of that name), `subject_not_found`, `unknown_collection` (a `store` collection the configuration does not declare)", body = ErrorBody),
        (status = 409, description = "`not_active`: the release was deactivated or replaced, or the subject's jurisdiction suspended, while it ran (logged `stopped`); `digest_mismatch`: the stored module or manifest no longer has its signed digest", body = ErrorBody),
        (status = 422, description = "`algorithm_failed`: stopped at a limit of its manifest, trapped, or its output was refused (logged)", body = ErrorBody),
        (status = 503, description = "`algorithms_not_configured`: this gateway runs no algorithms", body = ErrorBody),
    ))]
async fn run_algorithm(
    State(app): Shared,
    Caller(who): Caller,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<RunRequest>,
) -> AppResult<Logged<RunBody>> {
    let location = app.algorithms.location()?.to_string();
    custody::check_release_name("name", &name)?;
    vault::validate_id("subject id", &request.subject)?;
    let key = request.key.unwrap_or_else(|| DEFAULT_KEY.to_string());
    vault::validate_id("record key", &key)?;
    let runnable = {
        let (app, name) = (app.clone(), name.clone());
        blocking(move || app.custody.runnable(&name)).await??
    }
    .ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownRelease,
            format!("no release of `{name}` is active"),
        )
    })?;
    let manifest = algorithm::Manifest::parse(runnable.manifest.as_bytes())
        .map_err(|e| ApiError::internal(format!("a released manifest does not parse: {e}")))?;
    let store = match request.store {
        Some(store) => Some(store_target(&app, &manifest, store)?),
        None => None,
    };
    let mut context = access_context(&headers, &who)?;
    if !context.purpose.is_empty() && context.purpose != manifest.purpose {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidHeader,
            format!(
                "{name} runs for the purpose `{}` only, as its release says",
                manifest.purpose
            ),
        ));
    }
    context.purpose = manifest.purpose.clone();
    let run = Run {
        app: app.clone(),
        who: who.clone(),
        release: runnable.release,
        subject_pseudonym: app.pseudonyms.pseudonym(&request.subject),
        decisions: Vec::new(),
    };
    let (answer, subject) = run
        .go(
            context.clone(),
            &request.subject,
            &key,
            &location,
            manifest,
            runnable.module,
        )
        .await?;
    let Some((collection, record_key)) = store else {
        return Ok(answer);
    };
    // The outputs are written as the caller's own write, decided and logged as any.
    let Logged {
        index, mut body, ..
    } = answer;
    let fields: Vec<String> = body.output.keys().cloned().collect();
    let ask = Ask {
        who: &who,
        action: Action::Write,
        context,
    };
    let scope = Scope::Collection {
        subject: &subject,
        collection: &collection,
        fields: &fields,
        classes: vec![FieldClass::Interoperable],
    };
    let permit = app.decide(ask, scope).await.map_err(|e| {
        let message = format!(
            "{name} ran (log entry {index}), but writing its outputs was refused: {}",
            e.message
        );
        ApiError { message, ..e }
    })?;
    app.governed
        .put_record(&permit, &collection, &record_key, body.output.clone())
        .await?;
    body.stored = Some(Stored {
        collection,
        key: record_key,
        log_index: permit.index(),
    });
    Ok(Logged::ok(permit.index(), body))
}

/// Where a run's outputs go: a declared collection of interoperable fields only, among them
/// every output (400 `invalid_body` otherwise, before anything is decided).
fn store_target(
    app: &AppState,
    manifest: &algorithm::Manifest,
    store: StoreIn,
) -> AppResult<(String, String)> {
    let key = store.key.unwrap_or_else(|| DEFAULT_KEY.to_string());
    vault::validate_id("record key", &key)?;
    let declared = app.governed.declared(&store.collection)?;
    // A write replaces the whole record: one decided on the interoperable class must never
    // reach a collection that holds protected fields.
    if declared.values().any(|c| *c != FieldClass::Interoperable) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            format!(
                "`{}` holds protected fields; outputs are stored only in a collection of interoperable fields",
                store.collection
            ),
        ));
    }
    for output in &manifest.outputs {
        if declared.get(&output.name) != Some(&FieldClass::Interoperable) {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidBody,
                format!(
                    "the output `{}` is not an interoperable field of `{}`: its outputs can be stored only where each is one",
                    output.name, store.collection
                ),
            ));
        }
    }
    Ok((store.collection, key))
}

/// One run in progress: what its entry names.
struct Run {
    app: Arc<AppState>,
    who: Authenticated,
    release: custody::Release,
    subject_pseudonym: String,
    /// The log indexes of its decisions so far.
    decisions: Vec<u64>,
}

/// How a run ended, as its entry says.
struct Ended {
    outcome: &'static str,
    fields_read: Vec<String>,
    fuel_used: Option<u64>,
    duration: Option<Duration>,
    output_sha256: Option<String>,
    error: Option<String>,
}

impl Ended {
    /// A run that ended before its module ran: denied, stopped, or failed reading its input.
    fn early(outcome: &'static str, error: Option<String>) -> Ended {
        Ended {
            outcome,
            fields_read: Vec::new(),
            fuel_used: None,
            duration: None,
            output_sha256: None,
            error,
        }
    }
}

impl Run {
    async fn go(
        mut self,
        context: policy::Context,
        subject_id: &str,
        key: &str,
        location: &str,
        manifest: algorithm::Manifest,
        module: Vec<u8>,
    ) -> AppResult<(Logged<RunBody>, vault::SubjectPlacement)> {
        let app = self.app.clone();
        // May the caller run an algorithm for this subject?
        let ask = Ask {
            who: &self.who,
            action: Action::Run,
            context: context.clone(),
        };
        let found = app.find_subject(&ask, subject_id, &[]).await;
        let subject = self.decided(found).await?;
        let ask = Ask {
            who: &self.who,
            action: Action::Run,
            context: context.clone(),
        };
        let allowed = app.decide(ask, Scope::Subject(&subject)).await;
        let permit = self.decided(allowed).await?;
        self.decisions.push(permit.index());

        // May the release read what its manifest names? The release is the principal, and
        // only while it is the active one (checked under the custody gate as it is decided).
        let principal = release_principal(&self.release, location);
        let mut permits: Vec<(Permit, Vec<String>)> = Vec::new();
        for read in &manifest.reads {
            let declared = app.governed.declared(&read.collection)?;
            let mut classes: Vec<FieldClass> = Vec::new();
            for field in &read.fields {
                let class = *declared.get(field).ok_or_else(|| {
                    ApiError::internal(format!(
                        "a released manifest reads `{}.{field}`, which the configuration no longer declares",
                        read.collection
                    ))
                })?;
                if !classes.contains(&class) {
                    classes.push(class);
                }
            }
            let ask = Ask {
                who: &principal,
                action: Action::Compute,
                context: policy::Context {
                    purpose: manifest.purpose.clone(),
                    grant: policy::GRANT_RELEASE.to_string(),
                    time: context.time,
                    ..policy::Context::default()
                },
            };
            let scope = Scope::Collection {
                subject: &subject,
                collection: &read.collection,
                fields: &read.fields,
                classes,
            };
            let allowed = app.decide(ask, scope).await;
            let permit = self.decided(allowed).await?;
            self.decisions.push(permit.index());
            permits.push((permit, read.fields.clone()));
        }

        // From here the run finishes, and is logged, even if the client goes away or the
        // request times out: the slot it holds, the module's work and its entry go together.
        let key = key.to_string();
        let jurisdiction = subject.jurisdiction.clone();
        let (run, ran, index, outcome) = detached(async move {
            let (ended, ran) = self.execute(&permits, &key, manifest, module).await;
            let (index, outcome) = self.log(ended, &jurisdiction).await?;
            Ok((self, ran, index, outcome))
        })
        .await?;
        let release = &run.release;
        match (ran, outcome) {
            (Ok(out), "ok") => Ok((
                Logged::ok(
                    index,
                    RunBody {
                        algorithm: release.name.clone(),
                        version: release.version.clone(),
                        sha256: release.sha256.clone(),
                        manifest_sha256: release.manifest_sha256.clone().unwrap_or_default(),
                        output: out.output,
                        output_sha256: out.output_sha256,
                        fuel_used: logged_fuel(out.fuel_used),
                        duration_us: u64::try_from(out.duration.as_micros())
                            .unwrap_or(u64::MAX),
                        decisions: run.decisions,
                        stored: None,
                    },
                ),
                subject,
            )),
            (_, "stopped") => Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::NotActive,
                format!(
                    "{} {} was deactivated or replaced, or the subject's jurisdiction suspended, while it ran; nothing of its output is served",
                    release.name, release.version
                ),
            )
            .logged(index)),
            (Err(e), _) => Err(e.logged(index)),
            (Ok(_), _) => Err(ApiError::internal("a run logged neither ok nor stopped").logged(index)),
        }
    }

    /// Reads the input the permits allow and runs the module in a slot: how it ended, for
    /// the entry, and the outcome or the error to answer.
    async fn execute(
        &self,
        permits: &[(Permit, Vec<String>)],
        key: &str,
        manifest: algorithm::Manifest,
        module: Vec<u8>,
    ) -> (Ended, AppResult<algorithm::Outcome>) {
        let app = &self.app;
        // Only the fields allowed and named reach the module.
        let input = match app.governed.algorithm_input(permits, key).await {
            Ok(input) => input,
            Err(e) => {
                let code = serde_json::to_value(e.code).unwrap_or_default();
                let why = format!(
                    "its input could not be read: {}",
                    code.as_str().unwrap_or("?")
                );
                return (Ended::early("failed", Some(why)), Err(e));
            }
        };
        let fields_read: Vec<String> = input
            .fields
            .iter()
            .flat_map(|(c, fields)| fields.keys().map(move |f| format!("{c}.{f}")))
            .collect();
        let ran = async {
            let runtime = app.algorithms.runtime()?;
            // At most `algorithms.concurrent_runs` at once: each may take its manifest's
            // memory.
            let _slot = app.algorithms.slot().await?;
            blocking(move || runtime.run(&manifest, &module, &input)).await
        }
        .await;
        let name = format!("{} {}", self.release.name, self.release.version);
        match ran {
            Ok(Ok(outcome)) => (
                Ended {
                    outcome: "ok",
                    fields_read,
                    fuel_used: Some(logged_fuel(outcome.fuel_used)),
                    duration: Some(outcome.duration),
                    output_sha256: Some(outcome.output_sha256.clone()),
                    error: None,
                },
                Ok(outcome),
            ),
            Ok(Err(e)) => (
                Ended {
                    error: Some(e.to_string()),
                    fields_read,
                    ..Ended::early("failed", None)
                },
                Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::AlgorithmFailed,
                    format!("{name} failed: {e}; nothing of its output is served"),
                )),
            ),
            Err(e) => (
                Ended {
                    error: Some("the gateway could not run it".into()),
                    fields_read,
                    ..Ended::early("failed", None)
                },
                Err(e),
            ),
        }
    }

    /// A decision's result; a logged denial is logged as a run too (outcome `denied`), a
    /// release no longer active as `stopped`, and each answered with that entry's index.
    async fn decided<T>(&self, result: AppResult<T>) -> AppResult<T> {
        let e = match result {
            Ok(t) => return Ok(t),
            Err(e) => e,
        };
        let mut decisions = self.decisions.clone();
        let outcome = match e.log_index {
            Some(decision) => {
                decisions.push(decision);
                "denied"
            }
            None if e.code == ErrorCode::NotActive => "stopped",
            None => return Err(e),
        };
        let run = Run {
            app: self.app.clone(),
            who: self.who.clone(),
            release: self.release.clone(),
            subject_pseudonym: self.subject_pseudonym.clone(),
            decisions,
        };
        let (index, _) = run.log(Ended::early(outcome, None), "").await?;
        Err(e.logged(index))
    }

    /// Appends the run's entry under the custody gate. A run that ran (`ok` or `failed`) is
    /// `stopped` instead when its release is no longer the active one or the subject's
    /// jurisdiction is suspended by then: its output is not served. Answers the index and the
    /// outcome logged.
    async fn log(&self, ended: Ended, jurisdiction: &str) -> AppResult<(u64, &'static str)> {
        let app = self.app.clone();
        let who = self.who.clone();
        let release = self.release.clone();
        let pseudonym = self.subject_pseudonym.clone();
        let decisions = self.decisions.clone();
        let jurisdiction = jurisdiction.to_string();
        // The entry must be written even if the client goes away meanwhile.
        detached(async move {
            let mut logged = ended.outcome;
            let index = app
                .append_in_force(|custody| {
                    let in_force = custody
                        .release(&release.name, &release.version)
                        .is_ok_and(|r| r.status() == "active")
                        && !custody.is_suspended(&jurisdiction);
                    if matches!(logged, "ok" | "failed") && !in_force {
                        logged = "stopped";
                    }
                    entry::data_event_entry(
                        DataEvent::AlgorithmRun,
                        Some(&who),
                        run_details(&release, &pseudonym, &decisions, &ended, logged),
                    )
                })
                .await?;
            app.analytics.observe_run(&release.name, logged);
            Ok((index, logged))
        })
        .await
    }
}

/// The fuel a run used, as its public log entry shows it: rounded up to a power of two, so
/// that a module cannot spell out what it read, bit by bit, in the exact count every
/// reader of the log sees (a power of two of at most 2^34 says about 5 bits).
fn logged_fuel(fuel: u64) -> u64 {
    fuel.checked_next_power_of_two().unwrap_or(u64::MAX)
}

/// The `algorithm-run` entry's details: names, digests, counts and a pseudonym; never a
/// field value or a subject id.
fn run_details(
    release: &custody::Release,
    subject_pseudonym: &str,
    decisions: &[u64],
    ended: &Ended,
    outcome: &str,
) -> Value {
    json!({
        "algorithm": release.name,
        "version": release.version,
        "sha256": release.sha256,
        "manifest_sha256": release.manifest_sha256,
        "subject": subject_pseudonym,
        "fields_read": ended.fields_read,
        "decisions": decisions,
        "fuel_used": ended.fuel_used,
        // Milliseconds, rounded up to a power of two, for the reason `logged_fuel` gives.
        "duration_ms": ended
            .duration
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1).next_power_of_two()),
        "output_sha256": ended.output_sha256,
        "outcome": outcome,
        "error": ended.error,
    })
}
