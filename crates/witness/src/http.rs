//! The witness over HTTP: `POST /add-checkpoint` (the submission prefix is the server's
//! root) and `GET /healthz`, with limits no client can get around.
//!
//! - a request body of at most [`MAX_BODY_BYTES`] (a note's limit plus the most proof lines);
//! - every request answered within `request_timeout` (503 otherwise), its body read included;
//! - at most `max_in_flight` requests checked at once (the others wait, within their timeout),
//!   each on a blocking thread, since it writes SQLite;
//! - at most `max_connections` connections; each buffers at most 64 KiB, and is closed when a
//!   request header is not whole `header_read_timeout` after the connection or the previous
//!   answer (which also ends idle kept-alive connections).
//!
//! Every error is a plain-text body saying what is wrong; a 409 is exactly the latest size and
//! a newline, as `text/x.tlog.size`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tlog::witness::{MAX_PROOF_LINES, SIZE_CONTENT_TYPE};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt as _;

use crate::error::AddError;
use crate::witness::Witness;

/// The largest request body: `old <20 digits>\n`, the most proof lines (44 base64 characters
/// and a newline each), the blank line and the largest note.
pub const MAX_BODY_BYTES: usize = 32 + (MAX_PROOF_LINES + 1) * 45 + tlog::note::MAX_NOTE_SIZE;

/// The most one connection buffers: a request header must fit.
const MAX_CONNECTION_BUFFER: usize = 64 * 1024;

/// How the server limits its clients.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Connections open at once; more wait in the kernel's listen queue. Each may buffer one
    /// request body, so bodies take at most this many times [`MAX_BODY_BYTES`] of memory
    /// (honest requests are a few KiB).
    pub max_connections: usize,
    /// Requests being checked at once; more wait for a turn within their timeout.
    pub max_in_flight: usize,
    /// How long a request may take from its header to its answer.
    pub request_timeout: Duration,
    /// How long a connection may take to send a whole request header, counted from the
    /// connection or the previous answer (so also how long an idle connection is kept).
    pub header_read_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            max_connections: 256,
            max_in_flight: 64,
            request_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
        }
    }
}

struct App {
    witness: Arc<Witness>,
    in_flight: Arc<Semaphore>,
}

/// The witness's routes, with the body limit, the request timeout and the bound on requests
/// in flight of `options`.
pub fn router(witness: Arc<Witness>, options: &ServeOptions) -> Router {
    let app = Arc::new(App {
        witness,
        in_flight: Arc::new(Semaphore::new(options.max_in_flight.max(1))),
    });
    let timeout = options.request_timeout;
    Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|| async {
            text(
                StatusCode::NOT_FOUND,
                "not found: this witness serves POST /add-checkpoint\n".to_string(),
            )
        })
        .method_not_allowed_fallback(|| async {
            text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: use POST /add-checkpoint or GET /healthz\n".to_string(),
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(
            move |request: Request, next: Next| within(timeout, request, next),
        ))
        .with_state(app)
}

/// Answers 503 if the request (its body read included) takes longer than `timeout`.
async fn within(timeout: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the request took longer than {} s; try again\n",
                timeout.as_secs_f64()
            ),
        ),
    }
}

async fn add_checkpoint(State(app): State<Arc<App>>, body: Bytes) -> Response {
    // The permit goes with the work, not with this future: a request that times out still
    // holds its place until its blocking check ends, so timeouts cannot pile up threads.
    let Ok(permit) = app.in_flight.clone().acquire_owned().await else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_string(),
        );
    };
    let witness = app.witness.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let _permit: OwnedSemaphorePermit = permit;
        witness.add_checkpoint(&body)
    })
    .await;
    match checked {
        Ok(Ok(cosignatures)) => text(StatusCode::OK, cosignatures),
        Ok(Err(refusal)) => refused(&refusal),
        Err(e) => {
            tracing::error!(error = %e, "an add-checkpoint check failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error: the request was not cosigned\n".to_string(),
            )
        }
    }
}

/// The answer to a refused request: its status and a plain-text reason, or for a 409 the
/// latest size as `text/x.tlog.size`.
fn refused(refusal: &AddError) -> Response {
    let status =
        StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match refusal.latest_size() {
        Some(latest) => (
            status,
            [(header::CONTENT_TYPE, SIZE_CONTENT_TYPE)],
            format!("{latest}\n"),
        )
            .into_response(),
        None => text(status, format!("{refusal}\n")),
    }
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Serves the witness on `listener` until `shutdown` completes; then stops accepting, lets
/// the requests in flight finish (at most `request_timeout` more) and returns.
pub async fn serve(
    listener: TcpListener,
    witness: Arc<Witness>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let router = router(witness, &options);
    let capacity = options.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(capacity));
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        tokio::spawn(connection(
            stream,
            router.clone(),
            options.header_read_timeout,
            stopping.clone(),
            slot,
        ));
    }
    drop(listener);
    stop.send_replace(true);
    // Every connection holds a slot until it closes.
    let all = slots.acquire_many(u32::try_from(capacity).unwrap_or(u32::MAX));
    if tokio::time::timeout(options.request_timeout + Duration::from_secs(1), all)
        .await
        .is_err()
    {
        tracing::warn!("stopped with connections still open");
    }
}

/// Serves one connection until it ends, or, after shutdown began, until its request in
/// flight is answered. Holds `slot` until then.
async fn connection(
    stream: TcpStream,
    router: Router,
    header_read_timeout: Duration,
    mut stopping: watch::Receiver<bool>,
    slot: OwnedSemaphorePermit,
) {
    let _slot = slot;
    // Answers are a few hundred bytes: send them now, not after Nagle's delay.
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |request: axum::http::Request<Incoming>| {
        let router = router.clone();
        async move {
            match router.oneshot(request).await {
                Ok(response) => Ok::<_, Infallible>(response),
                Err(never) => match never {},
            }
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(MAX_CONNECTION_BUFFER)
        .keep_alive(true);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
    let mut draining = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            _ = stopping.wait_for(|stop| *stop), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
