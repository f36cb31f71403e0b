//! The custody store on its own: changes survive a reopen, a change the log refuses is not
//! committed, and the rules hold without the gateway around them.

use crate::common;

use common::*;

on_both_stores!(
    approvals_survive_a_reopen_and_grants_follow_the_clock,
    a_change_the_log_refuses_is_not_committed,
    pending_requests_expire_and_decided_ones_stay_decided,
    a_policy_activation_must_name_the_set_and_persists,
    a_policy_set_is_activated_only_with_passing_proofs_against_the_active_invariants,
    new_invariants_need_a_signature_and_proofs_of_the_active_policy_set,
    a_second_gateway_on_the_same_store_takes_up_changes_on_refresh,
    a_change_on_one_gateway_builds_on_the_latest_change_of_another,
    gateways_starting_together_activate_the_first_sets_once,
    an_artifact_submitted_through_one_gateway_is_fetched_through_another,
    a_gateway_with_other_keys_than_the_first_is_refused_until_they_are_replaced,
);
use custody::statement::Statement;
use custody::{CustodyError, Event, Status};

fn approvals_survive_a_reopen_and_grants_follow_the_clock(fixture: Fixture) {
    let log = Log::new(false);
    let append = |e: Event<'_>| log.append(e);
    let alice = person("alice", "usds");
    let id = {
        let custody = fixture.open();
        let (request, _) = custody
            .create_request(new_request(), &alice, RULES, 1000, &append)
            .unwrap();
        custody
            .approve(
                &request.id,
                &person("carol", "custodian"),
                "",
                1010,
                &append,
            )
            .unwrap();
        request.id
    };
    let custody = fixture.open();
    let request = custody.request(&id).unwrap();
    assert_eq!(request.approvals.len(), 1, "the approval was kept");
    assert_eq!(request.status(1020), Status::Pending);
    let (request, _) = custody
        .approve(&id, &person("dave", "custodian"), "ok", 1020, &append)
        .unwrap();
    assert_eq!(request.status(1020), Status::Approved);
    assert_eq!(request.ends_at, Some(1620));

    let covers = |now| {
        custody
            .find_grant("alice", "read", "u-1", Some("activity"), now)
            .is_some()
    };
    assert!(covers(1020));
    assert!(covers(1619));
    assert!(!covers(1620), "ended");
    assert!(
        custody
            .find_grant("alice", "write", "u-1", Some("activity"), 1100)
            .is_none()
    );
    assert!(
        custody
            .find_grant("alice", "read", "u-2", Some("activity"), 1100)
            .is_none()
    );
    assert!(
        custody
            .find_grant("alice", "read", "u-1", Some("profile"), 1100)
            .is_none()
    );
    assert!(
        custody
            .find_grant("bob", "read", "u-1", Some("activity"), 1100)
            .is_none()
    );
    assert_eq!(
        *log.events.lock().unwrap(),
        ["RequestCreated", "RequestApproved", "RequestApproved"]
    );
}

fn a_change_the_log_refuses_is_not_committed(fixture: Fixture) {
    let ok = Log::new(false);
    let refusing = Log::new(true);
    let custody = fixture.open();
    let alice = person("alice", "usds");
    let error = custody
        .create_request(new_request(), &alice, RULES, 1000, &|e| refusing.append(e))
        .unwrap_err();
    assert!(matches!(error, CustodyError::LogUnavailable(_)), "{error}");
    assert!(custody.requests().is_empty());
    assert!(
        fixture.open().requests().is_empty(),
        "nothing on disk either"
    );

    let (request, _) = custody
        .create_request(new_request(), &alice, RULES, 1000, &|e| ok.append(e))
        .unwrap();
    let error = custody
        .approve(&request.id, &person("carol", "custodian"), "", 1001, &|e| {
            refusing.append(e)
        })
        .unwrap_err();
    assert!(matches!(error, CustodyError::LogUnavailable(_)));
    assert!(custody.request(&request.id).unwrap().approvals.is_empty());
    assert!(
        fixture
            .open()
            .request(&request.id)
            .unwrap()
            .approvals
            .is_empty()
    );
}

