//! A small blocking HTTP client for the gateway's custody API, shared by the `access`,
//! `policy`, `algo` and `kill-switch` commands.
//!
//! Every call goes to one base URL with an optional bearer token. Answers are JSON, except
//! artifacts (bytes). A non-2xx answer becomes an [`ApiError`] that prints as
//! `CODE: message`, taken from the gateway's JSON error body, so `main` reports it as
//! `error: CODE: message`.

use std::fmt;
use std::io::Read as _;
use std::time::Duration;

use anyhow::anyhow;
use serde_json::Value;

/// Environment variable and default of `--url`.
pub const URL_ENV: &str = "SOVEREIGN_URL";
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
/// Environment variable of `--token`.
pub const TOKEN_ENV: &str = "SOVEREIGN_TOKEN";

/// Timeout of connecting, and of a whole exchange.
const TIMEOUT: Duration = Duration::from_secs(60);
/// The largest JSON answer read (policy sets and request lists are far smaller).
const MAX_JSON: u64 = 16 << 20;
/// The largest artifact `algo fetch` downloads.
const MAX_BYTES: u64 = 1 << 30;
/// How much of a non-JSON error body is quoted in a message.
const MAX_QUOTED: usize = 200;

/// The gateway's answer to a failed call: the `error` and `message` members of its
/// JSON error body.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// A body to send.
pub enum Body<'a> {
    Empty,
    Json(&'a Value),
    /// `text/plain; charset=utf-8`, e.g. a signed note.
    Text(&'a str),
    /// `application/octet-stream`, e.g. an algorithm artifact.
    Bytes(&'a [u8]),
    /// `application/json` sent byte for byte as given (a file whose digest is signed).
    JsonText(&'a str),
}

/// A successful answer whose body is bytes, with the headers the commands need.
pub struct BytesAnswer {
    pub body: Vec<u8>,
    /// The `Sovereign-Sha256` header, if any.
    pub sha256: Option<String>,
}

/// The gateway at `base`, called with `token` when there is one.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(base: &str, token: Option<&str>) -> anyhow::Result<Client> {
        let lower = base.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(monitor::failure::usage(format!(
                "--url {base:?} is not an http:// or https:// URL (like {DEFAULT_URL}; also settable with {URL_ENV})"
            )));
        }
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(TIMEOUT)
            .timeout(TIMEOUT)
            .user_agent(concat!("sovereign-cli/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Client {
            agent,
            base: base.trim_end_matches('/').to_string(),
            token: token
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string),
        })
    }

    /// `GET path` answered with JSON.
    pub fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        self.json("GET", path, Body::Empty)
    }

    /// `POST path` with `body`, answered with JSON.
    pub fn post(&self, path: &str, body: Body<'_>) -> anyhow::Result<Value> {
        self.json("POST", path, body)
    }

    /// `PUT path` with `body`, answered with JSON.
    pub fn put(&self, path: &str, body: Body<'_>) -> anyhow::Result<Value> {
        self.json("PUT", path, body)
    }

    /// `GET path` answered with bytes.
    pub fn get_bytes(&self, path: &str) -> anyhow::Result<BytesAnswer> {
        let url = self.url(path);
        let response = self.send("GET", &url, Body::Empty)?;
        let sha256 = response.header("Sovereign-Sha256").map(str::to_string);
        let body = read_limited(response, MAX_BYTES, &url)?;
        Ok(BytesAnswer { body, sha256 })
    }

    fn json(&self, method: &str, path: &str, body: Body<'_>) -> anyhow::Result<Value> {
        let url = self.url(path);
        let response = self.send(method, &url, body)?;
        let bytes = read_limited(response, MAX_JSON, &url)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            anyhow!("{method} {url}: the answer is not JSON ({e}); is --url the gateway's address?")
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends the request; any answer but 2xx is an error.
    fn send(&self, method: &str, url: &str, body: Body<'_>) -> anyhow::Result<ureq::Response> {
        let mut request = self.agent.request(method, url);
        if let Some(token) = &self.token {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        let result = match body {
            Body::Empty => request.call(),
            Body::Json(value) => request
                .set("Content-Type", "application/json")
                .send_string(&value.to_string()),
            Body::Text(text) => request
                .set("Content-Type", "text/plain; charset=utf-8")
                .send_string(text),
            Body::Bytes(bytes) => request
                .set("Content-Type", "application/octet-stream")
                .send_bytes(bytes),
            Body::JsonText(text) => request
                .set("Content-Type", "application/json")
                .send_string(text),
        };
        match result {
            Ok(response) => Ok(response),
            Err(ureq::Error::Status(status, response)) => {
                Err(self.api_error(status, response).into())
            }
            Err(ureq::Error::Transport(t)) => Err(monitor::failure::unreachable(format!(
                "cannot reach the gateway at {}: {t} (is it running? set --url or {URL_ENV})",
                self.base
            ))),
        }
    }

    /// The error of a non-2xx answer, from its JSON error body if it has one.
    fn api_error(&self, status: u16, response: ureq::Response) -> ApiError {
        let status_text = response.status_text().to_string();
        let body = read_limited(response, MAX_JSON, "").unwrap_or_default();
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        let member = |name: &str| {
            parsed
                .as_ref()
                .and_then(|v| v.get(name))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let code = member("error").unwrap_or_else(|| format!("http_{status}"));
        let mut message = member("message").unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&body);
            let text = text.trim();
            if text.is_empty() {
                format!("HTTP {status} {status_text}")
            } else {
                format!(
                    "HTTP {status} {status_text}: {}",
                    text.chars().take(MAX_QUOTED).collect::<String>()
                )
            }
        });
        if status == 401 && self.token.is_none() {
            message.push_str(&format!(
                " (this command needs a token: set --token or {TOKEN_ENV})"
            ));
        }
        ApiError {
            status,
            code,
            message,
        }
    }
}

