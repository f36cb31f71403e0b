//! The vault: subjects, records and their placement across sites, protected fields encrypted
//! at rest, erasure, the residency scan and verified migration.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{VaultError, validate_id};
use crate::keys::{Envelope, Place, UnwrapReason};
use crate::layout::{
    CollectionConfig, FieldClass, Layout, LayoutProblem, StoreUrl, is_name, normalised_path,
    parse_store_url,
};
use crate::placement::{self, Pinned};
use crate::store::{RecordKey, RecordRow, SiteStore, SubjectRow, open_store, resolve_sqlite_path};

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

/// What [`Vault::erase_subject`] removed.
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

/// What [`Vault::migrate_subject`] did.
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

/// The steps of a migration, in order; see [`Vault::migrate_subject`].
const MIGRATION_STEPS: u8 = 5;

/// The largest page [`Vault::records_page`] returns.
pub const MAX_PAGE_SIZE: usize = 1000;

/// Where [`Vault::records_page`] goes on: after this record of this collection. Its text form
/// is opaque and URL-safe; pass it back as it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    collection: String,
    site: String,
    subject: String,
    key: String,
}

const CURSOR_VERSION: &str = "v1";
/// Far longer than any cursor this build writes; longer text is refused before decoding.
const MAX_CURSOR_LEN: usize = 1024;

impl Cursor {
    /// Reads a cursor's text form. Anything that is not a cursor this build wrote is
    /// [`VaultError::InvalidPage`].
    pub fn parse(text: &str) -> Result<Cursor, VaultError> {
        // The text is not repeated: it came from a client.
        let malformed = || {
            VaultError::InvalidPage(
                "the cursor is malformed: pass back exactly the `next` cursor a previous page \
                 returned, or none to start from the beginning"
                    .into(),
            )
        };
        if text.is_empty() || text.len() > MAX_CURSOR_LEN {
            return Err(malformed());
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| malformed())?;
        let text = String::from_utf8(bytes).map_err(|_| malformed())?;
        let parts: Vec<&str> = text.split('/').collect();
        let [version, collection, site, subject, key] = parts[..] else {
            return Err(malformed());
        };
        let valid = version == CURSOR_VERSION
            && is_name(collection)
            && is_name(site)
            && validate_id(SUBJECT_ID, subject).is_ok()
            && validate_id(RECORD_KEY, key).is_ok();
        if !valid {
            return Err(malformed());
        }
        Ok(Cursor {
            collection: collection.into(),
            site: site.into(),
            subject: subject.into(),
            key: key.into(),
        })
    }

    fn after(collection: &str, site: &str, row: &RecordRow) -> Cursor {
        Cursor {
            collection: collection.into(),
            site: site.into(),
            subject: row.subject.clone(),
            key: row.key.clone(),
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names and ids cannot contain '/', so the parts split back unambiguously.
        let plain = format!(
            "{CURSOR_VERSION}/{}/{}/{}/{}",
            self.collection, self.site, self.subject, self.key
        );
        f.write_str(&URL_SAFE_NO_PAD.encode(plain))
    }
}

impl std::str::FromStr for Cursor {
    type Err = VaultError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Cursor::parse(text)
    }
}

/// Subjects and records across all sites, placed by the residency rules.
pub struct Vault {
    layout: Layout,
    /// One store per declared site, by site name.
    stores: BTreeMap<String, Arc<dyn SiteStore>>,
    /// The custodian's keys; without them protected fields can be neither written nor read.
    envelope: Option<Envelope>,
    /// Held while a registration checks whether the subject exists and creates it, so two
    /// concurrent registrations cannot create one id in two jurisdictions (at two sites).
    registration: Mutex<()>,
    /// Reads and writes hold it shared; erasure, migration and legacy seeding hold it alone, so
    /// nothing is written or read between their steps (within this process).
    lifecycle: RwLock<()>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("layout", &self.layout)
            .field("sites", &self.stores.keys().collect::<Vec<_>>())
            .field("envelope", &self.envelope)
            .finish_non_exhaustive()
    }
}

const SUBJECT_ID: &str = "subject id";
const RECORD_KEY: &str = "record key";

/// A record's plaintext fields, named: (collection, key, fields).
type PlainRecord = (String, String, Map<String, Value>);

