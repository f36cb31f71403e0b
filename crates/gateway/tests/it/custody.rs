//! The custodian's controls, each rule through the HTTP API of a real server: approvals
//! (N of M, no self- or same-entity approval, expiry, revocation), break-glass, signed policy
//! activation, algorithm releases and the kill switch.

use std::time::Duration;

use crate::support::*;
use custody::statement::{KillCommand, Statement};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// An approver who works for the same entity as the requester (usds).
const USDS_APPROVER: Who = Who {
    sub: "erin",
    entity: "usds",
    location: "US",
    clearance: &["us-data"],
    roles: &["custodian-approver"],
};
/// A vetted engineer who is also an approver, to try approving their own request.
const VETTED_APPROVER: Who = Who {
    sub: "gus",
    entity: "usds",
    location: "US",
    clearance: &["us-data"],
    roles: &["engineer", "custodian-approver"],
};
const APPROVER_IN_CN: Who = Who {
    sub: "hui",
    entity: "custodian",
    location: "CN",
    clearance: &[],
    roles: &["custodian-approver"],
};
const AUTHOR: Who = Who {
    sub: "pat",
    entity: "parent",
    location: "SG",
    clearance: &[],
    roles: &["algorithm-author"],
};

/// Writes a protected field of `activity` (which needs a custodian grant by default).
async fn write_activity(server: &Server, token: &str, subject: &str) -> Reply {
    server
        .put(&format!("/v1/subjects/{subject}/records/activity/a1"))
        .bearer(token)
        .purpose("support ticket 7")
        .body(r#"{"watch_history":"v1,v2"}"#)
        .await
}

async fn request_access(server: &Server, token: &str, duration: &str) -> Value {
    let body = json!({
        "action": "write",
        "subjects": ["u-1"],
        "collections": ["activity"],
        "purpose": "support ticket 7",
        "reason_code": "customer-initiated-support",
        "duration": duration,
    })
    .to_string();
    let Reply {
        status,
        body: request,
        ..
    } = server
        .post("/v1/access/requests")
        .bearer(token)
        .body(&body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{request}");
    assert_eq!(request["status"], "pending");
    assert_eq!(
        request["approvals_required"], 2,
        "activity needs 2 approvals"
    );
    request
}

async fn decide(server: &Server, who: &Who, id: &str, verb: &str) -> Reply {
    server
        .post(&format!("/v1/access/requests/{id}/{verb}"))
        .token(who)
        .body(r#"{"comment":"checked the ticket"}"#)
        .await
}

fn custodian_key(server: &Server) -> tlog::note::Signer {
    crate::support::custodian_key(&server.data())
}

fn stranger_key() -> tlog::note::Signer {
    let (skey, _) = tlog::note::generate_key("custodian").unwrap();
    tlog::note::Signer::new(&skey).unwrap()
}

#[tokio::test]
async fn n_of_m_approval_grants_access_until_the_grant_ends() {
    let server = Server::start().await;
    let alice = server.token(&VETTED_US);
    server.register_us(&alice, "u-1").await;

    let body = write_activity(&server, &alice, "u-1")
        .await
        .refused(StatusCode::FORBIDDEN, "approval_required");
    assert_eq!(body["policies"], json!(["forbid-protected-without-grant"]));

    let request = request_access(&server, &alice, "3s").await;
    let id = request["id"].as_str().unwrap();

    // One approval of two: the threshold is not met, nothing is granted.
    let Reply { status, body, .. } = decide(&server, &APPROVER_1, id, "approve").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "pending");
    decide(&server, &APPROVER_1, id, "approve")
        .await
        .refused(StatusCode::CONFLICT, "already_approved");
    let Reply { status, body, .. } = write_activity(&server, &alice, "u-1").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "threshold not met: {body}");

    let Reply { status, body, .. } = decide(&server, &APPROVER_2, id, "approve").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "approved");
    assert!(body["ends_at"].is_string());

    let Reply { status, body, .. } = write_activity(&server, &alice, "u-1").await;
    assert_eq!(status, StatusCode::OK, "with the grant: {body}");
    let granted_write = server.state.log.size() - 1;
    // The grant covers u-1 only.
    server.register_us(&alice, "u-2").await;
    let Reply {
        status, body: _, ..
    } = write_activity(&server, &alice, "u-2").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "outside the grant's scope");

    // The log says which grant allowed the write, and Cedar saw it.
    let logged = server.entry(granted_write);
    assert_eq!(logged["outcome"], "allow", "{logged}");
    assert_eq!(logged["grant"]["id"], id);
    assert_eq!(logged["grant"]["kind"], "approved");

    // The grant ends by itself.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let Reply { status, body, .. } = write_activity(&server, &alice, "u-1").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "expired grant: {body}");
    let Reply { body, .. } = server
        .get(&format!("/v1/access/requests/{id}"))
        .bearer(&alice)
        .await;
    assert_eq!(body["status"], "ended");
    server.stop().await;
}

