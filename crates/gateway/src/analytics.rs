//! Live analytics: what the dashboard, `GET /v1/analytics/stream` and `GET /metrics` show,
//! and the alerts.
//!
//! The request path tells [`Analytics`] about every decision it logged and every egress
//! page; `Analytics` keeps bounded, in-memory counts (nothing here survives a restart: the
//! log is the record, this is the view), records Prometheus metrics, and says which alerts
//! an observation raises. Raising an alert (appending it to the log, then publishing it) is
//! the caller's job, through `AppState::raise_alert`, because it needs the log.
//!
//! Memory is bounded by configuration and by the number of principals active in the last
//! minute, never by traffic: history is 60 seconds, the feed 50 decisions, alerts 20.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use crate::auth::Authenticated;
use crate::config::AnalyticsConfig;

/// Seconds of per-second decision counts kept for the chart.
pub const HISTORY_SECONDS: usize = 60;
/// Latest decisions kept for the feed.
pub const RECENT_DECISIONS: usize = 50;
/// Latest alerts kept for the dashboard.
pub const RECENT_ALERTS: usize = 20;
/// Pending access requests shown at most.
pub const PENDING_SHOWN: usize = 20;
/// Characters of a subject pseudonym shown in the feed: enough to follow one subject.
const FEED_PSEUDONYM_CHARS: usize = 12;
/// The window of the bulk-access and egress-spike alerts.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);

/// The kinds of alert, as named in the log (`alert`) and on the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertKind {
    /// A principal located in a restricted country attempted an access.
    RestrictedCountry,
    /// One principal touched more distinct subjects in a minute than configured.
    BulkAccess,
    /// A break-glass grant was started.
    BreakGlass,
    /// More egress rows in a minute than configured.
    EgressSpike,
    /// New entries went uncovered by a signed checkpoint for longer than the deadline.
    CheckpointLate,
    /// The custody store holds state that does not verify (signatures, thresholds, proofs,
    /// log indices): someone changed it around the custodian. The last verified state stays
    /// in force.
    CustodyUnverified,
}

impl AlertKind {
    pub const ALL: [AlertKind; 6] = [
        AlertKind::RestrictedCountry,
        AlertKind::BulkAccess,
        AlertKind::BreakGlass,
        AlertKind::EgressSpike,
        AlertKind::CheckpointLate,
        AlertKind::CustodyUnverified,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::RestrictedCountry => "restricted-country-access",
            AlertKind::BulkAccess => "bulk-access",
            AlertKind::BreakGlass => "break-glass",
            AlertKind::EgressSpike => "egress-spike",
            AlertKind::CheckpointLate => "checkpoint-late",
            AlertKind::CustodyUnverified => "custody-unverified",
        }
    }

    pub fn severity(self) -> &'static str {
        match self {
            AlertKind::RestrictedCountry
            | AlertKind::BulkAccess
            | AlertKind::BreakGlass
            | AlertKind::CustodyUnverified => "high",
            // The monitor's reading of the entry format knows `high` and `medium`.
            AlertKind::EgressSpike | AlertKind::CheckpointLate => "medium",
        }
    }
}

/// An alert to raise: what the observation found, before it is logged.
#[derive(Debug, Clone)]
pub struct AlertRequest {
    pub kind: AlertKind,
    pub message: String,
    /// For the log entry: counts, ids, pseudonyms; never a field value or raw subject id.
    pub details: Value,
}

/// An alert as published on the stream and kept for the dashboard.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub id: u64,
    pub time: String,
    pub alert: &'static str,
    pub severity: &'static str,
    pub principal: Option<String>,
    pub entity: Option<String>,
    pub location: Option<String>,
    pub message: String,
    pub log_index: Option<u64>,
    /// The same alert about the same principal again within `alert_repeat_seconds` after
    /// this one: counted here, not raised (nor logged) again.
    pub repeats: u64,
    /// For a `break-glass` alert, the use's id (the page shows whether it was reviewed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<String>,
}

