//! Encryption at rest, crypto-shredding and unwrap reasons, over real SQLite files: what the
//! files on disk hold, what a backup copy still gives away, and who may decrypt.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::{
    contains, copy_store, envelope, fields, file_bytes, key_store_path, layout, open,
    open_allowing, snapshot, store,
};
use serde_json::{Value, json};
use vault::{
    Erasure, KeyError, RecordRow, SiteStore, SqliteStore, SubjectRow, UnwrapReason, Vault,
    VaultError,
};

const ACCESS: UnwrapReason = UnwrapReason::Access;

fn site_file(dir: &Path, site: &str) -> std::path::PathBuf {
    dir.join(format!("sites/{site}.db"))
}

/// Every byte the site stores and the key store keep on disk.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for site in ["us-east", "sg-legacy"] {
        bytes.extend(file_bytes(&site_file(dir, site)));
    }
    bytes.extend(file_bytes(&key_store_path(dir)));
    bytes
}

#[test]
fn store_files_hold_no_protected_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path());
    vault.register_subject("alice", "US").unwrap();
    vault.register_subject("bob", "SG").unwrap();

    // Every protected field gets a marker, in every JSON shape; interoperable ones get another.
    let protected_markers: Vec<String> = (0..8).map(|i| format!("PROTECTED-MARK-{i}")).collect();
    let open_markers: Vec<String> = (0..3).map(|i| format!("OPEN-MARK-{i}")).collect();
    let p = &protected_markers;
    let o = &open_markers;
    vault
        .put_record(
            "alice",
            "profile",
            "main",
            fields(json!({
                "email": p[0],
                "birthdate": {"text": p[1]},
                "phone": [p[2], 1, null],
                "display_name": o[0],
            })),
        )
        .unwrap();
    vault
        .put_record(
            "alice",
            "activity",
            "2024",
            fields(json!({
                "watch_history": [{"title": p[3]}],
                "location": p[4],
                "public_video_count": o[1],
            })),
        )
        .unwrap();
    vault
        .put_record(
            "bob",
            "profile",
            "main",
            fields(json!({"email": p[5], "display_name": o[2]})),
        )
        .unwrap();
    let (p6, p7) = (p[6].clone(), p[7].clone());
    vault
        .seed_legacy(&["carol".to_string()], "US", "sg-legacy", move |_| {
            vec![(
                "profile".into(),
                "old".into(),
                fields(json!({"email": p6, "phone": p7})),
            )]
        })
        .unwrap();

    let check = |when: &str| {
        let bytes = all_bytes(dir.path());
        for marker in &protected_markers {
            assert!(
                !contains(&bytes, marker.as_bytes()),
                "{when}: protected marker {marker} is on disk in plaintext"
            );
        }
        // The same scan finds what is stored in plaintext, so its silence above means something.
        for marker in &open_markers {
            assert!(
                contains(&bytes, marker.as_bytes()),
                "{when}: interoperable marker {marker} not found: the scan does not see the files"
            );
        }
    };
    check("while open");

    // Everything still reads back.
    let read = vault
        .get_record("alice", "profile", "main", ACCESS)
        .unwrap()
        .unwrap();
    assert_eq!(read.fields["birthdate"], json!({"text": p[1]}));
    assert_eq!(read.fields["phone"], json!([p[2], 1, null]));
    let stored = store(&vault, "us-east")
        .get_record("alice", "profile", "main")
        .unwrap()
        .unwrap();
    for field in ["email", "birthdate", "phone"] {
        let text = stored[field].as_str().unwrap();
        assert!(text.starts_with("sov:enc:v1:"), "{field}: {text}");
    }
    assert_eq!(stored["display_name"], json!(o[0]));

    drop(vault);
    // Closing checkpoints the WAL into the main file.
    check("after closing");
}

