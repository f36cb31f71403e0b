//! Start-up: loads and checks everything a gateway needs (configuration, keys, the log, custody
//! and the policy set in force, proven on the very first start), builds the router with its
//! limits, and serves. Once a second the analytics ticker ends the current second and checks
//! that the log keeps checkpointing; the custody follower takes up the custody changes other
//! gateways made, at once when the store notifies them and once a second in any case.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::auth::{self, Authenticator};
use crate::config::Config;
use crate::cursor::CursorSeal;
use crate::http::tasks::blocking;
use crate::pipeline::governed::Governed;
use crate::pseudonym::Pseudonymizer;
use crate::state::{AppState, verified_engine};
use crate::{analytics, custody_log, entry, http, proof, routes, serve};

/// A loaded, ready-to-serve gateway.
pub struct Gateway {
    state: Arc<AppState>,
    router: Router,
    /// Empties this gateway's data key cache when another gateway erases keys (a shared
    /// PostgreSQL key store; idle on SQLite). Stopped when serving ends.
    key_listener: vault::ListenerHandle,
}

/// Choices made when a gateway starts, beyond its data folder.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Record this gateway's keys as the fleet's, replacing those the custody store holds
    /// (after the fleet's keys were changed on purpose), instead of refusing to start.
    pub replace_fleet_identity: bool,
}

impl Gateway {
    /// Loads and checks everything (configuration, keys, policies, stores) before serving.
    pub fn open(data_dir: &Path) -> anyhow::Result<Gateway> {
        Gateway::open_with(data_dir, &StartOptions::default())
    }

