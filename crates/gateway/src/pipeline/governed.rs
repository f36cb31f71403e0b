//! The vault behind permits: [`Governed`] is the only holder of the vault, and its data
//! methods serve no more than a [`Permit`] allows. Permits are built only by the decision
//! step (`pipeline/mod.rs`), since their fields are visible to the pipeline alone.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::http::error::{ApiError, AppResult};
use crate::http::tasks::{blocking, store_read};
use crate::pseudonym::Pseudonymizer;
use policy::Action;
use vault::{FieldClass, SubjectPlacement};

/// The vault, reachable only through a [`Permit`] (and, for deciding, placement look-ups).
///
/// Code outside this module cannot reach the vault itself:
///
/// ```compile_fail
/// fn bypass(app: &gateway::AppState) {
///     let _ = &app.governed.vault; // error: field `vault` is private
/// }
/// ```
pub struct Governed {
    vault: Arc<vault::Vault>,
}

/// What one decided and logged access allows. Built only by `AppState::decide`, after the
/// decision is durably in the log; its fields are visible only inside `pipeline/`, so no
/// other code can make one up:
///
/// ```compile_fail
/// let forged = gateway::pipeline::Permit { index: 0 }; // error: fields are private
/// ```
#[derive(Debug)]
pub struct Permit {
    pub(super) index: u64,
    pub(super) action: Action,
    /// The subject the decision was about (none for bulk actions).
    pub(super) subject: Option<String>,
    /// The collection it was about (none for subject-level and scan decisions).
    pub(super) collection: Option<String>,
    /// The field classes allowed (collection-level actions).
    pub(super) classes: Vec<FieldClass>,
    /// Protected fields a field-scoped grant covers, where protected access needs a grant.
    pub(super) field_scope: Option<Vec<String>>,
    /// The jurisdictions allowed (bulk actions).
    pub(super) jurisdictions: Vec<String>,
}

impl Permit {
    /// The index of the log entry that records the decision.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Whether this permit lets `name` (of class `class`) be seen or written.
    fn allows_field(&self, name: &str, class: FieldClass) -> bool {
        self.classes.contains(&class)
            && (class != FieldClass::Protected
                || self
                    .field_scope
                    .as_ref()
                    .is_none_or(|scope| scope.iter().any(|f| f == name)))
    }

    fn allows_every_class(&self, declared: &BTreeMap<String, FieldClass>) -> bool {
        declared.values().all(|c| self.classes.contains(c)) && self.field_scope.is_none()
    }

    /// Refuses (500: a bug, not a client error) a permit that is not for this use.
    pub(super) fn require(
        &self,
        action: Action,
        subject: Option<&str>,
        collection: Option<&str>,
    ) -> AppResult<()> {
        if self.action == action
            && self.subject.as_deref() == subject
            && self.collection.as_deref() == collection
        {
            return Ok(());
        }
        Err(ApiError::internal(format!(
            "a permit for {} was used for {} (a bug: nothing was read or changed)",
            self.action.as_str(),
            action.as_str()
        ))
        .logged(self.index))
    }
}

impl Governed {
    pub fn new(vault: Arc<vault::Vault>) -> Governed {
        Governed { vault }
    }

    /// A collection's declared fields and their classes (configuration, not data).
    pub fn collection(&self, name: &str) -> Option<&vault::CollectionConfig> {
        self.vault.collection(name)
    }

    /// The jurisdictions of the configuration, each deciding bulk access to its subjects.
    pub fn jurisdictions(&self) -> impl Iterator<Item = &String> {
        self.vault.layout().jurisdictions.iter()
    }

    /// The jurisdiction of a configured site (none for an unknown one).
    pub(super) fn site_jurisdiction(&self, site: &str) -> Option<&str> {
        self.vault.site_jurisdiction(site)
    }

    /// The jurisdictions subjects can be registered in (those with a residency rule): an id
    /// that names no subject could name one of these.
    pub(super) fn registrable(&self) -> impl Iterator<Item = &String> {
        self.vault.layout().residency.keys()
    }

    /// Checks a record's fields against the collection; answers their classes.
    pub fn validate_fields(
        &self,
        collection: &str,
        fields: &Map<String, Value>,
    ) -> AppResult<Vec<FieldClass>> {
        Ok(self.vault.validate_fields(collection, fields)?)
    }

    /// The site a new subject of `jurisdiction` goes to (configuration, not data).
    pub fn placement_site(&self, jurisdiction: &str) -> AppResult<String> {
        Ok(self.vault.placement_site(jurisdiction)?.to_string())
    }

