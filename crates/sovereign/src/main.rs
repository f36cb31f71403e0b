//! `sovereign`: the command-line tool and service binary. Thin glue over the `gateway` crate.

mod access;
mod audit;
mod batch;
mod bench;
mod check;
mod client;
mod custody_cli;
mod demo;
mod exit;
mod policy_eval;
mod report;
mod residency;
mod subject;
mod witness;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use gateway::auth::{Claims, mint_dev_token, now_unix};
use gateway::config::{CONFIG_FILE, Config};

/// mimalloc instead of glibc's malloc: a governed read allocates and frees many small
/// objects across the runtime's threads, and glibc's allocator and its arena locks took about
/// a tenth of the loaded server's CPU (BENCHMARKS.md, "The governed request path").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_DATA: &str = "sovereign-data";
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

#[derive(Parser)]
#[command(
    name = "sovereign",
    version,
    about = "Data-sovereignty gateway: keeps protected data in its jurisdiction and decides every access by policy",
    after_help = exit::HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gateway (initialising a default setup in the data folder on first start).
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Data folder: configuration, policies, keys and site stores.
        #[arg(long, default_value = DEFAULT_DATA)]
        data: PathBuf,
        /// Record this gateway's keys as the fleet's in the shared custody store, replacing
        /// those recorded, instead of refusing to start when they differ. Only after the
        /// fleet's keys were changed on purpose; give every gateway the new ones.
        #[arg(long)]
        replace_fleet_identity: bool,
    },
    /// Run the reference scenario live: a gateway on a fresh setup, a synthetic population
    /// and the reference cast at work, for the dashboard; the monitor verifies at the end.
    Demo(demo::DemoArgs),
    /// Measure governed reads and writes against the same server's HTTP floor and an
    /// ungoverned HTTP read of the same store, in one run, on a fresh setup in a temporary
    /// folder.
    Bench(bench::BenchArgs),
    /// Write a default setup (the reference scenario) into a data folder.
    Init {
        #[arg(long, default_value = DEFAULT_DATA)]
        data: PathBuf,
        /// Overwrite an existing configuration, policies and keys (site stores are kept).
        #[arg(long)]
        force: bool,
        /// Also place N legacy `US` subjects at `sg-legacy`, as they were before residency
        /// was enforced, for a residency scan and migration to find.
        #[arg(long, value_name = "N")]
        seed_legacy: Option<usize>,
    },
    /// Print a development token signed by the issuer key that `init` wrote.
    Token {
        #[arg(long, default_value = DEFAULT_DATA)]
        data: PathBuf,
        /// The principal's id (`sub`).
        #[arg(long)]
        sub: String,
        /// The principal's employer entity, as declared in the configuration (`[entities.NAME]`;
        /// a data subject acting on their own data: `public`, with `--sub` their subject id
        /// and `--role data-subject`).
        #[arg(long)]
        entity: String,
        /// Where the principal works from: ISO 3166-1 alpha-2, e.g. US.
        #[arg(long)]
        location: String,
        /// A clearance (repeatable), e.g. us-data.
        #[arg(long)]
        clearance: Vec<String>,
        /// A role (repeatable), e.g. monitor.
        #[arg(long)]
        role: Vec<String>,
        /// Lifetime, like 30s, 15m, 1h.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Check a data folder's configuration and policies without serving.
    Check {
        #[arg(long, default_value = DEFAULT_DATA)]
        data: PathBuf,
        /// Also reach every configured store (PostgreSQL: connect and query; SQLite: the file
        /// or its folder), find the solver, and check that key files are private (0600).
        #[arg(long)]
        connect: bool,
        /// Print the result as one JSON object (`ok`, the sets' hashes, each check).
        #[arg(long)]
        json: bool,
    },
    /// The monitor's tools: the log's key, verifying a log, offline inclusion proofs,
    /// replaying its decisions.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Write a signed transparency report of a period, computed from the verified log
    /// (`report --url ... --from ... --to ... --signer ...`), or check one (`report check`).
    Report(report::ReportArgs),
    /// Access requests, approvals and break-glass access (custodian controls).
    Access {
        #[command(flatten)]
        server: client::ServerArgs,
        #[command(subcommand)]
        command: access::AccessCommand,
    },
    /// Propose, sign and activate policy sets.
    Policy {
        #[command(flatten)]
        server: client::ServerArgs,
        #[command(subcommand)]
        command: custody_cli::PolicyCommand,
    },
    /// Submit, sign, activate and fetch algorithm releases.
    Algo {
        #[command(flatten)]
        server: client::ServerArgs,
        #[command(subcommand)]
        command: custody_cli::AlgoCommand,
    },
    /// Suspend or restore data access for a jurisdiction, with signed commands.
    KillSwitch {
        #[command(flatten)]
        server: client::ServerArgs,
        #[command(subcommand)]
        command: custody_cli::KillSwitchCommand,
    },
    /// Find subjects held at sites their residency rule does not allow, and move them.
    Residency {
        #[command(flatten)]
        server: client::ServerArgs,
        #[command(subcommand)]
        command: residency::ResidencyCommand,
    },
    /// A data subject's own history in the log (`accesses`), and its check offline against
    /// the log's key and a copy of the public log (`verify`).
    Subject {
        #[command(flatten)]
        server: client::ServerArgs,
        #[command(subcommand)]
        command: subject::SubjectCommand,
    },
    /// Run a transparency-log witness (c2sp.org/tlog-witness): cosign a log's checkpoints
    /// only if consistent with the latest it cosigned.
    Witness {
        #[command(subcommand)]
        command: witness::WitnessCommand,
    },
    /// Print a shell completion script, e.g. `source <(sovereign completion bash)`, or into
    /// ~/.local/share/bash-completion/completions/sovereign.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (roff) of sovereign and every subcommand into a folder:
    /// `man -l man/sovereign-audit-verify.1`, or install them under a MANPATH folder's man1.
    Man {
        /// The folder to write into (created if missing).
        #[arg(long, default_value = "man")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    // Whatever a command creates (a data folder, its stores and keys, their SQLite -wal and
    // -shm files) is private to its user: files 0600, folders 0700.
    gateway::setup::private_umask();
    // Each client connection takes a file descriptor; the usual soft limit (1024) is far
    // below `server.max_connections`.
    gateway::serve::raise_open_file_limit();
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Command::Serve { .. }
            | Command::Witness {
                command: witness::WitnessCommand::Serve { .. }
            }
    ) {
        stop_quietly_on_closed_pipe();
    }
    let default_failure = default_failure(&cli.command);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::Exit::of(&e, default_failure).code()
        }
    }
}

