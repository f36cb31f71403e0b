//! End-to-end proofs with the real cvc5 (no mocks). Without cvc5 the solver tests print a
//! message and pass, unless `SOVEREIGN_REQUIRE_CVC5=1`, which makes them fail.

use std::time::Duration;

use prove::{
    Counterexample, Decision, ErrorsOutcome, Invariants, Outcome, ProofReport, ProveError, Solver,
    default_invariants, prove,
};
use serde_json::json;

fn restricted() -> Vec<String> {
    ["CN", "RU", "IR", "KP"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn solver() -> Option<Solver> {
    match Solver::from_env() {
        Ok(solver) => Some(solver),
        Err(e) => {
            if std::env::var("SOVEREIGN_REQUIRE_CVC5").as_deref() == Ok("1") {
                panic!("SOVEREIGN_REQUIRE_CVC5=1 but no solver: {e}");
            }
            eprintln!("skipping: {e}");
            None
        }
    }
}

fn default_invariant_set() -> Invariants {
    Invariants::parse(&default_invariants(&restricted())).expect("default invariants parse")
}

fn prove_policies(policies: &str) -> Option<ProofReport> {
    let solver = solver()?;
    let report = prove(
        policy::DEFAULT_SCHEMA,
        policies,
        &default_invariant_set(),
        &solver,
    )
    .expect("proof runs");
    Some(report)
}

/// Applies `edit` to the text of the policy with `@id(id)` (from its `@id` line to its `};`).
fn edit_policy(src: &str, id: &str, edit: impl FnOnce(&str) -> String) -> String {
    let start = src
        .find(&format!("@id(\"{id}\")"))
        .unwrap_or_else(|| panic!("no policy {id}"));
    let end = start + src[start..].find("};").expect("policy ends") + 2;
    let edited = edit(&src[start..end]);
    format!("{}{}{}", &src[..start], edited, &src[end..])
}

fn drop_policy(src: &str, id: &str) -> String {
    edit_policy(src, id, |_| String::new())
}

/// Proves `policies` and checks that exactly `target` is refuted, with a counterexample
/// Cedar's authorizer confirms; every other invariant stays proven.
fn refutes_only(policies: &str, target: &str) -> Option<Counterexample> {
    let report = prove_policies(policies)?;
    println!("{report}");
    assert!(!report.all_proven());
    let mut found = None;
    for result in &report.invariants {
        match (&result.outcome, result.name == target) {
            (Outcome::Refuted(cex), true) => found = Some((**cex).clone()),
            (Outcome::Proven, false) => {}
            (outcome, _) => panic!("invariant {}: unexpected outcome {outcome}", result.name),
        }
    }
    let cex = found.unwrap_or_else(|| panic!("no invariant named {target}"));
    assert!(cex.confirmed, "Cedar does not confirm: {cex}");
    assert_eq!(cex.cedar_decision_active.decision, Decision::Allow);
    assert_eq!(cex.cedar_decision_invariant.decision, Decision::Deny);
    assert!(!cex.cedar_decision_invariant.policies.is_empty());
    // The mutants do not make any policy error.
    assert!(
        report
            .never_errors
            .iter()
            .all(|p| matches!(p.outcome, ErrorsOutcome::NeverErrors))
    );
    // The JSON form carries the same verdict.
    let json = report.to_json();
    let entry = json["invariants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == target)
        .unwrap();
    assert_eq!(entry["outcome"]["result"], "refuted");
    assert_eq!(entry["outcome"]["detail"]["confirmed"], true);
    Some(cex)
}

fn attr<'a>(attrs: &'a std::collections::BTreeMap<String, serde_json::Value>, k: &str) -> &'a str {
    attrs[k]
        .as_str()
        .unwrap_or_else(|| panic!("{k} is not a string"))
}

#[test]
fn default_policies_satisfy_every_default_invariant_and_never_error() {
    let policies = policy::default_policies(&restricted());
    let Some(report) = prove_policies(&policies) else {
        return;
    };
    println!("{report}");
    assert!(report.all_proven(), "{report}");
    assert_eq!(report.invariants.len(), 8);
    assert_eq!(report.never_errors.len(), 19);
    // One request environment per action.
    assert_eq!(report.environments.len(), 12, "{:?}", report.environments);
    let engine = policy::PolicyEngine::new(policy::DEFAULT_SCHEMA, &policies).unwrap();
    assert_eq!(report.policy_set_hash, engine.policy_set_hash());
    assert_eq!(report.invariant_set_hash, default_invariant_set().hash());
    assert_eq!(report.solver.name, "cvc5");
    assert!(
        report.solver.version.starts_with(char::is_numeric),
        "{}",
        report.solver.version
    );
    assert_eq!(report.solver.timeout_ms, 10_000);
    let json = report.to_json();
    assert_eq!(json["invariants"][0]["outcome"]["result"], "proven");
    assert_eq!(json["never_errors"][0]["outcome"]["result"], "never_errors");
    assert!(json["duration_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn dropping_the_restricted_location_forbid_is_refuted() {
    let src = drop_policy(
        &policy::default_policies(&restricted()),
        "forbid-restricted-location",
    );
    let Some(cex) = refutes_only(&src, "restricted-location-never-on-us-subjects") else {
        return;
    };
    let location = attr(&cex.request.principal.attributes, "location");
    assert!(restricted().iter().any(|c| c == location), "{cex}");
    assert_eq!(
        attr(&cex.request.resource.attributes, "subject_jurisdiction"),
        "US"
    );
    assert_eq!(cex.request.resource.attributes["suspended"], json!(false));
    println!("{cex}");
}

#[test]
fn dropping_the_monitor_forbid_is_refuted() {
    let src = drop_policy(
        &policy::default_policies(&restricted()),
        "forbid-monitor-user-data",
    );
    let Some(cex) = refutes_only(&src, "monitors-never-touch-user-data") else {
        return;
    };
    let principal = &cex.request.principal.attributes;
    let is_monitor = attr(principal, "entity") == "monitor"
        || principal["roles"]
            .as_array()
            .unwrap()
            .contains(&json!("monitor"));
    assert!(is_monitor, "{cex}");
}

#[test]
fn letting_parent_touch_us_data_is_refuted() {
    // Parent may now read and write data of every subject, US included (with a purpose).
    let src = edit_policy(
        &policy::default_policies(&restricted()),
        "permit-parent-non-us-data",
        |p| p.replace("resource.subject_jurisdiction != \"US\" &&", ""),
    );
    let Some(cex) = refutes_only(&src, "parent-never-gets-us-protected-fields") else {
        return;
    };
    assert_eq!(attr(&cex.request.principal.attributes, "entity"), "parent");
    assert_eq!(cex.request.resource.type_name, "Sovereign::Data");
    let resource = &cex.request.resource.attributes;
    assert_eq!(attr(resource, "subject_jurisdiction"), "US");
    assert_eq!(attr(resource, "field_class"), "protected");
    assert!(
        cex.cedar_decision_active
            .policies
            .contains(&"permit-parent-non-us-data".to_string())
    );
}

#[test]
fn dropping_the_suspension_forbid_is_refuted() {
    let src = drop_policy(
        &policy::default_policies(&restricted()),
        "forbid-suspended-jurisdiction",
    );
    let Some(cex) = refutes_only(&src, "nothing-on-suspended-jurisdiction") else {
        return;
    };
    assert_eq!(cex.request.resource.attributes["suspended"], json!(true));
}

#[test]
fn dropping_the_purpose_condition_is_refuted() {
    let src = edit_policy(
        &policy::default_policies(&restricted()),
        "permit-usds-vetted-data",
        |p| p.replace(" &&\n  context.purpose != \"\"", ""),
    );
    assert_ne!(src, policy::default_policies(&restricted()));
    let Some(cex) = refutes_only(&src, "protected-read-needs-purpose") else {
        return;
    };
    assert!(
        ["read", "export"].contains(&cex.request.action.as_str()),
        "{}",
        cex.request.action
    );
    assert_eq!(cex.request.context["purpose"], json!(""));
    assert_eq!(
        attr(&cex.request.resource.attributes, "field_class"),
        "protected"
    );
    let display = cex.to_string();
    assert!(
        display.contains("may read Sovereign::Data {")
            || display.contains("may export Sovereign::Data {"),
        "{display}"
    );
    assert!(display.contains("purpose: \"\""), "{display}");
}

#[test]
fn an_erroring_policy_is_reported() {
    // Integer overflow is an evaluation error Cedar's validator cannot rule out.
    let src = format!(
        "{}\n@id(\"forbid-late\")\nforbid (principal, action, resource) when {{ context.time + 1 > 100 }};\n",
        policy::default_policies(&restricted())
    );
    let Some(report) = prove_policies(&src) else {
        return;
    };
    assert!(!report.all_proven());
    let late = report
        .never_errors
        .iter()
        .find(|p| p.policy_id == "forbid-late")
        .unwrap();
    let ErrorsOutcome::MayError {
        request,
        cedar_errors,
    } = &late.outcome
    else {
        panic!("expected an error: {}", late.outcome);
    };
    assert_eq!(request.context["time"], json!(i64::MAX), "{request}");
    assert!(!cedar_errors.is_empty(), "Cedar confirms the overflow");
}

#[test]
fn a_tiny_timeout_never_yields_a_false_verdict() {
    let Some(solver) = solver() else {
        return;
    };
    let solver = solver.with_timeout(Duration::from_millis(1));
    let report = prove(
        policy::DEFAULT_SCHEMA,
        &policy::default_policies(&restricted()),
        &default_invariant_set(),
        &solver,
    )
    .unwrap();
    let timed_out = report
        .invariants
        .iter()
        .filter(|i| matches!(i.outcome, Outcome::TimedOut { .. }))
        .count();
    println!("{timed_out} invariants timed out with a 1 ms limit");
    for i in &report.invariants {
        assert!(
            matches!(
                i.outcome,
                Outcome::Proven | Outcome::TimedOut { .. } | Outcome::Failed(_)
            ),
            "{}",
            i.outcome
        );
    }
    if timed_out > 0 {
        assert!(!report.all_proven());
    }
}

#[test]
fn works_from_spawn_blocking_and_plain_threads() {
    let Some(solver) = solver() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let s = solver.clone();
    let report = runtime
        .block_on(async move {
            tokio::task::spawn_blocking(move || {
                prove(
                    policy::DEFAULT_SCHEMA,
                    &policy::default_policies(&restricted()),
                    &default_invariant_set(),
                    &s,
                )
            })
            .await
        })
        .unwrap()
        .unwrap();
    assert!(report.all_proven());
    let report = std::thread::spawn(move || {
        prove(
            policy::DEFAULT_SCHEMA,
            &policy::default_policies(&restricted()),
            &default_invariant_set(),
            &solver,
        )
    })
    .join()
    .unwrap()
    .unwrap();
    assert!(report.all_proven());
}

#[test]
fn missing_solver_gives_the_install_message() {
    // Run Solver::from_env in a child process with CVC5=/nonexistent (no env mutation here).
    // The child test is named by its path in the test binary (this module, `prove::`).
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "prove::solver_from_env_child", "--nocapture"])
        .env("CVC5", "/nonexistent")
        .env("PROVE_SOLVER_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("CHILD-RAN"), "{stdout}");
}

#[test]
fn solver_from_env_child() {
    if std::env::var("PROVE_SOLVER_CHILD").is_err() {
        return;
    }
    let err = Solver::from_env().unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, ProveError::SolverNotFound { .. }), "{err:?}");
    assert!(message.contains("/nonexistent"), "{message}");
    assert!(
        message.contains("apt-get install cvc5, or set CVC5=/path/to/cvc5"),
        "{message}"
    );
    println!("CHILD-RAN {message}");
}

