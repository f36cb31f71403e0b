//! The routes of the live analytics: the dashboard page and its assets (embedded in the
//! binary), the Server-Sent Events stream it reads, and the Prometheus metrics.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::analytics::StreamEvent;
use crate::auth::Authenticated;
use crate::http::error::{ApiError, AppResult, ErrorBody, ErrorCode};
use crate::http::extract::Caller;
use crate::http::vocab::{ROLE_APPROVER, ROLE_MONITOR};
use crate::state::AppState;

type Shared = State<Arc<AppState>>;

const DASHBOARD_HTML: &str = include_str!("../../assets/dashboard/index.html");
const DASHBOARD_JS: &str = include_str!("../../assets/dashboard/app.js");
const DASHBOARD_CSS: &str = include_str!("../../assets/dashboard/style.css");

/// The page loads nothing from anywhere but this gateway, and runs no inline script.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// The live dashboard. The page holds no data: it reads `/v1/analytics/stream` with the
/// token given in its address (`#token=...`, never sent to the server) or pasted in.
#[utoipa::path(get, path = "/", tag = "analytics",
    responses((status = 200, description = "the dashboard page", content_type = "text/html", body = String)))]
async fn dashboard() -> Response {
    asset("text/html; charset=utf-8", DASHBOARD_HTML)
}

/// The dashboard's script.
#[utoipa::path(get, path = "/dashboard/app.js", tag = "analytics",
    responses((status = 200, description = "JavaScript", content_type = "text/javascript", body = String)))]
async fn dashboard_js() -> Response {
    asset("text/javascript; charset=utf-8", DASHBOARD_JS)
}

/// The dashboard's style sheet.
#[utoipa::path(get, path = "/dashboard/style.css", tag = "analytics",
    responses((status = 200, description = "CSS", content_type = "text/css", body = String)))]
async fn dashboard_css() -> Response {
    asset("text/css; charset=utf-8", DASHBOARD_CSS)
}

/// Prometheus metrics (text exposition format 0.0.4): requests by route and status with
/// latency histograms; decisions by outcome, principal location and entity, subject
/// jurisdiction, site, collection and action; log size, checkpoint age and append latency;
/// pending approvals; egress rows; alerts; with witnesses, the witnessed size and whether
/// each witness cosigns. Counts only, no subject and no value.
#[utoipa::path(get, path = "/metrics", tag = "analytics",
    responses((status = 200, description = "the metrics", content_type = "text/plain", body = String)))]
async fn metrics(State(app): Shared) -> Response {
    let pending = app.pending_requests().len();
    if let Some(w) = &app.witnessing {
        app.analytics.record(|| w.record_gauges());
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        app.analytics
            .render(&app.log, app.served_checkpoint(), pending),
    )
        .into_response()
}

/// Server-Sent Events: a `summary` on connect and every second after (decisions per second
/// over the last minute, counts by location and entity, the latest decisions with
/// pseudonymised subjects, alerts, pending approvals, the checkpoint), and each `alert` the
/// moment it is raised. For principals with role `monitor` or `custodian-approver`, not
/// located in a restricted country.
#[utoipa::path(get, path = "/v1/analytics/stream", tag = "analytics",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the event stream", content_type = "text/event-stream", body = String),
        (status = 403, description = "`role_required`: neither role `monitor` nor `custodian-approver`; `restricted_location`: located in a restricted country", body = ErrorBody),
    ))]
async fn stream(
    State(app): Shared,
    Caller(who): Caller,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    watcher(&app, &who)?;
    tracing::info!(principal = %who.public_id, "analytics stream opened");
    let first = StreamEvent {
        name: "summary",
        data: app.summary().to_string().into(),
    };
    let events = Events {
        first: Some(first),
        receiver: app.analytics.subscribe(),
        closing: app.analytics.closing(),
    };
    let stream = futures_util::stream::unfold(events, |mut events| async move {
        let next = events.next().await?;
        let event = Event::default().event(next.name).data(&*next.data);
        Some((Ok(event), events))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(keep_alive_interval(&app))))
}

/// Who may watch the live analytics (the stream, and so the dashboard's data): a principal
/// with role `monitor` or `custodian-approver`, not located in a restricted country (by its
/// signed location or its network zone): the feed shows who accessed what, and from where.
fn watcher(app: &AppState, who: &Authenticated) -> AppResult<()> {
    who.require_role(&[ROLE_MONITOR, ROLE_APPROVER])?;
    let location = &who.principal.location;
    if app.config.restricted_countries.contains(location) {
        tracing::warn!(principal = %who.public_id, location = %location, "analytics stream refused: restricted location");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::RestrictedLocation,
            format!(
                "principals located in a restricted country ({location}) may not watch the live analytics"
            ),
        ));
    }
    Ok(())
}

/// How often an idle stream sends a keep-alive comment: often enough that the connection
/// never counts as stalled (`server.idle_timeout_seconds`), and at most every 15 s.
fn keep_alive_interval(app: &AppState) -> Duration {
    let idle = Duration::from_secs(app.config.server.idle_timeout_seconds);
    (idle / 3).clamp(Duration::from_millis(200), Duration::from_secs(15))
}

/// One client's view of the broadcast: its first summary, then whatever is published,
/// until the gateway shuts down.
struct Events {
    first: Option<StreamEvent>,
    receiver: tokio::sync::broadcast::Receiver<StreamEvent>,
    closing: tokio::sync::watch::Receiver<bool>,
}

impl Events {
    async fn next(&mut self) -> Option<StreamEvent> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        loop {
            tokio::select! {
                _ = self.closing.wait_for(|closing| *closing) => return None,
                received = self.receiver.recv() => match received {
                    Ok(event) => return Some(event),
                    // A slow client skips what it missed; the next summary is whole.
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                },
            }
        }
    }
}

/// The dashboard, metrics and the live stream.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(dashboard))
        .routes(routes!(dashboard_js))
        .routes(routes!(dashboard_css))
        .routes(routes!(metrics))
        .routes(routes!(stream))
}
