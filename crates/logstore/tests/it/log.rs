//! The log on a real SQLite file: appends, reopening, checkpoints, and a full monitor's check
//! of what it serves.

use crate::common;

use common::{options, signer, verify, wait_for_checkpoint};
use logstore::{Log, LogOptions};
use tlog::note::Signer;

#[test]
fn appends_are_durable_served_as_tiles_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.sqlite");
    let signer = signer();
    let verifier = signer.verifier();
    let skey = signer.to_skey();

    let first_checkpoint;
    {
        let log = Log::open(&path, signer, options()).unwrap();
        assert_eq!(log.checkpoint().size, 0, "a new log signs its empty tree");
        for i in 0..700u64 {
            assert_eq!(
                log.append_blocking(format!("entry {i}").into_bytes())
                    .unwrap(),
                i
            );
        }
        wait_for_checkpoint(&log, 700);
        first_checkpoint = verify(&log, &verifier, None);
        assert_eq!(first_checkpoint.size, 700);
        // Proofs from the store check against the signed root.
        let proof = log.inclusion_proof(345, 700).unwrap();
        tlog::check_record(
            &proof,
            700,
            &first_checkpoint.hash,
            345,
            &tlog::leaf_hash(b"entry 345"),
        )
        .unwrap();
        assert!(log.inclusion_proof(700, 700).is_err());
    }
    // Reopened, it continues where it was and stays consistent with what it signed.
    let log = Log::open(&path, Signer::new(&skey).unwrap(), options()).unwrap();
    assert_eq!(log.size(), 700);
    for i in 700..1000u64 {
        assert_eq!(
            log.append_blocking(format!("entry {i}").into_bytes())
                .unwrap(),
            i
        );
    }
    wait_for_checkpoint(&log, 1000);
    let second = verify(&log, &verifier, Some(&first_checkpoint));
    let proof = log.consistency_proof(700, 1000).unwrap();
    tlog::check_tree(&proof, 1000, &second.hash, 700, &first_checkpoint.hash).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_get_distinct_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(
        Log::open(&dir.path().join("log.sqlite"), signer(), options()).unwrap(),
    );
    let mut tasks = Vec::new();
    for t in 0..16 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..50 {
                got.push(
                    log.append(format!("task {t} entry {i}").into_bytes())
                        .await
                        .unwrap(),
                );
            }
            got
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    assert_eq!(all, (0..800).collect::<Vec<u64>>());
    for index in [0u64, 399, 799] {
        let entry = log.entry(index).unwrap().unwrap();
        assert!(entry.starts_with(b"task "));
    }
}

#[test]
fn a_tampered_store_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.sqlite");
    let signer = signer();
    let skey = signer.to_skey();
    {
        let log = Log::open(&path, signer, options()).unwrap();
        for i in 0..10u64 {
            log.append_blocking(format!("entry {i}").into_bytes())
                .unwrap();
        }
        wait_for_checkpoint(&log, 10);
    }
    // Rewrite the stored hash of the first 8 entries' subtree, which the signed root of the
    // 10-entry tree is computed from. (Deeper tampering, such as one leaf hash, is not visible
    // to this O(log n) check at open; the monitor's full verification recomputes from leaves.)
    let conn = rusqlite::Connection::open(&path).unwrap();
    // That hash is the fourth (level 3) of entry 7's row.
    conn.execute(
        "UPDATE entries SET hashes = CAST(substr(hashes, 1, 96) || zeroblob(32) AS BLOB) WHERE idx = 7",
        [],
    )
    .unwrap();
    drop(conn);
    let error = Log::open(&path, Signer::new(&skey).unwrap(), options())
        .err()
        .expect("must refuse");
    assert!(error.to_string().contains("inconsistent"), "{error}");

    // Another key cannot adopt the log either.
    let error = Log::open(&path, self::signer(), options())
        .err()
        .expect("must refuse");
    assert!(error.to_string().contains("does not verify"), "{error}");
}

#[test]
fn oversized_entries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(&dir.path().join("log.sqlite"), signer(), options()).unwrap();
    assert!(
        log.append_blocking(vec![b'x'; logstore::MAX_ENTRY_BYTES + 1])
            .is_err()
    );
    assert_eq!(log.size(), 0);
}

/// The file's schema goes through `sqlitedb`: a file as builds before it wrote (the tables,
/// version 1) opens as it is, and one from a newer build is refused, saying why.
#[test]
fn schema_versions_are_kept_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.sqlite");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE entries (idx INTEGER PRIMARY KEY, data BLOB NOT NULL, hashes BLOB NOT NULL);
             CREATE TABLE checkpoints (size INTEGER PRIMARY KEY, note BLOB NOT NULL);
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let log = Log::open(&path, signer(), options()).unwrap();
    assert_eq!(log.size(), 0);
    drop(log);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 1);
    conn.pragma_update(None, "user_version", 2).unwrap();
    drop(conn);
    let error = Log::open(&path, signer(), options())
        .err()
        .expect("must refuse");
    assert!(
        error.to_string().contains("schema version 2 is newer"),
        "{error}"
    );
}

