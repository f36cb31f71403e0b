//! What one hostile or careless client must not be able to do to a running gateway, each
//! through a real server on an ephemeral port: grow the metrics without bound, hold
//! connections open without sending a request, use tokens made for another service or that
//! never expire, watch the live analytics from a restricted country, read the data folder as
//! another user; and the late-checkpoint alert must not cry wolf on an idle log.

use std::path::Path;
use std::time::Duration;

use crate::support::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------
// Metrics

async fn metrics_text(server: &Server) -> String {
    let response = server.get("/metrics").raw().await;
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

/// The HTTP request series in the metrics (names with labels), sorted.
fn http_series(text: &str) -> Vec<String> {
    let mut series: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("sovereign_http_request"))
        .map(|l| l.rsplit_once(' ').unwrap().0.to_string())
        .collect();
    series.sort();
    series
}

/// Sends, for each `i` in `range`, a request with method `XMETHODi` to a route, and GET and
/// `XMETHODi` requests to unmatched paths naming `i`.
async fn odd_requests(server: &Server, range: std::ops::Range<u32>) {
    for i in range {
        let method = Method::from_bytes(format!("XMETHOD{i}").as_bytes()).unwrap();
        for (method, path) in [
            (method.clone(), "/healthz".to_string()),
            (Method::GET, format!("/no/such/path/{i}")),
            (method, format!("/nowhere-{i}")),
        ] {
            let response = server
                .client
                .request(method, format!("{}{path}", server.base))
                .send()
                .await
                .unwrap();
            assert!(response.status().is_client_error(), "{path}");
            let _ = response.bytes().await;
        }
    }
}

#[tokio::test]
async fn metric_series_do_not_grow_with_the_methods_and_paths_clients_send() {
    let server = Server::start().await;
    // The scrape itself is a route with series of its own: in both counts.
    metrics_text(&server).await;
    odd_requests(&server, 0..100).await;
    let after_100 = http_series(&metrics_text(&server).await);
    odd_requests(&server, 100..400).await;
    let text = metrics_text(&server).await;
    let after_400 = http_series(&text);
    let added: Vec<&String> = after_400
        .iter()
        .filter(|s| !after_100.contains(s))
        .collect();
    assert!(
        added.is_empty() && after_100.len() == after_400.len(),
        "300 more method names and paths added {} series, like {:?}",
        added.len(),
        &added[..added.len().min(3)]
    );
    assert!(
        !text.contains("XMETHOD"),
        "a client's method became a label"
    );
    assert!(
        !text.contains("/no/such") && !text.contains("nowhere"),
        "a client's path became a label"
    );
    // They are all counted, under `other` and `(no route)`.
    let counted: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("sovereign_http_requests_total{")
                && l.contains(r#"method="other""#)
                && l.contains(r#"route="(no route)""#)
        })
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum();
    assert_eq!(counted, 400.0, "{text}");
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Connections

fn address(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_string()
}

async fn connect(server: &Server) -> TcpStream {
    TcpStream::connect(address(server)).await.unwrap()
}

/// A connection that has sent part of a request header and nothing more.
async fn half_open(server: &Server) -> TcpStream {
    let mut stream = connect(server).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    stream
}

/// `n` connections that have each sent part of a request header and nothing more.
async fn hold(server: &Server, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(half_open(server).await);
    }
    held
}

/// A new connection that has asked for `/healthz`.
async fn ask_health(server: &Server) -> TcpStream {
    let mut stream = connect(server).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    stream
}

/// The response on `stream` within `limit` (else the test fails: not `served`).
async fn served_within(stream: &mut TcpStream, limit: Duration, served: &str) -> (u16, String) {
    tokio::time::timeout(limit, read_response(stream))
        .await
        .expect(served)
        .expect("answered")
}

/// Reads one response (head, and a body of Content-Length); None if the connection closed
/// first.
async fn read_response(stream: &mut TcpStream) -> Option<(u16, String)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_string();
            let status = head.split(' ').nth(1)?.parse().ok()?;
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            while buffer.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buffer.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buffer[end + 4..end + 4 + length]).to_string();
            return Some((status, body));
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// Panics unless the server closes `stream` within `limit` (sending nothing more).
async fn closed_within(stream: &mut TcpStream, limit: Duration, what: &str) {
    let mut chunk = [0u8; 1024];
    let read = tokio::time::timeout(limit, stream.read(&mut chunk))
        .await
        .unwrap_or_else(|_| panic!("{what}: the server kept the connection open"));
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "{what}: the server sent {:?} instead of closing",
        read.map(|n| String::from_utf8_lossy(&chunk[..n]).to_string())
    );
}

