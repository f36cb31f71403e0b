//! `sovereign subject accesses | verify`: a data subject's own history in the log, as the
//! gateway answers it (every entry about them, newest first, each proven), and its check
//! offline (`monitor::subject::check_history`): every entry in the log's signed tree and
//! shown as logged, and with `--mirror`, a copy of the public log, none left out.

use std::io::Read as _;
use std::path::PathBuf;

use monitor::failure::usage;
use monitor::subject::{History, HistoryPage};

use monitor::{Silent, load_verifier};

use crate::audit::WitnessArgs;
use crate::client::{Client, ServerArgs, segment};

#[derive(clap::Subcommand, Debug, Clone)]
pub enum SubjectCommand {
    /// Every log entry about a subject since its last erasure, newest first: who (entity,
    /// location, roles; by id only where the gateway is configured to show ids, though the
    /// log's entries the answer carries hold them) did what, to which collections and field
    /// classes, with what outcome, for which purpose, under which grant. Under the default
    /// policies only the subject's own token may (`sovereign token --sub ID --entity public
    /// --role data-subject`). With --json the answer, with its checkpoint, proofs and the
    /// subject's log pseudonym, is what `subject verify` checks.
    Accesses {
        /// The subject's id.
        id: String,
        /// Entries below this log index (the `next_before` a page gave).
        #[arg(long)]
        before: Option<u64>,
        /// Entries per page [default: the gateway's history.page_size, 100].
        #[arg(long)]
        limit: Option<usize>,
        /// Fetch every page, oldest last, into one history (`{"pages": [...]}` with --json).
        #[arg(long)]
        all: bool,
        /// Also write the history as JSON into FILE, for `subject verify`.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Check a history offline: each page's checkpoint signed by the log (and cosigned by
    /// the witnesses' quorum, if given), each entry in the tree at its index, about the
    /// subject's pseudonym and shown as logged. With --mirror, a copy of the public log
    /// verified whole: no entry about the pseudonym left out. Exit 1 names what is wrong.
    Verify {
        /// The history: a file `subject accesses --json` or `--out` wrote, or - for stdin.
        file: PathBuf,
        /// The log's verifier key (name+keyid+base64), or @FILE (`sovereign audit key`).
        #[arg(long)]
        key: String,
        /// A copy of the public log to check completeness against: a directory, a file://
        /// URL, a static mirror's URL, or a gateway's base URL. A copy the gateway does not
        /// serve (or witnesses) is what shows a log forked for you alone.
        #[arg(long, value_name = "DIR|URL")]
        mirror: Option<String>,
        /// Your log pseudonym, if you know it already (from an earlier history): the history
        /// must be of it. Otherwise the pseudonym is the gateway's word.
        #[arg(long)]
        pseudonym: Option<String>,
        #[command(flatten)]
        witnesses: WitnessArgs,
    },
}

pub fn run(server: &ServerArgs, command: SubjectCommand) -> anyhow::Result<()> {
    match command {
        SubjectCommand::Accesses {
            id,
            before,
            limit,
            all,
            out,
        } => accesses(server, &id, before, limit, all, out),
        SubjectCommand::Verify {
            file,
            key,
            mirror,
            pseudonym,
            witnesses,
        } => verify(
            server.json,
            &file,
            &key,
            (mirror.as_deref(), pseudonym.as_deref()),
            &witnesses,
        ),
    }
}

fn accesses(
    server: &ServerArgs,
    id: &str,
    before: Option<u64>,
    limit: Option<usize>,
    all: bool,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    let client = server.client()?;
    let mut pages = vec![page(&client, id, before, limit)?];
    while all && let Some(next) = pages.last().and_then(|p| p.next_before) {
        // Each page must go further back, or a gateway could keep this loop going.
        let last = pages.last().map_or(0, |p| p.below);
        if next >= last {
            return Err(monitor::failure::check_failed(format!(
                "the gateway's page below {last} says the next starts below {next}, which goes no further back"
            )));
        }
        pages.push(page(&client, id, Some(next), limit)?);
    }
    // The log grew while the pages were fetched: the proofs that their checkpoints are of one
    // log go with them, for an offline check.
    let consistency = monitor::subject::sizes_to_link(&pages)
        .into_iter()
        .map(|(from, to)| {
            let answer = client.get_json(&format!("/log/proof/consistency?from={from}&to={to}"))?;
            serde_json::from_value(answer)
                .map_err(|e| anyhow::anyhow!("the gateway's consistency proof does not parse: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let history = History { pages, consistency };
    let document = if history.pages.len() == 1 && !all {
        serde_json::to_value(&history.pages[0])?
    } else {
        serde_json::to_value(&history)?
    };
    if let Some(path) = &out {
        std::fs::write(path, serde_json::to_vec_pretty(&document)?)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    if server.json {
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        print!("{}", table(id, &history.pages));
        if let Some(path) = &out {
            println!(
                "written to {}: `sovereign subject verify {} --key ... --mirror ...` checks it",
                path.display(),
                path.display()
            );
        }
    }
    Ok(())
}

fn page(
    client: &Client,
    id: &str,
    before: Option<u64>,
    limit: Option<usize>,
) -> anyhow::Result<HistoryPage> {
    let mut query = Vec::new();
    if let Some(b) = before {
        query.push(format!("before={b}"));
    }
    if let Some(l) = limit {
        query.push(format!("limit={l}"));
    }
    let mut path = format!("/v1/subjects/{}/accesses", segment(id));
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let answer = client.get_json(&path)?;
    serde_json::from_value(answer)
        .map_err(|e| anyhow::anyhow!("the gateway's answer is not a history page: {e}"))
}

/// The pages as a table, newest first.
fn table(id: &str, pages: &[HistoryPage]) -> String {
    let Some(first) = pages.first() else {
        return String::new();
    };
    let shown: usize = pages.iter().map(|p| p.entries.len()).sum();
    let mut out = format!(
        "{} entr{} about {id} in the log below its checkpoint of {} entries{} (log pseudonym {}); {shown} shown, newest first\n",
        first.total,
        if first.total == 1 { "y" } else { "ies" },
        first.size,
        if first.since > 0 {
            format!(", since its erasure at {}", first.since - 1)
        } else {
            String::new()
        },
        first.pseudonym
    );
    if shown > 0 {
        out.push_str(&format!(
            "{:>8}  {:<24}  {:<24}  {:<8}  {:<28}  {:<16}  {}\n",
            "INDEX", "TIME", "ACTION", "OUTCOME", "WHO", "PURPOSE", "WHAT"
        ));
    }
    for entry in pages.iter().flat_map(|p| &p.entries) {
        let s = &entry.shown;
        let who = s.accessor.as_ref().map_or_else(
            || "-".to_string(),
            |a| {
                let mut who = format!("{} in {}", a.entity, a.location);
                if !a.roles.is_empty() {
                    who.push_str(&format!(" ({})", a.roles.join(",")));
                }
                if let Some(id) = &a.id {
                    who = format!("{id}: {who}");
                }
                who
            },
        );
        let mut what = s.collections.join(",");
        if !s.field_classes.is_empty() {
            what.push_str(&format!(" [{}]", s.field_classes.join(",")));
        }
        if let Some(g) = &s.grant {
            what.push_str(&format!(" grant {} ({})", g.id, g.kind));
        }
        out.push_str(&format!(
            "{:>8}  {:<24}  {:<24}  {:<8}  {:<28}  {:<16}  {}\n",
            entry.index,
            s.time,
            s.action,
            s.outcome.as_deref().unwrap_or("-"),
            who,
            if s.purpose.is_empty() {
                "-"
            } else {
                &s.purpose
            },
            what.trim()
        ));
    }
    if let Some(next) = pages.last().and_then(|p| p.next_before) {
        out.push_str(&format!("more: --before {next} (or --all)\n"));
    }
    out
}

/// `subject verify`: `against` is the mirror and the pinned pseudonym, if given.
fn verify(
    json: bool,
    file: &PathBuf,
    key: &str,
    against: (Option<&str>, Option<&str>),
    witnesses: &WitnessArgs,
) -> anyhow::Result<()> {
    let (mirror, pseudonym) = against;
    let verifier = load_verifier(key)?;
    let policy = witnesses.policy()?;
    let bytes = if file.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| usage(format!("reading the history from stdin: {e}")))?;
        bytes
    } else {
        std::fs::read(file).map_err(|e| usage(format!("reading {}: {e}", file.display())))?
    };
    let history = History::from_json(&bytes)?;
    let mirror = match mirror {
        Some(url) => Some(monitor::open_log(&monitor::fetch::resolve_log_url(url)?)?),
        None => None,
    };
    let trust = monitor::subject::Trust {
        log: &verifier,
        witnesses: (policy.quorum > 0).then_some(&policy),
        pseudonym,
    };
    let mut progress: Box<dyn monitor::Progress> = if json {
        Box::new(Silent)
    } else {
        Box::new(crate::audit::Progress::new("subject verify"))
    };
    let checked =
        monitor::subject::check_history(&history, &trust, mirror.as_deref(), &mut *progress)
            .map_err(|e| e.context("subject verify: FAILED"))?;
    if json {
        println!("{}", serde_json::json!({"ok": true, "check": checked}));
    } else {
        println!("{checked}");
    }
    Ok(())
}
