//! `sovereign access`: access requests, approvals and break-glass, over the gateway's
//! `/v1/access` API.
//!
//! The gateway decides everything (who may approve, how many approvals a request needs,
//! which reason codes exist); these commands only shape the requests and summarise the
//! answers, so the rules live in one place.

use std::time::Duration;

use anyhow::bail;
use serde_json::{Map, Value, json};

use crate::client::{Body, ServerArgs, is_full_id, joined, segment, text};

/// The actions an access request can be for (the policy actions).
const ACTIONS: [&str; 5] = ["register", "list", "read", "write", "delete"];
/// The statuses `access list --status` filters on.
const STATUSES: [&str; 6] = [
    "pending", "approved", "denied", "expired", "revoked", "ended",
];

/// `sovereign access ...`
#[derive(clap::Subcommand, Debug, Clone)]
pub enum AccessCommand {
    /// Ask for time-limited access that custodian approvers must approve.
    Request {
        #[command(flatten)]
        scope: Scope,
        /// Fields the access is for (repeatable); none means every field.
        #[arg(long = "field", num_args = 1..)]
        fields: Vec<String>,
        /// How long the access lasts once approved, like 30m or 2h.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<String>,
        /// Then wait (at most DURATION, 1h if not given) until the approvers decide: exit 0
        /// once approved, 5 if denied, revoked or expired or still pending at the end.
        #[arg(long, value_name = "DURATION", num_args = 0..=1, require_equals = true,
            default_missing_value = "1h", value_parser = humantime::parse_duration)]
        wait: Option<Duration>,
    },
    /// Approve a pending request (as a custodian approver).
    Approve {
        id: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Deny a pending request (as a custodian approver), saying why.
    Deny {
        id: String,
        #[arg(long)]
        comment: String,
    },
    /// Revoke an approved request or a break-glass access before it ends.
    Revoke {
        id: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// List access requests (approvers and operators see all; others their own).
    List {
        /// Only requests with this status.
        #[arg(long, value_parser = STATUSES)]
        status: Option<String>,
    },
    /// Show one access request.
    Show { id: String },
    /// The reason codes a request or break-glass access may give.
    ReasonCodes,
    /// Open emergency access at once (needs the break-glass role); it is logged as an
    /// alert and must be reviewed afterwards.
    BreakGlass {
        #[command(flatten)]
        scope: Scope,
    },
    /// Mark a break-glass access as reviewed (as a custodian approver).
    Review {
        id: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// List break-glass accesses nobody has reviewed yet.
    Unreviewed,
}

/// What an access is for, shared by `request` and `break-glass`.
#[derive(clap::Args, Debug, Clone)]
pub struct Scope {
    /// The action: register, list, read, write or delete.
    #[arg(long, default_value = "read", value_parser = ACTIONS)]
    action: String,
    /// Subject ids (repeatable); none means every subject.
    #[arg(long = "subject", num_args = 1..)]
    subjects: Vec<String>,
    /// Collections (repeatable); none means every collection.
    #[arg(long = "collection", num_args = 1..)]
    collections: Vec<String>,
    /// Why the access is needed, as a sentence (e.g. the ticket it serves).
    #[arg(long)]
    purpose: String,
    /// A reason code (`sovereign access reason-codes` lists them).
    #[arg(long = "reason")]
    reason_code: String,
}

impl Scope {
    fn body(&self) -> Map<String, Value> {
        let mut body = Map::new();
        body.insert("action".into(), json!(self.action));
        body.insert("subjects".into(), json!(self.subjects));
        body.insert("collections".into(), json!(self.collections));
        body.insert("purpose".into(), json!(self.purpose));
        body.insert("reason_code".into(), json!(self.reason_code));
        body
    }
}

/// Checks a `--duration` early, for a clear message; the gateway gets the text as written.
fn parse_duration(s: &str) -> Result<String, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d >= Duration::from_secs(1) => Ok(s.to_string()),
        Ok(_) => Err("must be at least 1s".into()),
        Err(e) => Err(format!("{e} (write it like 30m, 2h or 1h30m)")),
    }
}

