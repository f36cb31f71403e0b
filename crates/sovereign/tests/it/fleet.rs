//! A fleet: three `sovereign serve` processes, each with its own copy of one initialised data
//! folder (as on three machines), every store that changes (the sites, the log, the custody
//! store and the key store) in one PostgreSQL the test starts. What one gateway does holds on
//! the others: records, the kill switch and its lifting, approvals, erasure; a gateway killed
//! with SIGKILL under load loses nothing answered; the monitors' tools accept the log. The
//! times from a change through one gateway to its enforcement on the others are printed
//! (`fleet: ...` lines; BENCHMARKS.md). Skips without PostgreSQL binaries unless
//! `SOVEREIGN_REQUIRE_PG=1`, and without cvc5 unless `SOVEREIGN_REQUIRE_CVC5=1`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use testkit::cast::{APPROVER_1, APPROVER_2, BREAK_GLASS, OPERATOR, VETTED_US};
use testkit::served::log_key;

use crate::support::load::{Load, check_nothing_lost, register_subject, writer_token};
use crate::support::{INCIDENT, SUPPORT_TICKET, Server, log_entries};

/// How long a change made through one gateway may take to hold on the others.
const FLEET_DEADLINE: Duration = Duration::from_secs(2);

#[test]
fn three_gateways_on_separate_data_folders_act_as_one() {
    if !crate::support::cvc5_present() {
        return;
    }
    let Some(pg) = pgtest::PgServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let folders: Vec<PathBuf> = (1..=3).map(|n| dir.path().join(format!("g{n}"))).collect();
    let urls = crate::support::every_store_on(&pg);
    let stores: Vec<(&str, &str)> = urls.iter().map(|(l, u)| (*l, u.as_str())).collect();
    crate::support::init_with_stores(&folders[0], &stores);
    // A low bulk-access threshold, for the fleet's rule to be seen.
    let config = folders[0].join("sovereign.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("bulk_subjects_per_minute = 100"));
    let text = text.replace(
        "bulk_subjects_per_minute = 100",
        "bulk_subjects_per_minute = 4",
    );
    std::fs::write(&config, text).unwrap();
    // The documented set-up: one initialised folder, copied whole to every machine.
    for folder in &folders[1..] {
        copy_folder(&folders[0], folder);
    }

    // Started together on an empty custody database: the first sets are activated once.
    let mut gateways: Vec<Server> = std::thread::scope(|scope| {
        let starting: Vec<_> = folders
            .iter()
            .map(|folder| scope.spawn(move || crate::support::serve(folder, "warn,sovereign=info")))
            .collect();
        starting.into_iter().map(|s| s.join().unwrap()).collect()
    });
    for gateway in &mut gateways {
        gateway.drain();
    }
    let bases: Vec<String> = gateways.iter().map(|g| g.base.clone()).collect();
    let data = &folders[0];
    let alice = crate::support::token_of(data, &VETTED_US);
    let http = reqwest::blocking::Client::new();
    let call = |base: &str, method: Method, path: &str, body: Option<&str>| {
        crate::support::governed(
            &http,
            method,
            &format!("{base}{path}"),
            &alice,
            "ticket 42",
            body,
        )
        .0
    };

    // A record written through one gateway reads decrypted through the others.
    let record = "/v1/subjects/u-1/records/profile/main";
    let activity = "/v1/subjects/u-1/records/activity/main";
    let subject = Some(r#"{"jurisdiction":"US"}"#);
    assert_eq!(
        call(&bases[0], Method::PUT, "/v1/subjects/u-1", subject),
        201
    );
    let profile = r#"{"email":"ada@example.com","display_name":"Ada"}"#;
    assert_eq!(call(&bases[0], Method::PUT, record, Some(profile)), 200);
    for base in &bases[1..] {
        let read: Value = http
            .get(format!("{base}{record}"))
            .bearer_auth(&alice)
            .header("Sovereign-Purpose", "ticket 42")
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(read["fields"]["email"], "ada@example.com", "{read}");
    }

    // The kill switch applied through one gateway holds on the others, and so does lifting it.
    let olga = crate::support::token_of(data, &OPERATOR);
    let custodian_key = data.join("keys/custodian.key");
    let kill_switch = |base: &str, command: &str| {
        let output = crate::support::sovereign()
            .args(["kill-switch", command, "US", "--key"])
            .arg(&custodian_key)
            .args(["--token", &olga, "--url", base])
            .output()
            .unwrap();
        crate::support::assert_success(&output);
        Instant::now()
    };
    let applied = kill_switch(&bases[0], "suspend");
    for base in &bases[1..] {
        let took = until(applied, "the kill switch to hold", || {
            call(base, Method::GET, record, None) == 403
        });
        eprintln!("fleet: kill switch applied through one gateway held on {base} after {took:?}");
    }
    let lifted = kill_switch(&bases[1], "lift");
    for base in [&bases[0], &bases[2]] {
        let took = until(lifted, "the lifting to hold", || {
            call(base, Method::GET, record, None) == 200
        });
        eprintln!("fleet: kill switch lifted through one gateway held on {base} after {took:?}");
    }

    // An access request made on one gateway, approved on the second and the third, opens the
    // access on the first.
    let watched = Some(r#"{"watch_history":"v1,v2"}"#);
    assert_eq!(call(&bases[0], Method::PUT, activity, watched), 403);
    let cli = |base: &str, token: &str, args: &[&str]| {
        let output = crate::support::sovereign()
            .args(args)
            .args(["--url", base, "--token", token, "--json"])
            .output()
            .unwrap();
        crate::support::assert_success(&output);
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    let request = ["access", "request", "--action", "write", "--subject", "u-1"];
    let request = cli(&bases[0], &alice, &[&request[..], &SUPPORT_TICKET].concat());
    let id = request["id"].as_str().unwrap();
    let carol = crate::support::token_of(data, &APPROVER_1);
    let dave = crate::support::token_of(data, &APPROVER_2);
    cli(&bases[1], &carol, &["access", "approve", id]);
    let approved = Instant::now();
    let last = cli(&bases[2], &dave, &["access", "approve", id]);
    assert_eq!(last["status"], "approved", "{last}");
    let took = until(approved, "the grant to open access", || {
        call(&bases[0], Method::PUT, activity, watched) == 200
    });
    eprintln!("fleet: a grant approved on two other gateways opened access after {took:?}");

    // Erasure (under a break-glass grant taken through another gateway) through one gateway
    // makes the record unreadable through all.
    let frank = crate::support::token_of(data, &BREAK_GLASS);
    let glass = [
        "access",
        "break-glass",
        "--action",
        "delete",
        "--subject",
        "u-1",
    ];
    cli(&bases[1], &frank, &[&glass[..], &INCIDENT].concat());
    let erase = || {
        let url = format!("{}/v1/subjects/u-1", bases[2]);
        crate::support::governed(&http, Method::DELETE, &url, &frank, "incident 7", None).0
    };
    until(
        Instant::now(),
        "the break-glass grant to open erasure",
        || erase() == 200,
    );
    // An id that names no subject is answered as a denying jurisdiction would be (403); a
    // gateway that remembered where the subject was decides on that and then finds nothing
    // there (404). Either way nothing is served.
    for base in &bases {
        let status = call(base, Method::GET, record, None);
        assert!(status == 403 || status == 404, "{base}: {status}");
    }

    // Bulk access counts across the fleet and is raised once: alice touches seven subjects
    // in a minute, never more than three through one gateway (the threshold is four).
    for n in 1..=6 {
        let url = format!("/v1/subjects/b-{n}");
        assert_eq!(call(&bases[n % 3], Method::PUT, &url, subject), 201);
    }
    let bulk_alerts = || {
        log_entries(&bases[1])
            .iter()
            .filter(|e| e["kind"] == "alert" && e["alert"] == "bulk-access")
            .cloned()
            .collect::<Vec<Value>>()
    };
    until_within(
        Duration::from_secs(5),
        Instant::now(),
        "the fleet's bulk-access alert",
        || !bulk_alerts().is_empty(),
    );
    std::thread::sleep(Duration::from_millis(2500));
    let alerts = bulk_alerts();
    assert_eq!(alerts.len(), 1, "raised once: {alerts:?}");
    assert_eq!(alerts[0]["details"]["scope"], "fleet", "{}", alerts[0]);

    // Every gateway's /metrics counts the whole fleet beside its own decisions.
    let metrics = http
        .get(format!("{}/metrics", bases[2]))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let sum = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (own, fleet) = (
        sum("sovereign_decisions_total"),
        sum("sovereign_fleet_decisions_total"),
    );
    assert!(own > 0.0 && fleet > own, "own {own}, fleet {fleet}");

    // A gateway killed under load: the others keep serving, nothing answered is lost.
    let token = writer_token(data);
    register_subject(&bases[1], &token, "fleet-load");
    let load = Load::start(&bases, &token, "fleet-load", 6);
    std::thread::sleep(Duration::from_millis(2000));
    let before_kill = load.count();
    gateways[0].signal("KILL");
    let _ = gateways[0].child.wait();
    std::thread::sleep(Duration::from_millis(2500));
    let acknowledged = load.finish();
    assert!(
        before_kill > 20 && acknowledged.len() > before_kill + 20,
        "too little load: {before_kill} answered before the kill, {} in all",
        acknowledged.len()
    );
    check_nothing_lost(&bases[1], &token, "fleet-load", &acknowledged, None);

    // One activation of the first sets, for three gateways that started together.
    let entries = log_entries(&bases[2]);
    for event in ["policy-activated", "invariants-activated"] {
        let count = entries.iter().filter(|e| e["event"] == event).count();
        assert_eq!(count, 1, "{event} entries");
    }
    let starts = entries.iter().filter(|e| e["kind"] == "config").count();
    assert!(starts >= 3, "{starts} start entries");

    // A gateway set up with keys of its own refuses to join the fleet, naming them.
    let stranger = dir.path().join("stranger");
    crate::support::init_with_stores(&stranger, &stores);
    let output = crate::support::sovereign()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&stranger)
        .output()
        .unwrap();
    let (_, err) = crate::support::text(&output);
    assert!(!output.status.success(), "{err}");
    assert!(err.contains("differ from those of the fleet"), "{err}");
    for key in [
        "log signer key",
        "log.pseudonym_key",
        "keys.kek",
        "custody.signers",
    ] {
        assert!(err.contains(key), "{key}: {err}");
    }

    // The monitors' tools accept the log.
    let key = log_key(&bases[1]);
    for command in ["verify", "replay"] {
        let output = crate::support::sovereign()
            .args(["audit", command, "--url", &format!("{}/log", bases[2])])
            .args(["--key", key.trim()])
            .output()
            .unwrap();
        let (out, err) = crate::support::text(&output);
        assert!(output.status.success(), "audit {command}: {out}{err}");
        if command == "replay" {
            assert!(out.contains("mismatches: 0\n"), "{out}");
        }
    }

    // A subject's history, from one gateway's own index of the shared log, lists the
    // writes every gateway took, and checks against the log as a mirror.
    let subject = crate::support::data_subject_token(data, "fleet-load");
    let history = dir.path().join("history.json");
    let output = crate::support::sovereign()
        .args([
            "subject",
            "accesses",
            "fleet-load",
            "--all",
            "--limit",
            "1000",
        ])
        .args(["--url", &bases[2], "--token", &subject, "--out"])
        .arg(&history)
        .output()
        .unwrap();
    let (out, err) = crate::support::text(&output);
    assert!(output.status.success(), "{out}{err}");
    let output = crate::support::sovereign()
        .args(["subject", "verify"])
        .arg(&history)
        .args(["--key", key.trim(), "--mirror", &bases[1]])
        .output()
        .unwrap();
    let (out, err) = crate::support::text(&output);
    assert!(output.status.success(), "{out}{err}");
    let listed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&history).unwrap()).unwrap();
    // Every answer the load was given names its decision's entry: each is in the history.
    let indexes: std::collections::BTreeSet<u64> = listed["pages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["entries"].as_array().unwrap())
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    let missing: Vec<u64> = acknowledged
        .iter()
        .map(|a| a.index)
        .filter(|i| !indexes.contains(i))
        .collect();
    assert!(
        missing.is_empty(),
        "answered but not in the history: {missing:?}"
    );
}

/// Polls `check` every 20 ms until it holds; how long after `since` it did. Fails the test
/// after [`FLEET_DEADLINE`].
fn until(since: Instant, what: &str, check: impl FnMut() -> bool) -> Duration {
    until_within(FLEET_DEADLINE, since, what, check)
}

fn until_within(
    deadline: Duration,
    since: Instant,
    what: &str,
    mut check: impl FnMut() -> bool,
) -> Duration {
    loop {
        if check() {
            return since.elapsed();
        }
        assert!(since.elapsed() < deadline, "waited {deadline:?} for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A gateway whose custody store (PostgreSQL) cannot be reached stops deciding once
/// `custody.unreachable_after` (5 s) has passed without reaching it, since a kill switch or a
/// revocation made through another gateway may be waiting there; custodian changes fail at
/// once. It serves again as soon as the store is back.
#[test]
fn a_gateway_that_cannot_reach_the_custody_store_fails_closed() {
    if !crate::support::cvc5_present() {
        return;
    }
    let Some(pg) = pgtest::PgServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let custody_url = pg.create_database("custody");
    crate::support::init_with_stores(
        &data,
        &[(r#"store = "custody/custody.sqlite""#, &custody_url)],
    );
    let mut gateway = crate::support::serve(&data, "warn,sovereign=info");
    gateway.drain();
    let alice = crate::support::token_of(&data, &VETTED_US);
    let http = reqwest::blocking::Client::new();
    let record = format!("{}/v1/subjects/u-1/records/profile/main", gateway.base);
    let read = || {
        let response = http
            .get(&record)
            .bearer_auth(&alice)
            .header("Sovereign-Purpose", "ticket 42")
            .send()
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().unwrap_or_default();
        (
            status,
            body["error"].as_str().unwrap_or_default().to_string(),
        )
    };
    let subject = Some(r#"{"jurisdiction":"US"}"#);
    let url = format!("{}/v1/subjects/u-1", gateway.base);
    assert_eq!(
        crate::support::governed(&http, Method::PUT, &url, &alice, "", subject).0,
        201
    );
    let profile = Some(r#"{"display_name":"Ada"}"#);
    let put = crate::support::governed(&http, Method::PUT, &record, &alice, "setup", profile);
    assert_eq!(put.0, 200);

    // The custody database refuses connections, and the gateway's are cut.
    let mut admin = pg.client("postgres");
    let reachable = |admin: &mut postgres::Client, allowed: bool| {
        admin
            .batch_execute(&format!(
                "ALTER DATABASE custody ALLOW_CONNECTIONS {allowed}"
            ))
            .unwrap();
        if !allowed {
            admin
                .batch_execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'custody'",
                )
                .unwrap();
        }
    };
    reachable(&mut admin, false);
    let cut = Instant::now();
    let olga = crate::support::token_of(&data, &OPERATOR);
    let output = crate::support::sovereign()
        .args(["kill-switch", "suspend", "US", "--key"])
        .arg(data.join("keys/custodian.key"))
        .args(["--token", &olga, "--url", &gateway.base])
        .output()
        .unwrap();
    let (_, err) = crate::support::text(&output);
    assert!(!output.status.success(), "{err}");
    assert!(err.contains("custody_unreachable"), "{err}");
    let took = until_within(Duration::from_secs(10), cut, "reads to be refused", || {
        read() == (503, "custody_unreachable".into())
    });
    assert!(took >= Duration::from_secs(4), "refused after {took:?}");
    eprintln!("fleet: custody store cut off; governed reads refused after {took:?}");

    reachable(&mut admin, true);
    let back = Instant::now();
    let took = until_within(
        Duration::from_secs(10),
        back,
        "reads to be served again",
        || read().0 == 200,
    );
    eprintln!("fleet: custody store back; governed reads served again after {took:?}");
}

/// Copies a data folder with its modes (the keys are 0600), as an operator would with
/// `cp -a` or `rsync -a`.
fn copy_folder(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}
