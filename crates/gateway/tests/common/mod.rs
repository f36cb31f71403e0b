//! A real gateway on an ephemeral port, on a fresh default setup in a temporary folder.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use gateway::auth::{Claims, mint_dev_token, now_unix};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::oneshot;

pub struct Server {
    pub base: String,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    /// The running gateway's state, to look behind the API (stores, policies).
    pub state: std::sync::Arc<gateway::AppState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    /// Starts on a default setup.
    pub async fn start() -> Server {
        Self::start_with(|_| {}).await
    }

    /// Starts on a default setup that `edit` may change first (it gets the data folder).
    pub async fn start_with(edit: impl FnOnce(&Path)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        gateway::setup::init(dir.path(), false).unwrap();
        edit(dir.path());
        let gateway = gateway::Gateway::open(dir.path()).unwrap();
        Self::spawn(gateway, dir).await
    }

    /// Starts on a default setup whose `sovereign.toml` has each `(from, to)` replaced (each
    /// `from` must be in it).
    pub async fn start_with_config(edits: &[(&str, &str)]) -> Server {
        Self::start_with(|dir| {
            let path = dir.join("sovereign.toml");
            let mut text = std::fs::read_to_string(&path).unwrap();
            for (from, to) in edits {
                assert!(text.contains(from), "sovereign.toml lacks {from}");
                text = text.replace(from, to);
            }
            std::fs::write(&path, text).unwrap();
        })
        .await
    }

