//! A witness's throughput in process: `add-checkpoint` requests/s, each growing its log by
//! one entry (so each is a signature check, a consistency proof check, one synced SQLite
//! commit and a cosignature), round-robin over one log and over 100 logs.
//!
//! Run: `cargo bench -p witness`. The state file is in the system's temporary folder, so
//! the figure depends on that disk's fsync.

// A benchmark: a panic is how it fails.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use testkit::log_writer::{LogWriter, entry};
use tlog::checkpoint::sign_checkpoint;
use tlog::witness::AddCheckpoint;
use witness::Witness;

/// The request that grows `log` by one entry, from the size the witness last cosigned.
fn grow_by_one(log: &mut LogWriter) -> Vec<u8> {
    let old = log.size();
    log.append(entry(old));
    let proof = if old == 0 {
        Vec::new()
    } else {
        tlog::prove_tree(old + 1, old, &log.store).unwrap()
    };
    AddCheckpoint {
        old_size: old,
        proof,
        checkpoint: sign_checkpoint(&log.checkpoint(), &log.signer).unwrap(),
    }
    .to_bytes()
}

fn add_checkpoint(c: &mut Criterion) {
    let mut group = c.benchmark_group("add_checkpoint");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    for logs in [1usize, 100] {
        let dir = tempfile::tempdir().unwrap();
        witness::init(dir.path(), "bench.example/witness").unwrap();
        let mut writers: Vec<LogWriter> = (0..logs)
            .map(|i| LogWriter::new(&format!("bench.example/log{i}"), (i % 250) as u8 + 1))
            .collect();
        let w = Witness::open(
            dir.path(),
            writers.iter().map(|l| l.signer.verifier()).collect(),
        )
        .unwrap();
        let mut next = 0usize;
        group.bench_function(format!("grow by 1, {logs} log(s)"), |b| {
            b.iter_custom(|iters| {
                // The requests are made before the clock starts: only the witness is timed.
                let bodies: Vec<Vec<u8>> = (0..iters)
                    .map(|_| {
                        next = (next + 1) % logs;
                        grow_by_one(&mut writers[next])
                    })
                    .collect();
                let started = Instant::now();
                for body in &bodies {
                    w.add_checkpoint(body).unwrap();
                }
                started.elapsed()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, add_checkpoint);
criterion_main!(benches);
