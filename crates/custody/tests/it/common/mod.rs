//! What the custody tests share: a store in a temporary folder with one custodian key, a log
//! in memory, sample records, and raw access to the SQLite file as an attacker would have it.

// Each test file uses a part of this.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Mutex;

use custody::statement::{self, Statement};
use custody::{Custody, CustodyError, Event, Keys, NewRequest, Person, RequestRules};
use serde_json::Value;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub signer: tlog::note::Signer,
    pub verifier: tlog::note::Verifier,
    /// A throwaway PostgreSQL server and the database the store is in, for the tests that
    /// run on PostgreSQL; the SQLite file in `dir` otherwise.
    pub postgres: Option<(pgtest::PgServer, String)>,
}

/// Runs each named test (a `fn(Fixture)`) twice, as `NAME::sqlite` and `NAME::postgres`: the
/// custody rules must hold alike on both stores.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sqlite() {
                    super::$name(crate::common::Fixture::new());
                }

                #[test]
                fn postgres() {
                    // Skipped (saying why) where PostgreSQL is not installed, unless CI
                    // requires it.
                    if let Some(fixture) = crate::common::Fixture::postgres() {
                        super::$name(fixture);
                    }
                }
            }
        )*
    };
}
pub(crate) use on_both_stores;

impl Fixture {
    pub fn new() -> Fixture {
        let (skey, vkey) = tlog::note::generate_key("custodian").unwrap();
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            signer: tlog::note::Signer::new(&skey).unwrap(),
            verifier: tlog::note::Verifier::new(&vkey).unwrap(),
            postgres: None,
        }
    }

    /// A fixture whose store is a fresh database on a throwaway PostgreSQL server.
    pub fn postgres() -> Option<Fixture> {
        let server = pgtest::PgServer::start()?;
        let url = server.fresh_database();
        Some(Fixture {
            postgres: Some((server, url)),
            ..Fixture::new()
        })
    }

    pub fn location(&self) -> custody::Location {
        match &self.postgres {
            Some((_, url)) => custody::Location::Postgres { url: url.clone() },
            None => custody::Location::Sqlite {
                path: self.path(),
                artifacts: self.dir.path().join("artifacts"),
            },
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("custody.sqlite")
    }

    /// The custodian key, one signature needed for everything.
    pub fn keys(&self) -> Keys {
        Keys {
            verifiers: vec![self.verifier.clone()],
            policy_threshold: 1,
            release_threshold: 1,
            kill_switch_threshold: 1,
        }
    }

    pub fn try_open_with(&self, keys: Keys) -> Result<Custody, CustodyError> {
        Custody::open_at(&self.location(), keys, std::sync::Arc::new(()))
    }

    pub fn try_open(&self) -> Result<Custody, CustodyError> {
        self.try_open_with(self.keys())
    }

    pub fn open(&self) -> Custody {
        self.try_open().unwrap()
    }

    pub fn sign(&self, statement: Statement) -> Vec<u8> {
        statement::sign(&statement, &self.signer).unwrap()
    }

    pub fn activate_invariants(
        &self,
        custody: &Custody,
        hash: &str,
        proofs: Option<custody::Proofs>,
        append: custody::LogFn<'_>,
    ) -> Result<(), CustodyError> {
        let signed = self.sign(Statement::InvariantActivation {
            invariant_set: hash.into(),
        });
        custody
            .activate_invariants(invariant_set(hash), &signed, proofs, 3, append)
            .map(|_| ())
    }

    // ----- the file as an attacker sees it: no keys, but write access -----

    /// A second connection to the custody file, like `sqlite3 custody.sqlite`.
    pub fn raw(&self) -> rusqlite::Connection {
        assert!(self.postgres.is_none(), "raw access is to the SQLite file");
        rusqlite::Connection::open(self.path()).unwrap()
    }

    /// The stored JSON of one record.
    pub fn body(&self, kind: &str, id: &str) -> Value {
        let body: String = self
            .raw()
            .query_row(
                "SELECT body FROM records WHERE kind = ?1 AND id = ?2",
                [kind, id],
                |r| r.get(0),
            )
            .unwrap();
        serde_json::from_str(&body).unwrap()
    }

    /// Writes (inserts or replaces) one record's JSON.
    pub fn put(&self, kind: &str, id: &str, body: &Value) {
        self.raw()
            .execute(
                "INSERT OR REPLACE INTO records (kind, id, body) VALUES (?1, ?2, ?3)",
                [kind, id, &body.to_string()],
            )
            .unwrap();
    }

    /// Edits one record's JSON in place; answers what it was before.
    pub fn edit(&self, kind: &str, id: &str, edit: impl FnOnce(&mut Value)) -> Value {
        let before = self.body(kind, id);
        let mut after = before.clone();
        edit(&mut after);
        self.put(kind, id, &after);
        before
    }

    pub fn delete(&self, kind: &str, id: &str) {
        self.raw()
            .execute(
                "DELETE FROM records WHERE kind = ?1 AND id = ?2",
                [kind, id],
            )
            .unwrap();
    }

    pub fn set_meta(&self, key: &str, value: &str) {
        self.raw()
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                [key, value],
            )
            .unwrap();
    }

    pub fn delete_meta(&self, key: &str) {
        self.raw()
            .execute("DELETE FROM meta WHERE key = ?1", [key])
            .unwrap();
    }

    /// Checks that the state on file is refused: by `refresh` (which keeps what it had), at
    /// every refresh rather than once, and by `open`; each time naming `what`.
    pub fn assert_refused(&self, custody: &Custody, what: &str) {
        for _ in 0..2 {
            let error = custody.refresh().unwrap_err();
            assert_unverified(&error, what);
        }
        match self.try_open() {
            Err(error) => assert_unverified(&error, what),
            Ok(_) => panic!("the state is refused by refresh but opens"),
        }
    }
}

