//! The side doors an attacker found, each tried again against a real server: every route that
//! touches subject data is decided by Cedar and logged (export, egress, aggregates, the
//! residency scan, unknown ids, registration), a grant's field scope holds on every route,
//! cursors and public places carry no raw subject id, and decisions follow custody changes in
//! log order.

use std::sync::Arc;

use crate::support::*;
use base64::Engine as _;
use custody::statement::{KillCommand, Statement};
use reqwest::StatusCode;
use serde_json::{Value, json};

const MARK: &str = "ZZMARK-5d2a";

/// A US subject `id` with a profile whose protected fields carry markers.
async fn us_subject(server: &Server, id: &str) {
    let alice = server.token(&VETTED_US);
    let body = json!({
        "email": format!("{MARK}-email-{id}"),
        "phone": format!("{MARK}-phone-{id}"),
        "display_name": format!("name-{id}"),
    });
    subject_with_profile(server, &alice, id, &body.to_string()).await;
}

/// An SG subject `id` with a profile, written by parent staff in SG.
async fn sg_subject(server: &Server, id: &str) {
    let siew = server.token(&PARENT_SG);
    server
        .registration(id, "SG")
        .bearer(&siew)
        .expect(StatusCode::CREATED)
        .await;
    server
        .put(&format!("/v1/subjects/{id}/records/profile/main"))
        .bearer(&siew)
        .purpose("setup")
        .body(&json!({"display_name": format!("name-{id}")}).to_string())
        .expect(StatusCode::OK)
        .await;
}

fn subject_token(id: &'static str, entity: &'static str, location: &'static str) -> Who {
    Who {
        sub: id,
        entity,
        location,
        clearance: &[],
        roles: &["data-subject"],
    }
}

/// Every log entry from `from` on, parsed.
fn entries_from(server: &Server, from: u64) -> Vec<(u64, Value)> {
    server.entries_from(from)
}

/// No log entry from `from` on holds `text`.
fn assert_not_logged(server: &Server, from: u64, text: &str) {
    for (index, entry) in entries_from(server, from) {
        assert!(!entry.to_string().contains(text), "entry {index}: {entry}");
    }
}

/// The index of the last custody entry of `event` (readers running meanwhile append
/// entries of their own, so it is not simply the last entry).
fn custody_event(server: &Server, event: &str) -> u64 {
    (0..server.state.log.size())
        .rev()
        .find(|i| server.entry(*i)["event"] == event)
        .unwrap_or_else(|| panic!("no {event} entry"))
}

/// Applies a custodian-signed kill-switch command for `jurisdiction` through the API.
async fn kill_switch(server: &Server, command: KillCommand, serial: u64) {
    let key = crate::support::custodian_key(&server.data());
    let statement = Statement::KillSwitch {
        command,
        jurisdiction: "US".into(),
        serial,
    };
    server
        .post("/v1/kill-switch")
        .token(&OPERATOR)
        .body(&crate::support::signed(&statement, &key))
        .expect(StatusCode::OK)
        .await;
}

#[tokio::test]
async fn a_subjects_own_export_is_decided_by_policy_like_any_access() {
    let server = Server::start().await;
    us_subject(&server, "u-1001").await;
    let before = server.state.log.size();

    // The finding: a token whose `sub` is the subject, role data-subject, of the parent
    // entity located in CN, exported protected fields in plaintext, unlogged as a decision.
    let chen = server.token(&subject_token("u-1001", "parent", "CN"));
    let body = server
        .get("/v1/subjects/u-1001/export")
        .bearer(&chen)
        .purpose("my data")
        .expect(StatusCode::FORBIDDEN)
        .await;
    assert!(!body.to_string().contains(MARK), "{body}");
    let policies = body["policies"].as_array().unwrap();
    assert!(
        policies.contains(&json!("forbid-restricted-location")),
        "{body}"
    );
    // Logged as a denied export, with the restricted-country alert.
    let logged = entries_from(&server, before);
    assert!(
        logged.iter().any(|(_, e)| e["kind"] == "access"
            && e["action"] == "export"
            && e["outcome"] == "deny")
    );
    assert!(
        logged
            .iter()
            .any(|(_, e)| e["kind"] == "alert" && e["alert"] == "restricted-country-access"),
        "{logged:?}"
    );
    assert!(!logged.iter().any(|(_, e)| e["kind"] == "export"));

    // The subject itself, as a platform user in the US, with a purpose: allowed.
    let ada = server.token(&subject_token("u-1001", "public", "US"));
    let (body, export) = export_own(&server, &ada, "u-1001").await;
    assert_eq!(
        body["records"][0]["fields"]["email"],
        format!("{MARK}-email-u-1001")
    );
    // Its own token shows in the log as its pseudonym, never its id.
    let pseudonym = server.state.pseudonyms.pseudonym("u-1001");
    assert_eq!(export["actor"]["id"], format!("subject:{pseudonym}"));

    // Another subject's data: denied.
    server
        .get("/v1/subjects/u-1002/export")
        .bearer(&ada)
        .purpose("curious")
        .expect(StatusCode::FORBIDDEN)
        .await;

    // Under the kill switch, not even the subject's own export.
    kill_switch(&server, KillCommand::Suspend, 1).await;
    let body = server
        .get("/v1/subjects/u-1001/export")
        .bearer(&ada)
        .purpose("my own copy")
        .expect(StatusCode::FORBIDDEN)
        .await;
    assert_eq!(body["error"], "suspended", "{body}");

    // No raw subject id anywhere in the log.
    assert_not_logged(&server, 0, "u-1001");
    server.stop().await;
}

