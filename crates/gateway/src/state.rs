//! What every request handler shares: the loaded configuration, the authenticator, the policy
//! set in force, the vault behind the pipeline, custody, the log and the analytics.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::http::StatusCode;

use crate::auth::{self, Authenticator};
use crate::config::Config;
use crate::cursor::CursorSeal;
use crate::http::error::{ApiError, ErrorCode};
use crate::pipeline::governed::Governed;
use crate::pseudonym::Pseudonymizer;
use crate::{analytics, entry};

/// What every request handler shares.
pub struct AppState {
    pub config: Config,
    pub data_dir: PathBuf,
    pub auth: Authenticator,
    /// The active policy set; replaced whole when the custodian activates another.
    pub(crate) policy: RwLock<Arc<policy::PolicyEngine>>,
    /// The vault, reachable only through the pipeline's permits.
    pub governed: Governed,
    /// Decisions hold it shared, custodian changes exclusively: a decision is made against
    /// the custody state as of its log index (see `pipeline/mod.rs`).
    pub(crate) custody_gate: Arc<tokio::sync::RwLock<()>>,
    /// Access requests, grants, policy sets, releases and the kill switch.
    pub custody: Arc<custody::Custody>,
    /// The transparency log: every decision is appended before it is answered.
    pub log: Arc<logstore::Log>,
    pub pseudonyms: Pseudonymizer,
    /// Subject pseudonyms in egress, under a key of their own (never the log's).
    pub egress_pseudonyms: Pseudonymizer,
    /// Seals egress cursors, which name subject ids, for the platform to hold.
    pub cursor_seal: CursorSeal,
    /// The OpenAPI document, generated from the routes at start.
    pub openapi: serde_json::Value,
    /// Live counts, metrics and alerts: the dashboard's and Prometheus's view.
    pub analytics: analytics::Analytics,
    /// The whole fleet's decisions, counted from the shared log.
    pub fleet: crate::fleet_view::FleetView,
    /// Proofs that may run at once (each runs a cvc5 process); others wait their turn.
    pub proof_slots: tokio::sync::Semaphore,
    /// The witnesses that cosign checkpoints, if `log.witness_quorum` is above 0.
    pub witnessing: Option<Arc<crate::witnessing::Witnessing>>,
    /// The sandbox custodian-released algorithms run in, and where.
    pub algorithms: crate::algorithms::Algorithms,
    /// The log's entries by the subject pseudonyms they name, for subjects' histories.
    pub history_index: logstore::SubjectIndex,
}

impl AppState {
    /// The checkpoint `/log/checkpoint` serves: the newest with the witnesses' quorum of
    /// cosignatures, or without witnesses the log's latest (size `u64::MAX` while none).
    pub fn served_checkpoint(&self) -> Arc<logstore::Published> {
        match &self.witnessing {
            Some(w) => w.served(),
            None => self.log.checkpoint(),
        }
    }

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
        let mut summary = self.analytics.summary(
            &self.log,
            self.served_checkpoint(),
            &self.pending_requests(),
            &self.config.restricted_countries,
        );
        summary["fleet"] = self.fleet.summary();
        // Whether the break-glass uses of the alerts shown were reviewed: the page marks them.
        let reviewed: serde_json::Map<String, serde_json::Value> = summary["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["break_glass"].as_str())
            .filter_map(|id| self.custody.request(id).ok())
            .map(|r| (r.id, serde_json::Value::Bool(r.review.is_some())))
            .collect();
        summary["break_glass_reviewed"] = serde_json::Value::Object(reviewed);
        if let Some(w) = &self.witnessing {
            summary["log"]["witnessing"] = w.status();
        }
        summary
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
                ErrorCode::LogUnavailable,
                "the transparency log cannot be written; nothing was served or changed",
            )
        })
    }

    /// Takes up custody changes that another gateway sharing the custody store committed (a
    /// policy activation, the kill switch, grants), so that every gateway decides alike within
    /// about a second. State that does not verify (the custody crate checks signatures,
    /// thresholds, proofs and log indices, and through `custody_log.rs` the log entries and
    /// the sets' text hashes) is refused: the last verified state stays in
    /// force, and the problem is answered for an alert. Other failures keep the state too and
    /// are logged.
    pub fn take_up_custody_changes(&self) -> Option<String> {
        let problem = match self.custody.refresh() {
            Ok(_) => None,
            Err(e @ custody::CustodyError::Unverified { .. }) => {
                tracing::error!(error = %e, "refused the custody store's state; the last verified state stays in force");
                Some(e.to_string())
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the custody store for changes");
                None
            }
        };
        // Taken up by this refresh, or by a change made here since the last one (a change
        // catches up with the store first).
        if !self.custody.take_changed() {
            return problem;
        }
        let active = self.custody.active_policy()?;
        if active.hash == self.policy().policy_set_hash() {
            return problem;
        }
        match verified_engine(&active) {
            Ok(engine) => {
                tracing::info!(policy_set = %active.hash, "policy set activated by another gateway, now in force here");
                self.set_policy(engine);
                problem
            }
            Err(engine_problem) => {
                tracing::error!(policy_set = %active.hash, "{engine_problem}; the policy set in force stays");
                Some(engine_problem)
            }
        }
    }

    pub fn set_policy(&self, engine: policy::PolicyEngine) {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(engine);
    }
}

/// Loads a policy set from custody (whose text the custody store's ledger has checked
/// against the signed hash, `custody_log.rs`).
pub(crate) fn verified_engine(
    set: &custody::PolicySetRecord,
) -> Result<policy::PolicyEngine, String> {
    policy::PolicyEngine::new(&set.schema, &set.policies)
        .map_err(|e| format!("the policy set {} does not load here: {e}", set.hash))
}
