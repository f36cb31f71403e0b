//! The residency story as a new user runs it: `init --seed-legacy`, a scan that fails, a
//! migration killed midway and run again, a scan that passes, and a log that verifies with
//! exactly one evidence entry per moved subject.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::cast::{OPERATOR, VETTED_US};
use testkit::served::{get_text, log_key};

use crate::support::{sovereign, token_of};

const SUBJECTS: usize = 120;

fn misplaced(http: &reqwest::blocking::Client, base: &str, token: &str) -> u64 {
    let scan: serde_json::Value = http
        .get(format!("{base}/v1/residency/scan"))
        .bearer_auth(token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    scan["misplaced"].as_u64().unwrap()
}

#[test]
fn a_killed_migration_finishes_when_run_again_with_nothing_lost_or_duplicated() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let init = sovereign()
        .args([
            "init",
            "--data",
            data_arg,
            "--seed-legacy",
            &SUBJECTS.to_string(),
        ])
        .output()
        .unwrap();
    crate::support::assert_success(&init);
    assert!(
        String::from_utf8_lossy(&init.stdout)
            .contains(&format!("placed {SUBJECTS} legacy US subject(s)"))
    );

    let mut server = crate::support::serve(&data, "warn,sovereign=info");
    server.drain();
    let base = server.base.clone();
    let olga = token_of(&data, &OPERATOR);
    let alice = token_of(&data, &VETTED_US);
    let http = reqwest::blocking::Client::new();
    let cli = |args: &[&str]| {
        sovereign()
            .args(args)
            .args(["--url", &base, "--token", &olga])
            .output()
            .unwrap()
    };

    // The scan fails, naming the site and the counts.
    let scan = cli(&["residency", "scan"]);
    // Misplaced subjects are a failed check: exit status 1.
    assert_eq!(scan.status.code(), Some(1));
    let out = String::from_utf8_lossy(&scan.stdout);
    assert!(
        out.contains(&format!(
            "sg-legacy: {SUBJECTS} subject(s), {} record(s)",
            2 * SUBJECTS
        )),
        "{out}"
    );

    // What a legacy subject holds before it moves (read as usual, decided and logged).
    let read = |id: &str| -> serde_json::Value {
        http.get(format!("{base}/v1/subjects/{id}/records/profile/main"))
            .bearer_auth(&alice)
            .header("Sovereign-Purpose", "check")
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let before = read("legacy-us-0007");
    assert_eq!(before["site"], "sg-legacy", "{before}");

    // A migration killed midway...
    let mut migrate = Command::new(env!("CARGO_BIN_EXE_sovereign"))
        .args([
            "residency",
            "migrate",
            "--from",
            "sg-legacy",
            "--url",
            &base,
            "--token",
            &olga,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = misplaced(&http, &base, &olga);
        // Kill it as soon as it has visibly started: early enough that it cannot finish first.
        if left <= SUBJECTS as u64 - 10 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    migrate.kill().unwrap();
    migrate.wait().unwrap();
    let left = misplaced(&http, &base, &olga);
    assert!(
        left > 0,
        "the migration should have been killed midway (it finished first)"
    );

    // ...finishes when run again.
    let again = cli(&["residency", "migrate", "--from", "sg-legacy"]);
    crate::support::assert_success(&again);
    let scan = cli(&["residency", "scan"]);
    assert!(
        scan.status.success(),
        "{}",
        String::from_utf8_lossy(&scan.stdout)
    );
    assert!(String::from_utf8_lossy(&scan.stdout).contains("residency scan: OK"));

    let after = read("legacy-us-0007");
    assert_eq!(after["site"], "us-east", "{after}");
    assert_eq!(after["fields"], before["fields"], "nothing lost");

    // The log verifies, with exactly one evidence entry per subject.
    let key = log_key(&base);
    // Nothing else is logged from here on: wait until a checkpoint covers it all (the size
    // stays put for more than two checkpoint intervals).
    let size = || {
        let note = get_text(&format!("{base}/log/checkpoint"));
        note.lines().nth(1).unwrap().parse::<u64>().unwrap()
    };
    let mut last = size();
    loop {
        std::thread::sleep(Duration::from_millis(1200));
        let now = size();
        if now == last {
            break;
        }
        last = now;
    }
    let verify = sovereign()
        .args([
            "audit",
            "verify",
            "--url",
            &format!("{base}/log"),
            "--key",
            key.trim(),
        ])
        .output()
        .unwrap();
    crate::support::assert_success(&verify);
    let verifier = tlog::note::Verifier::new(key.trim()).unwrap();
    let mut moved = std::collections::BTreeMap::new();
    tlog::verify_log(
        &crate::support::ServedLog::new(&base),
        &verifier,
        None,
        &mut |_, _| {},
        &mut |_, entry| {
            let entry: serde_json::Value = serde_json::from_slice(entry).unwrap();
            if entry["kind"] == "migration" {
                *moved
                    .entry(entry["details"]["subject"].as_str().unwrap().to_string())
                    .or_insert(0) += 1;
            }
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(moved.len(), SUBJECTS, "one evidence entry per subject");
    assert!(
        moved.values().all(|n| *n == 1),
        "no subject moved twice: {moved:?}"
    );
}
