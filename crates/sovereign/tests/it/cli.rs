//! The binary as a user runs it: init, token, check, serve and a clean shutdown.

use std::time::{Duration, Instant};
use testkit::cast::VETTED_US;

use crate::support::sovereign;

fn run_ok(args: &[&str]) -> String {
    let output = sovereign().args(args).output().unwrap();
    assert!(
        output.status.success(),
        "sovereign {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn init_writes_a_complete_setup_and_refuses_to_overwrite_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    run_ok(&["init", "--data", data_arg]);
    for file in [
        "sovereign.toml",
        "policy/sovereign.cedarschema",
        "policy/policies.cedar",
        "keys/dev-issuer.key.pem",
        "keys/dev-issuer.pub.pem",
        "keys/custodian.key",
        "keys/custodian.vkey",
        "policy/policies.sig",
        "sites/us-east/store.sqlite",
        "sites/sg-legacy/store.sqlite",
    ] {
        assert!(data.join(file).is_file(), "{file} missing");
    }
    #[cfg(unix)]
    for key in ["keys/dev-issuer.key.pem", "keys/dev-issuer.pub.pem"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join(key))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{key} has mode {mode:o}");
    }

    let key_before = std::fs::read(data.join("keys/dev-issuer.key.pem")).unwrap();
    let output = sovereign()
        .args(["init", "--data", data_arg])
        .output()
        .unwrap();
    assert!(!output.status.success(), "a second init must refuse");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(
        std::fs::read(data.join("keys/dev-issuer.key.pem")).unwrap(),
        key_before
    );

    run_ok(&["init", "--data", data_arg, "--force"]);
    assert_ne!(
        std::fs::read(data.join("keys/dev-issuer.key.pem")).unwrap(),
        key_before
    );
    let check = run_ok(&["check", "--data", data_arg]);
    assert!(check.contains("valid"), "{check}");
}

#[test]
fn token_prints_a_signed_jwt_with_the_claims_given() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    run_ok(&["init", "--data", data]);
    let mut args = vec!["token".to_string(), "--data".to_string(), data.to_string()];
    args.extend(VETTED_US.token_args());
    args.extend(["--role", "oncall", "--ttl", "15m"].map(String::from));
    let token = run_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let token = token.trim();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    use base64::Engine as _;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["iss"], "sovereign-dev");
    assert_eq!(claims["location"], "US");
    assert_eq!(claims["roles"], serde_json::json!(["engineer", "oncall"]));
    let ttl = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(ttl, 15 * 60);

    let output = sovereign()
        .args([
            "token",
            "--data",
            data,
            "--sub",
            "a",
            "--entity",
            "usds",
            "--location",
            "usa",
        ])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(2),
        "a bad location must be refused"
    );

    // An entity the configuration does not declare: refused, naming the ones it does.
    let output = sovereign()
        .args([
            "token",
            "--data",
            data,
            "--sub",
            "a",
            "--entity",
            "usdss",
            "--location",
            "US",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("--entity \"usdss\" is not an entity of")
            && err.contains("usds (US Data Security")
            && err.contains("public (Platform users"),
        "{err}"
    );
}

#[test]
fn serve_initialises_answers_and_shuts_down_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fresh");
    let mut server = crate::support::serve(&data, "info");
    assert!(
        data.join("sovereign.toml").is_file(),
        "serve must initialise the data folder"
    );
    let health = reqwest::blocking::get(format!("{}/healthz", server.base)).unwrap();
    assert_eq!(health.status(), 200);

    server.signal("TERM");
    let status = wait_for(&mut server.child, Duration::from_secs(20));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    let rest: Vec<String> = server.lines.take().unwrap().map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
}

fn wait_for(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The first policy set needs the custodian's signature: an edited, unsigned file stops the
/// first start with a message saying how to sign it, and starts once it is signed.
#[test]
fn the_first_policy_set_starts_only_when_signed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    run_ok(&["init", "--data", data_arg]);
    let policies = data.join("policy/policies.cedar");
    let mut text = std::fs::read_to_string(&policies).unwrap();
    text.push_str("\n@id(\"permit-monitor-list\")\npermit (principal, action == Sovereign::Action::\"list\", resource) when { principal.entity == \"custodian\" };\n");
    std::fs::write(&policies, text).unwrap();

    let output = sovereign()
        .args(["serve", "--listen", "127.0.0.1:0", "--data", data_arg])
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "an unsigned first policy set must not start"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("sovereign policy sign-file"), "{stderr}");

    let key = data.join("keys/custodian.key");
    let schema = data.join("policy/sovereign.cedarschema");
    let signature = data.join("policy/policies.sig");
    // `policy sign` takes a policies file as well as a proposed set's hash (as
    // `sign-invariants` takes a file or a hash).
    run_ok(&[
        "policy",
        "sign",
        policies.to_str().unwrap(),
        "--schema",
        schema.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--out",
        signature.to_str().unwrap(),
    ]);
    let mut server = crate::support::serve(&data, "info");
    let health = reqwest::blocking::get(format!("{}/healthz", server.base)).unwrap();
    assert_eq!(health.status(), 200);
    server.drain();
}