fn pending_requests_expire_and_decided_ones_stay_decided(fixture: Fixture) {
    let log = Log::new(false);
    let append = |e: Event<'_>| log.append(e);
    let custody = fixture.open();
    let (request, _) = custody
        .create_request(
            new_request(),
            &person("alice", "usds"),
            RULES,
            1000,
            &append,
        )
        .unwrap();
    assert_eq!(request.status(1099), Status::Pending);
    assert_eq!(request.status(1100), Status::Expired);
    let error = custody
        .approve(
            &request.id,
            &person("carol", "custodian"),
            "",
            1100,
            &append,
        )
        .unwrap_err();
    assert!(matches!(
        error,
        CustodyError::NotPending {
            status: Status::Expired,
            ..
        }
    ));
}

fn a_policy_activation_must_name_the_set_and_persists(fixture: Fixture) {
    let log = Log::new(false);
    let append = |e: Event<'_>| log.append(e);
    let custody = fixture.open();
    let (a, b, inv) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
    fixture
        .activate_invariants(&custody, &inv, None, &append)
        .unwrap();
    custody.propose_policy(policy_set(&a), &append).unwrap();
    custody.propose_policy(policy_set(&b), &append).unwrap();
    let for_a = fixture.sign(Statement::PolicyActivation {
        policy_set: a.clone(),
    });
    let error = custody
        .activate_policy(&b, &for_a, proofs(&b, &inv), 5, &append, |_| {
            panic!("not activated")
        })
        .unwrap_err();
    assert!(matches!(error, CustodyError::WrongStatement(_)), "{error}");
    let mut swapped = false;
    custody
        .activate_policy(&a, &for_a, proofs(&a, &inv), 5, &append, |_| swapped = true)
        .unwrap();
    assert!(swapped);
    let reopened = fixture.open();
    let active = reopened.active_policy().unwrap();
    assert_eq!(active.hash, a);
    assert_eq!(active.proofs, Some(proofs(&a, &inv)));
    assert_eq!(reopened.active_invariants().unwrap().hash, inv);
}

fn a_policy_set_is_activated_only_with_passing_proofs_against_the_active_invariants(
    fixture: Fixture,
) {
    let log = Log::new(false);
    let append = |e: Event<'_>| log.append(e);
    let custody = fixture.open();
    let (a, inv, other) = ("a".repeat(64), "c".repeat(64), "d".repeat(64));
    custody.propose_policy(policy_set(&a), &append).unwrap();
    let signed = fixture.sign(Statement::PolicyActivation {
        policy_set: a.clone(),
    });
    let refused = |proofs: custody::Proofs| {
        let error = custody
            .activate_policy(&a, &signed, proofs, 5, &append, |_| panic!("not activated"))
            .unwrap_err();
        assert!(matches!(error, CustodyError::NotProven(_)), "{error}");
        assert!(custody.active_policy().is_none());
        error.to_string()
    };

    // No invariants active: nothing to prove against.
    let why = refused(proofs(&a, &inv));
    assert!(why.contains("no invariant set is active"), "{why}");

    fixture
        .activate_invariants(&custody, &inv, None, &append)
        .unwrap();
    // Proofs of another set, or against other invariants.
    refused(proofs(&"e".repeat(64), &inv));
    let why = refused(proofs(&a, &other));
    assert!(why.contains(&other), "{why}");
    // A refuted invariant, an erroring policy, or no invariant at all.
    let mut refuted = proofs(&a, &inv);
    refuted.invariants[0].result = "refuted".into();
    let why = refused(refuted);
    assert!(why.contains("no-restricted-access: refuted"), "{why}");
    let mut may_error = proofs(&a, &inv);
    may_error.never_errors[0].result = "may_error".into();
    refused(may_error);
    let mut empty = proofs(&a, &inv);
    empty.invariants.clear();
    refused(empty);

    custody
        .activate_policy(&a, &signed, proofs(&a, &inv), 5, &append, |_| {})
        .unwrap();
    assert_eq!(custody.active_policy().unwrap().hash, a);
}

