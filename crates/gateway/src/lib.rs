//! The Sovereign gateway: an axum service that composes authentication (`auth`), Cedar
//! decisions (the `policy` crate) and the residency-pinned vault (the `vault` crate) into one
//! request path. `api` holds the routes; `config` the configuration file; `setup` the default
//! setup that `sovereign init` writes.

// `ApiError` carries a JSON body's extra members; it is built once per failed request, so
// boxing it to shrink `Result` would buy nothing measurable.
#![allow(clippy::result_large_err)]

pub mod analytics;
pub mod analytics_api;
pub mod api;
pub mod auth;
pub mod config;
pub mod custody_api;
pub mod custody_log;
pub mod data_api;
pub mod entry;
pub mod error;
pub mod log_api;
pub mod pipeline;
pub mod proof;
pub mod serve;
pub mod setup;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::error::ApiError;

/// What every request handler shares.
pub struct AppState {
    pub config: Config,
    pub data_dir: PathBuf,
    pub auth: Authenticator,
    /// The active policy set; replaced whole when the custodian activates another.
    policy: RwLock<Arc<policy::PolicyEngine>>,
    /// The vault, reachable only through the pipeline's permits.
    pub governed: pipeline::Governed,
    /// Decisions hold it shared, custodian changes exclusively: a decision is made against
    /// the custody state as of its log index (see `pipeline.rs`).
    custody_gate: Arc<tokio::sync::RwLock<()>>,
    /// Access requests, grants, policy sets, releases and the kill switch.
    pub custody: Arc<custody::Custody>,
    /// The transparency log: every decision is appended before it is answered.
    pub log: Arc<logstore::Log>,
    pub pseudonyms: entry::Pseudonymizer,
    /// Subject pseudonyms in egress, under a key of their own (never the log's).
    pub egress_pseudonyms: entry::Pseudonymizer,
    /// Seals egress cursors, which name subject ids, for the platform to hold.
    pub cursor_seal: data_api::CursorSeal,
    /// The OpenAPI document, generated from the routes at start.
    pub openapi: serde_json::Value,
    /// Live counts, metrics and alerts: the dashboard's and Prometheus's view.
    pub analytics: analytics::Analytics,
    /// Proofs that may run at once (each runs a cvc5 process); others wait their turn.
    pub proof_slots: tokio::sync::Semaphore,
}

/// A loaded, ready-to-serve gateway.
pub struct Gateway {
    state: Arc<AppState>,
    router: Router,
}