#[tokio::test]
async fn an_export_keeps_to_a_grants_field_scope() {
    let server = Server::start().await;
    us_subject(&server, "u-7").await;
    // Activity with both protected fields, written under a break-glass grant.
    let activity = json!({"watch_history": format!("{MARK}-watch"), "location": format!("{MARK}-location"), "public_video_count": 3});
    server
        .write_activity_under_break_glass("u-7", &activity)
        .await;

    // A read grant for `watch_history` only.
    let alice = server.token(&VETTED_US);
    let request = json!({"action": "read", "subjects": ["u-7"], "collections": ["activity"],
        "fields": ["watch_history"], "purpose": "ticket 9", "reason_code": "customer-initiated-support",
        "duration": "1h"});
    server.approved_request(&VETTED_US, &request).await;
    let read = server
        .get("/v1/subjects/u-7/records/activity/main")
        .bearer(&alice)
        .purpose("ticket 9")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(read["fields"]["watch_history"], format!("{MARK}-watch"));
    assert!(read["fields"].get("location").is_none(), "{read}");

    // The finding: the export returned `location` too.
    let export = server
        .get("/v1/subjects/u-7/export")
        .bearer(&alice)
        .purpose("ticket 9")
        .expect(StatusCode::OK)
        .await;
    let activity = export["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["collection"] == "activity")
        .unwrap();
    assert_eq!(activity["fields"]["watch_history"], format!("{MARK}-watch"));
    assert!(activity["fields"].get("location").is_none(), "{export}");
    assert!(
        activity["withheld"]
            .as_array()
            .unwrap()
            .contains(&json!("location")),
        "{export}"
    );
    assert!(!export.to_string().contains(&format!("{MARK}-location")));
    server.stop().await;
}

/// The subject pseudonyms of an NDJSON egress page, and its trailer.
fn egress_rows(body: &[u8]) -> (Vec<Value>, Value) {
    let text = String::from_utf8(body.to_vec()).unwrap();
    let mut lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let trailer = lines.pop().unwrap();
    (lines, trailer)
}

#[tokio::test]
async fn egress_answers_only_for_jurisdictions_the_policy_allows_now() {
    let server = Server::start().await;
    for i in 0..3 {
        us_subject(&server, &format!("u-{i}")).await;
    }
    for i in 0..2 {
        sg_subject(&server, &format!("s-{i}")).await;
    }
    let globe_sg = server.token(&EGRESS);
    let (status, body, _) = server
        .get("/v1/egress/profile")
        .bearer(&globe_sg)
        .bytes()
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(egress_rows(&body).0.len(), 5);

    // The finding: an egress token located in CN got US rows.
    let globe_cn = server.token(&Who {
        location: "CN",
        ..EGRESS
    });
    let before = server.state.log.size();
    let (status, body, headers) = server
        .get("/v1/egress/profile")
        .bearer(&globe_cn)
        .bytes()
        .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let (rows, _) = egress_rows(&body);
    assert_eq!(rows.len(), 2, "SG rows only: {rows:?}");
    let sg: Vec<String> = ["s-0", "s-1"]
        .iter()
        .map(|s| server.state.egress_pseudonyms.pseudonym(s))
        .collect();
    assert!(
        rows.iter()
            .all(|r| sg.contains(&r["subject"].as_str().unwrap().to_string()))
    );
    assert!(headers.contains_key("sovereign-log-index"));
    // Decided per jurisdiction and logged before the egress entry.
    let decision = entries_from(&server, before)
        .into_iter()
        .find(|(_, e)| e["kind"] == "access" && e["action"] == "egress")
        .expect("the egress decision is logged")
        .1;
    assert_eq!(decision["subject"], Value::Null);
    assert_eq!(decision["subject_jurisdiction"], "*");
    assert_eq!(decision["outcome"], "partial");
    let us = decision["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["subject_jurisdiction"] == "US")
        .unwrap();
    assert_eq!(us["allowed"], false);
    // The aggregate obeys the same decision.
    let body = server
        .get("/v1/egress/profile/aggregate?group_by=display_name")
        .bearer(&globe_cn)
        .expect(StatusCode::OK)
        .await;
    let counted: u64 = body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["count"].as_u64().unwrap())
        .sum::<u64>()
        + body["suppressed_rows"].as_u64().unwrap();
    assert_eq!(counted, 2, "{body}");

    // The finding: egress went on while US was suspended.
    kill_switch(&server, KillCommand::Suspend, 1).await;
    let (status, body, _) = server
        .get("/v1/egress/profile")
        .bearer(&globe_sg)
        .bytes()
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        egress_rows(&body).0.len(),
        2,
        "SG rows only while US is suspended"
    );
    let body = server
        .get("/v1/egress/profile/aggregate?group_by=display_name")
        .bearer(&globe_sg)
        .expect(StatusCode::OK)
        .await;
    assert_eq!(body["suppressed_rows"], 2, "{body}");

    // Without the egress role, nothing.
    server
        .get("/v1/egress/profile")
        .token(&PARENT_SG)
        .expect(StatusCode::FORBIDDEN)
        .await;
    server.stop().await;
}

