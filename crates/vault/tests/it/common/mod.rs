//! What the vault's integration tests share: the reference layout, a vault over real SQLite
//! files with the custodian's keys in the same temporary folder, and store helpers.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};
use vault::{
    CollectionConfig, DataKeyStore, Envelope, FieldClass, KeyManager, Layout, LocalKeyManager,
    RecordRow, SiteConfig, SiteStore, SubjectRow, UnwrapReason, Vault,
};

pub fn site(jurisdiction: &str, operator: &str, store: &str) -> SiteConfig {
    SiteConfig {
        jurisdiction: jurisdiction.into(),
        operator: operator.into(),
        store: store.into(),
    }
}

pub fn collection(fields: &[(&str, FieldClass)]) -> CollectionConfig {
    CollectionConfig::of(fields.iter().map(|(n, c)| (n.to_string(), *c)).collect())
}

/// The reference scenario, plus a rule for `SG` so a conflict between two placeable
/// jurisdictions can be shown. `CN` has no rule.
pub fn layout() -> Layout {
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

pub fn kek_path(dir: &Path) -> PathBuf {
    dir.join("custodian/kek.hex")
}

pub fn key_store_path(dir: &Path) -> PathBuf {
    dir.join("custodian/keys.db")
}

/// The custodian's key manager of `dir` (made on first use), allowing `allowed`.
pub fn manager(dir: &Path, allowed: &[UnwrapReason]) -> Arc<dyn KeyManager> {
    let path = kek_path(dir);
    if !path.exists() {
        LocalKeyManager::generate_key_file(&path).unwrap();
    }
    Arc::new(LocalKeyManager::from_file(&path, allowed.to_vec()).unwrap())
}

/// The custodian's keys of `dir`, allowing `allowed`.
pub fn envelope(dir: &Path, allowed: &[UnwrapReason]) -> Envelope {
    Envelope::new(
        manager(dir, allowed),
        DataKeyStore::open(&key_store_path(dir)).unwrap(),
    )
}

/// The reference vault in `dir`, with keys that allow every reason.
pub fn open(dir: &Path) -> Vault {
    open_allowing(dir, &UnwrapReason::ALL)
}

pub fn open_allowing(dir: &Path, allowed: &[UnwrapReason]) -> Vault {
    Vault::open(layout(), dir, 2)
        .unwrap()
        .with_envelope(envelope(dir, allowed))
}

pub fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("not an object"),
    }
}

pub fn store<'v>(vault: &'v Vault, site: &str) -> &'v Arc<dyn SiteStore> {
    vault.stores().find(|(name, _)| *name == site).unwrap().1
}

pub type Snapshot = Vec<(String, Vec<SubjectRow>, Vec<RecordRow>)>;

/// Every store's full contents, to show that a refused call wrote nothing.
pub fn snapshot(vault: &Vault) -> Snapshot {
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

/// The bytes of a SQLite file and its WAL, as a copy of the disk would hold them.
pub fn file_bytes(db: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(db).unwrap();
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    if let Ok(more) = std::fs::read(PathBuf::from(wal)) {
        bytes.extend(more);
    }
    bytes
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Copies a SQLite file and its WAL (if any) to `to`, as a backup taken at this moment would.
pub fn copy_store(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap();
    let mut wal = from.as_os_str().to_owned();
    wal.push("-wal");
    let mut wal_copy = to.as_os_str().to_owned();
    wal_copy.push("-wal");
    if Path::new(&wal).exists() {
        std::fs::copy(&wal, &wal_copy).unwrap();
    }
}
