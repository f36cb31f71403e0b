use cedar_policy::*;
use std::collections::{HashMap, HashSet};
use std::hint::black_box;
use std::str::FromStr;
use std::time::Instant;

fn s(x: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(x.to_owned())
}

fn time<T>(name: &str, n: u32, mut f: impl FnMut() -> T) {
    for _ in 0..n / 10 {
        black_box(f());
    }
    let t = Instant::now();
    for _ in 0..n {
        black_box(f());
    }
    println!(
        "{name:<30} {:>8.2} µs",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}

fn main() {
    let (schema, _) = Schema::from_cedarschema_str(policy::DEFAULT_SCHEMA).unwrap();
    let src = policy::default_policies(&["CN".into(), "RU".into(), "IR".into(), "KP".into()]);
    let pset = PolicySet::from_str(&src).unwrap();
    let ptype = EntityTypeName::from_str("Sovereign::Principal").unwrap();
    let duid = EntityUid::from_str(r#"Sovereign::Data::"data""#).unwrap();
    let auid = EntityUid::from_str(r#"Sovereign::Action::"read""#).unwrap();
    let principal = || {
        let uid = EntityUid::from_type_name_and_id(ptype.clone(), EntityId::new("alice"));
        Entity::new(
            uid,
            HashMap::from([
                ("id".to_owned(), s("alice")),
                ("entity".to_owned(), s("usds")),
                ("entity_country".to_owned(), s("US")),
                ("location".to_owned(), s("US")),
                (
                    "clearance".to_owned(),
                    RestrictedExpression::new_set([s("us-data")]),
                ),
                (
                    "roles".to_owned(),
                    RestrictedExpression::new_set([s("engineer")]),
                ),
            ]),
            HashSet::new(),
        )
        .unwrap()
    };
    let resource = || {
        Entity::new(
            duid.clone(),
            HashMap::from([
                ("subject_jurisdiction".to_owned(), s("US")),
                ("collection".to_owned(), s("profile")),
                ("field_class".to_owned(), s("protected")),
                ("site".to_owned(), s("us-east")),
                ("site_jurisdiction".to_owned(), s("US")),
            ]),
            HashSet::new(),
        )
        .unwrap()
    };
    let context = || {
        Context::from_pairs([
            ("purpose".to_owned(), s("support")),
            ("reason_code".to_owned(), s("")),
            ("network_zone".to_owned(), s("")),
            ("time".to_owned(), RestrictedExpression::new_long(1)),
        ])
        .unwrap()
    };
    let n = 50_000;
    time("principal entity", n, principal);
    time("resource entity", n, resource);
    time("context", n, context);
    let puid = EntityUid::from_type_name_and_id(ptype.clone(), EntityId::new("alice"));
    time("request (schema)", n, || {
        Request::new(
            puid.clone(),
            auid.clone(),
            duid.clone(),
            context(),
            Some(&schema),
        )
        .unwrap()
    });
    time("request (none)", n, || {
        Request::new(puid.clone(), auid.clone(), duid.clone(), context(), None).unwrap()
    });
    time("entities none", n, || {
        Entities::from_entities([principal(), resource()], None).unwrap()
    });
    let req = Request::new(
        puid.clone(),
        auid.clone(),
        duid.clone(),
        context(),
        Some(&schema),
    )
    .unwrap();
    let ents = Entities::from_entities([principal(), resource()], None).unwrap();
    let auth = Authorizer::new();
    time("is_authorized", n, || {
        auth.is_authorized(&req, &pset, &ents)
    });
    let one = PolicySet::from_str("permit(principal, action, resource);").unwrap();
    time("is_authorized trivial 1", n, || {
        auth.is_authorized(&req, &one, &ents)
    });
    let eight = PolicySet::from_str(&"permit(principal, action, resource);\n".repeat(8)).unwrap();
    time("is_authorized trivial 8", n, || {
        auth.is_authorized(&req, &eight, &ents)
    });
    let set = PolicySet::from_str(&"permit(principal, action, resource) when { [\"CN\", \"RU\", \"IR\", \"KP\"].contains(principal.location) };\n".repeat(8)).unwrap();
    time("is_authorized set 8", n, || {
        auth.is_authorized(&req, &set, &ents)
    });
    let eq = PolicySet::from_str(&"permit(principal, action, resource) when { principal.location == \"CN\" || principal.location == \"RU\" || principal.location == \"IR\" || principal.location == \"KP\" };\n".repeat(8)).unwrap();
    time("is_authorized eqs 8", n, || {
        auth.is_authorized(&req, &eq, &ents)
    });
    let attr = PolicySet::from_str(
        &"permit(principal, action, resource) when { principal.location == \"CN\" };\n".repeat(8),
    )
    .unwrap();
    time("is_authorized attr 8", n, || {
        auth.is_authorized(&req, &attr, &ents)
    });
}
