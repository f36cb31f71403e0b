//! The transparency log as the gateway writes and serves it: every decision logged before its
//! answer, indexes in headers, entries in the documented format, no field values or raw
//! subject ids, the served tiles verifying, and 503 when the log cannot be written.

use crate::support::*;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Waits for a checkpoint covering `size` entries, then verifies the whole served log and
/// returns its entries.
async fn verified_entries(server: &Server, size: u64) -> Vec<Value> {
    let key = server.log_key().await;
    let verifier = tlog::note::Verifier::new(key.trim()).unwrap();
    server.wait_for_checkpoint(size).await;
    let fetcher = server.tiles();
    tokio::task::spawn_blocking(move || {
        let mut entries = Vec::new();
        let checkpoint = tlog::verify_log(
            &fetcher,
            &verifier,
            None,
            &mut |_, _| {},
            &mut |_, entry| {
                entries.push(serde_json::from_slice::<Value>(entry).map_err(|e| e.to_string())?);
                Ok(())
            },
        )
        .unwrap();
        assert!(
            checkpoint.size >= size,
            "checkpoint {} < {size}",
            checkpoint.size
        );
        entries
    })
    .await
    .unwrap()
}

fn log_index(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get("sovereign-log-index")
        .map(|v| v.to_str().unwrap().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_decision_is_logged_before_its_answer_and_the_log_verifies() {
    let server = Server::start().await;
    let alice = server.token(&VETTED_US);
    let chen = server.token(&PARENT_CN);
    let siew = server.token(&PARENT_SG);
    let profile =
        r#"{"email":"MARKER-email-7f3a","phone":"MARKER-phone-7f3a","display_name":"Ada"}"#;

    let mut indexes = Vec::new();
    // (method, path, token, purpose, body, expected status)
    type Request<'a> = (
        Method,
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        StatusCode,
    );
    let requests: Vec<Request> = vec![
        (
            Method::PUT,
            "/v1/subjects/subject-raw-id-42",
            &alice,
            None,
            Some(r#"{"jurisdiction":"US"}"#),
            StatusCode::CREATED,
        ),
        (
            Method::PUT,
            "/v1/subjects/subject-raw-id-42/records/profile/main",
            &alice,
            Some("setup"),
            Some(profile),
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/v1/subjects/subject-raw-id-42/records/profile/main",
            &alice,
            Some("support"),
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/v1/subjects/subject-raw-id-42/records/profile/main",
            &chen,
            Some("debug"),
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            Method::GET,
            "/v1/subjects/subject-raw-id-42/records/profile/main",
            &siew,
            None,
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/v1/subjects/subject-raw-id-42/records",
            &alice,
            None,
            None,
            StatusCode::OK,
        ),
        (
            Method::DELETE,
            "/v1/subjects/subject-raw-id-42/records/profile/main",
            &alice,
            Some("erasure request"),
            None,
            StatusCode::OK,
        ),
    ];
    for (method, path, token, purpose, body, want) in requests {
        let mut request = server
            .client
            .request(method.clone(), format!("{}{path}", server.base))
            .bearer_auth(token);
        if let Some(purpose) = purpose {
            request = request.header("Sovereign-Purpose", purpose);
        }
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), want, "{method} {path}");
        let index =
            log_index(&response).unwrap_or_else(|| panic!("{method} {path} has no log index"));
        // The entry is durable and in the tree before the answer.
        assert!(index < server.state.log.size());
        indexes.push(index);
    }
    // Requests refused before any decision (no token) are not decisions and carry no index.
    let response = server.get("/v1/subjects/subject-raw-id-42").raw().await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(log_index(&response), None);

    let entries = verified_entries(&server, indexes.last().unwrap() + 1).await;
    // On the first start the custodian-signed invariants are proposed and activated, then
    // the custodian-signed policy set is proposed and activated with its proofs against
    // them, then the start itself is logged.
    let active = server.state.policy().policy_set_hash().to_string();
    assert_eq!(entries[0]["event"], "invariants-proposed", "{}", entries[0]);
    assert_eq!(
        entries[1]["event"], "invariants-activated",
        "{}",
        entries[1]
    );
    let invariant_set = entries[1]["details"]["invariant_set"].as_str().unwrap();
    assert_eq!(entries[0]["details"]["invariant_set"], invariant_set);
    assert_eq!(entries[1]["details"]["signers"][0], "custodian");
    let names = entries[1]["details"]["invariants"].as_array().unwrap();
    assert_eq!(names.len(), 8);
    assert_eq!(entries[2]["event"], "policy-proposed", "{}", entries[2]);
    assert_eq!(entries[3]["event"], "policy-activated", "{}", entries[3]);
    let details = &entries[3]["details"];
    assert_eq!(details["policy_set"], active.as_str());
    assert_eq!(details["signers"][0], "custodian");
    assert_eq!(details["invariant_set"], invariant_set);
    let proofs = &details["proofs"];
    assert_eq!(proofs["policy_set"], active.as_str());
    assert_eq!(proofs["invariant_set"], invariant_set);
    assert_eq!(proofs["solver"], "cvc5");
    assert!(
        proofs["solver_version"].as_str().unwrap().contains('.'),
        "{proofs}"
    );
    let results = proofs["invariants"].as_array().unwrap();
    assert_eq!(results.len(), 8, "{proofs}");
    assert!(results.iter().all(|r| r["result"] == "proven"), "{proofs}");
    let never_errors = proofs["never_errors"].as_array().unwrap();
    assert_eq!(
        never_errors.len(),
        details["policy_ids"].as_array().unwrap().len()
    );
    assert!(
        never_errors.iter().all(|r| r["result"] == "never_errors"),
        "{proofs}"
    );
    assert_eq!(entries[4]["kind"], "config", "then the start");
    assert_eq!(entries[4]["policy_set"], active.as_str());

    let expectations = [
        ("register", "allow"),
        ("write", "allow"),
        ("read", "allow"),
        ("read", "deny"),
        ("read", "partial"),
        ("list", "allow"),
        ("delete", "allow"),
    ];
    let pseudonym = server.state.pseudonyms.pseudonym("subject-raw-id-42");
    for (index, (action, outcome)) in indexes.iter().zip(expectations) {
        let entry = &entries[*index as usize];
        assert_eq!(entry["v"], 2);
        assert_eq!(entry["kind"], "access");
        assert_eq!(entry["site_jurisdiction"], "US");
        assert_eq!(entry["suspended"], false);
        assert!(entry["context_time"].as_i64().unwrap() > 1_700_000_000);
        assert!(entry["grant"].is_null());
        assert_eq!(entry["action"], action, "{entry}");
        assert_eq!(entry["outcome"], outcome, "{entry}");
        assert_eq!(entry["subject"], pseudonym.as_str());
        assert_eq!(entry["subject_jurisdiction"], "US");
        assert_eq!(entry["site"], "us-east");
        assert_eq!(entry["policy_set"], server.state.policy().policy_set_hash());
        assert!(entry["time"].as_str().unwrap().ends_with('Z'));
    }
    let denied = &entries[indexes[3] as usize];
    assert_eq!(denied["principal"]["location"], "CN");
    assert!(
        denied["policies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "forbid-restricted-location")
    );
    let write = &entries[indexes[1] as usize];
    let mut fields: Vec<&str> = write["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    fields.sort();
    assert_eq!(fields, ["display_name", "email", "phone"]);
    assert_eq!(write["purpose"], "setup");

    // No protected value and no raw subject id anywhere in the log.
    for entry in &entries {
        let text = entry.to_string();
        assert!(
            !text.contains("MARKER"),
            "a field value reached the log: {text}"
        );
        assert!(
            !text.contains("subject-raw-id-42"),
            "a raw subject id reached the log: {text}"
        );
    }

    // Proofs served as JSON check against the signed checkpoint.
    let checkpoint = server.state.log.checkpoint();
    let proof: Value = server
        .client
        .get(format!(
            "{}/log/proof/inclusion?index={}",
            server.base, indexes[3]
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hashes: Vec<tlog::Hash> = proof["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| tlog::hash_from_base64(h.as_str().unwrap()).unwrap())
        .collect();
    let raw = server.state.log.entry(indexes[3]).unwrap().unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&raw).unwrap(),
        entries[indexes[3] as usize]
    );
    let leaf = tlog::leaf_hash(&raw);
    tlog::check_record(
        &hashes,
        checkpoint.size,
        &checkpoint.hash,
        indexes[3],
        &leaf,
    )
    .unwrap();
    let bad = server.get("/log/proof/inclusion?index=999999").raw().await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_tiles_are_immutable_and_partial_ones_revalidated() {
    let server = Server::start().await;
    let alice = server.token(&VETTED_US);
    server.register_us(&alice, "u-1").await;
    for i in 0..300 {
        let Reply { status, .. } = server
            .get("/v1/subjects/u-1")
            .bearer(&alice)
            .purpose(&format!("check {i}"))
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let get = |path: &str| {
        server
            .client
            .get(format!("{}/log/{path}", server.base))
            .send()
    };
    let full = get("tile/0/000").await.unwrap();
    assert_eq!(full.status(), StatusCode::OK);
    assert!(
        full.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert_eq!(full.bytes().await.unwrap().len(), 256 * 32);
    let partial = get("tile/entries/001.p/3").await.unwrap();
    assert_eq!(partial.status(), StatusCode::OK);
    assert_eq!(partial.headers()["cache-control"], "no-cache");
    assert_eq!(
        tlog::decode_bundle(&partial.bytes().await.unwrap(), 3)
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        get("tile/0/999").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get("tile/0/1").await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    let key = get("key").await.unwrap().text().await.unwrap();
    assert!(key.starts_with("sovereign.local/log-"), "{key}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_log_cannot_be_written_nothing_is_served_or_changed() {
    let server = Server::start().await;
    let alice = server.token(&VETTED_US);
    subject_with_profile(&server, &alice, "u-1", r#"{"email":"a@example.com"}"#).await;

    server.state.log.close();
    let body = server
        .get("/v1/subjects/u-1/records/profile/main")
        .bearer(&alice)
        .purpose("support")
        .expect(StatusCode::SERVICE_UNAVAILABLE)
        .await;
    assert_eq!(body["error"], "log_unavailable");
    assert!(body.get("fields").is_none());
    server
        .put("/v1/subjects/u-1/records/profile/main")
        .bearer(&alice)
        .purpose("update")
        .body(r#"{"email":"b@example.com"}"#)
        .expect(StatusCode::SERVICE_UNAVAILABLE)
        .await;
    server
        .delete("/v1/subjects/u-1/records/profile/main")
        .bearer(&alice)
        .purpose("erase")
        .expect(StatusCode::SERVICE_UNAVAILABLE)
        .await;
    server
        .registration("u-2", "US")
        .bearer(&alice)
        .expect(StatusCode::SERVICE_UNAVAILABLE)
        .await;

    let record = server
        .vault()
        .get_record("u-1", "profile", "main", vault::UnwrapReason::Access)
        .unwrap()
        .unwrap();
    assert_eq!(
        record.fields["email"], "a@example.com",
        "the write must not have happened"
    );
    assert!(server.vault().find_subject("u-2").unwrap().is_none());
    server.stop().await;
}
