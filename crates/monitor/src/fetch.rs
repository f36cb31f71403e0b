//! Fetching a log and the files next to it: over HTTP(S), from a directory or a file:// URL.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use tlog::checkpoint::Checkpoint;
use tlog::note::{NoteError, Verifier};
use tlog::{
    DirFetcher, FULL_TILE_WIDTH, FetchError, TILE_HEIGHT, Tile, TileFetcher, decode_bundle,
};

use crate::failure::{Failed, Failure};
use crate::plain;

/// Timeout of each HTTP request (connect, and the whole exchange).
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest file a log serves: a full entry bundle of 256 maximal entries.
const MAX_FETCH: u64 = 256 * (2 + 65_535);

/// Opens the log named by `url`: http(s) prefix, file:// URL or directory.
pub fn open_log(url: &str) -> anyhow::Result<Box<dyn TileFetcher>> {
    match local_dir(url).map_err(|e| crate::failure::usage(format!("{e:#}")))? {
        None => Ok(Box::new(HttpFetcher::new(url))),
        Some(dir) if dir.is_dir() => Ok(Box::new(DirFetcher::new(dir))),
        Some(dir) => Err(crate::failure::usage(format!(
            "{} is not a directory holding a log (checkpoint and tile/)",
            dir.display()
        ))),
    }
}

/// Where the gateway serves its log, below its base URL.
pub const LOG_PATH: &str = "/log";

/// The log prefix `url` names: a gateway's base URL (its log is at [`LOG_PATH`]) or a log
/// prefix itself (a gateway's `/log`, a static mirror's folder, a directory). An http(s) URL
/// that does not end in `/log` is asked for its `checkpoint`; if it serves none but
/// `URL/log` does, `URL/log` is the log. One extra request, and no guessing: a URL that
/// serves neither is an error naming both, before any check starts.
pub fn resolve_log_url(url: &str) -> anyhow::Result<String> {
    let base = url.trim_end_matches('/');
    if local_dir(url)
        .map_err(|e| crate::failure::usage(format!("{e:#}")))?
        .is_some()
        || base.ends_with(LOG_PATH)
    {
        return Ok(url.to_string());
    }
    let client = HttpClient {
        agent: ureq::AgentBuilder::new()
            .timeout_connect(HTTP_TIMEOUT)
            .timeout(HTTP_TIMEOUT)
            .build(),
        base: base.to_string(),
    };
    if client.get("checkpoint")?.is_some() {
        return Ok(base.to_string());
    }
    let below = format!("{base}{LOG_PATH}");
    let client = HttpClient {
        base: below.clone(),
        ..client
    };
    if client.get("checkpoint")?.is_some() {
        return Ok(below);
    }
    Err(crate::failure::usage(format!(
        "{base} is neither a log nor a gateway serving one: neither {base}/checkpoint nor {below}/checkpoint exists (give the gateway's base URL, a log prefix, a directory or a file:// URL)"
    )))
}

/// The header of a gateway's `/log/checkpoint` telling how many entries its log holds now.
pub const LOG_SIZE_HEADER: &str = "Sovereign-Log-Size";

/// How far the checkpoint a gateway serves is behind its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lag {
    /// The size of the checkpoint served now (unverified: the caller verifies what it uses).
    pub checkpoint_size: u64,
    /// The entries the gateway holds now.
    pub log_size: u64,
}

impl Lag {
    /// Entries the gateway holds that the served checkpoint does not cover yet.
    pub fn pending(&self) -> u64 {
        self.log_size.saturating_sub(self.checkpoint_size)
    }
}