/// What a failure of `command` means when its error carries no more precise mark: for the
/// commands whose job is to check something, that the check failed.
fn default_failure(command: &Command) -> exit::Exit {
    let checks = match command {
        Command::Audit { command } => !matches!(command, audit::AuditCommand::Key { .. }),
        Command::Report(args) => args.is_check(),
        Command::Check { .. } => true,
        Command::Subject {
            command: subject::SubjectCommand::Verify { .. },
            ..
        } => true,
        _ => false,
    };
    if checks {
        exit::Exit::CheckFailed
    } else {
        exit::Exit::Failed
    }
}

/// Rust ignores SIGPIPE, so a command whose output goes into a pipe that closes early
/// (`sovereign residency migrate --dry-run | head`) would panic on its next print. A
/// command-line tool should simply stop, as other Unix tools do. Not for `serve`, whose
/// sockets must never kill the process.
fn stop_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: called once at start, before any thread is spawned; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            listen,
            data,
            replace_fleet_identity,
        } => serve(
            listen,
            &data,
            &gateway::StartOptions {
                replace_fleet_identity,
            },
        ),
        Command::Init {
            data,
            force,
            seed_legacy,
        } => {
            let report = gateway::setup::init(&data, force)?;
            println!(
                "initialised a default Sovereign setup in {}",
                report.data_dir.display()
            );
            for file in report.files {
                println!("  {}", file.display());
            }
            if let Some(count) = seed_legacy {
                let bar = residency::progress(count as u64, "placing legacy");
                let ids =
                    gateway::setup::seed_legacy_with_progress(&data, count, &mut |done, _| {
                        bar.set_position(done)
                    })?;
                bar.finish_and_clear();
                println!(
                    "placed {} legacy US subject(s) at {} (residency not enforced yet): `sovereign residency scan` will list them",
                    ids.len(),
                    gateway::setup::LEGACY_SITE
                );
            }
            Ok(())
        }
        Command::Token {
            data,
            sub,
            entity,
            location,
            clearance,
            role,
            ttl,
        } => {
            let now = now_unix();
            let claims = Claims {
                sub,
                iss: gateway::setup::DEV_ISSUER.to_string(),
                exp: now + i64::try_from(ttl.as_secs()).context("--ttl is too long")?,
                nbf: Some(now),
                iat: Some(now),
                entity,
                location,
                clearance,
                roles: role,
            };
            if !gateway::config::is_country_code(&claims.location) {
                return Err(monitor::failure::usage(
                    "--location must be an ISO 3166-1 alpha-2 code in upper case, like US",
                ));
            }
            // A token naming an entity the gateway does not know is refused by every
            // request: say so now, with the ones it knows.
            let config = Config::load(&data).map_err(|e| anyhow::anyhow!("{e}"))?;
            if !config.entities.contains_key(&claims.entity) {
                let known: Vec<String> = config
                    .entities
                    .iter()
                    .map(|(name, e)| format!("{name} ({}, {})", e.name, e.country))
                    .collect();
                return Err(monitor::failure::usage(format!(
                    "--entity {:?} is not an entity of {}; it declares: {}",
                    claims.entity,
                    data.join(CONFIG_FILE).display(),
                    known.join("; ")
                )));
            }
            println!("{}", mint_dev_token(&data, &claims)?);
            Ok(())
        }
        Command::Demo(args) => {
            // The demo prints its own progress; of the gateway's log it shows warnings
            // (alerts among them).
            init_logging("warn");
            demo::run(args)
        }
        Command::Bench(args) => {
            init_logging("warn");
            bench::run(args)
        }
        Command::Audit { command } => audit::run(command),
        Command::Report(args) => report::run(args),
        Command::Access { server, command } => access::run(&server, command),
        Command::Policy { server, command } => custody_cli::run_policy(&server, command),
        Command::Algo { server, command } => custody_cli::run_algo(&server, command),
        Command::KillSwitch { server, command } => custody_cli::run_kill_switch(&server, command),
        Command::Residency { server, command } => residency::run(&server, command),
        Command::Subject { server, command } => subject::run(&server, command),
        Command::Witness { command } => witness::run(command),
        Command::Completion { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "sovereign",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man { out } => {
            use clap::CommandFactory as _;
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            clap_mangen::generate_to(Cli::command(), &out)
                .with_context(|| format!("cannot write the man pages into {}", out.display()))?;
            let pages = std::fs::read_dir(&out)?
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("sovereign"))
                .count();
            println!(
                "wrote {pages} man pages into {} (read one with `man -l {}/sovereign.1`)",
                out.display(),
                out.display()
            );
            Ok(())
        }
        Command::Check {
            data,
            connect,
            json,
        } => check::run(&data, connect, json),
    }
}

fn serve(listen: SocketAddr, data: &Path, options: &gateway::StartOptions) -> anyhow::Result<()> {
    init_logging("info");
    if !data.join(CONFIG_FILE).exists() {
        gateway::setup::init(data, false)?;
        tracing::info!(data = %data.display(), "initialised a default setup");
    }
    if let Some(mode) = gateway::setup::secure_data_dir(data)? {
        tracing::warn!(
            data = %data.display(),
            "the data folder was open to other users (mode {mode:04o}); it is now private (0700)"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Opened outside the async runtime: a PostgreSQL site store's synchronous client runs a
    // runtime of its own, which cannot start inside another.
    let gateway = gateway::Gateway::open_with(data, options)?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let local = listener.local_addr()?;
        tracing::info!(data = %data.display(), "Sovereign listening on http://{local}");
        gateway.serve(listener, shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Logs to standard error at `default` level, unless SOVEREIGN_LOG says otherwise.
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SOVEREIGN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("cannot listen for SIGTERM");
        tokio::select! {
            _ = interrupt => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down: finishing requests in flight");
}
