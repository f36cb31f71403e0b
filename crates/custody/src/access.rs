//! Access requests, approvals, grants and break-glass uses.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::store::{REQUEST, Store, Write};
use crate::{Custody, CustodyError, Event, LogFn, Person, Verdict, is_reason_code, new_id};

const MAX_PURPOSE_BYTES: usize = 256;
const MAX_COMMENT_BYTES: usize = 1024;
const MAX_SCOPE_ITEMS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequestKind {
    /// Needs custodian approval before it grants anything.
    Request,
    /// Granted at once for a short window; reviewed by a custodian afterwards.
    BreakGlass,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Pending,
    /// An active grant.
    Approved,
    Denied,
    /// Not approved in time.
    Expired,
    Revoked,
    /// The grant reached its end time.
    Ended,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Expired => "expired",
            Status::Revoked => "revoked",
            Status::Ended => "ended",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        [
            Status::Pending,
            Status::Approved,
            Status::Denied,
            Status::Expired,
            Status::Revoked,
            Status::Ended,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a principal asks for. Empty scope lists mean "any".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRequest {
    pub action: String,
    pub subjects: Vec<String>,
    pub collections: Vec<String>,
    pub fields: Vec<String>,
    pub purpose: String,
    pub reason_code: String,
    pub duration_seconds: i64,
}

/// An access request or a break-glass use, with everything decided about it. Times are unix
/// seconds. The status is derived from the times and verdicts, so expiry needs no job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRequest {
    pub id: String,
    pub kind: RequestKind,
    pub requester: Person,
    pub action: String,
    pub subjects: Vec<String>,
    pub collections: Vec<String>,
    pub fields: Vec<String>,
    pub purpose: String,
    pub reason_code: String,
    pub duration_seconds: i64,
    pub approvals_required: u32,
    pub approvals: Vec<Verdict>,
    pub denial: Option<Verdict>,
    pub revoked: Option<Verdict>,
    pub review: Option<Verdict>,
    pub created_at: i64,
    /// A pending request expires at this time.
    pub expires_at: i64,
    pub starts_at: Option<i64>,
    pub ends_at: Option<i64>,
    /// The transparency-log index of the event that last wrote this record, set by the
    /// custody store in the same transaction that commits the write. Every stored record
    /// carries one (a record without is refused on load). In an [`crate::Event`] the record
    /// still carries the index of the write before (none for a new record).
    #[serde(default)]
    pub log_index: Option<u64>,
}

impl AccessRequest {
    pub fn status(&self, now: i64) -> Status {
        if self.denial.is_some() {
            Status::Denied
        } else if self.revoked.is_some() {
            Status::Revoked
        } else if let (Some(_), Some(ends_at)) = (self.starts_at, self.ends_at) {
            if now >= ends_at {
                Status::Ended
            } else {
                Status::Approved
            }
        } else if now >= self.expires_at {
            Status::Expired
        } else {
            Status::Pending
        }
    }

    /// Whether this is an active grant for `principal` doing `action` on `subject` in
    /// `collection` (`None` for subject-level actions, which only an unscoped grant covers).
    /// Field scope is left to the caller, which knows which fields an access touches.
    pub fn covers(
        &self,
        principal: &str,
        action: &str,
        subject: &str,
        collection: Option<&str>,
        now: i64,
    ) -> bool {
        self.requester.id == principal
            && self.action == action
            && self.status(now) == Status::Approved
            && (self.subjects.is_empty() || self.subjects.iter().any(|s| s == subject))
            && (self.collections.is_empty()
                || collection.is_some_and(|c| self.collections.iter().any(|x| x == c)))
    }
}

/// How requests are handled, from configuration.
#[derive(Debug, Clone, Copy)]
pub struct RequestRules {
    pub approvals_required: u32,
    /// A pending request expires after this long.
    pub pending_ttl_seconds: i64,
    pub max_duration_seconds: i64,
}

fn check_new(new: &NewRequest, max_duration: i64) -> Result<(), CustodyError> {
    let invalid = |why: String| Err(CustodyError::Invalid(why));
    if !is_reason_code(&new.reason_code) {
        return invalid(format!(
            "unknown reason code `{}`; see GET /v1/access/reason-codes",
            new.reason_code
        ));
    }
    if new.purpose.trim().is_empty() || new.purpose.len() > MAX_PURPOSE_BYTES {
        return invalid(format!(
            "a purpose of 1 to {MAX_PURPOSE_BYTES} bytes is required"
        ));
    }
    if new.duration_seconds <= 0 || new.duration_seconds > max_duration {
        return invalid(format!(
            "the duration must be above 0 and at most {max_duration} seconds"
        ));
    }
    if new.subjects.len() + new.collections.len() + new.fields.len() > MAX_SCOPE_ITEMS {
        return invalid(format!("a scope names at most {MAX_SCOPE_ITEMS} items"));
    }
    Ok(())
}

fn verdict(by: &Person, comment: &str, now: i64) -> Result<Verdict, CustodyError> {
    if comment.len() > MAX_COMMENT_BYTES {
        return Err(CustodyError::Invalid(format!(
            "a comment is at most {MAX_COMMENT_BYTES} bytes"
        )));
    }
    Ok(Verdict {
        by: by.id.clone(),
        entity: by.entity.clone(),
        at: now,
        comment: comment.to_string(),
    })
}

/// Nobody decides on their own access, nor on their own entity's.
fn check_independent(request: &AccessRequest, by: &Person) -> Result<(), CustodyError> {
    if by.id == request.requester.id {
        return Err(CustodyError::SelfApproval);
    }
    if by.entity == request.requester.entity {
        return Err(CustodyError::SameEntity(by.entity.clone()));
    }
    Ok(())
}

impl Custody {
    /// Files a new access request; it waits for `rules.approvals_required` approvals.
    pub fn create_request(
        &self,
        new: NewRequest,
        requester: &Person,
        rules: RequestRules,
        now: i64,
        log: LogFn<'_>,
    ) -> Result<(AccessRequest, u64), CustodyError> {
        check_new(&new, rules.max_duration_seconds)?;
        let request = AccessRequest {
            id: new_id("ar"),
            kind: RequestKind::Request,
            requester: requester.clone(),
            action: new.action,
            subjects: new.subjects,
            collections: new.collections,
            fields: new.fields,
            purpose: new.purpose,
            reason_code: new.reason_code,
            duration_seconds: new.duration_seconds,
            approvals_required: rules.approvals_required.max(1),
            approvals: Vec::new(),
            denial: None,
            revoked: None,
            review: None,
            created_at: now,
            expires_at: now + rules.pending_ttl_seconds,
            starts_at: None,
            ends_at: None,
            log_index: None,
        };
        self.save(&request, Event::RequestCreated(&request), log)
    }

    /// Starts a break-glass use: a grant from now for `window_seconds`, to be reviewed later.
    pub fn break_glass(
        &self,
        new: NewRequest,
        requester: &Person,
        window_seconds: i64,
        now: i64,
        log: LogFn<'_>,
    ) -> Result<(AccessRequest, u64), CustodyError> {
        let new = NewRequest {
            duration_seconds: window_seconds,
            ..new
        };
        check_new(&new, window_seconds)?;
        let request = AccessRequest {
            id: new_id("bg"),
            kind: RequestKind::BreakGlass,
            requester: requester.clone(),
            action: new.action,
            subjects: new.subjects,
            collections: new.collections,
            fields: new.fields,
            purpose: new.purpose,
            reason_code: new.reason_code,
            duration_seconds: window_seconds,
            approvals_required: 0,
            approvals: Vec::new(),
            denial: None,
            revoked: None,
            review: None,
            created_at: now,
            expires_at: now,
            starts_at: Some(now),
            ends_at: Some(now + window_seconds),
            log_index: None,
        };
        self.save(&request, Event::BreakGlassStarted(&request), log)
    }

    /// Records one approval. When the approvals reach the threshold the grant starts now and
    /// ends after the requested duration.
    pub fn approve(
        &self,
        id: &str,
        approver: &Person,
        comment: &str,
        now: i64,
        log: LogFn<'_>,
    ) -> Result<(AccessRequest, u64), CustodyError> {
        let mut store = self.lock_current()?;
        let mut request = self.pending(id, now)?;
        check_independent(&request, approver)?;
        if request.approvals.iter().any(|a| a.by == approver.id) {
            return Err(CustodyError::AlreadyApproved(approver.id.clone()));
        }
        request.approvals.push(verdict(approver, comment, now)?);
        let granted = request.approvals.len() >= request.approvals_required as usize;
        if granted {
            request.starts_at = Some(now);
            request.ends_at = Some(now + request.duration_seconds);
        }
        let event = Event::RequestApproved {
            request: &request,
            granted,
        };
        self.commit_request(&mut store, &request, event, log)
    }

    /// Denies a pending request; one denial ends it.
    pub fn deny(
        &self,
        id: &str,
        by: &Person,
        comment: &str,
        now: i64,
        log: LogFn<'_>,
    ) -> Result<(AccessRequest, u64), CustodyError> {
        let mut store = self.lock_current()?;
        let mut request = self.pending(id, now)?;
        check_independent(&request, by)?;
        request.denial = Some(verdict(by, comment, now)?);
        self.commit_request(&mut store, &request, Event::RequestDenied(&request), log)
    }

    /// Ends an active grant (approved or break-glass) now.
    pub fn revoke(
        &self,
        id: &str,
        by: &Person,
        comment: &str,
        now: i64,
        log: LogFn<'_>,
    ) -> Result<(AccessRequest, u64), CustodyError> {
        let mut store = self.lock_current()?;
        let mut request = self.request(id)?;
        let status = request.status(now);
        if status != Status::Approved {
            return Err(CustodyError::NotActive {
                id: id.to_string(),
                status,
            });
        }
        request.revoked = Some(verdict(by, comment, now)?);
        self.commit_request(&mut store, &request, Event::GrantRevoked(&request), log)
    }

    /// A custodian's after-the-fact review of a break-glass use.
    pub fn review(
        &self,
        id: &str,
        by: &Person,
        comment: &str,
        now: i64,
        log: LogFn<'_>,
    ) -> Result<(AccessRequest, u64), CustodyError> {
        let mut store = self.lock_current()?;
        let mut request = self.request(id)?;
        if request.kind != RequestKind::BreakGlass {
            return Err(CustodyError::NotBreakGlass(id.to_string()));
        }
        if request.review.is_some() {
            return Err(CustodyError::AlreadyReviewed(id.to_string()));
        }
        check_independent(&request, by)?;
        request.review = Some(verdict(by, comment, now)?);
        self.commit_request(
            &mut store,
            &request,
            Event::BreakGlassReviewed(&request),
            log,
        )
    }

    pub fn request(&self, id: &str) -> Result<AccessRequest, CustodyError> {
        self.read()
            .requests
            .get(id)
            .cloned()
            .ok_or_else(|| CustodyError::UnknownRequest(id.to_string()))
    }

    /// All requests and break-glass uses, oldest first.
    pub fn requests(&self) -> Vec<AccessRequest> {
        let mut all: Vec<AccessRequest> = self.read().requests.values().cloned().collect();
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        all
    }

    /// The active grant covering an access, if any; an approved request is preferred over a
    /// break-glass use, so that break-glass shows up only when nothing else allowed it.
    pub fn find_grant(
        &self,
        principal: &str,
        action: &str,
        subject: &str,
        collection: Option<&str>,
        now: i64,
    ) -> Option<AccessRequest> {
        let state = self.read();
        let mut covering = state
            .granted
            .get(principal)?
            .iter()
            .filter_map(|id| state.requests.get(id))
            .filter(|r| r.covers(principal, action, subject, collection, now));
        let first = covering.next()?;
        if first.kind == RequestKind::Request {
            return Some(first.clone());
        }
        Some(
            covering
                .find(|r| r.kind == RequestKind::Request)
                .unwrap_or(first)
                .clone(),
        )
    }

    fn pending(&self, id: &str, now: i64) -> Result<AccessRequest, CustodyError> {
        let request = self.request(id)?;
        if request.kind != RequestKind::Request {
            return Err(CustodyError::NotARequest(id.to_string()));
        }
        let status = request.status(now);
        if status != Status::Pending {
            return Err(CustodyError::NotPending {
                id: id.to_string(),
                status,
            });
        }
        Ok(request)
    }

    fn save(
        &self,
        request: &AccessRequest,
        event: Event<'_>,
        log: LogFn<'_>,
    ) -> Result<(AccessRequest, u64), CustodyError> {
        let mut store = self.lock_current()?;
        self.commit_request(&mut store, request, event, log)
    }

    /// Writes `request` and logs `event` in one change (see `Store::commit`), then makes it
    /// visible, carrying the event's log index as the stored row does. The caller holds
    /// `store`, so that what it checked still holds.
    fn commit_request(
        &self,
        store: &mut Store,
        request: &AccessRequest,
        event: Event<'_>,
        log: LogFn<'_>,
    ) -> Result<(AccessRequest, u64), CustodyError> {
        let index = store.commit(&[Write::record(REQUEST, &request.id, request)], event, log)?;
        let stored = AccessRequest {
            log_index: Some(index),
            ..request.clone()
        };
        self.update(|s| s.put_request(stored.clone()));
        Ok((stored, index))
    }
}
