//! `sovereign policy eval`: a what-if decision, like `opa eval --explain`. One Cedar request,
//! built from the flags, decided here by the same `policy` crate the gateway decides with,
//! against the gateway's active policy set (or another set by hash, or files): the decision,
//! the policies that determined it, and any evaluation error. Nothing is logged and nothing
//! is granted: it is a question about the policies, not an access.

use std::path::PathBuf;

use anyhow::Context as _;
use policy::{AccessRequest, Action, Context, Principal, Resource};
use serde_json::{Value, json};

use crate::client::{ServerArgs, text};

/// The flags of `policy eval`.
#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// The action: register, list, read, write, delete, export, egress, scan, migrate, run,
    /// compute.
    #[arg(long)]
    action: String,
    /// The principal's id.
    #[arg(long, default_value = "what-if")]
    id: String,
    /// The principal's employer entity (as in the configuration: usds, parent, custodian,
    /// monitor, public, ...).
    #[arg(long)]
    entity: String,
    /// The country the entity is controlled from [default: the entity's `country` in the
    /// configuration of --data, as the gateway takes it].
    #[arg(long, value_name = "CC")]
    entity_country: Option<String>,
    /// The data folder whose configuration declares the entities.
    #[arg(long, default_value = "sovereign-data")]
    data: PathBuf,
    /// Where the principal is: ISO 3166-1 alpha-2, e.g. US.
    #[arg(long, value_name = "CC")]
    location: String,
    /// A role (repeatable).
    #[arg(long)]
    role: Vec<String>,
    /// A clearance (repeatable).
    #[arg(long)]
    clearance: Vec<String>,
    /// The subject's jurisdiction.
    #[arg(long, value_name = "CC", default_value = "US")]
    jurisdiction: String,
    /// The collection (actions on data).
    #[arg(long, default_value = "profile")]
    collection: String,
    /// The field class (actions on data): protected, interoperable, ...
    #[arg(long = "class", default_value = "protected")]
    field_class: String,
    /// The site holding the subject.
    #[arg(long, default_value = "us-east")]
    site: String,
    /// The site's jurisdiction [default: --jurisdiction].
    #[arg(long, value_name = "CC")]
    site_jurisdiction: Option<String>,
    /// The collection needs a custodian grant for protected access.
    #[arg(long)]
    approval_required: bool,
    /// The subject's jurisdiction is suspended by the kill switch.
    #[arg(long)]
    suspended: bool,
    /// The stated purpose (`Sovereign-Purpose`).
    #[arg(long, default_value = "")]
    purpose: String,
    /// The reason code.
    #[arg(long, default_value = "")]
    reason_code: String,
    /// The network zone the request comes from.
    #[arg(long, default_value = "")]
    zone: String,
    /// The custodian grant covering the access: approved or break-glass.
    #[arg(long, default_value = "")]
    grant: String,
    /// The principal is the data subject (a data subject's own access).
    #[arg(long)]
    own_data: bool,
    /// Policies from this file instead of the gateway (with --schema, else the default
    /// schema).
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// The schema of --file.
    #[arg(long, value_name = "FILE", requires = "file")]
    schema: Option<PathBuf>,
    /// The gateway's policy set of this hash instead of the active one.
    #[arg(long, value_name = "HASH", conflicts_with = "file")]
    set: Option<String>,
}

