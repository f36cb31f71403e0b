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
//! - TLS is rustls (ring's cryptography), chosen by libpq's `sslmode` in the URL:
//!   - `disable`: plain TCP.
//!   - `prefer` (the default, as in libpq): TLS when the server offers it, else plain TCP.
//!   - `require`: TLS or no connection.
//!
//!   Neither `prefer` nor `require` checks the server's certificate (only that the server
//!   holds its key): they protect against passive eavesdropping only, not against someone
//!   who can intercept the connection.
//!   - `verify-ca`: TLS, and the certificate must chain to a trusted root; any host name.
//!   - `verify-full`: as `verify-ca`, and the certificate must name the host connected to
//!     (a DNS name, or the IP address when the URL's host is one).
//!
//!   `sslrootcert=PATH` names a PEM file of the trusted roots. Without it, `verify-ca` and
//!   `verify-full` trust the Mozilla roots compiled in (`webpki-roots`: the same on every
//!   machine and container, with nothing to install; a private CA needs `sslrootcert`).
//!   With it, as in libpq, `prefer` and `require` check the chain as `verify-ca` does.
//!   `sslmode=allow` and client certificates (`sslcert`, `sslkey`) are refused.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use std::path::Path;

use postgres::config::{Host, SslMode};
use postgres::{Client, Config};
use r2d2::CustomizeConnection;
use r2d2_postgres::PostgresConnectionManager;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

mod tls;

/// How long connecting waits when the URL sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Sent data unacknowledged this long closes the connection (unless the URL sets
/// `tcp_user_timeout`).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(15);
/// An idle connection is probed after this long, every `KEEPALIVE_INTERVAL`, and closed after
/// `KEEPALIVE_RETRIES` unanswered probes (unless the URL sets `keepalives_*`).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;

/// How long an operation waits for a free pooled connection (or a new one) before failing.
const POOL_TIMEOUT: Duration = Duration::from_secs(30);

/// The advisory lock that serialises schema creation and migration ("sovereig" in ASCII).
const MIGRATION_LOCK: i64 = 0x736f_7665_7265_6967;

/// A pool of connections, encrypted or not as the URL's `sslmode` says.
pub type Pool = r2d2::Pool<PostgresConnectionManager<MakeRustlsConnect>>;
pub type Pooled = r2d2::PooledConnection<PostgresConnectionManager<MakeRustlsConnect>>;

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

/// How a connection protects itself, as libpq's `sslmode` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, else plain TCP. The certificate is not checked unless
    /// the URL names an `sslrootcert`.
    Prefer,
    /// TLS or nothing. The certificate is not checked unless the URL names an `sslrootcert`:
    /// this protects against passive eavesdropping only, not against an active
    /// man-in-the-middle.
    Require,
    /// TLS, with the server's certificate chain checked against the root certificates; any
    /// host name is accepted.
    VerifyCa,
    /// TLS, with the certificate chain checked and the certificate issued for the host name
    /// connected to (as libpq, a URL host that is an IP address must be in the certificate
    /// as that address).
    VerifyFull,
}

impl TlsMode {
    fn parse(value: &str) -> Option<TlsMode> {
        Some(match value.to_ascii_lowercase().as_str() {
            "disable" => TlsMode::Disable,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            _ => return None,
        })
    }

    /// The name in URLs: `verify-full`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        }
    }
}

/// The URL parameters read here and removed before the driver's parser sees the URL: it does
/// not know `sslrootcert`, nor the `verify-*` modes.
const OWN_PARAMS: [&str; 2] = ["sslmode", "sslrootcert"];

/// libpq parameters for client certificates and revocation lists, refused by name rather than
/// as unknown options.
const UNSUPPORTED_TLS_PARAMS: [&str; 5] =
    ["sslcert", "sslkey", "sslpassword", "sslcrl", "sslcrldir"];

/// A parsed PostgreSQL URL and its password-free name.
#[derive(Clone)]
pub struct Target {
    config: Config,
    name: String,
    tls_mode: TlsMode,
    /// Whether the server's certificate chain is checked (`verify-*`, or an `sslrootcert`).
    verifies_chain: bool,
    tls: MakeRustlsConnect,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("tls_mode", &self.tls_mode)
            .field("verifies_chain", &self.verifies_chain)
            .finish_non_exhaustive()
    }
}

