//! `sovereign demo`: the reference scenario, live.
//!
//! Starts a gateway on a fresh default setup (a temporary folder unless `--data` names one),
//! creates a synthetic population (`US` and `SG` subjects, some `US` ones still at the
//! non-compliant `sg-legacy` site), and has the reference cast act on it through the real
//! HTTP API, so that the dashboard comes alive: vetted US staff at work, parent-company staff
//! reading what they may and, from `CN`, trying what they may not, a US engineer travelling
//! in `CN`, an egress consumer, an access request approved by two custodians, one break-glass
//! use, and the legacy subjects migrated one by one. At the end (`--duration`, or Ctrl-C) the
//! monitor verifies the log from its published key, and the verdict is printed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use gateway::auth::{Claims, mint_dev_token, now_unix};
use rand::Rng as _;
use rand::rngs::StdRng;
use rand::{SeedableRng as _, seq::SliceRandom as _};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::audit::{self, AuditCommand};

/// `sovereign demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Data folder, new or empty [default: a temporary folder, removed at the end].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Stop after this long, like 90s or 5m [default: run until Ctrl-C].
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// US subjects to create; half as many SG subjects, and a fifth as many legacy US
    /// subjects left at sg-legacy.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(5..=10_000))]
    subjects: u32,
    /// Requests per second the cast makes, roughly.
    #[arg(long, default_value_t = 4.0)]
    rate: f64,
}

/// Where the demo's data lives: a folder it removes at the end, or one the user named.
enum DataFolder {
    Temporary(tempfile::TempDir),
    Kept(PathBuf),
}

impl DataFolder {
    fn path(&self) -> &Path {
        match self {
            DataFolder::Temporary(dir) => dir.path(),
            DataFolder::Kept(path) => path,
        }
    }
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    if !(args.rate > 0.0 && args.rate <= 1000.0) {
        bail!("--rate must be above 0 and at most 1000 requests per second");
    }
    let folder = match &args.data {
        Some(path) => {
            if path.exists()
                && std::fs::read_dir(path)
                    .with_context(|| format!("cannot read {}", path.display()))?
                    .next()
                    .is_some()
            {
                bail!(
                    "{} is not empty: the demo creates its own population and needs a new or empty folder (or leave out --data for a temporary one)",
                    path.display()
                );
            }
            DataFolder::Kept(path.clone())
        }
        None => DataFolder::Temporary(
            tempfile::Builder::new()
                .prefix("sovereign-demo-")
                .tempdir()
                .context("cannot create a temporary folder")?,
        ),
    };
    let data = folder.path().to_path_buf();
    let legacy = (args.subjects / 5).max(1) as usize;
    gateway::setup::init(&data, false)?;
    let legacy_ids = gateway::setup::seed_legacy(&data, legacy)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Opened outside the async runtime, as `serve` does.
    let gateway = gateway::Gateway::open(&data)?;
    let (addr, log_key, stop_server, server) = runtime.block_on(async {
        let log_key = gateway.state().log.verifier_key().to_string();
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} (is another Sovereign running there? --listen 127.0.0.1:0 picks a free port)",
                    args.listen
                )
            })?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(gateway.serve(listener, async {
            let _ = stopped.await;
        }));
        anyhow::Ok((addr, log_key, stop, server))
    })?;

    let base = format!("http://{addr}");
    let cast = Cast::new(&data, args.duration)?;
    println!("Sovereign demo");
    println!("  data folder:  {}", data.display());
    println!("  dashboard:    {base}/#token={}", cast.monitor);
    println!("                (the token after # is a monitor's; it stays in your browser)");
    println!("  metrics:      {base}/metrics");
    println!("  log key:      {log_key}");
    match args.duration {
        Some(d) => println!(
            "  running for {}; Ctrl-C stops early",
            humantime::format_duration(d)
        ),
        None => println!("  running until Ctrl-C"),
    }
    println!();

    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Stats::default());
    let custodian_key = data.join("keys/custodian.key");
    let driver = {
        let (stop, stats, base) = (stop.clone(), stats.clone(), base.clone());
        let rate = args.rate;
        let subjects = args.subjects as usize;
        std::thread::spawn(move || {
            let mut driver = Driver::new(&base, cast, stats, legacy_ids, custodian_key);
            driver.run(subjects, rate, &stop)
        })
    };

    // Wait for the end: the duration, Ctrl-C, or the driver failing.
    let started = Instant::now();
    runtime.block_on(async {
        let until = async {
            match args.duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let mut report = tokio::time::interval(Duration::from_secs(5));
        report.tick().await;
        tokio::pin!(until);
        loop {
            tokio::select! {
                _ = &mut until => break,
                _ = tokio::signal::ctrl_c() => { println!("\nstopping (Ctrl-C)"); break },
                _ = report.tick() => {
                    if driver.is_finished() { break }
                    println!("{}", stats.line(started.elapsed()));
                }
            }
        }
    });
    stop.store(true, Ordering::Relaxed);
    let driven = driver
        .join()
        .map_err(|_| anyhow::anyhow!("the traffic driver panicked"))?;
    println!("{}", stats.line(started.elapsed()));

    // The monitor's check, against the running gateway, trusting only the published key.
    println!();
    println!(
        "monitor: the log verified against the published key, as `sovereign audit verify --url {base} --key KEY --wait` does:"
    );
    let verified = audit::run_to(
        AuditCommand::Verify {
            log: audit::LogUrl {
                url: base.clone(),
                // Every answer of the run is in the check.
                wait: Some(Duration::from_secs(30)),
            },
            key: log_key,
            state: None,
            json: false,
            watch: None,
            witnesses: audit::WitnessArgs::default(),
        },
        &mut std::io::stdout(),
    );

    runtime.block_on(async {
        let _ = stop_server.send(());
        server.await.context("the server task failed")?
    })?;
    drop(runtime);
    // The gateway has stopped: what to run to look again is said for after it.
    match &folder {
        DataFolder::Kept(path) => {
            let data = path.display();
            println!("data kept in {data}; to check its log again later:");
            println!("  sovereign serve --data {data} --listen {addr} &");
            println!(
                "  sovereign audit verify --url {base} --key \"$(sovereign audit key --data {data})\""
            );
        }
        DataFolder::Temporary(_) => println!(
            "the gateway has stopped and its temporary data folder is gone; `sovereign demo --data DIR` keeps one to check again"
        ),
    }
    driven?;
    verified.context("the monitor's verification failed")?;
    Ok(())
}

