//! `sovereign audit` as a monitor uses it: against a static log built here with
//! the `tlog` crate (a directory, a file:// URL and a small HTTP server), with
//! every kind of tampering a monitor must catch.
//!
//! The commands run as a monitor runs them, with the binary; the entry format is checked
//! with the `monitor` crate directly.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::support::sovereign;
use monitor::check_entry;
use serde_json::{Value, json};
use testkit::static_log::{Key, ORIGIN, entries, entry, new_key, outcome_of, publish, write_file};
use tlog::checkpoint::{Checkpoint, open_checkpoint};
use tlog::note::generate_key;

const SIZE: u64 = 600;

// ---------------------------------------------------------------------------
// Building logs

fn flip_byte(path: &Path, offset: usize) {
    let mut data = std::fs::read(path).unwrap();
    data[offset] ^= 0x01;
    std::fs::write(path, data).unwrap();
}

/// The byte offset of entry `k`'s data within a bundle.
fn entry_offset(bundle: &[u8], k: usize) -> usize {
    let mut off = 0;
    for _ in 0..k {
        off += 2 + usize::from(u16::from_be_bytes([bundle[off], bundle[off + 1]]));
    }
    off + 2
}

// ---------------------------------------------------------------------------
// Running the tool

/// Runs `sovereign audit ARGS...`: its report, or its error message (`{e:#}`, as `main`
/// prints it after `error: `).
fn audit(args: &[&str]) -> Result<String, String> {
    let output = sovereign().arg("audit").args(args).output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    if output.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8(output.stderr).unwrap();
    match stderr.find("error: ") {
        Some(at) => Err(stderr[at + "error: ".len()..].trim_end().to_string()),
        None => panic!("audit {args:?} failed without an error message:\n{stderr}"),
    }
}

fn verify(url: &str, key: &str, state: Option<&Path>) -> Result<String, String> {
    let mut args = vec!["verify", "--url", url, "--key", key];
    if let Some(state) = state {
        args.extend(["--state", state.to_str().unwrap()]);
    }
    audit(&args)
}

fn verify_err(url: &str, key: &str, state: Option<&Path>) -> String {
    match verify(url, key, state) {
        Ok(out) => panic!("verify of {url} passed:\n{out}"),
        Err(e) => {
            assert!(e.starts_with("audit verify: FAILED: "), "{e}");
            e
        }
    }
}

fn prove(url: &str, index: u64, out: &Path, key: Option<&str>) -> Result<String, String> {
    let index = index.to_string();
    let mut args = vec!["prove", "--url", url, "--index", &index];
    args.extend(["--out", out.to_str().unwrap()]);
    if let Some(key) = key {
        args.extend(["--key", key]);
    }
    audit(&args)
}

fn check_proof(file: &Path, key: &str, entry: Option<&Path>) -> Result<String, String> {
    let mut args = vec!["check-proof", file.to_str().unwrap(), "--key", key];
    if let Some(entry) = entry {
        args.extend(["--entry", entry.to_str().unwrap()]);
    }
    audit(&args)
}

fn url_of(dir: &Path) -> String {
    dir.to_str().unwrap().to_string()
}

/// A directory holding the standard test log of [`SIZE`] entries.
fn standard_log() -> (tempfile::TempDir, Key, Checkpoint) {
    let dir = tempfile::tempdir().unwrap();
    let key = new_key();
    let cp = publish(dir.path(), &key, &entries(SIZE));
    (dir, key, cp)
}

// ---------------------------------------------------------------------------
// audit key