fn new_invariants_need_a_signature_and_proofs_of_the_active_policy_set(fixture: Fixture) {
    let log = Log::new(false);
    let append = |e: Event<'_>| log.append(e);
    let custody = fixture.open();
    let (a, inv, next) = ("a".repeat(64), "c".repeat(64), "d".repeat(64));
    fixture
        .activate_invariants(&custody, &inv, None, &append)
        .unwrap();
    custody.propose_policy(policy_set(&a), &append).unwrap();
    let signed = fixture.sign(Statement::PolicyActivation {
        policy_set: a.clone(),
    });
    custody
        .activate_policy(&a, &signed, proofs(&a, &inv), 5, &append, |_| {})
        .unwrap();

    // A statement for other invariants, or for a policy set, does not activate these.
    let wrong = fixture.sign(Statement::InvariantActivation {
        invariant_set: inv.clone(),
    });
    let error = custody
        .activate_invariants(
            invariant_set(&next),
            &wrong,
            Some(proofs(&a, &next)),
            6,
            &append,
        )
        .unwrap_err();
    assert!(matches!(error, CustodyError::WrongStatement(_)), "{error}");
    let error = custody
        .activate_invariants(
            invariant_set(&next),
            &signed,
            Some(proofs(&a, &next)),
            6,
            &append,
        )
        .unwrap_err();
    assert!(matches!(error, CustodyError::WrongStatement(_)), "{error}");
    // While a policy set is active, it must be proven against the new invariants.
    let error = fixture
        .activate_invariants(&custody, &next, None, &append)
        .unwrap_err();
    assert!(matches!(error, CustodyError::NotProven(_)), "{error}");
    let error = fixture
        .activate_invariants(&custody, &next, Some(proofs(&a, &inv)), &append)
        .unwrap_err();
    assert!(matches!(error, CustodyError::NotProven(_)), "{error}");
    assert_eq!(custody.active_invariants().unwrap().hash, inv);

    fixture
        .activate_invariants(&custody, &next, Some(proofs(&a, &next)), &append)
        .unwrap();
    let reopened = fixture.open();
    let active = reopened.active_invariants().unwrap();
    assert_eq!(active.hash, next);
    assert_eq!(active.proofs, Some(proofs(&a, &next)));
    assert!(reopened.invariant_set(&inv).is_some());
    let events = log.events.lock().unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.starts_with("InvariantsActivated"))
            .count(),
        2,
        "{events:?}"
    );
}

fn a_second_gateway_on_the_same_store_takes_up_changes_on_refresh(fixture: Fixture) {
    let log = Log::new(false);
    let append = |e: Event<'_>| log.append(e);
    let first = fixture.open();
    let second = fixture.open();
    assert!(!second.refresh().unwrap(), "nothing changed yet");

    let (request, _) = first
        .create_request(
            new_request(),
            &person("alice", "usds"),
            RULES,
            1000,
            &append,
        )
        .unwrap();
    assert!(
        second.request(&request.id).is_err(),
        "not seen before a refresh"
    );
    assert!(second.refresh().unwrap());
    assert_eq!(second.request(&request.id).unwrap().id, request.id);
    assert!(!second.refresh().unwrap(), "seen once");

    // The second's own change is in its memory at once, and reaches the first on refresh.
    second
        .approve(
            &request.id,
            &person("carol", "custodian"),
            "",
            1010,
            &append,
        )
        .unwrap();
    assert!(
        !second.refresh().unwrap(),
        "its own commits are not news to it"
    );
    assert_eq!(second.request(&request.id).unwrap().approvals.len(), 1);
    assert_eq!(first.request(&request.id).unwrap().approvals.len(), 0);
    assert!(first.refresh().unwrap());
    assert_eq!(first.request(&request.id).unwrap().approvals.len(), 1);
}

/// A change checks what the store holds, not what this gateway last saw: two custodians
/// approving the same request through two gateways both count (neither approval is lost).
fn a_change_on_one_gateway_builds_on_the_latest_change_of_another(fixture: Fixture) {
    let log = Log::new(false);
    let append = |e: Event<'_>| log.append(e);
    let first = fixture.open();
    let second = fixture.open();
    let (request, _) = first
        .create_request(
            new_request(),
            &person("alice", "usds"),
            RULES,
            1000,
            &append,
        )
        .unwrap();
    first
        .approve(
            &request.id,
            &person("carol", "custodian"),
            "",
            1010,
            &append,
        )
        .unwrap();
    // The second has not refreshed: it still sees no request at all.
    assert!(second.request(&request.id).is_err());
    let (approved, _) = second
        .approve(&request.id, &person("dave", "custodian"), "", 1020, &append)
        .unwrap();
    assert_eq!(approved.approvals.len(), 2, "{approved:?}");
    assert_eq!(approved.status(1020), Status::Approved);
    assert!(first.refresh().unwrap());
    assert_eq!(first.request(&request.id).unwrap().approvals.len(), 2);
}