// ---------------------------------------------------------------------------
// The cast

/// Tokens of the reference cast, minted by the development issuer `init` wrote.
struct Cast {
    vetted: [String; 2],
    parent_sg: String,
    parent_cn: String,
    travelling: String,
    monitor: String,
    egress: String,
    approvers: [String; 2],
    break_glass: String,
    operator: String,
    /// The platform's algorithm author and the service that runs released algorithms.
    author: String,
    runner: String,
}

impl Cast {
    fn new(data: &Path, duration: Option<Duration>) -> anyhow::Result<Cast> {
        // Valid for the whole demo, and an hour after for a look at the dashboard.
        let ttl = duration.unwrap_or(Duration::from_secs(12 * 3600)).as_secs() as i64 + 3600;
        let token =
            |sub: &str, entity: &str, location: &str, clearance: &[&str], roles: &[&str]| {
                let now = now_unix();
                mint_dev_token(
                    data,
                    &Claims {
                        sub: sub.into(),
                        iss: gateway::setup::DEV_ISSUER.into(),
                        exp: now + ttl,
                        nbf: Some(now),
                        iat: Some(now),
                        entity: entity.into(),
                        location: location.into(),
                        clearance: clearance.iter().map(|s| s.to_string()).collect(),
                        roles: roles.iter().map(|s| s.to_string()).collect(),
                    },
                )
            };
        Ok(Cast {
            vetted: [
                token("alice", "usds", "US", &["us-data"], &["engineer"])?,
                token("eve", "usds", "US", &["us-data"], &["support"])?,
            ],
            parent_sg: token("siew", "parent", "SG", &[], &["engineer"])?,
            parent_cn: token("chen", "parent", "CN", &[], &["engineer"])?,
            travelling: token("bob", "usds", "CN", &["us-data"], &["engineer"])?,
            monitor: token("mona", "monitor", "US", &[], &["monitor"])?,
            egress: token("globe", "parent", "SG", &[], &["egress"])?,
            approvers: [
                token("carol", "custodian", "US", &[], &["custodian-approver"])?,
                token("dave", "custodian", "US", &[], &["custodian-approver"])?,
            ],
            break_glass: token(
                "frank",
                "usds",
                "US",
                &["us-data"],
                &["engineer", "break-glass"],
            )?,
            operator: token("olga", "custodian", "US", &[], &["custodian-operator"])?,
            author: token("pat", "parent", "SG", &[], &["algorithm-author"])?,
            runner: token("recommender", "parent", "SG", &[], &["algorithm-runner"])?,
        })
    }
}