#[tokio::test]
async fn egress_cursors_carry_no_subject_id_and_cannot_be_altered() {
    let server = Server::start().await;
    for id in ["raw-id-alpha", "raw-id-beta", "raw-id-gamma"] {
        us_subject(&server, id).await;
    }
    let globe = server.token(&EGRESS);
    let before = server.state.log.size();
    let mut seen = Vec::new();
    let mut since: Option<String> = None;
    loop {
        let path = match &since {
            Some(cursor) => format!("/v1/egress/profile?limit=1&since={cursor}"),
            None => "/v1/egress/profile?limit=1".to_string(),
        };
        let (status, body, headers) = server.get(&path).bearer(&globe).bytes().await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let (rows, trailer) = egress_rows(&body);
        seen.extend(rows);
        let Some(cursor) = trailer["cursor"].as_str() else {
            break;
        };
        assert_eq!(
            headers["sovereign-cursor"].to_str().unwrap(),
            cursor,
            "the header and the trailer name one cursor"
        );
        // The finding: the cursor was base64 of `v1/profile/us-east/<raw id>/main`.
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .unwrap();
        assert!(!String::from_utf8_lossy(&decoded).contains("raw-id"));
        assert!(!cursor.contains("raw-id"));
        // One altered character and the cursor is refused.
        let mut altered: Vec<char> = cursor.chars().collect();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == 'A' { 'B' } else { 'A' };
        let altered: String = altered.into_iter().collect();
        let (status, body, _) = server
            .get(&format!("/v1/egress/profile?limit=1&since={altered}"))
            .bearer(&globe)
            .bytes()
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(String::from_utf8_lossy(&body).contains("invalid_cursor"));
        since = Some(cursor.to_string());
    }
    assert_eq!(seen.len(), 3, "every row once: {seen:?}");
    assert_not_logged(&server, before, "raw-id");
    server.stop().await;
}

