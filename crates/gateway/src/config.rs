//! The configuration file (`sovereign.toml`): parsing, then validation that names the
//! file, the key and the problem. Everything is checked before the service starts; an
//! unknown key is an error, because a misspelt key silently ignored is a rule not enforced.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use vault::{CollectionConfig, Layout, SiteConfig};

/// The configuration file's name inside a data folder.
pub const CONFIG_FILE: &str = "sovereign.toml";

/// Default request body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Jurisdictions (ISO 3166-1 alpha-2) whose subjects the vault may hold.
    pub jurisdictions: BTreeSet<String>,
    /// Countries whose presence (by location claim or network zone) makes a principal restricted.
    pub restricted_countries: BTreeSet<String>,
    #[serde(default)]
    pub server: ServerConfig,
    pub policy: PolicyFiles,
    pub log: LogConfig,
    pub auth: AuthConfig,
    /// Employer entities a token's `entity` claim may name.
    pub entities: BTreeMap<String, EntityConfig>,
    pub sites: BTreeMap<String, SiteConfig>,
    /// Jurisdiction → the sites its subjects may be stored at, in order of preference.
    pub residency: BTreeMap<String, Vec<String>>,
    pub collections: BTreeMap<String, CollectionConfig>,
    pub custody: CustodyConfig,
    pub keys: KeysConfig,
    pub egress: EgressConfig,
    /// Alert thresholds of the live analytics.
    #[serde(default)]
    pub analytics: AnalyticsConfig,
    /// Peer address ranges and the country they are in.
    #[serde(default)]
    pub network_zones: Vec<NetworkZone>,
    /// Custodian-released algorithms that run on this gateway.
    #[serde(default)]
    pub algorithms: AlgorithmsConfig,
    /// A data subject's own history in the log (`GET /v1/subjects/{id}/accesses`).
    #[serde(default)]
    pub history: HistoryConfig,
    /// SHA-256 (hex) of the file this configuration was loaded from, as logged at start.
    #[serde(skip)]
    pub source_sha256: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Largest accepted request body; larger ones get 413.
    pub body_limit_bytes: usize,
    /// A request that takes longer is answered 503.
    pub request_timeout_seconds: u64,
    /// Reader connections per embedded site store.
    pub store_readers: usize,
    /// A request's header must arrive whole within this many seconds of its first byte (or,
    /// on a new connection, of the connection); otherwise the connection is closed.
    pub header_read_timeout_seconds: u64,
    /// A kept-alive connection waiting for its next request, or a response the client stops
    /// reading, is closed after this many seconds without progress.
    pub idle_timeout_seconds: u64,
    /// Connections served at once; when all are taken, new ones wait in the listen queue
    /// until one closes. Lowered at start to what the open-file limit allows.
    pub max_connections: usize,
    /// Connections one client address may hold open at once; more are closed at once, so that
    /// one client cannot take every connection.
    pub max_connections_per_client: usize,
    /// Subject placements (jurisdiction and site) remembered, so that a request needs no store
    /// read to find its subject; 0 remembers none. Each read or write at a remembered site
    /// confirms it there.
    pub placement_cache_entries: usize,
}

/// The most `server.max_connections` may be.
pub const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            body_limit_bytes: DEFAULT_BODY_LIMIT,
            request_timeout_seconds: 30,
            store_readers: 4,
            header_read_timeout_seconds: 10,
            idle_timeout_seconds: 60,
            max_connections: 10_000,
            max_connections_per_client: 1_000,
            placement_cache_entries: vault::DEFAULT_PLACEMENT_CACHE_ENTRIES,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFiles {
    /// Cedar schema (human syntax), relative to the configuration's folder.
    pub schema: PathBuf,
    /// Cedar policy set, relative to the configuration's folder. Used only to start the very
    /// first time: after that the active set is the one the custodian last activated.
    pub policies: PathBuf,
    /// The custodian's signed activation statement for the first policy set.
    pub signature: PathBuf,
    /// The invariants every policy set must be proven to satisfy before it is activated
    /// (named Cedar policy sets, see the `prove` crate).
    #[serde(default = "default_invariants_file")]
    pub invariants: PathBuf,
    /// The custodian's signed activation statement for the invariants file; needed on the
    /// first start and whenever the file changes.
    #[serde(default = "default_invariants_signature")]
    pub invariants_signature: PathBuf,
    /// The longest one solver query may take; a query that takes longer counts as not
    /// proven, and the activation is refused.
    #[serde(default = "default_proof_timeout")]
    pub proof_timeout_seconds: u64,
    /// The cvc5 executable that proves (a path, or a name looked up on PATH); unset: the
    /// `CVC5` environment variable, else `cvc5` on PATH.
    #[serde(default)]
    pub solver: Option<PathBuf>,
}

/// Where `sovereign init` writes the invariants, and where they are read by default.
pub const INVARIANTS_FILE: &str = "policy/invariants.cedar";
/// The custodian's signed activation of the invariants file.
pub const INVARIANTS_SIGNATURE_FILE: &str = "policy/invariants.sig";