/// Gateways starting together on an empty store each try to activate the first invariant
/// and policy sets (as `sovereign serve` does): each set is activated, and logged, once.
fn gateways_starting_together_activate_the_first_sets_once(fixture: Fixture) {
    let log = Log::new(false);
    let (policy, inv) = ("a".repeat(64), "c".repeat(64));
    let for_inv = fixture.sign(Statement::InvariantActivation {
        invariant_set: inv.clone(),
    });
    let for_policy = fixture.sign(Statement::PolicyActivation {
        policy_set: policy.clone(),
    });
    let gateways: Vec<_> = (0..4).map(|_| fixture.open()).collect();
    std::thread::scope(|scope| {
        for custody in &gateways {
            let append = |e: Event<'_>| log.append(e);
            let (policy, inv, for_inv, for_policy) = (&policy, &inv, &for_inv, &for_policy);
            scope.spawn(move || {
                // What `sovereign serve` does on a first start, again after a conflict.
                for attempt in 0.. {
                    assert!(attempt < 50, "never got through");
                    let first_start = || -> Result<(), CustodyError> {
                        custody.refresh()?;
                        if custody.active_policy().is_some() {
                            return Ok(());
                        }
                        custody.propose_invariants(invariant_set(inv), &append)?;
                        custody.activate_invariants(
                            invariant_set(inv),
                            for_inv,
                            None,
                            3,
                            &append,
                        )?;
                        custody.propose_policy(policy_set(policy), &append)?;
                        custody.activate_policy(
                            policy,
                            for_policy,
                            proofs(policy, inv),
                            4,
                            &append,
                            |_| {},
                        )?;
                        Ok(())
                    };
                    match first_start() {
                        Ok(()) => break,
                        Err(CustodyError::Conflict) => continue,
                        Err(other) => panic!("{other}"),
                    }
                }
            });
        }
    });
    let events = log.events.lock().unwrap().clone();
    for (event, times) in [
        ("InvariantsProposed", 1),
        ("InvariantsActivated", 1),
        ("PolicyProposed", 1),
        ("PolicyActivated", 1),
    ] {
        assert_eq!(
            events.iter().filter(|e| *e == event).count(),
            times,
            "{event}: {events:?}"
        );
    }
    for custody in &gateways {
        custody.refresh().unwrap();
        assert_eq!(custody.active_policy().unwrap().hash, policy);
        assert_eq!(custody.active_invariants().unwrap().hash, inv);
    }
}

/// Artifacts are kept where every gateway reads them (files beside the SQLite store, the
/// database itself on PostgreSQL).
fn an_artifact_submitted_through_one_gateway_is_fetched_through_another(fixture: Fixture) {
    let log = Log::new(false);
    let append = |e: Event<'_>| log.append(e);
    let first = fixture.open();
    let second = fixture.open();
    let bytes = b"\0asm fake module bytes".to_vec();
    first
        .submit_algorithm(
            "ranker",
            "1.0.0",
            &bytes,
            &person("pat", "platform"),
            10,
            &append,
        )
        .unwrap();
    second.refresh().unwrap();
    let (release, fetched, _) = second.fetch_algorithm("ranker", "1.0.0", &append).unwrap();
    assert_eq!(fetched, bytes);
    assert_eq!(release.size, bytes.len() as u64);
}

