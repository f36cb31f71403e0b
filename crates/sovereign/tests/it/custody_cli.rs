//! The custodian's commands, through the binary against a real gateway: access requests and
//! their approvals, break-glass, signed policy activation, signed algorithm releases and the
//! kill switch.

use crate::support::{INCIDENT, SUPPORT_TICKET, s};
use std::path::{Path, PathBuf};
use std::process::Output;
use testkit::cast::VETTED_US;
use testkit::cast::{APPROVER_1, APPROVER_2, OPERATOR, Who};

use serde_json::Value;

/// A gateway on a fresh default setup, and the tokens of the people in these tests.
struct Setup {
    _dir: tempfile::TempDir,
    data: PathBuf,
    work: PathBuf,
    server: crate::support::Server,
}

impl Setup {
    fn new() -> Setup {
        let crate::support::Fresh {
            dir,
            data,
            work,
            server,
        } = crate::support::Fresh::start();
        Setup {
            _dir: dir,
            data,
            work,
            server,
        }
    }

    /// A token for `id` of `entity` located in `location`, with `roles`.
    fn token(&self, id: &str, entity: &str, location: &str, roles: &[&str]) -> String {
        let mut args = vec!["--sub", id, "--entity", entity, "--location", location];
        for role in roles {
            args.extend(["--role", *role]);
        }
        crate::support::token(&self.data, &args)
    }

    /// A token for `who` of the reference cast.
    fn cast(&self, who: &Who) -> String {
        crate::support::token_of(&self.data, who)
    }

    /// `sovereign ARGS...` against this gateway (through SOVEREIGN_URL) as `token`.
    fn run(&self, token: &str, args: &[&str]) -> Output {
        let mut command = crate::support::sovereign();
        command.args(args).env("SOVEREIGN_URL", &self.server.base);
        if token.is_empty() {
            command.env_remove("SOVEREIGN_TOKEN");
        } else {
            command.args(["--token", token]);
        }
        command.output().unwrap()
    }

