//! The custody database: one JSON document per record, in one SQLite file. Each change is
//! one transaction that is committed only after its event is in the transparency log.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{CustodyError, Event, LogFn, State};

const SCHEMA_VERSION: i64 = 1;
const SCHEMA: &str = "
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
";

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
        body: String,
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
            body: serde_json::to_string(value).expect("custody records serialise"),
        }
    }
}

pub(crate) struct Store {
    path: PathBuf,
    conn: Connection,
    /// SQLite's `data_version` when this process last loaded the state: it changes exactly
    /// when another connection (another gateway on the same data folder) commits.
    seen_version: i64,
}

impl Store {
    pub(crate) fn open(path: &Path) -> Result<Store, CustodyError> {
        let fail = |e: &dyn std::fmt::Display| CustodyError::Store {
            path: path.to_path_buf(),
            problem: e.to_string(),
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| fail(&e))?;
        }
        let mut conn = Connection::open(path).map_err(|e| fail(&e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| fail(&e))?;
        // Every committed change is synced: an answered custodian action is never lost.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| fail(&e))?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| fail(&e))?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| fail(&e))?;
        match version {
            0 => {
                tx.execute_batch(SCHEMA).map_err(|e| fail(&e))?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                    .map_err(|e| fail(&e))?;
            }
            SCHEMA_VERSION => {}
            other => {
                return Err(fail(&format!(
                    "schema version {other} is newer than this build understands ({SCHEMA_VERSION})"
                )));
            }
        }
        tx.commit().map_err(|e| fail(&e))?;
        let seen_version = data_version(&conn).map_err(|e| fail(&e))?;
        Ok(Store {
            path: path.to_path_buf(),
            conn,
            seen_version,
        })
    }

    /// Whether another connection committed since the last call (or since open); a cheap
    /// check, one pragma.
    pub(crate) fn changed_elsewhere(&mut self) -> Result<bool, CustodyError> {
        let version = data_version(&self.conn).map_err(|e| self.fail(e))?;
        let changed = version != self.seen_version;
        self.seen_version = version;
        Ok(changed)
    }

    fn fail(&self, e: impl std::fmt::Display) -> CustodyError {
        CustodyError::Store {
            path: self.path.clone(),
            problem: e.to_string(),
        }
    }

    pub(crate) fn load(&self) -> Result<State, CustodyError> {
        let mut state = State::default();
        for request in self.all::<crate::AccessRequest>(REQUEST)? {
            state.put_request(request);
        }
        for set in self.all::<crate::PolicySetRecord>(POLICY_SET)? {
            state.policy_sets.insert(set.hash.clone(), set);
        }
        for release in self.all::<crate::Release>(RELEASE)? {
            state
                .releases
                .insert((release.name.clone(), release.version.clone()), release);
        }
        for suspension in self.all::<crate::Suspension>(SUSPENSION)? {
            state
                .suspensions
                .insert(suspension.jurisdiction.clone(), suspension);
        }
        for set in self.all::<crate::InvariantSetRecord>(INVARIANT_SET)? {
            state.invariant_sets.insert(set.hash.clone(), set);
        }
        state.active_policy = self.meta(ACTIVE_POLICY)?;
        state.active_invariants = self.meta(ACTIVE_INVARIANTS)?;
        Ok(state)
    }

    fn meta(&self, key: &str) -> Result<Option<String>, CustodyError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.fail(e))
    }

    fn all<T: DeserializeOwned>(&self, kind: &str) -> Result<Vec<T>, CustodyError> {
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
            let value = serde_json::from_str(&body)
                .map_err(|e| self.fail(format!("{kind} `{id}` cannot be read: {e}")))?;
            out.push(value);
        }
        Ok(out)
    }

    /// Writes `writes` in one transaction, appends `event` to the log, then commits. If the
    /// log refuses, nothing is committed. Returns the event's log index.
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
                    params![kind, id, body],
                ),
                Write::Meta { key, value } => tx.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                    params![key, value],
                ),
            }
            .map_err(fail)?;
        }
        let index = log(event).map_err(CustodyError::LogUnavailable)?;
        tx.commit().map_err(fail)?;
        Ok(index)
    }
}

fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0))
}