#[test]
fn erasure_shreds_every_copy() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path());
    vault.register_subject("alice", "US").unwrap();
    vault.register_subject("bob", "US").unwrap();
    let record = fields(json!({"email": "alice@example.com", "display_name": "Al"}));
    vault
        .put_record("alice", "profile", "main", record.clone())
        .unwrap();
    vault
        .put_record(
            "alice",
            "activity",
            "2024",
            fields(json!({"location": "x"})),
        )
        .unwrap();
    vault
        .put_record("bob", "profile", "main", fields(json!({"email": "bob@x"})))
        .unwrap();

    let keys = vault.envelope().unwrap().key_store();
    let alice_key = keys.get("alice", "us-east").unwrap().unwrap().wrapped;
    let bob_key = keys.get("bob", "us-east").unwrap().unwrap().wrapped;
    let key_file = key_store_path(dir.path());
    assert!(
        contains(&file_bytes(&key_file), &alice_key),
        "the wrapped key is not found in the key store's files: the scan below would prove nothing"
    );

    // A backup of the site store, taken before the erasure.
    let backup = dir.path().join("backup/us-east.db");
    copy_store(&site_file(dir.path(), "us-east"), &backup);

    let erasure = vault.erase_subject("alice").unwrap();
    assert_eq!(
        erasure,
        Erasure {
            sites: vec!["us-east".into()],
            records: 2,
            keys_destroyed: 1,
        }
    );
    assert_eq!(vault.find_subject("alice").unwrap(), None);
    assert_eq!(
        vault.envelope().unwrap().keys_of("alice").unwrap(),
        Vec::<String>::new()
    );
    // Another subject is untouched.
    assert_eq!(
        vault
            .get_record("bob", "profile", "main", ACCESS)
            .unwrap()
            .unwrap()
            .fields,
        fields(json!({"email": "bob@x"}))
    );

    // secure_delete and the checkpoint: the destroyed key's bytes are gone from the files.
    let key_bytes = file_bytes(&key_file);
    assert!(
        !contains(&key_bytes, &alice_key),
        "the destroyed key's wrapped bytes are still in the key store's files"
    );
    assert!(contains(&key_bytes, &bob_key), "bob's key must stay");

    // The backup still holds alice's ciphertext, but with the same custodian keys it does not
    // decrypt any more.
    let restored = Vault::with_stores(
        layout(),
        BTreeMap::from([
            (
                "us-east".to_string(),
                Arc::new(SqliteStore::open(&backup, 1).unwrap()) as Arc<dyn SiteStore>,
            ),
            (
                "sg-legacy".to_string(),
                Arc::new(SqliteStore::open(&dir.path().join("backup/sg.db"), 1).unwrap())
                    as Arc<dyn SiteStore>,
            ),
        ]),
    )
    .unwrap()
    .with_envelope(envelope(dir.path(), &UnwrapReason::ALL));
    assert!(restored.find_subject("alice").unwrap().is_some());
    for reason in UnwrapReason::ALL {
        let err = restored
            .get_record("alice", "profile", "main", reason)
            .unwrap_err();
        assert!(
            matches!(&err, VaultError::Key(KeyError::NoDataKey { subject, site })
                if subject == "alice" && site == "us-east"),
            "{err:?}"
        );
        assert!(!err.to_string().contains("alice@example.com"), "{err}");
    }
    // Only the interoperable part of a backup stays readable, which is what it is for.
    assert_eq!(
        restored
            .get_record_interoperable("alice", "profile", "main")
            .unwrap()
            .unwrap()
            .fields,
        fields(json!({"display_name": "Al"}))
    );
    assert!(
        restored
            .get_record("bob", "profile", "main", ACCESS)
            .is_ok(),
        "the backup's other subjects stay readable"
    );

    // Erasing again finds nothing and is not an error.
    assert_eq!(
        vault.erase_subject("alice").unwrap(),
        Erasure {
            sites: vec![],
            records: 0,
            keys_destroyed: 0,
        }
    );
}

#[test]
fn erasure_reaches_every_site_and_leftover_keys() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path());
    // A legacy copy at the Singapore site and a registered one in the US.
    vault
        .seed_legacy(&["dave".to_string()], "US", "sg-legacy", |_| {
            vec![(
                "profile".into(),
                "old".into(),
                fields(json!({"email": "d"})),
            )]
        })
        .unwrap();
    store(&vault, "us-east")
        .put_subject(&SubjectRow {
            id: "dave".into(),
            jurisdiction: "US".into(),
        })
        .unwrap();
    vault
        .put_record("dave", "profile", "new", fields(json!({"phone": "1"})))
        .unwrap();
    assert_eq!(
        vault.envelope().unwrap().keys_of("dave").unwrap(),
        vec!["sg-legacy", "us-east"]
    );
    let erasure = vault.erase_subject("dave").unwrap();
    assert_eq!(
        erasure,
        Erasure {
            sites: vec!["sg-legacy".into(), "us-east".into()],
            records: 2,
            keys_destroyed: 2,
        }
    );
    assert!(
        snapshot(&vault)
            .iter()
            .all(|(_, subjects, records)| subjects.is_empty() && records.is_empty())
    );
    assert!(matches!(
        vault.erase_subject("a/b"),
        Err(VaultError::InvalidId { .. })
    ));
}

