//! Legacy data: subjects held at a site their jurisdiction's residency rule does not allow.
//! The residency scan ([`Vault::misplaced`]) finds them; [`Vault::seed_legacy`], the one write
//! around the placement check, plants them on purpose (deployments, demonstrations, tests).

use crate::domain::{Misplaced, PlainRecord};
use crate::error::{VaultError, validate_id};
use crate::keys::UnwrapReason;
use crate::store::{RecordRow, SubjectRow};
use crate::vault::{FieldCrypt, RECORD_KEY, SUBJECT_ID, Vault};

impl Vault {
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
        // Seeding writes subject rows directly; nothing remembered may outlive it.
        self.placements.forget_all();
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
                let fields = self.crypt_fields(
                    FieldCrypt::Seal(UnwrapReason::Access),
                    id,
                    site,
                    &collection,
                    &key,
                    fields,
                )?;
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
}
