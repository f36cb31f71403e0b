//! A data subject's history: the log entries about them, each with its inclusion proof
//! against the served checkpoint, found through the index of entries by subject pseudonym
//! (`logstore::SubjectIndex`, kept up with the log by `start.rs`). Only with a permit for
//! `history` on that subject: the permit names the subject, and its pseudonym is made here
//! from it, so no route can ask for another subject's entries.
//!
//! What is shown of each entry is `monitor::subject::shown`, the reading `sovereign subject
//! verify` checks the page against: the two cannot drift.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use monitor::subject::{HistoryEntry, HistoryPage, pseudonyms_named, shown};

use super::Permit;
use crate::http::error::{ApiError, AppResult, ErrorCode};
use crate::http::tasks::blocking;
use crate::state::AppState;
use policy::Action;

/// Further behind the checkpoint than this, a request does not wait for the index to catch
/// up (it is being built from a large log): 503 `history_unavailable`, with how far it is.
const MOST_TO_CATCH_UP: u64 = 64 * logstore::MAX_ENTRIES_READ;

/// How long a gateway of a fleet waits for its view of a shared log to reach the checkpoint
/// another gateway signed.
const SIZE_WAIT: Duration = Duration::from_secs(2);

/// The keys the subject index records for an entry: the pseudonyms it is about.
pub fn index_keys(entry: &[u8]) -> Vec<String> {
    serde_json::from_slice::<serde_json::Value>(entry)
        .map(|v| {
            pseudonyms_named(&v)
                .into_iter()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn unavailable(message: String) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::HistoryUnavailable,
        message,
    )
}

impl AppState {
    /// One page of the entries about the permit's subject below the served checkpoint,
    /// newest first: those below `before` if given, at most `limit`. Each is read from the
    /// log and proven; what is shown is read from the entry itself.
    pub async fn history_page(
        self: &std::sync::Arc<Self>,
        permit: &Permit,
        before: Option<u64>,
        limit: usize,
    ) -> AppResult<HistoryPage> {
        permit.require(Action::History, permit.subject.as_deref(), None)?;
        let subject = permit.subject.clone().ok_or_else(|| {
            ApiError::internal("a history permit names no subject").logged(permit.index)
        })?;
        let pseudonym = self.pseudonyms.pseudonym(&subject);
        let state = self.clone();
        let logged = permit.index;
        blocking(move || state.read_history(pseudonym, before, limit))
            .await?
            .map_err(|e| e.logged(logged))
    }

    fn read_history(
        &self,
        pseudonym: String,
        before: Option<u64>,
        limit: usize,
    ) -> AppResult<HistoryPage> {
        let served = self.served_checkpoint();
        if served.size == u64::MAX {
            return Err(unavailable(
                "the log has no signed checkpoint yet to prove the history against: retry".into(),
            ));
        }
        let size = served.size;
        let deadline = Instant::now() + SIZE_WAIT;
        while self.log.size() < size {
            if Instant::now() > deadline {
                return Err(unavailable(format!(
                    "this gateway has not yet read the shared log up to its checkpoint of {size} entries: retry"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let index = &self.history_index;
        let indexed = index.size().map_err(ApiError::internal)?;
        if indexed + MOST_TO_CATCH_UP < size {
            return Err(unavailable(format!(
                "the index of log entries by subject is being built: {indexed} of {size} entries read; retry"
            )));
        }
        index
            .catch_up(&self.log, size)
            .map_err(ApiError::internal)?;
        let below = before.map_or(size, |b| b.min(size));
        let mut found = index
            .newest(&pseudonym, below, limit + 1)
            .map_err(ApiError::internal)?;
        let more = found.len() > limit;
        found.truncate(limit);
        let total = index.count(&pseudonym, size).map_err(ApiError::internal)?;
        let with_ids = self.config.history.show_accessor_ids;
        let mut entries = Vec::with_capacity(found.len());
        for at in found {
            let bytes = self
                .log
                .entry(at)
                .map_err(ApiError::internal)?
                .ok_or_else(|| ApiError::internal(format!("entry {at} is not in the log")))?;
            let entry: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::internal(format!("entry {at} is not JSON: {e}")))?;
            if !pseudonyms_named(&entry).contains(&pseudonym.as_str()) {
                // The index is derived from the log; one that disagrees with it is broken,
                // and a history built from it would not be this subject's.
                return Err(ApiError::internal(format!(
                    "the subject index names entry {at}, which is not about this subject: delete {} to rebuild it",
                    self.config.history.index.display()
                )));
            }
            let proof = self
                .log
                .inclusion_proof(at, size)
                .map_err(ApiError::internal)?;
            entries.push(HistoryEntry {
                index: at,
                shown: shown(&entry, with_ids),
                entry: String::from_utf8(bytes)
                    .map_err(|_| ApiError::internal(format!("entry {at} is not UTF-8")))?,
                proof: proof.iter().map(tlog::hash_to_base64).collect(),
            });
        }
        let next_before = if more {
            entries.last().map(|e| e.index)
        } else {
            None
        };
        Ok(HistoryPage {
            pseudonym,
            checkpoint: String::from_utf8_lossy(&served.note).into_owned(),
            size,
            total,
            entries,
            next_before,
        })
    }
}