    /// [`Gateway::open`], with `options`.
    pub fn open_with(data_dir: &Path, options: &StartOptions) -> anyhow::Result<Gateway> {
        let config = Config::load(data_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
        let auth = Authenticator::new(&config, data_dir)?;
        let envelope = open_envelope(&config, data_dir)?;
        let key_listener = envelope
            .forget_on_remote_erasure()
            .context("cannot listen for data key erasures in the key store")?;
        let vault = vault::Vault::open(config.layout(), data_dir, config.server.store_readers)
            .context("cannot open the site stores")?
            .with_placement_cache(config.server.placement_cache_entries)
            .with_envelope(envelope);
        let egress_pseudonyms = read_pseudonym_key(data_dir, &config.egress.pseudonym_key)?;
        // Before the log is opened, which refuses a signer key other than the fleet's, but
        // names only that one.
        check_fleet_identity(
            &config,
            data_dir,
            &egress_pseudonyms,
            vault.envelope().map(vault::Envelope::key_id),
            options,
        )?;
        let (log, pseudonyms) = open_log(&config, data_dir)?;
        let log = Arc::new(log);
        let auth = auth.with_subject_pseudonyms(pseudonyms.clone());
        let custody = open_custody(&config, data_dir, log.clone())?;
        let policy = first_or_active_policy(&config, data_dir, &custody, &log, &pseudonyms)?;
        // The configuration and policies in force are the first thing the log records.
        log.append_blocking(entry::config_entry(
            "start",
            policy.policy_set_hash(),
            &policy.policy_ids(),
            &config.source_sha256,
        ))
        .context("cannot write the start entry to the transparency log")?;
        tracing::info!(
            policy_set = policy.policy_set_hash(),
            policies = policy.policy_ids().len(),
            sites = config.sites.len(),
            "loaded"
        );

        let (api_router, openapi) = routes::router().split_for_parts();
        let openapi =
            serde_json::to_value(&openapi).context("cannot render the OpenAPI document")?;
        let body_limit = config.server.body_limit_bytes;
        let analytics_settings = config.analytics.clone();
        let fleet = crate::fleet_view::FleetView::new(
            log.size(),
            config.analytics.bulk_subjects_per_minute,
            pgconn::is_postgres_url(&config.log.store),
        );
        let timeout = Duration::from_secs(config.server.request_timeout_seconds);
        let witnessing =
            crate::witnessing::Witnessing::new(&config.log, data_dir, &log)?.map(Arc::new);
        let algorithms = crate::algorithms::Algorithms::new(&config.algorithms);
        let history_index = logstore::SubjectIndex::open(
            &data_dir.join(&config.history.index),
            &log,
            crate::pipeline::history::INDEX_RULE,
            Box::new(crate::pipeline::history::index_keys),
        )
        .context("cannot open the subject index (history.index)")?;
        let state = Arc::new(AppState {
            config,
            data_dir: data_dir.to_path_buf(),
            auth,
            policy: RwLock::new(Arc::new(policy)),
            governed: Governed::new(Arc::new(vault)),
            custody_gate: Arc::default(),
            cursor_seal: CursorSeal::new(&egress_pseudonyms),
            custody: Arc::new(custody),
            log,
            pseudonyms,
            egress_pseudonyms,
            openapi,
            analytics: analytics::Analytics::new(analytics_settings),
            fleet,
            proof_slots: tokio::sync::Semaphore::new(proof::CONCURRENT_PROOFS),
            witnessing,
            algorithms,
            history_index,
        });
        // The page's feed and alerts start from the log's last entries, not empty.
        let size = state.log.size();
        let from = size.saturating_sub(logstore::MAX_ENTRIES_READ);
        match state.log.entries(from, size) {
            Ok(entries) => state.analytics.seed_from_log((from..).zip(entries)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the log's last entries for the dashboard")
            }
        }
        let router = api_router
            .fallback(http::middleware::no_route)
            .method_not_allowed_fallback(http::middleware::method_not_allowed)
            .layer(DefaultBodyLimit::max(body_limit))
            .layer(middleware::from_fn_with_state(
                timeout,
                http::middleware::request_timeout,
            ))
            .layer(middleware::from_fn_with_state(
                state.clone(),
                http::middleware::log_request,
            ))
            .with_state(state.clone());
        Ok(Gateway {
            state,
            router,
            key_listener,
        })
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight (open event
    /// streams are ended first). Connections are limited as `[server]` says (`serve.rs`).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let ticker = tokio::spawn(analytics_ticker(self.state.clone()));
        let follower = tokio::spawn(follow_custody(self.state.clone()));
        let indexer = tokio::spawn(index_subjects(self.state.clone()));
        let witnessing = self
            .state
            .witnessing
            .clone()
            .map(|w| tokio::spawn(w.run(self.state.log.clone())));
        let limits = serve::Limits::from_config(&self.state.config.server);
        serve::serve(listener, self.router, self.state.clone(), limits, shutdown).await;
        for task in [ticker, follower, indexer].into_iter().chain(witnessing) {
            task.abort();
            let _ = task.await;
        }
        // The state may hold the last handles on PostgreSQL clients, whose synchronous
        // driver blocks on its own runtime when they close: never on an async thread.
        let (state, key_listener) = (self.state, self.key_listener);
        let _ = blocking(move || {
            key_listener.stop();
            drop(state)
        })
        .await;
        Ok(())
    }
}

/// The custodian's envelope: the key-encryption key (with the reasons it may unwrap for) and
/// the key store of wrapped data keys.
pub fn open_envelope(config: &Config, data_dir: &Path) -> anyhow::Result<vault::Envelope> {
    let reasons = config
        .keys
        .allowed_reasons
        .iter()
        .filter_map(|r| vault::UnwrapReason::parse(r).ok())
        .collect();
    let kek_path = data_dir.join(&config.keys.kek);
    let manager = vault::LocalKeyManager::from_file(&kek_path, reasons)
        .with_context(|| format!("cannot load the key-encryption key {}", kek_path.display()))?;
    let store = vault::DataKeyStore::open_url(&config.keys.store, data_dir)
        // The setting is not repeated: a URL may carry a password. The error names the store.
        .context("cannot open the key store (keys.store)")?;
    Ok(
        vault::Envelope::new(Arc::new(manager), store).with_key_cache(
            config.keys.data_key_cache_entries,
            config.keys.data_key_cache_ttl,
        ),
    )
}

fn read_pseudonym_key(data_dir: &Path, path: &Path) -> anyhow::Result<Pseudonymizer> {
    let full = data_dir.join(path);
    Pseudonymizer::from_hex(
        &std::fs::read_to_string(&full)
            .with_context(|| format!("cannot read {}", full.display()))?,
    )
    .with_context(|| format!("{}", full.display()))
}

/// Opens the custody database with the custodian's verifier keys; what is in force must be
/// what the log recorded (`custody_log.rs`).
pub fn open_custody(
    config: &Config,
    data_dir: &Path,
    log: Arc<logstore::Log>,
) -> anyhow::Result<custody::Custody> {
    let c = &config.custody;
    let verifiers = c
        .signers
        .iter()
        .map(|path| custody::statement::load_verifier(&data_dir.join(path)))
        .collect::<Result<Vec<_>, _>>()?;
    let keys = custody::Keys {
        verifiers,
        policy_threshold: c.policy_threshold,
        release_threshold: c.release_threshold,
        kill_switch_threshold: c.kill_switch_threshold,
    };
    let location = custody_location(config, data_dir);
    custody::Custody::open_at(&location, keys, Arc::new(custody_log::LogLedger::new(log)))
        .context("cannot open the custody store")
}

/// Where `custody.store` says the custody state is: a PostgreSQL URL, or a SQLite file (with
/// the artifacts as files) in the data folder.
fn custody_location(config: &Config, data_dir: &Path) -> custody::Location {
    let c = &config.custody;
    match c.store.to_str().filter(|s| pgconn::is_postgres_url(s)) {
        Some(url) => custody::Location::Postgres { url: url.into() },
        None => custody::Location::Sqlite {
            path: data_dir.join(&c.store),
            artifacts: data_dir.join(&c.artifacts),
        },
    }
}

/// Fingerprints of the keys every gateway sharing a custody store must hold, by name: the
/// log's signer (its public key), the pseudonym keys (a keyed hash of a fixed label), the
/// key-encryption key (the key manager's one-way key id), and the custodian's and the token
/// issuers' public keys (hashes of their files). Never a secret.
fn check_fleet_identity(
    config: &Config,
    data_dir: &Path,
    egress_pseudonyms: &Pseudonymizer,
    kek_id: Option<&str>,
    options: &StartOptions,
) -> anyhow::Result<()> {
    const LABEL: &str = "sov:fleet-identity:v1";
    let signer = read_log_signer(config, data_dir)?;
    let pseudonyms = read_pseudonym_key(data_dir, &config.log.pseudonym_key)?;
    let files = |paths: &mut dyn Iterator<Item = &PathBuf>| -> anyhow::Result<String> {
        let mut hashes = Vec::new();
        for path in paths {
            let full = data_dir.join(path);
            let bytes =
                std::fs::read(&full).with_context(|| format!("cannot read {}", full.display()))?;
            hashes.push(hex::encode(Sha256::digest(&bytes)));
        }
        hashes.sort();
        Ok(hashes.join(","))
    };
    let mut identity = BTreeMap::from([
        ("log signer key".to_string(), signer.verifier().to_string()),
        ("log.pseudonym_key".to_string(), pseudonyms.pseudonym(LABEL)),
        (
            "egress.pseudonym_key".to_string(),
            egress_pseudonyms.pseudonym(LABEL),
        ),
        (
            "custody.signers".to_string(),
            files(&mut config.custody.signers.iter())?,
        ),
    ]);
    if let Some(kek_id) = kek_id {
        identity.insert("keys.kek".into(), kek_id.into());
    }
    // A gateway needing fewer signatures would accept (and write) what the others refuse.
    let c = &config.custody;
    identity.insert(
        "custody thresholds".into(),
        format!(
            "policy {}, release {}, kill switch {}",
            c.policy_threshold, c.release_threshold, c.kill_switch_threshold
        ),
    );
    for issuer in &config.auth.issuers {
        let mut keys = issuer.public_key_pem.iter().chain(issuer.jwks.iter());
        identity.insert(
            format!("auth.issuers `{}`", issuer.issuer),
            files(&mut keys)?,
        );
    }
    if options.replace_fleet_identity {
        tracing::warn!("recording this gateway's keys as the fleet's (--replace-fleet-identity)");
        custody::Custody::replace_fleet_identity_at(
            &custody_location(config, data_dir),
            &identity,
        )?;
        return Ok(());
    }
    custody::Custody::check_fleet_identity_at(&custody_location(config, data_dir), &identity)
        .context(
            "refusing to start: this gateway would sign, pseudonymise or encrypt unlike the rest \
             of the fleet (after changing the fleet's keys on purpose, start one gateway with \
             --replace-fleet-identity)",
        )?;
    Ok(())
}

/// [`active_policy`], again if another gateway changed the custody store meanwhile: gateways
/// of a fleet starting together on an empty store race to activate the first sets; each
/// activation is checked against the store's latest state (and one already in force is not
/// activated again), so the sets are activated once and every gateway ends up serving them.
fn first_or_active_policy(
    config: &Config,
    data_dir: &Path,
    custody: &custody::Custody,
    log: &logstore::Log,
    pseudonyms: &Pseudonymizer,
) -> anyhow::Result<policy::PolicyEngine> {
    const ATTEMPTS: u32 = 20;
    for attempt in 1.. {
        match active_policy(config, data_dir, custody, log, pseudonyms) {
            Err(e)
                if attempt < ATTEMPTS
                    && e.chain().any(|cause| {
                        matches!(
                            cause.downcast_ref::<custody::CustodyError>(),
                            Some(custody::CustodyError::Conflict)
                        )
                    }) =>
            {
                tracing::info!(
                    attempt,
                    "another gateway changed the custody store while this one started; reading it again"
                );
                std::thread::sleep(Duration::from_millis(50 * u64::from(attempt)));
                custody
                    .refresh()
                    .context("cannot read the custody store again")?;
            }
            other => return other,
        }
    }
    unreachable!("the loop returns by its last attempt")
}

/// The policy set to serve: the one the custodian last activated. On the very first start
/// there is none, and the configured files become the first active set, but only with the
/// custodian's signed activation statement beside them and proofs that they satisfy the
/// invariants. Whatever set is served has passing proofs against the invariants in force.
fn active_policy(
    config: &Config,
    data_dir: &Path,
    custody: &custody::Custody,
    log: &logstore::Log,
    pseudonyms: &Pseudonymizer,
) -> anyhow::Result<policy::PolicyEngine> {
    let files = read_policy_files(config, data_dir)?;
    let file_hash = policy::policy_set_hash(&files.schema, &files.policies);
    let settings = proof::Settings::from_config(&config.policy);
    let append = |event: custody::Event<'_>| {
        log.append_blocking(entry::custody_entry(&event, None, pseudonyms))
            .map_err(|e| e.to_string())
    };
    let active = custody.active_policy();
    let invariants = active_invariants(
        config,
        data_dir,
        custody,
        active.as_ref(),
        &files,
        &settings,
        &append,
    )?;

    if let Some(active) = active {
        if active.hash != file_hash {
            tracing::warn!(
                active = active.hash,
                file = file_hash,
                "the policy files differ from the active policy set and are ignored; change policies with `sovereign policy propose | sign | activate`"
            );
        }
        // Custody opened only if this set carries passing proofs against the invariants in
        // force (its own, or its invariant set's): nothing to prove again here.
        return verified_engine(&active).map_err(|problem| anyhow::anyhow!("{problem}"));
    }

    let engine = files.engine()?;
    let signature_path = data_dir.join(&config.policy.signature);
    let signed = std::fs::read(&signature_path)
        .with_context(|| format!("cannot read {}", signature_path.display()))?;
    let proofs = match proof::prove_policy(&files.schema, &files.policies, &invariants, &settings) {
        Ok(proofs) => proofs,
        // Without a solver, the unchanged defaults start with the proofs made when this
        // binary was built; any other first set must be proven here.
        Err(proof::Refusal::SolverUnavailable(why))
            if let Some(shipped) = proof::shipped_proofs(&file_hash, invariants.hash()) =>
        {
            tracing::warn!(
                policy_set = file_hash,
                invariant_set = invariants.hash(),
                "no solver here ({why}); the default policy set is activated with the proofs shipped with this binary (logged as such; `sovereign audit replay --prove` proves them again). Any other policy set needs cvc5."
            );
            shipped
        }
        Err(refusal) => {
            return Err(anyhow::anyhow!(
                "the first policy set ({}): {refusal}",
                files.policies_path.display()
            ));
        }
    };
    let record = custody::PolicySetRecord::proposed(
        file_hash.clone(),
        (files.schema, files.policies),
        engine.policy_ids(),
        configuration(),
        auth::now_unix(),
    );
    custody.propose_policy(record, &append)?;
    custody
        .activate_policy(&file_hash, &signed, proofs, auth::now_unix(), &append, |_| {})
        .map_err(|e| {
            if matches!(e, custody::CustodyError::Conflict) {
                return e.into();
            }
            anyhow::anyhow!(
                "the first policy set ({}) is not activated by a valid custodian signature in {}: {e}\n\
                 the custodian signs it with `sovereign policy sign-file {} --schema {} --key CUSTODIAN_KEY --out {}`",
                data_dir.join(&config.policy.policies).display(),
                signature_path.display(),
                data_dir.join(&config.policy.policies).display(),
                data_dir.join(&config.policy.schema).display(),
                signature_path.display(),
            )
        })?;
    Ok(engine)
}

/// Who proposes what the configuration's files hold on the first start.
fn configuration() -> custody::Person {
    custody::Person {
        id: "(configuration)".into(),
        entity: "custodian".into(),
    }
}

/// The invariants in force: the set the custodian last activated. On the first start there
/// is none (or, for a data folder from before invariants, only a policy set), and the
/// configured file becomes the first invariant set, but only with the custodian's signed
/// activation statement beside it and, if a policy set is already active, proofs that the
/// set keeps the invariants. After that they change through the API, like policies.
fn active_invariants(
    config: &Config,
    data_dir: &Path,
    custody: &custody::Custody,
    active_policy: Option<&custody::PolicySetRecord>,
    files: &PolicyFiles,
    settings: &proof::Settings,
    append: custody::LogFn<'_>,
) -> anyhow::Result<prove::Invariants> {
    let path = data_dir.join(&config.policy.invariants);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the invariants file {}", path.display()))?;
    // Checked against the schema the policies in force (or about to be) are validated with.
    let schema = active_policy.map_or(files.schema.as_str(), |p| p.schema.as_str());
    let parse = |text: &str| proof::parse_invariants(schema, text);
    if let Some(current) = custody.active_invariants() {
        if parse(&text).ok().as_ref().map(|i| i.hash()) != Some(current.hash.as_str()) {
            tracing::warn!(
                active = current.hash,
                file = %path.display(),
                "the invariants file differs from the invariant set in force and is ignored; change invariants with `sovereign policy propose-invariants | sign-invariants | activate-invariants`"
            );
        }
        return parse(&current.text).map_err(|e| {
            anyhow::anyhow!(
                "the invariant set in force ({}) no longer parses: {e}",
                current.hash
            )
        });
    }
    let invariants = parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let changed = format!(
        "the invariants in {} ({})",
        path.display(),
        invariants.hash()
    );
    let signature_path = data_dir.join(&config.policy.invariants_signature);
    let sign_hint = format!(
        "the custodian signs them with `sovereign policy sign-invariants {} --key CUSTODIAN_KEY --out {}`",
        path.display(),
        signature_path.display()
    );
    let signed = std::fs::read(&signature_path).with_context(|| {
        format!(
            "{changed} and take effect only with the custodian's signature, but {} cannot be read; {sign_hint}",
            signature_path.display()
        )
    })?;
    let proofs = match active_policy {
        Some(active) => Some(
            proof::prove_policy(&active.schema, &active.policies, &invariants, settings).map_err(
                |refusal| {
                    anyhow::anyhow!(
                        "{changed}; they are not activated, because the active policy set {} must satisfy them: {refusal}",
                        active.hash
                    )
                },
            )?,
        ),
        None => None,
    };
    let record = custody::InvariantSetRecord::proposed(
        invariants.hash().to_string(),
        text,
        invariants.iter().map(|i| i.name().to_string()).collect(),
        configuration(),
        auth::now_unix(),
    );
    custody.propose_invariants(record.clone(), append)?;
    custody
        .activate_invariants(record, &signed, proofs, auth::now_unix(), append)
        .map_err(|e| {
            if matches!(e, custody::CustodyError::Conflict) {
                return e.into();
            }
            anyhow::anyhow!(
                "{changed} and are not activated by the custodian's signature in {}: {e}\n{sign_hint}",
                signature_path.display()
            )
        })?;
    tracing::info!(
        invariant_set = invariants.hash(),
        invariants = invariants.len(),
        "invariants activated"
    );
    Ok(invariants)
}

/// The policy texts named by the configuration.
pub struct PolicyFiles {
    pub schema_path: PathBuf,
    pub policies_path: PathBuf,
    pub schema: String,
    pub policies: String,
}

impl PolicyFiles {
    /// Validates every policy against the schema.
    pub fn engine(&self) -> anyhow::Result<policy::PolicyEngine> {
        policy::PolicyEngine::new(&self.schema, &self.policies).map_err(|e| {
            anyhow::anyhow!(
                "policies refused ({} against {}):\n{e}",
                self.policies_path.display(),
                self.schema_path.display()
            )
        })
    }
}

pub fn read_policy_files(config: &Config, data_dir: &Path) -> anyhow::Result<PolicyFiles> {
    let schema_path = data_dir.join(&config.policy.schema);
    let policies_path = data_dir.join(&config.policy.policies);
    let schema = std::fs::read_to_string(&schema_path)
        .with_context(|| format!("cannot read {}", schema_path.display()))?;
    let policies = std::fs::read_to_string(&policies_path)
        .with_context(|| format!("cannot read {}", policies_path.display()))?;
    Ok(PolicyFiles {
        schema_path,
        policies_path,
        schema,
        policies,
    })
}

/// Opens the transparency log with its signing key, and the subject pseudonym key.
pub fn open_log(
    config: &Config,
    data_dir: &Path,
) -> anyhow::Result<(logstore::Log, Pseudonymizer)> {
    let signer = read_log_signer(config, data_dir)?;
    let pseudonyms = read_pseudonym_key(data_dir, &config.log.pseudonym_key)?;
    let options = logstore::LogOptions {
        checkpoint_interval: Duration::from_millis(config.log.checkpoint_interval_ms),
        max_batch: config.log.max_batch,
        readers: config.log.readers,
        integration_deadline: Duration::from_secs(config.log.integration_deadline_seconds),
        tile_cache_bytes: config.log.tile_cache_mib << 20,
        ..logstore::LogOptions::default()
    };
    let log = logstore::Log::open_url(&config.log.store, data_dir, signer, options)
        .context("cannot open the transparency log")?;
    Ok((log, pseudonyms))
}

fn read_log_signer(config: &Config, data_dir: &Path) -> anyhow::Result<tlog::note::Signer> {
    let key_path = data_dir.join(&config.log.signer_key);
    let skey = std::fs::read_to_string(&key_path)
        .with_context(|| format!("cannot read the log key {}", key_path.display()))?;
    tlog::note::Signer::new(skey.trim()).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a signed-note signer key: {e}",
            key_path.display()
        )
    })
}