#[tokio::test]
async fn unknown_ids_answer_as_known_ones_and_are_logged() {
    let server = Server::start().await;
    us_subject(&server, "u-1001").await;
    for who in [PARENT_CN, USDS_TRAVELLING_CN] {
        let token = server.token(&who);
        let mut answers = Vec::new();
        for id in ["u-1001", "u-never-registered"] {
            let before = server.state.log.size();
            let body = server
                .get(&format!("/v1/subjects/{id}/records/profile/main"))
                .bearer(&token)
                .purpose("debug")
                .expect(StatusCode::FORBIDDEN)
                .await;
            // Logged, under the id's pseudonym.
            let entry = entries_from(&server, before)
                .into_iter()
                .find(|(_, e)| e["kind"] == "access")
                .unwrap_or_else(|| panic!("{id}: no access entry"))
                .1;
            // An unknown id is decided for every jurisdiction: denied for US (so refused),
            // perhaps allowed for others.
            assert_eq!(entry["subject"], server.state.pseudonyms.pseudonym(id));
            assert_ne!(entry["outcome"], "allow", "{entry}");
            answers.push((body["error"].clone(), body["message"].clone()));
        }
        assert_eq!(
            answers[0], answers[1],
            "a known and an unknown id answer alike"
        );
    }

    // Registering a known id with another jurisdiction: denied (and logged as the subject it
    // is) to a restricted caller; a 409 only to someone allowed to see the subject.
    let before = server.state.log.size();
    let body = server
        .registration("u-1001", "SG")
        .token(&PARENT_CN)
        .expect(StatusCode::FORBIDDEN)
        .await;
    assert!(!body.to_string().contains("\"US\""), "{body}");
    let entry = server.entry(before);
    assert_eq!(entry["action"], "register");
    assert_eq!(entry["subject_jurisdiction"], "US");
    assert_eq!(entry["outcome"], "deny");
    server
        .registration("u-1001", "SG")
        .token(&VETTED_US)
        .expect(StatusCode::CONFLICT)
        .await;
    let entry = server.last_entry();
    assert_eq!(entry["subject_jurisdiction"], "US", "{entry}");
    server.stop().await;
}

