//! The residency scan and verified migration, over real SQLite files: legacy subjects are
//! found, moved with their data intact, their source keys destroyed, and a migration stopped
//! after any step finishes when run again.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::{contains, copy_store, envelope, fields, file_bytes, layout, site, snapshot, store};
use serde_json::{Map, Value, json};
use vault::{
    KeyError, Layout, Migration, Misplaced, RecordKey, RecordRow, SiteStore, SqliteStore,
    StoreError, SubjectRow, UnwrapReason, Vault, VaultError,
};

const MIGRATION: UnwrapReason = UnwrapReason::Migration;

/// The reference layout plus a second US site and a site in China, which no US rule allows.
fn migration_layout() -> Layout {
    let mut layout = layout();
    layout.sites.insert(
        "us-west".into(),
        site("US", "custodian", "sqlite:sites/us-west.db"),
    );
    layout.sites.insert(
        "cn-north".into(),
        site("CN", "partner", "sqlite:sites/cn-north.db"),
    );
    layout
        .residency
        .insert("US".into(), vec!["us-east".into(), "us-west".into()]);
    layout
}

fn open_with(dir: &Path, allowed: &[UnwrapReason]) -> Vault {
    Vault::open(migration_layout(), dir, 2)
        .unwrap()
        .with_envelope(envelope(dir, allowed))
}

fn open(dir: &Path) -> Vault {
    open_with(dir, &UnwrapReason::ALL)
}

/// A legacy subject's records: protected values of several shapes (each carrying a marker
/// naming the subject), interoperable ones, and a record with no protected field.
fn legacy_records(id: &str) -> Vec<(String, String, Map<String, Value>)> {
    vec![
        (
            "profile".into(),
            "main".into(),
            fields(json!({
                "email": format!("SECRET-{id}-email"),
                "birthdate": {"y": 1990, "text": format!("SECRET-{id}-birth")},
                "phone": [format!("SECRET-{id}-phone"), 2.5, null, true],
                "display_name": format!("name-{id}"),
            })),
        ),
        (
            "activity".into(),
            "2023".into(),
            fields(json!({
                "watch_history": [{"t": format!("SECRET-{id}-watch")}],
                "location": format!("SECRET-{id}-loc"),
                "public_video_count": 3,
            })),
        ),
        (
            "activity".into(),
            "2024".into(),
            fields(json!({"public_video_count": 5})),
        ),
    ]
}

fn seed(vault: &Vault, ids: &[&str]) {
    let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    let written = vault
        .seed_legacy(&ids, "US", "sg-legacy", legacy_records)
        .unwrap();
    assert_eq!(written, 3 * ids.len() as u64);
}

/// Everything the vault reads for a subject, decrypted, by (collection, key).
fn everything(vault: &Vault, id: &str) -> BTreeMap<(String, String), Map<String, Value>> {
    vault
        .list_records(id)
        .unwrap()
        .into_iter()
        .map(|RecordKey { collection, key }| {
            let record = vault
                .get_record(id, &collection, &key, MIGRATION)
                .unwrap()
                .unwrap();
            ((collection, key), record.fields)
        })
        .collect()
}

fn expected(id: &str) -> BTreeMap<(String, String), Map<String, Value>> {
    legacy_records(id)
        .into_iter()
        .map(|(c, k, f)| ((c, k), f))
        .collect()
}

/// The sites that hold a subject row or any record of `id`.
fn holders(vault: &Vault, id: &str) -> Vec<String> {
    vault
        .stores()
        .filter(|(_, s)| {
            s.get_subject(id).unwrap().is_some() || !s.list_records(id).unwrap().is_empty()
        })
        .map(|(name, _)| name.to_string())
        .collect()
}

/// A vault over copies of store files, with the same custodian keys.
fn vault_over(dir: &Path, files: &[(&str, &Path)]) -> Vault {
    let mut stores: BTreeMap<String, Arc<dyn SiteStore>> = BTreeMap::new();
    for name in migration_layout().sites.keys() {
        let path = files
            .iter()
            .find(|(site, _)| site == name)
            .map(|(_, path)| path.to_path_buf())
            .unwrap_or_else(|| dir.join(format!("empty/{name}.db")));
        stores.insert(name.clone(), Arc::new(SqliteStore::open(&path, 1).unwrap()));
    }
    Vault::with_stores(migration_layout(), stores)
        .unwrap()
        .with_envelope(envelope(dir, &UnwrapReason::ALL))
}

