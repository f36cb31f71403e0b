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
use crate::{AddError, Dropped, EvidenceKind, Witness, WitnessError};

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
    // The two wrong proofs to 16 are one row (one checkpoint, one kind), counted twice.
    let evidence = w.evidence().unwrap();
    assert_eq!(evidence.kept.len(), 2, "{evidence:?}");
    assert_eq!(
        evidence
            .kept
            .iter()
            .map(|e| (e.kind, e.size, e.times))
            .collect::<Vec<_>>(),
        [
            (EvidenceKind::Inconsistent, 16, 2),
            (EvidenceKind::Inconsistent, 8, 1)
        ]
    );
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
    assert_eq!(evidence.dropped, [dropped(EvidenceKind::Fork, 2)]);

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
    assert_eq!(evidence.dropped, [dropped(EvidenceKind::Fork, 3)]);
}

fn dropped(kind: EvidenceKind, count: u64) -> Dropped {
    Dropped {
        origin: ORIGIN.to_string(),
        kind: Some(kind),
        count,
    }
}

/// `note` with signature lines of unknown keys added up to the note size limit: anyone can
/// pad a log's genuine checkpoint so.
fn padded(note: &[u8], seed: u64) -> Vec<u8> {
    let mut out = note.to_vec();
    let lines = tlog::note::MAX_SIGNATURES - 1;
    let budget = (tlog::note::MAX_NOTE_SIZE - note.len()) / lines;
    for i in 0..lines {
        let name = format!("pad{seed}.example/{i}");
        // "— " is 4 bytes; the name, a space, the base64 and a newline.
        let b64_len = (budget - 4 - name.len() - 2) / 4 * 4;
        let mut raw = vec![0u8; b64_len / 4 * 3];
        rand::thread_rng().fill(&mut raw[..]);
        let line = format!(
            "\u{2014} {name} {}\n",
            base64::engine::general_purpose::STANDARD.encode(&raw)
        );
        out.extend_from_slice(line.as_bytes());
    }
    assert!(out.len() <= tlog::note::MAX_NOTE_SIZE);
    assert!(out.len() > tlog::note::MAX_NOTE_SIZE - 10_000);
    out
}

/// `count` random hashes: a proof that proves nothing.
fn garbage_proof(count: usize) -> Vec<Hash> {
    let mut rng = rand::thread_rng();
    (0..count)
        .map(|_| {
            let mut hash = [0u8; 32];
            rng.fill(&mut hash[..]);
            hash
        })
        .collect()
}

/// The bytes of every file in the data folder.
fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// The review's attack: the log's genuine checkpoint, sent with `old <latest>` and a garbage
/// proof, padded with unknown-key lines to the note size limit, 64 times (which filled the
/// 64 MiB a log's evidence could take). One small row, the repeats counted in it; the log
/// goes on.
#[test]
fn failed_proof_spam_keeps_one_small_row() {
    const SPAM: u64 = 64;
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_of(ORIGIN, 1, 8);
    let w = witness(dir.path(), &[&log]);
    w.add_checkpoint(&request(&log, 0, 8)).unwrap();
    grow(&mut log, 8);
    let genuine = note_at(&log, 16);
    let mut first_proof = Vec::new();
    for i in 0..SPAM {
        let proof = garbage_proof(1 + (i as usize % 63));
        if i == 0 {
            first_proof = proof.clone();
        }
        let body = AddCheckpoint {
            old_size: 8,
            proof,
            checkpoint: padded(&genuine, i),
        }
        .to_bytes();
        assert!(body.len() > 1_000_000);
        let err = w.add_checkpoint(&body).unwrap_err();
        assert_eq!(err.status(), 422, "{err}");
    }

    let evidence = w.evidence().unwrap();
    assert!(evidence.dropped.is_empty(), "{evidence:?}");
    let [row] = evidence.kept.as_slice() else {
        panic!("{evidence:?}");
    };
    assert_eq!(row.kind, EvidenceKind::Inconsistent);
    assert_eq!((row.old_size, row.size, row.latest_size), (8, 16, 8));
    assert_eq!(row.hash, Some(tree_hash(16, &log.store).unwrap()));
    assert_eq!(row.times, SPAM);
    assert!(row.last_time >= row.time);
    assert!(row.reason.contains("consistency proof"), "{}", row.reason);
    assert!(row.reason.contains("unverified"), "{}", row.reason);

    // The row holds the first request with only the log's signature: a few KiB at most.
    let body = crate::read_evidence_body(dir.path(), row.id)
        .unwrap()
        .unwrap();
    assert!(body.len() < 4096, "{} bytes", body.len());
    let kept = AddCheckpoint::parse(&body).unwrap();
    assert_eq!(kept.old_size, 8);
    assert_eq!(kept.proof, first_proof);
    assert_eq!(kept.checkpoint, genuine);
    let opened = tlog::note::open(&kept.checkpoint, [&log.signer.verifier()]).unwrap();
    assert!(opened.unverified_sigs.is_empty());
    // With it, the checkpoint the witness held, to check the proof against.
    assert_eq!(
        crate::read_evidence_held(dir.path(), row.id).unwrap(),
        Some(Some(note_at(&log, 8)))
    );
    // The whole state stays small (the spam was 64 MiB).
    let bytes = folder_bytes(dir.path());
    assert!(bytes < 2 << 20, "the data folder holds {bytes} bytes");

    // The log itself is not held back.
    let lines = w.add_checkpoint(&request(&log, 8, 16)).unwrap();
    assert_cosigned(&w, &log, 16, &lines);
}

