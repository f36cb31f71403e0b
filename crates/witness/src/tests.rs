//! The witness against real trees: every answer of c2sp.org/tlog-witness `add-checkpoint`,
//! the state across reopening, the evidence and its bound, concurrent requests (no
//! rollback), the data folder's key files and lock, and the HTTP server.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use rand::Rng as _;
use testkit::log_writer::{LogWriter, entry};
use tlog::checkpoint::{Checkpoint, sign_checkpoint};
use tlog::cosignature::{Cosigner, WitnessKey};
use tlog::note::{Signer, Verifier};
use tlog::witness::{AddCheckpoint, SIZE_CONTENT_TYPE, parse_size_body};
use tlog::{EMPTY_TREE_HASH, Hash, leaf_hash, prove_tree, tree_hash};

use crate::store::EvidenceBound;
use crate::{AddError, Witness, WitnessError};

const ORIGIN: &str = "example.com/log";
const WITNESS_NAME: &str = "witness.example/w1";

/// A log of `size` entries.
fn log_of(origin: &str, seed: u8, size: u64) -> LogWriter {
    let mut log = LogWriter::new(origin, seed);
    grow(&mut log, size);
    log
}

fn grow(log: &mut LogWriter, by: u64) {
    for _ in 0..by {
        let i = log.size();
        log.append(entry(i));
    }
}

/// The log's signed checkpoint of its first `size` entries.
fn note_at(log: &LogWriter, size: u64) -> Vec<u8> {
    let checkpoint = Checkpoint {
        origin: log.signer.name().to_string(),
        size,
        hash: tree_hash(size, &log.store).unwrap(),
        extensions: Vec::new(),
    };
    sign_checkpoint(&checkpoint, &log.signer).unwrap()
}

/// The consistency proof from `old` to `size` as a client sends it (empty from 0 or to the
/// same size).
fn proof(log: &LogWriter, old: u64, size: u64) -> Vec<Hash> {
    if old == 0 || old == size {
        Vec::new()
    } else {
        prove_tree(size, old, &log.store).unwrap()
    }
}

/// The request body asking to cosign the log at `size`, from `old`.
fn request(log: &LogWriter, old: u64, size: u64) -> Vec<u8> {
    AddCheckpoint {
        old_size: old,
        proof: proof(log, old, size),
        checkpoint: note_at(log, size),
    }
    .to_bytes()
}

/// A witness with a fresh key in `dir`, for the given logs.
fn witness(dir: &Path, logs: &[&LogWriter]) -> Witness {
    crate::init(dir, WITNESS_NAME).unwrap();
    reopen(dir, logs)
}

fn reopen(dir: &Path, logs: &[&LogWriter]) -> Witness {
    Witness::open(dir, logs.iter().map(|l| l.signer.verifier()).collect()).unwrap()
}

/// Asserts that `lines` is one cosignature by the witness of the log's checkpoint at `size`.
fn assert_cosigned(witness: &Witness, log: &LogWriter, size: u64, lines: &str) {
    assert_eq!(lines.matches('\n').count(), 1, "{lines:?}");
    let line = lines.strip_suffix('\n').unwrap();
    let (name, sig) = line
        .strip_prefix("\u{2014} ")
        .unwrap()
        .split_once(' ')
        .unwrap();
    assert_eq!(name, WITNESS_NAME);
    let raw = base64::engine::general_purpose::STANDARD
        .decode(sig)
        .unwrap();
    assert_eq!(
        u32::from_be_bytes(raw[..4].try_into().unwrap()),
        witness.witness_key().key_id()
    );
    let text = Checkpoint {
        origin: log.signer.name().to_string(),
        size,
        hash: tree_hash(size, &log.store).unwrap(),
        extensions: Vec::new(),
    }
    .to_text();
    let timestamp = witness.witness_key().verify(&text, &raw[4..]).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(timestamp.abs_diff(now) <= 5, "{timestamp} vs {now}");
}

fn latest_size(witness: &Witness) -> Option<u64> {
    witness.latest(ORIGIN).unwrap().map(|l| l.size)
}

