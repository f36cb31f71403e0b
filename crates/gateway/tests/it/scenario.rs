//! The reference scenario (README, "Try the reference scenario"), end to end against a real server (all but the log).

use crate::support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const PROFILE: &str = r#"{"email":"ada@example.com","birthdate":"1990-01-02","phone":"+1 555 0100","display_name":"Ada"}"#;

/// Ada's profile record (the reference scenario's subject).
const ADA: &str = "/v1/subjects/u-1001/records/profile/main";

/// Ada's profile as `token` reads it (with `purpose` where there is one); the answer must have
/// `status`. Answers its body.
async fn read_ada(
    server: &Server,
    token: &str,
    purpose: Option<&str>,
    status: StatusCode,
) -> Value {
    server
        .get(ADA)
        .bearer(token)
        .purpose_opt(purpose)
        .expect(status)
        .await
}

/// Writes Ada's profile `record` with `token` (and `purpose` where there is one); the answer
/// must have `status`. Answers its body.
async fn write_ada(
    server: &Server,
    token: &str,
    purpose: Option<&str>,
    record: &str,
    status: StatusCode,
) -> Value {
    let put = server
        .put(ADA)
        .bearer(token)
        .purpose_opt(purpose)
        .body(record);
    put.expect(status).await
}

#[tokio::test]
async fn reference_scenario() {
    let server = Server::start().await;
    let alice = server.token(&VETTED_US);

    // A US subject is registered and lands in us-east.
    let body = server
        .registration("u-1001", "US")
        .bearer(&alice)
        .expect(StatusCode::CREATED)
        .await;
    assert_eq!(body["site"], "us-east");
    // Registering again with the same jurisdiction is idempotent.
    server
        .registration("u-1001", "US")
        .bearer(&alice)
        .expect(StatusCode::OK)
        .await;

    // Its profile is written by vetted US staff, with a purpose, and lands in us-east.
    let body = write_ada(
        &server,
        &alice,
        Some("account setup"),
        PROFILE,
        StatusCode::OK,
    )
    .await;
    assert_eq!(body["site"], "us-east");

    // A vetted usds engineer in the US reads all of it.
    let body = read_ada(&server, &alice, Some("support ticket 42"), StatusCode::OK).await;
    assert_eq!(body["fields"]["email"], "ada@example.com");
    assert_eq!(body["fields"]["display_name"], "Ada");
    assert_eq!(body["withheld"], json!([]));
    assert_eq!(body["site"], "us-east");

    // An engineer of the parent company located in CN is denied.
    let chen = server.token(&PARENT_CN);
    let body = read_ada(&server, &chen, Some("debugging"), StatusCode::FORBIDDEN).await;
    assert_eq!(body["error"], "denied");
    assert!(
        policies(&body).contains(&"forbid-restricted-location".to_string()),
        "{body}"
    );

    // So is a usds engineer travelling in CN, whatever the clearance.
    let bob = server.token(&USDS_TRAVELLING_CN);
    let body = read_ada(&server, &bob, Some("on call"), StatusCode::FORBIDDEN).await;
    assert!(
        policies(&body).contains(&"forbid-restricted-location".to_string()),
        "{body}"
    );
    // ...and cannot even list or write.
    server
        .get("/v1/subjects/u-1001/records")
        .bearer(&bob)
        .purpose("on call")
        .expect(StatusCode::FORBIDDEN)
        .await;
    write_ada(
        &server,
        &bob,
        Some("on call"),
        r#"{"display_name":"x"}"#,
        StatusCode::FORBIDDEN,
    )
    .await;

    // Parent staff outside restricted countries get interoperable fields only.
    let siew = server.token(&PARENT_SG);
    let body = read_ada(&server, &siew, None, StatusCode::OK).await;
    assert_eq!(body["fields"], json!({"display_name": "Ada"}));
    let mut withheld: Vec<String> = serde_json::from_value(body["withheld"].clone()).unwrap();
    withheld.sort();
    assert_eq!(withheld, ["birthdate", "email", "phone"]);
    // ...and may not write protected fields of US subjects.
    let body = write_ada(&server, &siew, Some("fix"), PROFILE, StatusCode::FORBIDDEN).await;
    assert!(
        policies(&body).contains(&"forbid-restricted-entity-protected".to_string()),
        "{body}"
    );

    // Monitors never read user data.
    let mona = server.token(&MONITOR);
    let body = read_ada(&server, &mona, Some("audit"), StatusCode::FORBIDDEN).await;
    assert!(
        policies(&body).contains(&"forbid-monitor-user-data".to_string()),
        "{body}"
    );

    // No purpose, no protected access: the answer says so.
    let body = read_ada(&server, &alice, None, StatusCode::FORBIDDEN).await;
    assert_eq!(body["error"], "purpose_required");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Sovereign-Purpose")
    );

    // The denied write changed nothing.
    let Reply { body, .. } = server
        .get("/v1/subjects/u-1001/records/profile/main")
        .bearer(&alice)
        .purpose("check")
        .await;
    assert_eq!(body["fields"]["email"], "ada@example.com");

    // Listing and deleting.
    let body = server
        .get("/v1/subjects/u-1001/records")
        .bearer(&alice)
        .expect(StatusCode::OK)
        .await;
    assert_eq!(
        body["records"],
        json!([{"collection": "profile", "key": "main"}])
    );
    let body = server
        .get("/v1/subjects/u-1001")
        .bearer(&alice)
        .expect(StatusCode::OK)
        .await;
    assert_eq!(body["jurisdiction"], "US");
    assert_eq!(body["residency_ok"], true);
    server
        .delete("/v1/subjects/u-1001/records/profile/main")
        .bearer(&siew)
        .purpose("cleanup")
        .expect(StatusCode::FORBIDDEN)
        .await;
    server
        .delete("/v1/subjects/u-1001/records/profile/main")
        .bearer(&alice)
        .purpose("user request")
        .expect(StatusCode::OK)
        .await;
    let body = read_ada(&server, &alice, Some("check"), StatusCode::NOT_FOUND).await;
    assert_eq!(body["error"], "record_not_found");

    // The record really is in us-east's store and nowhere else.
    for (site, store) in server.vault().stores() {
        let subjects = store.subjects().unwrap();
        let here = subjects.iter().any(|s| s.id == "u-1001");
        assert_eq!(here, site == "us-east", "subject u-1001 at {site}: {here}");
    }
    server.stop().await;
}