pub fn run(server: &ServerArgs, command: AccessCommand) -> anyhow::Result<()> {
    let client = server.client()?;
    match command {
        AccessCommand::Request {
            scope,
            fields,
            duration,
            wait,
        } => {
            let mut body = scope.body();
            body.insert("fields".into(), json!(fields));
            if let Some(d) = duration {
                body.insert("duration".into(), json!(d));
            }
            let answer = client.post("/v1/access/requests", Body::Json(&Value::Object(body)))?;
            // With --wait --json, standard output holds one document: the request as decided.
            let quiet = wait.is_some() && server.json;
            if quiet {
                eprintln!("created access request {}", text(&answer, "id"));
            } else {
                server.print(&answer, |r| {
                    format!(
                        "created access request {}: it needs {} approval(s) before it starts\n{}",
                        text(r, "id"),
                        r["approvals_required"],
                        describe(r)
                    )
                });
            }
            if let Some(limit) = wait {
                let decided = wait_for_decision(&client, text(&answer, "id"), limit)?;
                server.print(&decided, describe);
                let status = text(&decided, "status");
                if status != "approved" {
                    bail!(
                        "access request {} is {status}, not approved",
                        text(&decided, "id")
                    );
                }
            }
        }
        AccessCommand::Approve { id, comment } => {
            let answer = decide(&client, &id, "approve", &comment)?;
            server.print(&answer, |r| {
                let got = r["approvals"].as_array().map_or(0, Vec::len);
                format!(
                    "approved {} ({got} of {} approvals): it is now {}\n{}",
                    text(r, "id"),
                    r["approvals_required"],
                    text(r, "status"),
                    describe(r)
                )
            });
        }
        AccessCommand::Deny { id, comment } => {
            let answer = decide(&client, &id, "deny", &comment)?;
            server.print(&answer, |r| {
                format!("denied {}\n{}", text(r, "id"), describe(r))
            });
        }
        AccessCommand::Revoke { id, comment } => {
            let answer = decide(&client, &id, "revoke", &comment)?;
            server.print(&answer, |r| {
                format!("revoked {}\n{}", text(r, "id"), describe(r))
            });
        }
        AccessCommand::List { status } => {
            let path = match status {
                Some(s) => format!("/v1/access/requests?status={}", segment(&s)),
                None => "/v1/access/requests".to_string(),
            };
            let answer = client.get_json(&path)?;
            server.print(&answer, |a| list(a, "requests", "no access requests"));
        }
        AccessCommand::Show { id } => {
            let id = request_id(&client, &id)?;
            let answer = client.get_json(&format!("/v1/access/requests/{}", segment(&id)))?;
            server.print(&answer, describe);
        }
        AccessCommand::ReasonCodes => {
            let answer = client.get_json("/v1/access/reason-codes")?;
            server.print(&answer, reason_codes);
        }
        AccessCommand::BreakGlass { scope } => {
            let body = Value::Object(scope.body());
            let answer = client.post("/v1/access/break-glass", Body::Json(&body))?;
            server.print(&answer, |r| {
                format!(
                    "break-glass access {} is open until {}; it has been raised as an alert and will be reviewed\n{}",
                    text(r, "id"),
                    text(r, "ends_at"),
                    describe(r)
                )
            });
        }
        AccessCommand::Review { id, comment } => {
            let id = client.resolve(&id, is_full_id, "/v1/access/break-glass", "uses", "id")?;
            let path = format!("/v1/access/break-glass/{}/review", segment(&id));
            let answer = client.post(&path, Body::Json(&json!({ "comment": comment })))?;
            server.print(&answer, |r| format!("reviewed {id}\n{}", describe(r)));
        }
        AccessCommand::Unreviewed => {
            let answer = client.get_json("/v1/access/break-glass?unreviewed=true")?;
            server.print(&answer, |a| {
                list(a, "uses", "no unreviewed break-glass accesses")
            });
        }
    }
    Ok(())
}

/// `POST /v1/access/requests/ID/VERB` with a comment.
fn decide(
    client: &crate::client::Client,
    id: &str,
    verb: &str,
    comment: &str,
) -> anyhow::Result<Value> {
    if id.trim().is_empty() {
        bail!("the request id is empty (`sovereign access list` shows the ids)");
    }
    let id = request_id(client, id)?;
    let path = format!("/v1/access/requests/{}/{verb}", segment(&id));
    client.post(&path, Body::Json(&json!({ "comment": comment })))
}

/// The whole id of the access request `given` names: itself, or a unique prefix of at least
/// 4 characters (with or without its `ar-`) of a request the caller may list.
fn request_id(client: &crate::client::Client, given: &str) -> anyhow::Result<String> {
    // Break-glass uses are listed apart from requests.
    if given.trim().starts_with("bg-") {
        return client.resolve(given, is_full_id, "/v1/access/break-glass", "uses", "id");
    }
    client.resolve(given, is_full_id, "/v1/access/requests", "requests", "id")
}

/// One request per line.
fn list(answer: &Value, member: &str, none: &str) -> String {
    let items = answer[member].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if items.is_empty() {
        return format!("{none}\n");
    }
    items.iter().map(|r| format!("{}\n", line(r))).collect()
}

