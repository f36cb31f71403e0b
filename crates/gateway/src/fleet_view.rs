//! The whole fleet's traffic, as the log records it. Every gateway appends every decision to
//! the log, and gateways of a fleet share one (PostgreSQL), so each can count them all by
//! reading what was integrated since it last looked: the dashboard, the stream and `/metrics`
//! show the fleet beside this gateway's own figures (`analytics.rs`), and the bulk-access rule
//! counts a principal's distinct subjects across the fleet. Only the gateway that integrates
//! the log raises the fleet's alerts, so each is raised once, whichever gateways served the
//! requests.
//!
//! Only on a shared (PostgreSQL) log: on a log of its own a gateway's analytics already count
//! everything. Counting starts at the log's size when the gateway starts (as the Prometheus
//! counters do). A gateway further behind than [`MAX_BEHIND`] entries skips ahead rather than
//! fall further behind: the counts then say how many entries were skipped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{Value, json};

use crate::analytics::{AlertKind, AlertRequest, Counts, WINDOW};
use crate::auth::Authenticated;

/// Entries read per look (a look runs once a second): the fleet's traffic the view keeps up
/// with is this many decisions a second.
const MAX_PER_LOOK: u64 = 16 * logstore::MAX_ENTRIES_READ;

/// Further behind than this, the view skips to the newest entries.
const MAX_BEHIND: u64 = 4 * MAX_PER_LOOK;

/// A principal's distinct subjects in the last minute, across the fleet, and who they are.
struct Touched {
    who: Authenticated,
    subjects: HashMap<String, Instant>,
}

struct Live {
    /// The next log index to read.
    next: u64,
    skipped: u64,
    totals: Counts,
    by_location: BTreeMap<String, Counts>,
    by_entity: BTreeMap<String, Counts>,
    by_action: BTreeMap<String, Counts>,
    touched: HashMap<String, Touched>,
}

/// See the module documentation.
pub struct FleetView {
    bulk_limit: usize,
    /// Whether the log is shared with other gateways (PostgreSQL): then the fleet's rule
    /// raises bulk-access alerts, and each gateway's own rule does not.
    shared: bool,
    live: Mutex<Live>,
}

/// One access decision as the log recorded it, for counting.
pub struct Seen {
    who: Authenticated,
    action: String,
    subject: Option<String>,
    outcome: String,
}

impl FleetView {
    /// Counts from log index `start` on; `bulk_limit` as `analytics.bulk_subjects_per_minute`;
    /// `shared` if other gateways append to the same log.
    pub fn new(start: u64, bulk_limit: usize, shared: bool) -> FleetView {
        FleetView {
            bulk_limit,
            shared,
            live: Mutex::new(Live {
                next: start,
                skipped: 0,
                totals: Counts::default(),
                by_location: BTreeMap::new(),
                by_entity: BTreeMap::new(),
                by_action: BTreeMap::new(),
                touched: HashMap::new(),
            }),
        }
    }