#[test]
fn misplaced_subjects_are_found_and_moved() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path());
    seed(&vault, &["u3", "u1", "u2"]);
    vault.register_subject("sg1", "SG").unwrap();
    vault.register_subject("alice", "US").unwrap();
    vault
        .put_record("sg1", "profile", "main", fields(json!({"email": "s"})))
        .unwrap();

    let found = vault.misplaced().unwrap();
    assert_eq!(
        found,
        ["u1", "u2", "u3"]
            .map(|id| Misplaced {
                site: "sg-legacy".into(),
                subject: id.into(),
                jurisdiction: "US".into(),
                records: 3,
            })
            .to_vec()
    );
    for id in ["u1", "u2", "u3"] {
        assert_eq!(everything(&vault, id), expected(id));
    }
    let legacy_file = dir.path().join("sites/sg-legacy.db");
    let backup = dir.path().join("backup/sg-legacy.db");
    copy_store(&legacy_file, &backup);

    for m in &found {
        let migration = vault.migrate_subject(&m.subject, &m.site, None).unwrap();
        assert_eq!(
            (
                migration.from.as_str(),
                migration.to.as_str(),
                migration.records
            ),
            ("sg-legacy", "us-east", 3)
        );
        assert_eq!(migration.source_digest, migration.destination_digest);
        assert_eq!(migration.source_digest.len(), 64);
    }
    assert_eq!(vault.misplaced().unwrap(), vec![]);

    for id in ["u1", "u2", "u3"] {
        let placement = vault.find_subject(id).unwrap().unwrap();
        assert_eq!(
            (placement.site.as_str(), placement.allowed),
            ("us-east", true)
        );
        assert_eq!(holders(&vault, id), vec!["us-east"], "exactly one copy");
        assert_eq!(
            everything(&vault, id),
            expected(id),
            "nothing lost or changed"
        );
        assert_eq!(
            vault.envelope().unwrap().keys_of(id).unwrap(),
            vec!["us-east"],
            "the source key is destroyed"
        );
    }
    // Others are untouched.
    assert_eq!(holders(&vault, "sg1"), vec!["sg-legacy"]);
    assert_eq!(holders(&vault, "alice"), vec!["us-east"]);
    assert!(
        vault
            .get_record("sg1", "profile", "main", UnwrapReason::Access)
            .is_ok()
    );

    // The destination holds ciphertext only, under its own key.
    let us_bytes = file_bytes(&dir.path().join("sites/us-east.db"));
    assert!(
        contains(&us_bytes, b"name-u1"),
        "the scan must see the file"
    );
    assert!(
        !contains(&us_bytes, b"SECRET-"),
        "plaintext at the destination"
    );

    // A backup of the source taken before the migration is useless for protected data.
    let restored = vault_over(dir.path(), &[("sg-legacy", &backup)]);
    assert_eq!(
        restored.find_subject("u1").unwrap().unwrap().site,
        "sg-legacy"
    );
    let err = restored
        .get_record("u1", "profile", "main", MIGRATION)
        .unwrap_err();
    assert!(
        matches!(&err, VaultError::Key(KeyError::NoDataKey { site, .. }) if site == "sg-legacy"),
        "{err:?}"
    );
    assert!(!err.to_string().contains("SECRET"), "{err}");

    // Running it again on a moved subject does nothing and is not an error.
    let again = vault.migrate_subject("u1", "sg-legacy", None).unwrap();
    assert_eq!(
        again,
        Migration {
            subject: "u1".into(),
            from: "sg-legacy".into(),
            to: "us-east".into(),
            records: 0,
            source_digest: again.source_digest.clone(),
            destination_digest: again.source_digest.clone(),
        }
    );
    assert_eq!(everything(&vault, "u1"), expected("u1"));
}

