//! `sovereign bench`: governed reads against bare reads of the same records, in one run.
//!
//! Starts a gateway on a fresh default setup in a temporary folder (the `us-east` site and
//! the log on the stores given, or embedded), writes `--records` records for `US` subjects
//! through the API, then for `--seconds` each:
//!
//! - **governed**: `--clients` concurrent clients read random records through the HTTP API as
//!   vetted US staff with a purpose: token check, Cedar decision, the vault's read and
//!   decryption, and the durable log append the answer waits for;
//! - **bare**: as many threads read the same rows straight from the site's store object,
//!   the gateway's own (so a PostgreSQL site is read through the same connection pool).
//!
//! It prints requests per second, p50 and p99 latency of each, and their throughput ratio.
//! The clients run on the same machine as the gateway, so the governed figure also pays for
//! the HTTP client's work.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use gateway::auth::{Claims, mint_dev_token, now_unix};
use rand::Rng as _;

/// `sovereign bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The `us-east` site's store, e.g. postgres://USER@HOST/DB [default: embedded SQLite].
    #[arg(long)]
    site_store: Option<String>,
    /// The log's store, e.g. postgres://USER@HOST/DB [default: embedded SQLite].
    #[arg(long)]
    log_store: Option<String>,
    /// Concurrent clients in each phase.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    clients: u32,
    /// Seconds each phase runs.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Records written before the phases, one per subject.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    records: u32,
    /// Print the figures as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

const SITE: &str = "us-east";

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let folder = tempfile::Builder::new()
        .prefix("sovereign-bench-")
        .tempdir()
        .context("cannot create a temporary folder")?;
    let data = folder.path();
    gateway::setup::init(data, false)?;
    configure_stores(data, args.site_store.as_deref(), args.log_store.as_deref())?;

    // Opened outside the async runtime, as `serve` does (PostgreSQL clients block).
    let gateway = gateway::Gateway::open(data)?;
    // The bare read goes to the same store through a vault of its own: the gateway's vault
    // is reachable only through its decisions.
    let config = gateway::config::Config::load(data).map_err(|e| anyhow::anyhow!("{e}"))?;
    let bare = vault::Vault::open(config.layout(), data, config.server.store_readers)
        .context("cannot open the site stores")?;
    let store = bare
        .stores()
        .find(|(name, _)| *name == SITE)
        .map(|(_, store)| store.clone())
        .context("the default setup has no us-east site")?;
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
    let base = format!("http://{addr}");
    let token = vetted_token(data)?;

    eprintln!("writing {} records through the API…", args.records);
    let keys = write_records(&base, &token, args.records)?;
    let seconds = Duration::from_secs(args.seconds);
    eprintln!(
        "governed reads: {} clients for {}s…",
        args.clients, args.seconds
    );
    let governed = measure(args.clients, seconds, {
        let (base, token, keys) = (base.clone(), token.clone(), keys.clone());
        move || {
            let agent = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .build();
            let (base, token, keys) = (base.clone(), token.clone(), keys.clone());
            move |rng: &mut rand::rngs::ThreadRng| {
                let (subject, key) = &keys[rng.gen_range(0..keys.len())];
                agent
                    .get(&format!(
                        "{base}/v1/subjects/{subject}/records/profile/{key}"
                    ))
                    .set("Authorization", &format!("Bearer {token}"))
                    .set("Sovereign-Purpose", "benchmark")
                    .call()
                    .map(|_| ())
                    .map_err(|e| anyhow::anyhow!("governed read: {e}"))
            }
        }
    })?;
    eprintln!(
        "bare reads: {} threads for {}s…",
        args.clients, args.seconds
    );
    let bare = measure(args.clients, seconds, {
        let keys = keys.clone();
        move || {
            let (store, keys) = (store.clone(), keys.clone());
            move |rng: &mut rand::rngs::ThreadRng| {
                let (subject, key) = &keys[rng.gen_range(0..keys.len())];
                match store.get_record(subject, "profile", key)? {
                    Some(_) => Ok(()),
                    None => bail!("bare read: record {subject}/profile/{key} is missing"),
                }
            }
        }
    })?;

    let _ = stop_server.send(());
    runtime.block_on(server)??;
    report(&args, &governed, &bare);
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