/// Takes up the custody changes other gateways commit (grants, the kill switch, policy and
/// invariant activations, releases): at once when the store notifies them (PostgreSQL), and
/// once a second in any case, so that a lost notification or connection leaves a gateway
/// stale for a second at most. If the store cannot be listened to, the second's check is all.
async fn follow_custody(state: Arc<AppState>) {
    let heard = Arc::new(tokio::sync::Notify::new());
    let notify = heard.clone();
    let custody = state.custody.clone();
    let listener = tokio::task::spawn_blocking(move || {
        custody.listen_for_changes(move || notify.notify_one())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r.map_err(|e| e.to_string()));
    // Held while the task runs: dropping it (when the task is aborted) stops its thread.
    let _listener = match listener {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for the custody store's changes; checking it once a second");
            None
        }
    };
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = heard.notified() => {}
        }
        // Asked first without the custody gate, so that a store slow to answer holds up no
        // decision (those stop on their own once it was not reached for a while).
        let asking = state.custody.clone();
        match blocking(move || asking.has_news()).await {
            Ok(Ok(false)) => continue,
            Ok(Ok(true)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the custody store for changes");
                continue;
            }
            Err(_) => continue,
        }
        // Another gateway's custody changes come in like this gateway's own: with no
        // decision in flight across them.
        if let Ok(Some(problem)) = state
            .custody_change(|app| app.take_up_custody_changes())
            .await
        {
            let alert = analytics::AlertRequest {
                kind: analytics::AlertKind::CustodyUnverified,
                message: format!("the custody store's state does not verify: {problem}"),
                details: serde_json::json!({"problem": problem}),
            };
            let _ = state.raise_alert(alert, None).await;
        }
    }
}

