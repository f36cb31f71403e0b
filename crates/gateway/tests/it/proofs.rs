//! Proof before activation, through the HTTP API and the gateway's start: a policy set that
//! breaks an invariant is refused with a counterexample Cedar confirms, and nothing changes;
//! activation proves again; invariants change only with the custodian's signature and only
//! if the active set satisfies them; the proofs are in the log. Needs cvc5 (the gateway
//! cannot activate its first policy set without it).

use crate::support::*;
use custody::statement::Statement;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// `src` without the policy `@id(id)` (from its `@id` line to its `};`).
fn drop_policy(src: &str, id: &str) -> String {
    let start = src
        .find(&format!("@id(\"{id}\")"))
        .unwrap_or_else(|| panic!("no policy {id}"));
    let end = start + src[start..].find("};").expect("policy ends") + 2;
    format!("{}{}", &src[..start], &src[end..])
}

/// The one refuted invariant of a `policy_not_proven` answer, checked to be the only one.
fn refuted(body: &Value) -> (&str, &Value) {
    let results = body["proof"]["invariants"]
        .as_array()
        .expect("a proof report");
    let refuted: Vec<&Value> = results
        .iter()
        .filter(|r| r["outcome"]["result"] != "proven")
        .collect();
    assert_eq!(refuted.len(), 1, "{body:#}");
    let r = refuted[0];
    assert_eq!(r["outcome"]["result"], "refuted", "{body:#}");
    (r["name"].as_str().unwrap(), &r["outcome"]["detail"])
}

#[tokio::test]
async fn a_set_without_the_restricted_country_forbid_is_refused_with_a_confirmed_counterexample() {
    let server = Server::start().await;
    let olga = server.token(&OPERATOR);
    let active = server.state.custody.active_policy().unwrap();
    let sets_before = server.state.custody.policy_sets().1.len();
    let log_before = server.state.log.size();

    let mutant = drop_policy(&active.policies, "forbid-restricted-location");
    let body = server
        .post("/v1/policies")
        .bearer(&olga)
        .body(&json!({ "policies": mutant }).to_string())
        .expect(StatusCode::UNPROCESSABLE_ENTITY)
        .await;
    assert_eq!(body["error"], "policy_not_proven");
    let (name, cex) = refuted(&body);
    assert_eq!(name, "restricted-location-never-on-us-subjects");
    // The counterexample in plain terms, and Cedar's own decision on it.
    assert_eq!(cex["confirmed"], true, "{cex:#}");
    assert_eq!(cex["cedar_decision_active"]["decision"], "allow", "{cex:#}");
    assert_eq!(
        cex["cedar_decision_invariant"]["decision"], "deny",
        "{cex:#}"
    );
    let location = cex["request"]["principal"]["attributes"]["location"]
        .as_str()
        .unwrap();
    assert!(["CN", "RU", "IR", "KP"].contains(&location), "{cex:#}");
    assert_eq!(
        cex["request"]["resource"]["attributes"]["subject_jurisdiction"],
        "US"
    );
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("REFUTED") && message.contains(location),
        "{message}"
    );

    // Nothing was stored or logged.
    assert_eq!(server.state.custody.policy_sets().1.len(), sets_before);
    assert_eq!(server.state.log.size(), log_before);
    assert_eq!(server.state.policy().policy_set_hash(), active.hash);

    // The unedited set proposes with its proofs.
    let body = server
        .post("/v1/policies")
        .bearer(&olga)
        .body(&json!({ "policies": active.policies }).to_string())
        .expect(StatusCode::OK)
        .await;
    assert_eq!(body["proofs"]["policy_set"], active.hash.as_str());
    assert_eq!(body["proofs"]["invariants"].as_array().unwrap().len(), 8);
    server.stop().await;
}

