//! Searching a verified log (`sovereign audit search`): the entries that match every filter
//! given, found while the whole log is verified, and answered only once it is.

use serde_json::Value;
use tlog::TileFetcher;
use tlog::checkpoint::Checkpoint;
use tlog::note::Verifier;

use crate::progress::Progress;
use crate::verify::verify_entries;

/// What to look for; every filter given must hold (none given: every entry).
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// The principal's or actor's id.
    pub principal: Option<String>,
    /// A subject's log pseudonym: entries about that subject (`subject::pseudonyms_named`:
    /// an access entry's `subject`, a data event's, run's or alert's `details.subject`, an
    /// access request's `details.subjects`).
    pub subject: Option<String>,
    /// The entry's kind (`access`, `custody`, `algorithm-run`, ...).
    pub kind: Option<String>,
    /// An access entry's action.
    pub action: Option<String>,
    /// An access entry's outcome (`allow`, `deny`, `partial`), or a run's (`ok`, ...).
    pub outcome: Option<String>,
    /// A policy id among an access entry's determining policies.
    pub policy: Option<String>,
    /// Entries at or after this time, and before `to`: RFC 3339 text (a date alone works),
    /// compared as text, as entry times are written (UTC, `Z`).
    pub from: Option<String>,
    pub to: Option<String>,
}

/// The matches of a search, at most the limit asked, and how many matched in all.
pub struct Found {
    pub checkpoint: Checkpoint,
    /// `(index, entry)`, in log order.
    pub entries: Vec<(u64, Value)>,
    pub matched: u64,
}

impl Query {
    /// Whether `entry` matches every filter given.
    pub fn matches(&self, entry: &Value) -> bool {
        let text = |v: &Value| v.as_str().map(str::to_string);
        let is = |want: &Option<String>, got: Option<String>| {
            want.as_ref()
                .is_none_or(|w| got.as_deref() == Some(w.as_str()))
        };
        let details = &entry["details"];
        let principal = text(&entry["principal"]["id"]).or_else(|| text(&entry["actor"]["id"]));
        let outcome = text(&entry["outcome"]).or_else(|| text(&details["outcome"]));
        let time = text(&entry["time"]).unwrap_or_default();
        let policy = self.policy.as_ref().is_none_or(|p| {
            entry["policies"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|x| x.as_str() == Some(p)))
        });
        is(&self.principal, principal)
            && self
                .subject
                .as_ref()
                .is_none_or(|s| crate::subject::names(entry, s))
            && is(&self.kind, text(&entry["kind"]))
            && is(&self.action, text(&entry["action"]))
            && is(&self.outcome, outcome)
            && policy
            && self
                .from
                .as_ref()
                .is_none_or(|f| time.as_str() >= f.as_str())
            && self.to.as_ref().is_none_or(|t| time.as_str() < t.as_str())
    }
}

/// Verifies the log as `audit verify` does and answers the entries that match `query`, the
/// first `limit` of them in log order (so memory stays bounded whatever the log holds).
pub fn search(
    log: &dyn TileFetcher,
    verifier: &Verifier,
    query: &Query,
    limit: usize,
    progress: &mut dyn Progress,
) -> anyhow::Result<Found> {
    let mut entries = Vec::new();
    let mut matched = 0;
    let checkpoint = verify_entries(log, verifier, None, progress, &mut |index, _, bytes| {
        let entry: Value =
            serde_json::from_slice(bytes).map_err(|e| format!("entry {index} is not JSON: {e}"))?;
        if query.matches(&entry) {
            matched += 1;
            if entries.len() < limit {
                entries.push((index, entry));
            }
        }
        Ok(())
    })?;
    Ok(Found {
        checkpoint,
        entries,
        matched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_filter_given_must_hold() {
        let access = json!({"kind": "access", "time": "2026-12-07T10:00:00.000Z",
            "principal": {"id": "chen"}, "action": "read", "subject": "p1",
            "outcome": "deny", "policies": ["forbid-restricted-location"]});
        let run = json!({"kind": "algorithm-run", "time": "2026-12-08T01:00:00.000Z",
            "actor": {"id": "recommender"}, "details": {"subject": "p1", "outcome": "ok"}});
        let q = |f: fn(&mut Query)| {
            let mut q = Query::default();
            f(&mut q);
            (q.matches(&access), q.matches(&run))
        };
        assert_eq!(q(|_| {}), (true, true));
        assert_eq!(q(|q| q.subject = Some("p1".into())), (true, true));
        assert_eq!(
            q(|q| q.principal = Some("recommender".into())),
            (false, true)
        );
        assert_eq!(q(|q| q.kind = Some("access".into())), (true, false));
        assert_eq!(q(|q| q.outcome = Some("ok".into())), (false, true));
        assert_eq!(
            q(|q| q.policy = Some("forbid-restricted-location".into())),
            (true, false)
        );
        assert_eq!(q(|q| q.action = Some("read".into())), (true, false));
        assert_eq!(q(|q| q.from = Some("2026-12-08".into())), (false, true));
        assert_eq!(q(|q| q.to = Some("2026-12-08".into())), (true, false));
        assert_eq!(
            q(|q| {
                q.subject = Some("p1".into());
                q.outcome = Some("deny".into());
            }),
            (true, false)
        );
    }
}
