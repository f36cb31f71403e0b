//! The custodian's controls, as durable state with its rules.
//!
//! - **Access requests** (`access.rs`): a principal asks for an action on a scope with a
//!   purpose, a reason code and a duration; custodian approvers approve N of M; nobody approves
//!   their own request or one from their own entity; pending requests expire; grants end by
//!   themselves and can be revoked. Break-glass uses are grants that start at once, end after a
//!   short window and wait for a custodian's review.
//! - **Policy sets**, the **invariant set** they must be proven against, **algorithm
//!   releases** and the **kill switch** (`signed.rs`): each change takes effect only with a
//!   custodian statement signed by enough custodian keys ([`statement`]); a policy set (or a
//!   new invariant set) takes effect only with passing [`Proofs`] too.
//!
//! Every change is appended to the transparency log before it is committed: the caller passes
//! a `log` function that appends an [`Event`] durably and returns its index; if it fails the
//! change is rolled back. Each record the change writes carries that index (`log_index`), so
//! that what is in force can be traced to the entry that recorded it. The crate knows nothing
//! of HTTP, Cedar or the log's format.
//!
//! State lives in one SQLite file, or in one PostgreSQL database that a fleet of gateways
//! shares (one JSON document per record, `store.rs`), and is held in memory too: custodian
//! actions are human-scale, and the request path reads grants and suspensions on every access
//! without touching the store. Every change catches up with the store first and commits only
//! if no other gateway committed meanwhile ([`CustodyError::Conflict`]).
//!
//! # The state verifies itself
//!
//! Whoever can write the store need not hold a custodian key, so the store is not trusted:
//! [`Custody::open`] and [`Custody::refresh`] check what they read against the configured
//! [`Keys`] and refuse state that does not verify with [`CustodyError::Unverified`] (`refresh`
//! keeps the state verified last in force, and checks again at every call until the store
//! verifies; meanwhile every change is refused, and the store does not count as reached, see
//! [`Custody::reached_within`]). Checked (`verify.rs`):
//!
//! - every record carries a log index, and is stored under its own key;
//! - the active invariant set and the active policy set: each was activated, is signed as the
//!   activation of exactly its hash by at least `policy_threshold` distinct configured keys,
//!   and is the last activated (by log index) of its kind; the policy set has passing proofs of
//!   exactly its hash against exactly the active invariant set, on its own record or on the
//!   invariant set's; once a set was activated, one must be in force;
//! - each kill-switch record: signed (`kill_switch_threshold`) as exactly its command,
//!   jurisdiction and serial;
//! - each active release: signed (`release_threshold`) as exactly its name, version and digest;
//!   at most one active version per name;
//! - each request that is or was a grant: approved by at least `approvals_required` (at least
//!   one) distinct approvers, none the requester nor of the requester's entity, for exactly the
//!   duration asked; a break-glass use needs no approval.
//!
//! What is not in force (proposed sets, submitted or retired releases, pending or denied
//! requests) needs no signature. What the crate cannot check, the caller (the gateway) must:
//!
//! - that a policy set's `hash` is the hash of its schema and policies, and an invariant set's
//!   the prover's canonical hash of its text (the signature names only the hash);
//! - what is not signed but only logged: approvals are approvers' names, proofs are the
//!   gateway's own results, and the indices are plain numbers, so a well-formed invented grant,
//!   fabricated proofs for a signed set, or an index edited to make an older set look newest
//!   verify here. Comparing a record with the log entry at its `log_index` shows them;
//! - what is gone: a deleted record (a request, a suspension) or a record replaced whole by an
//!   older legitimately signed one (an earlier kill-switch command of the same jurisdiction)
//!   leaves nothing here to check; only the log's history shows it.

mod access;
mod signed;
pub mod statement;
mod store;
mod verify;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tlog::note::Verifier;

pub use access::{AccessRequest, NewRequest, RequestKind, RequestRules, Status};
pub use signed::{
    InvariantSetRecord, PolicySetRecord, ProofResult, Proofs, Release, Runnable, Suspension,
    check_release_name,
};
use store::Store;
pub use store::{CHANGE_CHANNEL, ChangeListener, Location};

