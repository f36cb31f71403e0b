use policy::*;
use std::hint::black_box;
fn main() {
    let e = PolicyEngine::new(
        DEFAULT_SCHEMA,
        &default_policies(&["CN".into(), "RU".into(), "IR".into(), "KP".into()]),
    )
    .unwrap();
    let r = AccessRequest {
        principal: Principal {
            id: "alice".into(),
            entity: "usds".into(),
            entity_country: "US".into(),
            location: "US".into(),
            clearance: vec!["us-data".into()],
            roles: vec!["engineer".into()],
        },
        action: Action::Read,
        resource: Resource::Data {
            subject_jurisdiction: "US".into(),
            collection: "profile".into(),
            field_class: "protected".into(),
            site: "us-east".into(),
            site_jurisdiction: "US".into(),
        },
        context: Context {
            purpose: "support".into(),
            time: 10,
            ..Default::default()
        },
    };
    let n: u32 = std::env::args()
        .nth(1)
        .map(|a| a.parse().unwrap())
        .unwrap_or(200_000);
    let t = std::time::Instant::now();
    for _ in 0..n {
        black_box(e.decide(black_box(&r)));
    }
    println!(
        "{:.2} µs/decision",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}