/// Failed proofs, which anyone can produce from a log's public checkpoints, fill their own
/// bound only: a proven fork is kept after it, with the checkpoint it contradicts.
#[test]
fn a_proven_fork_is_kept_after_the_failed_proof_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_of(ORIGIN, 1, 8);
    let mut w = witness(dir.path(), &[&log]);
    w.evidence_bound = EvidenceBound {
        rows: 2,
        bytes: 1 << 20,
    };
    w.add_checkpoint(&request(&log, 0, 8)).unwrap();
    grow(&mut log, 6);
    // Six genuine checkpoints, each with a garbage proof: two kept, four counted.
    for size in 9..=14 {
        let body = AddCheckpoint {
            old_size: 8,
            proof: garbage_proof(3),
            checkpoint: note_at(&log, size),
        }
        .to_bytes();
        assert_eq!(w.add_checkpoint(&body).unwrap_err().status(), 422);
    }
    let evidence = w.evidence().unwrap();
    assert_eq!(evidence.kept.len(), 2);
    assert_eq!(evidence.dropped, [dropped(EvidenceKind::Inconsistent, 4)]);

    // A fork at the cosigned size, twice: kept once, counted twice.
    let mut fork = LogWriter::new(ORIGIN, 1);
    for i in 0..8 {
        fork.append(format!("forked {i}").into_bytes());
    }
    let forked = request(&fork, 8, 8);
    for _ in 0..2 {
        let err = w.add_checkpoint(&forked).unwrap_err();
        assert!(matches!(err, AddError::Fork { size: 8 }), "{err}");
    }
    let evidence = w.evidence().unwrap();
    assert_eq!(evidence.kept.len(), 3, "{evidence:?}");
    assert_eq!(evidence.dropped, [dropped(EvidenceKind::Inconsistent, 4)]);
    let proven = &evidence.kept[2];
    assert_eq!(proven.kind, EvidenceKind::Fork);
    assert_eq!((proven.size, proven.times), (8, 2));
    assert!(
        proven.reason.contains("proof of a fork"),
        "{}",
        proven.reason
    );

    // The row is the proof by itself: two checkpoints of size 8, both signed by the log's
    // key, with different roots.
    let verifier = log.signer.verifier();
    let open = |note: &[u8]| {
        Checkpoint::parse(&tlog::note::open(note, [&verifier]).unwrap().text).unwrap()
    };
    let body = crate::read_evidence_body(dir.path(), proven.id)
        .unwrap()
        .unwrap();
    assert_eq!(body, forked);
    let held = crate::read_evidence_held(dir.path(), proven.id)
        .unwrap()
        .unwrap()
        .unwrap();
    let (theirs, ours) = (
        open(&AddCheckpoint::parse(&body).unwrap().checkpoint),
        open(&held),
    );
    assert_eq!((theirs.size, ours.size), (8, 8));
    assert_ne!(theirs.hash, ours.hash);
    assert_eq!(Some(theirs.hash), proven.hash);

    // More failed proofs are still only counted; the fork stays.
    let body = AddCheckpoint {
        old_size: 8,
        proof: garbage_proof(3),
        checkpoint: note_at(&log, 14),
    }
    .to_bytes();
    w.add_checkpoint(&body).unwrap_err();
    grow(&mut log, 1);
    let body = AddCheckpoint {
        old_size: 8,
        proof: garbage_proof(3),
        checkpoint: note_at(&log, 15),
    }
    .to_bytes();
    w.add_checkpoint(&body).unwrap_err();
    let evidence = w.evidence().unwrap();
    assert_eq!(evidence.kept.len(), 3);
    assert_eq!(evidence.kept[2].kind, EvidenceKind::Fork);
    assert_eq!(evidence.dropped, [dropped(EvidenceKind::Inconsistent, 6)]);
}

