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
//! [`Vault::misplaced`] lists such copies and [`Vault::migrate_subject`] moves them, verified
//! and resumable. [`Vault::seed_legacy`] is the one write around the placement check: it plants
//! such legacy data on purpose.
//!
//! Protected fields are encrypted at rest (`keys` module): each is stored as
//! `sov:enc:v1:…`, sealed under a data key of its subject at its site and bound to its place
//! (subject, site, collection, record key, field). Data keys are wrapped by the custodian's
//! [`KeyManager`] and kept in the custodian's [`DataKeyStore`] (SQLite, or PostgreSQL shared by
//! several gateways), apart from the site stores;
//! unwrapping names an [`UnwrapReason`] the manager must allow. Destroying a subject's keys
//! ([`Vault::erase_subject`], step 5 of [`Vault::migrate_subject`]) makes every copy of its
//! protected fields unreadable. Interoperable fields stay plain and are read without keys
//! ([`Vault::get_record_interoperable`], [`Vault::records_page`]).
//!
//! Storage sits behind [`SiteStore`], which knows nothing of residency. [`SqliteStore`] is the
//! embedded store and [`PostgresStore`] the server one; both pass the same conformance suite
//! (`conformance` module, feature `conformance`).
//!
//! The crate knows nothing of policy, HTTP or the transparency log. Its errors never carry a
//! record's field values, which are protected personal data.

//!
//! Modules, each using only those listed before it (no module uses one that uses it back):
//! `domain` (the values the vault answers with), `layout` (configuration), `store` (the
//! `SiteStore` trait and rows; its backends `store::sqlite`, `store::postgres`, and
//! `store::open`, which picks one from a `store` setting), `keys` (envelope encryption),
//! `error`, `placement` (the residency check) and `vault` (the `Vault` type and its jobs).

mod domain;
mod error;
mod keys;
mod layout;
mod placement;
mod store;
mod vault;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use domain::{Erasure, Migration, Misplaced, StoredRecord, SubjectPlacement};
pub use error::{VaultError, validate_id};
pub use keys::{
    DEFAULT_DATA_KEY_CACHE_ENTRIES, DEFAULT_DATA_KEY_CACHE_TTL, DataKeyStore, Deleted, Envelope,
    FieldPlace, KeyError, KeyManager, ListenerHandle, LocalKeyManager, UnwrapReason, WrappedKey,
};
pub use layout::{CollectionConfig, FieldClass, Layout, LayoutProblem, SiteConfig};
pub use store::open::open_store;
pub use store::postgres::PostgresStore;
pub use store::sqlite::SqliteStore;
pub use store::{HeldRecord, RecordKey, RecordRow, SiteStore, StoreError, SubjectRow};
pub use vault::paging::{Cursor, MAX_PAGE_SIZE};
pub use vault::{DEFAULT_PLACEMENT_CACHE_ENTRIES, Vault};
/// The type a [`KeyManager`] returns unwrapped data keys in (zeroed when dropped).
pub use zeroize::Zeroizing;
