//! A minimal, synchronous Chrome DevTools Protocol client for the browser tests: launches a
//! headless Chromium, opens a page, sends commands and waits for their replies, and keeps
//! the events that arrive meanwhile.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// How long any one command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The browser to use: `$CHROMIUM`, else the first of the usual names on the `PATH`.
pub fn find_browser() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let dirs = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&dirs).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// A running headless browser, killed when dropped (so a failing test leaves none behind).
pub struct Browser {
    child: Child,
    ws_url: String,
    // Dropped after the browser is killed, so Chromium never writes into a removed folder.
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Launches `path` headless with a fresh profile, a 1440x900 window and a debugging port.
    pub fn launch(path: &Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(path)
            .args([
                "--headless=new",
                "--no-sandbox", // The tests may run as root.
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-port=0",
                "--window-size=1440,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        // Chromium says where it listens on stderr. The thread keeps draining it after, so
        // that a chatty browser never blocks on a full pipe.
        let stderr = child.stderr.take().unwrap();
        let (found, listening) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.trim().strip_prefix("DevTools listening on ") {
                    let _ = found.send(url.to_string());
                }
            }
        });
        let mut browser = Browser {
            child,
            ws_url: String::new(),
            _profile: profile,
        };
        browser.ws_url = listening
            .recv_timeout(Duration::from_secs(30))
            .expect("Chromium did not print its DevTools address within 30 s");
        browser
    }

    /// Connects to the browser and opens a blank page with the Runtime, Log and Page domains
    /// enabled.
    pub fn open_page(&self) -> Page {
        let mut cdp = Cdp::connect(&self.ws_url);
        let target = cdp.call(None, "Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"]
            .as_str()
            .expect("a target id")
            .to_string();
        let attached = cdp.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        let session = attached["sessionId"]
            .as_str()
            .expect("a session")
            .to_string();
        let mut page = Page { cdp, session };
        for domain in ["Runtime", "Log", "Page"] {
            page.call(&format!("{domain}.enable"), json!({}));
        }
        // The window size includes no browser chrome in headless mode, but make the
        // viewport (and so the screenshot) exact.
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1440, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        );
        page
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One DevTools connection: commands by id, and the events seen so far.
pub struct Cdp {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    pub events: Vec<Value>,
}

impl Cdp {
    pub fn connect(ws_url: &str) -> Cdp {
        let host = ws_url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("unexpected DevTools address {ws_url}"));
        let stream = TcpStream::connect(host).unwrap();
        let (ws, _) = tungstenite::client(ws_url, stream)
            .unwrap_or_else(|e| panic!("DevTools handshake with {ws_url}: {e}"));
        Cdp {
            ws,
            next_id: 1,
            events: Vec::new(),
        }
    }

    /// Sends `method` (to the page of `session`, or to the browser) and waits for its result.
    /// Panics on a protocol error.
    pub fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut command = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            command["sessionId"] = session.into();
        }
        self.ws
            .send(Message::text(command.to_string()))
            .unwrap_or_else(|e| panic!("sending {method}: {e}"));
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let message = self
                .next_message(deadline)
                .unwrap_or_else(|| panic!("no reply to {method} within {COMMAND_TIMEOUT:?}"));
            if message["id"] == id {
                if let Some(error) = message.get("error") {
                    panic!("{method} failed: {error}");
                }
                return message["result"].clone();
            }
        }
    }

    /// Reads whatever arrives for `wait` (events are kept).
    pub fn pump(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        while self.next_message(deadline).is_some() {}
    }

    /// The next message before `deadline`, if any; events are also kept in `events`.
    fn next_message(&mut self, deadline: Instant) -> Option<Value> {
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let timeout = left.max(Duration::from_millis(1));
            self.ws.get_mut().set_read_timeout(Some(timeout)).unwrap();
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    let value: Value = serde_json::from_str(text.as_str()).unwrap();
                    if value.get("method").is_some() {
                        self.events.push(value.clone());
                    }
                    return Some(value);
                }
                Ok(_) => continue, // Pings and the like: tungstenite answers them.
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    return None;
                }
                Err(e) => panic!("DevTools connection failed: {e}"),
            }
        }
    }
}

/// A page (target) of the browser, through its flattened session.
pub struct Page {
    pub cdp: Cdp,
    pub session: String,
}

impl Page {
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.cdp.call(Some(&self.session), method, params)
    }

    pub fn navigate(&mut self, url: &str) {
        let result = self.call("Page.navigate", json!({"url": url}));
        if let Some(error) = result.get("errorText") {
            panic!("navigating to {url}: {error}");
        }
    }

    /// Evaluates `expression` in the page and returns its value (promises are awaited).
    /// Panics if it throws.
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("evaluating {expression}: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Presses and releases a key that types no text (Tab, arrows...).
    pub fn press(&mut self, key: &str, code: &str, key_code: u32) {
        for kind in ["keyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": kind, "key": key, "code": code,
                       "windowsVirtualKeyCode": key_code, "nativeVirtualKeyCode": key_code}),
            );
        }
    }

    /// A PNG of the viewport.
    pub fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine;
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let data = shot["data"].as_str().expect("screenshot data");
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap()
    }

    /// Uncaught exceptions, console errors and warnings, and browser log errors and warnings
    /// (CSP violations, failed loads) of this page so far, as readable lines.
    pub fn problems(&mut self) -> Vec<String> {
        self.cdp.pump(Duration::from_millis(200));
        let session = self.session.clone();
        self.cdp
            .events
            .iter()
            .filter(|e| e["sessionId"] == session.as_str())
            .filter_map(|e| {
                let p = &e["params"];
                match e["method"].as_str()? {
                    "Runtime.exceptionThrown" => {
                        let details = &p["exceptionDetails"];
                        let text = details["exception"]["description"]
                            .as_str()
                            .or(details["text"].as_str())
                            .unwrap_or("?");
                        Some(format!("exception: {text}"))
                    }
                    "Runtime.consoleAPICalled"
                        if matches!(p["type"].as_str(), Some("error" | "warning" | "assert")) =>
                    {
                        let args: Vec<String> = p["args"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|a| match a.get("value") {
                                Some(Value::String(s)) => s.clone(),
                                Some(v) => v.to_string(),
                                None => a["description"].as_str().unwrap_or("?").to_string(),
                            })
                            .collect();
                        Some(format!(
                            "console.{}: {}",
                            p["type"].as_str().unwrap_or("?"),
                            args.join(" ")
                        ))
                    }
                    "Log.entryAdded"
                        if matches!(p["entry"]["level"].as_str(), Some("error" | "warning")) =>
                    {
                        let entry = &p["entry"];
                        Some(format!(
                            "log {} ({}): {} {}",
                            entry["level"].as_str().unwrap_or("?"),
                            entry["source"].as_str().unwrap_or("?"),
                            entry["text"].as_str().unwrap_or("?"),
                            entry["url"].as_str().unwrap_or("")
                        ))
                    }
                    _ => None,
                }
            })
            .collect()
    }
}
