//! The service's own routes: readiness and the OpenAPI document.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    status: &'static str,
}

/// Answers 200 once the gateway is ready (configuration, policies and stores loaded).
#[utoipa::path(get, path = "/healthz", tag = "service",
    responses((status = 200, description = "ready", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// This API's OpenAPI 3.1 description, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "service",
    responses((status = 200, description = "the OpenAPI document", body = Object)))]
pub async fn openapi_json(State(app): State<Arc<AppState>>) -> Json<Value> {
    Json(app.openapi.clone())
}
