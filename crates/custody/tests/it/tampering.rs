//! Custody state that verifies itself: someone who can write the SQLite file but holds no
//! custodian key edits it with a second connection, as `sqlite3` would, and neither
//! `refresh` nor `open` takes up what they wrote. Each edit differs from a state that verifies
//! by only what the check under test looks at, so each test fails if that check is removed.

use crate::common;

use common::*;
use custody::statement::{KillCommand, Statement};
use custody::{Custody, Event, Keys};
use serde_json::{Value, json};

const INV: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// What `populate` made through the crate's own API.
struct Made {
    /// An approved (two approvals) grant to alice, and a pending request by her.
    grant: String,
    pending: String,
    break_glass: String,
    /// The active release `ranker 1.0.0`, and a submitted one, `ranker 2.0.0`.
    released_sha256: String,
}

/// Invariants INV and policy set A in force, US suspended (serial 1), `ranker 1.0.0`
/// released and 2.0.0 submitted, one grant, one pending request and one break-glass use.
fn populate(fixture: &Fixture, custody: &Custody, log: &Log) -> Made {
    let append = |e: Event<'_>| log.append(e);
    fixture
        .activate_invariants(custody, INV, None, &append)
        .unwrap();
    activate_policy(fixture, custody, A, &append);
    suspend(fixture, custody, KillCommand::Suspend, 1, &append);
    let olga = person("olga", "custodian");
    let (release, _) = custody
        .submit_algorithm("ranker", "1.0.0", b"one", &olga, 10, &append)
        .unwrap();
    release_it(fixture, custody, "1.0.0", &release.sha256, &append);
    custody
        .submit_algorithm("ranker", "2.0.0", b"two", &olga, 11, &append)
        .unwrap();
    let alice = person("alice", "usds");
    let (grant, _) = custody
        .create_request(new_request(), &alice, RULES, 1000, &append)
        .unwrap();
    for approver in ["carol", "dave"] {
        custody
            .approve(&grant.id, &person(approver, "custodian"), "", 1010, &append)
            .unwrap();
    }
    let (pending, _) = custody
        .create_request(new_request(), &alice, RULES, 1000, &append)
        .unwrap();
    let (break_glass, _) = custody
        .break_glass(new_request(), &person("bob", "usds"), 300, 1000, &append)
        .unwrap();
    Made {
        grant: grant.id,
        pending: pending.id,
        break_glass: break_glass.id,
        released_sha256: release.sha256,
    }
}

fn activate_policy(fixture: &Fixture, custody: &Custody, hash: &str, append: custody::LogFn<'_>) {
    custody.propose_policy(policy_set(hash), append).unwrap();
    let signed = fixture.sign(Statement::PolicyActivation {
        policy_set: hash.into(),
    });
    custody
        .activate_policy(hash, &signed, proofs(hash, INV), 5, append, |_| {})
        .unwrap();
}

fn suspend(
    fixture: &Fixture,
    custody: &Custody,
    command: KillCommand,
    serial: u64,
    append: custody::LogFn<'_>,
) {
    let signed = fixture.sign(Statement::KillSwitch {
        command,
        jurisdiction: "US".into(),
        serial,
    });
    custody
        .apply_kill_switch(&signed, |j| j == "US", 20, append)
        .unwrap();
}

fn release_it(
    fixture: &Fixture,
    custody: &Custody,
    version: &str,
    sha256: &str,
    append: custody::LogFn<'_>,
) {
    let signed = fixture.sign(Statement::AlgorithmRelease {
        name: "ranker".into(),
        version: version.into(),
        sha256: sha256.into(),
        manifest: None,
    });
    custody
        .activate_algorithm("ranker", version, &signed, 12, append)
        .unwrap();
}

/// The state on file verifies again: `refresh` takes it up and `open` accepts it.
fn assert_accepted(fixture: &Fixture, custody: &Custody) {
    custody.refresh().unwrap();
    fixture.open();
}

