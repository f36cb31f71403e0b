//! The log entry format (v1 and v2), as a monitor reads it: the one place that knows it.
//!
//! It is written from the published format, not shared with the gateway: it is the
//! monitor's independent reading of the log. Reading an entry takes two steps:
//!
//! - [`check_entry`] checks that an entry is a valid v1 or v2 entry, member by member, in one
//!   pass of the JSON parser (every entry of the log goes through it), and says its kind;
//! - the typed kinds below ([`Access`], [`AccessV2`], [`Event`]) give the members of an entry
//!   that passed the check the types replay and the report's tally read them with.
//!
//! | `kind` | since | what it records | typed as |
//! |---|---|---|---|
//! | `access` | v1 | one decided access: who, what, which subject (a pseudonym), the decisions, the policy set | [`Access`]; v2 also [`AccessV2`] |
//! | `config` | v1 | the gateway's start with a configuration and policy set | [`Head`] |
//! | `custody` | v2 | a custodian's control (`event`: access requests, grants, break-glass, activations, kill switch) | [`Event`] |
//! | `alert` | v2 | an alert the gateway raised, with its severity | [`Event`] |
//! | `egress`, `erasure`, `export`, `migration` | v2 | data leaving or moving: counts, digests, pseudonyms | [`Event`] |

mod check;

pub use check::{EntryInfo, check_entry};

use serde::Deserialize;
use serde_json::Value;

/// What every entry has.
#[derive(Deserialize)]
pub struct Head {
    pub kind: String,
    /// RFC 3339 UTC with milliseconds.
    pub time: String,
}

/// Who asked, as an access entry records the principal.
#[derive(Deserialize)]
pub struct Principal {
    pub id: String,
    pub entity: String,
    pub entity_country: String,
    pub location: String,
    pub clearance: Vec<String>,
    pub roles: Vec<String>,
    pub network_zone: String,
}

/// An access entry of any version, as far as counting it goes.
#[derive(Deserialize)]
pub struct Access {
    pub principal: Principal,
    pub action: String,
    pub subject_jurisdiction: String,
    pub outcome: String,
    /// v2 only; `Value` so that a v1 entry with an extra member of that name still reads.
    #[serde(default)]
    pub suspended: Value,
    /// v2 only, as `suspended`.
    #[serde(default)]
    pub grant: Value,
}

/// A v2 access entry: every attribute the gateway gave Cedar, so that it can be decided again.
#[derive(Deserialize)]
pub struct AccessV2 {
    pub principal: Principal,
    pub action: String,
    pub subject_jurisdiction: String,
    pub site: String,
    pub site_jurisdiction: String,
    pub collection: Option<String>,
    /// The fields a write named, or a release's input the manifest names.
    #[serde(default)]
    pub fields: Vec<String>,
    pub approval_required: bool,
    pub suspended: bool,
    pub outcome: String,
    pub decisions: Vec<Decision>,
    pub policy_set: String,
    pub purpose: String,
    pub reason_code: String,
    pub context_time: i64,
    pub grant: Option<Grant>,
    /// Absent from entries written before data subjects' own access was decided by policy.
    #[serde(default)]
    pub own_data: bool,
}

/// One decision of an access entry: one field class (or the subject) in one jurisdiction.
#[derive(Deserialize)]
pub struct Decision {
    pub field_class: Option<String>,
    /// On entries about every jurisdiction (`subject_jurisdiction` "*"): this decision's own
    /// jurisdiction and suspension.
    #[serde(default)]
    pub subject_jurisdiction: Option<String>,
    #[serde(default)]
    pub suspended: Option<bool>,
    pub allowed: bool,
    pub policies: Vec<String>,
}

/// The custodian's grant an access was decided under.
#[derive(Deserialize)]
pub struct Grant {
    pub kind: String,
}

/// A `custody`, `alert` or data event (`egress`, `erasure`, `export`, `migration`) entry;
/// `details` is any object (its members depend on the event).
#[derive(Deserialize)]
pub struct Event {
    /// The custody event, e.g. `policy-activated`.
    #[serde(default)]
    pub event: Option<String>,
    /// The alert's name.
    #[serde(default)]
    pub alert: Option<String>,
    #[serde(default)]
    pub severity: Option<String>,
    #[serde(default)]
    pub details: Value,
}