/// What the gateway serving the log at `url` (a resolved log prefix) says about its log's
/// size; `None` for a directory, a static mirror or a server that does not say.
pub fn lag(url: &str) -> anyhow::Result<Option<Lag>> {
    if local_dir(url)?.is_some() {
        return Ok(None);
    }
    let target = format!("{}/checkpoint", url.trim_end_matches('/'));
    let response = match ureq::AgentBuilder::new()
        .timeout(HTTP_TIMEOUT)
        .build()
        .get(&target)
        .call()
    {
        Ok(r) => r,
        // Unavailable now (a witnessed log before its first quorum): not yet, not never.
        Err(ureq::Error::Status(code, _)) if code >= 500 => {
            return Err(crate::failure::unreachable(format!(
                "GET {target}: HTTP {code}"
            )));
        }
        Err(ureq::Error::Status(..)) => return Ok(None),
        Err(ureq::Error::Transport(t)) => return Err(crate::failure::unreachable(t)),
    };
    let Some(log_size) = response
        .header(LOG_SIZE_HEADER)
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return Ok(None);
    };
    let mut note = Vec::new();
    response
        .into_reader()
        .take(64 << 10)
        .read_to_end(&mut note)
        .map_err(|e| crate::failure::unreachable(format!("GET {target}: {e}")))?;
    let checkpoint_size = unverified_checkpoint(&note)?.size;
    Ok(Some(Lag {
        checkpoint_size,
        log_size,
    }))
}

/// Waits until the checkpoint served at `url` covers every entry the gateway held when the
/// wait began, polling every quarter second for at most `timeout`. Returns the lag seen
/// first; `None` if the source does not say its log's size (nothing to wait for).
pub fn wait_for_checkpoint(url: &str, timeout: Duration) -> anyhow::Result<Option<Lag>> {
    let started = std::time::Instant::now();
    // A log that cannot serve a checkpoint yet is waited for too, within the same limit.
    let first = loop {
        match lag(url) {
            Ok(Some(first)) => break first,
            Ok(None) => return Ok(None),
            Err(e) if started.elapsed() >= timeout => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    };
    let mut now = first;
    while now.checkpoint_size < first.log_size {
        if started.elapsed() >= timeout {
            return Err(crate::failure::unreachable(format!(
                "after {}, the checkpoint served covers {} entries, not yet the {} the log held when the wait began (are the witnesses down?)",
                humantime::format_duration(timeout),
                now.checkpoint_size,
                first.log_size
            )));
        }
        std::thread::sleep(Duration::from_millis(250));
        now = lag(url)?.unwrap_or(now);
    }
    Ok(Some(first))
}

/// The directory a file:// URL or a plain path names; `None` for an http(s) URL.
pub fn local_dir(url: &str) -> anyhow::Result<Option<PathBuf>> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Ok(None);
    }
    let dir = if lower.starts_with("file://") {
        let rest = &url["file://".len()..];
        let rest = rest.strip_prefix("localhost").unwrap_or(rest);
        if !rest.starts_with('/') {
            bail!("{url:?}: a file:// URL must name an absolute path (file:///path/to/log)");
        }
        PathBuf::from(percent_decode(rest).with_context(|| format!("{url:?}"))?)
    } else if url.contains("://") {
        bail!("{url:?}: unsupported URL scheme (use http://, https://, file:// or a directory)");
    } else {
        PathBuf::from(url)
    };
    Ok(Some(dir))
}

/// Decodes `%XX` escapes of a file:// URL path.
fn percent_decode(s: &str) -> anyhow::Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| anyhow!("bad %-escape in the path"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| anyhow!("the path is not UTF-8"))
}

/// Requests a log's server answers at once while a whole log is read: enough to keep a
/// server's cores and the network busy, few enough not to flood it.
const READ_AHEAD_REQUESTS: usize = 8;
/// Files fetched ahead of the reader at most, whatever the log's size: they bound the memory
/// held (each file at most [`MAX_FETCH`]; a full bundle of 1 KB entries is 256 KB).
const READ_AHEAD_FILES: usize = 16;

