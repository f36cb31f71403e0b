//! A log served over HTTP by a running gateway, as tests read it: its tiles and bundles for
//! `tlog::verify_log`, and waiting until its checkpoint covers what a test appended.

use std::sync::OnceLock;
use std::time::Duration;

use tlog::{FetchError, TileFetcher};

/// A served log, fetched over HTTP for `tlog::verify_log`. It blocks, so fetch from a thread
/// outside any async runtime (or `spawn_blocking`); its client is made there, on the first
/// fetch, since a blocking client must not be made or dropped on a runtime's thread.
pub struct ServedLog {
    pub base: String,
    client: OnceLock<reqwest::blocking::Client>,
}

impl ServedLog {
    /// The log the gateway at `base` serves under `{base}/log`.
    pub fn new(base: &str) -> ServedLog {
        ServedLog {
            base: base.to_string(),
            client: OnceLock::new(),
        }
    }
}

impl TileFetcher for ServedLog {
    fn fetch(&self, path: &str) -> Result<Option<Vec<u8>>, FetchError> {
        let response = self
            .client
            .get_or_init(reqwest::blocking::Client::new)
            .get(format!("{}/log/{path}", self.base))
            .send()
            .map_err(FetchError::new)?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(FetchError::new(format!("{path}: {}", response.status())));
        }
        Ok(Some(response.bytes().map_err(FetchError::new)?.to_vec()))
    }
}

/// Waits until the checkpoint served under `base` (`{base}/log/checkpoint`) covers at least
/// `size` entries: the gateway answers an append before its checkpoint is signed.
pub fn wait_for_checkpoint(base: &str, size: u64) {
    for _ in 0..100 {
        let checkpoint = reqwest::blocking::get(format!("{base}/log/checkpoint"))
            .and_then(|r| r.text())
            .unwrap_or_default();
        if checkpoint
            .lines()
            .nth(1)
            .and_then(|l| l.parse::<u64>().ok())
            .is_some_and(|n| n >= size)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the checkpoint did not reach {size} entries");
}

/// The body of `GET url`, as text.
pub fn get_text(url: &str) -> String {
    reqwest::blocking::get(url).unwrap().text().unwrap()
}

/// The log's verifier key as the gateway at `base` serves it (`{base}/log/key`), trimmed.
pub fn log_key(base: &str) -> String {
    get_text(&format!("{base}/log/key")).trim().to_string()
}

/// The log's verifier, from the key the gateway at `base` serves.
pub fn log_verifier(base: &str) -> tlog::note::Verifier {
    tlog::note::Verifier::new(&log_key(base)).unwrap()
}