#[test]
fn a_migration_stopped_after_any_step_finishes_when_run_again() {
    for stop_after in 1..=5u8 {
        let dir = tempfile::tempdir().unwrap();
        let vault = open(dir.path());
        seed(&vault, &["u1", "u2"]);
        let before = snapshot(&vault);

        let partial = vault
            .migrate_subject_until("u1", "sg-legacy", None, stop_after)
            .unwrap();
        assert_eq!(partial.records, 3, "after step {stop_after}");
        let keys = vault.envelope().unwrap().keys_of("u1").unwrap();
        match stop_after {
            1 => {
                assert_eq!(snapshot(&vault), before, "step 1 only reads");
                assert_eq!(keys, vec!["sg-legacy"]);
            }
            2 | 3 => {
                assert_eq!(holders(&vault, "u1"), vec!["sg-legacy", "us-east"]);
                assert_eq!(keys, vec!["sg-legacy", "us-east"]);
            }
            4 => {
                assert_eq!(holders(&vault, "u1"), vec!["us-east"]);
                assert_eq!(keys, vec!["sg-legacy", "us-east"], "the key is left over");
            }
            _ => assert_eq!(keys, vec!["us-east"]),
        }
        // Whatever state it stopped in, the data reads back complete.
        assert_eq!(
            everything(&vault, "u1"),
            expected("u1"),
            "after step {stop_after}"
        );

        // "Restart": a fresh vault over the same files, then the whole migration.
        drop(vault);
        let vault = open(dir.path());
        let finished = vault.migrate_subject("u1", "sg-legacy", None).unwrap();
        assert_eq!(
            finished.records,
            if stop_after >= 4 { 0 } else { 3 },
            "after step {stop_after}"
        );
        assert_eq!(finished.source_digest, finished.destination_digest);
        assert_eq!(
            holders(&vault, "u1"),
            vec!["us-east"],
            "one copy after step {stop_after}"
        );
        assert_eq!(
            vault.envelope().unwrap().keys_of("u1").unwrap(),
            vec!["us-east"],
            "after step {stop_after}"
        );
        assert_eq!(
            everything(&vault, "u1"),
            expected("u1"),
            "nothing lost after step {stop_after}"
        );
        assert_eq!(vault.misplaced().unwrap().len(), 1, "u2 is still misplaced");
        assert_eq!(everything(&vault, "u2"), expected("u2"));
        // And a third run changes nothing.
        assert_eq!(
            vault
                .migrate_subject("u1", "sg-legacy", None)
                .unwrap()
                .records,
            0
        );
        assert_eq!(everything(&vault, "u1"), expected("u1"));
    }
}

#[test]
fn destinations_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path());
    seed(&vault, &["u1"]);
    vault
        .seed_legacy(&["c1".to_string()], "CN", "sg-legacy", |_| vec![])
        .unwrap();
    let before = snapshot(&vault);

    let err = vault
        .migrate_subject("u1", "sg-legacy", Some("cn-north"))
        .unwrap_err();
    assert!(
        matches!(&err, VaultError::ResidencyViolation { subject, site, jurisdiction }
            if subject == "u1" && site == "cn-north" && jurisdiction == "US"),
        "{err:?}"
    );
    let err = vault
        .migrate_subject("u1", "sg-legacy", Some("sg-legacy"))
        .unwrap_err();
    assert!(matches!(err, VaultError::SameSite { .. }), "{err:?}");
    assert!(err.to_string().contains("name another site"), "{err}");
    for (from, to) in [("sg-legacy", Some("nowhere")), ("nowhere", None)] {
        let err = vault.migrate_subject("u1", from, to).unwrap_err();
        assert!(
            matches!(&err, VaultError::UnknownSite(s) if s == "nowhere"),
            "{err:?}"
        );
    }
    assert!(matches!(
        vault.migrate_subject("ghost", "sg-legacy", None),
        Err(VaultError::SubjectNotFound(_))
    ));
    assert!(matches!(
        vault.migrate_subject("a/b", "sg-legacy", None),
        Err(VaultError::InvalidId { .. })
    ));
    assert!(matches!(
        vault.migrate_subject("c1", "sg-legacy", None),
        Err(VaultError::NoResidencyRule(_))
    ));
    assert_eq!(
        snapshot(&vault),
        before,
        "a refused migration changed a store"
    );

    // An allowed destination other than the first.
    let migration = vault
        .migrate_subject("u1", "sg-legacy", Some("us-west"))
        .unwrap();
    assert_eq!((migration.to.as_str(), migration.records), ("us-west", 3));
    assert_eq!(holders(&vault, "u1"), vec!["us-west"]);
    assert_eq!(everything(&vault, "u1"), expected("u1"));
}