/// Is `url` a PostgreSQL URL (`postgres://` or `postgresql://`)?
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl Target {
    /// Reads a `postgres://` or `postgresql://` URL.
    ///
    /// `sslmode` is libpq's, `prefer` when absent (as libpq); `sslrootcert=PATH` names a PEM
    /// file of root certificates. Without it, `verify-ca` and `verify-full` trust the Mozilla
    /// roots built in (`webpki-roots`); with it, as libpq, `prefer` and `require` check the
    /// certificate chain too. The root file is read here, so a missing one fails now.
    pub fn parse(url: &str) -> Result<Target, PgError> {
        if !is_postgres_url(url) {
            // Key-value strings would carry `sslmode` where it is not read here.
            return Err(PgError::InvalidUrl(
                "the PostgreSQL URL cannot be read: it must start with `postgres://` or \
                 `postgresql://`"
                    .into(),
            ));
        }
        let params = query_params(url)?;
        let param = |name: &str| {
            params
                .iter()
                .rev()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        };
        if let Some(name) = UNSUPPORTED_TLS_PARAMS
            .iter()
            .find(|name| param(name).is_some())
        {
            return Err(PgError::NotImplemented(format!(
                "the PostgreSQL URL sets `{name}`: client certificates and revocation lists \
                 are not supported"
            )));
        }
        let tls_mode = match param("sslmode") {
            None => TlsMode::Prefer,
            Some(value) => TlsMode::parse(value).ok_or_else(|| {
                if value.eq_ignore_ascii_case("allow") {
                    PgError::NotImplemented(
                        "`sslmode=allow` is not supported: use `disable`, `prefer`, `require`, \
                         `verify-ca` or `verify-full`"
                            .into(),
                    )
                } else {
                    // The value is not repeated: it could be anything.
                    PgError::InvalidUrl(
                        "the PostgreSQL URL cannot be read: `sslmode` must be `disable`, \
                         `prefer`, `require`, `verify-ca` or `verify-full`"
                            .into(),
                    )
                }
            })?,
        };
        let root_file = param("sslrootcert").filter(|path| !path.is_empty());
        let mut config = Config::from_str(&strip_params(url, &OWN_PARAMS)).map_err(|e| {
            // The parser's messages name options, never their values.
            PgError::InvalidUrl(format!("the PostgreSQL URL cannot be read: {}", chain(&e)))
        })?;
        let name = redacted(&config);
        config.ssl_mode(match tls_mode {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
        });
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // A server that stops answering without closing the connection (a partition, a host
        // gone) must fail the call within seconds, not after the kernel's two hours: callers
        // such as the custody follower hold locks while they wait. The URL may say otherwise.
        if param("tcp_user_timeout").is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        if param("keepalives_idle").is_none() {
            config.keepalives_idle(KEEPALIVE_IDLE);
        }
        if param("keepalives_interval").is_none() {
            config.keepalives_interval(KEEPALIVE_INTERVAL);
        }
        if param("keepalives_retries").is_none() {
            config.keepalives_retries(KEEPALIVE_RETRIES);
        }
        let roots = match root_file {
            Some(path) => Some(read_roots(Path::new(path))?),
            None if matches!(tls_mode, TlsMode::VerifyCa | TlsMode::VerifyFull) => {
                Some(RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                })
            }
            None => None,
        };
        let verifies_chain = roots.is_some() && tls_mode != TlsMode::Disable;
        let tls = tls::connector(roots, tls_mode == TlsMode::VerifyFull)
            .map_err(|e| PgError::InvalidUrl(format!("TLS to PostgreSQL cannot be set up: {e}")))?;
        Ok(Target {
            config,
            name,
            tls_mode,
            verifies_chain,
            tls,
        })
    }

    /// The URL without its password or parameters, as errors name it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL's `sslmode` (`prefer` when it sets none).
    pub fn tls_mode(&self) -> TlsMode {
        self.tls_mode
    }

    /// Whether the server's certificate chain is checked against root certificates:
    /// `verify-ca`, `verify-full`, or any TLS mode with an `sslrootcert`.
    pub fn verifies_certificates(&self) -> bool {
        self.verifies_chain
    }

    /// One connection with the session settings, outside any pool. It fails at once with
    /// the server's reason, where a pool would retry until its timeout.
    pub fn connect(&self) -> Result<Client, PgError> {
        let mut client = self
            .config
            .connect(self.tls.clone())
            .map_err(|e| self.error(e))?;
        SessionSettings
            .on_acquire(&mut client)
            .map_err(|e| self.error(e))?;
        Ok(client)
    }

    /// A pool of at most `size` connections (at least one), each with the session settings.
    pub fn pool(&self, size: usize) -> Result<Pool, PgError> {
        let manager = PostgresConnectionManager::new(self.config.clone(), self.tls.clone());
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

/// The URL's query string, found as the driver's parser finds it: after the credentials (up
/// to the first `@`, so a password may hold `?`), at the first `?`.
fn split_query(url: &str) -> (&str, Option<&str>) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let after_credentials = url[after_scheme..]
        .find('@')
        .map_or(after_scheme, |i| after_scheme + i + 1);
    match url[after_credentials..].find('?') {
        Some(i) => {
            let at = after_credentials + i;
            (&url[..at], Some(&url[at + 1..]))
        }
        None => (url, None),
    }
}

