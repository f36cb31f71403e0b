//! Property: whatever the layout and whatever calls are made, the vault never leaves a
//! subject it registered or a record it wrote at a site the subject's residency rule does not
//! allow; refused calls change nothing; and every acknowledged write can be read back where the
//! vault said it went.
//!
//! Each case builds a random layout over real SQLite files, plants some subjects directly in
//! the stores (possibly at sites their rule does not allow, as legacy data would be), runs a
//! random sequence of vault calls (valid and invalid), then reads every store directly.
//! Protected fields are stored encrypted, so what a store holds is compared with what was
//! written after decrypting through the vault.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};
use vault::{
    CollectionConfig, DataKeyStore, Envelope, FieldClass, Layout, LocalKeyManager, RecordRow,
    SiteConfig, SiteStore, SubjectRow, UnwrapReason, Vault, VaultError,
};

/// The protected field of the layout below.
const PROTECTED: &str = "email";

const JURISDICTIONS: [&str; 4] = ["AA", "BB", "CC", "DD"];
/// Planted subjects may carry a jurisdiction the configuration does not declare.
const UNDECLARED: &str = "ZZ";
/// The last two are invalid ids.
const SUBJECTS: [&str; 8] = ["s0", "s1", "s2", "s3", "s4", "s5", ".bad", ""];
const COLLECTIONS: [&str; 3] = ["profile", "activity", "nope"];
const KEYS: [&str; 4] = ["k1", "k2", "a.b:c", ".x"];