/// Decides the request the flags describe and prints the decision.
pub fn run(server: &ServerArgs, args: &EvalArgs) -> anyhow::Result<()> {
    let usage = monitor::failure::usage;
    let action = Action::parse(&args.action).ok_or_else(|| {
        usage(format!(
            "--action {:?} is not an action; one of: {}",
            args.action,
            Action::ALL.map(|a| a.as_str()).join(", ")
        ))
    })?;
    // The entity's country as the gateway takes it: from the configuration, never guessed.
    let entity_country = match &args.entity_country {
        Some(cc) => cc.clone(),
        None => {
            let config = gateway::config::Config::load(&args.data).map_err(|e| {
                usage(format!(
                    "--entity-country not given, and the configuration that declares the entities cannot be read ({e}); give --entity-country CC or --data DIR"
                ))
            })?;
            match config.entities.get(&args.entity) {
                Some(entity) => entity.country.clone(),
                None => {
                    return Err(usage(format!(
                        "--entity {:?} is not declared in {}; give --entity-country CC for a what-if entity",
                        args.entity,
                        args.data.join(gateway::config::CONFIG_FILE).display()
                    )));
                }
            }
        }
    };
    let (hash, schema, policies) = policy_set(server, args)?;
    let engine = policy::PolicyEngine::new(&schema, &policies)
        .with_context(|| format!("policy set {hash} does not load"))?;
    let site_jurisdiction = args
        .site_jurisdiction
        .clone()
        .unwrap_or_else(|| args.jurisdiction.clone());
    let resource = if action.on_subject() {
        Resource::Subject {
            subject_jurisdiction: args.jurisdiction.clone(),
            site: args.site.clone(),
            site_jurisdiction,
            suspended: args.suspended,
        }
    } else {
        Resource::Data {
            subject_jurisdiction: args.jurisdiction.clone(),
            collection: args.collection.clone(),
            field_class: args.field_class.clone(),
            site: args.site.clone(),
            site_jurisdiction,
            approval_required: args.approval_required,
            suspended: args.suspended,
        }
    };
    let request = AccessRequest {
        principal: Principal {
            id: args.id.clone(),
            entity: args.entity.clone(),
            entity_country,
            location: args.location.clone(),
            clearance: args.clearance.clone(),
            roles: args.role.clone(),
        },
        action,
        resource,
        context: Context {
            purpose: args.purpose.clone(),
            reason_code: args.reason_code.clone(),
            network_zone: args.zone.clone(),
            time: gateway::auth::now_unix(),
            grant: args.grant.clone(),
            own_data: args.own_data,
        },
    };
    let decision = engine.decide(&request);
    let answer = json!({
        "policy_set": hash,
        "decision": if decision.allowed { "allow" } else { "deny" },
        "determining_policies": decision.policies,
        "errors": decision.errors,
        "logged": false,
    });
    server.print(&answer, |a| {
        let policies = crate::client::joined(a, "determining_policies", "");
        let why = match (decision.allowed, policies.is_empty()) {
            (true, _) => format!("permitted by {policies}"),
            (false, false) => format!("forbidden by {policies}"),
            (false, true) if !decision.errors.is_empty() => {
                format!(
                    "an evaluation error denies it: {}",
                    decision.errors.join("; ")
                )
            }
            (false, true) => "no policy permits it".to_string(),
        };
        format!(
            "{}: {why}\n(policy set {}; a what-if decision: nothing was logged or granted)\n",
            text(a, "decision"),
            text(a, "policy_set"),
        )
    });
    Ok(())
}

/// (hash, schema, policies) of the set to decide with: the files, the gateway's set of
/// `--set`, or the gateway's active set.
fn policy_set(server: &ServerArgs, args: &EvalArgs) -> anyhow::Result<(String, String, String)> {
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path)
            .map_err(|e| monitor::failure::usage(format!("reading {}: {e}", path.display())))
    };
    if let Some(file) = &args.file {
        let schema = match &args.schema {
            Some(path) => read(path)?,
            None => policy::DEFAULT_SCHEMA.to_string(),
        };
        let policies = read(file)?;
        return Ok((
            policy::policy_set_hash(&schema, &policies),
            schema,
            policies,
        ));
    }
    let client = server.client()?;
    let hash = match &args.set {
        Some(given) => client.resolve_hash(given, "/v1/policies")?,
        None => {
            let list = client.get_json("/v1/policies")?;
            let active = text(&list, "active");
            if active.is_empty() {
                anyhow::bail!("the gateway has no active policy set");
            }
            active.to_string()
        }
    };
    let set: Value = client.get_json(&format!("/v1/policies/{hash}"))?;
    let (schema, policies) = (text(&set, "schema"), text(&set, "policies"));
    // The text must be the set the hash names, whatever the gateway says.
    let computed = policy::policy_set_hash(schema, policies);
    if computed != hash {
        return Err(monitor::failure::check_failed(format!(
            "the gateway's policy set {hash} hashes to {computed}: it is not the set it claims to be"
        )));
    }
    Ok((hash, schema.to_string(), policies.to_string()))
}
