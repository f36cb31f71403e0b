//! PostgreSQL connections as Sovereign's stores open them.
//!
//! The site store (`vault`) and the log store (`logstore`) both keep data in PostgreSQL, and
//! both need the same care, kept here once:
//!
//! - A store URL may carry a password, so nothing here repeats it: errors name the server by
//!   [`Target::name`], the URL rebuilt without credentials or parameters.
//! - Every connection sets `synchronous_commit = on`, so a write that returned is on the
//!   server's disk, whatever the server's default.
//! - Schemas are versioned in the `sovereign_meta` table, one key per store kind, and created
//!   or upgraded at open under an advisory lock, so two gateways starting at once do not race;
//!   a database from a newer build is refused rather than misread.
//! - TLS is not implemented yet: a URL asks for plain TCP (`sslmode=disable`, or no `sslmode`)
//!   or is refused.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use postgres::config::{Host, SslMode};
use postgres::{Client, Config, NoTls};
use r2d2::CustomizeConnection;
use r2d2_postgres::PostgresConnectionManager;

/// How long connecting waits when the URL sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an operation waits for a free pooled connection (or a new one) before failing.
const POOL_TIMEOUT: Duration = Duration::from_secs(30);

/// The advisory lock that serialises schema creation and migration ("sovereig" in ASCII).
const MIGRATION_LOCK: i64 = 0x736f_7665_7265_6967;

pub type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;
pub type Pooled = r2d2::PooledConnection<PostgresConnectionManager<NoTls>>;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// A URL this build cannot read. The message never repeats the URL.
    #[error("{0}")]
    InvalidUrl(String),

    #[error("{0}")]
    NotImplemented(String),

    /// The server (or the pool) failed. `target` is [`Target::name`].
    #[error("PostgreSQL `{target}`: {}", chain(.source.as_ref()))]
    Server {
        target: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// The database holds a schema this build does not know.
    #[error(
        "PostgreSQL `{target}` has {key} {found}, but this build only knows versions up to \
         {supported}: open it with a newer Sovereign"
    )]
    UnsupportedSchema {
        target: String,
        key: String,
        found: i64,
        supported: i64,
    },
}

