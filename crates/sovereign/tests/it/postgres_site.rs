//! `sovereign serve` with the `us-east` site on a real PostgreSQL server (started by the
//! test): the reference scenario's write and read go through it, the record lands in that
//! database (protected fields as ciphertext), and a denied read changes nothing there.
//! Skips without PostgreSQL binaries unless `SOVEREIGN_REQUIRE_PG=1`.

use crate::support::{serve, token_of};
use testkit::cast::{PARENT_CN, VETTED_US};

#[test]
fn serve_keeps_a_site_in_postgresql() {
    let Some(pg) = pgtest::PgServer::start() else {
        return;
    };
    let url = pg.create_database("us_east");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    crate::support::init_with_stores(
        data,
        &[(r#"store = "sqlite:sites/us-east/store.sqlite""#, &url)],
    );

    let server = serve(data, "warn,sovereign=info");
    let alice = token_of(data, &VETTED_US);
    let chen = token_of(data, &PARENT_CN);
    let http = reqwest::blocking::Client::new();
    let send = |method: reqwest::Method, path: &str, token: &str, body: Option<&str>| {
        let mut request = http
            .request(method, format!("{}{path}", server.base))
            .bearer_auth(token)
            .header("Sovereign-Purpose", "support ticket 42");
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        (status, response.text().unwrap())
    };
    let (status, body) = send(
        reqwest::Method::PUT,
        "/v1/subjects/u-1",
        &alice,
        Some(r#"{"jurisdiction":"US"}"#),
    );
    assert_eq!(status, 201, "{body}");
    assert!(body.contains(r#""site":"us-east""#), "{body}");
    let record = "/v1/subjects/u-1/records/profile/main";
    let (status, body) = send(
        reqwest::Method::PUT,
        record,
        &alice,
        Some(r#"{"email":"ZZMARK-pg@example.com","display_name":"Ada"}"#),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(reqwest::Method::GET, record, &alice, None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("ZZMARK-pg@example.com"), "{body}");
    let (status, _) = send(reqwest::Method::GET, record, &chen, None);
    assert_eq!(status, 403);

    // The record is in PostgreSQL, its protected field encrypted.
    let mut client = pg.client("us_east");
    let rows = client
        .query("SELECT subject, collection, key, fields FROM records", &[])
        .unwrap();
    assert_eq!(rows.len(), 1, "one record in the site's database");
    let fields: String = rows[0].get(3);
    assert!(fields.contains("Ada"), "{fields}");
    assert!(
        !fields.contains("ZZMARK"),
        "protected fields are ciphertext: {fields}"
    );
    assert!(fields.contains("sov:enc:v1:"), "{fields}");
    let subjects: i64 = client
        .query_one("SELECT count(*) FROM subjects", &[])
        .unwrap()
        .get(0);
    assert_eq!(subjects, 1);
    drop(server);
}