#[test]
fn unwrap_reasons_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let writer = open(dir.path());
    writer.register_subject("alice", "US").unwrap();
    let mixed = fields(json!({"email": "a@x", "display_name": "Al"}));
    let open_only = fields(json!({"display_name": "Al"}));
    writer
        .put_record("alice", "profile", "mixed", mixed.clone())
        .unwrap();
    writer
        .put_record("alice", "profile", "open", open_only.clone())
        .unwrap();

    // An empty list denies every unwrap.
    let none = open_allowing(dir.path(), &[]);
    for reason in UnwrapReason::ALL {
        let err = none
            .get_record("alice", "profile", "mixed", reason)
            .unwrap_err();
        assert!(
            matches!(&err, VaultError::Key(KeyError::ReasonNotAllowed { reason: r, .. }) if *r == reason),
            "{err:?}"
        );
        assert!(!err.to_string().contains("a@x"), "{err}");
        // A record without protected fields needs no unwrap, so any reason reads it.
        assert_eq!(
            none.get_record("alice", "profile", "open", reason)
                .unwrap()
                .unwrap()
                .fields,
            open_only
        );
    }
    // The interoperable part of a mixed record never needs a key.
    assert_eq!(
        none.get_record_interoperable("alice", "profile", "mixed")
            .unwrap()
            .unwrap()
            .fields,
        open_only
    );
    // Writing to a subject whose key exists needs it unwrapped, so that is refused too; an
    // interoperable-only write is not.
    assert!(matches!(
        none.put_record("alice", "profile", "more", fields(json!({"email": "b"}))),
        Err(VaultError::Key(KeyError::ReasonNotAllowed { .. }))
    ));
    none.put_record("alice", "profile", "more", open_only.clone())
        .unwrap();

    // A reason not in the list is refused; one in it is not.
    let migration_only = open_allowing(dir.path(), &[UnwrapReason::Migration]);
    for reason in [UnwrapReason::Access, UnwrapReason::Export] {
        let err = migration_only
            .get_record("alice", "profile", "mixed", reason)
            .unwrap_err();
        assert!(err.to_string().contains("allows only [migration]"), "{err}");
    }
    assert_eq!(
        migration_only
            .get_record("alice", "profile", "mixed", UnwrapReason::Migration)
            .unwrap()
            .unwrap()
            .fields,
        mixed
    );
}

#[test]
fn without_keys_protected_fields_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keyless = Vault::open(layout(), dir.path(), 1).unwrap();
    keyless.register_subject("alice", "US").unwrap();
    let before = snapshot(&keyless);
    let err = keyless
        .put_record("alice", "profile", "main", fields(json!({"email": "a@x"})))
        .unwrap_err();
    assert!(matches!(err, VaultError::NoKeys), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("protected fields need the custodian's key store: "),
        "{err}"
    );
    assert_eq!(snapshot(&keyless), before, "nothing is written");
    // Interoperable fields need no keys.
    let open_only = fields(json!({"display_name": "Al"}));
    keyless
        .put_record("alice", "profile", "open", open_only.clone())
        .unwrap();
    assert_eq!(
        keyless
            .get_record("alice", "profile", "open", ACCESS)
            .unwrap()
            .unwrap()
            .fields,
        open_only
    );

    // A protected field written by a vault with keys is not readable without them.
    let keyed = open(dir.path());
    keyed
        .put_record(
            "alice",
            "profile",
            "main",
            fields(json!({"email": "a@x", "display_name": "Al"})),
        )
        .unwrap();
    assert!(matches!(
        keyless.get_record("alice", "profile", "main", ACCESS),
        Err(VaultError::NoKeys)
    ));
    assert_eq!(
        keyless
            .get_record_interoperable("alice", "profile", "main")
            .unwrap()
            .unwrap()
            .fields,
        open_only
    );
}

