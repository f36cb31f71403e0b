//! What the gateway's tests share: the reference cast and a real server from `testkit`, and
//! small helpers of their own.

use reqwest::StatusCode;
use serde_json::Value;
pub use testkit::cast::*;
pub use testkit::server::{Reply, Server, claims, custodian_key, now, open_vault, signed};
pub use testkit::sha256_hex;

/// Checkpoints at most once a minute with a one-second deadline: the first entries after the
/// start's checkpoint wait too long (for `Server::start_with_config`).
pub const LATE_CHECKPOINTS: &[(&str, &str)] = &[
    (
        "checkpoint_deadline_seconds = 5",
        "checkpoint_deadline_seconds = 1",
    ),
    (
        "checkpoint_interval_ms = 500",
        "checkpoint_interval_ms = 60000",
    ),
];

/// Starts on a default setup where every loopback connection comes from a network zone in CN.
pub async fn start_in_cn_zone() -> Server {
    Server::start_with(|dir| {
        let path = dir.join("sovereign.toml");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(
            "\n[[network_zones]]\nname = \"cn-office\"\ncidr = \"127.0.0.0/8\"\ncountry = \"CN\"\n",
        );
        std::fs::write(path, text).unwrap();
    })
    .await
}

/// Registers US subject `id` with `token` and writes its `profile` record (purpose "setup").
pub async fn subject_with_profile(server: &Server, token: &str, id: &str, profile: &str) {
    server.register_us(token, id).await;
    server
        .put(&format!("/v1/subjects/{id}/records/profile/main"))
        .bearer(token)
        .purpose("setup")
        .body(profile)
        .expect(StatusCode::OK)
        .await;
}

/// Subject `id` exports its own data with `token` (purpose "my own copy"): answers the export
/// and its log entry, which must be an `export`.
pub async fn export_own(server: &Server, token: &str, id: &str) -> (Value, Value) {
    let body = server
        .get(&format!("/v1/subjects/{id}/export"))
        .bearer(token)
        .purpose("my own copy")
        .expect(StatusCode::OK)
        .await;
    let export = server.last_entry();
    assert_eq!(export["kind"], "export");
    (body, export)
}

/// An OpenAPI path template with its parameters filled in (subject `id`, algorithm version
/// `version`).
pub fn concrete_path(template: &str, id: &str, version: &str) -> String {
    template
        .replace("{id}", id)
        .replace("{collection}", "profile")
        .replace("{key}", "main")
        .replace("{hash}", &"0".repeat(64))
        .replace("{name}", "ranker")
        .replace("{version}", version)
}