#[test]
fn an_unsigned_policy_set_put_in_force_by_hand_is_refused() {
    let fixture = Fixture::new();
    let log = Log::new(false);
    let custody = fixture.open();
    populate(&fixture, &custody, &log);

    // Set B, e.g. A without its restricted-country forbids, made to look activated: proven
    // (proofs are not signed, so anyone can write passing ones), logged last, but unsigned.
    let mut forged = fixture.body("policy-set", A);
    forged["hash"] = json!(B);
    forged["policies"] = json!("permit(principal, action, resource);");
    forged["proofs"] = serde_json::to_value(proofs(B, INV)).unwrap();
    forged["signature"] = Value::Null;
    forged["signers"] = json!([]);
    forged["log_index"] = json!(1000);
    fixture.put("policy-set", B, &forged);
    fixture.set_meta("active-policy", B);
    fixture.assert_refused(&custody, &format!("active policy set {B}"));
    assert_eq!(custody.active_policy().unwrap().hash, A, "A stays in force");

    // A real custodian signature, but of A's activation: it does not authorise B.
    forged["signature"] = fixture.body("policy-set", A)["signature"].clone();
    fixture.put("policy-set", B, &forged);
    fixture.assert_refused(&custody, &format!("active policy set {B}"));
    assert_eq!(custody.active_policy().unwrap().hash, A);

    // Signed for B by the custodian, the same forgery verifies: only the signature was
    // missing. (The gateway checks that B's text hashes to B.)
    let signed = fixture.sign(Statement::PolicyActivation {
        policy_set: B.into(),
    });
    forged["signature"] = json!(String::from_utf8(signed).unwrap());
    fixture.put("policy-set", B, &forged);
    assert!(custody.refresh().unwrap());
    assert_eq!(custody.active_policy().unwrap().hash, B);
}

#[test]
fn an_active_policy_set_without_passing_proofs_is_refused() {
    let fixture = Fixture::new();
    let log = Log::new(false);
    let custody = fixture.open();
    populate(&fixture, &custody, &log);
    // The custodian signed B's activation, but B never passed its proofs (activation refused
    // it); someone puts it in force by hand with the real signature.
    let signed = fixture.sign(Statement::PolicyActivation {
        policy_set: B.into(),
    });
    let mut forged = fixture.body("policy-set", A);
    forged["hash"] = json!(B);
    forged["signature"] = json!(String::from_utf8(signed).unwrap());
    forged["log_index"] = json!(1000);
    fixture.set_meta("active-policy", B);
    let what = format!("active policy set {B}");

    let mut refused = |proofs: Value| {
        forged["proofs"] = proofs;
        fixture.put("policy-set", B, &forged);
        fixture.assert_refused(&custody, &what);
        assert_eq!(custody.active_policy().unwrap().hash, A);
    };
    // No proofs; A's proofs; proofs of B against other invariants; a refuted invariant.
    refused(Value::Null);
    refused(serde_json::to_value(proofs(A, INV)).unwrap());
    refused(serde_json::to_value(proofs(B, &"d".repeat(64))).unwrap());
    let mut refuted = proofs(B, INV);
    refuted.invariants[0].result = "refuted".into();
    refused(serde_json::to_value(refuted).unwrap());

    // With passing proofs of B against the invariants in force, it verifies.
    forged["proofs"] = serde_json::to_value(proofs(B, INV)).unwrap();
    fixture.put("policy-set", B, &forged);
    assert!(custody.refresh().unwrap());
    assert_eq!(custody.active_policy().unwrap().hash, B);
}