    /// Whether bulk access is counted across the fleet (and raised by the integrating
    /// gateway) rather than by each gateway for its own traffic.
    pub fn counts_bulk_access(&self) -> bool {
        self.shared
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the entries integrated since the last look (blocking: call it off the async
    /// threads), counts the access decisions among them (calling `record` on each, for the
    /// metrics), and answers the fleet's bulk-access alerts with the principal each is about,
    /// if the log is shared and this gateway integrates it (else none: the integrating gateway
    /// raises them, or on a log of its own each gateway's rule does).
    pub fn look(
        &self,
        log: &logstore::Log,
        record: &dyn Fn(&Seen),
    ) -> Result<Vec<(AlertRequest, Authenticated)>, logstore::LogError> {
        // A log of this gateway's own holds nothing its own analytics did not count.
        if !self.shared {
            return Ok(Vec::new());
        }
        let size = log.size();
        let mut next = {
            let mut live = self.live();
            if size.saturating_sub(live.next) > MAX_BEHIND {
                live.skipped += size - MAX_PER_LOOK - live.next;
                live.next = size - MAX_PER_LOOK;
            }
            live.next
        };
        let end = size.min(next + MAX_PER_LOOK);
        let now = Instant::now();
        while next < end {
            let entries = log.entries(next, end)?;
            if entries.is_empty() {
                break;
            }
            let mut live = self.live();
            for bytes in &entries {
                if let Some(seen) = Seen::parse(bytes) {
                    record(&seen);
                    live.count(&seen, now, self.bulk_limit);
                }
            }
            next += entries.len() as u64;
            live.next = next;
        }
        let mut live = self.live();
        live.forget_before(now);
        if !log.integrates() {
            return Ok(Vec::new());
        }
        let limit = self.bulk_limit;
        Ok(live
            .touched
            .values()
            .filter(|t| t.subjects.len() > limit)
            .map(|t| {
                let alert = AlertRequest {
                    kind: AlertKind::BulkAccess,
                    message: format!(
                        "{} ({}) touched more than {limit} distinct subjects in a minute across the fleet",
                        t.who.public_id, t.who.principal.entity
                    ),
                    details: json!({
                        "distinct_subjects": t.subjects.len(),
                        "limit": limit,
                        "window_seconds": WINDOW.as_secs(),
                        "scope": "fleet",
                    }),
                };
                (alert, t.who.clone())
            })
            .collect())
    }

    /// The fleet's counts, for the summary the dashboard and the stream show; null when the
    /// log is this gateway's own.
    pub fn summary(&self) -> Value {
        if !self.shared {
            return Value::Null;
        }
        let live = self.live();
        json!({
            "since_log_index": live.next,
            "skipped_entries": live.skipped,
            "totals": live.totals,
            "by_location": live.by_location,
            "by_entity": live.by_entity,
            "by_action": live.by_action,
        })
    }
}

impl Live {
    fn count(&mut self, seen: &Seen, now: Instant, limit: usize) {
        let p = &seen.who.principal;
        self.totals.add(&seen.outcome);
        self.by_location
            .entry(p.location.clone())
            .or_default()
            .add(&seen.outcome);
        self.by_entity
            .entry(p.entity.clone())
            .or_default()
            .add(&seen.outcome);
        self.by_action
            .entry(seen.action.clone())
            .or_default()
            .add(&seen.outcome);
        // As the gateway's own rule: the set is capped just above the threshold, so a
        // scraper costs bounded memory.
        let Some(subject) = &seen.subject else {
            return;
        };
        let touched = self
            .touched
            .entry(seen.who.public_id.clone())
            .or_insert_with(|| Touched {
                who: seen.who.clone(),
                subjects: HashMap::new(),
            });
        if touched.subjects.len() <= limit || touched.subjects.contains_key(subject) {
            touched.subjects.insert(subject.clone(), now);
        }
    }

    /// Forgets what no window needs any more, so idle principals cost nothing.
    fn forget_before(&mut self, now: Instant) {
        self.touched.retain(|_, t| {
            t.subjects.retain(|_, at| now.duration_since(*at) < WINDOW);
            !t.subjects.is_empty()
        });
    }
}

impl Seen {
    /// An access entry's principal, action, subject and outcome; `None` for other entries.
    fn parse(bytes: &[u8]) -> Option<Seen> {
        let entry: Value = serde_json::from_slice(bytes).ok()?;
        if entry["kind"] != "access" {
            return None;
        }
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let list = |v: &Value| {
            v.as_array()
                .map(|items| items.iter().map(text).collect())
                .unwrap_or_default()
        };
        let p = &entry["principal"];
        let public_id = text(&p["id"]);
        Some(Seen {
            who: Authenticated {
                principal: policy::Principal {
                    id: public_id.clone(),
                    entity: text(&p["entity"]),
                    entity_country: text(&p["entity_country"]),
                    location: text(&p["location"]),
                    clearance: list(&p["clearance"]),
                    roles: list(&p["roles"]),
                },
                network_zone: text(&p["network_zone"]),
                public_id,
            },
            action: text(&entry["action"]),
            subject: entry["subject"].as_str().map(str::to_string),
            outcome: text(&entry["outcome"]),
        })
    }

    pub fn outcome(&self) -> &str {
        &self.outcome
    }

    pub fn location(&self) -> &str {
        &self.who.principal.location
    }

    pub fn entity(&self) -> &str {
        &self.who.principal.entity
    }

    pub fn action(&self) -> &str {
        &self.action
    }
}
