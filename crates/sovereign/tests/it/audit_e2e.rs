//! The monitor's view, end to end with the binary: after the reference scenario on a fresh
//! setup, `sovereign audit verify` accepts the live log and a static copy made with plain HTTP
//! downloads, and rejects a copy with a flipped byte in an entry bundle or a hash tile, a
//! truncated log, and a second log under the same key that forks history.

use crate::support::{sovereign, token_of};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use testkit::cast::{PARENT_CN, USDS_TRAVELLING_CN, VETTED_US};

fn serve(data: &Path) -> crate::support::Server {
    let mut server = crate::support::serve(data, "warn,sovereign=info");
    server.drain();
    server
}

fn curl(method: &str, url: &str, token: &str, purpose: Option<&str>, body: Option<&str>) {
    let mut command = Command::new("curl");
    command.args([
        "-s",
        "-o",
        "/dev/null",
        "-X",
        method,
        url,
        "-H",
        &format!("Authorization: Bearer {token}"),
    ]);
    if let Some(purpose) = purpose {
        command.args(["-H", &format!("Sovereign-Purpose: {purpose}")]);
    }
    if let Some(body) = body {
        command.args(["-d", body]);
    }
    assert!(command.status().unwrap().success());
}

/// The reference scenario (all of it goes through the log).
/// Entries a fresh gateway logs before any request: the invariants proposed and activated,
/// the first policy set proposed and activated, the start.
const START_ENTRIES: u64 = 5;
/// Entries of the first [`reference_scenario`]: five accesses and two restricted-country
/// alerts (chen and bob). Later runs within the alert window log the five accesses only.
const FIRST_SCENARIO_ENTRIES: u64 = 7;
const LATER_SCENARIO_ENTRIES: u64 = 5;

