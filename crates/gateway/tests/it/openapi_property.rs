//! The whole HTTP API against its own OpenAPI document (`GET /openapi.json`), by a
//! property-based API tester: schemathesis (PyPI, 4.x) generates requests to every documented
//! operation, valid ones and invalid ones, from the document's parameters, patterns, enums
//! and bodies, and checks every answer: no 5xx, every status documented, bodies and content
//! types as documented, invalid input refused, authentication enforced, undocumented
//! methods answered 405. It runs once per principal of the reference cast (each sees other
//! routes allowed or refused) against one real gateway, seeded with a subject, records, two
//! custodian grants and an algorithm release so that the documented examples reach real
//! data.
//!
//! Deterministic (`--generation-deterministic`, one worker, a fixed number of examples per
//! operation) and bounded: each run is killed after `RUN_LIMIT`. Needs `schemathesis` (or
//! `st`, or `python3 -m schemathesis.cli`): `python3 -m pip install 'schemathesis>=4,<5'`;
//! without it the test says so and passes, unless `SOVEREIGN_REQUIRE_SCHEMATHESIS=1`
//! (`.ci/run` sets it), which makes it fail.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Test cases per operation and phase: enough to reach every documented status of most
/// routes, few enough for about 20 s per principal on two cores (debug build).
const MAX_EXAMPLES: &str = "20";
/// The longest one principal's run may take before it is killed and the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(300);
/// What must hold for every answer.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_headers_conformance,response_schema_conformance,negative_data_rejection,\
missing_required_header,unsupported_method,ignored_auth";
/// Routes that never answer: the analytics stream, for principals allowed to open it, sends
/// events until the gateway stops.
const STREAM: &str = "/v1/analytics/stream";