#[tokio::test]
async fn activation_proves_again_and_refuses_an_unproven_set() {
    let server = Server::start().await;
    let olga = server.token(&OPERATOR);
    let active = server.state.custody.active_policy().unwrap();
    // A set that reached custody without the API's proof (the API refuses to propose it):
    // activation must not trust the proposal.
    let mutant = drop_policy(&active.policies, "forbid-monitor-user-data");
    let engine = policy::PolicyEngine::new(&active.schema, &mutant).unwrap();
    let hash = engine.policy_set_hash().to_string();
    let record = custody::PolicySetRecord {
        hash: hash.clone(),
        schema: active.schema.clone(),
        policies: mutant,
        policy_ids: engine.policy_ids(),
        proposed_by: custody::Person {
            id: "olga".into(),
            entity: "custodian".into(),
        },
        proposed_at: crate::support::now(),
        activated_at: None,
        signature: None,
        signers: vec![],
        proofs: None,
        log_index: None,
    };
    let state = server.state.clone();
    tokio::task::spawn_blocking(move || {
        let append = |event: custody::Event<'_>| {
            state
                .log
                .append_blocking(gateway::entry::custody_entry(
                    &event,
                    None,
                    &state.pseudonyms,
                ))
                .map_err(|e| e.to_string())
        };
        state.custody.propose_policy(record, &append).unwrap();
    })
    .await
    .unwrap();

    let note = signed(
        &Statement::PolicyActivation {
            policy_set: hash.clone(),
        },
        &custodian_key(&server.data()),
    );
    let log_before = server.state.log.size();
    let body = server
        .post(&format!("/v1/policies/{hash}/activate"))
        .bearer(&olga)
        .body(&note)
        .expect(StatusCode::UNPROCESSABLE_ENTITY)
        .await;
    assert_eq!(body["error"], "policy_not_proven");
    let (name, cex) = refuted(&body);
    assert_eq!(name, "monitors-never-touch-user-data");
    assert_eq!(cex["confirmed"], true, "{cex:#}");
    assert_eq!(server.state.policy().policy_set_hash(), active.hash);
    assert_eq!(
        server.state.custody.active_policy().unwrap().hash,
        active.hash
    );
    assert_eq!(server.state.log.size(), log_before, "nothing logged");
    server.stop().await;
}

/// A sixth invariant the default policies keep: nobody in CN deletes US data (already
/// implied by the first invariant).
const KEPT_INVARIANT: &str = "\n@id(\"inv-no-restricted-delete\")\n@invariant(\"no-restricted-delete\")\n@description(\"Nobody in CN deletes US data.\")\nforbid (principal, action == Sovereign::Action::\"delete\", resource is Sovereign::Data)\nwhen { resource.subject_jurisdiction == \"US\" && principal.location == \"CN\" };\n@id(\"inv-no-restricted-delete-permit\")\n@invariant(\"no-restricted-delete\")\npermit (principal, action, resource);\n";

/// An invariant the default policies break: nothing is ever read.
const BROKEN_INVARIANT: &str = "\n@id(\"inv-no-reads\")\n@invariant(\"no-reads\")\n@description(\"Nothing is read.\")\nforbid (principal, action == Sovereign::Action::\"read\", resource);\n@id(\"inv-no-reads-permit\")\n@invariant(\"no-reads\")\npermit (principal, action, resource);\n";

