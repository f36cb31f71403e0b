//! A conformance suite every [`SiteStore`] backend must pass, so that the SQLite store and a
//! later PostgreSQL store behave the same to the vault.
//!
//! Built for this crate's tests and, with the `conformance` feature, for other crates:
//!
//! ```ignore
//! vault::conformance::conformance_suite(&|| Arc::new(MyStore::fresh()));
//! vault::conformance::reopen_keeps_data(&|| Arc::new(MyStore::open_same()));
//! ```
//!
//! Each check panics with its name and what went wrong.

// The conformance suite is test code that other crates run: a panic is how it fails.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::store::{HeldRecord, RecordKey, RecordRow, SiteStore, SubjectRow};

/// One check, run on a fresh, empty store.
pub type Check = fn(&dyn SiteStore);

/// The checks run on a fresh, empty store each, by name.
pub const CHECKS: &[(&str, Check)] = &[
    ("empty_store", empty_store),
    ("subject_round_trip", subject_round_trip),
    ("subjects_sorted_by_id", subjects_sorted_by_id),
    ("record_round_trip", record_round_trip),
    ("record_held_with_its_subject", record_held_with_its_subject),
    (
        "record_written_only_where_held",
        record_written_only_where_held,
    ),
    ("record_replace", record_replace),
    ("record_delete", record_delete),
    ("list_records_order", list_records_order),
    ("records_sorted", records_sorted),
    ("delete_subject_removes_all", delete_subject_removes_all),
    (
        "records_after_pages_one_collection",
        records_after_pages_one_collection,
    ),
    ("concurrent_use", concurrent_use),
];

/// Runs every check in [`CHECKS`], each on a new empty store from `make`.
pub fn conformance_suite(make: &dyn Fn() -> Arc<dyn SiteStore>) {
    for (name, check) in CHECKS {
        // Printed so that a failing assertion can be traced to its check.
        eprintln!("store conformance: {name}");
        let store = make();
        check(store.as_ref());
    }
}

/// Writes through one store from `open`, drops it, and reads through a second one from
/// `open`. `open` must return the same, initially empty, underlying storage each time.
pub fn reopen_keeps_data(open: &dyn Fn() -> Arc<dyn SiteStore>) {
    let first = open();
    first.put_subject(&subject("alice", "US")).unwrap();
    first.put_subject(&subject("bob", "SG")).unwrap();
    first
        .put_record(&record("alice", "profile", "main", sample_fields()))
        .unwrap();
    first
        .put_record(&record("alice", "activity", "a1", fields(json!({"n": 1}))))
        .unwrap();
    first
        .put_record(&record("bob", "profile", "gone", fields(json!({"n": 2}))))
        .unwrap();
    assert!(first.delete_record("bob", "profile", "gone").unwrap());
    drop(first);

    let second = open();
    assert_eq!(
        second.subjects().unwrap(),
        vec![subject("alice", "US"), subject("bob", "SG")],
        "reopen_keeps_data: subjects"
    );
    assert_eq!(
        second.get_record("alice", "profile", "main").unwrap(),
        Some(sample_fields()),
        "reopen_keeps_data: record fields"
    );
    assert_eq!(
        second.list_records("alice").unwrap(),
        vec![key("activity", "a1"), key("profile", "main")],
        "reopen_keeps_data: records of alice"
    );
    assert_eq!(
        second.get_record("bob", "profile", "gone").unwrap(),
        None,
        "reopen_keeps_data: a deleted record stays deleted"
    );
}

fn empty_store(store: &dyn SiteStore) {
    assert_eq!(store.subjects().unwrap(), vec![], "empty_store: subjects");
    assert_eq!(store.records().unwrap(), vec![], "empty_store: records");
    assert_eq!(
        store.get_subject("nobody").unwrap(),
        None,
        "empty_store: get_subject"
    );
    assert_eq!(
        store.get_record("nobody", "c", "k").unwrap(),
        None,
        "empty_store: get_record"
    );
    assert_eq!(
        store.list_records("nobody").unwrap(),
        vec![],
        "empty_store: list_records"
    );
    assert!(
        !store.delete_record("nobody", "c", "k").unwrap(),
        "empty_store: delete_record"
    );
}

fn subject_round_trip(store: &dyn SiteStore) {
    store.put_subject(&subject("alice", "US")).unwrap();
    assert_eq!(
        store.get_subject("alice").unwrap(),
        Some(subject("alice", "US")),
        "subject_round_trip: get after put"
    );
    assert_eq!(
        store.get_subject("Alice").unwrap(),
        None,
        "subject_round_trip: ids are case-sensitive"
    );
    store.put_subject(&subject("alice", "SG")).unwrap();
    assert_eq!(
        store.subjects().unwrap(),
        vec![subject("alice", "SG")],
        "subject_round_trip: put replaces, never duplicates"
    );
}

