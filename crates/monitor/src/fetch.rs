//! Fetching a log and the files next to it: over HTTP(S), from a directory or a file:// URL.

use std::cell::RefCell;
use std::io::Read as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use tlog::checkpoint::Checkpoint;
use tlog::note::{NoteError, Verifier};
use tlog::{
    DirFetcher, FULL_TILE_WIDTH, FetchError, TILE_HEIGHT, Tile, TileFetcher, decode_bundle,
};

use crate::plain;

/// Timeout of each HTTP request (connect, and the whole exchange).
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest file a log serves: a full entry bundle of 256 maximal entries.
const MAX_FETCH: u64 = 256 * (2 + 65_535);

/// Opens the log named by `url`: http(s) prefix, file:// URL or directory.
pub fn open_log(url: &str) -> anyhow::Result<Box<dyn TileFetcher>> {
    match local_dir(url)? {
        None => Ok(Box::new(HttpFetcher::new(url))),
        Some(dir) if dir.is_dir() => Ok(Box::new(DirFetcher::new(dir))),
        Some(dir) => bail!(
            "{} is not a directory holding a log (checkpoint and tile/)",
            dir.display()
        ),
    }
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

/// Fetches a log's files over HTTP(S) with one keep-alive client.
pub struct HttpFetcher {
    agent: ureq::Agent,
    base: String,
}

impl HttpFetcher {
    pub fn new(base: &str) -> HttpFetcher {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(HTTP_TIMEOUT)
            .timeout(HTTP_TIMEOUT)
            .user_agent(concat!("sovereign-audit/", env!("CARGO_PKG_VERSION")))
            .build();
        HttpFetcher {
            agent,
            base: base.trim_end_matches('/').to_string(),
        }
    }
}

impl TileFetcher for HttpFetcher {
    fn fetch(&self, path: &str) -> Result<Option<Vec<u8>>, FetchError> {
        let url = format!("{}/{path}", self.base);
        let response = match self.agent.get(&url).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(404, _)) => return Ok(None),
            Err(ureq::Error::Status(code, r)) => {
                return Err(FetchError::new(format!(
                    "GET {url}: HTTP {code} {}",
                    r.status_text()
                )));
            }
            // The transport error names the URL itself.
            Err(ureq::Error::Transport(t)) => return Err(FetchError::new(t.to_string())),
        };
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
            .map_err(|e| FetchError::new(format!("GET {url}: reading the body: {e}")))?;
        if body.len() as u64 > MAX_FETCH {
            return Err(FetchError::new(format!(
                "GET {url}: response larger than {MAX_FETCH} bytes"
            )));
        }
        Ok(Some(body))
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
