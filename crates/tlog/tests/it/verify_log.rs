//! End-to-end: a log published as C2SP tiles, verified by `verify_log`, and every
//! kind of tampering a monitor must catch.

use std::collections::HashMap;

use testkit::log_writer::{LogWriter, entry};
use tlog::checkpoint::{Checkpoint, CheckpointError, sign_checkpoint};
use tlog::note::{NoteError, Signer};
use tlog::proof::{TlogProof, verify};
use tlog::{
    BundleError, DirFetcher, FetcherTileReader, TileFetcher, VerifyError, check_record,
    encode_bundle, leaf_hash, prove_record, tile_hash_reader, verify_log,
};

const ORIGIN: &str = "sovereign.example/log";

fn log_of(size: u64) -> LogWriter {
    let mut log = LogWriter::new(ORIGIN, 7);
    for i in 0..size {
        log.append(entry(i));
    }
    log.publish();
    log
}

/// What `verify_log` returned, and the entries it handed over.
type Run = (Result<Checkpoint, VerifyError>, Vec<(u64, Vec<u8>)>);

/// Runs `verify_log`, collecting the entries it hands over.
fn run<F: TileFetcher + ?Sized>(files: &F, log: &LogWriter, previous: Option<&Checkpoint>) -> Run {
    let mut seen = Vec::new();
    let mut last_progress = (0, 0);
    let result = verify_log(
        files,
        &log.signer.verifier(),
        previous,
        &mut |done, total| {
            assert!(done >= last_progress.0 && done <= total);
            last_progress = (done, total);
        },
        &mut |i, e| {
            seen.push((i, e.to_vec()));
            Ok(())
        },
    );
    if let Ok(cp) = &result {
        assert_eq!(last_progress, (cp.size, cp.size));
    }
    (result, seen)
}

#[test]
fn verifies_logs_of_every_shape() {
    // Empty, one entry, around tile boundaries, and the spec's 70,000 example
    // (with level-1 and level-2 tiles).
    for size in [
        0u64, 1, 2, 255, 256, 257, 511, 512, 1000, 65_535, 65_536, 65_537, 70_000,
    ] {
        let log = log_of(size);
        let (result, seen) = run(&log.files, &log, None);
        let cp = result.unwrap_or_else(|e| panic!("size {size}: {e}"));
        assert_eq!(cp, log.checkpoint());
        assert_eq!(seen.len() as u64, size);
        for (i, (index, e)) in seen.iter().enumerate() {
            assert_eq!(*index, i as u64);
            assert_eq!(*e, entry(i as u64));
        }
    }
}

#[test]
fn consistent_growth_verifies_against_the_previous_checkpoint() {
    let mut log = log_of(1000);
    let (first, _) = run(&log.files, &log, None);
    let first = first.unwrap();
    for i in 1000..70_000 {
        log.append(entry(i));
    }
    log.publish();
    let (second, _) = run(&log.files, &log, Some(&first));
    assert_eq!(second.unwrap().size, 70_000);
    // Same checkpoint again: nothing changed, still fine.
    let again = log.checkpoint();
    assert!(run(&log.files, &log, Some(&again)).0.is_ok());
    // A previous checkpoint of the empty tree.
    let empty = Checkpoint {
        size: 0,
        hash: tlog::EMPTY_TREE_HASH,
        ..again.clone()
    };
    assert!(run(&log.files, &log, Some(&empty)).0.is_ok());
}

