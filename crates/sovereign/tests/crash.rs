//! Killed with SIGKILL under load, the gateway loses no acknowledged write and no log entry of
//! an answered request, and after a restart its log verifies and is consistent with the last
//! checkpoint it served before the kill.

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn serve(data: &std::path::Path) -> common::Server {
    let mut server = common::serve(data, "warn,sovereign=info");
    server.drain();
    server
}

fn token(data: &std::path::Path) -> String {
    common::token(
        data,
        &[
            "--sub",
            "svc-writer",
            "--entity",
            "usds",
            "--location",
            "US",
            "--clearance",
            "us-data",
            "--role",
            "service",
        ],
    )
}

#[derive(Debug, Clone)]
struct Acknowledged {
    index: u64,
    action: &'static str,
    key: String,
}

#[test]
fn sigkill_under_load_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = serve(&data);
    let base = server.base.clone();
    let token = token(&data);
    let client = reqwest::blocking::Client::new();
    let status = client
        .put(format!("{base}/v1/subjects/crash-subject"))
        .bearer_auth(&token)
        .body(r#"{"jurisdiction":"US"}"#)
        .send()
        .unwrap()
        .status();
    assert_eq!(status, 201);

    let acknowledged: Arc<Mutex<Vec<Acknowledged>>> = Arc::default();
    let last_checkpoint: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..6 {
        let (base, token, acknowledged, stop) = (
            base.clone(),
            token.clone(),
            acknowledged.clone(),
            stop.clone(),
        );
        workers.push(std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 5000 {
                // Two writes, then a read of the first of them.
                let (action, key) = if i % 3 == 2 {
                    ("read", format!("w{worker}-{}", i - 2))
                } else {
                    ("write", format!("w{worker}-{i}"))
                };
                let url = format!("{base}/v1/subjects/crash-subject/records/profile/{key}");
                let request = if action == "read" {
                    client.get(&url)
                } else {
                    client
                        .put(&url)
                        .body(format!(r#"{{"display_name":"user {i}"}}"#))
                };
                let Ok(response) = request
                    .bearer_auth(&token)
                    .header("Sovereign-Purpose", "crash test")
                    .send()
                else {
                    break; // the server is gone
                };
                if response.status().is_success() {
                    let index = response.headers()["sovereign-log-index"]
                        .to_str()
                        .unwrap()
                        .parse()
                        .unwrap();
                    acknowledged
                        .lock()
                        .unwrap()
                        .push(Acknowledged { index, action, key });
                }
                i += 1;
            }
        }));
    }
    // Let the load run, remembering the checkpoints served, then kill the server mid-flight.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        if let Ok(response) = client.get(format!("{base}/log/checkpoint")).send()
            && response.status().is_success()
        {
            *last_checkpoint.lock().unwrap() = Some(response.bytes().unwrap().to_vec());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Command::new("kill")
        .args(["-KILL", &server.child.id().to_string()])
        .status()
        .unwrap();
    let _ = server.child.wait();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for worker in workers {
        worker.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 50,
        "too little load: {}",
        acknowledged.len()
    );

    // Restart on the same data and check everything.
    let restarted = serve(&data);
    let base = restarted.base.clone();
    let key = client
        .get(format!("{base}/log/key"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let verifier = tlog::note::Verifier::new(key.trim()).unwrap();
    let before = last_checkpoint
        .lock()
        .unwrap()
        .clone()
        .expect("a checkpoint was served");
    let before = tlog::open_checkpoint(&before, &verifier).unwrap();
    // The restarted gateway logs its start; wait until a checkpoint covers it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let fetcher = common::ServedLog::new(&base);
    let mut entries: Vec<Vec<u8>> = Vec::new();
    let checkpoint = loop {
        entries.clear();
        let result = tlog::verify_log(
            &fetcher,
            &verifier,
            Some(&before),
            &mut |_, _| {},
            &mut |_, entry| {
                entries.push(entry.to_vec());
                Ok(())
            },
        );
        let checkpoint = result.expect("the log must verify and stay consistent after the crash");
        if checkpoint.size as usize > acknowledged.iter().map(|a| a.index as usize).max().unwrap()
            || Instant::now() > deadline
        {
            break checkpoint;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(checkpoint.size >= before.size);
    for ack in &acknowledged {
        let entry = entries
            .get(ack.index as usize)
            .unwrap_or_else(|| panic!("acknowledged entry {} is lost", ack.index));
        let entry: serde_json::Value = serde_json::from_slice(entry).unwrap();
        assert_eq!(entry["action"], ack.action, "entry {}", ack.index);
        assert_eq!(entry["outcome"], "allow");
    }
    // Every acknowledged write is still readable.
    for ack in acknowledged.iter().filter(|a| a.action == "write") {
        let response = client
            .get(format!(
                "{base}/v1/subjects/crash-subject/records/profile/{}",
                ack.key
            ))
            .bearer_auth(&token)
            .header("Sovereign-Purpose", "crash check")
            .send()
            .unwrap();
        assert_eq!(
            response.status(),
            200,
            "acknowledged write {} is lost",
            ack.key
        );
    }
}
