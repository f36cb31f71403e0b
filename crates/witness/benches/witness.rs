//! A witness's throughput: `add-checkpoint` requests/s, each growing its log by one entry
//! (so each is a signature check, a consistency proof check, one synced SQLite commit and a
//! cosignature).
//!
//! - in process, round-robin over one log and over 100 logs;
//! - over HTTP on loopback (`http::serve`), from 1 and from 4 keep-alive clients, each
//!   growing a log of its own, one request at a time.
//!
//! Run: `cargo bench -p witness`. The state file is in the system's temporary folder, so
//! the figures depend on that disk's fsync.

// A benchmark: a panic is how it fails.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
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

/// The same over HTTP: `clients` threads, each with a keep-alive connection and a log of its
/// own, send their requests one after the other.
fn over_http(c: &mut Criterion) {
    let mut group = c.benchmark_group("add_checkpoint_http");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for clients in [1usize, 4] {
        let dir = tempfile::tempdir().unwrap();
        witness::init(dir.path(), "bench.example/witness").unwrap();
        let mut writers: Vec<LogWriter> = (0..clients)
            .map(|i| LogWriter::new(&format!("bench.example/log{i}"), i as u8 + 1))
            .collect();
        let w = Arc::new(
            Witness::open(
                dir.path(),
                writers.iter().map(|l| l.signer.verifier()).collect(),
            )
            .unwrap(),
        );
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}/add-checkpoint", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = runtime.spawn(witness::http::serve(
            listener,
            w,
            witness::http::ServeOptions::default(),
            async {
                let _ = stopped.await;
            },
        ));
        let http = reqwest::blocking::Client::new();
        group.throughput(Throughput::Elements(clients as u64));
        group.bench_function(format!("grow by 1, {clients} client(s)"), |b| {
            b.iter_custom(|iters| {
                let bodies: Vec<Vec<Vec<u8>>> = writers
                    .iter_mut()
                    .map(|log| (0..iters).map(|_| grow_by_one(log)).collect())
                    .collect();
                let started = Instant::now();
                std::thread::scope(|scope| {
                    for bodies in bodies {
                        let http = http.clone();
                        let url = &url;
                        scope.spawn(move || {
                            for body in bodies {
                                let response = http.post(url).body(body).send().unwrap();
                                assert_eq!(response.status().as_u16(), 200);
                                response.bytes().unwrap();
                            }
                        });
                    }
                });
                started.elapsed()
            });
        });
        stop.send(()).unwrap();
        runtime.block_on(server).unwrap();
    }
    group.finish();
}

criterion_group!(benches, add_checkpoint, over_http);
criterion_main!(benches);
