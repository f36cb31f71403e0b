//! `sovereign demo`, run as a user runs it: it prints the dashboard's address, the scenario
//! happens live behind it (visible in the metrics while it runs), and at the end the monitor's
//! verification passes and the temporary data folder is gone.

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;
use testkit::served::get_text;

use crate::support::sovereign;

#[test]
fn the_demo_runs_the_scenario_live_and_verifies_the_log_at_the_end() {
    let mut child = sovereign()
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--duration",
            "10s",
            "--subjects",
            "10",
            "--rate",
            "40",
        ])
        .env("SOVEREIGN_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            println!("demo> {line}");
            let _ = lines_tx.send(line);
        }
    });

    let mut printed = Vec::new();
    let mut next = || {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("the demo printed nothing for a minute");
        printed.push(line.clone());
        line
    };
    let (dashboard, data) = {
        let (mut dashboard, mut data) = (None, None);
        while dashboard.is_none() || data.is_none() {
            let line = next();
            if let Some(rest) = line.trim().strip_prefix("dashboard:") {
                dashboard = Some(rest.trim().to_string());
            }
            if let Some(rest) = line.trim().strip_prefix("data folder:") {
                data = Some(std::path::PathBuf::from(rest.trim()));
            }
        }
        (dashboard.unwrap(), data.unwrap())
    };
    let (base, token) = dashboard.split_once("/#token=").expect("URL with a token");
    assert!(data.is_dir(), "{}", data.display());

    // The dashboard is served, and the monitor's token in the address opens the stream.
    let http = reqwest::blocking::Client::new();
    let page = http.get(format!("{base}/")).send().unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().unwrap().contains("<html"));
    let stream = http
        .get(format!("{base}/v1/analytics/stream"))
        .bearer_auth(token)
        .send()
        .unwrap();
    assert_eq!(stream.status(), 200);
    drop(stream);

    // While it runs, the metrics show the cast at work: vetted staff allowed, CN denied.
    let mut seen = false;
    for _ in 0..50 {
        let metrics = get_text(&format!("{base}/metrics"));
        let has = |want: &[&str]| {
            metrics.lines().any(|l| {
                l.starts_with("sovereign_decisions_total{") && want.iter().all(|w| l.contains(w))
            })
        };
        if has(&[r#"outcome="allow""#, r#"location="US""#, r#"entity="usds""#])
            && has(&[r#"outcome="deny""#, r#"location="CN""#])
        {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        seen,
        "the metrics never showed allowed US and denied CN decisions"
    );

    let status = child.wait().unwrap();
    reader.join().unwrap();
    while let Ok(line) = lines.try_recv() {
        printed.push(line);
    }
    let output = printed.join("\n");
    assert!(status.success(), "{output}");
    assert!(
        output.contains("population: 10 US and 5 SG subjects"),
        "{output}"
    );
    assert!(output.contains("audit verify: OK"), "{output}");
    for kind in [
        "access",
        "alert",
        "custody",
        "egress",
        "migration",
        "algorithm-run",
    ] {
        assert!(
            output.lines().any(|l| l.trim_start().starts_with(kind)),
            "no {kind} entries in the verified log:\n{output}"
        );
    }
    assert!(!data.exists(), "the temporary folder is removed");
}

#[test]
fn the_demo_refuses_a_folder_that_holds_something() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let output = sovereign()
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--duration",
            "1s",
            "--data",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not empty"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("notes.txt")).unwrap(),
        "mine"
    );
}