#[test]
fn key_prints_the_verifier_key_of_the_data_folders_signer() {
    let data = tempfile::tempdir().unwrap();
    let (skey, vkey) = generate_key("sovereign.test/log").unwrap();
    write_file(
        data.path(),
        "keys/log-signer.key",
        format!("{skey}\n").as_bytes(),
    );
    let data_arg = data.path().to_str().unwrap();
    let out = audit(&["key", "--data", data_arg]).unwrap();
    assert_eq!(out, format!("{vkey}\n"));

    let empty = tempfile::tempdir().unwrap();
    let empty_arg = empty.path().to_str().unwrap();
    let err = audit(&["key", "--data", empty_arg]).unwrap_err();
    assert!(err.contains("keys/log-signer.key"), "{err}");
    assert!(err.contains("sovereign init"), "{err}");

    write_file(empty.path(), "keys/log-signer.key", vkey.as_bytes());
    let err = audit(&["key", "--data", empty_arg]).unwrap_err();
    assert!(
        err.contains("does not hold a signed-note signer key"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// audit verify

#[test]
fn verify_accepts_a_valid_log_and_keeps_its_checkpoint() {
    let (dir, key, cp) = standard_log();
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("monitor.state");
    let url = url_of(dir.path());

    let out = verify(&url, &key.vkey, Some(&state)).unwrap();
    assert!(out.starts_with("audit verify: OK\n"), "{out}");
    assert!(out.contains(&format!("origin:     {ORIGIN}\n")), "{out}");
    assert!(out.contains("size:       600 entries\n"), "{out}");
    assert!(
        out.contains(&format!("root hash:  {}\n", tlog::hash_to_base64(&cp.hash))),
        "{out}"
    );
    assert!(out.contains("trusted on first use"), "{out}");
    // Counts by kind and, for access, by outcome.
    let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
    let mut outcomes: BTreeMap<&str, u64> = BTreeMap::new();
    for i in 0..SIZE {
        if i.is_multiple_of(10) {
            *kinds.entry("config").or_default() += 1;
        } else {
            *kinds.entry("access").or_default() += 1;
            *outcomes.entry(outcome_of(i)).or_default() += 1;
        }
    }
    let access_line = format!(
        "  access   {:>10}  (allow {}, deny {}, partial {})\n",
        kinds["access"], outcomes["allow"], outcomes["deny"], outcomes["partial"]
    );
    assert!(out.contains(&access_line), "{out}\nwant {access_line}");
    assert!(
        out.contains(&format!("  config   {:>10}\n", kinds["config"])),
        "{out}"
    );

    // The state is the signed checkpoint, written atomically (no temp file left).
    let saved = std::fs::read(&state).unwrap();
    assert_eq!(saved, std::fs::read(dir.path().join("checkpoint")).unwrap());
    let verifier = key.signer.verifier();
    assert_eq!(open_checkpoint(&saved, &verifier).unwrap(), cp);
    let names: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("monitor.state")]);

    // Again with the state: consistent.
    let out = verify(&url, &key.vkey, Some(&state)).unwrap();
    assert!(
        out.contains("consistent with the checkpoint of 600 entries"),
        "{out}"
    );

    // The log grows consistently: accepted, and the state moves on.
    let mut grown = entries(SIZE);
    grown.extend((SIZE..SIZE + 100).map(|i| serde_json::to_vec(&entry(i)).unwrap()));
    let grown_dir = tempfile::tempdir().unwrap();
    let grown_cp = publish(grown_dir.path(), &key, &grown);
    let out = verify(&url_of(grown_dir.path()), &key.vkey, Some(&state)).unwrap();
    assert!(out.contains("size:       700 entries\n"), "{out}");
    let saved = std::fs::read(&state).unwrap();
    assert_eq!(open_checkpoint(&saved, &verifier).unwrap(), grown_cp);

    // file:// URLs, the key from a file, and no state at all.
    let key_file = work.path().join("log.vkey");
    std::fs::write(&key_file, format!("{}\n", key.vkey)).unwrap();
    let file_url = format!("file://{}", dir.path().display());
    let out = verify(&file_url, &format!("@{}", key_file.display()), None).unwrap();
    assert!(out.contains("size:       600 entries\n"), "{out}");
    assert!(out.contains("history:    not checked"), "{out}");
}

#[test]
fn verify_accepts_an_empty_log() {
    let dir = tempfile::tempdir().unwrap();
    let key = new_key();
    publish(dir.path(), &key, &[]);
    let out = verify(&url_of(dir.path()), &key.vkey, None).unwrap();
    assert!(out.contains("size:       0 entries\n"), "{out}");
    assert!(out.contains("  (none)\n"), "{out}");
}

#[test]
fn verify_rejects_a_flipped_byte_in_an_entry_bundle() {
    let (dir, key, _) = standard_log();
    let bundle = dir.path().join("tile/entries/001");
    let data = std::fs::read(&bundle).unwrap();
    // Entry 300 is the 45th of the second bundle.
    flip_byte(&bundle, entry_offset(&data, 44) + 20);
    let e = verify_err(&url_of(dir.path()), &key.vkey, None);
    assert!(
        e.contains("entry 300 (in tile/entries/001) hashes to"),
        "{e}"
    );
    assert!(e.contains("but tile/0/001 has"), "{e}");
}

#[test]
fn verify_rejects_a_flipped_byte_in_a_hash_tile() {
    // A leaf hash in a level-0 tile.
    let (dir, key, _) = standard_log();
    flip_byte(&dir.path().join("tile/0/001"), 44 * 32 + 5);
    let e = verify_err(&url_of(dir.path()), &key.vkey, None);
    assert!(e.contains("entry 300 (in tile/entries/001)"), "{e}");
    assert!(e.contains("tile/0/001 has"), "{e}");

    // A subtree hash in the level-1 tile.
    let (dir, key, _) = standard_log();
    flip_byte(&dir.path().join("tile/1/000.p/2"), 32 + 7);
    let e = verify_err(&url_of(dir.path()), &key.vkey, None);
    assert!(
        e.contains("tile/1/000.p/2: hash 1 is") && e.contains("entries 256..=511 hash to"),
        "{e}"
    );

    // A tile that was cut short.
    let (dir, key, _) = standard_log();
    let path = dir.path().join("tile/0/002.p/88");
    let data = std::fs::read(&path).unwrap();
    std::fs::write(&path, &data[..data.len() - 1]).unwrap();
    let e = verify_err(&url_of(dir.path()), &key.vkey, None);
    assert!(
        e.contains("tile/0/002.p/88 is 2815 bytes, want 2816"),
        "{e}"
    );

    // And a tile that is not there at all.
    let (dir, key, _) = standard_log();
    std::fs::remove_file(dir.path().join("tile/0/000")).unwrap();
    let e = verify_err(&url_of(dir.path()), &key.vkey, None);
    assert!(e.contains("tile/0/000 is not served by the log"), "{e}");
}

#[test]
fn verify_rejects_a_truncated_log() {
    let (dir, key, _) = standard_log();
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    verify(&url_of(dir.path()), &key.vkey, Some(&state)).unwrap();
    let kept = std::fs::read(&state).unwrap();

    // The operator drops the last 100 entries and signs a smaller checkpoint.
    let smaller = tempfile::tempdir().unwrap();
    publish(smaller.path(), &key, &entries(SIZE - 100));
    // On its own, that log is fine...
    verify(&url_of(smaller.path()), &key.vkey, None).unwrap();
    // ...but not for a monitor that saw 600 entries.
    let e = verify_err(&url_of(smaller.path()), &key.vkey, Some(&state));
    assert!(e.contains("the log shrank from 600 to 500 entries"), "{e}");
    // A failed run keeps the old state.
    assert_eq!(std::fs::read(&state).unwrap(), kept);
}

#[test]
fn verify_rejects_a_fork() {
    let (dir, key, _) = standard_log();
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    verify(&url_of(dir.path()), &key.vkey, Some(&state)).unwrap();
    let kept = std::fs::read(&state).unwrap();

    // Another history, signed by the same key for the same origin: entry 10 rewritten.
    let mut rewritten = entries(SIZE + 100);
    let mut e10 = entry(10);
    e10["version"] = json!("0.0.9-patched");
    rewritten[10] = serde_json::to_vec(&e10).unwrap();

    // Same size.
    let same = tempfile::tempdir().unwrap();
    publish(same.path(), &key, &rewritten[..SIZE as usize]);
    verify(&url_of(same.path()), &key.vkey, None).unwrap();
    let e = verify_err(&url_of(same.path()), &key.vkey, Some(&state));
    assert!(
        e.contains("the log forked: its first 600 entries now hash to"),
        "{e}"
    );

    // Larger: the first 600 entries must still hash to the kept root.
    let larger = tempfile::tempdir().unwrap();
    publish(larger.path(), &key, &rewritten);
    verify(&url_of(larger.path()), &key.vkey, None).unwrap();
    let e = verify_err(&url_of(larger.path()), &key.vkey, Some(&state));
    assert!(
        e.contains("the log forked: its first 600 entries now hash to"),
        "{e}"
    );
    assert_eq!(std::fs::read(&state).unwrap(), kept);
}

#[test]
fn verify_rejects_checkpoints_and_state_of_other_keys() {
    let (dir, key, _) = standard_log();
    let other = new_key();
    let e = verify_err(&url_of(dir.path()), &other.vkey, None);
    assert!(e.contains("checkpoint signature"), "{e}");

    // A state file kept for another log key.
    let other_dir = tempfile::tempdir().unwrap();
    publish(other_dir.path(), &other, &entries(10));
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    verify(&url_of(other_dir.path()), &other.vkey, Some(&state)).unwrap();
    let e = verify_err(&url_of(dir.path()), &key.vkey, Some(&state));
    assert!(e.contains("is not signed by this key"), "{e}");

    // A state file that is not a note at all.
    std::fs::write(&state, b"garbage").unwrap();
    let e = verify_err(&url_of(dir.path()), &key.vkey, Some(&state));
    assert!(e.contains("does not hold a signed checkpoint"), "{e}");

    // Keys that are not verifier keys.
    let e = verify_err(&url_of(dir.path()), "not-a-key", None);
    assert!(e.contains("not a signed-note verifier key"), "{e}");
    let e = verify_err(&url_of(dir.path()), &key.signer.to_skey(), None);
    assert!(e.contains("private signer key"), "{e}");
    // And logs that are not there.
    let e = verify_err("/nonexistent/sovereign-log", &key.vkey, None);
    assert!(e.contains("is not a directory"), "{e}");
    let e = verify_err("ftp://example.com/log", &key.vkey, None);
    assert!(e.contains("unsupported URL scheme"), "{e}");
}

#[test]
fn verify_rejects_an_entry_that_is_not_a_valid_v1_entry() {
    let key = new_key();
    let mut log = entries(SIZE);
    let mut bad = entry(123);
    assert_eq!(bad["kind"], "access");
    bad.as_object_mut().unwrap().remove("outcome");
    log[123] = serde_json::to_vec(&bad).unwrap();
    let dir = tempfile::tempdir().unwrap();
    publish(dir.path(), &key, &log);
    let e = verify_err(&url_of(dir.path()), &key.vkey, None);
    assert!(
        e.ends_with("entry 123: member \"outcome\" is missing"),
        "{e}"
    );

    // An entry that is not JSON at all, late in the log.
    let mut log = entries(SIZE);
    log[599] = b"allow everything".to_vec();
    let dir = tempfile::tempdir().unwrap();
    publish(dir.path(), &key, &log);
    let e = verify_err(&url_of(dir.path()), &key.vkey, None);
    assert!(e.contains("entry 599: not a single JSON object"), "{e}");
}

/// Entries are checked on several threads, a batch each; the first bad entry in the log is
/// the one named, whichever thread finds a bad one first, and the counts cover every entry.
#[test]
fn the_first_bad_entry_is_named_though_entries_are_checked_in_parallel() {
    let key = new_key();
    // Several checking batches (1024 entries each, round-robin to the threads): a bad entry
    // in the second batch and a later one in the third, which another thread checks.
    let size = 5000u64;
    let mut log = entries(size);
    log[2500] = b"allow everything".to_vec();
    log[1500] = b"{}".to_vec();
    let dir = tempfile::tempdir().unwrap();
    publish(dir.path(), &key, &log);
    let e = verify_err(&url_of(dir.path()), &key.vkey, None);
    assert!(e.contains("entry 1500: "), "{e}");

    // All good: every entry is counted once.
    let dir = tempfile::tempdir().unwrap();
    publish(dir.path(), &key, &entries(size));
    let out = verify(&url_of(dir.path()), &key.vkey, None).unwrap();
    let counted: u64 = out
        .lines()
        .skip_while(|l| *l != "entries by kind:")
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    assert_eq!(counted, size, "{out}");
}

#[test]
fn entry_format_v1_is_checked_strictly() {
    let access = entry(1);
    let config = entry(0);
    let ok = |v: &Value| check_entry(&serde_json::to_vec(v).unwrap());
    assert_eq!(ok(&access).unwrap().kind, "access");
    assert_eq!(ok(&access).unwrap().outcome, Some(outcome_of(1)));
    assert_eq!(ok(&config).unwrap().kind, "config");
    assert_eq!(ok(&config).unwrap().outcome, None);

    // (entry, change, expected message fragment)
    type Change = fn(&mut Value);
    let cases: Vec<(&Value, Change, &str)> = vec![
        (
            &access,
            |v| v["v"] = json!(3),
            "member \"v\" must be the number 1 or 2, not the number 3",
        ),
        (
            // A v2 access entry needs the members replay reads.
            &access,
            |v| v["v"] = json!(2),
            "member \"site_jurisdiction\" is missing",
        ),
        (
            &access,
            |v| v["v"] = json!("1"),
            "member \"v\" must be the number 1 or 2, not \"1\"",
        ),
        (
            &access,
            |v| v["kind"] = json!("telemetry"),
            "unknown kind \"telemetry\"",
        ),
        (
            &access,
            |v| v["kind"] = json!(3),
            "member \"kind\" must be a string",
        ),
        (
            &access,
            |v| v["time"] = json!("2026-11-22T00:16:08Z"),
            "member \"time\" must be an RFC 3339",
        ),
        (
            &access,
            |v| v["time"] = json!("2026-11-22T00:16:08.439+01:00"),
            "member \"time\"",
        ),
        (
            &access,
            |v| v["time"] = json!("2026-02-30T00:16:08.439Z"),
            "member \"time\"",
        ),
        (
            &access,
            |v| v["time"] = json!("2026-11-22 00:16:08.439Z"),
            "member \"time\"",
        ),
        (
            &access,
            |v| v["principal"] = json!("alice"),
            "member \"principal\" must be an object, not \"alice\"",
        ),
        (
            &access,
            |v| v["principal"]["location"] = json!("us"),
            "member \"principal.location\" must be 2 upper-case letters, not \"us\"",
        ),
        (
            &access,
            |v| v["principal"]["location"] = json!("USA"),
            "member \"principal.location\"",
        ),
        (
            &access,
            |v| {
                v["principal"].as_object_mut().unwrap().remove("entity");
            },
            "member \"principal.entity\" is missing",
        ),
        (
            &access,
            |v| v["principal"]["clearance"] = json!(["a", 1]),
            "member \"principal.clearance[1]\" must be a string, not the number 1",
        ),
        (
            &access,
            |v| v["principal"]["roles"] = json!("admin"),
            "member \"principal.roles\" must be an array",
        ),
        (
            &access,
            |v| v["action"] = json!("exfiltrate"),
            "member \"action\" must be one of register|list|read|write|delete|export|egress|scan|migrate|run|compute|history, not \"exfiltrate\"",
        ),
        (
            &access,
            |v| v["subject"] = json!("alice@example.com"),
            "member \"subject\" must be 32 lower-case hex digits",
        ),
        (
            &access,
            |v| v["subject"] = json!("0123456789ABCDEF0123456789abcdef"),
            "member \"subject\" must be 32 lower-case hex digits",
        ),
        (
            &access,
            |v| v["collection"] = json!(7),
            "member \"collection\" must be a string or null",
        ),
        (
            &access,
            |v| v["fields"] = json!([{"email": "x@y"}]),
            "member \"fields[0]\" must be a string, not an object",
        ),
        (
            &access,
            |v| v["outcome"] = json!("maybe"),
            "member \"outcome\" must be one of allow|deny|partial",
        ),
        (
            &access,
            |v| v["decisions"] = json!([{"field_class": null, "allowed": "yes", "policies": []}]),
            "member \"decisions[0].allowed\" must be true or false",
        ),
        (
            &access,
            |v| v["decisions"][1] = json!(null),
            "member \"decisions[1]\" must be an object, not null",
        ),
        (
            &access,
            |v| {
                v["decisions"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("policies");
            },
            "member \"decisions[0].policies\" is missing",
        ),
        (
            &access,
            |v| v["policy_set"] = json!("ab"),
            "member \"policy_set\" must be 64 lower-case hex digits",
        ),
        (
            &access,
            |v| {
                v.as_object_mut().unwrap().remove("reason_code");
            },
            "member \"reason_code\" is missing",
        ),
        (
            &access,
            |v| v["purpose"] = Value::Null,
            "member \"purpose\" must be a string, not null",
        ),
        (
            &config,
            |v| {
                v.as_object_mut().unwrap().remove("event");
            },
            "member \"event\" is missing",
        ),
        (
            &config,
            |v| v["config_sha256"] = json!("z".repeat(64)),
            "member \"config_sha256\" must be 64 lower-case hex digits",
        ),
        (
            &config,
            |v| v["policies"] = json!([true]),
            "member \"policies[0]\" must be a string, not true",
        ),
        (
            &config,
            |v| v["version"] = json!(1),
            "member \"version\" must be a string",
        ),
    ];
    for (base, change, want) in cases {
        let mut v = base.clone();
        change(&mut v);
        let got = ok(&v).expect_err(&format!("accepted {v}"));
        assert!(got.contains(want), "got {got:?}, want {want:?}");
    }

    // Paths name nested problems precisely.
    let mut v = access.clone();
    v["decisions"][1]["policies"] = json!(["ok", null]);
    let got = ok(&v).unwrap_err();
    assert_eq!(
        got,
        "member \"decisions[1].policies[1]\" must be a string, not null"
    );
    // Problems are reported in a fixed order, whatever the order of members.
    let mut v = access.clone();
    v["principal"]["location"] = json!("cn");
    v["action"] = json!("steal");
    let got = ok(&v).unwrap_err();
    assert!(got.starts_with("member \"principal.location\""), "{got}");
    // A member another kind requires is an unknown extra member here, whatever its form.
    let mut v = config.clone();
    v["principal"] = json!({"location": 3});
    v["decisions"] = json!([1]);
    v["fields"] = json!(7);
    assert!(ok(&v).is_ok());
    // Every missing member of an access entry is named.
    for name in [
        "principal",
        "action",
        "subject",
        "subject_jurisdiction",
        "site",
        "collection",
        "fields",
        "outcome",
        "decisions",
        "policies",
        "policy_set",
        "purpose",
        "reason_code",
        "time",
        "kind",
        "v",
    ] {
        let mut v = access.clone();
        v.as_object_mut().unwrap().remove(name);
        let got = ok(&v).unwrap_err();
        assert_eq!(got, format!("member \"{name}\" is missing"));
    }

    // Byte-level form: a single object, nothing around it, no duplicate member.
    let bytes = serde_json::to_vec(&access).unwrap();
    let mut with_newline = bytes.clone();
    with_newline.push(b'\n');
    assert!(check_entry(&with_newline).is_err());
    assert!(check_entry(b"[1]").is_err());
    assert!(check_entry(b"").is_err());
    assert!(
        check_entry(b"{\"v\":1}{}")
            .unwrap_err()
            .contains("not valid JSON")
    );
    let text = String::from_utf8(bytes).unwrap();
    let dup = text.replacen(
        "{",
        &format!(
            "{{\"outcome\":\"{}\",",
            if outcome_of(1) == "deny" {
                "allow"
            } else {
                "deny"
            }
        ),
        1,
    );
    let got = check_entry(dup.as_bytes()).unwrap_err();
    assert!(got.contains("member \"outcome\" appears twice"), "{got}");
    // The same member spelt with an escape is still the same member.
    let escaped = text.replacen("{", "{\"outc\\u006fme\":\"allow\",", 1);
    let got = check_entry(escaped.as_bytes()).unwrap_err();
    assert!(got.contains("member \"outcome\" appears twice"), "{got}");
    // Nor an unknown member twice, at the top or nested.
    let twice = text.replacen("{", "{\"note\":1,\"note\":2,", 1);
    let got = check_entry(twice.as_bytes()).unwrap_err();
    assert!(got.contains("member \"note\" appears twice"), "{got}");
    let twice = text.replacen(
        "\"principal\":{",
        "\"principal\":{\"a\":{\"b\":1,\"b\":1},",
        1,
    );
    assert_ne!(twice, text);
    let got = check_entry(twice.as_bytes()).unwrap_err();
    assert!(got.contains("member \"b\" appears twice"), "{got}");
    // Many unknown members are fine, but not twice the same one among them.
    let mut many = access.clone();
    for k in 0..40 {
        many[format!("x{k}")] = json!(k);
    }
    assert!(ok(&many).is_ok());
    let many = serde_json::to_string(&many)
        .unwrap()
        .replacen("{", "{\"x7\":0,", 1);
    let got = check_entry(many.as_bytes()).unwrap_err();
    assert!(got.contains("member \"x7\" appears twice"), "{got}");
    // Escapes in values are decoded; a float is not the number 1.
    let mut quoted = access.clone();
    quoted["purpose"] = json!("a \"quoted\" purpose\n");
    assert!(ok(&quoted).is_ok());
    let mut float = access.clone();
    float["v"] = json!(1.0);
    let got = ok(&float).unwrap_err();
    assert!(
        got.contains("must be the number 1 or 2, not the number 1.0"),
        "{got}"
    );
    // Leap years and leap seconds are real times.
    let mut leap = config.clone();
    leap["time"] = json!("2028-02-29T23:59:60.000Z");
    assert!(ok(&leap).is_ok());
    leap["time"] = json!("2027-02-29T23:59:59.000Z");
    assert!(ok(&leap).is_err());
}

// ---------------------------------------------------------------------------
// audit prove / check-proof

#[test]
fn prove_and_check_proof_round_trip() {
    let (dir, key, cp) = standard_log();
    let all = entries(SIZE);
    let work = tempfile::tempdir().unwrap();
    let url = url_of(dir.path());

    for index in [0u64, 300, 599] {
        let file = work.path().join(format!("p{index}.tlog-proof"));
        let out = prove(&url, index, &file, Some(&key.vkey)).unwrap();
        assert!(
            out.contains(&format!(
                "proof that entry {index} is in {ORIGIN} at tree size 600"
            )),
            "{out}"
        );
        let entry_file = work.path().join(format!("p{index}.tlog-proof.entry"));
        assert_eq!(std::fs::read(&entry_file).unwrap(), all[index as usize]);
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with(&format!("c2sp.org/tlog-proof@v1\nindex {index}\n")),
            "{text}"
        );

        let out = check_proof(&file, &key.vkey, None).unwrap();
        assert!(out.contains(&format!("index:      {index}\n")), "{out}");
        assert!(out.contains("checkpoint: 600 entries\n"), "{out}");
        assert!(
            out.contains(&format!("origin:     {}\n", cp.origin)),
            "{out}"
        );
    }

    let file = work.path().join("p300.tlog-proof");
    let entry_file = work.path().join("p300.tlog-proof.entry");

    // Another entry of the log is not entry 300.
    let e301 = work.path().join("301.entry");
    std::fs::write(&e301, &all[301]).unwrap();
    let e = check_proof(&file, &key.vkey, Some(&e301)).unwrap_err();
    assert!(e.starts_with("audit check-proof: FAILED: "), "{e}");
    assert!(e.contains("is not proven in the tree of size 600"), "{e}");

    // A modified entry file.
    flip_byte(&entry_file, 30);
    let e = check_proof(&file, &key.vkey, None).unwrap_err();
    assert!(e.contains("does not prove that"), "{e}");
    assert!(e.contains("entry 300"), "{e}");
    flip_byte(&entry_file, 30);
    check_proof(&file, &key.vkey, None).unwrap();

    // Another key.
    let e = check_proof(&file, &new_key().vkey, None).unwrap_err();
    assert!(
        e.contains("does not open with this key: checkpoint signature"),
        "{e}"
    );

    // A modified proof hash.
    let text = std::fs::read_to_string(&file).unwrap();
    let line = text.lines().nth(2).unwrap().to_string();
    let mut other = line.clone().into_bytes();
    other[0] = if other[0] == b'A' { b'B' } else { b'A' };
    let tampered = work.path().join("tampered.tlog-proof");
    std::fs::write(
        &tampered,
        text.replacen(&line, std::str::from_utf8(&other).unwrap(), 1),
    )
    .unwrap();
    assert!(check_proof(&tampered, &key.vkey, Some(&entry_file)).is_err());
    // Not a proof at all.
    std::fs::write(&tampered, "hello\n").unwrap();
    let e = check_proof(&tampered, &key.vkey, Some(&entry_file)).unwrap_err();
    assert!(e.contains("malformed proof"), "{e}");

    // Out of range, and a checkpoint the given key did not sign.
    let e = prove(&url, SIZE, &work.path().join("x"), None).unwrap_err();
    assert!(e.contains("entry 600 is not in the log"), "{e}");
    let e = prove(&url, 1, &work.path().join("x"), Some(&new_key().vkey)).unwrap_err();
    assert!(e.contains("checkpoint signature"), "{e}");

    // Without --key the proof is still complete; check-proof checks the signature.
    let nokey = work.path().join("nokey.tlog-proof");
    let out = prove(&url, 42, &nokey, None).unwrap();
    assert!(out.contains("signature was not checked"), "{out}");
    check_proof(&nokey, &key.vkey, None).unwrap();

    // A log whose bundle does not hold the entry its tiles commit to.
    let bundle = dir.path().join("tile/entries/002.p/88");
    let data = std::fs::read(&bundle).unwrap();
    flip_byte(&bundle, entry_offset(&data, 10) + 5);
    let e = prove(&url, 522, &work.path().join("y"), Some(&key.vkey)).unwrap_err();
    assert!(
        e.contains("entry 522 as served in its entry bundle is not the one in the tree"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------
// Over HTTP

/// A tiny HTTP/1.1 server with keep-alive: `/log/<path>` serves `<dir>/<path>`,
/// `/broken/...` answers 500, anything else 404. Counts connections and requests.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    fn start(dir: PathBuf) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let accept = {
            let (stop, connections, requests) =
                (stop.clone(), connections.clone(), requests.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let (dir, requests) = (dir.clone(), requests.clone());
                    std::thread::spawn(move || serve_connection(stream, &dir, &requests));
                }
            })
        };
        Server {
            addr,
            stop,
            connections,
            requests,
            accept: Some(accept),
        }
    }

    fn url(&self, prefix: &str) -> String {
        format!("http://{}/{prefix}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn serve_connection(stream: TcpStream, dir: &Path, requests: &AtomicUsize) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" || header == "\n" {
                break;
            }
        }
        requests.fetch_add(1, Ordering::SeqCst);
        let target = request_line.split_whitespace().nth(1).unwrap_or("/");
        let (status, body) = if let Some(rel) = target.strip_prefix("/log/") {
            match std::fs::read(dir.join(rel)) {
                Ok(data) if !rel.contains("..") => ("200 OK", data),
                _ => ("404 Not Found", b"not found".to_vec()),
            }
        } else if target.starts_with("/broken/") {
            ("500 Internal Server Error", b"oops".to_vec())
        } else {
            ("404 Not Found", b"not found".to_vec())
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
            body.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&body).is_err() {
            return;
        }
    }
}

