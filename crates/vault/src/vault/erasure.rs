//! Erasure: a subject's records and subject rows deleted at every site, then its data keys
//! destroyed so that any copy or backup of a site store is unreadable for it.

use crate::domain::Erasure;
use crate::error::{VaultError, validate_id};
use crate::vault::{SUBJECT_ID, Vault};

impl Vault {
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
        // Forgotten first: from here on, nothing reads or writes it at a remembered site.
        self.placements.forget(id);
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
}
