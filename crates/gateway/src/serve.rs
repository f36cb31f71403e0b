//! Serving HTTP/1.1 connections with limits a client cannot get around: at most
//! `server.max_connections` at once, and none held open without progress.
//!
//! axum's own `serve` waits for a request header forever, and the router's timeout only starts
//! once a request has been read, so a client that sends half a header (or nothing) keeps its
//! connection, and a file descriptor, for good. Here every connection runs under a watchdog
//! that knows what the connection is doing:
//!
//! | phase | closed when |
//! |---|---|
//! | connected, no complete request yet | the header is not whole `header_read_timeout` after connecting |
//! | waiting for the next request on a kept-alive connection | nothing arrives for `idle_timeout` |
//! | reading a request header (first byte arrived) | the header is not whole `header_read_timeout` after its first byte |
//! | handling a request | never here: the router's `request_timeout_seconds` answers 503 |
//! | sending the response | the client takes nothing for `idle_timeout` (an event stream writes a keep-alive comment more often) |
//!
//! Each connection buffers at most 64 KiB, so that memory is bounded by `max_connections`.
//! The accept loop takes a slot of a semaphore before it accepts: when all are taken it stops
//! accepting (new connections wait in the kernel's listen queue) until one closes. On shutdown
//! it stops accepting, ends the analytics' event streams, lets every connection finish the
//! request in flight, and returns when all have closed.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt as _;

use crate::config::ServerConfig;
use crate::state::AppState;

/// File descriptors kept for everything but client connections (stores, the log, the
/// solver's pipes, the listener): `max_connections` is lowered to leave them free.
const RESERVED_FILES: usize = 256;

/// The most one connection buffers (hyper's minimum is 8 KiB); a request header larger than
/// this is refused (431).
const MAX_CONNECTION_BUFFER: usize = 64 * 1024;

/// The connection limits, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
}

impl Limits {
    pub fn from_config(server: &ServerConfig) -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(server.header_read_timeout_seconds),
            idle_timeout: Duration::from_secs(server.idle_timeout_seconds),
            max_connections: server.max_connections,
            max_connections_per_client: server.max_connections_per_client,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes; then ends the event streams,
/// finishes the requests in flight and returns once every connection has closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    state: Arc<AppState>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let capacity = connection_capacity(limits.max_connections);
    state.analytics.record(|| {
        metrics::gauge!("sovereign_http_connections_max").set(capacity as f64);
    });
    let slots = Arc::new(Semaphore::new(capacity));
    let clients: Clients = Arc::default();
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    let mut warned_full: Option<Instant> = None;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                // Full: accept nothing until a connection closes (no spinning; the kernel
                // queues new connections meanwhile). Said at most once a minute.
                if warned_full.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                    warned_full = Some(Instant::now());
                    tracing::warn!(
                        max_connections = capacity,
                        "all connections are taken; new ones wait until one closes"
                    );
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Most likely out of file descriptors: wait for some to close rather than
                    // spin on the error.
                    tracing::error!(error = %e, "cannot accept a connection");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        // One client may not take every slot: past its share, its new connections are
        // closed at once (the map holds only addresses with open connections).
        let Some(share) = ClientShare::take(&clients, peer.ip(), limits.max_connections_per_client)
        else {
            state.analytics.record(|| {
                metrics::counter!("sovereign_http_connections_closed_total", "reason" => "per_client_limit")
                    .increment(1);
            });
            drop(stream);
            continue;
        };
        tokio::spawn(connection(
            stream,
            peer,
            router.clone(),
            state.clone(),
            limits,
            stopping.clone(),
            Place {
                _slot: slot,
                _share: share,
            },
        ));
    }
    drop(listener);
    // Open event streams never end by themselves: the connections carrying them would never
    // finish their response.
    state.analytics.close();
    stop.send_replace(true);
    // Every connection holds a slot until it has closed.
    let _all = slots
        .acquire_many(u32::try_from(capacity).unwrap_or(u32::MAX))
        .await;
}

