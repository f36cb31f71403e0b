//! The key store's behaviour, checked alike on both backends (a SQLite file, a throwaway
//! PostgreSQL server from `pgtest`), and what only PostgreSQL has: shared use by several
//! gateways, schema versions in `sovereign_meta`, and the deletion notices.
//!
//! PostgreSQL tests are skipped, saying so, where no PostgreSQL binaries are installed, unless
//! `SOVEREIGN_REQUIRE_PG=1`.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;

fn key(id: &str, byte: u8) -> WrappedKey {
    WrappedKey {
        key_id: id.into(),
        wrapped: vec![byte; 40],
    }
}

/// The behaviour both backends share. `open` opens another store on the same file or
/// database each time it is called (another gateway, or the same one restarted).
fn conformance(open: &(dyn Fn() -> DataKeyStore + Sync)) {
    let store = open();
    let other = open();

    // Empty.
    assert_eq!(store.get("alice", "us").unwrap(), None);
    assert_eq!(store.sites_of("alice").unwrap(), Vec::<String>::new());
    assert_eq!(store.delete("alice", None).unwrap(), 0);
    assert_eq!(store.delete("alice", Some("us")).unwrap(), 0);

    // The first writer wins, in one store and across two.
    assert_eq!(
        store.insert_first("alice", "us", &key("k", 1)).unwrap(),
        key("k", 1)
    );
    assert_eq!(
        store.insert_first("alice", "us", &key("k", 2)).unwrap(),
        key("k", 1)
    );
    assert_eq!(
        other.insert_first("alice", "us", &key("k2", 3)).unwrap(),
        key("k", 1)
    );
    assert_eq!(other.get("alice", "us").unwrap(), Some(key("k", 1)));

    // Every byte value reads back.
    let bytes = WrappedKey {
        key_id: "local:ü".into(),
        wrapped: (0..=255).collect(),
    };
    assert_eq!(store.insert_first("bytes", "us", &bytes).unwrap(), bytes);
    assert_eq!(other.get("bytes", "us").unwrap(), Some(bytes));

    // Sites sorted bytewise; subjects kept apart, also one that is another's prefix.
    for site in ["b", "B", "a-1", "a"] {
        other.insert_first("alice", site, &key("k", 4)).unwrap();
    }
    other.insert_first("al", "zz", &key("k", 5)).unwrap();
    other.insert_first("alice2", "c", &key("k", 6)).unwrap();
    assert_eq!(
        store.sites_of("alice").unwrap(),
        vec!["B", "a", "a-1", "b", "us"]
    );
    assert_eq!(store.sites_of("al").unwrap(), vec!["zz"]);

    // Deleting one site, then the rest; again is harmless; others keep theirs.
    assert_eq!(store.delete("alice", Some("us")).unwrap(), 1);
    assert_eq!(other.get("alice", "us").unwrap(), None);
    assert_eq!(other.delete("alice", Some("us")).unwrap(), 0);
    assert_eq!(other.delete("alice", None).unwrap(), 4);
    assert_eq!(store.delete("alice", None).unwrap(), 0);
    assert_eq!(store.sites_of("alice").unwrap(), Vec::<String>::new());
    assert_eq!(store.sites_of("al").unwrap(), vec!["zz"]);
    assert_eq!(store.sites_of("alice2").unwrap(), vec!["c"]);

    // A deleted key can be made again, and it is the new one.
    assert_eq!(
        other.insert_first("alice", "us", &key("k", 7)).unwrap(),
        key("k", 7)
    );

    // Many writers at once, half on each store: all end up with one and the same key.
    let winners: Vec<WrappedKey> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..8u8)
            .map(|n| {
                let store = if n % 2 == 0 { &store } else { &other };
                scope.spawn(move || store.insert_first("race", "us", &key("k", n)).unwrap())
            })
            .collect();
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let stored = store.get("race", "us").unwrap().unwrap();
    assert!(winners.iter().all(|w| *w == stored), "{winners:?}");

    // Kept across reopening.
    drop((store, other));
    let again = open();
    assert_eq!(again.get("alice", "us").unwrap(), Some(key("k", 7)));
    assert_eq!(again.get("race", "us").unwrap(), Some(stored));
}

#[test]
fn sqlite_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys/keys.db");
    conformance(&|| DataKeyStore::open(&path).unwrap());
}

#[test]
fn postgres_conforms() {
    let Some(server) = pgtest::PgServer::start() else {
        return;
    };
    let url = server.fresh_database();
    conformance(&|| DataKeyStore::open_url(&url, Path::new("/nonexistent")).unwrap());
}

