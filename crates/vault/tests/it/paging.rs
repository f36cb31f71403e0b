//! `records_page`: a resumable walk over every site's records of one collection, with only
//! the interoperable fields.

use crate::common;

use common::{fields, layout, open};
use serde_json::{Map, Value, json};
use vault::{Cursor, MAX_PAGE_SIZE, RecordRow, Vault, VaultError};

/// (site, subject, key, fields) as a page row.
type Row = (String, String, String, Map<String, Value>);

fn filled(dir: &std::path::Path) -> Vault {
    let vault = open(dir);
    for (i, id) in ["u-b", "U-a", "u.c", "u:d"].iter().enumerate() {
        vault.register_subject(id, "US").unwrap();
        for key in ["k2", "K1", "k10"] {
            vault
                .put_record(
                    id,
                    "profile",
                    key,
                    fields(json!({"email": format!("SECRET-{id}-{key}"), "display_name": format!("{id}/{key}")})),
                )
                .unwrap();
        }
        vault
            .put_record(
                id,
                "activity",
                "a",
                fields(json!({"public_video_count": i})),
            )
            .unwrap();
    }
    vault.register_subject("s1", "SG").unwrap();
    vault
        .put_record(
            "s1",
            "profile",
            "main",
            fields(json!({"display_name": "s1/main"})),
        )
        .unwrap();
    // A record with only a protected field still appears, with no fields.
    vault
        .put_record(
            "s1",
            "profile",
            "hidden",
            fields(json!({"phone": "SECRET"})),
        )
        .unwrap();
    vault
        .seed_legacy(&["legacy".to_string()], "US", "sg-legacy", |id| {
            vec![(
                "profile".into(),
                "old".into(),
                fields(json!({"email": "SECRET-legacy", "display_name": format!("{id}/old")})),
            )]
        })
        .unwrap();
    vault
}

/// What the stores hold, in the promised order, reduced to interoperable fields.
fn expected(vault: &Vault) -> Vec<Row> {
    let mut rows = Vec::new();
    for (site, store) in vault.stores() {
        let mut here: Vec<RecordRow> = store
            .records()
            .unwrap()
            .into_iter()
            .filter(|r| r.collection == "profile")
            .collect();
        here.sort_by(|a, b| (&a.subject, &a.key).cmp(&(&b.subject, &b.key)));
        for r in here {
            let open: Map<String, Value> = r
                .fields
                .into_iter()
                .filter(|(name, _)| name == "display_name")
                .collect();
            rows.push((site.to_string(), r.subject, r.key, open));
        }
    }
    let mut sorted = rows.clone();
    sorted.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
    assert_eq!(rows, sorted, "sites are visited in name order");
    rows
}

fn walk(vault: &Vault, collection: &str, limit: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut cursor: Option<Cursor> = None;
    let mut pages = 0;
    loop {
        let (page, next) = vault
            .records_page(collection, cursor.as_ref(), limit)
            .unwrap();
        pages += 1;
        assert!(page.len() <= limit);
        for (subject, site, row) in page {
            assert_eq!(subject, row.subject);
            assert_eq!(row.collection, collection);
            rows.push((site, row.subject, row.key, row.fields));
        }
        match next {
            // Through its text form, as a client would hand it back.
            Some(next) => cursor = Some(Cursor::parse(&next.to_string()).unwrap()),
            None => break,
        }
        assert!(pages < 1000, "paging does not end");
    }
    rows
}

