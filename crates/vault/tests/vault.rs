//! The vault over real SQLite files in temporary folders.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use vault::{
    CollectionConfig, FieldClass, Layout, RecordKey, RecordRow, SiteConfig, SiteStore, StoreError,
    StoredRecord, SubjectPlacement, SubjectRow, Vault, VaultError,
};

fn site(jurisdiction: &str, operator: &str, store: &str) -> SiteConfig {
    SiteConfig {
        jurisdiction: jurisdiction.into(),
        operator: operator.into(),
        store: store.into(),
    }
}

fn collection(fields: &[(&str, FieldClass)]) -> CollectionConfig {
    CollectionConfig::of(fields.iter().map(|(n, c)| (n.to_string(), *c)).collect())
}

/// The reference scenario, plus a rule for `SG` so a conflict between two placeable
/// jurisdictions can be shown. `CN` has no rule.
fn layout() -> Layout {
    use FieldClass::*;
    Layout {
        jurisdictions: ["US", "SG", "CN"].map(String::from).into(),
        sites: [
            (
                "us-east".to_string(),
                site("US", "custodian", "sqlite:sites/us-east.db"),
            ),
            (
                "sg-legacy".to_string(),
                site("SG", "platform", "sqlite:sites/sg-legacy.db"),
            ),
        ]
        .into(),
        residency: [
            ("US".to_string(), vec!["us-east".to_string()]),
            ("SG".to_string(), vec!["sg-legacy".to_string()]),
        ]
        .into(),
        collections: [
            (
                "profile".to_string(),
                collection(&[
                    ("email", Protected),
                    ("birthdate", Protected),
                    ("phone", Protected),
                    ("display_name", Interoperable),
                ]),
            ),
            (
                "activity".to_string(),
                collection(&[
                    ("watch_history", Protected),
                    ("location", Protected),
                    ("public_video_count", Interoperable),
                ]),
            ),
        ]
        .into(),
    }
}

fn open(dir: &Path) -> Vault {
    Vault::open(layout(), dir, 2).unwrap()
}

fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("not an object"),
    }
}

fn store<'v>(vault: &'v Vault, site: &str) -> &'v Arc<dyn SiteStore> {
    vault.stores().find(|(name, _)| *name == site).unwrap().1
}

/// Every store's full contents, to show that a refused call wrote nothing.
fn snapshot(vault: &Vault) -> Vec<(String, Vec<SubjectRow>, Vec<RecordRow>)> {
    vault
        .stores()
        .map(|(name, s)| {
            (
                name.to_string(),
                s.subjects().unwrap(),
                s.records().unwrap(),
            )
        })
        .collect()
}

#[test]
fn register_put_get_list_delete() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path());

    let expected = SubjectPlacement {
        id: "alice".into(),
        jurisdiction: "US".into(),
        site: "us-east".into(),
        site_jurisdiction: "US".into(),
        allowed: true,
    };
    assert_eq!(
        vault.register_subject("alice", "US").unwrap(),
        (expected.clone(), true)
    );
    assert_eq!(
        vault.register_subject("alice", "US").unwrap(),
        (expected.clone(), false)
    );
    assert_eq!(vault.find_subject("alice").unwrap(), Some(expected));
    assert_eq!(vault.find_subject("bob").unwrap(), None);

    let profile = fields(json!({"email": "a@example.com", "display_name": "Al"}));
    assert_eq!(
        vault
            .put_record("alice", "profile", "main", profile.clone())
            .unwrap(),
        "us-east"
    );
    let activity = fields(json!({"public_video_count": 3}));
    assert_eq!(
        vault
            .put_record("alice", "activity", "2024", activity)
            .unwrap(),
        "us-east"
    );

    assert_eq!(
        vault.get_record("alice", "profile", "main").unwrap(),
        Some(StoredRecord {
            site: "us-east".into(),
            fields: profile.clone()
        })
    );
    assert_eq!(vault.get_record("alice", "profile", "other").unwrap(), None);
    assert_eq!(
        vault.list_records("alice").unwrap(),
        vec![
            RecordKey {
                collection: "activity".into(),
                key: "2024".into()
            },
            RecordKey {
                collection: "profile".into(),
                key: "main".into()
            },
        ]
    );
    // The record is in the US site's file and nowhere else.
    assert_eq!(store(&vault, "us-east").records().unwrap().len(), 2);
    assert_eq!(store(&vault, "sg-legacy").records().unwrap(), vec![]);
    assert_eq!(store(&vault, "sg-legacy").subjects().unwrap(), vec![]);

    // Replace.
    let newer = fields(json!({"email": "b@example.com"}));
    vault
        .put_record("alice", "profile", "main", newer.clone())
        .unwrap();
    assert_eq!(
        vault
            .get_record("alice", "profile", "main")
            .unwrap()
            .unwrap()
            .fields,
        newer
    );

    assert!(vault.delete_record("alice", "profile", "main").unwrap());
    assert!(!vault.delete_record("alice", "profile", "main").unwrap());
    assert_eq!(vault.get_record("alice", "profile", "main").unwrap(), None);
    assert_eq!(vault.list_records("alice").unwrap().len(), 1);
}