#[test]
fn going_back_to_an_older_activated_policy_set_or_to_none_is_refused() {
    let fixture = Fixture::new();
    let log = Log::new(false);
    let append = |e: Event<'_>| log.append(e);
    let custody = fixture.open();
    populate(&fixture, &custody, &log);
    activate_policy(&fixture, &custody, B, &append);

    // A is signed and proven, but B was activated after it.
    fixture.set_meta("active-policy", A);
    fixture.assert_refused(&custody, &format!("active policy set {A}"));
    assert_eq!(custody.active_policy().unwrap().hash, B);
    // Nothing in force at all, though sets were activated.
    fixture.delete_meta("active-policy");
    fixture.assert_refused(&custody, "the active policy set");
    fixture.delete_meta("active-invariants");
    fixture.assert_refused(&custody, "the active invariant set");
    assert_eq!(custody.active_policy().unwrap().hash, B);
    assert_eq!(custody.active_invariants().unwrap().hash, INV);

    fixture.set_meta("active-invariants", INV);
    fixture.set_meta("active-policy", B);
    assert_accepted(&fixture, &custody);
    // The custodian may go back, by signing A's activation again: that is the newest then.
    activate_policy(&fixture, &custody, A, &append);
    assert_accepted(&fixture, &custody);
}

#[test]
fn an_invariant_set_put_in_force_by_hand_is_refused() {
    let fixture = Fixture::new();
    let log = Log::new(false);
    let custody = fixture.open();
    populate(&fixture, &custody, &log);
    let next = "d".repeat(64);
    // Other invariants, with proofs that A keeps them, logged last, but unsigned.
    let mut forged = fixture.body("invariant-set", INV);
    forged["hash"] = json!(next);
    forged["signature"] = Value::Null;
    forged["proofs"] = serde_json::to_value(proofs(A, &next)).unwrap();
    forged["log_index"] = json!(1000);
    fixture.put("invariant-set", &next, &forged);
    fixture.set_meta("active-invariants", &next);
    fixture.assert_refused(&custody, &format!("active invariant set {next}"));
    assert_eq!(custody.active_invariants().unwrap().hash, INV);

    let signed = fixture.sign(Statement::InvariantActivation {
        invariant_set: next.clone(),
    });
    forged["signature"] = json!(String::from_utf8(signed).unwrap());
    fixture.put("invariant-set", &next, &forged);
    assert!(custody.refresh().unwrap());
    assert_eq!(custody.active_invariants().unwrap().hash, next);
}

#[test]
fn lifting_a_signed_suspension_by_hand_is_refused() {
    let fixture = Fixture::new();
    let log = Log::new(false);
    let custody = fixture.open();
    populate(&fixture, &custody, &log);
    assert!(custody.is_suspended("US"));

    let original = fixture.edit("suspension", "US", |s| s["suspended"] = json!(false));
    fixture.assert_refused(&custody, "kill switch for US");
    assert!(custody.is_suspended("US"), "still suspended");

    // The signature is of "suspend US (serial 1)": not of another serial or jurisdiction.
    fixture.put("suspension", "US", &original);
    fixture.edit("suspension", "US", |s| s["serial"] = json!(2));
    fixture.assert_refused(&custody, "kill switch for US");
    fixture.put("suspension", "US", &original);
    let mut moved = original.clone();
    moved["jurisdiction"] = json!("SG");
    fixture.put("suspension", "SG", &moved);
    fixture.assert_refused(&custody, "kill switch for SG");
    fixture.delete("suspension", "SG");
    assert_accepted(&fixture, &custody);
    assert!(custody.is_suspended("US"));
}

#[test]
fn a_record_stored_under_another_key_is_refused() {
    let fixture = Fixture::new();
    let log = Log::new(false);
    let append = |e: Event<'_>| log.append(e);
    let custody = fixture.open();
    populate(&fixture, &custody, &log);
    suspend(&fixture, &custody, KillCommand::Lift, 2, &append);
    let lifted = fixture.body("suspension", "US");
    suspend(&fixture, &custody, KillCommand::Suspend, 3, &append);
    // The signed lift, kept as a second row that is read after the suspension's and would
    // stand in for it.
    fixture.put("suspension", "ZZ", &lifted);
    fixture.assert_refused(&custody, "suspension row `ZZ`");
    assert!(custody.is_suspended("US"));
    fixture.delete("suspension", "ZZ");
    assert_accepted(&fixture, &custody);
}

