//! The vault: subjects, records and their placement across sites.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Map, Value};

use crate::error::{VaultError, validate_id};
use crate::layout::{
    CollectionConfig, FieldClass, Layout, LayoutProblem, StoreUrl, normalised_path, parse_store_url,
};
use crate::placement::{self, Pinned};
use crate::store::{RecordKey, SiteStore, open_store, resolve_sqlite_path};

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
}

/// Subjects and records across all sites, placed by the residency rules.
pub struct Vault {
    layout: Layout,
    /// One store per declared site, by site name.
    stores: BTreeMap<String, Arc<dyn SiteStore>>,
    /// Held while a registration checks whether the subject exists and creates it, so two
    /// concurrent registrations cannot create one id in two jurisdictions (at two sites).
    registration: Mutex<()>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("layout", &self.layout)
            .field("sites", &self.stores.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

const SUBJECT_ID: &str = "subject id";
const RECORD_KEY: &str = "record key";

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
            registration: Mutex::new(()),
        })
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
    /// is written.
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
        let placement = self
            .find_subject(subject)?
            .ok_or_else(|| VaultError::SubjectNotFound(subject.to_string()))?;
        let pinned = Pinned::existing(&self.layout, &self.stores, &placement)?;
        pinned.put_record(collection, key, fields)?;
        Ok(pinned.site().to_string())
    }

    /// Reads a record from the site holding the subject. `None` if the record does not exist;
    /// an unregistered subject is [`VaultError::SubjectNotFound`].
    pub fn get_record(
        &self,
        subject: &str,
        collection: &str,
        key: &str,
    ) -> Result<Option<StoredRecord>, VaultError> {
        validate_id(RECORD_KEY, key)?;
        self.declared_collection(collection)?;
        let placement = self.require_subject(subject)?;
        let fields = self
            .store(&placement.site)
            .get_record(subject, collection, key)?;
        Ok(fields.map(|fields| StoredRecord {
            site: placement.site,
            fields,
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
        self.require_subject(subject)?;
        let mut deleted = false;
        for store in self.stores.values() {
            deleted |= store.delete_record(subject, collection, key)?;
        }
        Ok(deleted)
    }

    /// The subject's records at the site holding it, sorted by collection, then key.
    pub fn list_records(&self, subject: &str) -> Result<Vec<RecordKey>, VaultError> {
        let placement = self.require_subject(subject)?;
        Ok(self.store(&placement.site).list_records(subject)?)
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
}

#[cfg(test)]
mod tests {
    /// The residency promise rests on the vault writing only through `Pinned`; this keeps a
    /// later edit from calling a store's write method directly.
    #[test]
    fn vault_writes_only_through_placement() {
        let source = include_str!("vault.rs");
        let code = source.split("#[cfg(test)]").next().unwrap();
        for call in [".put_subject(", ".put_record("] {
            for line in code.lines().filter(|line| line.contains(call)) {
                assert!(
                    line.trim_start().starts_with("pinned."),
                    "vault.rs writes without a placement check: {line}"
                );
            }
        }
        assert!(code.contains("pinned.put_subject()"));
        assert!(code.contains("pinned.put_record("));
    }
}
