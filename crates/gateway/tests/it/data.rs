//! Data leaving and moving, through the HTTP API of a real server: egress carries only
//! interoperable fields under pseudonyms, protected fields are ciphertext at rest, erasure
//! shreds keys so old copies are unreadable, exports, and the residency scan and migration.

use std::path::Path;

use crate::support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const MARK: &str = "ZZMARK-7c1e";

/// Registers `n` US subjects `u-0..` with a profile whose protected fields carry markers.
async fn populate(server: &Server, n: usize, name: impl Fn(usize) -> String) {
    let alice = server.token(&VETTED_US);
    for i in 0..n {
        let id = format!("u-{i}");
        let body = json!({
            "email": format!("{MARK}-email-{i}"),
            "phone": format!("{MARK}-phone-{i}"),
            "birthdate": format!("{MARK}-birthdate-{i}"),
            "display_name": name(i),
        });
        subject_with_profile(server, &alice, &id, &body.to_string()).await;
    }
}

/// Every byte of a site's store files (the database and its write-ahead log).
fn store_bytes(data: &Path, site: &str) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal"] {
        let path = data.join(format!("sites/{site}/store.sqlite{suffix}"));
        if let Ok(bytes) = std::fs::read(path) {
            all.extend(bytes);
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn egress_carries_only_interoperable_fields_under_pseudonyms() {
    let server = Server::start().await;
    populate(&server, 5, |i| format!("name-{i}")).await;
    // Markers in the protected fields of `activity` too (written under a break-glass grant).
    let frank = server.token(&BREAK_GLASS);
    let grant = json!({"action": "write", "collections": ["activity"], "purpose": "seed", "reason_code": "service-maintenance"});
    server.break_glass(&frank, &grant).await;
    for i in 0..5 {
        let body = json!({
            "watch_history": format!("{MARK}-watch-{i}"),
            "location": format!("{MARK}-location-{i}"),
            "public_video_count": i,
        });
        server
            .put(&format!("/v1/subjects/u-{i}/records/activity/main"))
            .bearer(&frank)
            .purpose("seed")
            .json(&body)
            .expect(StatusCode::OK)
            .await;
    }
    let globe = server.token(&EGRESS);
    let (status, body, _) = server
        .get("/v1/egress/activity")
        .bearer(&globe)
        .bytes()
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    assert!(!text.contains(MARK) && !text.contains("\"u-"), "{text}");
    assert_eq!(text.lines().count(), 6, "5 rows and the trailer: {text}");

    let (status, _, _) = server
        .get("/v1/egress/profile")
        .token(&VETTED_US)
        .bytes()
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no egress role");

    // Page through with a small limit, resuming from each cursor.
    let mut rows = Vec::new();
    let mut since: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &since {
            Some(c) => format!("/v1/egress/profile?limit=2&since={c}"),
            None => "/v1/egress/profile?limit=2".to_string(),
        };
        let (status, body, headers) = server.get(&path).bearer(&globe).bytes().await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        pages += 1;
        let text = String::from_utf8(body.clone()).unwrap();
        assert!(!text.contains(MARK), "a protected value left: {text}");
        assert!(!text.contains("\"u-"), "a raw subject id left: {text}");
        // The log holds the row count and the digest of exactly these bytes.
        let index: u64 = headers["sovereign-log-index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let logged = server.entry(index);
        assert_eq!(logged["kind"], "egress");
        assert_eq!(logged["details"]["sha256"], sha256_hex(&body));
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let (trailer, page) = lines.split_last().unwrap();
        assert_eq!(logged["details"]["rows"], page.len());
        assert_eq!(trailer["rows"], page.len());
        rows.extend(page.iter().cloned());
        if trailer["done"] == json!(true) {
            break;
        }
        since = Some(trailer["cursor"].as_str().unwrap().to_string());
        assert_eq!(headers["sovereign-cursor"], since.as_deref().unwrap());
    }
    assert_eq!(pages, 3);
    assert_eq!(rows.len(), 5, "every record exactly once");
    let mut names: Vec<&str> = rows
        .iter()
        .map(|r| r["fields"]["display_name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["name-0", "name-1", "name-2", "name-3", "name-4"]);
    for row in &rows {
        assert_eq!(row["fields"].as_object().unwrap().len(), 1, "{row}");
        assert_eq!(row["subject"].as_str().unwrap().len(), 32);
    }

    let (status, body, _) = server
        .get("/v1/egress/profile?since=garbage!")
        .bearer(&globe)
        .bytes()
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&body)
    );
    server.stop().await;
}

#[tokio::test]
async fn aggregates_suppress_small_groups() {
    let server = Server::start().await;
    populate(&server, 14, |i| {
        if i < 11 {
            "common".into()
        } else {
            format!("rare-{i}")
        }
    })
    .await;
    let globe = server.token(&EGRESS);
    let body = server
        .get("/v1/egress/profile/aggregate?group_by=display_name")
        .bearer(&globe)
        .expect(StatusCode::OK)
        .await;
    assert_eq!(body["groups"], json!([{"value": "common", "count": 11}]));
    assert_eq!(body["suppressed_groups"], 3);
    assert_eq!(body["suppressed_rows"], 3);
    let body = server
        .get("/v1/egress/profile/aggregate?group_by=email")
        .bearer(&globe)
        .expect(StatusCode::BAD_REQUEST)
        .await;
    assert_eq!(body["error"], "not_interoperable");
    server.stop().await;
}

#[tokio::test]
async fn protected_fields_are_ciphertext_at_rest() {
    let server = Server::start().await;
    populate(&server, 2, |i| format!("{MARK}-name-{i}")).await;
    let raw = store_bytes(&server.data(), "us-east");
    assert!(
        contains(&raw, &format!("{MARK}-name-0")),
        "the interoperable marker is stored plain"
    );
    assert!(
        !contains(&raw, &format!("{MARK}-email-0")),
        "a protected value is stored plain"
    );
    assert!(
        !contains(&raw, &format!("{MARK}-phone-1")),
        "a protected value is stored plain"
    );
    // ...and reads still see the values.
    let alice = server.token(&VETTED_US);
    let record = server
        .get("/v1/subjects/u-1/records/profile/main")
        .bearer(&alice)
        .purpose("support")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(record["fields"]["phone"], format!("{MARK}-phone-1"));
    server.stop().await;
}

#[tokio::test]
async fn an_empty_key_policy_denies_every_unwrap() {
    let server = Server::start_with_config(&[(
        r#"allowed_reasons = ["access", "migration", "export"]"#,
        "allowed_reasons = []",
    )])
    .await;
    populate(&server, 1, |_| "Ada".into()).await;
    let alice = server.token(&VETTED_US);
    let body = server
        .get("/v1/subjects/u-0/records/profile/main")
        .bearer(&alice)
        .purpose("support")
        .expect(StatusCode::FORBIDDEN)
        .await;
    assert_eq!(body["error"], "key_policy");
    // Interoperable fields need no key.
    let siew = server.token(&crate::support::PARENT_SG);
    let body = server
        .get("/v1/subjects/u-0/records/profile/main")
        .bearer(&siew)
        .expect(StatusCode::OK)
        .await;
    assert_eq!(body["fields"], json!({"display_name": "Ada"}));
    server.stop().await;
}

#[tokio::test]
async fn erasure_shreds_the_keys_so_old_copies_are_unreadable() {
    let server = Server::start().await;
    populate(&server, 2, |i| format!("name-{i}")).await;
    let alice = server.token(&VETTED_US);
    let data = server.data();

    // A backup taken before the erasure.
    let backup = tempfile::tempdir().unwrap();
    for suffix in ["", "-wal"] {
        let from = data.join(format!("sites/us-east/store.sqlite{suffix}"));
        if from.exists() {
            std::fs::copy(&from, backup.path().join(format!("store.sqlite{suffix}"))).unwrap();
        }
    }

    // Erasure needs `delete` on every collection: `activity` needs a grant.
    let body = server
        .delete("/v1/subjects/u-0")
        .bearer(&alice)
        .purpose("erasure request 12")
        .expect(StatusCode::FORBIDDEN)
        .await;
    assert_eq!(body["error"], "approval_required");
    let frank = server.token(&BREAK_GLASS);
    let grant = json!({"action": "delete", "subjects": ["u-0"], "purpose": "erasure request 12", "reason_code": "data-subject-request"});
    server.break_glass(&frank, &grant).await;
    let body = server
        .delete("/v1/subjects/u-0")
        .bearer(&frank)
        .purpose("erasure request 12")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(body["records"], 1);
    assert!(body["keys_destroyed"].as_u64().unwrap() >= 1);
    let erasure = server.last_entry();
    assert_eq!(erasure["kind"], "erasure");
    assert_eq!(
        erasure["details"]["subject"],
        server.state.pseudonyms.pseudonym("u-0")
    );
    // An id that names no subject is answered as one of a jurisdiction the caller may not
    // see would be: vetted US staff may not list SG subjects, so 403, logged.
    server
        .get("/v1/subjects/u-0")
        .bearer(&alice)
        .expect(StatusCode::FORBIDDEN)
        .await;
    // Parent staff in SG may read interoperable fields of every jurisdiction's subjects, so
    // to them the erased subject is simply not found.
    let body = server
        .get("/v1/subjects/u-0/records/profile/main")
        .token(&crate::support::PARENT_SG)
        .purpose("support")
        .expect(StatusCode::NOT_FOUND)
        .await;
    assert_eq!(body["error"], "subject_not_found");
    // The other subject is untouched.
    server
        .get("/v1/subjects/u-1/records/profile/main")
        .bearer(&alice)
        .purpose("x")
        .expect(StatusCode::OK)
        .await;

    // The backup still holds the ciphertext, but nobody can decrypt it any more.
    let config = gateway::config::Config::load(&data).unwrap();
    let envelope = gateway::open_envelope(&config, &data).unwrap();
    let mut layout = config.layout();
    layout.sites.get_mut("us-east").unwrap().store =
        format!("sqlite:{}", backup.path().join("store.sqlite").display());
    let restored = vault::Vault::open(layout, &data, 1)
        .unwrap()
        .with_envelope(envelope);
    let old = restored.get_record("u-0", "profile", "main", vault::UnwrapReason::Access);
    assert!(
        old.is_err(),
        "the erased subject's backup must not decrypt: {old:?}"
    );
    let other = restored
        .get_record("u-1", "profile", "main", vault::UnwrapReason::Access)
        .unwrap()
        .unwrap();
    assert_eq!(other.fields["email"], format!("{MARK}-email-1"));
    server.stop().await;
}

#[tokio::test]
async fn a_subject_exports_its_own_data() {
    let server = Server::start().await;
    populate(&server, 2, |i| format!("name-{i}")).await;
    let me = Who {
        sub: "u-0",
        entity: "public",
        location: "SG",
        clearance: &[],
        roles: &["data-subject"],
    };
    let (body, export) = export_own(&server, &server.token(&me), "u-0").await;
    assert_eq!(
        body["records"][0]["fields"]["email"],
        format!("{MARK}-email-0")
    );
    assert_eq!(export["details"]["basis"], "data-subject");

    // Not someone else's data.
    server
        .get("/v1/subjects/u-1/export")
        .token(&me)
        .purpose("curious")
        .expect(StatusCode::FORBIDDEN)
        .await;
    // Support staff need what the policy asks for every collection: `activity` needs a grant.
    let body = server
        .get("/v1/subjects/u-1/export")
        .token(&VETTED_US)
        .purpose("ticket")
        .expect(StatusCode::FORBIDDEN)
        .await;
    assert_eq!(body["error"], "approval_required");

    // With a read grant approved by two custodian approvers, support can export it.
    let alice = server.token(&VETTED_US);
    let request = json!({"action": "read", "subjects": ["u-1"], "purpose": "portability request 3",
        "reason_code": "data-subject-request", "duration": "1h"});
    server.approved_request(&VETTED_US, &request).await;
    let body = server
        .get("/v1/subjects/u-1/export")
        .bearer(&alice)
        .purpose("portability request 3")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(
        body["records"][0]["fields"]["phone"],
        format!("{MARK}-phone-1")
    );
    let export = server.last_entry();
    assert_eq!(export["details"]["basis"], "policy");
    server.stop().await;
}

#[tokio::test]
async fn misplaced_legacy_subjects_are_migrated_with_evidence() {
    let server = Server::start_with(|dir| {
        gateway::setup::seed_legacy(dir, 4).unwrap();
    })
    .await;
    let olga = server.token(&OPERATOR);
    let alice = server.token(&VETTED_US);

    let scan = server
        .get("/v1/residency/scan")
        .bearer(&olga)
        .expect(StatusCode::OK)
        .await;
    assert_eq!(scan["ok"], false);
    assert_eq!(scan["misplaced"], 4);
    assert_eq!(scan["sites"][0]["site"], "sg-legacy");
    assert_eq!(scan["sites"][0]["records"], 8);

    // Before the migration, reads of a misplaced subject are decided and logged as usual.
    let before = server
        .get("/v1/subjects/legacy-us-0001/records/profile/main")
        .bearer(&alice)
        .purpose("support")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(before["site"], "sg-legacy");

    let body = json!({"subject": "legacy-us-0001", "from": "sg-legacy"}).to_string();
    server
        .post("/v1/residency/migrate")
        .bearer(&alice)
        .body(&body)
        .expect(StatusCode::FORBIDDEN)
        .await;

    for i in 1..=4 {
        let body = json!({"subject": format!("legacy-us-{i:04}"), "from": "sg-legacy"}).to_string();
        let evidence = server
            .post("/v1/residency/migrate")
            .bearer(&olga)
            .body(&body)
            .expect(StatusCode::OK)
            .await;
        assert_eq!(evidence["to"], "us-east");
        assert_eq!(evidence["records"], 2);
        assert_eq!(evidence["source_digest"], evidence["destination_digest"]);
        let logged = server.last_entry();
        assert_eq!(logged["kind"], "migration");
        assert_eq!(
            logged["details"]["source_digest"],
            evidence["source_digest"]
        );
    }
    let Reply { body: scan, .. } = server.get("/v1/residency/scan").bearer(&olga).await;
    assert_eq!(scan["ok"], true, "{scan}");

    let after = server
        .get("/v1/subjects/legacy-us-0001/records/profile/main")
        .bearer(&alice)
        .purpose("support")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(after["site"], "us-east");
    assert_eq!(after["fields"], before["fields"], "nothing lost on the way");
    assert!(!contains(
        &store_bytes(&server.data(), "sg-legacy"),
        "legacy-us-0001@example.com"
    ));
    server.stop().await;
}