    pub async fn spawn(gateway: gateway::Gateway, dir: tempfile::TempDir) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let state = gateway.state().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway.serve(listener, async {
            let _ = stopped.await;
        }));
        Server {
            base: format!("http://{addr}"),
            dir,
            client: reqwest::Client::new(),
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A vault of the test's own on the server's stores (the server's vault is reachable
    /// only through its decisions), with the custodian's envelope, to check what is stored.
    pub fn vault(&self) -> vault::Vault {
        open_vault(&self.data())
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn token(&self, who: &Who) -> String {
        mint_dev_token(self.dir.path(), &who.claims(3600)).unwrap()
    }

    /// Sends a request as `who` (or anonymously), with an optional purpose and JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        purpose: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(purpose) = purpose {
            request = request.header("Sovereign-Purpose", purpose);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or_else(|_| {
            panic!(
                "{method_path} answered non-JSON: {text}",
                method_path = path
            )
        });
        (status, value)
    }

    /// A GET whose answer is not (necessarily) JSON: the status, the bytes and the headers.
    pub async fn get_raw(
        &self,
        path: &str,
        token: &str,
    ) -> (StatusCode, Vec<u8>, reqwest::header::HeaderMap) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        (status, response.bytes().await.unwrap().to_vec(), headers)
    }

    /// Registers a US subject as `token`'s principal, which must be allowed to.
    pub async fn register_us(&self, token: &str, id: &str) {
        let (status, body) = self
            .call(
                Method::PUT,
                &format!("/v1/subjects/{id}"),
                Some(token),
                None,
                Some(r#"{"jurisdiction":"US"}"#),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "register {id}: {body}");
    }

    /// Files the access request `body` as `requester` and has both custodian approvers
    /// approve it; answers its id.
    pub async fn approved_request(&self, requester: &Who, body: &Value) -> String {
        let (status, request) = self
            .call(
                Method::POST,
                "/v1/access/requests",
                Some(&self.token(requester)),
                None,
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{request}");
        let id = request["id"].as_str().unwrap().to_string();
        for who in [APPROVER_1, APPROVER_2] {
            let (status, answer) = self
                .call(
                    Method::POST,
                    &format!("/v1/access/requests/{id}/approve"),
                    Some(&self.token(&who)),
                    None,
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{answer}");
        }
        id
    }

    /// Writes `subject`'s `activity` record under a break-glass write grant (its protected
    /// fields need one).
    pub async fn write_activity_under_break_glass(&self, subject: &str, record: &Value) {
        let frank = self.token(&BREAK_GLASS);
        let grant = serde_json::json!({"action": "write", "collections": ["activity"],
            "purpose": "seed", "reason_code": "service-maintenance"});
        let (status, body) = self
            .call(
                Method::POST,
                "/v1/access/break-glass",
                Some(&frank),
                None,
                Some(&grant.to_string()),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = self
            .call(
                Method::PUT,
                &format!("/v1/subjects/{subject}/records/activity/main"),
                Some(&frank),
                Some("seed"),
                Some(&record.to_string()),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// The log entry at `index`, parsed.
    pub fn entry(&self, index: u64) -> Value {
        let bytes = self.state.log.entry(index).unwrap().expect("entry exists");
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Stops the server and hands back its data folder, to open it again.
    pub async fn stop_keep(mut self) -> tempfile::TempDir {
        self.halt().await;
        let Server { dir, state, .. } = self;
        drop(state);
        dir
    }

    pub async fn stop(mut self) {
        self.halt().await;
    }

    async fn halt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// A principal of the reference cast.
#[derive(Clone)]
pub struct Who {
    pub sub: &'static str,
    pub entity: &'static str,
    pub location: &'static str,
    pub clearance: &'static [&'static str],
    pub roles: &'static [&'static str],
}

impl Who {
    pub fn claims(&self, ttl: i64) -> Claims {
        let now = now_unix();
        Claims {
            sub: self.sub.into(),
            iss: gateway::setup::DEV_ISSUER.into(),
            exp: now + ttl,
            nbf: Some(now),
            iat: Some(now),
            entity: self.entity.into(),
            location: self.location.into(),
            clearance: self.clearance.iter().map(|s| s.to_string()).collect(),
            roles: self.roles.iter().map(|s| s.to_string()).collect(),
        }
    }
}

pub const VETTED_US: Who = Who {
    sub: "alice",
    entity: "usds",
    location: "US",
    clearance: &["us-data"],
    roles: &["engineer"],
};
pub const USDS_TRAVELLING_CN: Who = Who {
    sub: "bob",
    entity: "usds",
    location: "CN",
    clearance: &["us-data"],
    roles: &["engineer"],
};
pub const PARENT_CN: Who = Who {
    sub: "chen",
    entity: "parent",
    location: "CN",
    clearance: &[],
    roles: &["engineer"],
};
pub const PARENT_SG: Who = Who {
    sub: "siew",
    entity: "parent",
    location: "SG",
    clearance: &[],
    roles: &["engineer"],
};
pub const MONITOR: Who = Who {
    sub: "mona",
    entity: "monitor",
    location: "US",
    clearance: &[],
    roles: &["monitor"],
};

/// The global platform's egress consumer: it takes interoperable data out of the jurisdiction
/// (to Singapore; one located in a restricted country gets no US rows).
pub const EGRESS: Who = Who {
    sub: "globe",
    entity: "parent",
    location: "SG",
    clearance: &[],
    roles: &["egress"],
};

pub fn now() -> i64 {
    now_unix()
}

// The custodian's cast.
pub const APPROVER_1: Who = Who {
    sub: "carol",
    entity: "custodian",
    location: "US",
    clearance: &[],
    roles: &["custodian-approver"],
};
pub const APPROVER_2: Who = Who {
    sub: "dave",
    entity: "custodian",
    location: "US",
    clearance: &[],
    roles: &["custodian-approver"],
};
pub const BREAK_GLASS: Who = Who {
    sub: "frank",
    entity: "usds",
    location: "US",
    clearance: &["us-data"],
    roles: &["engineer", "break-glass"],
};
pub const OPERATOR: Who = Who {
    sub: "olga",
    entity: "custodian",
    location: "US",
    clearance: &[],
    roles: &["custodian-operator"],
};

/// The development custodian's signer key that `sovereign init` wrote into `data`.
pub fn custodian_key(data: &Path) -> tlog::note::Signer {
    custody::statement::load_signer(&data.join(gateway::setup::CUSTODIAN_KEY)).unwrap()
}

/// `statement` signed by `key`, as the text a custodian hands to the gateway.
pub fn signed(statement: &custody::statement::Statement, key: &tlog::note::Signer) -> String {
    String::from_utf8(custody::statement::sign(statement, key).unwrap()).unwrap()
}

/// A vault on the stores of the data folder `data`, outside any gateway.
pub fn open_vault(data: &Path) -> vault::Vault {
    let config = gateway::config::Config::load(data).unwrap();
    vault::Vault::open(config.layout(), data, 1)
        .unwrap()
        .with_envelope(gateway::open_envelope(&config, data).unwrap())
}