fn subjects_sorted_by_id(store: &dyn SiteStore) {
    for id in ["m", "b:2", "Z", "b.1", "a-9"] {
        store.put_subject(&subject(id, "US")).unwrap();
    }
    let ids: Vec<String> = store
        .subjects()
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "subjects_sorted_by_id");
    assert_eq!(ids.len(), 5, "subjects_sorted_by_id: count");
}

fn record_round_trip(store: &dyn SiteStore) {
    store
        .put_record(&record("alice", "profile", "main", sample_fields()))
        .unwrap();
    assert_eq!(
        store.get_record("alice", "profile", "main").unwrap(),
        Some(sample_fields()),
        "record_round_trip: fields come back as written"
    );
    for (s, c, k) in [
        ("bob", "profile", "main"),
        ("alice", "activity", "main"),
        ("alice", "profile", "other"),
    ] {
        assert_eq!(
            store.get_record(s, c, k).unwrap(),
            None,
            "record_round_trip: {s}/{c}/{k} must not exist"
        );
    }
    store
        .put_record(&record("alice", "profile", "empty", Map::new()))
        .unwrap();
    assert_eq!(
        store.get_record("alice", "profile", "empty").unwrap(),
        Some(Map::new()),
        "record_round_trip: a record with no fields"
    );
}

fn record_held_with_its_subject(store: &dyn SiteStore) {
    assert_eq!(
        store.get_record_held("alice", "profile", "main").unwrap(),
        None,
        "record_held_with_its_subject: no subject, nothing held"
    );
    // A record without its subject row (as a store may hold mid-migration) is not held.
    store
        .put_record(&record("alice", "profile", "main", sample_fields()))
        .unwrap();
    assert_eq!(
        store.get_record_held("alice", "profile", "main").unwrap(),
        None,
        "record_held_with_its_subject: a record without its subject row"
    );
    store.put_subject(&subject("alice", "US")).unwrap();
    assert_eq!(
        store.get_record_held("alice", "profile", "main").unwrap(),
        Some(HeldRecord {
            jurisdiction: "US".into(),
            fields: Some(sample_fields()),
        }),
        "record_held_with_its_subject: the subject and its record"
    );
    assert_eq!(
        store.get_record_held("alice", "profile", "other").unwrap(),
        Some(HeldRecord {
            jurisdiction: "US".into(),
            fields: None,
        }),
        "record_held_with_its_subject: the subject without that record"
    );
    store.delete_subject("alice").unwrap();
    assert_eq!(
        store.get_record_held("alice", "profile", "main").unwrap(),
        None,
        "record_held_with_its_subject: gone with its subject"
    );
}

fn record_written_only_where_held(store: &dyn SiteStore) {
    let row = record("alice", "profile", "main", sample_fields());
    assert!(
        !store.put_record_held(&row, "US").unwrap(),
        "record_written_only_where_held: no subject, no write"
    );
    assert_eq!(store.get_record("alice", "profile", "main").unwrap(), None);
    store.put_subject(&subject("alice", "US")).unwrap();
    assert!(
        !store.put_record_held(&row, "EU").unwrap(),
        "record_written_only_where_held: another jurisdiction, no write"
    );
    assert_eq!(store.get_record("alice", "profile", "main").unwrap(), None);
    assert!(store.put_record_held(&row, "US").unwrap());
    let replaced = record("alice", "profile", "main", fields(json!({"n": 2})));
    assert!(
        store.put_record_held(&replaced, "US").unwrap(),
        "record_written_only_where_held: replaces"
    );
    assert_eq!(
        store.get_record("alice", "profile", "main").unwrap(),
        Some(replaced.fields),
        "record_written_only_where_held: the replacement is read back"
    );
}

fn record_replace(store: &dyn SiteStore) {
    store
        .put_record(&record(
            "alice",
            "profile",
            "main",
            fields(json!({"email": "a@x", "phone": "1"})),
        ))
        .unwrap();
    store
        .put_record(&record(
            "alice",
            "profile",
            "main",
            fields(json!({"email": "b@x"})),
        ))
        .unwrap();
    assert_eq!(
        store.get_record("alice", "profile", "main").unwrap(),
        Some(fields(json!({"email": "b@x"}))),
        "record_replace: the second write replaces the whole record"
    );
    assert_eq!(store.records().unwrap().len(), 1, "record_replace: one row");
}

