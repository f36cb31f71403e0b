//! The storage of one site, behind the [`SiteStore`] trait.
//!
//! A store is deliberately dumb: it keeps what it is given and knows nothing of residency.
//! Deciding *where* a subject or record may go is the vault's job alone (see `placement`),
//! so a new backend cannot weaken the residency promise.
//!
//! The backends live beside the trait (`sqlite.rs`, `postgres.rs`); choosing one from a
//! site's `store` setting is `open.rs`'s job, so this module needs neither backend.

use std::path::PathBuf;

use serde_json::{Map, Value};

mod group_commit;
pub(crate) mod open;
pub(crate) mod postgres;
pub(crate) mod sqlite;

/// A data subject as one site holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectRow {
    pub id: String,
    pub jurisdiction: String,
}

/// Names one record of a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordKey {
    pub collection: String,
    pub key: String,
}

/// One record as one site holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordRow {
    pub subject: String,
    pub collection: String,
    pub key: String,
    pub fields: Map<String, Value>,
}

/// Fields as a store read them back: the text must be a JSON object. `what` names the
/// record and `store` the store in the error, whose message quotes no value (the parser's
/// own message could).
pub(crate) fn parse_stored_fields(
    text: &str,
    what: &str,
    store: PathBuf,
) -> Result<Map<String, Value>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        path: store,
        detail: format!(
            "the fields of {what} are not a JSON object (line {}, column {})",
            e.line(),
            e.column()
        ),
    })
}

impl RecordRow {
    /// The fields as a store keeps them, the text of a JSON object; `store` names the store
    /// in the error (whose message quotes no value).
    pub(crate) fn encode_fields(&self, store: PathBuf) -> Result<String, StoreError> {
        serde_json::to_string(&self.fields).map_err(|_| StoreError::Corrupt {
            path: store,
            detail: format!(
                "the fields of record {}/{}/{} cannot be encoded as JSON",
                self.subject, self.collection, self.key
            ),
        })
    }
}

/// A subject as one site holds it, with one of its records: what a governed read needs,
/// seen together.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldRecord {
    /// The subject's jurisdiction, as this site holds it.
    pub jurisdiction: String,
    /// The record's fields; `None` when the subject has no such record here.
    pub fields: Option<Map<String, Value>>,
}

impl HeldRecord {
    /// From what both backends' query answers: the subject's jurisdiction and the record's
    /// stored text, if the site holds the subject at all.
    pub(crate) fn from_row(
        row: Option<(String, Option<String>)>,
        parse: impl FnOnce(&str) -> Result<Map<String, Value>, StoreError>,
    ) -> Result<Option<HeldRecord>, StoreError> {
        let Some((jurisdiction, text)) = row else {
            return Ok(None);
        };
        Ok(Some(HeldRecord {
            jurisdiction,
            fields: text.as_deref().map(parse).transpose()?,
        }))
    }
}

/// One site's storage. Implementations must make every successful write durable before
/// returning, and every successful write visible to reads that start after it returns.
pub trait SiteStore: Send + Sync {
    /// Whether reads are served from local files (an embedded database), in microseconds
    /// when the pages are cached, rather than over a network: a caller may then run them
    /// where it is, instead of handing them to a thread that may block.
    fn reads_locally(&self) -> bool {
        false
    }
    fn get_subject(&self, id: &str) -> Result<Option<SubjectRow>, StoreError>;
    /// Inserts or replaces the subject.
    fn put_subject(&self, subject: &SubjectRow) -> Result<(), StoreError>;
    fn get_record(
        &self,
        subject: &str,
        collection: &str,
        key: &str,
    ) -> Result<Option<Map<String, Value>>, StoreError>;
    /// The record, and whether this site holds the subject at all: `None` when it holds no
    /// subject `subject`. Lets a reader that remembers where a subject is confirm it with the
    /// very read of the record. The backends answer it with one query, so the subject's
    /// presence and the record are seen together (and, for PostgreSQL, in one round trip);
    /// this default makes two reads.
    fn get_record_held(
        &self,
        subject: &str,
        collection: &str,
        key: &str,
    ) -> Result<Option<HeldRecord>, StoreError> {
        let Some(row) = self.get_subject(subject)? else {
            return Ok(None);
        };
        Ok(Some(HeldRecord {
            jurisdiction: row.jurisdiction,
            fields: self.get_record(subject, collection, key)?,
        }))
    }
    /// Inserts or replaces the record.
    fn put_record(&self, row: &RecordRow) -> Result<(), StoreError>;
    /// Inserts or replaces the record only if this site holds its subject with
    /// `jurisdiction`; whether it did. The counterpart of [`Self::get_record_held`] for a
    /// writer that remembers where the subject is. The backends check and write in one
    /// statement; this default checks first, then writes.
    fn put_record_held(&self, row: &RecordRow, jurisdiction: &str) -> Result<bool, StoreError> {
        match self.get_subject(&row.subject)? {
            Some(held) if held.jurisdiction == jurisdiction => {
                self.put_record(row)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
    /// Whether a record was deleted.
    fn delete_record(&self, subject: &str, collection: &str, key: &str)
    -> Result<bool, StoreError>;
    /// The subject's records, sorted by collection, then key.
    fn list_records(&self, subject: &str) -> Result<Vec<RecordKey>, StoreError>;
    /// Every subject, sorted by id (for scans and tests).
    fn subjects(&self) -> Result<Vec<SubjectRow>, StoreError>;
    /// Every record, sorted by subject, collection, key (for scans and tests).
    fn records(&self) -> Result<Vec<RecordRow>, StoreError>;
    /// Deletes the subject and every record of it, all or nothing. Whether anything was
    /// deleted (the subject or any record).
    fn delete_subject(&self, id: &str) -> Result<bool, StoreError>;
    /// Up to `limit` records of `collection`, sorted by subject, then key (compared as bytes),
    /// starting strictly after `after` = (subject, key), or at the start if `None`. Paging with
    /// the last row's (subject, key) visits every record once.
    fn records_after(
        &self,
        collection: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<RecordRow>, StoreError>;
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("SQLite store `{}`: {source}", .path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error("cannot create the folder of store `{}`: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A PostgreSQL store failed. `target` is the store's URL without password or parameters
    /// (`PostgresStore::target`); the message never holds the password.
    #[error("PostgreSQL store `{target}`: {}", pgconn::chain(.source.as_ref()))]
    Postgres {
        target: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// `path` is the file, or for a PostgreSQL store its `PostgresStore::target`.
    #[error(
        "store `{}` has schema version {found}, but this build only knows versions up to \
         {supported}: open it with a newer Sovereign",
        .path.display()
    )]
    UnsupportedSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },

    /// Stored data that cannot be read back (for example fields that are not a JSON object).
    /// `detail` never contains field values. `path` is as in [`StoreError::UnsupportedSchema`].
    #[error("store `{}` holds unreadable data: {detail}", .path.display())]
    Corrupt { path: PathBuf, detail: String },

    #[error("{0}")]
    NotImplemented(String),

    /// A store setting that names no store this build can open. The message never repeats
    /// the whole setting: a store URL may carry credentials.
    #[error("{0}")]
    InvalidUrl(String),
}