#[test]
fn undeclared_fields_and_collections_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path());
    vault.register_subject("alice", "US").unwrap();
    let before = snapshot(&vault);

    let err = vault
        .put_record(
            "alice",
            "profile",
            "main",
            fields(json!({"email": "x", "ssn": "123-45-6789"})),
        )
        .unwrap_err();
    assert!(
        matches!(&err, VaultError::UndeclaredField { collection, field } if collection == "profile" && field == "ssn"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "field `ssn` is not declared in collection `profile`"
    );
    assert!(
        !err.to_string().contains("123-45"),
        "values never appear in errors"
    );

    let err = vault
        .put_record("alice", "medical", "main", fields(json!({"email": "x"})))
        .unwrap_err();
    assert!(
        matches!(&err, VaultError::UnknownCollection(c) if c == "medical"),
        "{err:?}"
    );
    assert!(err.to_string().contains("collections.medical"), "{err}");
    assert!(matches!(
        vault.get_record("alice", "medical", "main"),
        Err(VaultError::UnknownCollection(_))
    ));

    for (subject, key, kind) in [
        ("alice", ".hidden", "record key"),
        ("a/b", "main", "subject id"),
    ] {
        let err = vault
            .put_record(subject, "profile", key, fields(json!({"email": "x"})))
            .unwrap_err();
        assert!(
            matches!(&err, VaultError::InvalidId { kind: k, .. } if k == kind),
            "{err:?}"
        );
    }

    assert_eq!(snapshot(&vault), before);
}

#[test]
fn validate_fields_reports_classes() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path());
    let both = fields(json!({"display_name": "x", "email": "y", "phone": "z"}));
    assert_eq!(
        vault.validate_fields("profile", &both).unwrap(),
        vec![FieldClass::Protected, FieldClass::Interoperable]
    );
    let open_only = fields(json!({"display_name": "x"}));
    assert_eq!(
        vault.validate_fields("profile", &open_only).unwrap(),
        vec![FieldClass::Interoperable]
    );
    assert_eq!(
        vault.validate_fields("profile", &Map::new()).unwrap(),
        vec![]
    );
}

#[test]
fn jurisdiction_rules() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path());
    assert_eq!(vault.placement_site("US").unwrap(), "us-east");
    assert_eq!(vault.site_jurisdiction("sg-legacy"), Some("SG"));
    assert!(vault.collection("profile").is_some());

    let err = vault.register_subject("bob", "CN").unwrap_err();
    assert!(
        matches!(&err, VaultError::NoResidencyRule(j) if j == "CN"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "no residency rule for jurisdiction `CN`: add `residency.CN` to the configuration"
    );
    let err = vault.register_subject("bob", "XX").unwrap_err();
    assert!(
        matches!(&err, VaultError::UnknownJurisdiction(j) if j == "XX"),
        "{err:?}"
    );
    assert_eq!(vault.find_subject("bob").unwrap(), None);

    vault.register_subject("alice", "US").unwrap();
    let err = vault.register_subject("alice", "SG").unwrap_err();
    assert!(
        matches!(&err, VaultError::SubjectConflict { id, existing, requested }
            if id == "alice" && existing == "US" && requested == "SG"),
        "{err:?}"
    );
    assert_eq!(store(&vault, "sg-legacy").subjects().unwrap(), vec![]);
    assert_eq!(
        vault.find_subject("alice").unwrap().unwrap().jurisdiction,
        "US"
    );
}