#[test]
fn verify_and_prove_over_http() {
    let (dir, key, _) = standard_log();
    let server = Server::start(dir.path().to_path_buf());
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");

    let out = verify(&server.url("log"), &key.vkey, Some(&state)).unwrap();
    assert!(out.contains("size:       600 entries\n"), "{out}");
    let out = verify(&server.url("log/"), &key.vkey, Some(&state)).unwrap();
    assert!(
        out.contains("consistent with the checkpoint of 600 entries"),
        "{out}"
    );
    // Keep-alive connections: fewer connections than requests (each run fetches the
    // checkpoint, 3 level-0 tiles, 3 bundles and a level-1 tile; tile 1 and its bundle are
    // read ahead, on up to two more connections).
    let (connections, requests) = (
        server.connections.load(Ordering::SeqCst),
        server.requests.load(Ordering::SeqCst),
    );
    assert!(requests >= 16, "{requests} requests");
    assert!(
        connections <= 6,
        "{connections} connections for {requests} requests"
    );

    // Tampering is caught over HTTP too.
    flip_byte(&dir.path().join("tile/entries/000"), 100);
    let e = verify_err(&server.url("log"), &key.vkey, Some(&state));
    assert!(e.contains("(in tile/entries/000) hashes to"), "{e}");
    flip_byte(&dir.path().join("tile/entries/000"), 100);

    // Proofs over HTTP.
    let file = work.path().join("p.tlog-proof");
    prove(&server.url("log"), 257, &file, Some(&key.vkey)).unwrap();
    let out = check_proof(&file, &key.vkey, None).unwrap();
    assert!(out.contains("index:      257\n"), "{out}");

    // A URL serving no log, at it or below it at /log, is named as such; other statuses
    // and network errors are fetch errors.
    let e = verify_err(&server.url("nothing"), &key.vkey, None);
    assert!(
        e.contains("is neither a log nor a gateway serving one")
            && e.contains("/nothing/log/checkpoint"),
        "{e}"
    );
    let e = verify_err(&server.url("broken"), &key.vkey, None);
    assert!(
        e.contains("GET http://") && e.contains("/broken/checkpoint: HTTP 500"),
        "{e}"
    );
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let e = verify_err(&format!("http://{closed}/log"), &key.vkey, None);
    assert!(
        e.contains(&format!(
            "fetching checkpoint: http://{closed}/log/checkpoint: Connection Failed"
        )),
        "{e}"
    );
}

