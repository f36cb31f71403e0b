//! Full proof of the default policies (restricted CN, RU, IR, KP) against the default
//! invariants: every invariant and every policy's never-errors check, in every request
//! environment, with a real cvc5. Skips (with a message) when no cvc5 is found.

use criterion::{Criterion, criterion_group, criterion_main};
use prove::{Invariants, Solver, default_invariants, prove};

fn bench_prove(c: &mut Criterion) {
    let solver = match Solver::from_env() {
        Ok(solver) => solver,
        Err(e) => {
            eprintln!("skipping the proof benchmark: {e}");
            return;
        }
    };
    let restricted: Vec<String> = ["CN", "RU", "IR", "KP"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let policies = policy::default_policies(&restricted);
    let invariants = Invariants::parse(&default_invariants(&restricted)).expect("defaults parse");
    let report =
        prove(policy::DEFAULT_SCHEMA, &policies, &invariants, &solver).expect("proof runs");
    assert!(report.all_proven(), "{report}");

    let mut group = c.benchmark_group("prove");
    group.sample_size(20);
    group.bench_function("default_policies_default_invariants", |b| {
        b.iter(|| {
            let report =
                prove(policy::DEFAULT_SCHEMA, &policies, &invariants, &solver).expect("proof runs");
            assert!(report.all_proven());
            report
        })
    });
    group.finish();
}

criterion_group!(benches, bench_prove);
criterion_main!(benches);