/// The checkpoint the witness holds, sent again, is cosigned again without a commit: the
/// state file and its WAL stay as they are, and another connection sees no change.
#[test]
fn the_held_checkpoint_again_is_cosigned_without_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_of(ORIGIN, 1, 8);
    let w = witness(dir.path(), &[&log]);
    w.add_checkpoint(&request(&log, 0, 8)).unwrap();
    grow(&mut log, 4);
    w.add_checkpoint(&request(&log, 8, 12)).unwrap();

    let reader = crate::store::open(dir.path()).unwrap();
    let data_version = || -> i64 {
        reader
            .query_row("PRAGMA data_version", [], |row| row.get(0))
            .unwrap()
    };
    let files = || {
        ["", "-wal"].map(|suffix| {
            let path = dir.path().join(format!("{}{suffix}", crate::STATE_FILE));
            std::fs::metadata(path).unwrap().len()
        })
    };
    let before = (data_version(), files());
    // As the log sent it, and with other lines added (other witnesses' cosignatures, say):
    // a note with other bytes, the same checkpoint.
    let plain = request(&log, 12, 12);
    let mut with_more = AddCheckpoint::parse(&plain).unwrap();
    with_more.checkpoint = padded(&with_more.checkpoint, 7);
    for body in [&plain, &with_more.to_bytes(), &plain] {
        let lines = w.add_checkpoint(body).unwrap();
        assert_cosigned(&w, &log, 12, &lines);
    }
    assert_eq!((data_version(), files()), before);
    // In another second too (a write of the time cosigned would change the file).
    let second =
        |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let start = second(std::time::SystemTime::now());
    while second(std::time::SystemTime::now()) == start {
        std::thread::sleep(Duration::from_millis(20));
    }
    w.add_checkpoint(&plain).unwrap();
    assert_eq!((data_version(), files()), before);
    assert_eq!(latest_size(&w), Some(12));

    // What it would have looked like: a change is seen.
    grow(&mut log, 1);
    w.add_checkpoint(&request(&log, 12, 13)).unwrap();
    assert_ne!(data_version(), before.0);
}

