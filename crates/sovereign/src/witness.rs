//! `sovereign witness`: run a C2SP tlog-witness (the `witness` crate) for logs given by
//! their verifier keys: its key pair, serving `add-checkpoint`, and the evidence it kept.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use clap::Subcommand;
use tlog::cosignature::WitnessKey;
use tlog::note::Verifier;

#[derive(Subcommand)]
pub enum WitnessCommand {
    /// Write a new witness key pair into a data folder (never replacing a key) and print
    /// its verifier key.
    Init {
        /// The witness's data folder (created 0700).
        #[arg(long)]
        data: PathBuf,
        /// The witness's name, as its cosignatures carry it: a schema-less URL such as
        /// witness.example.org/w1.
        #[arg(long)]
        name: String,
    },
    /// Print the witness's verifier key (a C2SP vkey of type 0x04), which logs and their
    /// clients configure to trust its cosignatures.
    Key {
        #[arg(long)]
        data: PathBuf,
    },
    /// Serve POST /add-checkpoint (c2sp.org/tlog-witness) for the logs whose keys are
    /// given; prints the verifier key, and stops on SIGTERM or Ctrl-C.
    Serve {
        #[arg(long)]
        data: PathBuf,
        /// Address to listen on; the submission prefix is the server's root.
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: SocketAddr,
        /// A log to witness: its verifier key (the vkey of its checkpoints, as
        /// `sovereign audit key` prints it or a gateway serves at /log/key), or @FILE holding
        /// one. Repeatable; at least one.
        #[arg(long = "log", value_name = "VKEY", required = true)]
        logs: Vec<String>,
    },
    /// List the refused inconsistent checkpoints the witness kept as evidence (also while
    /// it serves): proven forks (another root signed by the log for a size it cosigned) and
    /// unverified inconsistencies (a consistency proof that failed), with their repeats.
    Evidence {
        #[arg(long)]
        data: PathBuf,
        /// Print the request kept as evidence number ID instead: the add-checkpoint body,
        /// its checkpoint with only the log's signatures.
        #[arg(long, value_name = "ID", conflicts_with = "held")]
        body: Option<i64>,
        /// Print the log's checkpoint the witness held when it refused evidence number ID
        /// instead (for a fork: the other root, signed by the log).
        #[arg(long, value_name = "ID")]
        held: Option<i64>,
    },
}

pub fn run(command: WitnessCommand) -> anyhow::Result<()> {
    match command {
        WitnessCommand::Init { data, name } => {
            let vkey = witness::init(&data, &name)?;
            eprintln!(
                "wrote the witness key pair {} and {}",
                data.join(witness::KEY_FILE).display(),
                data.join(witness::VKEY_FILE).display()
            );
            println!("{vkey}");
            Ok(())
        }
        WitnessCommand::Key { data } => {
            println!("{}", witness::read_key(&data)?);
            Ok(())
        }
        WitnessCommand::Serve { data, listen, logs } => serve(&data, listen, &logs),
        WitnessCommand::Evidence { data, body, held } => evidence(&data, body, held),
    }
}

fn serve(data: &Path, listen: SocketAddr, logs: &[String]) -> anyhow::Result<()> {
    crate::init_logging("info");
    let logs = logs
        .iter()
        .map(|arg| load_log_key(arg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let witness = witness::Witness::open(data, logs)?;
    let vkey = witness.witness_key();
    let origins = witness.origins().join(", ");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let local = listener.local_addr()?;
        println!("{vkey}");
        tracing::info!(data = %data.display(), witness = %vkey, logs = %origins, "witness listening on http://{local}");
        witness::http::serve(
            listener,
            Arc::new(witness),
            witness::http::ServeOptions::default(),
            crate::shutdown_signal(),
        )
        .await;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Parses `--log`: a log's verifier key, or `@FILE` holding one; says which kind of key
/// it got instead when it is not one.
fn load_log_key(arg: &str) -> anyhow::Result<Verifier> {
    let (text, source) = match arg.strip_prefix('@') {
        Some(file) => (
            std::fs::read_to_string(file)
                .with_context(|| format!("reading the key file {file}"))?,
            format!("the key in {file}"),
        ),
        None if Path::new(arg).is_file() => {
            bail!("--log {arg}: to read the key from that file, write --log @{arg}")
        }
        // Not echoed: it might be a private key given by mistake.
        None => (arg.to_string(), "the --log key".to_string()),
    };
    let text = text.trim();
    if text.starts_with("PRIVATE+KEY+") {
        bail!("{source} is a private signer key; give the log's verifier key");
    }
    if WitnessKey::new(text).is_ok() {
        bail!(
            "{source} is a witness's cosignature key (type 0x04); --log takes a log's verifier key (type 0x01)"
        );
    }
    Verifier::new(text).map_err(|e| {
        anyhow!("{source} is not a log's verifier key (name+keyid+base64 of type 0x01): {e}")
    })
}

fn evidence(data: &Path, body: Option<i64>, held: Option<i64>) -> anyhow::Result<()> {
    if !data.is_dir() {
        bail!("{} is not a folder", data.display());
    }
    if let Some(id) = body {
        let body = witness::read_evidence_body(data, id)?
            .ok_or_else(|| anyhow!("no evidence number {id} in {}", data.display()))?;
        std::io::stdout().write_all(&body)?;
        return Ok(());
    }
    if let Some(id) = held {
        let held = witness::read_evidence_held(data, id)?
            .ok_or_else(|| anyhow!("no evidence number {id} in {}", data.display()))?
            .ok_or_else(|| {
                anyhow!(
                    "evidence number {id} records no held checkpoint (the log had none cosigned, \
                     or the evidence was kept by an older witness)"
                )
            })?;
        std::io::stdout().write_all(&held)?;
        return Ok(());
    }
    let list = witness::read_evidence(data)?;
    if list.kept.is_empty() && list.dropped.is_empty() {
        println!("no evidence: the witness has refused no inconsistent checkpoint");
        return Ok(());
    }
    let time =
        |secs: u64| humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs));
    for e in &list.kept {
        let kind = match e.kind {
            witness::EvidenceKind::Fork => "PROVEN FORK (same size, other root)",
            witness::EvidenceKind::Inconsistent => {
                "unverified inconsistency (the consistency proof failed)"
            }
        };
        let seen = if e.times > 1 {
            format!("refused {} times, last {}", e.times, time(e.last_time))
        } else {
            "refused once".to_string()
        };
        println!(
            "#{} {} {}: {kind}: old size {}, checkpoint size {}, latest cosigned size {}; {seen}: {}",
            e.id,
            time(e.time),
            e.origin,
            e.old_size,
            e.size,
            e.latest_size,
            e.reason
        );
    }
    for d in &list.dropped {
        let what = match d.kind {
            Some(witness::EvidenceKind::Fork) => "proven forks",
            Some(witness::EvidenceKind::Inconsistent) => "unverified inconsistencies",
            None => "refusals (forks or failed proofs, from before kinds were counted apart)",
        };
        println!(
            "{}: {} more {what} refused but not kept (at most {} or {} MiB kept per log and kind)",
            d.origin,
            d.count,
            witness::MAX_EVIDENCE_PER_LOG,
            witness::MAX_EVIDENCE_BYTES_PER_LOG >> 20
        );
    }
    Ok(())
}