/// A log of many full tiles is read ahead over HTTP (several requests at once): what is
/// verified and what is reported are those of the sequential check.
#[test]
fn verify_reads_ahead_over_http() {
    const BIG: u64 = 256 * 40 + 17;
    let dir = tempfile::tempdir().unwrap();
    let key = new_key();
    publish(dir.path(), &key, &entries(BIG));
    let server = Server::start(dir.path().to_path_buf());

    let out = verify(&server.url("log"), &key.vkey, None).unwrap();
    assert!(
        out.contains(&format!("size:       {BIG} entries\n")),
        "{out}"
    );
    // checkpoint, 41 level-0 tiles and bundles, a level-1 tile; at most 8 requests at once,
    // on keep-alive connections.
    let (connections, requests) = (
        server.connections.load(Ordering::SeqCst),
        server.requests.load(Ordering::SeqCst),
    );
    assert!(requests >= 84, "{requests} requests");
    assert!(
        connections <= 9,
        "{connections} connections for {requests} requests"
    );

    // The first bad entry is reported, wherever the files read ahead stand.
    let bundle = dir.path().join("tile/entries/030");
    let data = std::fs::read(&bundle).unwrap();
    flip_byte(&bundle, entry_offset(&data, 7) + 3);
    let bundle = dir.path().join("tile/entries/012");
    let data = std::fs::read(&bundle).unwrap();
    flip_byte(&bundle, entry_offset(&data, 5) + 3);
    let e = verify_err(&server.url("log"), &key.vkey, None);
    assert!(
        e.contains(&format!(
            "entry {} (in tile/entries/012) hashes to",
            12 * 256 + 5
        )),
        "{e}"
    );

    // A full bundle missing from the middle is named.
    std::fs::remove_file(&bundle).unwrap();
    let e = verify_err(&server.url("log"), &key.vkey, None);
    assert!(
        e.contains("tile/entries/012 is not served by the log"),
        "{e}"
    );
}

