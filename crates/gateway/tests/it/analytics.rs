//! Live analytics through a real server: the Prometheus metrics (parsed as Prometheus would),
//! the alerts (each in the log), and the Server-Sent Events stream.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// A Prometheus text-format reader, strict enough to catch malformed output.

#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: bool,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

/// Parses the text exposition format 0.0.4. Every sample must belong to a family declared
/// by `# TYPE` before it; labels must be `name="value"` with escapes; values must be floats.
fn parse_prometheus(text: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            families.entry(name.into()).or_default().help = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap();
            let kind = parts.next().expect("TYPE names a kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "unknown metric type in {line:?}"
            );
            families.entry(name.into()).or_default().kind = kind.into();
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line:?}");
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').unwrap(), line)),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| families.get(*base).is_some_and(|f| f.kind == "histogram"))
            })
            .unwrap_or(name);
        let entry = families
            .get_mut(family)
            .unwrap_or_else(|| panic!("sample {line:?} before its # TYPE"));
        entry.samples.push((name.to_string(), labels, value));
    }
    families
}

fn parse_labels(text: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line:?}"));
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => panic!("dangling escape in {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        labels.insert(name.to_string(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    labels
}

/// The sum of a family's samples named `name` whose labels include all of `want`.
fn sum(families: &BTreeMap<String, Family>, name: &str, want: &[(&str, &str)]) -> f64 {
    let family = name
        .strip_suffix("_count")
        .filter(|b| families.contains_key(*b))
        .unwrap_or(name);
    families
        .get(family)
        .unwrap_or_else(|| panic!("no metric family {family}"))
        .samples
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

async fn metrics(server: &Server) -> BTreeMap<String, Family> {
    let response = server.get("/metrics").raw().await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse_prometheus(&response.text().await.unwrap())
}

// ---------------------------------------------------------------------------
// Traffic

async fn write_profile(server: &Server, token: &str, id: &str) -> StatusCode {
    server
        .put(&format!("/v1/subjects/{id}/records/profile/main"))
        .bearer(token)
        .purpose("support ticket 7")
        .body(r#"{"email":"a@example.com","display_name":"A"}"#)
        .await
        .status
}

async fn read_profile(server: &Server, token: &str, id: &str) -> StatusCode {
    server
        .get(&format!("/v1/subjects/{id}/records/profile/main"))
        .bearer(token)
        .purpose("support ticket 7")
        .await
        .status
}

/// Alert entries in the log, in order.
fn alert_entries(server: &Server) -> Vec<Value> {
    (0..server.state.log.size())
        .map(|i| server.entry(i))
        .filter(|e| e["kind"] == "alert")
        .collect()
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn metrics_count_requests_decisions_log_approvals_and_egress() {
    let server = Server::start().await;
    let alice = server.token(&VETTED_US);
    let chen = server.token(&PARENT_CN);
    let bob = server.token(&USDS_TRAVELLING_CN);

    for id in ["u-1", "u-2"] {
        server.register_us(&alice, id).await;
        assert_eq!(write_profile(&server, &alice, id).await, StatusCode::OK);
    }
    assert_eq!(read_profile(&server, &alice, "u-1").await, StatusCode::OK);
    assert_eq!(
        read_profile(&server, &chen, "u-1").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        read_profile(&server, &bob, "u-2").await,
        StatusCode::FORBIDDEN
    );
    // One pending access request.
    let body = json!({"action": "write", "subjects": ["u-1"], "collections": ["activity"],
        "purpose": "support ticket 7", "reason_code": "customer-initiated-support", "duration": "1h"});
    let Reply { status, .. } = server
        .post("/v1/access/requests")
        .bearer(&alice)
        .json(&body)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // One egress page of two rows.
    assert_eq!(
        server
            .get("/v1/egress/profile")
            .token(&EGRESS)
            .bytes()
            .await
            .0,
        StatusCode::OK
    );

    let m = metrics(&server).await;
    for (name, kind) in [
        ("sovereign_http_requests_total", "counter"),
        ("sovereign_http_request_duration_seconds", "histogram"),
        ("sovereign_decisions_total", "counter"),
        ("sovereign_log_append_duration_seconds", "histogram"),
        ("sovereign_log_size_entries", "gauge"),
        ("sovereign_log_checkpoint_age_seconds", "gauge"),
        ("sovereign_approvals_pending", "gauge"),
        ("sovereign_egress_rows_total", "counter"),
        ("sovereign_alerts_total", "counter"),
    ] {
        let family = m.get(name).unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(family.kind, kind, "{name}");
        assert!(family.help, "{name} has no HELP");
    }

    let decisions = |outcome: &str, location: &str, entity: &str| {
        sum(
            &m,
            "sovereign_decisions_total",
            &[
                ("outcome", outcome),
                ("location", location),
                ("entity", entity),
                ("subject_jurisdiction", "US"),
            ],
        )
    };
    // Two registrations, two writes, one read: all allowed, for vetted staff in the US.
    assert_eq!(decisions("allow", "US", "usds"), 5.0);
    assert_eq!(decisions("deny", "CN", "parent"), 1.0);
    assert_eq!(decisions("deny", "CN", "usds"), 1.0);
    assert_eq!(decisions("allow", "CN", "parent"), 0.0);
    assert_eq!(
        sum(
            &m,
            "sovereign_decisions_total",
            &[
                ("site", "us-east"),
                ("collection", "profile"),
                ("action", "read")
            ]
        ),
        3.0
    );

    let route = "/v1/subjects/{id}/records/{collection}/{key}";
    assert_eq!(
        sum(
            &m,
            "sovereign_http_requests_total",
            &[("route", route), ("method", "GET"), ("status", "403")]
        ),
        2.0
    );
    assert_eq!(
        sum(
            &m,
            "sovereign_http_requests_total",
            &[("route", route), ("method", "PUT"), ("status", "200")]
        ),
        2.0
    );
    // The histogram's count agrees with the counter, and its buckets are cumulative.
    assert_eq!(
        sum(
            &m,
            "sovereign_http_request_duration_seconds_count",
            &[("route", route), ("method", "GET")]
        ),
        3.0
    );
    let mut buckets: Vec<(f64, f64)> = m["sovereign_http_request_duration_seconds"]
        .samples
        .iter()
        .filter(|(n, l, _)| {
            n == "sovereign_http_request_duration_seconds_bucket"
                && l.get("route").map(String::as_str) == Some(route)
                && l.get("method").map(String::as_str) == Some("GET")
        })
        .map(|(_, l, v)| {
            let le = l["le"].as_str();
            (
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                },
                *v,
            )
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() > 5, "{buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, 3.0));

    let log_size = server.state.log.size() as f64;
    let reported = sum(&m, "sovereign_log_size_entries", &[]);
    // Entries appended after the scrape are not in it; none are before.
    assert!(
        reported >= log_size - 1.0 && reported <= log_size,
        "{reported} vs {log_size}"
    );
    assert!(sum(&m, "sovereign_log_append_duration_seconds_count", &[]) >= 8.0);
    assert!(sum(&m, "sovereign_log_checkpoint_age_seconds", &[]) >= 0.0);
    assert_eq!(sum(&m, "sovereign_approvals_pending", &[]), 1.0);
    assert_eq!(
        sum(
            &m,
            "sovereign_egress_rows_total",
            &[("collection", "profile")]
        ),
        2.0
    );
    // Chen's and Bob's attempts from CN: one alert each (different principals).
    assert_eq!(
        sum(
            &m,
            "sovereign_alerts_total",
            &[("alert", "restricted-country-access")]
        ),
        2.0
    );
    server.stop().await;
}

#[tokio::test]
async fn a_restricted_country_attempt_is_alerted_and_logged_once_per_window() {
    let server = Server::start().await;
    let alice = server.token(&VETTED_US);
    let chen = server.token(&PARENT_CN);
    server.register_us(&alice, "u-1").await;
    assert_eq!(write_profile(&server, &alice, "u-1").await, StatusCode::OK);
    assert!(alert_entries(&server).is_empty());

    assert_eq!(
        read_profile(&server, &chen, "u-1").await,
        StatusCode::FORBIDDEN
    );
    let alerts = alert_entries(&server);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0];
    assert_eq!(alert["alert"], "restricted-country-access");
    assert_eq!(alert["severity"], "high");
    assert_eq!(alert["actor"]["id"], "chen");
    assert_eq!(alert["actor"]["location"], "CN");
    assert_eq!(alert["details"]["outcome"], "deny");
    assert_eq!(alert["details"]["subject_jurisdiction"], "US");
    // The alert names the access entry it is about, and holds no raw subject id.
    let access = server.entry(alert["details"]["access_entry"].as_u64().unwrap());
    assert_eq!(access["kind"], "access");
    assert_eq!(access["principal"]["id"], "chen");
    assert!(!alert.to_string().contains("u-1"));

    // A repeat within the window is counted, not logged again.
    assert_eq!(
        read_profile(&server, &chen, "u-1").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(alert_entries(&server).len(), 1);
    // The dashboard's summary shows the alert with its repeat counted, and the feed says
    // why chen was denied: the forbid, the purpose stated, the field classes.
    let summary = server.state.summary();
    let shown = &summary["alerts"][0];
    assert_eq!(shown["alert"], "restricted-country-access", "{summary}");
    assert_eq!(shown["repeats"], 1, "{shown}");
    let denied = &summary["recent"][0];
    assert_eq!(denied["principal"], "chen", "{denied}");
    assert!(
        denied["policies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "forbid-restricted-location"),
        "{denied}"
    );
    assert!(
        denied["purpose"].as_str().is_some_and(|p| !p.is_empty()),
        "{denied}"
    );
    assert!(
        denied["classes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "protected: deny"),
        "{denied}"
    );
    let m = metrics(&server).await;
    assert_eq!(
        sum(
            &m,
            "sovereign_alerts_total",
            &[("alert", "restricted-country-access")]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &m,
            "sovereign_alerts_repeated_total",
            &[("alert", "restricted-country-access")]
        ),
        1.0
    );
    server.stop().await;
}

#[tokio::test]
async fn bulk_access_and_egress_spikes_raise_alerts_at_their_thresholds() {
    let server = Server::start_with_config(&[
        (
            "bulk_subjects_per_minute = 100",
            "bulk_subjects_per_minute = 3",
        ),
        (
            "egress_rows_per_minute = 10000",
            "egress_rows_per_minute = 4",
        ),
    ])
    .await;
    let alice = server.token(&VETTED_US);
    for i in 0..3 {
        server.register_us(&alice, &format!("u-{i}")).await;
    }
    // Three distinct subjects: at the limit, not above it.
    assert!(alert_entries(&server).is_empty());
    // The same subjects again change nothing.
    for i in 0..3 {
        assert_eq!(
            write_profile(&server, &alice, &format!("u-{i}")).await,
            StatusCode::OK
        );
    }
    assert!(alert_entries(&server).is_empty());
    server.register_us(&alice, "u-3").await;
    let alerts = alert_entries(&server);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["alert"], "bulk-access");
    assert_eq!(alerts[0]["actor"]["id"], "alice");
    assert_eq!(alerts[0]["details"]["distinct_subjects"], 4);
    assert_eq!(alerts[0]["details"]["limit"], 3);
    assert_eq!(write_profile(&server, &alice, "u-3").await, StatusCode::OK);

    // Four rows in a minute are at the limit; the fifth row spikes.
    let globe = server.token(&EGRESS);
    let page = |limit: u32| format!("/v1/egress/profile?limit={limit}");
    assert_eq!(
        server.get(&page(4)).bearer(&globe).bytes().await.0,
        StatusCode::OK
    );
    assert_eq!(alert_entries(&server).len(), 1);
    assert_eq!(
        server.get(&page(1)).bearer(&globe).bytes().await.0,
        StatusCode::OK
    );
    let alerts = alert_entries(&server);
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert_eq!(alerts[1]["alert"], "egress-spike");
    assert_eq!(alerts[1]["severity"], "medium");
    assert_eq!(alerts[1]["details"]["rows_in_window"], 5);
    server.stop().await;
}

#[tokio::test]
async fn a_checkpoint_past_its_deadline_is_alerted() {
    // Checkpoints at most once a minute, with a one-second deadline: the first entry after
    // the start's checkpoint waits too long.
    let server = Server::start_with_config(LATE_CHECKPOINTS).await;
    let alice = server.token(&VETTED_US);
    server.register_us(&alice, "u-1").await;
    let mut found = None;
    for _ in 0..100 {
        if let Some(alert) = alert_entries(&server)
            .into_iter()
            .find(|a| a["alert"] == "checkpoint-late")
        {
            found = Some(alert);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let alert = found.expect("a checkpoint-late alert within 10 s");
    assert_eq!(alert["severity"], "medium");
    assert!(alert["actor"].is_null());
    assert!(
        alert["details"]["log_size"].as_u64().unwrap()
            > alert["details"]["checkpoint_size"].as_u64().unwrap()
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------
// The stream

/// Reads Server-Sent Events from a response until `done` says stop or time runs out.
async fn read_events(
    response: &mut reqwest::Response,
    buffer: &mut String,
    mut done: impl FnMut(&str, &Value) -> bool,
) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut name = "message".to_string();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = v.to_string();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            if data.is_empty() {
                continue; // a keep-alive comment
            }
            let value: Value = serde_json::from_str(&data).expect("event data is JSON");
            let stop = done(&name, &value);
            events.push((name, value));
            if stop {
                return events;
            }
        }
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("stream timed out; got {events:?}"))
            .unwrap()
            .expect("stream open");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

async fn open_stream(server: &Server, token: Option<&str>) -> reqwest::Response {
    let mut request = server
        .client
        .get(format!("{}/v1/analytics/stream", server.base));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn the_stream_sends_summaries_and_alerts_to_monitors_only() {
    let server = Server::start().await;
    let alice = server.token(&VETTED_US);

    let refused = open_stream(&server, None).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let refused = open_stream(&server, Some(&alice)).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "role_required");

    let mut stream = open_stream(&server, Some(&server.token(&MONITOR))).await;
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut buffer = String::new();
    // The first summary comes at once.
    let first = read_events(&mut stream, &mut buffer, |_, _| true).await;
    let (name, summary) = &first[0];
    assert_eq!(name, "summary");
    assert_eq!(summary["history"].as_array().unwrap().len(), 60);
    assert_eq!(
        summary["restricted_countries"],
        json!(["CN", "IR", "KP", "RU"])
    );
    assert_eq!(summary["log"]["checkpoint_deadline_seconds"], 5);
    assert_eq!(summary["totals"]["allow"], 0);
    assert!(summary["log"]["size"].as_u64().unwrap() >= 1);

    server.register_us(&alice, "u-1").await;
    assert_eq!(write_profile(&server, &alice, "u-1").await, StatusCode::OK);
    assert_eq!(
        read_profile(&server, &server.token(&PARENT_CN), "u-1").await,
        StatusCode::FORBIDDEN
    );
    server
        .post("/v1/access/break-glass")
        .token(&BREAK_GLASS)
        .body(
            &json!({"action": "read", "subjects": ["u-1"], "collections": ["activity"],
                "purpose": "outage 12", "reason_code": "incident-response"})
            .to_string(),
        )
        .expect(StatusCode::CREATED)
        .await;

    let mut alerts = Vec::new();
    let events = read_events(&mut stream, &mut buffer, |name, value| {
        if name == "alert" {
            alerts.push(value["alert"].as_str().unwrap().to_string());
        }
        name == "summary" && value["totals"]["deny"] == 1 && alerts.len() == 2
    })
    .await;
    assert_eq!(alerts, ["restricted-country-access", "break-glass"]);
    let alert = &events.iter().find(|(n, _)| n == "alert").unwrap().1;
    assert_eq!(alert["principal"], "chen");
    assert_eq!(alert["location"], "CN");
    let logged = server.entry(alert["log_index"].as_u64().unwrap());
    assert_eq!(logged["alert"], "restricted-country-access");

    let summary = &events.last().unwrap().1;
    assert_eq!(summary["totals"]["allow"], 2);
    assert_eq!(summary["by_location"]["CN"]["deny"], 1);
    assert_eq!(summary["by_entity"]["usds"]["allow"], 2);
    let recent = summary["recent"].as_array().unwrap();
    assert_eq!(recent[0]["principal"], "chen");
    assert_eq!(recent[0]["outcome"], "deny");
    assert_eq!(recent[0]["action"], "read");
    // Subjects are pseudonyms, never the id.
    assert!(!summary.to_string().contains("\"u-1\""));
    assert_eq!(recent[0]["subject"].as_str().unwrap().len(), 12);
    let seconds: u64 = summary["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["allow"].as_u64().unwrap() + s["deny"].as_u64().unwrap())
        .sum();
    assert!(seconds <= 3, "{seconds}");
    assert!(summary["alerts"].as_array().unwrap().len() >= 2);

    // Shutting down ends the stream instead of waiting for it.
    tokio::time::timeout(Duration::from_secs(10), server.stop())
        .await
        .expect("shutdown with an open stream");
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(rest.is_ok(), "the stream ended");
}

/// A restarted gateway's page starts from the log's last entries: the same recent decisions
/// (with why) and alerts as before the restart; only the counts start again from zero.
#[tokio::test]
async fn a_restarted_gateway_shows_the_recent_decisions_and_alerts_from_its_log() {
    let server = Server::start().await;
    let alice = server.token(&VETTED_US);
    let chen = server.token(&PARENT_CN);
    server.register_us(&alice, "u-1").await;
    assert_eq!(write_profile(&server, &alice, "u-1").await, StatusCode::OK);
    assert_eq!(
        read_profile(&server, &chen, "u-1").await,
        StatusCode::FORBIDDEN
    );
    let before = server.state.summary();
    let dir = server.stop_keep().await;
    let gateway = gateway::Gateway::open(dir.path()).unwrap();
    let after = gateway.state().summary();

    let feed = |s: &Value| -> Vec<Value> {
        s["recent"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                json!([
                    d["log_index"],
                    d["principal"],
                    d["entity"],
                    d["location"],
                    d["action"],
                    d["subject"],
                    d["collection"],
                    d["outcome"],
                    d["policies"],
                    d["purpose"],
                    d["classes"],
                    d["grant"],
                    d["site"]
                ])
            })
            .collect()
    };
    assert!(!feed(&before).is_empty());
    assert_eq!(feed(&after), feed(&before));
    let (was, is) = (&before["alerts"][0], &after["alerts"][0]);
    assert_eq!(is["alert"], "restricted-country-access", "{after}");
    assert_eq!(is["principal"], was["principal"]);
    assert_eq!(is["location"], "CN");
    assert_eq!(is["log_index"], was["log_index"]);
    assert_eq!(after["totals"]["deny"], 0, "counts are this start's");
}