/// On PostgreSQL a gateway hears another's change as it is committed, without waiting for
/// its periodic check; on SQLite there is nothing to listen to.
#[test]
fn a_listening_gateway_hears_another_ones_change_at_once() {
    let sqlite = Fixture::new();
    assert!(sqlite.open().listen_for_changes(|| {}).unwrap().is_none());

    let Some(fixture) = Fixture::postgres() else {
        return;
    };
    let log = Log::new(false);
    let append = |e: Event<'_>| log.append(e);
    let first = fixture.open();
    let second = fixture.open();
    let (heard, hear) = std::sync::mpsc::channel();
    let _listener = second
        .listen_for_changes(move || {
            let _ = heard.send(());
        })
        .unwrap()
        .unwrap();
    let started = std::time::Instant::now();
    let (request, _) = first
        .create_request(
            new_request(),
            &person("alice", "usds"),
            RULES,
            1000,
            &append,
        )
        .unwrap();
    hear.recv_timeout(std::time::Duration::from_secs(2))
        .expect("the change was not heard within 2 s");
    eprintln!("heard after {:?}", started.elapsed());
    assert!(second.refresh().unwrap());
    assert_eq!(second.request(&request.id).unwrap().id, request.id);
}

fn a_gateway_with_other_keys_than_the_first_is_refused_until_they_are_replaced(fixture: Fixture) {
    let location = fixture.location();
    let identity = |signer: &str, kek: &str| {
        std::collections::BTreeMap::from([
            ("log signer key".to_string(), signer.to_string()),
            ("keys.kek".to_string(), kek.to_string()),
        ])
    };
    let first = identity("log+1", "kek-1");
    custody::Custody::check_fleet_identity_at(&location, &first).unwrap();
    custody::Custody::check_fleet_identity_at(&location, &first).unwrap();

    let other = identity("log+2", "kek-1");
    match custody::Custody::check_fleet_identity_at(&location, &other) {
        Err(custody::CustodyError::FleetMismatch(names)) => {
            assert_eq!(names, ["log signer key"]);
        }
        other => panic!("{other:?}"),
    }
    // A key the first gateway did not have counts as different too.
    let mut more = first.clone();
    more.insert("egress.pseudonym_key".into(), "e".into());
    match custody::Custody::check_fleet_identity_at(&location, &more) {
        Err(custody::CustodyError::FleetMismatch(names)) => {
            assert_eq!(names, ["egress.pseudonym_key"]);
        }
        other => panic!("{other:?}"),
    }

    // Changed on purpose: recorded anew, after which the old keys are the odd ones.
    custody::Custody::replace_fleet_identity_at(&location, &other).unwrap();
    custody::Custody::check_fleet_identity_at(&location, &other).unwrap();
    assert!(custody::Custody::check_fleet_identity_at(&location, &first).is_err());
    // The custody state itself is untouched and still opens.
    fixture.open();
}

/// A PostgreSQL custody database restored from a backup (or an asynchronous standby
/// promoted) goes back to an older state; the next commit on it must not look, to a gateway
/// that saw the newer state, like the very version it already holds.
#[test]
fn a_gateway_notices_a_restored_store_even_after_a_new_commit() {
    let Some(fixture) = Fixture::postgres() else {
        return;
    };
    let Some((server, url)) = &fixture.postgres else {
        unreachable!("a PostgreSQL fixture");
    };
    let database = url.rsplit('/').next().unwrap();
    let mut sql = server.client(database);
    let log = Log::new(false);
    let append = |e: Event<'_>| log.append(e);
    let request = |custody: &custody::Custody, who: &str| {
        custody
            .create_request(new_request(), &person(who, "usds"), RULES, 1000, &append)
            .unwrap()
            .0
            .id
    };
    let first = fixture.open();
    let watching = fixture.open();
    let kept = request(&first, "alice");
    // The backup.
    sql.batch_execute(
        "CREATE TABLE backup_records AS SELECT * FROM custody_records;
         CREATE TABLE backup_version AS SELECT * FROM custody_version;",
    )
    .unwrap();
    let lost = request(&first, "bob");
    assert!(watching.refresh().unwrap());
    assert!(watching.request(&lost).is_ok());

    // Restored, then one commit on the restored store by a gateway that started on it.
    sql.batch_execute(
        "DELETE FROM custody_records; INSERT INTO custody_records SELECT * FROM backup_records;
         UPDATE custody_version SET version = (SELECT version FROM backup_version);",
    )
    .unwrap();
    let restarted = fixture.open();
    request(&restarted, "carol");
    assert!(watching.refresh().unwrap(), "the restored store is loaded");
    assert!(
        watching.request(&lost).is_err(),
        "what the backup lacks is gone"
    );
    assert!(watching.request(&kept).is_ok());
}
