use policy::{
    AccessRequest, Action, Context, DEFAULT_SCHEMA, PolicyEngine, PolicyError, Principal, Resource,
    default_policies,
};
use sha2::{Digest, Sha256};

fn countries(list: &[&str]) -> Vec<String> {
    list.iter().map(|c| c.to_string()).collect()
}

fn vetted_read(time: i64) -> AccessRequest {
    AccessRequest {
        principal: Principal {
            id: "alice".into(),
            entity: "usds".into(),
            entity_country: "US".into(),
            location: "US".into(),
            clearance: vec!["us-data".into()],
            roles: vec![],
        },
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
            purpose: "support".into(),
            time,
            ..Context::default()
        },
    }
}

fn load_err(policies: &str) -> PolicyError {
    match PolicyEngine::new(DEFAULT_SCHEMA, policies) {
        Ok(_) => panic!("policies should have been refused:\n{policies}"),
        Err(e) => e,
    }
}

#[test]
fn default_policies_validate_against_default_schema() {
    let engine = PolicyEngine::new(DEFAULT_SCHEMA, &default_policies(&countries(&["CN", "RU"])))
        .expect("default policies validate");
    assert_eq!(
        engine.policy_ids(),
        [
            "forbid-restricted-location",
            "forbid-restricted-entity-protected",
            "forbid-suspended-jurisdiction",
            "forbid-protected-without-grant",
            "forbid-monitor-user-data",
            "permit-usds-vetted-data",
            "permit-usds-vetted-subjects",
            "permit-parent-interoperable-read",
            "permit-parent-non-us-subjects",
            "permit-parent-non-us-data",
            "permit-data-subject-own-data",
            "permit-data-subject-own-listing",
            "permit-data-subject-own-history",
            "permit-egress-interoperable",
            "permit-operator-residency",
            "permit-algorithm-runner",
            "permit-algorithm-runner-results",
            "permit-released-algorithm-input",
            "permit-monitor-scan",
        ]
    );
}