/// The connections that may be open at once: `configured`, or fewer if the open-file limit
/// would run out first (each connection takes a file descriptor; running out stops the
/// gateway from opening anything, health checks included).
fn connection_capacity(configured: usize) -> usize {
    let Some(files) = open_file_limit() else {
        return configured;
    };
    let usable = files.saturating_sub(RESERVED_FILES).max(files / 4).max(1);
    if configured > usable {
        tracing::warn!(
            configured,
            serving = usable,
            open_file_limit = files,
            "server.max_connections is more than the open-file limit allows; serving at most {usable} connections at once (raise the limit: `ulimit -n`, or LimitNOFILE= under systemd)"
        );
        return usable;
    }
    configured
}

#[cfg(unix)]
fn open_file_limit() -> Option<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    usize::try_from(limit.rlim_cur).ok()
}

#[cfg(not(unix))]
fn open_file_limit() -> Option<usize> {
    None
}

/// Raises this process's soft open-file limit to its hard limit (at most 2^20), so that
/// `server.max_connections` fits. `sovereign` calls it at start; where it cannot, the limit
/// stays, and [`serve`] serves fewer connections.
pub fn raise_open_file_limit() {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only read or write the struct they are given.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return;
            }
            let target = limit.rlim_max.min(1 << 20);
            if limit.rlim_cur < target {
                let raised = libc::rlimit {
                    rlim_cur: target,
                    rlim_max: limit.rlim_max,
                };
                libc::setrlimit(libc::RLIMIT_NOFILE, &raised);
            }
        }
    }
}

