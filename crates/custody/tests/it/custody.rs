//! The custody store on its own: changes survive a reopen, a change the log refuses is not
//! committed, and the rules hold without the gateway around them.

use crate::common;

use common::*;
use custody::statement::Statement;
use custody::{CustodyError, Event, Status};

#[test]
fn approvals_survive_a_reopen_and_grants_follow_the_clock() {
    let fixture = Fixture::new();
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

#[test]
fn a_change_the_log_refuses_is_not_committed() {
    let fixture = Fixture::new();
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

#[test]
fn pending_requests_expire_and_decided_ones_stay_decided() {
    let fixture = Fixture::new();
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

#[test]
fn a_policy_activation_must_name_the_set_and_persists() {
    let fixture = Fixture::new();
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

#[test]
fn a_policy_set_is_activated_only_with_passing_proofs_against_the_active_invariants() {
    let fixture = Fixture::new();
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

#[test]
fn new_invariants_need_a_signature_and_proofs_of_the_active_policy_set() {
    let fixture = Fixture::new();
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

#[test]
fn a_second_gateway_on_the_same_store_takes_up_changes_on_refresh() {
    let fixture = Fixture::new();
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
