//! The custodian's controls over HTTP: access requests and approvals, break-glass, policy
//! custody, algorithm custody and the kill switch. Every change is logged before it is
//! committed (see the `custody` crate); each answer carries its entry's index.
//!
//! Who may do what is decided here by role, not by the Cedar policy set, because these routes
//! are how that policy set itself changes:
//! - `custodian-approver`: approve, deny, revoke access requests; review break-glass uses;
//! - `break-glass`: start a break-glass use;
//! - `custodian-operator`: propose and activate policy sets, activate algorithm releases,
//!   apply kill-switch commands (activations still need custodian signatures);
//! - `algorithm-author` (or `custodian-operator`): submit algorithm artifacts.
//!
//! Nobody located in a restricted country may act on any of them.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::analytics::{AlertKind, AlertRequest};
use crate::auth::{Authenticated, now_unix};
use crate::entry;
use crate::http::error::{ApiError, AppResult, ErrorBody, ErrorCode};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, Caller, RawBody, parse_json};
use crate::http::response::{Logged, created_or_known};
use crate::http::tasks::blocking;
use crate::http::vocab::{
    LOG_INDEX_HEADER, ROLE_ALGORITHM_AUTHOR, ROLE_APPROVER, ROLE_BREAK_GLASS, ROLE_OPERATOR,
    SHA256_HEADER,
};
use crate::proof;
use crate::state::AppState;
use custody::{AccessRequest, Custody, CustodyError, Event, Person, Status};

mod algorithms;
mod invariants;
mod kill_switch;
mod policies;
mod requests;

/// The custodian's routes, one module per control.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .merge(requests::routes())
        .merge(policies::routes())
        .merge(invariants::routes())
        .merge(algorithms::routes())
        .merge(kill_switch::routes())
}

type Shared = State<Arc<AppState>>;

impl AppState {
    /// Appends a custody event to the log, from a blocking thread.
    fn log_custody<'a>(
        &'a self,
        who: Option<&'a Authenticated>,
    ) -> impl Fn(Event<'_>) -> Result<u64, String> + Sync + 'a {
        move |event| {
            self.log
                .append_blocking(entry::custody_entry(&event, who, &self.pseudonyms))
                .map_err(|e| e.to_string())
        }
    }

    /// The caller, after checking it holds one of `roles` and is not in a restricted country.
    fn custodian(&self, who: &Authenticated, roles: &[&str]) -> AppResult<()> {
        self.not_restricted(who)?;
        if !roles.is_empty() {
            who.require_role(roles)?;
        }
        Ok(())
    }

    fn not_restricted(&self, who: &Authenticated) -> AppResult<()> {
        if self
            .config
            .restricted_countries
            .contains(&who.principal.location)
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::RestrictedLocation,
                format!(
                    "custodian controls are not available from {}, a restricted country",
                    who.principal.location
                ),
            ));
        }
        Ok(())
    }
}

fn person(who: &Authenticated) -> Person {
    Person {
        id: who.principal.id.clone(),
        entity: who.principal.entity.clone(),
    }
}

fn rfc3339(unix: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// A signed statement sent as the request body.
fn note_body(bytes: Bytes) -> AppResult<Vec<u8>> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidSignature,
            "the body must be the signed statement (a signed note); it is empty",
        ));
    }
    Ok(bytes.to_vec())
}

/// Whether a policy or invariant set is the one in force, was, or never was.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum SetStatus {
    Active,
    Retired,
    Proposed,
}

impl SetStatus {
    /// The status of the set `hash`, activated at `activated_at` if ever, when `active` is
    /// the set in force.
    fn of(hash: &str, activated_at: Option<i64>, active: Option<&str>) -> SetStatus {
        if active == Some(hash) {
            SetStatus::Active
        } else if activated_at.is_some() {
            SetStatus::Retired
        } else {
            SetStatus::Proposed
        }
    }
}

/// An activated policy or invariant set.
#[derive(Serialize, ToSchema)]
struct Activated {
    hash: String,
    activated_at: Option<String>,
    signers: Vec<String>,
    #[schema(value_type = Option<Object>)]
    proofs: Option<custody::Proofs>,
}

/// Runs a custody change on a blocking thread (it waits for the log's fsync), with no
/// decision in flight across it (`AppState::custody_change`).
async fn change<T: Send + 'static>(
    app: Arc<AppState>,
    who: Authenticated,
    f: impl FnOnce(&AppState, &Authenticated) -> Result<T, CustodyError> + Send + 'static,
) -> AppResult<T> {
    Ok(app.custody_change(move |app| f(app, &who)).await??)
}

/// Runs `prove` on a blocking thread (the solver runs for a tenth of a second or more) once
/// one of the gateway's proof slots is free, with the configured solver settings.
async fn in_proof_slot<T: Send + 'static>(
    app: &AppState,
    prove: impl FnOnce(&proof::Settings) -> AppResult<T> + Send + 'static,
) -> AppResult<T> {
    let settings = proof::Settings::from_config(&app.config.policy);
    let _slot = app
        .proof_slots
        .acquire()
        .await
        .map_err(ApiError::internal)?;
    blocking(move || prove(&settings)).await?
}

/// Checks a signed activation statement before the (slower) proof, so that a wrong or badly
/// signed one is told at once; custody checks it again, with the proofs, under its lock.
fn check_statement_first(
    app: &AppState,
    signed: &[u8],
    expected: &custody::statement::Statement,
) -> AppResult<()> {
    let keys = app.custody.keys();
    let verified = custody::statement::verify(signed, &keys.verifiers, keys.policy_threshold)
        .map_err(CustodyError::from)?;
    if verified.statement != *expected {
        return Err(CustodyError::WrongStatement(format!(
            "it says \"{}\", not \"{expected}\"",
            verified.statement
        ))
        .into());
    }
    Ok(())
}

/// Someone acting: a principal's id and employer entity.
#[derive(Serialize, ToSchema)]
struct PersonBody {
    id: String,
    entity: String,
}

impl PersonBody {
    fn new(p: &Person) -> Self {
        PersonBody {
            id: p.id.clone(),
            entity: p.entity.clone(),
        }
    }
}
