//! Benchmarks for the product quality bars (BENCHMARKS.md) that this crate carries:
//!
//! * inclusion proof at 10^8 entries: <= 100 µs (proof generation and check, on a
//!   synthetic tree whose stored hashes are made up on demand, so nothing is stored);
//! * monitor verification: >= 500,000 entries/s (`verify_log` over an in-memory
//!   log of 1,000,000 entries, every tile and entry checked).
//!
//! Run with `cargo bench -p tlog`.

// A benchmark: a panic is how it fails.
#![allow(clippy::unwrap_used)]

use testkit::log_writer;

use std::collections::HashMap;
use std::convert::Infallible;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tlog::{Hash, HashReader, check_record, leaf_hash, node_hash, prove_record, verify_log};

const BIG_TREE: u64 = 100_000_000;

/// Stored hashes of a tree too big to store: hash `i` is a fixed pseudo-random
/// function of `i`. Proving reads only O(log n) of them.
struct Synthetic;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl HashReader for Synthetic {
    type Error = Infallible;
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, Infallible> {
        Ok(indexes
            .iter()
            .map(|&i| {
                let mut h = [0u8; 32];
                for (k, chunk) in h.chunks_mut(8).enumerate() {
                    chunk.copy_from_slice(&splitmix(i * 4 + k as u64).to_le_bytes());
                }
                h
            })
            .collect())
    }
}

/// The root an inclusion proof implies, by the RFC 9162 (2.1.3.2) algorithm: an
/// independent implementation, so the check below is against a root this crate
/// did not compute. (The synthetic tree's stored hashes are not each other's
/// hashes, so its "tree hash" would not match any path.)
fn implied_root(index: u64, size: u64, leaf: Hash, proof: &[Hash]) -> Hash {
    let (mut f, mut s, mut r) = (index, size - 1, leaf);
    for p in proof {
        assert!(s != 0);
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    assert_eq!(s, 0);
    r
}

fn inclusion(c: &mut Criterion) {
    let leaf_of = |n: u64| {
        Synthetic
            .read_hashes(&[tlog::stored_hash_index(0, n)])
            .unwrap()[0]
    };
    // A spread of leaves, so the proof shapes vary.
    let leaves: Vec<u64> = (0..64)
        .map(|i| splitmix(i) % BIG_TREE)
        .chain([0, BIG_TREE - 1])
        .collect();
    let cases: Vec<(u64, Vec<Hash>, Hash)> = leaves
        .iter()
        .map(|&n| {
            let p = prove_record(BIG_TREE, n, &Synthetic).unwrap();
            let root = implied_root(n, BIG_TREE, leaf_of(n), &p);
            check_record(&p, BIG_TREE, &root, n, &leaf_of(n)).unwrap();
            (n, p, root)
        })
        .collect();

    let mut g = c.benchmark_group("inclusion_1e8");
    let mut i = 0;
    g.bench_function("prove", |b| {
        b.iter(|| {
            i = (i + 1) % leaves.len();
            black_box(prove_record(BIG_TREE, black_box(leaves[i]), &Synthetic).unwrap())
        })
    });
    let mut i = 0;
    g.bench_function("check", |b| {
        b.iter(|| {
            i = (i + 1) % cases.len();
            let (n, p, root) = &cases[i];
            check_record(black_box(p), BIG_TREE, root, *n, &leaf_of(*n)).unwrap()
        })
    });
    let mut i = 0;
    g.bench_function("prove_and_check", |b| {
        b.iter(|| {
            i = (i + 1) % cases.len();
            let (n, _, root) = &cases[i];
            let p = prove_record(BIG_TREE, *n, &Synthetic).unwrap();
            check_record(&p, BIG_TREE, root, *n, &leaf_of(*n)).unwrap()
        })
    });
    g.finish();
}

fn monitor(c: &mut Criterion) {
    const ENTRIES: u64 = 1_000_000;
    let mut log = log_writer::LogWriter::new("bench.example/log", 1);
    for i in 0..ENTRIES {
        log.append(log_writer::entry(i));
    }
    log.publish();
    let verifier = log.signer.verifier();
    let files: HashMap<String, Vec<u8>> = std::mem::take(&mut log.files);
    drop(log);

    let mut g = c.benchmark_group("verify_log");
    g.throughput(Throughput::Elements(ENTRIES));
    g.sample_size(10);
    g.bench_function("1M_entries_in_memory", |b| {
        b.iter(|| {
            let mut bytes = 0usize;
            let cp = verify_log(&files, &verifier, None, &mut |_, _| {}, &mut |_, e| {
                bytes += e.len();
                Ok(())
            })
            .unwrap();
            assert_eq!(cp.size, ENTRIES);
            black_box(bytes)
        })
    });
    g.finish();

    // For scale: the bare cost of leaf-hashing the same entries.
    let entries: Vec<Vec<u8>> = (0..ENTRIES).map(log_writer::entry).collect();
    let mut g = c.benchmark_group("leaf_hash");
    g.throughput(Throughput::Elements(ENTRIES));
    g.sample_size(10);
    g.bench_function("1M_entries", |b| {
        b.iter(|| {
            for e in &entries {
                black_box(leaf_hash(e));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, inclusion, monitor);
criterion_main!(benches);