/// Reads a body of at most `max` bytes.
fn read_limited(response: ureq::Response, max: u64, url: &str) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    response
        .into_reader()
        .take(max + 1)
        .read_to_end(&mut body)
        .map_err(|e| anyhow!("{url}: reading the answer: {e}"))?;
    if body.len() as u64 > max {
        anyhow::bail!("{url}: the answer is larger than {max} bytes");
    }
    Ok(body)
}

/// Shortest prefix accepted for a hash or id, as git accepts short hashes.
const MIN_PREFIX: usize = 4;

impl Client {
    /// The full hash or id that `given` names among the `member` array of `GET list_path`
    /// (each item's `key`): `given` itself when `is_full` says it is whole, else the one item
    /// it is a prefix of (at least 4 characters; an id's `ar-`/`bg-` may be left out). None
    /// or several is a usage error naming them.
    pub fn resolve(
        &self,
        given: &str,
        is_full: impl Fn(&str) -> bool,
        list_path: &str,
        member: &str,
        key: &str,
    ) -> anyhow::Result<String> {
        let given = given.trim();
        if is_full(given) {
            return Ok(given.to_string());
        }
        if given.len() < MIN_PREFIX {
            return Err(monitor::failure::usage(format!(
                "{given:?} is too short to name one: give at least {MIN_PREFIX} characters"
            )));
        }
        let list = self.get_json(list_path)?;
        let lower = given.to_ascii_lowercase();
        let matches: Vec<String> = list[member]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item[key].as_str())
            .filter(|full| {
                let bare = full.split_once('-').map_or(*full, |(_, rest)| rest);
                full.starts_with(&lower) || bare.starts_with(&lower)
            })
            .map(str::to_string)
            .collect();
        match matches.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(monitor::failure::usage(format!(
                "nothing listed at {list_path} starts with {given:?}"
            ))),
            several => Err(monitor::failure::usage(format!(
                "{given:?} is ambiguous: it starts {}",
                several.join(", ")
            ))),
        }
    }

    /// The whole hash of the set `given` names at `route` (`/v1/policies`,
    /// `/v1/invariants`): 64 hex digits, or a unique prefix of at least 4 of a set the gateway
    /// lists.
    pub fn resolve_hash(&self, given: &str, route: &str) -> anyhow::Result<String> {
        let given = given.trim().to_ascii_lowercase();
        if !given.bytes().all(|b| b.is_ascii_hexdigit()) || given.len() > 64 {
            return Err(monitor::failure::usage(format!(
                "{given:?} is not a set hash (64 hex digits, or a unique prefix; `sovereign policy list` shows policy sets, GET /v1/invariants the invariant sets)"
            )));
        }
        self.resolve(&given, is_full_hash, route, "sets", "hash")
    }
}

/// Whether `s` is a whole set hash: 64 lower-case hex digits.
pub fn is_full_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `s` is a whole request or break-glass id: `ar-` or `bg-` and 16 hex digits.
pub fn is_full_id(s: &str) -> bool {
    s.split_once('-').is_some_and(|(kind, hex)| {
        matches!(kind, "ar" | "bg") && hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// Escapes one path segment (a name, a version, an id) for a URL.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How the commands that talk to a gateway reach it, and how they print its answers.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// The gateway's base URL.
    #[arg(long, global = true, env = URL_ENV, default_value = DEFAULT_URL)]
    pub url: String,
    /// A bearer token (JWT) naming who you are, e.g. from `sovereign token`.
    #[arg(long, global = true, env = TOKEN_ENV, hide_env_values = true)]
    pub token: Option<String>,
    /// Print the gateway's JSON answer instead of a summary.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ServerArgs {
    pub fn client(&self) -> anyhow::Result<Client> {
        Client::new(&self.url, self.token.as_deref())
    }

    /// Prints `answer` as JSON with `--json`, otherwise as `summary` renders it.
    pub fn print(&self, answer: &Value, summary: impl FnOnce(&Value) -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(answer).unwrap_or_else(|_| answer.to_string())
            );
        } else {
            print!("{}", summary(answer));
        }
    }
}

/// Member `name` of `v` as a string, `""` if it is missing or not a string. Used only to
/// render the gateway's answers, never to decide anything.
pub fn text<'a>(v: &'a Value, name: &str) -> &'a str {
    v.get(name).and_then(Value::as_str).unwrap_or("")
}

/// Member `name` of `v`, an array of strings, joined with ", "; `empty` if there are none.
pub fn joined(v: &Value, name: &str, empty: &str) -> String {
    let items: Vec<&str> = v
        .get(name)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if items.is_empty() {
        empty.to_string()
    } else {
        items.join(", ")
    }
}
