//! The PostgreSQL site store against a throwaway server (`pgtest`): the conformance suite the
//! SQLite store passes, schema versioning, and errors that never show the password; and a
//! vault whose custodian's key store is PostgreSQL (the key store's own checks are unit
//! tests in `keys/store/tests.rs`).
//!
//! Skipped, saying so, where no PostgreSQL binaries are installed, unless
//! `SOVEREIGN_REQUIRE_PG=1`.

use std::sync::Arc;

use pgtest::PgServer;
use serde_json::json;
use vault::{
    DataKeyStore, Envelope, PostgresStore, SiteStore, StoreError, SubjectRow, UnwrapReason, Vault,
    open_store,
};

use crate::common;

#[test]
fn conforms() {
    let Some(server) = PgServer::start() else {
        return;
    };
    vault::conformance::conformance_suite(&|| {
        Arc::new(PostgresStore::open(&server.fresh_database(), 2).unwrap())
    });
}

#[test]
fn reopen_keeps_data() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.fresh_database();
    vault::conformance::reopen_keeps_data(&|| {
        open_store(&url, std::path::Path::new("."), 1).unwrap()
    });
}

/// Byte order must not depend on the database's collation: this database sorts text by
/// English rules (`a` < `B`), the store by bytes (`B` < `a`).
#[test]
fn sorting_is_bytewise_under_a_language_collation() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let create = |name: &str| {
        server.client("postgres").batch_execute(&format!(
            "CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' \
             LOCALE_PROVIDER icu ICU_LOCALE 'en' LOCALE 'C'"
        ))
    };
    if let Err(e) = create("english") {
        eprintln!("skipping the language collation check: this PostgreSQL has no ICU ({e})");
        return;
    }
    let first: String = server
        .client("english")
        .query_one(
            "SELECT x FROM (VALUES ('B'), ('a')) AS t(x) ORDER BY x LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(first, "a", "the database itself sorts by language");
    let databases = std::sync::Mutex::new(0);
    vault::conformance::conformance_suite(&|| {
        let mut n = databases.lock().unwrap();
        *n += 1;
        let name = format!("english_{n}");
        create(&name).unwrap();
        Arc::new(PostgresStore::open(&server.url(&name), 2).unwrap())
    });
}

#[test]
fn schema_version_is_recorded_and_a_newer_one_refused() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.fresh_database();
    let store = PostgresStore::open(&url, 1).unwrap();
    assert_eq!(store.schema_version().unwrap(), 1);
    store
        .put_subject(&SubjectRow {
            id: "alice".into(),
            jurisdiction: "US".into(),
        })
        .unwrap();
    drop(store);

    // Opening again keeps the data and the version.
    let store = PostgresStore::open(&url, 1).unwrap();
    assert_eq!(store.schema_version().unwrap(), 1);
    assert_eq!(store.subjects().unwrap().len(), 1);
    drop(store);

    let db = url.rsplit('/').next().unwrap();
    server
        .client(db)
        .batch_execute("UPDATE sovereign_meta SET value = 2 WHERE key = 'schema_version'")
        .unwrap();
    let err = PostgresStore::open(&url, 1).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::UnsupportedSchema {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("/{db}`")),
        "names the database: {text}"
    );
}

#[test]
fn corrupt_fields_do_not_leak_values() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.fresh_database();
    let store = PostgresStore::open(&url, 1).unwrap();
    let db = url.rsplit('/').next().unwrap();
    server
        .client(db)
        .batch_execute("INSERT INTO records VALUES ('s', 'c', 'k', '\"secret-value\"')")
        .unwrap();
    let err = store.get_record("s", "c", "k").unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(!err.to_string().contains("secret"), "{err}");
    let err = store.records().unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
}

