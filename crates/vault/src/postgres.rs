//! The server site store: one PostgreSQL database.
//!
//! For sites whose operator runs PostgreSQL rather than keeping a file beside the gateway. It
//! behaves as the SQLite store does (the same conformance suite runs on both):
//!
//! - Every write is one autocommit statement or one transaction, and each connection sets
//!   `synchronous_commit = on`, so a write that returned is on the server's disk, whatever the
//!   server's default.
//! - Text columns use the `"C"` collation, so sorting and paging compare bytes, as SQLite's
//!   `BINARY` collation does, whatever the database's locale.
//! - `fields` is kept as the JSON text the store was given (not `jsonb`): it reads back
//!   exactly as written, and `jsonb` would refuse a `\u0000` that JSON allows.
//! - The schema version lives in the `sovereign_meta` table; a database from a newer build is
//!   refused rather than misread. Opening takes an advisory lock, so two gateways creating
//!   the schema at once do not race.
//! - A small pool of connections (`r2d2`), one more than the `readers` asked for: the extra
//!   one plays the part of SQLite's writer connection.
//! - TLS is not implemented yet: a URL asks for plain TCP (`sslmode=disable`, or no
//!   `sslmode`) or is refused.
//!
//! The store's URL may carry a password, so no error or log line repeats it: errors name the
//! store by [`PostgresStore::target`], the URL rebuilt without credentials.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use postgres::config::{Host, SslMode};
use postgres::{Client, Config, NoTls, Transaction};
use r2d2::CustomizeConnection;
use r2d2_postgres::PostgresConnectionManager;
use serde_json::{Map, Value};

use crate::store::{RecordKey, RecordRow, SiteStore, StoreError, SubjectRow};

/// The schema this build writes and reads.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// How long connecting waits when the URL sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an operation waits for a free pooled connection (or a new one) before failing.
const POOL_TIMEOUT: Duration = Duration::from_secs(30);

/// The advisory lock that serialises schema creation and migration ("sovereig" in ASCII).
const MIGRATION_LOCK: i64 = 0x736f_7665_7265_6967;

const META: &str = "
    CREATE TABLE sovereign_meta (
        key   TEXT NOT NULL PRIMARY KEY,
        value BIGINT NOT NULL
    );
";

const SCHEMA_V1: &str = r#"
    CREATE TABLE subjects (
        id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
        jurisdiction TEXT NOT NULL
    );
    CREATE TABLE records (
        subject    TEXT COLLATE "C" NOT NULL,
        collection TEXT COLLATE "C" NOT NULL,
        key        TEXT COLLATE "C" NOT NULL,
        fields     TEXT NOT NULL, -- a JSON object
        PRIMARY KEY (subject, collection, key)
    );
    CREATE INDEX records_by_collection ON records (collection, subject, key);
"#;

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

/// A site store in one PostgreSQL database.
///
/// Its methods block: they must run on a thread that may block (the gateway calls the vault
/// through `spawn_blocking`), never directly inside an async task. The synchronous `postgres`
/// client drives its own small Tokio runtime, and starting it inside another runtime's task
/// panics.
pub struct PostgresStore {
    target: String,
    pool: Pool,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Sets what every connection of the store needs, whatever the server's defaults.
#[derive(Debug)]
struct SessionSettings;

impl CustomizeConnection<Client, postgres::Error> for SessionSettings {
    fn on_acquire(&self, conn: &mut Client) -> Result<(), postgres::Error> {
        conn.batch_execute("SET synchronous_commit = on")
    }
}

impl PostgresStore {
    /// Opens the store at `url` (`postgres://` or `postgresql://`), creating or upgrading its
    /// tables, with `readers + 1` pooled connections (at least two).
    pub fn open(url: &str, readers: usize) -> Result<Self, StoreError> {
        // Checked before parsing: the parser refuses modes it does not know (`verify-full`).
        let sslmode = query_param(url, "sslmode");
        if let Some(mode) = sslmode.as_deref().filter(|mode| *mode != "disable") {
            let mode: String = mode.chars().take(32).collect();
            return Err(StoreError::NotImplemented(format!(
                "TLS to PostgreSQL is not implemented yet: the store URL asks for \
                 `sslmode={mode}`; use `sslmode=disable` (plain TCP) on a trusted network"
            )));
        }
        let mut config = Config::from_str(url).map_err(|e| {
            // The parser's messages name options, never their values.
            StoreError::InvalidUrl(format!(
                "the PostgreSQL store URL cannot be read: {}",
                chain(&e)
            ))
        })?;
        let target = redacted_target(&config);
        config.ssl_mode(SslMode::Disable);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }

        // One direct connection first: it fails at once with the server's reason, where the
        // pool would retry until its timeout.
        let error = |source: postgres::Error| StoreError::Postgres {
            target: target.clone(),
            source: Box::new(source),
        };
        let mut first = config.connect(NoTls).map_err(error)?;
        SessionSettings.on_acquire(&mut first).map_err(error)?;
        migrate(&target, &mut first)?;
        drop(first);

        let manager = PostgresConnectionManager::new(config, NoTls);
        let pool = r2d2::Pool::builder()
            .max_size(u32::try_from(readers.max(1) + 1).unwrap_or(u32::MAX))
            .min_idle(Some(1))
            .connection_timeout(POOL_TIMEOUT)
            .connection_customizer(Box::new(SessionSettings))
            .build(manager)
            .map_err(|e| StoreError::Postgres {
                target: target.clone(),
                source: Box::new(e),
            })?;
        Ok(PostgresStore { target, pool })
    }

    /// The store's URL without its password or parameters, as errors name it.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The schema version recorded in the database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.run(|c| {
            c.query_one(
                "SELECT value FROM sovereign_meta WHERE key = 'schema_version'",
                &[],
            )
            .map(|row| row.get(0))
        })
    }

    /// Runs `f` on a pooled connection.
    fn run<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let mut conn = self.pool.get().map_err(|e| StoreError::Postgres {
            target: self.target.clone(),
            source: Box::new(e),
        })?;
        f(&mut conn).map_err(|e| self.error(e))
    }

    /// Runs `f` in one transaction: all of it is durable when this returns, or none happened.
    fn run_all<T>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        self.run(|c| {
            let mut tx = c.transaction()?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
    }

    fn error(&self, source: postgres::Error) -> StoreError {
        StoreError::Postgres {
            target: self.target.clone(),
            source: Box::new(source),
        }
    }

    /// Parses stored fields. The parser's message is left out: it can quote a value.
    fn parse_fields(&self, text: &str, what: &str) -> Result<Map<String, Value>, StoreError> {
        serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
            path: self.target.clone().into(),
            detail: format!(
                "the fields of {what} are not a JSON object (line {}, column {})",
                e.line(),
                e.column()
            ),
        })
    }

    fn parse_rows(&self, rows: Vec<postgres::Row>) -> Result<Vec<RecordRow>, StoreError> {
        rows.into_iter()
            .map(|row| {
                let (subject, collection, key, text): (String, String, String, String) =
                    (row.get(0), row.get(1), row.get(2), row.get(3));
                let fields =
                    self.parse_fields(&text, &format!("record {subject}/{collection}/{key}"))?;
                Ok(RecordRow {
                    subject,
                    collection,
                    key,
                    fields,
                })
            })
            .collect()
    }
}