    /// Runs, expecting success; returns standard output.
    fn ok(&self, token: &str, args: &[&str]) -> String {
        let output = self.run(token, args);
        assert!(
            output.status.success(),
            "sovereign {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// `sovereign policy sign HASH --key KEY --out NOTE`, expecting success.
    fn sign_policy(&self, hash: &str, key: &Path, note: &Path) -> String {
        self.ok(
            "",
            &["policy", "sign", hash, "--key", s(key), "--out", s(note)],
        )
    }

    /// `sovereign policy activate HASH --signature NOTE` as `token`, expecting the set
    /// activated; returns standard output.
    fn activate_policy(&self, token: &str, hash: &str, note: &Path) -> String {
        let out = self.ok(token, &["policy", "activate", hash, "--signature", s(note)]);
        assert!(
            out.contains(&format!("activated policy set {hash}")),
            "{out}"
        );
        out
    }

    /// Runs with `--json`, expecting success; returns the gateway's answer.
    fn json(&self, token: &str, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        serde_json::from_str(&self.ok(token, &args)).unwrap()
    }

    /// Runs, expecting failure of any kind; returns standard error.
    fn fails(&self, token: &str, args: &[&str]) -> String {
        let output = self.run(token, args);
        assert!(
            !output.status.success(),
            "sovereign {args:?} succeeded: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// Runs, expecting exit status `code`; returns standard error.
    fn fails_with(&self, code: i32, token: &str, args: &[&str]) -> String {
        let output = self.run(token, args);
        let err = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            !output.status.success(),
            "sovereign {args:?} succeeded: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        assert_eq!(output.status.code(), Some(code), "{err}");
        err
    }

    fn custodian_key(&self) -> PathBuf {
        self.data.join("keys/custodian.key")
    }

    fn file(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }
}

// ---------------------------------------------------------------------------
// Access requests

#[test]
fn access_requests_need_two_independent_approvals() {
    let t = Setup::new();
    let bob = t.token("bob", "usds", "US", &[]);
    let carol = t.cast(&APPROVER_1);
    let dave = t.cast(&APPROVER_2);
    let uma = t.token("uma", "usds", "US", &["custodian-approver"]);

    let codes = t.ok("", &["access", "reason-codes"]);
    assert!(codes.contains("customer-initiated-support"), "{codes}");

    let mut request = vec!["access", "request", "--action", "read", "--subject", "u-1"];
    request.extend(SUPPORT_TICKET);
    let created = t.json(&bob, &request);
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["status"], "pending");
    assert_eq!(created["approvals_required"], 2);
    assert_eq!(created["duration_seconds"], 7200);

    // Only approvers approve, each once.
    // Refused by the gateway (403): exit status 4.
    let err = t.fails_with(4, &bob, &["access", "approve", &id]);
    assert!(err.starts_with("error: "), "{err}");
    let out = t.ok(
        &carol,
        &["access", "approve", &id, "--comment", "checked ticket 42"],
    );
    assert!(
        out.contains(&format!(
            "approved {id} (1 of 2 approvals): it is now pending"
        )),
        "{out}"
    );
    // Any other refusal (409): exit status 5.
    let err = t.fails_with(5, &carol, &["access", "approve", &id]);
    assert!(err.starts_with("error: already_approved: "), "{err}");
    // By a prefix of its id, without the `ar-`.
    let out = t.ok(&dave, &["access", "approve", &id[3..10]]);
    assert!(
        out.contains(&format!(
            "approved {id} (2 of 2 approvals): it is now approved"
        )),
        "{out}"
    );

    // The requester sees it approved in the list.
    let list = t.ok(&bob, &["access", "list"]);
    let line = list
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(line.contains("approved"), "{line}");
    assert!(line.contains("approvals 2/2"), "{line}");
    let approved = t.ok(&carol, &["access", "list", "--status", "approved"]);
    assert!(approved.contains(&id), "{approved}");
    let shown = t.ok(&bob, &["access", "show", &id]);
    assert!(
        shown.contains("carol (custodian)") && shown.contains("dave (custodian)"),
        "{shown}"
    );

    // Nobody approves their own request.
    let own = t.json(&carol, &request);
    let own_id = own["id"].as_str().unwrap();
    let err = t.fails(&carol, &["access", "approve", own_id]);
    assert!(err.starts_with("error: self_approval: "), "{err}");
    let err = t.fails(&dave, &["access", "approve", own_id]);
    assert!(err.starts_with("error: same_entity: "), "{err}");
    let out = t.ok(&uma, &["access", "deny", own_id, "--comment", "no ticket"]);
    assert!(out.contains("status:     denied"), "{out}");

    // A grant can be revoked before it ends.
    let out = t.ok(
        &carol,
        &["access", "revoke", &id, "--comment", "ticket closed"],
    );
    assert!(out.contains("status:     revoked"), "{out}");

    // Without a token the gateway's refusal says how to give one.
    let err = t.fails_with(4, "", &["access", "list"]);
    assert!(err.starts_with("error: unauthenticated: "), "{err}");
    assert!(err.contains("--token or SOVEREIGN_TOKEN"), "{err}");
    // A bad flag value is caught before anything is sent (a usage error: status 2).
    let err = t.fails_with(
        2,
        &bob,
        &[
            "access",
            "request",
            "--purpose",
            "p",
            "--reason",
            "r",
            "--duration",
            "soon",
        ],
    );
    assert!(err.contains("--duration"), "{err}");
}

#[test]
fn break_glass_is_open_at_once_and_reviewed_afterwards() {
    let t = Setup::new();
    let erin = t.token("erin", "usds", "US", &["break-glass"]);
    let carol = t.cast(&APPROVER_1);
    let used = t.json(&erin, &[&["access", "break-glass"][..], &INCIDENT].concat());
    let id = used["id"].as_str().unwrap();
    assert_eq!(used["kind"], "break-glass");
    assert_eq!(used["status"], "approved");
    let unreviewed = t.ok(&carol, &["access", "unreviewed"]);
    assert!(unreviewed.contains(id), "{unreviewed}");
    let out = t.ok(&carol, &["access", "review", id, "--comment", "justified"]);
    assert!(out.contains("reviewed:   by carol"), "{out}");
    let unreviewed = t.ok(&carol, &["access", "unreviewed"]);
    assert!(!unreviewed.contains(id), "{unreviewed}");
}

// ---------------------------------------------------------------------------
// Policy custody

#[test]
fn a_policy_set_is_activated_only_with_a_custodian_signature() {
    let t = Setup::new();
    let olga = t.cast(&OPERATOR);
    let key = t.custodian_key();
    let initial = t.json(&olga, &["policy", "list"])["active"]
        .as_str()
        .unwrap()
        .to_string();

    // A new set: the active policies with one more line.
    let mut text = std::fs::read_to_string(t.data.join("policy/policies.cedar")).unwrap();
    text.push_str("\n// Reviewed by the custodian.\n");
    let file = t.file("policies.cedar");
    std::fs::write(&file, &text).unwrap();
    let proposed = t.json(&olga, &["policy", "propose", s(&file)]);
    let hash = proposed["hash"].as_str().unwrap().to_string();
    assert!(proposed["statement"].as_str().unwrap().contains(&hash));

    // An unsigned note, and one signed by a key the gateway does not trust, are refused.
    let unsigned = t.file("unsigned.note");
    std::fs::write(&unsigned, proposed["statement"].as_str().unwrap()).unwrap();
    let err = t.fails(
        &olga,
        &["policy", "activate", &hash, "--signature", s(&unsigned)],
    );
    assert!(err.contains("not a signed note"), "{err}");
    let (rogue_skey, _) = tlog::note::generate_key("custodian").unwrap();
    let rogue = t.file("rogue.key");
    std::fs::write(&rogue, rogue_skey).unwrap();
    let forged = t.file("forged.note");
    t.sign_policy(&hash, &rogue, &forged);
    let err = t.fails(
        &olga,
        &["policy", "activate", &hash, "--signature", s(&forged)],
    );
    // The spec says 400 invalid_signature for "no known signer"; the custody crate counts
    // it as 0 known signers, 403 threshold_not_met. Either refuses, naming why.
    assert!(
        err.starts_with("error: invalid_signature: ")
            || err.starts_with("error: threshold_not_met: signed by 0 custodian key"),
        "{err}"
    );

    // Signed with keys/custodian.key, it activates.
    let note = t.file("activation.note");
    let out = t.sign_policy(&hash, &key, &note);
    assert!(
        out.contains(&format!(
            "signed the activation of policy set {hash} as custodian"
        )),
        "{out}"
    );
    assert!(out.contains("forbid-restricted-location"), "{out}");
    // A note whose custodian signature was altered is refused.
    let altered = t.file("altered.note");
    std::fs::write(
        &altered,
        alter_signature(&std::fs::read_to_string(&note).unwrap()),
    )
    .unwrap();
    let err = t.fails(
        &olga,
        &["policy", "activate", &hash, "--signature", s(&altered)],
    );
    assert!(err.starts_with("error: invalid_signature: "), "{err}");
    // Signing to standard output gives the note alone.
    let to_stdout = t.ok("", &["policy", "sign", &hash, "--key", s(&key)]);
    assert!(
        to_stdout.starts_with("sovereign/custody/v1\n"),
        "{to_stdout}"
    );
    let out = t.activate_policy(&olga, &hash, &note);
    assert!(out.contains("signed by custodian"), "{out}");

    // Another custodian adds their signature to the note; it is refused for another set.
    let cosigned = t.file("cosigned.note");
    t.ok(
        "",
        &[
            "policy",
            "sign",
            &hash,
            "--key",
            s(&rogue),
            "--add-to",
            s(&note),
            "--out",
            s(&cosigned),
        ],
    );
    let cosigned = std::fs::read_to_string(&cosigned).unwrap();
    assert_eq!(
        cosigned.matches("\n\u{2014} custodian ").count(),
        2,
        "{cosigned}"
    );
    let err = t.fails(
        "",
        &[
            "policy",
            "sign",
            &initial,
            "--key",
            s(&key),
            "--add-to",
            s(&note),
        ],
    );
    assert!(
        err.contains(&format!("not the activation of policy set {initial}")),
        "{err}"
    );
    let list = t.ok(&olga, &["policy", "list"]);
    assert!(
        list.starts_with(&format!("active policy set: {hash}\n")),
        "{list}"
    );
    let shown = t.ok("", &["policy", "show", &hash]);
    assert!(shown.contains("// Reviewed by the custodian."), "{shown}");
    assert!(shown.contains("proven against invariant set"), "{shown}");
    // A unique prefix names it too, as git accepts short hashes; too short is refused.
    let by_prefix = t.ok(&olga, &["policy", "show", &hash[..8]]);
    assert_eq!(by_prefix, shown);
    let err = t.fails_with(2, &olga, &["policy", "show", &hash[..3]]);
    assert!(err.contains("too short"), "{err}");
    let err = t.fails_with(2, &olga, &["policy", "show", "ffffffffff"]);
    assert!(err.contains("starts with \"ffffffffff\""), "{err}");

    // A note for another policy set is refused before it is sent.
    let other = "0".repeat(64);
    let err = t.fails(
        &olga,
        &["policy", "activate", &other, "--signature", s(&note)],
    );
    assert!(
        err.contains(&format!("not the activation of policy set {other}")),
        "{err}"
    );

    // Nobody located in a restricted country acts on custody.
    let chen = t.token("chen", "parent", "CN", &["custodian-operator"]);
    let err = t.fails(&chen, &["policy", "propose", s(&file)]);
    assert!(err.starts_with("error: restricted_location: "), "{err}");
}

/// The README's walkthrough: the default policy edited to drop the restricted-country forbid
/// is refused at proposal with a readable counterexample; the unedited policy proposes with
/// its proofs, is signed and activates, and its proofs are in the log.
#[test]
fn a_policy_without_the_restricted_country_forbid_is_refused_with_a_counterexample() {
    let t = Setup::new();
    let olga = t.cast(&OPERATOR);
    let text = std::fs::read_to_string(t.data.join("policy/policies.cedar")).unwrap();
    let start = text.find("@id(\"forbid-restricted-location\")").unwrap();
    let end = start + text[start..].find("};").unwrap() + 2;
    let edited = t.file("edited.cedar");
    std::fs::write(&edited, format!("{}{}", &text[..start], &text[end..])).unwrap();

    let err = t.fails(&olga, &["policy", "propose", s(&edited)]);
    assert!(err.starts_with("error: policy_not_proven: "), "{err}");
    for wanted in [
        "invariant restricted-location-never-on-us-subjects",
        "REFUTED: principal",
        "location",
        "subject_jurisdiction",
        "Cedar: active policies allow",
        "invariant deny",
    ] {
        assert!(err.contains(wanted), "{wanted:?} missing from: {err}");
    }
    let listed = t.json(&olga, &["policy", "list"]);
    assert_eq!(
        listed["sets"].as_array().unwrap().len(),
        1,
        "nothing proposed"
    );

    // Reviewed and unchanged in substance: proven, signed, activated.
    let reviewed = t.file("reviewed.cedar");
    std::fs::write(&reviewed, format!("{text}\n// Reviewed.\n")).unwrap();
    let out = t.ok(&olga, &["policy", "propose", s(&reviewed)]);
    assert!(out.contains("proven against invariant set"), "{out}");
    assert_eq!(out.matches(" proven\n").count(), 8, "{out}");
    let hash = out.split_whitespace().nth(3).unwrap().to_string();
    let note = t.file("reviewed.note");
    t.sign_policy(&hash, &t.custodian_key(), &note);
    let out = t.activate_policy(&olga, &hash, &note);
    assert!(out.contains("proven against invariant set"), "{out}");

    let key = t.ok("", &["audit", "key", "--data", s(&t.data)]);
    // Logged so far: the invariants and the first set, each proposed and activated, the
    // start, the reviewed set proposed and activated (the refused proposal logged nothing).
    crate::support::wait_for_checkpoint(&t.server.base, 7);
    let replayed = t.ok(
        "",
        &[
            "audit",
            "replay",
            "--url",
            &format!("{}/log", t.server.base),
            "--key",
            key.trim(),
            "--prove",
        ],
    );
    assert!(
        replayed.contains("activations: 2 policy set, 1 invariant set; 0 without passing proofs"),
        "{replayed}"
    );
    assert!(
        replayed.contains("reproved:   2 of 2 (policy set, invariant set) pairs"),
        "{replayed}"
    );
}

/// Invariants change like policies: proposed (the active set proven to keep them), signed
/// offline from the reviewed file, activated.
#[test]
fn invariants_are_proposed_signed_and_activated_through_the_cli() {
    let t = Setup::new();
    let olga = t.cast(&OPERATOR);
    let mut text = t.ok("", &["policy", "invariants"]);
    text.push_str(
        "\n@id(\"inv-no-restricted-delete\")\n@invariant(\"no-restricted-delete\")\n@description(\"Nobody in CN deletes US data.\")\nforbid (principal, action == Sovereign::Action::\"delete\", resource is Sovereign::Data)\nwhen { resource.subject_jurisdiction == \"US\" && principal.location == \"CN\" };\n@id(\"inv-no-restricted-delete-permit\")\n@invariant(\"no-restricted-delete\")\npermit (principal, action, resource);\n",
    );
    let file = t.file("invariants.cedar");
    std::fs::write(&file, &text).unwrap();

    let out = t.ok(&olga, &["policy", "propose-invariants", s(&file)]);
    assert!(out.starts_with("proposed invariant set "), "{out}");
    assert!(out.contains("no-restricted-delete"), "{out}");
    assert_eq!(out.matches(" proven\n").count(), 9, "{out}");
    let hash = out.split_whitespace().nth(3).unwrap().to_string();

    let note = t.file("invariants.sig");
    let signed = t.ok(
        "",
        &[
            "policy",
            "sign-invariants",
            s(&file),
            "--key",
            s(&t.custodian_key()),
            "--out",
            s(&note),
        ],
    );
    assert!(signed.contains(&hash), "the same canonical hash: {signed}");
    // Signed by (a prefix of) the proposed set's hash, as `policy sign` takes one: the
    // same statement.
    let by_hash = t.file("invariants-by-hash.sig");
    let signed = t.ok(
        &olga,
        &[
            "policy",
            "sign-invariants",
            &hash[..10],
            "--key",
            s(&t.custodian_key()),
            "--out",
            s(&by_hash),
        ],
    );
    assert!(signed.contains(&hash), "{signed}");
    let statement = |note: &Path| {
        let text = std::fs::read_to_string(note).unwrap();
        text[..text.find("\n\n").unwrap()].to_string()
    };
    assert_eq!(statement(&by_hash), statement(&note));
    let out = t.ok(
        &olga,
        &[
            "policy",
            "activate-invariants",
            &hash,
            "--signature",
            s(&note),
        ],
    );
    assert!(
        out.starts_with(&format!("activated invariant set {hash}")),
        "{out}"
    );
    // A policy statement is not an invariant statement.
    let err = t.fails(
        &olga,
        &["policy", "activate", &hash, "--signature", s(&note)],
    );
    assert!(err.contains("activation of invariant set"), "{err}");
}

/// Without a solver, only the unchanged defaults start (with the proofs shipped in the
/// binary, logged as such); any other first policy set is refused, saying how to install one.
#[test]
fn without_a_solver_the_defaults_start_with_shipped_proofs_and_nothing_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let no_solver = dir.path().join("no-such-cvc5");
    let init = |data: &Path| {
        let init = crate::support::sovereign()
            .args(["init", "--data", s(data)])
            .output()
            .unwrap();
        assert!(init.status.success());
    };

    // The unchanged defaults: activated with the proofs shipped with the binary, logged as
    // such, and proven again by a monitor that has cvc5.
    let data = dir.path().join("defaults");
    init(&data);
    let mut child = crate::support::sovereign()
        .args(["serve", "--listen", "127.0.0.1:0", "--data", s(&data)])
        .env("CVC5", &no_solver)
        .env("SOVEREIGN_LOG", "warn,sovereign=info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
    let base = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            panic!("serve stopped:\n{said}");
        };
        said.push_str(&line);
        said.push('\n');
        if let Some(at) = line.find("listening on http://") {
            break line[at + "listening on ".len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let server = crate::support::Server {
        child,
        base,
        lines: None,
    };
    assert!(
        said.contains("activated with the proofs shipped with this binary"),
        "{said}"
    );
    crate::support::wait_for_checkpoint(&server.base, 3);
    let entries = crate::support::log_entries(&server.base);
    let activation = entries
        .iter()
        .find(|e| e["event"] == "policy-activated")
        .expect("the first activation is logged");
    assert_eq!(
        activation["details"]["proofs"]["shipped_with"],
        concat!("sovereign ", env!("CARGO_PKG_VERSION")),
        "{activation}"
    );
    assert_eq!(activation["details"]["proofs"]["solver"], "cvc5");
    if crate::support::cvc5_present() {
        let key = testkit::served::log_key(&server.base);
        let output = crate::support::sovereign()
            .args([
                "audit",
                "replay",
                "--url",
                &server.base,
                "--key",
                &key,
                "--prove",
            ])
            .output()
            .unwrap();
        let (out, err) = crate::support::text(&output);
        assert!(output.status.success(), "{out}\n{err}");
        assert!(out.contains("reproved:   1 of 1"), "{out}");
        assert!(
            out.contains("shipped:    1 activation with the proofs shipped with the gateway's binary, not run by it (proven again here, below)"),
            "{out}"
        );
    }
    drop(server);

    // Any other first policy set needs the solver.
    let data = dir.path().join("edited");
    init(&data);
    let policies = data.join("policy/policies.cedar");
    let text = std::fs::read_to_string(&policies).unwrap();
    std::fs::write(&policies, format!("{text}\n// edited\n")).unwrap();
    let output = crate::support::sovereign()
        .args(["serve", "--listen", "127.0.0.1:0", "--data", s(&data)])
        .env("CVC5", &no_solver)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{err}");
    assert!(
        err.contains("is not activated") && err.contains("apt-get install cvc5"),
        "{err}"
    );
}

/// `note` with one base64 character of its last signature changed, well inside the
/// signature bytes (past the key id), so the key is still known but the signature is bad.
fn alter_signature(note: &str) -> String {
    let line_start = note.rfind("\n\u{2014} ").unwrap() + 1;
    let line_end = note.len() - 1;
    let sig_start = note[line_start..line_end].rfind(' ').unwrap() + line_start + 1;
    let at = sig_start + 40;
    let old = &note[at..at + 1];
    let new = if old == "A" { "B" } else { "A" };
    format!("{}{new}{}", &note[..at], &note[at + 1..])
}

// ---------------------------------------------------------------------------
// Algorithm custody

#[test]
fn an_algorithm_release_is_signed_activated_and_fetched() {
    let t = Setup::new();
    let olga = t.cast(&OPERATOR);
    let key = t.custodian_key();
    let artifact = t.file("scorer.wasm");
    std::fs::write(&artifact, b"\0asm fake scorer, version 1").unwrap();
    let release = ["--name", "scorer", "--version", "1.0.0"];

    let submitted = t.json(
        &olga,
        &[&["algo", "submit", s(&artifact)][..], &release].concat(),
    );
    let sha256 = submitted["sha256"].as_str().unwrap().to_string();

    // A release signed for other bytes is refused.
    let other = t.file("other.wasm");
    std::fs::write(&other, b"something else").unwrap();
    let wrong = t.file("wrong.note");
    t.ok(
        "",
        &[
            &["algo", "sign", s(&other)][..],
            &release,
            &["--key", s(&key), "--out", s(&wrong)],
        ]
        .concat(),
    );
    let err = t.fails(
        &olga,
        &[
            &["algo", "activate"][..],
            &release,
            &["--signature", s(&wrong)],
        ]
        .concat(),
    );
    assert!(err.starts_with("error: "), "{err}");

    let note = t.file("release.note");
    let out = t.ok(
        "",
        &[
            &["algo", "sign", s(&artifact)][..],
            &release,
            &["--key", s(&key), "--out", s(&note)],
        ]
        .concat(),
    );
    assert!(out.contains(&sha256), "{out}");
    let out = t.ok(
        &olga,
        &[
            &["algo", "activate"][..],
            &release,
            &["--signature", s(&note)],
        ]
        .concat(),
    );
    assert!(
        out.contains(&format!("activated scorer 1.0.0 (sha256 {sha256})")),
        "{out}"
    );

    let active = t.ok(&olga, &["algo", "active"]);
    let line = active
        .lines()
        .find(|l| l.starts_with("scorer 1.0.0"))
        .unwrap_or_else(|| panic!("{active}"));
    assert!(
        line.contains(&sha256) && line.contains("signed by custodian"),
        "{line}"
    );
    let fetched = t.file("fetched.wasm");
    let out = t.ok(
        &olga,
        &[&["algo", "fetch"][..], &release, &["--out", s(&fetched)]].concat(),
    );
    assert!(out.contains("matches its release"), "{out}");
    assert_eq!(
        std::fs::read(&fetched).unwrap(),
        std::fs::read(&artifact).unwrap()
    );
    let list = t.ok(&olga, &["algo", "list"]);
    assert!(
        list.contains("scorer 1.0.0") && list.contains("active"),
        "{list}"
    );
}

// ---------------------------------------------------------------------------
// Kill switch

#[test]
fn the_kill_switch_suspends_and_lifts_a_jurisdiction() {
    let t = Setup::new();
    let olga = t.cast(&OPERATOR);
    let key = t.custodian_key();
    let status = t.ok("", &["kill-switch", "status"]);
    assert!(status.contains("US  active"), "{status}");

    let out = t.ok(&olga, &["kill-switch", "suspend", "US", "--key", s(&key)]);
    assert!(out.contains("applied suspend of US (serial 1)"), "{out}");
    let status = t.ok("", &["kill-switch", "status"]);
    assert!(status.contains("US  SUSPENDED since "), "{status}");

    // While suspended, data about US subjects is refused.
    let alice = crate::support::token_of(&t.data, &VETTED_US);
    let answer = reqwest::blocking::Client::new()
        .put(format!("{}/v1/subjects/u-1", t.server.base))
        .bearer_auth(&alice)
        .body(r#"{"jurisdiction":"US"}"#)
        .send()
        .unwrap();
    assert_eq!(answer.status(), 403);
    let body: Value = answer.json().unwrap();
    assert_eq!(body["error"], "suspended", "{body}");

    let out = t.ok(&olga, &["kill-switch", "lift", "us", "--key", s(&key)]);
    assert!(out.contains("applied lift of US (serial 2)"), "{out}");
    let status = t.ok("", &["kill-switch", "status"]);
    assert!(status.contains("US  active  (serial 2)"), "{status}");

    let err = t.fails(&olga, &["kill-switch", "suspend", "USA", "--key", s(&key)]);
    assert!(err.contains("not a jurisdiction"), "{err}");
}

// ---------------------------------------------------------------------------
// What-if decisions

/// Entries the gateway at `base` holds now (`Sovereign-Log-Size` of its checkpoint).
fn log_size(base: &str) -> u64 {
    reqwest::blocking::get(format!("{base}/log/checkpoint"))
        .unwrap()
        .headers()["Sovereign-Log-Size"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn policy_eval_explains_a_what_if_decision_and_logs_nothing() {
    let t = Setup::new();
    let olga = t.cast(&OPERATOR);
    let before = log_size(&t.server.base);
    let data = s(&t.data);
    let vetted = [
        "policy",
        "eval",
        "--data",
        data,
        "--action",
        "read",
        "--entity",
        "usds",
        "--location",
        "US",
        "--clearance",
        "us-data",
        "--purpose",
        "ticket 42",
    ];
    let out = t.ok(&olga, &vetted);
    assert!(
        out.starts_with("allow: permitted by permit-usds-vetted-data\n"),
        "{out}"
    );
    assert!(out.contains("nothing was logged or granted"), "{out}");
    // The same principal travelling in CN: the forbid that decides it is named.
    let mut travelling = vetted.to_vec();
    travelling[9] = "CN";
    // Denied, and by `forbid` among the policies that decided it.
    let denied_by = |answer: &Value, forbid: &str| {
        assert_eq!(answer["decision"], "deny", "{answer}");
        let policies = answer["determining_policies"].as_array().unwrap();
        assert!(policies.iter().any(|p| p == forbid), "{answer}");
    };
    let answer = t.json(&olga, &travelling);
    denied_by(&answer, "forbid-restricted-location");
    assert_eq!(answer["logged"], false);
    // Without a purpose nothing permits it.
    let out = t.ok(&olga, &vetted[..12]);
    assert!(out.starts_with("deny: no policy permits it\n"), "{out}");
    // A policy file of one's own, offline: a what-if before proposing it.
    let file = t.file("permissive.cedar");
    std::fs::write(
        &file,
        "@id(\"permit-everything\")\npermit (principal, action, resource);\n",
    )
    .unwrap();
    let out = t.ok("", &[&travelling[..], &["--file", s(&file)]].concat());
    assert!(
        out.starts_with("allow: permitted by permit-everything\n"),
        "{out}"
    );
    // The entity's country is the configuration's, as the gateway takes it: parent staff
    // located in the US are still of an entity controlled from CN.
    let mut parent = vetted[..10].to_vec();
    parent[7] = "parent";
    parent.extend(["--purpose", "debugging"]);
    denied_by(
        &t.json(&olga, &parent),
        "forbid-restricted-entity-protected",
    );
    // A made-up action is a usage error.
    let mut peek = parent.clone();
    peek[5] = "peek";
    let err = t.fails_with(2, &olga, &peek);
    assert!(err.contains("is not an action"), "{err}");
    // Nothing of it reached the log.
    assert_eq!(log_size(&t.server.base), before);
}

/// `access request --wait` returns once the approvers have decided: 0 when approved, 5 when
/// denied.
#[test]
fn access_request_wait_returns_once_the_approvers_decide() {
    let t = Setup::new();
    let bob = t.token("bob", "usds", "US", &[]);
    let carol = t.cast(&APPROVER_1);
    let dave = t.cast(&APPROVER_2);
    let waiting = |subject: &str| {
        let mut args = vec![
            "access",
            "request",
            "--action",
            "read",
            "--subject",
            subject,
            "--wait=60s",
            "--json",
        ];
        args.extend(SUPPORT_TICKET);
        crate::support::sovereign()
            .args(&args)
            .args(["--token", &bob])
            .env("SOVEREIGN_URL", &t.server.base)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // The request's id, once the waiting command has created it.
    let pending_id = |subject: &str| loop {
        let list = t.json(&carol, &["access", "list", "--status", "pending"]);
        let found = list["requests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["subjects"][0] == subject)
            .and_then(|r| r["id"].as_str().map(str::to_string));
        if let Some(id) = found {
            break id;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };

    let child = waiting("u-7");
    let id = pending_id("u-7");
    t.ok(&carol, &["access", "approve", &id]);
    t.ok(&dave, &["access", "approve", &id]);
    let output = child.wait_with_output().unwrap();
    let (out, err) = crate::support::text(&output);
    assert_eq!(output.status.code(), Some(0), "{out}{err}");
    assert!(
        err.contains(&format!("waiting for the approvers of {id}: 0 of 2")),
        "{err}"
    );
    let last: Value = serde_json::Deserializer::from_str(&out)
        .into_iter::<Value>()
        .last()
        .unwrap()
        .unwrap();
    assert_eq!(last["status"], "approved", "{out}");

    let child = waiting("u-8");
    let id = pending_id("u-8");
    t.ok(&carol, &["access", "deny", &id, "--comment", "no ticket"]);
    let output = child.wait_with_output().unwrap();
    let (out, err) = crate::support::text(&output);
    assert_eq!(output.status.code(), Some(5), "{out}{err}");
    assert!(
        err.contains(&format!("access request {id} is denied, not approved")),
        "{err}"
    );
}
