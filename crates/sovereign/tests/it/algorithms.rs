//! Custodian-released algorithms, through the binary against a real gateway: the example
//! ranker submitted with its manifest, signed offline, activated, run for a subject by a
//! platform service that gets only the recommended category; the decisions and the run in
//! the log; a restricted-country caller, a caller without the role, the kill switch and a
//! deactivation stop runs; an output repeating a protected value, a module that loops
//! forever and one that asks for too much memory fail cleanly and are logged; markers in
//! every protected field never reach an answer, the log or the service's output.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use testkit::cast::{OPERATOR, PARENT_SG, VETTED_US, Who};

use crate::support::{s, sovereign, token, token_of};

fn example(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../examples/algorithms/ranker/{file}"))
}

/// A gateway with its data folder, and what it printed.
struct Gateway {
    _dir: tempfile::TempDir,
    data: PathBuf,
    base: String,
    server: crate::support::Server,
    printed: Arc<Mutex<Vec<String>>>,
    collector: Option<std::thread::JoinHandle<()>>,
    http: reqwest::blocking::Client,
}

impl Gateway {
    fn start() -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // At its most verbose level, to catch any leak.
        let mut server = crate::support::serve(&data, "trace");
        let lines = server.lines.take().unwrap();
        let printed = Arc::new(Mutex::new(Vec::new()));
        let collector = {
            let printed = printed.clone();
            std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    printed.lock().unwrap().push(line);
                }
            })
        };
        Gateway {
            _dir: dir,
            base: server.base.clone(),
            data,
            server,
            printed,
            collector: Some(collector),
            http: reqwest::blocking::Client::new(),
        }
    }

    /// `sovereign ARGS...` against this gateway as `token` (none when empty).
    fn cli(&self, token: &str, args: &[&str]) -> Output {
        let mut command = sovereign();
        command.args(args).env("SOVEREIGN_URL", &self.base);
        if !token.is_empty() {
            command.args(["--token", token]);
        }
        command.output().unwrap()
    }

    fn cli_ok(&self, token: &str, args: &[&str]) -> String {
        let output = self.cli(token, args);
        let (out, err) = crate::support::text(&output);
        assert!(output.status.success(), "sovereign {args:?}: {out}{err}");
        out
    }

    /// A request: its status, JSON body and `Sovereign-Log-Index`.
    fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        purpose: &str,
        body: Option<Value>,
    ) -> (u16, Value, Option<u64>) {
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(token);
        if !purpose.is_empty() {
            request = request.header("Sovereign-Purpose", purpose);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        let index = response
            .headers()
            .get("Sovereign-Log-Index")
            .map(|i| i.to_str().unwrap().parse().unwrap());
        let text = response.text().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            index,
        )
    }

    fn run(&self, token: &str, name: &str, subject: &str) -> (u16, Value, Option<u64>) {
        self.call(
            "POST",
            &format!("/v1/algorithms/{name}/runs"),
            token,
            "",
            Some(json!({"subject": subject})),
        )
    }

    /// Submits, signs (offline, with the custodian's key) and activates a release.
    fn release(&self, name: &str, version: &str, module: &Path, manifest: &Path) {
        let olga = token_of(&self.data, &OPERATOR);
        let release = ["--name", name, "--version", version];
        let manifest = ["--manifest", s(manifest)];
        let submitted = self.cli_ok(
            &olga,
            &[&["algo", "submit", s(module)][..], &release, &manifest].concat(),
        );
        assert!(submitted.contains("--manifest"), "{submitted}");
        let note = self.data.join(format!("{name}-{version}.note"));
        let key = self.data.join("keys/custodian.key");
        self.cli_ok(
            "",
            &[
                &["algo", "sign", s(module)][..],
                &release,
                &manifest,
                &["--key", s(&key), "--out", s(&note)],
            ]
            .concat(),
        );
        self.cli_ok(
            &olga,
            &[
                &["algo", "activate"][..],
                &release,
                &["--signature", s(&note)],
            ]
            .concat(),
        );
    }

    /// Every entry of the verified log, once the checkpoint covers `size` entries.
    fn entries(&self, size: u64) -> Vec<Value> {
        testkit::served::wait_for_checkpoint(&self.base, size);
        crate::support::log_entries(&self.base)
    }

    /// Stops the gateway and answers every line it printed.
    fn stop(mut self) -> Vec<String> {
        std::process::Command::new("kill")
            .args(["-TERM", &self.server.child.id().to_string()])
            .status()
            .unwrap();
        assert!(self.server.child.wait().unwrap().success());
        self.collector.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.printed.lock().unwrap())
    }
}