/// Fetches a log's files over HTTP(S) with keep-alive connections.
///
/// A whole-log check ([`tlog::verify_log`]) reads every level-0 tile and entry bundle in
/// order, one request at a time, so each request's round trip and the server's work add up.
/// Once the caller has read the checkpoint and then level-0 tile 0 followed by its entry
/// bundle (what a whole-log check does first, and a single proof or entry never does), the
/// fetcher reads the following full tiles and bundles ahead, with
/// [`READ_AHEAD_REQUESTS`] requests at a time, and hands them over in the order asked.
/// Anything else (higher-level tiles, the partial tiles at the end) is fetched when asked.
pub struct HttpFetcher {
    client: Arc<HttpClient>,
    /// What the fetches so far tell about reading ahead.
    ahead: Mutex<Ahead>,
    /// The [`LOG_SIZE_HEADER`] of the last `checkpoint` served.
    log_size: Mutex<Option<u64>>,
}

/// One keep-alive HTTP client and the log's URL prefix.
struct HttpClient {
    agent: ureq::Agent,
    base: String,
}

type Fetched = Result<Option<Vec<u8>>, FetchError>;

impl HttpFetcher {
    pub fn new(base: &str) -> HttpFetcher {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(HTTP_TIMEOUT)
            .timeout(HTTP_TIMEOUT)
            // One connection kept per request reading ahead, and one for the caller's own.
            .max_idle_connections_per_host(READ_AHEAD_REQUESTS + 1)
            .user_agent(concat!("sovereign-audit/", env!("CARGO_PKG_VERSION")))
            .build();
        HttpFetcher {
            client: Arc::new(HttpClient {
                agent,
                base: base.trim_end_matches('/').to_string(),
            }),
            ahead: Mutex::new(Ahead::Idle {
                full_tiles: None,
                read_tile_0: false,
            }),
            log_size: Mutex::new(None),
        }
    }
}

impl HttpClient {
    fn get(&self, path: &str) -> Fetched {
        self.get_with_log_size(path).map(|(body, _)| body)
    }

    /// `path`, and the [`LOG_SIZE_HEADER`] it was served with.
    fn get_with_log_size(&self, path: &str) -> Result<(Option<Vec<u8>>, Option<u64>), FetchError> {
        let url = format!("{}/{path}", self.base);
        let response = match self.agent.get(&url).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(404, _)) => return Ok((None, None)),
            Err(ureq::Error::Status(code, r)) => {
                // Any status but 404 (the file is not in the log) says the file could not be
                // had: unavailable, refused (a mirror behind a login), throttled. What the
                // log serves is checked once it is fetched; a status is not a finding.
                return Err(FetchError::new(Failed::new(
                    Failure::Unreachable,
                    format!("GET {url}: HTTP {code} {}", r.status_text()),
                )));
            }
            // The transport error names the URL itself.
            Err(ureq::Error::Transport(t)) => {
                return Err(FetchError::new(Failed::new(Failure::Unreachable, t)));
            }
        };
        let log_size = response
            .header(LOG_SIZE_HEADER)
            .and_then(|v| v.parse::<u64>().ok());
        let hint = response
            .header("Content-Length")
            .and_then(|l| l.parse::<u64>().ok())
            .unwrap_or(0)
            .min(MAX_FETCH);
        let mut body = Vec::with_capacity(hint as usize);
        response
            .into_reader()
            .take(MAX_FETCH + 1)
            .read_to_end(&mut body)
            .map_err(|e| {
                FetchError::new(Failed::new(
                    Failure::Unreachable,
                    format!("GET {url}: reading the body: {e}"),
                ))
            })?;
        if body.len() as u64 > MAX_FETCH {
            return Err(FetchError::new(format!(
                "GET {url}: response larger than {MAX_FETCH} bytes"
            )));
        }
        Ok((Some(body), log_size))
    }
}

