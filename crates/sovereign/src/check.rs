//! `sovereign check [--connect]`: a data folder's configuration and policies checked without
//! serving; with `--connect`, also what a start would reach: every configured store, the
//! solver, and the modes of the key files.

use std::path::Path;

use anyhow::Context as _;
use gateway::config::{CONFIG_FILE, Config};

/// Checks the data folder `data`; with `connect`, also reaches what it names.
pub fn run(data: &Path, connect: bool, json: bool) -> anyhow::Result<()> {
    let config = Config::load(data).map_err(|e| anyhow::anyhow!("{e}"))?;
    let files = gateway::read_policy_files(&config, data)?;
    let engine = files.engine()?;
    let invariants_path = data.join(&config.policy.invariants);
    let invariants_text = std::fs::read_to_string(&invariants_path)
        .with_context(|| format!("cannot read {}", invariants_path.display()))?;
    let invariants = gateway::proof::parse_invariants(&files.schema, &invariants_text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", invariants_path.display()))?;
    let valid = serde_json::json!({
        "ok": true,
        "config": data.join(CONFIG_FILE).display().to_string(),
        "policies": engine.policy_ids().len(),
        "policy_set": engine.policy_set_hash(),
        "invariants": invariants.len(),
        "invariant_set": invariants.hash(),
    });
    if !json {
        println!(
            "{}: configuration, {} policies (policy set {}) and {} invariants (invariant set {}) are valid; whether the policies keep the invariants is proven at activation, or now with `sovereign policy prove`",
            data.join(CONFIG_FILE).display(),
            engine.policy_ids().len(),
            engine.policy_set_hash(),
            invariants.len(),
            invariants.hash()
        );
    }
    if !connect {
        if json {
            println!("{valid}");
        }
        return Ok(());
    }

    let mut checks: Vec<(String, Result<String, String>)> = Vec::new();
    for (name, site) in &config.sites {
        checks.push((format!("site {name}"), reach(data, &site.store)));
    }
    checks.push(("log".into(), reach(data, &config.log.store)));
    checks.push((
        "custody".into(),
        reach(data, &config.custody.store.to_string_lossy()),
    ));
    checks.push(("data keys".into(), reach(data, &config.keys.store)));
    let shipped = gateway::proof::shipped_proofs(engine.policy_set_hash(), invariants.hash());
    checks.push(("solver".into(), solver(&config, shipped.is_some())));
    checks.extend(key_modes(data));

    let failed = checks.iter().filter(|(_, r)| r.is_err()).count();
    if json {
        let mut answer = valid;
        answer["ok"] = (failed == 0).into();
        answer["checks"] = checks
            .iter()
            .map(|(what, result)| match result {
                Ok(detail) => serde_json::json!({"what": what, "ok": true, "detail": detail}),
                Err(problem) => serde_json::json!({"what": what, "ok": false, "detail": problem}),
            })
            .collect();
        println!("{answer}");
    } else {
        for (what, result) in &checks {
            match result {
                Ok(detail) => println!("  ok    {what}: {detail}"),
                Err(problem) => println!("  FAIL  {what}: {problem}"),
            }
        }
    }
    if failed > 0 {
        return Err(monitor::failure::check_failed(format!(
            "{failed} of {} checks failed",
            checks.len()
        )));
    }
    if !json {
        println!("every store, the solver and the key files are as a start needs them");
    }
    Ok(())
}

/// Reaches one store: a PostgreSQL URL is connected to and asked `SELECT 1`; a SQLite file
/// (`sqlite:PATH` or a path, relative to the data folder) must be readable, or not exist yet
/// (the first start creates it).
fn reach(data: &Path, store: &str) -> Result<String, String> {
    if pgconn::is_postgres_url(store) {
        let target = pgconn::Target::parse(store).map_err(|e| e.to_string())?;
        let mut client = target.connect().map_err(|e| e.to_string())?;
        client
            .simple_query("SELECT 1")
            .map_err(|e| format!("{}: {e}", target.name()))?;
        return Ok(format!("PostgreSQL {} answers", target.name()));
    }
    let path = data.join(store.strip_prefix("sqlite:").unwrap_or(store));
    match std::fs::File::open(&path) {
        Ok(_) => Ok(format!("SQLite {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(format!(
            "SQLite {} (not created yet: the first start creates it)",
            path.display()
        )),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The solver the gateway proves policy sets with. Without one, a setup whose files are the
/// unchanged defaults still starts (with the proofs shipped in the binary): that is said, not
/// failed; any other setup cannot start.
fn solver(config: &Config, defaults_shipped: bool) -> Result<String, String> {
    let solver = match &config.policy.solver {
        Some(path) => prove::Solver::at(path),
        None => prove::Solver::from_env(),
    };
    match solver {
        Ok(s) => Ok(format!("{} {}", s.name(), s.version())),
        Err(e) if defaults_shipped => Ok(format!(
            "none ({e}); these unchanged default policies start with the proofs shipped in this binary, but any policy change will need the solver"
        )),
        Err(e) => Err(format!(
            "{e}; these policies are not the defaults whose proofs ship with this binary, so a first start needs the solver"
        )),
    }
}

/// Every file under `keys/`: readable by its owner only (0600 or stricter).
fn key_modes(data: &Path) -> Vec<(String, Result<String, String>)> {
    let folder = data.join("keys");
    let entries = match std::fs::read_dir(&folder) {
        Ok(entries) => entries,
        Err(e) => {
            return vec![(
                "key files".into(),
                Err(format!("{}: {e}", folder.display())),
            )];
        }
    };
    let mut checks = Vec::new();
    let mut fine = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                checks.push((
                    format!("key file {}", path.display()),
                    Err(format!(
                        "mode {mode:04o}: others may read it; `chmod 600 {}`",
                        path.display()
                    )),
                ));
                continue;
            }
        }
        fine += 1;
    }
    checks.push((
        "key files".into(),
        Ok(format!(
            "{fine} in {} readable by their owner only",
            folder.display()
        )),
    ));
    checks
}