/// One field class's verdict as the feed shows it: `protected: deny`, or with the
/// jurisdiction for decisions about every jurisdiction, `protected (US): allow`. The live
/// feed and the one seeded from the log both write it here, so they read the same.
pub fn class_verdict(class: &str, jurisdiction: Option<&str>, allowed: bool) -> String {
    let verdict = if allowed { "allow" } else { "deny" };
    match jurisdiction {
        Some(j) => format!("{class} ({j}): {verdict}"),
        None => format!("{class}: {verdict}"),
    }
}

/// The break-glass use a `break-glass` alert is about (its details' `id`).
fn break_glass_id(kind: AlertKind, details: &Value) -> Option<String> {
    (kind == AlertKind::BreakGlass)
        .then(|| details["id"].as_str().map(str::to_string))
        .flatten()
}

/// One logged decision, as the request path saw it.
pub struct Observation<'a> {
    pub who: &'a Authenticated,
    pub action: &'static str,
    pub subject_pseudonym: &'a str,
    pub subject_jurisdiction: &'a str,
    pub site: &'a str,
    pub collection: Option<&'a str>,
    pub outcome: &'static str,
    pub policies: Vec<String>,
    /// The stated purpose and reason code, as logged.
    pub purpose: &'a str,
    pub reason_code: &'a str,
    /// The kind of custodian grant Cedar saw (`approved`, `break-glass`), if any.
    pub grant: Option<&'a str>,
    /// Each decision's field class and whether it was allowed, like `protected: deny`.
    pub classes: Vec<String>,
    pub log_index: u64,
}

/// What the stream carries: the event name and its JSON, serialised once for all clients.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    pub name: &'static str,
    pub data: std::sync::Arc<str>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Counts {
    allow: u64,
    deny: u64,
    partial: u64,
}