#[test]
fn bootstrap_conflict_growth_recosign_and_fork() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_of(ORIGIN, 1, 10);
    let w = witness(dir.path(), &[&log]);
    assert_eq!(latest_size(&w), None);

    // Bootstrap: old 0, empty proof.
    let lines = w.add_checkpoint(&request(&log, 0, 10)).unwrap();
    assert_cosigned(&w, &log, 10, &lines);
    assert_eq!(latest_size(&w), Some(10));

    // A client that does not know asks with old 0 and learns the size from the 409.
    let err = w.add_checkpoint(&request(&log, 0, 10)).unwrap_err();
    assert!(
        matches!(err, AddError::Conflict { old: 0, latest: 10 }),
        "{err}"
    );
    assert_eq!((err.status(), err.latest_size()), (409, Some(10)));

    // Consistent growth with the proof from the size it learned.
    grow(&mut log, 7);
    let lines = w.add_checkpoint(&request(&log, 10, 17)).unwrap();
    assert_cosigned(&w, &log, 17, &lines);
    assert_eq!(latest_size(&w), Some(17));

    // The same tree again: cosigned again.
    let lines = w.add_checkpoint(&request(&log, 17, 17)).unwrap();
    assert_cosigned(&w, &log, 17, &lines);

    // An older size is refused, as a stale old size.
    let err = w.add_checkpoint(&request(&log, 10, 12)).unwrap_err();
    assert!(
        matches!(
            err,
            AddError::Conflict {
                old: 10,
                latest: 17
            }
        ),
        "{err}"
    );

    // A fork: same key, another tree of the same size.
    let fork = log_of(ORIGIN, 1, 0);
    let mut fork = fork;
    for i in 0..17 {
        fork.append(format!("forked {i}").into_bytes());
    }
    let forked = request(&fork, 17, 17);
    let err = w.add_checkpoint(&forked).unwrap_err();
    assert!(matches!(err, AddError::Fork { size: 17 }), "{err}");
    assert_eq!((err.status(), err.latest_size()), (409, Some(17)));

    // A bigger forked tree with a proof from the forked tree at 17: the proof fails.
    grow(&mut fork, 3);
    let err = w.add_checkpoint(&request(&fork, 17, 20)).unwrap_err();
    assert!(
        matches!(
            err,
            AddError::Inconsistent {
                old: 17,
                size: 20,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!((err.status(), err.latest_size()), (422, None));
    assert_eq!(latest_size(&w), Some(17));

    // Both are kept as evidence, in order, with what was cosigned then.
    let evidence = w.evidence().unwrap();
    assert_eq!(evidence.kept.len(), 2, "{evidence:?}");
    assert!(evidence.dropped.is_empty());
    let (first, second) = (&evidence.kept[0], &evidence.kept[1]);
    assert_eq!(
        (
            first.origin.as_str(),
            first.old_size,
            first.size,
            first.latest_size
        ),
        (ORIGIN, 17, 17, 17)
    );
    assert!(first.reason.contains("forked"), "{}", first.reason);
    assert_eq!((second.old_size, second.size), (17, 20));
    assert!(
        second.reason.contains("consistency proof"),
        "{}",
        second.reason
    );
    assert_eq!(
        crate::read_evidence_body(dir.path(), first.id)
            .unwrap()
            .unwrap(),
        forked
    );
    // Readable from outside while the witness holds the folder.
    assert_eq!(crate::read_evidence(dir.path()).unwrap(), evidence);

    // The real log still grows.
    grow(&mut log, 1);
    let lines = w.add_checkpoint(&request(&log, 17, 18)).unwrap();
    assert_cosigned(&w, &log, 18, &lines);
}

#[test]
fn every_refusal_has_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_of(ORIGIN, 1, 8);
    let w = witness(dir.path(), &[&log]);
    let status = |body: &[u8]| w.add_checkpoint(body).unwrap_err().status();

    // 400: not a request; a request whose checkpoint is not a note or not a checkpoint.
    assert_eq!(status(b""), 400);
    assert_eq!(status(b"old 01\n\n"), 400);
    assert_eq!(status(b"old 0\nnot a hash\n\nx"), 400);
    assert_eq!(status(b"old 0\n\nno newline"), 400);
    assert_eq!(
        status(format!("old 0\n\n{ORIGIN}\nno blank line\n").as_bytes()),
        400
    );
    let signer = &log.signer;
    let not_a_checkpoint =
        tlog::note::sign(&format!("{ORIGIN}\nnot a size\nx\n"), [signer]).unwrap();
    let mut body = b"old 0\n\n".to_vec();
    body.extend_from_slice(&not_a_checkpoint);
    assert_eq!(status(&body), 400);

    // 404: a log this witness was not given (even if signed by its own key).
    let stranger = log_of("example.com/other", 2, 8);
    let err = w.add_checkpoint(&request(&stranger, 0, 8)).unwrap_err();
    assert!(matches!(err, AddError::UnknownOrigin(ref o) if o == "example.com/other"));
    assert_eq!(err.status(), 404);

    // 403: the right origin signed by another key, or a bad signature by the trusted one.
    let impostor = log_of(ORIGIN, 3, 8);
    let err = w.add_checkpoint(&request(&impostor, 0, 8)).unwrap_err();
    assert_eq!(err.status(), 403, "{err}");
    let mut tampered = String::from_utf8(request(&log, 0, 8)).unwrap();
    tampered = tampered.replacen(&format!("{ORIGIN}\n8\n"), &format!("{ORIGIN}\n9\n"), 1);
    assert_eq!(status(tampered.as_bytes()), 403);

    // 400: old size above the checkpoint's (checked before the state).
    let err = w.add_checkpoint(&request(&log, 0, 8)).unwrap();
    assert!(!err.is_empty());
    let mut above = AddCheckpoint::parse(&request(&log, 8, 8)).unwrap();
    above.old_size = 9;
    let err = w.add_checkpoint(&above.to_bytes()).unwrap_err();
    assert!(matches!(err, AddError::OldSizeAbove { old: 9, size: 8 }));
    assert_eq!(err.status(), 400);

    // 409: old size not the latest.
    assert_eq!(status(&request(&log, 4, 8)), 409);

    // 422: a proof that does not verify, and a non-empty proof between equal sizes.
    let mut log = log;
    grow(&mut log, 8);
    let mut wrong = AddCheckpoint::parse(&request(&log, 8, 16)).unwrap();
    wrong.proof[0] = leaf_hash(b"wrong");
    assert_eq!(status(&wrong.to_bytes()), 422);
    let mut short = AddCheckpoint::parse(&request(&log, 8, 16)).unwrap();
    short.proof.pop();
    assert_eq!(status(&short.to_bytes()), 422);
    let mut padded = AddCheckpoint::parse(&request(&log, 8, 8)).unwrap();
    padded.proof.push(leaf_hash(b"extra"));
    assert_eq!(status(&padded.to_bytes()), 422);
    assert_eq!(latest_size(&w), Some(8));
    assert_eq!(w.evidence().unwrap().kept.len(), 3);
}

#[test]
fn a_log_never_cosigned_is_at_size_zero() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_of(ORIGIN, 1, 5);
    let w = witness(dir.path(), &[&log]);
    // Old 0 with a proof: the proof must be empty.
    let mut with_proof = AddCheckpoint::parse(&request(&log, 0, 5)).unwrap();
    with_proof.proof.push(leaf_hash(b"x"));
    let err = w.add_checkpoint(&with_proof.to_bytes()).unwrap_err();
    assert_eq!(err.status(), 422, "{err}");
    // Any other old size: 409 telling 0.
    let err = w.add_checkpoint(&request(&log, 3, 5)).unwrap_err();
    assert_eq!((err.status(), err.latest_size()), (409, Some(0)));
    // The empty tree: cosigned with the empty tree's hash, refused with another.
    let empty = Checkpoint {
        origin: ORIGIN.to_string(),
        size: 0,
        hash: EMPTY_TREE_HASH,
        extensions: Vec::new(),
    };
    let body = |cp: &Checkpoint| {
        AddCheckpoint {
            old_size: 0,
            proof: Vec::new(),
            checkpoint: sign_checkpoint(cp, &log.signer).unwrap(),
        }
        .to_bytes()
    };
    let not_empty = Checkpoint {
        hash: leaf_hash(b"x"),
        ..empty.clone()
    };
    assert_eq!(
        w.add_checkpoint(&body(&not_empty)).unwrap_err().status(),
        409
    );
    w.add_checkpoint(&body(&empty)).unwrap();
    assert_eq!(latest_size(&w), Some(0));
    w.add_checkpoint(&request(&log, 0, 5)).unwrap();
    assert_eq!(latest_size(&w), Some(5));
}

