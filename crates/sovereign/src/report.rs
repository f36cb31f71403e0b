//! `sovereign report`: a signed transparency report of one period, computed from the
//! verified log, and its check (the work is the `monitor` crate's [`monitor::report`]).
//!
//! * `sovereign report --url LOG --from DATE --to DATE --signer KEY` verifies the whole
//!   log as `audit verify` does, counts, and writes `PREFIX.json`, `PREFIX.md` and
//!   `PREFIX.sig` (a C2SP signed note naming the period, the checkpoint and the SHA-256
//!   of both files);
//! * `sovereign report check PREFIX.json ...` checks the signature and the digests, that
//!   the report's checkpoint is signed by the log and consistent with the log as served
//!   now, computes the figures again from the log and compares them member by member.

use std::io::Write;
use std::path::{Path, PathBuf};

use monitor::report::{Period, key_name, key_served_by, parse_from, parse_to};
use monitor::{load_verifier, load_verifier_of, open_log};
use tlog::hash_to_base64;

use crate::audit::Progress;

/// `sovereign report ...`: write a signed report of a period, or check one.
///
/// Without a subcommand it writes a report; `report check` checks one. The flags of the
/// first are required only when no subcommand is given.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ReportArgs {
    #[command(subcommand)]
    command: Option<ReportCommand>,
    #[command(flatten)]
    log: crate::audit::LogUrl,
    /// The log's verifier key (name+keyid+base64), or @FILE to read it from FILE
    /// [default: the key the log serves at URL/key, trusted on first use].
    #[arg(long, value_name = "VKEY|@FILE")]
    key: Option<String>,
    /// Start of the period, included: YYYY-MM-DD (midnight UTC) or an RFC 3339 time in UTC (Z).
    #[arg(long, required = true, value_name = "DATE", value_parser = parse_from)]
    from: Option<i64>,
    /// End of the period: YYYY-MM-DD includes that whole day (UTC); an RFC 3339 time
    /// is excluded.
    #[arg(long, required = true, value_name = "DATE", value_parser = parse_to)]
    to: Option<i64>,
    /// The signed-note signer key file that signs the report, e.g.
    /// sovereign-data/keys/custodian.key.
    #[arg(long, required = true, value_name = "KEYFILE")]
    signer: Option<PathBuf>,
    /// Where to write PREFIX.json, PREFIX.md and PREFIX.sig
    /// [default: sovereign-report-FROM-TO in the current directory].
    #[arg(long, value_name = "PREFIX")]
    out: Option<PathBuf>,
    /// Print what was written as one JSON object: the files, the checkpoint, the signer.
    #[arg(long = "json")]
    print_json: bool,
}

#[derive(clap::Subcommand, Debug)]
enum ReportCommand {
    /// Check a report: its signature and digests, its checkpoint against the log as served
    /// now, and its figures computed again from the log. Exits 0 only if all hold.
    Check(CheckArgs),
}

/// `sovereign report check`.
#[derive(clap::Args, Debug, Clone)]
struct CheckArgs {
    /// The report's JSON (PREFIX.json).
    json: PathBuf,
    /// The report's signed note [default: PREFIX.sig].
    #[arg(long, value_name = "FILE")]
    sig: Option<PathBuf>,
    /// The verifier key of whoever signed the report (name+keyid+base64), or @FILE,
    /// e.g. @sovereign-data/keys/custodian.vkey.
    #[arg(long, value_name = "VKEY|@FILE")]
    signer_key: String,
    #[command(flatten)]
    log: crate::audit::LogUrl,
    /// The log's verifier key (name+keyid+base64), or @FILE.
    #[arg(long, value_name = "VKEY|@FILE")]
    key: String,
    /// The report's Markdown [default: PREFIX.md, if it exists].
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Print the result as one JSON object: `{"ok", "checked": [line...]}`.
    #[arg(long = "json")]
    print_json: bool,
    #[command(flatten)]
    witnesses: crate::audit::WitnessArgs,
}

