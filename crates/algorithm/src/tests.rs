//! The sandbox against small modules written in the WebAssembly text format.

#![allow(clippy::unwrap_used)]

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{Input, Limit, Manifest, RunError, Runtime};

/// A manifest for `module`, reading `activity.watch_history`, outputting `categories`.
fn manifest(module: &[u8], fuel: u64, wall_ms: u64) -> Manifest {
    Manifest::parse(
        json!({
            "name": "ranker",
            "version": "1",
            "module_sha256": hex::encode(Sha256::digest(module)),
            "purpose": "recommendations",
            "reads": [{"collection": "activity", "fields": ["watch_history"]}],
            "outputs": [{"name": "categories", "type": "string-list", "max_bytes": 128}],
            "limits": {"fuel": fuel, "memory_bytes": 1 << 20, "wall_ms": wall_ms}
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap()
}

/// A module whose `run` answers `output` (written at address 0) after `body`.
fn module_answering(output: &str, body: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
            (memory (export "memory") 1)
            (data (i32.const 0) "{}")
            (func (export "alloc") (param i32) (result i32) (i32.const 1024))
            (func (export "run") (param i32 i32) (result i64) {body} (i64.const {})))"#,
        output.replace('"', "\\\""),
        output.len()
    ))
    .unwrap()
}

fn history(titles: &[&str]) -> Input {
    Input {
        fields: [(
            "activity".to_string(),
            [("watch_history".to_string(), json!(titles))]
                .into_iter()
                .collect(),
        )]
        .into_iter()
        .collect(),
        protected: vec![("activity".to_string(), "watch_history".to_string())],
    }
}