#[test]
fn the_state_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_of(ORIGIN, 1, 30);
    let other = log_of("example.com/second", 9, 4);
    {
        let w = witness(dir.path(), &[&log, &other]);
        w.add_checkpoint(&request(&log, 0, 30)).unwrap();
        w.add_checkpoint(&request(&other, 0, 4)).unwrap();
        assert_eq!(w.origins(), ["example.com/log", "example.com/second"]);
    }
    let w = reopen(dir.path(), &[&log]);
    assert_eq!(latest_size(&w), Some(30));
    // Smaller and forked trees stay refused; the second log is not witnessed any more.
    assert_eq!(
        w.add_checkpoint(&request(&log, 0, 20))
            .unwrap_err()
            .status(),
        409
    );
    assert_eq!(
        w.add_checkpoint(&request(&other, 4, 4))
            .unwrap_err()
            .status(),
        404
    );
    grow(&mut log, 2);
    w.add_checkpoint(&request(&log, 30, 32)).unwrap();
    drop(w);
    // The log's second key is trusted as well as the first.
    let rotated = Signer::from_ed25519_seed(ORIGIN, &[42; 32]).unwrap();
    let w = Witness::open(dir.path(), vec![log.signer.verifier(), rotated.verifier()]).unwrap();
    let checkpoint = log.checkpoint();
    assert_eq!(checkpoint.size, 32);
    let by_rotated = AddCheckpoint {
        old_size: 32,
        proof: Vec::new(),
        checkpoint: sign_checkpoint(&checkpoint, &rotated).unwrap(),
    };
    w.add_checkpoint(&by_rotated.to_bytes()).unwrap();
}

