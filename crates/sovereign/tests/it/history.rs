//! A data subject's own history in the log, through the binary against a real gateway:
//! `sovereign subject accesses` lists exactly the entries a monitor finds for the subject's
//! pseudonym in the public log; `sovereign subject verify` catches an entry left out (with
//! the mirror) and an entry altered (offline); nobody else gets a subject's history; and the
//! answer carries no value and no other subject.

use std::collections::BTreeSet;
use std::path::Path;

use reqwest::Method;
use serde_json::Value;
use testkit::cast::{DATA_SUBJECT, USDS_TRAVELLING_CN, VETTED_US};

use crate::support::{Fresh, data_subject_token, governed, s, serve, sovereign, text, token_of};

const OTHER_SUBJECT: &str = "u-2002";
const SECRET_OWN: &str = "secret-1001@example.com";
const SECRET_OTHER: &str = "secret-2002@example.com";

/// The traffic the history must show: registration, a write, reads allowed and denied
/// (with the restricted-country alert), and the other subject's own traffic beside it. The
/// log indexes the answers about the data subject named.
fn traffic(base: &str, data: &Path) -> Vec<u64> {
    let http = reqwest::blocking::Client::new();
    let staff = token_of(data, &VETTED_US);
    let travelling = token_of(data, &USDS_TRAVELLING_CN);
    let mut answered = Vec::new();
    for (subject, secret) in [
        (DATA_SUBJECT.sub, SECRET_OWN),
        (OTHER_SUBJECT, SECRET_OTHER),
    ] {
        let url = format!("{base}/v1/subjects/{subject}");
        let body = r#"{"jurisdiction":"US"}"#;
        let record = format!(r#"{{"email":"{secret}","display_name":"Someone"}}"#);
        let record_url = format!("{url}/records/profile/main");
        let requests = [
            (Method::PUT, &url, "", Some(body), 201),
            (
                Method::PUT,
                &record_url,
                "support",
                Some(record.as_str()),
                200,
            ),
            (Method::GET, &record_url, "support", None, 200),
        ];
        for (method, url, purpose, body, expected) in requests {
            let (status, index) = governed(&http, method, url, &staff, purpose, body);
            assert_eq!(status, expected, "{url}");
            if subject == DATA_SUBJECT.sub {
                answered.push(index.unwrap());
            }
        }
    }
    let url = format!(
        "{base}/v1/subjects/{}/records/profile/main",
        DATA_SUBJECT.sub
    );
    let (status, index) = governed(&http, Method::GET, &url, &travelling, "support", None);
    assert_eq!(status, 403);
    answered.push(index.unwrap());
    answered
}

fn log_key(data: &Path) -> String {
    let output = sovereign()
        .args(["audit", "key", "--data", s(data)])
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// Waits (`audit verify --wait`) until a checkpoint covers every entry the log holds, so a
/// history shows all the traffic so far.
fn wait_for_checkpoint(base: &str, key: &str) {
    let output = sovereign()
        .args(["audit", "verify", "--url", base, "--key", key, "--wait"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output).1);
}

/// `subject accesses ID --all --limit 2 --json --out FILE` as `token`: the history written.
fn fetch_history(base: &str, token: &str, out: &Path) -> Value {
    let output = sovereign()
        .args([
            "subject",
            "accesses",
            DATA_SUBJECT.sub,
            "--all",
            "--limit",
            "2",
        ])
        .args(["--json", "--url", base, "--token", token, "--out", s(out)])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    let written: Value = serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap();
    assert_eq!(printed, written);
    written
}

fn verify(file: &Path, key: &str, mirror: Option<&str>) -> (Option<i32>, String, String) {
    let mut command = sovereign();
    command.args(["subject", "verify", s(file), "--key", key]);
    if let Some(mirror) = mirror {
        command.args(["--mirror", mirror]);
    }
    let output = command.output().unwrap();
    let (out, err) = text(&output);
    (output.status.code(), out, err)
}

/// The indexes of every entry `audit search --subject` finds for `pseudonym` in the whole
/// verified log.
fn monitor_finds(base: &str, key: &str, pseudonym: &str) -> BTreeSet<u64> {
    let output = sovereign()
        .args(["audit", "search", "--url", base, "--key", key])
        .args(["--subject", pseudonym, "--limit", "100000", "--json"])
        .output()
        .unwrap();
    let (out, err) = text(&output);
    assert!(output.status.success(), "{err}");
    out.lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["index"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

fn listed(history: &Value) -> Vec<u64> {
    history["pages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["entries"].as_array().unwrap())
        .map(|e| e["index"].as_u64().unwrap())
        .collect()
}

fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_vec(value).unwrap()).unwrap();
}

#[test]
fn a_subjects_history_is_complete_proven_and_theirs_alone() {
    let fresh = Fresh::start();
    let (base, data, work) = (&fresh.server.base, &fresh.data, &fresh.work);
    let answered = traffic(base, data);
    let key = log_key(data);
    let own = token_of(data, &DATA_SUBJECT);

    // Wait until a checkpoint covers the traffic, so the history shows all of it.
    wait_for_checkpoint(base, &key);

    let file = work.join("history.json");
    let history = fetch_history(base, &own, &file);
    let pages = history["pages"].as_array().unwrap();
    assert!(pages.len() >= 3, "two entries a page: {history}");
    let first = &pages[0];
    let pseudonym = first["pseudonym"].as_str().unwrap().to_string();
    let size = first["size"].as_u64().unwrap();
    let indexes = listed(&history);
    assert!(
        indexes.windows(2).all(|w| w[0] > w[1]),
        "newest first: {indexes:?}"
    );
    assert_eq!(indexes.len() as u64, first["total"].as_u64().unwrap());

    // Exactly the entries a monitor finds for the pseudonym in the public log, below the
    // history's checkpoint.
    let found: BTreeSet<u64> = monitor_finds(base, &key, &pseudonym)
        .into_iter()
        .filter(|i| *i < size)
        .collect();
    assert_eq!(indexes.iter().copied().collect::<BTreeSet<_>>(), found);
    // And every answer about the subject named an entry the history lists.
    for index in &answered {
        assert!(indexes.contains(index), "answered as {index}: {indexes:?}");
    }

    // What it shows: the write and the reads, by entity, location and role, not by name;
    // the denied read from a restricted country and its alert.
    let entries: Vec<&Value> = pages
        .iter()
        .flat_map(|p| p["entries"].as_array().unwrap())
        .collect();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in ["register", "write", "read", "restricted-country-access"] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    let denied = entries
        .iter()
        .find(|e| e["action"] == "read" && e["outcome"] == "deny")
        .expect("the denied read");
    assert_eq!(denied["accessor"]["location"], "CN");
    assert_eq!(denied["accessor"]["entity"], "usds");
    assert!(denied["accessor"].get("id").is_none(), "{denied}");
    assert_eq!(denied["purpose"], "support");
    assert_eq!(denied["collections"], serde_json::json!(["profile"]));
    assert_eq!(
        denied["field_classes"],
        serde_json::json!(["interoperable", "protected"])
    );

    // No value, no raw id, nothing of the other subject.
    let other = data_subject_token(data, OTHER_SUBJECT);
    let other_history = work.join("other.json");
    let output = sovereign()
        .args([
            "subject",
            "accesses",
            OTHER_SUBJECT,
            "--json",
            "--url",
            base,
        ])
        .args(["--token", &other, "--out", s(&other_history)])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output).1);
    let other_pseudonym = serde_json::from_slice::<Value>(&std::fs::read(&other_history).unwrap())
        .unwrap()["pseudonym"]
        .as_str()
        .unwrap()
        .to_string();
    let answer = std::fs::read_to_string(&file).unwrap();
    for absent in [
        SECRET_OWN,
        SECRET_OTHER,
        OTHER_SUBJECT,
        DATA_SUBJECT.sub,
        &other_pseudonym,
    ] {
        assert!(!answer.contains(absent), "{absent} is in the history");
    }

    // The whole check: proofs, what is shown, and the mirror (here the gateway's own public
    // log, verified whole by the command).
    let (code, out, err) = verify(&file, &key, Some(base));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("complete"), "{out}");
    let (code, out, _) = verify(&file, &key, None);
    assert_eq!(code, Some(0));
    assert!(out.contains("completeness not checked"), "{out}");
    // With the pseudonym the subject knew already, and with another.
    let mut command = sovereign();
    command.args(["subject", "verify", s(&file), "--key", &key, "--pseudonym"]);
    assert!(command.arg(&pseudonym).output().unwrap().status.success());
    let output = sovereign()
        .args(["subject", "verify", s(&file), "--key", &key])
        .args(["--pseudonym", &"0".repeat(32)])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).1.contains("not of yours"),
        "{}",
        text(&output).1
    );

    // A history started further back (`--before`) covers what it lists, and no more.
    let older = work.join("older.json");
    let middle = indexes[indexes.len() / 2];
    let output = sovereign()
        .args(["subject", "accesses", DATA_SUBJECT.sub, "--before"])
        .arg(middle.to_string())
        .args(["--url", base, "--token", &own, "--out", s(&older)])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output).1);
    let (code, out, err) = verify(&older, &key, Some(base));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&format!("..{middle}")), "{out}");

    // An entry left out, the count adjusted to match: only the mirror can tell, and does.
    let mut removed = history.clone();
    let page = &mut removed["pages"][1];
    let gone = page["entries"][0]["index"].as_u64().unwrap();
    page["entries"].as_array_mut().unwrap().remove(0);
    let total = removed["pages"][0]["total"].as_u64().unwrap();
    removed["pages"][0]["total"] = (total - 1).into();
    let removed_file = work.join("removed.json");
    write_json(&removed_file, &removed);
    let (code, out, err) = verify(&removed_file, &key, Some(base));
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("left out 1 entry") && err.contains(&format!("index {gone}")),
        "{err}"
    );
    // Without its count adjusted, the history contradicts itself even offline.
    removed["pages"][0]["total"] = total.into();
    write_json(&removed_file, &removed);
    let (code, _, err) = verify(&removed_file, &key, None);
    assert_eq!(code, Some(1), "{err}");

    // An entry shown otherwise than logged, and an entry altered with it: caught offline.
    let allowed = |h: &Value| {
        h["pages"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .flat_map(|(p, page)| {
                page["entries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .enumerate()
                    .map(move |(e, entry)| (p, e, entry.clone()))
            })
            .find(|(_, _, e)| e["action"] == "read" && e["outcome"] == "allow")
            .map(|(p, e, _)| (p, e))
            .unwrap()
    };
    let (p, e) = allowed(&history);
    let mut altered = history.clone();
    altered["pages"][p]["entries"][e]["outcome"] = "deny".into();
    let altered_file = work.join("altered.json");
    write_json(&altered_file, &altered);
    let (code, _, err) = verify(&altered_file, &key, None);
    assert_eq!(code, Some(1));
    assert!(err.contains("not shown as logged"), "{err}");
    let raw = altered["pages"][p]["entries"][e]["entry"]
        .as_str()
        .unwrap()
        .to_string();
    altered["pages"][p]["entries"][e]["entry"] = raw
        .replace(r#""outcome":"allow""#, r#""outcome":"deny""#)
        .into();
    write_json(&altered_file, &altered);
    let (code, _, err) = verify(&altered_file, &key, None);
    assert_eq!(code, Some(1));
    assert!(err.contains("not in the log at that index"), "{err}");

    // Nobody else: another subject, vetted staff, a bad page size. Each refusal is logged.
    let http = reqwest::blocking::Client::new();
    let url = format!("{base}/v1/subjects/{}/accesses", DATA_SUBJECT.sub);
    for who in [other, token_of(data, &VETTED_US)] {
        let (status, index) = governed(&http, Method::GET, &url, &who, "", None);
        assert_eq!(status, 403);
        assert!(index.is_some(), "the refusal is logged");
    }
    for query in ["?limit=0", "?limit=1001", "?before=x", "?page=2"] {
        let (status, _) = governed(&http, Method::GET, &format!("{url}{query}"), &own, "", None);
        assert_eq!(status, 400, "{query}");
    }

    // The export carries the history.
    let export: Value = http
        .get(format!("{base}/v1/subjects/{}/export", DATA_SUBJECT.sub))
        .bearer_auth(&own)
        .header("Sovereign-Purpose", "portability")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(export["accesses"]["pseudonym"], pseudonym.as_str());
    assert!(export["accesses"]["entries"].as_array().unwrap().len() >= indexes.len());
}

/// The index is the log's, not a record of its own: deleted while the gateway is down, it is
/// built again from the log and answers the same.
#[test]
fn the_subject_index_is_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = serve(&data, "warn,sovereign=info");
    server.drain();
    traffic(&server.base, &data);
    let key = log_key(&data);
    let own = token_of(&data, &DATA_SUBJECT);
    let before = dir.path().join("before.json");
    wait_for_checkpoint(&server.base, &key);
    let first = listed(&fetch_history(&server.base, &own, &before));
    server.signal("KILL");
    let _ = server.child.wait();
    std::fs::remove_file(data.join("log/subject-index.sqlite")).unwrap();

    let mut server = serve(&data, "warn,sovereign=info");
    server.drain();
    let after = dir.path().join("after.json");
    let again = listed(&fetch_history(&server.base, &own, &after));
    // The restart and the first history request were logged since: the same entries, and
    // the newer ones above them.
    assert!(again.len() > first.len(), "{again:?} {first:?}");
    assert_eq!(again[again.len() - first.len()..], first[..]);
    let (code, out, err) = verify(&after, &key, Some(&server.base));
    assert_eq!(code, Some(0), "{out}{err}");
}

/// An id erased and registered again names another person: their history starts after the
/// erasure, and the check holds the gateway to that start.
#[test]
fn an_id_registered_again_after_erasure_has_a_history_of_its_own() {
    let fresh = Fresh::start();
    let (base, data, work) = (&fresh.server.base, &fresh.data, &fresh.work);
    let before_erasure = traffic(base, data);
    let http = reqwest::blocking::Client::new();
    let frank = token_of(data, &testkit::cast::BREAK_GLASS);
    let grant = serde_json::json!({"action": "delete", "subjects": [DATA_SUBJECT.sub],
        "purpose": "erasure request 12", "reason_code": "data-subject-request"});
    let response = http
        .post(format!("{base}/v1/access/break-glass"))
        .bearer_auth(&frank)
        .json(&grant)
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    let url = format!("{base}/v1/subjects/{}", DATA_SUBJECT.sub);
    let (status, _) = governed(
        &http,
        Method::DELETE,
        &url,
        &frank,
        "erasure request 12",
        None,
    );
    assert_eq!(status, 200);
    let staff = token_of(data, &VETTED_US);
    let body = r#"{"jurisdiction":"US"}"#;
    let (status, registered) = governed(&http, Method::PUT, &url, &staff, "", Some(body));
    assert_eq!(status, 201);
    let key = log_key(data);
    wait_for_checkpoint(base, &key);

    let file = work.join("history.json");
    let history = fetch_history(base, &token_of(data, &DATA_SUBJECT), &file);
    let since = history["pages"][0]["since"].as_u64().unwrap();
    assert!(since > *before_erasure.iter().max().unwrap(), "{history}");
    let indexes = listed(&history);
    assert!(indexes.contains(&registered.unwrap()), "{indexes:?}");
    assert!(indexes.iter().all(|i| *i >= since), "{indexes:?}");
    let (code, out, err) = verify(&file, &key, Some(base));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("after the subject's erasure"), "{out}");

    // A gateway that moved the start back would show the erased subject's history: the
    // mirror finds the erasure it hid.
    let mut moved = history.clone();
    for page in moved["pages"].as_array_mut().unwrap() {
        page["since"] = 0.into();
    }
    let moved_file = work.join("moved.json");
    write_json(&moved_file, &moved);
    let (code, _, err) = verify(&moved_file, &key, Some(base));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("last erasure"), "{err}");
}
