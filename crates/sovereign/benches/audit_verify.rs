//! `sovereign audit verify` throughput (the `monitor` crate's `verify`) (quality bar: monitor verification ≥ 500,000 entries/s):
//! the whole check a monitor runs (signature, every tile, every entry bundle, and the parsing
//! of every entry as a v1 entry) over a static copy on disk.
//!
//! Run: `cargo bench -p sovereign --bench audit_verify`; `AUDIT_BENCH_ENTRIES` sets the log
//! size (default 200,000). Synthetic entries are smaller and more alike than a gateway's: to
//! measure a real log instead, set `AUDIT_BENCH_LOG` to a static copy (a directory) or a
//! gateway's `/log` URL and `AUDIT_BENCH_KEY` to its verifier key.

// A benchmark: a panic is how it fails.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use testkit::static_log;

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: keep that run tiny.
    let quick = !std::env::args().any(|a| a == "--bench");
    let given = std::env::var("AUDIT_BENCH_LOG").ok();
    let dir = tempfile::tempdir().unwrap();
    let (url, vkey, what) = match given {
        Some(url) => {
            let vkey = std::env::var("AUDIT_BENCH_KEY")
                .expect("AUDIT_BENCH_KEY: the verifier key of AUDIT_BENCH_LOG");
            let what = format!("`audit verify` of {url}");
            (url, vkey, what)
        }
        None => {
            let size: u64 = std::env::var("AUDIT_BENCH_ENTRIES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(if quick { 1000 } else { 200_000 });
            let key = static_log::new_key();
            let entries = static_log::entries(size);
            let bytes: usize = entries.iter().map(Vec::len).sum();
            static_log::publish(dir.path(), &key, &entries);
            let what = format!(
                "`audit verify` of a static copy, {size} entries averaging {} B",
                bytes as u64 / size.max(1)
            );
            (dir.path().to_str().unwrap().to_string(), key.vkey, what)
        }
    };

    let mut best = f64::MAX;
    let mut size = 0;
    for _ in 0..3 {
        let started = Instant::now();
        let verifier = monitor::load_verifier(&vkey).unwrap();
        let log = monitor::open_log(&url).unwrap();
        let verified = monitor::verify(&*log, &verifier, None, &mut monitor::Silent).unwrap();
        best = best.min(started.elapsed().as_secs_f64());
        size = verified.checkpoint.size;
    }
    println!();
    println!("| what | measured | bar |");
    println!("|---|---|---|");
    println!(
        "| {what} ({size} entries, best of 3) | {:.0} entries/s | ≥ 500,000 entries/s |",
        size as f64 / best
    );
}
