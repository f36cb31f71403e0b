//! What wraps every route: the JSON answers for unknown routes and methods, the request
//! timeout, and the request log line and metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::analytics;
use crate::http::error::{ApiError, ErrorCode};
use crate::state::AppState;

pub async fn no_route() -> ApiError {
    ApiError::not_found(ErrorCode::NoRoute, "no such route; see /openapi.json")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
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
pub async fn request_timeout(
    State(limit): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Timeout,
            format!(
                "the request took longer than {} s (server.request_timeout_seconds)",
                limit.as_secs()
            ),
        )
        .into_response(),
    }
}

pub async fn log_request(
    State(state): State<Arc<AppState>>,
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
    use axum::Router;
    use axum::middleware;
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
