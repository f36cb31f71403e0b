//! Witnessed checkpoints with real processes: three `sovereign witness serve` and a gateway
//! with `log.witness_quorum = 2`. The served checkpoint carries two or more valid
//! cosignatures and the monitors' tools require them; with two witnesses down the published
//! checkpoint holds back while every request is still answered and logged; one witness back
//! brings it forward over everything answered; a forked log (the same key, another tree) is
//! refused by every witness, which keeps the evidence.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tlog::cosignature::{WitnessKey, WitnessPolicy};
use tlog::note::Signer;
use tlog::witness::AddCheckpoint;

use crate::support::load::{Load, check_nothing_lost, register_subject, writer_token};
use crate::support::{assert_success, s, sovereign, text};

/// A `sovereign witness serve` on a fixed port, so that it can come back at the same URL.
struct WitnessProcess {
    data: PathBuf,
    port: u16,
    log_vkey: String,
    child: Option<Child>,
}

impl WitnessProcess {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
        let child = sovereign()
            .args([
                "witness",
                "serve",
                "--data",
                s(&self.data),
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--log",
                &self.log_vkey,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while reqwest::blocking::get(format!("{}/healthz", self.url()))
            .map_or(true, |r| !r.status().is_success())
        {
            assert!(Instant::now() < deadline, "the witness did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            Command::new("kill")
                .args(["-KILL", &child.id().to_string()])
                .status()
                .unwrap();
            let _ = child.wait();
        }
    }

    fn key(&self) -> String {
        printed_key("witness", &self.data)
    }
}

impl Drop for WitnessProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The verifier key `sovereign COMMAND key --data DATA` prints (`audit`: the log's;
/// `witness`: the witness's).
fn printed_key(command: &str, data: &std::path::Path) -> String {
    let output = sovereign()
        .args([command, "key", "--data", s(data)])
        .output()
        .unwrap();
    assert_success(&output);
    text(&output).0.trim().to_string()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The served checkpoint, its size and the witnesses who validly cosigned it; size 0 and no
/// witness while the gateway has none with the quorum yet (503 `checkpoint_unwitnessed`, as a
/// gateway answers from its start until its first witnessed checkpoint).
fn served(base: &str, log: &tlog::note::Verifier, keys: &[WitnessKey]) -> (u64, Vec<String>) {
    let response = reqwest::blocking::get(format!("{base}/log/checkpoint")).unwrap();
    if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
        let body = response.text().unwrap();
        assert!(body.contains("checkpoint_unwitnessed"), "{body}");
        return (0, Vec::new());
    }
    let note = response.bytes().unwrap();
    let policy = WitnessPolicy::new(keys.to_vec(), 0).unwrap();
    let checkpoint = tlog::open_checkpoint(&note, log).expect("the log's own signature");
    let opened = tlog::note::open(&note, [log]).unwrap();
    let (valid, invalid) = policy.cosignatures(&opened);
    assert!(invalid.is_empty(), "invalid cosignatures from {invalid:?}");
    (
        checkpoint.size,
        valid.into_iter().map(|c| c.witness).collect(),
    )
}

fn wait_until(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !done() {
        assert!(Instant::now() < until, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_quorum_of_witnesses_cosigns_what_the_gateway_serves() {
    if !crate::support::cvc5_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("gateway");
    assert_success(
        &sovereign()
            .args(["init", "--data", s(&data)])
            .output()
            .unwrap(),
    );
    let log_vkey = printed_key("audit", &data);

    // Three witnesses, each with its own key and state.
    let mut witnesses: Vec<WitnessProcess> = (1..=3)
        .map(|n| {
            let folder = dir.path().join(format!("witness{n}"));
            assert_success(
                &sovereign()
                    .args(["witness", "init", "--data", s(&folder), "--name"])
                    .arg(format!("w{n}.witness.example"))
                    .output()
                    .unwrap(),
            );
            WitnessProcess {
                data: folder,
                port: free_port(),
                log_vkey: log_vkey.clone(),
                child: None,
            }
        })
        .collect();
    for w in &mut witnesses {
        w.start();
    }
    let vkeys: Vec<String> = witnesses.iter().map(WitnessProcess::key).collect();
    let keys: Vec<WitnessKey> = vkeys.iter().map(|k| WitnessKey::new(k).unwrap()).collect();

    // The gateway asks all three and serves what two cosigned.
    let config = data.join("sovereign.toml");
    let mut toml = std::fs::read_to_string(&config).unwrap();
    assert!(toml.contains("witness_quorum = 0\n"));
    toml = toml.replace("witness_quorum = 0\n", "witness_quorum = 2\n");
    // Checkpoints as often as allowed, so that the coverage latency measured at the end is
    // mostly the witnesses' part.
    assert!(toml.contains("checkpoint_interval_ms = 500\n"));
    toml = toml.replace(
        "checkpoint_interval_ms = 500\n",
        "checkpoint_interval_ms = 10\n",
    );
    // A short deadline, for the late-checkpoint alert to fire while witnesses are down.
    assert!(toml.contains("checkpoint_deadline_seconds = 5\n"));
    toml = toml.replace(
        "checkpoint_deadline_seconds = 5\n",
        "checkpoint_deadline_seconds = 1\n",
    );
    for (w, vkey) in witnesses.iter().zip(&vkeys) {
        toml.push_str(&format!(
            "\n[[log.witnesses]]\nurl = {:?}\nkey = {vkey:?}\n",
            w.url()
        ));
    }
    std::fs::write(&config, toml).unwrap();
    let mut gateway = crate::support::serve(&data, "warn,sovereign=info");
    gateway.drain();
    let base = gateway.base.clone();
    let log = tlog::note::Verifier::new(&log_vkey).unwrap();

    let token = writer_token(&data);
    register_subject(&base, &token, "witnessed-subject");
    let mut size = 0;
    wait_until(
        "a checkpoint cosigned by all three",
        Duration::from_secs(10),
        || {
            let (s, by) = served(&base, &log, &keys);
            size = s;
            s > 0 && by.len() == 3
        },
    );

    // The monitors' tools require the quorum, and refuse a checkpoint without it.
    let witness_args: Vec<String> = vkeys
        .iter()
        .flat_map(|k| ["--witness".to_string(), k.clone()])
        .collect();
    let verify = |extra: &[String]| {
        sovereign()
            .args([
                "audit",
                "verify",
                "--url",
                &format!("{base}/log"),
                "--key",
                &log_vkey,
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let mut quorum2 = witness_args.clone();
    quorum2.extend(["--quorum".to_string(), "2".to_string()]);
    let ok = verify(&quorum2);
    assert_success(&ok);
    assert!(text(&ok).0.contains("witnessed:"), "{}", text(&ok).0);
    let stranger = tlog::cosignature::Cosigner::generate("stranger.example").unwrap();
    let refused = verify(&[
        "--witness".to_string(),
        stranger.witness_key().to_string(),
        "--quorum".to_string(),
        "1".to_string(),
    ]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).1.contains("valid cosignature"),
        "{}",
        text(&refused).1
    );

    // So do replay and a transparency report's check.
    let stranger_args = [
        "--witness".to_string(),
        stranger.witness_key().to_string(),
        "--quorum".to_string(),
        "1".to_string(),
    ];
    let replay = |extra: &[String]| {
        sovereign()
            .args(["audit", "replay", "--url", &format!("{base}/log")])
            .args(["--key", &log_vkey])
            .args(extra)
            .output()
            .unwrap()
    };
    assert_success(&replay(&quorum2));
    assert!(!replay(&stranger_args).status.success());
    let report = dir.path().join("report");
    assert_success(
        &sovereign()
            .args([
                "report",
                "--url",
                &format!("{base}/log"),
                "--key",
                &log_vkey,
            ])
            .args(["--from", "2026-01-01", "--to", "2099-01-01"])
            .args(["--signer", s(&data.join("keys/custodian.key"))])
            .args(["--out", s(&report)])
            .output()
            .unwrap(),
    );
    let report_check = |extra: &[String]| {
        sovereign()
            .args(["report", "check", s(&report.with_extension("json"))])
            .args([
                "--signer-key",
                &format!("@{}", s(&data.join("keys/custodian.vkey"))),
            ])
            .args(["--url", &format!("{base}/log"), "--key", &log_vkey])
            .args(extra)
            .output()
            .unwrap()
    };
    assert_success(&report_check(&quorum2));
    let refused = report_check(&stranger_args);
    assert!(!refused.status.success());
    assert!(
        text(&refused).1.contains("not witnessed"),
        "{}",
        text(&refused).1
    );

    // An inclusion proof carries the cosignatures and is checked offline against the quorum.
    let proof = dir.path().join("entry.tlog-proof");
    assert_success(
        &sovereign()
            .args([
                "audit",
                "prove",
                "--url",
                &format!("{base}/log"),
                "--index",
                "0",
            ])
            .args(["--out", s(&proof), "--key", &log_vkey])
            .args(&quorum2)
            .output()
            .unwrap(),
    );
    let checked = sovereign()
        .args(["audit", "check-proof", s(&proof), "--key", &log_vkey])
        .args(&quorum2)
        .output()
        .unwrap();
    assert_success(&checked);
    assert!(
        text(&checked).0.contains("witnessed:  3 of quorum 2"),
        "{}",
        text(&checked).0
    );

    // A subject's history is proven against the witnessed checkpoint, and checked against
    // the quorum offline.
    let subject_token = crate::support::data_subject_token(&data, "witnessed-subject");
    let history = dir.path().join("history.json");
    assert_success(
        &sovereign()
            .args(["subject", "accesses", "witnessed-subject", "--all"])
            .args([
                "--url",
                &base,
                "--token",
                &subject_token,
                "--out",
                s(&history),
            ])
            .output()
            .unwrap(),
    );
    let check = |extra: &[String]| {
        sovereign()
            .args(["subject", "verify", s(&history), "--key", &log_vkey])
            .args(extra)
            .output()
            .unwrap()
    };
    assert_success(&check(&quorum2));
    let refused = check(&stranger_args);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused).1);

    // Two witnesses down: requests are answered and logged, the published checkpoint holds.
    witnesses[0].kill();
    witnesses[1].kill();
    let held = served(&base, &log, &keys).0;
    let load = Load::start(std::slice::from_ref(&base), &token, "witnessed-subject", 4);
    std::thread::sleep(Duration::from_millis(1500));
    let acknowledged = load.finish();
    assert!(
        acknowledged.len() > 10,
        "too little load: {}",
        acknowledged.len()
    );
    let last = acknowledged.iter().map(|a| a.index).max().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let (now, by) = served(&base, &log, &keys);
    assert_eq!(now, held, "the checkpoint advanced without a quorum");
    assert!(
        now <= last,
        "the load's entries came after the held checkpoint"
    );
    assert!(by.len() >= 2);
    // The operator sees which witnesses fail.
    let metrics = reqwest::blocking::get(format!("{base}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("sovereign_witness_up{witness=\"w1.witness.example\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("sovereign_witness_up{witness=\"w3.witness.example\"} 1"));
    // Entries wait past the deadline for a served checkpoint: the alert fires (it is logged,
    // and found in the log below once a checkpoint covers it again).
    std::thread::sleep(Duration::from_millis(2500));

    // One witness back: the checkpoint covers everything answered.
    witnesses[1].start();
    wait_until(
        "the checkpoint moves past the load",
        Duration::from_secs(20),
        || served(&base, &log, &keys).0 > last,
    );
    let (_, by) = served(&base, &log, &keys);
    assert!(by.len() >= 2, "{by:?}");
    check_nothing_lost(&base, &token, "witnessed-subject", &acknowledged, None);
    let mut late_alerts = 0;
    tlog::verify_log(
        &crate::support::ServedLog::new(&base),
        &log,
        None,
        &mut |_, _| {},
        &mut |_, entry| {
            let entry: serde_json::Value = serde_json::from_slice(entry).unwrap();
            if entry["kind"] == "alert" && entry["alert"] == "checkpoint-late" {
                late_alerts += 1;
            }
            Ok(())
        },
    )
    .unwrap();
    assert!(
        late_alerts > 0,
        "no checkpoint-late alert while the quorum was out of reach"
    );
    assert_success(&verify(&quorum2));

    // A forked log: the same key, another tree. Every witness refuses it and keeps evidence.
    witnesses[0].start();
    let signer = Signer::new(
        std::fs::read_to_string(data.join("keys/log-signer.key"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let http = reqwest::blocking::Client::new();
    for w in &witnesses {
        let known = witness_size(&http, w, &signer);
        let (fork_note, proof) = fork(&signer, known, known + 3);
        let answer = http
            .post(format!("{}/add-checkpoint", w.url()))
            .body(
                AddCheckpoint {
                    old_size: known,
                    proof,
                    checkpoint: fork_note,
                }
                .to_bytes(),
            )
            .send()
            .unwrap();
        assert_eq!(answer.status(), 422, "{}", w.url());
        let (same_size, _) = fork(&signer, known, known);
        let answer = http
            .post(format!("{}/add-checkpoint", w.url()))
            .body(
                AddCheckpoint {
                    old_size: known,
                    proof: Vec::new(),
                    checkpoint: same_size,
                }
                .to_bytes(),
            )
            .send()
            .unwrap();
        assert_eq!(answer.status(), 409, "{}", w.url());
        let evidence = sovereign()
            .args(["witness", "evidence", "--data", s(&w.data)])
            .output()
            .unwrap();
        assert_success(&evidence);
        let listed = text(&evidence).0;
        assert!(listed.contains(signer.name()), "{listed}");
        assert!(
            listed.lines().filter(|l| l.contains(signer.name())).count() >= 2,
            "{listed}"
        );
    }
    // The real log still goes on being witnessed.
    register_subject(&base, &token, "after-the-fork");
    let before = served(&base, &log, &keys).0;
    wait_until(
        "the checkpoint advances after the fork",
        Duration::from_secs(10),
        || served(&base, &log, &keys).0 > before,
    );

    // How long an answered request waits for a served checkpoint to cover it, with the three
    // witnesses and, on a second gateway, without any, both signing checkpoints every 10 ms
    // (BENCHMARKS.md).
    let witnessed = coverage_latency(&base, &token);
    drop(gateway);
    let plain = dir.path().join("plain");
    assert_success(
        &sovereign()
            .args(["init", "--data", s(&plain)])
            .output()
            .unwrap(),
    );
    let plain_config = plain.join("sovereign.toml");
    let plain_toml = std::fs::read_to_string(&plain_config).unwrap().replace(
        "checkpoint_interval_ms = 500\n",
        "checkpoint_interval_ms = 10\n",
    );
    std::fs::write(&plain_config, plain_toml).unwrap();
    let mut unwitnessed = crate::support::serve(&plain, "warn,sovereign=info");
    unwitnessed.drain();
    let plain_token = writer_token(&plain);
    let without = coverage_latency(&unwitnessed.base, &plain_token);
    println!(
        "witnessed: answer to a covering checkpoint, p50 {:?} max {:?} with 3 witnesses (quorum 2); p50 {:?} max {:?} without",
        witnessed.0, witnessed.1, without.0, without.1
    );
}

/// Registers a US subject at `base`; the index of its log entry.
fn register_indexed(
    http: &reqwest::blocking::Client,
    base: &str,
    token: &str,
    subject: &str,
) -> u64 {
    let answer = http
        .put(format!("{base}/v1/subjects/{subject}"))
        .bearer_auth(token)
        .body(r#"{"jurisdiction":"US"}"#)
        .send()
        .unwrap();
    assert_eq!(answer.status(), 201);
    answer.headers()["sovereign-log-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Registers one subject at a time and measures how long each answer waits until the
/// checkpoint served at `base` covers its log index: (median, max) of 20.
fn coverage_latency(base: &str, token: &str) -> (Duration, Duration) {
    let http = reqwest::blocking::Client::new();
    let mut waits = Vec::new();
    for i in 0..20 {
        let index = register_indexed(&http, base, token, &format!("latency-{i}"));
        let answered = Instant::now();
        loop {
            let note = http
                .get(format!("{base}/log/checkpoint"))
                .send()
                .unwrap()
                .text()
                .unwrap();
            let size: u64 = note
                .lines()
                .nth(1)
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            if size > index {
                break;
            }
            assert!(
                answered.elapsed() < Duration::from_secs(10),
                "never covered"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        waits.push(answered.elapsed());
    }
    waits.sort();
    (waits[waits.len() / 2], waits[waits.len() - 1])
}

/// The size a witness holds for the log: asked with `old 0` and the log's empty checkpoint,
/// which it refuses with 409 and its size (or takes, if it holds nothing).
fn witness_size(http: &reqwest::blocking::Client, w: &WitnessProcess, signer: &Signer) -> u64 {
    let empty = tlog::Checkpoint {
        origin: signer.name().to_string(),
        size: 0,
        hash: tlog::EMPTY_TREE_HASH,
        extensions: Vec::new(),
    };
    let note = tlog::sign_checkpoint(&empty, signer).unwrap();
    let answer = http
        .post(format!("{}/add-checkpoint", w.url()))
        .body(
            AddCheckpoint {
                old_size: 0,
                proof: Vec::new(),
                checkpoint: note,
            }
            .to_bytes(),
        )
        .send()
        .unwrap();
    assert_eq!(answer.status(), 409);
    tlog::witness::parse_size_body(&answer.bytes().unwrap()).unwrap()
}

/// A checkpoint of `size` entries of another tree, signed with the log's own key, and the
/// consistency proof from `from` within that tree.
fn fork(signer: &Signer, from: u64, size: u64) -> (Vec<u8>, Vec<tlog::Hash>) {
    let mut store: Vec<tlog::Hash> = Vec::new();
    for i in 0..size {
        let entry = format!("forged entry {i}");
        let new = tlog::stored_hashes(i, entry.as_bytes(), &store).unwrap();
        store.extend(new);
    }
    let checkpoint = tlog::Checkpoint {
        origin: signer.name().to_string(),
        size,
        hash: tlog::tree_hash(size, &store).unwrap(),
        extensions: Vec::new(),
    };
    let proof = if from == 0 || from == size {
        Vec::new()
    } else {
        tlog::prove_tree(size, from, &store).unwrap()
    };
    (tlog::sign_checkpoint(&checkpoint, signer).unwrap(), proof)
}

/// Two gateways on separate data folders sharing one PostgreSQL log (and the other stores),
/// one witness, quorum 1: both serve cosigned checkpoints covering what either answered, the
/// witness refuses nothing of theirs, and neither counts the witness as failing when it holds
/// a checkpoint the other gateway sent first. Skips without PostgreSQL binaries unless
/// `SOVEREIGN_REQUIRE_PG=1`, and without cvc5 unless `SOVEREIGN_REQUIRE_CVC5=1`.
#[test]
fn a_fleet_on_one_postgres_log_is_witnessed() {
    if !crate::support::cvc5_present() {
        return;
    }
    let Some(pg) = pgtest::PgServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let urls = crate::support::every_store_on(&pg);
    let stores: Vec<(&str, &str)> = urls.iter().map(|(l, u)| (*l, u.as_str())).collect();
    let first = dir.path().join("g1");
    crate::support::init_with_stores(&first, &stores);
    let log_vkey = printed_key("audit", &first);
    let witness_data = dir.path().join("witness");
    assert_success(
        &sovereign()
            .args(["witness", "init", "--data", s(&witness_data)])
            .args(["--name", "fleet.witness.example"])
            .output()
            .unwrap(),
    );
    let mut witness = WitnessProcess {
        data: witness_data,
        port: free_port(),
        log_vkey: log_vkey.clone(),
        child: None,
    };
    witness.start();
    let vkey = witness.key();
    let config = first.join("sovereign.toml");
    let toml = std::fs::read_to_string(&config)
        .unwrap()
        .replace("witness_quorum = 0\n", "witness_quorum = 1\n")
        .replace(
            "checkpoint_interval_ms = 500\n",
            "checkpoint_interval_ms = 50\n",
        )
        + &format!(
            "\n[[log.witnesses]]\nurl = {:?}\nkey = {vkey:?}\n",
            witness.url()
        );
    std::fs::write(&config, toml).unwrap();
    let second = dir.path().join("g2");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&first)
        .arg(&second)
        .status()
        .unwrap();
    assert!(copied.success());

    let mut gateways: Vec<crate::support::Server> = [&first, &second]
        .iter()
        .map(|folder| {
            let mut g = crate::support::serve(folder, "warn,sovereign=info");
            g.drain();
            g
        })
        .collect();
    let bases: Vec<String> = gateways.iter().map(|g| g.base.clone()).collect();
    let token = writer_token(&first);
    let log = tlog::note::Verifier::new(&log_vkey).unwrap();
    let keys = [WitnessKey::new(&vkey).unwrap()];
    let http = reqwest::blocking::Client::new();
    let mut last = 0;
    for i in 0..30 {
        let index = register_indexed(&http, &bases[i % 2], &token, &format!("fleet-{i}"));
        last = last.max(index);
        std::thread::sleep(Duration::from_millis(20));
    }
    for base in &bases {
        wait_until(
            "every gateway serves a cosigned checkpoint covering both",
            Duration::from_secs(15),
            || {
                let (size, by) = served(base, &log, &keys);
                size > last && by.len() == 1
            },
        );
        let metrics = reqwest::blocking::get(format!("{base}/metrics"))
            .unwrap()
            .text()
            .unwrap();
        assert!(
            metrics.contains("sovereign_witness_failures{witness=\"fleet.witness.example\"} 0"),
            "{metrics}"
        );
    }
    let evidence = sovereign()
        .args(["witness", "evidence", "--data", s(&witness.data)])
        .output()
        .unwrap();
    assert_success(&evidence);
    assert!(
        !text(&evidence).0.contains(log.name()),
        "the witness refused the fleet's log: {}",
        text(&evidence).0
    );
    for g in &mut gateways {
        g.signal("TERM");
    }
}
