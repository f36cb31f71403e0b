//! Verified, resumable migration of a subject from one site to another, checked by digests of
//! the canonical plaintext read at the source and read back at the destination.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::domain::{Migration, PlainRecord};
use crate::error::{VaultError, validate_id};
use crate::keys::UnwrapReason;
use crate::placement::Pinned;
use crate::vault::{FieldCrypt, SUBJECT_ID, Vault};

/// The steps of a migration, in order; see [`Vault::migrate_subject`].
const MIGRATION_STEPS: u8 = 5;

impl Vault {
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
        // A subject moving is looked up afresh from here on (only placements at allowed
        // sites are remembered, but a move may also start from one named by the caller).
        self.placements.forget(id);

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
            let fields = self.crypt_fields(
                FieldCrypt::Open(UnwrapReason::Migration),
                id,
                from_site,
                &name.collection,
                &name.key,
                stored,
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
                let sealed = self.crypt_fields(
                    FieldCrypt::Seal(UnwrapReason::Migration),
                    id,
                    to,
                    collection,
                    key,
                    fields.clone(),
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
                    let fields = self.crypt_fields(
                        FieldCrypt::Open(UnwrapReason::Migration),
                        id,
                        to,
                        collection,
                        key,
                        stored,
                    )?;
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
}
