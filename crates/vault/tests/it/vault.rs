//! The vault over real SQLite files in temporary folders.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{fields, layout, open, snapshot, store};
use serde_json::{Map, json};
use vault::{
    FieldClass, KeyError, RecordKey, RecordRow, SiteStore, StoreError, StoredRecord,
    SubjectPlacement, SubjectRow, UnwrapReason, Vault, VaultError,
};

const ACCESS: UnwrapReason = UnwrapReason::Access;

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
        vault
            .get_record("alice", "profile", "main", ACCESS)
            .unwrap(),
        Some(StoredRecord {
            site: "us-east".into(),
            fields: profile.clone(),
            withheld: vec![],
        })
    );
    assert_eq!(
        vault
            .get_record("alice", "profile", "other", ACCESS)
            .unwrap(),
        None
    );
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
            .get_record("alice", "profile", "main", ACCESS)
            .unwrap()
            .unwrap()
            .fields,
        newer
    );

    assert!(vault.delete_record("alice", "profile", "main").unwrap());
    assert!(!vault.delete_record("alice", "profile", "main").unwrap());
    assert_eq!(
        vault
            .get_record("alice", "profile", "main", ACCESS)
            .unwrap(),
        None
    );
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
        vault.get_record("alice", "medical", "main", ACCESS),
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
        vault.get_record("ghost", "profile", "main", ACCESS),
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
    // A US subject left at the Singapore site, as it was before residency was enforced.
    let seeded = vault
        .seed_legacy(&["carol".to_string()], "US", "sg-legacy", |_| {
            vec![(
                "profile".into(),
                "old".into(),
                fields(json!({"email": "c@example.com", "display_name": "C"})),
            )]
        })
        .unwrap();
    assert_eq!(seeded, 1);
    let legacy = store(&vault, "sg-legacy");
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
    let read = vault
        .get_record("carol", "profile", "old", ACCESS)
        .unwrap()
        .unwrap();
    assert_eq!(read.site, "sg-legacy");
    assert_eq!(
        read.fields,
        fields(json!({"email": "c@example.com", "display_name": "C"}))
    );
    assert!(vault.delete_record("carol", "profile", "old").unwrap());
    assert_eq!(legacy.records().unwrap(), vec![]);
}

#[test]
fn seeding_legacy_data_is_checked_first() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path());
    vault.register_subject("alice", "US").unwrap();
    let before = snapshot(&vault);
    let one = |_: &str| vec![("profile".into(), "p".into(), fields(json!({"email": "x"})))];
    let ids = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let err = vault
        .seed_legacy(&ids(&["bob", "alice"]), "US", "sg-legacy", one)
        .unwrap_err();
    assert!(
        matches!(&err, VaultError::AlreadyHeld { subject, site } if subject == "alice" && site == "us-east"),
        "{err:?}"
    );
    let err = vault
        .seed_legacy(&ids(&["alice"]), "SG", "us-east", one)
        .unwrap_err();
    assert!(matches!(err, VaultError::SubjectConflict { .. }), "{err:?}");
    let err = vault
        .seed_legacy(&ids(&["bob"]), "US", "eu-west", one)
        .unwrap_err();
    assert!(
        matches!(&err, VaultError::UnknownSite(s) if s == "eu-west"),
        "{err:?}"
    );
    let err = vault
        .seed_legacy(&ids(&["bob"]), "XX", "sg-legacy", one)
        .unwrap_err();
    assert!(matches!(err, VaultError::UnknownJurisdiction(_)), "{err:?}");
    let err = vault
        .seed_legacy(&ids(&["bob", "a/b"]), "US", "sg-legacy", one)
        .unwrap_err();
    assert!(matches!(err, VaultError::InvalidId { .. }), "{err:?}");
    let err = vault
        .seed_legacy(&ids(&["bob"]), "US", "sg-legacy", |_| {
            vec![("profile".into(), "p".into(), fields(json!({"ssn": "1"})))]
        })
        .unwrap_err();
    assert!(matches!(err, VaultError::UndeclaredField { .. }), "{err:?}");
    assert_eq!(
        snapshot(&vault),
        before,
        "a refused seeding wrote something"
    );
}

#[test]
fn plaintext_planted_in_a_protected_field_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path());
    vault.register_subject("carol", "US").unwrap();
    vault
        .put_record("carol", "profile", "real", fields(json!({"email": "e"})))
        .unwrap();
    // Written around the vault: a protected value that was never encrypted.
    store(&vault, "us-east")
        .put_record(&RecordRow {
            subject: "carol".into(),
            collection: "profile".into(),
            key: "raw".into(),
            fields: fields(json!({"email": "planted@example.com", "display_name": "C"})),
        })
        .unwrap();
    let err = vault
        .get_record("carol", "profile", "raw", ACCESS)
        .unwrap_err();
    assert!(
        matches!(&err, VaultError::Key(KeyError::NotEncrypted(place)) if place.field == "email"),
        "{err:?}"
    );
    assert!(!err.to_string().contains("planted"), "{err}");
    // The interoperable part is still readable.
    assert_eq!(
        vault
            .get_record_interoperable("carol", "profile", "raw")
            .unwrap()
            .unwrap()
            .fields,
        fields(json!({"display_name": "C"}))
    );
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
            .get_record("alice", "profile", "main", ACCESS)
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

    // A PostgreSQL store is valid configuration; opening one that nothing serves (port 1)
    // says which store failed and why, without the password.
    let mut postgres = layout();
    postgres.sites.get_mut("us-east").unwrap().store =
        "postgres://user:pw-secret@127.0.0.1:1/us".into();
    assert_eq!(postgres.validate(), vec![]);
    let err = Vault::open(postgres, dir.path(), 1).unwrap_err();
    assert!(
        matches!(&err, VaultError::Store(StoreError::Postgres { .. })),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("PostgreSQL store `postgres://user@127.0.0.1:1/us`: "),
        "{err}"
    );
    assert!(!err.to_string().contains("pw-secret"), "{err}");

    // Client certificates are not implemented: asking for one is refused before connecting.
    let mut tls = layout();
    tls.sites.get_mut("us-east").unwrap().store =
        "postgresql://user:pw-secret@127.0.0.1:1/us?sslmode=verify-full&sslcert=client.crt".into();
    let err = Vault::open(tls, dir.path(), 1).unwrap_err();
    assert!(
        matches!(&err, VaultError::Store(StoreError::NotImplemented(_))),
        "{err:?}"
    );
    assert!(err.to_string().contains("sslcert"), "{err}");
    assert!(!err.to_string().contains("pw-secret"), "{err}");

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