/// The `algorithm-run` entries' outcomes, in log order.
fn run_outcomes(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e["kind"] == "algorithm-run")
        .map(|e| e["details"]["outcome"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_released_algorithm_runs_next_to_the_data_and_only_its_outputs_leave() {
    let gw = Gateway::start();
    let data = gw.data.clone();
    let olga = token_of(&data, &OPERATOR);
    let frank = token_of(
        &data,
        &Who {
            roles: &["break-glass"],
            ..VETTED_US
        },
    );
    let runner = |location: &str| {
        token(
            &data,
            &[
                "--sub",
                "recommender",
                "--entity",
                "parent",
                "--location",
                location,
                "--role",
                "algorithm-runner",
            ],
        )
    };
    let (runner_sg, runner_cn) = (runner("SG"), runner("CN"));
    let siew = token_of(&data, &PARENT_SG);

    // A US subject whose protected activity carries markers. Writing it needs a custodian
    // grant: frank uses break-glass.
    let (status, _, _) = gw.call(
        "PUT",
        "/v1/subjects/u-1",
        &frank,
        "setup",
        Some(json!({"jurisdiction": "US"})),
    );
    assert_eq!(status, 201);
    let (status, _, _) = gw.call(
        "POST",
        "/v1/access/break-glass",
        &frank,
        "setup",
        Some(json!({"action": "write", "collections": ["activity"], "purpose": "algorithm test", "reason_code": "security-audit"})),
    );
    assert_eq!(status, 201);
    let markers = [
        "drama:ZZMARK-title-1",
        "drama:ZZMARK-title-2",
        "comedy:ZZMARK-title-3",
        "ZZMARK-location",
    ];
    let history = json!({
        "watch_history": &markers[..3],
        "location": markers[3],
        "public_video_count": 3,
    });
    for (subject, body) in [
        ("u-1", history),
        // u-2's history holds an item that is exactly a category: the ranker's answer
        // repeats a protected value, and is refused.
        (
            "u-2",
            json!({"watch_history": ["drama:ZZMARK-title-4", "drama"]}),
        ),
    ] {
        if subject == "u-2" {
            let (status, _, _) = gw.call(
                "PUT",
                "/v1/subjects/u-2",
                &frank,
                "setup",
                Some(json!({"jurisdiction": "US"})),
            );
            assert_eq!(status, 201);
        }
        let (status, answer, _) = gw.call(
            "PUT",
            &format!("/v1/subjects/{subject}/records/activity/main"),
            &frank,
            "setup",
            Some(body),
        );
        assert_eq!(status, 200, "{answer}");
    }

    // Nothing runs before the custodian's release.
    let (status, answer, _) = gw.run(&runner_sg, "ranker", "u-1");
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("unknown_release"))
    );
    gw.release(
        "ranker",
        "1.0.0",
        &example("ranker.wasm"),
        &example("manifest.json"),
    );

    // The platform's service runs it and gets the category, never the history.
    let out = gw.cli_ok(
        &runner_sg,
        &[
            "algo",
            "run",
            "--name",
            "ranker",
            "--subject",
            "u-1",
            "--json",
        ],
    );
    let ran: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ran["output"], json!({"categories": ["drama"]}), "{ran}");
    assert_eq!(ran["decisions"].as_array().unwrap().len(), 2, "{ran}");
    let fuel = ran["fuel_used"].as_u64().unwrap();
    assert!(fuel > 0 && fuel.is_power_of_two(), "rounded: {ran}");
    let mut answers = vec![ran.to_string()];

    // The same input gives the same output.
    let (status, again, _) = gw.run(&runner_sg, "ranker", "u-1");
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["output_sha256"], ran["output_sha256"]);

    // A purpose other than the release's is refused before anything is decided.
    let (status, answer, index) = gw.call(
        "POST",
        "/v1/algorithms/ranker/runs",
        &runner_sg,
        "marketing",
        Some(json!({"subject": "u-1"})),
    );
    assert_eq!((status, index), (400, None), "{answer}");

    // Without the runner's role, and from a restricted country: denied, and logged.
    for (token, policy) in [
        (&siew, None),
        (&runner_cn, Some("forbid-restricted-location")),
    ] {
        let (status, answer, index) = gw.run(token, "ranker", "u-1");
        assert_eq!((status, answer["error"].as_str()), (403, Some("denied")));
        assert!(index.is_some(), "a denial is logged: {answer}");
        if let Some(policy) = policy {
            assert!(answer["policies"].to_string().contains(policy), "{answer}");
        }
        answers.push(answer.to_string());
    }

    // An output that repeats a protected value is refused, and nothing of it is served.
    let (status, answer, index) = gw.run(&runner_sg, "ranker", "u-2");
    assert_eq!(
        (status, answer["error"].as_str()),
        (422, Some("algorithm_failed"))
    );
    assert!(index.is_some());
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("protected value"),
        "{answer}"
    );
    answers.push(answer.to_string());

    // The kill switch stops runs at once; lifted, they run again.
    let key = data.join("keys/custodian.key");
    gw.cli_ok(&olga, &["kill-switch", "suspend", "US", "--key", s(&key)]);
    let (status, answer, _) = gw.run(&runner_sg, "ranker", "u-1");
    assert_eq!((status, answer["error"].as_str()), (403, Some("suspended")));
    gw.cli_ok(&olga, &["kill-switch", "lift", "US", "--key", s(&key)]);
    let (status, _, last_run) = gw.run(&runner_sg, "ranker", "u-1");
    assert_eq!(status, 200);

    // Deactivated, it runs no more.
    gw.cli_ok(
        &olga,
        &[
            "algo",
            "deactivate",
            "--name",
            "ranker",
            "--version",
            "1.0.0",
        ],
    );
    let (status, answer, _) = gw.run(&runner_sg, "ranker", "u-1");
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("unknown_release"))
    );
    // Its old signature does not bring it back: a statement has no serial.
    let note = data.join("ranker-1.0.0.note");
    let again = gw.cli(
        &olga,
        &[
            "algo",
            "activate",
            "--name",
            "ranker",
            "--version",
            "1.0.0",
            "--signature",
            s(&note),
        ],
    );
    let (_, err) = crate::support::text(&again);
    assert!(
        !again.status.success() && err.contains("never activated again"),
        "{err}"
    );

    // The log has every run, the release's own decisions, and no marker. The deactivation
    // is the entry after the last run.
    let entries = gw.entries(last_run.unwrap() + 2);
    assert_eq!(
        run_outcomes(&entries),
        ["ok", "ok", "denied", "denied", "failed", "denied", "ok"],
    );
    let compute: Vec<&Value> = entries
        .iter()
        .filter(|e| e["kind"] == "access" && e["action"] == "compute")
        .collect();
    assert_eq!(
        compute.len(),
        4,
        "one per run that got past its run decision"
    );
    for entry in &compute {
        assert_eq!(
            entry["principal"]["id"], "algorithm:ranker@1.0.0",
            "{entry}"
        );
        assert_eq!(entry["grant"]["kind"], "release", "{entry}");
    }
    let ok = entries
        .iter()
        .find(|e| e["kind"] == "algorithm-run")
        .unwrap();
    assert_eq!(
        ok["details"]["fields_read"],
        json!(["activity.watch_history"])
    );
    assert_eq!(ok["details"]["output_sha256"], ran["output_sha256"]);
    assert!(ok["details"]["subject"].as_str().unwrap().len() >= 32);
    let day = entries[0]["time"].as_str().unwrap()[..10].to_string();
    let entries: Vec<String> = entries.iter().map(Value::to_string).collect();

    // A monitor re-decides every decision, the release's own too, and holds each run to
    // the release in force at its place in the log.
    let key = testkit::served::log_key(&gw.base);
    let replay = gw.cli_ok(
        "",
        &[
            "audit",
            "replay",
            "--url",
            &format!("{}/log", gw.base),
            "--key",
            key.trim(),
        ],
    );
    assert!(replay.contains("mismatches: 0\n"), "{replay}");
    assert!(
        replay.contains("runs:       ranker (3 denied, 1 failed, 3 ok)"),
        "{replay}"
    );
    // A transparency report counts the runs per algorithm and outcome.
    let prefix = data.join("report");
    gw.cli_ok(
        "",
        &[
            "report",
            "--url",
            &format!("{}/log", gw.base),
            "--key",
            key.trim(),
            "--from",
            &day,
            "--to",
            &day,
            "--signer",
            s(&data.join("keys/custodian.key")),
            "--out",
            s(&prefix),
        ],
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(prefix.with_extension("json")).unwrap()).unwrap();
    assert!(
        report
            .to_string()
            .contains(r#""algorithm_runs":{"ranker denied":3,"ranker failed":1,"ranker ok":3}"#),
        "{report}"
    );
    let printed = gw.stop();
    for marker in markers.iter().chain(&["ZZMARK-title-4"]) {
        for text in entries.iter().chain(&answers).chain(&printed) {
            assert!(!text.contains(marker), "marker {marker} in: {text}");
        }
    }
}

