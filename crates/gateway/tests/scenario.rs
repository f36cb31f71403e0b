//! The reference scenario (README, "Try the reference scenario"), end to end against a real server (all but the log).

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

const PROFILE: &str = r#"{"email":"ada@example.com","birthdate":"1990-01-02","phone":"+1 555 0100","display_name":"Ada"}"#;

#[tokio::test]
async fn reference_scenario() {
    let server = Server::start().await;
    let alice = server.token(&VETTED_US);

    // A US subject is registered and lands in us-east.
    let (status, body) = server
        .call(
            Method::PUT,
            "/v1/subjects/u-1001",
            Some(&alice),
            None,
            Some(r#"{"jurisdiction":"US"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["site"], "us-east");
    // Registering again with the same jurisdiction is idempotent.
    let (status, _) = server
        .call(
            Method::PUT,
            "/v1/subjects/u-1001",
            Some(&alice),
            None,
            Some(r#"{"jurisdiction":"US"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // Its profile is written by vetted US staff, with a purpose, and lands in us-east.
    let (status, body) = server
        .call(
            Method::PUT,
            "/v1/subjects/u-1001/records/profile/main",
            Some(&alice),
            Some("account setup"),
            Some(PROFILE),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["site"], "us-east");

    // A vetted usds engineer in the US reads all of it.
    let (status, body) = server
        .call(
            Method::GET,
            "/v1/subjects/u-1001/records/profile/main",
            Some(&alice),
            Some("support ticket 42"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["fields"]["email"], "ada@example.com");
    assert_eq!(body["fields"]["display_name"], "Ada");
    assert_eq!(body["withheld"], json!([]));
    assert_eq!(body["site"], "us-east");

    // An engineer of the parent company located in CN is denied.
    let chen = server.token(&PARENT_CN);
    let (status, body) = server
        .call(
            Method::GET,
            "/v1/subjects/u-1001/records/profile/main",
            Some(&chen),
            Some("debugging"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "denied");
    assert!(
        policies(&body).contains(&"forbid-restricted-location".to_string()),
        "{body}"
    );

    // So is a usds engineer travelling in CN, whatever the clearance.
    let bob = server.token(&USDS_TRAVELLING_CN);
    let (status, body) = server
        .call(
            Method::GET,
            "/v1/subjects/u-1001/records/profile/main",
            Some(&bob),
            Some("on call"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        policies(&body).contains(&"forbid-restricted-location".to_string()),
        "{body}"
    );
    // ...and cannot even list or write.
    let (status, _) = server
        .call(
            Method::GET,
            "/v1/subjects/u-1001/records",
            Some(&bob),
            Some("on call"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = server
        .call(
            Method::PUT,
            "/v1/subjects/u-1001/records/profile/main",
            Some(&bob),
            Some("on call"),
            Some(r#"{"display_name":"x"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Parent staff outside restricted countries get interoperable fields only.
    let siew = server.token(&PARENT_SG);
    let (status, body) = server
        .call(
            Method::GET,
            "/v1/subjects/u-1001/records/profile/main",
            Some(&siew),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["fields"], json!({"display_name": "Ada"}));
    let mut withheld: Vec<String> = serde_json::from_value(body["withheld"].clone()).unwrap();
    withheld.sort();
    assert_eq!(withheld, ["birthdate", "email", "phone"]);
    // ...and may not write protected fields of US subjects.
    let (status, body) = server
        .call(
            Method::PUT,
            "/v1/subjects/u-1001/records/profile/main",
            Some(&siew),
            Some("fix"),
            Some(PROFILE),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        policies(&body).contains(&"forbid-restricted-entity-protected".to_string()),
        "{body}"
    );

    // Monitors never read user data.
    let mona = server.token(&MONITOR);
    let (status, body) = server
        .call(
            Method::GET,
            "/v1/subjects/u-1001/records/profile/main",
            Some(&mona),
            Some("audit"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        policies(&body).contains(&"forbid-monitor-user-data".to_string()),
        "{body}"
    );

    // No purpose, no protected access: the answer says so.
    let (status, body) = server
        .call(
            Method::GET,
            "/v1/subjects/u-1001/records/profile/main",
            Some(&alice),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "purpose_required");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Sovereign-Purpose")
    );

    // The denied write changed nothing.
    let (_, body) = server
        .call(
            Method::GET,
            "/v1/subjects/u-1001/records/profile/main",
            Some(&alice),
            Some("check"),
            None,
        )
        .await;
    assert_eq!(body["fields"]["email"], "ada@example.com");

    // Listing and deleting.
    let (status, body) = server
        .call(
            Method::GET,
            "/v1/subjects/u-1001/records",
            Some(&alice),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["records"],
        json!([{"collection": "profile", "key": "main"}])
    );
    let (status, body) = server
        .call(Method::GET, "/v1/subjects/u-1001", Some(&alice), None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["jurisdiction"], "US");
    assert_eq!(body["residency_ok"], true);
    let (status, _) = server
        .call(
            Method::DELETE,
            "/v1/subjects/u-1001/records/profile/main",
            Some(&siew),
            Some("cleanup"),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "parent staff may not delete US data"
    );
    let (status, body) = server
        .call(
            Method::DELETE,
            "/v1/subjects/u-1001/records/profile/main",
            Some(&alice),
            Some("user request"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .call(
            Method::GET,
            "/v1/subjects/u-1001/records/profile/main",
            Some(&alice),
            Some("check"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
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
    let (status, body) = server
        .call(
            Method::PUT,
            "/v1/subjects/s-1",
            Some(&siew),
            None,
            Some(r#"{"jurisdiction":"SG"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["site"], "sg-legacy");
    // Parent staff in CN may work on SG subjects (the restrictions protect US subjects).
    let (status, body) = server
        .call(
            Method::PUT,
            "/v1/subjects/s-1/records/profile/p",
            Some(&chen),
            Some("support"),
            Some(PROFILE),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["site"], "sg-legacy");
    // US staff have no permit on SG subjects.
    let (status, body) = server
        .call(
            Method::GET,
            "/v1/subjects/s-1/records/profile/p",
            Some(&alice),
            Some("support"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["policies"], json!([]));
    // Parent staff may not register US subjects.
    let (status, _) = server
        .call(
            Method::PUT,
            "/v1/subjects/u-2",
            Some(&siew),
            None,
            Some(r#"{"jurisdiction":"US"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A jurisdiction without a residency rule cannot have subjects.
    let (status, body) = server
        .call(
            Method::PUT,
            "/v1/subjects/c-1",
            Some(&siew),
            None,
            Some(r#"{"jurisdiction":"CN"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"], "no_residency_rule");
    // An undeclared jurisdiction is a bad request.
    let (status, body) = server
        .call(
            Method::PUT,
            "/v1/subjects/x-1",
            Some(&siew),
            None,
            Some(r#"{"jurisdiction":"XX"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "unknown_jurisdiction");
    // Re-registering with another jurisdiction is decided on the subject as it is: US staff,
    // who may not see SG subjects, are denied (and learn nothing); parent staff, who may,
    // get the conflict.
    let (status, body) = server
        .call(
            Method::PUT,
            "/v1/subjects/s-1",
            Some(&alice),
            None,
            Some(r#"{"jurisdiction":"US"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = server
        .call(
            Method::PUT,
            "/v1/subjects/s-1",
            Some(&siew),
            None,
            Some(r#"{"jurisdiction":"US"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    server.stop().await;
}

#[tokio::test]
async fn network_zone_in_restricted_country_overrides_the_location_claim() {
    // Every loopback connection comes from a zone in CN.
    let server = Server::start_with(|dir| {
        let path = dir.join("sovereign.toml");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(
            "\n[[network_zones]]\nname = \"cn-office\"\ncidr = \"127.0.0.0/8\"\ncountry = \"CN\"\n",
        );
        std::fs::write(path, text).unwrap();
    })
    .await;
    let alice = server.token(&VETTED_US);
    let (status, body) = server
        .call(
            Method::PUT,
            "/v1/subjects/u-1",
            Some(&alice),
            None,
            Some(r#"{"jurisdiction":"US"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
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
    let own = common::open_vault(dir.path());
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
    let (status, body) = server
        .call(
            Method::GET,
            "/v1/subjects/u-legacy",
            Some(&alice),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["site"], "sg-legacy");
    assert_eq!(body["residency_ok"], false);
    let (status, body) = server
        .call(
            Method::PUT,
            "/v1/subjects/u-legacy/records/profile/p",
            Some(&alice),
            Some("update"),
            Some(PROFILE),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
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