impl Counts {
    pub(crate) fn add(&mut self, outcome: &str) {
        match outcome {
            "allow" => self.allow += 1,
            "partial" => self.partial += 1,
            _ => self.deny += 1,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct Second {
    time: String,
    #[serde(flatten)]
    counts: Counts,
}

#[derive(Debug, Clone, Serialize)]
struct FeedItem {
    time: String,
    log_index: u64,
    principal: String,
    entity: String,
    location: String,
    action: &'static str,
    subject: String,
    subject_jurisdiction: String,
    site: String,
    collection: Option<String>,
    outcome: &'static str,
    policies: Vec<String>,
    purpose: String,
    reason_code: String,
    grant: Option<String>,
    classes: Vec<String>,
}

/// The mutable part, behind one lock held only for counter updates.
struct Live {
    history: VecDeque<Second>,
    current: Counts,
    totals: Counts,
    by_location: BTreeMap<String, Counts>,
    by_entity: BTreeMap<String, Counts>,
    alerts_total: u64,
    egress_rows_total: u64,
    recent: VecDeque<FeedItem>,
    alerts: VecDeque<Alert>,
    next_alert_id: u64,
    /// Principal → subject pseudonym → when last touched, within the last minute.
    touched: HashMap<String, HashMap<String, Instant>>,
    /// Egress rows in the last minute.
    egress: VecDeque<(Instant, u64)>,
    /// Algorithm runs since start: algorithm → outcome → count. Names are those of active
    /// releases (the custodian's), outcomes a fixed few: bounded.
    runs: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// (alert, principal) → when last raised, for `alert_repeat_seconds`.
    raised: HashMap<(AlertKind, String), Instant>,
    /// The oldest entry the latest checkpoint does not cover, as last read: its index and
    /// the time it records (None if it could not be read), so that it is read once.
    oldest_uncovered: Option<(u64, Option<SystemTime>)>,
}

/// The gateway's live view of itself. See the module documentation.
pub struct Analytics {
    settings: AnalyticsConfig,
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    live: Mutex<Live>,
    events: broadcast::Sender<StreamEvent>,
    closing: watch::Sender<bool>,
    started: Instant,
}

impl Live {
    /// Puts a decision at the head of the feed, the oldest dropped beyond
    /// [`RECENT_DECISIONS`].
    fn show_decision(&mut self, item: FeedItem) {
        if self.recent.len() == RECENT_DECISIONS {
            self.recent.pop_back();
        }
        self.recent.push_front(item);
    }

    /// Keeps `alert`, numbered with the next id, at the head of the recent alerts (the oldest
    /// dropped beyond [`RECENT_ALERTS`]); answers it as kept.
    fn keep_alert(&mut self, mut alert: Alert) -> Alert {
        alert.id = self.next_alert_id;
        self.next_alert_id += 1;
        if self.alerts.len() == RECENT_ALERTS {
            self.alerts.pop_back();
        }
        self.alerts.push_front(alert.clone());
        alert
    }
}

impl Analytics {
    pub fn new(settings: AnalyticsConfig) -> Analytics {
        // A recorder of its own (not the process-wide one), so that several gateways in one
        // process (as in the tests) each count only their own traffic.
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ])
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, describe_metrics);
        let now = SystemTime::now();
        let history = (0..HISTORY_SECONDS)
            .rev()
            .map(|ago| Second {
                time: rfc3339_seconds(now - Duration::from_secs(ago as u64 + 1)),
                counts: Counts::default(),
            })
            .collect();
        Analytics {
            settings,
            recorder,
            handle,
            live: Mutex::new(Live {
                history,
                current: Counts::default(),
                totals: Counts::default(),
                by_location: BTreeMap::new(),
                by_entity: BTreeMap::new(),
                alerts_total: 0,
                egress_rows_total: 0,
                recent: VecDeque::with_capacity(RECENT_DECISIONS),
                runs: BTreeMap::new(),
                alerts: VecDeque::with_capacity(RECENT_ALERTS),
                next_alert_id: 1,
                touched: HashMap::new(),
                egress: VecDeque::new(),
                raised: HashMap::new(),
                oldest_uncovered: None,
            }),
            events: broadcast::channel(256).0,
            closing: watch::channel(false).0,
            started: Instant::now(),
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records metrics under this gateway's recorder.
    pub fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    /// Counts a logged decision; returns the alerts it raises (a restricted-country attempt,
    /// bulk access). `restricted` says whether the principal's location is restricted.
    pub fn observe_access(&self, o: &Observation<'_>, restricted: bool) -> Vec<AlertRequest> {
        let p = &o.who.principal;
        self.record(|| {
            metrics::counter!(
                "sovereign_decisions_total",
                "outcome" => o.outcome,
                "location" => p.location.clone(),
                "entity" => p.entity.clone(),
                "subject_jurisdiction" => o.subject_jurisdiction.to_string(),
                "site" => o.site.to_string(),
                "collection" => o.collection.unwrap_or("").to_string(),
                "action" => o.action,
            )
            .increment(1);
        });
        let now = Instant::now();
        let mut alerts = Vec::new();
        let mut live = self.live();
        live.current.add(o.outcome);
        live.totals.add(o.outcome);
        live.by_location
            .entry(p.location.clone())
            .or_default()
            .add(o.outcome);
        live.by_entity
            .entry(p.entity.clone())
            .or_default()
            .add(o.outcome);
        live.show_decision(FeedItem {
            time: rfc3339_millis(SystemTime::now()),
            log_index: o.log_index,
            principal: o.who.public_id.clone(),
            entity: p.entity.clone(),
            location: p.location.clone(),
            action: o.action,
            subject: o
                .subject_pseudonym
                .chars()
                .take(FEED_PSEUDONYM_CHARS)
                .collect(),
            subject_jurisdiction: o.subject_jurisdiction.to_string(),
            site: o.site.to_string(),
            collection: o.collection.map(str::to_string),
            outcome: o.outcome,
            policies: o.policies.clone(),
            purpose: o.purpose.to_string(),
            reason_code: o.reason_code.to_string(),
            grant: o.grant.map(str::to_string),
            classes: o.classes.clone(),
        });

        if restricted {
            alerts.push(AlertRequest {
                kind: AlertKind::RestrictedCountry,
                message: format!(
                    "{} ({}) located in {} attempted {} on a {} subject: {}",
                    o.who.public_id,
                    p.entity,
                    p.location,
                    o.action,
                    o.subject_jurisdiction,
                    o.outcome
                ),
                details: json!({
                    "action": o.action,
                    "subject": o.subject_pseudonym,
                    "subject_jurisdiction": o.subject_jurisdiction,
                    "collection": o.collection,
                    "outcome": o.outcome,
                    "access_entry": o.log_index,
                }),
            });
        }

        // Bulk access: distinct subjects per principal in the last minute (the ticker forgets
        // older ones each second). The set is capped just above the threshold, so a scraper
        // costs bounded memory.
        let limit = self.settings.bulk_subjects_per_minute;
        // Bulk actions (egress, scan) concern no one subject and count here as none.
        let touched = live.touched.entry(p.id.clone()).or_default();
        if !o.subject_pseudonym.is_empty()
            && (touched.len() <= limit || touched.contains_key(o.subject_pseudonym))
        {
            touched.insert(o.subject_pseudonym.to_string(), now);
        }
        if touched.len() > limit {
            alerts.push(AlertRequest {
                kind: AlertKind::BulkAccess,
                message: format!(
                    "{} ({}) touched more than {limit} distinct subjects in a minute",
                    o.who.public_id, p.entity
                ),
                details: json!({"distinct_subjects": touched.len(), "limit": limit, "window_seconds": WINDOW.as_secs()}),
            });
        }
        drop(live);
        alerts
    }

    /// Counts an algorithm run by its logged outcome (`ok`, `failed`, `denied`, `stopped`).
    pub fn observe_run(&self, algorithm: &str, outcome: &'static str) {
        self.record(|| {
            metrics::counter!("sovereign_algorithm_runs_total", "algorithm" => algorithm.to_string(), "outcome" => outcome)
                .increment(1);
        });
        *self
            .live()
            .runs
            .entry(algorithm.to_string())
            .or_default()
            .entry(outcome)
            .or_default() += 1;
    }

    /// Counts an egress page; returns the egress-spike alert if the last minute's rows
    /// exceed the configured limit.
    pub fn observe_egress(&self, collection: &str, rows: u64) -> Option<AlertRequest> {
        self.record(|| {
            metrics::counter!("sovereign_egress_rows_total", "collection" => collection.to_string())
                .increment(rows);
            metrics::counter!("sovereign_egress_pages_total", "collection" => collection.to_string())
                .increment(1);
        });
        let now = Instant::now();
        let mut live = self.live();
        live.egress_rows_total += rows;
        live.egress.push_back((now, rows));
        while live
            .egress
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) >= WINDOW)
        {
            live.egress.pop_front();
        }
        let in_window: u64 = live.egress.iter().map(|(_, r)| r).sum();
        let limit = self.settings.egress_rows_per_minute;
        (in_window > limit).then(|| AlertRequest {
            kind: AlertKind::EgressSpike,
            message: format!("{in_window} egress rows in the last minute (limit {limit})"),
            details: json!({"rows_in_window": in_window, "limit": limit, "window_seconds": WINDOW.as_secs(), "collection": collection}),
        })
    }