#[test]
fn pages_visit_every_record_once_with_interoperable_fields_only() {
    let dir = tempfile::tempdir().unwrap();
    let vault = filled(dir.path());
    let expected = expected(&vault);
    assert_eq!(expected.len(), 4 * 3 + 2 + 1);
    assert!(
        expected.iter().any(|r| r.0 == "sg-legacy") && expected.iter().any(|r| r.0 == "us-east")
    );
    for limit in [
        1,
        2,
        3,
        7,
        expected.len() - 1,
        expected.len(),
        MAX_PAGE_SIZE,
    ] {
        let rows = walk(&vault, "profile", limit);
        assert_eq!(rows, expected, "limit {limit}");
        for (_, _, _, fields) in &rows {
            assert!(
                fields.keys().all(|name| name == "display_name"),
                "{fields:?}"
            );
            assert!(!json!(fields).to_string().contains("SECRET"));
            assert!(!json!(fields).to_string().contains("sov:enc"));
        }
    }
    // One exact page: no cursor follows.
    let (page, next) = vault.records_page("profile", None, expected.len()).unwrap();
    assert_eq!((page.len(), next), (expected.len(), None));

    // Another collection pages alone.
    assert_eq!(walk(&vault, "activity", 2).len(), 4);
}

#[test]
fn a_walk_resumes_from_a_cursor_even_in_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let vault = filled(dir.path());
    let all = walk(&vault, "profile", 100);
    let (first, next) = vault.records_page("profile", None, 5).unwrap();
    let token = next.unwrap().to_string();
    drop(vault);

    // No keys needed: the walk never unwraps anything.
    let keyless = Vault::open(layout(), dir.path(), 1).unwrap();
    let cursor = Cursor::parse(&token).unwrap();
    let (second, _) = keyless.records_page("profile", Some(&cursor), 5).unwrap();
    let names = |page: &[(String, String, RecordRow)]| -> Vec<(String, String, String)> {
        page.iter()
            .map(|(subject, site, row)| (site.clone(), subject.clone(), row.key.clone()))
            .collect()
    };
    let expected: Vec<(String, String, String)> = all
        .iter()
        .map(|(site, subject, key, _)| (site.clone(), subject.clone(), key.clone()))
        .collect();
    assert_eq!(names(&first), expected[..5]);
    assert_eq!(names(&second), expected[5..10]);

    // A record added behind the cursor is not revisited; one ahead of it is found.
    let vault = open(dir.path());
    vault
        .put_record(
            "U-a",
            "profile",
            "A0",
            fields(json!({"display_name": "behind"})),
        )
        .unwrap();
    vault
        .put_record(
            "u:d",
            "profile",
            "z9",
            fields(json!({"display_name": "ahead"})),
        )
        .unwrap();
    let mut rest = Vec::new();
    let mut cursor = Some(Cursor::parse(&token).unwrap());
    while let Some(c) = cursor {
        let (page, next) = vault.records_page("profile", Some(&c), 3).unwrap();
        rest.extend(page.into_iter().map(|(_, _, row)| row.fields));
        cursor = next;
    }
    let texts: Vec<String> = rest.iter().map(|f| json!(f).to_string()).collect();
    assert!(texts.iter().any(|t| t.contains("ahead")));
    assert!(!texts.iter().any(|t| t.contains("behind")));
}

#[test]
fn bad_requests_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let vault = filled(dir.path());
    for text in ["", "not a cursor", "djE", "dj!/x", &"A".repeat(5000)] {
        let err = Cursor::parse(text).unwrap_err();
        assert!(matches!(err, VaultError::InvalidPage(_)), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("invalid page request: the cursor is malformed"),
            "{err}"
        );
        let via_from_str = text.parse::<Cursor>();
        assert!(via_from_str.is_err());
    }
    let (_, next) = vault.records_page("activity", None, 1).unwrap();
    let err = vault.records_page("profile", next.as_ref(), 1).unwrap_err();
    assert!(
        err.to_string().contains("issued for collection `activity`"),
        "{err}"
    );
    for limit in [0, MAX_PAGE_SIZE + 1] {
        let err = vault.records_page("profile", None, limit).unwrap_err();
        assert!(
            matches!(&err, VaultError::InvalidPage(m) if m.contains("1 to 1000")),
            "{err:?}"
        );
    }
    assert!(matches!(
        vault.records_page("medical", None, 10),
        Err(VaultError::UnknownCollection(_))
    ));
    // An empty collection: nothing, and no cursor.
    let empty = tempfile::tempdir().unwrap();
    let (page, next) = open(empty.path())
        .records_page("profile", None, 10)
        .unwrap();
    assert!(page.is_empty() && next.is_none());
}