fn reference_scenario(data: &Path, base: &str, subject: &str) {
    let alice = token_of(data, &VETTED_US);
    let chen = token_of(data, &PARENT_CN);
    let bob = token_of(data, &USDS_TRAVELLING_CN);
    let record = format!("{base}/v1/subjects/{subject}/records/profile/main");
    curl(
        "PUT",
        &format!("{base}/v1/subjects/{subject}"),
        &alice,
        None,
        Some(r#"{"jurisdiction":"US"}"#),
    );
    curl(
        "PUT",
        &record,
        &alice,
        Some("setup"),
        Some(r#"{"email":"ada@example.com","display_name":"Ada"}"#),
    );
    curl("GET", &record, &alice, Some("support"), None);
    curl("GET", &record, &chen, Some("debug"), None);
    curl("GET", &record, &bob, Some("on call"), None);
}

fn audit(args: &[&str]) -> Output {
    sovereign().arg("audit").args(args).output().unwrap()
}

/// `sovereign audit verify` of the log at `url`, with the state file `state` if any.
fn verify(url: &str, vkey: &str, state: Option<&Path>) -> Output {
    let mut args = vec!["verify", "--url", url, "--key", vkey];
    if let Some(state) = state {
        args.extend(["--state", state.to_str().unwrap()]);
    }
    audit(&args)
}

/// Asserts that a verification passed; `what` names the log in the message if not.
fn assert_verified(output: Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn key(data: &Path) -> String {
    let output = audit(&["key", "--data", data.to_str().unwrap()]);
    crate::support::assert_success(&output);
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// A static copy made with plain HTTP downloads (curl), of a log under 256 entries.
fn mirror(base: &str, into: &Path) -> u64 {
    let get = |path: &str| {
        let status = Command::new("curl")
            .args([
                "-sf",
                &format!("{base}/log/{path}"),
                "-o",
                into.join(path).to_str().unwrap(),
                "--create-dirs",
            ])
            .status()
            .unwrap();
        assert!(status.success(), "download {path}");
    };
    get("checkpoint");
    let text = std::fs::read_to_string(into.join("checkpoint")).unwrap();
    let size: u64 = text.lines().nth(1).unwrap().parse().unwrap();
    assert!(
        size > 0 && size < 256,
        "this test mirrors logs of under 256 entries, not {size}"
    );
    get(&format!("tile/0/000.p/{size}"));
    get(&format!("tile/entries/000.p/{size}"));
    size
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

/// A copy of the static log `log` at `into`, with byte `at` of the first file below `below`
/// flipped; the copy's path, as `--url` takes it.
fn tampered_copy(log: &Path, into: &Path, below: &str, at: usize) -> String {
    copy_dir(log, into);
    flip_byte(&walk(&into.join(below))[0], at);
    into.to_str().unwrap().to_string()
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in walk(from) {
        let target = to.join(entry.strip_prefix(from).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &target).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn expect_failure(output: Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!output.status.success(), "{what}: audit verify accepted it");
    assert!(stderr.contains("FAILED"), "{what}: {stderr}");
    stderr
}

#[test]
fn audit_verify_accepts_the_live_log_and_a_static_copy_and_rejects_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let served = serve(&data);
    reference_scenario(&data, &served.base, "u-1001");
    let vkey = key(&data);
    let first_size = START_ENTRIES + FIRST_SCENARIO_ENTRIES;
    crate::support::wait_for_checkpoint(&served.base, first_size);
    let url = format!("{}/log", served.base);
    let state = dir.path().join("monitor.state");

    // The live log verifies, and the state remembers its checkpoint.
    assert_verified(verify(&url, &vkey, Some(&state)), "live");
    assert!(state.is_file());

    // A static copy made with plain HTTP downloads verifies too (and is consistent with the state).
    let copy = dir.path().join("mirror");
    mirror(&served.base, &copy);
    assert_verified(
        verify(&copy.to_string_lossy(), &vkey, Some(&state)),
        "mirror",
    );

    // One flipped byte in the entry bundle.
    let bundle_copy = tampered_copy(
        &copy,
        &dir.path().join("tampered-bundle"),
        "tile/entries",
        60,
    );
    expect_failure(verify(&bundle_copy, &vkey, None), "flipped bundle byte");

    // One flipped byte in the hash tile.
    let tile_copy = tampered_copy(&copy, &dir.path().join("tampered-tile"), "tile/0", 40);
    expect_failure(verify(&tile_copy, &vkey, None), "flipped tile byte");

    // A truncated log: the remembered checkpoint is larger than what the copy shows. Make the
    // live log grow, remember it, then check the older copy against that state.
    reference_scenario(&data, &served.base, "u-1002");
    let grown_state = dir.path().join("grown.state");
    std::fs::copy(&state, &grown_state).unwrap();
    crate::support::wait_for_checkpoint(&served.base, first_size + LATER_SCENARIO_ENTRIES);
    assert_verified(verify(&url, &vkey, Some(&grown_state)), "grown");
    expect_failure(
        verify(&copy.to_string_lossy(), &vkey, Some(&grown_state)),
        "truncated log",
    );
    // Missing files are caught too.
    let missing_copy = dir.path().join("missing");
    copy_dir(&copy, &missing_copy);
    std::fs::remove_file(walk(&missing_copy.join("tile/entries"))[0].clone()).unwrap();
    expect_failure(
        verify(&missing_copy.to_string_lossy(), &vkey, None),
        "missing bundle",
    );

    // A fork: a second log under the same key, with another history.
    drop(served);
    let fork = dir.path().join("fork");
    sovereign()
        .args(["init", "--data", fork.to_str().unwrap()])
        .output()
        .unwrap();
    for file in [
        "keys/log-signer.key",
        "keys/dev-issuer.key.pem",
        "keys/dev-issuer.pub.pem",
        "keys/log-pseudonym.key",
    ] {
        std::fs::copy(data.join(file), fork.join(file)).unwrap();
    }
    let forked = serve(&fork);
    reference_scenario(&fork, &forked.base, "someone-else");
    reference_scenario(&fork, &forked.base, "and-another");
    crate::support::wait_for_checkpoint(
        &forked.base,
        START_ENTRIES + FIRST_SCENARIO_ENTRIES + LATER_SCENARIO_ENTRIES,
    );
    let fork_url = format!("{}/log", forked.base);
    // On its own the fork is a well-formed log...
    assert_verified(verify(&fork_url, &vkey, None), "fork alone");
    // ...but a monitor that remembers the real history catches it.
    expect_failure(
        verify(&fork_url, &vkey, Some(&grown_state)),
        "forked history",
    );
}