fn default_invariants_file() -> PathBuf {
    INVARIANTS_FILE.into()
}

fn default_invariants_signature() -> PathBuf {
    INVARIANTS_SIGNATURE_FILE.into()
}

fn default_proof_timeout() -> u64 {
    prove::DEFAULT_TIMEOUT.as_secs()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CustodyConfig {
    /// The custody database: access requests, grants, policy sets, releases, the kill switch.
    pub store: PathBuf,
    /// Where algorithm artifacts are kept, named by their SHA-256.
    pub artifacts: PathBuf,
    /// The custodian's signed-note verifier keys (files); statements count distinct signers.
    pub signers: Vec<PathBuf>,
    /// Custodian signatures needed to activate a policy set.
    #[serde(default = "one")]
    pub policy_threshold: usize,
    /// Custodian signatures needed to release an algorithm.
    #[serde(default = "one")]
    pub release_threshold: usize,
    /// Custodian signatures needed to suspend or lift a jurisdiction.
    #[serde(default = "one")]
    pub kill_switch_threshold: usize,
    /// A pending access request expires after this long, like `12h`.
    #[serde(default = "default_request_ttl", with = "humantime_serde_compat")]
    pub request_ttl: std::time::Duration,
    /// The longest grant an access request may ask for.
    #[serde(default = "default_max_grant", with = "humantime_serde_compat")]
    pub max_grant_duration: std::time::Duration,
    /// How long a break-glass use lasts.
    #[serde(default = "default_break_glass", with = "humantime_serde_compat")]
    pub break_glass_window: std::time::Duration,
    /// The largest algorithm artifact accepted.
    #[serde(default = "default_max_artifact")]
    pub max_artifact_bytes: usize,
    /// A gateway that has not reached the custody store for this long stops deciding (a kill
    /// switch or revocation made through another gateway would not reach it).
    #[serde(default = "default_unreachable_after", with = "humantime_serde_compat")]
    pub unreachable_after: std::time::Duration,
}

/// Envelope encryption of protected fields.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// The custodian's key-encryption key (64 hex characters), which wraps every data key.
    pub kek: PathBuf,
    /// The custodian's key store: wrapped per-subject data keys, apart from the site stores.
    /// A SQLite file (relative to the data folder) or a `postgres://` URL a fleet shares.
    pub store: String,
    /// Why a data key may be unwrapped: `access`, `migration`, `export`. Empty denies all.
    pub allowed_reasons: Vec<String>,
    /// Unwrapped data keys kept in memory, at most this many (0: none).
    #[serde(default = "default_data_key_cache_entries")]
    pub data_key_cache_entries: usize,
    /// How long an unwrapped data key is kept (like `1s`; `0s`: not at all). Erasure on this
    /// gateway forgets a subject's keys at once; a gateway sharing the key store stops using a
    /// key another one destroyed within this time.
    #[serde(
        default = "default_data_key_cache_ttl",
        with = "humantime_serde_compat"
    )]
    pub data_key_cache_ttl: std::time::Duration,
}

fn default_data_key_cache_entries() -> usize {
    vault::DEFAULT_DATA_KEY_CACHE_ENTRIES
}

fn default_data_key_cache_ttl() -> std::time::Duration {
    vault::DEFAULT_DATA_KEY_CACHE_TTL
}

/// What may leave the jurisdiction, and how.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// The key of the subject pseudonyms in egress (32 bytes, hex); it never leaves.
    pub pseudonym_key: PathBuf,
    /// Aggregate groups smaller than this are suppressed.
    #[serde(default = "default_min_group")]
    pub min_group_size: u64,
    /// Rows per egress page (the most one response carries).
    #[serde(default = "default_page_size")]
    pub page_size: usize,
}

/// When the live analytics raise an alert. Every alert is also appended to the log.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// Bulk access: one principal touching more distinct subjects than this in a minute.
    pub bulk_subjects_per_minute: usize,
    /// Egress spike: more egress rows than this in a minute, all consumers together.
    pub egress_rows_per_minute: u64,
    /// A checkpoint must cover new entries within this many seconds.
    pub checkpoint_deadline_seconds: u64,
    /// The same alert about the same principal is raised (and logged) at most once in this
    /// many seconds; repeats in between are counted in the metrics only. This keeps one
    /// hostile client from doubling the log's growth.
    pub alert_repeat_seconds: u64,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            bulk_subjects_per_minute: 100,
            egress_rows_per_minute: 10_000,
            checkpoint_deadline_seconds: 5,
            alert_repeat_seconds: 60,
        }
    }
}

fn default_min_group() -> u64 {
    10
}

fn default_page_size() -> usize {
    1000
}

fn one() -> usize {
    1
}

fn default_request_ttl() -> std::time::Duration {
    std::time::Duration::from_secs(12 * 3600)
}

fn default_max_grant() -> std::time::Duration {
    std::time::Duration::from_secs(8 * 3600)
}

fn default_unreachable_after() -> std::time::Duration {
    std::time::Duration::from_secs(5)
}

fn default_break_glass() -> std::time::Duration {
    std::time::Duration::from_secs(15 * 60)
}