    /// Fills the feed of recent decisions and the recent alerts from the log's last entries
    /// (`(index, entry)`, in log order), so that a restarted gateway's page does not start
    /// empty. Only the feed and the alerts: the counts and the rate are this gateway's since
    /// it started. Entries that are not v2 access or alert entries are skipped.
    pub fn seed_from_log(&self, entries: impl IntoIterator<Item = (u64, Vec<u8>)>) {
        let mut live = self.live();
        for (index, bytes) in entries {
            let Ok(e) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            match e["kind"].as_str() {
                Some("access") if e["v"] == 2 => {
                    let classes = e["decisions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|d| {
                            Some(class_verdict(
                                d["field_class"].as_str()?,
                                d["subject_jurisdiction"].as_str(),
                                d["allowed"] == true && d["suspended"] != true,
                            ))
                        })
                        .collect();
                    let outcome = match e["outcome"].as_str() {
                        Some("allow") => "allow",
                        Some("partial") => "partial",
                        _ => "deny",
                    };
                    live.show_decision(FeedItem {
                        time: text(&e["time"]),
                        log_index: index,
                        principal: text(&e["principal"]["id"]),
                        entity: text(&e["principal"]["entity"]),
                        location: text(&e["principal"]["location"]),
                        action: policy::Action::parse(e["action"].as_str().unwrap_or_default())
                            .map_or("?", |a| a.as_str()),
                        subject: text(&e["subject"])
                            .chars()
                            .take(FEED_PSEUDONYM_CHARS)
                            .collect(),
                        subject_jurisdiction: text(&e["subject_jurisdiction"]),
                        site: text(&e["site"]),
                        collection: e["collection"].as_str().map(str::to_string),
                        outcome,
                        policies: e["policies"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(text)
                            .collect(),
                        purpose: text(&e["purpose"]),
                        reason_code: text(&e["reason_code"]),
                        grant: e["grant"]["kind"].as_str().map(str::to_string),
                        classes,
                    });
                }
                Some("alert") => {
                    let Some(kind) = AlertKind::ALL
                        .into_iter()
                        .find(|k| e["alert"].as_str() == Some(k.as_str()))
                    else {
                        continue;
                    };
                    let actor = &e["actor"];
                    live.keep_alert(Alert {
                        id: 0,
                        time: text(&e["time"]),
                        alert: kind.as_str(),
                        severity: kind.severity(),
                        principal: actor["id"].as_str().map(str::to_string),
                        entity: actor["entity"].as_str().map(str::to_string),
                        location: actor["location"].as_str().map(str::to_string),
                        message: format!(
                            "raised before this gateway started (its details are in log entry {index})"
                        ),
                        log_index: Some(index),
                        repeats: 0,
                        break_glass: break_glass_id(kind, &e["details"]),
                    });
                }
                _ => {}
            }
        }
    }