#[test]
fn detects_a_fork_from_the_previous_checkpoint() {
    // The previous checkpoint saw entry 5 as something else: the log rewrote history.
    let mut other = LogWriter::new(ORIGIN, 7);
    for i in 0..1000 {
        other.append(if i == 5 {
            b"the original entry 5".to_vec()
        } else {
            entry(i)
        });
    }
    let previous = other.publish();
    let log = log_of(3000);
    match run(&log.files, &log, Some(&previous)).0 {
        Err(VerifyError::Fork {
            size: 1000,
            previous: p,
            computed,
        }) => {
            assert_eq!(p, previous.hash);
            assert_ne!(computed, previous.hash);
        }
        other => panic!("{other:?}"),
    }

    // Same size, different root.
    let log_1000 = log_of(1000);
    let err = run(&log_1000.files, &log_1000, Some(&previous))
        .0
        .unwrap_err();
    assert!(matches!(err, VerifyError::Fork { size: 1000, .. }), "{err}");
    assert!(err.to_string().contains("forked"), "{err}");
}

#[test]
fn detects_truncation_and_another_log() {
    let big = log_of(2000).checkpoint();
    let log = log_of(1000);
    let err = run(&log.files, &log, Some(&big)).0.unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Truncated {
                previous_size: 2000,
                size: 1000
            }
        ),
        "{err}"
    );

    let elsewhere = Checkpoint {
        origin: "other.example/log".to_string(),
        ..log.checkpoint()
    };
    assert!(matches!(
        run(&log.files, &log, Some(&elsewhere)).0,
        Err(VerifyError::OriginChanged { .. })
    ));
}

