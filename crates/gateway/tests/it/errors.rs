//! Every error of the API, against a real server: each gets its status and JSON code, and a
//! failed request changes nothing.

use crate::support::*;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::json;

const PROFILE: &str = r#"{"email":"ada@example.com","display_name":"Ada"}"#;

async fn with_subject() -> (Server, String) {
    let server = Server::start().await;
    let alice = server.token(&VETTED_US);
    subject_with_profile(&server, &alice, "u-1", PROFILE).await;
    (server, alice)
}

/// The record as the vetted engineer sees it, to check that failures changed nothing.
async fn profile(server: &Server, token: &str) -> serde_json::Value {
    let body = server
        .get("/v1/subjects/u-1/records/profile/main")
        .bearer(token)
        .purpose("check")
        .expect(StatusCode::OK)
        .await;
    body["fields"].clone()
}

fn dev_key(server: &Server) -> EncodingKey {
    let pem = std::fs::read(server.data().join(gateway::setup::DEV_ISSUER_KEY)).unwrap();
    EncodingKey::from_ed_pem(&pem).unwrap()
}

fn sign(key: &EncodingKey, claims: &impl serde::Serialize) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, key).unwrap()
}

fn other_key() -> EncodingKey {
    let signing = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let pem = signing
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .unwrap();
    EncodingKey::from_ed_pem(pem.as_bytes()).unwrap()
}

#[tokio::test]
async fn bad_tokens_get_401_with_a_reason() {
    let (server, alice) = with_subject().await;
    let key = dev_key(&server);
    let mut expired = claims(&VETTED_US, 3600);
    expired.exp = now() - 3600;
    let mut future = claims(&VETTED_US, 3600);
    future.nbf = Some(now() + 3600);
    let mut wrong_issuer = claims(&VETTED_US, 3600);
    wrong_issuer.iss = "someone-else".into();
    let mut lower_location = claims(&VETTED_US, 3600);
    lower_location.location = "us".into();
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(&VETTED_US, 3600)).unwrap())
    );
    let good = sign(&key, &claims(&VETTED_US, 3600));
    let tampered = {
        let mut parts: Vec<String> = good.split('.').map(String::from).collect();
        let mut claims = claims(&VETTED_US, 3600);
        claims.sub = "mallory".into();
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        parts.join(".")
    };
    let no_exp = sign(
        &key,
        &json!({"sub":"alice","iss":"sovereign-dev","entity":"usds","location":"US"}),
    );

    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing", None, "missing"),
        ("malformed", Some("not-a-jwt".into()), "malformed"),
        ("garbage segments", Some("a.b.c".into()), "malformed"),
        ("expired", Some(sign(&key, &expired)), "expired"),
        ("not yet valid", Some(sign(&key, &future)), "not_yet_valid"),
        (
            "wrong issuer",
            Some(sign(&key, &wrong_issuer)),
            "unknown_issuer",
        ),
        ("alg none", Some(unsigned), "unsupported_algorithm"),
        (
            "signed by another key",
            Some(sign(&other_key(), &claims(&VETTED_US, 3600))),
            "bad_signature",
        ),
        ("tampered payload", Some(tampered), "bad_signature"),
        ("no exp", Some(no_exp), "invalid_claims"),
        (
            "lower-case location",
            Some(sign(&key, &lower_location)),
            "invalid_claims",
        ),
    ];
    for (name, token, reason) in cases {
        for (method, path, body) in [
            (Method::GET, "/v1/subjects/u-1/records/profile/main", None),
            (
                Method::PUT,
                "/v1/subjects/u-1/records/profile/main",
                Some(r#"{"email":"evil@example.com"}"#),
            ),
        ] {
            let Reply { status, body, .. } = server
                .request(method, path)
                .bearer_opt(token.as_deref())
                .purpose("x")
                .body_opt(body)
                .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}: {body}");
            assert_eq!(body["error"], "unauthenticated", "{name}");
            assert_eq!(body["reason"], reason, "{name}: {body}");
        }
    }
    // A non-Bearer scheme is refused too.
    let response = server
        .client
        .get(format!("{}/v1/subjects/u-1", server.base))
        .header("authorization", "Basic YWxpY2U6cGFzcw==")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("www-authenticate"));

    assert_eq!(profile(&server, &alice).await["email"], "ada@example.com");
    server.stop().await;
}

