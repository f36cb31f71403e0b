//! The per-run cost of the sandbox: one run of a cached module that answers at once (the
//! floor every run pays: a store, an instance, the input written, the output read and
//! checked), and the first run of a module (compiling it).
//!
//! Run: `cargo bench -p algorithm`.

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use sha2::{Digest, Sha256};

use algorithm::{Input, Manifest, Runtime};

fn module(output: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
            (memory (export "memory") 1)
            (data (i32.const 0) "{}")
            (func (export "alloc") (param i32) (result i32) (i32.const 1024))
            (func (export "run") (param i32 i32) (result i64) (i64.const {})))"#,
        output.replace('"', "\\\""),
        output.len()
    ))
    .expect("valid text format")
}

fn manifest(module: &[u8]) -> Manifest {
    Manifest::parse(
        json!({
            "name": "ranker", "version": "1",
            "module_sha256": hex::encode(Sha256::digest(module)),
            "purpose": "recommendations",
            "reads": [{"collection": "activity", "fields": ["watch_history"]}],
            "outputs": [{"name": "categories", "type": "string-list", "max_bytes": 256}],
            "limits": {"fuel": 1_000_000, "memory_bytes": 1 << 20, "wall_ms": 1000}
        })
        .to_string()
        .as_bytes(),
    )
    .expect("a valid manifest")
}

fn runs(c: &mut Criterion) {
    let runtime = Runtime::new().expect("the runtime starts");
    let input = Input {
        fields: [(
            "activity".to_string(),
            [(
                "watch_history".to_string(),
                json!(["film one", "film two", "film three"]),
            )]
            .into_iter()
            .collect(),
        )]
        .into_iter()
        .collect(),
        protected: vec![("activity".to_string(), "watch_history".to_string())],
    };
    let cached = module(r#"{"categories":["drama","comedy"]}"#);
    let cached_manifest = manifest(&cached);
    c.bench_function("run, module cached", |b| {
        b.iter(|| {
            runtime
                .run(&cached_manifest, &cached, &input)
                .expect("the run succeeds")
        })
    });
    let mut n = 0u64;
    c.bench_function("run, module compiled first", |b| {
        b.iter(|| {
            // A module never seen: another output makes another digest.
            n += 1;
            let fresh = module(&format!(r#"{{"categories":["c{n}"]}}"#));
            runtime
                .run(&manifest(&fresh), &fresh, &input)
                .expect("the run succeeds")
        })
    });
}

criterion_group!(benches, runs);
criterion_main!(benches);
