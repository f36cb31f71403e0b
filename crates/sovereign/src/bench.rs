//! `sovereign bench`: what a platform team would compare, in one run on one machine.
//!
//! Starts a gateway on a fresh default setup in a temporary folder (the `us-east` site and
//! the log on the stores given, or embedded), writes `--records` records for `US` subjects
//! through the API, then runs each phase for `--seconds`, with the same load generator
//! against the same process:
//!
//! - **floor**: `GET /healthz` of the gateway: what its HTTP stack costs with no work behind;
//! - **ungoverned read**: a tiny HTTP server started here reads the same records straight
//!   from the same site store object and answers them as JSON: no token, no decision, no
//!   log. This is what a platform would run without Sovereign;
//! - **governed read**: the API as vetted US staff with one fixed purpose: token check,
//!   Cedar decision (cached after the first), the vault's read and decryption, and the durable
//!   log append the answer waits for;
//! - **governed read, new purpose**: the same with a new purpose on every request, so no
//!   decision is ever answered from the cache;
//! - **governed write**: `PUT` of a profile of the shape the setup wrote;
//! - **in-process store read (no HTTP)**: threads calling the store object directly, for
//!   what the store alone costs.
//!
//! The load generator is the bench's own: `--clients` keep-alive HTTP/1.1 connections on a
//! two-thread async runtime, each sending its next request as soon as the last is answered
//! (as `wrk -t2 -cN` does), timing every request into a fixed-size histogram. It runs on the
//! same machine as the gateway, so every HTTP figure also pays for the client's work.
//! A request answered with anything but 2xx is an error, and any error fails the run after
//! the figures are printed: a denied read is not a fast read.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use gateway::auth::{Claims, mint_dev_token, now_unix};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// `sovereign bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The `us-east` site's store, e.g. postgres://USER@HOST/DB [default: embedded SQLite].
    #[arg(long)]
    site_store: Option<String>,
    /// The log's store, e.g. postgres://USER@HOST/DB [default: embedded SQLite].
    #[arg(long)]
    log_store: Option<String>,
    /// Concurrent keep-alive connections (threads for the in-process store read) per phase.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    clients: u32,
    /// Seconds each phase runs.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Records written before the phases, one per subject.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    records: u32,
    /// The phases to run, comma-separated [default: all, in the order listed].
    #[arg(long, value_enum, value_delimiter = ',')]
    phases: Vec<Phase>,
    /// Print the figures as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One measurement. Its name on the command line is its key in the JSON.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
#[value(rename_all = "snake_case")]
enum Phase {
    Floor,
    UngovernedRead,
    GovernedRead,
    GovernedReadNewPurpose,
    GovernedWrite,
    StoreReadInProcess,
}

impl Phase {
    /// Every phase, in the order they run: reads before the writes that rewrite the records.
    const ALL: [Phase; 6] = [
        Phase::Floor,
        Phase::UngovernedRead,
        Phase::GovernedRead,
        Phase::GovernedReadNewPurpose,
        Phase::GovernedWrite,
        Phase::StoreReadInProcess,
    ];

    /// The phases whose ratios to the floor and to the ungoverned read are reported.
    const GOVERNED: [Phase; 3] = [
        Phase::GovernedRead,
        Phase::GovernedReadNewPurpose,
        Phase::GovernedWrite,
    ];

    fn key(self) -> &'static str {
        match self {
            Phase::Floor => "floor",
            Phase::UngovernedRead => "ungoverned_read",
            Phase::GovernedRead => "governed_read",
            Phase::GovernedReadNewPurpose => "governed_read_new_purpose",
            Phase::GovernedWrite => "governed_write",
            Phase::StoreReadInProcess => "store_read_in_process",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Phase::Floor => "floor: GET /healthz",
            Phase::UngovernedRead => "ungoverned HTTP read (same store)",
            Phase::GovernedRead => "governed read",
            Phase::GovernedReadNewPurpose => "governed read, new purpose each",
            Phase::GovernedWrite => "governed write",
            Phase::StoreReadInProcess => "in-process store read (no HTTP)",
        }
    }
}