#[tokio::test]
async fn non_us_subjects_follow_their_own_rules() {
    let server = Server::start().await;
    let siew = server.token(&PARENT_SG);
    let chen = server.token(&PARENT_CN);
    let alice = server.token(&VETTED_US);

    // Parent staff register SG subjects, which land at sg-legacy (SG's rule).
    let body = server
        .registration("s-1", "SG")
        .bearer(&siew)
        .expect(StatusCode::CREATED)
        .await;
    assert_eq!(body["site"], "sg-legacy");
    // Parent staff in CN may work on SG subjects (the restrictions protect US subjects).
    let body = server
        .put("/v1/subjects/s-1/records/profile/p")
        .bearer(&chen)
        .purpose("support")
        .body(PROFILE)
        .expect(StatusCode::OK)
        .await;
    assert_eq!(body["site"], "sg-legacy");
    // US staff have no permit on SG subjects.
    let body = server
        .get("/v1/subjects/s-1/records/profile/p")
        .bearer(&alice)
        .purpose("support")
        .expect(StatusCode::FORBIDDEN)
        .await;
    assert_eq!(body["policies"], json!([]));
    // Parent staff may not register US subjects.
    server
        .registration("u-2", "US")
        .bearer(&siew)
        .expect(StatusCode::FORBIDDEN)
        .await;
    // A jurisdiction without a residency rule cannot have subjects.
    let body = server
        .registration("c-1", "CN")
        .bearer(&siew)
        .expect(StatusCode::UNPROCESSABLE_ENTITY)
        .await;
    assert_eq!(body["error"], "no_residency_rule");
    // An undeclared jurisdiction is a bad request.
    let body = server
        .registration("x-1", "XX")
        .bearer(&siew)
        .expect(StatusCode::BAD_REQUEST)
        .await;
    assert_eq!(body["error"], "unknown_jurisdiction");
    // Re-registering with another jurisdiction is decided on the subject as it is: US staff,
    // who may not see SG subjects, are denied (and learn nothing); parent staff, who may,
    // get the conflict.
    server
        .registration("s-1", "US")
        .bearer(&alice)
        .expect(StatusCode::FORBIDDEN)
        .await;
    server
        .registration("s-1", "US")
        .bearer(&siew)
        .expect(StatusCode::CONFLICT)
        .await;
    server.stop().await;
}

#[tokio::test]
async fn network_zone_in_restricted_country_overrides_the_location_claim() {
    // Every loopback connection comes from a zone in CN.
    let server = start_in_cn_zone().await;
    let alice = server.token(&VETTED_US);
    let body = server
        .registration("u-1", "US")
        .bearer(&alice)
        .expect(StatusCode::FORBIDDEN)
        .await;
    assert!(
        policies(&body).contains(&"forbid-restricted-location".to_string()),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn no_plain_header_sets_location_entity_or_clearance() {
    let server = Server::start().await;
    let alice = server.token(&VETTED_US);
    server.register_us(&alice, "u-1").await;
    let bob = server.token(&USDS_TRAVELLING_CN);
    for (name, value) in [
        ("Sovereign-Location", "US"),
        ("X-Location", "US"),
        ("X-Forwarded-For", "8.8.8.8"),
        ("Sovereign-Entity", "usds"),
        ("Sovereign-Clearance", "us-data"),
        ("Location", "US"),
    ] {
        let response = server
            .client
            .get(format!("{}/v1/subjects/u-1/records", server.base))
            .bearer_auth(&bob)
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "header {name} changed the decision"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn writes_to_a_subject_held_at_a_non_compliant_site_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    gateway::setup::init(dir.path(), false).unwrap();
    let gateway = gateway::Gateway::open(dir.path()).unwrap();
    // A legacy copy: a US subject held at sg-legacy, put there outside the gateway.
    let own = crate::support::open_vault(dir.path());
    let legacy = own
        .stores()
        .find(|(name, _)| *name == "sg-legacy")
        .map(|(_, store)| store.clone())
        .unwrap();
    legacy
        .put_subject(&vault::SubjectRow {
            id: "u-legacy".into(),
            jurisdiction: "US".into(),
        })
        .unwrap();
    let server = Server::spawn(gateway, dir).await;
    let alice = server.token(&VETTED_US);
    let body = server
        .get("/v1/subjects/u-legacy")
        .bearer(&alice)
        .expect(StatusCode::OK)
        .await;
    assert_eq!(body["site"], "sg-legacy");
    assert_eq!(body["residency_ok"], false);
    let body = server
        .put("/v1/subjects/u-legacy/records/profile/p")
        .bearer(&alice)
        .purpose("update")
        .body(PROFILE)
        .expect(StatusCode::CONFLICT)
        .await;
    assert_eq!(body["error"], "residency_violation");
    assert!(
        legacy.records().unwrap().is_empty(),
        "nothing may be written at sg-legacy"
    );
    server.stop().await;
}

fn policies(body: &serde_json::Value) -> Vec<String> {
    serde_json::from_value(body["policies"].clone()).unwrap_or_default()
}
