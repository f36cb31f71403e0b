//! `monitor::subject::check_history` against histories built from a static log, honest and
//! tampered: every way of passing off an incomplete or altered history should fail.

use monitor::subject::{
    Consistency, History, HistoryEntry, HistoryPage, Trust, check_history, pseudonyms_named, shown,
};
use serde_json::Value;
use testkit::static_log::{Key, entry, new_key, publish};

const SIZE: u64 = 300;
const PSEUDONYM: &str = "5ec7e75ec7e75ec7e75ec7e75ec7e75e";

/// Entry `i` of the log, about [`PSEUDONYM`] when `i % 7 == 3`.
fn entry_of(i: u64) -> Vec<u8> {
    let mut e = entry(i);
    if i % 7 == 3 && e["kind"] == "access" {
        e["subject"] = PSEUDONYM.into();
    }
    serde_json::to_vec(&e).unwrap()
}

/// Entry `index` of `log` as a history lists it, proven against the log's checkpoint.
fn proven_entry(log: &dyn tlog::TileFetcher, index: u64) -> HistoryEntry {
    let proven = monitor::proof::prove(log, index, None).unwrap();
    let value: Value = serde_json::from_slice(&proven.entry).unwrap();
    HistoryEntry {
        index,
        shown: shown(&value, false),
        entry: String::from_utf8(proven.entry).unwrap(),
        proof: proven
            .proof
            .hashes
            .iter()
            .map(tlog::hash_to_base64)
            .collect(),
    }
}

struct Log {
    dir: tempfile::TempDir,
    key: Key,
    entries: Vec<Vec<u8>>,
    note: String,
    checkpoint: tlog::checkpoint::Checkpoint,
}

fn static_log(size: u64) -> Log {
    published(new_key(), (0..size).map(entry_of).collect())
}

/// The log of `entries` signed by `key`, published in a folder of its own.
fn published(key: Key, entries: Vec<Vec<u8>>) -> Log {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = publish(dir.path(), &key, &entries);
    let note = std::fs::read_to_string(dir.path().join("checkpoint")).unwrap();
    Log {
        dir,
        key,
        entries,
        note,
        checkpoint,
    }
}

impl Log {
    fn fetcher(&self) -> Box<dyn tlog::TileFetcher> {
        monitor::open_log(self.dir.path().to_str().unwrap()).unwrap()
    }

    /// The entries about the pseudonym below `below`, newest first.
    fn about(&self, below: u64) -> Vec<u64> {
        (0..below)
            .rev()
            .filter(|&i| {
                let e: Value = serde_json::from_slice(&self.entries[i as usize]).unwrap();
                pseudonyms_named(&e).contains(&PSEUDONYM)
            })
            .collect()
    }

    /// One page as the gateway answers it: entries about the pseudonym below `below`, at most
    /// `limit`, each proven against the log's checkpoint.
    fn page(&self, below: u64, limit: usize) -> HistoryPage {
        let log = self.fetcher();
        let all = self.about(self.size());
        let found: Vec<u64> = self.about(below).into_iter().take(limit + 1).collect();
        let more = found.len() > limit;
        let entries: Vec<HistoryEntry> = found
            .into_iter()
            .take(limit)
            .map(|i| proven_entry(&*log, i))
            .collect();
        HistoryPage {
            pseudonym: PSEUDONYM.into(),
            checkpoint: self.note.clone(),
            size: self.size(),
            below,
            since: 0,
            total: all.len() as u64,
            next_before: if more {
                entries.last().map(|e| e.index)
            } else {
                None
            },
            entries,
        }
    }

