//! Median cost of one policy decision with the default schema and policy set.
//! Product bar: ≤ 10 µs.
//!
//! The engine memoises decisions on the request fields the policies read, so a repeated request
//! measures the cached path. The `uncached` cases give every iteration a new purpose (a field
//! the default policies read), so each one is a Cedar evaluation of the policies that read the
//! context plus a cache insert; `new_principal` also changes the principal's id, so the
//! entities and the other policies' outcome are built afresh as well.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use policy::{
    AccessRequest, Action, Context, DEFAULT_SCHEMA, PolicyEngine, Principal, Resource,
    default_policies,
};

fn read_us_protected(principal: Principal) -> AccessRequest {
    AccessRequest {
        principal,
        action: Action::Read,
        resource: Resource::Data {
            subject_jurisdiction: "US".into(),
            collection: "profile".into(),
            field_class: "protected".into(),
            site: "us-east".into(),
            site_jurisdiction: "US".into(),
            approval_required: false,
            suspended: false,
        },
        context: Context {
            purpose: "support-ticket".into(),
            reason_code: String::new(),
            network_zone: String::new(),
            time: 1_750_000_000,
            grant: String::new(),
            own_data: false,
        },
    }
}

fn decide(c: &mut Criterion) {
    let restricted: Vec<String> = ["CN", "RU", "IR", "KP"].map(String::from).to_vec();
    let engine = PolicyEngine::new(DEFAULT_SCHEMA, &default_policies(&restricted))
        .expect("default policies load");

    let vetted = read_us_protected(Principal {
        id: "alice".into(),
        entity: "usds".into(),
        entity_country: "US".into(),
        location: "US".into(),
        clearance: vec!["us-data".into()],
        roles: vec!["engineer".into()],
    });
    let parent_in_cn = read_us_protected(Principal {
        id: "bob".into(),
        entity: "parent".into(),
        entity_country: "CN".into(),
        location: "CN".into(),
        clearance: vec![],
        roles: vec!["engineer".into()],
    });
    assert!(engine.decide(&vetted).allowed);
    assert!(!engine.decide(&parent_in_cn).allowed);

    let mut group = c.benchmark_group("decide");
    group.bench_function("usds_vetted_read_us_protected_allow", |b| {
        b.iter(|| engine.decide(black_box(&vetted)))
    });
    group.bench_function("parent_in_cn_read_us_protected_deny", |b| {
        b.iter(|| engine.decide(black_box(&parent_in_cn)))
    });
    for (name, base) in [
        ("usds_vetted_read_us_protected_allow_uncached", &vetted),
        (
            "parent_in_cn_read_us_protected_deny_uncached",
            &parent_in_cn,
        ),
    ] {
        let mut n = 0u64;
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || {
                    n += 1;
                    let mut req = base.clone();
                    req.context.purpose = format!("purpose-{n}");
                    req
                },
                |req| engine.decide(black_box(req)),
                BatchSize::SmallInput,
            )
        });
    }
    // Uncached and also a principal id never seen before: the entity store and the outcome
    // of the policies that do not read the context are built afresh too, as for the first
    // request of a token.
    let mut n = 0u64;
    group.bench_function(
        "usds_vetted_read_us_protected_allow_uncached_new_principal",
        |b| {
            b.iter_batched_ref(
                || {
                    n += 1;
                    let mut req = vetted.clone();
                    req.principal.id = format!("user-{n}");
                    req.context.purpose = format!("purpose-{n}");
                    req
                },
                |req| engine.decide(black_box(req)),
                BatchSize::SmallInput,
            )
        },
    );
    group.finish();
}

criterion_group!(benches, decide);
criterion_main!(benches);
