//! `sovereign audit replay`, with the binary: a static log of v2 entries decided by the
//! default policy set replays clean; the same log with one forged decision (parent staff in
//! CN reading a US subject's protected fields, logged as allowed) is caught at exactly that
//! entry; a policy set whose text does not match its hash is refused; and, end to end, the
//! log of a real gateway after the reference scenario replays clean. Also the entry format
//! v2 as `check_entry` reads it.

use crate::support::{INCIDENT, s, text};
use std::path::Path;
use std::process::Output;
use testkit::cast::{
    BREAK_GLASS, DATA_SUBJECT, EGRESS_CN, MONITOR, OPERATOR, PARENT_CN, PARENT_SG,
    USDS_TRAVELLING_CN, VETTED_US, Who,
};
use testkit::served::log_key;

use monitor::check_entry;
use policy::PolicyEngine;
use serde_json::{Value, json};
use testkit::static_log::{Key, new_key, publish};
use testkit::v2_log::{
    access_entry, alert_entry, config_entry, custody_entry, forge_allowed, invariants_entry,
    scenario,
};
use testkit::{static_log, v2_log};

/// Index in [`log`] of the read by parent staff located in CN (scenario step 3).
const CHEN_READ: u64 = 5 + 3;
/// Decisions and access entries of the v2 part of [`log`].
const DECISIONS: u64 = 12;
const ACCESS_ENTRIES: u64 = 7;

fn engine() -> PolicyEngine {
    let (schema, policies) = v2_log::default_set();
    PolicyEngine::new(&schema, &policies).unwrap()
}

/// A config entry, two custody entries (the invariants, then the policy set with its
/// proofs), an alert entry, one v1 access entry, then the reference scenario's decisions in
/// format v2; the read at [`CHEN_READ`] forged if asked.
fn log(forge: bool) -> Vec<Vec<u8>> {
    to_bytes(&entries(forge))
}

fn entries(forge: bool) -> Vec<Value> {
    let engine = engine();
    let hash = engine.policy_set_hash().to_string();
    let mut entries = vec![
        config_entry(&hash),
        invariants_entry(),
        custody_entry(&hash),
        alert_entry(),
        static_log::entry(1),
    ];
    for (i, access) in scenario().iter().enumerate() {
        entries.push(access_entry(&engine, i as u64, access));
    }
    if forge {
        let chen = &mut entries[CHEN_READ as usize];
        assert_eq!(chen["principal"]["id"], "chen");
        assert_eq!(chen["outcome"], "deny", "the honest decision is a denial");
        forge_allowed(chen);
    }
    entries
}

fn to_bytes(entries: &[Value]) -> Vec<Vec<u8>> {
    entries
        .iter()
        .map(|e| serde_json::to_vec(e).unwrap())
        .collect()
}

/// Publishes `entries` as a static log in `dir/log` and the default policy set in
/// `dir/v1/policies`, the layout a mirror of the gateway has.
fn mirror(dir: &Path, entries: &[Vec<u8>]) -> Key {
    let key = new_key();
    publish(&dir.join("log"), &key, entries);
    let (schema, policies) = v2_log::default_set();
    v2_log::write_policy_set(&dir.join("v1/policies"), &schema, &policies);
    key
}

fn replay(args: &[&str]) -> Output {
    crate::support::sovereign()
        .args(["audit", "replay"])
        .args(args)
        .output()
        .unwrap()
}

// ---------------------------------------------------------------------------
// Static logs

