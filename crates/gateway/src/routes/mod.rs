//! The routes, one module per area, each a thin caller of the pipeline (`pipeline/`) for
//! anything that touches subject data:
//!
//! - `subjects`: subjects and their records (register, look up, list, read, write, delete);
//! - `data`: data leaving and moving (egress and aggregates, erasure, export, the residency
//!   scan and migration);
//! - `custody`: the custodian's controls, one module each for access `requests`,
//!   `policies`, `invariants`, `algorithms` and the `kill_switch`;
//! - `runs`: runs of custodian-released algorithms, next to the data;
//! - `analytics`: the dashboard, metrics and the live stream;
//! - `log`: the transparency log's checkpoints, tiles and proofs;
//! - `service`: readiness and the OpenAPI document.
//!
//! Every route is registered here together with its OpenAPI description, so the document
//! and the router cannot drift.

use std::sync::Arc;

use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::openapi::{ApiDoc, CommonResponses};
use crate::state::AppState;

pub mod analytics;
pub mod custody;
pub mod data;
pub mod log;
pub mod runs;
pub mod service;
pub mod subjects;

/// Every route with its description, and the answers whole kinds of operations share.
pub fn router() -> OpenApiRouter<Arc<AppState>> {
    let mut router = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(service::healthz))
        .routes(routes!(service::openapi_json))
        .merge(subjects::routes())
        .merge(data::routes())
        .merge(custody::routes())
        .merge(runs::routes())
        .merge(analytics::routes())
        .merge(log::routes());
    CommonResponses.modify(router.get_openapi_mut());
    router
}
