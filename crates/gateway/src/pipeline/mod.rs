//! The one path every access to subject data takes, whatever the route (records, subject
//! lookup and registration, export, erasure, egress and aggregates, the residency scan and
//! migration):
//!
//! ```text
//! authenticate (the `Caller` extractor, before the handler runs)
//!   → find the subject (its placement only: jurisdiction and site; nothing else is read)
//!   → under the custody gate: the kill switch and the grant that covers the access
//!   → decide with Cedar, one decision per resource (field class, jurisdiction)
//!   → append the decision to the log (durable), then leave the custody gate
//!   → analytics and alerts
//!   → a `Permit` naming exactly what was allowed, or the logged 403/404
//!   → touch the vault, only through `Governed`, only with that `Permit`
//! ```
//!
//! Only `governed.rs` holds the vault. [`Governed`]'s data methods take a [`Permit`], whose
//! fields only this module and its children see and which only [`AppState::decide`] builds,
//! after its decision is in the log; a route that skipped
//! the decision has no vault to call, so bypassing it does not compile. The permit carries
//! what the decision allowed (field classes, a grant's field scope, jurisdictions), and the
//! vault methods here serve no more than that.
//!
//! The custody gate keeps one rule: **a decision is made against the custody state as of its
//! log index.** Decisions hold the gate shared from reading the kill switch and grants until
//! their entry is appended; custodian changes (`AppState::custody_change`) hold it exclusive
//! from their entry's append until the change is in memory. So an access logged after a
//! `grant-revoked` or `jurisdiction-suspended` entry was decided without that grant, or
//! suspended. (Gateways sharing one custody store take up each other's changes within a
//! second; the rule holds per gateway.)

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};

use crate::algorithms::release_in_force;
use crate::analytics::Observation;
use crate::auth::Authenticated;
use crate::entry::{self, AccessTarget, LoggedDecision};
use crate::http::context::access_context;
use crate::http::error::{ApiError, AppResult, ErrorCode};
use crate::http::tasks::blocking;
use crate::state::AppState;
use policy::{AccessRequest, Action, Decision, Resource};
use vault::{FieldClass, SubjectPlacement};

pub mod governed;
pub mod history;

pub use governed::{Governed, Permit};

/// Stands for "every jurisdiction" in the log's `subject_jurisdiction` of an entry whose
/// decisions each name their own (bulk actions, and ids that name no subject).
pub const EVERY_JURISDICTION: &str = "*";

/// Who asks to do what, in which circumstances.
pub struct Ask<'a> {
    pub who: &'a Authenticated,
    pub action: Action,
    pub context: policy::Context,
}

/// What a decision is about.
pub enum Scope<'a> {
    /// A subject as a whole (list, migrate, or register again).
    Subject(&'a SubjectPlacement),
    /// An id to register that names no subject yet, at the site its rule gives.
    NewSubject {
        id: &'a str,
        jurisdiction: &'a str,
        site: &'a str,
    },
    /// Every field class one collection of a subject declares (read, delete, export,
    /// erasure): the permit keeps the fields of the classes allowed.
    Declared {
        subject: &'a SubjectPlacement,
        collection: &'a str,
    },
    /// The field classes of the fields written to one collection of a subject.
    Collection {
        subject: &'a SubjectPlacement,
        collection: &'a str,
        fields: &'a [String],
        classes: Vec<FieldClass>,
    },
    /// The subjects of every jurisdiction (egress with a collection, scan without).
    Everywhere { collection: Option<&'a str> },
}

/// How a request's decisions add up.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// About one known subject: allowed as the action needs, or denied.
    One,
    /// About the subjects of every jurisdiction (egress, scan): served for the jurisdictions
    /// allowed, denied only when none is.
    Bulk,
    /// About an id that names no subject, decided for every jurisdiction: 404 only if
    /// allowed as the action needs whatever the jurisdiction, else denied.
    Unknown,
}

