//! No protected field value ever reaches the transparency log or the service's own log output:
//! unique markers are written into every protected field of every collection, read back by
//! allowed, partially allowed and denied principals, listed and deleted; then every log entry
//! and every line the service printed (at its most verbose level) is scanned for them.

use std::process::Command;
use testkit::cast::{PARENT_CN, PARENT_SG, VETTED_US, Who};

use crate::support::token_of;
use std::sync::{Arc, Mutex};

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

#[test]
fn markers_in_protected_fields_never_reach_any_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // At its most verbose level, to catch any leak.
    let mut server = crate::support::serve(&data, "trace");
    let lines = server.lines.take().unwrap();
    let base = server.base.clone();
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
    // Vetted US staff who may start break-glass.
    let alice = token_of(
        &data,
        &Who {
            roles: &["break-glass"],
            ..VETTED_US
        },
    );
    let siew = token_of(&data, &PARENT_SG);
    let chen = token_of(&data, &PARENT_CN);

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
    // `activity` needs a custodian grant: alice uses break-glass for each action she takes
    // on it (each use is a custody entry and an alert entry).
    for action in ["write", "read", "delete"] {
        let body = format!(
            r#"{{"action":"{action}","collections":["activity"],"purpose":"marker test","reason_code":"security-audit"}}"#
        );
        assert_eq!(
            http.send(
                "POST",
                "/v1/access/break-glass",
                &alice,
                "setup",
                Some(body)
            ),
            201
        );
    }
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
    let checkpoint = tlog::verify_log(
        &crate::support::ServedLog::new(&http.base),
        &verifier,
        None,
        &mut |_, _| {},
        &mut |_, entry| {
            entries.push(String::from_utf8(entry.to_vec()).unwrap());
            Ok(())
        },
    )
    .unwrap();
    // The invariants' and the first policy set's proposal and activation, the start,
    // the registration, three break-glass uses with their alerts, per collection 7 decisions
    // (the write with an undeclared field is refused before any decision), and one
    // restricted-country alert for chen (his later attempts within the minute are counted,
    // not logged again).
    assert_eq!(checkpoint.size, 27, "every decision was logged");

    Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(server.child.wait().unwrap().success());
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
