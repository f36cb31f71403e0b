//! The index of log entries by the keys they name: built from the log in batches, answering
//! newest first, and started again when the log it is opened with is not the one it read, when the rule
//! naming the keys changed, and when the file is not an index.

use crate::common::{options, signer};
use logstore::{Log, SubjectIndex};

/// Entries `"a b"` name the keys `a` and `b`.
fn keys(entry: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(entry)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn the_index_finds_each_keys_entries_and_follows_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let index_path = dir.path().join("index.sqlite");
    let log = Log::open(&dir.path().join("log.sqlite"), signer(), options()).unwrap();
    // Over two read batches: entry i names `even` or `odd`, and every 500th also `x`.
    for i in 0..1500u64 {
        let parity = if i % 2 == 0 { "even" } else { "odd" };
        let entry = if i % 500 == 0 {
            format!("{parity} x")
        } else {
            parity.into()
        };
        log.append_blocking(entry.into_bytes()).unwrap();
    }
    let index = SubjectIndex::open(&index_path, &log, "words", Box::new(keys)).unwrap();
    assert_eq!(index.size().unwrap(), 0);
    assert_eq!(index.catch_up(&log, 1200).unwrap(), 1200);
    assert_eq!(index.newest("x", 0, 1200, 10).unwrap(), [1000, 500, 0]);
    assert_eq!(index.newest("odd", 0, 1200, 2).unwrap(), [1199, 1197]);
    assert_eq!(index.newest("odd", 2, 8, 100).unwrap(), [7, 5, 3]);
    assert_eq!(index.count("even", 0, 1200).unwrap(), 600);
    assert_eq!(index.count("nobody", 0, 1200).unwrap(), 0);
    // Asked past the log's end, it stops at the end.
    assert_eq!(index.catch_up(&log, 10_000).unwrap(), 1500);
    assert_eq!(index.count("x", 1, 1500).unwrap(), 2);
    drop(index);

    // Reopened with the same log: it goes on from where it was; by another rule, it starts
    // again.
    let index = SubjectIndex::open(&index_path, &log, "words", Box::new(keys)).unwrap();
    assert_eq!(index.size().unwrap(), 1500);
    drop(index);
    let index = SubjectIndex::open(&index_path, &log, "letters", Box::new(keys)).unwrap();
    assert_eq!(index.size().unwrap(), 0);
    index.catch_up(&log, 1500).unwrap();
    drop(index);
    // A file that is not an index is replaced.
    std::fs::write(&index_path, b"not a database").unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("index.sqlite{suffix}")));
    }
    let index = SubjectIndex::open(&index_path, &log, "words", Box::new(keys)).unwrap();
    assert_eq!(index.size().unwrap(), 0);
    assert_eq!(index.catch_up(&log, 1500).unwrap(), 1500);
    drop(index);
    log.close();
    drop(log);

    // With another log, whose tree is not the one it read: it starts again from entry 0.
    let other = Log::open(&dir.path().join("other.sqlite"), signer(), options()).unwrap();
    for _ in 0..1600 {
        other.append_blocking(b"odd".to_vec()).unwrap();
    }
    let index = SubjectIndex::open(&index_path, &other, "words", Box::new(keys)).unwrap();
    assert_eq!(index.size().unwrap(), 0);
    assert_eq!(index.catch_up(&other, 1600).unwrap(), 1600);
    assert_eq!(index.count("even", 0, 1600).unwrap(), 0);
    assert_eq!(index.count("odd", 0, 1600).unwrap(), 1600);
}