/// A state file of version 1 (evidence kept verbatim, one tally per log) opens at version
/// 2: its evidence keeps its bytes and gets its kind from its reason; what it dropped is
/// counted, of unknown kind; its tally goes on bounding new evidence; the checkpoint it
/// holds (kept verbatim, padded here) is stripped when it becomes evidence.
#[test]
fn a_version_1_state_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_of(ORIGIN, 1, 8);
    crate::init(dir.path(), WITNESS_NAME).unwrap();
    let mut fork = LogWriter::new(ORIGIN, 1);
    for i in 0..8 {
        fork.append(format!("forked {i}").into_bytes());
    }
    let fork_body = AddCheckpoint {
        old_size: 8,
        proof: Vec::new(),
        checkpoint: padded(&note_at(&fork, 8), 1),
    }
    .to_bytes();
    let failed_body = AddCheckpoint {
        old_size: 8,
        proof: garbage_proof(2),
        checkpoint: note_at(&log, 8),
    }
    .to_bytes();
    {
        let conn = crate::store::open_at(dir.path(), &crate::store::SCHEMA_STEPS[..1]).unwrap();
        assert_eq!(sqlitedb::schema_version(&conn).unwrap(), 1);
        conn.execute(
            "INSERT INTO checkpoints (origin, size, hash, note, cosigned_at)
             VALUES (?1, 8, ?2, ?3, 1000)",
            rusqlite::params![
                ORIGIN,
                tree_hash(8, &log.store).unwrap().as_slice(),
                padded(&note_at(&log, 8), 2)
            ],
        )
        .unwrap();
        let fork_reason = AddError::Fork { size: 8 }.to_string();
        let failed_reason = inconsistent_reason();
        for (time, reason, body) in [
            (1001, &fork_reason, &fork_body),
            (1002, &failed_reason, &failed_body),
        ] {
            conn.execute(
                "INSERT INTO evidence (origin, received_at, reason, old_size, size, latest_size, body)
                 VALUES (?1, ?2, ?3, 8, 8, 8, ?4)",
                rusqlite::params![ORIGIN, time, reason, body],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO evidence_tally (origin, kept, kept_bytes, dropped) VALUES (?1, 2, ?2, 5)",
            rusqlite::params![
                ORIGIN,
                i64::try_from(fork_body.len() + failed_body.len()).unwrap()
            ],
        )
        .unwrap();
    }

    let mut w = reopen(dir.path(), &[&log]);
    assert_eq!(latest_size(&w), Some(8));
    let evidence = w.evidence().unwrap();
    let summary: Vec<_> = evidence
        .kept
        .iter()
        .map(|e| (e.kind, e.time, e.last_time, e.times, e.hash))
        .collect();
    assert_eq!(
        summary,
        [
            (EvidenceKind::Fork, 1001, 1001, 1, None),
            (EvidenceKind::Inconsistent, 1002, 1002, 1, None)
        ]
    );
    assert_eq!(
        evidence.dropped,
        [Dropped {
            origin: ORIGIN.to_string(),
            kind: None,
            count: 5
        }]
    );
    let fork_id = evidence.kept[0].id;
    assert_eq!(
        crate::read_evidence_body(dir.path(), fork_id).unwrap(),
        Some(fork_body)
    );
    assert_eq!(
        crate::read_evidence_held(dir.path(), fork_id).unwrap(),
        Some(None)
    );
    assert_eq!(crate::read_evidence_held(dir.path(), 999).unwrap(), None);

    // The tally carried over: with room for two forks, one more is kept, the next counted.
    w.evidence_bound = EvidenceBound {
        rows: 2,
        bytes: 64 << 20,
    };
    for seed in [2, 3] {
        let mut other = LogWriter::new(ORIGIN, 1);
        for i in 0..8 {
            other.append(format!("fork {seed} {i}").into_bytes());
        }
        assert_eq!(
            w.add_checkpoint(&request(&other, 8, 8))
                .unwrap_err()
                .status(),
            409
        );
    }
    let evidence = w.evidence().unwrap();
    assert_eq!(evidence.kept.len(), 3);
    assert!(evidence.dropped.contains(&dropped(EvidenceKind::Fork, 1)));
    // The new row's held checkpoint is the padded one stripped to the log's signature.
    let new = &evidence.kept[2];
    assert_eq!(new.kind, EvidenceKind::Fork);
    assert_eq!(
        crate::read_evidence_held(dir.path(), new.id).unwrap(),
        Some(Some(note_at(&log, 8)))
    );
    drop(w);
    let conn = crate::store::open(dir.path()).unwrap();
    assert_eq!(
        sqlitedb::schema_version(&conn).unwrap(),
        i64::try_from(crate::store::SCHEMA_STEPS.len()).unwrap()
    );
}

/// The text a version-1 witness kept as the reason of a failed proof.
fn inconsistent_reason() -> String {
    AddError::Inconsistent {
        old: 8,
        size: 8,
        reason: "the proof between two trees of one size must be empty".to_string(),
    }
    .to_string()
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
