//! Write-and-read load on one subject's records through one or more gateways, and the check
//! that nothing acknowledged was lost: the crash and failover tests share both.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use testkit::cast::{VETTED_US, Who};
use testkit::served::log_verifier;

/// The load's writer: vetted US staff, a service.
const WRITER: Who = Who {
    sub: "svc-writer",
    roles: &["service"],
    ..VETTED_US
};

/// Registers `subject` (a US subject) through the gateway at `base`, as the load's writer.
pub fn register_subject(base: &str, token: &str, subject: &str) {
    let status = reqwest::blocking::Client::new()
        .put(format!("{base}/v1/subjects/{subject}"))
        .bearer_auth(token)
        .body(r#"{"jurisdiction":"US"}"#)
        .send()
        .unwrap()
        .status();
    assert_eq!(status, 201);
}

/// A token for the load's writer.
pub fn writer_token(data: &std::path::Path) -> String {
    super::token_of(data, &WRITER)
}

/// A request the gateway answered with success, and the log entry it named.
#[derive(Debug, Clone)]
pub struct Acknowledged {
    pub index: u64,
    pub action: &'static str,
    pub key: String,
}

/// Worker threads writing records of `subject` and reading them back.
pub struct Load {
    acknowledged: Arc<Mutex<Vec<Acknowledged>>>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `workers` threads. Worker w sends to `bases[w % n]` and, when that gateway is
    /// gone, moves to the next; it stops when none answers.
    pub fn start(bases: &[String], token: &str, subject: &str, workers: usize) -> Load {
        let acknowledged: Arc<Mutex<Vec<Acknowledged>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..workers)
            .map(|worker| {
                let (bases, token, subject) =
                    (bases.to_vec(), token.to_string(), subject.to_string());
                let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
                std::thread::spawn(move || {
                    let client = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(10))
                        .build()
                        .unwrap();
                    let mut gateway = worker % bases.len();
                    let mut failures = 0;
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) && i < 5000 && failures < bases.len() {
                        // Two writes, then a read of the first of them.
                        let (action, key) = if i % 3 == 2 {
                            ("read", format!("w{worker}-{}", i - 2))
                        } else {
                            ("write", format!("w{worker}-{i}"))
                        };
                        let url = format!(
                            "{}/v1/subjects/{subject}/records/profile/{key}",
                            bases[gateway]
                        );
                        let request = if action == "read" {
                            client.get(&url)
                        } else {
                            client
                                .put(&url)
                                .body(format!(r#"{{"display_name":"user {i}"}}"#))
                        };
                        let Ok(response) = request
                            .bearer_auth(&token)
                            .header("Sovereign-Purpose", "load test")
                            .send()
                        else {
                            // This gateway is gone: the request was never answered.
                            failures += 1;
                            gateway = (gateway + 1) % bases.len();
                            continue;
                        };
                        failures = 0;
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
                })
            })
            .collect();
        Load {
            acknowledged,
            stop,
            workers,
        }
    }

    /// How many requests were acknowledged so far.
    pub fn count(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    /// Stops the workers and answers what was acknowledged.
    pub fn finish(self) -> Vec<Acknowledged> {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.join().unwrap();
        }
        self.acknowledged.lock().unwrap().clone()
    }
}

/// Checks the log served at `base` against every acknowledged request: the log verifies (and
/// is consistent with `before`), every acknowledged request's entry is in it with its action
/// and outcome, and every acknowledged write is still readable. Answers the checkpoint.
pub fn check_nothing_lost(
    base: &str,
    token: &str,
    subject: &str,
    acknowledged: &[Acknowledged],
    before: Option<&tlog::Checkpoint>,
) -> tlog::Checkpoint {
    let client = reqwest::blocking::Client::new();
    let verifier = log_verifier(base);
    let last = acknowledged.iter().map(|a| a.index).max().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let fetcher = super::ServedLog::new(base);
    let mut entries: Vec<Vec<u8>> = Vec::new();
    let checkpoint = loop {
        entries.clear();
        let result = tlog::verify_log(
            &fetcher,
            &verifier,
            before,
            &mut |_, _| {},
            &mut |_, entry| {
                entries.push(entry.to_vec());
                Ok(())
            },
        );
        let checkpoint = result.expect("the log must verify and stay consistent");
        if checkpoint.size > last || Instant::now() > deadline {
            break checkpoint;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for ack in acknowledged {
        let entry = entries
            .get(ack.index as usize)
            .unwrap_or_else(|| panic!("acknowledged entry {} is lost", ack.index));
        let entry: serde_json::Value = serde_json::from_slice(entry).unwrap();
        assert_eq!(entry["action"], ack.action, "entry {}", ack.index);
        assert_eq!(entry["outcome"], "allow");
    }
    for ack in acknowledged.iter().filter(|a| a.action == "write") {
        let response = client
            .get(format!(
                "{base}/v1/subjects/{subject}/records/profile/{}",
                ack.key
            ))
            .bearer_auth(token)
            .header("Sovereign-Purpose", "loss check")
            .send()
            .unwrap();
        assert_eq!(
            response.status(),
            200,
            "acknowledged write {} is lost",
            ack.key
        );
    }
    checkpoint
}