#[test]
fn detects_a_modified_entry() {
    let mut log = log_of(1000);
    // Entry 300 (bundle 1, position 44) replaced, bundle re-encoded consistently.
    let mut bundle: Vec<Vec<u8>> = (256..512).map(entry).collect();
    bundle[44] = b"{\"i\":300,\"decision\":\"deny\"}".to_vec();
    log.files.insert(
        "tile/entries/001".to_string(),
        encode_bundle(bundle.iter().map(Vec::as_slice)).unwrap(),
    );
    let (result, seen) = run(&log.files, &log, None);
    let err = result.unwrap_err();
    match &err {
        VerifyError::LeafMismatch {
            index: 300,
            bundle,
            tile,
            entry_hash,
            tile_hash,
        } => {
            assert_eq!(bundle, "tile/entries/001");
            assert_eq!(tile, "tile/0/001");
            assert_eq!(*tile_hash, leaf_hash(&entry(300)));
            assert_ne!(entry_hash, tile_hash);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("entry 300 (in tile/entries/001) hashes to "),
        "{err}"
    );
    // The bad entry never reached on_entry.
    assert_eq!(seen.len(), 300);
}

#[test]
fn detects_a_rewritten_entry_with_its_level0_tile() {
    // The attacker rewrites an entry and its leaf hash consistently: the level-1
    // tile (for a full tile) or the root (for the last, partial tile) gives it away.
    let mut log = log_of(1000);
    let mut entries: Vec<Vec<u8>> = (0..256).map(entry).collect();
    entries[10] = b"forged".to_vec();
    log.files.insert(
        "tile/entries/000".to_string(),
        encode_bundle(entries.iter().map(Vec::as_slice)).unwrap(),
    );
    let mut tile = log.files["tile/0/000"].clone();
    tile[10 * 32..11 * 32].copy_from_slice(&leaf_hash(b"forged"));
    log.files.insert("tile/0/000".to_string(), tile);
    let err = run(&log.files, &log, None).0.unwrap_err();
    match &err {
        VerifyError::TileHashMismatch {
            path,
            position: 0,
            first: 0,
            last: 255,
            ..
        } => assert_eq!(path, "tile/1/000.p/3"),
        other => panic!("{other:?}"),
    }

    let mut log = log_of(1000);
    let mut entries: Vec<Vec<u8>> = (768..1000).map(entry).collect();
    entries[0] = b"forged".to_vec();
    log.files.insert(
        "tile/entries/003.p/232".to_string(),
        encode_bundle(entries.iter().map(Vec::as_slice)).unwrap(),
    );
    let mut tile = log.files["tile/0/003.p/232"].clone();
    tile[..32].copy_from_slice(&leaf_hash(b"forged"));
    log.files.insert("tile/0/003.p/232".to_string(), tile);
    let err = run(&log.files, &log, None).0.unwrap_err();
    assert!(
        matches!(err, VerifyError::RootMismatch { size: 1000, .. }),
        "{err}"
    );
}

#[test]
fn detects_a_bad_higher_level_tile() {
    // Level-1 hashes are not trusted, they are recomputed and compared.
    let mut log = log_of(70_000);
    let mut t = log.files["tile/1/000"].clone();
    t[200 * 32] ^= 1;
    log.files.insert("tile/1/000".to_string(), t);
    let err = run(&log.files, &log, None).0.unwrap_err();
    match &err {
        VerifyError::TileHashMismatch {
            path,
            position: 200,
            first,
            last,
            ..
        } => {
            assert_eq!(path, "tile/1/000");
            assert_eq!((*first, *last), (200 * 256, 201 * 256 - 1));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("entries 51200..=51455"), "{err}");

    let mut log = log_of(70_000);
    let mut t = log.files["tile/2/000.p/1"].clone();
    t[0] ^= 1;
    log.files.insert("tile/2/000.p/1".to_string(), t);
    assert!(matches!(
        run(&log.files, &log, None).0,
        Err(VerifyError::TileHashMismatch {
            position: 0,
            first: 0,
            last: 65_535,
            ..
        })
    ));
}

#[test]
fn detects_bad_checkpoints() {
    let log = log_of(300);
    // Signed by another key.
    let impostor = Signer::from_ed25519_seed(ORIGIN, &[8; 32]).unwrap();
    let mut files = log.files.clone();
    files.insert(
        "checkpoint".to_string(),
        sign_checkpoint(&log.checkpoint(), &impostor).unwrap(),
    );
    assert!(matches!(
        run(&files, &log, None).0,
        Err(VerifyError::Checkpoint(CheckpointError::Note(
            NoteError::Unverified(_)
        )))
    ));
    // Signed by the log, for a root the tiles do not support.
    let mut lie = log.checkpoint();
    lie.hash[0] ^= 1;
    files.insert(
        "checkpoint".to_string(),
        sign_checkpoint(&lie, &log.signer).unwrap(),
    );
    assert!(matches!(
        run(&files, &log, None).0,
        Err(VerifyError::RootMismatch { size: 300, .. })
    ));
    // Claiming more entries than served.
    let mut more = log.checkpoint();
    more.size = 600;
    files.insert(
        "checkpoint".to_string(),
        sign_checkpoint(&more, &log.signer).unwrap(),
    );
    let err = run(&files, &log, None).0.unwrap_err();
    // The first 256 entries complete a subtree the (missing) wider level-1 tile must hold.
    assert!(
        matches!(&err, VerifyError::Missing { path } if path.starts_with("tile/1/000.p/2 ")),
        "{err}"
    );
    // No checkpoint at all.
    files.remove("checkpoint");
    assert!(
        matches!(run(&files, &log, None).0, Err(VerifyError::Missing { path }) if path == "checkpoint")
    );
}

#[test]
fn detects_malformed_files() {
    let log = log_of(600);

    let mut files = log.files.clone();
    files.remove("tile/entries/001");
    assert!(
        matches!(run(&files, &log, None).0, Err(VerifyError::Missing { path }) if path == "tile/entries/001")
    );

    let mut files = log.files.clone();
    files.get_mut("tile/entries/002.p/88").unwrap().push(0);
    assert!(matches!(
        run(&files, &log, None).0,
        Err(VerifyError::Bundle { path, source: BundleError::TrailingData { width: 88, extra: 1 } })
            if path == "tile/entries/002.p/88"
    ));

    let mut files = log.files.clone();
    files.get_mut("tile/0/001").unwrap().truncate(8191);
    assert!(matches!(
        run(&files, &log, None).0,
        Err(VerifyError::TileSize {
            got: 8191,
            want: 8192,
            ..
        })
    ));

    // An extra entry in a full bundle.
    let mut files = log.files.clone();
    let mut bundle = files["tile/entries/000"].clone();
    bundle.extend_from_slice(&encode_bundle([b"extra".as_slice()]).unwrap());
    files.insert("tile/entries/000".to_string(), bundle);
    assert!(matches!(
        run(&files, &log, None).0,
        Err(VerifyError::Bundle {
            source: BundleError::TrailingData { .. },
            ..
        })
    ));
}

#[test]
fn on_entry_can_reject() {
    let log = log_of(600);
    let mut calls = 0;
    let err = verify_log(
        &log.files,
        &log.signer.verifier(),
        None,
        &mut |_, _| {},
        &mut |i, _| {
            calls += 1;
            if i == 517 {
                Err("not a decision".to_string())
            } else {
                Ok(())
            }
        },
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "entry 517: not a decision");
    assert_eq!(calls, 518);
}

#[test]
fn reads_full_tiles_when_partial_ones_are_gone() {
    // The log moved on from 1000 to 1024 entries and deleted the partial tiles of
    // size 1000; a monitor verifying the checkpoint of size 1000 uses the full ones.
    let mut log = log_of(1000);
    let old_note = log.files["checkpoint"].clone();
    for i in 1000..1024 {
        log.append(entry(i));
    }
    log.publish();
    log.files.remove("tile/0/003.p/232");
    log.files.remove("tile/entries/003.p/232");
    log.files.insert("checkpoint".to_string(), old_note);
    let (result, seen) = run(&log.files, &log, None);
    assert_eq!(result.unwrap().size, 1000);
    assert_eq!(seen.len(), 1000);
}

#[test]
fn verifies_a_directory_mirror() {
    let log = log_of(1000);
    let dir = tempfile::tempdir().unwrap();
    for (path, data) in &log.files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    let fetcher = DirFetcher::new(dir.path());
    let (result, seen) = run(&fetcher, &log, None);
    assert_eq!(result.unwrap().size, 1000);
    assert_eq!(seen.len(), 1000);
    assert!(fetcher.fetch("../etc/passwd").is_err());
    assert!(fetcher.fetch("/etc/passwd").is_err());
    assert_eq!(fetcher.fetch("tile/0/999").unwrap(), None);
}

#[test]
fn proofs_from_served_tiles() {
    // A monitor can prove any entry from the served tiles, authenticated against
    // the checkpoint, and package it as a C2SP tlog-proof.
    let log = log_of(70_000);
    let cp = log.checkpoint();
    let reader = tile_hash_reader(cp.size, cp.hash, FetcherTileReader(&log.files));
    for index in [0u64, 1, 255, 256, 65_535, 65_536, 69_999] {
        let hashes = prove_record(cp.size, index, &reader).unwrap();
        assert_eq!(hashes, prove_record(cp.size, index, &log.store).unwrap());
        check_record(&hashes, cp.size, &cp.hash, index, &leaf_hash(&entry(index))).unwrap();
        let proof = TlogProof {
            extra: None,
            index,
            hashes,
            checkpoint: log.files["checkpoint"].clone(),
        };
        let parsed = TlogProof::parse(&proof.encode()).unwrap();
        assert_eq!(
            verify(&parsed, &log.signer.verifier(), &entry(index)).unwrap(),
            cp
        );
        assert!(verify(&parsed, &log.signer.verifier(), &entry(index + 1)).is_err());
    }

    // A tile that does not match the checkpoint is refused, not used.
    let mut files: HashMap<String, Vec<u8>> = log.files.clone();
    files.get_mut("tile/0/010").unwrap()[5] ^= 1;
    let reader = tile_hash_reader(cp.size, cp.hash, FetcherTileReader(&files));
    let err = prove_record(cp.size, 2600, &reader).unwrap_err();
    assert!(err.to_string().contains("tile/0/010"), "{err}");
}