#[test]
fn unregistered_subjects_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path());
    let err = vault
        .put_record("ghost", "profile", "main", fields(json!({"email": "x"})))
        .unwrap_err();
    assert!(
        matches!(&err, VaultError::SubjectNotFound(id) if id == "ghost"),
        "{err:?}"
    );
    assert!(matches!(
        vault.get_record("ghost", "profile", "main"),
        Err(VaultError::SubjectNotFound(_))
    ));
    assert!(matches!(
        vault.delete_record("ghost", "profile", "main"),
        Err(VaultError::SubjectNotFound(_))
    ));
    assert!(matches!(
        vault.list_records("ghost"),
        Err(VaultError::SubjectNotFound(_))
    ));
    assert_eq!(
        snapshot(&vault)
            .iter()
            .map(|s| s.1.len() + s.2.len())
            .sum::<usize>(),
        0
    );
}

#[test]
fn a_legacy_copy_gets_no_new_writes() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path());
    // A US subject left at the Singapore site, planted around the vault as legacy data is.
    let legacy = store(&vault, "sg-legacy");
    legacy
        .put_subject(&SubjectRow {
            id: "carol".into(),
            jurisdiction: "US".into(),
        })
        .unwrap();
    legacy
        .put_record(&RecordRow {
            subject: "carol".into(),
            collection: "profile".into(),
            key: "old".into(),
            fields: fields(json!({"email": "c@example.com"})),
        })
        .unwrap();
    let before = snapshot(&vault);

    let found = vault.find_subject("carol").unwrap().unwrap();
    assert_eq!(
        found,
        SubjectPlacement {
            id: "carol".into(),
            jurisdiction: "US".into(),
            site: "sg-legacy".into(),
            site_jurisdiction: "SG".into(),
            allowed: false,
        }
    );

    let err = vault
        .put_record(
            "carol",
            "profile",
            "main",
            fields(json!({"email": "new@example.com"})),
        )
        .unwrap_err();
    assert!(
        matches!(&err, VaultError::ResidencyViolation { subject, site, jurisdiction }
            if subject == "carol" && site == "sg-legacy" && jurisdiction == "US"),
        "{err:?}"
    );
    assert!(err.to_string().contains("nothing was written"), "{err}");
    // Replacing the legacy record is a write too.
    assert!(
        vault
            .put_record("carol", "profile", "old", Map::new())
            .is_err()
    );
    // Registering again does not move or copy the subject: that is a migration's job.
    assert_eq!(
        vault.register_subject("carol", "US").unwrap(),
        (found, false)
    );
    assert_eq!(snapshot(&vault), before, "refused calls changed a store");

    // Reading and deleting legacy data stays possible.
    assert_eq!(
        vault
            .get_record("carol", "profile", "old")
            .unwrap()
            .unwrap()
            .site,
        "sg-legacy"
    );
    assert!(vault.delete_record("carol", "profile", "old").unwrap());
    assert_eq!(legacy.records().unwrap(), vec![]);
}

#[test]
fn an_allowed_copy_is_preferred() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path());
    // "sg-legacy" is searched before "us-east"; the allowed copy must still win.
    let row = SubjectRow {
        id: "dave".into(),
        jurisdiction: "US".into(),
    };
    store(&vault, "sg-legacy").put_subject(&row).unwrap();
    store(&vault, "us-east").put_subject(&row).unwrap();
    let found = vault.find_subject("dave").unwrap().unwrap();
    assert_eq!((found.site.as_str(), found.allowed), ("us-east", true));
    assert_eq!(
        vault
            .put_record("dave", "profile", "p", Map::new())
            .unwrap(),
        "us-east"
    );
    assert_eq!(store(&vault, "sg-legacy").records().unwrap(), vec![]);
}