    /// The subject's placement (jurisdiction and site), which a decision needs; `None` when
    /// the id names no subject. For building a decision's scope only: answer nothing from it
    /// before the decision allows it.
    pub async fn placement(&self, id: &str) -> AppResult<Option<SubjectPlacement>> {
        vault::validate_id("subject id", id)?;
        // Remembered: no store read, so no trip to a blocking thread either.
        if let Some(remembered) = self.vault.remembered_placement(id) {
            return Ok(Some(remembered));
        }
        let vault = self.vault.clone();
        let owned = id.to_string();
        Ok(store_read(self.vault.reads_locally(), move || {
            vault.locate_subject(&owned)
        })
        .await??)
    }

    /// Registers the permitted subject.
    pub async fn register(
        &self,
        permit: &Permit,
        id: &str,
        jurisdiction: &str,
    ) -> AppResult<(SubjectPlacement, bool)> {
        permit.require(Action::Register, Some(id), None)?;
        let (vault, id, jurisdiction) =
            (self.vault.clone(), id.to_string(), jurisdiction.to_string());
        let index = permit.index;
        blocking(move || vault.register_subject(&id, &jurisdiction))
            .await?
            .map_err(|e| ApiError::from(e).logged(index))
    }

    /// The keys of the permitted subject's records.
    pub async fn list_records(&self, permit: &Permit) -> AppResult<Vec<vault::RecordKey>> {
        let subject = permit.subject.clone().unwrap_or_default();
        permit.require(Action::List, Some(&subject), None)?;
        let vault = self.vault.clone();
        let index = permit.index;
        blocking(move || vault.list_records(&subject))
            .await?
            .map_err(|e| ApiError::from(e).logged(index))
    }

    /// Writes a record whose every field the permit allows.
    pub async fn put_record(
        &self,
        permit: &Permit,
        collection: &str,
        key: &str,
        fields: Map<String, Value>,
    ) -> AppResult<String> {
        let subject = permit.subject.clone().unwrap_or_default();
        permit.require(Action::Write, Some(&subject), Some(collection))?;
        let declared = self.declared(collection)?;
        if let Some(name) = fields.keys().find(|name| {
            !declared
                .get(*name)
                .is_some_and(|c| permit.allows_field(name, *c))
        }) {
            return Err(ApiError::internal(format!(
                "field `{name}` is not covered by the write's decision (a bug: nothing was written)"
            ))
            .logged(permit.index));
        }
        let (vault, collection, key) =
            (self.vault.clone(), collection.to_string(), key.to_string());
        let index = permit.index;
        blocking(move || vault.put_record(&subject, &collection, &key, fields))
            .await?
            .map_err(|e| ApiError::from(e).logged(index))
    }

    /// Reads a record, keeping only the fields the permit allows; the others are named in
    /// the record's `withheld`. The custodian's key is unwrapped only when a protected field
    /// may be served.
    pub async fn get_record(
        &self,
        permit: &Permit,
        collection: &str,
        key: &str,
    ) -> AppResult<Option<vault::StoredRecord>> {
        let subject = permit.subject.clone().unwrap_or_default();
        permit.require(Action::Read, Some(&subject), Some(collection))?;
        self.read_allowed(permit, subject, collection, key).await
    }

    /// The subject's record, reduced to the fields `permit` allows (checked by the caller to
    /// be for this use); the custodian's key is unwrapped only when a protected field may be
    /// served.
    async fn read_allowed(
        &self,
        permit: &Permit,
        subject: String,
        collection: &str,
        key: &str,
    ) -> AppResult<Option<vault::StoredRecord>> {
        let declared = self.declared(collection)?;
        let protected = permit.classes.contains(&FieldClass::Protected);
        let (vault, coll, k) = (self.vault.clone(), collection.to_string(), key.to_string());
        let index = permit.index;
        let record = store_read(self.vault.reads_locally(), move || {
            if protected {
                vault.get_record(&subject, &coll, &k, vault::UnwrapReason::Access)
            } else {
                vault.get_record_interoperable(&subject, &coll, &k)
            }
        })
        .await?
        .map_err(|e| ApiError::from(e).logged(index))?;
        Ok(record.map(|record| filter_record(permit, declared, record)))
    }