#[test]
fn settings_name_a_file_or_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let absolute = dir.path().join("abs/keys.db");
    for (setting, file) in [
        // The setting as it has always been: a bare path, relative to the data folder.
        ("keys/keys.db".to_string(), dir.path().join("keys/keys.db")),
        (
            "sqlite:other/k.db".to_string(),
            dir.path().join("other/k.db"),
        ),
        (absolute.display().to_string(), absolute.clone()),
        (format!("sqlite:{}", absolute.display()), absolute.clone()),
    ] {
        let store = DataKeyStore::open_url(&setting, dir.path()).unwrap();
        assert_eq!(store.describe(), file.display().to_string(), "{setting}");
        store.insert_first("a", "s", &key("k", 1)).unwrap();
        assert!(file.exists(), "{setting}");
    }
    for bad in ["", "sqlite:", "sqlite:  ", "mysql://u:topsecret@h/d"] {
        let err = DataKeyStore::open_url(bad, dir.path()).unwrap_err();
        assert!(matches!(err, KeyError::InvalidUrl(_)), "{bad}: {err:?}");
        assert!(!err.to_string().contains("topsecret"), "{err}");
    }
}

#[test]
fn postgres_errors_name_the_server_but_never_the_password() {
    // Nothing listens on port 1.
    for scheme in ["postgres", "postgresql"] {
        let url = format!("{scheme}://u:topsecret@127.0.0.1:1/d?sslmode=disable");
        let err = DataKeyStore::open_url(&url, Path::new(".")).unwrap_err();
        assert!(matches!(err, KeyError::Postgres { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("postgres://u@127.0.0.1:1/d"), "{text}");
        assert!(!text.contains("topsecret"), "{text}");
        assert!(!format!("{err:?}").contains("topsecret"), "{err:?}");
    }
    let err = DataKeyStore::open_url("postgres://u:topsecret@h/d?sslmode=allow", Path::new("."))
        .unwrap_err();
    assert!(matches!(err, KeyError::NotImplemented(_)), "{err:?}");
    assert!(!err.to_string().contains("topsecret"), "{err}");
}

/// The version is kept in `sovereign_meta` beside the site store's (one database may hold
/// both), and a newer one is refused, naming the database.
#[test]
fn postgres_schema_versions_are_kept_and_checked() {
    let Some(server) = pgtest::PgServer::start() else {
        return;
    };
    let url = server.fresh_database();
    let db = url.rsplit('/').next().unwrap().to_string();
    let sites = crate::PostgresStore::open(&url, 1).unwrap();
    let store = DataKeyStore::open_url(&url, Path::new(".")).unwrap();
    store.insert_first("alice", "us", &key("k", 1)).unwrap();
    drop(store);
    let versions: Vec<(String, i64)> = server
        .client(&db)
        .query("SELECT key, value FROM sovereign_meta ORDER BY key", &[])
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        versions,
        vec![
            ("data_keys_schema_version".to_string(), 1),
            ("schema_version".to_string(), 1)
        ]
    );
    assert_eq!(sites.schema_version().unwrap(), 1);

    // Opening again keeps the keys.
    let store = DataKeyStore::open_url(&url, Path::new(".")).unwrap();
    assert_eq!(store.get("alice", "us").unwrap(), Some(key("k", 1)));
    drop(store);

    server
        .client(&db)
        .batch_execute("UPDATE sovereign_meta SET value = 2 WHERE key = 'data_keys_schema_version'")
        .unwrap();
    let err = DataKeyStore::open_url(&url, Path::new(".")).unwrap_err();
    let refused = matches!(
        err,
        KeyError::UnsupportedSchema {
            found: 2,
            supported: 1,
            ..
        }
    );
    assert!(refused, "{err:?}");
    assert!(err.to_string().contains(&format!("/{db}`")), "{err}");
}

/// Reads have connections of their own: with every write connection waiting on a lock, a
/// read still answers.
#[test]
fn postgres_reads_do_not_wait_for_writes() {
    let Some(server) = pgtest::PgServer::start() else {
        return;
    };
    let url = server.fresh_database();
    let db = url.rsplit('/').next().unwrap().to_string();
    let store = DataKeyStore::open_url(&url, Path::new(".")).unwrap();
    store.insert_first("alice", "us", &key("k", 1)).unwrap();
    let mut locker = server.client(&db);
    let mut lock = locker.transaction().unwrap();
    // Blocks inserts and deletes, not reads.
    lock.batch_execute("LOCK TABLE data_keys IN EXCLUSIVE MODE")
        .unwrap();
    let store = &store;
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..super::postgres::POOL_SIZE)
            .map(|n| scope.spawn(move || store.delete(&format!("s{n}"), None).unwrap()))
            .collect();
        let mut watch = server.client(&db);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let waiting: i64 = watch
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE wait_event_type = 'Lock' AND query LIKE 'DELETE%'",
                    &[],
                )
                .unwrap()
                .get(0);
            if waiting == super::postgres::POOL_SIZE as i64 {
                break;
            }
            assert!(Instant::now() < deadline, "the writers never blocked");
            std::thread::sleep(Duration::from_millis(20));
        }
        let (tx, rx) = mpsc::channel();
        scope.spawn(move || {
            let _ = tx.send(store.get("alice", "us").unwrap());
        });
        let read = rx.recv_timeout(Duration::from_secs(2));
        lock.rollback().unwrap();
        assert_eq!(
            read,
            Ok(Some(key("k", 1))),
            "the read waited for the writers"
        );
        for writer in writers {
            assert_eq!(writer.join().unwrap(), 0);
        }
    });
}