    /// Whether this alert about this principal may be raised now, or repeats one raised
    /// within `alert_repeat_seconds` (then it is only counted).
    pub fn should_raise(&self, kind: AlertKind, principal: Option<&str>) -> bool {
        let repeat = Duration::from_secs(self.settings.alert_repeat_seconds);
        let now = Instant::now();
        let key = (kind, principal.unwrap_or("").to_string());
        let mut live = self.live();
        // Every break-glass use is logged: each is a grant someone must review.
        let fresh = kind == AlertKind::BreakGlass
            || live
                .raised
                .get(&key)
                .is_none_or(|at| now.duration_since(*at) >= repeat);
        if fresh {
            live.raised.insert(key, now);
        } else if let Some(shown) = live
            .alerts
            .iter_mut()
            .find(|a| a.alert == kind.as_str() && a.principal.as_deref() == principal)
        {
            // The page shows the alert it repeats with its count.
            shown.repeats += 1;
        }
        drop(live);
        self.record(|| {
            if fresh {
                metrics::counter!("sovereign_alerts_total", "alert" => kind.as_str()).increment(1);
            } else {
                metrics::counter!("sovereign_alerts_repeated_total", "alert" => kind.as_str())
                    .increment(1);
            }
        });
        fresh
    }

    /// Keeps and publishes an alert that has been logged (or could not be: `log_index` None).
    pub fn publish_alert(
        &self,
        request: &AlertRequest,
        who: Option<&Authenticated>,
        log_index: Option<u64>,
    ) -> Alert {
        let mut live = self.live();
        let alert = live.keep_alert(Alert {
            id: 0,
            time: rfc3339_millis(SystemTime::now()),
            alert: request.kind.as_str(),
            severity: request.kind.severity(),
            principal: who.map(|w| w.public_id.clone()),
            entity: who.map(|w| w.principal.entity.clone()),
            location: who.map(|w| w.principal.location.clone()),
            message: request.message.clone(),
            log_index,
            repeats: 0,
            break_glass: break_glass_id(request.kind, &request.details),
        });
        live.alerts_total += 1;
        drop(live);
        self.send(
            "alert",
            serde_json::to_string(&alert).expect("alerts serialise"),
        );
        alert
    }

