//! The Sovereign gateway: an axum service that composes authentication (`auth`), Cedar
//! decisions (the `policy` crate) and the residency-pinned vault (the `vault` crate) into one
//! request path. `api` holds the routes; `config` the configuration file; `setup` the default
//! setup that `sovereign init` writes.

// `ApiError` carries a JSON body's extra members; it is built once per failed request, so
// boxing it to shrink `Result` would buy nothing measurable.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod auth;
pub mod config;
pub mod entry;
pub mod error;
pub mod log_api;
pub mod setup;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tower_http::timeout::TimeoutLayer;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::error::ApiError;

/// What every request handler shares.
pub struct AppState {
    pub config: Config,
    pub data_dir: PathBuf,
    pub auth: Authenticator,
    pub policy: policy::PolicyEngine,
    pub vault: Arc<vault::Vault>,
    /// The transparency log: every decision is appended before it is answered.
    pub log: Arc<logstore::Log>,
    pub pseudonyms: entry::Pseudonymizer,
    /// The OpenAPI document, generated from the routes at start.
    pub openapi: serde_json::Value,
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
        let policy = load_policy(&config, data_dir)?;
        let vault = vault::Vault::open(config.layout(), data_dir, config.server.store_readers)
            .context("cannot open the site stores")?;
        let (log, pseudonyms) = open_log(&config, data_dir)?;
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
        let timeout = Duration::from_secs(config.server.request_timeout_seconds);
        let state = Arc::new(AppState {
            config,
            data_dir: data_dir.to_path_buf(),
            auth,
            policy,
            vault: Arc::new(vault),
            log: Arc::new(log),
            pseudonyms,
            openapi,
        });
        let router = api_router
            .fallback(no_route)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(DefaultBodyLimit::max(body_limit))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                timeout,
            ))
            .layer(middleware::from_fn(log_request))
            .with_state(state.clone());
        Ok(Gateway { state, router })
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        axum::serve(
            listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .context("server failed")
    }
}

/// Loads the Cedar schema and policies named by the configuration, validating every policy.
pub fn load_policy(config: &Config, data_dir: &Path) -> anyhow::Result<policy::PolicyEngine> {
    let schema_path = data_dir.join(&config.policy.schema);
    let policies_path = data_dir.join(&config.policy.policies);
    let schema = std::fs::read_to_string(&schema_path)
        .with_context(|| format!("cannot read {}", schema_path.display()))?;
    let policies = std::fs::read_to_string(&policies_path)
        .with_context(|| format!("cannot read {}", policies_path.display()))?;
    policy::PolicyEngine::new(&schema, &policies).map_err(|e| {
        anyhow::anyhow!(
            "policies refused ({} against {}):\n{e}",
            policies_path.display(),
            schema_path.display()
        )
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
    let pseudonym_path = data_dir.join(&config.log.pseudonym_key);
    let pseudonyms = entry::Pseudonymizer::from_hex(
        &std::fs::read_to_string(&pseudonym_path)
            .with_context(|| format!("cannot read {}", pseudonym_path.display()))?,
    )
    .with_context(|| format!("{}", pseudonym_path.display()))?;
    let store = config
        .log
        .store
        .strip_prefix("sqlite:")
        .context("log.store must be sqlite:PATH")?;
    let options = logstore::LogOptions {
        checkpoint_interval: Duration::from_millis(config.log.checkpoint_interval_ms),
        max_batch: config.log.max_batch,
        ..logstore::LogOptions::default()
    };
    let log = logstore::Log::open(&data_dir.join(store), signer, options)
        .context("cannot open the transparency log")?;
    Ok((log, pseudonyms))
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

/// One line per request in the service log: the route template (not the concrete path, so
/// that ids stay out of the log), the status and the time taken.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "(no route)".into());
    let started = Instant::now();
    let response = next.run(request).await.into_response();
    tracing::info!(
        %method,
        route,
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}
