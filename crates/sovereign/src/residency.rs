//! `sovereign residency scan | migrate`: find subjects held at sites their residency rule does
//! not allow, and move them, one subject at a time, through the gateway (which verifies each
//! copy by digest, deletes the source, destroys the source's data key and logs the evidence).
//! A migration killed midway is finished by running it again: the scan then lists only what
//! is left.

use std::io::IsTerminal;

use anyhow::bail;
use serde_json::{Value, json};

use crate::client::{Body, ServerArgs, text};

#[derive(clap::Subcommand, Debug, Clone)]
pub enum ResidencyCommand {
    /// List every subject held at a site its rule does not allow, per site, with counts.
    /// Exits non-zero when it finds any.
    Scan,
    /// Move every misplaced subject of one site to a site its rule allows.
    Migrate {
        /// The non-compliant site to empty, e.g. sg-legacy.
        #[arg(long)]
        from: String,
        /// The destination [default: the first site each subject's rule allows].
        #[arg(long)]
        to: Option<String>,
        /// Only say what would move.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(server: &ServerArgs, command: ResidencyCommand) -> anyhow::Result<()> {
    let client = server.client()?;
    let scan = client.get_json("/v1/residency/scan")?;
    match command {
        ResidencyCommand::Scan => {
            server.print(&scan, scan_summary);
            let misplaced = scan["misplaced"].as_u64().unwrap_or(0);
            if misplaced > 0 {
                return Err(monitor::failure::check_failed(format!(
                    "{misplaced} subject(s) are held at sites their residency rule does not allow"
                )));
            }
            Ok(())
        }
        ResidencyCommand::Migrate { from, to, dry_run } => {
            let subjects = subjects_at(&scan, &from);
            if dry_run {
                println!(
                    "would move {} subject(s) from {from} to {}",
                    subjects.len(),
                    to.as_deref().unwrap_or("the first site each rule allows")
                );
                for (subject, records) in &subjects {
                    println!("  {subject} ({records} records)");
                }
                return Ok(());
            }
            let progress = progress(subjects.len() as u64, "migrating");
            let mut moved = 0u64;
            let mut records = 0u64;
            for (subject, _) in &subjects {
                // The scan shows subjects by their log pseudonym, never their ids.
                let mut body = json!({"subject_pseudonym": subject, "from": from});
                if let Some(to) = &to {
                    body["to"] = json!(to);
                }
                let evidence = client
                    .post("/v1/residency/migrate", Body::Json(&body))
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "migrating {subject}: {e:#} (run the command again to resume)"
                        )
                    })?;
                moved += 1;
                records += evidence["records"].as_u64().unwrap_or(0);
                progress.inc(1);
                if server.json {
                    println!("{evidence}");
                }
            }
            progress.finish_and_clear();
            println!(
                "moved {moved} subject(s) ({records} records) out of {from}; each copy was verified by digest, the source deleted and its data key destroyed"
            );
            let after = client.get_json("/v1/residency/scan")?;
            let left = subjects_at(&after, &from).len();
            if left > 0 {
                bail!("{left} subject(s) are still misplaced at {from}: run the migration again");
            }
            Ok(())
        }
    }
}

/// (subject, records) of the misplaced subjects at `site`, from a scan.
fn subjects_at(scan: &Value, site: &str) -> Vec<(String, u64)> {
    scan["sites"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| text(s, "site") == site)
        .flat_map(|s| s["items"].as_array().cloned().unwrap_or_default())
        .map(|item| {
            (
                text(&item, "subject").to_string(),
                item["records"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn scan_summary(scan: &Value) -> String {
    if scan["ok"] == json!(true) {
        return "residency scan: OK, every subject is held at a site its rule allows\n".into();
    }
    let mut out = format!(
        "residency scan: FAILED, {} subject(s) held at sites their rule does not allow\n",
        scan["misplaced"]
    );
    for site in scan["sites"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {}: {} subject(s), {} record(s)\n",
            text(site, "site"),
            site["subjects"],
            site["records"]
        ));
    }
    out
}

/// A progress bar over `total` subjects on a terminal (`doing` them); nothing otherwise.
pub fn progress(total: u64, doing: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{doing} [{{bar:40}}] {{human_pos}}/{{human_len}} subjects ({{per_sec}}, eta {{eta}})"
        ))
        .expect("a valid progress template")
        .progress_chars("=> "),
    );
    bar
}