// ---------------------------------------------------------------------------
// Traffic

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    allowed: AtomicU64,
    denied: AtomicU64,
    failed: AtomicU64,
}

impl Stats {
    fn line(&self, elapsed: Duration) -> String {
        format!(
            "{:>4}s  requests {:>5}  allowed {:>5}  denied {:>5}  errors {}",
            elapsed.as_secs(),
            self.requests.load(Ordering::Relaxed),
            self.allowed.load(Ordering::Relaxed),
            self.denied.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

struct Driver {
    base: String,
    agent: ureq::Agent,
    cast: Cast,
    stats: Arc<Stats>,
    rng: StdRng,
    us: Vec<String>,
    sg: Vec<String>,
    legacy: Vec<String>,
    /// The development custodian's signer key, to release the example algorithm.
    custodian_key: PathBuf,
}

/// The example algorithm (`examples/algorithms/ranker/`): from a subject's protected watch
/// history, the category watched most.
const RANKER_WASM: &[u8] = include_bytes!("../../../examples/algorithms/ranker/ranker.wasm");
const RANKER_MANIFEST: &str = include_str!("../../../examples/algorithms/ranker/manifest.json");
const CATEGORIES: [&str; 3] = ["drama", "comedy", "documentary"];

/// The scripted moments of the scenario, in seconds from the start of the traffic: early
/// enough that a short run shows most of them. An access request is made every minute
/// (the first at 2 s); its two approvals come 13 s and 23 s later, so that it is seen waiting.
const ACCESS_REQUEST_AT: u64 = 2;
const ACCESS_REQUEST_EVERY: u64 = 60;
const APPROVALS_AFTER: [u64; 2] = [13, 23];
const MIGRATIONS_FROM: u64 = 3;
const MIGRATION_EVERY: u64 = 3;
const BREAK_GLASS_AT: u64 = 6;

impl Driver {
    fn new(
        base: &str,
        cast: Cast,
        stats: Arc<Stats>,
        legacy: Vec<String>,
        custodian_key: PathBuf,
    ) -> Driver {
        Driver {
            base: base.to_string(),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .build(),
            cast,
            stats,
            rng: StdRng::from_entropy(),
            us: Vec::new(),
            sg: Vec::new(),
            legacy,
            custodian_key,
        }
    }

    /// Sends one request; counts it; answers the status (0 if it never got one) and the body.
    fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        purpose: Option<&str>,
        body: Option<Value>,
    ) -> (u16, String) {
        let mut request = self
            .agent
            .request(method, &format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {token}"));
        if let Some(purpose) = purpose {
            request = request.set("Sovereign-Purpose", purpose);
        }
        let result = match body {
            Some(body) => request
                .set("Content-Type", "application/json")
                .send_string(&body.to_string()),
            None => request.call(),
        };
        let (status, answer) = match result {
            Ok(response) | Err(ureq::Error::Status(_, response)) => (
                response.status(),
                response.into_string().unwrap_or_default(),
            ),
            Err(_) => (0, String::new()),
        };
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        match status {
            200..=299 => &self.stats.allowed,
            403 => &self.stats.denied,
            _ => &self.stats.failed,
        }
        .fetch_add(1, Ordering::Relaxed);
        (status, answer)
    }

    fn run(&mut self, subjects: usize, rate: f64, stop: &AtomicBool) -> anyhow::Result<()> {
        self.populate(subjects, stop)?;
        self.release_ranker()?;
        let pause = Duration::from_secs_f64(1.0 / rate);
        let started = Instant::now();
        // The current access request: its id, when it was made, the approvals it has.
        let mut request: Option<(String, u64, usize)> = None;
        let mut next_request = ACCESS_REQUEST_AT;
        let mut break_glass = false;
        let mut next_migration = MIGRATIONS_FROM;
        while !stop.load(Ordering::Relaxed) {
            let t = started.elapsed().as_secs();
            if t >= next_request {
                request = Some((self.request_access()?, t, 0));
                next_request = t + ACCESS_REQUEST_EVERY;
            }
            if let Some((id, made, approvals)) = &mut request
                && *approvals < 2
                && t >= *made + APPROVALS_AFTER[*approvals]
            {
                self.call(
                    "POST",
                    &format!("/v1/access/requests/{id}/approve"),
                    &self.cast.approvers[*approvals],
                    None,
                    Some(json!({"comment": "ticket checked"})),
                );
                *approvals += 1;
            }
            if !break_glass && t >= BREAK_GLASS_AT {
                self.break_glass();
                break_glass = true;
            }
            if t >= next_migration && !self.legacy.is_empty() {
                self.migrate_one();
                next_migration = t + MIGRATION_EVERY;
            }
            self.one_access();
            std::thread::sleep(pause);
        }
        Ok(())
    }

    /// The population: US subjects registered by vetted staff, SG subjects by parent staff
    /// in SG, each with a profile and (for US ones) an activity record.
    fn populate(&mut self, subjects: usize, stop: &AtomicBool) -> anyhow::Result<()> {
        let started = Instant::now();
        // Watch histories are protected activity: loading them needs a custodian grant,
        // asked for and approved by two custodians first.
        let grant = self.access_request(json!({
            "action": "write",
            "subjects": [],
            "collections": ["activity"],
            "purpose": "load watch histories from the old platform (ticket 4400)",
            "reason_code": "customer-initiated-support",
            "duration": "1h",
        }))?;
        for approver in &self.cast.approvers {
            self.call(
                "POST",
                &format!("/v1/access/requests/{grant}/approve"),
                approver,
                None,
                Some(json!({"comment": "migration plan checked"})),
            );
        }
        for i in 0..subjects {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let id = format!("us-{i:05}");
            let vetted = self.cast.vetted[i % 2].clone();
            let (status, _) = self.call(
                "PUT",
                &format!("/v1/subjects/{id}"),
                &vetted,
                None,
                Some(json!({"jurisdiction": "US"})),
            );
            if !(200..300).contains(&status) {
                bail!("registering US subject {id} failed with HTTP {status}");
            }
            self.call(
                "PUT",
                &format!("/v1/subjects/{id}/records/profile/main"),
                &vetted,
                Some("account setup"),
                Some(json!({
                    "email": format!("{id}@example.com"),
                    "birthdate": format!("19{}-0{}-1{}", 60 + i % 40, 1 + i % 9, i % 10),
                    "phone": format!("+1-555-{:04}", i % 10_000),
                    "display_name": format!("Viewer {i}"),
                })),
            );
            let (favourite, other) = (CATEGORIES[i % 3], CATEGORIES[(i + 1) % 3]);
            self.call(
                "PUT",
                &format!("/v1/subjects/{id}/records/activity/main"),
                &self.cast.vetted[1],
                Some("load watch history"),
                Some(json!({
                    "watch_history": [
                        format!("{favourite}:Title {i}a"),
                        format!("{favourite}:Title {i}b"),
                        format!("{other}:Title {i}c"),
                    ],
                    "public_video_count": i % 50,
                })),
            );
            self.us.push(id);
        }
        for i in 0..subjects / 2 {
            let id = format!("sg-{i:05}");
            let (status, _) = self.call(
                "PUT",
                &format!("/v1/subjects/{id}"),
                &self.cast.parent_sg,
                None,
                Some(json!({"jurisdiction": "SG"})),
            );
            if !(200..300).contains(&status) {
                bail!("registering SG subject {id} failed with HTTP {status}");
            }
            self.call(
                "PUT",
                &format!("/v1/subjects/{id}/records/profile/main"),
                &self.cast.parent_sg,
                Some("account setup"),
                Some(json!({"email": format!("{id}@example.sg"), "display_name": format!("Pengguna {i}")})),
            );
            self.sg.push(id);
        }
        println!(
            "population: {} US and {} SG subjects created in {:.1}s; {} legacy US subjects wait at sg-legacy for migration",
            self.us.len(),
            self.sg.len(),
            started.elapsed().as_secs_f64(),
            self.legacy.len()
        );
        Ok(())
    }

    /// One access by someone of the cast, chosen so that the mix looks like a working day
    /// with a few people trying what they should not.
    fn one_access(&mut self) {
        let us = self.us.choose(&mut self.rng).cloned().unwrap_or_default();
        let sg = self.sg.choose(&mut self.rng).cloned().unwrap_or_default();
        let profile = |id: &str| format!("/v1/subjects/{id}/records/profile/main");
        let roll: u32 = self.rng.gen_range(0..100);
        let cast = &self.cast;
        let (method, path, token, purpose, body) = match roll {
            // Vetted US staff at work.
            0..=34 => (
                "GET",
                profile(&us),
                &cast.vetted[0],
                Some("support ticket"),
                None,
            ),
            35..=44 => (
                "PUT",
                profile(&us),
                &cast.vetted[1],
                Some("customer asked to update email"),
                Some(json!({"email": format!("{us}.new@example.com")})),
            ),
            // Parent-company staff in SG: interoperable fields of US subjects only.
            45..=59 => (
                "GET",
                profile(&us),
                &cast.parent_sg,
                Some("recommendations"),
                None,
            ),
            60..=69 => (
                "GET",
                profile(&sg),
                &cast.parent_sg,
                Some("support ticket"),
                None,
            ),
            // From CN: parent staff, and a vetted engineer travelling. Denied, alerted.
            70..=77 => (
                "GET",
                profile(&us),
                &cast.parent_cn,
                Some("analytics"),
                None,
            ),
            78..=83 => ("GET", profile(&us), &cast.travelling, Some("on call"), None),
            // Activity needs a custodian grant for protected fields.
            84..=91 => (
                "GET",
                format!("/v1/subjects/{us}/records/activity/main"),
                &cast.vetted[0],
                Some("debugging recommendations"),
                None,
            ),
            // The platform's recommender runs the custodian's released ranker next to the data.
            92..=94 => (
                "POST",
                "/v1/algorithms/ranker/runs".to_string(),
                &cast.runner,
                None,
                Some(json!({"subject": us})),
            ),
            // The global platform takes interoperable fields out.
            _ => (
                "GET",
                "/v1/egress/profile?limit=25".to_string(),
                &cast.egress,
                None,
                None,
            ),
        };
        self.call(method, &path, token, purpose, body);
    }

    /// A vetted engineer asks to write activity records of three subjects; two custodians
    /// approve later.
    fn request_access(&self) -> anyhow::Result<String> {
        let subjects: Vec<String> = self.us.iter().take(3).cloned().collect();
        self.access_request(json!({
            "action": "write",
            "subjects": subjects,
            "collections": ["activity"],
            "purpose": "repair corrupted watch history (ticket 4471)",
            "reason_code": "customer-initiated-support",
            "duration": "1h",
        }))
    }

    /// The platform's author submits the example ranker with its manifest; the custodian
    /// signs its release (offline, here with the development key); the operator activates it.
    fn release_ranker(&self) -> anyhow::Result<()> {
        let path = "/v1/algorithms/ranker/1.0.0";
        let send = |method: &str, path: &str, token: &str, kind: &str, body: &[u8]| {
            let answer = self
                .agent
                .request(method, &format!("{}{path}", self.base))
                .set("Authorization", &format!("Bearer {token}"))
                .set("Content-Type", kind)
                .send_bytes(body);
            match answer {
                Ok(_) => Ok(()),
                Err(e) => Err(anyhow::anyhow!("{method} {path}: {e}")),
            }
        };
        let author = &self.cast.author;
        send(
            "POST",
            path,
            author,
            "application/octet-stream",
            RANKER_WASM,
        )?;
        let manifest = RANKER_MANIFEST.as_bytes();
        let manifest_path = format!("{path}/manifest");
        send("PUT", &manifest_path, author, "application/json", manifest)?;
        let statement = custody::statement::Statement::AlgorithmRelease {
            name: "ranker".into(),
            version: "1.0.0".into(),
            sha256: hex::encode(sha2::Sha256::digest(RANKER_WASM)),
            manifest: Some(hex::encode(sha2::Sha256::digest(manifest))),
        };
        let signer = custody::statement::load_signer(&self.custodian_key)?;
        let signed = custody::statement::sign(&statement, &signer)?;
        let activate = format!("{path}/activate");
        send(
            "POST",
            &activate,
            &self.cast.operator,
            "text/plain",
            &signed,
        )?;
        println!("algorithm: the example ranker released, signed by the custodian and active");
        Ok(())
    }

    /// Files an access request; answers its id.
    fn access_request(&self, request: Value) -> anyhow::Result<String> {
        let (status, answer) = self.call(
            "POST",
            "/v1/access/requests",
            &self.cast.vetted[1],
            None,
            Some(request),
        );
        if !(200..300).contains(&status) {
            bail!("the access request was refused (HTTP {status}): {answer}");
        }
        let answer: Value =
            serde_json::from_str(&answer).context("the access request's answer is not JSON")?;
        answer["id"]
            .as_str()
            .map(str::to_string)
            .context("the access request's answer has no id")
    }

    fn break_glass(&self) {
        self.call(
            "POST",
            "/v1/access/break-glass",
            &self.cast.break_glass,
            None,
            Some(json!({
                "action": "read",
                "collections": ["activity"],
                "purpose": "outage: recommendations serving wrong history",
                "reason_code": "incident-response",
            })),
        );
    }

    fn migrate_one(&mut self) {
        if let Some(id) = self.legacy.pop() {
            self.call(
                "POST",
                "/v1/residency/migrate",
                &self.cast.operator,
                None,
                Some(json!({"subject": id, "from": gateway::setup::LEGACY_SITE})),
            );
        }
    }
}
