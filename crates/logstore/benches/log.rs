//! Log benchmarks against the product's quality bars (BENCHMARKS.md):
//! - durable append throughput with group commit (≥ 100,000 entries/s sustained),
//! - checkpoint lag: time from an append's return to a signed checkpoint covering it (≤ 1 s),
//! - start-up time of a large log (≤ 1 s at 10^7 entries; `LOG_BENCH_STARTUP_ENTRIES` sets the
//!   size, default 10^6 so that a plain `cargo bench` stays short).
//!
//! Run: `cargo bench -p logstore --bench log`. Figures are printed as one table at the end.

// A benchmark: a panic is how it fails.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use logstore::{Log, LogOptions};
use tlog::note::Signer;

fn signer() -> Signer {
    let (skey, _) = tlog::note::generate_key("bench.example/log").unwrap();
    Signer::new(&skey).unwrap()
}

/// A realistic entry size: an access entry is about 600 bytes of JSON.
fn entry(i: u64) -> Vec<u8> {
    let mut e = format!("{{\"v\":1,\"kind\":\"access\",\"n\":{i},\"pad\":\"").into_bytes();
    e.resize(580, b'x');
    e.extend_from_slice(b"\"}");
    e
}

/// `clients` tasks append `per_client` entries each, as concurrently as they can.
fn append_throughput(clients: usize, per_client: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        Log::open(
            &dir.path().join("log.sqlite"),
            signer(),
            LogOptions::default(),
        )
        .unwrap(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..clients {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..per_client {
                    log.append(entry(c as u64 * per_client + i)).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let elapsed = started.elapsed();
    assert_eq!(log.size(), clients as u64 * per_client);
    (clients as u64 * per_client) as f64 / elapsed.as_secs_f64()
}

/// Appends at a steady rate and measures, for each sampled append, the time until a signed
/// checkpoint covers it. Returns (median, max) in milliseconds.
fn checkpoint_lag(seconds: u64) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        &dir.path().join("log.sqlite"),
        signer(),
        LogOptions::default(),
    )
    .unwrap();
    let mut lags = Vec::new();
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        let index = log.append_blocking(entry(i)).unwrap();
        let appended = Instant::now();
        i += 1;
        if i % 50 == 0 {
            while log.checkpoint().size <= index {
                std::thread::sleep(Duration::from_micros(200));
            }
            lags.push(appended.elapsed().as_secs_f64() * 1000.0);
        }
    }
    lags.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (lags[lags.len() / 2], *lags.last().unwrap())
}

/// Builds a log of `entries` entries, closes it, and times opening it again.
fn startup(entries: u64) -> (Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.sqlite");
    let skey = signer().to_skey();
    let build = Instant::now();
    {
        let log = Arc::new(
            Log::open(
                &path,
                Signer::new(&skey).unwrap(),
                LogOptions {
                    max_batch: 16384,
                    queue: 65536,
                    ..LogOptions::default()
                },
            )
            .unwrap(),
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let clients = 256u64;
            let mut tasks = Vec::new();
            for c in 0..clients {
                let log = log.clone();
                tasks.push(tokio::spawn(async move {
                    let mut i = c;
                    while i < entries {
                        log.append(i.to_be_bytes().to_vec()).await.unwrap();
                        i += clients;
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
        assert_eq!(log.size(), entries);
    }
    let built = build.elapsed();
    let opened = Instant::now();
    let log = Log::open(&path, Signer::new(&skey).unwrap(), LogOptions::default()).unwrap();
    let open_time = opened.elapsed();
    assert_eq!(log.size(), entries);
    (open_time, built)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: keep that run tiny.
    let quick = !std::env::args().any(|a| a == "--bench");
    let startup_entries: u64 = std::env::var("LOG_BENCH_STARTUP_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1000 } else { 1_000_000 });
    let (clients, per_client) = if quick { (4, 100) } else { (256, 2000) };

    let throughput = append_throughput(clients, per_client);
    let (lag_median, lag_max) = checkpoint_lag(if quick { 1 } else { 5 });
    let (open_time, built) = startup(startup_entries);

    println!();
    println!("| what | measured | bar |");
    println!("|---|---|---|");
    println!(
        "| durable append, {} clients × {per_client} entries of ~600 B, group commit | {:.0} entries/s | ≥ 100,000 entries/s |",
        clients, throughput
    );
    println!(
        "| checkpoint lag after an append (500 ms interval) | median {lag_median:.0} ms, max {lag_max:.0} ms | ≤ 1 s |"
    );
    println!(
        "| open a log of {startup_entries} entries (built in {:.1} s) | {:.1} ms | ≤ 1 s at 10^7 |",
        built.as_secs_f64(),
        open_time.as_secs_f64() * 1000.0
    );
}