/// Brings a new database to the current schema, accepts a current one, refuses a newer one.
fn migrate(target: &str, conn: &mut Client) -> Result<(), StoreError> {
    let error = |source: postgres::Error| StoreError::Postgres {
        target: target.to_string(),
        source: Box::new(source),
    };
    let mut tx = conn.transaction().map_err(error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(error)?;
    // Looked up rather than `CREATE TABLE IF NOT EXISTS`, which needs the right to create
    // tables even when they exist.
    let has_meta: bool = tx
        .query_one("SELECT to_regclass('sovereign_meta') IS NOT NULL", &[])
        .map_err(error)?
        .get(0);
    let version: Option<i64> = if has_meta {
        tx.query_opt(
            "SELECT value FROM sovereign_meta WHERE key = 'schema_version'",
            &[],
        )
        .map_err(error)?
        .map(|row| row.get(0))
    } else {
        tx.batch_execute(META).map_err(error)?;
        None
    };
    match version {
        None => {
            tx.batch_execute(SCHEMA_V1).map_err(error)?;
            tx.execute(
                "INSERT INTO sovereign_meta (key, value) VALUES ('schema_version', $1)",
                &[&SCHEMA_VERSION],
            )
            .map_err(error)?;
        }
        Some(SCHEMA_VERSION) => {}
        Some(found) if found > SCHEMA_VERSION => {
            return Err(StoreError::UnsupportedSchema {
                path: target.into(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Some(found) => {
            return Err(StoreError::Corrupt {
                path: target.into(),
                detail: format!("unknown schema version {found}"),
            });
        }
    }
    tx.commit().map_err(error)
}

/// The URL rebuilt from its parsed parts, without password or parameters.
fn redacted_target(config: &Config) -> String {
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
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
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

impl SiteStore for PostgresStore {
    fn get_subject(&self, id: &str) -> Result<Option<SubjectRow>, StoreError> {
        self.run(|c| {
            c.query_opt(
                "SELECT id, jurisdiction FROM subjects WHERE id = $1",
                &[&id],
            )
            .map(|row| {
                row.map(|row| SubjectRow {
                    id: row.get(0),
                    jurisdiction: row.get(1),
                })
            })
        })
    }

    fn put_subject(&self, subject: &SubjectRow) -> Result<(), StoreError> {
        self.run(|c| {
            c.execute(
                "INSERT INTO subjects (id, jurisdiction) VALUES ($1, $2)
                 ON CONFLICT (id) DO UPDATE SET jurisdiction = excluded.jurisdiction",
                &[&subject.id, &subject.jurisdiction],
            )
            .map(drop)
        })
    }

    fn get_record(
        &self,
        subject: &str,
        collection: &str,
        key: &str,
    ) -> Result<Option<Map<String, Value>>, StoreError> {
        let text: Option<String> = self.run(|c| {
            c.query_opt(
                "SELECT fields FROM records WHERE subject = $1 AND collection = $2 AND key = $3",
                &[&subject, &collection, &key],
            )
            .map(|row| row.map(|row| row.get(0)))
        })?;
        text.map(|text| self.parse_fields(&text, &format!("record {subject}/{collection}/{key}")))
            .transpose()
    }

    fn put_record(&self, row: &RecordRow) -> Result<(), StoreError> {
        let fields = serde_json::to_string(&row.fields).map_err(|_| StoreError::Corrupt {
            path: self.target.clone().into(),
            detail: format!(
                "the fields of record {}/{}/{} cannot be encoded as JSON",
                row.subject, row.collection, row.key
            ),
        })?;
        self.run(|c| {
            c.execute(
                "INSERT INTO records (subject, collection, key, fields) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (subject, collection, key) DO UPDATE SET fields = excluded.fields",
                &[&row.subject, &row.collection, &row.key, &fields],
            )
            .map(drop)
        })
    }

    fn delete_record(
        &self,
        subject: &str,
        collection: &str,
        key: &str,
    ) -> Result<bool, StoreError> {
        self.run(|c| {
            c.execute(
                "DELETE FROM records WHERE subject = $1 AND collection = $2 AND key = $3",
                &[&subject, &collection, &key],
            )
            .map(|deleted| deleted > 0)
        })
    }

    fn list_records(&self, subject: &str) -> Result<Vec<RecordKey>, StoreError> {
        self.run(|c| {
            c.query(
                "SELECT collection, key FROM records WHERE subject = $1 ORDER BY collection, key",
                &[&subject],
            )
            .map(|rows| {
                rows.iter()
                    .map(|row| RecordKey {
                        collection: row.get(0),
                        key: row.get(1),
                    })
                    .collect()
            })
        })
    }

    fn subjects(&self) -> Result<Vec<SubjectRow>, StoreError> {
        self.run(|c| {
            c.query("SELECT id, jurisdiction FROM subjects ORDER BY id", &[])
                .map(|rows| {
                    rows.iter()
                        .map(|row| SubjectRow {
                            id: row.get(0),
                            jurisdiction: row.get(1),
                        })
                        .collect()
                })
        })
    }

    fn records(&self) -> Result<Vec<RecordRow>, StoreError> {
        let rows = self.run(|c| {
            c.query(
                "SELECT subject, collection, key, fields FROM records
                 ORDER BY subject, collection, key",
                &[],
            )
        })?;
        self.parse_rows(rows)
    }

    fn delete_subject(&self, id: &str) -> Result<bool, StoreError> {
        self.run_all(|tx| {
            let records = tx.execute("DELETE FROM records WHERE subject = $1", &[&id])?;
            let subjects = tx.execute("DELETE FROM subjects WHERE id = $1", &[&id])?;
            Ok(records + subjects > 0)
        })
    }

    fn records_after(
        &self,
        collection: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<RecordRow>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // The columns' "C" collation makes both the comparison and the order bytewise.
        let rows = self.run(|c| match after {
            None => c.query(
                "SELECT subject, collection, key, fields FROM records
                 WHERE collection = $1 ORDER BY subject, key LIMIT $2",
                &[&collection, &limit],
            ),
            Some((subject, key)) => c.query(
                "SELECT subject, collection, key, fields FROM records
                 WHERE collection = $1 AND (subject, key) > ($2, $3)
                 ORDER BY subject, key LIMIT $4",
                &[&collection, &subject, &key, &limit],
            ),
        })?;
        self.parse_rows(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_never_carry_the_password() {
        for (url, target) in [
            (
                "postgres://alice:s3cret@db.example:5433/site?sslmode=disable&password=x",
                "postgres://alice@db.example:5433/site",
            ),
            ("postgresql://db/site", "postgres://db:5432/site"),
            ("postgres://u:p@h1:1,h2:2/d", "postgres://u@h1:1,h2:2/d"),
        ] {
            let config = Config::from_str(url).unwrap();
            assert_eq!(redacted_target(&config), target);
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
    fn tls_is_refused_without_connecting() {
        for mode in ["require", "prefer", "verify-full"] {
            let err = PostgresStore::open(
                &format!("postgres://u:topsecret@127.0.0.1:1/d?sslmode={mode}"),
                1,
            )
            .unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, StoreError::NotImplemented(_)), "{err:?}");
            assert!(
                text.contains("TLS to PostgreSQL is not implemented yet"),
                "{text}"
            );
            assert!(!text.contains("topsecret"), "{text}");
        }
    }

    #[test]
    fn sessions_commit_synchronously_whatever_the_default() {
        let Some(server) = pgtest::PgServer::start() else {
            return;
        };
        let url = server.fresh_database();
        server
            .client("postgres")
            .batch_execute("ALTER DATABASE db_1 SET synchronous_commit = off")
            .unwrap();
        let store = PostgresStore::open(&url, 1).unwrap();
        let setting: String = store
            .run(|c| c.query_one("SHOW synchronous_commit", &[]))
            .unwrap()
            .get(0);
        assert_eq!(setting, "on");
        let plain: String = server
            .client("db_1")
            .query_one("SHOW synchronous_commit", &[])
            .unwrap()
            .get(0);
        assert_eq!(
            plain, "off",
            "the database default is off, so the store set it"
        );
    }
}