fn default_max_artifact() -> usize {
    64 * 1024 * 1024
}

/// Durations written the human way (`15m`, `12h`) in the configuration.
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("`{text}` is not a duration like 15m or 12h: {e}"))
        })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// The log database: `sqlite:PATH` (relative to the data folder) or `postgres://…`, which
    /// several gateways may share.
    pub store: String,
    /// The checkpoint signing key: a C2SP signed-note signer key string. Its name is the log's origin.
    pub signer_key: PathBuf,
    /// The key of the subject pseudonyms written to the log (32 bytes, hex).
    pub pseudonym_key: PathBuf,
    /// A new checkpoint is signed at most this long after the log grows.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval_ms: u64,
    /// Most entries committed in one transaction (one fsync).
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Pooled connections serving reads of a PostgreSQL log (tiles, proofs).
    #[serde(default = "default_log_readers")]
    pub readers: usize,
    /// On a PostgreSQL log, how long a request waits for some gateway to integrate its entry
    /// before it fails (the entry stays queued and is still added later).
    #[serde(default = "default_integration_deadline")]
    pub integration_deadline_seconds: u64,
    /// MiB of full tiles and entry bundles kept in memory for monitors (the first ones read;
    /// they never change); 0 keeps none.
    #[serde(default = "default_tile_cache_mib")]
    pub tile_cache_mib: usize,
    /// The witnesses asked to cosign each checkpoint (C2SP tlog-witness).
    #[serde(default)]
    pub witnesses: Vec<WitnessConfig>,
    /// How many of `witnesses` must have cosigned a checkpoint before `/log/checkpoint`
    /// serves it; 0 serves the log's own signature alone.
    #[serde(default)]
    pub witness_quorum: usize,
    /// How long one request to a witness may take.
    #[serde(default = "default_witness_timeout")]
    pub witness_timeout_ms: u64,
}

/// One `[[log.witnesses]]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    /// The witness's submission prefix: `add-checkpoint` is posted to `<url>/add-checkpoint`.
    pub url: String,
    /// The witness's verifier key (a C2SP vkey of key type 0x04, `name+keyid+base64`).
    pub key: String,
}

fn default_witness_timeout() -> u64 {
    5000
}

fn default_tile_cache_mib() -> usize {
    logstore::DEFAULT_TILE_CACHE_BYTES >> 20
}

fn default_log_readers() -> usize {
    4
}

fn default_integration_deadline() -> u64 {
    30
}

fn default_checkpoint_interval() -> u64 {
    500
}

fn default_max_batch() -> usize {
    4096
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Verified tokens kept until they expire, at most this many.
    #[serde(default = "default_token_cache")]
    pub token_cache_entries: usize,
    /// Tokens whose `exp` is further ahead than this (like `24h`) are refused: a token that
    /// never expires cannot be taken back.
    #[serde(
        default = "default_max_token_lifetime",
        with = "humantime_serde_compat"
    )]
    pub max_token_lifetime: std::time::Duration,
    pub issuers: Vec<IssuerConfig>,
}

/// The longest token lifetime accepted unless configured: a day.
pub const DEFAULT_MAX_TOKEN_LIFETIME: std::time::Duration =
    std::time::Duration::from_secs(24 * 3600);

fn default_max_token_lifetime() -> std::time::Duration {
    DEFAULT_MAX_TOKEN_LIFETIME
}

fn default_leeway() -> u64 {
    30
}

fn default_token_cache() -> usize {
    10_000
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The `iss` claim this issuer's tokens carry.
    pub issuer: String,
    /// An Ed25519 public key in PEM (SPKI) form; tokens must be signed with EdDSA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_pem: Option<PathBuf>,
    /// A JWKS file (RFC 7517); keys are chosen by the token's `kid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<PathBuf>,
    /// If set, tokens must carry this `aud`; if not, tokens that carry any `aud` are refused
    /// (they were made for another service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EntityConfig {
    /// Human-readable name.
    pub name: String,
    /// The country the entity is controlled from (ISO 3166-1 alpha-2).
    pub country: String,
}

/// Most entries one page of a subject's history carries (each with its proof).
pub const MAX_HISTORY_PAGE: usize = 1000;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// The index of log entries by the subject pseudonyms they name, derived from the log
    /// (rebuilt from it when deleted or when the log is not the one it was built from).
    /// Relative to the data folder; each gateway of a fleet keeps its own.
    pub index: PathBuf,
    /// Entries a page shows when the request does not say (`?limit=`, at most 1000).
    pub page_size: usize,
    /// Entries about the subject an export carries (newest first); an export of a subject
    /// with more says so, and the history's pages have them all.
    pub export_limit: usize,
    /// Whether what the history shows of each entry names who acted by id (the token's
    /// `sub`) besides entity, location and roles. Presentation only: the entries it carries
    /// for their proofs are the log's, which hold the id, as the public log does.
    pub show_accessor_ids: bool,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            index: PathBuf::from("log/subject-index.sqlite"),
            page_size: 100,
            export_limit: 1000,
            show_accessor_ids: false,
        }
    }
}

