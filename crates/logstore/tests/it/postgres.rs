//! The log on a real PostgreSQL server that the tests start themselves: the same guarantees as
//! on SQLite, several gateways appending to one log, takeover when the integrating gateway
//! goes, and appends that wait for an integrator without ever being lost.

use crate::common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{options, signer, verify, verify_entries, wait_for_checkpoint};
use logstore::{Log, LogOptions};
use pgtest::PgServer;
use tlog::note::Signer;

fn database(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

fn append_numbered(log: &Log, from: u64, to: u64) {
    for i in from..to {
        assert_eq!(
            log.append_blocking(format!("entry {i}").into_bytes())
                .unwrap(),
            i
        );
    }
}

#[test]
fn appends_are_durable_served_as_tiles_and_survive_reopening() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.fresh_database();
    let signer = signer();
    let verifier = signer.verifier();
    let skey = signer.to_skey();

    let first;
    {
        let log = Log::open_postgres(&url, signer, options()).unwrap();
        wait_for_checkpoint(&log, 0);
        append_numbered(&log, 0, 300);
        wait_for_checkpoint(&log, 300);
        first = verify(&log, &verifier, None);
        let proof = log.inclusion_proof(123, 300).unwrap();
        tlog::check_record(
            &proof,
            300,
            &first.hash,
            123,
            &tlog::leaf_hash(b"entry 123"),
        )
        .unwrap();
        assert_eq!(log.entry(299).unwrap().unwrap(), b"entry 299");
        assert_eq!(log.entry(300).unwrap(), None);
    }
    let log = Log::open_postgres(&url, Signer::new(&skey).unwrap(), options()).unwrap();
    assert_eq!(log.size(), 300);
    assert_eq!(
        log.checkpoint().size,
        300,
        "the stored checkpoint is served at once"
    );
    append_numbered(&log, 300, 400);
    wait_for_checkpoint(&log, 400);
    let second = verify(&log, &verifier, Some(&first));
    let proof = log.consistency_proof(300, 400).unwrap();
    tlog::check_tree(&proof, 400, &second.hash, 300, &first.hash).unwrap();
}

#[test]
fn several_gateways_append_to_one_log() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.fresh_database();
    let signer = signer();
    let verifier = signer.verifier();
    let skey = signer.to_skey();
    let gateways: Vec<Arc<Log>> = (0..2)
        .map(|_| {
            Arc::new(Log::open_postgres(&url, Signer::new(&skey).unwrap(), options()).unwrap())
        })
        .collect();
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let log = gateways[t % 2].clone();
            std::thread::spawn(move || {
                (0..40)
                    .map(|i| {
                        let entry = format!("gateway {} thread {t} entry {i}", t % 2);
                        (
                            log.append_blocking(entry.clone().into_bytes()).unwrap(),
                            entry,
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut answered: Vec<(u64, String)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    answered.sort();
    let indexes: Vec<u64> = answered.iter().map(|(index, _)| *index).collect();
    assert_eq!(
        indexes,
        (0..240).collect::<Vec<_>>(),
        "distinct, gapless indexes"
    );

    // Both gateways serve the same tree, signed by whichever integrates.
    for log in &gateways {
        wait_for_checkpoint(log, 240);
        let mut seen = BTreeSet::new();
        verify_entries(log, &verifier, None, |index, entry| {
            assert_eq!(
                entry,
                answered[index as usize].1.as_bytes(),
                "entry {index}"
            );
            seen.insert(index);
        });
        assert_eq!(seen.len(), 240);
    }
    let holders: i64 = server
        .client(database(&url))
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(holders, 1, "exactly one gateway integrates");
}

#[test]
fn another_gateway_takes_over_when_the_integrator_goes() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.fresh_database();
    let signer = signer();
    let verifier = signer.verifier();
    let skey = signer.to_skey();

    let first_gateway = Log::open_postgres(&url, signer, options()).unwrap();
    // Only it exists, so it holds the lock once it has signed the empty tree.
    wait_for_checkpoint(&first_gateway, 0);
    let second_gateway = Log::open_postgres(&url, Signer::new(&skey).unwrap(), options()).unwrap();
    append_numbered(&second_gateway, 0, 50);
    wait_for_checkpoint(&second_gateway, 50);
    let before = verify(&second_gateway, &verifier, None);
    // Exactly one of them integrates: the one that raises what is raised once.
    assert!(first_gateway.integrates());
    assert!(!second_gateway.integrates());

    drop(first_gateway);
    append_numbered(&second_gateway, 50, 100);
    wait_for_checkpoint(&second_gateway, 100);
    verify(&second_gateway, &verifier, Some(&before));
    assert!(second_gateway.integrates());
}

#[test]
fn appends_wait_for_an_integrator_and_are_never_lost() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.fresh_database();
    let mut holder = server.client(database(&url));
    // Create the tables, then hold the integrator's lock so no gateway can integrate.
    drop(Log::open_postgres(&url, signer(), options()).unwrap());
    holder
        .execute(
            "SELECT pg_advisory_lock($1)",
            &[&logstore::POSTGRES_INTEGRATOR_LOCK],
        )
        .unwrap();
    let signer = signer();
    let verifier = signer.verifier();
    let log = Log::open_postgres(
        &url,
        signer,
        LogOptions {
            integration_deadline: Duration::from_secs(1),
            ..options()
        },
    )
    .unwrap();
    let error = log.append_blocking(b"entry 0".to_vec()).unwrap_err();
    assert!(
        error.to_string().contains("not integrated within 1s"),
        "{error}"
    );
    assert_eq!(log.size(), 0);

    // Once the lock is free, the gateway takes over and integrates the queued entry.
    drop(holder);
    wait_for_checkpoint(&log, 1);
    verify(&log, &verifier, None);
    assert_eq!(log.append_blocking(b"entry 1".to_vec()).unwrap(), 1);
}

#[test]
fn a_tampered_store_is_refused_at_open() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.fresh_database();
    let signer = signer();
    let skey = signer.to_skey();
    {
        let log = Log::open_postgres(&url, signer, options()).unwrap();
        append_numbered(&log, 0, 10);
        wait_for_checkpoint(&log, 10);
    }
    // The level-3 hash of entry 7's row is the root of the first 8 entries' subtree.
    server
        .client(database(&url))
        .execute(
            "UPDATE log_entries SET hashes = overlay(hashes placing '\\x00' FROM 97) WHERE idx = 7",
            &[],
        )
        .unwrap();
    let error = Log::open_postgres(&url, Signer::new(&skey).unwrap(), options())
        .err()
        .expect("must refuse");
    assert!(error.to_string().contains("inconsistent"), "{error}");

    let error = Log::open_postgres(&url, self::signer(), options())
        .err()
        .expect("another key cannot adopt the log");
    assert!(error.to_string().contains("does not verify"), "{error}");
}

#[test]
fn bad_urls_are_refused_without_repeating_the_password() {
    for (url, expected) in [
        // TLS is accepted: this fails to connect, and the error names the server.
        (
            "postgres://u:hunter2@127.0.0.1:1/db?sslmode=require",
            "127.0.0.1:1",
        ),
        (
            "postgres://u:hunter2@127.0.0.1:1/db?bogus=1",
            "cannot be read",
        ),
        ("postgres://u:hunter2@127.0.0.1:1/db", "127.0.0.1:1"),
    ] {
        let error = Log::open_postgres(url, signer(), options())
            .err()
            .expect("must refuse");
        let text = error.to_string();
        assert!(text.contains(expected), "{url}: {text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
