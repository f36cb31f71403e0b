//! No protected field value ever reaches the transparency log or the service's own log output:
//! unique markers are written into every protected field of every collection, read back by
//! allowed, partially allowed and denied principals, listed and deleted; then every log entry
//! and every line the service printed (at its most verbose level) is scanned for them.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use tlog::{FetchError, TileFetcher};

fn sovereign() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sovereign"))
}

fn token(data: &str, args: &[&str]) -> String {
    let output = sovereign()
        .args(["token", "--data", data])
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Http {
    base: String,
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    fn send(
        &self,
        method: &str,
        path: &str,
        token: &str,
        purpose: &str,
        body: Option<String>,
    ) -> u16 {
        self.runtime.block_on(async {
            let mut request = self
                .client
                .request(method.parse().unwrap(), format!("{}{path}", self.base))
                .bearer_auth(token)
                .header("Sovereign-Purpose", purpose);
            if let Some(body) = body {
                request = request.body(body);
            }
            request.send().await.unwrap().status().as_u16()
        })
    }

    fn text(&self, path: &str) -> String {
        self.runtime.block_on(async {
            let response = self
                .client
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .unwrap();
            response.text().await.unwrap()
        })
    }
}

impl TileFetcher for Http {
    fn fetch(&self, path: &str) -> Result<Option<Vec<u8>>, FetchError> {
        self.runtime.block_on(async {
            let response = self
                .client
                .get(format!("{}/log/{path}", self.base))
                .send()
                .await
                .map_err(FetchError::new)?;
            if response.status() == reqwest::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            Ok(Some(
                response.bytes().await.map_err(FetchError::new)?.to_vec(),
            ))
        })
    }
}

#[test]
fn markers_in_protected_fields_never_reach_any_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let child = sovereign()
        .args(["serve", "--listen", "127.0.0.1:0", "--data", data_arg])
        .env("SOVEREIGN_LOG", "trace")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Killed if the test fails before it stops the server itself.
    let mut child = KillOnDrop(child);
    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("serve exited early").unwrap();
        if let Some(at) = line.find("http://") {
            break line[at..].split_whitespace().next().unwrap().to_string();
        }
    };
    let service_output = Arc::new(Mutex::new(Vec::<String>::new()));
    let collector = {
        let service_output = service_output.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                service_output.lock().unwrap().push(line);
            }
        })
    };

    let http = Http {
        base,
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        client: reqwest::Client::new(),
    };
    let alice = token(
        data_arg,
        &[
            "--sub",
            "alice",
            "--entity",
            "usds",
            "--location",
            "US",
            "--clearance",
            "us-data",
        ],
    );
    let siew = token(
        data_arg,
        &["--sub", "siew", "--entity", "parent", "--location", "SG"],
    );
    let chen = token(
        data_arg,
        &["--sub", "chen", "--entity", "parent", "--location", "CN"],
    );

    // Every protected field of the default collections, each with its own marker.
    let protected = [
        ("profile", ["email", "birthdate", "phone"].as_slice()),
        ("activity", ["watch_history", "location"].as_slice()),
    ];
    let mut markers = Vec::new();
    assert_eq!(
        http.send(
            "PUT",
            "/v1/subjects/m-1",
            &alice,
            "setup",
            Some(r#"{"jurisdiction":"US"}"#.into())
        ),
        201
    );
    for (collection, fields) in protected {
        let mut body = serde_json::Map::new();
        for field in fields {
            let marker = format!("ZZMARK-{collection}-{field}-91c2");
            body.insert(field.to_string(), marker.clone().into());
            markers.push(marker);
        }
        let path = format!("/v1/subjects/m-1/records/{collection}/k1");
        let body = serde_json::Value::Object(body).to_string();
        assert_eq!(
            http.send("PUT", &path, &alice, "setup", Some(body.clone())),
            200
        );
        assert_eq!(http.send("GET", &path, &alice, "support", None), 200);
        assert_eq!(http.send("GET", &path, &siew, "look", None), 200); // interoperable part only
        assert_eq!(http.send("GET", &path, &chen, "debug", None), 403);
        assert_eq!(http.send("PUT", &path, &chen, "debug", Some(body)), 403);
        // A rejected write with a marker in an undeclared field.
        let undeclared = format!(r#"{{"ssn":"ZZMARK-{collection}-undeclared-91c2"}}"#);
        markers.push(format!("ZZMARK-{collection}-undeclared-91c2"));
        assert_eq!(
            http.send("PUT", &path, &alice, "setup", Some(undeclared)),
            400
        );
        assert_eq!(
            http.send("GET", "/v1/subjects/m-1/records", &alice, "list", None),
            200
        );
        assert_eq!(http.send("DELETE", &path, &alice, "erase", None), 200);
    }

    // Every entry of the verified log.
    let key = http.text("/log/key");
    let verifier = tlog::note::Verifier::new(key.trim()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800)); // a checkpoint covering it all
    let mut entries = Vec::new();
    let checkpoint = tlog::verify_log(&http, &verifier, None, &mut |_, _| {}, &mut |_, entry| {
        entries.push(String::from_utf8(entry.to_vec()).unwrap());
        Ok(())
    })
    .unwrap();
    // The start, the registration, and per collection 7 decisions (the write with an
    // undeclared field is refused before any decision).
    assert_eq!(checkpoint.size, 16, "every decision was logged");

    Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(child.0.wait().unwrap().success());
    collector.join().unwrap();
    let output = service_output.lock().unwrap();
    assert!(
        output.len() > 20,
        "the service logged its requests: {}",
        output.len()
    );

    for marker in &markers {
        for entry in &entries {
            assert!(
                !entry.contains(marker),
                "marker {marker} in a log entry: {entry}"
            );
        }
        for line in output.iter() {
            assert!(
                !line.contains(marker),
                "marker {marker} in the service log: {line}"
            );
        }
    }
    // The raw subject id stays out of the transparency log too.
    assert!(
        entries.iter().all(|e| !e.contains("m-1")),
        "raw subject id in the log"
    );
}