/// The URL's parameters in order, keys and values percent-decoded (as by the parser).
fn query_params(url: &str) -> Result<Vec<(String, String)>, PgError> {
    let Some(query) = split_query(url).1 else {
        return Ok(Vec::new());
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match (percent_decode(key), percent_decode(value)) {
                (Some(key), Some(value)) => Ok((key, value)),
                // Neither is repeated: a value could be a password.
                _ => Err(PgError::InvalidUrl(
                    "the PostgreSQL URL cannot be read: a parameter is not valid \
                     percent-encoded UTF-8"
                        .into(),
                )),
            }
        })
        .collect()
}

/// The URL without the parameters named `names` (the rest as written, in order).
fn strip_params(url: &str, names: &[&str]) -> String {
    let (base, Some(query)) = split_query(url) else {
        return url.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(key, _)| key);
            !percent_decode(key).is_some_and(|key| names.contains(&key.as_str()))
        })
        .collect();
    if kept.iter().all(|pair| pair.is_empty()) {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// `%XX` escapes decoded; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The root certificates in the PEM file `path` (`sslrootcert`).
fn read_roots(path: &Path) -> Result<RootCertStore, PgError> {
    let error = |reason: String| {
        PgError::InvalidUrl(format!(
            "the PostgreSQL URL's sslrootcert `{}` cannot be used: {reason}",
            path.display()
        ))
    };
    let pem = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| error(format!("not a PEM certificate file ({e})")))?;
        roots
            .add(cert)
            .map_err(|e| error(format!("a certificate cannot be read ({e})")))?;
    }
    if roots.is_empty() {
        return Err(error("it holds no PEM certificate".into()));
    }
    Ok(roots)
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
    fn a_silent_server_is_noticed_within_seconds_unless_the_url_says_otherwise() {
        let target = Target::parse("postgres://u@h/d").unwrap();
        assert_eq!(target.config.get_keepalives_idle(), KEEPALIVE_IDLE);
        assert_eq!(
            target.config.get_keepalives_interval(),
            Some(KEEPALIVE_INTERVAL)
        );
        assert_eq!(
            target.config.get_keepalives_retries(),
            Some(KEEPALIVE_RETRIES)
        );
        assert_eq!(
            target.config.get_tcp_user_timeout(),
            Some(&TCP_USER_TIMEOUT)
        );
        let target = Target::parse(
            "postgres://u@h/d?keepalives_idle=60&keepalives_interval=7&keepalives_retries=9&tcp_user_timeout=30",
        )
        .unwrap();
        assert_eq!(target.config.get_keepalives_idle(), Duration::from_secs(60));
        assert_eq!(
            target.config.get_keepalives_interval(),
            Some(Duration::from_secs(7))
        );
        assert_eq!(target.config.get_keepalives_retries(), Some(9));
        assert_eq!(
            target.config.get_tcp_user_timeout(),
            Some(&Duration::from_secs(30))
        );
    }

    #[test]
    fn parameters_are_read_and_decoded() {
        assert_eq!(query_params("postgres://h/d").unwrap(), vec![]);
        assert_eq!(
            query_params("postgres://u:p@h/d?a=1&sslrootcert=%2Ftmp%2Fmy%20ca.pem&flag").unwrap(),
            vec![
                ("a".into(), "1".into()),
                ("sslrootcert".into(), "/tmp/my ca.pem".into()),
                ("flag".into(), String::new()),
            ]
        );
        // A password may hold `?`: the query starts after the credentials, as in the parser.
        assert_eq!(
            query_params("postgres://u:p?sslmode=disable@h/d?sslmode=verify-full").unwrap(),
            vec![("sslmode".into(), "verify-full".into())]
        );
        let error = query_params("postgres://u:s3cret@h/d?password=s3cret%zz").unwrap_err();
        assert!(!error.to_string().contains("s3cret"), "{error}");
    }

    #[test]
    fn own_parameters_are_stripped_before_the_parser() {
        for (url, stripped) in [
            ("postgres://h/d", "postgres://h/d"),
            ("postgres://h/d?sslmode=verify-full", "postgres://h/d"),
            (
                "postgres://u:p?x@h/d?application_name=a&sslmode=verify-ca&sslrootcert=/ca.pem&connect_timeout=3",
                "postgres://u:p?x@h/d?application_name=a&connect_timeout=3",
            ),
            (
                "postgres://h/d?%73slmode=require&sslrootcert=x",
                "postgres://h/d",
            ),
            (
                "postgres://h/d?connect_timeout=3&sslmode=require",
                "postgres://h/d?connect_timeout=3",
            ),
        ] {
            assert_eq!(strip_params(url, &OWN_PARAMS), stripped, "{url}");
        }
    }

    #[test]
    fn every_libpq_mode_is_read() {
        for (query, mode, verifies) in [
            ("", TlsMode::Prefer, false),
            ("?sslmode=disable", TlsMode::Disable, false),
            ("?sslmode=prefer", TlsMode::Prefer, false),
            ("?sslmode=Require", TlsMode::Require, false),
            ("?sslmode=verify-ca", TlsMode::VerifyCa, true),
            ("?sslmode=verify-full", TlsMode::VerifyFull, true),
            ("?sslmode=require&sslmode=disable", TlsMode::Disable, false),
        ] {
            let target = Target::parse(&format!("postgres://u:s3cret@h/db{query}")).unwrap();
            assert_eq!(target.tls_mode(), mode, "{query}");
            assert_eq!(target.verifies_certificates(), verifies, "{query}");
            assert_eq!(target.name(), "postgres://u@h:5432/db");
        }
    }

    #[test]
    fn a_root_file_is_read_at_parse_and_named_when_missing() {
        let error = Target::parse(
            "postgres://u:s3cret@h/db?sslmode=verify-full&sslrootcert=/nonexistent/root.pem",
        )
        .unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, PgError::InvalidUrl(_)), "{text}");
        assert!(text.contains("/nonexistent/root.pem"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");

        let dir = std::env::temp_dir().join(format!("pgconn-roots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = Target::parse(&format!(
            "postgres://u:s3cret@h/db?sslmode=require&sslrootcert={}",
            empty.display()
        ))
        .unwrap_err();
        assert!(error.to_string().contains("no PEM certificate"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unsupported_tls_settings_are_refused_without_repeating_them() {
        let error = Target::parse("postgres://u:s3cret@h/db?sslmode=allow").unwrap_err();
        assert!(matches!(error, PgError::NotImplemented(_)), "{error}");
        let error = Target::parse("postgres://u:s3cret@h/db?sslmode=s3cret").unwrap_err();
        assert!(matches!(error, PgError::InvalidUrl(_)), "{error}");
        assert!(!error.to_string().contains("s3cret"), "{error}");
        let error = Target::parse("postgres://u:s3cret@h/db?sslcert=/c.pem").unwrap_err();
        assert!(matches!(error, PgError::NotImplemented(_)), "{error}");
        assert!(error.to_string().contains("sslcert"), "{error}");
        let error = Target::parse("host=h user=u sslmode=require").unwrap_err();
        assert!(matches!(error, PgError::InvalidUrl(_)), "{error}");
    }

    #[test]
    fn unreadable_urls_do_not_repeat_themselves() {
        let error = Target::parse("postgres://u:pw@h/db?nonsense_option=s3cret").unwrap_err();
        assert!(matches!(error, PgError::InvalidUrl(_)), "{error}");
        assert!(!error.to_string().contains("s3cret"), "{error}");
    }
}