// --- parse errors (no solver needed) ---

const PERMIT_ALL: &str =
    "@id(\"all\")\n@invariant(\"x\")\n@description(\"d\")\npermit (principal, action, resource);\n";

#[test]
fn unannotated_policy_is_refused() {
    let src = format!("{PERMIT_ALL}@id(\"f\")\nforbid (principal, action, resource);\n");
    let err = Invariants::parse(&src).unwrap_err();
    assert!(
        matches!(
            err,
            ProveError::MissingAnnotation {
                position: 2,
                annotation: "invariant",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("@invariant"), "{err}");

    let src = format!("{PERMIT_ALL}@invariant(\"x\")\nforbid (principal, action, resource);\n");
    let err = Invariants::parse(&src).unwrap_err();
    assert!(err.to_string().contains("no @id"), "{err}");
}

#[test]
fn unparsable_cedar_is_refused_with_a_position() {
    let src = format!(
        "{PERMIT_ALL}@id(\"f\")\n@invariant(\"x\")\nforbid (principal, action, resource) when {{ ;\n"
    );
    let err = Invariants::parse(&src).unwrap_err();
    assert!(matches!(err, ProveError::InvariantSyntax(_)), "{err:?}");
    assert!(err.to_string().contains("line 7"), "{err}");
}

#[test]
fn invariant_failing_validation_is_refused() {
    let src = format!(
        "{PERMIT_ALL}@id(\"f\")\n@invariant(\"x\")\nforbid (principal, action, resource) when {{ principal.salary > 3 }};\n"
    );
    let err = Invariants::parse(&src).unwrap_err();
    assert!(matches!(err, ProveError::InvariantValidation(_)), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("salary"), "{message}");
    assert!(message.contains("line 7"), "{message}");
}

#[test]
fn invariant_without_permit_or_description_is_refused() {
    let err = Invariants::parse(
        "@id(\"f\")\n@invariant(\"x\")\n@description(\"d\")\nforbid (principal, action, resource);\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("no permit"), "{err}");
    let err =
        Invariants::parse("@id(\"a\")\n@invariant(\"x\")\npermit (principal, action, resource);\n")
            .unwrap_err();
    assert!(err.to_string().contains("no @description"), "{err}");
    let err = Invariants::parse("// nothing\n").unwrap_err();
    assert!(matches!(err, ProveError::NoInvariants), "{err:?}");
}

#[test]
fn default_invariants_group_by_name() {
    let invariants = default_invariant_set();
    let names: Vec<&str> = invariants.iter().map(|i| i.name()).collect();
    assert_eq!(
        names,
        [
            "restricted-location-never-on-us-subjects",
            "monitors-never-touch-user-data",
            "parent-never-gets-us-protected-fields",
            "nothing-on-suspended-jurisdiction",
            "protected-read-needs-purpose",
            "egress-only-interoperable",
            "algorithm-input-only-to-releases-in-jurisdiction",
            "access-history-only-to-its-subject",
        ]
    );
    for invariant in invariants.iter() {
        assert_eq!(invariant.policy_ids().len(), 2);
        assert!(!invariant.description().is_empty());
    }
}

#[test]
fn a_hard_query_that_times_out_is_not_proven() {
    let Some(solver) = solver() else {
        return;
    };
    let solver = solver.with_timeout(Duration::from_millis(10));
    // Finding a 64-bit square root (without overflow) is slow for a bit-blasting solver:
    // about 0.4 s for cvc5 1.0.3 without a limit, which finds time = -2147483647.
    let policies = "@id(\"square\")\npermit (principal, action, resource) when { context.time * context.time == 4611686014132420609 };\n";
    let invariants = Invariants::parse(
        "@id(\"all\")\n@invariant(\"non-negative-time\")\n@description(\"d\")\npermit (principal, action, resource);\n\
         @id(\"neg\")\n@invariant(\"non-negative-time\")\nforbid (principal, action, resource) when { context.time < 0 };\n",
    )
    .unwrap();
    let report = prove(policy::DEFAULT_SCHEMA, policies, &invariants, &solver).unwrap();
    println!("{report}");
    assert!(
        matches!(report.invariants[0].outcome, Outcome::TimedOut { .. }),
        "{}",
        report.invariants[0].outcome
    );
    assert!(!report.all_proven());
}

#[test]
fn per_query_durations_add_up_to_at_most_the_total() {
    let Some(report) = prove_policies(&policy::default_policies(&restricted())) else {
        return;
    };
    let invariants: f64 = report.invariants.iter().map(|i| i.duration_ms).sum();
    let policies: f64 = report.never_errors.iter().map(|p| p.duration_ms).sum();
    assert!(
        invariants + policies <= report.duration_ms,
        "invariants {invariants} ms + never-errors {policies} ms > total {} ms",
        report.duration_ms
    );
}