/// Every alert the gateway raises is an entry the monitor accepts: the producer
/// (`gateway::entry`) and the monitor's independent reading must agree on names and
/// severities.
#[test]
fn every_alert_the_gateway_raises_is_a_valid_entry() {
    use gateway::analytics::AlertKind;
    for kind in AlertKind::ALL {
        let entry = gateway::entry::alert_entry(
            kind.as_str(),
            kind.severity(),
            None,
            json!({"limit": 3, "subject": "0".repeat(32)}),
        );
        if let Err(e) = check_entry(&entry) {
            panic!("the monitor refuses a {} alert: {e}", kind.as_str());
        }
    }
}

#[test]
fn get_shows_one_entry_proven_under_a_checkpoint_checked_with_the_key() {
    let (dir, key, cp) = standard_log();
    let all = entries(SIZE);
    let url = url_of(dir.path());
    let out = audit(&["get", "--url", &url, "--key", &key.vkey, "--index", "300"]).unwrap();
    assert!(
        out.starts_with(&format!(
            "entry 300 of {ORIGIN}: in the tree of size 600 (root {}), checkpoint signed by the log's key\nkind: ",
            tlog::hash_to_base64(&cp.hash)
        )),
        "{out}"
    );
    let shown: serde_json::Value = serde_json::from_str(&out[out.find('{').unwrap()..]).unwrap();
    let logged: serde_json::Value = serde_json::from_slice(&all[300]).unwrap();
    assert_eq!(shown, logged);

    let json = audit(&[
        "get", "--url", &url, "--key", &key.vkey, "--index", "599", "--json",
    ])
    .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(answer["index"], 599);
    assert_eq!(answer["tree_size"], 600);
    assert_eq!(
        answer["entry"],
        serde_json::from_slice::<serde_json::Value>(&all[599]).unwrap()
    );
    assert!(!answer["proof"].as_array().unwrap().is_empty());

    // Past the checkpoint, under another key, or with a tampered entry: refused.
    let e = audit(&["get", "--url", &url, "--key", &key.vkey, "--index", "600"]).unwrap_err();
    assert!(
        e.starts_with("audit get: FAILED: ") && e.contains("not in the log"),
        "{e}"
    );
    let e = audit(&[
        "get",
        "--url",
        &url,
        "--key",
        &new_key().vkey,
        "--index",
        "1",
    ])
    .unwrap_err();
    assert!(e.starts_with("audit get: FAILED: "), "{e}");
    let bundle = dir.path().join("tile/entries/001");
    let offset = entry_offset(&std::fs::read(&bundle).unwrap(), 300 - 256);
    flip_byte(&bundle, offset);
    let e = audit(&["get", "--url", &url, "--key", &key.vkey, "--index", "300"]).unwrap_err();
    assert!(e.starts_with("audit get: FAILED: "), "{e}");
}