/// Writes `fields` directly into a store, around the vault (as an attacker with file access,
/// or a careless tool, would).
fn plant(vault: &Vault, site: &str, subject: &str, collection: &str, key: &str, fields: Value) {
    store(vault, site)
        .put_record(&RecordRow {
            subject: subject.into(),
            collection: collection.into(),
            key: key.into(),
            fields: common::fields(fields),
        })
        .unwrap();
}

fn decrypt_error(vault: &Vault, subject: &str, collection: &str, key: &str) -> KeyError {
    match vault.get_record(subject, collection, key, ACCESS) {
        Err(VaultError::Key(err)) => {
            assert!(!err.to_string().contains("SECRET"), "{err}");
            err
        }
        other => panic!("{subject}/{collection}/{key}: expected a key error, got {other:?}"),
    }
}

#[test]
fn a_ciphertext_only_decrypts_where_it_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path());
    vault.register_subject("alice", "US").unwrap();
    vault.register_subject("bob", "US").unwrap();
    vault
        .put_record(
            "alice",
            "profile",
            "main",
            fields(json!({"email": "SECRET-1", "phone": "p"})),
        )
        .unwrap();
    vault
        .put_record("alice", "profile", "other", fields(json!({"email": "e"})))
        .unwrap();
    vault
        .put_record("alice", "activity", "a", fields(json!({"location": "l"})))
        .unwrap();
    vault
        .put_record("bob", "profile", "main", fields(json!({"email": "b"})))
        .unwrap();
    let us = store(&vault, "us-east");
    let stolen = us.get_record("alice", "profile", "main").unwrap().unwrap()["email"].clone();

    // Another field of the same record.
    plant(
        &vault,
        "us-east",
        "alice",
        "profile",
        "main",
        json!({"email": stolen, "phone": stolen}),
    );
    let err = decrypt_error(&vault, "alice", "profile", "main");
    assert!(
        matches!(&err, KeyError::Decrypt(place) if place.field == "phone" && place.key == "main"),
        "{err:?}"
    );
    // Another record, another collection, another subject.
    for (subject, collection, key, field) in [
        ("alice", "profile", "other", "email"),
        ("alice", "activity", "a", "location"),
        ("bob", "profile", "main", "email"),
    ] {
        plant(
            &vault,
            "us-east",
            subject,
            collection,
            key,
            json!({ field: stolen }),
        );
        let err = decrypt_error(&vault, subject, collection, key);
        assert!(matches!(err, KeyError::Decrypt(_)), "{err:?}");
    }

    // Another site: a legacy copy's ciphertext moved into the allowed site's store.
    vault
        .seed_legacy(&["erin".to_string()], "US", "sg-legacy", |_| {
            vec![(
                "profile".into(),
                "main".into(),
                fields(json!({"email": "SECRET-2"})),
            )]
        })
        .unwrap();
    let legacy_value = store(&vault, "sg-legacy")
        .get_record("erin", "profile", "main")
        .unwrap()
        .unwrap()["email"]
        .clone();
    us.put_subject(&SubjectRow {
        id: "erin".into(),
        jurisdiction: "US".into(),
    })
    .unwrap();
    // Gives erin a data key at us-east.
    vault
        .put_record("erin", "profile", "new", fields(json!({"email": "n"})))
        .unwrap();
    plant(
        &vault,
        "us-east",
        "erin",
        "profile",
        "main",
        json!({ "email": legacy_value }),
    );
    let err = decrypt_error(&vault, "erin", "profile", "main");
    assert!(
        matches!(&err, KeyError::Decrypt(place) if place.site == "us-east"),
        "{err:?}"
    );

    // An altered ciphertext.
    let mut altered = stolen.as_str().unwrap().to_string();
    let last = altered.pop().unwrap();
    altered.push(if last == 'A' { 'B' } else { 'A' });
    plant(
        &vault,
        "us-east",
        "alice",
        "profile",
        "main",
        json!({ "email": altered }),
    );
    assert!(matches!(
        decrypt_error(&vault, "alice", "profile", "main"),
        KeyError::Decrypt(_)
    ));

    // Put back where it was written, it decrypts again.
    plant(
        &vault,
        "us-east",
        "alice",
        "profile",
        "main",
        json!({ "email": stolen }),
    );
    assert_eq!(
        vault
            .get_record("alice", "profile", "main", ACCESS)
            .unwrap()
            .unwrap()
            .fields,
        fields(json!({"email": "SECRET-1"}))
    );
}
