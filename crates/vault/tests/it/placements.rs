//! Remembered placements: never trusted alone for data. Two vaults over the same files stand
//! for two gateways sharing site stores.

use crate::common;

use common::{fields, open};
use serde_json::json;
use vault::{UnwrapReason, Vault, VaultError};

const ACCESS: UnwrapReason = UnwrapReason::Access;

fn profile(email: &str) -> serde_json::Map<String, serde_json::Value> {
    fields(json!({"email": email, "display_name": "Al"}))
}

fn record_at(
    vault: &Vault,
    site: &str,
    subject: &str,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let (_, store) = vault.stores().find(|(name, _)| *name == site).unwrap();
    store.get_record(subject, "profile", "main").unwrap()
}

#[test]
fn erasure_forgets_a_placement_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path());
    vault.register_subject("alice", "US").unwrap();
    vault
        .put_record("alice", "profile", "main", profile("a@example.com"))
        .unwrap();
    assert_eq!(
        vault.locate_subject("alice").unwrap().unwrap().site,
        "us-east"
    );
    assert!(vault.remembered_placement("alice").is_some());
    vault.erase_subject("alice").unwrap();
    assert_eq!(vault.remembered_placement("alice"), None);
    assert_eq!(vault.locate_subject("alice").unwrap(), None);
    assert!(matches!(
        vault.get_record("alice", "profile", "main", ACCESS),
        Err(VaultError::SubjectNotFound(_))
    ));
}

#[test]
fn legacy_placements_are_not_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let vault = open(dir.path());
    vault
        .seed_legacy(&["old".to_string()], "US", "sg-legacy", |_| vec![])
        .unwrap();
    let found = vault.locate_subject("old").unwrap().unwrap();
    assert!(!found.allowed);
    assert_eq!(vault.remembered_placement("old"), None);
}

#[test]
fn a_read_at_a_remembered_site_that_no_longer_holds_the_subject_finds_it_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let ours = open(dir.path());
    let theirs = open(dir.path());
    ours.register_subject("alice", "US").unwrap();
    ours.put_record("alice", "profile", "main", profile("us@example.com"))
        .unwrap();
    ours.get_record("alice", "profile", "main", ACCESS).unwrap();
    assert_eq!(ours.remembered_placement("alice").unwrap().site, "us-east");

    // The other gateway erases her and registers the id again, in another jurisdiction.
    theirs.erase_subject("alice").unwrap();
    theirs.register_subject("alice", "SG").unwrap();
    theirs
        .put_record("alice", "profile", "main", profile("sg@example.com"))
        .unwrap();

    let read = ours
        .get_record("alice", "profile", "main", ACCESS)
        .unwrap()
        .unwrap();
    assert_eq!(read.site, "sg-legacy");
    assert_eq!(read.fields["email"], "sg@example.com");
    let remembered = ours.remembered_placement("alice").unwrap();
    assert_eq!(
        (remembered.jurisdiction.as_str(), remembered.site.as_str()),
        ("SG", "sg-legacy")
    );

    // Erased for good: the read says so, rather than answering from memory.
    theirs.erase_subject("alice").unwrap();
    assert!(matches!(
        ours.get_record("alice", "profile", "main", ACCESS),
        Err(VaultError::SubjectNotFound(_))
    ));
    assert_eq!(ours.remembered_placement("alice"), None);
}

#[test]
fn a_write_at_a_remembered_site_that_no_longer_holds_the_subject_writes_nothing_there() {
    let dir = tempfile::tempdir().unwrap();
    let ours = open(dir.path());
    let theirs = open(dir.path());
    ours.register_subject("bob", "US").unwrap();
    assert!(ours.locate_subject("bob").unwrap().is_some());
    theirs.erase_subject("bob").unwrap();

    assert!(matches!(
        ours.put_record("bob", "profile", "main", profile("b@example.com")),
        Err(VaultError::SubjectNotFound(_))
    ));
    // No orphan record under an erased subject.
    assert_eq!(record_at(&theirs, "us-east", "bob"), None);
    assert_eq!(ours.remembered_placement("bob"), None);

    // Registered again elsewhere: the write goes where the subject is now.
    theirs.register_subject("bob", "SG").unwrap();
    assert_eq!(
        ours.put_record("bob", "profile", "main", profile("b@example.com"))
            .unwrap(),
        "sg-legacy"
    );
    assert_eq!(record_at(&theirs, "us-east", "bob"), None);
    assert!(record_at(&theirs, "sg-legacy", "bob").is_some());
}