/// A parsed PostgreSQL URL and its password-free name.
#[derive(Clone)]
pub struct Target {
    config: Config,
    name: String,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Is `url` a PostgreSQL URL (`postgres://` or `postgresql://`)?
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl Target {
    /// Reads a `postgres://` or `postgresql://` URL.
    pub fn parse(url: &str) -> Result<Target, PgError> {
        // Checked before parsing: the parser refuses modes it does not know (`verify-full`).
        if let Some(mode) = query_param(url, "sslmode").filter(|mode| mode != "disable") {
            let mode: String = mode.chars().take(32).collect();
            return Err(PgError::NotImplemented(format!(
                "TLS to PostgreSQL is not implemented yet: the URL asks for `sslmode={mode}`; \
                 use `sslmode=disable` (plain TCP) on a trusted network"
            )));
        }
        let mut config = Config::from_str(url).map_err(|e| {
            // The parser's messages name options, never their values.
            PgError::InvalidUrl(format!("the PostgreSQL URL cannot be read: {}", chain(&e)))
        })?;
        let name = redacted(&config);
        config.ssl_mode(SslMode::Disable);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        Ok(Target { config, name })
    }

    /// The URL without its password or parameters, as errors name it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// One connection with the session settings, outside any pool. It fails at once with
    /// the server's reason, where a pool would retry until its timeout.
    pub fn connect(&self) -> Result<Client, PgError> {
        let mut client = self.config.connect(NoTls).map_err(|e| self.error(e))?;
        SessionSettings
            .on_acquire(&mut client)
            .map_err(|e| self.error(e))?;
        Ok(client)
    }

    /// A pool of at most `size` connections (at least one), each with the session settings.
    pub fn pool(&self, size: usize) -> Result<Pool, PgError> {
        let manager = PostgresConnectionManager::new(self.config.clone(), NoTls);
        r2d2::Pool::builder()
            .max_size(u32::try_from(size.max(1)).unwrap_or(u32::MAX))
            .min_idle(Some(1))
            .connection_timeout(POOL_TIMEOUT)
            .connection_customizer(Box::new(SessionSettings))
            .build(manager)
            .map_err(|e| self.error(e))
    }

    /// Wraps a driver or pool error with the target's name.
    pub fn error(
        &self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> PgError {
        PgError::Server {
            target: self.name.clone(),
            source: source.into(),
        }
    }

    /// Brings this store kind's tables to version `steps.len()`: `steps[v]` is the SQL that
    /// upgrades version `v` to `v + 1` (so `steps[0]` creates them). The version is kept in
    /// `sovereign_meta` under `key`; a newer version than this build knows is refused.
    pub fn migrate(&self, conn: &mut Client, key: &str, steps: &[&str]) -> Result<(), PgError> {
        let error = |e: postgres::Error| self.error(e);
        let supported = steps.len() as i64;
        let mut tx = conn.transaction().map_err(error)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(error)?;
        // Looked up rather than `CREATE TABLE IF NOT EXISTS`, which needs the right to create
        // tables even when they exist.
        let has_meta: bool = tx
            .query_one("SELECT to_regclass('sovereign_meta') IS NOT NULL", &[])
            .map_err(error)?
            .get(0);
        if !has_meta {
            tx.batch_execute(
                "CREATE TABLE sovereign_meta (key TEXT NOT NULL PRIMARY KEY, value BIGINT NOT NULL)",
            )
            .map_err(error)?;
        }
        let found: i64 = tx
            .query_opt("SELECT value FROM sovereign_meta WHERE key = $1", &[&key])
            .map_err(error)?
            .map_or(0, |row| row.get(0));
        if found > supported || found < 0 {
            return Err(PgError::UnsupportedSchema {
                target: self.name.clone(),
                key: key.to_string(),
                found,
                supported,
            });
        }
        for step in &steps[found as usize..] {
            tx.batch_execute(step).map_err(error)?;
        }
        tx.execute(
            "INSERT INTO sovereign_meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&key, &supported],
        )
        .map_err(error)?;
        tx.commit().map_err(error)
    }
}

/// Sets what every connection needs, whatever the server's defaults.
#[derive(Debug)]
struct SessionSettings;

impl CustomizeConnection<Client, postgres::Error> for SessionSettings {
    fn on_acquire(&self, conn: &mut Client) -> Result<(), postgres::Error> {
        conn.batch_execute("SET synchronous_commit = on")
    }
}

/// The URL rebuilt from its parsed parts, without password or parameters.
fn redacted(config: &Config) -> String {
    let mut out = String::from("postgres://");
    if let Some(user) = config.get_user() {
        out.push_str(user);
        out.push('@');
    }
    let ports = config.get_ports();
    for (i, host) in config.get_hosts().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match host {
            Host::Tcp(name) => out.push_str(name),
            Host::Unix(path) => out.push_str(&path.display().to_string()),
        }
        if let Some(port) = ports.get(i).or(ports.first().filter(|_| ports.len() == 1)) {
            out.push_str(&format!(":{port}"));
        }
    }
    out.push('/');
    if let Some(db) = config.get_dbname() {
        out.push_str(db);
    }
    out
}

/// The value of parameter `name` in the URL's query string, as written (the last one wins, as
/// in the parser).
fn query_param(url: &str, name: &str) -> Option<String> {
    let (_, query) = url.split_once('?')?;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(key, _)| *key == name)
        .map(|(_, value)| value.to_ascii_lowercase())
        .next_back()
}

/// An error and its causes, as one line: the driver's own message names only the kind.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_leave_out_the_password_and_parameters() {
        for (url, name) in [
            (
                "postgres://alice:s3cret@db.example:5433/site?sslmode=disable&password=x",
                "postgres://alice@db.example:5433/site",
            ),
            ("postgresql://db/site", "postgres://db:5432/site"),
            ("postgres://u:p@h1:1,h2:2/d", "postgres://u@h1:1,h2:2/d"),
        ] {
            let target = Target::parse(url).unwrap();
            assert_eq!(target.name(), name);
            assert!(!format!("{target:?}").contains("s3cret"));
        }
    }

    #[test]
    fn sslmode_is_read_from_the_query() {
        assert_eq!(query_param("postgres://h/d", "sslmode"), None);
        assert_eq!(
            query_param("postgres://h/d?a=1&sslmode=Require", "sslmode").as_deref(),
            Some("require")
        );
    }

    #[test]
    fn tls_modes_are_refused_until_implemented() {
        let error = Target::parse("postgres://u@h/db?sslmode=verify-full").unwrap_err();
        assert!(matches!(error, PgError::NotImplemented(_)), "{error}");
        assert!(error.to_string().contains("sslmode=verify-full"));
        Target::parse("postgres://u@h/db?sslmode=disable").unwrap();
    }

    #[test]
    fn unreadable_urls_do_not_repeat_themselves() {
        let error = Target::parse("postgres://u:pw@h/db?nonsense_option=s3cret").unwrap_err();
        assert!(matches!(error, PgError::InvalidUrl(_)), "{error}");
        assert!(!error.to_string().contains("s3cret"), "{error}");
    }
}