impl Gateway {
    /// Loads and checks everything (configuration, keys, policies, stores) before serving.
    pub fn open(data_dir: &Path) -> anyhow::Result<Gateway> {
        let config = Config::load(data_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
        let auth = Authenticator::new(&config, data_dir)?;
        let vault = vault::Vault::open(config.layout(), data_dir, config.server.store_readers)
            .context("cannot open the site stores")?
            .with_envelope(open_envelope(&config, data_dir)?);
        let egress_pseudonyms = read_pseudonym_key(data_dir, &config.egress.pseudonym_key)?;
        let (log, pseudonyms) = open_log(&config, data_dir)?;
        let log = Arc::new(log);
        let auth = auth.with_subject_pseudonyms(pseudonyms.clone());
        let custody = open_custody(&config, data_dir, log.clone())?;
        let policy = active_policy(&config, data_dir, &custody, &log, &pseudonyms)?;
        // The configuration and policies in force are the first thing the log records.
        log.append_blocking(entry::config_entry(
            "start",
            policy.policy_set_hash(),
            &policy.policy_ids(),
            &config.source_sha256,
        ))
        .context("cannot write the start entry to the transparency log")?;
        tracing::info!(
            policy_set = policy.policy_set_hash(),
            policies = policy.policy_ids().len(),
            sites = config.sites.len(),
            "loaded"
        );

        let (api_router, openapi) = api::routes().split_for_parts();
        let openapi =
            serde_json::to_value(&openapi).context("cannot render the OpenAPI document")?;
        let body_limit = config.server.body_limit_bytes;
        let analytics_settings = config.analytics.clone();
        let timeout = Duration::from_secs(config.server.request_timeout_seconds);
        let state = Arc::new(AppState {
            config,
            data_dir: data_dir.to_path_buf(),
            auth,
            policy: RwLock::new(Arc::new(policy)),
            governed: pipeline::Governed::new(Arc::new(vault)),
            custody_gate: Arc::default(),
            cursor_seal: data_api::CursorSeal::new(&egress_pseudonyms),
            custody: Arc::new(custody),
            log,
            pseudonyms,
            egress_pseudonyms,
            openapi,
            analytics: analytics::Analytics::new(analytics_settings),
            proof_slots: tokio::sync::Semaphore::new(proof::CONCURRENT_PROOFS),
        });
        let router = api_router
            .fallback(no_route)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(DefaultBodyLimit::max(body_limit))
            .layer(middleware::from_fn_with_state(timeout, request_timeout))
            .layer(middleware::from_fn_with_state(state.clone(), log_request))
            .with_state(state.clone());
        Ok(Gateway { state, router })
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight (open event
    /// streams are ended first). Connections are limited as `[server]` says (`serve.rs`).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let ticker = tokio::spawn(analytics_ticker(self.state.clone()));
        let limits = serve::Limits::from_config(&self.state.config.server);
        serve::serve(listener, self.router, self.state.clone(), limits, shutdown).await;
        ticker.abort();
        let _ = ticker.await;
        // The state may hold the last handles on PostgreSQL clients, whose synchronous
        // driver blocks on its own runtime when they close: never on an async thread.
        let state = self.state;
        let _ = tokio::task::spawn_blocking(move || drop(state)).await;
        Ok(())
    }
}

impl AppState {
    /// The policy set in force now.
    pub fn policy(&self) -> Arc<policy::PolicyEngine> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Access requests waiting for approval now.
    pub fn pending_requests(&self) -> Vec<custody::AccessRequest> {
        let now = auth::now_unix();
        self.custody
            .requests()
            .into_iter()
            .filter(|r| r.status(now) == custody::Status::Pending)
            .collect()
    }

    /// The analytics summary the stream sends.
    pub fn summary(&self) -> serde_json::Value {
        self.analytics.summary(
            &self.log,
            &self.pending_requests(),
            &self.config.restricted_countries,
        )
    }

    /// Raises an alert: logs it as an `alert` entry, then publishes it to the dashboard and
    /// the stream. A repeat within `analytics.alert_repeat_seconds` of the same alert about
    /// the same principal is only counted. Fails (503) if the log cannot take it, so that
    /// an access that should have raised an alert is not served without one.
    pub async fn raise_alert(
        &self,
        alert: analytics::AlertRequest,
        who: Option<&auth::Authenticated>,
    ) -> Result<Option<u64>, ApiError> {
        let principal = who.map(|w| w.public_id.as_str());
        if !self.analytics.should_raise(alert.kind, principal) {
            return Ok(None);
        }
        tracing::warn!(
            alert = alert.kind.as_str(),
            principal = principal.unwrap_or(""),
            "ALERT {}",
            alert.message
        );
        let entry = entry::alert_entry(
            alert.kind.as_str(),
            alert.kind.severity(),
            who,
            alert.details.clone(),
        );
        let index = self.append(entry).await;
        self.analytics
            .publish_alert(&alert, who, index.as_ref().ok().copied());
        index.map(Some)
    }

    /// Appends an entry; 503 if the log cannot take it.
    pub async fn append(&self, entry: Vec<u8>) -> Result<u64, ApiError> {
        let started = Instant::now();
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

    /// Takes up custody changes that another gateway on the same data folder committed (a
    /// policy activation, the kill switch, grants), so that every gateway decides alike within
    /// about a second. State that does not verify (the custody crate checks signatures,
    /// thresholds, proofs and log indices, and through `custody_log.rs` the log entries and
    /// the sets' text hashes) is refused: the last verified state stays in
    /// force, and the problem is answered for an alert. Other failures keep the state too and
    /// are logged.
    pub fn take_up_custody_changes(&self) -> Option<String> {
        match self.custody.refresh() {
            Ok(false) => None,
            Ok(true) => {
                let active = self.custody.active_policy()?;
                if active.hash == self.policy().policy_set_hash() {
                    return None;
                }
                let engine = match verified_engine(&active) {
                    Ok(engine) => engine,
                    Err(problem) => {
                        tracing::error!(policy_set = %active.hash, "{problem}; the policy set in force stays");
                        return Some(problem);
                    }
                };
                tracing::info!(policy_set = %active.hash, "policy set activated by another gateway, now in force here");
                self.set_policy(engine);
                None
            }
            Err(e @ custody::CustodyError::Unverified { .. }) => {
                tracing::error!(error = %e, "refused the custody store's state; the last verified state stays in force");
                Some(e.to_string())
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the custody store for changes");
                None
            }
        }
    }

    pub fn set_policy(&self, engine: policy::PolicyEngine) {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(engine);
    }
}

/// The custodian's envelope: the key-encryption key (with the reasons it may unwrap for) and
/// the key store of wrapped data keys.
pub fn open_envelope(config: &Config, data_dir: &Path) -> anyhow::Result<vault::Envelope> {
    let reasons = config
        .keys
        .allowed_reasons
        .iter()
        .filter_map(|r| vault::UnwrapReason::parse(r).ok())
        .collect();
    let kek_path = data_dir.join(&config.keys.kek);
    let manager = vault::LocalKeyManager::from_file(&kek_path, reasons)
        .with_context(|| format!("cannot load the key-encryption key {}", kek_path.display()))?;
    let store_path = data_dir.join(&config.keys.store);
    let store = vault::DataKeyStore::open(&store_path)
        .with_context(|| format!("cannot open the key store {}", store_path.display()))?;
    Ok(vault::Envelope::new(Arc::new(manager), store))
}

fn read_pseudonym_key(data_dir: &Path, path: &Path) -> anyhow::Result<entry::Pseudonymizer> {
    let full = data_dir.join(path);
    entry::Pseudonymizer::from_hex(
        &std::fs::read_to_string(&full)
            .with_context(|| format!("cannot read {}", full.display()))?,
    )
    .with_context(|| format!("{}", full.display()))
}

/// Opens the custody database with the custodian's verifier keys; what is in force must be
/// what the log recorded (`custody_log.rs`).
pub fn open_custody(
    config: &Config,
    data_dir: &Path,
    log: Arc<logstore::Log>,
) -> anyhow::Result<custody::Custody> {
    let c = &config.custody;
    let verifiers = c
        .signers
        .iter()
        .map(|path| custody::statement::load_verifier(&data_dir.join(path)))
        .collect::<Result<Vec<_>, _>>()?;
    let keys = custody::Keys {
        verifiers,
        policy_threshold: c.policy_threshold,
        release_threshold: c.release_threshold,
        kill_switch_threshold: c.kill_switch_threshold,
    };
    custody::Custody::open_with_ledger(
        &data_dir.join(&c.store),
        &data_dir.join(&c.artifacts),
        keys,
        Arc::new(custody_log::LogLedger::new(log)),
    )
    .context("cannot open the custody store")
}

/// The policy set to serve: the one the custodian last activated. On the very first start
/// there is none, and the configured files become the first active set, but only with the
/// custodian's signed activation statement beside them and proofs that they satisfy the
/// invariants. Whatever set is served has passing proofs against the invariants in force.
fn active_policy(
    config: &Config,
    data_dir: &Path,
    custody: &custody::Custody,
    log: &logstore::Log,
    pseudonyms: &entry::Pseudonymizer,
) -> anyhow::Result<policy::PolicyEngine> {
    let files = read_policy_files(config, data_dir)?;
    let file_hash = policy::policy_set_hash(&files.schema, &files.policies);
    let settings = proof::Settings::from_config(&config.policy);
    let append = |event: custody::Event<'_>| {
        log.append_blocking(entry::custody_entry(&event, None, pseudonyms))
            .map_err(|e| e.to_string())
    };
    let active = custody.active_policy();
    let invariants = active_invariants(
        config,
        data_dir,
        custody,
        active.as_ref(),
        &files,
        &settings,
        &append,
    )?;

    if let Some(active) = active {
        if active.hash != file_hash {
            tracing::warn!(
                active = active.hash,
                file = file_hash,
                "the policy files differ from the active policy set and are ignored; change policies with `sovereign policy propose | sign | activate`"
            );
        }
        // Custody opened only if this set carries passing proofs against the invariants in
        // force (its own, or its invariant set's): nothing to prove again here.
        return verified_engine(&active).map_err(|problem| anyhow::anyhow!("{problem}"));
    }

    let engine = files.engine()?;
    let signature_path = data_dir.join(&config.policy.signature);
    let signed = std::fs::read(&signature_path)
        .with_context(|| format!("cannot read {}", signature_path.display()))?;
    let proofs = proof::prove_policy(&files.schema, &files.policies, &invariants, &settings)
        .map_err(|refusal| {
            anyhow::anyhow!(
                "the first policy set ({}): {refusal}",
                files.policies_path.display()
            )
        })?;
    let record = custody::PolicySetRecord {
        hash: file_hash.clone(),
        schema: files.schema,
        policies: files.policies,
        policy_ids: engine.policy_ids(),
        proposed_by: configuration(),
        proposed_at: auth::now_unix(),
        activated_at: None,
        signature: None,
        signers: Vec::new(),
        proofs: None,
        log_index: None,
    };
    custody.propose_policy(record, &append)?;
    custody
        .activate_policy(&file_hash, &signed, proofs, auth::now_unix(), &append, |_| {})
        .map_err(|e| {
            anyhow::anyhow!(
                "the first policy set ({}) is not activated by a valid custodian signature in {}: {e}\n\
                 the custodian signs it with `sovereign policy sign-file {} --schema {} --key CUSTODIAN_KEY --out {}`",
                data_dir.join(&config.policy.policies).display(),
                signature_path.display(),
                data_dir.join(&config.policy.policies).display(),
                data_dir.join(&config.policy.schema).display(),
                signature_path.display(),
            )
        })?;
    Ok(engine)
}

/// Loads a policy set from custody (whose text the custody store's ledger has checked
/// against the signed hash, `custody_log.rs`).
fn verified_engine(set: &custody::PolicySetRecord) -> Result<policy::PolicyEngine, String> {
    policy::PolicyEngine::new(&set.schema, &set.policies)
        .map_err(|e| format!("the policy set {} does not load here: {e}", set.hash))
}

/// Who proposes what the configuration's files hold on the first start.
fn configuration() -> custody::Person {
    custody::Person {
        id: "(configuration)".into(),
        entity: "custodian".into(),
    }
}

/// The invariants in force: the set the custodian last activated. On the first start there
/// is none (or, for a data folder from before invariants, only a policy set), and the
/// configured file becomes the first invariant set, but only with the custodian's signed
/// activation statement beside it and, if a policy set is already active, proofs that the
/// set keeps the invariants. After that they change through the API, like policies.
fn active_invariants(
    config: &Config,
    data_dir: &Path,
    custody: &custody::Custody,
    active_policy: Option<&custody::PolicySetRecord>,
    files: &PolicyFiles,
    settings: &proof::Settings,
    append: custody::LogFn<'_>,
) -> anyhow::Result<prove::Invariants> {
    let path = data_dir.join(&config.policy.invariants);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the invariants file {}", path.display()))?;
    // Checked against the schema the policies in force (or about to be) are validated with.
    let schema = active_policy.map_or(files.schema.as_str(), |p| p.schema.as_str());
    let parse = |text: &str| proof::parse_invariants(schema, text);
    if let Some(current) = custody.active_invariants() {
        if parse(&text).ok().as_ref().map(|i| i.hash()) != Some(current.hash.as_str()) {
            tracing::warn!(
                active = current.hash,
                file = %path.display(),
                "the invariants file differs from the invariant set in force and is ignored; change invariants with `sovereign policy propose-invariants | sign-invariants | activate-invariants`"
            );
        }
        return parse(&current.text).map_err(|e| {
            anyhow::anyhow!(
                "the invariant set in force ({}) no longer parses: {e}",
                current.hash
            )
        });
    }
    let invariants = parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let changed = format!(
        "the invariants in {} ({})",
        path.display(),
        invariants.hash()
    );
    let signature_path = data_dir.join(&config.policy.invariants_signature);
    let sign_hint = format!(
        "the custodian signs them with `sovereign policy sign-invariants {} --key CUSTODIAN_KEY --out {}`",
        path.display(),
        signature_path.display()
    );
    let signed = std::fs::read(&signature_path).with_context(|| {
        format!(
            "{changed} and take effect only with the custodian's signature, but {} cannot be read; {sign_hint}",
            signature_path.display()
        )
    })?;
    let proofs = match active_policy {
        Some(active) => Some(
            proof::prove_policy(&active.schema, &active.policies, &invariants, settings).map_err(
                |refusal| {
                    anyhow::anyhow!(
                        "{changed}; they are not activated, because the active policy set {} must satisfy them: {refusal}",
                        active.hash
                    )
                },
            )?,
        ),
        None => None,
    };
    let record = custody::InvariantSetRecord {
        hash: invariants.hash().to_string(),
        text,
        names: invariants.iter().map(|i| i.name().to_string()).collect(),
        proposed_by: configuration(),
        proposed_at: auth::now_unix(),
        activated_at: None,
        signature: None,
        signers: Vec::new(),
        proofs: None,
        log_index: None,
    };
    custody.propose_invariants(record.clone(), append)?;
    custody
        .activate_invariants(record, &signed, proofs, auth::now_unix(), append)
        .map_err(|e| {
            anyhow::anyhow!(
                "{changed} and are not activated by the custodian's signature in {}: {e}\n{sign_hint}",
                signature_path.display()
            )
        })?;
    tracing::info!(
        invariant_set = invariants.hash(),
        invariants = invariants.len(),
        "invariants activated"
    );
    Ok(invariants)
}

/// The policy texts named by the configuration.
pub struct PolicyFiles {
    pub schema_path: PathBuf,
    pub policies_path: PathBuf,
    pub schema: String,
    pub policies: String,
}

impl PolicyFiles {
    /// Validates every policy against the schema.
    pub fn engine(&self) -> anyhow::Result<policy::PolicyEngine> {
        policy::PolicyEngine::new(&self.schema, &self.policies).map_err(|e| {
            anyhow::anyhow!(
                "policies refused ({} against {}):\n{e}",
                self.policies_path.display(),
                self.schema_path.display()
            )
        })
    }
}

pub fn read_policy_files(config: &Config, data_dir: &Path) -> anyhow::Result<PolicyFiles> {
    let schema_path = data_dir.join(&config.policy.schema);
    let policies_path = data_dir.join(&config.policy.policies);
    let schema = std::fs::read_to_string(&schema_path)
        .with_context(|| format!("cannot read {}", schema_path.display()))?;
    let policies = std::fs::read_to_string(&policies_path)
        .with_context(|| format!("cannot read {}", policies_path.display()))?;
    Ok(PolicyFiles {
        schema_path,
        policies_path,
        schema,
        policies,
    })
}

/// Opens the transparency log with its signing key, and the subject pseudonym key.
pub fn open_log(
    config: &Config,
    data_dir: &Path,
) -> anyhow::Result<(logstore::Log, entry::Pseudonymizer)> {
    let key_path = data_dir.join(&config.log.signer_key);
    let skey = std::fs::read_to_string(&key_path)
        .with_context(|| format!("cannot read the log key {}", key_path.display()))?;
    let signer = tlog::note::Signer::new(skey.trim()).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a signed-note signer key: {e}",
            key_path.display()
        )
    })?;
    let pseudonyms = read_pseudonym_key(data_dir, &config.log.pseudonym_key)?;
    let options = logstore::LogOptions {
        checkpoint_interval: Duration::from_millis(config.log.checkpoint_interval_ms),
        max_batch: config.log.max_batch,
        readers: config.log.readers,
        integration_deadline: Duration::from_secs(config.log.integration_deadline_seconds),
        ..logstore::LogOptions::default()
    };
    let log = logstore::Log::open_url(&config.log.store, data_dir, signer, options)
        .context("cannot open the transparency log")?;
    Ok((log, pseudonyms))
}