#[test]
fn connection_errors_never_show_the_password() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let base = std::path::Path::new(".");
    let db = server.fresh_database();
    let db = db.rsplit('/').next().unwrap();
    let mut admin = server.client("postgres");
    admin
        .batch_execute("CREATE ROLE app LOGIN PASSWORD 'right-horse-battery'")
        .unwrap();

    // The fixture trusts every connection; `app` must give its password over TCP. The server
    // writes its own pg_hba.conf (it owns the file) and reloads it.
    let hba: String = admin.query_one("SHOW hba_file", &[]).unwrap().get(0);
    admin
        .batch_execute(&format!(
            "COPY (SELECT unnest(ARRAY['local all all trust', \
                   'host all app 127.0.0.1/32 scram-sha-256', \
                   'host all all 127.0.0.1/32 trust'])) TO '{hba}'; \
             SELECT pg_reload_conf()"
        ))
        .unwrap();
    let wrong = format!(
        "postgres://app:hunter2-secret@127.0.0.1:{}/{db}",
        server.port()
    );
    // The reload is asynchronous: wait until the server asks for the password.
    let mut text = String::new();
    for _ in 0..100 {
        let err = open_store(&wrong, base, 1).err().unwrap();
        text = err.to_string();
        if text.contains("password authentication failed") {
            assert!(matches!(err, StoreError::Postgres { .. }), "{err:?}");
            assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        text.contains("password authentication failed for user \"app\""),
        "{text}\n{}",
        server.log()
    );
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        text.starts_with(&format!(
            "PostgreSQL store `postgres://app@127.0.0.1:{}/{db}`: ",
            server.port()
        )),
        "{text}"
    );

    // The right password, but a database that does not exist.
    let url = format!(
        "postgres://app:right-horse-battery@127.0.0.1:{}/no_such_db",
        server.port()
    );
    let err = open_store(&url, base, 1).err().unwrap();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Postgres { .. }), "{err:?}");
    assert!(!text.contains("right-horse"), "{text}");
    assert!(
        text.contains("database \"no_such_db\" does not exist"),
        "says what failed: {text}"
    );

    // Nothing listens on port 1.
    let err = open_store("postgresql://app:hunter2-secret@127.0.0.1:1/x", base, 1)
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        text.contains("postgres://app@127.0.0.1:1/x") && text.contains("connect"),
        "{text}"
    );
    assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");

    // TLS required from a server without it: refused by the server's answer, no password shown.
    let err = open_store(
        &format!(
            "postgres://app:hunter2-secret@127.0.0.1:{}/{db}?sslmode=require",
            server.port()
        ),
        base,
        1,
    )
    .err()
    .unwrap();
    assert!(matches!(err, StoreError::Postgres { .. }), "{err:?}");
    assert!(err.to_string().contains("TLS"), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");

    // Plain TCP is accepted explicitly; `app` may not create tables in `public` (PostgreSQL
    // 15), and the error says so, without the password.
    let err = open_store(
        &format!(
            "postgres://app:right-horse-battery@127.0.0.1:{}/{db}?sslmode=disable",
            server.port()
        ),
        base,
        1,
    )
    .err()
    .unwrap();
    let text = err.to_string();
    assert!(!text.contains("right-horse"), "{text}");
    assert!(text.contains("permission denied"), "{text}");
}

/// A vault whose key store is PostgreSQL, reached over TLS with the server's certificate
/// checked, opened from a setting as a gateway opens `keys.store`: protected fields round
/// trip, erasure destroys the keys there, and every key store connection is encrypted, the
/// listener's too.
#[test]
fn a_vault_keeps_its_keys_in_postgres_over_tls() {
    let Some(server) = PgServer::start_tls() else {
        return;
    };
    let db = server.fresh_database();
    let db = db.rsplit('/').next().unwrap();
    let name = format!(
        "postgres://{}@localhost:{}/{db}",
        pgtest::USER,
        server.port()
    );
    let setting = format!(
        "{name}?sslmode=verify-full&sslrootcert={}",
        server.ca_path().unwrap().display()
    );
    let dir = tempfile::tempdir().unwrap();
    let keys = DataKeyStore::open_url(&setting, dir.path()).unwrap();
    assert_eq!(keys.describe(), name);
    let envelope = Envelope::new(common::manager(dir.path(), &UnwrapReason::ALL), keys);
    let listening = envelope.forget_on_remote_erasure().unwrap();
    assert!(listening.is_listening());
    let vault = Vault::open(common::layout(), dir.path(), 2)
        .unwrap()
        .with_envelope(envelope);

    vault.register_subject("alice", "US").unwrap();
    vault
        .put_record(
            "alice",
            "profile",
            "main",
            common::fields(json!({"email": "alice@example.org"})),
        )
        .unwrap();
    let read = vault
        .get_record("alice", "profile", "main", UnwrapReason::Access)
        .unwrap()
        .unwrap();
    assert_eq!(read.fields["email"], "alice@example.org");
    let keys = vault.envelope().unwrap();
    assert_eq!(keys.keys_of("alice").unwrap(), vec!["us-east"]);

    let connections: Vec<(String, bool)> = server
        .client(db)
        .query(
            "SELECT a.query, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.datname = $1 AND a.pid <> pg_backend_pid()",
            &[&db],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert!(
        connections
            .iter()
            .any(|(query, _)| query.starts_with("LISTEN")),
        "{connections:?}"
    );
    assert!(connections.iter().all(|(_, ssl)| *ssl), "{connections:?}");

    assert_eq!(vault.erase_subject("alice").unwrap().keys_destroyed, 1);
    assert_eq!(keys.keys_of("alice").unwrap(), Vec::<String>::new());
    let stored: i64 = server
        .client(db)
        .query_one("SELECT count(*) FROM data_keys", &[])
        .unwrap()
        .get(0);
    assert_eq!(stored, 0);
    listening.stop();
}