/// A fresh store with alice's request (two approvals required) edited by hand into a grant.
/// Answers whether `refresh` and `open` took it, after checking that they agree.
fn forged_grant_taken(edit: impl FnOnce(&mut Value)) -> bool {
    let fixture = Fixture::new();
    let log = Log::new(false);
    let custody = fixture.open();
    let (request, _) = custody
        .create_request(new_request(), &person("alice", "usds"), RULES, 1000, &|e| {
            log.append(e)
        })
        .unwrap();
    fixture.edit("request", &request.id, |r| {
        r["starts_at"] = json!(1010);
        r["ends_at"] = json!(1610);
        edit(r);
    });
    let covered = |custody: &Custody| {
        custody
            .find_grant("alice", "read", "u-1", Some("activity"), 1100)
            .is_some()
    };
    match custody.refresh() {
        Ok(_) => {
            assert!(covered(&custody));
            assert!(covered(&fixture.open()));
            true
        }
        Err(error) => {
            assert_unverified(&error, &format!("access request {}", request.id));
            assert!(!covered(&custody), "find_grant does not return it");
            fixture.assert_refused(&custody, &request.id);
            false
        }
    }
}

fn approval(by: &str, entity: &str) -> Value {
    json!({"by": by, "entity": entity, "at": 1010, "comment": ""})
}

#[test]
fn a_grant_forged_by_hand_is_refused() {
    // Approved by the requester herself, by someone of her own entity, by one approver twice,
    // or by fewer than required.
    let two =
        |first: Value, second: Value| move |r: &mut Value| r["approvals"] = json!([first, second]);
    assert!(!forged_grant_taken(two(
        approval("alice", "custodian"),
        approval("carol", "custodian")
    )));
    assert!(!forged_grant_taken(two(
        approval("bob", "usds"),
        approval("carol", "custodian")
    )));
    assert!(!forged_grant_taken(two(
        approval("carol", "custodian"),
        approval("carol", "custodian")
    )));
    assert!(!forged_grant_taken(|r| {
        r["approvals"] = json!([approval("carol", "custodian")])
    }));
    // The threshold lowered to none, or the grant made longer than asked.
    assert!(!forged_grant_taken(|r| r["approvals_required"] = json!(0)));
    assert!(!forged_grant_taken(|r| {
        r["approvals"] = json!([
            approval("carol", "custodian"),
            approval("dave", "custodian")
        ]);
        r["ends_at"] = json!(99_999);
    }));
    // Two independent approvers, as `approve` would have recorded them, is a grant here:
    // approvers are names, not signatures, so invented ones are for the log to show (the
    // gateway compares the record with the event at its log index).
    assert!(forged_grant_taken(|r| {
        r["approvals"] = json!([
            approval("carol", "custodian"),
            approval("dave", "custodian")
        ])
    }));
}

#[test]
fn an_active_release_edited_by_hand_is_refused() {
    let fixture = Fixture::new();
    let log = Log::new(false);
    let append = |e: Event<'_>| log.append(e);
    let custody = fixture.open();
    let made = populate(&fixture, &custody, &log);

    // Another digest (another artifact) under the signed release.
    let original = fixture.edit("release", "ranker/1.0.0", |r| {
        r["sha256"] = json!("0".repeat(64))
    });
    fixture.assert_refused(&custody, "release ranker 1.0.0");
    assert_eq!(
        custody.release("ranker", "1.0.0").unwrap().sha256,
        made.released_sha256
    );
    fixture.put("release", "ranker/1.0.0", &original);
    assert_accepted(&fixture, &custody);

    // A submitted release made active by hand.
    let submitted = fixture.edit("release", "ranker/2.0.0", |r| r["activated_at"] = json!(30));
    fixture.assert_refused(&custody, "release ranker 2.0.0");
    assert_eq!(
        custody.release("ranker", "2.0.0").unwrap().status(),
        "submitted"
    );
    fixture.put("release", "ranker/2.0.0", &submitted);
    assert_accepted(&fixture, &custody);

    // Released properly, 2.0.0 retires 1.0.0; bringing 1.0.0 back makes two active versions.
    let two = custody.release("ranker", "2.0.0").unwrap();
    release_it(&fixture, &custody, "2.0.0", &two.sha256, &append);
    assert_accepted(&fixture, &custody);
    fixture.edit("release", "ranker/1.0.0", |r| r["retired_at"] = Value::Null);
    fixture.assert_refused(&custody, "release ranker");
    assert_eq!(custody.active_releases().len(), 1);
}

