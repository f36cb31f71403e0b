//! The custody database: one JSON document per record, in one SQLite file. Each change is
//! one transaction that is committed only after its event is in the transparency log, and
//! each record it writes carries that event's log index.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{CustodyError, Event, LogFn, State};

/// The schema, one step a version (`sqlitedb::migrate`): version 1 is the first step.
const SCHEMA: &[&str] = &["
CREATE TABLE records (
    kind TEXT NOT NULL,
    id   TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"];

pub(crate) const REQUEST: &str = "request";
pub(crate) const POLICY_SET: &str = "policy-set";
pub(crate) const RELEASE: &str = "release";
pub(crate) const SUSPENSION: &str = "suspension";
pub(crate) const ACTIVE_POLICY: &str = "active-policy";
pub(crate) const INVARIANT_SET: &str = "invariant-set";
pub(crate) const ACTIVE_INVARIANTS: &str = "active-invariants";

/// One row to write in a change.
pub(crate) enum Write {
    Record {
        kind: &'static str,
        id: String,
        body: Value,
    },
    Meta {
        key: &'static str,
        value: String,
    },
}

impl Write {
    pub(crate) fn record(kind: &'static str, id: &str, value: &impl Serialize) -> Write {
        Write::Record {
            kind,
            id: id.to_string(),
            body: serde_json::to_value(value).expect("custody records serialise"),
        }
    }
}

pub(crate) struct Store {
    path: PathBuf,
    conn: Connection,
    /// SQLite's `data_version` when the state in memory was loaded and verified: it changes
    /// exactly when another connection (another gateway on the same data folder, or anyone
    /// editing the file) commits. It is not advanced past state that failed verification, so
    /// that every refresh looks at such state again until it verifies.
    pub(crate) verified_version: Option<i64>,
}

impl Store {
    /// Opens (or creates) the custody file through `sqlitedb`: durable, with a busy timeout
    /// because two gateways on one data folder share it.
    pub(crate) fn open(path: &Path) -> Result<Store, CustodyError> {
        let fail = |e: sqlitedb::Error| CustodyError::Store {
            path: path.to_path_buf(),
            problem: e.to_string(),
        };
        let mut conn = sqlitedb::open_durable(path, &sqlitedb::Options::default()).map_err(fail)?;
        sqlitedb::migrate(&mut conn, SCHEMA).map_err(fail)?;
        Ok(Store {
            path: path.to_path_buf(),
            conn,
            verified_version: None,
        })
    }

    /// SQLite's `data_version` now: a cheap check, one pragma. Read it before [`Store::load`],
    /// so that a commit by another connection in between is seen again at the next look.
    pub(crate) fn data_version(&self) -> Result<i64, CustodyError> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| self.fail(e))
    }

    fn fail(&self, e: impl std::fmt::Display) -> CustodyError {
        CustodyError::Store {
            path: self.path.clone(),
            problem: e.to_string(),
        }
    }

    /// Reads every record, as one snapshot: another process's change is seen whole or not
    /// at all (an activation writes the set and `meta` together, and a half-read one would
    /// not verify). Each row must be stored under its record's own key, so that no second row
    /// can stand in for a record depending on the order rows are read in. Whether the state
    /// is authorised is checked afterwards (`verify.rs`).
    pub(crate) fn load(&self) -> Result<State, CustodyError> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| self.fail(e))?;
        let mut state = State::default();
        for request in self.all(REQUEST, |r: &crate::AccessRequest| r.id.clone())? {
            state.put_request(request);
        }
        for set in self.all(POLICY_SET, |s: &crate::PolicySetRecord| s.hash.clone())? {
            state.policy_sets.insert(set.hash.clone(), set);
        }
        for release in self.all(RELEASE, |r: &crate::Release| {
            release_id(&r.name, &r.version)
        })? {
            state
                .releases
                .insert((release.name.clone(), release.version.clone()), release);
        }
        for suspension in self.all(SUSPENSION, |s: &crate::Suspension| s.jurisdiction.clone())? {
            state
                .suspensions
                .insert(suspension.jurisdiction.clone(), suspension);
        }
        for set in self.all(INVARIANT_SET, |s: &crate::InvariantSetRecord| {
            s.hash.clone()
        })? {
            state.invariant_sets.insert(set.hash.clone(), set);
        }
        state.active_policy = self.meta(ACTIVE_POLICY)?;
        state.active_invariants = self.meta(ACTIVE_INVARIANTS)?;
        // Only read: ending the transaction without committing changes nothing.
        drop(tx);
        Ok(state)
    }

    fn meta(&self, key: &str) -> Result<Option<String>, CustodyError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.fail(e))
    }

    /// Every record of `kind`, each checked to be stored under `key` of itself.
    fn all<T: DeserializeOwned>(
        &self,
        kind: &str,
        key: impl Fn(&T) -> String,
    ) -> Result<Vec<T>, CustodyError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, body FROM records WHERE kind = ?1")
            .map_err(|e| self.fail(e))?;
        let rows = stmt
            .query_map([kind], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.fail(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, body) = row.map_err(|e| self.fail(e))?;
            let unverified = |problem: String| CustodyError::Unverified {
                what: format!("{kind} row `{id}`"),
                problem,
            };
            let value: T = serde_json::from_str(&body)
                .map_err(|e| unverified(format!("cannot be read: {e}")))?;
            let own = key(&value);
            if own != id {
                return Err(unverified(format!("it holds the record of `{own}`")));
            }
            out.push(value);
        }
        Ok(out)
    }

    /// Writes `writes` in one transaction, appends `event` to the log, sets the event's log
    /// index on every record written, then commits. If the log refuses, nothing is committed.
    /// Returns the event's log index; the caller sets it on its copies of the records.
    pub(crate) fn commit(
        &mut self,
        writes: &[Write],
        event: Event<'_>,
        log: LogFn<'_>,
    ) -> Result<u64, CustodyError> {
        let path = self.path.clone();
        let fail = |e: rusqlite::Error| CustodyError::Store {
            path: path.clone(),
            problem: e.to_string(),
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail)?;
        for write in writes {
            match write {
                Write::Record { kind, id, body } => tx.execute(
                    "INSERT OR REPLACE INTO records (kind, id, body) VALUES (?1, ?2, ?3)",
                    params![kind, id, body.to_string()],
                ),
                Write::Meta { key, value } => tx.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                    params![key, value],
                ),
            }
            .map_err(fail)?;
        }
        let index = log(event).map_err(CustodyError::LogUnavailable)?;
        // The rows were written before the log was, so that a write that fails is never
        // logged; now that the index is known, each record carries it.
        for write in writes {
            if let Write::Record { kind, id, body } = write {
                let mut body = body.clone();
                let Value::Object(fields) = &mut body else {
                    unreachable!("custody records are JSON objects");
                };
                fields.insert("log_index".into(), index.into());
                tx.execute(
                    "UPDATE records SET body = ?3 WHERE kind = ?1 AND id = ?2",
                    params![kind, id, body.to_string()],
                )
                .map_err(fail)?;
            }
        }
        tx.commit().map_err(fail)?;
        Ok(index)
    }
}

/// The row id of a release: releases are stored by name and version.
pub(crate) fn release_id(name: &str, version: &str) -> String {
    format!("{name}/{version}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pragma(conn: &Connection, name: &str) -> i64 {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .unwrap()
    }

    /// Two gateways on one data folder share the file: a busy one is waited for.
    #[test]
    fn the_file_is_durable_and_waits_for_locks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("nested/custody.db")).unwrap();
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(pragma(&store.conn, "synchronous"), 2);
        assert!(pragma(&store.conn, "busy_timeout") > 0);
        assert_eq!(pragma(&store.conn, "user_version"), 1);
    }

    /// A file written before `sqlitedb` (its tables, version 1) opens unchanged; one from a
    /// newer build is refused.
    #[test]
    fn schema_versions_are_kept_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("custody.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA[0]).unwrap();
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('active-policy', 'p1')",
                [],
            )
            .unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.meta(ACTIVE_POLICY).unwrap().as_deref(), Some("p1"));
        store.conn.pragma_update(None, "user_version", 2).unwrap();
        drop(store);
        let Err(err) = Store::open(&path) else {
            panic!("a newer file must be refused");
        };
        assert!(
            err.to_string().contains("schema version 2 is newer"),
            "{err}"
        );
    }
}