/// A request on one line: id, status, kind, what, who, approvals and purpose.
fn line(r: &Value) -> String {
    let got = r["approvals"].as_array().map_or(0, Vec::len);
    format!(
        "{}  {:<8}  {:<11}  {} by {} ({})  subjects: {}  collections: {}  approvals {got}/{}  purpose: {:?}",
        text(r, "id"),
        text(r, "status"),
        text(r, "kind"),
        text(r, "action"),
        text(&r["requester"], "id"),
        text(&r["requester"], "entity"),
        joined(r, "subjects", "any"),
        joined(r, "collections", "any"),
        r["approvals_required"],
        text(r, "purpose"),
    )
}

/// A request in full, one aspect per line.
fn describe(r: &Value) -> String {
    let mut out = String::new();
    let mut add = |label: &str, value: String| out.push_str(&format!("  {label:<11} {value}\n"));
    add("id:", format!("{} ({})", text(r, "id"), text(r, "kind")));
    add("status:", text(r, "status").to_string());
    add(
        "requester:",
        format!(
            "{} ({})",
            text(&r["requester"], "id"),
            text(&r["requester"], "entity")
        ),
    );
    add(
        "access:",
        format!(
            "{} on subjects: {}; collections: {}; fields: {}",
            text(r, "action"),
            joined(r, "subjects", "any"),
            joined(r, "collections", "any"),
            joined(r, "fields", "any")
        ),
    );
    add(
        "purpose:",
        format!(
            "{:?} (reason {})",
            text(r, "purpose"),
            text(r, "reason_code")
        ),
    );
    if let Some(secs) = r["duration_seconds"].as_u64() {
        add(
            "duration:",
            humantime::format_duration(Duration::from_secs(secs)).to_string(),
        );
    }
    let approvals: Vec<String> = r["approvals"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|a| {
            format!(
                "{} ({}) at {}",
                text(a, "approver"),
                text(a, "entity"),
                text(a, "at")
            )
        })
        .collect();
    add(
        "approvals:",
        format!(
            "{} of {}{}{}",
            approvals.len(),
            r["approvals_required"],
            if approvals.is_empty() { "" } else { ": " },
            approvals.join("; ")
        ),
    );
    add("created:", text(r, "created_at").to_string());
    if text(r, "status") == "pending" {
        add("expires:", text(r, "expires_at").to_string());
    }
    if r["starts_at"].is_string() || r["ends_at"].is_string() {
        add(
            "active:",
            format!("from {} to {}", text(r, "starts_at"), text(r, "ends_at")),
        );
    }
    for (label, member) in [
        ("denied:", "denial"),
        ("revoked:", "revoked"),
        ("reviewed:", "review"),
    ] {
        let v = &r[member];
        if v.is_object() {
            add(
                label,
                format!(
                    "by {} at {}: {:?}",
                    text(v, "by"),
                    text(v, "at"),
                    text(v, "comment")
                ),
            );
        }
    }
    out
}

fn reason_codes(answer: &Value) -> String {
    let codes = answer["reason_codes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if codes.is_empty() {
        return "the gateway lists no reason codes\n".to_string();
    }
    let width = codes
        .iter()
        .map(|c| text(c, "code").len())
        .max()
        .unwrap_or(0);
    codes
        .iter()
        .map(|c| format!("{:<width$}  {}\n", text(c, "code"), text(c, "description")))
        .collect()
}

/// How often `access request --wait` asks whether the approvers have decided.
const DECISION_POLL: Duration = Duration::from_secs(2);

/// Polls request `id` until it is no longer pending, or `limit` has passed; says on standard
/// error how many approvals it has while it waits.
fn wait_for_decision(
    client: &crate::client::Client,
    id: &str,
    limit: Duration,
) -> anyhow::Result<Value> {
    let started = std::time::Instant::now();
    let mut said = None;
    loop {
        let request = client.get_json(&format!("/v1/access/requests/{}", segment(id)))?;
        if text(&request, "status") != "pending" {
            return Ok(request);
        }
        let got = request["approvals"].as_array().map_or(0, Vec::len);
        if said != Some(got) {
            eprintln!(
                "waiting for the approvers of {id}: {got} of {} approval(s)",
                request["approvals_required"]
            );
            said = Some(got);
        }
        if started.elapsed() >= limit {
            bail!(
                "access request {id} is still pending after {}",
                humantime::format_duration(limit)
            );
        }
        std::thread::sleep(DECISION_POLL.min(limit.saturating_sub(started.elapsed())));
    }
}