/// Where released algorithms run, and how many at once.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlgorithmsConfig {
    /// The country (ISO 3166-1 alpha-2) of the machines this gateway runs on: a release runs
    /// here, so its decisions name this as its location. Unset: no algorithm runs (503).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Runs executing at once (others wait): with each run's memory at most 256 MiB, this
    /// bounds the sandbox's memory.
    pub concurrent_runs: usize,
}

impl Default for AlgorithmsConfig {
    fn default() -> Self {
        AlgorithmsConfig {
            location: None,
            concurrent_runs: 4,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkZone {
    pub name: String,
    pub cidr: IpNet,
    /// The country the addresses of this zone are in.
    pub country: String,
}

/// One thing wrong with a configuration: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.problem)
        } else {
            write!(
                f,
                "{}: `{}`: {}",
                self.file.display(),
                self.key,
                self.problem
            )
        }
    }
}

/// All the problems found, so that a user fixes them in one go.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads and validates `DIR/sovereign.toml`. Paths inside it are relative to `DIR`.
    pub fn load(data_dir: &Path) -> Result<Config, ConfigErrors> {
        let file = data_dir.join(CONFIG_FILE);
        let single = |key: &str, problem: String| {
            ConfigErrors(vec![ConfigError {
                file: file.clone(),
                key: key.to_string(),
                problem,
            }])
        };
        let text = std::fs::read_to_string(&file)
            .map_err(|e| single("", format!("cannot read: {e} (run `sovereign init`?)")))?;
        let mut config = Config::parse(&text).map_err(|(key, problem)| single(&key, problem))?;
        config.source_sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&text));
        let problems = config.validate(data_dir);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(
                problems
                    .into_iter()
                    .map(|(key, problem)| ConfigError {
                        file: file.clone(),
                        key,
                        problem,
                    })
                    .collect(),
            ))
        }
    }

    /// Parses TOML text; on error returns the key path and the problem.
    pub fn parse(text: &str) -> Result<Config, (String, String)> {
        let value: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            (String::new(), e.to_string().trim_end().replace('\n', " "))
        })?;
        serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            (key, e.into_inner().to_string())
        })
    }

    /// The vault's part of the configuration.
    pub fn layout(&self) -> Layout {
        Layout {
            jurisdictions: self.jurisdictions.clone(),
            sites: self.sites.clone(),
            residency: self.residency.clone(),
            collections: self.collections.clone(),
        }
    }

    /// Checks everything that parsing cannot: names, references between sections, and that
    /// the files named exist. Returns (key, problem) pairs.
    pub fn validate(&self, data_dir: &Path) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut check_country = |key: String, code: &str| {
            if !is_country_code(code) {
                problems.push((
                    key,
                    format!("`{code}` is not an ISO 3166-1 alpha-2 code (two upper-case letters)"),
                ));
            }
        };
        for j in &self.jurisdictions {
            check_country("jurisdictions".into(), j);
        }
        for c in &self.restricted_countries {
            check_country("restricted_countries".into(), c);
        }
        for (name, entity) in &self.entities {
            check_country(format!("entities.{name}.country"), &entity.country);
        }
        for (i, zone) in self.network_zones.iter().enumerate() {
            check_country(format!("network_zones[{i}].country"), &zone.country);
        }
        if let Some(location) = &self.algorithms.location {
            check_country("algorithms.location".into(), location);
        }
        if !(1..=256).contains(&self.algorithms.concurrent_runs) {
            problems.push((
                "algorithms.concurrent_runs".into(),
                "must be 1 to 256".into(),
            ));
        }
        if self.jurisdictions.is_empty() {
            problems.push(("jurisdictions".into(), "declare at least one".into()));
        }
        for name in self.entities.keys() {
            if name == policy::ALGORITHM_ENTITY {
                problems.push((
                    format!("entities.{name}"),
                    "reserved: released algorithms are this entity in policy decisions, and no token may name it".into(),
                ));
            }
            if !is_simple_name(name) {
                problems.push((
                    format!("entities.{name}"),
                    "entity names are 1-64 characters of a-z, 0-9, `_` and `-`, starting with a letter".into(),
                ));
            }
        }
        for (i, zone) in self.network_zones.iter().enumerate() {
            if !is_simple_name(&zone.name) {
                problems.push((
                    format!("network_zones[{i}].name"),
                    "zone names are 1-64 characters of a-z, 0-9, `_` and `-`, starting with a letter".into(),
                ));
            }
        }
        for problem in self.layout().validate() {
            problems.push((problem.key, problem.problem));
        }
        if self.server.body_limit_bytes == 0 {
            problems.push(("server.body_limit_bytes".into(), "must be above 0".into()));
        }
        if self.server.request_timeout_seconds == 0 {
            problems.push((
                "server.request_timeout_seconds".into(),
                "must be above 0".into(),
            ));
        }
        if self.server.store_readers == 0 {
            problems.push(("server.store_readers".into(), "must be above 0".into()));
        }
        for (key, value) in [
            (
                "server.header_read_timeout_seconds",
                self.server.header_read_timeout_seconds,
            ),
            (
                "server.idle_timeout_seconds",
                self.server.idle_timeout_seconds,
            ),
        ] {
            if !(1..=3600).contains(&value) {
                problems.push((key.into(), "must be between 1 and 3600".into()));
            }
        }
        if !(1..=MAX_CONNECTIONS_LIMIT).contains(&self.server.max_connections) {
            problems.push((
                "server.max_connections".into(),
                format!("must be between 1 and {MAX_CONNECTIONS_LIMIT}"),
            ));
        }
        if !(1..=MAX_CONNECTIONS_LIMIT).contains(&self.server.max_connections_per_client) {
            problems.push((
                "server.max_connections_per_client".into(),
                format!("must be between 1 and {MAX_CONNECTIONS_LIMIT}"),
            ));
        }
        let store = &self.log.store;
        let postgres = store.starts_with("postgres://") || store.starts_with("postgresql://");
        if store.starts_with("redb:") {
            problems.push((
                "log.store".into(),
                "`redb:` log stores are not implemented yet: use `sqlite:PATH` or `postgres://…`"
                    .into(),
            ));
        } else if !postgres
            && store
                .strip_prefix("sqlite:")
                .is_none_or(|p| p.trim().is_empty())
        {
            problems.push((
                "log.store".into(),
                "must be `sqlite:PATH` or `postgres://USER[:PASSWORD]@HOST[:PORT]/DB`".into(),
            ));
        }
        if !(1..=256).contains(&self.log.readers) {
            problems.push(("log.readers".into(), "must be between 1 and 256".into()));
        }
        if !(1..=3600).contains(&self.log.integration_deadline_seconds) {
            problems.push((
                "log.integration_deadline_seconds".into(),
                "must be between 1 and 3600".into(),
            ));
        }
        if !(10..=60_000).contains(&self.log.checkpoint_interval_ms) {
            problems.push((
                "log.checkpoint_interval_ms".into(),
                "must be between 10 and 60000".into(),
            ));
        }
        if !(1..=65_536).contains(&self.log.max_batch) {
            problems.push(("log.max_batch".into(), "must be between 1 and 65536".into()));
        }
        if self.log.tile_cache_mib > 65_536 {
            problems.push(("log.tile_cache_mib".into(), "at most 65536".into()));
        }
        self.validate_witnesses(&mut problems);
        for (field, path) in [
            ("log.signer_key", &self.log.signer_key),
            ("log.pseudonym_key", &self.log.pseudonym_key),
        ] {
            let full = data_dir.join(path);
            if !full.is_file() {
                problems.push((
                    field.into(),
                    format!("file `{}` does not exist", full.display()),
                ));
            }
        }
        let lifetime = self.auth.max_token_lifetime.as_secs();
        if lifetime == 0 || lifetime > 366 * 24 * 3600 {
            problems.push((
                "auth.max_token_lifetime".into(),
                "must be between 1s and 366 days".into(),
            ));
        }
        if self.server.placement_cache_entries > 10_000_000 {
            problems.push((
                "server.placement_cache_entries".into(),
                "at most 10000000".into(),
            ));
        }
        if self.keys.data_key_cache_entries > 1_000_000 {
            problems.push((
                "keys.data_key_cache_entries".into(),
                "at most 1000000".into(),
            ));
        }
        if self.keys.data_key_cache_ttl > std::time::Duration::from_secs(3600) {
            problems.push((
                "keys.data_key_cache_ttl".into(),
                "at most 1h: a key another gateway destroyed is used for up to this long".into(),
            ));
        }
        if self.auth.token_cache_entries > 10_000_000 {
            problems.push(("auth.token_cache_entries".into(), "at most 10000000".into()));
        }
        if self.auth.issuers.is_empty() {
            problems.push((
                "auth.issuers".into(),
                "declare at least one token issuer".into(),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, issuer) in self.auth.issuers.iter().enumerate() {
            let key = format!("auth.issuers[{i}]");
            if issuer.issuer.is_empty() {
                problems.push((format!("{key}.issuer"), "must not be empty".into()));
            }
            if !seen.insert(issuer.issuer.clone()) {
                problems.push((
                    format!("{key}.issuer"),
                    format!("issuer `{}` is declared twice", issuer.issuer),
                ));
            }
            match (&issuer.public_key_pem, &issuer.jwks) {
                (None, None) => {
                    problems.push((key.clone(), "give `public_key_pem` or `jwks`".into()))
                }
                (Some(_), Some(_)) => problems.push((
                    key.clone(),
                    "give only one of `public_key_pem` and `jwks`".into(),
                )),
                _ => {}
            }
            for (field, path) in [
                ("public_key_pem", &issuer.public_key_pem),
                ("jwks", &issuer.jwks),
            ] {
                if let Some(path) = path {
                    let full = data_dir.join(path);
                    if !full.is_file() {
                        problems.push((
                            format!("{key}.{field}"),
                            format!("file `{}` does not exist", full.display()),
                        ));
                    }
                }
            }
        }
        self.validate_custody(data_dir, &mut problems);
        for (field, path) in [
            ("policy.schema", &self.policy.schema),
            ("policy.policies", &self.policy.policies),
            ("policy.signature", &self.policy.signature),
        ] {
            let full = data_dir.join(path);
            if !full.is_file() {
                problems.push((
                    field.into(),
                    format!("file `{}` does not exist", full.display()),
                ));
            }
        }
        let invariants = data_dir.join(&self.policy.invariants);
        if !invariants.is_file() {
            // A data folder from before invariants were required lacks it.
            problems.push((
                "policy.invariants".into(),
                format!(
                    "file `{0}` does not exist: write the default invariants with `sovereign policy invariants > {0}`, and have the custodian sign them with `sovereign policy sign-invariants {0} --key CUSTODIAN_KEY --out {1}`",
                    invariants.display(),
                    data_dir.join(&self.policy.invariants_signature).display()
                ),
            ));
        }
        if !(1..=600).contains(&self.policy.proof_timeout_seconds) {
            problems.push((
                "policy.proof_timeout_seconds".into(),
                "must be between 1 and 600".into(),
            ));
        }
        problems
    }
}