/// Long work shows progress on a terminal (here a pseudo-terminal from util-linux's
/// `script`), and prints nothing of it into a pipe.
#[test]
fn seeding_legacy_subjects_shows_progress_on_a_terminal_only() {
    let dir = tempfile::tempdir().unwrap();
    let on_terminal = dir.path().join("terminal");
    let command = format!(
        "{} init --data {} --seed-legacy 500",
        env!("CARGO_BIN_EXE_sovereign"),
        on_terminal.display()
    );
    let output = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .expect("`script` (util-linux) runs a command on a pseudo-terminal");
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{shown}");
    assert!(shown.contains("placing legacy ["), "{shown}");
    assert!(shown.contains("/500 subjects"), "{shown}");
    assert!(shown.contains("placed 500 legacy US subject(s)"), "{shown}");

    let in_pipe = dir.path().join("pipe");
    let output = sovereign()
        .args([
            "init",
            "--data",
            in_pipe.to_str().unwrap(),
            "--seed-legacy",
            "500",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    let (out, err) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(out.contains("placed 500 legacy US subject(s)"), "{out}");
    assert!(
        !out.contains("placing legacy") && !err.contains("placing legacy"),
        "{err}"
    );
}

/// Shell completions and man pages, generated from the same definition as the parser.
#[test]
fn completions_and_man_pages_cover_every_command() {
    let output = sovereign().args(["completion", "bash"]).output().unwrap();
    assert!(output.status.success());
    let script = String::from_utf8(output.stdout).unwrap();
    // bash itself loads it and registers the completion.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sovereign.bash");
    std::fs::write(&file, &script).unwrap();
    let output = std::process::Command::new("bash")
        .args([
            "-c",
            &format!("source {} && complete -p sovereign", file.display()),
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("sovereign"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for word in ["audit", "verify", "--wait", "kill-switch", "residency"] {
        assert!(script.contains(word), "no {word} in the bash completion");
    }
    for shell in ["zsh", "fish"] {
        let output = sovereign().args(["completion", shell]).output().unwrap();
        assert!(output.status.success() && !output.stdout.is_empty());
    }
    let output = sovereign().args(["completion", "tcsh"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));

    let man = dir.path().join("man");
    let out = run_ok(&["man", "--out", man.to_str().unwrap()]);
    assert!(out.starts_with("wrote "), "{out}");
    let page = std::fs::read_to_string(man.join("sovereign-audit-verify.1")).unwrap();
    assert!(page.contains(".TH sovereign-audit-verify 1"), "{page}");
    assert!(page.contains("watch"), "{page}");
    let top = std::fs::read_to_string(man.join("sovereign.1")).unwrap();
    assert!(top.contains("Exit codes"), "{top}");
}

/// `check --connect` reaches what a start would: the stores, the solver, private key files.
#[test]
fn check_connect_reaches_the_stores_and_the_solver_and_checks_key_modes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    run_ok(&["init", "--data", data_arg]);
    let check = || {
        let output = sovereign()
            .args(["check", "--data", data_arg, "--connect"])
            .output()
            .unwrap();
        let out = String::from_utf8(output.stdout).unwrap();
        (output.status.code(), out)
    };
    if crate::support::cvc5_present() {
        let (code, out) = check();
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("  ok    site us-east: SQLite "), "{out}");
        assert!(out.contains("  ok    solver: cvc5 "), "{out}");
        assert!(out.contains("readable by their owner only"), "{out}");
    }
    // Without a solver, the unchanged defaults still start (with the shipped proofs): said,
    // not failed.
    let output = sovereign()
        .args(["check", "--data", data_arg, "--connect"])
        .env("CVC5", dir.path().join("no-such-cvc5"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{out}");
    assert!(
        out.contains("  ok    solver: none (") && out.contains("proofs shipped in this binary"),
        "{out}"
    );
    // A key file others may read, and a PostgreSQL store nobody serves: each named, exit 1.
    let key = data.join("keys/custodian.key");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = data.join("sovereign.toml");
    let toml = std::fs::read_to_string(&config).unwrap();
    let edited = toml.replace(
        r#"store = "sqlite:log/log.sqlite""#,
        &format!(r#"store = "postgres://sovereign@127.0.0.1:{closed}/log?sslmode=disable""#),
    );
    assert_ne!(edited, toml);
    std::fs::write(&config, edited).unwrap();
    let (code, out) = check();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("  FAIL  log: "), "{out}");
    let output = sovereign()
        .args(["check", "--data", data_arg, "--connect", "--json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["ok"], false, "{answer}");
    let log = answer["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["what"] == "log")
        .unwrap();
    assert_eq!(log["ok"], false, "{answer}");
    assert!(
        out.contains("  FAIL  key file ") && out.contains("mode 0644") && out.contains("chmod 600"),
        "{out}"
    );
}