#[test]
fn an_honest_log_replays_clean() {
    let dir = tempfile::tempdir().unwrap();
    let key = mirror(dir.path(), &log(false));
    let output = replay(&[
        "--url",
        s(&dir.path().join("log")),
        "--key",
        &key.vkey,
        "--policies",
        s(&dir.path().join("v1/policies")),
    ]);
    let (out, err) = text(&output);
    assert!(output.status.success(), "{out}\n{err}");
    assert!(out.starts_with("audit replay: OK\n"), "{out}");
    assert!(out.contains("mismatches: 0\n"), "{out}");
    assert!(
        out.contains(&format!(
            "replayed:   {DECISIONS} decisions of {ACCESS_ENTRIES} access entries, under 1 policy set\n"
        )),
        "{out}"
    );
    assert!(out.contains("not replayable: 1 v1 access entries"), "{out}");
    assert!(
        out.contains("entries:    access 8, alert 1, config 1, custody 2\n"),
        "{out}"
    );

    assert!(
        out.contains("activations: 1 policy set, 1 invariant set; 0 without passing proofs\n"),
        "{out}"
    );

    // Without --policies, a log at .../log finds its policy sets at .../v1/policies.
    let output = replay(&["--url", s(&dir.path().join("log")), "--key", &key.vkey]);
    let (out, err) = text(&output);
    assert!(output.status.success(), "{out}\n{err}");
    assert!(out.contains("mismatches: 0\n"), "{out}");

    let output = replay(&[
        "--url",
        s(&dir.path().join("log")),
        "--key",
        &key.vkey,
        "--json",
    ]);
    let (out, err) = text(&output);
    assert!(output.status.success(), "{out}\n{err}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["ok"], true);
    assert_eq!(answer["replayed_decisions"], DECISIONS);
    assert_eq!(answer["replayed_entries"], ACCESS_ENTRIES);
    assert_eq!(answer["mismatches"]["count"], 0);
    assert_eq!(answer["activations"]["policy_set"], 1);
    assert_eq!(answer["v1_access_entries"], 1);
    assert_eq!(answer["kinds"]["access"], 8);
}

#[test]
fn activations_without_passing_proofs_are_reported() {
    let hash = engine().policy_set_hash().to_string();
    // The policy-activated entry is at index 2; the invariants-activated one at 1.
    type Change = fn(&mut Vec<Value>);
    let cases: Vec<(Change, &str)> = vec![
        (
            |e| {
                e[2]["details"].as_object_mut().unwrap().remove("proofs");
            },
            "entry 2: policy set HASH activated without passing proofs: the entry has no proofs",
        ),
        (
            |e| e[2]["details"]["proofs"]["invariants"][1]["result"] = json!("refuted"),
            "not proven: monitors-never-touch-user-data: refuted",
        ),
        (
            |e| e[2]["details"]["proofs"]["never_errors"][0]["result"] = json!("may_error"),
            "not proven: forbid-restricted-location: may_error",
        ),
        (
            |e| e[2]["details"]["proofs"]["invariant_set"] = json!("2b".repeat(32)),
            "against invariant set 2b2b",
        ),
        (
            |e| {
                e.remove(1);
            },
            "entry 1: policy set HASH activated without passing proofs: no invariant set was activated before it",
        ),
    ];
    for (change, wanted) in cases {
        let mut entries = entries(false);
        change(&mut entries);
        let dir = tempfile::tempdir().unwrap();
        let key = mirror(dir.path(), &to_bytes(&entries));
        let output = replay(&["--url", s(&dir.path().join("log")), "--key", &key.vkey]);
        let (out, err) = text(&output);
        assert!(!output.status.success(), "{wanted}: {out}");
        assert!(out.starts_with("audit replay: FAILED\n"), "{out}");
        let wanted = wanted.replace("HASH", &hash);
        assert!(out.contains(&wanted), "{wanted}\n{out}");
        assert!(err.contains("1 activation without passing proofs"), "{err}");
        assert!(
            out.contains("mismatches: 0\n"),
            "decisions still replay: {out}"
        );
    }
}

/// `--prove` proves every activation again: a log whose activation entry claims passing
/// proofs for a set that does not keep the invariants is caught, with the counterexample.
#[test]
fn prove_catches_an_activation_whose_logged_proofs_do_not_hold() {
    if !crate::support::cvc5_present() {
        return;
    }
    let (schema, policies) = v2_log::default_set();
    let restricted: Vec<String> = ["CN", "RU", "IR", "KP"].map(String::from).to_vec();
    let invariants_text = prove::default_invariants(&restricted);
    let invariant_set = prove::Invariants::parse_with_schema(&schema, &invariants_text)
        .unwrap()
        .hash()
        .to_string();
    let start = policies
        .find("@id(\"forbid-restricted-location\")")
        .unwrap();
    let end = start + policies[start..].find("};").unwrap() + 2;
    let mutant = format!("{}{}", &policies[..start], &policies[end..]);

    let dir = tempfile::tempdir().unwrap();
    let honest = v2_log::write_policy_set(&dir.path().join("v1/policies"), &schema, &policies);
    let lying = v2_log::write_policy_set(&dir.path().join("v1/policies"), &schema, &mutant);
    let invariants_dir = dir.path().join("v1/invariants");
    std::fs::create_dir_all(&invariants_dir).unwrap();
    std::fs::write(
        invariants_dir.join(&invariant_set),
        serde_json::to_vec(&json!({"hash": invariant_set, "text": invariants_text})).unwrap(),
    )
    .unwrap();

    let with_real_invariants = |mut entry: Value| {
        if entry["event"] == "invariants-activated" {
            entry["details"]["invariant_set"] = json!(invariant_set);
        } else {
            entry["details"]["invariant_set"] = json!(invariant_set);
            entry["details"]["proofs"]["invariant_set"] = json!(invariant_set);
        }
        entry
    };
    let mut entries = vec![
        with_real_invariants(invariants_entry()),
        with_real_invariants(custody_entry(&honest)),
    ];
    let key = new_key();
    publish(&dir.path().join("log"), &key, &to_bytes(&entries));
    let args = |dir: &Path| {
        vec![
            "--url".to_string(),
            dir.join("log").to_str().unwrap().to_string(),
            "--key".to_string(),
            key.vkey.clone(),
            "--prove".to_string(),
        ]
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        replay(&args)
    };
    let output = run(args(dir.path()));
    let (out, err) = text(&output);
    assert!(output.status.success(), "{out}\n{err}");
    assert!(
        out.contains("reproved:   1 of 1 (policy set, invariant set) pairs"),
        "{out}"
    );

    // The same log with one more activation, of the mutant, claiming passing proofs.
    entries.push(with_real_invariants(custody_entry(&lying)));
    let lying_dir = tempfile::tempdir().unwrap();
    copy_dir(&dir.path().join("v1"), &lying_dir.path().join("v1"));
    publish(&lying_dir.path().join("log"), &key, &to_bytes(&entries));
    let output = run(args(lying_dir.path()));
    let (out, err) = text(&output);
    assert!(!output.status.success(), "{out}");
    assert!(
        out.contains(&format!(
            "entry 2: policy set {lying} does not prove against invariant set {invariant_set} here, though the log says it did"
        )),
        "{out}"
    );
    assert!(out.contains("REFUTED"), "{out}");
    assert!(
        out.contains("reproved:   1 of 2 (policy set, invariant set) pairs"),
        "{out}"
    );
    assert!(err.contains("1 activation without passing proofs"), "{err}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

#[test]
fn a_forged_decision_is_reported_at_its_entry() {
    let dir = tempfile::tempdir().unwrap();
    let key = mirror(dir.path(), &log(true));
    let output = replay(&[
        "--url",
        s(&dir.path().join("log")),
        "--key",
        &key.vkey,
        "--policies",
        s(&dir.path().join("v1/policies")),
    ]);
    let (out, err) = text(&output);
    assert!(
        !output.status.success(),
        "a forged log replayed clean:\n{out}"
    );
    assert!(out.starts_with("audit replay: FAILED\n"), "{out}");
    let mismatches: Vec<&str> = out.lines().filter(|l| l.starts_with("mismatch:")).collect();
    assert_eq!(mismatches.len(), 1, "{out}");
    let line = mismatches[0];
    assert!(
        line.starts_with(&format!("mismatch:   entry {CHEN_READ}: read of collection profile of a US subject by chen (parent, located CN)")),
        "{line}"
    );
    // What was recorded, what the policy gives, and which policies say so.
    assert!(
        line.contains("protected: recorded allowed, the policy set denies by"),
        "{line}"
    );
    assert!(line.contains("forbid-restricted-location"), "{line}");
    assert!(
        line.contains("outcome: recorded allow, the decisions give deny"),
        "{line}"
    );
    assert!(out.contains("mismatches: 1\n"), "{out}");
    assert!(
        err.contains(
            "audit replay: FAILED: 1 access entry does not match the policy set that decided them"
        ),
        "{err}"
    );
    // A failed check: exit status 1, and with --json the same findings as one object.
    assert_eq!(output.status.code(), Some(1), "{err}");
    let output = replay(&[
        "--url",
        s(&dir.path().join("log")),
        "--key",
        &key.vkey,
        "--policies",
        s(&dir.path().join("v1/policies")),
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["ok"], false);
    assert_eq!(answer["mismatches"]["count"], 1);
    assert_eq!(
        answer["mismatches"]["first"][0],
        line.trim_start_matches("mismatch:").trim()
    );
    assert_eq!(
        answer["verdict"],
        "1 access entry does not match the policy set that decided them"
    );
}

/// The right outcome for the wrong reason: a denial recorded as decided by a policy that
/// did not decide it is a mismatch too.
#[test]
fn a_decision_credited_to_the_wrong_policy_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut entries = log(false);
    let mut chen: serde_json::Value = serde_json::from_slice(&entries[CHEN_READ as usize]).unwrap();
    for d in chen["decisions"].as_array_mut().unwrap() {
        d["policies"] = serde_json::json!(["forbid-monitor-user-data"]);
    }
    entries[CHEN_READ as usize] = serde_json::to_vec(&chen).unwrap();
    let key = mirror(dir.path(), &entries);
    let output = replay(&["--url", s(&dir.path().join("log")), "--key", &key.vkey]);
    let (out, _) = text(&output);
    assert!(!output.status.success(), "{out}");
    assert!(
        out.contains("recorded as decided by [forbid-monitor-user-data], the policy set denies by"),
        "{out}"
    );
    assert!(out.contains("mismatches: 1\n"), "{out}");
}

#[test]
fn a_policy_set_that_does_not_match_its_hash_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = mirror(dir.path(), &log(false));
    let (schema, policies) = v2_log::default_set();
    let hash = policy::policy_set_hash(&schema, &policies);
    let url = dir.path().join("log");

    // A permissive policy set served under the hash of the real one.
    let lax = "@id(\"permit-all\")\npermit(principal, action, resource);\n";
    let body = json!({"hash": hash, "schema": schema, "policies": lax});
    let tampered = dir.path().join("tampered");
    std::fs::create_dir_all(&tampered).unwrap();
    std::fs::write(tampered.join(&hash), body.to_string()).unwrap();
    let output = replay(&[
        "--url",
        s(&url),
        "--key",
        &key.vkey,
        "--policies",
        s(&tampered),
    ]);
    let (out, err) = text(&output);
    assert!(!output.status.success(), "{out}");
    let want = format!(
        "policy set: {hash} ({}): its schema and policies hash to {}, not {hash}",
        tampered.join(&hash).display(),
        policy::policy_set_hash(&schema, lax)
    );
    assert!(out.contains(&want), "{out}\nwant {want}");
    assert!(
        out.contains("its 7 access entries were not replayed"),
        "{out}"
    );
    assert!(
        err.contains("audit replay: FAILED: 1 policy set could not be used"),
        "{err}"
    );

    // A missing policy set is refused too, and so is a log with nowhere to find them.
    let empty = tempfile::tempdir().unwrap();
    let output = replay(&[
        "--url",
        s(&url),
        "--key",
        &key.vkey,
        "--policies",
        &format!("file://{}", s(empty.path())),
    ]);
    let (out, _) = text(&output);
    assert!(!output.status.success(), "{out}");
    assert!(out.contains(&format!("policy set: {hash} (")), "{out}");
    let elsewhere = tempfile::tempdir().unwrap();
    publish(elsewhere.path(), &key, &log(false));
    let output = replay(&["--url", s(elsewhere.path()), "--key", &key.vkey]);
    let (_, err) = text(&output);
    assert!(!output.status.success());
    assert!(err.contains("give --policies"), "{err}");
}

#[test]
fn replay_verifies_the_log_first() {
    let dir = tempfile::tempdir().unwrap();
    let _key = mirror(dir.path(), &log(false));
    let other = new_key();
    let output = replay(&["--url", s(&dir.path().join("log")), "--key", &other.vkey]);
    let (out, err) = text(&output);
    assert!(!output.status.success(), "{out}");
    assert!(err.starts_with("error: audit replay: FAILED: "), "{err}");
    assert!(!out.contains("replayed:"), "{out}");
}

// ---------------------------------------------------------------------------
// Entry format v2

#[test]
fn entry_format_v2_is_checked() {
    let engine = engine();
    let hash = engine.policy_set_hash().to_string();
    let access = access_entry(&engine, 0, &scenario()[2]);
    let ok = |v: &Value| check_entry(&serde_json::to_vec(v).unwrap());
    for (entry, kind) in [
        (&access, "access"),
        (&config_entry(&hash), "config"),
        (&custody_entry(&hash), "custody"),
        (&alert_entry(), "alert"),
    ] {
        let info = ok(entry).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!((info.version, info.kind), (2, kind));
    }
    let mut granted = access.clone();
    granted["grant"] = json!({"id": "ar-1", "kind": "break-glass"});
    assert!(ok(&granted).is_ok());
    // Other custody events carry any details.
    // The first activation has no previous policy set.
    let mut first = custody_entry(&hash);
    first["details"]["previous"] = Value::Null;
    assert!(ok(&first).is_ok());
    let mut other = custody_entry(&hash);
    other["event"] = json!("access-request-created");
    other["details"] = json!({"request": "ar-1"});
    other["actor"] = Value::Null;
    assert!(ok(&other).is_ok());
    // A v1 access entry does not need the v2 members.
    let mut v1 = access.clone();
    v1["v"] = json!(1);
    for name in [
        "site_jurisdiction",
        "approval_required",
        "suspended",
        "context_time",
        "grant",
    ] {
        v1.as_object_mut().unwrap().remove(name);
    }
    assert_eq!(ok(&v1).unwrap().version, 1);

    type Change = fn(&mut Value);
    let custody = custody_entry(&hash);
    let alert = alert_entry();
    let cases: Vec<(&Value, Change, &str)> = vec![
        (
            &access,
            |v| v["v"] = json!(3),
            "member \"v\" must be the number 1 or 2, not the number 3",
        ),
        (
            &access,
            |v| {
                v.as_object_mut().unwrap().remove("site_jurisdiction");
            },
            "member \"site_jurisdiction\" is missing",
        ),
        (
            &access,
            |v| v["suspended"] = json!("no"),
            "member \"suspended\" must be true or false, not \"no\"",
        ),
        (
            &access,
            |v| v["approval_required"] = Value::Null,
            "member \"approval_required\" must be true or false, not null",
        ),
        (
            &access,
            |v| v["context_time"] = json!(1.5),
            "member \"context_time\" must be a whole number, not the number 1.5",
        ),
        (
            &access,
            |v| v["grant"] = json!("approved"),
            "member \"grant\" must be an object, not \"approved\"",
        ),
        (
            &access,
            |v| v["grant"] = json!({"id": "ar-1", "kind": "sudo"}),
            "member \"grant.kind\" must be one of approved|break-glass|release, not \"sudo\"",
        ),
        (
            &access,
            |v| v["grant"] = json!({"kind": "approved"}),
            "member \"grant.id\" is missing",
        ),
        (
            &custody,
            |v| v["v"] = json!(1),
            "kind \"custody\" exists from format v2 on",
        ),
        (
            &custody,
            |v| v["event"] = json!("policy-ignored"),
            "member \"event\" must be one of access-request-created|",
        ),
        (
            &custody,
            |v| v["actor"] = json!({"id": "olga"}),
            "member \"actor.entity\" is missing",
        ),
        (
            &custody,
            |v| {
                v["details"].as_object_mut().unwrap().remove("previous");
            },
            "member \"details.previous\" is missing",
        ),
        (
            &custody,
            |v| v["details"]["signers"] = json!([1]),
            "member \"details.signers[0]\" must be a string, not the number 1",
        ),
        (
            &custody,
            |v| v["details"] = json!([]),
            "member \"details\" must be an object, not an array",
        ),
        (
            &alert,
            |v| v["severity"] = json!("low"),
            "member \"severity\" must be one of high|medium, not \"low\"",
        ),
        (
            &alert,
            |v| {
                v.as_object_mut().unwrap().remove("alert");
            },
            "member \"alert\" is missing",
        ),
        (
            &alert,
            |v| v["v"] = json!(1),
            "kind \"alert\" exists from format v2 on",
        ),
    ];
    for (base, change, want) in cases {
        let mut v = base.clone();
        change(&mut v);
        let got = ok(&v).expect_err(&format!("accepted {v}"));
        assert!(got.contains(want), "got {got:?}, want {want:?}");
    }
}

// ---------------------------------------------------------------------------
// End to end

/// The reference scenario against a real gateway, then `audit replay` of its log.
#[test]
fn the_log_of_a_real_gateway_replays_clean() {
    let crate::support::Fresh {
        dir: _dir,
        data,
        work,
        server,
    } = crate::support::Fresh::start();
    let base = server.base.clone();
    let http = reqwest::blocking::Client::new();
    let token = |who: &Who| crate::support::token_of(&data, who);
    let alice = token(&VETTED_US);
    let chen = token(&PARENT_CN);
    let bob = token(&USDS_TRAVELLING_CN);
    let siew = token(&PARENT_SG);

    let record = format!("{base}/v1/subjects/u-1001/records/profile/main");
    // Every answer here names its log entry.
    let call =
        |method: reqwest::Method, url: &str, who: &str, purpose: &str, body: Option<&str>| {
            let (status, index) = crate::support::governed(&http, method, url, who, purpose, body);
            (status, index.unwrap())
        };
    use reqwest::Method;
    let (status, _) = call(
        Method::PUT,
        &format!("{base}/v1/subjects/u-1001"),
        &alice,
        "",
        Some(r#"{"jurisdiction":"US"}"#),
    );
    assert_eq!(status, 201);
    let (status, _) = call(
        Method::PUT,
        &record,
        &alice,
        "account setup",
        Some(r#"{"email":"ada@example.com","phone":"+1 555 0100","display_name":"Ada"}"#),
    );
    assert!((200..300).contains(&status), "{status}");
    // Vetted US staff read (allowed), parent staff in CN (denied), usds staff
    // travelling in CN (denied), parent staff in SG (partial).
    assert_eq!(
        call(Method::GET, &record, &alice, "support ticket 42", None).0,
        200
    );
    assert_eq!(call(Method::GET, &record, &chen, "debug", None).0, 403);
    assert_eq!(call(Method::GET, &record, &bob, "on call", None).0, 403);
    let (status, _) = call(Method::GET, &record, &siew, "", None);
    assert_eq!(status, 200);
    // Every other route is decided and logged too, and replays: egress to a consumer in CN
    // (US denied, the others allowed), a read of an id that names no subject, the subject's
    // own export, the residency scan.
    let globe = token(&EGRESS_CN);
    let ada = token(&DATA_SUBJECT);
    let mona = token(&MONITOR);
    let egress = format!("{base}/v1/egress/profile");
    assert_eq!(call(Method::GET, &egress, &globe, "", None).0, 200);
    let nobody = format!("{base}/v1/subjects/nobody/records/profile/main");
    assert_eq!(call(Method::GET, &nobody, &chen, "debug", None).0, 403);
    let export = format!("{base}/v1/subjects/u-1001/export");
    assert_eq!(call(Method::GET, &export, &ada, "my own copy", None).0, 200);
    let scan = format!("{base}/v1/residency/scan");
    assert_eq!(call(Method::GET, &scan, &mona, "", None).0, 200);

    // The custodian's controls leave their marks on decisions too: a write under a
    // break-glass grant, a read while the kill switch suspends US, and a read under a
    // second policy set.
    let cli = |args: &[&str]| {
        let output = crate::support::sovereign()
            .args(args)
            .args(["--url", &base])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "sovereign {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let frank = token(&BREAK_GLASS);
    let olga = token(&OPERATOR);
    cli(&[
        &[
            "access",
            "break-glass",
            "--token",
            &frank,
            "--action",
            "write",
        ][..],
        &INCIDENT,
    ]
    .concat());
    let activity = format!("{base}/v1/subjects/u-1001/records/activity/main");
    let granted = Some(r#"{"watch_history":"v1"}"#);
    assert_eq!(
        call(Method::PUT, &activity, &frank, "incident 7", granted).0,
        200
    );
    let key = data.join("keys/custodian.key");
    let key = key.to_str().unwrap();
    cli(&[
        "kill-switch",
        "suspend",
        "US",
        "--key",
        key,
        "--token",
        &olga,
    ]);
    assert_eq!(call(Method::GET, &record, &alice, "support", None).0, 403);
    cli(&["kill-switch", "lift", "US", "--key", key, "--token", &olga]);
    let new_set = work.join("new.cedar");
    let mut policies = std::fs::read_to_string(data.join("policy/policies.cedar")).unwrap();
    policies.push_str("\n@id(\"permit-custodian-list\")\npermit (principal, action == Sovereign::Action::\"list\", resource is Sovereign::Subject) when { principal.entity == \"custodian\" };\n");
    std::fs::write(&new_set, policies).unwrap();
    let proposal = cli(&[
        "policy",
        "propose",
        new_set.to_str().unwrap(),
        "--token",
        &olga,
    ]);
    let hash = proposal.split_whitespace().nth(3).unwrap().to_string();
    let signature = work.join("activate.sig");
    cli(&[
        "policy",
        "sign",
        &hash,
        "--key",
        key,
        "--out",
        signature.to_str().unwrap(),
    ]);
    cli(&[
        "policy",
        "activate",
        &hash,
        "--signature",
        signature.to_str().unwrap(),
        "--token",
        &olga,
    ]);
    let (status, last) = call(Method::GET, &record, &alice, "support", None);
    assert_eq!(status, 200);

    crate::support::wait_for_checkpoint(&base, last + 1);
    let vkey = log_key(&base);
    let output = replay(&["--url", &format!("{base}/log"), "--key", vkey.trim()]);
    let (out, err) = text(&output);
    assert!(output.status.success(), "{out}\n{err}");
    assert!(out.starts_with("audit replay: OK\n"), "{out}");
    assert!(out.contains("mismatches: 0\n"), "{out}");
    // register 1, write 2 (both classes written), 4 reads of 2 classes each; egress 3 (one
    // per jurisdiction), the unknown id 4 (2 jurisdictions with a residency rule, 2 classes),
    // the export 6 (3 entries, one per collection: 2, 2 and 1 classes, and its history
    // decision), the scan 3; then a granted write of 1 class and 2 more reads of 2, the last
    // under the second set.
    assert!(
        out.contains("replayed:   32 decisions of 16 access entries, under 2 policy sets\n"),
        "{out}"
    );
    assert!(!out.contains("not replayable"), "{out}");
}