/// A module in the WebAssembly text format, compiled, and its manifest: it reads the
/// interoperable `activity.public_video_count` and declares one number, within 1 M fuel,
/// 1 MiB of memory and one second.
fn module(dir: &Path, name: &str, run_body: &str) -> (PathBuf, PathBuf) {
    let wasm = wat::parse_str(format!(
        r#"(module
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "run") (param i32 i32) (result i64) {run_body}))"#
    ))
    .unwrap();
    let module = dir.join(format!("{name}.wasm"));
    std::fs::write(&module, &wasm).unwrap();
    let manifest = dir.join(format!("{name}.json"));
    let text = json!({
        "name": name,
        "version": "1.0.0",
        "module_sha256": testkit::sha256_hex(&wasm),
        "purpose": "testing limits",
        "reads": [{"collection": "activity", "fields": ["public_video_count"]}],
        "outputs": [{"name": "score", "type": "number", "max_bytes": 32}],
        "limits": {"fuel": 1_000_000, "memory_bytes": 1_048_576, "wall_ms": 1000},
    });
    std::fs::write(&manifest, text.to_string()).unwrap();
    (module, manifest)
}

#[test]
fn runs_stopped_at_their_limits_fail_cleanly_and_are_logged() {
    let gw = Gateway::start();
    let data = gw.data.clone();
    let vetted = token_of(&data, &VETTED_US);
    let runner = token(
        &data,
        &[
            "--sub",
            "batch",
            "--entity",
            "usds",
            "--location",
            "US",
            "--role",
            "algorithm-runner",
        ],
    );
    let (status, _, _) = gw.call(
        "PUT",
        "/v1/subjects/u-1",
        &vetted,
        "setup",
        Some(json!({"jurisdiction": "US"})),
    );
    assert_eq!(status, 201);
    let (status, _, _) = gw.call(
        "PUT",
        "/v1/subjects/u-1/records/activity/main",
        &vetted,
        "setup",
        Some(json!({"public_video_count": 7})),
    );
    assert_eq!(status, 200);

    let mut last = 0;
    for (name, body, limit) in [
        // Loops forever: stopped by its fuel.
        (
            "spinner",
            "(loop $forever (br $forever)) (i64.const 0)",
            "fuel",
        ),
        // Asks for 100 pages (6.4 MiB) of memory, above its 1 MiB.
        (
            "hog",
            "(drop (memory.grow (i32.const 100))) (i64.const 0)",
            "memory",
        ),
    ] {
        let (module, manifest) = module(&data, name, body);
        gw.release(name, "1.0.0", &module, &manifest);
        let (status, answer, index) = gw.run(&runner, name, "u-1");
        assert_eq!(
            (status, answer["error"].as_str()),
            (422, Some("algorithm_failed")),
            "{answer}"
        );
        let message = answer["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("stopped at its {limit} limit")),
            "{message}"
        );
        last = index.unwrap();
    }
    let entries = gw.entries(last + 1);
    let failed: Vec<&Value> = entries
        .iter()
        .filter(|e| e["kind"] == "algorithm-run")
        .collect();
    assert_eq!(failed.len(), 2);
    for (entry, limit) in failed.iter().zip(["fuel", "memory"]) {
        assert_eq!(entry["details"]["outcome"], "failed");
        assert_eq!(
            entry["details"]["fields_read"],
            json!(["activity.public_video_count"])
        );
        assert!(
            entry["details"]["error"].as_str().unwrap().contains(limit),
            "{entry}"
        );
    }
    // The gateway still serves.
    let (status, _, _) = gw.call("GET", "/healthz", "", "", None);
    assert_eq!(status, 200);
    gw.stop();
}