/// Receives from `rx` until `wanted` comes, failing after `within`.
fn wait_for(rx: &mpsc::Receiver<Deleted>, wanted: &Deleted, within: Duration) {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(heard) if heard == *wanted => return,
            Ok(other) => seen.push(other),
            Err(_) => panic!("{wanted:?} not heard within {within:?}; heard {seen:?}"),
        }
    }
}

/// Ends the one listening connection to `db` from the server's side.
pub(crate) fn kill_the_listener(server: &pgtest::PgServer, db: &str) {
    let killed: i64 = server
        .client(db)
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE query LIKE 'LISTEN%' AND datname = $1 AND pid <> pg_backend_pid()",
            &[&db],
        )
        .unwrap()
        .get(0);
    assert_eq!(killed, 1, "the listening connection was not found");
}

/// Two stores on one fresh database, the first listening.
struct Listening {
    db: String,
    theirs: DataKeyStore,
    heard: mpsc::Receiver<Deleted>,
    handle: ListenerHandle,
    /// Holds the listener's pools; the thread has its own connection.
    _ours: DataKeyStore,
}

fn listening(server: &pgtest::PgServer) -> Listening {
    let url = server.fresh_database();
    let ours = DataKeyStore::open_url(&url, Path::new(".")).unwrap();
    let (tx, heard) = mpsc::channel();
    let handle = ours
        .listen(move |deleted| {
            let _ = tx.send(deleted);
        })
        .unwrap();
    assert!(handle.is_listening());
    Listening {
        db: url.rsplit('/').next().unwrap().to_string(),
        theirs: DataKeyStore::open_url(&url, Path::new(".")).unwrap(),
        heard,
        handle,
        _ours: ours,
    }
}

fn deleted(subject: &str, site: Option<&str>) -> Deleted {
    Deleted::Keys {
        subject: subject.into(),
        site: site.map(Into::into),
    }
}

#[test]
fn postgres_deletions_are_heard_by_other_stores() {
    let Some(server) = pgtest::PgServer::start() else {
        return;
    };
    let two = listening(&server);
    two.theirs
        .insert_first("alice", "us", &key("k", 1))
        .unwrap();
    two.theirs.delete("alice", Some("us")).unwrap();
    wait_for(
        &two.heard,
        &deleted("alice", Some("us")),
        Duration::from_secs(2),
    );
    two.theirs.delete("bob", None).unwrap();
    wait_for(&two.heard, &deleted("bob", None), Duration::from_secs(2));
    // A deletion that rolls back is not announced.
    server
        .client(&two.db)
        .batch_execute(&format!(
            "BEGIN; DELETE FROM data_keys;
             SELECT pg_notify('{}', '{{\"subject\":\"carol\",\"site\":null}}'); ROLLBACK;",
            super::postgres::CHANNEL
        ))
        .unwrap();
    two.theirs.delete("dave", None).unwrap();
    assert_eq!(
        two.heard.recv_timeout(Duration::from_secs(2)),
        Ok(deleted("dave", None))
    );

    two.handle.stop();
    // The callback (and its sender) went with the thread.
    assert_eq!(two.heard.try_recv(), Err(mpsc::TryRecvError::Disconnected));
}

#[test]
fn postgres_listener_survives_its_connection_being_killed() {
    let Some(server) = pgtest::PgServer::start() else {
        return;
    };
    let two = listening(&server);
    kill_the_listener(&server, &two.db);
    wait_for(&two.heard, &Deleted::All, Duration::from_secs(5));
    // Listening again: a deletion after the reconnection is heard. The first All may come
    // before the new connection listens, so deletions are repeated until one is heard.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        two.theirs.delete("alice", None).unwrap();
        match two.heard.recv_timeout(Duration::from_millis(300)) {
            Ok(notice) if notice == deleted("alice", None) => break,
            _ => assert!(Instant::now() < deadline, "not listening again"),
        }
    }
    assert!(two.handle.is_listening());
    two.handle.stop();
}

#[test]
fn sqlite_has_nothing_to_listen_to() {
    let dir = tempfile::tempdir().unwrap();
    let store = DataKeyStore::open(&dir.path().join("k.db")).unwrap();
    let handle = store.listen(|_| panic!("nothing is heard")).unwrap();
    assert!(!handle.is_listening());
    store.insert_first("alice", "us", &key("k", 1)).unwrap();
    store.delete("alice", None).unwrap();
    handle.stop();
}