impl ReportArgs {
    /// Whether this is `report check`.
    pub fn is_check(&self) -> bool {
        matches!(self.command, Some(ReportCommand::Check(_)))
    }
}

/// Runs `sovereign report`, printing on standard output (warnings and progress go to
/// standard error).
pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match args.command {
        Some(ReportCommand::Check(args)) => {
            check(&args, &mut out).map_err(|e| e.context("report check: FAILED"))
        }
        None => {
            // Clap requires these when no subcommand is given.
            let required = "required by clap without a subcommand";
            let period = Period::new(args.from.expect(required), args.to.expect(required))?;
            make(
                &args.log,
                args.key.as_deref(),
                period,
                &args.signer.expect(required),
                args.out,
                args.print_json,
                &mut out,
            )
            .map_err(|e| e.context("report"))
        }
    }
}

// ---------------------------------------------------------------------------
// sovereign report

fn make(
    log_url: &crate::audit::LogUrl,
    key: Option<&str>,
    period: Period,
    signer_file: &Path,
    prefix: Option<PathBuf>,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    // Everything that can be wrong with the arguments is found before the log is read.
    let signer = custody::statement::load_signer(signer_file)
        .map_err(|e| monitor::failure::usage(format!("--signer: {e}")))?;
    if let Some(key) = key {
        load_verifier(key)?;
    }
    let url = &log_url.resolve()?;
    let log = open_log(url)?;
    let verifier = match key {
        Some(key) => load_verifier(key)?,
        None => {
            let verifier = key_served_by(&*log, url)?;
            eprintln!(
                "warning: no --key: using the key the log itself serves at {}/key ({}), trusted on first use; monitors should pass --key with a key obtained elsewhere",
                url.trim_end_matches('/'),
                key_name(&verifier)
            );
            verifier
        }
    };
    let written = monitor::report::make(
        url,
        &*log,
        &verifier,
        period,
        &signer,
        prefix,
        &mut Progress::new("report"),
    )?;

    if let Some(to) = &written.ends_in_future {
        eprintln!(
            "note: the period ends in the future ({to}): entries logged after this checkpoint are not in this report"
        );
    }
    if json {
        let answer = serde_json::json!({
            "ok": true,
            "json": written.json.display().to_string(),
            "markdown": written.markdown.display().to_string(),
            "sig": written.sig.display().to_string(),
            "signer": key_name(&signer.verifier()),
            "checkpoint": monitor::verify::checkpoint_json(&written.checkpoint),
        });
        writeln!(out, "{answer}")?;
        return Ok(());
    }
    writeln!(out, "report: wrote {}", written.json.display())?;
    writeln!(out, "report: wrote {}", written.markdown.display())?;
    writeln!(
        out,
        "report: wrote {} (signed by {})",
        written.sig.display(),
        key_name(&signer.verifier())
    )?;
    let checkpoint = &written.checkpoint;
    writeln!(
        out,
        "computed from the first {} entries of {} (root hash {})",
        checkpoint.size,
        checkpoint.origin,
        hash_to_base64(&checkpoint.hash)
    )?;
    writeln!(out)?;
    writeln!(out, "{}", written.summary)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// sovereign report check

fn check(args: &CheckArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let signer = load_verifier_of("--signer-key", &args.signer_key)?;
    let log_key = load_verifier(&args.key)?;
    let witnesses = args.witnesses.policy()?;
    let checked = monitor::report::check(
        &args.json,
        args.sig.as_deref(),
        &signer,
        &monitor::report::LogToCheck {
            url: &args.log.resolve_for(Some(&args.key), &args.witnesses)?,
            key: &log_key,
            witnesses: &witnesses,
        },
        args.markdown.as_deref(),
        &mut Progress::new("report check"),
    )?;
    if args.print_json {
        let text = checked.to_string();
        let lines: Vec<&str> = text.lines().collect();
        writeln!(out, "{}", serde_json::json!({"ok": true, "checked": lines}))?;
        return Ok(());
    }
    write!(out, "report check: OK\n{checked}")?;
    Ok(())
}