/// Keeps the subject index up with the log, a batch of entries at a time, so that a
/// subject's history finds it current (a request still catches it up to its checkpoint).
/// At start it builds the index of a log it has not read, in the background.
async fn index_subjects(state: Arc<AppState>) {
    let mut interval = tokio::time::interval(Duration::from_millis(500));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let indexing = state.clone();
        let result = blocking(move || {
            let log = &indexing.log;
            indexing.history_index.catch_up(log, log.size())
        })
        .await;
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot bring the subject index up to the log")
            }
            Err(e) => tracing::error!(error = %e.message, "the subject index's task failed"),
        }
    }
}

/// Once a second: ends the analytics' current second, checks that the log keeps checkpointing,
/// and sends the summary to the stream's clients (if any).
async fn analytics_ticker(state: Arc<AppState>) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    interval.tick().await;
    loop {
        interval.tick().await;
        state.analytics.tick();
        // Off the async threads: it may read an entry from the log.
        let checking = state.clone();
        let late = blocking(move || {
            let served = checking.served_checkpoint();
            checking.analytics.checkpoint_late(&checking.log, served)
        })
        .await
        .ok()
        .flatten();
        if let Some(alert) = late {
            // On its own task: a log that does not checkpoint may not take appends either,
            // and the ticker must go on.
            let state = state.clone();
            tokio::spawn(async move {
                let _ = state.raise_alert(alert, None).await;
            });
        }
        // The fleet's decisions since the last look, from the shared log.
        let looking = state.clone();
        let fleet_alerts = blocking(move || {
            looking.fleet.look(&looking.log, &|seen| {
                looking.analytics.record(|| {
                    metrics::counter!(
                        "sovereign_fleet_decisions_total",
                        "outcome" => seen.outcome().to_string(),
                        "location" => seen.location().to_string(),
                        "entity" => seen.entity().to_string(),
                        "action" => seen.action().to_string(),
                    )
                    .increment(1);
                });
            })
        })
        .await;
        match fleet_alerts {
            Ok(Ok(alerts)) => {
                for (alert, who) in alerts {
                    // Raised again at the next look while the count stays above the limit.
                    if let Err(e) = state.raise_alert(alert, Some(&who)).await {
                        tracing::error!(error = %e.message, "cannot log the fleet's bulk-access alert");
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the log for the fleet's counts"),
            Err(_) => {}
        }
        if state.analytics.has_watchers() {
            let summary = state.summary();
            state.analytics.publish_summary(&summary);
        }
    }
}