#[test]
fn search_lists_the_matching_entries_of_a_verified_log() {
    let (dir, key, _) = standard_log();
    let url = url_of(dir.path());
    let all: Vec<serde_json::Value> = entries(SIZE)
        .iter()
        .map(|e| serde_json::from_slice(e).unwrap())
        .collect();
    let denied: Vec<usize> = (0..all.len())
        .filter(|i| all[*i]["kind"] == "access" && all[*i]["outcome"] == "deny")
        .collect();
    assert!(!denied.is_empty());
    let base = ["search", "--url", &url, "--key", &key.vkey];
    let out = audit(
        &[
            &base[..],
            &["--kind", "access", "--outcome", "deny", "--limit", "1000"],
        ]
        .concat(),
    )
    .unwrap();
    assert!(
        out.ends_with(&format!(
            "{} of 600 entries match; the log verified\n",
            denied.len()
        )),
        "{out}"
    );
    assert_eq!(out.lines().count(), denied.len() + 1, "{out}");
    let json = audit(
        &[
            &base[..],
            &["--outcome", "deny", "--kind", "access", "--json"],
        ]
        .concat(),
    )
    .unwrap();
    let shown: Vec<u64> = json
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["index"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let want: Vec<u64> = denied.iter().take(100).map(|i| *i as u64).collect();
    assert_eq!(shown, want);
    let out = audit(&[&base[..], &["--limit", "3"]].concat()).unwrap();
    assert!(
        out.ends_with("600 of 600 entries match; the log verified; the first 3 shown (--limit)\n"),
        "{out}"
    );
    // A log that does not verify answers nothing.
    let e = audit(&["search", "--url", &url, "--key", &new_key().vkey]).unwrap_err();
    assert!(e.starts_with("audit search: FAILED: "), "{e}");
}

/// Runs `sovereign audit ARGS...` with the environment `env`: its exit code, standard
/// output and standard error.
fn audit_status(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = sovereign();
    command.arg("audit").args(args).env_remove("SOVEREIGN_URL");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    (
        output.status.code().expect("an exit code"),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// A server answering every request with 503, as a gateway that cannot serve does.
fn unavailable_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 2 {
                line.clear();
            }
            let mut stream = stream;
            let _ = stream.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy",
            );
        }
    });
    addr
}

