//! TLS against a real server: `pgtest` starts one whose certificate, signed by a throwaway
//! CA, is for the DNS name `localhost` only.

use std::path::Path;

use pgconn::{PgError, Target, TlsMode};
use pgtest::PgServer;

const PASSWORD: &str = "s3cret-tls-pw";

/// A URL to the server's `postgres` database through `host`, with a password the server
/// (trusting local connections) ignores, so errors can be checked for it.
fn url(server: &PgServer, host: &str, query: &str) -> String {
    format!(
        "postgres://{}:{PASSWORD}@{host}:{}/postgres?{query}",
        pgtest::USER,
        server.port()
    )
}

fn root(path: &Path) -> String {
    format!("sslrootcert={}", path.display())
}

/// Whether the session is encrypted, as the server sees it.
fn encrypted(client: &mut postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0)
}

fn refused(url: &str) -> String {
    let Err(error) = Target::parse(url).unwrap().connect() else {
        panic!("connected: {}", url.replace(PASSWORD, "***"));
    };
    assert!(matches!(error, PgError::Server { .. }), "{error:?}");
    let text = error.to_string();
    eprintln!("refused as expected: {text}");
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(!format!("{error:?}").contains(PASSWORD), "{error:?}");
    text
}

#[test]
fn require_encrypts_without_checking_the_certificate() {
    let Some(server) = PgServer::start_tls() else {
        return;
    };
    for host in ["127.0.0.1", "localhost"] {
        let target = Target::parse(&url(&server, host, "sslmode=require")).unwrap();
        assert!(!target.verifies_certificates());
        let mut client = target.connect().unwrap();
        assert!(encrypted(&mut client), "{host}");
    }
}

#[test]
fn verify_full_checks_chain_and_host_name() {
    let Some(server) = PgServer::start_tls() else {
        return;
    };
    let ca = root(server.ca_path().unwrap());

    let mut client = Target::parse(&url(
        &server,
        "localhost",
        &format!("sslmode=verify-full&{ca}"),
    ))
    .unwrap()
    .connect()
    .unwrap();
    assert!(encrypted(&mut client));

    // The certificate names `localhost`, not the address: as libpq, verify-full refuses it.
    let text = refused(&url(
        &server,
        "127.0.0.1",
        &format!("sslmode=verify-full&{ca}"),
    ));
    assert!(text.contains("certificate not valid for name"), "{text}");
    assert!(text.contains("127.0.0.1"), "{text}");
    // verify-ca checks only the chain.
    let mut client = Target::parse(&url(
        &server,
        "127.0.0.1",
        &format!("sslmode=verify-ca&{ca}"),
    ))
    .unwrap()
    .connect()
    .unwrap();
    assert!(encrypted(&mut client));
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let Some(server) = PgServer::start_tls() else {
        return;
    };
    let other = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(other.path(), pgtest::Ca::new("another CA").pem()).unwrap();
    let other = root(other.path());
    for (host, mode) in [
        ("localhost", "verify-full"),
        ("127.0.0.1", "verify-ca"),
        // With a root file, as libpq, `require` checks the chain too.
        ("127.0.0.1", "require"),
    ] {
        let text = refused(&url(&server, host, &format!("sslmode={mode}&{other}")));
        assert!(
            text.contains("invalid peer certificate") && text.contains("UnknownIssuer"),
            "{mode}: {text}"
        );
    }
    // Without a root file, verify-full trusts the built-in public roots, which did not sign
    // this certificate.
    let text = refused(&url(&server, "localhost", "sslmode=verify-full"));
    assert!(text.contains("UnknownIssuer"), "{text}");
}

#[test]
fn plain_tcp_and_prefer_work_with_both_kinds_of_server() {
    let Some(tls) = PgServer::start_tls() else {
        return;
    };
    let Some(plain) = PgServer::start() else {
        return;
    };
    let mut client = Target::parse(&url(&tls, "127.0.0.1", "sslmode=disable"))
        .unwrap()
        .connect()
        .unwrap();
    assert!(
        !encrypted(&mut client),
        "disable stays plain on a TLS server"
    );

    // No sslmode is `prefer`, as in libpq: TLS where offered, else plain TCP.
    let target = Target::parse(&url(&tls, "127.0.0.1", "")).unwrap();
    assert_eq!(target.tls_mode(), TlsMode::Prefer);
    assert!(encrypted(&mut target.connect().unwrap()));
    let mut client = Target::parse(&url(&plain, "127.0.0.1", "sslmode=prefer"))
        .unwrap()
        .connect()
        .unwrap();
    assert!(!encrypted(&mut client));

    // `require` does not fall back.
    let text = refused(&url(&plain, "127.0.0.1", "sslmode=require"));
    assert!(text.contains("TLS"), "{text}");
}

#[test]
fn a_pool_serves_over_tls() {
    let Some(server) = PgServer::start_tls() else {
        return;
    };
    let ca = root(server.ca_path().unwrap());
    let target = Target::parse(&url(
        &server,
        "localhost",
        &format!("sslmode=verify-full&{ca}"),
    ))
    .unwrap();
    let pool = target.pool(2).unwrap();
    let mut a = pool.get().unwrap();
    let mut b = pool.get().unwrap();
    assert!(encrypted(&mut a) && encrypted(&mut b));
    let commit: String = a.query_one("SHOW synchronous_commit", &[]).unwrap().get(0);
    assert_eq!(commit, "on", "the session settings apply");
}
