//! `sovereign policy`, `sovereign algo` and `sovereign kill-switch`: the custodian's signed
//! statements.
//!
//! A policy set, an algorithm release or a kill-switch command takes effect only with a
//! statement signed by enough custodian keys (C2SP signed notes, crate `custody`). Signing
//! happens here, on the custodian's machine, from what the signer can check for
//! themselves: `policy sign` recomputes the policy set's hash from the text it fetched
//! and loads it with the same Cedar validation the gateway uses; `algo sign` hashes the
//! artifact file it is given. The gateway only verifies signatures and applies.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use custody::statement::{self, KillCommand, Statement};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tlog::note::{NoteError, Signer, Verifier};

use crate::client::{Body, Client, ServerArgs, joined, segment, text};

// ---------------------------------------------------------------------------
// Commands

/// `sovereign policy ...`
#[derive(clap::Subcommand, Debug, Clone)]
pub enum PolicyCommand {
    /// A what-if decision, not logged: decide one request described by the flags with the
    /// gateway's active policy set (or --set HASH, or --file), and show the policies that
    /// determined it (like `opa eval --explain`).
    Eval(Box<crate::policy_eval::EvalArgs>),
    /// Propose a Cedar policy set; prints its hash and the statement custodians sign.
    Propose {
        /// The Cedar policies.
        file: PathBuf,
        /// A Cedar schema [default: the active policy set's schema].
        #[arg(long)]
        schema: Option<PathBuf>,
    },
    /// Sign the activation of a policy set with a custodian key: a proposed set by its hash
    /// (fetched, its text checked against the hash), or a local policies file (as
    /// `sign-file`, with --schema or Sovereign's schema).
    Sign {
        /// The policy set's hash (or a unique prefix of one the gateway lists), or a
        /// policies file.
        #[arg(value_name = "HASH|FILE")]
        target: String,
        /// The schema of a policies file [default: Sovereign's].
        #[arg(long)]
        schema: Option<PathBuf>,
        #[command(flatten)]
        signing: Signing,
    },
    /// Sign the activation of a policy set held in local files, offline: for the first
    /// policy set of a setup (`policy.signature` in sovereign.toml), or to review and sign
    /// a set before anyone proposes it.
    SignFile {
        /// The Cedar policies.
        file: PathBuf,
        /// The Cedar schema.
        #[arg(long)]
        schema: PathBuf,
        #[command(flatten)]
        signing: Signing,
    },
    /// Sign the activation of an invariants file, offline: for the first start of a setup
    /// (`policy.invariants_signature` in sovereign.toml) and whenever the file changes. The
    /// file is checked against the schema first; the statement names its canonical hash.
    SignInvariants {
        /// The invariants file (Cedar policies annotated `@invariant("name")`), or the hash
        /// (or a unique prefix) of an invariant set proposed to the gateway.
        #[arg(value_name = "FILE|HASH")]
        target: String,
        /// The Cedar schema the invariants are checked against [default: Sovereign's].
        #[arg(long)]
        schema: Option<PathBuf>,
        #[command(flatten)]
        signing: Signing,
    },
    /// Propose an invariant set (a file of Cedar policies annotated `@invariant("name")`):
    /// the gateway proves the active policy set keeps it; prints its hash and the statement
    /// custodians sign with `sovereign policy sign-invariants FILE`.
    ProposeInvariants {
        /// The invariants.
        file: PathBuf,
    },
    /// Put a proposed invariant set in force with its signed activation statement (the
    /// active policy set is proven to keep it again first).
    ActivateInvariants {
        hash: String,
        /// The signed note (from `policy sign-invariants`).
        #[arg(long)]
        signature: PathBuf,
    },
    /// Print the default invariants (the reference scenario's promises) for the given
    /// restricted countries, to start an invariants file from.
    Invariants {
        /// Restricted countries.
        #[arg(long, value_delimiter = ',', default_value = "CN,RU,IR,KP")]
        restricted: Vec<String>,
    },
    /// Activate a proposed policy set with its signed activation statement.
    Activate {
        hash: String,
        /// The signed note (from `policy sign`).
        #[arg(long)]
        signature: PathBuf,
    },
    /// Prove, offline, that a policy set implies every invariant and that no policy can
    /// error, with Cedar's symbolic compiler and the cvc5 solver (`CVC5` names it, or `cvc5`
    /// on PATH); prints counterexamples and exits non-zero unless everything is proven.
    Prove {
        /// The Cedar policy files; the set is their concatenation.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The Cedar schema [default: Sovereign's].
        #[arg(long)]
        schema: Option<PathBuf>,
        /// A file of invariants (Cedar policies annotated `@invariant("name")`)
        /// [default: the reference scenario's invariants for --restricted].
        #[arg(long)]
        invariants: Option<PathBuf>,
        /// Restricted countries, for the default invariants.
        #[arg(long, value_delimiter = ',', default_value = "CN,RU,IR,KP")]
        restricted: Vec<String>,
        /// Longest time one solver query may take, like 10s; a query that takes longer
        /// counts as not proven.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// Print the proof report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the policy sets the gateway knows.
    List,
    /// Show one policy set, with its text.
    Show { hash: String },
}

/// `sovereign algo ...`
#[derive(clap::Subcommand, Debug, Clone)]
pub enum AlgoCommand {
    /// Upload an algorithm artifact (a WebAssembly module) and its manifest; prints its
    /// digest and the statement to sign.
    Submit {
        /// The artifact.
        file: PathBuf,
        #[command(flatten)]
        release: Release,
        /// The manifest (JSON): what the module reads and outputs, its purpose and limits.
        /// Without one, the release is an opaque artifact that never runs.
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
    /// Sign the release of an artifact, offline: the digests are computed from FILE and the
    /// manifest, which is checked to be this release's.
    Sign {
        file: PathBuf,
        #[command(flatten)]
        release: Release,
        /// The manifest the release runs under (as submitted).
        #[arg(long)]
        manifest: Option<PathBuf>,
        #[command(flatten)]
        signing: Signing,
    },
    /// Stop an active release: it runs no more. No signature needed; running it again
    /// needs a new signed activation.
    Deactivate {
        #[command(flatten)]
        release: Release,
    },
    /// Run the active release of an algorithm for many subjects (ids from a file), resumable
    /// from a cursor file, at a bounded rate, optionally storing the outputs.
    Batch(crate::batch::BatchArgs),
    /// Run the active release of an algorithm for a subject; prints its outputs.
    Run {
        /// The algorithm's name.
        #[arg(long)]
        name: String,
        /// The subject's id.
        #[arg(long)]
        subject: String,
        /// The record read in each collection the manifest names.
        #[arg(long, default_value = "main")]
        key: String,
    },
    /// Activate a submitted release with its signed release statement.
    Activate {
        #[command(flatten)]
        release: Release,
        /// The signed note (from `algo sign`).
        #[arg(long)]
        signature: PathBuf,
    },
    /// List every release the gateway holds.
    List,
    /// List the active releases, with their signatures.
    Active,
    /// Download a release's artifact, checking its digest before writing it.
    Fetch {
        #[command(flatten)]
        release: Release,
        /// Where to write the artifact.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `sovereign kill-switch ...`
#[derive(clap::Subcommand, Debug, Clone)]
pub enum KillSwitchCommand {
    /// Suspend every data access concerning a jurisdiction's subjects.
    Suspend(KillArgs),
    /// Lift a jurisdiction's suspension.
    Lift(KillArgs),
    /// Show which jurisdictions are suspended.
    Status,
}

#[derive(clap::Args, Debug, Clone)]
pub struct KillArgs {
    /// The jurisdiction, e.g. US.
    jurisdiction: String,
    /// A custodian signer key file (repeatable: every key signs the command).
    #[arg(long = "key", required = true, num_args = 1..)]
    keys: Vec<PathBuf>,
}

/// An algorithm release: `--name N --version V`.
#[derive(clap::Args, Debug, Clone)]
pub struct Release {
    #[arg(long)]
    name: String,
    #[arg(long)]
    version: String,
}

impl Release {
    fn path(&self) -> String {
        format!(
            "/v1/algorithms/{}/{}",
            segment(&self.name),
            segment(&self.version)
        )
    }
}

/// How a statement is signed: `--key KEYFILE [--add-to NOTE] [--out FILE]`.
#[derive(clap::Args, Debug, Clone)]
pub struct Signing {
    /// Your custodian signer key file (signed-note signer key).
    #[arg(long)]
    key: PathBuf,
    /// A note other custodians already signed: add your signature to theirs.
    #[arg(long)]
    add_to: Option<PathBuf>,
    /// Where to write the signed note [default: standard output].
    #[arg(long)]
    out: Option<PathBuf>,
}

// ---------------------------------------------------------------------------
// sovereign policy

pub fn run_policy(server: &ServerArgs, command: PolicyCommand) -> anyhow::Result<()> {
    if let PolicyCommand::Prove {
        files,
        schema,
        invariants,
        restricted,
        timeout,
        json,
    } = command
    {
        return prove_offline(&files, schema, invariants, &restricted, timeout, json);
    }
    match command {
        PolicyCommand::Eval(args) => return crate::policy_eval::run(server, &args),
        PolicyCommand::SignInvariants {
            target,
            schema,
            signing,
        } => {
            let (text, expected) = if is_file_target(&target)? {
                (read_text(Path::new(&target))?, None)
            } else {
                let client = server.client()?;
                let hash = client.resolve_hash(&target, "/v1/invariants")?;
                let set = client.get_json(&format!("/v1/invariants/{hash}"))?;
                (text(&set, "text").to_string(), Some(hash))
            };
            return sign_invariants(&text, expected.as_deref(), schema.as_deref(), &signing);
        }
        PolicyCommand::Invariants { restricted } => {
            print!("{}", prove::default_invariants(&restricted));
            return Ok(());
        }
        _ => {}
    }
    let client = server.client()?;
    match command {
        PolicyCommand::Propose { file, schema } => {
            let mut body = json!({ "policies": read_text(&file)? });
            if let Some(schema) = schema {
                body["schema"] = json!(read_text(&schema)?);
            }
            let answer = client.post("/v1/policies", Body::Json(&body))?;
            server.print(&answer, |a| {
                format!(
                    "proposed policy set {} ({})\n{}to activate it, custodians sign this statement with `sovereign policy sign {} --key KEYFILE`:\n{}",
                    text(a, "hash"),
                    joined(a, "policy_ids", "no policies"),
                    proofs_summary(&a["proofs"]),
                    text(a, "hash"),
                    text(a, "statement")
                )
            });
        }
        PolicyCommand::Prove { .. }
        | PolicyCommand::Eval(_)
        | PolicyCommand::SignInvariants { .. }
        | PolicyCommand::Invariants { .. } => unreachable!("handled offline above"),
        PolicyCommand::ProposeInvariants { file } => {
            let body = json!({ "text": read_text(&file)? });
            let answer = client.post("/v1/invariants", Body::Json(&body))?;
            server.print(&answer, |a| {
                format!(
                    "proposed invariant set {} ({})\nthe active policy set keeps them: {}to activate them, custodians sign this statement with `sovereign policy sign-invariants {} --key KEYFILE`:\n{}",
                    text(a, "hash"),
                    joined(a, "invariants", "no invariants"),
                    proofs_summary(&a["proofs"]),
                    file.display(),
                    text(a, "statement")
                )
            });
        }
        PolicyCommand::ActivateInvariants { hash, signature } => activate_set(
            server,
            &client,
            "invariant set",
            "/v1/invariants",
            &hash,
            &signature,
            |invariant_set| Statement::InvariantActivation { invariant_set },
        )?,
        PolicyCommand::Sign {
            target,
            schema,
            signing,
        } if is_file_target(&target)? => {
            let schema = match schema {
                Some(path) => read_text(&path)?,
                None => policy::DEFAULT_SCHEMA.to_string(),
            };
            let policies = read_text(Path::new(&target))?;
            let hash = policy::policy_set_hash(&schema, &policies);
            sign_policy_text(&hash, &schema, &policies, &signing)?;
        }
        PolicyCommand::Sign {
            target, signing, ..
        } => sign_policy(&client, &target, &signing)?,
        PolicyCommand::SignFile {
            file,
            schema,
            signing,
        } => {
            let (schema, policies) = (read_text(&schema)?, read_text(&file)?);
            let hash = policy::policy_set_hash(&schema, &policies);
            sign_policy_text(&hash, &schema, &policies, &signing)?;
        }
        PolicyCommand::Activate { hash, signature } => activate_set(
            server,
            &client,
            "policy set",
            "/v1/policies",
            &hash,
            &signature,
            |policy_set| Statement::PolicyActivation { policy_set },
        )?,
        PolicyCommand::List => {
            let answer = client.get_json("/v1/policies")?;
            server.print(&answer, policy_list);
        }
        PolicyCommand::Show { hash } => {
            let hash = client.resolve_hash(&hash, "/v1/policies")?;
            let answer = client.get_json(&format!("/v1/policies/{hash}"))?;
            server.print(&answer, |a| {
                format!(
                    "policy set {} ({}), proposed {}, activated {}\npolicies: {}\nsigned:   {}\n{}--- schema ---\n{}\n--- policies ---\n{}\n",
                    text(a, "hash"),
                    text(a, "status"),
                    text(a, "proposed_at"),
                    or_never(text(a, "activated_at")),
                    joined(a, "policy_ids", "none"),
                    if a["signature"].is_string() { "yes" } else { "no" },
                    proofs_summary(&a["proofs"]),
                    text(a, "schema").trim_end(),
                    text(a, "policies").trim_end()
                )
            });
        }
    }
    Ok(())
}

/// Fetches the policy set, checks its text against `hash`, loads it as the gateway
/// would, and signs its activation.
fn sign_policy(client: &Client, hash: &str, signing: &Signing) -> anyhow::Result<()> {
    let hash = client.resolve_hash(hash, "/v1/policies")?;
    let set = client.get_json(&format!("/v1/policies/{hash}"))?;
    let (schema, policies) = match (set["schema"].as_str(), set["policies"].as_str()) {
        (Some(s), Some(p)) => (s, p),
        _ => bail!("the gateway's answer for policy set {hash} has no schema or policies text"),
    };
    let computed = policy::policy_set_hash(schema, policies);
    if computed != hash {
        bail!(
            "refusing to sign: the text the gateway serves for policy set {hash} hashes to {computed}; it is not the set you were asked to sign"
        );
    }
    sign_policy_text(&hash, schema, policies, signing)
}

/// Loads a policy set as the gateway would (refusing one it could not enforce) and signs
/// the activation of `hash`, its hash.
fn sign_policy_text(
    hash: &str,
    schema: &str,
    policies: &str,
    signing: &Signing,
) -> anyhow::Result<()> {
    let engine = policy::PolicyEngine::new(schema, policies).map_err(|e| {
        anyhow!("refusing to sign: policy set {hash} does not load (the gateway could not enforce it): {e}")
    })?;
    let signed = sign_statement(
        &Statement::PolicyActivation {
            policy_set: hash.to_string(),
        },
        signing,
    )?;
    let ids = engine.policy_ids();
    report(
        signing,
        &format!(
            "signed the activation of policy set {hash} as {}: {} policies: {}",
            signed.signer,
            ids.len(),
            ids.join(", ")
        ),
    );
    Ok(())
}

/// Activates the policy or invariant set `hash` (served under `route`) with the signed note
/// in `signature`, after checking that the note states `statement(hash)`; prints the answer
/// with its proofs.
fn activate_set(
    server: &ServerArgs,
    client: &Client,
    what: &str,
    route: &str,
    hash: &str,
    signature: &Path,
    statement: impl FnOnce(String) -> Statement,
) -> anyhow::Result<()> {
    let hash = client.resolve_hash(hash, route)?;
    let note = read_note(signature, &statement(hash.clone()))?;
    let answer = client.post(&format!("{route}/{hash}/activate"), Body::Text(&note))?;
    server.print(&answer, |a| {
        format!(
            "activated {what} {} at {}, signed by {}\n{}",
            text(a, "hash"),
            text(a, "activated_at"),
            joined(a, "signers", "nobody"),
            proofs_summary(&a["proofs"])
        )
    });
    Ok(())
}

/// The proofs a proposal or activation carries, one line per invariant.
fn proofs_summary(proofs: &Value) -> String {
    if !proofs.is_object() {
        return String::new();
    }
    let mut out = format!(
        "proven against invariant set {} by {} {} in {} ms:\n",
        text(proofs, "invariant_set"),
        text(proofs, "solver"),
        text(proofs, "solver_version"),
        proofs["duration_ms"]
    );
    for i in proofs["invariants"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        out.push_str(&format!(
            "  {:<40} {}\n",
            text(i, "name"),
            text(i, "result")
        ));
    }
    let policies = proofs["never_errors"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let never = policies
        .iter()
        .filter(|p| text(p, "result") == "never_errors")
        .count();
    out.push_str(&format!(
        "  {never} of {} policies never error\n",
        policies.len()
    ));
    out
}

/// `sovereign policy sign-invariants`: checks the invariants file as the gateway would and
/// signs the activation of its canonical hash.
/// Signs the activation of the invariants `text` (from a file, or the gateway's set
/// `expected`, whose hash the text must have), checked against the schema first; the
/// statement names their canonical hash.
fn sign_invariants(
    text: &str,
    expected: Option<&str>,
    schema: Option<&Path>,
    signing: &Signing,
) -> anyhow::Result<()> {
    let schema = match schema {
        Some(path) => read_text(path)?,
        None => policy::DEFAULT_SCHEMA.to_string(),
    };
    let invariants = prove::Invariants::parse_with_schema(&schema, text)
        .map_err(|e| anyhow!("refusing to sign the invariants: {e}"))?;
    if let Some(expected) = expected
        && invariants.hash() != expected
    {
        bail!(
            "the gateway's invariant set {expected} hashes to {}: it is not the set it claims to be",
            invariants.hash()
        );
    }
    let signed = sign_statement(
        &Statement::InvariantActivation {
            invariant_set: invariants.hash().to_string(),
        },
        signing,
    )?;
    let names: Vec<&str> = invariants.iter().map(|i| i.name()).collect();
    report(
        signing,
        &format!(
            "signed the activation of invariant set {} as {}: {} invariants: {}",
            invariants.hash(),
            signed.signer,
            names.len(),
            names.join(", ")
        ),
    );
    Ok(())
}

fn policy_list(answer: &Value) -> String {
    let active = text(answer, "active");
    let sets = answer["sets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let mut out = format!("active policy set: {}\n", or_never(active));
    for s in sets {
        out.push_str(&format!(
            "{}  {:<8}  proposed {}  activated {}  policies: {}\n",
            text(s, "hash"),
            text(s, "status"),
            text(s, "proposed_at"),
            or_never(text(s, "activated_at")),
            joined(s, "policy_ids", "none")
        ));
    }
    out
}

// ---------------------------------------------------------------------------
// sovereign algo

pub fn run_algo(server: &ServerArgs, command: AlgoCommand) -> anyhow::Result<()> {
    let client = server.client()?;
    match command {
        AlgoCommand::Submit {
            file,
            release,
            manifest,
        } => {
            let artifact = read_bytes(&file)?;
            let manifest = match &manifest {
                Some(path) => Some((path, checked_manifest(path, &release, &artifact)?)),
                None => None,
            };
            let mut answer = client.post(&release.path(), Body::Bytes(&artifact))?;
            if let Some((_, text)) = &manifest {
                answer = client.put(
                    &format!("{}/manifest", release.path()),
                    Body::JsonText(text),
                )?;
            }
            let sign_command = format!(
                "sovereign algo sign {}{} --name {} --version {} --key KEYFILE",
                file.display(),
                manifest
                    .as_ref()
                    .map(|(path, _)| format!(" --manifest {}", path.display()))
                    .unwrap_or_default(),
                release.name,
                release.version,
            );
            server.print(&answer, |a| {
                format!(
                    "submitted {} {}: {} bytes, sha256 {}, manifest {}; to activate it, custodians sign this statement with `{sign_command}`:\n{}",
                    text(a, "name"),
                    text(a, "version"),
                    a["size"],
                    text(a, "sha256"),
                    or_none(text(a, "manifest_sha256")),
                    text(a, "statement")
                )
            });
        }
        AlgoCommand::Sign {
            file,
            release,
            manifest,
            signing,
        } => {
            let artifact = read_bytes(&file)?;
            let sha256 = hex_sha256(&artifact);
            let manifest = match &manifest {
                Some(path) => Some(hex_sha256(
                    checked_manifest(path, &release, &artifact)?.as_bytes(),
                )),
                None => None,
            };
            let signed = sign_statement(
                &Statement::AlgorithmRelease {
                    name: release.name.clone(),
                    version: release.version.clone(),
                    sha256: sha256.clone(),
                    manifest: manifest.clone(),
                },
                &signing,
            )?;
            report(
                &signing,
                &format!(
                    "signed the release of {} {} (sha256 {sha256}, from {}; manifest {}) as {}",
                    release.name,
                    release.version,
                    file.display(),
                    manifest.as_deref().unwrap_or("none: it will never run"),
                    signed.signer
                ),
            );
        }
        AlgoCommand::Deactivate { release } => {
            let answer = client.post(&format!("{}/deactivate", release.path()), Body::Empty)?;
            server.print(&answer, |a| {
                format!(
                    "deactivated {} {}: it runs no more\n",
                    text(a, "name"),
                    text(a, "version")
                )
            });
        }
        AlgoCommand::Batch(args) => crate::batch::run(server, args)?,
        AlgoCommand::Run { name, subject, key } => {
            let answer = client.post(
                &format!("/v1/algorithms/{}/runs", segment(&name)),
                Body::Json(&serde_json::json!({"subject": subject, "key": key})),
            )?;
            server.print(&answer, |a| {
                format!(
                    "{} {} ran for {subject}: {} (fuel {}, {} µs; decisions logged at {})\n",
                    text(a, "algorithm"),
                    text(a, "version"),
                    a["output"],
                    a["fuel_used"],
                    a["duration_us"],
                    a["decisions"]
                )
            });
        }
        AlgoCommand::Activate { release, signature } => {
            let note = read_note(&signature, &release_of_note(&signature, &release)?)?;
            let answer = client.post(&format!("{}/activate", release.path()), Body::Text(&note))?;
            server.print(&answer, |a| {
                format!(
                    "activated {} {} (sha256 {}) at {}\n",
                    text(a, "name"),
                    text(a, "version"),
                    text(a, "sha256"),
                    text(a, "activated_at")
                )
            });
        }
        AlgoCommand::List => {
            let answer = client.get_json("/v1/algorithms")?;
            server.print(&answer, |a| releases(a, "no releases"));
        }
        AlgoCommand::Active => {
            let answer = client.get_json("/v1/algorithms/active")?;
            server.print(&answer, |a| releases(a, "no active releases"));
        }
        AlgoCommand::Fetch { release, out } => fetch_artifact(&client, &release, &out)?,
    }
    Ok(())
}

/// The manifest file's text, checked to be a manifest of this release and of this module:
/// what the custodian reviews and signs.
fn checked_manifest(path: &Path, release: &Release, module: &[u8]) -> anyhow::Result<String> {
    let text = read_text(path)?;
    let manifest = algorithm::Manifest::parse(text.as_bytes())
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    if manifest.name != release.name || manifest.version != release.version {
        bail!(
            "{} is the manifest of {} {}, not of {} {}",
            path.display(),
            manifest.name,
            manifest.version,
            release.name,
            release.version
        );
    }
    let sha256 = hex_sha256(module);
    if manifest.module_sha256 != sha256 {
        bail!(
            "{} names the module {}, but the artifact's SHA-256 is {sha256}",
            path.display(),
            manifest.module_sha256
        );
    }
    Ok(text)
}

fn or_none(value: &str) -> &str {
    if value.is_empty() { "none" } else { value }
}

/// The release statement a note for `release` must carry: the note names the digest,
/// which is taken from it (the gateway checks it against the stored artifact).
fn release_of_note(note_file: &Path, release: &Release) -> anyhow::Result<Statement> {
    let found = note_statement(&read_bytes(note_file)?)
        .map_err(|e| anyhow!("{}: {e}", note_file.display()))?;
    match found {
        found @ Statement::AlgorithmRelease { .. }
            if matches!(&found, Statement::AlgorithmRelease { name, version, .. }
                if *name == release.name && *version == release.version) =>
        {
            Ok(found)
        }
        other => bail!(
            "{} is a statement for {}, not the release of {} {}",
            note_file.display(),
            what(&other),
            release.name,
            release.version
        ),
    }
}

/// Downloads an artifact and checks its digest against the gateway's header and the
/// release it lists (and, for an active release, the digest its signed statement names)
/// before writing it.
fn fetch_artifact(client: &Client, release: &Release, out: &Path) -> anyhow::Result<()> {
    let expected = listed_digest(client, release)?;
    let answer = client.get_bytes(&format!("{}/artifact", release.path()))?;
    let got = hex_sha256(&answer.body);
    let label = format!("{} {}", release.name, release.version);
    if let Some(header) = &answer.sha256
        && !header.eq_ignore_ascii_case(&got)
    {
        bail!(
            "the artifact of {label} does not match its digest: the gateway says sha256 {header}, the bytes received hash to {got}; nothing written"
        );
    }
    if !expected.iter().all(|e| *e == got) {
        bail!(
            "the artifact of {label} does not match its release: released as sha256 {}, the bytes received hash to {got}; nothing written",
            expected.join(" / ")
        );
    }
    write_new(out, &answer.body)?;
    println!(
        "fetched {label} to {}: {} bytes, sha256 {got} (matches its release)",
        out.display(),
        answer.body.len()
    );
    Ok(())
}

/// The digests the gateway lists for a release: the release's own and, if it is active,
/// the one its signed statement names.
fn listed_digest(client: &Client, release: &Release) -> anyhow::Result<Vec<String>> {
    let is_it =
        |r: &&Value| text(r, "name") == release.name && text(r, "version") == release.version;
    let all = client.get_json("/v1/algorithms")?;
    let listed = all["releases"]
        .as_array()
        .and_then(|rs| rs.iter().find(is_it))
        .ok_or_else(|| {
            anyhow!(
                "the gateway holds no release {} {} (`sovereign algo list` shows them)",
                release.name,
                release.version
            )
        })?;
    let mut digests = vec![text(listed, "sha256").to_ascii_lowercase()];
    let active = client.get_json("/v1/algorithms/active")?;
    if let Some(r) = active["releases"]
        .as_array()
        .and_then(|rs| rs.iter().find(is_it))
        && let Some(Statement::AlgorithmRelease { sha256, .. }) =
            note_statement(text(r, "signature").as_bytes()).ok()
    {
        digests.push(sha256.to_ascii_lowercase());
    }
    Ok(digests)
}

fn releases(answer: &Value, none: &str) -> String {
    let rs = answer["releases"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if rs.is_empty() {
        return format!("{none}\n");
    }
    rs.iter()
        .map(|r| {
            let status = match text(r, "status") {
                "" => "active",
                s => s,
            };
            let mut line = format!(
                "{} {}  {:<9}  sha256 {}  {} bytes  activated {}",
                text(r, "name"),
                text(r, "version"),
                status,
                text(r, "sha256"),
                r["size"],
                or_never(text(r, "activated_at"))
            );
            if r.get("signers").is_some() {
                line.push_str(&format!("  signed by {}", joined(r, "signers", "nobody")));
            }
            line + "\n"
        })
        .collect()
}

// ---------------------------------------------------------------------------
// sovereign kill-switch

pub fn run_kill_switch(server: &ServerArgs, command: KillSwitchCommand) -> anyhow::Result<()> {
    let client = server.client()?;
    let (command, args) = match command {
        KillSwitchCommand::Status => {
            let answer = client.get_json("/v1/kill-switch")?;
            server.print(&answer, kill_status);
            return Ok(());
        }
        KillSwitchCommand::Suspend(args) => (KillCommand::Suspend, args),
        KillSwitchCommand::Lift(args) => (KillCommand::Lift, args),
    };
    let jurisdiction = args.jurisdiction.trim().to_ascii_uppercase();
    if !(jurisdiction.len() == 2 && jurisdiction.bytes().all(|b| b.is_ascii_uppercase())) {
        bail!(
            "{:?} is not a jurisdiction: give an ISO 3166-1 alpha-2 code, like US",
            args.jurisdiction
        );
    }
    let signers = args
        .keys
        .iter()
        .map(|k| load_signer(k))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // The gateway applies a command only with a serial above the last one it applied,
    // so that an old signed command cannot be replayed.
    let serial = current_serial(&client, &jurisdiction)? + 1;
    let verb = command.as_str();
    let statement = Statement::KillSwitch {
        command,
        jurisdiction: jurisdiction.clone(),
        serial,
    };
    let note = sign_all(&statement, &signers)?;
    let note = String::from_utf8(note).map_err(|_| anyhow!("a signed note is not UTF-8"))?;
    let answer = client.post("/v1/kill-switch", Body::Text(&note))?;
    server.print(&answer, |a| {
        format!(
            "applied {verb} of {jurisdiction} (serial {serial})\n{}",
            kill_status(a)
        )
    });
    Ok(())
}

/// The last serial the gateway applied for `jurisdiction` (0 if none).
fn current_serial(client: &Client, jurisdiction: &str) -> anyhow::Result<u64> {
    let status = client.get_json("/v1/kill-switch")?;
    let listed = status["jurisdictions"]
        .as_array()
        .and_then(|js| js.iter().find(|j| text(j, "jurisdiction") == jurisdiction));
    match listed {
        None => Ok(0),
        Some(j) => j["serial"].as_u64().ok_or_else(|| {
            anyhow!("the gateway's kill-switch status of {jurisdiction} has no serial number")
        }),
    }
}

fn kill_status(answer: &Value) -> String {
    let js = answer["jurisdictions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if js.is_empty() {
        return "no jurisdictions\n".to_string();
    }
    js.iter()
        .map(|j| {
            let state = if j["suspended"].as_bool() == Some(true) {
                format!("SUSPENDED since {}", text(j, "since"))
            } else {
                "active".to_string()
            };
            format!(
                "{}  {state}  (serial {})\n",
                text(j, "jurisdiction"),
                j["serial"]
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Signing

/// A note just signed, and whose key signed it.
struct Signed {
    signer: String,
}

/// Signs `statement` with `--key` (adding to `--add-to`'s signatures) and writes the
/// note to `--out` or standard output.
fn sign_statement(statement: &Statement, signing: &Signing) -> anyhow::Result<Signed> {
    let signer = load_signer(&signing.key)?;
    let note = match &signing.add_to {
        None => statement::sign(statement, &signer)
            .map_err(|e| anyhow!("cannot sign the statement: {e}"))?,
        Some(file) => {
            let existing = read_bytes(file)?;
            let found =
                note_statement(&existing).map_err(|e| anyhow!("{}: {e}", file.display()))?;
            if found.text() != statement.text() {
                bail!(
                    "{} is a statement for {}, not {}: it cannot take your signature",
                    file.display(),
                    what(&found),
                    what(statement)
                );
            }
            statement::cosign(&existing, &signer)
                .map_err(|e| anyhow!("cannot add your signature to {}: {e}", file.display()))?
        }
    };
    match &signing.out {
        Some(path) => write_new(path, &note)?,
        None => std::io::stdout()
            .write_all(&note)
            .context("writing the signed note")?,
    }
    Ok(Signed {
        signer: signer.name().to_string(),
    })
}

/// Signs with every key in turn.
fn sign_all(statement: &Statement, signers: &[Signer]) -> anyhow::Result<Vec<u8>> {
    let (first, rest) = signers
        .split_first()
        .ok_or_else(|| anyhow!("give at least one --key"))?;
    let mut note =
        statement::sign(statement, first).map_err(|e| anyhow!("cannot sign the statement: {e}"))?;
    for signer in rest {
        note = statement::cosign(&note, signer)
            .map_err(|e| anyhow!("cannot add the signature of {}: {e}", signer.name()))?;
    }
    Ok(note)
}

fn load_signer(path: &Path) -> anyhow::Result<Signer> {
    statement::load_signer(path).map_err(|e| {
        anyhow!(
            "{} does not hold a custodian signer key ({e}); `sovereign init` writes a development one to keys/custodian.key",
            path.display()
        )
    })
}

/// The statement a signed note carries, read without checking its signatures (the
/// gateway checks them against the custodian keys it trusts).
fn note_statement(note: &[u8]) -> anyhow::Result<Statement> {
    let no_keys: [&Verifier; 0] = [];
    let text = match tlog::note::open(note, no_keys) {
        Ok(n) => n.text,
        Err(NoteError::Unverified(n)) => n.text,
        Err(e) => bail!("not a signed note: {e}"),
    };
    Statement::parse(&text).map_err(|e| anyhow!("not a custodian statement: {e}"))
}

/// Reads a signed note and checks that it states `want`.
fn read_note(file: &Path, want: &Statement) -> anyhow::Result<String> {
    let bytes = read_bytes(file)?;
    let found = note_statement(&bytes).map_err(|e| {
        anyhow!(
            "{}: {e} (sign it with `sovereign policy sign` or `sovereign algo sign`)",
            file.display()
        )
    })?;
    if found.text() != want.text() {
        bail!(
            "{} is a statement for {}, not {}",
            file.display(),
            what(&found),
            what(want)
        );
    }
    String::from_utf8(bytes).map_err(|_| anyhow!("{}: not UTF-8", file.display()))
}

/// What a statement is about, for messages.
fn what(s: &Statement) -> String {
    match s {
        Statement::PolicyActivation { policy_set } => {
            format!("the activation of policy set {policy_set}")
        }
        Statement::InvariantActivation { invariant_set } => {
            format!("the activation of invariant set {invariant_set}")
        }
        Statement::AlgorithmRelease {
            name,
            version,
            sha256,
            manifest,
        } => match manifest {
            Some(manifest) => {
                format!("the release of {name} {version} (sha256 {sha256}, manifest {manifest})")
            }
            None => format!("the release of {name} {version} (sha256 {sha256})"),
        },
        Statement::KillSwitch {
            command,
            jurisdiction,
            serial,
        } => format!(
            "the kill-switch command {} {jurisdiction} (serial {serial})",
            command.as_str()
        ),
    }
}

// ---------------------------------------------------------------------------
// Small helpers

/// A policy or invariant set hash as given on the command line: 64 hex digits, lower-cased.
/// Whether a `HASH|FILE` argument names a file: it does if such a file exists, unless it
/// could also be a hash or its prefix (hex digits only), which is refused as ambiguous.
fn is_file_target(target: &str) -> anyhow::Result<bool> {
    let is_file = Path::new(target).is_file();
    if is_file && !target.is_empty() && target.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(monitor::failure::usage(format!(
            "{target:?} is both a file here and a possible hash prefix: write ./{target} for the file"
        )));
    }
    Ok(is_file)
}

fn hex_sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn or_never(s: &str) -> &str {
    if s.is_empty() { "never" } else { s }
}

fn read_bytes(path: &Path) -> anyhow::Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    let bytes = read_bytes(path)?;
    String::from_utf8(bytes).map_err(|_| anyhow!("{} is not UTF-8 text", path.display()))
}

/// Writes a file through a temporary one and a rename, so nothing half-written is left
/// under its name.
fn write_new(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = fs::write(&tmp, data).and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

/// Reports what was signed: on standard output when the note went to a file, otherwise
/// on standard error, so that standard output holds the note alone.
fn report(signing: &Signing, message: &str) {
    match &signing.out {
        Some(path) => println!("{message}; wrote {}", path.display()),
        None => eprintln!("{message}"),
    }
}

/// `sovereign policy prove`: the same proof the gateway needs before activating a set, run
/// offline so that a custodian or a monitor can reproduce it.
fn prove_offline(
    files: &[PathBuf],
    schema: Option<PathBuf>,
    invariants: Option<PathBuf>,
    restricted: &[String],
    timeout: std::time::Duration,
    json: bool,
) -> anyhow::Result<()> {
    // One file is proven exactly as written, so the report's policy set hash is the one
    // the gateway computes for it.
    let policies = files
        .iter()
        .map(|file| read_text(file))
        .collect::<anyhow::Result<Vec<_>>>()?
        .join("\n");
    let schema = match schema {
        Some(path) => read_text(&path)?,
        None => policy::DEFAULT_SCHEMA.to_string(),
    };
    let invariants_text = match invariants {
        Some(path) => read_text(&path)?,
        None => prove::default_invariants(restricted),
    };
    let invariants = prove::Invariants::parse_with_schema(&schema, &invariants_text)?;
    let solver = prove::Solver::from_env()?.with_timeout(timeout);
    let report = prove::prove(&schema, &policies, &invariants, &solver)?;
    if json {
        println!("{:#}", report.to_json());
    } else {
        print!("{report}");
    }
    if !report.all_proven() {
        return Err(monitor::failure::check_failed(
            "the policy set does not satisfy every invariant: it must not be activated",
        ));
    }
    Ok(())
}