pub fn assert_unverified(error: &CustodyError, what: &str) {
    match error {
        CustodyError::Unverified { what: named, .. } => {
            assert!(
                named.contains(what),
                "refused for `{named}`, not `{what}`: {error}"
            )
        }
        other => panic!("expected Unverified naming `{what}`, got: {other}"),
    }
}

/// A log that records event names, or refuses every append.
pub struct Log {
    pub events: Mutex<Vec<String>>,
    pub refuse: bool,
}

impl Log {
    pub fn new(refuse: bool) -> Log {
        Log {
            events: Mutex::new(Vec::new()),
            refuse,
        }
    }

    pub fn append(&self, event: Event<'_>) -> Result<u64, String> {
        if self.refuse {
            return Err("disk full".into());
        }
        let mut events = self.events.lock().unwrap();
        events.push(
            format!("{event:?}")
                .split(['(', ' '])
                .next()
                .unwrap()
                .to_string(),
        );
        Ok(events.len() as u64 - 1)
    }
}

pub fn person(id: &str, entity: &str) -> Person {
    Person {
        id: id.into(),
        entity: entity.into(),
    }
}

pub fn new_request() -> NewRequest {
    NewRequest {
        action: "read".into(),
        subjects: vec!["u-1".into()],
        collections: vec!["activity".into()],
        fields: vec![],
        purpose: "ticket 9".into(),
        reason_code: "customer-initiated-support".into(),
        duration_seconds: 600,
    }
}

pub const RULES: RequestRules = RequestRules {
    approvals_required: 2,
    pending_ttl_seconds: 100,
    max_duration_seconds: 3600,
};

pub fn policy_set(hash: &str) -> custody::PolicySetRecord {
    custody::PolicySetRecord {
        hash: hash.into(),
        schema: "schema".into(),
        policies: "policies".into(),
        policy_ids: vec![],
        proposed_by: person("olga", "custodian"),
        proposed_at: 1,
        activated_at: None,
        signature: None,
        signers: vec![],
        proofs: None,
        log_index: None,
    }
}

pub fn invariant_set(hash: &str) -> custody::InvariantSetRecord {
    custody::InvariantSetRecord {
        hash: hash.into(),
        text: "invariants".into(),
        names: vec!["no-restricted-access".into()],
        proposed_by: person("olga", "custodian"),
        proposed_at: 2,
        activated_at: None,
        signature: None,
        signers: vec![],
        proofs: None,
        log_index: None,
    }
}

/// Passing proofs of `policy_set` against `invariant_set`.
pub fn proofs(policy_set: &str, invariant_set: &str) -> custody::Proofs {
    let result = |name: &str, result: &str| custody::ProofResult {
        name: name.into(),
        result: result.into(),
        duration_ms: 1.0,
    };
    custody::Proofs {
        policy_set: policy_set.into(),
        invariant_set: invariant_set.into(),
        solver: "cvc5".into(),
        solver_version: "1.0.3".into(),
        timeout_ms: 1000,
        environments: 5,
        invariants: vec![result("no-restricted-access", custody::Proofs::PROVEN)],
        never_errors: vec![result("permit-read", custody::Proofs::NEVER_ERRORS)],
        duration_ms: 2.0,
        shipped_with: None,
    }
}
