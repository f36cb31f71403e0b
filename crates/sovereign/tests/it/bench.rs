//! `sovereign bench` runs every phase and reports figures it measured (not how fast they are:
//! speed is never asserted by tests), on embedded stores and with the site on PostgreSQL.

/// `sovereign bench ARGS...`.
fn run_bench(args: &[&str]) -> std::process::Output {
    crate::support::sovereign()
        .arg("bench")
        .args(args)
        .output()
        .unwrap()
}

fn bench(extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "--seconds",
        "1",
        "--records",
        "5",
        "--clients",
        "2",
        "--json",
    ];
    args.extend(extra);
    let output = run_bench(&args);
    crate::support::assert_success(&output);
    serde_json::from_slice(&output.stdout).unwrap()
}

const PHASES: [&str; 6] = [
    "floor",
    "ungoverned_read",
    "governed_read",
    "governed_read_new_purpose",
    "governed_write",
    "store_read_in_process",
];

/// Every phase in `phases` was measured without an error, and every ratio is the quotient of
/// the two phases' requests per second.
fn check(report: &serde_json::Value, phases: &[&str]) {
    let measured = report["phases"].as_object().unwrap();
    let names: std::collections::BTreeSet<&str> = measured.keys().map(String::as_str).collect();
    assert_eq!(names, phases.iter().copied().collect(), "{report}");
    for (name, phase) in measured {
        let requests = phase["requests"].as_u64().unwrap();
        assert!(requests > 0, "{name}: {report}");
        assert_eq!(phase["errors"], 0, "{name}: {report}");
        let per_second = requests as f64 / phase["seconds"].as_f64().unwrap();
        assert!(
            (phase["per_second"].as_f64().unwrap() - per_second).abs() < 1e-6 * per_second,
            "{name}: {report}"
        );
        assert!(
            phase["p99_ms"].as_f64().unwrap() >= phase["p50_ms"].as_f64().unwrap(),
            "{name}: {report}"
        );
    }
    let per_second = |phase: &str| report["phases"][phase]["per_second"].as_f64().unwrap();
    let ratios = report["ratios"].as_object().unwrap();
    let mut expected = 0;
    for phase in [
        "ungoverned_read",
        "governed_read",
        "governed_read_new_purpose",
        "governed_write",
    ] {
        for (key, to) in [
            ("to_floor", "floor"),
            ("to_ungoverned_read", "ungoverned_read"),
        ] {
            if phase == to || !phases.contains(&phase) || !phases.contains(&to) {
                assert!(report["ratios"][phase].get(key).is_none(), "{report}");
                continue;
            }
            expected += 1;
            let ratio = report["ratios"][phase][key].as_f64().unwrap();
            let quotient = per_second(phase) / per_second(to);
            assert!(
                (ratio - quotient).abs() < 1e-9 * quotient,
                "{phase} {key}: {report}"
            );
        }
    }
    let counted: usize = ratios.values().map(|r| r.as_object().unwrap().len()).sum();
    assert_eq!(counted, expected, "{report}");
}

#[test]
fn bench_measures_every_phase() {
    let report = bench(&[]);
    assert_eq!(report["site_store"], "embedded SQLite");
    assert_eq!(report["clients"], 2);
    assert_eq!(report["records"], 5);
    assert!(report["gateway_log_level"].is_string(), "{report}");
    check(&report, &PHASES);
}

#[test]
fn bench_runs_the_phases_asked_for() {
    let report = bench(&["--phases", "governed_read,floor"]);
    check(&report, &["floor", "governed_read"]);
}

#[test]
fn bench_reads_a_postgresql_site_through_its_pool() {
    let Some(pg) = pgtest::PgServer::start() else {
        return;
    };
    let url = pg.create_database("bench_site");
    let report = bench(&["--site-store", &url]);
    assert!(
        report["site_store"]
            .as_str()
            .unwrap()
            .ends_with("/bench_site"),
        "{report}"
    );
    check(&report, &PHASES);
}

#[test]
fn bench_refuses_bad_arguments() {
    assert!(!run_bench(&["--clients", "0"]).status.success());
    assert!(!run_bench(&["--phases", "governed_delete"]).status.success());
    let output = run_bench(&[
        "--seconds",
        "1",
        "--records",
        "1",
        "--site-store",
        "mysql://x@y/z",
    ]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("sites.us-east.store"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
