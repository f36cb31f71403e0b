//! `sovereign witness` as an operator runs it: init and key, serving add-checkpoint over HTTP,
//! one witness per data folder, SIGKILL while a log keeps asking (nothing answered is
//! forgotten, nothing smaller or forked is cosigned after the restart), the evidence command,
//! and SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use testkit::log_writer::{LogWriter, entry};
use tlog::checkpoint::sign_checkpoint;
use tlog::cosignature::{WitnessKey, WitnessPolicy};
use tlog::witness::{AddCheckpoint, SIZE_CONTENT_TYPE};

use crate::support::{Server, assert_success, s, sovereign, text};

const ORIGIN: &str = "example.com/witnessed-log";

/// Starts `sovereign witness serve` on a free port for the log `log_vkey` and waits until it
/// listens.
fn serve_witness(data: &Path, log_vkey: &str) -> Server {
    let mut child = sovereign()
        .args(["witness", "serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(["--log", log_vkey])
        .env("SOVEREIGN_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = String::new();
    let base = loop {
        let line = match lines.next() {
            Some(line) => line.unwrap(),
            None => panic!("witness serve exited early:\n{said}"),
        };
        said.push_str(&line);
        said.push('\n');
        if let Some(at) = line.find("http://") {
            break line[at..].split_whitespace().next().unwrap().to_string();
        }
    };
    let mut server = Server {
        child,
        base,
        lines: Some(lines),
    };
    server.drain();
    server
}

/// The request body that asks to cosign the log as it is now, from `old`.
fn request(log: &LogWriter, old: u64) -> Vec<u8> {
    let size = log.size();
    let proof = if old == 0 || old == size {
        Vec::new()
    } else {
        tlog::prove_tree(size, old, &log.store).unwrap()
    };
    AddCheckpoint {
        old_size: old,
        proof,
        checkpoint: sign_checkpoint(&log.checkpoint(), &log.signer).unwrap(),
    }
    .to_bytes()
}

/// POSTs an add-checkpoint body: the status and the body of the answer.
fn add(http: &reqwest::blocking::Client, base: &str, body: Vec<u8>) -> (u16, String) {
    let response = http
        .post(format!("{base}/add-checkpoint"))
        .body(body)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    if status == 409 {
        assert_eq!(
            response.headers()[reqwest::header::CONTENT_TYPE],
            SIZE_CONTENT_TYPE
        );
    }
    (status, response.text().unwrap())
}

/// Asserts that `lines` is a valid cosignature by `witness` of the log's current checkpoint.
fn assert_cosigned(witness: &WitnessKey, log: &LogWriter, lines: &str) {
    let mut note = sign_checkpoint(&log.checkpoint(), &log.signer).unwrap();
    note.extend_from_slice(lines.as_bytes());
    let policy = WitnessPolicy::new(vec![witness.clone()], 1).unwrap();
    let (checkpoint, cosignatures) = policy.open(&note, &log.signer.verifier()).unwrap();
    assert_eq!(checkpoint.size, log.size());
    assert_eq!(cosignatures.len(), 1);
}

fn grow(log: &mut LogWriter, by: u64) {
    for _ in 0..by {
        log.append(entry(log.size()));
    }
}

#[test]
fn witness_serves_survives_sigkill_and_keeps_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("witness");

    // init prints the vkey, which `key` prints again; a second init is refused.
    let init = sovereign()
        .args(["witness", "init", "--data", s(&data)])
        .args(["--name", "witness.example/it"])
        .output()
        .unwrap();
    assert_success(&init);
    let vkey = text(&init).0.trim().to_string();
    let witness_key = WitnessKey::new(&vkey).unwrap();
    let key = sovereign()
        .args(["witness", "key", "--data", s(&data)])
        .output()
        .unwrap();
    assert_success(&key);
    assert_eq!(text(&key).0.trim(), vkey);
    let again = sovereign()
        .args(["witness", "init", "--data", s(&data), "--name", "other"])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        text(&again).1.contains("exists already"),
        "{:?}",
        text(&again)
    );

    // A witness key is not a log key.
    let wrong = sovereign()
        .args(["witness", "serve", "--data", s(&data), "--log", &vkey])
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(text(&wrong).1.contains("type 0x04"), "{:?}", text(&wrong));

    let mut log = LogWriter::new(ORIGIN, 7);
    let log_vkey = log.signer.verifier().to_string();
    let key_file = dir.path().join("log.vkey");
    std::fs::write(&key_file, format!("{log_vkey}\n")).unwrap();
    let log_arg = format!("@{}", key_file.display());
    let server = serve_witness(&data, &log_arg);
    let http = reqwest::blocking::Client::new();

    // Bootstrap, learn the size, grow.
    grow(&mut log, 10);
    let (status, lines) = add(&http, &server.base, request(&log, 0));
    assert_eq!(status, 200, "{lines}");
    assert_cosigned(&witness_key, &log, &lines);
    assert_eq!(
        add(&http, &server.base, request(&log, 0)),
        (409, "10\n".into())
    );
    grow(&mut log, 5);
    let (status, lines) = add(&http, &server.base, request(&log, 10));
    assert_eq!(status, 200, "{lines}");
    assert_cosigned(&witness_key, &log, &lines);

    // A second witness on the same data folder refuses to start.
    let second = sovereign()
        .args([
            "witness",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data",
            s(&data),
        ])
        .args(["--log", &log_vkey])
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(
        text(&second).1.contains("another witness is running"),
        "{:?}",
        text(&second)
    );

    // SIGKILL while the log keeps asking, growing by one entry a request: every size
    // answered 200 before the kill is remembered after it.
    let log = Arc::new(std::sync::Mutex::new(log));
    let answered = Arc::new(AtomicU64::new(15));
    let stop = Arc::new(AtomicBool::new(false));
    let asker = {
        let (log, answered, stop, base) = (
            log.clone(),
            answered.clone(),
            stop.clone(),
            server.base.clone(),
        );
        std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut asked = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut log = log.lock().unwrap();
                let old = log.size();
                log.append(entry(old));
                let response = http
                    .post(format!("{base}/add-checkpoint"))
                    .body(request(&log, old))
                    .send();
                match response {
                    Ok(r) if r.status().as_u16() == 200 => {
                        answered.store(old + 1, Ordering::SeqCst);
                        asked += 1;
                    }
                    // Killed: whether the last one was committed, the restart says.
                    _ => break,
                }
            }
            asked
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    server.signal("KILL");
    let mut server = server;
    let _ = server.child.wait();
    stop.store(true, Ordering::Relaxed);
    let asked = asker.join().unwrap();
    assert!(asked > 10, "too few requests before the kill: {asked}");
    let answered = answered.load(Ordering::SeqCst);
    drop(server);

    let server = serve_witness(&data, &log_vkey);
    let mut log = Arc::into_inner(log).unwrap().into_inner().unwrap();
    let (status, latest) = add(&http, &server.base, request(&log, 0));
    assert_eq!(status, 409);
    let latest: u64 = latest.trim().parse().unwrap();
    // The one request in flight at the kill may have been committed without an answer.
    assert!(
        latest == answered || latest == answered + 1,
        "answered up to {answered}, remembered {latest}"
    );
    assert!(latest <= log.size());

    // After the restart: an older tree is refused (a 409 naming the latest), so is a fork of
    // the same size and a bigger fork whose proof fails; consistent growth is cosigned.
    let mut older = LogWriter::new(ORIGIN, 7);
    grow(&mut older, 12);
    assert_eq!(
        add(&http, &server.base, request(&older, 10)),
        (409, format!("{latest}\n"))
    );
    let mut fork = fork_at(latest);
    let forked = request(&fork, latest);
    assert_eq!(
        add(&http, &server.base, forked.clone()),
        (409, format!("{latest}\n"))
    );
    fork.append(b"one more".to_vec());
    let mut bigger_fork = AddCheckpoint::parse(&request(&fork, 0)).unwrap();
    bigger_fork.old_size = latest;
    bigger_fork.proof = tlog::prove_tree(fork.size(), latest, &fork.store).unwrap();
    let (status, reason) = add(&http, &server.base, bigger_fork.to_bytes());
    assert_eq!(status, 422, "{reason}");
    assert!(reason.contains("consistency proof"), "{reason}");
    // Again, with another (wrong) proof: counted in the same evidence.
    bigger_fork.proof[0] = tlog::leaf_hash(b"garbage");
    let (status, _) = add(&http, &server.base, bigger_fork.to_bytes());
    assert_eq!(status, 422);

    // The log's own tree may be ahead of what the witness remembers: resend from there.
    let (status, lines) = add(&http, &server.base, request(&log, latest));
    assert_eq!(status, 200, "{lines}");
    grow(&mut log, 3);
    let (status, lines) = add(&http, &server.base, request(&log, log.size() - 3));
    assert_eq!(status, 200, "{lines}");
    assert_cosigned(&witness_key, &log, &lines);

    // The evidence command lists both refusals while the witness runs, says which is proof,
    // and gives the request and the checkpoint it contradicts.
    let evidence = sovereign()
        .args(["witness", "evidence", "--data", s(&data)])
        .output()
        .unwrap();
    assert_success(&evidence);
    let listing = text(&evidence).0;
    assert_eq!(listing.lines().count(), 2, "{listing}");
    assert!(listing.contains(ORIGIN), "{listing}");
    assert!(listing.contains("forked"), "{listing}");
    assert!(
        listing.contains(&format!(
            "checkpoint size {latest}, latest cosigned size {latest}"
        )),
        "{listing}"
    );
    assert!(listing.contains("consistency proof"), "{listing}");
    let (fork_line, failed_line) = (
        listing.lines().next().unwrap(),
        listing.lines().nth(1).unwrap(),
    );
    assert!(fork_line.contains("PROVEN FORK"), "{listing}");
    assert!(fork_line.contains("refused once"), "{listing}");
    assert!(
        failed_line.contains("unverified inconsistency"),
        "{listing}"
    );
    assert!(failed_line.contains("refused 2 times"), "{listing}");
    let id = listing
        .lines()
        .next()
        .unwrap()
        .strip_prefix('#')
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let body = sovereign()
        .args(["witness", "evidence", "--data", s(&data), "--body", &id])
        .output()
        .unwrap();
    assert_success(&body);
    assert_eq!(body.stdout, forked);
    let held = sovereign()
        .args(["witness", "evidence", "--data", s(&data), "--held", &id])
        .output()
        .unwrap();
    assert_success(&held);
    let held_checkpoint = tlog::checkpoint::Checkpoint {
        origin: ORIGIN.to_string(),
        size: latest,
        hash: tlog::tree_hash(latest, &log.store).unwrap(),
        extensions: Vec::new(),
    };
    assert_eq!(
        held.stdout,
        sign_checkpoint(&held_checkpoint, &log.signer).unwrap()
    );

    // SIGTERM stops it cleanly.
    server.signal("TERM");
    let mut server = server;
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// The forked log of the test at size `size` (its entries differ from the real log's).
fn fork_at(size: u64) -> LogWriter {
    let mut fork = LogWriter::new(ORIGIN, 7);
    for i in 0..size {
        fork.append(format!("forked {i}").into_bytes());
    }
    fork
}
