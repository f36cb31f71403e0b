//! The `sovereign` binary as the tests run it: a server on a free port, killed however the
//! test ends, and development tokens.

use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Output, Stdio};

pub mod load;

use testkit::cast::Who;

pub use testkit::served::{ServedLog, wait_for_checkpoint};

pub fn sovereign() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sovereign"))
}

/// A running `sovereign serve`, killed on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
    /// The rest of the service's output, for tests that read it; see [`Server::drain`].
    pub lines: Option<Lines<BufReader<ChildStderr>>>,
}

impl Server {
    /// Keeps reading the service's output so that it never blocks on a full pipe.
    pub fn drain(&mut self) {
        if let Some(lines) = self.lines.take() {
            std::thread::spawn(move || for _ in lines {});
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway on a fresh setup in a temporary folder (`data`), with a `work` folder next to it
/// for the files a test writes; served with info logging, its output drained. All of it is
/// removed on drop.
pub struct Fresh {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub work: PathBuf,
    pub server: Server,
}

impl Fresh {
    pub fn start() -> Fresh {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let mut server = serve(&data, "warn,sovereign=info");
        server.drain();
        Fresh {
            dir,
            data,
            work,
            server,
        }
    }
}

/// Starts `sovereign serve --listen 127.0.0.1:0 --data DIR` with the given log filter and
/// waits for the line that says where it listens.
pub fn serve(data: &Path, log_filter: &str) -> Server {
    let mut child = sovereign()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data",
            data.to_str().unwrap(),
        ])
        .env("SOVEREIGN_LOG", log_filter)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut server = Server {
        child,
        base: String::new(),
        lines: None,
    };
    let mut said = String::new();
    server.base = loop {
        let line = match lines.next() {
            Some(line) => line.unwrap(),
            None => panic!("serve exited early:\n{said}"),
        };
        said.push_str(&line);
        said.push('\n');
        if let Some(at) = line.find("http://") {
            break line[at..].split_whitespace().next().unwrap().to_string();
        }
    };
    server.lines = Some(lines);
    server
}

/// A database in `pg` for every store that changes (the log, both sites, custody, the data
/// keys), each with the line of the default configuration it replaces, for
/// [`init_with_stores`].
pub fn every_store_on(pg: &pgtest::PgServer) -> Vec<(&'static str, String)> {
    [
        (r#"store = "sqlite:log/log.sqlite""#, "log"),
        (r#"store = "sqlite:sites/us-east/store.sqlite""#, "us_east"),
        (
            r#"store = "sqlite:sites/sg-legacy/store.sqlite""#,
            "sg_legacy",
        ),
        (r#"store = "custody/custody.sqlite""#, "custody"),
        (r#"store = "custody/data-keys.sqlite""#, "data_keys"),
    ]
    .into_iter()
    .map(|(line, database)| (line, pg.create_database(database)))
    .collect()
}

/// `sovereign init --data DIR`, then replaces each store line of the written configuration
/// (which must be there) with `store = URL`.
pub fn init_with_stores(data: &Path, stores: &[(&str, &str)]) {
    let init = sovereign()
        .args(["init", "--data", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert_success(&init);
    let config = data.join("sovereign.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    for (line, url) in stores {
        assert!(text.contains(line), "{line}");
        text = text.replace(line, &format!("store = {url:?}"));
    }
    std::fs::write(&config, text).unwrap();
}

/// Asserts that a command exited with success, showing its standard error if not.
pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The flags of `sovereign access request` that justify the scenarios' support access: the
/// `activity` collection, for ticket 42, customer-initiated, for two hours.
pub const SUPPORT_TICKET: [&str; 8] = [
    "--collection",
    "activity",
    "--purpose",
    "ticket 42",
    "--reason",
    "customer-initiated-support",
    "--duration",
    "2h",
];

/// The flags of `sovereign access break-glass` of the scenarios' incident: the `activity`
/// collection, for incident 7.
pub const INCIDENT: [&str; 6] = [
    "--collection",
    "activity",
    "--purpose",
    "incident 7",
    "--reason",
    "incident-response",
];

/// A request to a gateway as `token`, with `Sovereign-Purpose: purpose` (unless empty) and
/// `body` (if any): the answer's status, and the log entry it names (`Sovereign-Log-Index`).
pub fn governed(
    http: &reqwest::blocking::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
    purpose: &str,
    body: Option<&str>,
) -> (u16, Option<u64>) {
    let mut request = http.request(method, url).bearer_auth(token);
    if !purpose.is_empty() {
        request = request.header("Sovereign-Purpose", purpose);
    }
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let response = request.send().unwrap();
    let index = response
        .headers()
        .get("Sovereign-Log-Index")
        .map(|i| i.to_str().unwrap().parse().unwrap());
    (response.status().as_u16(), index)
}

/// A command's standard output and standard error, as text.
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A path as a command-line argument.
pub fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A development token for `who` of the reference cast, from `sovereign token`.
pub fn token_of(data: &Path, who: &Who) -> String {
    let args = who.token_args();
    token(data, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// A development token from `sovereign token --data DIR ARGS...`.
pub fn token(data: &Path, args: &[&str]) -> String {
    let output = sovereign()
        .args(["token", "--data", data.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    assert_success(&output);
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// The token of a data subject acting on their own data: `sub` their subject id, entity
/// `public`, role `data-subject`, located in the US.
pub fn data_subject_token(data: &Path, subject: &str) -> String {
    token(
        data,
        &[
            "--sub",
            subject,
            "--entity",
            "public",
            "--location",
            "US",
            "--role",
            "data-subject",
        ],
    )
}

/// Whether the cvc5 solver is installed; without it, a test that needs it skips with a
/// message, unless `SOVEREIGN_REQUIRE_CVC5=1` (as in CI), which makes it fail instead.
pub fn cvc5_present() -> bool {
    let found = std::process::Command::new("cvc5")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("SOVEREIGN_REQUIRE_CVC5").as_deref() != Ok("1"),
            "cvc5 is required (SOVEREIGN_REQUIRE_CVC5=1): apt-get install cvc5"
        );
        eprintln!("skipping: no cvc5 (apt-get install cvc5)");
    }
    found
}

/// Every entry of the log served at `base`, decoded, after verifying the log.
pub fn log_entries(base: &str) -> Vec<serde_json::Value> {
    let mut entries = Vec::new();
    tlog::verify_log(
        &crate::support::ServedLog::new(base),
        &testkit::served::log_verifier(base),
        None,
        &mut |_, _| {},
        &mut |_, entry| {
            entries.push(serde_json::from_slice(entry).unwrap());
            Ok(())
        },
    )
    .unwrap();
    entries
}