    fn size(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Every page, `limit` entries each.
    fn history(&self, limit: usize) -> History {
        let mut pages = vec![self.page(self.size(), limit)];
        while let Some(next) = pages.last().unwrap().next_before {
            pages.push(self.page(next, limit));
        }
        History {
            pages,
            consistency: Vec::new(),
        }
    }

    /// The consistency proof from the tree of `from` entries to this log's.
    fn consistency(&self, from: u64) -> Consistency {
        let fetcher = self.fetcher();
        let reader = tlog::tile_hash_reader(
            self.size(),
            self.checkpoint.hash,
            tlog::FetcherTileReader(&*fetcher),
        );
        let hashes = tlog::prove_tree(self.size(), from, &reader).unwrap();
        Consistency {
            from,
            to: self.size(),
            hashes: hashes.iter().map(tlog::hash_to_base64).collect(),
        }
    }

    fn check(
        &self,
        history: &History,
        mirror: Option<&dyn tlog::TileFetcher>,
    ) -> anyhow::Result<monitor::subject::HistoryCheck> {
        let verifier = monitor::load_verifier(&self.key.vkey).unwrap();
        let trust = Trust {
            log: &verifier,
            witnesses: None,
            pseudonym: None,
        };
        check_history(history, &trust, mirror, &mut monitor::Silent)
    }
}

fn fails(result: anyhow::Result<monitor::subject::HistoryCheck>, with: &str) {
    match result {
        Ok(check) => panic!("passed, wanted a failure with {with:?}: {check}"),
        Err(e) => assert!(format!("{e:#}").contains(with), "{e:#}, wanted {with:?}"),
    }
}

#[test]
fn an_honest_history_passes_and_is_complete() {
    let log = static_log(SIZE);
    let history = log.history(10);
    assert!(history.pages.len() >= 4);
    let mirror = log.fetcher();
    let check = log.check(&history, Some(&*mirror)).unwrap();
    assert_eq!(check.entries, log.about(SIZE).len() as u64);
    assert_eq!((check.covers_from, check.covers_below), (0, SIZE));
    assert_eq!(check.mirror_size, Some(SIZE));
    // The first two pages alone: complete only down to what they list.
    let partial = History {
        pages: history.pages[..2].to_vec(),
        consistency: Vec::new(),
    };
    let check = log.check(&partial, Some(&*mirror)).unwrap();
    assert_eq!(
        check.covers_from,
        partial.pages[1].entries.last().unwrap().index
    );
}

#[test]
fn pages_that_do_not_follow_each_other_fail() {
    let log = static_log(SIZE);
    let history = log.history(10);
    let mut swapped = history.clone();
    swapped.pages.swap(1, 2);
    fails(log.check(&swapped, None), "does not continue");
    let mut repeated = history.clone();
    repeated.pages.insert(1, history.pages[0].clone());
    fails(log.check(&repeated, None), "does not continue");
    // A page skipped, its predecessor's next page made to point past it.
    let mut skipped = history.clone();
    skipped.pages.remove(1);
    skipped.pages[0].next_before = Some(skipped.pages[1].below);
    fails(log.check(&skipped, None), "not its oldest entry");
    // An entry listed twice.
    let mut twice = history.clone();
    let first = twice.pages[0].entries[0].clone();
    twice.pages[0].entries.insert(1, first);
    fails(log.check(&twice, None), "out of place");
}

#[test]
fn a_page_of_another_pseudonym_or_log_fails() {
    let log = static_log(SIZE);
    let history = log.history(10);
    let mut other = history.clone();
    other.pages[1].pseudonym = "0".repeat(32);
    fails(log.check(&other, None), "not 5ec7");
    // Another key's log: its checkpoint does not open with this one's key.
    let stranger = static_log(SIZE);
    let theirs = stranger.history(10);
    fails(log.check(&theirs, None), "not the log's");
    // An entry of another subject, proven: not about the pseudonym.
    let mut foreign = history.clone();
    foreign
        .pages
        .last_mut()
        .unwrap()
        .entries
        .push(proven_entry(&*log.fetcher(), 1));
    fails(log.check(&foreign, None), "is not about pseudonym");
}

#[test]
fn an_entry_left_out_is_found_by_the_mirror_only() {
    let log = static_log(SIZE);
    let mut history = log.history(1000);
    let gone = history.pages[0].entries.remove(3).index;
    history.pages[0].total -= 1;
    log.check(&history, None).unwrap();
    let mirror = log.fetcher();
    fails(
        log.check(&history, Some(&*mirror)),
        &format!(
            "left out 1 entry about pseudonym {PSEUDONYM} that the log holds, the newest at index {gone}"
        ),
    );
    // Without the count lowered, the history contradicts itself.
    history.pages[0].total += 1;
    fails(log.check(&history, None), "says there are");
}

#[test]
fn a_mirror_behind_or_forked_is_named() {
    let log = static_log(SIZE);
    let history = log.history(1000);
    // A copy of the first 200 entries only.
    let behind = tempfile::tempdir().unwrap();
    publish(behind.path(), &log.key, &log.entries[..200]);
    let short = monitor::open_log(behind.path().to_str().unwrap()).unwrap();
    fails(log.check(&history, Some(&*short)), "bring it up to date");
    // A copy whose entry 0 is another: the history's checkpoint is not a prefix of it.
    let forked = tempfile::tempdir().unwrap();
    let mut entries = log.entries.clone();
    entries[0] = serde_json::to_vec(&entry(SIZE + 1)).unwrap();
    entries.push(entry_of(SIZE));
    publish(forked.path(), &log.key, &entries);
    let fork = monitor::open_log(forked.path().to_str().unwrap()).unwrap();
    fails(log.check(&history, Some(&*fork)), "forked");
}

/// Pages fetched while the log grew are under checkpoints of different sizes: offline, they
/// pass only with the proof that the smaller tree is a prefix of the larger, and a fork fails.
#[test]
fn pages_under_growing_checkpoints_need_their_consistency_proof() {
    let log = static_log(SIZE);
    let mut more = log.entries.clone();
    more.extend((SIZE..SIZE + 40).map(entry_of));
    let grown = published(
        Key {
            signer: log.key.signer.clone(),
            vkey: log.key.vkey.clone(),
        },
        more,
    );
    // The first page under the first checkpoint, the rest under the grown one.
    let first = log.page(SIZE, 10);
    let mut pages = vec![first];
    while let Some(next) = pages.last().unwrap().next_before {
        pages.push(grown.page(next, 10));
    }
    assert!(pages.len() > 2 && pages[1..].iter().all(|p| p.size == SIZE + 40));
    let mut history = History {
        pages,
        consistency: Vec::new(),
    };
    fails(log.check(&history, None), "not shown to be of one log");
    let mirror = grown.fetcher();
    log.check(&history, Some(&*mirror)).unwrap();
    history.consistency = vec![grown.consistency(SIZE)];
    log.check(&history, None).unwrap();

    // A log that grew from another first entry: no proof links them.
    let mut forked_entries = grown.entries.clone();
    forked_entries[0] = serde_json::to_vec(&entry(SIZE + 100)).unwrap();
    let forked = published(
        Key {
            signer: log.key.signer.clone(),
            vkey: log.key.vkey.clone(),
        },
        forked_entries,
    );
    let mut pages = vec![log.page(SIZE, 10)];
    while let Some(next) = pages.last().unwrap().next_before {
        pages.push(forked.page(next, 10));
    }
    let history = History {
        pages,
        consistency: vec![forked.consistency(SIZE)],
    };
    fails(log.check(&history, None), "forked");
}