/// One resource to decide, before the kill switch is read.
struct Asked {
    class: Option<FieldClass>,
    resource: Resource,
}

/// Whether an action needs every decision of a request allowed, or is served in part (a
/// read shows the allowed field classes; egress and the scan the allowed jurisdictions).
fn needs_all(action: Action) -> bool {
    !matches!(action, Action::Read | Action::Egress | Action::Scan)
}

fn jurisdiction_of(resource: &Resource) -> &str {
    match resource {
        Resource::Subject {
            subject_jurisdiction,
            ..
        }
        | Resource::Data {
            subject_jurisdiction,
            ..
        } => subject_jurisdiction,
    }
}

fn set_suspended(resource: &mut Resource, value: bool) {
    match resource {
        Resource::Subject { suspended, .. } | Resource::Data { suspended, .. } => {
            *suspended = value
        }
    }
}

fn subject_resource(jurisdiction: &str, site: &str, site_jurisdiction: &str) -> Resource {
    Resource::Subject {
        subject_jurisdiction: jurisdiction.to_string(),
        site: site.to_string(),
        site_jurisdiction: site_jurisdiction.to_string(),
        suspended: false,
    }
}

impl AppState {
    /// What a request asks: its principal, action and the policy context from its headers
    /// (400 `invalid_header` when one is malformed).
    pub fn ask<'a>(
        &self,
        who: &'a Authenticated,
        action: Action,
        headers: &HeaderMap,
    ) -> AppResult<Ask<'a>> {
        Ok(Ask {
            who,
            action,
            context: access_context(headers, who)?,
        })
    }

    /// The subject `id` names, for a decision about it. An id that names no subject is
    /// decided too, as if it named a subject of every jurisdiction that has a residency rule
    /// (on each of `collections`, one logged entry each, or on the subject itself when there
    /// are none): the answer is 404 only when the access would be allowed whatever the
    /// subject's jurisdiction, and otherwise the same 403 a subject of a denying jurisdiction
    /// gets (of those, the one with the most determining policies: the jurisdiction a policy
    /// protects from this caller). So nobody learns that a subject a policy protects from
    /// them exists.
    pub async fn find_subject(
        &self,
        ask: &Ask<'_>,
        id: &str,
        collections: &[&str],
    ) -> AppResult<SubjectPlacement> {
        if let Some(found) = self.governed.placement(id).await? {
            return Ok(found);
        }
        let scopes: Vec<Option<&str>> = if collections.is_empty() {
            vec![None]
        } else {
            collections.iter().map(|c| Some(*c)).collect()
        };
        let mut index = None;
        for collection in scopes {
            let classes = match collection {
                Some(c) => declared_classes(self.governed.declared(c)?),
                None => vec![],
            };
            let asked = self.everywhere(self.governed.registrable(), collection, &classes);
            let target = AccessTarget {
                subject_pseudonym: Some(self.pseudonyms.pseudonym(id)),
                subject_jurisdiction: EVERY_JURISDICTION,
                site: "",
                site_jurisdiction: "",
                collection,
                approval_required: self.approval_required(collection),
                fields: &[],
            };
            let (logged, _, _) = self
                .decide_and_log(ask, Mode::Unknown, Some(id), &target, asked)
                .await?;
            index = Some(logged);
        }
        let error = ApiError::from(vault::VaultError::SubjectNotFound(id.to_string()));
        Err(match index {
            Some(index) => error.logged(index),
            None => error,
        })
    }

    /// [`Self::find_subject`] for an access to every collection (export, erasure).
    pub async fn find_subject_any_collection(
        &self,
        ask: &Ask<'_>,
        id: &str,
    ) -> AppResult<SubjectPlacement> {
        let names: Vec<&str> = self.config.collections.keys().map(String::as_str).collect();
        self.find_subject(ask, id, &names).await
    }

    /// Decides `ask` on `scope`, logs the decision, and answers with a [`Permit`] for what
    /// was allowed, or with the logged denial (403 `denied`, `suspended`, `purpose_required`,
    /// `approval_required`). If the log cannot be written: 503, nothing served or changed.
    pub async fn decide(&self, ask: Ask<'_>, scope: Scope<'_>) -> AppResult<Permit> {
        let names: Vec<String>;
        let scope = match scope {
            Scope::Declared {
                subject,
                collection,
            } => {
                let declared = self.governed.declared(collection)?;
                names = declared.keys().cloned().collect();
                Scope::Collection {
                    subject,
                    collection,
                    fields: &names,
                    classes: declared_classes(declared),
                }
            }
            other => other,
        };
        let mode = match scope {
            Scope::Everywhere { .. } => Mode::Bulk,
            _ => Mode::One,
        };
        let (subject_id, target, asked, collection) = match &scope {
            Scope::Declared { .. } => {
                return Err(ApiError::internal(
                    "a collection's classes were not resolved",
                ));
            }
            Scope::Subject(s) => (
                Some(s.id.clone()),
                self.subject_target(s, None, &[]),
                vec![Asked {
                    class: None,
                    resource: subject_resource(&s.jurisdiction, &s.site, &s.site_jurisdiction),
                }],
                None,
            ),
            Scope::NewSubject {
                id,
                jurisdiction,
                site,
            } => {
                let site_jurisdiction = self.governed.site_jurisdiction(site).unwrap_or_default();
                (
                    Some(id.to_string()),
                    AccessTarget {
                        subject_pseudonym: Some(self.pseudonyms.pseudonym(id)),
                        subject_jurisdiction: jurisdiction,
                        site,
                        site_jurisdiction,
                        collection: None,
                        approval_required: false,
                        fields: &[],
                    },
                    vec![Asked {
                        class: None,
                        resource: subject_resource(jurisdiction, site, site_jurisdiction),
                    }],
                    None,
                )
            }
            Scope::Collection {
                subject,
                collection,
                fields,
                classes,
            } => (
                Some(subject.id.clone()),
                self.subject_target(subject, Some(collection), fields),
                self.resources(
                    &subject.jurisdiction,
                    &subject.site,
                    &subject.site_jurisdiction,
                    Some(collection),
                    classes,
                ),
                Some(collection.to_string()),
            ),
            Scope::Everywhere { collection } => {
                let classes = match collection {
                    Some(_) => vec![FieldClass::Interoperable],
                    None => vec![],
                };
                let asked = self.everywhere(self.governed.jurisdictions(), *collection, &classes);
                (
                    None,
                    AccessTarget {
                        subject_pseudonym: None,
                        subject_jurisdiction: EVERY_JURISDICTION,
                        site: "",
                        site_jurisdiction: "",
                        collection: *collection,
                        approval_required: false,
                        fields: &[],
                    },
                    asked,
                    collection.map(str::to_string),
                )
            }
        };
        let (index, decided, grant) = self
            .decide_and_log(&ask, mode, subject_id.as_deref(), &target, asked)
            .await?;
        let field_scope = grant
            .as_ref()
            .filter(|g| !g.fields.is_empty() && target.approval_required)
            .map(|g| g.fields.clone());
        let mut classes = Vec::new();
        let mut jurisdictions = Vec::new();
        for d in &decided {
            if d.allowed() {
                if let Some(class) = d.class
                    && !classes.contains(&class)
                {
                    classes.push(class);
                }
                if !jurisdictions.contains(&d.jurisdiction) {
                    jurisdictions.push(d.jurisdiction.clone());
                }
            }
        }
        Ok(Permit {
            index,
            action: ask.action,
            subject: subject_id,
            collection,
            classes,
            field_scope,
            jurisdictions,
        })
    }

    /// Decides `ask` on every field class of every collection of `subject` (export and
    /// erasure concern all of a subject's data), one logged entry per collection. All must
    /// be allowed as the action needs; the first denial answers.
    pub async fn decide_every_collection(
        &self,
        ask: &Ask<'_>,
        subject: &SubjectPlacement,
    ) -> AppResult<Vec<Permit>> {
        let mut permits = Vec::new();
        for collection in self.config.collections.keys() {
            let scope = Scope::Declared {
                subject,
                collection,
            };
            let ask = Ask {
                who: ask.who,
                action: ask.action,
                context: ask.context.clone(),
            };
            permits.push(self.decide(ask, scope).await?);
        }
        Ok(permits)
    }

    fn subject_target<'a>(
        &self,
        subject: &'a SubjectPlacement,
        collection: Option<&'a str>,
        fields: &'a [String],
    ) -> AccessTarget<'a> {
        AccessTarget {
            subject_pseudonym: Some(self.pseudonyms.pseudonym(&subject.id)),
            subject_jurisdiction: &subject.jurisdiction,
            site: &subject.site,
            site_jurisdiction: &subject.site_jurisdiction,
            collection,
            approval_required: self.approval_required(collection),
            fields,
        }
    }

    fn approval_required(&self, collection: Option<&str>) -> bool {
        collection
            .and_then(|c| self.governed.collection(c))
            .is_some_and(|c| c.approval)
    }

    /// The resources of the subjects of each of `jurisdictions`, held anywhere.
    fn everywhere<'j>(
        &self,
        jurisdictions: impl Iterator<Item = &'j String>,
        collection: Option<&str>,
        classes: &[FieldClass],
    ) -> Vec<Asked> {
        jurisdictions
            .flat_map(|j| self.resources(j, "", "", collection, classes))
            .collect()
    }

    /// The resources of one jurisdiction's subject: one per field class of `collection`, or
    /// the subject itself.
    fn resources(
        &self,
        jurisdiction: &str,
        site: &str,
        site_jurisdiction: &str,
        collection: Option<&str>,
        classes: &[FieldClass],
    ) -> Vec<Asked> {
        let Some(collection) = collection else {
            return vec![Asked {
                class: None,
                resource: subject_resource(jurisdiction, site, site_jurisdiction),
            }];
        };
        let approval_required = self.approval_required(Some(collection));
        classes
            .iter()
            .map(|class| Asked {
                class: Some(*class),
                resource: Resource::Data {
                    subject_jurisdiction: jurisdiction.to_string(),
                    collection: collection.to_string(),
                    field_class: class.as_str().to_string(),
                    site: site.to_string(),
                    site_jurisdiction: site_jurisdiction.to_string(),
                    approval_required,
                    suspended: false,
                },
            })
            .collect()
    }

    /// The heart of the pipeline. Under the custody gate: reads the kill switch for each
    /// resource's jurisdiction and the grant covering the access, decides every resource
    /// with Cedar, appends one entry. Then tells the analytics, and answers the decisions,
    /// or the logged 403 when the request is not allowed as its action needs (for bulk
    /// actions: not allowed for any jurisdiction).
    async fn decide_and_log(
        &self,
        ask: &Ask<'_>,
        mode: Mode,
        subject_id: Option<&str>,
        target: &AccessTarget<'_>,
        asked: Vec<Asked>,
    ) -> AppResult<(u64, Vec<Decided>, Option<custody::AccessRequest>)> {
        let who = ask.who;
        let mut context = ask.context.clone();
        context.own_data = subject_id.is_some_and(|id| who.principal.id == id);
        let multi = mode != Mode::One;

        let gate = self.custody_gate.read().await;
        // The kill switch and grants below are only as fresh as the last look at the store.
        if !self
            .custody
            .reached_within(self.config.custody.unreachable_after)
        {
            return Err(ApiError::custody_unreachable());
        }
        // A release gets input only while it is the active one: checked here, under the gate,
        // so no `compute` decision is logged after the release's deactivation or replacement.
        if ask.action == Action::Compute && !release_in_force(&self.custody, &who.principal) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::NotActive,
                format!("{} is no longer the active release", who.public_id),
            ));
        }
        // A release's own input is covered by its signed release, never by a grant.
        let grant = subject_id
            .filter(|_| mode == Mode::One && ask.action != Action::Compute)
            .and_then(|id| self.grant_for(ask, id, target));
        if let Some(grant) = &grant {
            context.grant = grant_kind(grant).to_string();
        }
        let engine = self.policy();
        let decided: Vec<Decided> = asked
            .into_iter()
            .map(|mut a| {
                let jurisdiction = jurisdiction_of(&a.resource).to_string();
                let suspended = self.custody.is_suspended(&jurisdiction);
                set_suspended(&mut a.resource, suspended);
                let decision = engine.decide(&AccessRequest {
                    principal: who.principal.clone(),
                    action: ask.action,
                    resource: a.resource.clone(),
                    context: context.clone(),
                });
                Decided {
                    class: a.class,
                    jurisdiction,
                    suspended,
                    resource: a.resource,
                    decision,
                }
            })
            .collect();
        let logged: Vec<LoggedDecision<'_>> = decided
            .iter()
            .map(|d| LoggedDecision {
                class: d.class,
                jurisdiction: multi.then_some(d.jurisdiction.as_str()),
                suspended: d.suspended,
                decision: &d.decision,
            })
            .collect();
        // A custodian grant, or for a release's own input the custodian's signed release
        // (its id is the release's), so that a monitor re-decides with the same context.
        let used = match &grant {
            Some(g) => Some(entry::GrantUsed {
                id: &g.id,
                kind: grant_kind(g),
            }),
            None if context.grant == policy::GRANT_RELEASE => Some(entry::GrantUsed {
                id: &who.principal.id,
                kind: policy::GRANT_RELEASE,
            }),
            None => None,
        };
        let access = entry::Access {
            who,
            action: ask.action,
            target,
            decisions: &logged,
            context: &context,
            grant: used.as_ref(),
            policy_set: engine.policy_set_hash(),
        };
        let index = self.append(entry::access_entry(&access)).await?;
        drop(gate);
        self.observe(&access, index).await?;

        // The decisions that deny the request as its mode needs, if any: for an unknown
        // subject, those of the first jurisdiction that denies (so that the 403 is the very
        // one a subject of that jurisdiction gets).
        let denying: Vec<&Decided> = match mode {
            Mode::One if !allowed_as_needed(ask.action, decided.iter()) => decided.iter().collect(),
            Mode::Bulk if !decided.iter().any(Decided::allowed) => decided.iter().collect(),
            // Of the jurisdictions that deny, the one a policy forbids most explicitly
            // (most determining policies), so that the subjects a policy protects from this
            // caller are the ones an unknown id cannot be told apart from.
            Mode::Unknown => self
                .governed
                .registrable()
                .map(|j| {
                    decided
                        .iter()
                        .filter(|d| &d.jurisdiction == j)
                        .collect::<Vec<_>>()
                })
                .filter(|of| !allowed_as_needed(ask.action, of.iter().copied()))
                .max_by_key(|of| of.iter().map(|d| d.decision.policies.len()).sum::<usize>())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        if !denying.is_empty() {
            if denying.iter().all(|d| d.suspended) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    ErrorCode::Suspended,
                    format!(
                        "all access to {} subjects' data is suspended by the custodian's kill switch",
                        denying[0].jurisdiction
                    ),
                )
                .logged(index));
            }
            return Err(self.denial(&engine, ask, &context, &denying).logged(index));
        }
        Ok((index, decided, grant))
    }

    /// Tells the analytics about a logged decision, and raises the alerts it calls for (a
    /// restricted-country attempt, bulk access) before the request is answered.
    async fn observe(&self, access: &entry::Access<'_>, log_index: u64) -> AppResult<()> {
        let entry::Access {
            who,
            action,
            target,
            decisions,
            context,
            grant,
            ..
        } = *access;
        let outcome = entry::outcome(decisions);
        let classes = decisions
            .iter()
            .filter_map(|d| {
                Some(crate::analytics::class_verdict(
                    d.class?.as_str(),
                    d.jurisdiction,
                    d.decision.allowed && !d.suspended,
                ))
            })
            .collect();
        let decisions: Vec<Decision> = decisions.iter().map(|d| d.decision.clone()).collect();
        let observation = Observation {
            who,
            action: action.as_str(),
            subject_pseudonym: target.subject_pseudonym.as_deref().unwrap_or(""),
            subject_jurisdiction: target.subject_jurisdiction,
            site: target.site,
            collection: target.collection,
            outcome,
            policies: entry::deciding_policies(&decisions),
            purpose: &context.purpose,
            reason_code: &context.reason_code,
            grant: grant.map(|g| g.kind),
            classes,
            log_index,
        };
        let restricted = self
            .config
            .restricted_countries
            .contains(&who.principal.location);
        for alert in self.analytics.observe_access(&observation, restricted) {
            // On a shared log the fleet's rule counts bulk access (`fleet_view.rs`).
            if alert.kind == crate::analytics::AlertKind::BulkAccess
                && self.fleet.counts_bulk_access()
            {
                continue;
            }
            self.raise_alert(alert, Some(who)).await?;
        }
        Ok(())
    }

    /// The active custodian grant that covers this access, if any. A grant scoped to some
    /// fields covers a write only of those fields and never a delete (which touches them all);
    /// for a read or an export, the permit withholds the protected fields outside its scope.
    fn grant_for(
        &self,
        ask: &Ask<'_>,
        subject_id: &str,
        target: &AccessTarget<'_>,
    ) -> Option<custody::AccessRequest> {
        let action = ask.action;
        let find = |action: Action| {
            self.custody.find_grant(
                &ask.who.principal.id,
                action.as_str(),
                subject_id,
                target.collection,
                ask.context.time,
            )
        };
        // An export hands over what a read shows: a read grant covers it too, scoped alike.
        let grant = match action {
            Action::Export => find(Action::Export).or_else(|| find(Action::Read)),
            _ => find(action),
        }?;
        let fields_covered = grant.fields.is_empty()
            || match action {
                Action::Read | Action::Export => true,
                Action::Write => target.fields.iter().all(|f| grant.fields.contains(f)),
                _ => false,
            };
        fields_covered.then_some(grant)
    }

    /// The 403 for a denial: names the determining policies of the denied decisions, and
    /// says so plainly when the only thing missing is a purpose or a custodian grant (the
    /// same request with one would have been allowed).
    fn denial(
        &self,
        engine: &policy::PolicyEngine,
        ask: &Ask<'_>,
        context: &policy::Context,
        decided: &[&Decided],
    ) -> ApiError {
        let action = ask.action;
        let mut policies: Vec<String> = decided
            .iter()
            .filter(|d| !d.decision.allowed)
            .flat_map(|d| d.decision.policies.iter().cloned())
            .collect();
        policies.sort();
        policies.dedup();
        let had_errors = decided.iter().any(|d| !d.decision.errors.is_empty());
        if had_errors {
            tracing::warn!(principal = %ask.who.public_id, action = action.as_str(),
                "policy evaluation error; denied");
        }
        // Whether the access would pass with `context` instead.
        let allowed_with = |context: policy::Context| {
            let again: Vec<bool> = decided
                .iter()
                .map(|d| {
                    engine
                        .decide(&AccessRequest {
                            principal: ask.who.principal.clone(),
                            action,
                            resource: d.resource.clone(),
                            context: context.clone(),
                        })
                        .allowed
                        && !d.suspended
                })
                .collect();
            let allowed = again.iter().filter(|a| **a).count();
            allowed > 0 && (!needs_all(action) || allowed == again.len())
        };
        if context.purpose.is_empty() && !had_errors {
            let with_purpose = policy::Context {
                purpose: "(any stated purpose)".into(),
                ..context.clone()
            };
            if allowed_with(with_purpose) {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    ErrorCode::PurposeRequired,
                    "this access needs a stated purpose: set the `Sovereign-Purpose` header",
                )
                .with("policies", policies);
            }
        }
        if context.grant.is_empty() && !had_errors {
            let with_grant = policy::Context {
                grant: policy::GRANT_APPROVED.into(),
                ..context.clone()
            };
            if allowed_with(with_grant) {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    ErrorCode::ApprovalRequired,
                    "this access needs a custodian grant: file one with `sovereign access request` (POST /v1/access/requests) and wait for approval",
                )
                .with("policies", policies);
            }
        }
        let message = if had_errors {
            format!(
                "{} denied: a policy could not be evaluated, and errors deny",
                action.as_str()
            )
        } else if policies.is_empty() {
            format!("{} denied: no policy permits it", action.as_str())
        } else {
            format!(
                "{} denied by policy {}",
                action.as_str(),
                policies.join(", ")
            )
        };
        ApiError::denied(message, policies)
    }

    /// Appends the entry `entry` builds from the custody state in force, under the custody
    /// gate: no custodian change (a deactivation, the kill switch) lands between what the
    /// entry says of that state and its place in the log.
    pub async fn append_in_force(
        &self,
        entry: impl FnOnce(&custody::Custody) -> Vec<u8>,
    ) -> AppResult<u64> {
        let gate = self.custody_gate.read().await;
        if !self
            .custody
            .reached_within(self.config.custody.unreachable_after)
        {
            return Err(ApiError::custody_unreachable());
        }
        let index = self.append(entry(&self.custody)).await?;
        drop(gate);
        Ok(index)
    }

    /// Runs a custodian change (`f`, on a blocking thread, appending its entry through the
    /// custody crate) with the custody gate held exclusively, so that no decision in flight
    /// straddles it: see the module's rule.
    pub async fn custody_change<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&AppState) -> T + Send + 'static,
    ) -> AppResult<T> {
        let gate = self.custody_gate.clone().write_owned().await;
        let app = self.clone();
        let out = blocking(move || f(&app)).await;
        drop(gate);
        out
    }
}

