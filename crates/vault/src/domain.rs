//! What the vault answers with: where a subject is held, a record read back, and the reports
//! of an erasure, the residency scan and a migration. Plain values, shared by the `Vault`
//! type's module, the placement check and the errors, so they depend on nothing in the crate.

use serde_json::{Map, Value};

/// Where a subject is held, and whether its residency rule allows that site.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SubjectPlacement {
    pub id: String,
    /// The subject's home jurisdiction.
    pub jurisdiction: String,
    pub site: String,
    pub site_jurisdiction: String,
    /// Whether `site` is in the residency rule of `jurisdiction`; false for a legacy copy at a
    /// non-compliant site.
    pub allowed: bool,
}

/// A record and the site it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    pub site: String,
    pub fields: Map<String, Value>,
    /// Names of the fields the record holds that this read left out (an interoperable-only
    /// read names the protected ones, so a caller can say what it withheld).
    pub withheld: Vec<String>,
}

/// What `Vault::erase_subject` removed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Erasure {
    /// The sites that held the subject or any of its records, sorted.
    pub sites: Vec<String>,
    /// Records deleted, over all sites.
    pub records: u64,
    /// Data keys destroyed: whatever they encrypted, in any copy or backup of a site store,
    /// can no longer be decrypted.
    pub keys_destroyed: u64,
}

/// A subject held at a site its jurisdiction's residency rule does not allow.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Misplaced {
    pub site: String,
    pub subject: String,
    pub jurisdiction: String,
    /// How many records of the subject that site holds.
    pub records: u64,
}

/// What `Vault::migrate_subject` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Migration {
    pub subject: String,
    pub from: String,
    pub to: String,
    /// Records copied by this run (0 when a previous run already moved them).
    pub records: u64,
    /// SHA-256 (hex) of the canonical plaintext of the subject and the records this run read
    /// at the source, and of the same records read back at the destination. Equal whenever
    /// the migration got past its check.
    pub source_digest: String,
    pub destination_digest: String,
}

/// A record's plaintext fields, named: (collection, key, fields).
pub(crate) type PlainRecord = (String, String, Map<String, Value>);