#[test]
fn evidence_is_bounded_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_of(ORIGIN, 1, 6);
    let mut w = witness(dir.path(), &[&log]);
    w.evidence_bound = EvidenceBound {
        rows: 3,
        bytes: 1 << 20,
    };
    w.add_checkpoint(&request(&log, 0, 6)).unwrap();
    for i in 0..5u8 {
        let mut fork = LogWriter::new(ORIGIN, 1);
        for k in 0..6 {
            fork.append(vec![i, k]);
        }
        assert_eq!(
            w.add_checkpoint(&request(&fork, 6, 6))
                .unwrap_err()
                .status(),
            409
        );
    }
    let evidence = w.evidence().unwrap();
    assert_eq!(evidence.kept.len(), 3);
    assert_eq!(evidence.dropped, [(ORIGIN.to_string(), 2)]);

    // The byte bound too: a body larger than what is left is only counted.
    w.evidence_bound = EvidenceBound {
        rows: 100,
        bytes: 0,
    };
    let mut fork = LogWriter::new(ORIGIN, 1);
    fork.append(b"other".to_vec());
    grow(&mut fork, 5);
    w.add_checkpoint(&request(&fork, 6, 6)).unwrap_err();
    let evidence = w.evidence().unwrap();
    assert_eq!(evidence.kept.len(), 3);
    assert_eq!(evidence.dropped, [(ORIGIN.to_string(), 3)]);
}