#[tokio::test]
async fn undeclared_entity_is_refused() {
    let (server, _) = with_subject().await;
    let stranger = Who {
        sub: "eve",
        entity: "acme",
        location: "US",
        clearance: &["us-data"],
        roles: &[],
    };
    let body = server
        .get("/v1/subjects/u-1")
        .token(&stranger)
        .expect(StatusCode::FORBIDDEN)
        .await;
    assert_eq!(body["error"], "unknown_entity");
    server.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let (server, alice) = with_subject().await;
    let record = "/v1/subjects/u-1/records/profile/main";
    // (name, method, path, body, expected status, expected error code)
    type Case = (
        &'static str,
        Method,
        String,
        Option<String>,
        StatusCode,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            Method::PUT,
            record.into(),
            Some(r#"{"email": "#.into()),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "not an object",
            Method::PUT,
            record.into(),
            Some("[1,2]".into()),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "empty object",
            Method::PUT,
            record.into(),
            Some("{}".into()),
            StatusCode::BAD_REQUEST,
            "empty_record",
        ),
        (
            "undeclared field",
            Method::PUT,
            record.into(),
            Some(r#"{"email":"x@example.com","ssn":"123"}"#.into()),
            StatusCode::BAD_REQUEST,
            "undeclared_field",
        ),
        (
            "unknown collection",
            Method::PUT,
            "/v1/subjects/u-1/records/payments/main".into(),
            Some(r#"{"card":"4111"}"#.into()),
            StatusCode::NOT_FOUND,
            "unknown_collection",
        ),
        (
            "unknown collection read",
            Method::GET,
            "/v1/subjects/u-1/records/payments/main".into(),
            None,
            StatusCode::NOT_FOUND,
            "unknown_collection",
        ),
        (
            "bad key",
            Method::PUT,
            "/v1/subjects/u-1/records/profile/ma%20in".into(),
            Some(PROFILE.into()),
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        (
            "long key",
            Method::PUT,
            format!("/v1/subjects/u-1/records/profile/{}", "k".repeat(129)),
            Some(PROFILE.into()),
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        (
            "bad subject id",
            Method::PUT,
            "/v1/subjects/u%2F1".into(),
            Some(r#"{"jurisdiction":"US"}"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        (
            "dot subject id",
            Method::GET,
            "/v1/subjects/.hidden/records".into(),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        // An id that names no subject is answered as a subject of a jurisdiction the caller
        // may not read would be (vetted US staff may not read SG subjects); see below for a
        // caller who may read every jurisdiction's subjects.
        (
            "unknown subject",
            Method::GET,
            "/v1/subjects/nobody/records/profile/main".into(),
            None,
            StatusCode::FORBIDDEN,
            "denied",
        ),
        (
            "extra member in subject body",
            Method::PUT,
            "/v1/subjects/u-2".into(),
            Some(r#"{"jurisdiction":"US","site":"sg-legacy"}"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "unknown route",
            Method::GET,
            "/v1/nothing".into(),
            None,
            StatusCode::NOT_FOUND,
            "no_route",
        ),
        (
            "wrong method",
            Method::POST,
            record.into(),
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (name, method, path, body, want_status, want_code) in cases {
        let Reply {
            status,
            body: answer,
            ..
        } = server
            .request(method, &path)
            .bearer(&alice)
            .purpose("testing")
            .body_opt(body.as_deref())
            .await;
        assert_eq!(status, want_status, "{name}: {answer}");
        assert_eq!(answer["error"], want_code, "{name}: {answer}");
        assert!(
            answer["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}"
        );
    }
    let siew = server.token(&crate::support::PARENT_SG);
    let answer = server
        .get("/v1/subjects/nobody/records/profile/main")
        .bearer(&siew)
        .purpose("testing")
        .expect(StatusCode::NOT_FOUND)
        .await;
    assert_eq!(answer["error"], "subject_not_found");
    // The undeclared field is named.
    let Reply { body: answer, .. } = server
        .put(record)
        .bearer(&alice)
        .purpose("t")
        .body(r#"{"ssn":"1"}"#)
        .await;
    assert_eq!(answer["field"], "ssn");
    assert!(answer["message"].as_str().unwrap().contains("ssn"));

    // Nothing changed: the record is as written, and no other subject or record appeared.
    assert_eq!(
        profile(&server, &alice).await,
        json!({"email": "ada@example.com", "display_name": "Ada"})
    );
    let Reply { body: list, .. } = server.get("/v1/subjects/u-1/records").bearer(&alice).await;
    assert_eq!(
        list["records"],
        json!([{"collection": "profile", "key": "main"}])
    );
    for (_, store) in server.vault().stores() {
        assert!(store.subjects().unwrap().iter().all(|s| s.id == "u-1"));
    }
    server.stop().await;
}

#[tokio::test]
async fn oversized_body_gets_413() {
    let (server, alice) = with_subject().await;
    let big = format!(r#"{{"email":"{}"}}"#, "a".repeat(1024 * 1024 + 1));
    let body = server
        .put("/v1/subjects/u-1/records/profile/main")
        .bearer(&alice)
        .purpose("t")
        .body(&big)
        .expect(StatusCode::PAYLOAD_TOO_LARGE)
        .await;
    assert_eq!(body["error"], "body_too_large");
    assert_eq!(profile(&server, &alice).await["email"], "ada@example.com");
    server.stop().await;
}

#[tokio::test]
async fn bad_purpose_header_is_refused() {
    let (server, alice) = with_subject().await;
    let long = "p".repeat(257);
    let body = server
        .get("/v1/subjects/u-1/records/profile/main")
        .bearer(&alice)
        .purpose(&long)
        .expect(StatusCode::BAD_REQUEST)
        .await;
    assert_eq!(body["error"], "invalid_header");
    server.stop().await;
}

#[tokio::test]
async fn openapi_covers_every_route() {
    let server = Server::start().await;
    let doc = server.get("/openapi.json").expect(StatusCode::OK).await;
    let paths = doc["paths"].as_object().expect("paths");
    let expected = [
        ("get", "/healthz"),
        ("get", "/openapi.json"),
        ("put", "/v1/subjects/{id}"),
        ("get", "/v1/subjects/{id}"),
        ("get", "/v1/subjects/{id}/records"),
        ("get", "/v1/subjects/{id}/accesses"),
        ("put", "/v1/subjects/{id}/records/{collection}/{key}"),
        ("get", "/v1/subjects/{id}/records/{collection}/{key}"),
        ("delete", "/v1/subjects/{id}/records/{collection}/{key}"),
        ("get", "/log/checkpoint"),
        ("get", "/log/key"),
        ("get", "/log/tile/{path}"),
        ("get", "/log/proof/inclusion"),
        ("get", "/log/proof/consistency"),
        ("get", "/v1/access/reason-codes"),
        ("post", "/v1/access/requests"),
        ("get", "/v1/access/requests"),
        ("get", "/v1/access/requests/{id}"),
        ("post", "/v1/access/requests/{id}/approve"),
        ("post", "/v1/access/requests/{id}/deny"),
        ("post", "/v1/access/requests/{id}/revoke"),
        ("post", "/v1/access/break-glass"),
        ("get", "/v1/access/break-glass"),
        ("post", "/v1/access/break-glass/{id}/review"),
        ("post", "/v1/policies"),
        ("get", "/v1/policies"),
        ("get", "/v1/policies/{hash}"),
        ("post", "/v1/invariants"),
        ("get", "/v1/invariants"),
        ("post", "/v1/invariants/{hash}/activate"),
        ("get", "/v1/invariants/{hash}"),
        ("post", "/v1/policies/{hash}/activate"),
        ("post", "/v1/algorithms/{name}/{version}"),
        ("get", "/v1/algorithms"),
        ("get", "/v1/algorithms/active"),
        ("post", "/v1/algorithms/{name}/{version}/activate"),
        ("put", "/v1/algorithms/{name}/{version}/manifest"),
        ("post", "/v1/algorithms/{name}/{version}/deactivate"),
        ("post", "/v1/algorithms/{name}/runs"),
        ("get", "/v1/algorithms/{name}/{version}/artifact"),
        ("get", "/v1/kill-switch"),
        ("post", "/v1/kill-switch"),
        ("delete", "/v1/subjects/{id}"),
        ("get", "/v1/subjects/{id}/export"),
        ("get", "/v1/egress/{collection}"),
        ("get", "/v1/egress/{collection}/aggregate"),
        ("get", "/v1/residency/scan"),
        ("post", "/v1/residency/migrate"),
        ("get", "/"),
        ("get", "/dashboard/app.js"),
        ("get", "/dashboard/style.css"),
        ("get", "/metrics"),
        ("get", "/v1/analytics/stream"),
    ];
    for (method, path) in expected {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is not documented"
        );
    }
    // And the other way: every documented operation is served (not the router's fallbacks).
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = concrete_path(path, "u-1", "1.0");
        for method in ["get", "put", "delete", "post", "patch"] {
            if item.get(method).is_none() {
                continue;
            }
            operations += 1;
            // Not every route answers JSON (the log serves text and tiles): only JSON errors
            // can be the router's fallbacks.
            let response = server
                .client
                .request(
                    method.to_uppercase().parse().unwrap(),
                    format!("{}{concrete}", server.base),
                )
                .body("{}")
                .send()
                .await
                .unwrap();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            assert_ne!(body["error"], "no_route", "{method} {path}");
            assert_ne!(body["error"], "method_not_allowed", "{method} {path}");
        }
    }
    assert_eq!(
        operations,
        expected.len(),
        "documented operations: {paths:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn health_answers_when_ready() {
    let server = Server::start().await;
    let Reply { status, body, .. } = server.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    server.stop().await;
}

#[test]
fn a_policy_that_fails_validation_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    gateway::setup::init(dir.path(), false).unwrap();
    let path = dir.path().join(gateway::setup::POLICIES_FILE);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("\n@id(\"broken\")\npermit (principal, action, resource) when { principal.shoe_size > 3 };\n");
    std::fs::write(&path, text).unwrap();
    let error = gateway::Gateway::open(dir.path())
        .err()
        .expect("must refuse")
        .to_string();
    assert!(error.contains("shoe_size"), "{error}");
    assert!(error.contains("broken"), "{error}");
}

#[test]
fn a_bad_configuration_names_file_key_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    gateway::setup::init(dir.path(), false).unwrap();
    let path = dir.path().join("sovereign.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("US = [\"us-east\"]", "US = [\"us-west\"]"),
    )
    .unwrap();
    let error = gateway::Gateway::open(dir.path())
        .err()
        .expect("must refuse")
        .to_string();
    assert!(error.contains("sovereign.toml"), "{error}");
    assert!(error.contains("residency.US"), "{error}");
    assert!(error.contains("us-west"), "{error}");

    std::fs::write(&path, text.replace("[server]", "[server]\nport = 9")).unwrap();
    let error = gateway::Gateway::open(dir.path())
        .err()
        .expect("must refuse")
        .to_string();
    assert!(
        error.contains("server") && error.contains("port"),
        "{error}"
    );
}

#[tokio::test]
async fn jwks_issuers_are_verified_by_kid() {
    use ed25519_dalek::SigningKey;
    let signing = SigningKey::from_bytes(&[9u8; 32]);
    let x = URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes());
    let jwks =
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1", "use": "sig"}]});
    let server = Server::start_with(|dir| {
        std::fs::write(dir.join("keys/partner.jwks"), jwks.to_string()).unwrap();
        let path = dir.join("sovereign.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replace(
            "[[auth.issuers]]",
            "[[auth.issuers]]\nissuer = \"partner-idp\"\njwks = \"keys/partner.jwks\"\naudience = \"sovereign\"\n\n[[auth.issuers]]",
        );
        std::fs::write(path, text).unwrap();
    })
    .await;
    let pem = signing
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .unwrap();
    let key = EncodingKey::from_ed_pem(pem.as_bytes()).unwrap();
    let mut claims = serde_json::to_value(claims(&VETTED_US, 3600)).unwrap();
    claims["iss"] = json!("partner-idp");
    claims["aud"] = json!("sovereign");
    let token_with = |kid: Option<&str>, claims: &serde_json::Value| {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = kid.map(String::from);
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    };

    server
        .put("/v1/subjects/u-9")
        .bearer(&token_with(Some("k1"), &claims))
        .body(r#"{"jurisdiction":"US"}"#)
        .expect(StatusCode::CREATED)
        .await;

    let body = server
        .get("/v1/subjects/u-9")
        .bearer(&token_with(Some("k2"), &claims))
        .expect(StatusCode::UNAUTHORIZED)
        .await;
    assert_eq!(body["reason"], "unknown_key");

    let mut wrong_audience = claims.clone();
    wrong_audience["aud"] = json!("someone-else");
    let body = server
        .get("/v1/subjects/u-9")
        .bearer(&token_with(Some("k1"), &wrong_audience))
        .expect(StatusCode::UNAUTHORIZED)
        .await;
    assert_eq!(body["reason"], "invalid_claims");

    // The development issuer's key does not verify the partner's tokens.
    let dev_signed = sign(&dev_key(&server), &claims);
    let body = server
        .get("/v1/subjects/u-9")
        .bearer(&dev_signed)
        .expect(StatusCode::UNAUTHORIZED)
        .await;
    assert_eq!(body["reason"], "bad_signature");
    server.stop().await;
}
