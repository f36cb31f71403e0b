//! A check straight after an action, as a monitoring script runs it against a live gateway:
//! the checkpoint lags the log by up to `log.checkpoint_interval_ms`, and the tools say so
//! (`not_yet_covered`), wait for it (`--wait`), or keep following the log (`--watch`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use serde_json::Value;

use crate::support::{Fresh, serve, sovereign, text};

/// The log's verifier key, from the data folder.
fn log_key(data: &Path) -> String {
    let output = sovereign()
        .args(["audit", "key", "--data", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// Registers a new US subject as the load's writer: the index of the entry the gateway
/// answered with.
fn act(base: &str, data: &Path, subject: &str) -> u64 {
    let response = reqwest::blocking::Client::new()
        .put(format!("{base}/v1/subjects/{subject}"))
        .bearer_auth(crate::support::load::writer_token(data))
        .body(r#"{"jurisdiction":"US"}"#)
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    response.headers()["Sovereign-Log-Index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn verify_json(base: &str, key: &str, extra: &[&str]) -> (Option<i32>, Value, String) {
    let output = sovereign()
        .args(["audit", "verify", "--url", base, "--key", key, "--json"])
        .args(extra)
        .output()
        .unwrap();
    let (out, err) = text(&output);
    let answer = if out.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&out).unwrap()
    };
    (output.status.code(), answer, err)
}

/// `--wait` covers what the gateway answered before it; without it, what is not covered yet
/// is counted, never silently left out.
#[test]
fn wait_covers_every_answer_given_before_it() {
    let fresh = Fresh::start();
    let base = &fresh.server.base;
    let key = log_key(&fresh.data);
    let index = act(base, &fresh.data, "u-fresh-1");

    let (code, answer, err) = verify_json(base, &key, &[]);
    assert_eq!(code, Some(0), "{err}");
    let size = answer["checkpoint"]["size"].as_u64().unwrap();
    let pending = answer["not_yet_covered"].as_u64().unwrap();
    // Whatever the timing, the entries checked and the ones said to be pending account
    // for every answer given.
    assert!(size + pending > index, "{answer}");
    assert_eq!(pending > 0, err.contains("--wait waits for them"), "{err}");

    let index = act(base, &fresh.data, "u-fresh-2");
    let (code, answer, err) = verify_json(base, &key, &["--wait"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        answer["checkpoint"]["size"].as_u64().unwrap() > index,
        "{answer}"
    );
}

/// A checkpoint that does not come: the lag is said, and `--wait` gives up with the
/// unreachable status (3) rather than check a log that leaves the answers out.
#[test]
fn a_lagging_checkpoint_is_said_and_waited_for_with_a_limit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let output = sovereign()
        .args(["init", "--data", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success());
    let config = data.join("sovereign.toml");
    let toml = std::fs::read_to_string(&config).unwrap();
    assert!(toml.contains("checkpoint_interval_ms = 500\n"));
    // One checkpoint a minute: far longer than this test.
    std::fs::write(
        &config,
        toml.replace(
            "checkpoint_interval_ms = 500\n",
            "checkpoint_interval_ms = 60000\n",
        ),
    )
    .unwrap();
    let mut server = serve(&data, "warn,sovereign=info");
    server.drain();
    let base = &server.base;
    let key = log_key(&data);
    let index = act(base, &data, "u-lag-1");

    let (code, answer, err) = verify_json(base, &key, &[]);
    assert_eq!(code, Some(0), "{err}");
    let size = answer["checkpoint"]["size"].as_u64().unwrap();
    assert!(size <= index, "{answer}");
    assert_eq!(
        answer["not_yet_covered"].as_u64().unwrap(),
        index + 1 - size,
        "{answer}"
    );
    assert!(
        err.contains(&format!(
            "note: the gateway's log holds {} more entr",
            index + 1 - size
        )),
        "{err}"
    );

    let (code, answer, err) = verify_json(base, &key, &["--wait=1s"]);
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(answer, Value::Null);
    assert!(
        err.contains("the checkpoint served covers") && err.contains("when the wait began"),
        "{err}"
    );
}

/// `--watch` follows the live log: a line per new checkpoint, each consistent with the last.
#[test]
fn watch_follows_the_live_log() {
    let fresh = Fresh::start();
    let base = &fresh.server.base;
    let key = log_key(&fresh.data);
    act(base, &fresh.data, "u-watch-0");
    let mut child = sovereign()
        .args([
            "audit",
            "verify",
            "--url",
            base,
            "--key",
            &key,
            "--wait",
            "--watch=100ms",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains(": OK, trusted on first use; "), "{first}");
    let index = act(base, &fresh.data, "u-watch-1");
    // The next checkpoint that covers the new entry is reported as grown from the last.
    let line = loop {
        let line = lines.next().unwrap().unwrap();
        let size: u64 = line
            .split("checkpoint of ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .unwrap()
            .parse()
            .unwrap();
        if size > index {
            break line;
        }
    };
    assert!(
        line.contains(" (+") && line.contains(": OK, consistent with the last; "),
        "{line}"
    );
    let _ = child.kill();
    let _ = child.wait();
}