/// Once a second: ends the analytics' current second, checks that the log keeps checkpointing,
/// and sends the summary to the stream's clients (if any).
async fn analytics_ticker(state: Arc<AppState>) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    interval.tick().await;
    loop {
        interval.tick().await;
        state.analytics.tick();
        // Off the async threads: it may read an entry from the log.
        let checking = state.clone();
        let late =
            tokio::task::spawn_blocking(move || checking.analytics.checkpoint_late(&checking.log))
                .await
                .ok()
                .flatten();
        if let Some(alert) = late {
            // On its own task: a log that does not checkpoint may not take appends either,
            // and the ticker must go on.
            let state = state.clone();
            tokio::spawn(async move {
                let _ = state.raise_alert(alert, None).await;
            });
        }
        if state.analytics.has_watchers() {
            let summary = state.summary();
            state.analytics.publish_summary(&summary);
        }
        // Another gateway's custody changes come in like this gateway's own: with no
        // decision in flight across them.
        if let Ok(Some(problem)) = state
            .custody_change(|app| app.take_up_custody_changes())
            .await
        {
            let alert = analytics::AlertRequest {
                kind: analytics::AlertKind::CustodyUnverified,
                message: format!("the custody store's state does not verify: {problem}"),
                details: serde_json::json!({"problem": problem}),
            };
            let _ = state.raise_alert(alert, None).await;
        }
    }
}