/// Registers one `US` subject per record and writes its profile; answers (subject, key) pairs.
fn write_records(
    base: &str,
    token: &str,
    records: u32,
) -> anyhow::Result<Arc<Vec<(String, String)>>> {
    let agent = ureq::agent();
    let bearer = format!("Bearer {token}");
    let mut keys = Vec::with_capacity(records as usize);
    for i in 0..records {
        let subject = format!("bench-{i}");
        agent
            .put(&format!("{base}/v1/subjects/{subject}"))
            .set("Authorization", &bearer)
            .send_string(r#"{"jurisdiction":"US"}"#)
            .with_context(|| format!("registering {subject}"))?;
        agent
            .put(&format!("{base}/v1/subjects/{subject}/records/profile/main"))
            .set("Authorization", &bearer)
            .set("Sovereign-Purpose", "benchmark")
            .send_string(&format!(
                r#"{{"email":"user{i}@example.com","phone":"+1 555 01{:02}","display_name":"User {i}"}}"#,
                i % 100
            ))
            .with_context(|| format!("writing {subject}'s profile"))?;
        keys.push((subject, "main".to_string()));
    }
    Ok(Arc::new(keys))
}

struct Phase {
    requests: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Phase {
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        let at = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies.get(at).copied().unwrap_or_default()
    }
}

/// Runs `clients` threads for `duration`, each calling the operation `make` builds for it.
fn measure<M, F>(clients: u32, duration: Duration, make: M) -> anyhow::Result<Phase>
where
    M: Fn() -> F,
    F: FnMut(&mut rand::rngs::ThreadRng) -> anyhow::Result<()> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let mut operation = make();
            let stop = stop.clone();
            std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
                let mut rng = rand::thread_rng();
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let began = Instant::now();
                    operation(&mut rng)?;
                    latencies.push(began.elapsed());
                }
                Ok(latencies)
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for thread in threads {
        let done = thread
            .join()
            .map_err(|_| anyhow::anyhow!("a benchmark thread panicked"))??;
        latencies.extend(done);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(Phase {
        requests: latencies.len() as u64,
        elapsed,
        latencies,
    })
}

fn report(args: &BenchArgs, governed: &Phase, bare: &Phase) {
    let ratio = governed.per_second() / bare.per_second();
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
    if args.json {
        let phase = |p: &Phase| {
            serde_json::json!({
                "requests": p.requests,
                "per_second": p.per_second(),
                "p50_ms": ms(p.percentile(0.5)),
                "p99_ms": ms(p.percentile(0.99)),
            })
        };
        let out = serde_json::json!({
            "site_store": store(&args.site_store),
            "log_store": store(&args.log_store),
            "clients": args.clients,
            "seconds": args.seconds,
            "records": args.records,
            "governed": phase(governed),
            "bare": phase(bare),
            "throughput_ratio": ratio,
        });
        println!("{out:#}");
        return;
    }
    println!(
        "site store: {}; log store: {}; {} clients, {}s per phase, {} records",
        store(&args.site_store),
        store(&args.log_store),
        args.clients,
        args.seconds,
        args.records
    );
    println!("| reads | requests/s | p50 | p99 |");
    println!("|---|---|---|---|");
    for (name, phase) in [("governed (API)", governed), ("bare (store)", bare)] {
        println!(
            "| {name} | {:.0} | {:.2} ms | {:.2} ms |",
            phase.per_second(),
            ms(phase.percentile(0.5)),
            ms(phase.percentile(0.99))
        );
    }
    println!("throughput ratio governed / bare: {ratio:.3}");
}