/// Full tiles are kept in memory once read; partial ones are read from the store each time,
/// so a partial tile read before it filled never stands in for the full one.
#[test]
fn full_tiles_are_kept_and_partial_tiles_are_not() {
    use tlog::{Tile, TileKind};
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(&dir.path().join("log.sqlite"), signer(), options()).unwrap();
    let entry = |i: u64| format!("entry {i}").into_bytes();
    let bundle = |range: std::ops::Range<u64>| {
        let entries: Vec<Vec<u8>> = range.map(entry).collect();
        tlog::encode_bundle(entries.iter().map(Vec::as_slice)).unwrap()
    };
    for i in 0..300u64 {
        log.append_blocking(entry(i)).unwrap();
    }
    let read = |kind, tile: Tile| log.tile(kind, &tile).unwrap().map(|d| d.to_vec());
    let hashes = |range: std::ops::Range<u64>| -> Vec<u8> {
        range.flat_map(|i| tlog::leaf_hash(&entry(i))).collect()
    };

    // Full tile 0, twice (the second time from memory): the same bytes.
    for _ in 0..2 {
        assert_eq!(
            read(TileKind::Entries, Tile::new(0, 0, 256)),
            Some(bundle(0..256))
        );
        assert_eq!(
            read(TileKind::Hashes, Tile::new(0, 0, 256)),
            Some(hashes(0..256))
        );
    }
    // Tile 1 is partial: its full form is not served yet, its partial one is.
    assert_eq!(read(TileKind::Entries, Tile::new(0, 1, 256)), None);
    assert_eq!(read(TileKind::Hashes, Tile::new(0, 1, 256)), None);
    assert_eq!(
        read(TileKind::Entries, Tile::new(0, 1, 44)),
        Some(bundle(256..300))
    );
    assert_eq!(
        read(TileKind::Hashes, Tile::new(0, 1, 44)),
        Some(hashes(256..300))
    );

    // Once tile 1 is full, its full form is served, and its partial forms stay right.
    for i in 300..600u64 {
        log.append_blocking(entry(i)).unwrap();
    }
    for _ in 0..2 {
        assert_eq!(
            read(TileKind::Entries, Tile::new(0, 1, 256)),
            Some(bundle(256..512))
        );
        assert_eq!(
            read(TileKind::Hashes, Tile::new(0, 1, 256)),
            Some(hashes(256..512))
        );
    }
    assert_eq!(
        read(TileKind::Entries, Tile::new(0, 1, 44)),
        Some(bundle(256..300))
    );
    assert_eq!(
        read(TileKind::Entries, Tile::new(0, 2, 88)),
        Some(bundle(512..600))
    );
    assert_eq!(
        read(TileKind::Hashes, Tile::new(0, 2, 88)),
        Some(hashes(512..600))
    );
}

/// The tile cache keeps the first full tiles read, up to `tile_cache_bytes`, and none with 0:
/// a tile kept is served as the same bytes (the same allocation) again.
#[test]
fn the_tile_cache_keeps_what_its_size_allows() {
    use tlog::{Tile, TileKind};
    let hash_tile_bytes = 256 * 32;
    for (limit, kept) in [
        (0, [false, false]),
        (hash_tile_bytes, [true, false]),
        (logstore::DEFAULT_TILE_CACHE_BYTES, [true, true]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            tile_cache_bytes: limit,
            ..options()
        };
        let log = Log::open(&dir.path().join("log.sqlite"), signer(), options).unwrap();
        for i in 0..512u64 {
            log.append_blocking(format!("entry {i}").into_bytes())
                .unwrap();
        }
        for (n, kept) in kept.into_iter().enumerate() {
            let tile = Tile::new(0, n as u64, 256);
            let first = log.tile(TileKind::Hashes, &tile).unwrap().unwrap();
            let again = log.tile(TileKind::Hashes, &tile).unwrap().unwrap();
            assert_eq!(first, again);
            assert_eq!(
                std::sync::Arc::ptr_eq(&first, &again),
                kept,
                "limit {limit}, tile {n}"
            );
        }
    }
}

/// `entries` answers integrated entries only, in order, at most `MAX_ENTRIES_READ` at once;
/// `entry_within` finds one that is there; a SQLite log is integrated by its own process.
#[test]
fn entries_are_read_in_bounded_ranges_of_the_integrated_tree() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(&dir.path().join("log.sqlite"), signer(), options()).unwrap();
    assert!(log.integrates());
    let total = logstore::MAX_ENTRIES_READ + 10;
    for i in 0..total {
        log.append_blocking(format!("entry {i}").into_bytes())
            .unwrap();
    }
    let first = log.entries(0, total).unwrap();
    assert_eq!(first.len() as u64, logstore::MAX_ENTRIES_READ);
    assert_eq!(first[5], b"entry 5");
    let rest = log
        .entries(logstore::MAX_ENTRIES_READ, total + 100)
        .unwrap();
    assert_eq!(rest.len(), 10);
    assert_eq!(rest[9], format!("entry {}", total - 1).into_bytes());
    assert!(log.entries(total, total + 5).unwrap().is_empty());
    assert!(log.entries(7, 3).unwrap().is_empty());
    let wait = std::time::Duration::from_millis(50);
    assert_eq!(log.entry_within(3, wait).unwrap().unwrap(), b"entry 3");
    assert!(log.entry_within(total, wait).unwrap().is_none());
}