const SITE: &str = "us-east";

/// The load generator's threads: as many as `wrk -t2` uses, so that the figures can be set
/// beside wrk's, and few enough to leave the gateway most of a small machine.
const CLIENT_THREADS: usize = 2;

/// How long after a phase's end its last requests may take before the run fails: a server
/// that stops answering must not hang the bench.
const GRACE: Duration = Duration::from_secs(30);

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let phases: Vec<Phase> = Phase::ALL
        .into_iter()
        .filter(|p| args.phases.is_empty() || args.phases.contains(p))
        .collect();
    let folder = tempfile::Builder::new()
        .prefix("sovereign-bench-")
        .tempdir()
        .context("cannot create a temporary folder")?;
    let data = folder.path();
    gateway::setup::init(data, false)?;
    configure_stores(data, args.site_store.as_deref(), args.log_store.as_deref())?;

    // Opened outside the async runtime, as `serve` does (PostgreSQL clients block).
    let gateway = gateway::Gateway::open(data)?;
    // The ungoverned read goes to the same store through a vault of its own: the gateway's
    // vault is reachable only through its decisions.
    let config = gateway::config::Config::load(data).map_err(|e| anyhow::anyhow!("{e}"))?;
    let bare = vault::Vault::open(config.layout(), data, config.server.store_readers)
        .context("cannot open the site stores")?;
    let store = bare
        .stores()
        .find(|(name, _)| *name == SITE)
        .map(|(_, store)| store.clone())
        .context("the default setup has no us-east site")?;
    // The servers' runtime is `serve`'s (one worker per core); the load generator has its own
    // so that its threads are as few as wrk's, whatever the machine.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (addr, stop_server, server) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(gateway.serve(listener, async {
            let _ = stopped.await;
        }));
        anyhow::Ok((addr, stop, server))
    })?;
    let router = ungoverned_router(store.clone());
    let (ungoverned_addr, ungoverned) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        anyhow::Ok((addr, server))
    })?;
    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(CLIENT_THREADS)
        // Named apart from the servers' threads, so that `top -H` shows what the client costs.
        .thread_name("bench-load")
        .enable_all()
        .build()
        .context("cannot start the load generator's runtime")?;

    let base = format!("http://{addr}");
    let token = vetted_token(data)?;
    eprintln!("writing {} records through the API…", args.records);
    let keys = write_records(&base, &token, args.records)?;
    let duration = Duration::from_secs(args.seconds);
    let mut results = Vec::new();
    for phase in phases {
        eprintln!(
            "{}: {} {} for {}s…",
            phase.label(),
            args.clients,
            if phase == Phase::StoreReadInProcess {
                "threads"
            } else {
                "connections"
            },
            args.seconds
        );
        let measured = match phase {
            Phase::StoreReadInProcess => {
                read_store(store.clone(), keys.clone(), args.clients, duration)?
            }
            Phase::UngovernedRead => {
                let requests = Requests::new(phase, ungoverned_addr, &token, keys.clone());
                load.block_on(drive_phase(
                    ungoverned_addr,
                    requests,
                    args.clients,
                    duration,
                ))?
            }
            _ => {
                let requests = Requests::new(phase, addr, &token, keys.clone());
                load.block_on(drive_phase(addr, requests, args.clients, duration))?
            }
        };
        results.push((phase, measured));
    }
    drop(load);

    // The ungoverned server has nothing to finish: its connections closed with their phase.
    ungoverned.abort();
    let _ = stop_server.send(());
    runtime.block_on(server)??;
    report(&args, &results);
    let failed: Vec<String> = results
        .iter()
        .filter(|(_, m)| m.errors > 0)
        .map(|(phase, m)| {
            format!(
                "{}: {} errors ({} requests answered), the first: {}",
                phase.label(),
                m.errors,
                m.requests,
                m.first_error.as_deref().unwrap_or("(no detail)")
            )
        })
        .collect();
    if !failed.is_empty() {
        bail!(
            "the figures do not measure what they say, since requests failed:\n{}",
            failed.join("\n")
        );
    }
    Ok(())
}