impl Vault {
    /// Validates `layout` and opens every site's store (relative SQLite paths are relative to
    /// `base_dir`), each with `readers_per_site` read connections.
    pub fn open(
        layout: Layout,
        base_dir: &Path,
        readers_per_site: usize,
    ) -> Result<Self, VaultError> {
        let mut problems = layout.validate();
        if problems.is_empty() {
            // `validate` compares store paths as written; here `a.db` and `/data/a.db` can be
            // seen to be the same file.
            let mut owner: BTreeMap<Vec<String>, &str> = BTreeMap::new();
            for (name, site) in &layout.sites {
                if let StoreUrl::Sqlite(path) = parse_store_url(&site.store) {
                    let resolved = resolve_sqlite_path(path, base_dir);
                    let identity = normalised_path(&resolved.to_string_lossy());
                    if let Some(other) = owner.insert(identity, name) {
                        problems.push(LayoutProblem {
                            key: format!("sites.{name}.store"),
                            problem: format!(
                                "site `{name}` uses the same store file as site `{other}`: each site needs its own"
                            ),
                        });
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(VaultError::InvalidLayout(problems));
        }
        let mut stores = BTreeMap::new();
        for (name, site) in &layout.sites {
            stores.insert(
                name.clone(),
                open_store(&site.store, base_dir, readers_per_site)?,
            );
        }
        Self::with_stores(layout, stores)
    }

    /// Builds a vault over stores opened elsewhere (tests, other backends). Every declared site
    /// needs a store, and every store a declared site.
    pub fn with_stores(
        layout: Layout,
        stores: BTreeMap<String, Arc<dyn SiteStore>>,
    ) -> Result<Self, VaultError> {
        let mut problems = layout.validate();
        for name in layout.sites.keys() {
            if !stores.contains_key(name) {
                problems.push(LayoutProblem {
                    key: format!("sites.{name}.store"),
                    problem: format!("no store was given for site `{name}`"),
                });
            }
        }
        for name in stores.keys() {
            if !layout.sites.contains_key(name) {
                problems.push(LayoutProblem {
                    key: format!("sites.{name}"),
                    problem: format!("a store was given for site `{name}`, which is not declared"),
                });
            }
        }
        if !problems.is_empty() {
            return Err(VaultError::InvalidLayout(problems));
        }
        Ok(Vault {
            layout,
            stores,
            envelope: None,
            registration: Mutex::new(()),
            lifecycle: RwLock::new(()),
        })
    }

    /// Gives the vault the custodian's keys, so that protected fields can be written (encrypted
    /// under the subject's data key for the site) and read (decrypted for a reason).
    pub fn with_envelope(mut self, envelope: Envelope) -> Vault {
        self.envelope = Some(envelope);
        self
    }

    /// The custodian's keys, if the vault has them.
    pub fn envelope(&self) -> Option<&Envelope> {
        self.envelope.as_ref()
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn collection(&self, name: &str) -> Option<&CollectionConfig> {
        self.layout.collections.get(name)
    }

    pub fn site_jurisdiction(&self, site: &str) -> Option<&str> {
        self.layout.sites.get(site).map(|s| s.jurisdiction.as_str())
    }

    /// The site where new subjects of `jurisdiction` are placed: the first of its rule.
    pub fn placement_site(&self, jurisdiction: &str) -> Result<&str, VaultError> {
        placement::placement_site(&self.layout, jurisdiction)
    }

    /// Where the subject is held. Every site is searched, since a legacy copy may sit at a
    /// site its rule does not allow; if it is held at several, an allowed one is preferred.
    pub fn find_subject(&self, id: &str) -> Result<Option<SubjectPlacement>, VaultError> {
        validate_id(SUBJECT_ID, id)?;
        let mut fallback = None;
        for (site, store) in &self.stores {
            let Some(row) = store.get_subject(id)? else {
                continue;
            };
            let found = SubjectPlacement {
                allowed: self.layout.allows(&row.jurisdiction, site),
                id: row.id,
                jurisdiction: row.jurisdiction,
                site: site.clone(),
                site_jurisdiction: self.site_jurisdiction(site).unwrap_or_default().to_string(),
            };
            if found.allowed {
                return Ok(Some(found));
            }
            fallback.get_or_insert(found);
        }
        Ok(fallback)
    }

    /// Registers a subject with its home jurisdiction at the preferred site of that
    /// jurisdiction's rule. Registering again with the same jurisdiction returns where it is
    /// held (`created` false), even a legacy copy at a site its rule does not allow (`allowed`
    /// false: moving it is a migration's job); with another jurisdiction it is a conflict.
    /// Registrations are serialised within this process only.
    pub fn register_subject(
        &self,
        id: &str,
        jurisdiction: &str,
    ) -> Result<(SubjectPlacement, bool), VaultError> {
        validate_id(SUBJECT_ID, id)?;
        // The request itself must be placeable, even when the subject already exists.
        self.placement_site(jurisdiction)?;

        let _shared = self.shared();
        let _registering = self
            .registration
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = self.find_subject(id)? {
            if existing.jurisdiction != jurisdiction {
                return Err(VaultError::SubjectConflict {
                    id: id.to_string(),
                    existing: existing.jurisdiction,
                    requested: jurisdiction.to_string(),
                });
            }
            return Ok((existing, false));
        }

        let pinned = Pinned::new_subject(&self.layout, &self.stores, id, jurisdiction)?;
        pinned.put_subject()?;
        let site = pinned.site();
        Ok((
            SubjectPlacement {
                id: id.to_string(),
                jurisdiction: jurisdiction.to_string(),
                site: site.to_string(),
                site_jurisdiction: self.site_jurisdiction(site).unwrap_or_default().to_string(),
                allowed: true,
            },
            true,
        ))
    }

    /// Checks that the collection is declared and every field is declared in it; returns the
    /// distinct classes of the fields present, sorted.
    pub fn validate_fields(
        &self,
        collection: &str,
        fields: &Map<String, Value>,
    ) -> Result<Vec<FieldClass>, VaultError> {
        let declared = self.declared_collection(collection)?;
        let mut classes = BTreeSet::new();
        for name in fields.keys() {
            let class = declared
                .fields
                .get(name)
                .ok_or_else(|| VaultError::UndeclaredField {
                    collection: collection.to_string(),
                    field: name.clone(),
                })?;
            classes.insert(*class);
        }
        Ok(classes.into_iter().collect())
    }

    /// Writes (inserts or replaces) a record of a registered subject at the site holding the
    /// subject, and returns that site. If the subject's rule does not allow that site, nothing
    /// is written. Protected fields are stored encrypted under the subject's data key for that
    /// site, made on first use; an existing key is unwrapped for [`UnwrapReason::Access`].
    pub fn put_record(
        &self,
        subject: &str,
        collection: &str,
        key: &str,
        fields: Map<String, Value>,
    ) -> Result<String, VaultError> {
        validate_id(SUBJECT_ID, subject)?;
        validate_id(RECORD_KEY, key)?;
        self.validate_fields(collection, &fields)?;
        let _shared = self.shared();
        let placement = self
            .find_subject(subject)?
            .ok_or_else(|| VaultError::SubjectNotFound(subject.to_string()))?;
        let pinned = Pinned::existing(&self.layout, &self.stores, &placement)?;
        // Sealed for the pinned site: the key and the associated data name where it is stored.
        let sealed = self.seal_fields(
            subject,
            pinned.site(),
            collection,
            key,
            fields,
            UnwrapReason::Access,
        )?;
        pinned.put_record(collection, key, sealed)?;
        Ok(pinned.site().to_string())
    }

    /// Reads a record from the site holding the subject, its protected fields decrypted with
    /// the data key unwrapped for `reason`. `None` if the record does not exist; an
    /// unregistered subject is [`VaultError::SubjectNotFound`]. A refused reason, a destroyed
    /// key or a value that does not decrypt is an error ([`VaultError::Key`]), never a value.
    /// A record without protected fields is read without unwrapping anything.
    pub fn get_record(
        &self,
        subject: &str,
        collection: &str,
        key: &str,
        reason: UnwrapReason,
    ) -> Result<Option<StoredRecord>, VaultError> {
        let _shared = self.shared();
        let Some(StoredRecord { site, fields, .. }) = self.read_stored(subject, collection, key)?
        else {
            return Ok(None);
        };
        let fields = self.open_fields(subject, &site, collection, key, fields, reason)?;
        Ok(Some(StoredRecord {
            site,
            fields,
            withheld: Vec::new(),
        }))
    }

    /// Reads only the interoperable fields of a record, from the site holding the subject.
    /// Never unwraps a key, so it works without the custodian's keys or allowed reasons.
    pub fn get_record_interoperable(
        &self,
        subject: &str,
        collection: &str,
        key: &str,
    ) -> Result<Option<StoredRecord>, VaultError> {
        let _shared = self.shared();
        let Some(StoredRecord { site, fields, .. }) = self.read_stored(subject, collection, key)?
        else {
            return Ok(None);
        };
        let withheld = fields
            .keys()
            .filter(|f| self.class_of(collection, f) != FieldClass::Interoperable)
            .cloned()
            .collect();
        let fields = self.interoperable_fields(collection, fields);
        Ok(Some(StoredRecord {
            site,
            fields,
            withheld,
        }))
    }

    /// A record as its site stores it (protected fields still encrypted), and that site.
    fn read_stored(
        &self,
        subject: &str,
        collection: &str,
        key: &str,
    ) -> Result<Option<StoredRecord>, VaultError> {
        validate_id(RECORD_KEY, key)?;
        self.declared_collection(collection)?;
        let placement = self.require_subject(subject)?;
        let stored = self
            .store(&placement.site)
            .get_record(subject, collection, key)?;
        Ok(stored.map(|fields| StoredRecord {
            site: placement.site,
            fields,
            withheld: Vec::new(),
        }))
    }

    /// Deletes a record at every site, so that no copy is left behind (a legacy site may hold
    /// one too). Whether any copy was deleted.
    pub fn delete_record(
        &self,
        subject: &str,
        collection: &str,
        key: &str,
    ) -> Result<bool, VaultError> {
        validate_id(RECORD_KEY, key)?;
        self.declared_collection(collection)?;
        let _shared = self.shared();
        self.require_subject(subject)?;
        let mut deleted = false;
        for store in self.stores.values() {
            deleted |= store.delete_record(subject, collection, key)?;
        }
        Ok(deleted)
    }

    /// The subject's records at the site holding it, sorted by collection, then key.
    pub fn list_records(&self, subject: &str) -> Result<Vec<RecordKey>, VaultError> {
        let _shared = self.shared();
        let placement = self.require_subject(subject)?;
        Ok(self.store(&placement.site).list_records(subject)?)
    }

    /// Erases a subject: deletes its records and its subject row at every site, then destroys
    /// every data key of the subject, so that its protected fields in any copy or backup of a
    /// site store can no longer be decrypted. Safe to repeat: a second run finds nothing to
    /// delete and destroys any key a first, interrupted run left. An unknown subject is not an
    /// error (nothing is erased). Without the custodian's keys, no key is destroyed.
    pub fn erase_subject(&self, id: &str) -> Result<Erasure, VaultError> {
        validate_id(SUBJECT_ID, id)?;
        let _exclusive = self.exclusive();
        let mut erasure = Erasure {
            sites: Vec::new(),
            records: 0,
            keys_destroyed: 0,
        };
        for (site, store) in &self.stores {
            let records = store.list_records(id)?.len() as u64;
            if store.delete_subject(id)? {
                erasure.sites.push(site.clone());
                erasure.records += records;
            }
        }
        // Keys last: until the data is gone everywhere, a run that stopped early can still be
        // repeated and finds the keys where it left them.
        if let Some(envelope) = &self.envelope {
            erasure.keys_destroyed = envelope.destroy_all(id)?;
        }
        Ok(erasure)
    }

    /// One page of a resumable walk over every site's records of `collection`, ordered by
    /// (site, subject, record key), with **only the interoperable fields** (nothing is
    /// unwrapped). Returns the rows as (subject, site, record) and the cursor to pass for the
    /// next page, `None` after the last. `limit` is 1 to [`MAX_PAGE_SIZE`].
    #[allow(clippy::type_complexity)]
    pub fn records_page(
        &self,
        collection: &str,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<(Vec<(String, String, RecordRow)>, Option<Cursor>), VaultError> {
        self.declared_collection(collection)?;
        if !(1..=MAX_PAGE_SIZE).contains(&limit) {
            return Err(VaultError::InvalidPage(format!(
                "the page size is {limit}: ask for 1 to {MAX_PAGE_SIZE} records"
            )));
        }
        if let Some(cursor) = after
            && cursor.collection != collection
        {
            return Err(VaultError::InvalidPage(format!(
                "the cursor was issued for collection `{}`, not `{collection}`: start again \
                 without a cursor",
                cursor.collection
            )));
        }
        let _shared = self.shared();
        // One row more than asked for tells whether another page follows.
        let mut rows: Vec<(&str, RecordRow)> = Vec::new();
        for (site, store) in &self.stores {
            let start = match after {
                Some(cursor) if site.as_str() < cursor.site.as_str() => continue,
                Some(cursor) if *site == cursor.site => {
                    Some((cursor.subject.as_str(), cursor.key.as_str()))
                }
                _ => None,
            };
            let wanted = limit + 1 - rows.len();
            for row in store.records_after(collection, start, wanted)? {
                rows.push((site, row));
            }
            if rows.len() > limit {
                break;
            }
        }
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last()
                .map(|(site, row)| Cursor::after(collection, site, row))
        } else {
            None
        };
        let page = rows
            .into_iter()
            .map(|(site, row)| {
                let fields = self.interoperable_fields(collection, row.fields);
                let row = RecordRow { fields, ..row };
                (row.subject.clone(), site.to_string(), row)
            })
            .collect();
        Ok((page, next))
    }

    /// Every subject held at a site its jurisdiction's residency rule does not allow (legacy
    /// data waiting for a migration), sorted by site, then subject.
    pub fn misplaced(&self) -> Result<Vec<Misplaced>, VaultError> {
        let _shared = self.shared();
        let mut found = Vec::new();
        for (site, store) in &self.stores {
            for row in store.subjects()? {
                if self.layout.allows(&row.jurisdiction, site) {
                    continue;
                }
                found.push(Misplaced {
                    site: site.clone(),
                    records: store.list_records(&row.id)?.len() as u64,
                    subject: row.id,
                    jurisdiction: row.jurisdiction,
                });
            }
        }
        Ok(found)
    }

    /// Moves a subject and its records from `from_site` to `to_site` (by default the first
    /// site its jurisdiction's rule allows; a site the rule does not allow is a
    /// [`VaultError::ResidencyViolation`]). Steps:
    ///
    /// 1. read the subject and its records at the source, decrypted for
    ///    [`UnwrapReason::Migration`];
    /// 2. write them at the destination through the placement check, encrypted under the
    ///    destination's own data key;
    /// 3. read them back and compare SHA-256 digests of their canonical plaintext; if they
    ///    differ, stop with [`VaultError::MigrationMismatch`], the source untouched;
    /// 4. delete the subject and its records at the source (one transaction);
    /// 5. destroy the source's data key, so any copy or backup of the source store is
    ///    unreadable for this subject (crypto-shredding).
    ///
    /// Each step is safe to repeat, so a run stopped anywhere and run again ends with one copy,
    /// at the destination, nothing lost. A subject already moved (nothing left at the source)
    /// gives `records` 0 and still has a leftover source key destroyed. While a migration is
    /// unfinished, finish it before the subject is written again: step 2 of a repeated run
    /// replaces the destination's records with the source's.
    pub fn migrate_subject(
        &self,
        id: &str,
        from_site: &str,
        to_site: Option<&str>,
    ) -> Result<Migration, VaultError> {
        self.migrate_subject_until(id, from_site, to_site, MIGRATION_STEPS)
    }

    /// [`Vault::migrate_subject`], stopping after step `stop_after` (1 to 5) as if the process
    /// had been killed there. For tests of resumption only.
    #[doc(hidden)]
    pub fn migrate_subject_until(
        &self,
        id: &str,
        from_site: &str,
        to_site: Option<&str>,
        stop_after: u8,
    ) -> Result<Migration, VaultError> {
        validate_id(SUBJECT_ID, id)?;
        let source = self.site_store(from_site)?;
        if let Some(to) = to_site {
            self.site_store(to)?;
        }
        let _exclusive = self.exclusive();

        // Whose rule applies: the subject as the source holds it or, when an earlier run
        // already moved it, as it is held now.
        let source_row = source.get_subject(id)?;
        let jurisdiction = match &source_row {
            Some(row) => row.jurisdiction.clone(),
            None => self.require_subject(id)?.jurisdiction,
        };
        let to = match to_site {
            Some(site) => site,
            None => self.placement_site(&jurisdiction)?,
        };
        if to == from_site {
            return Err(VaultError::SameSite {
                subject: id.into(),
                site: to.into(),
            });
        }
        let pinned = Pinned::chosen(&self.layout, &self.stores, id, &jurisdiction, to)?;
        let destination = self.site_store(to)?;

        // Step 1: everything at the source, in plaintext.
        let mut copied = Vec::new();
        for name in source.list_records(id)? {
            let Some(stored) = source.get_record(id, &name.collection, &name.key)? else {
                continue;
            };
            let fields = self.open_fields(
                id,
                from_site,
                &name.collection,
                &name.key,
                stored,
                UnwrapReason::Migration,
            )?;
            copied.push((name.collection, name.key, fields));
        }
        let source_digest = plaintext_digest(id, &jurisdiction, &copied);
        let mut migration = Migration {
            subject: id.into(),
            from: from_site.into(),
            to: to.into(),
            records: copied.len() as u64,
            destination_digest: source_digest.clone(),
            source_digest,
        };
        if stop_after <= 1 {
            return Ok(migration);
        }

        if source_row.is_some() || !copied.is_empty() {
            // Step 2: written at the destination, sealed for it.
            pinned.put_subject()?;
            for (collection, key, fields) in &copied {
                let sealed = self.seal_fields(
                    id,
                    to,
                    collection,
                    key,
                    fields.clone(),
                    UnwrapReason::Migration,
                )?;
                pinned.put_record(collection, key, sealed)?;
            }
            if stop_after <= 2 {
                return Ok(migration);
            }

            // Step 3: what the destination now gives back must be what the source held.
            let held_as = destination
                .get_subject(id)?
                .map(|row| row.jurisdiction)
                .unwrap_or_default();
            let mut read_back = Vec::new();
            for (collection, key, _) in &copied {
                if let Some(stored) = destination.get_record(id, collection, key)? {
                    let fields =
                        self.open_fields(id, to, collection, key, stored, UnwrapReason::Migration)?;
                    read_back.push((collection.clone(), key.clone(), fields));
                }
            }
            migration.destination_digest = plaintext_digest(id, &held_as, &read_back);
            if migration.destination_digest != migration.source_digest {
                return Err(VaultError::MigrationMismatch(Box::new(migration)));
            }
            if stop_after <= 3 {
                return Ok(migration);
            }

            // Step 4: the source copy goes, records and subject row together.
            source.delete_subject(id)?;
            if stop_after <= 4 {
                return Ok(migration);
            }
        }

        // Step 5: crypto-shred whatever copies of the source remain.
        if let Some(envelope) = &self.envelope {
            envelope.destroy(id, from_site)?;
        }
        Ok(migration)
    }

    /// Writes subjects as they were before residency was enforced: directly at `site`, even if
    /// the rule for `jurisdiction` does not allow it. This is the one write that bypasses the
    /// placement check, and it exists so that deployments, demonstrations and tests can hold
    /// the legacy data that [`Vault::misplaced`] finds and [`Vault::migrate_subject`] moves.
    /// Protected fields are still encrypted, under the subject's data key for `site`.
    /// `records` gives each subject's records as (collection, key, fields). Everything is
    /// checked before anything is written. Returns how many records were written.
    pub fn seed_legacy(
        &self,
        ids: &[String],
        jurisdiction: &str,
        site: &str,
        records: impl Fn(&str) -> Vec<PlainRecord>,
    ) -> Result<u64, VaultError> {
        if !self.layout.jurisdictions.contains(jurisdiction) {
            return Err(VaultError::UnknownJurisdiction(jurisdiction.into()));
        }
        let legacy = self.site_store(site)?;
        let mut planned = Vec::with_capacity(ids.len());
        for id in ids {
            validate_id(SUBJECT_ID, id)?;
            let subject_records = records(id);
            for (collection, key, fields) in &subject_records {
                validate_id(RECORD_KEY, key)?;
                self.validate_fields(collection, fields)?;
            }
            planned.push((id, subject_records));
        }

        let _exclusive = self.exclusive();
        for (id, _) in &planned {
            if let Some(held) = self.find_subject(id)? {
                if held.jurisdiction != jurisdiction {
                    return Err(VaultError::SubjectConflict {
                        id: id.to_string(),
                        existing: held.jurisdiction,
                        requested: jurisdiction.into(),
                    });
                }
                if held.site != site {
                    return Err(VaultError::AlreadyHeld {
                        subject: id.to_string(),
                        site: held.site,
                    });
                }
            }
        }
        let mut written = 0;
        for (id, subject_records) in planned {
            legacy.put_subject(&SubjectRow {
                id: id.clone(),
                jurisdiction: jurisdiction.into(),
            })?;
            for (collection, key, fields) in subject_records {
                let fields =
                    self.seal_fields(id, site, &collection, &key, fields, UnwrapReason::Access)?;
                legacy.put_record(&RecordRow {
                    subject: id.clone(),
                    collection,
                    key,
                    fields,
                })?;
                written += 1;
            }
        }
        Ok(written)
    }

    /// Every site's store, by site name (for scans and tests). Writing through these bypasses
    /// the residency check: only scans, migrations and tests should.
    pub fn stores(&self) -> impl Iterator<Item = (&str, &Arc<dyn SiteStore>)> {
        self.stores
            .iter()
            .map(|(name, store)| (name.as_str(), store))
    }

    fn declared_collection(&self, name: &str) -> Result<&CollectionConfig, VaultError> {
        self.collection(name)
            .ok_or_else(|| VaultError::UnknownCollection(name.to_string()))
    }

    fn require_subject(&self, id: &str) -> Result<SubjectPlacement, VaultError> {
        self.find_subject(id)?
            .ok_or_else(|| VaultError::SubjectNotFound(id.to_string()))
    }

    /// The store of a site found by `find_subject`, which only reports sites with a store.
    fn store(&self, site: &str) -> &Arc<dyn SiteStore> {
        &self.stores[site]
    }

    /// The store of a site named by a caller.
    fn site_store(&self, site: &str) -> Result<&Arc<dyn SiteStore>, VaultError> {
        self.stores
            .get(site)
            .ok_or_else(|| VaultError::UnknownSite(site.to_string()))
    }

    fn shared(&self) -> RwLockReadGuard<'_, ()> {
        // The lock guards no data, only ordering, so a poisoned one is still good.
        self.lifecycle
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.lifecycle
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The class a stored field is treated as. A field the configuration no longer declares
    /// counts as protected: nothing says it may be shown, so it is kept encrypted and only
    /// decrypted for a reason.
    fn class_of(&self, collection: &str, field: &str) -> FieldClass {
        self.collection(collection)
            .and_then(|c| c.fields.get(field))
            .copied()
            .unwrap_or(FieldClass::Protected)
    }

    fn has_protected(&self, collection: &str, fields: &Map<String, Value>) -> bool {
        fields
            .keys()
            .any(|field| self.class_of(collection, field) == FieldClass::Protected)
    }

    fn keys(&self) -> Result<&Envelope, VaultError> {
        self.envelope.as_ref().ok_or(VaultError::NoKeys)
    }

    /// Encrypts the protected fields of a record to be stored at `site`. No key is touched
    /// (or made) for a record without protected fields.
    fn seal_fields(
        &self,
        subject: &str,
        site: &str,
        collection: &str,
        key: &str,
        fields: Map<String, Value>,
        reason: UnwrapReason,
    ) -> Result<Map<String, Value>, VaultError> {
        if !self.has_protected(collection, &fields) {
            return Ok(fields);
        }
        let envelope = self.keys()?;
        let data_key = envelope.data_key_or_create(subject, site, reason)?;
        self.map_protected(subject, site, collection, key, fields, |place, value| {
            Ok(envelope.seal_field(&data_key, place, &value)?)
        })
    }

    /// Decrypts the protected fields of a record stored at `site`. No key is unwrapped for a
    /// record without protected fields.
    fn open_fields(
        &self,
        subject: &str,
        site: &str,
        collection: &str,
        key: &str,
        stored: Map<String, Value>,
        reason: UnwrapReason,
    ) -> Result<Map<String, Value>, VaultError> {
        if !self.has_protected(collection, &stored) {
            return Ok(stored);
        }
        let envelope = self.keys()?;
        let data_key = envelope.data_key(subject, site, reason)?;
        self.map_protected(subject, site, collection, key, stored, |place, value| {
            Ok(envelope.open_field(&data_key, place, &value)?)
        })
    }

    /// Passes each protected field of a record at `site` through `change` (sealing or
    /// opening it, bound to its place); interoperable fields pass unchanged.
    fn map_protected(
        &self,
        subject: &str,
        site: &str,
        collection: &str,
        key: &str,
        fields: Map<String, Value>,
        mut change: impl FnMut(&Place<'_>, Value) -> Result<Value, VaultError>,
    ) -> Result<Map<String, Value>, VaultError> {
        let mut changed = Map::new();
        for (field, value) in fields {
            let value = match self.class_of(collection, &field) {
                FieldClass::Interoperable => value,
                FieldClass::Protected => {
                    let place = Place {
                        subject,
                        site,
                        collection,
                        key,
                        field: &field,
                    };
                    change(&place, value)?
                }
            };
            changed.insert(field, value);
        }
        Ok(changed)
    }

    /// Only the fields declared interoperable in `collection`.
    fn interoperable_fields(
        &self,
        collection: &str,
        stored: Map<String, Value>,
    ) -> Map<String, Value> {
        stored
            .into_iter()
            .filter(|(field, _)| self.class_of(collection, field) == FieldClass::Interoperable)
            .collect()
    }
}

/// SHA-256 (hex) of a canonical serialisation of a subject's plaintext: its id, jurisdiction
/// and records sorted by collection, then key, each object's members sorted by name. The same
/// data always gives the same digest, whatever order it was read in.
fn plaintext_digest(subject: &str, jurisdiction: &str, records: &[PlainRecord]) -> String {
    let mut sorted: Vec<&PlainRecord> = records.iter().collect();
    sorted.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    // The serialisation holds protected plaintext, so it is zeroed when dropped.
    let mut text = Zeroizing::new(String::new());
    text.push_str("[\"sov:subject:v1\",");
    push_canonical(&Value::from(subject), &mut text);
    text.push(',');
    push_canonical(&Value::from(jurisdiction), &mut text);
    for (collection, key, fields) in sorted {
        text.push_str(",[");
        push_canonical(&Value::from(collection.as_str()), &mut text);
        text.push(',');
        push_canonical(&Value::from(key.as_str()), &mut text);
        text.push(',');
        push_canonical_object(fields, &mut text);
        text.push(']');
    }
    text.push(']');
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn push_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(members) => push_canonical_object(members, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_canonical(item, out);
            }
            out.push(']');
        }
        // Strings, numbers, booleans and null print the same way every time.
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn push_canonical_object(members: &Map<String, Value>, out: &mut String) {
    let mut names: Vec<&String> = members.keys().collect();
    names.sort();
    out.push('{');
    for (i, name) in names.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_canonical(&Value::from(name.as_str()), out);
        out.push(':');
        push_canonical(&members[name], out);
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    /// The residency promise rests on the vault writing only through `Pinned`; this keeps a
    /// later edit from calling a store's write method directly.
    /// The one exception is `seed_legacy`, which plants pre-residency data on purpose through
    /// a store it calls `legacy`.
    #[test]
    fn vault_writes_only_through_placement() {
        let source = include_str!("vault.rs");
        let code = source.split("#[cfg(test)]").next().unwrap();
        for call in [".put_subject(", ".put_record("] {
            for line in code.lines().filter(|line| line.contains(call)) {
                let line = line.trim_start();
                assert!(
                    line.starts_with("pinned.") || line.starts_with("legacy."),
                    "vault.rs writes without a placement check: {line}"
                );
            }
            assert_eq!(
                code.matches(&format!("legacy{call}")).count(),
                1,
                "only seed_legacy may write around the placement check ({call})"
            );
        }
        assert!(code.contains("pinned.put_subject()"));
        assert!(code.contains("pinned.put_record("));
        // ... and `legacy` is only ever the store of `seed_legacy`.
        let seed = code
            .split("pub fn seed_legacy(")
            .nth(1)
            .and_then(|rest| rest.split("\n    }\n").next())
            .unwrap();
        assert_eq!(code.matches("let legacy = ").count(), 1);
        assert!(seed.contains("let legacy = "));
        assert!(seed.contains("legacy.put_subject("));
        assert!(seed.contains("legacy.put_record("));
    }

    #[test]
    fn digests_are_canonical() {
        use serde_json::json;
        let fields = |v: serde_json::Value| v.as_object().unwrap().clone();
        let a = vec![
            (
                "profile".to_string(),
                "main".to_string(),
                fields(json!({"b": 1, "a": {"y": [1, {"q": 2, "p": 1}], "x": null}})),
            ),
            ("activity".to_string(), "1".to_string(), fields(json!({}))),
        ];
        let b = vec![a[1].clone(), a[0].clone()];
        assert_eq!(
            super::plaintext_digest("s", "US", &a),
            super::plaintext_digest("s", "US", &b)
        );
        assert_ne!(
            super::plaintext_digest("s", "US", &a),
            super::plaintext_digest("s", "SG", &a)
        );
        assert_ne!(
            super::plaintext_digest("s", "US", &a),
            super::plaintext_digest("s", "US", &a[..1])
        );
        assert_eq!(super::plaintext_digest("s", "US", &a).len(), 64);
    }

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let row = super::RecordRow {
            subject: "a:b.c-d_e".into(),
            collection: "profile".into(),
            key: "K.1".into(),
            fields: Default::default(),
        };
        let cursor = super::Cursor::after("profile", "us-east", &row);
        let text = cursor.to_string();
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{text}"
        );
        assert_eq!(super::Cursor::parse(&text).unwrap(), cursor);
        let forged = |plain: &str| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(plain)
        };
        for bad in [
            String::new(),
            "!!!".into(),
            "x".repeat(2000),
            forged("v2/profile/us-east/a/k"),
            forged("v1/profile/us-east/a"),
            forged("v1/profile/us-east/a/k/extra"),
            forged("v1/Profile/us-east/a/k"),
            forged("v1/profile/us-east/.a/k"),
            forged("v1/profile/us-east/a/"),
            format!("{text}="),
        ] {
            let err = super::Cursor::parse(&bad).unwrap_err();
            assert!(
                err.to_string().contains("cursor is malformed"),
                "{bad}: {err}"
            );
        }
    }
}