/// Errors of one connection that went away before it was accepted: not a reason to pause.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection until it ends, the watchdog closes it, or, after shutdown began,
/// it has finished its request in flight. Holds `slot` until then.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    state: Arc<AppState>,
    limits: Limits,
    mut stopping: watch::Receiver<bool>,
    place: Place,
) {
    let _open = OpenConnection::new(state.clone(), place);
    let clock = Arc::new(Clock::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        clock: clock.clone(),
    });
    let service = hyper::service::service_fn({
        let clock = clock.clone();
        move |mut request: Request<Incoming>| {
            // What axum's `into_make_service_with_connect_info` would give the handlers.
            request.extensions_mut().insert(ConnectInfo(peer));
            clock.enter(Phase::Handling);
            let clock = clock.clone();
            let router = router.clone();
            async move {
                let response = match router.oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                clock.enter(Phase::Responding);
                Ok::<_, Infallible>(response.map(|body| WatchedBody {
                    inner: body,
                    _sent: ResponseSent(clock),
                }))
            }
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The watchdog times the header (hyper's own timer would also cut kept-alive connections
    // waiting for their next request at the header timeout).
    builder.header_read_timeout(None::<Duration>);
    // What one connection may make the server buffer (a request header must fit; bodies and
    // responses stream through it): with `max_connections`, a bound on memory that no client
    // can raise. hyper's default is about 400 KiB.
    builder.max_buf_size(MAX_CONNECTION_BUFFER);
    let mut conn = pin!(builder.serve_connection(io, service));
    let mut watchdog = pin!(clock.watch(limits));
    let mut draining = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            reason = watchdog.as_mut() => {
                tracing::debug!(%peer, reason, "closing a connection that makes no progress");
                state.analytics.record(|| {
                    metrics::counter!("sovereign_http_connections_closed_total", "reason" => reason)
                        .increment(1);
                });
                // Dropping the connection closes the socket.
                break;
            }
            _ = stopping.wait_for(|stop| *stop), if !draining => {
                // Finish the request in flight (if any), then close.
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Counts an open connection in the metrics, and frees its slot when dropped.
/// Open connections per client address.
type Clients = Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>;

/// One connection's place in its client's count, given back when the connection ends.
struct ClientShare {
    clients: Clients,
    ip: std::net::IpAddr,
}

impl ClientShare {
    /// Counts a new connection from `ip`, unless it holds `limit` already.
    fn take(clients: &Clients, ip: std::net::IpAddr, limit: usize) -> Option<ClientShare> {
        let mut open = clients.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(ClientShare {
            clients: clients.clone(),
            ip,
        })
    }
}

impl Drop for ClientShare {
    fn drop(&mut self) {
        let mut open = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// What an open connection holds until it closes: one of the server's slots and one of its
/// client's.
struct Place {
    _slot: OwnedSemaphorePermit,
    _share: ClientShare,
}

struct OpenConnection {
    state: Arc<AppState>,
    _place: Place,
}

impl OpenConnection {
    fn new(state: Arc<AppState>, place: Place) -> OpenConnection {
        state.analytics.record(|| {
            metrics::gauge!("sovereign_http_connections_open").increment(1.0);
        });
        OpenConnection {
            state,
            _place: place,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.state.analytics.record(|| {
            metrics::gauge!("sovereign_http_connections_open").decrement(1.0);
        });
    }
}

/// What a connection is doing; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Accepted; its first request is not whole yet.
    Connected = 0,
    /// A response was sent; waiting for the next request.
    Waiting = 1,
    /// The next request's first bytes arrived; its header is not whole yet.
    ReadingHead = 2,
    /// The router has the request.
    Handling = 3,
    /// The response is being sent.
    Responding = 4,
}

impl Phase {
    fn from_u8(value: u8) -> Phase {
        match value {
            0 => Phase::Connected,
            1 => Phase::Waiting,
            2 => Phase::ReadingHead,
            3 => Phase::Handling,
            _ => Phase::Responding,
        }
    }
}

/// One connection's phase and since when (for `Responding`: since the last byte written).
/// Everything touching it runs on the connection's own task; atomics only make it shareable.
struct Clock {
    start: Instant,
    phase: AtomicU8,
    /// Milliseconds after `start`.
    since: AtomicU64,
    changed: Notify,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            start: Instant::now(),
            phase: AtomicU8::new(Phase::Connected as u8),
            since: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    fn enter(&self, phase: Phase) {
        self.since.store(self.now(), Ordering::Relaxed);
        self.phase.store(phase as u8, Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// Bytes arrived from the client.
    fn read(&self) {
        match self.phase() {
            // The first request's header is timed from the connection, not its first byte.
            Phase::Connected => self
                .phase
                .store(Phase::ReadingHead as u8, Ordering::Relaxed),
            Phase::Waiting => self.enter(Phase::ReadingHead),
            _ => {}
        }
    }

    /// Bytes left for the client.
    fn wrote(&self) {
        if self.phase() == Phase::Responding {
            self.since.store(self.now(), Ordering::Relaxed);
        }
    }

    /// Completes, naming the reason, once the connection has gone too long without progress
    /// in its current phase.
    async fn watch(&self, limits: Limits) -> &'static str {
        loop {
            let changed = self.changed.notified();
            let (limit, reason) = match self.phase() {
                Phase::Connected | Phase::ReadingHead => {
                    (limits.header_read_timeout, "header_timeout")
                }
                Phase::Waiting => (limits.idle_timeout, "idle_timeout"),
                Phase::Responding => (limits.idle_timeout, "stalled"),
                Phase::Handling => {
                    changed.await;
                    continue;
                }
            };
            let deadline =
                self.start + Duration::from_millis(self.since.load(Ordering::Relaxed)) + limit;
            if Instant::now() >= deadline {
                return reason;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline.into()) => {}
                () = changed => {}
            }
        }
    }
}

/// The client's socket, telling the connection's clock when bytes move.
struct Watched {
    inner: TcpStream,
    clock: Arc<Clock>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.clock.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.clock.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.clock.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A response body that tells the clock when hyper is done with it (sent, or dropped).
struct WatchedBody {
    inner: Body,
    _sent: ResponseSent,
}

struct ResponseSent(Arc<Clock>);

impl Drop for ResponseSent {
    fn drop(&mut self) {
        self.0.enter(Phase::Waiting);
    }
}

impl hyper::body::Body for WatchedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