impl Config {
    fn validate_witnesses(&self, problems: &mut Vec<(String, String)>) {
        let mut keys = Vec::new();
        for (i, w) in self.log.witnesses.iter().enumerate() {
            let key = format!("log.witnesses[{i}]");
            if !(w.url.starts_with("http://") || w.url.starts_with("https://"))
                || reqwest::Url::parse(&w.url).is_err()
            {
                problems.push((
                    format!("{key}.url"),
                    format!(
                        "`{}` is not an http:// or https:// URL (the witness's submission prefix)",
                        w.url
                    ),
                ));
            }
            match tlog::cosignature::WitnessKey::new(&w.key) {
                Ok(k) => keys.push(k),
                Err(e) => problems.push((
                    format!("{key}.key"),
                    format!("not a witness verifier key (a C2SP vkey of key type 0x04; `sovereign witness key` prints one): {e}"),
                )),
            }
        }
        if self.log.witness_quorum > 0
            && let Err(e) = tlog::cosignature::WitnessPolicy::new(keys, self.log.witness_quorum)
        {
            problems.push(("log.witness_quorum".into(), e.to_string()));
        }
        if !(100..=60_000).contains(&self.log.witness_timeout_ms) {
            problems.push((
                "log.witness_timeout_ms".into(),
                "must be between 100 and 60000".into(),
            ));
        }
    }

