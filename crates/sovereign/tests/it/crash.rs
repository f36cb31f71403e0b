//! Killed with SIGKILL under load, the gateway loses no acknowledged write and no log entry of
//! an answered request, and after a restart its log verifies and is consistent with the last
//! checkpoint it served before the kill.

use std::process::Command;
use std::time::{Duration, Instant};
use testkit::served::log_verifier;

use crate::support::load::{Load, check_nothing_lost, register_subject, writer_token};

fn serve(data: &std::path::Path) -> crate::support::Server {
    let mut server = crate::support::serve(data, "warn,sovereign=info");
    server.drain();
    server
}

#[test]
fn sigkill_under_load_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = serve(&data);
    let base = server.base.clone();
    let token = writer_token(&data);
    let client = reqwest::blocking::Client::new();
    register_subject(&base, &token, "crash-subject");

    let mut last_checkpoint: Option<Vec<u8>> = None;
    let load = Load::start(std::slice::from_ref(&base), &token, "crash-subject", 6);
    // Let the load run, remembering the checkpoints served, then kill the server mid-flight.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        if let Ok(response) = client.get(format!("{base}/log/checkpoint")).send()
            && response.status().is_success()
        {
            last_checkpoint = Some(response.bytes().unwrap().to_vec());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Command::new("kill")
        .args(["-KILL", &server.child.id().to_string()])
        .status()
        .unwrap();
    let _ = server.child.wait();
    let acknowledged = load.finish();
    assert!(
        acknowledged.len() > 50,
        "too little load: {}",
        acknowledged.len()
    );

    // Restart on the same data and check everything.
    let restarted = serve(&data);
    let base = restarted.base.clone();
    let verifier = log_verifier(&base);
    let before = last_checkpoint.expect("a checkpoint was served");
    let before = tlog::open_checkpoint(&before, &verifier).unwrap();
    // The restarted gateway logs its start; the check waits until a checkpoint covers it.
    let checkpoint =
        check_nothing_lost(&base, &token, "crash-subject", &acknowledged, Some(&before));
    assert!(checkpoint.size >= before.size);
}