/// How to start schemathesis 4 here, if it is installed: its own executable, `st` (if that
/// is schemathesis and not another program of that name), or the Python module.
fn schemathesis() -> Option<Vec<String>> {
    let candidates: [&[&str]; 3] = [
        &["schemathesis"],
        &["st"],
        &["python3", "-m", "schemathesis.cli"],
    ];
    candidates.into_iter().find_map(|command| {
        let output = Command::new(command[0])
            .args(&command[1..])
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .ok()?;
        // The options used here are those of schemathesis 4.
        let version = String::from_utf8_lossy(&output.stdout);
        (output.status.success()
            && version.contains("schemathesis")
            && version.contains("version 4."))
        .then(|| command.iter().map(|s| s.to_string()).collect())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_as_documented() {
    let Some(command) = schemathesis() else {
        if std::env::var("SOVEREIGN_REQUIRE_SCHEMATHESIS").as_deref() == Ok("1") {
            panic!(
                "SOVEREIGN_REQUIRE_SCHEMATHESIS=1 but schemathesis 4 is not installed: \
                 python3 -m pip install 'schemathesis>=4,<5'"
            );
        }
        eprintln!(
            "SKIPPED: schemathesis 4 is not installed (python3 -m pip install 'schemathesis>=4,<5'); \
             the property-based API test did not run"
        );
        return;
    };
    let server = Server::start().await;
    seed(&server).await;

    // Each principal reaches other routes: data routes (allowed, with grants), custodian
    // routes, approvals, egress, break-glass, and refusals from a restricted country.
    let cast: [(&str, &Who); 6] = [
        ("vetted US engineer with grants", &VETTED_US),
        ("custodian operator", &OPERATOR),
        ("custodian approver", &APPROVER_1),
        ("egress consumer", &EGRESS),
        ("break-glass holder", &BREAK_GLASS),
        ("parent staff in CN", &PARENT_CN),
    ];
    let work = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (name, who) in cast {
        let token = server.token(who);
        let started = Instant::now();
        let (ok, report) = run(&command, &server.base, &token, who, work.path()).await;
        eprintln!(
            "schemathesis as {name} ({}): {} in {:.1}s",
            who.sub,
            if ok { "passed" } else { "FAILED" },
            started.elapsed().as_secs_f64()
        );
        if !ok {
            failures.push(format!("==== as {name} ({}):\n{report}", who.sub));
        }
    }
    server.stop().await;
    assert!(
        failures.is_empty(),
        "the API does not answer as its OpenAPI document says:\n{}",
        failures.join("\n")
    );
}

/// Runs schemathesis as `who` against the gateway at `base`; answers whether every check
/// passed, and its report.
async fn run(
    command: &[String],
    base: &str,
    token: &str,
    who: &Who,
    work: &Path,
) -> (bool, String) {
    let mut args: Vec<String> = command[1..].to_vec();
    args.extend(
        [
            "run",
            &format!("{base}/openapi.json"),
            "--header",
            &format!("Authorization: Bearer {token}"),
            "--checks",
            CHECKS,
            "--max-examples",
            MAX_EXAMPLES,
            // Deterministic generation also keeps no example database on disk.
            "--generation-deterministic",
            "--workers",
            "1",
            "--suppress-health-check",
            "all",
            "--request-timeout",
            "30",
            "--no-color",
        ]
        .map(String::from),
    );
    if who
        .roles
        .iter()
        .any(|r| *r == "custodian-approver" || *r == "monitor")
    {
        args.extend(["--exclude-path".to_string(), STREAM.to_string()]);
    }
    let log = work.join(format!("schemathesis-{}.txt", who.sub));
    let program = command[0].clone();
    let dir = work.to_path_buf();
    let (status, timed_out) = tokio::task::spawn_blocking({
        let log = log.clone();
        move || {
            let out = std::fs::File::create(&log).unwrap();
            let mut child = Command::new(program)
                .args(&args)
                .current_dir(dir)
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("start schemathesis");
            let deadline = Instant::now() + RUN_LIMIT;
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    return (Some(status), false);
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return (None, true);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    })
    .await
    .unwrap();
    let mut report = std::fs::read_to_string(&log).unwrap_or_default();
    if timed_out {
        report.push_str(&format!("\n(killed after {RUN_LIMIT:?})"));
    }
    (status.is_some_and(|s| s.success()), report)
}

/// Data for the documented examples to reach: subject `u-1001` with a `profile/main` and an
/// `activity/main` record, grants for the vetted engineer to read (so export) and delete (so
/// erase) any US subject's data, and the algorithm release `ranker` `1.0.0`.
async fn seed(server: &Server) {
    let alice = server.token(&VETTED_US);
    let profile = r#"{"email":"ada@example.com","phone":"+1 555 0100","display_name":"Ada"}"#;
    subject_with_profile(server, &alice, "u-1001", profile).await;
    for action in ["write", "read", "delete"] {
        let request = json!({"action": action, "collections": ["activity"],
            "purpose": "property test", "reason_code": "service-maintenance", "duration": "2h"});
        server.approved_request(&VETTED_US, &request).await;
    }
    server
        .put("/v1/subjects/u-1001/records/activity/main")
        .bearer(&alice)
        .purpose("setup")
        .body(r#"{"watch_history":"v1,v2","public_video_count":3}"#)
        .expect(StatusCode::OK)
        .await;
    let response = server
        .client
        .post(format!("{}/v1/algorithms/ranker/1.0.0", server.base))
        .bearer_auth(server.token(&OPERATOR))
        .body("model weights v1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED, "submit algorithm");
}

/// The documented enums are the lists the gateway uses: the reason codes are those
/// `GET /v1/access/reason-codes` serves, the actions those of the policy.
#[tokio::test]
async fn documented_enums_are_the_gateways_lists() {
    let server = Server::start().await;
    let Reply { body: doc, .. } = server.get("/openapi.json").await;
    let Reply { body: served, .. } = server.get("/v1/access/reason-codes").await;
    let mut documented: Vec<&str> = doc["components"]["schemas"]["ReasonCodeName"]["enum"]
        .as_array()
        .expect("ReasonCodeName is an enum")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut codes: Vec<&str> = served["reason_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"].as_str().unwrap())
        .collect();
    documented.sort();
    codes.sort();
    assert_eq!(documented, codes);

    let mut actions: Vec<&str> = doc["components"]["schemas"]["ActionName"]["enum"]
        .as_array()
        .expect("ActionName is an enum")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // Every action but `compute`, which only a released algorithm is decided for, and
    // `history`, a data subject's own.
    let mut known: Vec<&str> = policy::Action::ALL
        .iter()
        .filter(|a| !matches!(a, policy::Action::Compute | policy::Action::History))
        .map(|a| a.as_str())
        .collect();
    actions.sort();
    known.sort();
    assert_eq!(actions, known);
    server.stop().await;
}

/// Every documented operation that takes a body refuses one over `server.body_limit_bytes`
/// with 413 `body_too_large`, whatever it parses the body as (schemathesis sends no bodies
/// that large). Algorithm artifacts have a limit of their own.
#[tokio::test]
async fn every_oversized_body_gets_413_body_too_large() {
    /// Holds every role, so that the role checks before the body pass.
    const EVERY_ROLE: Who = Who {
        sub: "root",
        entity: "custodian",
        location: "US",
        clearance: &["us-data"],
        roles: &[
            "custodian-approver",
            "custodian-operator",
            "break-glass",
            "algorithm-author",
            "egress",
        ],
    };
    let server = Server::start().await;
    let token = server.token(&EVERY_ROLE);
    let Reply { body: doc, .. } = server.get("/openapi.json").await;
    let big = "a".repeat(1024 * 1024 + 1);
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if operation.get("requestBody").is_none() || path == "/v1/algorithms/{name}/{version}" {
                continue;
            }
            let concrete = concrete_path(path, "u-1001", "1.0.0");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = server
                .client
                .request(method.clone(), format!("{}{concrete}", server.base))
                .bearer_auth(&token)
                .body(big.clone())
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            assert_eq!(
                (status, body["error"].as_str()),
                (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large")),
                "{method} {path}: {body}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} operations take a body");
    server.stop().await;
}
