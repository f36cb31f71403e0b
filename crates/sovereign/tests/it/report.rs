//! `sovereign report` and `sovereign report check`, with the binary.
//!
//! Against a real gateway: traffic of the reference scenario (with an approved grant, a
//! break-glass use and its review, an export and an egress page) gives exactly those
//! figures, and the report checks, also once the log has grown. Against static logs built
//! here: a period counts exactly its entries; and every way a report can lie is caught: a
//! changed figure (even re-signed), another signer, a JSON or Markdown that is not the one
//! signed, a log rewritten since. Also the arguments: dates, and a period that ends before
//! it starts.

use crate::support::{INCIDENT, SUPPORT_TICKET, s, text};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use testkit::cast::{
    APPROVER_1, APPROVER_2, BREAK_GLASS, DATA_SUBJECT, EGRESS, PARENT_CN, PARENT_SG,
    USDS_TRAVELLING_CN, VETTED_US, Who,
};

use serde_json::Value;
use testkit::sha256_hex;
use testkit::static_log::{Key, entries, entry, new_key, outcome_of, publish};
use tlog::note::{Signer, generate_key};

fn sovereign(dir: &Path, args: &[&str]) -> Output {
    crate::support::sovereign()
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Runs, expecting success; returns standard output and standard error.
fn ok(dir: &Path, args: &[&str]) -> (String, String) {
    let output = sovereign(dir, args);
    let (out, err) = text(&output);
    assert!(
        output.status.success(),
        "sovereign {args:?} failed:\n{out}\n{err}"
    );
    (out, err)
}

/// Runs, expecting failure; returns standard error.
fn fails(dir: &Path, args: &[&str]) -> String {
    let output = sovereign(dir, args);
    let (out, err) = text(&output);
    assert!(
        !output.status.success(),
        "sovereign {args:?} succeeded:\n{out}"
    );
    err
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A report signer's key files: `NAME.key` (signer) and `NAME.vkey` (verifier).
fn signer_files(dir: &Path, name: &str) -> (PathBuf, PathBuf, Signer) {
    let (skey, vkey) = generate_key(name).unwrap();
    let (key, vkey_file) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.vkey")),
    );
    std::fs::write(&key, format!("{skey}\n")).unwrap();
    std::fs::write(&vkey_file, format!("{vkey}\n")).unwrap();
    (key, vkey_file, Signer::new(&skey).unwrap())
}

/// Replaces the text of a report's signed note by `edit(text)`, signed again by `signer`:
/// what a signer who lies would do.
fn resign(sig: &Path, signer: &Signer, edit: impl Fn(&str) -> String) {
    let note = std::fs::read_to_string(sig).unwrap();
    let text = &note[..note.rfind("\n\n").unwrap() + 1];
    let signed = tlog::note::sign(&edit(text), [signer]).unwrap();
    std::fs::write(sig, signed).unwrap();
}

// ---------------------------------------------------------------------------
// A static log

/// A static log of `n` entries (one config entry in ten, then accesses with every
/// outcome, denials from CN) in `dir/log`, one entry a second from 2026-11-22T00:00:00Z,
/// and a report signer.
struct StaticLog {
    dir: tempfile::TempDir,
    key: Key,
    vkey_file: PathBuf,
    signer_key: PathBuf,
    signer_vkey: PathBuf,
    signer: Signer,
}

impl StaticLog {
    fn new(n: u64) -> StaticLog {
        let dir = tempfile::tempdir().unwrap();
        let key = new_key();
        publish(&dir.path().join("log"), &key, &entries(n));
        let vkey_file = dir.path().join("log.vkey");
        std::fs::write(&vkey_file, &key.vkey).unwrap();
        let (signer_key, signer_vkey, signer) = signer_files(dir.path(), "auditor");
        StaticLog {
            dir,
            key,
            vkey_file,
            signer_key,
            signer_vkey,
            signer,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn url(&self) -> String {
        self.path("log").to_str().unwrap().to_string()
    }

    /// `sovereign report` of [from, to) into PREFIX `out`.
    fn report(&self, from: &str, to: &str, out: &str) -> (String, String) {
        ok(
            self.dir.path(),
            &[
                "report",
                "--url",
                &self.url(),
                "--key",
                &format!("@{}", s(&self.vkey_file)),
                "--from",
                from,
                "--to",
                to,
                "--signer",
                s(&self.signer_key),
                "--out",
                out,
            ],
        )
    }

    fn check_args(&self, json: &str) -> Vec<String> {
        [
            "report",
            "check",
            json,
            "--signer-key",
            &format!("@{}", s(&self.signer_vkey)),
            "--url",
            &self.url(),
            "--key",
            &self.key.vkey,
        ]
        .map(String::from)
        .to_vec()
    }

    fn check(&self, json: &str) -> Output {
        let args = self.check_args(json);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sovereign(self.dir.path(), &args)
    }

    fn check_ok(&self, json: &str) -> String {
        let output = self.check(json);
        let (out, err) = text(&output);
        assert!(
            output.status.success(),
            "report check failed:\n{out}\n{err}"
        );
        out
    }

    fn check_fails(&self, json: &str) -> String {
        let output = self.check(json);
        let (out, err) = text(&output);
        assert!(!output.status.success(), "report check passed:\n{out}");
        assert!(err.starts_with("error: report check: FAILED: "), "{err}");
        // A report that does not check is a failed check: exit status 1.
        assert_eq!(output.status.code(), Some(1), "{err}");
        err
    }
}

/// The second minute of the static log: entries 60 to 119.
const MINUTE_FROM: &str = "2026-11-22T00:01:00Z";
const MINUTE_TO: &str = "2026-11-22T00:02:00Z";

#[test]
fn a_period_counts_exactly_its_entries() {
    let log = StaticLog::new(600);
    let (out, _) = log.report(MINUTE_FROM, MINUTE_TO, "minute");
    assert!(out.contains("report: wrote minute.json\n"), "{out}");
    assert!(out.contains("report: wrote minute.md\n"), "{out}");
    assert!(
        out.contains("report: wrote minute.sig (signed by auditor+"),
        "{out}"
    );
    assert!(
        out.contains("computed from the first 600 entries of sovereign.test/log"),
        "{out}"
    );

    // What the entries of that minute are, counted here from the test log's recipe.
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    let mut by_location: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    for i in 60..120 {
        if entry(i)["kind"] == "access" {
            let outcome = outcome_of(i);
            *expected.entry(outcome).or_default() += 1;
            let location = if outcome == "deny" { "CN" } else { "US" };
            *by_location
                .entry(location)
                .or_default()
                .entry(outcome)
                .or_default() += 1;
        }
    }
    let report = read_json(&log.path("minute.json"));
    assert_eq!(report["format"], "sovereign-report/v1");
    assert_eq!(report["period"]["from"], MINUTE_FROM);
    assert_eq!(report["period"]["to"], MINUTE_TO);
    assert_eq!(report["log"]["origin"], "sovereign.test/log");
    assert_eq!(report["log"]["tree_size"], 600);
    assert_eq!(
        report["log"]["checkpoint"].as_str().unwrap().as_bytes(),
        std::fs::read(log.path("log/checkpoint")).unwrap()
    );
    assert_eq!(report["entries"]["first_index"], 60);
    assert_eq!(report["entries"]["last_index"], 119);
    assert_eq!(report["entries"]["count"], 60);
    assert_eq!(report["entries"]["by_kind"]["config"], 6);
    assert_eq!(report["accesses"]["total"], 54);
    for outcome in ["allow", "deny", "partial"] {
        assert_eq!(
            report["accesses"]["by_outcome"][outcome], expected[outcome],
            "{outcome}"
        );
    }
    assert_eq!(
        report["accesses"]["by_location"]["CN"]["deny"],
        by_location["CN"]["deny"]
    );
    assert_eq!(report["accesses"]["by_location"]["CN"]["allow"], 0);
    assert_eq!(
        report["accesses"]["by_location"]["US"]["allow"],
        by_location["US"]["allow"]
    );
    assert_eq!(
        report["accesses"]["by_subject_jurisdiction"]["US"]["allow"],
        expected["allow"]
    );

    // The signature names the period, the checkpoint and both files.
    let sig = std::fs::read_to_string(log.path("minute.sig")).unwrap();
    let md = std::fs::read(log.path("minute.md")).unwrap();
    let json = std::fs::read(log.path("minute.json")).unwrap();
    let root = report["log"]["root_hash"].as_str().unwrap();
    assert!(
        sig.starts_with(&format!(
            "sovereign/report/v1\nfrom {MINUTE_FROM}\nto {MINUTE_TO}\norigin sovereign.test/log\ntree_size 600\nroot_hash {root}\njson_sha256 {}\nmarkdown_sha256 {}\n\n\u{2014} auditor ",
            sha256_hex(&json),
            sha256_hex(&md)
        )),
        "{sig}"
    );
    let md = String::from_utf8(md).unwrap();
    assert!(
        md.starts_with("# Transparency report, 2026-11-22 to 2026-11-22\n"),
        "{md}"
    );
    assert!(md.contains("| CN | 0 | 18 | 0 | 18 |"), "{md}");
    assert!(md.contains("## How to check this report"), "{md}");
    assert!(
        md.contains(&format!(
            "sovereign report check minute.json --signer-key {} --url {} --key {}",
            log.signer.verifier(),
            log.url(),
            log.key.vkey
        )),
        "{md}"
    );

    let out = log.check_ok("minute.json");
    assert!(out.starts_with("report check: OK\n"), "{out}");
    assert!(
        out.contains("markdown:   minute.md matches the signature and shows the report's figures"),
        "{out}"
    );
    assert!(
        out.contains("figures:    computed again from the first 600 entries: identical"),
        "{out}"
    );
    // --json: what was written, as one object.
    let (out, _) = ok(
        log.dir.path(),
        &[
            "report",
            "--url",
            &log.url(),
            "--key",
            &format!("@{}", s(&log.vkey_file)),
            "--from",
            MINUTE_FROM,
            "--to",
            MINUTE_TO,
            "--signer",
            s(&log.signer_key),
            "--out",
            "again",
            "--json",
        ],
    );
    let written: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(written["json"], "again.json", "{written}");
    assert_eq!(written["checkpoint"]["size"], 600, "{written}");
    let mut args = log.check_args("minute.json");
    args.push("--json".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = sovereign(log.dir.path(), &args);
    assert!(output.status.success());
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["ok"], true);
    assert!(
        answer["checked"].as_array().unwrap().iter().any(|l| l
            .as_str()
            .unwrap()
            .starts_with("figures:    computed again")),
        "{answer}"
    );
}

#[test]
fn a_report_still_checks_once_the_log_has_grown_but_not_once_it_is_rewritten() {
    let log = StaticLog::new(300);
    log.report("2026-11-22", "2026-11-22", "day");
    assert_eq!(read_json(&log.path("day.json"))["entries"]["count"], 300);

    // The same log, 100 entries longer: the report is of its first 300, and checks.
    publish(&log.path("log"), &log.key, &entries(400));
    let out = log.check_ok("day.json");
    assert!(
        out.contains("the report's checkpoint of 300 entries is consistent with the log as served now (400 entries)"),
        "{out}"
    );

    // The log with entry 7 rewritten does not contain the report's checkpoint.
    let mut rewritten = entries(400);
    rewritten[7] = serde_json::to_vec(&entry(8)).unwrap();
    publish(&log.path("log"), &log.key, &rewritten);
    let err = log.check_fails("day.json");
    assert!(err.contains("the log forked"), "{err}");
}

#[test]
fn a_changed_figure_fails_naming_the_member_even_if_signed_again() {
    let log = StaticLog::new(300);
    log.report(MINUTE_FROM, MINUTE_TO, "r");
    let json_path = log.path("r.json");
    let mut report = read_json(&json_path);
    let denied = report["accesses"]["by_location"]["CN"]["deny"]
        .as_u64()
        .unwrap();
    report["accesses"]["by_location"]["CN"]["deny"] = (denied - 1).into();
    let json = serde_json::to_vec_pretty(&report).unwrap();
    std::fs::write(&json_path, &json).unwrap();
    // The signer signs the new digest: the signature holds, the figures do not.
    resign(&log.path("r.sig"), &log.signer, |text| {
        let line = text
            .lines()
            .find(|l| l.starts_with("json_sha256 "))
            .unwrap();
        text.replace(line, &format!("json_sha256 {}", sha256_hex(&json)))
    });
    let err = log.check_fails("r.json");
    assert!(
        err.contains(&format!(
            "the report's figures are not those of the log's first 300 entries: accesses.by_location.CN.deny: the report says {}, the log gives {denied}",
            denied - 1
        )),
        "{err}"
    );
}

#[test]
fn a_report_signed_by_another_key_fails() {
    let log = StaticLog::new(100);
    let (other_key, _, _) = signer_files(log.dir.path(), "mallory");
    ok(
        log.dir.path(),
        &[
            "report",
            "--url",
            &log.url(),
            "--key",
            &log.key.vkey,
            "--from",
            "2026-11-22",
            "--to",
            "2026-11-22",
            "--signer",
            s(&other_key),
            "--out",
            "r",
        ],
    );
    let err = log.check_fails("r.json");
    assert!(
        err.contains("r.sig is not signed by the --signer-key key auditor+"),
        "{err}"
    );
    assert!(err.contains("(it is signed by mallory+"), "{err}");
}

#[test]
fn files_that_are_not_the_signed_ones_fail() {
    let log = StaticLog::new(100);
    log.report("2026-11-22", "2026-11-22", "r");
    let json_path = log.path("r.json");
    let json = std::fs::read(&json_path).unwrap();

    // One more byte in the JSON: not the one whose digest is signed.
    let mut longer = json.clone();
    longer.push(b'\n');
    std::fs::write(&json_path, &longer).unwrap();
    let err = log.check_fails("r.json");
    assert!(
        err.contains(&format!(
            "r.json is not the JSON the signature names: its SHA-256 is {}, r.sig says json_sha256 {}",
            sha256_hex(&longer),
            sha256_hex(&json)
        )),
        "{err}"
    );
    std::fs::write(&json_path, &json).unwrap();
    log.check_ok("r.json");

    // A Markdown edited after signing...
    let md_path = log.path("r.md");
    let md = std::fs::read_to_string(&md_path).unwrap();
    let edited = md.replacen("| deny |", "| deny | 0 |", 1);
    std::fs::write(&md_path, &edited).unwrap();
    let err = log.check_fails("r.json");
    assert!(
        err.contains("r.md is not the Markdown the signature names"),
        "{err}"
    );
    // ...and signed again: its digest holds, but it shows figures the JSON does not have.
    resign(&log.path("r.sig"), &log.signer, |text| {
        let line = text
            .lines()
            .find(|l| l.starts_with("markdown_sha256 "))
            .unwrap();
        text.replace(
            line,
            &format!("markdown_sha256 {}", sha256_hex(edited.as_bytes())),
        )
    });
    let err = log.check_fails("r.json");
    assert!(
        err.contains("r.md does not show the report's figures"),
        "{err}"
    );
    // Without the Markdown, the rest is checked and says so.
    std::fs::remove_file(&md_path).unwrap();
    let out = log.check_ok("r.json");
    assert!(out.contains("markdown:   not checked (no r.md"), "{out}");

    // A signature whose period is not the JSON's.
    resign(&log.path("r.sig"), &log.signer, |text| {
        text.replace("from 2026-11-22T00:00:00Z", "from 2026-11-21T00:00:00Z")
    });
    let err = log.check_fails("r.json");
    assert!(
        err.contains(
            "the signature says from 2026-11-21T00:00:00Z, the JSON says from 2026-11-22T00:00:00Z"
        ),
        "{err}"
    );
}

#[test]
fn a_checkpoint_of_another_log_key_fails() {
    let log = StaticLog::new(100);
    log.report("2026-11-22", "2026-11-22", "r");
    let other = new_key();
    let args = log.check_args("r.json");
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    let at = args.iter().position(|a| *a == "--key").unwrap();
    args[at + 1] = &other.vkey;
    let err = fails(log.dir.path(), &args);
    assert!(
        err.contains("the checkpoint in r.json is not one of the log key sovereign.test/log+"),
        "{err}"
    );
}

#[test]
fn a_period_before_the_log_has_no_entries() {
    let log = StaticLog::new(100);
    let (out, _) = log.report("2020-01-01", "2020-12-31", "old");
    let report = read_json(&log.path("old.json"));
    assert_eq!(report["entries"]["count"], 0);
    assert_eq!(report["entries"]["first_index"], Value::Null);
    assert_eq!(report["accesses"]["total"], 0);
    assert_eq!(report["accesses"]["by_outcome"]["deny"], 0);
    assert_eq!(report["accesses"]["by_location"], serde_json::json!({}));
    assert!(
        out.contains(
            "From 2020-01-01T00:00:00Z to 2021-01-01T00:00:00Z, the log records 0 access decisions"
        ),
        "{out}"
    );
    log.check_ok("old.json");
}

#[test]
fn dates_are_checked_before_the_log_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let base = [
        "report",
        "--url",
        "http://127.0.0.1:9/log",
        "--signer",
        "no-such.key",
    ];
    let with = |from: &str, to: &str| {
        let mut args = base.to_vec();
        args.extend(["--from", from, "--to", to]);
        fails(dir.path(), &args)
    };
    let err = with("2026-11-30", "2026-11-01");
    assert_eq!(
        err,
        "error: --to (2026-11-02T00:00:00Z) is not after --from (2026-11-30T00:00:00Z): the period would be empty\n"
    );
    let err = with("2026-11-01T12:00:00Z", "2026-11-01T12:00:00Z");
    assert!(err.contains("the period would be empty"), "{err}");
    let err = with("yesterday", "2026-11-01");
    assert!(
        err.contains("\"yesterday\" is neither a date (YYYY-MM-DD) nor an RFC 3339 time"),
        "{err}"
    );
    let err = with("2026-11-01", "2026-02-30");
    assert!(err.contains("\"2026-02-30\" is not a date"), "{err}");

    // Without a subcommand, the report's flags are required (all but --url, which defaults
    // to SOVEREIGN_URL or the local gateway); with one, they are refused.
    let err = fails(dir.path(), &["report"]);
    assert!(err.contains("--from <DATE>"), "{err}");
    assert!(err.contains("--signer <KEYFILE>"), "{err}");
    let err = fails(dir.path(), &["report", "--url", "x", "check", "r.json"]);
    assert!(err.contains("error:"), "{err}");
}

// ---------------------------------------------------------------------------
// A real gateway

#[test]
fn a_report_of_real_traffic_counts_what_happened() {
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
    let carol = token(&APPROVER_1);
    let dave = token(&APPROVER_2);
    let frank = token(&BREAK_GLASS);
    let ada = token(&DATA_SUBJECT);
    let globe = token(&EGRESS);

    let call =
        |method: reqwest::Method, path: &str, who: &str, purpose: &str, body: Option<&str>| {
            crate::support::governed(&http, method, &format!("{base}{path}"), who, purpose, body)
        };
    let cli = |who: &str, args: &[&str]| {
        let output = crate::support::sovereign()
            .args(args)
            .args(["--url", &base, "--token", who, "--json"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "sovereign {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    use reqwest::Method;
    let record = "/v1/subjects/u-1001/records/profile/main";
    let activity = "/v1/subjects/u-1001/records/activity/main";

    // The reference scenario: register, write and read as vetted US staff (allowed);
    // reads from CN by parent and by usds staff (denied); parent staff in SG (partial).
    let profile = r#"{"email":"ada@example.com","phone":"+1 555 0100","display_name":"Ada"}"#;
    let subject = r#"{"jurisdiction":"US"}"#;
    assert_eq!(
        call(
            Method::PUT,
            "/v1/subjects/u-1001",
            &alice,
            "",
            Some(subject)
        )
        .0,
        201
    );
    assert_eq!(
        call(Method::PUT, record, &alice, "setup", Some(profile)).0,
        200
    );
    assert_eq!(call(Method::GET, record, &alice, "ticket 42", None).0, 200);
    assert_eq!(call(Method::GET, record, &chen, "debug", None).0, 403);
    assert_eq!(call(Method::GET, record, &bob, "on call", None).0, 403);
    assert_eq!(call(Method::GET, record, &siew, "", None).0, 200);

    // An access request approved by two custodians, then the write it grants.
    let request = cli(
        &alice,
        &[
            &[
                "access",
                "request",
                "--action",
                "write",
                "--subject",
                "u-1001",
            ][..],
            &SUPPORT_TICKET,
        ]
        .concat(),
    );
    let id = request["id"].as_str().unwrap();
    cli(&carol, &["access", "approve", id]);
    cli(&dave, &["access", "approve", id]);
    let watched = Some(r#"{"watch_history":"v1,v2"}"#);
    assert_eq!(
        call(Method::PUT, activity, &alice, "ticket 42", watched).0,
        200
    );

    // A break-glass write, reviewed afterwards.
    let glass = cli(
        &frank,
        &[
            &["access", "break-glass", "--action", "write"][..],
            &INCIDENT,
        ]
        .concat(),
    );
    assert_eq!(
        call(Method::PUT, activity, &frank, "incident 7", watched).0,
        200
    );
    cli(&carol, &["access", "review", glass["id"].as_str().unwrap()]);

    // The subject exports its data; the platform takes one egress page.
    assert_eq!(
        call(
            Method::GET,
            "/v1/subjects/u-1001/export",
            &ada,
            "my own copy",
            None
        )
        .0,
        200
    );
    let (status, last) = call(Method::GET, "/v1/egress/profile?limit=10", &globe, "", None);
    assert_eq!(status, 200);
    crate::support::wait_for_checkpoint(&base, last.unwrap() + 1);

    // No --key: the key the log serves is used, with a warning. No --out: the default
    // name, in the current directory.
    let custodian_key = data.join("keys/custodian.key");
    let (out, err) = ok(
        &work,
        &[
            "report",
            "--url",
            &format!("{base}/log"),
            "--from",
            "2000-01-01",
            "--to",
            "2100-12-31",
            "--signer",
            s(&custodian_key),
        ],
    );
    assert!(
        err.contains("warning: no --key: using the key the log itself serves at"),
        "{err}"
    );
    assert!(err.contains("trusted on first use"), "{err}");
    let prefix = "sovereign-report-2000-01-01-2100-12-31";
    assert!(
        out.contains(&format!("report: wrote {prefix}.sig (signed by custodian+")),
        "{out}"
    );
    assert!(
        out.contains(
            "the log records 13 access decisions: 10 allowed, 2 denied and 1 partially allowed"
        ),
        "{out}"
    );
    let report = read_json(&work.join(format!("{prefix}.json")));
    let accesses = &report["accesses"];
    let outcomes = |allow: u64, deny: u64, partial: u64| serde_json::json!({"allow": allow, "deny": deny, "partial": partial});
    // Besides the reads and writes: the subject's export (one decision per collection, and
    // one for the history it carries) and the egress page (one decision over every
    // jurisdiction, logged under "*").
    assert_eq!(accesses["total"], 13, "{accesses:#}");
    assert_eq!(accesses["by_outcome"], outcomes(10, 2, 1), "{accesses:#}");
    assert_eq!(
        accesses["by_location"],
        serde_json::json!({"CN": outcomes(0, 2, 0), "SG": outcomes(1, 0, 1), "US": outcomes(9, 0, 0)})
    );
    assert_eq!(
        accesses["by_entity"],
        serde_json::json!({"parent": outcomes(1, 1, 1), "public": outcomes(4, 0, 0), "usds": outcomes(5, 1, 0)})
    );
    assert_eq!(
        accesses["by_action"],
        serde_json::json!({"egress": outcomes(1, 0, 0), "export": outcomes(3, 0, 0), "history": outcomes(1, 0, 0), "read": outcomes(1, 2, 1), "register": outcomes(1, 0, 0), "write": outcomes(3, 0, 0)})
    );
    assert_eq!(
        accesses["by_subject_jurisdiction"],
        serde_json::json!({"*": outcomes(1, 0, 0), "US": outcomes(9, 2, 1)})
    );
    assert_eq!(
        accesses["by_grant"],
        serde_json::json!({"approved": outcomes(1, 0, 0), "break-glass": outcomes(1, 0, 0)})
    );
    let custody = &report["custody"];
    assert_eq!(custody["access_requests"], 1, "{custody:#}");
    assert_eq!(custody["approvals"], 2, "{custody:#}");
    assert_eq!(custody["grants"], 1, "{custody:#}");
    assert_eq!(custody["break_glass_uses"], 1, "{custody:#}");
    assert_eq!(custody["break_glass_reviews"], 1, "{custody:#}");
    assert_eq!(custody["requests_denied"], 0, "{custody:#}");
    assert_eq!(
        report["data"],
        serde_json::json!({"exports": 1, "erasures": 0, "migrations": 0, "egress_pages": 1, "egress_rows": 1, "algorithm_runs": {}})
    );
    assert_eq!(report["alerts"]["by_name"]["break-glass"], 1, "{report:#}");
    assert_eq!(report["entries"]["first_index"], 0);
    let size = report["log"]["tree_size"].as_u64().unwrap();
    assert_eq!(report["entries"]["count"], size);
    assert_eq!(report["entries"]["last_index"], size - 1);

    // The report checks, also after more traffic has grown the log.
    assert_eq!(call(Method::GET, record, &chen, "again", None).0, 403);
    let check = |json: &str| {
        ok(
            &work,
            &[
                "report",
                "check",
                json,
                "--signer-key",
                &format!("@{}", s(&data.join("keys/custodian.vkey"))),
                "--url",
                &format!("{base}/log"),
                "--key",
                &format!("@{}", s(&log_key_file(&work, &data))),
            ],
        )
    };
    let (out, _) = check(&format!("{prefix}.json"));
    assert!(out.starts_with("report check: OK\n"), "{out}");

    // A period in the past has no accesses (and checks too).
    ok(
        &work,
        &[
            "report",
            "--url",
            &format!("{base}/log"),
            "--key",
            &format!("@{}", s(&log_key_file(&work, &data))),
            "--from",
            "2001-01-01",
            "--to",
            "2001-01-31",
            "--signer",
            s(&custodian_key),
        ],
    );
    let past = "sovereign-report-2001-01-01-2001-01-31.json";
    let report = read_json(&work.join(past));
    assert_eq!(report["accesses"]["total"], 0);
    assert_eq!(report["entries"]["count"], 0);
    check(past);
}

/// The log's verifier key, as `sovereign audit key` prints it, in a file.
fn log_key_file(work: &Path, data: &Path) -> PathBuf {
    let (key, _) = ok(work, &["audit", "key", "--data", s(data)]);
    let file = work.join("log.vkey");
    std::fs::write(&file, key).unwrap();
    file
}