    fn validate_custody(&self, data_dir: &Path, problems: &mut Vec<(String, String)>) {
        let c = &self.custody;
        // Anything else would be taken for a file name: a mistyped URL would quietly give
        // this gateway a custody store of its own, apart from the fleet's.
        let store = c.store.to_string_lossy();
        if store.contains("://") && !pgconn::is_postgres_url(&store) {
            problems.push((
                "custody.store".into(),
                "must be a file in the data folder or a postgres:// (postgresql://) URL".into(),
            ));
        }
        if c.signers.is_empty() {
            problems.push((
                "custody.signers".into(),
                "list at least one custodian verifier key file".into(),
            ));
        }
        for (i, path) in c.signers.iter().enumerate() {
            let full = data_dir.join(path);
            if let Err(e) = custody::statement::load_verifier(&full) {
                problems.push((format!("custody.signers[{i}]"), e.to_string()));
            }
        }
        for (key, threshold) in [
            ("custody.policy_threshold", c.policy_threshold),
            ("custody.release_threshold", c.release_threshold),
            ("custody.kill_switch_threshold", c.kill_switch_threshold),
        ] {
            if threshold == 0 || threshold > c.signers.len().max(1) {
                problems.push((
                    key.into(),
                    format!(
                        "must be between 1 and the number of custody.signers ({})",
                        c.signers.len()
                    ),
                ));
            }
        }
        for (key, duration) in [
            ("custody.request_ttl", c.request_ttl),
            ("custody.max_grant_duration", c.max_grant_duration),
            ("custody.break_glass_window", c.break_glass_window),
        ] {
            if duration.as_secs() == 0 || duration.as_secs() > 366 * 24 * 3600 {
                problems.push((key.into(), "must be between 1s and 366 days".into()));
            }
        }
        // The store is looked at once a second: less than two would stop a healthy gateway.
        if !(2..=3600).contains(&c.unreachable_after.as_secs()) {
            problems.push((
                "custody.unreachable_after".into(),
                "must be between 2s and 1h".into(),
            ));
        }
        for (i, reason) in self.keys.allowed_reasons.iter().enumerate() {
            if vault::UnwrapReason::parse(reason).is_err() {
                problems.push((
                    format!("keys.allowed_reasons[{i}]"),
                    format!("`{reason}` is not a reason: use access, migration or export"),
                ));
            }
        }
        for (key, path) in [
            ("keys.kek", &self.keys.kek),
            ("egress.pseudonym_key", &self.egress.pseudonym_key),
        ] {
            if !data_dir.join(path).is_file() {
                problems.push((
                    key.into(),
                    format!("file `{}` does not exist", data_dir.join(path).display()),
                ));
            }
        }
        if self.egress.min_group_size == 0 {
            problems.push(("egress.min_group_size".into(), "must be above 0".into()));
        }
        if !(1..=vault::MAX_PAGE_SIZE).contains(&self.egress.page_size) {
            problems.push((
                "egress.page_size".into(),
                format!("must be between 1 and {}", vault::MAX_PAGE_SIZE),
            ));
        }
        for (key, value) in [
            ("history.page_size", self.history.page_size),
            ("history.export_limit", self.history.export_limit),
        ] {
            if !(1..=MAX_HISTORY_PAGE).contains(&value) {
                problems.push((
                    key.into(),
                    format!("must be between 1 and {MAX_HISTORY_PAGE}"),
                ));
            }
        }
        let a = &self.analytics;
        for (key, value) in [
            (
                "analytics.bulk_subjects_per_minute",
                a.bulk_subjects_per_minute as u64,
            ),
            ("analytics.egress_rows_per_minute", a.egress_rows_per_minute),
            (
                "analytics.checkpoint_deadline_seconds",
                a.checkpoint_deadline_seconds,
            ),
        ] {
            if value == 0 {
                problems.push((key.into(), "must be above 0".into()));
            }
        }
        if c.max_artifact_bytes == 0 {
            problems.push((
                "custody.max_artifact_bytes".into(),
                "must be above 0".into(),
            ));
        }
        for (name, collection) in &self.collections {
            if !(1..=16).contains(&collection.approvals) {
                problems.push((
                    format!("collections.{name}.approvals"),
                    "must be between 1 and 16".into(),
                ));
            }
        }
    }
}