async fn no_route() -> ApiError {
    ApiError::not_found("no_route", "no such route; see /openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method; see /openapi.json",
    )
}

/// One line per request in the service log, and the request metrics: the route template
/// (not the concrete path, so that ids stay out of the log), the status and the time taken.
/// Every label comes from a known set (route templates, standard methods, statuses), never
/// from what a client sent: one label for every unmatched path, one for every other method.
/// Answers 503 `timeout` (JSON, like every error) when a request takes longer than
/// `server.request_timeout_seconds`; the handler is dropped, as a disconnect drops it (work
/// that must finish with its log entry runs on its own task).
async fn request_timeout(
    axum::extract::State(limit): axum::extract::State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the request took longer than {} s (server.request_timeout_seconds)",
                limit.as_secs()
            ),
        )
        .into_response(),
    }
}

async fn log_request(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let method = analytics::method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| analytics::NO_ROUTE_LABEL.into());
    let started = Instant::now();
    let response = next.run(request).await.into_response();
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    tracing::info!(
        method,
        route,
        status,
        micros = elapsed.as_micros() as u64,
        "request"
    );
    state.analytics.record(|| {
        metrics::counter!(
            "sovereign_http_requests_total",
            "route" => route.clone(),
            "method" => method,
            "status" => status.to_string(),
        )
        .increment(1);
        metrics::histogram!(
            "sovereign_http_request_duration_seconds",
            "route" => route,
            "method" => method,
        )
        .record(elapsed.as_secs_f64());
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_slow_request_gets_a_json_503() {
        let router = Router::new()
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route("/fast", axum::routing::get(|| async { "on time" }))
            .layer(middleware::from_fn_with_state(
                Duration::from_millis(50),
                request_timeout,
            ));
        let call = |path: &'static str| {
            let router = router.clone();
            async move {
                let request = Request::get(path).body(axum::body::Body::empty()).unwrap();
                let response = router.oneshot(request).await.unwrap();
                let status = response.status();
                let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
                    .await
                    .unwrap();
                (status, String::from_utf8(bytes.to_vec()).unwrap())
            }
        };
        let (status, body) = call("/slow").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"], "timeout");
        assert_eq!(call("/fast").await, (StatusCode::OK, "on time".to_string()));
    }
}
