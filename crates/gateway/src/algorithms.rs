//! Custodian-released algorithms on this gateway: the sandbox every run shares (the
//! `algorithm` crate, started on the first run), where releases run (`algorithms.location`),
//! a release as the principal of its own input decisions, and the check of a manifest's
//! reads against the configured collections.

use std::sync::{Arc, OnceLock};

use axum::http::StatusCode;

use crate::auth::Authenticated;
use crate::config::{AlgorithmsConfig, Config};
use crate::http::error::{ApiError, AppResult, ErrorCode};

/// The sandbox and where it runs.
pub struct Algorithms {
    location: Option<String>,
    runtime: OnceLock<Arc<algorithm::Runtime>>,
    /// Runs that may execute at once; others wait. Each may use its manifest's memory
    /// (at most `algorithm::manifest::MAX_MEMORY_BYTES`), so this bounds the sandbox's.
    slots: tokio::sync::Semaphore,
}

impl Algorithms {
    pub fn new(config: &AlgorithmsConfig) -> Algorithms {
        Algorithms {
            location: config.location.clone(),
            runtime: OnceLock::new(),
            slots: tokio::sync::Semaphore::new(config.concurrent_runs),
        }
    }

    /// A slot to run in, waiting for one while `algorithms.concurrent_runs` are running.
    pub async fn slot(&self) -> AppResult<tokio::sync::SemaphorePermit<'_>> {
        self.slots
            .acquire()
            .await
            .map_err(|_| ApiError::internal("the algorithm slots were closed"))
    }

    /// Where releases run; 503 `algorithms_not_configured` when this gateway runs none.
    pub fn location(&self) -> AppResult<&str> {
        self.location.as_deref().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::AlgorithmsNotConfigured,
                "this gateway runs no algorithms: set `algorithms.location` in its configuration",
            )
        })
    }

    /// The sandbox, started on first use (its epoch thread ticks only once something ran).
    pub fn runtime(&self) -> AppResult<Arc<algorithm::Runtime>> {
        if let Some(runtime) = self.runtime.get() {
            return Ok(runtime.clone());
        }
        let runtime = Arc::new(algorithm::Runtime::new().map_err(ApiError::internal)?);
        // Two first runs at once: one of the two runtimes is kept, the other dropped.
        Ok(self.runtime.get_or_init(|| runtime).clone())
    }
}

/// The principal id of a release: `algorithm:<name>@<version>`.
const RELEASE_ID_PREFIX: &str = "algorithm:";

/// A released algorithm as a principal: the entity no token may name (`algorithm`, refused
/// in the configuration's entities), located where this gateway runs algorithms, with the
/// role `released-algorithm` and no clearance. Only the run path builds one.
pub fn release_principal(release: &custody::Release, location: &str) -> Authenticated {
    let id = format!("{RELEASE_ID_PREFIX}{}@{}", release.name, release.version);
    Authenticated {
        principal: policy::Principal {
            id: id.clone(),
            entity: policy::ALGORITHM_ENTITY.to_string(),
            entity_country: location.to_string(),
            location: location.to_string(),
            clearance: Vec::new(),
            roles: vec![policy::RELEASED_ALGORITHM_ROLE.to_string()],
        },
        network_zone: String::new(),
        public_id: id,
    }
}

/// Whether `principal` is a release that is the active one of its name in `custody` now.
/// Anything else (a person, a retired or unknown release) is not.
pub fn release_in_force(custody: &custody::Custody, principal: &policy::Principal) -> bool {
    principal.entity == policy::ALGORITHM_ENTITY
        && principal
            .id
            .strip_prefix(RELEASE_ID_PREFIX)
            .and_then(|r| r.split_once('@'))
            .is_some_and(|(name, version)| {
                custody
                    .release(name, version)
                    .is_ok_and(|r| r.status() == "active")
            })
}

/// Every collection and field a manifest reads is one the configuration declares (the
/// manifest itself refuses a collection named twice).
pub fn check_reads(config: &Config, manifest: &algorithm::Manifest) -> Result<(), String> {
    for read in &manifest.reads {
        let Some(collection) = config.collections.get(&read.collection) else {
            return Err(format!(
                "it reads the collection `{}`, which the configuration does not declare",
                read.collection
            ));
        };
        for field in &read.fields {
            if !collection.fields.contains_key(field) {
                return Err(format!(
                    "it reads `{}.{field}`, which the configuration does not declare",
                    read.collection
                ));
            }
        }
    }
    Ok(())
}