    /// Whether an entry has waited longer than the deadline for a signed checkpoint. What
    /// counts is the age of the oldest entry the latest checkpoint does not cover, not the
    /// checkpoint's own age: on an idle log the checkpoint grows old legitimately, and the
    /// first entry after a quiet spell has waited no time at all. May read that one entry
    /// from the log (once per entry): call it off the async threads.
    pub fn checkpoint_late(
        &self,
        log: &logstore::Log,
        served: Arc<logstore::Published>,
    ) -> Option<AlertRequest> {
        let state = LogState::read(log, served);
        let deadline = Duration::from_secs(self.settings.checkpoint_deadline_seconds);
        let uncovered = state.uncovered();
        // An entry the checkpoint does not cover was added after it was signed, so it cannot
        // have waited longer than the checkpoint's age: a young checkpoint needs no read.
        if uncovered == 0 || state.age <= deadline {
            return None;
        }
        let oldest = state.checkpoint_size;
        // If the entry's time cannot be read, the checkpoint's age stands in for it: an
        // alert too many rather than a late checkpoint unreported.
        let waited = self.entry_time(log, oldest).map_or(state.age, |at| {
            SystemTime::now().duration_since(at).unwrap_or_default()
        });
        (waited > deadline).then(|| AlertRequest {
            kind: AlertKind::CheckpointLate,
            message: format!(
                "{uncovered} log entries wait for a signed checkpoint, the oldest for {}s (deadline {}s)",
                waited.as_secs(),
                deadline.as_secs()
            ),
            details: json!({
                "log_size": state.size,
                "checkpoint_size": state.checkpoint_size,
                "checkpoint_age_seconds": state.age.as_secs(),
                "oldest_uncovered_index": oldest,
                "oldest_uncovered_wait_seconds": waited.as_secs(),
                "deadline_seconds": deadline.as_secs(),
            }),
        })
    }

    /// The time log entry `index` records (every entry format has `time`), read from the log
    /// once per index.
    fn entry_time(&self, log: &logstore::Log, index: u64) -> Option<SystemTime> {
        if let Some((cached, time)) = self.live().oldest_uncovered
            && cached == index
        {
            return time;
        }
        let time = log
            .entry(index)
            .ok()
            .flatten()
            .and_then(|bytes| entry_time(&bytes));
        self.live().oldest_uncovered = Some((index, time));
        time
    }

    /// Ends the current second: moves its counts into the history.
    pub fn tick(&self) {
        let now = Instant::now();
        let mut live = self.live();
        let counts = std::mem::take(&mut live.current);
        if live.history.len() == HISTORY_SECONDS {
            live.history.pop_front();
        }
        live.history.push_back(Second {
            time: rfc3339_seconds(SystemTime::now()),
            counts,
        });
        // Forget what no window needs any more, so idle principals cost nothing.
        live.touched.retain(|_, subjects| {
            subjects.retain(|_, at| now.duration_since(*at) < WINDOW);
            !subjects.is_empty()
        });
        let repeat = Duration::from_secs(self.settings.alert_repeat_seconds);
        live.raised
            .retain(|_, at| now.duration_since(*at) < repeat.max(WINDOW));
        drop(live);
        self.handle.run_upkeep();
    }