    /// A released algorithm's input: for each `compute` permit with the fields its manifest
    /// names in that collection, those fields of the subject's record `key` that the permit
    /// allows (the others are never read out of the record), and which of them are protected.
    pub async fn algorithm_input(
        &self,
        permits: &[(Permit, Vec<String>)],
        key: &str,
    ) -> AppResult<algorithm::Input> {
        let mut input = algorithm::Input::default();
        for (permit, named) in permits {
            let subject = permit.subject.clone().unwrap_or_default();
            let collection = permit.collection.clone().unwrap_or_default();
            permit.require(Action::Compute, Some(&subject), Some(&collection))?;
            let declared = self.declared(&collection)?;
            let record = self.read_allowed(permit, subject, &collection, key).await?;
            let Some(record) = record else { continue };
            let mut fields = BTreeMap::new();
            for (name, value) in record.fields {
                if !named.contains(&name) {
                    continue;
                }
                if declared.get(&name) == Some(&FieldClass::Protected) {
                    input.protected.push((collection.clone(), name.clone()));
                }
                fields.insert(name, value);
            }
            input.fields.insert(collection, fields);
        }
        Ok(input)
    }

    /// Deletes a record of a collection whose every field class the permit allows.
    pub async fn delete_record(
        &self,
        permit: &Permit,
        collection: &str,
        key: &str,
    ) -> AppResult<bool> {
        let subject = permit.subject.clone().unwrap_or_default();
        permit.require(Action::Delete, Some(&subject), Some(collection))?;
        self.require_every_class(permit, collection)?;
        let (vault, coll, k) = (self.vault.clone(), collection.to_string(), key.to_string());
        let index = permit.index;
        blocking(move || vault.delete_record(&subject, &coll, &k))
            .await?
            .map_err(|e| ApiError::from(e).logged(index))
    }

    /// Erases a subject everywhere, with a delete permit for every field class of every
    /// collection.
    pub async fn erase(&self, permits: &[Permit]) -> AppResult<vault::Erasure> {
        let subject = self.every_collection(permits, Action::Delete)?;
        let vault = self.vault.clone();
        Ok(blocking(move || vault.erase_subject(&subject)).await??)
    }

    /// Every record of a subject, each reduced to the fields its collection's export permit
    /// allows: `[{collection, key, fields}]`.
    pub async fn export(&self, permits: &[Permit]) -> AppResult<Vec<Value>> {
        let subject = permits
            .first()
            .and_then(|p| p.subject.clone())
            .unwrap_or_default();
        let mut by_collection = BTreeMap::new();
        for permit in permits {
            let collection = permit.collection.clone().unwrap_or_default();
            permit.require(Action::Export, Some(&subject), Some(&collection))?;
            by_collection.insert(collection.clone(), (permit, self.declared(&collection)?));
        }
        let vault = self.vault.clone();
        let records = blocking(move || -> Result<_, vault::VaultError> {
            let mut out = Vec::new();
            for key in vault.list_records(&subject)? {
                out.push((
                    key.clone(),
                    vault.get_record(
                        &subject,
                        &key.collection,
                        &key.key,
                        vault::UnwrapReason::Export,
                    )?,
                ));
            }
            Ok(out)
        })
        .await??;
        let mut out = Vec::new();
        for (key, record) in records {
            let Some(record) = record else { continue };
            // A collection no permit covers is left out (none is: every collection was decided).
            let Some((permit, declared)) = by_collection.get(&key.collection) else {
                continue;
            };
            let record = filter_record(permit, declared, record);
            out.push(serde_json::json!({
                "collection": key.collection,
                "key": key.key,
                "fields": record.fields,
                "withheld": record.withheld,
            }));
        }
        Ok(out)
    }

    /// One page of interoperable rows of a collection, of the subjects of the jurisdictions
    /// the egress permit allows. Rows of other jurisdictions are skipped, but the cursor goes
    /// past them.
    #[allow(clippy::type_complexity)]
    pub async fn egress_page(
        &self,
        permit: &Permit,
        collection: &str,
        since: Option<vault::Cursor>,
        limit: usize,
    ) -> AppResult<(Vec<(String, vault::RecordRow)>, Option<vault::Cursor>)> {
        permit.require(Action::Egress, None, Some(collection))?;
        if !permit.classes.contains(&FieldClass::Interoperable) {
            return Err(ApiError::internal(
                "an egress permit without interoperable fields",
            ));
        }
        let vault = self.vault.clone();
        let coll = collection.to_string();
        let jurisdictions = permit.jurisdictions.clone();
        // When every jurisdiction is allowed, no row's subject needs looking up.
        let everywhere = self.jurisdictions().all(|j| jurisdictions.contains(j));
        let (rows, next) = blocking(move || -> Result<_, vault::VaultError> {
            let (rows, next) = vault.records_page(&coll, since.as_ref(), limit)?;
            let mut kept = Vec::with_capacity(rows.len());
            for (subject, _site, row) in rows {
                let allowed = everywhere
                    || vault
                        .find_subject(&subject)?
                        .is_some_and(|p| jurisdictions.contains(&p.jurisdiction));
                if allowed {
                    kept.push((subject, row));
                }
            }
            Ok((kept, next))
        })
        .await??;
        Ok((rows, next))
    }