#[test]
fn default_policies_render_the_restricted_set() {
    let rendered = default_policies(&countries(&["CN", "RU", "IR", "KP"]));
    assert!(rendered.contains(r#"["CN", "RU", "IR", "KP"].contains(principal.location)"#));
    assert!(!rendered.contains("__RESTRICTED__"));
}

#[test]
fn restricted_list_is_honoured_and_may_be_empty() {
    let mut usds_in_ru = vetted_read(0);
    usds_in_ru.principal.location = "RU".into();

    let with_ru =
        PolicyEngine::new(DEFAULT_SCHEMA, &default_policies(&countries(&["RU"]))).expect("loads");
    let d = with_ru.decide(&usds_in_ru);
    assert!(!d.allowed);
    assert_eq!(d.policies, ["forbid-restricted-location"]);

    // An empty list restricts nobody, yet still validates (strict mode refuses `[]`).
    let none = PolicyEngine::new(DEFAULT_SCHEMA, &default_policies(&[])).expect("loads");
    assert!(none.decide(&vetted_read(0)).allowed);
    let d = none.decide(&usds_in_ru);
    assert!(!d.allowed, "still not located in the US");
    assert!(d.policies.is_empty());
}

#[test]
fn restricted_countries_are_escaped() {
    // A hostile configuration value must not be able to inject policy text.
    // Unescaped, this would make forbid-restricted-location match everyone.
    let evil = countries(&[r#"X"].contains("X") || ["#]);
    let engine = PolicyEngine::new(DEFAULT_SCHEMA, &default_policies(&evil)).expect("loads");
    assert!(engine.decide(&vetted_read(0)).allowed);
}

#[test]
fn policy_failing_validation_is_refused_with_validator_message() {
    let err = load_err(
        r#"@id("ok") permit (principal, action, resource);
@id("uses-missing-attr") permit (principal, action, resource) when { principal.nonexistent == "x" };"#,
    );
    assert!(matches!(err, PolicyError::Validation(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("uses-missing-attr"), "{text}");
    assert!(text.contains("nonexistent"), "{text}");
    assert!(text.contains("line 2"), "{text}");
}

#[test]
fn policy_without_id_is_refused() {
    let err = load_err(
        r#"@id("first") permit (principal, action, resource);
permit (principal, action == Sovereign::Action::"read", resource);"#,
    );
    assert!(
        matches!(err, PolicyError::MissingId { position: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("@id"), "{err}");
}

#[test]
fn duplicate_id_is_refused() {
    let err = load_err(
        r#"@id("same") permit (principal, action, resource);
@id("same") forbid (principal, action, resource);"#,
    );
    assert!(
        matches!(&err, PolicyError::DuplicateId(id) if id == "same"),
        "{err:?}"
    );
}

#[test]
fn id_with_bad_characters_is_refused() {
    for bad in ["has space", "", "slash/id", "quote'"] {
        let err = load_err(&format!(
            r#"@id("{bad}") permit (principal, action, resource);"#
        ));
        assert!(
            matches!(&err, PolicyError::InvalidId(id) if id == bad),
            "{err:?}"
        );
    }
}

#[test]
fn templates_are_refused() {
    let err = load_err(r#"@id("t") permit (principal == ?principal, action, resource);"#);
    assert!(
        matches!(err, PolicyError::TemplateNotSupported { position: 1 }),
        "{err:?}"
    );
}

#[test]
fn parse_errors_are_reported_with_position() {
    let err = load_err(
        "@id(\"a\") permit (principal, action, resource);\n@id(\"b\") permit (principal action);",
    );
    assert!(matches!(err, PolicyError::PolicyParse(_)), "{err:?}");
    assert!(err.to_string().contains("line 2"), "{err}");

    let err = PolicyEngine::new("namespace Sovereign { entity }", "").unwrap_err();
    assert!(matches!(err, PolicyError::SchemaParse(_)), "{err:?}");
}

#[test]
fn schema_that_does_not_fit_sovereign_requests_is_refused() {
    let err = PolicyEngine::new("namespace Other { entity User; }", "").unwrap_err();
    assert!(matches!(err, PolicyError::SchemaMismatch(_)), "{err:?}");

    // Right names, wrong attribute type.
    let schema = DEFAULT_SCHEMA.replace("location: String", "location: Long");
    let err = PolicyEngine::new(&schema, "").unwrap_err();
    assert!(matches!(err, PolicyError::SchemaMismatch(_)), "{err:?}");
    assert!(err.to_string().contains("location"), "{err}");
}

#[test]
fn evaluation_error_fails_closed() {
    let engine = PolicyEngine::new(
        DEFAULT_SCHEMA,
        r#"@id("a") permit (principal, action, resource);
@id("b") permit (principal, action, resource) when { context.time + 9223372036854775807 > 0 };"#,
    )
    .expect("the overflow is only detectable at run time, so the set validates");

    let overflow = engine.decide(&vetted_read(10));
    assert!(!overflow.allowed, "{overflow:?}");
    assert!(!overflow.errors.is_empty(), "{overflow:?}");
    assert!(overflow.errors[0].contains('b'), "{overflow:?}");
    assert!(overflow.policies.is_empty(), "{overflow:?}");

    // Same set without the overflow allows, so the deny above really came from the error.
    let fine = engine.decide(&vetted_read(-10));
    assert!(fine.allowed, "{fine:?}");
    assert_eq!(fine.policies, ["a", "b"]);
    assert!(fine.errors.is_empty());
}

#[test]
fn evaluation_error_alongside_a_forbid_still_denies_and_names_the_forbid() {
    let engine = PolicyEngine::new(
        DEFAULT_SCHEMA,
        r#"@id("no") forbid (principal, action, resource);
@id("b") permit (principal, action, resource) when { context.time * 4 > 0 };"#,
    )
    .expect("loads");
    let d = engine.decide(&vetted_read(i64::MAX / 2));
    assert!(!d.allowed);
    assert_eq!(d.policies, ["no"]);
    assert_eq!(d.errors.len(), 1, "{d:?}");
}

#[test]
fn action_on_the_wrong_kind_of_resource_is_denied_with_error() {
    let engine = PolicyEngine::new(
        DEFAULT_SCHEMA,
        r#"@id("all") permit (principal, action, resource);"#,
    )
    .expect("loads");
    let mut req = vetted_read(0);
    req.action = Action::Register; // register applies to Subject, not Data
    let d = engine.decide(&req);
    assert!(!d.allowed);
    assert!(d.policies.is_empty());
    assert_eq!(d.errors.len(), 1, "{d:?}");
}

#[test]
fn policy_set_hash_is_stable_and_sensitive() {
    let policies = default_policies(&countries(&["CN", "RU", "IR", "KP"]));
    let a = PolicyEngine::new(DEFAULT_SCHEMA, &policies).unwrap();
    let b = PolicyEngine::new(DEFAULT_SCHEMA, &policies).unwrap();
    assert_eq!(a.policy_set_hash(), b.policy_set_hash());
    assert_eq!(a.policy_set_hash().len(), 64);
    assert!(
        a.policy_set_hash()
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    );

    // One byte of difference (a comment, so the set still loads) changes the hash.
    let tweaked = policies.replacen("// Monitors", "// monitors", 1);
    assert_eq!(tweaked.len(), policies.len());
    let c = PolicyEngine::new(DEFAULT_SCHEMA, &tweaked).unwrap();
    assert_ne!(a.policy_set_hash(), c.policy_set_hash());

    // The documented encoding, computed independently.
    let mut h = Sha256::new();
    h.update(b"sovereign-policy-set-v1\n");
    h.update((DEFAULT_SCHEMA.len() as u64).to_be_bytes());
    h.update(DEFAULT_SCHEMA.as_bytes());
    h.update((policies.len() as u64).to_be_bytes());
    h.update(policies.as_bytes());
    assert_eq!(a.policy_set_hash(), hex::encode(h.finalize()));
}

#[test]
fn decision_serializes_for_the_api() {
    let engine =
        PolicyEngine::new(DEFAULT_SCHEMA, &default_policies(&countries(&["CN"]))).expect("loads");
    let json = serde_json::to_value(engine.decide(&vetted_read(0))).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "allowed": true,
            "policies": ["permit-usds-vetted-data"],
            "errors": [],
        })
    );
}

#[test]
fn action_groups_in_a_custom_schema_are_honoured() {
    let schema = DEFAULT_SCHEMA.replace(
        r#"action "read", "write", "delete", "export", "egress", "compute" appliesTo"#,
        "action \"data-actions\";\n  action \"read\", \"write\", \"delete\", \"export\", \"egress\", \"compute\" in [\"data-actions\"] appliesTo",
    );
    assert_ne!(schema, DEFAULT_SCHEMA, "the test must change the schema");
    let engine = PolicyEngine::new(
        &schema,
        r#"@id("data") permit (principal, action in Sovereign::Action::"data-actions", resource);"#,
    )
    .expect("loads");
    let d = engine.decide(&vetted_read(0));
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.policies, ["data"]);
}

#[test]
fn decisions_track_every_field_a_policy_reads() {
    let engine = PolicyEngine::new(
        DEFAULT_SCHEMA,
        r#"@id("alice-early") permit (principal, action, resource) when { principal.id == "alice" && context.time < 100 };"#,
    )
    .expect("loads");
    let mut req = vetted_read(50);
    assert!(engine.decide(&req).allowed);
    req.principal.id = "bob".into();
    assert!(!engine.decide(&req).allowed);
    req.principal.id = "alice".into();
    assert!(engine.decide(&req).allowed);
    req.context.time = 150;
    assert!(!engine.decide(&req).allowed);
    req.context.time = 50;
    assert!(engine.decide(&req).allowed);
}

#[test]
fn decisions_are_consistent_across_threads() {
    let engine = std::sync::Arc::new(
        PolicyEngine::new(DEFAULT_SCHEMA, &default_policies(&countries(&["CN"]))).unwrap(),
    );
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    let mut req = vetted_read(i);
                    req.principal.location = if (i + t) % 2 == 0 { "US" } else { "CN" }.into();
                    let d = engine.decide(&req);
                    assert_eq!(d.allowed, req.principal.location == "US", "{d:?}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}