fn record_delete(store: &dyn SiteStore) {
    store
        .put_record(&record("alice", "profile", "main", sample_fields()))
        .unwrap();
    store
        .put_record(&record("alice", "profile", "keep", sample_fields()))
        .unwrap();
    assert!(
        store.delete_record("alice", "profile", "main").unwrap(),
        "record_delete: first delete"
    );
    assert_eq!(
        store.get_record("alice", "profile", "main").unwrap(),
        None,
        "record_delete: gone"
    );
    assert!(
        !store.delete_record("alice", "profile", "main").unwrap(),
        "record_delete: second delete"
    );
    assert_eq!(
        store.get_record("alice", "profile", "keep").unwrap(),
        Some(sample_fields()),
        "record_delete: other records stay"
    );
}

fn list_records_order(store: &dyn SiteStore) {
    for (c, k) in [
        ("profile", "b"),
        ("activity", "z"),
        ("profile", "a"),
        ("activity", "c"),
        ("profile", "B"),
    ] {
        store
            .put_record(&record("alice", c, k, Map::new()))
            .unwrap();
    }
    store
        .put_record(&record("bob", "profile", "a", Map::new()))
        .unwrap();
    assert_eq!(
        store.list_records("alice").unwrap(),
        vec![
            key("activity", "c"),
            key("activity", "z"),
            key("profile", "B"),
            key("profile", "a"),
            key("profile", "b"),
        ],
        "list_records_order: sorted by collection, then key; only this subject's"
    );
    assert_eq!(
        store.list_records("carol").unwrap(),
        vec![],
        "list_records_order: unknown subject"
    );
}

fn records_sorted(store: &dyn SiteStore) {
    let written = [
        ("bob", "profile", "a"),
        ("alice", "profile", "b"),
        ("alice", "activity", "x"),
        ("alice", "profile", "a"),
    ];
    for (i, (s, c, k)) in written.iter().enumerate() {
        store
            .put_record(&record(s, c, k, fields(json!({ "i": i }))))
            .unwrap();
    }
    let rows = store.records().unwrap();
    let names: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| (r.subject.as_str(), r.collection.as_str(), r.key.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("alice", "activity", "x"),
            ("alice", "profile", "a"),
            ("alice", "profile", "b"),
            ("bob", "profile", "a"),
        ],
        "records_sorted"
    );
    assert_eq!(
        rows[0].fields,
        fields(json!({"i": 2})),
        "records_sorted: fields travel with their row"
    );
}

fn delete_subject_removes_all(store: &dyn SiteStore) {
    store.put_subject(&subject("alice", "US")).unwrap();
    store.put_subject(&subject("bob", "US")).unwrap();
    for (s, c, k) in [
        ("alice", "profile", "main"),
        ("alice", "activity", "a1"),
        ("bob", "profile", "main"),
    ] {
        store.put_record(&record(s, c, k, sample_fields())).unwrap();
    }
    // A record whose subject row is missing (left by another tool) goes too.
    store
        .put_record(&record("orphan", "profile", "main", Map::new()))
        .unwrap();
    assert!(
        store.delete_subject("alice").unwrap(),
        "delete_subject: something was deleted"
    );
    assert_eq!(
        store.get_subject("alice").unwrap(),
        None,
        "delete_subject: subject row gone"
    );
    assert_eq!(
        store.list_records("alice").unwrap(),
        vec![],
        "delete_subject: records gone"
    );
    assert_eq!(
        store.get_subject("bob").unwrap(),
        Some(subject("bob", "US")),
        "delete_subject: other subjects stay"
    );
    assert_eq!(
        store.list_records("bob").unwrap(),
        vec![key("profile", "main")],
        "delete_subject: other subjects' records stay"
    );
    assert!(
        !store.delete_subject("alice").unwrap(),
        "delete_subject: a second delete finds nothing"
    );
    assert!(
        store.delete_subject("orphan").unwrap(),
        "delete_subject: records without a subject row"
    );
    assert_eq!(
        store.list_records("orphan").unwrap(),
        vec![],
        "delete_subject: orphan records gone"
    );
    assert!(
        !store.delete_subject("nobody").unwrap(),
        "delete_subject: unknown subject"
    );
}

