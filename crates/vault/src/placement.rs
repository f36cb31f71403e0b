//! The one place that decides where a subject and its records may be written.
//!
//! A [`Pinned`] is a subject bound to a site that its jurisdiction's residency rule allows.
//! It can only be made by the three constructors below, and all end in the same check,
//! [`Layout::allows`]. The vault writes subjects and records only through a `Pinned`, so no
//! write can land at a site the rule does not allow. (A unit test in `vault/mod.rs` checks that the
//! vault calls no store write method directly, except `seed_legacy`, which plants legacy data.)

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::domain::SubjectPlacement;
use crate::error::VaultError;
use crate::layout::{Layout, LayoutProblem};
use crate::store::{RecordRow, SiteStore, StoreError, SubjectRow};

/// The site where new subjects of `jurisdiction` go: the first of its residency rule.
pub(crate) fn placement_site<'l>(
    layout: &'l Layout,
    jurisdiction: &str,
) -> Result<&'l str, VaultError> {
    if !layout.jurisdictions.contains(jurisdiction) {
        return Err(VaultError::UnknownJurisdiction(jurisdiction.to_string()));
    }
    layout
        .residency
        .get(jurisdiction)
        .and_then(|sites| sites.first())
        .map(String::as_str)
        .ok_or_else(|| VaultError::NoResidencyRule(jurisdiction.to_string()))
}

/// A subject bound to a site its residency rule allows, ready to be written there.
pub(crate) struct Pinned<'v> {
    // Private: only `pin` builds one, after the residency check.
    subject: String,
    jurisdiction: String,
    site: &'v str,
    store: &'v Arc<dyn SiteStore>,
}

impl<'v> Pinned<'v> {
    /// A subject not held anywhere yet goes to the preferred site of its jurisdiction.
    pub(crate) fn new_subject(
        layout: &'v Layout,
        stores: &'v BTreeMap<String, Arc<dyn SiteStore>>,
        id: &str,
        jurisdiction: &str,
    ) -> Result<Self, VaultError> {
        let site = placement_site(layout, jurisdiction)?;
        Self::pin(layout, stores, id, jurisdiction, site)
    }

    /// A subject already held somewhere is written where it is held, and only if its rule
    /// allows that site; a legacy copy at a non-compliant site gets nothing new.
    pub(crate) fn existing(
        layout: &'v Layout,
        stores: &'v BTreeMap<String, Arc<dyn SiteStore>>,
        placement: &SubjectPlacement,
    ) -> Result<Self, VaultError> {
        Self::pin(
            layout,
            stores,
            &placement.id,
            &placement.jurisdiction,
            &placement.site,
        )
    }

    /// A subject bound to a site chosen by the caller (a migration's destination), checked like
    /// any other: a site its rule does not allow is refused.
    pub(crate) fn chosen(
        layout: &'v Layout,
        stores: &'v BTreeMap<String, Arc<dyn SiteStore>>,
        id: &str,
        jurisdiction: &str,
        site: &str,
    ) -> Result<Self, VaultError> {
        Self::pin(layout, stores, id, jurisdiction, site)
    }

    /// The residency check. Every `Pinned` comes from here.
    fn pin(
        layout: &'v Layout,
        stores: &'v BTreeMap<String, Arc<dyn SiteStore>>,
        id: &str,
        jurisdiction: &str,
        site: &str,
    ) -> Result<Self, VaultError> {
        if !layout.allows(jurisdiction, site) {
            return Err(VaultError::ResidencyViolation {
                subject: id.to_string(),
                site: site.to_string(),
                jurisdiction: jurisdiction.to_string(),
            });
        }
        // The vault opens a store for every site it is built with, so this is not expected;
        // it is still an error rather than a panic.
        let (site, store) = stores.get_key_value(site).ok_or_else(|| {
            VaultError::InvalidLayout(vec![LayoutProblem {
                key: format!("sites.{site}.store"),
                problem: format!("no store is open for site `{site}`"),
            }])
        })?;
        Ok(Pinned {
            subject: id.to_string(),
            jurisdiction: jurisdiction.to_string(),
            site,
            store,
        })
    }

    pub(crate) fn site(&self) -> &'v str {
        self.site
    }

    /// Writes the subject at its pinned site.
    pub(crate) fn put_subject(&self) -> Result<(), StoreError> {
        self.store.put_subject(&SubjectRow {
            id: self.subject.clone(),
            jurisdiction: self.jurisdiction.clone(),
        })
    }

    /// Writes one of the subject's records at its pinned site. The row's subject is the pinned
    /// one, so a record cannot be slipped in under another subject's placement.
    pub(crate) fn put_record(
        &self,
        collection: &str,
        key: &str,
        fields: Map<String, Value>,
    ) -> Result<(), StoreError> {
        self.store.put_record(&self.record(collection, key, fields))
    }

    /// [`Self::put_record`] only if the site still holds the subject with its jurisdiction
    /// (for a placement the vault remembered); whether it wrote.
    pub(crate) fn put_record_held(
        &self,
        collection: &str,
        key: &str,
        fields: Map<String, Value>,
    ) -> Result<bool, StoreError> {
        self.store
            .put_record_held(&self.record(collection, key, fields), &self.jurisdiction)
    }

    fn record(&self, collection: &str, key: &str, fields: Map<String, Value>) -> RecordRow {
        RecordRow {
            subject: self.subject.clone(),
            collection: collection.to_string(),
            key: key.to_string(),
            fields,
        }
    }
}