#[tokio::test]
async fn invariants_change_only_signed_and_only_if_the_active_set_keeps_them() {
    let server = Server::start().await;
    let olga = server.token(&OPERATOR);
    let active = server.state.custody.active_policy().unwrap().hash;
    let first = server.state.custody.active_invariants().unwrap();
    let propose = |text: String| {
        let server = &server;
        let olga = olga.clone();
        async move {
            server
                .post("/v1/invariants")
                .bearer(&olga)
                .body(&json!({ "text": text }).to_string())
                .await
        }
    };

    // Invariants the active set breaks are refused with the counterexample, and not stored.
    let log_before = server.state.log.size();
    let body = propose(format!("{}{BROKEN_INVARIANT}", first.text))
        .await
        .refused(StatusCode::UNPROCESSABLE_ENTITY, "policy_not_proven");
    assert_eq!(refuted(&body).0, "no-reads");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("does not keep these invariants")
    );
    assert_eq!(server.state.log.size(), log_before);
    assert_eq!(server.state.custody.invariant_sets().1.len(), 1);
    let Reply { status, body, .. } = propose("not cedar".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_invariants");

    // Invariants it keeps are proposed with the proofs of the active set against them.
    let kept = format!("{}{KEPT_INVARIANT}", first.text);
    let Reply {
        status,
        body: proposed,
        ..
    } = propose(kept.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{proposed}");
    let hash = proposed["hash"].as_str().unwrap().to_string();
    assert_eq!(proposed["invariants"].as_array().unwrap().len(), 9);
    assert_eq!(proposed["proofs"]["policy_set"], active.as_str());
    assert_eq!(proposed["proofs"]["invariant_set"], hash.as_str());
    assert_eq!(
        server.state.custody.active_invariants().unwrap().hash,
        first.hash,
        "not yet"
    );

    // Only the custodian's statement for exactly this set activates it.
    let activate = format!("/v1/invariants/{hash}/activate");
    let key = custodian_key(&server.data());
    let for_first = signed(
        &Statement::InvariantActivation {
            invariant_set: first.hash.clone(),
        },
        &key,
    );
    let body = server
        .post(&activate)
        .bearer(&olga)
        .body(&for_first)
        .expect(StatusCode::BAD_REQUEST)
        .await;
    assert_eq!(body["error"], "invalid_signature");
    let (stranger, _) = tlog::note::generate_key("custodian").unwrap();
    let by_stranger = signed(
        &Statement::InvariantActivation {
            invariant_set: hash.clone(),
        },
        &tlog::note::Signer::new(&stranger).unwrap(),
    );
    let body = server
        .post(&activate)
        .bearer(&olga)
        .body(&by_stranger)
        .expect(StatusCode::FORBIDDEN)
        .await;
    assert_eq!(body["error"], "threshold_not_met");
    assert_eq!(
        server.state.custody.active_invariants().unwrap().hash,
        first.hash
    );

    let note = signed(
        &Statement::InvariantActivation {
            invariant_set: hash.clone(),
        },
        &key,
    );
    let body = server
        .post(&activate)
        .bearer(&olga)
        .body(&note)
        .expect(StatusCode::OK)
        .await;
    assert_eq!(body["signers"], json!(["custodian"]));
    assert_eq!(body["proofs"]["policy_set"], active.as_str());
    let now = server.state.custody.active_invariants().unwrap();
    assert_eq!(now.hash, hash);
    let logged = server.last_entry();
    assert_eq!(logged["event"], "invariants-activated", "{logged}");
    assert_eq!(logged["details"]["previous"], first.hash.as_str());
    assert_eq!(logged["details"]["proofs"]["invariant_set"], hash.as_str());

    // From now on a policy set is proven against all eight.
    let body = server.post("/v1/policies").bearer(&olga).body(&json!({ "policies": format!("{}\n// again\n", server.state.custody.active_policy().unwrap().policies) })
                    .to_string(),).expect(StatusCode::CREATED).await;
    assert_eq!(body["proofs"]["invariants"].as_array().unwrap().len(), 9);

    // The activation survives a restart; the invariants file (still the first set) is
    // ignored, as the policy file is.
    let dir = server.stop_keep().await;
    let gateway = gateway::Gateway::open(dir.path()).unwrap();
    assert_eq!(
        gateway.state().custody.active_invariants().unwrap().hash,
        hash
    );
}

#[tokio::test]
async fn monitors_fetch_the_invariants_in_force_by_hash_without_a_token() {
    let server = Server::start().await;
    let Reply {
        status, body: list, ..
    } = server.get("/v1/invariants").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let hash = list["active"].as_str().unwrap().to_string();
    assert_eq!(list["sets"][0]["status"], "active");
    assert_eq!(list["sets"][0]["invariants"].as_array().unwrap().len(), 8);

    let set = server
        .get(&format!("/v1/invariants/{hash}"))
        .expect(StatusCode::OK)
        .await;
    // The text is the signed one: it hashes to the set's hash, and the signature names it.
    let text = set["text"].as_str().unwrap();
    let parsed = prove::Invariants::parse_with_schema(policy::DEFAULT_SCHEMA, text).unwrap();
    assert_eq!(parsed.hash(), hash);
    assert!(set["signature"].as_str().unwrap().contains(&hash));
    assert_eq!(
        set["proofs"],
        Value::Null,
        "no policy set was active before it"
    );

    let body = server
        .get(&format!("/v1/invariants/{}", "0".repeat(64)))
        .expect(StatusCode::NOT_FOUND)
        .await;
    assert_eq!(body["error"], "unknown_invariant_set");
    server.stop().await;
}

/// A gateway restarted without a usable solver serves its proven set, but proves nothing new:
/// proposals get 503 `solver_unavailable` saying how to install one, and nothing changes.
#[tokio::test]
async fn without_a_solver_nothing_new_is_activated_and_the_answer_says_how_to_install_one() {
    let server = Server::start().await;
    let active = server.state.custody.active_policy().unwrap();
    let dir = server.stop_keep().await;
    let config = dir.path().join("sovereign.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let missing = dir.path().join("no-such-cvc5");
    let edited = text.replace(
        "# solver = \"/usr/bin/cvc5\"",
        &format!("solver = {:?}", missing.to_str().unwrap()),
    );
    assert_ne!(edited, text, "sovereign.toml lacks the solver line");
    std::fs::write(&config, edited).unwrap();

    let gateway = gateway::Gateway::open(dir.path()).expect("a restart needs no solver");
    let server = Server::spawn(gateway, dir).await;
    assert_eq!(server.state.policy().policy_set_hash(), active.hash);
    let olga = server.token(&OPERATOR);
    let log_before = server.state.log.size();
    let body = server
        .post("/v1/policies")
        .bearer(&olga)
        .body(&json!({ "policies": format!("{}\n// reviewed\n", active.policies) }).to_string())
        .expect(StatusCode::SERVICE_UNAVAILABLE)
        .await;
    assert_eq!(body["error"], "solver_unavailable");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("apt-get install cvc5") && message.contains("no-such-cvc5"),
        "{message}"
    );
    assert_eq!(server.state.log.size(), log_before, "nothing logged");
    assert_eq!(
        server.state.custody.policy_sets().1.len(),
        1,
        "nothing stored"
    );
    server.stop().await;
}

/// The proof record shipped inside the binary (`defaults/proofs.json`, used by a first start
/// without a solver) is what cvc5 proves of the defaults now: the same policy set and
/// invariant set, every invariant and policy with the same result. After a change to the
/// default policies, schema or invariants, write it again with
/// `SOVEREIGN_WRITE_SHIPPED_PROOFS=1 cargo test -p gateway --test it shipped_proofs`.
#[test]
fn shipped_proofs_are_a_fresh_proof_of_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    gateway::setup::init(dir.path(), false).unwrap();
    let config = gateway::config::Config::load(dir.path()).unwrap();
    let files = gateway::read_policy_files(&config, dir.path()).unwrap();
    let text = std::fs::read_to_string(dir.path().join(&config.policy.invariants)).unwrap();
    let invariants = gateway::proof::parse_invariants(&files.schema, &text).unwrap();
    let settings = gateway::proof::Settings::from_config(&config.policy);
    let fresh =
        gateway::proof::prove_policy(&files.schema, &files.policies, &invariants, &settings)
            .unwrap_or_else(|refusal| panic!("the defaults are not proven: {refusal}"));
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("defaults/proofs.json");
    if std::env::var("SOVEREIGN_WRITE_SHIPPED_PROOFS").as_deref() == Ok("1") {
        let text = serde_json::to_string_pretty(&fresh).unwrap();
        std::fs::write(&path, format!("{text}\n")).unwrap();
        eprintln!("wrote {}; run the test again to check it", path.display());
        // The binary holds the copy it was built with: only a rebuild compares the new one.
        return;
    }
    let regenerate = "write it again: SOVEREIGN_WRITE_SHIPPED_PROOFS=1 cargo test -p gateway --test it shipped_proofs";
    let shipped: custody::Proofs = serde_json::from_str(gateway::proof::SHIPPED_PROOFS)
        .unwrap_or_else(|e| panic!("defaults/proofs.json does not parse ({e}); {regenerate}"));
    let results = |r: &[custody::ProofResult]| -> Vec<(String, String)> {
        r.iter()
            .map(|r| (r.name.clone(), r.result.clone()))
            .collect()
    };
    assert_eq!(
        (&shipped.policy_set, &shipped.invariant_set),
        (&fresh.policy_set, &fresh.invariant_set),
        "the shipped proofs are of other defaults; {regenerate}"
    );
    assert_eq!(shipped.environments, fresh.environments, "{regenerate}");
    assert_eq!(
        results(&shipped.invariants),
        results(&fresh.invariants),
        "{regenerate}"
    );
    assert_eq!(
        results(&shipped.never_errors),
        results(&fresh.never_errors),
        "{regenerate}"
    );
    assert_eq!(shipped.shipped_with, None);
    // What a first start without a solver activates: these, marked as shipped.
    let used = gateway::proof::shipped_proofs(&fresh.policy_set, &fresh.invariant_set)
        .expect("the shipped proofs apply to the defaults");
    assert_eq!(
        used.shipped_with.as_deref(),
        Some(concat!("sovereign ", env!("CARGO_PKG_VERSION")))
    );
    // ...and to nothing else.
    assert!(gateway::proof::shipped_proofs(&fresh.policy_set, "other").is_none());
    assert!(gateway::proof::shipped_proofs("other", &fresh.invariant_set).is_none());
}