/// The zone a peer address is in: the most specific matching range.
pub fn find_zone(zones: &[NetworkZone], addr: IpAddr) -> Option<&NetworkZone> {
    zones
        .iter()
        .filter(|z| z.cidr.contains(&addr))
        .max_by_key(|z| z.cidr.prefix_len())
}

pub fn is_country_code(s: &str) -> bool {
    s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase())
}

fn is_simple_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named() {
        let text = crate::setup::default_config_text();
        let bad = text.replace("operator = \"custodian\"", "operater = \"custodian\"");
        let (key, problem) = Config::parse(&bad).unwrap_err();
        assert_eq!(key, "sites.us-east.operater");
        assert!(problem.contains("operater"), "{problem}");
    }

    #[test]
    fn default_config_parses() {
        Config::parse(&crate::setup::default_config_text()).unwrap();
    }

    #[test]
    fn wrong_type_is_named() {
        let text = crate::setup::default_config_text();
        let bad = text.replace("body_limit_bytes = 1048576", "body_limit_bytes = \"big\"");
        let (key, _problem) = Config::parse(&bad).unwrap_err();
        assert_eq!(key, "server.body_limit_bytes");
    }

    #[test]
    fn a_missing_invariants_file_says_how_to_write_and_sign_one() {
        let config = Config::parse(&crate::setup::default_config_text()).unwrap();
        let problems = config.validate(Path::new("/nonexistent"));
        let problem = problems
            .iter()
            .find(|(key, _)| key == "policy.invariants")
            .unwrap_or_else(|| panic!("{problems:?}"));
        assert!(
            problem.1.contains("sovereign policy invariants >")
                && problem.1.contains("sovereign policy sign-invariants"),
            "{problem:?}"
        );
    }

    #[test]
    fn the_algorithm_entity_is_reserved_and_runs_are_bounded() {
        let mut config = Config::parse(&crate::setup::default_config_text()).unwrap();
        assert_eq!(config.algorithms.location.as_deref(), Some("US"));
        let parent = config.entities["parent"].clone();
        config.entities.insert("algorithm".into(), parent);
        config.algorithms.concurrent_runs = 0;
        config.algorithms.location = Some("us".into());
        let problems = config.validate(Path::new("/nonexistent"));
        for (key, says) in [
            ("entities.algorithm", "reserved"),
            ("algorithms.concurrent_runs", "1 to 256"),
            ("algorithms.location", "ISO 3166-1"),
        ] {
            assert!(
                problems.iter().any(|(k, p)| k == key && p.contains(says)),
                "{key}: {problems:?}"
            );
        }
    }

    #[test]
    fn a_redb_log_store_is_refused_as_not_implemented() {
        let text = crate::setup::default_config_text();
        let mut config = Config::parse(&text).unwrap();
        config.log.store = "redb:log.redb".into();
        let problems = config.validate(Path::new("/nonexistent"));
        let problem = problems
            .iter()
            .find(|(key, _)| key == "log.store")
            .unwrap_or_else(|| panic!("{problems:?}"));
        assert!(problem.1.contains("not implemented"), "{problem:?}");
    }

    #[test]
    fn connection_limits_and_token_lifetime_are_checked() {
        let mut config = Config::parse(&crate::setup::default_config_text()).unwrap();
        // The commented reference says what the defaults are.
        let defaults = ServerConfig::default();
        assert_eq!(
            config.server.header_read_timeout_seconds,
            defaults.header_read_timeout_seconds
        );
        assert_eq!(
            config.server.idle_timeout_seconds,
            defaults.idle_timeout_seconds
        );
        assert_eq!(config.server.max_connections, defaults.max_connections);
        assert_eq!(config.auth.max_token_lifetime, DEFAULT_MAX_TOKEN_LIFETIME);

        config.server.header_read_timeout_seconds = 0;
        config.server.idle_timeout_seconds = 3601;
        config.server.max_connections = 0;
        config.auth.max_token_lifetime = std::time::Duration::ZERO;
        let problems = config.validate(Path::new("/nonexistent"));
        for key in [
            "server.header_read_timeout_seconds",
            "server.idle_timeout_seconds",
            "server.max_connections",
            "auth.max_token_lifetime",
        ] {
            assert!(
                problems.iter().any(|(k, _)| k == key),
                "{key} not refused: {problems:?}"
            );
        }
        let text = crate::setup::default_config_text().replace(
            "max_token_lifetime = \"24h\"",
            "max_token_lifetime = \"forever\"",
        );
        let (key, _) = Config::parse(&text).unwrap_err();
        assert_eq!(key, "auth.max_token_lifetime");
    }

    #[test]
    fn cache_sizes_and_the_data_key_lifetime_are_checked() {
        let mut config = Config::parse(&crate::setup::default_config_text()).unwrap();
        // The commented reference says what the defaults are.
        assert_eq!(
            config.server.placement_cache_entries,
            vault::DEFAULT_PLACEMENT_CACHE_ENTRIES
        );
        assert_eq!(
            config.keys.data_key_cache_entries,
            vault::DEFAULT_DATA_KEY_CACHE_ENTRIES
        );
        assert_eq!(
            config.keys.data_key_cache_ttl,
            vault::DEFAULT_DATA_KEY_CACHE_TTL
        );
        assert_eq!(
            config.log.tile_cache_mib << 20,
            logstore::DEFAULT_TILE_CACHE_BYTES
        );
        config.server.placement_cache_entries = 10_000_001;
        config.log.tile_cache_mib = 65_537;
        config.keys.data_key_cache_entries = 1_000_001;
        config.keys.data_key_cache_ttl = std::time::Duration::from_secs(3601);
        let problems = config.validate(Path::new("/nonexistent"));
        for key in [
            "server.placement_cache_entries",
            "keys.data_key_cache_entries",
            "keys.data_key_cache_ttl",
            "log.tile_cache_mib",
        ] {
            assert!(
                problems.iter().any(|(k, _)| k == key),
                "{key} not refused: {problems:?}"
            );
        }
        // Zero turns a cache off; it is not a problem.
        config.server.placement_cache_entries = 0;
        config.log.tile_cache_mib = 0;
        config.keys.data_key_cache_entries = 0;
        config.keys.data_key_cache_ttl = std::time::Duration::ZERO;
        let problems = config.validate(Path::new("/nonexistent"));
        assert!(
            !problems.iter().any(|(k, _)| k.contains("cache")),
            "{problems:?}"
        );
    }

    #[test]
    fn the_custody_store_is_a_file_or_a_postgres_url_and_its_staleness_bounded() {
        let mut config = Config::parse(&crate::setup::default_config_text()).unwrap();
        assert_eq!(config.custody.unreachable_after.as_secs(), 5);
        let refused = |config: &Config, key: &str| {
            config
                .validate(Path::new("/nonexistent"))
                .iter()
                .any(|(k, _)| k == key)
        };
        for (store, bad) in [
            ("custody/custody.sqlite", false),
            ("postgres://sovereign@db/custody", false),
            ("postgresql://sovereign@db/custody", false),
            // A typo must not give this gateway a custody store of its own.
            ("postgress://sovereign:pw@db/custody", true),
            ("mysql://db/custody", true),
        ] {
            config.custody.store = store.into();
            assert_eq!(refused(&config, "custody.store"), bad, "{store}");
        }
        for (seconds, bad) in [(1, true), (2, false), (3600, false), (3601, true)] {
            config.custody.unreachable_after = std::time::Duration::from_secs(seconds);
            assert_eq!(
                refused(&config, "custody.unreachable_after"),
                bad,
                "{seconds}"
            );
        }
    }

    #[test]
    fn zone_prefers_most_specific() {
        let zones = vec![
            NetworkZone {
                name: "wide".into(),
                cidr: "10.0.0.0/8".parse().unwrap(),
                country: "US".into(),
            },
            NetworkZone {
                name: "narrow".into(),
                cidr: "10.1.0.0/16".parse().unwrap(),
                country: "CN".into(),
            },
        ];
        let find = |a: &str| find_zone(&zones, a.parse().unwrap()).map(|z| z.name.as_str());
        assert_eq!(find("10.1.2.3"), Some("narrow"));
        assert_eq!(find("10.2.2.3"), Some("wide"));
        assert_eq!(find("127.0.0.1"), None);
    }
}