#[test]
fn a_module_runs_and_its_output_is_checked_and_deterministic() {
    let runtime = Runtime::new().unwrap();
    let module = module_answering(r#"{"categories":["drama","comedy"]}"#, "");
    let m = manifest(&module, 10_000, 1000);
    let first = runtime.run(&m, &module, &history(&["Some Film"])).unwrap();
    assert_eq!(first.output["categories"], json!(["drama", "comedy"]));
    assert!(first.fuel_used > 0 && first.fuel_used < 10_000);
    let again = runtime.run(&m, &module, &history(&["Some Film"])).unwrap();
    assert_eq!(first.output_sha256, again.output_sha256);
    assert_eq!(first.fuel_used, again.fuel_used);
}

#[test]
fn a_module_that_loops_forever_is_stopped_by_its_fuel() {
    let runtime = Runtime::new().unwrap();
    let module = module_answering("{}", "(loop br 0)");
    let m = manifest(&module, 1_000_000, 10_000);
    let err = runtime.run(&m, &module, &history(&[])).unwrap_err();
    assert!(matches!(err, RunError::Limit(Limit::Fuel)), "{err}");
}

#[test]
fn a_module_that_loops_forever_is_stopped_by_its_wall_time() {
    let runtime = Runtime::new().unwrap();
    let module = module_answering("{}", "(loop br 0)");
    let m = manifest(&module, crate::manifest::MAX_FUEL, 50);
    let started = std::time::Instant::now();
    let err = runtime.run(&m, &module, &history(&[])).unwrap_err();
    assert!(matches!(err, RunError::Limit(Limit::WallTime)), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn a_module_that_asks_for_more_memory_is_stopped() {
    let runtime = Runtime::new().unwrap();
    // Growing by 100 pages (6.4 MiB) beyond the 1 MiB allowed.
    let grows = module_answering("{}", "(drop (memory.grow (i32.const 100)))");
    let err = runtime
        .run(&manifest(&grows, 10_000, 1000), &grows, &history(&[]))
        .unwrap_err();
    assert!(matches!(err, RunError::Limit(Limit::Memory)), "{err}");
    // Asking for it from the start.
    let large = wat::parse_str(
        r#"(module (memory (export "memory") 100)
            (func (export "alloc") (param i32) (result i32) (i32.const 0))
            (func (export "run") (param i32 i32) (result i64) (i64.const 0)))"#,
    )
    .unwrap();
    let err = runtime
        .run(&manifest(&large, 10_000, 1000), &large, &history(&[]))
        .unwrap_err();
    assert!(matches!(err, RunError::Limit(Limit::Memory)), "{err}");
}

#[test]
fn undeclared_mistyped_or_oversized_outputs_are_refused() {
    let runtime = Runtime::new().unwrap();
    for (output, expected) in [
        (r#"{"secret":"x"}"#, "not a declared output"),
        (r#"{"categories":"drama"}"#, "not of its declared type"),
        (r#"not json"#, "not JSON"),
        (r#"["drama"]"#, "not a JSON object"),
    ] {
        let module = module_answering(output, "");
        let err = runtime
            .run(&manifest(&module, 10_000, 1000), &module, &history(&[]))
            .unwrap_err();
        assert!(matches!(err, RunError::Output(_)), "{output}: {err}");
        assert!(err.to_string().contains(expected), "{output}: {err}");
    }
    let long = format!(r#"{{"categories":["{}"]}}"#, "a".repeat(200));
    let module = module_answering(&long, "");
    let err = runtime
        .run(&manifest(&module, 10_000, 1000), &module, &history(&[]))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("larger than its declared 128 bytes"),
        "{err}"
    );
    // No message says what the module wrote: no member name it made up, no size.
    let err = runtime
        .run(
            &manifest(
                &module_answering(r#"{"alice@example.com":1}"#, ""),
                10_000,
                1000,
            ),
            &module_answering(r#"{"alice@example.com":1}"#, ""),
            &history(&[]),
        )
        .unwrap_err();
    assert!(!err.to_string().contains("alice"), "{err}");
}

#[test]
fn an_output_that_repeats_a_protected_value_is_refused() {
    let runtime = Runtime::new().unwrap();
    let marker = "PROTECTED-MARKER-7f3a";
    let module = module_answering(&format!(r#"{{"categories":["{marker}"]}}"#), "");
    let m = manifest(&module, 10_000, 1000);
    let err = runtime.run(&m, &module, &history(&[marker])).unwrap_err();
    assert!(
        err.to_string().contains("repeats a protected value"),
        "{err}"
    );
    // The same output is fine when the value is not among the inputs.
    runtime
        .run(&m, &module, &history(&["another film"]))
        .unwrap();
}

#[test]
fn modules_with_imports_another_digest_or_no_interface_never_run() {
    let runtime = Runtime::new().unwrap();
    let clock = wat::parse_str(
        r#"(module (import "wasi_snapshot_preview1" "clock_time_get" (func (param i32 i64 i32) (result i32)))
            (memory (export "memory") 1)
            (func (export "alloc") (param i32) (result i32) (i32.const 0))
            (func (export "run") (param i32 i32) (result i64) (i64.const 0)))"#,
    )
    .unwrap();
    let err = runtime
        .run(&manifest(&clock, 10_000, 1000), &clock, &history(&[]))
        .unwrap_err();
    assert!(err.to_string().contains("imports"), "{err}");

    let module = module_answering("{}", "");
    let other = module_answering(r#"{"categories":[]}"#, "");
    let err = runtime
        .run(&manifest(&other, 10_000, 1000), &module, &history(&[]))
        .unwrap_err();
    assert!(err.to_string().contains("SHA-256"), "{err}");

    let bare = wat::parse_str(r#"(module (memory (export "memory") 1))"#).unwrap();
    let err = runtime
        .run(&manifest(&bare, 10_000, 1000), &bare, &history(&[]))
        .unwrap_err();
    assert!(matches!(err, RunError::Module(_)), "{err}");
}

#[test]
fn an_input_field_the_manifest_does_not_read_is_refused() {
    let runtime = Runtime::new().unwrap();
    let module = module_answering("{}", "");
    let mut input = history(&[]);
    input
        .fields
        .get_mut("activity")
        .unwrap()
        .insert("location".to_string(), json!("x"));
    let err = runtime
        .run(&manifest(&module, 10_000, 1000), &module, &input)
        .unwrap_err();
    assert!(matches!(err, RunError::Input(_)), "{err}");
}