#[tokio::test]
async fn nobody_approves_their_own_or_their_entitys_request() {
    let server = Server::start().await;
    let gus = server.token(&VETTED_APPROVER);
    let request = request_access(&server, &gus, "1h").await;
    let id = request["id"].as_str().unwrap();

    decide(&server, &VETTED_APPROVER, id, "approve")
        .await
        .refused(StatusCode::FORBIDDEN, "self_approval");
    decide(&server, &USDS_APPROVER, id, "approve")
        .await
        .refused(StatusCode::FORBIDDEN, "same_entity");
    decide(&server, &VETTED_US, id, "approve")
        .await
        .refused(StatusCode::FORBIDDEN, "role_required");
    let Reply { status, body, .. } = decide(&server, &APPROVER_IN_CN, id, "approve").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "restricted_location");

    // None of that counted: still pending with no approvals.
    let Reply { body, .. } = server
        .get(&format!("/v1/access/requests/{id}"))
        .token(&APPROVER_1)
        .await;
    assert_eq!(body["status"], "pending");
    assert_eq!(body["approvals"], json!([]));

    // A denial ends it.
    let Reply { status, body, .. } = decide(&server, &APPROVER_1, id, "deny").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "denied");
    decide(&server, &APPROVER_2, id, "approve")
        .await
        .refused(StatusCode::CONFLICT, "not_pending");
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_are_refused_and_change_nothing() {
    let server = Server::start().await;
    let alice = server.token(&VETTED_US);
    let size = server.state.log.size();
    for (body, code) in [
        (
            json!({"action":"read","purpose":"x","reason_code":"because"}),
            "invalid_request",
        ),
        (
            json!({"action":"peek","purpose":"x","reason_code":"legal-request"}),
            "invalid_request",
        ),
        (
            json!({"action":"read","purpose":"","reason_code":"legal-request"}),
            "invalid_request",
        ),
        (
            json!({"action":"read","purpose":"x","reason_code":"legal-request","duration":"9h"}),
            "invalid_request",
        ),
        (
            json!({"action":"read","purpose":"x","reason_code":"legal-request","collections":["nope"]}),
            "unknown_collection",
        ),
        (
            json!({"action":"read","purpose":"x","reason_code":"legal-request","fields":["shoe_size"]}),
            "invalid_request",
        ),
        (
            json!({"action":"read","purpose":"x","reason_code":"legal-request","extra":1}),
            "invalid_body",
        ),
    ] {
        let Reply {
            status,
            body: answer,
            ..
        } = server
            .post("/v1/access/requests")
            .bearer(&alice)
            .json(&body)
            .await;
        assert!(status.is_client_error(), "{body}: {status} {answer}");
        assert_eq!(answer["error"], code, "{body}: {answer}");
    }
    assert_eq!(server.state.log.size(), size, "nothing was logged");
    assert!(server.state.custody.requests().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_revoked_grant_stops_working_at_once() {
    let server = Server::start().await;
    let alice = server.token(&VETTED_US);
    server.register_us(&alice, "u-1").await;
    let request = request_access(&server, &alice, "1h").await;
    let id = request["id"].as_str().unwrap();
    decide(&server, &APPROVER_1, id, "approve").await;
    decide(&server, &APPROVER_2, id, "approve").await;
    assert_eq!(
        write_activity(&server, &alice, "u-1").await.status,
        StatusCode::OK
    );

    let Reply { status, body, .. } = decide(&server, &APPROVER_1, id, "revoke").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "revoked");
    let Reply { status, body, .. } = write_activity(&server, &alice, "u-1").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let Reply {
        status, body: _, ..
    } = decide(&server, &APPROVER_1, id, "revoke").await;
    assert_eq!(status, StatusCode::CONFLICT, "nothing left to revoke");
    server.stop().await;
}

#[tokio::test]
async fn pending_requests_expire() {
    let server =
        Server::start_with_config(&[("request_ttl = \"12h\"", "request_ttl = \"1s\"")]).await;
    let alice = server.token(&VETTED_US);
    let request = request_access(&server, &alice, "1h").await;
    let id = request["id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let Reply { status, body, .. } = decide(&server, &APPROVER_1, id, "approve").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "not_pending");
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    let Reply { body: list, .. } = server
        .get("/v1/access/requests?status=expired")
        .token(&APPROVER_1)
        .await;
    assert_eq!(list["requests"][0]["id"], id);
    server.stop().await;
}

#[tokio::test]
async fn break_glass_acts_at_once_alerts_and_waits_for_review() {
    let server = Server::start().await;
    let alice = server.token(&VETTED_US);
    let frank = server.token(&BREAK_GLASS);
    server.register_us(&alice, "u-1").await;
    let body = json!({
        "action": "write",
        "collections": ["activity"],
        "purpose": "outage: corrupted watch history",
        "reason_code": "incident-response",
    })
    .to_string();

    server
        .post("/v1/access/break-glass")
        .bearer(&alice)
        .body(&body)
        .expect(StatusCode::FORBIDDEN)
        .await;

    let Reply {
        status, body: use_, ..
    } = server
        .post("/v1/access/break-glass")
        .bearer(&frank)
        .body(&body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{use_}");
    assert_eq!(use_["kind"], "break-glass");
    assert_eq!(use_["status"], "approved");
    let id = use_["id"].as_str().unwrap();
    // The custody entry, then the alert.
    let alert = server.last_entry();
    assert_eq!(alert["kind"], "alert", "{alert}");
    assert_eq!(alert["alert"], "break-glass");
    assert_eq!(alert["actor"]["id"], "frank");

    let Reply {
        status,
        body: answer,
        ..
    } = write_activity(&server, &frank, "u-1").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let logged = server.last_entry();
    assert_eq!(logged["grant"]["kind"], "break-glass", "{logged}");

    let approver = server.token(&APPROVER_1);
    let unreviewed = |server: &Server, token: String| {
        let server_base = server.base.clone();
        let client = server.client.clone();
        async move {
            let response = client
                .get(format!(
                    "{server_base}/v1/access/break-glass?unreviewed=true"
                ))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            response.json::<Value>().await.unwrap()["uses"].clone()
        }
    };
    assert_eq!(unreviewed(&server, approver.clone()).await[0]["id"], id);
    // The dashboard's alert names the use, shown as not reviewed yet.
    let summary = server.state.summary();
    assert_eq!(summary["alerts"][0]["break_glass"], id, "{summary}");
    assert_eq!(summary["break_glass_reviewed"][id], false, "{summary}");
    server
        .post(&format!("/v1/access/break-glass/{id}/review"))
        .bearer(&frank)
        .body(r#"{"comment":"fine by me"}"#)
        .expect(StatusCode::FORBIDDEN)
        .await;
    server
        .post(&format!("/v1/access/break-glass/{id}/review"))
        .bearer(&approver)
        .body(r#"{"comment":"justified: incident 2026-11-22"}"#)
        .expect(StatusCode::OK)
        .await;
    assert_eq!(unreviewed(&server, approver).await, json!([]));
    assert_eq!(server.state.summary()["break_glass_reviewed"][id], true);
    server.stop().await;
}

#[tokio::test]
async fn the_kill_switch_suspends_everything_until_lifted() {
    let server = Server::start().await;
    let alice = server.token(&VETTED_US);
    let olga = server.token(&OPERATOR);
    server.register_us(&alice, "u-1").await;
    let key = custodian_key(&server);
    let command = |command, serial| Statement::KillSwitch {
        command,
        jurisdiction: "US".into(),
        serial,
    };

    // Only a custodian signature counts, and only an operator may submit it.
    let forged = signed(&command(KillCommand::Suspend, 1), &stranger_key());
    let body = server
        .post("/v1/kill-switch")
        .bearer(&olga)
        .body(&forged)
        .expect(StatusCode::FORBIDDEN)
        .await;
    assert_eq!(body["error"], "threshold_not_met");
    let suspend = signed(&command(KillCommand::Suspend, 1), &key);
    let body = server
        .post("/v1/kill-switch")
        .bearer(&alice)
        .body(&suspend)
        .expect(StatusCode::FORBIDDEN)
        .await;
    assert_eq!(body["error"], "role_required");

    let body = server
        .post("/v1/kill-switch")
        .bearer(&olga)
        .body(&suspend)
        .expect(StatusCode::OK)
        .await;
    assert_eq!(body["jurisdictions"][0]["jurisdiction"], "CN");
    let us = body["jurisdictions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["jurisdiction"] == "US")
        .unwrap();
    assert_eq!(us["suspended"], true);

    // Every kind of access to US data is denied, with a reason that says so, and logged.
    for (method, path, body) in [
        (Method::GET, "/v1/subjects/u-1", None),
        (Method::GET, "/v1/subjects/u-1/records/profile/p", None),
        (
            Method::PUT,
            "/v1/subjects/u-1/records/profile/p",
            Some(r#"{"display_name":"A"}"#),
        ),
        (
            Method::PUT,
            "/v1/subjects/u-9",
            Some(r#"{"jurisdiction":"US"}"#),
        ),
    ] {
        let answer = server
            .request(method.clone(), path)
            .bearer(&alice)
            .purpose("support")
            .body_opt(body)
            .expect(StatusCode::FORBIDDEN)
            .await;
        assert_eq!(answer["error"], "suspended", "{answer}");
        let logged = server.last_entry();
        assert_eq!(logged["suspended"], true);
        assert_eq!(logged["outcome"], "deny");
    }

    // An old command cannot be replayed; lifting takes a newer serial.
    let body = server
        .post("/v1/kill-switch")
        .bearer(&olga)
        .body(&suspend)
        .expect(StatusCode::CONFLICT)
        .await;
    assert_eq!(body["error"], "stale_serial");
    let lift = signed(&command(KillCommand::Lift, 2), &key);
    server
        .post("/v1/kill-switch")
        .bearer(&olga)
        .body(&lift)
        .expect(StatusCode::OK)
        .await;
    server
        .get("/v1/subjects/u-1")
        .bearer(&alice)
        .expect(StatusCode::OK)
        .await;
    server.stop().await;
}

#[tokio::test]
async fn a_policy_set_becomes_active_only_with_the_custodians_signature() {
    let server = Server::start().await;
    let olga = server.token(&OPERATOR);
    let alice = server.token(&VETTED_US);
    let first = server.state.policy().policy_set_hash().to_string();

    let Reply { status, body, .. } = server
        .post("/v1/policies")
        .bearer(&olga)
        .json(&json!({"policies": "permit (principal, action, resource);"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_policy");
    assert!(body["message"].as_str().unwrap().contains("@id"), "{body}");

    // The new set also lets usds staff list subjects in SG.
    let set = server.state.custody.active_policy().unwrap();
    let policies = format!(
        "{}\n@id(\"permit-usds-list-sg\")\npermit (principal, action == Sovereign::Action::\"list\", resource is Sovereign::Subject)\nwhen {{ principal.entity == \"usds\" && resource.subject_jurisdiction == \"SG\" }};\n",
        set.policies
    );
    let proposed = server
        .post("/v1/policies")
        .bearer(&olga)
        .body(&json!({ "policies": policies }).to_string())
        .expect(StatusCode::CREATED)
        .await;
    let hash = proposed["hash"].as_str().unwrap().to_string();
    assert_eq!(hash, policy::policy_set_hash(&set.schema, &policies));
    let activate = format!("/v1/policies/{hash}/activate");

    let refusals = [
        (String::new(), StatusCode::BAD_REQUEST, "invalid_signature"),
        (
            "not a note".to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_signature",
        ),
        (
            signed(
                &Statement::PolicyActivation {
                    policy_set: hash.clone(),
                },
                &stranger_key(),
            ),
            StatusCode::FORBIDDEN,
            "threshold_not_met",
        ),
        (
            signed(
                &Statement::PolicyActivation {
                    policy_set: first.clone(),
                },
                &custodian_key(&server),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_signature",
        ),
    ];
    for (note, status_wanted, code) in refusals {
        let Reply { status, body, .. } = server.post(&activate).bearer(&olga).body(&note).await;
        assert_eq!(status, status_wanted, "{note}: {body}");
        assert_eq!(body["error"], code, "{body}");
        assert_eq!(
            server.state.policy().policy_set_hash(),
            first,
            "still the first set"
        );
    }

    let note = signed(
        &Statement::PolicyActivation {
            policy_set: hash.clone(),
        },
        &custodian_key(&server),
    );
    server
        .post(&activate)
        .bearer(&alice)
        .body(&note)
        .expect(StatusCode::FORBIDDEN)
        .await;
    let body = server
        .post(&activate)
        .bearer(&olga)
        .body(&note)
        .expect(StatusCode::OK)
        .await;
    assert_eq!(body["signers"], json!(["custodian"]));
    assert_eq!(server.state.policy().policy_set_hash(), hash);

    // Decisions now name the new set; the old one stays fetchable by hash, without a token.
    server.register_us(&alice, "u-1").await;
    let logged = server.last_entry();
    assert_eq!(logged["policy_set"], hash.as_str());
    let Reply {
        status, body: old, ..
    } = server.get(&format!("/v1/policies/{first}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(old["status"], "retired");
    assert_eq!(
        policy::policy_set_hash(
            old["schema"].as_str().unwrap(),
            old["policies"].as_str().unwrap()
        ),
        first
    );

    // The activation survives a restart; the policy file on disk does not override it.
    let dir = server.stop_keep().await;
    let gateway = gateway::Gateway::open(dir.path()).unwrap();
    assert_eq!(gateway.state().policy().policy_set_hash(), hash);
}

#[tokio::test]
async fn an_algorithm_runs_only_as_the_custodian_released_it() {
    let server = Server::start().await;
    let pat = server.token(&AUTHOR);
    let olga = server.token(&OPERATOR);
    let artifact = b"def rank(videos): return sorted(videos, key=score)\n".to_vec();
    let submit = |token: String, bytes: Vec<u8>| {
        let client = server.client.clone();
        let url = format!("{}/v1/algorithms/ranker/1.4.0", server.base);
        async move {
            let response = client
                .post(url)
                .bearer_auth(token)
                .body(bytes)
                .send()
                .await
                .unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = submit(server.token(&VETTED_US), artifact.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, release) = submit(pat.clone(), artifact.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{release}");
    let digest = release["sha256"].as_str().unwrap().to_string();
    assert_eq!(digest, sha256_hex(&artifact));
    let (status, body) = submit(pat.clone(), b"other bytes".to_vec()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "version_exists");

    let activate = "/v1/algorithms/ranker/1.4.0/activate";
    let statement = |sha256: &str| Statement::AlgorithmRelease {
        name: "ranker".into(),
        version: "1.4.0".into(),
        sha256: sha256.into(),
        manifest: None,
    };
    for (note, code) in [
        (
            signed(&statement(&digest), &stranger_key()),
            "threshold_not_met",
        ),
        (
            signed(&statement(&"0".repeat(64)), &custodian_key(&server)),
            "invalid_signature",
        ),
    ] {
        let Reply { status, body, .. } = server.post(activate).bearer(&olga).body(&note).await;
        assert!(status.is_client_error(), "{body}");
        assert_eq!(body["error"], code, "{body}");
    }
    let Reply { body: active, .. } = server.get("/v1/algorithms/active").await;
    assert_eq!(active["releases"], json!([]), "nothing unsigned is active");

    let note = signed(&statement(&digest), &custodian_key(&server));
    let Reply { status, body, .. } = server.post(activate).bearer(&olga).body(&note).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let Reply { body: active, .. } = server.get("/v1/algorithms/active").await;
    assert_eq!(active["releases"][0]["sha256"], digest.as_str());
    assert_eq!(active["releases"][0]["signature"], note.as_str());

    let fetch = |token: String| {
        let client = server.client.clone();
        let url = format!("{}/v1/algorithms/ranker/1.4.0/artifact", server.base);
        async move { client.get(url).bearer_auth(token).send().await.unwrap() }
    };
    let response = fetch(pat.clone()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["sovereign-sha256"], digest.as_str());
    assert_eq!(response.bytes().await.unwrap().to_vec(), artifact);

    // A tampered artifact is never served.
    let stored = server.data().join("custody/algorithms").join(&digest);
    std::fs::write(&stored, b"def rank(videos): exfiltrate(videos)\n").unwrap();
    let response = fetch(pat).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "artifact_corrupt");
    server.stop().await;
}

#[tokio::test]
async fn a_grant_scoped_to_fields_reveals_only_those_fields() {
    let server = Server::start().await;
    let alice = server.token(&VETTED_US);
    let frank = server.token(&BREAK_GLASS);
    server.register_us(&alice, "u-1").await;
    // Break-glass to write the record, then a field-scoped read grant.
    let body = json!({"action": "write", "collections": ["activity"], "purpose": "seed", "reason_code": "service-maintenance"});
    server.break_glass(&frank, &body).await;
    server
        .put("/v1/subjects/u-1/records/activity/a1")
        .bearer(&frank)
        .purpose("seed")
        .body(r#"{"watch_history":"v1","location":"Austin","public_video_count":3}"#)
        .expect(StatusCode::OK)
        .await;

    let body = json!({
        "action": "read", "subjects": ["u-1"], "collections": ["activity"],
        "fields": ["watch_history"], "purpose": "ticket 12",
        "reason_code": "customer-initiated-support", "duration": "1h",
    });
    let id = server.request_access(&alice, &body).await;
    decide(&server, &APPROVER_1, &id, "approve").await;
    decide(&server, &APPROVER_2, &id, "approve").await;

    let record = server
        .get("/v1/subjects/u-1/records/activity/a1")
        .bearer(&alice)
        .purpose("ticket 12")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(record["fields"]["watch_history"], "v1");
    assert_eq!(record["fields"]["public_video_count"], 3);
    assert!(record["fields"].get("location").is_none(), "{record}");
    assert_eq!(record["withheld"], json!(["location"]));
    server.stop().await;
}