#[test]
fn a_record_without_its_log_index_is_refused() {
    let fixture = Fixture::new();
    let log = Log::new(false);
    let custody = fixture.open();
    let made = populate(&fixture, &custody, &log);
    // Each kind, in force or not: the crate writes an index on every record.
    let rows = [
        ("policy-set", A.to_string(), format!("policy set {A}")),
        ("invariant-set", INV.into(), format!("invariant set {INV}")),
        ("suspension", "US".into(), "kill switch for US".into()),
        (
            "release",
            "ranker/1.0.0".into(),
            "release ranker 1.0.0".into(),
        ),
        (
            "release",
            "ranker/2.0.0".into(),
            "release ranker 2.0.0".into(),
        ),
        ("request", made.grant.clone(), made.grant.clone()),
        ("request", made.pending.clone(), made.pending.clone()),
        (
            "request",
            made.break_glass.clone(),
            made.break_glass.clone(),
        ),
    ];
    for (kind, id, what) in rows {
        let original = fixture.edit(kind, &id, |r| {
            r.as_object_mut().unwrap().remove("log_index");
        });
        fixture.assert_refused(&custody, &what);
        fixture.put(kind, &id, &original);
        assert_accepted(&fixture, &custody);
    }
}

#[test]
fn every_record_written_carries_its_events_log_index() {
    let fixture = Fixture::new();
    let log = Log::new(false);
    let append = |e: Event<'_>| log.append(e);
    let custody = fixture.open();
    let olga = person("olga", "custodian");
    let (set, index) = custody.propose_policy(policy_set(A), &append).unwrap();
    assert_eq!(set.log_index, index);
    let signed = fixture.sign(Statement::InvariantActivation {
        invariant_set: INV.into(),
    });
    let (set, index) = custody
        .activate_invariants(invariant_set(INV), &signed, None, 3, &append)
        .unwrap();
    assert_eq!(set.log_index, Some(index));
    let signed = fixture.sign(Statement::PolicyActivation {
        policy_set: A.into(),
    });
    let mut in_then = None;
    let (set, index) = custody
        .activate_policy(A, &signed, proofs(A, INV), 5, &append, |s| {
            in_then = s.log_index
        })
        .unwrap();
    assert_eq!((set.log_index, in_then), (Some(index), Some(index)));
    let (one, _) = custody
        .submit_algorithm("ranker", "1.0.0", b"one", &olga, 10, &append)
        .unwrap();
    release_it(&fixture, &custody, "1.0.0", &one.sha256, &append);
    let (two, _) = custody
        .submit_algorithm("ranker", "2.0.0", b"two", &olga, 11, &append)
        .unwrap();
    let signed = fixture.sign(Statement::AlgorithmRelease {
        name: "ranker".into(),
        version: "2.0.0".into(),
        sha256: two.sha256.clone(),
        manifest: None,
    });
    let (two, index) = custody
        .activate_algorithm("ranker", "2.0.0", &signed, 12, &append)
        .unwrap();
    assert_eq!(two.log_index, Some(index));
    assert_eq!(
        custody.release("ranker", "1.0.0").unwrap().log_index,
        Some(index),
        "the retired version was written by the same change"
    );
    let signed = fixture.sign(Statement::KillSwitch {
        command: KillCommand::Suspend,
        jurisdiction: "US".into(),
        serial: 1,
    });
    let (suspension, index) = custody
        .apply_kill_switch(&signed, |_| true, 20, &append)
        .unwrap();
    assert_eq!(suspension.log_index, Some(index));
    let (request, created) = custody
        .create_request(
            new_request(),
            &person("alice", "usds"),
            RULES,
            1000,
            &append,
        )
        .unwrap();
    assert_eq!(request.log_index, Some(created));
    let (request, approved) = custody
        .approve(&request.id, &olga, "", 1010, &append)
        .unwrap();
    assert_eq!(request.log_index, Some(approved));
    assert_ne!(created, approved);

    // Memory and file agree.
    let reopened = fixture.open();
    assert_eq!(reopened.requests(), custody.requests());
    assert_eq!(reopened.releases(), custody.releases());
    assert_eq!(reopened.suspensions(), custody.suspensions());
    assert_eq!(reopened.policy_sets(), custody.policy_sets());
    assert_eq!(reopened.invariant_sets(), custody.invariant_sets());
}