/// Reason codes an access request must give, modelled on cloud access-transparency
/// justifications: (code, what it means).
pub const REASON_CODES: &[(&str, &str)] = &[
    (
        "customer-initiated-support",
        "The data subject, or someone acting for them, asked for help (a support ticket).",
    ),
    (
        "legal-request",
        "A legal process requires the access: a court order, subpoena or a regulator's request.",
    ),
    (
        "incident-response",
        "Investigating or containing a security or reliability incident.",
    ),
    (
        "fraud-abuse-investigation",
        "Investigating fraud, abuse or a breach of the terms of service.",
    ),
    (
        "data-subject-request",
        "Fulfilling the subject's own access, portability, correction or erasure request.",
    ),
    (
        "service-maintenance",
        "Operating or repairing the service: restores, migrations, data repairs.",
    ),
    (
        "security-audit",
        "An authorised audit of controls by the custodian or a monitor.",
    ),
];

pub fn is_reason_code(code: &str) -> bool {
    REASON_CODES.iter().any(|(c, _)| *c == code)
}

/// Someone acting: a principal's id and employer entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub id: String,
    pub entity: String,
}

/// A custodian's decision on something: who, when (unix seconds), why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub by: String,
    pub entity: String,
    pub at: i64,
    pub comment: String,
}

/// The custodian keys and how many must sign each kind of statement.
#[derive(Debug, Clone)]
pub struct Keys {
    pub verifiers: Vec<Verifier>,
    pub policy_threshold: usize,
    pub release_threshold: usize,
    pub kill_switch_threshold: usize,
}

