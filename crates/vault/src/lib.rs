//! `vault`: where a data subject's records may live, and the storage that keeps them.
//!
//! Every data subject has a home jurisdiction. Records are stored at *sites* (storage
//! locations, each with a jurisdiction, an operator and a store). A residency rule lists, for
//! each jurisdiction, the sites its subjects may be held at, in order of preference. Fields are
//! classified per collection as `protected` or `interoperable`.
//!
//! The crate's promise: **no code path puts a subject or a record at a site that the subject's
//! jurisdiction's residency rule does not allow.** One place decides placement: the
//! `placement` module, whose `Pinned` (a subject bound to an allowed site) can only be made
//! after [`Layout::allows`] says yes. [`Vault`] writes subjects and records only through it. A
//! subject found at a non-compliant site (a legacy copy) can still be read and deleted, but
//! nothing new is written there: such writes fail with [`VaultError::ResidencyViolation`].
//!
//! Storage sits behind [`SiteStore`], which knows nothing of residency. [`SqliteStore`] is the
//! embedded store; a PostgreSQL store will implement the same trait and pass the same
//! conformance suite (`conformance` module, feature `conformance`).
//!
//! The crate knows nothing of policy, HTTP or the transparency log. Its errors never carry a
//! record's field values, which are protected personal data.

mod error;
mod layout;
mod placement;
mod sqlite;
mod store;
mod vault;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use error::{VaultError, validate_id};
pub use layout::{CollectionConfig, FieldClass, Layout, LayoutProblem, SiteConfig};
pub use sqlite::SqliteStore;
pub use store::{RecordKey, RecordRow, SiteStore, StoreError, SubjectRow, open_store};
pub use vault::{StoredRecord, SubjectPlacement, Vault};