    /// The summary the stream sends each second. `log`, `served` (the checkpoint served), `pending` and `restricted` (the
    /// configured restricted countries, for the dashboard to mark) come from the state.
    pub fn summary(
        &self,
        log: &logstore::Log,
        served: Arc<logstore::Published>,
        pending: &[custody::AccessRequest],
        restricted: &std::collections::BTreeSet<String>,
    ) -> Value {
        let state = LogState::read(log, served);
        let live = self.live();
        json!({
            "time": rfc3339_millis(SystemTime::now()),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "restricted_countries": restricted,
            "history": live.history,
            "by_location": live.by_location,
            "by_entity": live.by_entity,
            "totals": {
                "allow": live.totals.allow,
                "deny": live.totals.deny,
                "partial": live.totals.partial,
                "alerts": live.alerts_total,
                "egress_rows": live.egress_rows_total,
            },
            "recent": live.recent,
            "alerts": live.alerts,
            "runs": live.runs,
            "pending_approvals": pending.iter().take(PENDING_SHOWN).map(|r| json!({
                "id": r.id,
                "requester": r.requester.id,
                "action": r.action,
                "collections": r.collections,
                "purpose": r.purpose,
                "reason_code": r.reason_code,
                "approvals": r.approvals.len(),
                "approvals_required": r.approvals_required,
            })).collect::<Vec<_>>(),
            "log": {
                "size": state.size,
                "checkpoint_size": state.checkpoint_size,
                "checkpoint_age_seconds": state.age.as_secs_f64(),
                "root_hash": tlog::hash_to_base64(&state.checkpoint.hash),
                "origin": log.origin(),
                "checkpoint_deadline_seconds": self.settings.checkpoint_deadline_seconds,
            },
        })
    }

    /// Publishes one second's summary to every stream client.
    pub fn publish_summary(&self, summary: &Value) {
        self.send("summary", summary.to_string());
    }

    fn send(&self, name: &'static str, data: String) {
        // No receiver is not an error: nobody is watching.
        let _ = self.events.send(StreamEvent {
            name,
            data: data.into(),
        });
    }

    /// Whether any stream client is connected (summaries are built only then).
    pub fn has_watchers(&self) -> bool {
        self.events.receiver_count() > 0
    }

    pub fn subscribe(&self) -> broadcast::Receiver<StreamEvent> {
        self.events.subscribe()
    }

    /// Completes when the gateway starts shutting down, so that open streams end and the
    /// graceful shutdown does not wait for them forever.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Renders the Prometheus text exposition, after setting the gauges read from `log`.
    pub fn render(
        &self,
        log: &logstore::Log,
        served: Arc<logstore::Published>,
        pending_approvals: usize,
    ) -> String {
        let state = LogState::read(log, served);
        self.record(|| {
            metrics::gauge!("sovereign_log_size_entries").set(state.size as f64);
            metrics::gauge!("sovereign_log_checkpoint_size_entries")
                .set(state.checkpoint_size as f64);
            metrics::gauge!("sovereign_log_uncovered_entries").set(state.uncovered() as f64);
            metrics::gauge!("sovereign_log_checkpoint_age_seconds").set(state.age.as_secs_f64());
            metrics::gauge!("sovereign_approvals_pending").set(pending_approvals as f64);
            metrics::gauge!("sovereign_uptime_seconds").set(self.started.elapsed().as_secs_f64());
        });
        self.handle.render()
    }
}

/// The log as the analytics report it, read once for a summary, a scrape or a check.
struct LogState {
    size: u64,
    checkpoint: Arc<logstore::Published>,
    /// Entries the latest signed checkpoint covers (0 before the first is signed).
    checkpoint_size: u64,
    age: Duration,
}

