//! What a data subject's history costs: building the index of log entries by subject
//! pseudonym (`logstore::SubjectIndex` with the gateway's `index_keys`), as a gateway does for
//! a log it has not read (a first start after an upgrade, a deleted index), and one page of a
//! subject's history, built as `pipeline/history.rs` builds it (index query, each entry read,
//! shown and proven) and checked as `sovereign subject verify` checks it.
//!
//! Run: `cargo bench -p gateway --bench history` (`HISTORY_BENCH_ENTRIES` sets the log's size,
//! 200,000 by default). Figures are printed as one table at the end.

// A benchmark: a panic is how it fails.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use gateway::pipeline::history::{INDEX_RULE, index_keys};
use logstore::{Log, LogOptions, SubjectIndex};
use monitor::subject::{History, HistoryEntry, HistoryPage, Trust, check_history, shown};
use tlog::note::Signer;

/// An access entry as the gateway writes one (about 850 bytes), about one of `subjects`.
fn entry(i: u64, subjects: u64) -> Vec<u8> {
    format!(
        r#"{{"v":2,"kind":"access","time":"2026-12-07T10:00:00.000Z","principal":{{"id":"alice","entity":"usds","entity_country":"US","location":"US","clearance":["us-data"],"roles":["engineer"],"network_zone":""}},"action":"read","subject":"{:032x}","subject_jurisdiction":"US","site":"us-east","site_jurisdiction":"US","collection":"profile","approval_required":false,"suspended":false,"fields":["birthdate","display_name","email","phone"],"outcome":"allow","decisions":[{{"field_class":"protected","allowed":true,"policies":["permit-usds-vetted-data"]}},{{"field_class":"interoperable","allowed":true,"policies":["permit-usds-vetted-data"]}}],"policies":["permit-usds-vetted-data"],"policy_set":"{}","purpose":"ticket {i}","reason_code":"customer-initiated-support","context_time":1765100000,"grant":null,"own_data":false}}"#,
        i % subjects,
        "c1".repeat(32)
    )
    .into_bytes()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: keep that run tiny.
    let quick = !std::env::args().any(|a| a == "--bench");
    let entries: u64 = std::env::var("HISTORY_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 2_000 } else { 200_000 });
    // Each subject has entries / subjects entries: 200 at the default size.
    let subjects = (entries / 200).max(1);
    let dir = tempfile::tempdir().unwrap();
    let (skey, vkey) = tlog::note::generate_key("bench.example/log").unwrap();
    let log = Log::open(
        &dir.path().join("log.sqlite"),
        Signer::new(&skey).unwrap(),
        LogOptions {
            checkpoint_interval: Duration::from_millis(50),
            ..LogOptions::default()
        },
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        let clients = 64;
        for c in 0..clients {
            let log = &log;
            tasks.push(async move {
                let mut i = c;
                while i < entries {
                    log.append(entry(i, subjects)).await.unwrap();
                    i += clients;
                }
            });
        }
        futures_util::future::join_all(tasks).await;
    });
    while log.checkpoint().size != entries {
        std::thread::sleep(Duration::from_millis(10));
    }

    let started = Instant::now();
    let index = SubjectIndex::open(
        &dir.path().join("index.sqlite"),
        &log,
        INDEX_RULE,
        Box::new(index_keys),
    )
    .unwrap();
    assert_eq!(index.catch_up(&log, entries).unwrap(), entries);
    let build = started.elapsed();

    // One page of 100 of a subject's entries, newest first, as the gateway answers it.
    let published = log.checkpoint();
    let pseudonym = format!("{:032x}", 7);
    let rounds = if quick { 3 } else { 50 };
    let started = Instant::now();
    let mut page = None;
    for _ in 0..rounds {
        let found = index.newest(&pseudonym, 0, published.size, 100).unwrap();
        let total = index.count(&pseudonym, 0, published.size).unwrap();
        let entries: Vec<HistoryEntry> = found
            .iter()
            .map(|&at| {
                let bytes = log.entry(at).unwrap().unwrap();
                let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                HistoryEntry {
                    index: at,
                    shown: shown(&value, false),
                    entry: String::from_utf8(bytes).unwrap(),
                    proof: log
                        .inclusion_proof(at, published.size)
                        .unwrap()
                        .iter()
                        .map(tlog::hash_to_base64)
                        .collect(),
                }
            })
            .collect();
        page = Some(HistoryPage {
            pseudonym: pseudonym.clone(),
            checkpoint: String::from_utf8(published.note.clone()).unwrap(),
            size: published.size,
            below: published.size,
            since: 0,
            total,
            next_before: (total > 100).then(|| entries.last().unwrap().index),
            entries,
        });
    }
    let answer = started.elapsed() / rounds;
    let page = page.unwrap();
    let listed = page.entries.len();

    let history = History {
        pages: vec![page],
        consistency: Vec::new(),
    };
    let verifier = tlog::note::Verifier::new(&vkey).unwrap();
    let trust = Trust {
        log: &verifier,
        witnesses: None,
        pseudonym: None,
    };
    let started = Instant::now();
    for _ in 0..rounds {
        check_history(&history, &trust, None, &mut monitor::Silent).unwrap();
    }
    let check = started.elapsed() / rounds;

    println!();
    println!("| what | measured |");
    println!("|---|---|");
    println!(
        "| build the subject index of a log of {entries} access entries (~850 B, {subjects} subjects) | {:.2} s, {:.0} entries/s |",
        build.as_secs_f64(),
        entries as f64 / build.as_secs_f64()
    );
    println!(
        "| one history page of {listed} entries: index query, entries read, shown and proven | {:.2} ms |",
        answer.as_secs_f64() * 1000.0
    );
    println!(
        "| `subject verify` of that page, offline (signature, {listed} proofs, what is shown) | {:.2} ms |",
        check.as_secs_f64() * 1000.0
    );
}