/// One decision of a request, with what it was about.
struct Decided {
    class: Option<FieldClass>,
    jurisdiction: String,
    suspended: bool,
    resource: Resource,
    decision: Decision,
}

impl Decided {
    /// Allowed by Cedar, and not suspended by the kill switch.
    fn allowed(&self) -> bool {
        self.decision.allowed && !self.suspended
    }
}

/// Whether `decided` (one subject's decisions) allow the action as it needs: all of them,
/// or for a read at least one.
fn allowed_as_needed<'a>(action: Action, decided: impl Iterator<Item = &'a Decided>) -> bool {
    let (mut any, mut all, mut some) = (false, true, false);
    for d in decided {
        some = true;
        any |= d.allowed();
        all &= d.allowed();
    }
    some && if needs_all(action) { all } else { any }
}

pub(crate) fn declared_classes(declared: &BTreeMap<String, FieldClass>) -> Vec<FieldClass> {
    let mut classes: Vec<FieldClass> = declared.values().copied().collect();
    classes.sort();
    classes.dedup();
    classes
}

/// The value Cedar sees as `context.grant` for a grant.
fn grant_kind(grant: &custody::AccessRequest) -> &'static str {
    match grant.kind {
        custody::RequestKind::Request => policy::GRANT_APPROVED,
        custody::RequestKind::BreakGlass => policy::GRANT_BREAK_GLASS,
    }
}