fn closed_by_watchdog(text: &str, reason: &str) -> f64 {
    text.lines()
        .find(|l| {
            l.starts_with("sovereign_http_connections_closed_total{")
                && l.contains(&format!(r#"reason="{reason}""#))
        })
        .map_or(0.0, |l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
}

#[tokio::test]
async fn a_connection_that_sends_half_a_header_is_closed_at_the_header_timeout() {
    let server = Server::start_with_config(&[(
        "header_read_timeout_seconds = 10",
        "header_read_timeout_seconds = 1",
    )])
    .await;
    let mut partial = half_open(&server).await;
    closed_within(&mut partial, Duration::from_secs(10), "half a header").await;
    // One that sends nothing at all is timed from when it connected.
    let mut silent = connect(&server).await;
    closed_within(&mut silent, Duration::from_secs(10), "nothing sent").await;
    let text = metrics_text(&server).await;
    assert!(closed_by_watchdog(&text, "header_timeout") >= 2.0, "{text}");
    server.stop().await;
}

#[tokio::test]
async fn a_kept_alive_connection_waits_for_its_next_request_until_the_idle_timeout() {
    let server = Server::start_with_config(&[
        (
            "header_read_timeout_seconds = 10",
            "header_read_timeout_seconds = 1",
        ),
        ("idle_timeout_seconds = 60", "idle_timeout_seconds = 4"),
    ])
    .await;
    let mut stream = connect(&server).await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    stream.write_all(request).await.unwrap();
    let (status, _) = read_response(&mut stream).await.expect("answered");
    assert_eq!(status, 200);
    // Waiting between requests is not reading a header: past the header timeout (1 s), well
    // within the idle timeout (4 s), the connection still serves.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stream.write_all(request).await.unwrap();
    let (status, _) = read_response(&mut stream)
        .await
        .expect("still open after the header timeout");
    assert_eq!(status, 200);
    closed_within(&mut stream, Duration::from_secs(15), "idle kept-alive").await;
    let text = metrics_text(&server).await;
    assert!(closed_by_watchdog(&text, "idle_timeout") >= 1.0, "{text}");
    server.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let server = Server::start_with_config(&[
        ("max_connections = 10000", "max_connections = 4"),
        (
            "header_read_timeout_seconds = 10",
            "header_read_timeout_seconds = 4",
        ),
    ])
    .await;
    let mut held = hold(&server, 4).await;
    // A fifth connection is not served while the four hold every slot...
    let mut fifth = ask_health(&server).await;
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), fifth.peek(&mut byte))
            .await
            .is_err(),
        "a fifth connection was served beyond max_connections = 4"
    );
    // ...and is as soon as one of them closes.
    drop(held.pop());
    let (status, body) = served_within(
        &mut fifth,
        Duration::from_secs(10),
        "served once a slot freed",
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // All four slots held again by connections that never finish their header: the server
    // answers again once the header timeout has closed them.
    held.push(half_open(&server).await);
    let mut waiting = ask_health(&server).await;
    let (status, _) = served_within(
        &mut waiting,
        Duration::from_secs(20),
        "served after the header timeouts",
    )
    .await;
    assert_eq!(status, 200);
    for stream in &mut held {
        closed_within(stream, Duration::from_secs(10), "held slot").await;
    }
    server.get("/healthz").expect(StatusCode::OK).await;
    let text = metrics_text(&server).await;
    assert!(closed_by_watchdog(&text, "header_timeout") >= 4.0, "{text}");
    server.stop().await;
}

#[tokio::test]
async fn one_client_may_not_hold_more_than_its_share_of_connections() {
    let server = Server::start_with_config(&[(
        "max_connections_per_client = 1000",
        "max_connections_per_client = 3",
    )])
    .await;
    let mut held = hold(&server, 3).await;
    // A fourth from the same address is closed as soon as it is accepted...
    let mut fourth = connect(&server).await;
    closed_within(&mut fourth, Duration::from_secs(5), "a fourth connection").await;
    // ...while the three it holds stay open, and one freed makes room again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = ask_health(&server).await;
    let (status, body) = served_within(&mut again, Duration::from_secs(5), "served").await;
    assert_eq!(status, 200, "{body}");
    drop(held);
    let text = metrics_text(&server).await;
    assert!(
        closed_by_watchdog(&text, "per_client_limit") >= 1.0,
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_request_header_larger_than_the_connection_buffer_is_refused() {
    let server = Server::start().await;
    let mut stream = connect(&server).await;
    // 200 KiB of header: within hyper's default buffer (about 400 KiB), beyond the 64 KiB
    // one connection may make the gateway hold.
    let big = "a".repeat(200 * 1024);
    let request = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    // The server may stop reading (and close) before all of it is written.
    let _ = stream.write_all(request.as_bytes()).await;
    let answer = tokio::time::timeout(Duration::from_secs(10), read_response(&mut stream))
        .await
        .expect("answered or closed");
    assert!(
        matches!(answer, None | Some((431, _))),
        "an oversized header was served: {answer:?}"
    );
    server.get("/healthz").expect(StatusCode::OK).await;
    server.stop().await;
}

#[tokio::test]
async fn shutdown_is_not_held_up_by_idle_or_half_open_connections() {
    let server = Server::start_with_config(&[(
        "header_read_timeout_seconds = 10",
        "header_read_timeout_seconds = 2",
    )])
    .await;
    let _partial = half_open(&server).await;
    let mut kept = connect(&server).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    read_response(&mut kept).await.expect("answered");
    tokio::time::timeout(Duration::from_secs(15), server.stop())
        .await
        .expect("shutdown finished");
    closed_within(&mut kept, Duration::from_secs(1), "after shutdown").await;
}

// ---------------------------------------------------------------------------
// Tokens

/// A token with `claims` as given, signed by the development issuer's key.
fn signed_token(server: &Server, claims: &Value) -> String {
    let pem = std::fs::read(server.data().join(gateway::setup::DEV_ISSUER_KEY)).unwrap();
    let key = EncodingKey::from_ed_pem(&pem).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &key).unwrap()
}

/// A request to a route that authenticates (the subject does not exist: 404 once past
/// authentication).
async fn authenticated_get(server: &Server, token: &str) -> Reply {
    server.get("/v1/subjects/u-none").bearer(token).await
}

#[tokio::test]
async fn a_token_naming_an_audience_is_refused_when_none_is_configured() {
    let server = Server::start().await;
    let claims = serde_json::to_value(claims(&VETTED_US, 600)).unwrap();
    let Reply { status, body, .. } =
        authenticated_get(&server, &signed_token(&server, &claims)).await;
    assert_ne!(status, StatusCode::UNAUTHORIZED, "{body}");

    let mut for_another = claims.clone();
    for_another["aud"] = json!("billing-service");
    let body = authenticated_get(&server, &signed_token(&server, &for_another))
        .await
        .refused(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert_eq!(body["reason"], "unexpected_audience");
    assert!(body["message"].as_str().unwrap().contains("aud"), "{body}");

    // A list of audiences is an audience too.
    for_another["aud"] = json!(["billing-service", "sovereign"]);
    let Reply { status, body, .. } =
        authenticated_get(&server, &signed_token(&server, &for_another)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["reason"], "unexpected_audience");
    server.stop().await;
}

#[tokio::test]
async fn a_token_living_longer_than_the_maximum_lifetime_is_refused() {
    let server = Server::start().await;
    let mut claims = serde_json::to_value(claims(&VETTED_US, 600)).unwrap();
    for (exp, accepted) in [
        (i64::MAX, false),
        (now() + 25 * 3600, false),
        (now() + 23 * 3600, true),
    ] {
        claims["exp"] = json!(exp);
        let Reply { status, body, .. } =
            authenticated_get(&server, &signed_token(&server, &claims)).await;
        if accepted {
            assert_ne!(status, StatusCode::UNAUTHORIZED, "exp {exp}: {body}");
        } else {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "exp {exp}: {body}");
            assert_eq!(body["error"], "unauthenticated");
            assert_eq!(body["reason"], "lifetime_too_long", "{body}");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains("auth.max_token_lifetime"),
                "{body}"
            );
        }
    }
    // The development tool will not mint what the gateway would refuse.
    let error = gateway::auth::mint_dev_token(
        &server.data(),
        &crate::support::claims(&VETTED_US, 48 * 3600),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("max_token_lifetime"), "{error}");
    server.stop().await;
}

#[tokio::test]
async fn the_maximum_token_lifetime_is_configurable() {
    let server = Server::start_with_config(&[(
        "max_token_lifetime = \"24h\"",
        "max_token_lifetime = \"30m\"",
    )])
    .await;
    let hour = serde_json::to_value(claims(&VETTED_US, 3600)).unwrap();
    let Reply { status, body, .. } =
        authenticated_get(&server, &signed_token(&server, &hour)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a 1 h token: {body}");
    assert_eq!(body["reason"], "lifetime_too_long");
    let short =
        gateway::auth::mint_dev_token(&server.data(), &claims(&VETTED_US, 20 * 60)).unwrap();
    let Reply { status, body, .. } = authenticated_get(&server, &short).await;
    assert_ne!(status, StatusCode::UNAUTHORIZED, "{body}");
    server.stop().await;
}

// ---------------------------------------------------------------------------
// The live analytics from a restricted country

const MONITOR_IN_CN: Who = Who {
    sub: "mei",
    entity: "monitor",
    location: "CN",
    clearance: &[],
    roles: &["monitor"],
};

async fn stream_status(server: &Server, token: &str) -> Reply {
    let response = server
        .client
        .get(format!("{}/v1/analytics/stream", server.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    if status == StatusCode::OK {
        return Reply {
            status,
            headers,
            body: Value::Null,
        };
    }
    let body = response.json().await.unwrap();
    Reply {
        status,
        headers,
        body,
    }
}

#[tokio::test]
async fn a_monitor_in_a_restricted_country_may_not_watch_the_analytics() {
    let server = Server::start().await;
    let Reply {
        status, body: _, ..
    } = stream_status(&server, &server.token(&MONITOR)).await;
    assert_eq!(status, StatusCode::OK);
    let body = stream_status(&server, &server.token(&MONITOR_IN_CN))
        .await
        .refused(StatusCode::FORBIDDEN, "restricted_location");
    assert!(body["message"].as_str().unwrap().contains("CN"), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn a_monitor_connecting_from_a_restricted_zone_may_not_watch_the_analytics() {
    // Every loopback connection comes from a zone in CN (and handlers still see the peer
    // address under the gateway's own connection handling).
    let server = start_in_cn_zone().await;
    stream_status(&server, &server.token(&MONITOR))
        .await
        .refused(StatusCode::FORBIDDEN, "restricted_location");
    server.stop().await;
}

// ---------------------------------------------------------------------------
// The late-checkpoint alert

fn checkpoint_alerts(server: &Server) -> Vec<Value> {
    (0..server.state.log.size())
        .map(|i| server.entry(i))
        .filter(|e| e["kind"] == "alert" && e["alert"] == "checkpoint-late")
        .collect()
}

#[tokio::test]
async fn an_idle_log_with_an_old_checkpoint_raises_no_alert() {
    // Checkpoints within 1.5 s of growth, a 3 s deadline: nothing ever waits too long.
    let server = Server::start_with_config(&[
        (
            "checkpoint_deadline_seconds = 5",
            "checkpoint_deadline_seconds = 3",
        ),
        (
            "checkpoint_interval_ms = 500",
            "checkpoint_interval_ms = 1500",
        ),
    ])
    .await;
    let alice = server.token(&VETTED_US);
    server.register_us(&alice, "u-1").await;
    let read = || async {
        server
            .get("/v1/subjects/u-1/records/profile/main")
            .bearer(&alice)
            .purpose("support ticket 7")
            .await
    };
    let Reply { status, body, .. } = server
        .put("/v1/subjects/u-1/records/profile/main")
        .bearer(&alice)
        .purpose("support ticket 7")
        .body(r#"{"email":"a@example.com","display_name":"A"}"#)
        .await;
    assert!(status.is_success(), "{body}");
    // Idle until the checkpoint covers everything and is older than the deadline.
    let log = server.state.log.clone();
    let mut idle = false;
    for _ in 0..200 {
        let checkpoint = log.checkpoint();
        if checkpoint.size == log.size()
            && checkpoint.signed_at.elapsed().unwrap_or_default() > Duration::from_millis(3500)
        {
            idle = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(idle, "the log never went idle");
    // One new entry: it has waited no time, however old the checkpoint.
    let before = log.size();
    let Reply { status, body, .. } = read().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(log.size() > before, "the read was logged");
    if log.checkpoint().size < log.size() {
        assert!(
            server
                .state
                .analytics
                .checkpoint_late(&log, server.state.served_checkpoint())
                .is_none(),
            "an alert for an entry that has just been added"
        );
    }
    // The ticker, meanwhile and after, raises none either.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(checkpoint_alerts(&server), Vec::<Value>::new());
    server.stop().await;
}

#[tokio::test]
async fn an_entry_left_uncovered_past_the_deadline_raises_the_alert() {
    // Checkpoints at most once a minute, a 1 s deadline: the entries after the start's
    // checkpoint wait too long.
    let server = Server::start_with_config(LATE_CHECKPOINTS).await;
    let mut alert = None;
    for _ in 0..100 {
        if let Some(found) = checkpoint_alerts(&server).into_iter().next() {
            alert = Some(found);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let alert = alert.expect("a checkpoint-late alert within 10 s");
    let details = &alert["details"];
    assert_eq!(
        details["oldest_uncovered_index"],
        details["checkpoint_size"]
    );
    assert!(
        details["oldest_uncovered_wait_seconds"].as_u64().unwrap() >= 1,
        "{details}"
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------
// The data folder's permissions

#[cfg(unix)]
fn modes(dir: &Path, found: &mut Vec<(std::path::PathBuf, bool, u32)>) {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(dir).unwrap();
    found.push((dir.to_path_buf(), true, meta.permissions().mode() & 0o7777));
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            modes(&entry.path(), found);
        } else {
            found.push((entry.path(), false, meta.permissions().mode() & 0o7777));
        }
    }
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_folder_is_private_to_the_gateway_user() {
    use std::os::unix::fs::PermissionsExt;
    // As `sovereign` does before anything else.
    gateway::setup::private_umask();
    let server = Server::start().await;
    let alice = server.token(&VETTED_US);
    server.register_us(&alice, "u-1").await;
    let Reply { status, body, .. } = server
        .put("/v1/subjects/u-1/records/profile/main")
        .bearer(&alice)
        .purpose("support ticket 7")
        .body(r#"{"email":"a@example.com","display_name":"A"}"#)
        .await;
    assert!(status.is_success(), "{body}");

    let mut found = Vec::new();
    modes(&server.data(), &mut found);
    let loose: Vec<String> = found
        .iter()
        .filter(|(_, dir, mode)| *mode != if *dir { 0o700 } else { 0o600 })
        .map(|(path, _, mode)| format!("{} {mode:04o}", path.display()))
        .collect();
    assert!(loose.is_empty(), "not private: {loose:#?}");
    let names: Vec<String> = found
        .iter()
        .map(|(p, _, _)| p.to_string_lossy().into_owned())
        .collect();
    for suffix in [
        "store.sqlite-wal",
        "log.sqlite-shm",
        "custody.sqlite",
        "sovereign.toml",
    ] {
        assert!(
            names.iter().any(|n| n.ends_with(suffix)),
            "no {suffix} among {names:#?}"
        );
    }

    // A data folder left open to others is closed on request (as `sovereign serve` does).
    let data = server.data();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(gateway::setup::secure_data_dir(&data).unwrap(), Some(0o755));
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700);
    assert_eq!(gateway::setup::secure_data_dir(&data).unwrap(), None);
    server.stop().await;

    // `init` into an existing folder that others may read makes it private.
    let parent = tempfile::tempdir().unwrap();
    let open = parent.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    gateway::setup::init(&open, false).unwrap();
    let mut found = Vec::new();
    modes(&open, &mut found);
    let loose: Vec<String> = found
        .iter()
        .filter(|(_, dir, mode)| *mode != if *dir { 0o700 } else { 0o600 })
        .map(|(path, _, mode)| format!("{} {mode:04o}", path.display()))
        .collect();
    assert!(loose.is_empty(), "not private after init: {loose:#?}");
}