#[test]
fn a_change_by_a_second_custody_on_the_same_file_is_taken_up() {
    let fixture = Fixture::new();
    let log = Log::new(false);
    let first = fixture.open();
    let second = fixture.open();
    let made = populate(&fixture, &second, &log);

    assert!(first.refresh().unwrap());
    assert_eq!(first.active_policy(), second.active_policy());
    assert_eq!(first.active_invariants(), second.active_invariants());
    assert!(first.is_suspended("US"));
    assert_eq!(first.active_releases(), second.active_releases());
    let grant = first
        .find_grant("alice", "read", "u-1", Some("activity"), 1100)
        .unwrap();
    assert_eq!(grant.id, made.grant);
    assert_eq!(grant, second.request(&made.grant).unwrap());
    assert!(!first.refresh().unwrap(), "taken up once");
}

#[test]
fn a_refused_state_keeps_the_last_verified_one_and_refuses_changes_until_repaired() {
    let fixture = Fixture::new();
    let log = Log::new(false);
    let append = |e: Event<'_>| log.append(e);
    let custody = fixture.open();
    populate(&fixture, &custody, &log);
    let original = fixture.edit("suspension", "US", |s| s["suspended"] = json!(false));
    fixture.assert_refused(&custody, "kill switch for US");
    assert!(
        custody.is_suspended("US"),
        "the state verified last stays in force"
    );
    // A change would be checked against state older than the store's, and could undo a
    // later change another gateway made: refused, and nothing is logged.
    let logged = log.events.lock().unwrap().len();
    let signed = fixture.sign(Statement::KillSwitch {
        command: KillCommand::Lift,
        jurisdiction: "US".into(),
        serial: 2,
    });
    let error = custody
        .apply_kill_switch(&signed, |j| j == "US", 20, &append)
        .unwrap_err();
    assert_unverified(&error, "kill switch for US");
    assert_eq!(log.events.lock().unwrap().len(), logged);
    // Repaired by hand (or restored): taken up once, and changes are accepted again.
    fixture.put("suspension", "US", &original);
    assert!(custody.refresh().unwrap());
    assert!(!custody.refresh().unwrap());
    suspend(&fixture, &custody, KillCommand::Lift, 2, &append);
    assert!(!custody.is_suspended("US"));
    fixture.open();
}

#[test]
fn statements_signed_by_fewer_keys_than_configured_are_refused_on_open() {
    let fixture = Fixture::new();
    let log = Log::new(false);
    populate(&fixture, &fixture.open(), &log);
    let (_, other) = tlog::note::generate_key("custodian-2").unwrap();
    let two_keys = |policy: usize, release: usize, kill_switch: usize| Keys {
        verifiers: vec![
            fixture.verifier.clone(),
            tlog::note::Verifier::new(&other).unwrap(),
        ],
        policy_threshold: policy,
        release_threshold: release,
        kill_switch_threshold: kill_switch,
    };
    fixture.try_open_with(two_keys(1, 1, 1)).unwrap();
    let refused = |keys: Keys, what: &str| match fixture.try_open_with(keys) {
        Err(error) => assert_unverified(&error, what),
        Ok(_) => panic!("opened with too few signatures on {what}"),
    };
    refused(two_keys(2, 1, 1), "active invariant set");
    refused(two_keys(1, 2, 1), "release ranker 1.0.0");
    refused(two_keys(1, 1, 2), "kill switch for US");
}