#[tokio::test]
async fn the_residency_scan_is_decided_logged_and_shows_pseudonyms() {
    let server = Server::start().await;
    let legacy = gateway::setup::seed_legacy(&server.data(), 2).unwrap();
    sg_subject(&server, "s-0").await;

    let (status, body, headers) = server
        .get("/v1/residency/scan")
        .token(&MONITOR)
        .bytes()
        .await;
    assert_eq!(status, StatusCode::OK);
    let scan: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(scan["misplaced"], 2, "{scan}");
    let text = scan.to_string();
    for id in &legacy {
        assert!(!text.contains(id.as_str()), "raw id in the scan: {text}");
        assert!(
            text.contains(&server.state.pseudonyms.pseudonym(id)),
            "{text}"
        );
    }
    let index: u64 = headers["sovereign-log-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let entry = server.entry(index);
    assert_eq!(entry["action"], "scan");
    assert_eq!(entry["principal"]["id"], "mona");

    // A monitor located in CN is not shown US subjects.
    let (status, body, _) = server
        .get("/v1/residency/scan")
        .bearer(&server.token(&Who {
            location: "CN",
            ..MONITOR
        }))
        .bytes()
        .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let scan: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(scan["misplaced"], 0, "{scan}");

    // Staff without a scanning role: denied.
    let (status, _, _) = server
        .get("/v1/residency/scan")
        .token(&VETTED_US)
        .bytes()
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The operator migrates by the pseudonym the scan shows.
    let pseudonym = server.state.pseudonyms.pseudonym(&legacy[0]);
    let body = server
        .post("/v1/residency/migrate")
        .token(&OPERATOR)
        .body(&json!({"subject_pseudonym": pseudonym, "from": "sg-legacy"}).to_string())
        .expect(StatusCode::OK)
        .await;
    assert_eq!(body["to"], "us-east");
    assert!(!body.to_string().contains(legacy[0].as_str()), "{body}");
    // A monitor may not migrate.
    server
        .post("/v1/residency/migrate")
        .token(&MONITOR)
        .body(&json!({"subject": legacy[1], "from": "sg-legacy"}).to_string())
        .expect(StatusCode::FORBIDDEN)
        .await;
    server.stop().await;
}

#[tokio::test]
async fn the_live_feed_shows_data_subjects_by_pseudonym() {
    let server = Server::start().await;
    us_subject(&server, "u-feed-42").await;
    let ada = server.token(&subject_token("u-feed-42", "public", "US"));
    let Reply { status, body, .. } = server
        .get("/v1/subjects/u-feed-42/records/profile/main")
        .bearer(&ada)
        .purpose("my profile")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let summary = server.state.summary().to_string();
    assert!(summary.contains("subject:"), "{summary}");
    assert!(!summary.contains("u-feed-42"), "{summary}");
    server.stop().await;
}

/// Reads `u-1`'s protected activity as `token` until `stop`, answering every (status, index).
async fn read_until(
    server: Arc<Server>,
    token: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<(StatusCode, u64)> {
    let mut seen = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let response = server
            .client
            .get(format!(
                "{}/v1/subjects/u-1/records/activity/main",
                server.base
            ))
            .bearer_auth(&token)
            .header("Sovereign-Purpose", "ticket 5")
            .send()
            .await
            .unwrap();
        let status = response.status();
        let index = response.headers()["sovereign-log-index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        seen.push((status, index));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_decision_logged_after_a_revocation_or_suspension_uses_what_it_ended() {
    let server = Server::start().await;
    us_subject(&server, "u-1").await;
    let activity = json!({"watch_history": "w", "location": "l", "public_video_count": 1});
    server
        .write_activity_under_break_glass("u-1", &activity)
        .await;

    // Alice holds an approved read grant on activity; readers hammer it while it is revoked,
    // then while US is suspended.
    let alice = server.token(&VETTED_US);
    let request = json!({"action": "read", "subjects": ["u-1"], "collections": ["activity"],
        "purpose": "ticket 5", "reason_code": "customer-initiated-support", "duration": "1h"});
    let id = server.approved_request(&VETTED_US, &request).await;
    let server = Arc::new(server);
    let readers = |stop: &Arc<std::sync::atomic::AtomicBool>| {
        (0..8)
            .map(|_| tokio::spawn(read_until(server.clone(), alice.clone(), stop.clone())))
            .collect::<Vec<_>>()
    };

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let running = readers(&stop);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let Reply { status, body, .. } = server
        .post(&format!("/v1/access/requests/{id}/revoke"))
        .token(&APPROVER_1)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let revoked = custody_event(&server, "grant-revoked");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answers = Vec::new();
    for task in running {
        answers.extend(task.await.unwrap());
    }
    assert!(answers.iter().any(|(_, i)| *i < revoked), "reads before");
    assert!(answers.iter().any(|(_, i)| *i > revoked), "reads after");
    for (status, index) in &answers {
        // Before: the grant lets the protected fields through. After: the interoperable
        // ones only, decided without the grant.
        assert_eq!(*status, StatusCode::OK);
        let entry = server.entry(*index);
        if *index > revoked {
            assert_eq!(entry["grant"], Value::Null, "entry {index}: {entry}");
            assert_eq!(entry["outcome"], "partial", "entry {index}: {entry}");
        } else {
            assert_eq!(entry["grant"]["id"], id.as_str(), "entry {index}: {entry}");
            assert_eq!(entry["outcome"], "allow", "entry {index}: {entry}");
        }
    }

    // The same for the kill switch, with parent staff's interoperable reads, over several
    // suspensions and lifts: every read entry agrees with the last kill-switch entry before
    // it, and its answer with the entry.
    let siew = server.token(&PARENT_SG);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let running: Vec<_> = (0..16)
        .map(|_| tokio::spawn(read_until(server.clone(), siew.clone(), stop.clone())))
        .collect();
    for serial in 1..=10 {
        let command = if serial % 2 == 1 {
            KillCommand::Suspend
        } else {
            KillCommand::Lift
        };
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        kill_switch(&server, command, serial).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answers = std::collections::BTreeMap::new();
    for task in running {
        answers.extend(task.await.unwrap().into_iter().map(|(s, i)| (i, s)));
    }
    let mut suspended = false;
    let mut checked = 0;
    for index in 0..server.state.log.size() {
        let entry = server.entry(index);
        match entry["event"].as_str() {
            Some("jurisdiction-suspended") => suspended = true,
            Some("jurisdiction-lifted") => suspended = false,
            _ => {}
        }
        let Some(status) = answers.get(&index) else {
            continue;
        };
        checked += 1;
        assert_eq!(entry["suspended"], suspended, "entry {index}: {entry}");
        let want = if suspended {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::OK
        };
        assert_eq!(*status, want, "entry {index}: {entry}");
    }
    assert_eq!(checked, answers.len());
}

/// Rewrites the access request `id` in the custody store, as an insider with write access to
/// the data folder (but no custodian key) would.
fn tamper_request(data: &std::path::Path, id: &str, edit: impl FnOnce(&mut Value)) {
    let conn = rusqlite::Connection::open(data.join("custody/custody.sqlite")).unwrap();
    let body: String = conn
        .query_row(
            "SELECT body FROM records WHERE kind = 'request' AND id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap();
    let mut request: Value = serde_json::from_str(&body).unwrap();
    edit(&mut request);
    conn.execute(
        "UPDATE records SET body = ?1 WHERE kind = 'request' AND id = ?2",
        rusqlite::params![request.to_string(), id],
    )
    .unwrap();
}

#[tokio::test]
async fn a_grant_forged_in_the_custody_store_is_refused_by_the_log() {
    let server = Server::start().await;
    us_subject(&server, "u-1").await;
    let alice = server.token(&VETTED_US);
    let request = json!({"action": "read", "subjects": ["u-1"], "collections": ["activity"],
        "purpose": "ticket 5", "reason_code": "customer-initiated-support", "duration": "1h"});
    let request = server
        .post("/v1/access/requests")
        .bearer(&alice)
        .json(&request)
        .expect(StatusCode::CREATED)
        .await;
    let id = request["id"].as_str().unwrap().to_string();

    // Two invented approvers of another entity, the grant started now: well formed, so the
    // custody store's own checks pass; but the log at its index holds the request's creation,
    // not the approval that granted it.
    let now = crate::support::now();
    tamper_request(&server.data(), &id, |r| {
        r["approvals"] = json!([
            {"by": "mallory", "entity": "custodian", "at": now, "comment": ""},
            {"by": "trent", "entity": "custodian", "at": now, "comment": ""},
        ]);
        r["starts_at"] = json!(now);
        r["ends_at"] = json!(now + r["duration_seconds"].as_i64().unwrap());
    });
    let before = server.state.log.size();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let alert = loop {
        let found = entries_from(&server, before)
            .into_iter()
            .find(|(_, e)| e["kind"] == "alert" && e["alert"] == "custody-unverified");
        if let Some((_, alert)) = found {
            break alert;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no custody-unverified alert"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        alert["details"]["problem"].as_str().unwrap().contains(&id),
        "{alert}"
    );
    // The forged grant is not in force: the request is still pending to the gateway.
    assert!(
        server
            .state
            .custody
            .find_grant("alice", "read", "u-1", Some("activity"), now)
            .is_none()
    );
    let Reply { status, body, .. } = server
        .get(&format!("/v1/access/requests/{id}"))
        .bearer(&alice)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "pending", "{body}");

    // Nor can the gateway take up what other gateways may have changed since (a revocation,
    // the kill switch): after `custody.unreachable_after` it stops deciding.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let Reply { status, body, .. } = server
            .get("/v1/subjects/u-1/records/profile/main")
            .bearer(&alice)
            .purpose("ticket 5")
            .await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(body["error"], "custody_unreachable", "{body}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still deciding: {status} {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // And a gateway does not start on it.
    let dir = server.stop_keep().await;
    let refused = gateway::Gateway::open(dir.path()).err().expect("refused");
    let message = format!("{refused:#}");
    assert!(message.contains("does not verify"), "{message}");
    assert!(
        message.contains("the log does not bear it out"),
        "{message}"
    );
}

#[tokio::test]
async fn a_policy_text_changed_in_the_custody_store_is_refused() {
    let server = Server::start().await;
    let active = server.state.policy().policy_set_hash().to_string();
    let dir = server.stop_keep().await;
    // The active set's record keeps its hash and signature, but loses the restricted-country
    // forbid from its text.
    let conn = rusqlite::Connection::open(dir.path().join("custody/custody.sqlite")).unwrap();
    let body: String = conn
        .query_row(
            "SELECT body FROM records WHERE kind = 'policy-set' AND id = ?1",
            [&active],
            |r| r.get(0),
        )
        .unwrap();
    let mut set: Value = serde_json::from_str(&body).unwrap();
    let text = set["policies"].as_str().unwrap().to_string();
    let start = text.find("@id(\"forbid-restricted-location\")").unwrap();
    let end = start + text[start..].find("};").unwrap() + 2;
    set["policies"] = json!(format!("{}{}", &text[..start], &text[end..]));
    conn.execute(
        "UPDATE records SET body = ?1 WHERE kind = 'policy-set' AND id = ?2",
        rusqlite::params![set.to_string(), active],
    )
    .unwrap();
    drop(conn);
    let refused = gateway::Gateway::open(dir.path()).err().expect("refused");
    let message = format!("{refused:#}");
    assert!(
        message.contains("changed after the custodian signed it"),
        "{message}"
    );
}