    /// Every subject held at a site its rule does not allow, of the jurisdictions the scan
    /// permit allows.
    pub async fn misplaced(&self, permit: &Permit) -> AppResult<Vec<vault::Misplaced>> {
        permit.require(Action::Scan, None, None)?;
        let vault = self.vault.clone();
        let all = blocking(move || vault.misplaced()).await??;
        Ok(all
            .into_iter()
            .filter(|m| permit.jurisdictions.contains(&m.jurisdiction))
            .collect())
    }

    /// Moves the permitted subject from `from` to `to` (or the first site its rule allows).
    pub async fn migrate(
        &self,
        permit: &Permit,
        from: &str,
        to: Option<&str>,
    ) -> AppResult<vault::Migration> {
        let subject = permit.subject.clone().unwrap_or_default();
        permit.require(Action::Migrate, Some(&subject), None)?;
        let (vault, from, to) = (self.vault.clone(), from.to_string(), to.map(str::to_string));
        Ok(blocking(move || vault.migrate_subject(&subject, &from, to.as_deref())).await??)
    }

    /// The misplaced subject at `site` whose log pseudonym is `pseudonym`, as a scan shows it.
    pub async fn misplaced_by_pseudonym(
        &self,
        pseudonyms: &Pseudonymizer,
        site: &str,
        pseudonym: &str,
    ) -> AppResult<Option<String>> {
        let vault = self.vault.clone();
        let all = blocking(move || vault.misplaced()).await??;
        Ok(all
            .into_iter()
            .find(|m| m.site == site && pseudonyms.pseudonym(&m.subject) == pseudonym)
            .map(|m| m.subject))
    }

    /// A configured collection's declared fields; 404 `unknown_collection` otherwise.
    pub fn declared(&self, collection: &str) -> AppResult<&BTreeMap<String, FieldClass>> {
        self.vault
            .collection(collection)
            .map(|c| &c.fields)
            .ok_or_else(|| vault::VaultError::UnknownCollection(collection.to_string()).into())
    }

    fn require_every_class(&self, permit: &Permit, collection: &str) -> AppResult<()> {
        if permit.allows_every_class(self.declared(collection)?) {
            return Ok(());
        }
        Err(ApiError::internal(format!(
            "the {} permit does not cover every field of `{collection}` (a bug: nothing was changed)",
            permit.action.as_str()
        ))
        .logged(permit.index))
    }

    /// Checks that `permits` are `action` permits on one subject covering every field class
    /// of every collection; answers the subject's id.
    fn every_collection(&self, permits: &[Permit], action: Action) -> AppResult<String> {
        let subject = permits
            .first()
            .and_then(|p| p.subject.clone())
            .unwrap_or_default();
        for name in self.vault.layout().collections.keys() {
            let permit = permits
                .iter()
                .find(|p| p.collection.as_deref() == Some(name))
                .ok_or_else(|| {
                    ApiError::internal(format!("no {} permit for `{name}`", action.as_str()))
                })?;
            permit.require(action, Some(&subject), Some(name))?;
            self.require_every_class(permit, name)?;
        }
        Ok(subject)
    }
}

/// Keeps the fields `permit` allows; names the others under `withheld`.
fn filter_record(
    permit: &Permit,
    declared: &BTreeMap<String, FieldClass>,
    record: vault::StoredRecord,
) -> vault::StoredRecord {
    let mut fields = Map::new();
    let mut withheld = record.withheld;
    for (name, value) in record.fields {
        match declared.get(&name) {
            Some(class) if permit.allows_field(&name, *class) => {
                fields.insert(name, value);
            }
            _ => withheld.push(name),
        }
    }
    vault::StoredRecord {
        fields,
        withheld,
        ..record
    }
}
