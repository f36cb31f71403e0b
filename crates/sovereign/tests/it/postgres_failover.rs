//! Two `sovereign serve` instances on one PostgreSQL log (and the `us-east` site in
//! PostgreSQL) under concurrent load; the one that integrates the log is killed with SIGKILL.
//! The other takes over: no entry of an answered request is lost, every acknowledged write is
//! readable, and `sovereign audit verify` accepts the log, consistent with the checkpoint
//! served before the kill. Skips without PostgreSQL binaries unless `SOVEREIGN_REQUIRE_PG=1`.

use std::time::{Duration, Instant};
use testkit::cast::{OPERATOR, VETTED_US};
use testkit::served::log_key;

use crate::support::load::{Load, check_nothing_lost, register_subject, writer_token};

#[test]
fn the_integrating_gateway_dies_and_the_other_takes_over() {
    let Some(pg) = pgtest::PgServer::start() else {
        return;
    };
    let log_url = pg.create_database("log");
    let site_url = pg.create_database("us_east");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    crate::support::init_with_stores(
        data,
        &[
            (r#"store = "sqlite:log/log.sqlite""#, &log_url),
            (r#"store = "sqlite:sites/us-east/store.sqlite""#, &site_url),
        ],
    );

    // The first gateway is alone when it starts, so it takes the integrator's lock.
    let mut integrator = crate::support::serve(data, "warn,sovereign=info,logstore=info");
    integrator.drain();
    crate::support::wait_for_checkpoint(&integrator.base, 1);
    let mut other = crate::support::serve(data, "warn,sovereign=info,logstore=info");
    let token = writer_token(data);
    let client = reqwest::blocking::Client::new();
    register_subject(&other.base, &token, "failover-subject");

    let bases = [integrator.base.clone(), other.base.clone()];
    let load = Load::start(&bases, &token, "failover-subject", 6);
    let mut before = None;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        if let Ok(response) = client.get(format!("{}/log/checkpoint", other.base)).send()
            && response.status().is_success()
        {
            before = Some(response.bytes().unwrap().to_vec());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let before_kill = load.count();
    integrator.signal("KILL");
    let _ = integrator.child.wait();

    // The other gateway's integrator takes the lock once PostgreSQL drops the dead session;
    // the load goes on through it.
    let killed = Instant::now();
    let takeover = loop {
        let line = other
            .lines
            .as_mut()
            .unwrap()
            .next()
            .expect("the other gateway exited")
            .unwrap();
        if line.contains("this gateway now integrates and signs the log") {
            break killed.elapsed();
        }
    };
    other.drain();
    std::thread::sleep(Duration::from_millis(1500));
    let acknowledged = load.finish();
    assert!(
        before_kill > 50 && acknowledged.len() > before_kill + 50,
        "too little load: {before_kill} answered before the kill, {} in all",
        acknowledged.len()
    );
    eprintln!(
        "takeover {takeover:?} after SIGKILL; {before_kill} requests answered before, {} in all",
        acknowledged.len()
    );
    assert!(
        takeover < Duration::from_secs(10),
        "takeover took {takeover:?}"
    );

    let key = log_key(&other.base);
    let verifier = tlog::note::Verifier::new(&key).unwrap();
    let before =
        tlog::open_checkpoint(&before.expect("a checkpoint was served"), &verifier).unwrap();
    let checkpoint = check_nothing_lost(
        &other.base,
        &token,
        "failover-subject",
        &acknowledged,
        Some(&before),
    );
    assert!(checkpoint.size > before.size);

    // The monitor's own tool accepts the log.
    let output = crate::support::sovereign()
        .args([
            "audit",
            "verify",
            "--url",
            &format!("{}/log", other.base),
            "--key",
            key.trim(),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Custody state is shared through the data folder: a kill switch applied through one
/// gateway holds on the other within seconds, without a restart.
#[test]
fn a_kill_switch_applied_through_one_gateway_holds_on_the_other() {
    let Some(pg) = pgtest::PgServer::start() else {
        return;
    };
    let log_url = pg.create_database("log");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    crate::support::init_with_stores(data, &[(r#"store = "sqlite:log/log.sqlite""#, &log_url)]);
    let mut first = crate::support::serve(data, "warn,sovereign=info");
    first.drain();
    crate::support::wait_for_checkpoint(&first.base, 1);
    let mut second = crate::support::serve(data, "warn,sovereign=info");
    second.drain();

    let alice = crate::support::token_of(data, &VETTED_US);
    let register = |base: &str, id: &str| {
        let response = reqwest::blocking::Client::new()
            .put(format!("{base}/v1/subjects/{id}"))
            .bearer_auth(&alice)
            .body(r#"{"jurisdiction":"US"}"#)
            .send()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().unwrap())
    };
    assert_eq!(register(&second.base, "u-1").0, 201);

    let olga = crate::support::token_of(data, &OPERATOR);
    let key = data.join("keys/custodian.key");
    let output = crate::support::sovereign()
        .args([
            "kill-switch",
            "suspend",
            "US",
            "--key",
            key.to_str().unwrap(),
        ])
        .args(["--token", &olga])
        .env("SOVEREIGN_URL", &first.base)
        .output()
        .unwrap();
    crate::support::assert_success(&output);

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 2;
    loop {
        let (status, body) = register(&second.base, &format!("u-{n}"));
        if status == 403 {
            assert!(body.contains("suspended"), "{body}");
            break;
        }
        assert_eq!(status, 201, "{body}");
        assert!(
            Instant::now() < deadline,
            "the other gateway still admits US registrations 10 s after the kill switch"
        );
        n += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
}