/// Points the site and the log at the stores asked for, in the configuration `init` wrote.
fn configure_stores(
    data: &std::path::Path,
    site: Option<&str>,
    log: Option<&str>,
) -> anyhow::Result<()> {
    let path = data.join(gateway::config::CONFIG_FILE);
    let mut text = std::fs::read_to_string(&path)?;
    for (line, store) in [
        (r#"store = "sqlite:sites/us-east/store.sqlite""#, site),
        (r#"store = "sqlite:log/log.sqlite""#, log),
    ] {
        let Some(store) = store else { continue };
        if !text.contains(line) {
            bail!("the default configuration no longer holds `{line}`");
        }
        let value = toml::Value::String(store.to_string()).to_string();
        text = text.replace(line, &format!("store = {value}"));
    }
    std::fs::write(&path, text)?;
    Ok(())
}

fn vetted_token(data: &std::path::Path) -> anyhow::Result<String> {
    let now = now_unix();
    mint_dev_token(
        data,
        &Claims {
            sub: "bench-reader".into(),
            iss: gateway::setup::DEV_ISSUER.into(),
            exp: now + 24 * 3600,
            nbf: Some(now),
            iat: Some(now),
            entity: "usds".into(),
            location: "US".into(),
            clearance: vec!["us-data".into()],
            roles: vec!["service".into()],
        },
    )
}

/// The profile the setup writes for subject `i`, and the write phase writes again.
fn profile(i: usize, out: &mut String) -> std::fmt::Result {
    write!(
        out,
        r#"{{"email":"user{i}@example.com","phone":"+1 555 01{:02}","display_name":"User {i}"}}"#,
        i % 100
    )
}

/// Registers one `US` subject per record and writes its profile; answers (subject, key) pairs.
fn write_records(
    base: &str,
    token: &str,
    records: u32,
) -> anyhow::Result<Arc<Vec<(String, String)>>> {
    let agent = ureq::agent();
    let bearer = format!("Bearer {token}");
    let mut keys = Vec::with_capacity(records as usize);
    let mut body = String::new();
    for i in 0..records as usize {
        let subject = format!("bench-{i}");
        agent
            .put(&format!("{base}/v1/subjects/{subject}"))
            .set("Authorization", &bearer)
            .send_string(r#"{"jurisdiction":"US"}"#)
            .with_context(|| format!("registering {subject}"))?;
        body.clear();
        profile(i, &mut body)?;
        agent
            .put(&format!(
                "{base}/v1/subjects/{subject}/records/profile/main"
            ))
            .set("Authorization", &bearer)
            .set("Sovereign-Purpose", "benchmark")
            .send_string(&body)
            .with_context(|| format!("writing {subject}'s profile"))?;
        keys.push((subject, "main".to_string()));
    }
    Ok(Arc::new(keys))
}

/// The ungoverned server: a record straight from the store, as JSON. Store calls block, so
/// they run off the async threads, as the gateway's do.
fn ungoverned_router(store: Arc<dyn vault::SiteStore>) -> axum::Router {
    use axum::extract::{Path, State};
    use axum::http::StatusCode;

    type Fields = serde_json::Map<String, serde_json::Value>;
    async fn read(
        State(store): State<Arc<dyn vault::SiteStore>>,
        Path((subject, collection, key)): Path<(String, String, String)>,
    ) -> Result<axum::Json<Fields>, StatusCode> {
        // Read as the gateway reads: in place from a local file, on a blocking thread across
        // the network.
        let found = if store.reads_locally() {
            Ok(store.get_record(&subject, &collection, &key))
        } else {
            tokio::task::spawn_blocking(move || store.get_record(&subject, &collection, &key)).await
        };
        match found {
            Ok(Ok(Some(fields))) => Ok(axum::Json(fields)),
            Ok(Ok(None)) => Err(StatusCode::NOT_FOUND),
            Ok(Err(_)) | Err(_) => Err(StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
    axum::Router::new()
        .route(
            "/records/{subject}/{collection}/{key}",
            axum::routing::get(read),
        )
        .with_state(store)
}

/// What one phase's connections (or threads) did.
struct Measured {
    /// Answered requests, errors included.
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    /// From the first request sent to the last answered.
    elapsed: Duration,
    latencies: Latencies,
}

impl Measured {
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// One connection's or thread's count, merged into the phase's at its end.
struct Tally {
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    latencies: Latencies,
}

impl Tally {
    fn new() -> Self {
        Tally {
            requests: 0,
            errors: 0,
            first_error: None,
            latencies: Latencies::new(),
        }
    }

    fn fail(&mut self, error: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error());
        }
    }

    fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies.merge(&other.latencies);
    }

    fn measured(self, elapsed: Duration) -> Measured {
        Measured {
            requests: self.requests,
            errors: self.errors,
            first_error: self.first_error,
            elapsed,
            latencies: self.latencies,
        }
    }
}

/// Latencies in a fixed number of buckets (log-linear, as HDR histograms are): each power of
/// two of nanoseconds is cut into `SUB` buckets, so a percentile is off by under 1/`SUB`
/// (0.8%) and memory is the same however many requests a phase makes.
struct Latencies {
    counts: Vec<u64>,
}

/// Buckets per power of two (7 bits).
const SUB: u64 = 128;
/// Latencies from 2^36 ns (about 69 s) up share the last bucket; the run fails long before.
const MAX_NANOS: u64 = (1 << 36) - 1;
/// Values under `SUB` have a bucket each; every power of two from 2^7 to 2^35 has `SUB`.
const BUCKETS: usize = (SUB as usize) * (36 - 6);

impl Latencies {
    fn new() -> Self {
        Latencies {
            counts: vec![0; BUCKETS],
        }
    }

    fn bucket(nanos: u64) -> usize {
        let nanos = nanos.min(MAX_NANOS);
        if nanos < SUB {
            return nanos as usize;
        }
        let exponent = 63 - u64::from(nanos.leading_zeros()); // 7 ..= 35
        let top = nanos >> (exponent - 7); // SUB ..= 2 * SUB - 1
        (SUB * (exponent - 6) + (top - SUB)) as usize
    }

    /// The middle of the bucket's range, in nanoseconds.
    fn middle(bucket: usize) -> u64 {
        let bucket = bucket as u64;
        if bucket < SUB {
            return bucket;
        }
        let exponent = bucket / SUB + 6;
        let width = 1u64 << (exponent - 7);
        (bucket % SUB + SUB) * width + width / 2
    }

    fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        if let Some(count) = self.counts.get_mut(Self::bucket(nanos)) {
            *count += 1;
        }
    }

    fn merge(&mut self, other: &Latencies) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
    }

    /// The latency `quantile` (0..=1) of the requests are at or under.
    fn quantile(&self, quantile: f64) -> Duration {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((quantile * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Duration::from_nanos(Self::middle(bucket));
            }
        }
        Duration::from_nanos(MAX_NANOS)
    }
}

/// The requests of one HTTP phase, written as bytes to send: built per request, since the
/// record (and for one phase the purpose) changes every time.
struct Requests {
    phase: Phase,
    host: String,
    token: String,
    keys: Arc<Vec<(String, String)>>,
}

impl Requests {
    fn new(phase: Phase, addr: SocketAddr, token: &str, keys: Arc<Vec<(String, String)>>) -> Self {
        Requests {
            phase,
            host: addr.to_string(),
            token: token.to_string(),
            keys,
        }
    }

    /// Writes request `n` of connection `connection` into `out` (`body` is scratch space).
    fn write(
        &self,
        connection: u32,
        n: u64,
        rng: &mut StdRng,
        out: &mut String,
        body: &mut String,
    ) -> std::fmt::Result {
        let host = &self.host;
        let token = &self.token;
        let i = rng.gen_range(0..self.keys.len());
        let (subject, key) = &self.keys[i];
        match self.phase {
            Phase::Floor => write!(out, "GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            Phase::UngovernedRead => write!(
                out,
                "GET /records/{subject}/profile/{key} HTTP/1.1\r\nHost: {host}\r\n\r\n"
            ),
            Phase::GovernedRead => write!(
                out,
                "GET /v1/subjects/{subject}/records/profile/{key} HTTP/1.1\r\nHost: {host}\r\n\
                 Authorization: Bearer {token}\r\nSovereign-Purpose: benchmark\r\n\r\n"
            ),
            // Unique across connections and requests, so the decision cache never answers.
            Phase::GovernedReadNewPurpose => write!(
                out,
                "GET /v1/subjects/{subject}/records/profile/{key} HTTP/1.1\r\nHost: {host}\r\n\
                 Authorization: Bearer {token}\r\nSovereign-Purpose: benchmark-{connection}-{n}\r\n\r\n"
            ),
            Phase::GovernedWrite => {
                body.clear();
                profile(i, body)?;
                write!(
                    out,
                    "PUT /v1/subjects/{subject}/records/profile/{key} HTTP/1.1\r\nHost: {host}\r\n\
                     Authorization: Bearer {token}\r\nSovereign-Purpose: benchmark\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            }
            // Never sent over HTTP: `read_store` calls the store itself.
            Phase::StoreReadInProcess => Err(std::fmt::Error),
        }
    }
}

/// Opens `clients` connections, then has each send requests back to back for `duration`.
/// Connecting is not measured.
async fn drive_phase(
    addr: SocketAddr,
    requests: Requests,
    clients: u32,
    duration: Duration,
) -> anyhow::Result<Measured> {
    let requests = Arc::new(requests);
    let mut streams = Vec::with_capacity(clients as usize);
    for _ in 0..clients {
        streams.push(connect(addr).await?);
    }
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks: Vec<_> = streams
        .into_iter()
        .zip(0..)
        .map(|(stream, connection)| {
            tokio::spawn(drive_connection(
                stream,
                addr,
                requests.clone(),
                connection,
                deadline,
            ))
        })
        .collect();
    let mut total = Tally::new();
    let joined = tokio::time::timeout_at((deadline + GRACE).into(), async {
        for task in tasks.iter_mut() {
            total.merge(task.await.context("a load generator task failed")?);
        }
        anyhow::Ok(())
    })
    .await;
    let elapsed = started.elapsed();
    match joined {
        Ok(done) => done?,
        Err(_) => {
            for task in &tasks {
                task.abort();
            }
            bail!(
                "requests were still unanswered {}s after the phase's end",
                GRACE.as_secs()
            );
        }
    }
    Ok(total.measured(elapsed))
}

async fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    // Each request goes out in one write; without this a write could wait for an ACK.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One keep-alive connection: a request, its whole answer, the next, until `deadline`.
/// A connection that fails ends (the run fails anyway); one the server closes reconnects.
async fn drive_connection(
    mut stream: TcpStream,
    addr: SocketAddr,
    requests: Arc<Requests>,
    connection: u32,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::new();
    let mut rng = StdRng::seed_from_u64(u64::from(connection));
    let mut request = String::with_capacity(1024);
    let mut body = String::with_capacity(256);
    let mut buffer = Vec::with_capacity(16 * 1024);
    let mut n = 0u64;
    while Instant::now() < deadline {
        request.clear();
        if requests
            .write(connection, n, &mut rng, &mut request, &mut body)
            .is_err()
        {
            tally.fail(|| "cannot write the request".into());
            break;
        }
        n += 1;
        let began = Instant::now();
        let answer = match exchange(&mut stream, request.as_bytes(), &mut buffer).await {
            Ok(answer) => answer,
            Err(e) => {
                tally.fail(|| format!("{e:#}"));
                break;
            }
        };
        tally.latencies.record(began.elapsed());
        tally.requests += 1;
        if let Some(body) = answer.error {
            tally.fail(|| format!("HTTP {}: {body}", answer.status));
        }
        if answer.close {
            buffer.clear();
            stream = match connect(addr).await {
                Ok(stream) => stream,
                Err(e) => {
                    tally.fail(|| format!("{e:#}"));
                    break;
                }
            };
        }
    }
    tally
}

/// An HTTP answer as the load generator needs it.
struct Answer {
    status: u16,
    /// Whether the server closes the connection after it.
    close: bool,
    /// The start of the body of an answer that is not 2xx, to say why.
    error: Option<String>,
}

/// The most of an answer's header read before giving up on it.
const MAX_HEAD: usize = 64 * 1024;

/// Sends `request` and reads its answer: a minimal HTTP/1.1 client, which is all the bench
/// needs against its own two servers (a body always has a `Content-Length`; a chunked one is
/// an error) and far cheaper per request than a general client.
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buffer: &mut Vec<u8>,
) -> anyhow::Result<Answer> {
    stream
        .write_all(request)
        .await
        .context("cannot send a request")?;
    let head = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if buffer.len() > MAX_HEAD {
            bail!("an answer's header is over {MAX_HEAD} bytes");
        }
        read_more(stream, buffer).await?;
    };
    let text = std::str::from_utf8(&buffer[..head]).context("an answer's header is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP status line: {status_line:?}"))?;
    let mut length = None;
    let mut close = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .with_context(|| format!("a bad Content-Length: {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!(
                "an answer with Transfer-Encoding {value}, which the bench's client does not read"
            );
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let length = match (length, status) {
        (Some(length), _) => length,
        (None, 204 | 304) => 0,
        (None, _) => bail!("an answer ({status}) without Content-Length"),
    };
    while buffer.len() < head + length {
        read_more(stream, buffer).await?;
    }
    let error = (!(200..300).contains(&status)).then(|| {
        let body = &buffer[head..head + length];
        String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
    });
    buffer.drain(..head + length);
    Ok(Answer {
        status,
        close,
        error,
    })
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> anyhow::Result<()> {
    buffer.reserve(8 * 1024);
    let read = stream
        .read_buf(buffer)
        .await
        .context("cannot read an answer")?;
    if read == 0 {
        bail!("the server closed the connection before answering");
    }
    Ok(())
}

/// `threads` threads read random records straight from the store object for `duration`.
fn read_store(
    store: Arc<dyn vault::SiteStore>,
    keys: Arc<Vec<(String, String)>>,
    threads: u32,
    duration: Duration,
) -> anyhow::Result<Measured> {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let threads: Vec<_> = (0..threads)
        .map(|_| {
            let (store, keys, stop) = (store.clone(), keys.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = rand::thread_rng();
                let mut tally = Tally::new();
                while !stop.load(Ordering::Relaxed) {
                    let (subject, key) = &keys[rng.gen_range(0..keys.len())];
                    let began = Instant::now();
                    let found = store.get_record(subject, "profile", key);
                    tally.latencies.record(began.elapsed());
                    tally.requests += 1;
                    match found {
                        Ok(Some(_)) => {}
                        Ok(None) => tally.fail(|| format!("{subject}/profile/{key} is missing")),
                        Err(e) => tally.fail(|| e.to_string()),
                    }
                }
                tally
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut total = Tally::new();
    for thread in threads {
        total.merge(
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("a benchmark thread panicked"))?,
        );
    }
    Ok(total.measured(started.elapsed()))
}

/// A throughput ratio, where both phases ran.
fn ratio(results: &[(Phase, Measured)], of: Phase, to: Phase) -> Option<f64> {
    let find = |phase| results.iter().find(|(p, _)| *p == phase).map(|(_, m)| m);
    Some(find(of)?.per_second() / find(to)?.per_second())
}

fn report(args: &BenchArgs, results: &[(Phase, Measured)]) {
    let store = |s: &Option<String>| {
        s.as_deref()
            .map(|url| {
                pgconn::Target::parse(url)
                    .map(|t| t.name().to_string())
                    .unwrap_or_else(|_| "(unreadable URL)".into())
            })
            .unwrap_or_else(|| "embedded SQLite".into())
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    // `sovereign serve` logs a line per request at its default level (info) and the bench's
    // default (warn) does not, which moves the floor by a fifth: the figures say which it was.
    let log_level = tracing::level_filters::LevelFilter::current().to_string();
    // The ungoverned read is compared with the floor too: what HTTP alone leaves of it.
    let compared =
        |phase: Phase| phase == Phase::UngovernedRead || Phase::GOVERNED.contains(&phase);
    if args.json {
        let mut phases = serde_json::Map::new();
        let mut ratios = serde_json::Map::new();
        for (phase, m) in results {
            phases.insert(
                phase.key().into(),
                serde_json::json!({
                    "requests": m.requests,
                    "errors": m.errors,
                    "seconds": m.elapsed.as_secs_f64(),
                    "per_second": m.per_second(),
                    "p50_ms": ms(m.latencies.quantile(0.5)),
                    "p99_ms": ms(m.latencies.quantile(0.99)),
                }),
            );
            if !compared(*phase) {
                continue;
            }
            let mut these = serde_json::Map::new();
            if let Some(r) = ratio(results, *phase, Phase::Floor) {
                these.insert("to_floor".into(), r.into());
            }
            if *phase != Phase::UngovernedRead
                && let Some(r) = ratio(results, *phase, Phase::UngovernedRead)
            {
                these.insert("to_ungoverned_read".into(), r.into());
            }
            if !these.is_empty() {
                ratios.insert(phase.key().into(), these.into());
            }
        }
        let out = serde_json::json!({
            "site_store": store(&args.site_store),
            "log_store": store(&args.log_store),
            "clients": args.clients,
            "client_threads": CLIENT_THREADS,
            "seconds": args.seconds,
            "records": args.records,
            "gateway_log_level": log_level,
            "phases": phases,
            "ratios": ratios,
        });
        println!("{out:#}");
        return;
    }
    println!(
        "site store: {}; log store: {}; {} keep-alive connections on {CLIENT_THREADS} client threads, {}s per phase, {} records; gateway log level: {log_level}",
        store(&args.site_store),
        store(&args.log_store),
        args.clients,
        args.seconds,
        args.records
    );
    println!("| phase | requests/s | p50 | p99 | errors | × floor | × ungoverned read |");
    println!("|---|---|---|---|---|---|---|");
    let shown = |r: Option<f64>| r.map(|r| format!("{r:.3}")).unwrap_or_default();
    for (phase, m) in results {
        let (to_floor, to_ungoverned) = if compared(*phase) {
            (
                ratio(results, *phase, Phase::Floor),
                ratio(results, *phase, Phase::UngovernedRead)
                    .filter(|_| *phase != Phase::UngovernedRead),
            )
        } else {
            (None, None)
        };
        println!(
            "| {} | {:.0} | {:.3} ms | {:.3} ms | {} | {} | {} |",
            phase.label(),
            m.per_second(),
            ms(m.latencies.quantile(0.5)),
            ms(m.latencies.quantile(0.99)),
            m.errors,
            shown(to_floor),
            shown(to_ungoverned),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_latency_falls_in_a_bucket_within_one_part_in_sub() {
        let mut nanos = 0u64;
        while nanos <= MAX_NANOS {
            let bucket = Latencies::bucket(nanos);
            assert!(bucket < BUCKETS, "{nanos}");
            let middle = Latencies::middle(bucket);
            assert!(
                middle.abs_diff(nanos) * SUB <= nanos.max(1),
                "{nanos} → {middle}"
            );
            nanos = nanos * 17 / 16 + 1;
        }
        assert_eq!(Latencies::bucket(u64::MAX), BUCKETS - 1);
    }

    /// What `exchange` makes of `answers`, sent by a server in pieces of 7 bytes (so that a
    /// header and a body arrive over several reads), one request per answer.
    fn exchange_with(answers: Vec<&'static str>) -> Vec<Result<Answer, String>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let sent = answers.clone();
            tokio::spawn(async move {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = [0u8; 1024];
                for answer in sent {
                    let _ = socket.read(&mut request).await.unwrap();
                    for piece in answer.as_bytes().chunks(7) {
                        socket.write_all(piece).await.unwrap();
                        socket.flush().await.unwrap();
                        tokio::task::yield_now().await;
                    }
                }
            });
            let mut stream = connect(addr).await.unwrap();
            let mut buffer = Vec::new();
            let mut out = Vec::new();
            for _ in &answers {
                let answer = exchange(&mut stream, b"GET / HTTP/1.1\r\n\r\n", &mut buffer).await;
                let failed = answer.is_err();
                out.push(answer.map_err(|e| format!("{e:#}")));
                if failed {
                    break;
                }
            }
            out
        })
    }

    #[test]
    fn the_client_reads_answers_on_a_kept_alive_connection() {
        let answers = exchange_with(vec![
            "HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}",
            "HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\nconnection: close\r\n\r\ndenied",
            "HTTP/1.1 204 No Content\r\n\r\n",
        ]);
        let [Ok(ok), Ok(denied), Ok(empty)] = &answers[..] else {
            panic!(
                "{:?}",
                answers.iter().map(|a| a.as_ref().err()).collect::<Vec<_>>()
            );
        };
        assert_eq!(
            (ok.status, ok.close, ok.error.as_deref()),
            (200, false, None)
        );
        assert_eq!(
            (denied.status, denied.close, denied.error.as_deref()),
            (403, true, Some("denied"))
        );
        assert_eq!((empty.status, empty.error.as_deref()), (204, None));
    }

    #[test]
    fn the_client_refuses_what_it_cannot_read() {
        for (answer, expected) in [
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                "Transfer-Encoding",
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", "without Content-Length"),
            ("garbage\r\n\r\n", "not an HTTP status line"),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
                "closed",
            ),
        ] {
            let answers = exchange_with(vec![answer]);
            let error = answers[0].as_ref().err().unwrap();
            assert!(error.contains(expected), "{answer:?}: {error}");
        }
    }

    #[test]
    fn a_phase_counts_every_refused_request_as_an_error() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let measured = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                loop {
                    let (mut socket, _) = listener.accept().await.unwrap();
                    tokio::spawn(async move {
                        let mut request = [0u8; 4096];
                        while socket.read(&mut request).await.is_ok_and(|n| n > 0) {
                            let answer =
                                "HTTP/1.1 403 Forbidden\r\ncontent-length: 6\r\n\r\ndenied";
                            if socket.write_all(answer.as_bytes()).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            });
            let keys = Arc::new(vec![("bench-0".to_string(), "main".to_string())]);
            let requests = Requests::new(Phase::GovernedRead, addr, "token", keys);
            drive_phase(addr, requests, 3, Duration::from_millis(200))
                .await
                .unwrap()
        });
        assert!(measured.requests > 0);
        assert_eq!(measured.errors, measured.requests);
        assert_eq!(measured.first_error.as_deref(), Some("HTTP 403: denied"));
    }

    #[test]
    fn quantiles_come_from_the_counted_latencies() {
        let mut latencies = Latencies::new();
        for micros in 1..=100 {
            latencies.record(Duration::from_micros(micros));
        }
        let p50 = latencies.quantile(0.5).as_secs_f64() * 1e6;
        let p99 = latencies.quantile(0.99).as_secs_f64() * 1e6;
        assert!((p50 - 50.0).abs() < 0.5, "{p50}");
        assert!((p99 - 99.0).abs() < 1.0, "{p99}");
        assert_eq!(Latencies::new().quantile(0.5), Duration::ZERO);
    }
}