fn records_after_pages_one_collection(store: &dyn SiteStore) {
    // Mixed case and punctuation: the order is by bytes ("B" < "a", "a-1" < "a.1" < "a:1").
    let written = [
        ("bob", "profile", "a"),
        ("alice", "profile", "b"),
        ("alice", "activity", "x"),
        ("alice", "profile", "a"),
        ("Zed", "profile", "z"),
        ("a.1", "profile", "k"),
        ("a-1", "profile", "k"),
        ("a:1", "profile", "k"),
        ("alice", "profile", "B"),
        ("carol", "activity", "y"),
    ];
    for (i, (s, c, k)) in written.iter().enumerate() {
        store
            .put_record(&record(s, c, k, fields(json!({ "i": i }))))
            .unwrap();
    }
    let mut expected: Vec<(String, String)> = written
        .iter()
        .filter(|(_, c, _)| *c == "profile")
        .map(|(s, _, k)| (s.to_string(), k.to_string()))
        .collect();
    expected.sort();

    let all = store.records_after("profile", None, 100).unwrap();
    let names: Vec<(String, String)> = all
        .iter()
        .map(|r| (r.subject.clone(), r.key.clone()))
        .collect();
    assert_eq!(
        names, expected,
        "records_after_pages_one_collection: one page, sorted by subject then key as bytes"
    );
    assert!(
        all.iter().all(|r| r.collection == "profile"),
        "records_after_pages_one_collection: only the collection asked for"
    );
    assert_eq!(
        all[0].fields,
        fields(json!({"i": 4})),
        "records_after_pages_one_collection: fields travel with their row"
    );

    for limit in 1..=3 {
        let mut seen = Vec::new();
        let mut after: Option<(String, String)> = None;
        loop {
            let page = store
                .records_after(
                    "profile",
                    after.as_ref().map(|(s, k)| (s.as_str(), k.as_str())),
                    limit,
                )
                .unwrap();
            assert!(
                page.len() <= limit,
                "records_after_pages_one_collection: a page holds at most `limit` rows"
            );
            let Some(last) = page.last() else { break };
            after = Some((last.subject.clone(), last.key.clone()));
            seen.extend(page.into_iter().map(|r| (r.subject, r.key)));
        }
        assert_eq!(
            seen, expected,
            "records_after_pages_one_collection: paging by {limit} visits every record once"
        );
    }
    // Starting after a (subject, key) that does not exist.
    let rest = store
        .records_after("profile", Some(("alice", "c")), 100)
        .unwrap();
    assert_eq!(
        rest.first().map(|r| (r.subject.as_str(), r.key.as_str())),
        Some(("bob", "a")),
        "records_after_pages_one_collection: resumes after a position that is not a row"
    );
    assert_eq!(
        store.records_after("nope", None, 10).unwrap(),
        vec![],
        "records_after_pages_one_collection: unknown collection"
    );
    assert_eq!(
        store.records_after("profile", None, 0).unwrap(),
        vec![],
        "records_after_pages_one_collection: limit 0"
    );
}

fn concurrent_use(store: &dyn SiteStore) {
    // Writers and readers at once: every write is visible to its writer's next read.
    std::thread::scope(|scope| {
        for t in 0..4 {
            scope.spawn(move || {
                let id = format!("subject-{t}");
                store.put_subject(&subject(&id, "US")).unwrap();
                for i in 0..10 {
                    let k = format!("k{i:02}");
                    let f = fields(json!({ "thread": t, "i": i }));
                    store.put_record(&record(&id, "c", &k, f.clone())).unwrap();
                    assert_eq!(
                        store.get_record(&id, "c", &k).unwrap(),
                        Some(f),
                        "concurrent_use: read after write"
                    );
                    store.subjects().unwrap();
                }
            });
        }
    });
    assert_eq!(
        store.subjects().unwrap().len(),
        4,
        "concurrent_use: subjects"
    );
    assert_eq!(
        store.records().unwrap().len(),
        40,
        "concurrent_use: records"
    );
}

fn subject(id: &str, jurisdiction: &str) -> SubjectRow {
    SubjectRow {
        id: id.into(),
        jurisdiction: jurisdiction.into(),
    }
}

fn key(collection: &str, key: &str) -> RecordKey {
    RecordKey {
        collection: collection.into(),
        key: key.into(),
    }
}

fn record(subject: &str, collection: &str, key: &str, fields: Map<String, Value>) -> RecordRow {
    RecordRow {
        subject: subject.into(),
        collection: collection.into(),
        key: key.into(),
        fields,
    }
}

fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("fields must be a JSON object"),
    }
}

/// Values of every JSON kind, including text that needs escaping.
fn sample_fields() -> Map<String, Value> {
    fields(json!({
        "email": "a@example.com",
        "name": "Zoë \"Z\" O'Brien\n\u{1F600}",
        "age": 41,
        "ratio": 0.25,
        "big": -9_007_199_254_740_993i64,
        "verified": true,
        "nothing": null,
        "tags": ["x", 1, {"deep": [null]}],
        "nested": {"a": {"b": "c"}}
    }))
}