impl TileFetcher for HttpFetcher {
    fn log_size_hint(&self) -> Option<u64> {
        *self.log_size.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fetch(&self, path: &str) -> Result<Option<Vec<u8>>, FetchError> {
        if path == "checkpoint" {
            let (data, log_size) = self.client.get_with_log_size(path)?;
            *self.log_size.lock().unwrap_or_else(|p| p.into_inner()) = log_size;
            // A new checkpoint starts a new run: what was read ahead for another is dropped.
            // Unverified: the size only says which files to read ahead; the caller checks the
            // note.
            *self.ahead.lock().unwrap_or_else(|p| p.into_inner()) = Ahead::Idle {
                full_tiles: data
                    .as_deref()
                    .and_then(|note| unverified_checkpoint(note).ok())
                    .map(|c| c.size >> TILE_HEIGHT),
                read_tile_0: false,
            };
            return Ok(data);
        }
        let mut ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *ahead {
            Ahead::Reading(reading) if reading.expects(path) => return reading.take(),
            Ahead::Reading(_) => {}
            Ahead::Idle {
                full_tiles,
                read_tile_0,
            } => {
                let after_tile_0 = *read_tile_0;
                *read_tile_0 = path == Tile::new(0, 0, FULL_TILE_WIDTH).path();
                if after_tile_0
                    && path == Tile::new(0, 0, FULL_TILE_WIDTH).entries_path()
                    && let Some(full_tiles) = *full_tiles
                    && full_tiles > 1
                {
                    *ahead = Ahead::Reading(ReadingAhead::start(&self.client, full_tiles));
                }
            }
        }
        drop(ahead);
        self.client.get(path)
    }
}

/// Whether an [`HttpFetcher`] reads ahead.
enum Ahead {
    /// Not yet: what the fetches so far said.
    Idle {
        /// Full level-0 tiles in the last checkpoint served.
        full_tiles: Option<u64>,
        /// Whether the last fetch was level-0 tile 0.
        read_tile_0: bool,
    },
    Reading(ReadingAhead),
}

/// Full level-0 tiles and entry bundles 1.. read ahead: file `i` (from 0) is tile `1 + i / 2`,
/// its hashes for even `i`, its entry bundle for odd `i`, the order a whole-log check asks.
struct ReadingAhead {
    shared: Arc<AheadShared>,
    /// The file the caller is expected to ask for next.
    next: usize,
    /// Files to read: two per full tile after tile 0.
    end: usize,
}

struct AheadShared {
    state: Mutex<AheadState>,
    /// Signalled when a file is fetched, the caller takes one, or reading stops.
    changed: Condvar,
}

struct AheadState {
    /// The next file a worker takes.
    claimed: usize,
    /// The next file the caller takes: workers stay within [`READ_AHEAD_FILES`] of it.
    taken: usize,
    /// Files fetched and not taken yet.
    done: BTreeMap<usize, Fetched>,
    /// Set when the fetcher is dropped.
    stop: bool,
}

fn ahead_path(i: usize) -> String {
    let tile = Tile::new(0, 1 + (i / 2) as u64, FULL_TILE_WIDTH);
    if i.is_multiple_of(2) {
        tile.path()
    } else {
        tile.entries_path()
    }
}

impl ReadingAhead {
    fn start(client: &Arc<HttpClient>, full_tiles: u64) -> ReadingAhead {
        let end = usize::try_from((full_tiles - 1).saturating_mul(2)).unwrap_or(usize::MAX);
        let shared = Arc::new(AheadShared {
            state: Mutex::new(AheadState {
                claimed: 0,
                taken: 0,
                done: BTreeMap::new(),
                stop: false,
            }),
            changed: Condvar::new(),
        });
        for _ in 0..READ_AHEAD_REQUESTS {
            let client = client.clone();
            let shared = shared.clone();
            std::thread::spawn(move || read_ahead(&client, &shared, end));
        }
        ReadingAhead {
            shared,
            next: 0,
            end,
        }
    }

    fn expects(&self, path: &str) -> bool {
        self.next < self.end && path == ahead_path(self.next)
    }

