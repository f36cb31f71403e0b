//! What the live analytics add to every logged decision: `Analytics::observe_access` (the
//! Prometheus counter with its seven labels, the per-second and per-location counts, the feed,
//! and the bulk-access window).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use gateway::analytics::{Analytics, Observation};
use gateway::auth::Authenticated;
use gateway::config::AnalyticsConfig;

fn principal(id: &str, location: &str) -> Authenticated {
    Authenticated {
        principal: policy::Principal {
            id: id.into(),
            entity: "usds".into(),
            entity_country: "US".into(),
            location: location.into(),
            clearance: vec!["us-data".into()],
            roles: vec!["engineer".into()],
        },
        network_zone: String::new(),
        public_id: id.into(),
    }
}

fn observe(c: &mut Criterion) {
    let analytics = Analytics::new(AnalyticsConfig::default());
    let who = principal("alice", "US");
    // Fifty subjects, below the bulk-access threshold, as a busy support engineer.
    let subjects: Vec<String> = (0..50).map(|i| format!("{i:032x}")).collect();
    let mut n = 0usize;
    c.bench_function("observe_access (allow, no alert)", |b| {
        b.iter(|| {
            n += 1;
            let observation = Observation {
                who: &who,
                action: "read",
                subject_pseudonym: &subjects[n % subjects.len()],
                subject_jurisdiction: "US",
                site: "us-east",
                collection: Some("profile"),
                outcome: "allow",
                policies: vec!["permit-usds-vetted-data".into()],
                purpose: "ticket 42",
                reason_code: "customer-initiated-support",
                grant: None,
                classes: vec!["protected: allow".into(), "interoperable: allow".into()],
                log_index: n as u64,
            };
            black_box(analytics.observe_access(&observation, false))
        })
    });
}

criterion_group!(benches, observe);
criterion_main!(benches);
