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
use monitor::subject::{
    HistoryEntry, HistoryPage, about_subjects, erased, pseudonyms_named, shown,
};

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

/// The name of the rule [`index_keys`] follows, kept with the index: change it whenever the
/// keys an entry gives change, and every gateway builds its index again from the log.
pub const INDEX_RULE: &str = "pseudonyms-named+erased/1";

/// The key under which the index records a subject's erasures (by pseudonym).
fn erasure_key(pseudonym: &str) -> String {
    format!("erased:{pseudonym}")
}

/// The keys the subject index records for an entry: the pseudonyms it is about, and for an
/// erasure, the erased pseudonym's erasure key.
pub fn index_keys(entry: &[u8]) -> Vec<String> {
    let Some(entry) = about_subjects(entry) else {
        return Vec::new();
    };
    let mut keys: Vec<String> = pseudonyms_named(&entry)
        .into_iter()
        .map(str::to_string)
        .collect();
    keys.extend(erased(&entry).map(erasure_key));
    keys
}

fn unavailable(message: String) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::HistoryUnavailable,
        message,
    )
}

impl AppState {
    /// One page of the history of `subject` (the permit's) below the served checkpoint,
    /// newest first: the entries about it since its last erasure, below `before` if given,
    /// at most `limit`. Each is read from the log and proven; what is shown is read from the
    /// entry itself.
    pub async fn history_page(
        self: &std::sync::Arc<Self>,
        permit: &Permit,
        subject: &str,
        before: Option<u64>,
        limit: usize,
    ) -> AppResult<HistoryPage> {
        permit.require(Action::History, Some(subject), None)?;
        let pseudonym = self.pseudonyms.pseudonym(subject);
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
            return Err(unavailable(format!(
                "the log has no {} checkpoint yet to prove the history against: retry",
                if self.witnessing.is_some() {
                    "witnessed"
                } else {
                    "signed"
                }
            )));
        }
        let size = served.size;
        if let Some(before) = before
            && before > size
        {
            // A page asked of a gateway whose checkpoint is older than the one of the page
            // before (a fleet): answering below its own would skip entries.
            return Err(unavailable(format!(
                "`before` {before} is beyond the served checkpoint of {size} entries: retry once it is"
            )));
        }
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
        let since = index
            .newest(&erasure_key(&pseudonym), 0, size, 1)
            .map_err(ApiError::internal)?
            .first()
            .map_or(0, |erasure| erasure + 1);
        let below = before.unwrap_or(size);
        let mut found = index
            .newest(&pseudonym, since, below, limit + 1)
            .map_err(ApiError::internal)?;
        let more = found.len() > limit;
        found.truncate(limit);
        let total = index
            .count(&pseudonym, since, size)
            .map_err(ApiError::internal)?;
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
                // The index is derived from the log; one that disagrees with it is broken:
                // build it again, and answer nothing from it meanwhile.
                tracing::error!(
                    entry = at,
                    "the subject index disagrees with the log: rebuilding it"
                );
                index.reset().map_err(ApiError::internal)?;
                return Err(unavailable(
                    "the index of log entries by subject disagreed with the log and is being built again: retry".into(),
                ));
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
            below,
            since,
            total,
            entries,
            next_before,
        })
    }
}
