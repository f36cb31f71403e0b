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
//! - A small pool of connections (`r2d2`).
//!
//! Connecting, the password-free name errors use ([`PostgresStore::target`]), the versioned
//! schema in `sovereign_meta` and the refusal of TLS until it is built are `pgconn`'s, shared
//! with the PostgreSQL log store.

use std::fmt;

use pgconn::{PgError, Pool, Target};
use postgres::{Client, Transaction};
use serde_json::{Map, Value};

use crate::store::{
    HeldRecord, RecordKey, RecordRow, SiteStore, StoreError, SubjectRow, parse_stored_fields,
};

/// The schema this build writes and reads: `SCHEMA[v]` upgrades version `v` to `v + 1`.
const SCHEMA: &[&str] = &[r#"
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
"#];

/// Where `sovereign_meta` keeps the site schema's version.
const SCHEMA_KEY: &str = "schema_version";

/// A site store in one PostgreSQL database.
///
/// Its methods block: they must run on a thread that may block (the gateway calls the vault
/// through `spawn_blocking`), never directly inside an async task. The synchronous `postgres`
/// client drives its own small Tokio runtime, and starting it inside another runtime's task
/// panics.
pub struct PostgresStore {
    target: Target,
    pool: Pool,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target.name())
            .finish_non_exhaustive()
    }
}

impl From<PgError> for StoreError {
    fn from(error: PgError) -> Self {
        match error {
            PgError::InvalidUrl(message) => StoreError::InvalidUrl(message),
            PgError::NotImplemented(message) => StoreError::NotImplemented(message),
            PgError::Server { target, source } => StoreError::Postgres { target, source },
            PgError::UnsupportedSchema {
                target,
                found,
                supported,
                ..
            } => StoreError::UnsupportedSchema {
                path: target.into(),
                found,
                supported,
            },
        }
    }
}

impl PostgresStore {
    /// Opens the store at `url` (`postgres://` or `postgresql://`), creating or upgrading its
    /// tables, with a pool of `connections` (at least two: a writer and a reader, as the
    /// SQLite store has).
    pub fn open(url: &str, connections: usize) -> Result<Self, StoreError> {
        let target = Target::parse(url)?;
        let mut first = target.connect()?;
        target.migrate(&mut first, SCHEMA_KEY, SCHEMA)?;
        drop(first);
        let pool = target.pool(connections.max(2))?;
        Ok(PostgresStore { target, pool })
    }

    /// The store's URL without its password or parameters, as errors name it.
    pub fn target(&self) -> &str {
        self.target.name()
    }

    /// The schema version recorded in the database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.run(|c| {
            c.query_one(
                "SELECT value FROM sovereign_meta WHERE key = $1",
                &[&SCHEMA_KEY],
            )
            .map(|row| row.get(0))
        })
    }

    /// Runs `f` on a pooled connection.
    fn run<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let mut conn = self.pool.get().map_err(|e| self.target.error(e))?;
        f(&mut conn).map_err(|e| self.target.error(e).into())
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

    /// A record's fields as stored: a JSON object's text.
    fn encode_fields(&self, row: &RecordRow) -> Result<String, StoreError> {
        row.encode_fields(self.target.name().into())
    }

    /// Parses stored fields. The parser's message is left out: it can quote a value.
    fn parse_fields(&self, text: &str, what: &str) -> Result<Map<String, Value>, StoreError> {
        parse_stored_fields(text, what, self.target.name().into())
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

    fn get_record_held(
        &self,
        subject: &str,
        collection: &str,
        key: &str,
    ) -> Result<Option<HeldRecord>, StoreError> {
        // One round trip: the subject's presence and the record together.
        let held: Option<(String, Option<String>)> = self.run(|c| {
            c.query_opt(
                "SELECT s.jurisdiction, r.fields FROM subjects s
                 LEFT JOIN records r ON r.subject = s.id AND r.collection = $2 AND r.key = $3
                 WHERE s.id = $1",
                &[&subject, &collection, &key],
            )
            .map(|row| row.map(|row| (row.get(0), row.get(1))))
        })?;
        HeldRecord::from_row(held, |text| {
            self.parse_fields(text, &format!("record {subject}/{collection}/{key}"))
        })
    }

    fn put_record(&self, row: &RecordRow) -> Result<(), StoreError> {
        let fields = self.encode_fields(row)?;
        self.run(|c| {
            c.execute(
                "INSERT INTO records (subject, collection, key, fields) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (subject, collection, key) DO UPDATE SET fields = excluded.fields",
                &[&row.subject, &row.collection, &row.key, &fields],
            )
            .map(drop)
        })
    }

    fn put_record_held(&self, row: &RecordRow, jurisdiction: &str) -> Result<bool, StoreError> {
        let fields = self.encode_fields(row)?;
        self.run(|c| {
            c.execute(
                "INSERT INTO records (subject, collection, key, fields)
                 SELECT $1, $2, $3, $4 WHERE EXISTS
                     (SELECT 1 FROM subjects WHERE id = $1 AND jurisdiction = $5)
                 ON CONFLICT (subject, collection, key) DO UPDATE SET fields = excluded.fields",
                &[
                    &row.subject,
                    &row.collection,
                    &row.key,
                    &fields,
                    &jurisdiction,
                ],
            )
            .map(|written| written > 0)
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
    fn tls_is_refused_without_connecting() {
        // Every libpq mode but `allow` is accepted now: these fail to connect (nothing listens
        // on port 1), naming the server but never the password.
        for mode in ["require", "prefer", "verify-ca", "verify-full"] {
            let err = PostgresStore::open(
                &format!("postgres://u:topsecret@127.0.0.1:1/d?sslmode={mode}"),
                1,
            )
            .unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, StoreError::Postgres { .. }), "{err:?}");
            assert!(text.contains("postgres://u@127.0.0.1:1/d"), "{text}");
            assert!(!text.contains("topsecret"), "{text}");
            assert!(!format!("{err:?}").contains("topsecret"), "{err:?}");
        }
        // `allow` (plain first, TLS if refused) is not supported, and refused before connecting.
        let err = PostgresStore::open("postgres://u:topsecret@127.0.0.1:1/d?sslmode=allow", 1)
            .unwrap_err();
        assert!(matches!(err, StoreError::NotImplemented(_)), "{err:?}");
        assert!(!err.to_string().contains("topsecret"), "{err}");
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
