//! `sovereign policy prove`: the unedited default policies satisfy every default invariant;
//! with the restricted-country forbid dropped, the set is refused with a counterexample that
//! Cedar's own authorizer confirms; without a solver it says how to install one. Skips without
//! cvc5 unless `SOVEREIGN_REQUIRE_CVC5=1`.

use std::process::Output;

fn prove(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = crate::support::sovereign();
    command.args(["policy", "prove"]).args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

#[test]
fn default_policies_are_proven_and_a_mutant_is_refused() {
    if !crate::support::cvc5_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let init = crate::support::sovereign()
        .args(["init", "--data", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(init.status.success());
    let policies = data.join("policy/policies.cedar");

    let output = prove(&[policies.to_str().unwrap()], &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("all proven"), "{stdout}");
    assert_eq!(stdout.matches(": proven").count(), 8, "{stdout}");

    let text = std::fs::read_to_string(&policies).unwrap();
    let start = text.find("@id(\"forbid-restricted-location\")").unwrap();
    let end = text
        .find("@id(\"forbid-restricted-entity-protected\")")
        .unwrap();
    let mutant = dir.path().join("mutant.cedar");
    std::fs::write(&mutant, format!("{}{}", &text[..start], &text[end..])).unwrap();
    let output = prove(&[mutant.to_str().unwrap(), "--json"], &[]);
    assert!(!output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let refuted: Vec<&serde_json::Value> = report["invariants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["outcome"]["result"] != "proven")
        .collect();
    assert_eq!(refuted.len(), 1, "{report:#}");
    assert_eq!(
        refuted[0]["name"],
        "restricted-location-never-on-us-subjects"
    );
    let example = &refuted[0]["outcome"]["detail"];
    assert_eq!(example["confirmed"], true, "{example:#}");
    let location = example["request"]["principal"]["attributes"]["location"]
        .as_str()
        .unwrap_or_else(|| panic!("{example:#}"));
    assert!(["CN", "RU", "IR", "KP"].contains(&location), "{example:#}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("must not be activated"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let output = prove(
        &[mutant.to_str().unwrap()],
        &[("CVC5", "/nonexistent/cvc5")],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("apt-get install cvc5"), "{stderr}");
}