#[test]
fn migration_needs_the_migration_reason() {
    let dir = tempfile::tempdir().unwrap();
    seed(&open(dir.path()), &["u1"]);
    let vault = open_with(dir.path(), &[UnwrapReason::Access]);
    let before = snapshot(&vault);
    let err = vault.migrate_subject("u1", "sg-legacy", None).unwrap_err();
    assert!(
        matches!(
            err,
            VaultError::Key(KeyError::ReasonNotAllowed {
                reason: UnwrapReason::Migration,
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(snapshot(&vault), before);
    assert_eq!(
        vault.envelope().unwrap().keys_of("u1").unwrap(),
        vec!["sg-legacy"]
    );
}

/// A destination store that gives back something other than what was written to it.
struct Lying(Arc<dyn SiteStore>);

impl SiteStore for Lying {
    fn get_subject(&self, id: &str) -> Result<Option<SubjectRow>, StoreError> {
        self.0.get_subject(id)
    }
    fn put_subject(&self, subject: &SubjectRow) -> Result<(), StoreError> {
        self.0.put_subject(subject)
    }
    fn get_record(
        &self,
        subject: &str,
        collection: &str,
        key: &str,
    ) -> Result<Option<Map<String, Value>>, StoreError> {
        Ok(self
            .0
            .get_record(subject, collection, key)?
            .map(|mut fields| {
                if fields.contains_key("display_name") {
                    fields.insert("display_name".into(), json!("changed"));
                }
                fields
            }))
    }
    fn put_record(&self, row: &RecordRow) -> Result<(), StoreError> {
        self.0.put_record(row)
    }
    fn delete_record(
        &self,
        subject: &str,
        collection: &str,
        key: &str,
    ) -> Result<bool, StoreError> {
        self.0.delete_record(subject, collection, key)
    }
    fn list_records(&self, subject: &str) -> Result<Vec<RecordKey>, StoreError> {
        self.0.list_records(subject)
    }
    fn subjects(&self) -> Result<Vec<SubjectRow>, StoreError> {
        self.0.subjects()
    }
    fn records(&self) -> Result<Vec<RecordRow>, StoreError> {
        self.0.records()
    }
    fn delete_subject(&self, id: &str) -> Result<bool, StoreError> {
        self.0.delete_subject(id)
    }
    fn records_after(
        &self,
        collection: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<RecordRow>, StoreError> {
        self.0.records_after(collection, after, limit)
    }
}

#[test]
fn a_copy_that_reads_back_different_stops_the_migration() {
    let dir = tempfile::tempdir().unwrap();
    let mut stores: BTreeMap<String, Arc<dyn SiteStore>> = BTreeMap::new();
    for name in migration_layout().sites.keys() {
        let file: Arc<dyn SiteStore> =
            Arc::new(SqliteStore::open(&dir.path().join(format!("{name}.db")), 1).unwrap());
        let store = if name == "us-east" {
            Arc::new(Lying(file))
        } else {
            file
        };
        stores.insert(name.clone(), store);
    }
    let vault = Vault::with_stores(migration_layout(), stores)
        .unwrap()
        .with_envelope(envelope(dir.path(), &UnwrapReason::ALL));
    seed(&vault, &["u1"]);
    let source_before = (
        store(&vault, "sg-legacy").subjects().unwrap(),
        store(&vault, "sg-legacy").records().unwrap(),
    );

    let err = vault.migrate_subject("u1", "sg-legacy", None).unwrap_err();
    let VaultError::MigrationMismatch(stopped) = &err else {
        panic!("{err:?}")
    };
    assert_ne!(stopped.source_digest, stopped.destination_digest);
    assert_eq!(
        (stopped.from.as_str(), stopped.to.as_str()),
        ("sg-legacy", "us-east")
    );
    assert!(
        err.to_string().contains("the source was not changed"),
        "{err}"
    );
    assert_eq!(
        (
            store(&vault, "sg-legacy").subjects().unwrap(),
            store(&vault, "sg-legacy").records().unwrap(),
        ),
        source_before,
        "the source is untouched"
    );
    assert!(
        vault
            .envelope()
            .unwrap()
            .keys_of("u1")
            .unwrap()
            .contains(&"sg-legacy".to_string()),
        "the source key is kept"
    );
}