/// What is appended to the transparency log for each change.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    RequestCreated(&'a AccessRequest),
    /// One approval; `granted` when it met the threshold.
    RequestApproved {
        request: &'a AccessRequest,
        granted: bool,
    },
    RequestDenied(&'a AccessRequest),
    GrantRevoked(&'a AccessRequest),
    BreakGlassStarted(&'a AccessRequest),
    BreakGlassReviewed(&'a AccessRequest),
    PolicyProposed(&'a PolicySetRecord),
    PolicyActivated {
        set: &'a PolicySetRecord,
        previous: Option<&'a str>,
    },
    InvariantsProposed(&'a InvariantSetRecord),
    InvariantsActivated {
        set: &'a InvariantSetRecord,
        previous: Option<&'a str>,
    },
    AlgorithmSubmitted(&'a Release),
    AlgorithmActivated(&'a Release),
    AlgorithmFetched(&'a Release),
    AlgorithmDeactivated(&'a Release),
    KillSwitch(&'a Suspension),
}

/// Appends an event to the log durably, returning its index, or says why it cannot.
pub type LogFn<'a> = &'a (dyn Fn(Event<'_>) -> Result<u64, String> + Sync);

#[derive(Debug, thiserror::Error)]
pub enum CustodyError {
    #[error("no access request `{0}`")]
    UnknownRequest(String),
    #[error("access request `{id}` is {status}, not pending")]
    NotPending { id: String, status: Status },
    #[error("access request `{id}` is {status}; only an active grant can be revoked")]
    NotActive { id: String, status: Status },
    #[error("`{0}` is a break-glass use, not a request to approve")]
    NotARequest(String),
    #[error("`{0}` is not a break-glass use")]
    NotBreakGlass(String),
    #[error("break-glass use `{0}` was already reviewed")]
    AlreadyReviewed(String),
    #[error("nobody may approve their own access request")]
    SelfApproval,
    #[error("an approver from the requester's own entity (`{0}`) may not approve it")]
    SameEntity(String),
    #[error("`{0}` has already approved this request")]
    AlreadyApproved(String),
    #[error("invalid access request: {0}")]
    Invalid(String),
    #[error("no policy set with hash `{0}`")]
    UnknownPolicySet(String),
    #[error("no invariant set with hash `{0}`")]
    UnknownInvariantSet(String),
    #[error("no algorithm `{name}` version `{version}`")]
    UnknownRelease { name: String, version: String },
    #[error(
        "algorithm `{name}` version `{version}` is already stored with digest {existing}; a version's artifact never changes"
    )]
    VersionExists {
        name: String,
        version: String,
        existing: String,
    },
    #[error(
        "the stored artifact of `{name}` `{version}` no longer matches its digest {expected} (it hashes to {actual})"
    )]
    DigestMismatch {
        name: String,
        version: String,
        expected: String,
        actual: String,
    },
    #[error("not proven: {0}")]
    NotProven(String),
    #[error("the statement does not fit this command: {0}")]
    WrongStatement(String),
    #[error(
        "kill-switch serial {got} for {jurisdiction} is not above the last applied serial {last}"
    )]
    StaleSerial {
        jurisdiction: String,
        got: u64,
        last: u64,
    },
    #[error(transparent)]
    Statement(#[from] statement::StatementError),
    #[error("the transparency log cannot be written ({0}); nothing was changed")]
    LogUnavailable(String),
    /// Another gateway changed the custody state while this change was being made; nothing
    /// was written, and the state is read again at the next change or refresh.
    #[error(
        "another gateway changed the custody state at the same time; nothing was changed: try again"
    )]
    Conflict,
    /// This gateway's keys are not the ones the first gateway on this custody store recorded.
    #[error(
        "this gateway's keys differ from those of the fleet sharing this custody store \
         (recorded by the first gateway that started on it): {}; copy them from a gateway of \
         the fleet, or point this one at its own stores",
        .0.join(", ")
    )]
    FleetMismatch(Vec<String>),
    #[error("custody store {path}: {problem}")]
    Store { path: PathBuf, problem: String },
    /// The stored state is not what the custodian authorised: a record in force without the
    /// signature, proofs, approvals or log index it needs (see the crate's documentation).
    #[error("the custody state does not verify: {what}: {problem}")]
    Unverified { what: String, problem: String },
}

/// The in-memory copy of everything committed.
#[derive(Default)]
struct State {
    requests: BTreeMap<String, AccessRequest>,
    /// Principal id → ids of its requests that were ever granted: the request path looks up
    /// grants on every access, so it must not scan every request.
    granted: HashMap<String, Vec<String>>,
    policy_sets: BTreeMap<String, PolicySetRecord>,
    active_policy: Option<String>,
    invariant_sets: BTreeMap<String, InvariantSetRecord>,
    active_invariants: Option<String>,
    releases: BTreeMap<(String, String), Release>,
    suspensions: BTreeMap<String, Suspension>,
}

impl State {
    fn put_request(&mut self, request: AccessRequest) {
        if request.starts_at.is_some() {
            let ids = self
                .granted
                .entry(request.requester.id.clone())
                .or_default();
            if !ids.contains(&request.id) {
                ids.push(request.id.clone());
            }
        }
        self.requests.insert(request.id.clone(), request);
    }
}

/// The custodian's state: open once per gateway, share in an `Arc`.
pub struct Custody {
    /// Held for the whole of each change, so changes are checked and applied one at a time.
    store: Mutex<Store>,
    state: RwLock<State>,
    keys: Keys,
    ledger: Arc<dyn Ledger>,
    /// When the store was last reached and what it held verified (or was this process's own
    /// commit), in milliseconds since `opened`.
    reached_ms: AtomicU64,
    /// Set when another gateway's changes were taken up; see [`Custody::take_changed`].
    changed: AtomicBool,
    opened: Instant,
}

/// A change in force, as the custody store holds it, for a [`Ledger`] to compare with the
/// log entry at its `log_index`.
#[derive(Debug, Clone, Copy)]
pub enum InForce<'a> {
    /// The active policy set.
    PolicySet(&'a PolicySetRecord),
    /// The active invariant set.
    InvariantSet(&'a InvariantSetRecord),
    /// A jurisdiction's kill-switch state (suspended or lifted).
    Suspension(&'a Suspension),
    /// An active algorithm release.
    Release(&'a Release),
    /// An access request that is or was granted (or a break-glass use).
    Grant(&'a AccessRequest),
}

/// What the transparency log says: whether the entry at a record's log index is the event
/// that put it in force. The custody store cannot sign approvals, proofs or indices, and can
/// hold whatever someone with write access put there; the log is append-only and monitored.
/// The gateway supplies this (it knows the entry format); [`Ledger`] for `()` trusts the store.
pub trait Ledger: Send + Sync {
    fn check(&self, change: InForce<'_>) -> Result<(), String>;
}

impl Ledger for () {
    fn check(&self, _change: InForce<'_>) -> Result<(), String> {
        Ok(())
    }
}

impl Custody {
    /// Opens (creating if needed) the custody database at `path`; algorithm artifacts are kept
    /// as files under `artifacts`, named by their SHA-256.
    ///
    /// The stored state is verified first (see the crate's documentation); state that does not
    /// verify is refused with [`CustodyError::Unverified`].
    pub fn open(path: &Path, artifacts: &Path, keys: Keys) -> Result<Custody, CustodyError> {
        Custody::open_with_ledger(path, artifacts, keys, Arc::new(()))
    }

    /// [`Custody::open`], comparing every change in force with the log through `ledger`, at
    /// open and at every refresh.
    pub fn open_with_ledger(
        path: &Path,
        artifacts: &Path,
        keys: Keys,
        ledger: Arc<dyn Ledger>,
    ) -> Result<Custody, CustodyError> {
        let location = Location::Sqlite {
            path: path.to_path_buf(),
            artifacts: artifacts.to_path_buf(),
        };
        Custody::open_at(&location, keys, ledger)
    }

    /// Opens the custody state at `location`: a SQLite file, or a PostgreSQL database that
    /// several gateways share. Verified as [`Custody::open`] says.
    pub fn open_at(
        location: &Location,
        keys: Keys,
        ledger: Arc<dyn Ledger>,
    ) -> Result<Custody, CustodyError> {
        let mut store = Store::open(location)?;
        let (version, state) = store.load()?;
        verify::check(&state, &keys, ledger.as_ref())?;
        store.verified_version = Some(version);
        Ok(Custody {
            store: Mutex::new(store),
            state: RwLock::new(state),
            keys,
            ledger,
            reached_ms: AtomicU64::new(0),
            changed: AtomicBool::new(false),
            opened: Instant::now(),
        })
    }

    /// On a PostgreSQL store, starts a thread that calls `on_change` as soon as another gateway
    /// commits a change (and after any reconnection, as changes may have been missed), so that
    /// the caller takes it up with [`Custody::refresh`] at once. `None` on SQLite: there, and
    /// as a safety net everywhere, the caller refreshes periodically.
    pub fn listen_for_changes(
        &self,
        on_change: impl Fn() + Send + 'static,
    ) -> Result<Option<ChangeListener>, CustodyError> {
        self.lock_store().listen(Box::new(on_change))
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Takes up what another process (a second gateway on the same data folder) committed to
    /// the custody store since this one last looked: grants, policy activations, releases, the
    /// kill switch. Answers whether anything changed. Cheap when nothing did.
    ///
    /// What it reads is verified as [`Custody::open`] verifies it. State that does not verify
    /// is refused with [`CustodyError::Unverified`] and the state verified last stays in force
    /// (this process's own changes since included). Such state is read and checked again at
    /// every refresh, so it is reported each time until it is repaired, and taken up then.
    pub fn refresh(&self) -> Result<bool, CustodyError> {
        let mut store = self.lock_store();
        self.catch_up(&mut store)
    }

    /// Whether there is anything for [`Custody::refresh`] and [`Custody::take_changed`] to
    /// take up: another gateway committed since this one last looked (one cheap query), or a
    /// change made here took up another's. Meant to be asked before taking whatever lock
    /// `refresh` is called under, so that a store that is slow to answer holds up nothing
    /// else; a store that cannot be answered is not counted as reached.
    pub fn has_news(&self) -> Result<bool, CustodyError> {
        if self.changed.load(Ordering::Acquire) {
            return Ok(true);
        }
        let mut store = self.lock_store();
        let version = store.version()?;
        if store.verified_version == Some(version) {
            self.reached();
            return Ok(false);
        }
        Ok(true)
    }

    /// Loads and verifies what the store holds if another gateway changed it since this one
    /// last looked; whether it did.
    fn catch_up(&self, store: &mut Store) -> Result<bool, CustodyError> {
        let version = store.version()?;
        // This process's own commits are in memory already.
        if store.verified_version == Some(version) {
            self.reached();
            return Ok(false);
        }
        let (version, state) = store.load()?;
        verify::check(&state, &self.keys, self.ledger.as_ref())?;
        store.verified_version = Some(version);
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = state;
        self.changed.store(true, Ordering::Release);
        self.reached();
        Ok(true)
    }

    /// The store, held for one change, with the state in memory caught up with it: what the
    /// change checks is what the store holds. A change made meanwhile by another gateway is
    /// caught when this one commits ([`CustodyError::Conflict`]). While the store holds state
    /// that does not verify, every change is refused: it would be checked against state older
    /// than the store's and could undo a later change (an older kill-switch serial accepted
    /// over a newer one); the store is repaired by hand, or restored.
    fn lock_current(&self) -> Result<MutexGuard<'_, Store>, CustodyError> {
        let mut store = self.lock_store();
        self.catch_up(&mut store)?;
        Ok(store)
    }

    /// Whether the state in memory was replaced by another gateway's changes since the last
    /// call (taken up by [`Custody::refresh`] or by a change made here, which catches up
    /// first): the caller then rebuilds what it derives from the state, such as the policy
    /// engine in force.
    pub fn take_changed(&self) -> bool {
        self.changed.swap(false, Ordering::AcqRel)
    }

    /// Checks that this gateway holds the keys every gateway sharing the store at `location`
    /// must hold: `identity` maps each key's name to a fingerprint (never the key). The first
    /// gateway to start on the store records its identity; every later one must match it,
    /// else [`CustodyError::FleetMismatch`] names what differs. Needs no verified state, so
    /// that it can run before anything else is opened.
    pub fn check_fleet_identity_at(
        location: &Location,
        identity: &BTreeMap<String, String>,
    ) -> Result<(), CustodyError> {
        let ours = serde_json::to_string(identity).expect("a map of strings serialises");
        let recorded = Store::open(location)?.meta_or_insert(FLEET_IDENTITY, &ours)?;
        compare_identities(identity, &recorded)
    }

    /// Records `identity` as the fleet's, replacing the one recorded: after the fleet's keys
    /// were changed on purpose (every gateway must then be given the new ones).
    pub fn replace_fleet_identity_at(
        location: &Location,
        identity: &BTreeMap<String, String>,
    ) -> Result<(), CustodyError> {
        let ours = serde_json::to_string(identity).expect("a map of strings serialises");
        Store::open(location)?.meta_set(FLEET_IDENTITY, &ours)
    }

    /// Whether the store was reached within `max`, by a look for changes or a change, and
    /// what it held verified. A gateway that cannot reach a shared store, or cannot take up
    /// what is there, cannot know of a kill switch or revocation made through another one, so
    /// it stops deciding after a while.
    pub fn reached_within(&self, max: Duration) -> bool {
        let reached = Duration::from_millis(self.reached_ms.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(reached) <= max
    }

    fn reached(&self) {
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.reached_ms.fetch_max(now, Ordering::Relaxed);
    }

    fn lock_store(&self) -> MutexGuard<'_, Store> {
        // A panic mid-change leaves the database rolled back and the memory unchanged.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.write().unwrap_or_else(|p| p.into_inner()))
    }
}

/// What differs between this gateway's identity and the recorded one, as an error.
fn compare_identities(
    identity: &BTreeMap<String, String>,
    recorded: &str,
) -> Result<(), CustodyError> {
    let recorded: BTreeMap<String, String> = serde_json::from_str(recorded)
        .map_err(|e| CustodyError::Invalid(format!("the recorded fleet identity: {e}")))?;
    let differing: Vec<String> = identity
        .keys()
        .chain(recorded.keys())
        .filter(|name| identity.get(*name) != recorded.get(*name))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if differing.is_empty() {
        Ok(())
    } else {
        Err(CustodyError::FleetMismatch(differing))
    }
}

/// The `meta` key of the fleet's key fingerprints ([`Custody::check_fleet_identity_at`]).
const FLEET_IDENTITY: &str = "fleet-identity";

/// A fresh random id with a prefix, e.g. `ar-3f9c...`.
fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    format!("{prefix}-{}", hex::encode(bytes))
}