    /// Waits for the next file and takes it.
    fn take(&mut self) -> Fetched {
        let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        let fetched = loop {
            if let Some(fetched) = state.done.remove(&self.next) {
                break fetched;
            }
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        };
        self.next += 1;
        state.taken = self.next;
        drop(state);
        self.shared.changed.notify_all();
        fetched
    }
}

impl Drop for ReadingAhead {
    /// Stops the workers; one in the middle of a request ends with it (not waited for).
    fn drop(&mut self) {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stop = true;
        self.shared.changed.notify_all();
    }
}

/// A worker reading ahead: takes the next file to fetch while within [`READ_AHEAD_FILES`] of
/// the caller, until every file is taken or the fetcher is dropped.
fn read_ahead(client: &HttpClient, shared: &AheadShared, end: usize) {
    loop {
        let i = {
            let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if state.stop || state.claimed >= end {
                    return;
                }
                if state.claimed < state.taken + READ_AHEAD_FILES {
                    break;
                }
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            }
            state.claimed += 1;
            state.claimed - 1
        };
        let fetched = client.get(&ahead_path(i));
        shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .done
            .insert(i, fetched);
        shared.changed.notify_all();
    }
}

/// Passes fetches through, keeping the bytes of the `checkpoint` it served, so the
/// signed note that was verified is the one saved as state.
pub(crate) struct Recording<'a> {
    pub(crate) inner: &'a dyn TileFetcher,
    pub(crate) checkpoint: RefCell<Option<Vec<u8>>>,
}

impl TileFetcher for Recording<'_> {
    fn fetch(&self, path: &str) -> Result<Option<Vec<u8>>, FetchError> {
        let data = self.inner.fetch(path)?;
        if path == "checkpoint" {
            *self.checkpoint.borrow_mut() = data.clone();
        }
        Ok(data)
    }

    fn log_size_hint(&self) -> Option<u64> {
        self.inner.log_size_hint()
    }
}

/// The checkpoint of a signed note, without checking any signature.
pub fn unverified_checkpoint(note: &[u8]) -> anyhow::Result<Checkpoint> {
    let text = match tlog::note::open(note, std::iter::empty::<&Verifier>()) {
        Err(NoteError::Unverified(n)) => n.text,
        Ok(n) => n.text,
        Err(e) => bail!("checkpoint: {e}"),
    };
    Checkpoint::parse(&text).map_err(plain)
}

/// Fetches entry `index` of a tree of `size` entries from its entry bundle (or
/// from the full bundle of the same number, if the partial one is gone).
pub fn fetch_entry(log: &dyn TileFetcher, size: u64, index: u64) -> anyhow::Result<Vec<u8>> {
    let full = u64::from(FULL_TILE_WIDTH);
    let n = index >> TILE_HEIGHT;
    let width = (size - n * full).min(full) as u16;
    let tile = Tile::new(0, n, width);
    let mut tries = vec![(tile.entries_path(), usize::from(width))];
    if !tile.is_full() {
        tries.push((tile.full().entries_path(), usize::from(FULL_TILE_WIDTH)));
    }
    for (path, width) in &tries {
        let Some(data) = log
            .fetch(path)
            .with_context(|| format!("fetching {path}"))?
        else {
            continue;
        };
        let entries = decode_bundle(&data, *width).with_context(|| path.clone())?;
        return Ok(entries[(index - n * full) as usize].to_vec());
    }
    match tries.as_slice() {
        [(path, _)] => bail!("{path} is not served by the log"),
        [(path, _), (full, _), ..] => bail!("{path} (nor {full}) is not served by the log"),
        [] => unreachable!("at least one bundle path"),
    }
}

/// Serves a fixed checkpoint note and passes every other fetch through: the note kept in a
/// report must be the one verified, whatever the log publishes meanwhile.
pub struct Pinned<'a> {
    pub log: &'a dyn TileFetcher,
    pub checkpoint: Vec<u8>,
}

impl TileFetcher for Pinned<'_> {
    fn fetch(&self, path: &str) -> Result<Option<Vec<u8>>, FetchError> {
        if path == "checkpoint" {
            return Ok(Some(self.checkpoint.clone()));
        }
        self.log.fetch(path)
    }
}
