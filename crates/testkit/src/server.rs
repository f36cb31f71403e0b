//! A real gateway on an ephemeral port, on a fresh default setup (`sovereign init`) in a
//! temporary folder, and a request builder to talk to it over HTTP:
//!
//! ```ignore
//! let server = Server::start().await;
//! let reply = server.get("/v1/subjects/u-1").token(&VETTED_US).purpose("support").await;
//! let body = server.put("/v1/subjects/u-1").token(&VETTED_US).body(r#"{"jurisdiction":"US"}"#)
//!     .expect(StatusCode::CREATED).await;
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gateway::auth::{Claims, mint_dev_token, now_unix};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::cast::{APPROVER_1, APPROVER_2, BREAK_GLASS, Who};

pub struct Server {
    pub base: String,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    /// The running gateway's state, to look behind the API (stores, policies).
    pub state: Arc<gateway::AppState>,
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

    /// A development token for `who`, valid for an hour.
    pub fn token(&self, who: &Who) -> String {
        mint_dev_token(self.dir.path(), &claims(who, 3600)).unwrap()
    }

    /// A request to `path` (anonymous, no purpose, no body until the builder adds them).
    pub fn request(&self, method: Method, path: &str) -> Call<'_> {
        Call {
            server: self,
            method,
            path: path.to_string(),
            token: None,
            purpose: None,
            body: None,
            headers: Vec::new(),
        }
    }

    pub fn get(&self, path: &str) -> Call<'_> {
        self.request(Method::GET, path)
    }

    pub fn put(&self, path: &str) -> Call<'_> {
        self.request(Method::PUT, path)
    }

    pub fn post(&self, path: &str) -> Call<'_> {
        self.request(Method::POST, path)
    }

    pub fn delete(&self, path: &str) -> Call<'_> {
        self.request(Method::DELETE, path)
    }

    /// Registers a US subject as `token`'s principal, which must be allowed to.
    pub async fn register_us(&self, token: &str, id: &str) {
        self.register(token, id, "US").await;
    }

    /// Registers subject `id` in `jurisdiction` as `token`'s principal, which must be allowed to.
    pub async fn register(&self, token: &str, id: &str, jurisdiction: &str) {
        self.registration(id, jurisdiction)
            .bearer(token)
            .expect(StatusCode::CREATED)
            .await;
    }

    /// The request that registers subject `id` in `jurisdiction` (`PUT /v1/subjects/{id}`).
    pub fn registration(&self, id: &str, jurisdiction: &str) -> Call<'_> {
        self.put(&format!("/v1/subjects/{id}"))
            .json(&json!({ "jurisdiction": jurisdiction }))
    }

    /// Files the access request `body` with `token`; answers its id.
    pub async fn request_access(&self, token: &str, body: &Value) -> String {
        let request = self
            .post("/v1/access/requests")
            .bearer(token)
            .json(body)
            .expect(StatusCode::CREATED)
            .await;
        request["id"].as_str().unwrap().to_string()
    }

    /// `who` approves (`verb` "approve") or otherwise decides on (`verb` "deny", "revoke")
    /// access request `id`.
    pub async fn decide(&self, who: &Who, id: &str, verb: &str) -> Reply {
        self.post(&format!("/v1/access/requests/{id}/{verb}"))
            .token(who)
            .send()
            .await
    }

    /// Files the access request `body` as `requester` and has both custodian approvers
    /// approve it; answers its id.
    pub async fn approved_request(&self, requester: &Who, body: &Value) -> String {
        let id = self.request_access(&self.token(requester), body).await;
        for who in [APPROVER_1, APPROVER_2] {
            let Reply { status, body, .. } = self.decide(&who, &id, "approve").await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        id
    }

    /// Opens the break-glass grant `grant` with `token`; answers the grant.
    pub async fn break_glass(&self, token: &str, grant: &Value) -> Value {
        self.post("/v1/access/break-glass")
            .bearer(token)
            .json(grant)
            .expect(StatusCode::CREATED)
            .await
    }

    /// Writes `subject`'s `activity` record under a break-glass write grant (its protected
    /// fields need one).
    pub async fn write_activity_under_break_glass(&self, subject: &str, record: &Value) {
        self.break_glass(
            &self.token(&BREAK_GLASS),
            &json!({"action": "write", "collections": ["activity"],
                "purpose": "seed", "reason_code": "service-maintenance"}),
        )
        .await;
        self.put(&format!("/v1/subjects/{subject}/records/activity/main"))
            .token(&BREAK_GLASS)
            .purpose("seed")
            .json(record)
            .expect(StatusCode::OK)
            .await;
    }

    /// The log entry at `index`, parsed.
    pub fn entry(&self, index: u64) -> Value {
        let bytes = self.state.log.entry(index).unwrap().expect("entry exists");
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The last log entry, parsed.
    pub fn last_entry(&self) -> Value {
        self.entry(self.state.log.size() - 1)
    }

    /// The log's entries from index `from` on, with their indexes.
    pub fn entries_from(&self, from: u64) -> Vec<(u64, Value)> {
        (from..self.state.log.size())
            .map(|i| (i, self.entry(i)))
            .collect()
    }

    /// Waits (up to two seconds) for a checkpoint covering `size` entries; answers whether
    /// one came.
    pub async fn wait_for_checkpoint(&self, size: u64) -> bool {
        for _ in 0..100 {
            if self.state.log.checkpoint().size >= size {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        false
    }

    /// The log's public key as served at `/log/key`.
    pub async fn log_key(&self) -> String {
        self.client
            .get(format!("{}/log/key", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// A blocking fetcher of the tiles the server serves under `/log/` (fetch off the
    /// runtime's threads, e.g. in `spawn_blocking`).
    pub fn tiles(&self) -> crate::served::ServedLog {
        crate::served::ServedLog::new(&self.base)
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

/// A request being built; `send` (or `expect`, `raw`, `bytes`) sends it.
pub struct Call<'a> {
    server: &'a Server,
    method: Method,
    path: String,
    token: Option<String>,
    purpose: Option<String>,
    body: Option<String>,
    headers: Vec<(String, String)>,
}

/// An answer whose body is JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The answer must be a refusal with `status` and the JSON error code `code`; answers its
    /// body.
    pub fn refused(self, status: StatusCode, code: &str) -> Value {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.body["error"], code, "{}", self.body);
        self.body
    }
}

/// Awaiting a request sends it: `server.get(path).token(&who).await` is `send().await`.
impl<'a> std::future::IntoFuture for Call<'a> {
    type Output = Reply;
    type IntoFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Reply> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

impl From<Reply> for (StatusCode, Value) {
    fn from(reply: Reply) -> Self {
        (reply.status, reply.body)
    }
}

impl Call<'_> {
    /// As `who`, with a fresh development token.
    pub fn token(self, who: &Who) -> Self {
        let token = self.server.token(who);
        self.bearer(&token)
    }

    /// With `token` as the bearer token.
    pub fn bearer(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    /// With `token` as the bearer token if there is one (else anonymous).
    pub fn bearer_opt(self, token: Option<&str>) -> Self {
        match token {
            Some(token) => self.bearer(token),
            None => self,
        }
    }

    /// With `purpose` in the `Sovereign-Purpose` header.
    pub fn purpose(mut self, purpose: &str) -> Self {
        self.purpose = Some(purpose.to_string());
        self
    }

    /// With `purpose` in the `Sovereign-Purpose` header if there is one.
    pub fn purpose_opt(self, purpose: Option<&str>) -> Self {
        match purpose {
            Some(purpose) => self.purpose(purpose),
            None => self,
        }
    }

    /// With the JSON text `body` (sent as `application/json`).
    pub fn body(mut self, body: &str) -> Self {
        self.body = Some(body.to_string());
        self
    }

    /// With the JSON text `body` if there is one.
    pub fn body_opt(self, body: Option<&str>) -> Self {
        match body {
            Some(body) => self.body(body),
            None => self,
        }
    }

    /// With `value` as the JSON body.
    pub fn json(self, value: &Value) -> Self {
        self.body(&value.to_string())
    }

    /// With a header of its own.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sends it and answers the response as it came.
    pub async fn raw(self) -> reqwest::Response {
        let server = self.server;
        let mut request = server
            .client
            .request(self.method, format!("{}{}", server.base, self.path));
        if let Some(token) = self.token {
            request = request.bearer_auth(token);
        }
        if let Some(purpose) = self.purpose {
            request = request.header("Sovereign-Purpose", purpose);
        }
        for (name, value) in self.headers {
            request = request.header(name, value);
        }
        if let Some(body) = self.body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        request.send().await.unwrap()
    }

    /// Sends it; the answer must be JSON.
    pub async fn send(self) -> Reply {
        let path = self.path.clone();
        let response = self.raw().await;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{path} answered non-JSON: {text}"));
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Sends it; the answer must have `status` (else the test fails naming the request and
    /// the answer). Answers the JSON body.
    pub async fn expect(self, status: StatusCode) -> Value {
        let what = format!("{} {}", self.method, self.path);
        let reply = self.send().await;
        assert_eq!(reply.status, status, "{what}: {}", reply.body);
        reply.body
    }

    /// Sends it; for answers that are not (necessarily) JSON: the status, the bytes and the
    /// headers.
    pub async fn bytes(self) -> (StatusCode, Vec<u8>, HeaderMap) {
        let response = self.raw().await;
        let status = response.status();
        let headers = response.headers().clone();
        (status, response.bytes().await.unwrap().to_vec(), headers)
    }
}

/// The claims of `who`'s development token, valid for `ttl` seconds from now.
pub fn claims(who: &Who, ttl: i64) -> Claims {
    let now = now_unix();
    Claims {
        sub: who.sub.into(),
        iss: gateway::setup::DEV_ISSUER.into(),
        exp: now + ttl,
        nbf: Some(now),
        iat: Some(now),
        entity: who.entity.into(),
        location: who.location.into(),
        clearance: who.clearance.iter().map(|s| s.to_string()).collect(),
        roles: who.roles.iter().map(|s| s.to_string()).collect(),
    }
}

/// The time now, as tokens and custody statements carry it (Unix seconds).
pub fn now() -> i64 {
    now_unix()
}

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