#[test]
fn a_batch_runs_for_many_subjects_resumably_and_stores_the_outputs() {
    let gw = Gateway::start();
    let data = gw.data.clone();
    let frank = token_of(
        &data,
        &Who {
            roles: &["break-glass"],
            ..VETTED_US
        },
    );
    let runner = token(
        &data,
        &[
            "--sub",
            "nightly",
            "--entity",
            "parent",
            "--location",
            "SG",
            "--role",
            "algorithm-runner",
        ],
    );
    let (status, _, _) = gw.call(
        "POST",
        "/v1/access/break-glass",
        &frank,
        "setup",
        Some(json!({"action": "write", "collections": ["activity"], "purpose": "batch test", "reason_code": "security-audit"})),
    );
    assert_eq!(status, 201);
    for (n, favourite) in ["drama", "comedy", "documentary", "drama"]
        .iter()
        .enumerate()
    {
        let id = format!("u-{n}");
        let (status, _, _) = gw.call(
            "PUT",
            &format!("/v1/subjects/{id}"),
            &frank,
            "setup",
            Some(json!({"jurisdiction": "US"})),
        );
        assert_eq!(status, 201);
        let history = json!({"watch_history": [format!("{favourite}:title {n}"), format!("{favourite}:another {n}"), "comedy:one more"]});
        let (status, _, _) = gw.call(
            "PUT",
            &format!("/v1/subjects/{id}/records/activity/main"),
            &frank,
            "setup",
            Some(history),
        );
        assert_eq!(status, 200);
    }
    gw.release(
        "ranker",
        "1.0.0",
        &example("ranker.wasm"),
        &example("manifest.json"),
    );

    // Three subjects and one id that names none; then the list grows by one.
    let subjects = data.join("subjects.txt");
    let state = data.join("batch.cursor");
    std::fs::write(&subjects, "# tonight\nu-0\nu-1\nnobody\nu-2\n").unwrap();
    let batch = |expect: &str| {
        let out = gw.cli_ok(
            &runner,
            &[
                "algo",
                "batch",
                "--name",
                "ranker",
                "--subjects",
                s(&subjects),
                "--state",
                s(&state),
                "--store",
                "recommendations",
                "--rate",
                "100",
            ],
        );
        assert!(out.contains(expect), "{out}");
    };
    batch("ranker: 4 subjects, 3 ok, 0 failed, 1 denied or refused");
    // Run again: nothing left to do.
    batch("ranker: 4 subjects, 3 ok, 0 failed, 1 denied or refused");
    std::fs::write(&subjects, "# tonight\nu-0\nu-1\nnobody\nu-2\nu-3\n").unwrap();
    batch("ranker: 5 subjects, 4 ok, 0 failed, 1 denied or refused");

    // The platform reads the recommendations, interoperable fields only.
    let siew = token_of(&data, &PARENT_SG);
    for (id, favourite) in [
        ("u-0", "drama"),
        ("u-1", "comedy"),
        ("u-2", "documentary"),
        ("u-3", "drama"),
    ] {
        let (status, record, _) = gw.call(
            "GET",
            &format!("/v1/subjects/{id}/records/recommendations/main"),
            &siew,
            "recommendations",
            None,
        );
        assert_eq!(status, 200, "{record}");
        assert_eq!(
            record["fields"]["categories"],
            json!([favourite]),
            "{record}"
        );
    }
    // A cursor of another batch is refused.
    let other = gw.cli(
        &runner,
        &[
            "algo",
            "batch",
            "--name",
            "other",
            "--subjects",
            s(&subjects),
            "--state",
            s(&state),
        ],
    );
    assert!(!other.status.success());
    gw.stop();
}