/// 0 and 1: fields declared in `collection` (for the collections that exist); 2: an
/// undeclared field; 3: no field.
fn field_choice(collection: &str, i: usize) -> Map<String, Value> {
    let value = match (collection, i) {
        ("profile", 0) => json!({"email": "e@x"}),
        ("profile", 1) => json!({"email": "e@x", "name": "N"}),
        (_, 0) => json!({"count": 3}),
        (_, 1) => json!({"count": 4}),
        (_, 2) => json!({"ssn": "123"}),
        _ => json!({}),
    };
    match value {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// `jurisdiction`: 0..4 a declared one, 4 an undeclared one, 5 a well-formed code the
    /// layout does not declare (when there is one).
    Register { subject: usize, jurisdiction: usize },
    Put {
        subject: usize,
        collection: usize,
        key: usize,
        fields: usize,
    },
    Delete {
        subject: usize,
        collection: usize,
        key: usize,
    },
}

#[derive(Debug, Clone)]
struct Scenario {
    jurisdictions: usize,
    /// Per site, an index into the declared jurisdictions (taken modulo their number).
    site_jurisdictions: Vec<usize>,
    /// Per jurisdiction, no rule or a list of site indices (modulo the number of sites).
    rules: Vec<Option<Vec<usize>>>,
    /// (subject, jurisdiction index where 4 means undeclared, site index).
    planted: Vec<(usize, usize, usize)>,
    ops: Vec<Op>,
}

/// Mostly one of the first `valid` choices, sometimes any of `all` (the rest are invalid).
fn pick(valid: usize, all: usize) -> BoxedStrategy<usize> {
    prop_oneof![4 => 0..valid, 1 => 0..all].boxed()
}

fn op() -> impl Strategy<Value = Op> {
    // Few subjects, so calls meet the same subjects often.
    let subject = || pick(3, SUBJECTS.len());
    prop_oneof![
        3 => (subject(), pick(4, 6))
            .prop_map(|(subject, jurisdiction)| Op::Register { subject, jurisdiction }),
        4 => (subject(), pick(2, COLLECTIONS.len()), pick(3, KEYS.len()), pick(2, 4))
            .prop_map(|(subject, collection, key, fields)| Op::Put { subject, collection, key, fields }),
        1 => (subject(), pick(2, COLLECTIONS.len()), pick(3, KEYS.len()))
            .prop_map(|(subject, collection, key)| Op::Delete { subject, collection, key }),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        1..=4usize,
        prop::collection::vec(0..4usize, 1..=4),
        prop::collection::vec(
            prop::option::weighted(0.75, prop::collection::vec(0..4usize, 1..=4)),
            4,
        ),
        prop::collection::vec((0..6usize, 0..5usize, 0..4usize), 0..=3),
        prop::collection::vec(op(), 1..=24),
    )
        .prop_map(
            |(jurisdictions, site_jurisdictions, rules, planted, ops)| Scenario {
                jurisdictions,
                site_jurisdictions,
                rules,
                planted,
                ops,
            },
        )
}

fn site_name(i: usize) -> String {
    format!("site{i}")
}

fn build_layout(s: &Scenario) -> Layout {
    let n_sites = s.site_jurisdictions.len();
    let declared = &JURISDICTIONS[..s.jurisdictions];
    let mut residency = BTreeMap::new();
    for (j, rule) in s.rules.iter().take(s.jurisdictions).enumerate() {
        if let Some(sites) = rule {
            let mut seen = BTreeSet::new();
            let list: Vec<String> = sites
                .iter()
                .map(|i| i % n_sites)
                .filter(|i| seen.insert(*i))
                .map(site_name)
                .collect();
            residency.insert(declared[j].to_string(), list);
        }
    }
    Layout {
        jurisdictions: declared.iter().map(|j| j.to_string()).collect(),
        sites: s
            .site_jurisdictions
            .iter()
            .enumerate()
            .map(|(i, j)| {
                let config = SiteConfig {
                    jurisdiction: declared[j % s.jurisdictions].to_string(),
                    operator: "op".into(),
                    store: format!("sqlite:site{i}.db"),
                };
                (site_name(i), config)
            })
            .collect(),
        residency,
        collections: [
            (
                "profile".to_string(),
                CollectionConfig::of(
                    [
                        ("email".to_string(), FieldClass::Protected),
                        ("name".to_string(), FieldClass::Interoperable),
                    ]
                    .into(),
                ),
            ),
            (
                "activity".to_string(),
                CollectionConfig::of([("count".to_string(), FieldClass::Interoperable)].into()),
            ),
        ]
        .into(),
    }
}

type Snapshot = Vec<(String, Vec<SubjectRow>, Vec<RecordRow>)>;
/// Records by (subject, collection, key) -> (site, fields).
type Records = BTreeMap<(String, String, String), (String, Map<String, Value>)>;

fn snapshot(vault: &Vault) -> Snapshot {
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

/// How often the interesting outcomes happened over all cases, to show the generator reaches
/// them (a test that never writes or is never refused would prove little).
#[derive(Default)]
struct Seen {
    puts_ok: Cell<usize>,
    violations: Cell<usize>,
    no_rule: Cell<usize>,
    created: Cell<usize>,
}

fn bump(counter: &Cell<usize>) {
    counter.set(counter.get() + 1);
}

fn run(s: &Scenario, seen: &Seen) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let layout = build_layout(s);
    prop_assert_eq!(layout.validate(), vec![]);
    let kek = dir.path().join("kek.hex");
    LocalKeyManager::generate_key_file(&kek).unwrap();
    let envelope = Envelope::new(
        std::sync::Arc::new(LocalKeyManager::from_file(&kek, vec![UnwrapReason::Access]).unwrap()),
        DataKeyStore::open(&dir.path().join("keys.db")).unwrap(),
    );
    let vault = Vault::open(layout.clone(), dir.path(), 1)
        .unwrap()
        .with_envelope(envelope);
    // A stored record's fields, decrypted: the protected one must be ciphertext in the store,
    // and the vault must read the record from the same site.
    let plain = |site: &str, row: &RecordRow| -> Result<Map<String, Value>, TestCaseError> {
        if let Some(stored) = row.fields.get(PROTECTED) {
            prop_assert!(
                stored
                    .as_str()
                    .is_some_and(|s| s.starts_with("sov:enc:v1:")),
                "protected field stored in plaintext at {}",
                site
            );
        }
        let read = vault
            .get_record(
                &row.subject,
                &row.collection,
                &row.key,
                UnwrapReason::Access,
            )
            .unwrap()
            .unwrap();
        prop_assert_eq!(&read.site, site);
        Ok(read.fields)
    };
    let store = |site: &str| -> &dyn SiteStore {
        vault
            .stores()
            .find(|(name, _)| *name == site)
            .unwrap()
            .1
            .as_ref()
    };

    // Legacy data, planted around the vault: subjects only, at any site.
    let mut planted = BTreeSet::new();
    for &(subject, jurisdiction, site) in &s.planted {
        let jurisdiction = if jurisdiction == 4 {
            UNDECLARED
        } else {
            JURISDICTIONS[jurisdiction % s.jurisdictions]
        };
        let site = site_name(site % s.site_jurisdictions.len());
        let row = SubjectRow {
            id: SUBJECTS[subject].into(),
            jurisdiction: jurisdiction.into(),
        };
        store(&site).put_subject(&row).unwrap();
        planted.insert((row.id, site));
    }

    // What the vault acknowledged.
    let mut written = Records::new();
    let mut registered = BTreeSet::new();

    for op in &s.ops {
        let before = snapshot(&vault);
        let failed = match *op {
            Op::Register {
                subject,
                jurisdiction,
            } => {
                let jurisdiction = match jurisdiction {
                    0..=3 => JURISDICTIONS[jurisdiction % s.jurisdictions],
                    5 if s.jurisdictions < 4 => JURISDICTIONS[s.jurisdictions],
                    _ => UNDECLARED,
                };
                match vault.register_subject(SUBJECTS[subject], jurisdiction) {
                    Ok((placement, created)) => {
                        prop_assert_eq!(&placement.jurisdiction, jurisdiction);
                        if created {
                            bump(&seen.created);
                            prop_assert!(layout.allows(jurisdiction, &placement.site));
                            registered.insert((placement.id, placement.site));
                        }
                        false
                    }
                    Err(err) => {
                        if matches!(err, VaultError::NoResidencyRule(_)) {
                            bump(&seen.no_rule);
                        }
                        true
                    }
                }
            }
            Op::Put {
                subject,
                collection,
                key,
                fields,
            } => {
                let (subject, collection, key) =
                    (SUBJECTS[subject], COLLECTIONS[collection], KEYS[key]);
                let fields = field_choice(collection, fields);
                match vault.put_record(subject, collection, key, fields.clone()) {
                    Ok(site) => {
                        bump(&seen.puts_ok);
                        let stored = RecordRow {
                            subject: subject.into(),
                            collection: collection.into(),
                            key: key.into(),
                            fields: store(&site)
                                .get_record(subject, collection, key)
                                .unwrap()
                                .unwrap(),
                        };
                        prop_assert_eq!(plain(&site, &stored)?, fields.clone());
                        written.insert(
                            (subject.into(), collection.into(), key.into()),
                            (site, fields),
                        );
                        false
                    }
                    Err(err) => {
                        // Never a store failure: every refusal here is a rule.
                        prop_assert!(!matches!(err, VaultError::Store(_)), "{}", err);
                        if matches!(err, VaultError::ResidencyViolation { .. }) {
                            bump(&seen.violations);
                        }
                        true
                    }
                }
            }
            Op::Delete {
                subject,
                collection,
                key,
            } => {
                let (subject, collection, key) =
                    (SUBJECTS[subject], COLLECTIONS[collection], KEYS[key]);
                match vault.delete_record(subject, collection, key) {
                    Ok(deleted) => {
                        let had = written
                            .remove(&(subject.into(), collection.into(), key.into()))
                            .is_some();
                        prop_assert_eq!(deleted, had);
                        false
                    }
                    Err(_) => true,
                }
            }
        };
        if failed {
            prop_assert_eq!(
                &snapshot(&vault),
                &before,
                "a refused call changed a store: {:?}",
                op
            );
        }
    }

    // Read every store directly.
    let mut found = BTreeMap::new();
    for (site, subjects, records) in snapshot(&vault) {
        let here: BTreeMap<&str, &str> = subjects
            .iter()
            .map(|r| (r.id.as_str(), r.jurisdiction.as_str()))
            .collect();
        for row in &subjects {
            let key = (row.id.clone(), site.clone());
            if !planted.contains(&key) {
                prop_assert!(
                    layout.allows(&row.jurisdiction, &site),
                    "subject {} of {} at disallowed site {}",
                    row.id,
                    row.jurisdiction,
                    site
                );
                prop_assert!(
                    registered.contains(&key),
                    "subject {} at {} came from nowhere",
                    row.id,
                    site
                );
            }
        }
        for row in records {
            let jurisdiction = here.get(row.subject.as_str()).copied();
            prop_assert!(
                jurisdiction.is_some_and(|j| layout.allows(j, &site)),
                "record {}/{}/{} at site {} where its subject's rule does not allow it ({:?})",
                row.subject,
                row.collection,
                row.key,
                site,
                jurisdiction
            );
            let fields = plain(&site, &row)?;
            found.insert(
                (row.subject, row.collection, row.key),
                (site.clone(), fields),
            );
        }
    }
    for (id, site) in &registered {
        prop_assert!(store(site).get_subject(id).unwrap().is_some());
    }
    // Exactly the acknowledged writes, where the vault said, with the fields written.
    prop_assert_eq!(found, written);
    Ok(())
}

#[test]
fn residency_holds_for_any_layout_and_calls() {
    // The runner is driven by hand (not `proptest!`) so the outcome counts can be checked after
    // all cases.
    let mut runner = TestRunner::new(Config {
        cases: 64,
        // Without `proptest!` there is no source file to persist failures next to.
        failure_persistence: None,
        ..Config::default()
    });
    let seen = Seen::default();
    if let Err(failure) = runner.run(&scenario(), |s| run(&s, &seen)) {
        panic!("{failure}");
    }
    let counts = [
        ("successful puts", seen.puts_ok.get()),
        ("residency violations", seen.violations.get()),
        ("registrations without a rule", seen.no_rule.get()),
        ("subjects created", seen.created.get()),
    ];
    for (what, count) in counts {
        assert!(
            count > 0,
            "no {what} in any case: the generator misses them"
        );
    }
    eprintln!("{counts:?}");
}