/// Many threads submit checkpoints of one log of random, increasing sizes, each from the size it last
/// heard of (its own success or a 409), against one witness. Every success must extend the
/// one before it: the successes that grew the tree form a single chain from 0, with no two
/// from the same old size (two would mean one was checked against a state another had
/// already replaced: the rollback race the specification describes), and the persisted
/// size, watched meanwhile, never goes down.
#[test]
fn concurrent_requests_never_roll_back() {
    const SIZE: u64 = 300;
    const THREADS: usize = 8;
    const ATTEMPTS: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(log_of(ORIGIN, 1, SIZE));
    let w = Arc::new(witness(dir.path(), &[&log]));
    // Signed checkpoints of every size, made once.
    let notes: Arc<Vec<Vec<u8>>> = Arc::new((0..=SIZE).map(|s| note_at(&log, s)).collect());

    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (w, done) = (w.clone(), done.clone());
        std::thread::spawn(move || {
            let mut seen = 0;
            let mut looks = 0u64;
            while !done.load(Ordering::Relaxed) {
                let now = latest_size(&w).unwrap_or(0);
                assert!(now >= seen, "the persisted size went from {seen} to {now}");
                seen = now;
                looks += 1;
            }
            looks
        })
    };
    let submitters: Vec<_> = (0..THREADS)
        .map(|_| {
            let (w, log, notes) = (w.clone(), log.clone(), notes.clone());
            std::thread::spawn(move || {
                let mut rng = rand::thread_rng();
                let mut believed = 0u64;
                let mut successes = Vec::new();
                for _ in 0..ATTEMPTS {
                    // Small steps, so that many successes grow the tree and race each other.
                    let size = (believed + rng.gen_range(0..=4)).clamp(1, SIZE);
                    let body = AddCheckpoint {
                        old_size: believed,
                        proof: proof(&log, believed, size),
                        checkpoint: notes[size as usize].clone(),
                    }
                    .to_bytes();
                    match w.add_checkpoint(&body) {
                        Ok(lines) => {
                            assert_eq!(lines.matches('\n').count(), 1);
                            successes.push((believed, size));
                            believed = size;
                        }
                        Err(AddError::Conflict { latest, .. }) => believed = latest,
                        Err(other) => panic!("{other}"),
                    }
                }
                successes
            })
        })
        .collect();
    let successes: Vec<(u64, u64)> = submitters
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    done.store(true, Ordering::Relaxed);
    assert!(watcher.join().unwrap() > 0);

    let final_size = latest_size(&w).unwrap();
    let mut growth: Vec<(u64, u64)> = successes
        .iter()
        .copied()
        .filter(|(old, size)| old != size)
        .collect();
    growth.sort_unstable();
    assert!(
        growth.len() >= 2,
        "too little contention to test: {growth:?}"
    );
    eprintln!(
        "{} successes, {} growing the tree",
        successes.len(),
        growth.len()
    );
    let mut at = 0;
    for (old, size) in &growth {
        assert_eq!(
            *old, at,
            "a success from {old} while the chain was at {at}: {growth:?}"
        );
        assert!(size > old);
        at = *size;
    }
    assert_eq!(at, final_size);
    // A re-cosign of one size happened only at a size the chain passed through.
    for (old, size) in successes.iter().filter(|(old, size)| old == size) {
        assert!(
            growth.iter().any(|(_, s)| s == size),
            "recosigned {old}={size} off the chain"
        );
    }
    assert!(w.evidence().unwrap().kept.is_empty());
}

#[test]
fn init_writes_private_key_files_and_never_replaces_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("new/witness");
    let vkey = crate::init(&data, WITNESS_NAME).unwrap();
    assert_eq!(vkey.name(), WITNESS_NAME);
    // The vkey is of type 0x04 and what the key file's signer key verifies with.
    assert_eq!(WitnessKey::new(&vkey.to_string()).unwrap(), vkey);
    assert_eq!(crate::read_key(&data).unwrap(), vkey);
    let vkey_file = std::fs::read_to_string(data.join(crate::VKEY_FILE)).unwrap();
    assert_eq!(vkey_file, format!("{vkey}\n"));
    let skey = std::fs::read_to_string(data.join(crate::KEY_FILE)).unwrap();
    assert_eq!(
        Cosigner::new(&skey).unwrap().witness_key(),
        vkey,
        "the key file holds the matching signer key"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join(crate::KEY_FILE)), 0o600);
    }

    let err = crate::init(&data, "witness.example/other").unwrap_err();
    assert!(matches!(err, WitnessError::KeyExists(_)), "{err}");
    assert_eq!(crate::read_key(&data).unwrap(), vkey);
    assert!(matches!(
        crate::init(&dir.path().join("x"), "bad name").unwrap_err(),
        WitnessError::BadName(_)
    ));
}

#[test]
fn opening_says_what_is_wrong_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let err = Witness::open(dir.path(), Vec::new()).unwrap_err();
    assert!(matches!(err, WitnessError::NoKey(_)), "{err}");
    assert!(err.to_string().contains("sovereign witness init"), "{err}");

    // A log's signed-note key (type 0x01) is not a witness key.
    let log_key = Signer::from_ed25519_seed("example.com/log", &[1; 32]).unwrap();
    std::fs::write(dir.path().join(crate::KEY_FILE), log_key.to_skey()).unwrap();
    let err = Witness::open(dir.path(), Vec::new()).unwrap_err();
    assert!(matches!(err, WitnessError::BadKey { .. }), "{err}");
    assert!(err.to_string().contains("0x01"), "{err}");

    // A verifier key where the signer key belongs.
    let cosigner = Cosigner::from_ed25519_seed(WITNESS_NAME, &[2; 32]).unwrap();
    std::fs::write(
        dir.path().join(crate::KEY_FILE),
        cosigner.witness_key().to_string(),
    )
    .unwrap();
    let err = Witness::open(dir.path(), Vec::new()).unwrap_err();
    assert!(
        err.to_string().contains("does not hold a signer key"),
        "{err}"
    );

    // The right key opens, also given the same log key twice.
    std::fs::write(dir.path().join(crate::KEY_FILE), cosigner.to_skey()).unwrap();
    let a = Verifier::from_ed25519(ORIGIN, *log_key.verifier().public_key()).unwrap();
    let w = Witness::open(dir.path(), vec![a.clone(), a]).unwrap();
    assert_eq!(w.origins(), [ORIGIN]);
}