#[test]
fn concurrent_registrations_agree() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path());
    let outcomes: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let vault = &vault;
                scope.spawn(move || {
                    vault.register_subject("erin", if i % 2 == 0 { "US" } else { "SG" })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created = outcomes
        .iter()
        .filter(|o| matches!(o, Ok((_, true))))
        .count();
    assert_eq!(created, 1, "{outcomes:?}");
    let held: usize = vault
        .stores()
        .map(|(_, s)| s.subjects().unwrap().len())
        .sum();
    assert_eq!(held, 1, "the subject exists at exactly one site");
}

#[test]
fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let vault = open(dir.path());
        vault.register_subject("alice", "US").unwrap();
        vault
            .put_record("alice", "profile", "main", fields(json!({"email": "a@x"})))
            .unwrap();
    }
    assert!(dir.path().join("sites/us-east.db").exists());
    let vault = open(dir.path());
    assert_eq!(
        vault
            .get_record("alice", "profile", "main")
            .unwrap()
            .unwrap()
            .fields,
        fields(json!({"email": "a@x"}))
    );
}

#[test]
fn opening_checks_the_layout_and_stores() {
    let dir = tempfile::tempdir().unwrap();

    let mut bad = layout();
    bad.residency.insert("US".into(), vec!["nowhere".into()]);
    let err = Vault::open(bad, dir.path(), 1).unwrap_err();
    let VaultError::InvalidLayout(problems) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(problems[0].key, "residency.US[0]");
    assert!(
        err.to_string()
            .starts_with("invalid configuration: residency.US[0]: "),
        "{err}"
    );

    // The same file written once relatively and once absolutely.
    let mut same = layout();
    let absolute = format!("sqlite:{}", dir.path().join("sites/us-east.db").display());
    same.sites.get_mut("sg-legacy").unwrap().store = absolute;
    let err = Vault::open(same, dir.path(), 1).unwrap_err();
    assert!(
        matches!(&err, VaultError::InvalidLayout(p) if p[0].key == "sites.us-east.store"),
        "{err:?}"
    );

    let mut postgres = layout();
    postgres.sites.get_mut("us-east").unwrap().store = "postgres://user:pw@db/us".into();
    assert_eq!(postgres.validate(), vec![]);
    let err = Vault::open(postgres, dir.path(), 1).unwrap_err();
    assert!(
        matches!(&err, VaultError::Store(StoreError::NotImplemented(_))),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "PostgreSQL site stores are not implemented yet"
    );

    let err = vault::open_store("mysql://user:pw@db", dir.path(), 1)
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("`mysql`") && !err.to_string().contains("pw"),
        "{err}"
    );

    // with_stores needs exactly the declared sites.
    let us: Arc<dyn SiteStore> = vault::open_store("sqlite:x.db", dir.path(), 1).unwrap();
    let err = Vault::with_stores(
        layout(),
        BTreeMap::from([("us-east".to_string(), us.clone())]),
    )
    .unwrap_err();
    assert!(
        matches!(&err, VaultError::InvalidLayout(p) if p.len() == 1 && p[0].key == "sites.sg-legacy.store"),
        "{err:?}"
    );
    let sg: Arc<dyn SiteStore> = vault::open_store("sqlite:y.db", dir.path(), 1).unwrap();
    let extra: Arc<dyn SiteStore> = vault::open_store("sqlite:z.db", dir.path(), 1).unwrap();
    let stores = BTreeMap::from([
        ("us-east".to_string(), us.clone()),
        ("sg-legacy".to_string(), sg.clone()),
        ("eu-west".to_string(), extra),
    ]);
    assert!(matches!(
        Vault::with_stores(layout(), stores),
        Err(VaultError::InvalidLayout(_))
    ));
    let stores = BTreeMap::from([("us-east".to_string(), us), ("sg-legacy".to_string(), sg)]);
    let vault = Vault::with_stores(layout(), stores).unwrap();
    assert_eq!(
        vault.register_subject("alice", "US").unwrap().0.site,
        "us-east"
    );
}

#[test]
fn vault_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Vault>();
}