/// The documented exit codes: a script tells a log that failed its check (1) from wrong
/// arguments (2) and a log it could not reach (3), and `--json` gives it the result.
#[test]
fn exit_codes_tell_a_failed_check_from_usage_and_an_unreachable_log() {
    let (dir, key, cp) = standard_log();
    let url = url_of(dir.path());
    let work = tempfile::tempdir().unwrap();

    // 0, and the JSON result.
    let (code, out, _) = audit_status(
        &["verify", "--url", &url, "--key", &key.vkey, "--json"],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["ok"], true);
    assert_eq!(answer["checkpoint"]["size"], SIZE);
    assert_eq!(answer["checkpoint"]["origin"], ORIGIN);
    assert_eq!(
        answer["checkpoint"]["root_hash"],
        tlog::hash_to_base64(&cp.hash)
    );
    assert_eq!(answer["history"], "not-checked");
    let kinds: u64 = answer["kinds"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(kinds, SIZE);

    // 2: a key that is not a key, a key file that is not there, a bad URL scheme.
    for args in [
        vec!["verify", "--url", &url, "--key", "not-a-key"],
        vec!["verify", "--url", &url, "--key", "@/nonexistent/log.vkey"],
        vec!["verify", "--url", "ftp://example/log", "--key", &key.vkey],
    ] {
        let (code, _, err) = audit_status(&args, &[]);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.starts_with("error: audit verify: FAILED: "), "{err}");
    }
    // 3: nothing listening, and a server answering 503.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let busy = unavailable_server();
    for url in [format!("http://{closed}"), format!("http://{busy}/log")] {
        let (code, _, err) = audit_status(&["verify", "--url", &url, "--key", &key.vkey], &[]);
        assert_eq!(code, 3, "{url}: {err}");
    }
    // The URL can come from SOVEREIGN_URL, as for every other command.
    let (code, _, err) = audit_status(
        &["verify", "--key", &key.vkey],
        &[("SOVEREIGN_URL", &format!("http://{closed}"))],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&closed.to_string()), "{err}");

    // A proof, checked with --json; then the same proof of an altered entry: 1.
    let file = work.path().join("p.tlog-proof");
    prove(&url, 7, &file, Some(&key.vkey)).unwrap();
    let check_proof_json = || {
        audit_status(
            &[
                "check-proof",
                file.to_str().unwrap(),
                "--key",
                &key.vkey,
                "--json",
            ],
            &[],
        )
    };
    let (code, out, err) = check_proof_json();
    assert_eq!(code, 0, "{err}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["index"], 7);
    assert_eq!(answer["checkpoint"]["size"], SIZE);
    assert_eq!(answer["entry"]["valid"], true);
    let entry = work.path().join("p.tlog-proof.entry");
    flip_byte(&entry, 3);
    let (code, out, err) = check_proof_json();
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.starts_with("error: audit check-proof: FAILED: "),
        "{err}"
    );

    // 1: a tampered log, with the same message as without --json.
    flip_byte(&dir.path().join("tile/entries/000"), 100);
    let (code, out, err) = audit_status(
        &["verify", "--url", &url, "--key", &key.vkey, "--json"],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("(in tile/entries/000) hashes to"), "{err}");
}

/// `--url` takes the gateway's base URL (the log below it at /log) as well as the log's own
/// prefix, as every other command takes the gateway's base URL.
#[test]
fn the_log_is_found_below_a_gateways_base_url() {
    let (dir, key, _) = standard_log();
    // Served at /log/ (the test server's layout, like the gateway's).
    let server = Server::start(dir.path().to_path_buf());
    let base = format!("http://{}", server.addr);
    for url in [base.clone(), format!("{base}/"), server.url("log")] {
        let out = verify(&url, &key.vkey, None).unwrap();
        assert!(out.contains("size:       600 entries\n"), "{url}: {out}");
    }
    let (code, out, err) =
        audit_status(&["verify", "--key", &key.vkey], &[("SOVEREIGN_URL", &base)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("audit verify: OK\n"), "{out}");
}