#[test]
fn one_witness_per_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_of(ORIGIN, 1, 1);
    let first = witness(dir.path(), &[&log]);
    let err = Witness::open(dir.path(), vec![log.signer.verifier()]).unwrap_err();
    assert!(matches!(err, WitnessError::Locked(_)), "{err}");
    // Evidence can be read meanwhile.
    crate::read_evidence(dir.path()).unwrap();
    drop(first);
    reopen(dir.path(), &[&log]);
}

/// The HTTP server: answers with the right status, type and body, keeps connections alive,
/// limits bodies, and stops when told.
#[test]
fn http() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_of(ORIGIN, 1, 4);
    let w = Arc::new(witness(dir.path(), &[&log]));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(crate::http::serve(
        listener,
        w.clone(),
        crate::http::ServeOptions::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let http = reqwest::blocking::Client::new();
    let add = |body: Vec<u8>| {
        let response = http
            .post(format!("{base}/add-checkpoint"))
            .body(body)
            .send()
            .unwrap();
        let status = response.status().as_u16();
        let kind = response.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        (status, kind, response.text().unwrap())
    };

    let (status, kind, lines) = add(request(&log, 0, 4));
    assert_eq!((status, kind.as_str()), (200, "text/plain; charset=utf-8"));
    assert_cosigned(&w, &log, 4, &lines);
    // The response appended to the checkpoint is a note with the cosignature (how clients
    // read it).
    let mut cosigned = note_at(&log, 4);
    cosigned.extend_from_slice(lines.as_bytes());
    let policy = tlog::cosignature::WitnessPolicy::new(vec![w.witness_key()], 1).unwrap();
    policy.open(&cosigned, &log.signer.verifier()).unwrap();

    let (status, kind, body) = add(request(&log, 0, 4));
    assert_eq!((status, kind.as_str()), (409, SIZE_CONTENT_TYPE));
    assert_eq!(body, "4\n");
    assert_eq!(parse_size_body(body.as_bytes()), Some(4));

    grow(&mut log, 4);
    assert_eq!(add(request(&log, 4, 8)).0, 200);
    let (status, kind, body) = add(b"old 1\n".to_vec());
    assert_eq!((status, kind.as_str()), (400, "text/plain; charset=utf-8"));
    assert!(body.starts_with("malformed request"), "{body}");
    let stranger = log_of("example.com/other", 2, 1);
    let (status, _, body) = add(request(&stranger, 0, 1));
    assert_eq!(status, 404);
    assert!(body.contains("example.com/other"), "{body}");
    let mut wrong = AddCheckpoint::parse(&request(&log, 8, 8)).unwrap();
    wrong.proof.push(leaf_hash(b"x"));
    assert_eq!(add(wrong.to_bytes()).0, 422);

    // Too large a body: 413, and the server goes on.
    let (status, _, _) = add(vec![b'x'; crate::http::MAX_BODY_BYTES + 1]);
    assert_eq!(status, 413);
    let health = http.get(format!("{base}/healthz")).send().unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(health.text().unwrap(), "ok\n");
    let wrong_method = http.get(format!("{base}/add-checkpoint")).send().unwrap();
    assert_eq!(wrong_method.status().as_u16(), 405);
    assert!(
        wrong_method
            .text()
            .unwrap()
            .contains("POST /add-checkpoint")
    );
    let nowhere = http.get(format!("{base}/nowhere")).send().unwrap();
    assert_eq!(nowhere.status().as_u16(), 404);

    // Stops when told, with kept-alive connections open.
    stop.send(()).unwrap();
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), server).await })
        .expect("the server stops")
        .unwrap();
}
