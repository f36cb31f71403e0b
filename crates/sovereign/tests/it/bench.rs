//! `sovereign bench` runs both phases and reports figures it measured (not how fast they are:
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

fn check(report: &serde_json::Value) {
    for phase in ["governed", "bare"] {
        assert!(report[phase]["requests"].as_u64().unwrap() > 0, "{report}");
        assert!(
            report[phase]["p99_ms"].as_f64().unwrap() >= report[phase]["p50_ms"].as_f64().unwrap()
        );
    }
    let ratio = report["throughput_ratio"].as_f64().unwrap();
    let expected = report["governed"]["per_second"].as_f64().unwrap()
        / report["bare"]["per_second"].as_f64().unwrap();
    assert!((ratio - expected).abs() < 1e-9, "{report}");
}

#[test]
fn bench_measures_governed_and_bare_reads() {
    let report = bench(&[]);
    assert_eq!(report["site_store"], "embedded SQLite");
    check(&report);
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
    check(&report);
}

#[test]
fn bench_refuses_bad_arguments() {
    assert!(!run_bench(&["--clients", "0"]).status.success());
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
