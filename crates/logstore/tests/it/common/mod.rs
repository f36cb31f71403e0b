//! Helpers shared by the log's SQLite and PostgreSQL tests.
#![allow(dead_code)]

use std::time::Duration;

use logstore::{Log, LogOptions};
use tlog::note::{Signer, Verifier};
use tlog::{FetchError, TileFetcher};

pub fn signer() -> Signer {
    let (skey, _) = tlog::note::generate_key("test.example/log").unwrap();
    Signer::new(&skey).unwrap()
}

pub fn options() -> LogOptions {
    LogOptions {
        checkpoint_interval: Duration::from_millis(50),
        ..LogOptions::default()
    }
}

/// Serves the log's files the way the gateway does, for `tlog::verify_log`.
pub struct Served<'a>(pub &'a Log);

impl TileFetcher for Served<'_> {
    fn fetch(&self, path: &str) -> Result<Option<Vec<u8>>, FetchError> {
        if path == "checkpoint" {
            return Ok(Some(self.0.checkpoint().note.clone()));
        }
        let (kind, tile) = tlog::parse_tile_path(path).map_err(FetchError::new)?;
        self.0
            .tile(kind, &tile)
            .map(|data| data.map(|d| d.to_vec()))
            .map_err(FetchError::new)
    }
}

/// A monitor's full check of what `log` serves (consistent with `previous`), where entry i
/// reads `entry i`.
pub fn verify(
    log: &Log,
    verifier: &Verifier,
    previous: Option<&tlog::Checkpoint>,
) -> tlog::Checkpoint {
    verify_entries(log, verifier, previous, |index, entry| {
        assert_eq!(entry, format!("entry {index}").as_bytes());
    })
}

/// A monitor's full check of what `log` serves; `check` sees every entry.
pub fn verify_entries(
    log: &Log,
    verifier: &Verifier,
    previous: Option<&tlog::Checkpoint>,
    mut check: impl FnMut(u64, &[u8]),
) -> tlog::Checkpoint {
    let mut entries = 0u64;
    let checkpoint = tlog::verify_log(
        &Served(log),
        verifier,
        previous,
        &mut |_, _| {},
        &mut |index, entry| {
            check(index, entry);
            entries += 1;
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(entries, checkpoint.size);
    checkpoint
}

pub fn wait_for_checkpoint(log: &Log, size: u64) {
    for _ in 0..500 {
        if log.checkpoint().size == size {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no checkpoint of size {size}: {}", log.checkpoint().size);
}