impl LogState {
    /// The log and the checkpoint it serves (the witnessed one, with witnesses).
    fn read(log: &logstore::Log, checkpoint: Arc<logstore::Published>) -> LogState {
        // Before the writer signs its first checkpoint, `size` is a sentinel for "none".
        let checkpoint_size = if checkpoint.size == u64::MAX {
            0
        } else {
            checkpoint.size
        };
        LogState {
            size: log.size(),
            checkpoint_size,
            age: checkpoint.signed_at.elapsed().unwrap_or_default(),
            checkpoint,
        }
    }

    fn uncovered(&self) -> u64 {
        self.size.saturating_sub(self.checkpoint_size)
    }
}

/// The `time` an entry records.
fn entry_time(entry: &[u8]) -> Option<SystemTime> {
    #[derive(serde::Deserialize)]
    struct Timed {
        time: String,
    }
    let timed: Timed = serde_json::from_slice(entry).ok()?;
    humantime::parse_rfc3339(&timed.time).ok()
}

/// The HTTP methods that get a label of their own in the metrics; any other method (a client
/// may send any token as a method) counts as `other`, so that clients cannot add series.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}

/// The route label of a request that matched no route: one label for every such path.
pub const NO_ROUTE_LABEL: &str = "(no route)";

fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "sovereign_http_requests_total",
        "HTTP requests by route template (`(no route)` for any unmatched path), method (`other` for any non-standard one) and status"
    );
    describe_counter!(
        "sovereign_algorithm_runs_total",
        "Runs of custodian-released algorithms by algorithm and logged outcome (ok, failed, denied, stopped)"
    );
    describe_gauge!(
        "sovereign_http_connections_open",
        "HTTP connections open now"
    );
    describe_gauge!(
        "sovereign_http_connections_max",
        "HTTP connections served at once at most (server.max_connections, or less if the open-file limit is lower)"
    );
    describe_counter!(
        "sovereign_http_connections_closed_total",
        "HTTP connections the server closed for lack of progress, by reason (header_timeout, idle_timeout, stalled)"
    );
    describe_histogram!(
        "sovereign_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request, by route template and method"
    );
    describe_counter!(
        "sovereign_decisions_total",
        "Logged access decisions by outcome, principal location and entity, subject jurisdiction, site, collection and action"
    );
    describe_counter!(
        "sovereign_fleet_decisions_total",
        "Access decisions of every gateway sharing the log (this one's included), read from the log since this gateway started, by outcome, principal location and entity, and action"
    );
    describe_histogram!(
        "sovereign_log_append_duration_seconds",
        Unit::Seconds,
        "Time for one entry to become durable and integrated into the log's tree"
    );
    describe_gauge!(
        "sovereign_log_size_entries",
        "Entries durable in the transparency log"
    );
    describe_gauge!(
        "sovereign_log_checkpoint_size_entries",
        "Entries covered by the latest signed checkpoint"
    );
    describe_gauge!(
        "sovereign_log_uncovered_entries",
        "Entries not yet covered by a signed checkpoint"
    );
    describe_gauge!(
        "sovereign_log_checkpoint_age_seconds",
        Unit::Seconds,
        "Seconds since the latest checkpoint was signed (or found current at start)"
    );
    describe_gauge!(
        "sovereign_approvals_pending",
        "Access requests waiting for custodian approval"
    );
    describe_counter!(
        "sovereign_egress_rows_total",
        "Rows sent out through egress, by collection"
    );
    describe_counter!(
        "sovereign_egress_pages_total",
        "Egress pages served, by collection"
    );
    describe_counter!(
        "sovereign_alerts_total",
        "Alerts raised and logged, by alert"
    );
    describe_counter!(
        "sovereign_alerts_repeated_total",
        "Alerts that repeated one raised within analytics.alert_repeat_seconds (counted, not logged again)"
    );
    describe_gauge!(
        "sovereign_uptime_seconds",
        Unit::Seconds,
        "Seconds since the gateway started"
    );
}

fn rfc3339_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn rfc3339_seconds(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
