//! Group commit for the embedded site store: single-statement writes that arrive while
//! another group is being committed wait, then share one transaction, and so one fsync.
//!
//! Each write still returns only once the transaction holding it is durable
//! (`synchronous=FULL`), so nothing acknowledged can be lost. A write that fails alone (a
//! constraint) is rolled back alone: SQLite undoes a failed statement and keeps its
//! transaction. A failure that ends the whole transaction (a full disk, an I/O error), or
//! a failed commit, fails every write of the group. The first writer to find no group being
//! committed commits the queue itself; the others wait on a condition variable, so no
//! thread of its own is needed.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use rusqlite::{Connection, params_from_iter};

/// The most writes one transaction takes; the rest go in the next one.
const MAX_GROUP: usize = 1024;

/// What a write answers: the rows it changed.
type Outcome = Arc<Mutex<Option<rusqlite::Result<usize>>>>;

struct Write {
    sql: &'static str,
    params: Vec<String>,
    outcome: Outcome,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Write>,
    committing: bool,
}

pub(crate) struct GroupCommit {
    conn: Mutex<Connection>,
    queue: Mutex<Queue>,
    committed: Condvar,
}

impl GroupCommit {
    pub(crate) fn new(conn: Connection) -> Self {
        GroupCommit {
            conn: Mutex::new(conn),
            queue: Mutex::new(Queue::default()),
            committed: Condvar::new(),
        }
    }

    /// Runs one statement with text parameters in the next group; the rows it changed, once
    /// its group is durable.
    pub(crate) fn execute(
        &self,
        sql: &'static str,
        params: Vec<String>,
    ) -> rusqlite::Result<usize> {
        let outcome: Outcome = Arc::default();
        let mut queue = self.lock_queue();
        queue.waiting.push(Write {
            sql,
            params,
            outcome: outcome.clone(),
        });
        loop {
            if let Some(done) = take(&outcome) {
                return done;
            }
            if queue.committing {
                queue = self
                    .committed
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Nobody is committing: this thread commits what is queued (its own write too).
            queue.committing = true;
            let size = queue.waiting.len().min(MAX_GROUP);
            let group: Vec<Write> = queue.waiting.drain(..size).collect();
            drop(queue);
            let outcomes = {
                let mut conn = self.connection();
                commit_group(&mut conn, &group)
            };
            for (write, done) in group.iter().zip(outcomes) {
                *write.outcome.lock().unwrap_or_else(PoisonError::into_inner) = Some(done);
            }
            queue = self.lock_queue();
            queue.committing = false;
            self.committed.notify_all();
        }
    }

    /// The writer connection alone, for a transaction of several statements (it waits for a
    /// group being committed).
    pub(crate) fn connection(&self) -> MutexGuard<'_, Connection> {
        // A panic elsewhere while holding the lock leaves the connection usable: SQLite rolls
        // back any statement or transaction that did not finish.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn take(outcome: &Outcome) -> Option<rusqlite::Result<usize>> {
    outcome
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
}

fn run(conn: &Connection, write: &Write) -> rusqlite::Result<usize> {
    conn.prepare_cached(write.sql)?
        .execute(params_from_iter(write.params.iter()))
}

/// One outcome per write, in order.
fn commit_group(conn: &mut Connection, group: &[Write]) -> Vec<rusqlite::Result<usize>> {
    if let [alone] = group {
        // Autocommit: one statement is its own transaction.
        return vec![run(conn, alone)];
    }
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        return group.iter().map(|_| copy(&e)).collect();
    }
    let mut outcomes = Vec::with_capacity(group.len());
    for write in group {
        outcomes.push(run(conn, write));
        if conn.is_autocommit() {
            // The failure ended the whole transaction: every write before it is undone too.
            let ended = outcomes.pop().and_then(Result::err).unwrap_or_else(|| {
                rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                    Some("the group's transaction ended before its commit".into()),
                )
            });
            return group.iter().map(|_| copy(&ended)).collect();
        }
    }
    match conn.execute_batch("COMMIT") {
        Ok(()) => outcomes,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            group.iter().map(|_| copy(&e)).collect()
        }
    }
}

/// The same failure for each write of a group (`rusqlite::Error` is not `Clone`).
fn copy(error: &rusqlite::Error) -> rusqlite::Result<usize> {
    Err(match error {
        rusqlite::Error::SqliteFailure(code, message) => {
            rusqlite::Error::SqliteFailure(*code, message.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &std::path::Path) -> GroupCommit {
        let conn = Connection::open(dir.join("g.db")).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT NOT NULL CHECK (v <> 'bad'));",
        )
        .unwrap();
        GroupCommit::new(conn)
    }

    const INSERT: &str = "INSERT INTO t (k, v) VALUES (?1, ?2)";

    #[test]
    fn concurrent_writes_are_all_committed_and_a_failing_one_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let group = Arc::new(open(dir.path()));
        let threads: Vec<_> = (0..32)
            .map(|i| {
                let group = group.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .map(|j| {
                            let value = if (i + j) % 7 == 0 { "bad" } else { "good" };
                            group
                                .execute(INSERT, vec![format!("{i}-{j}"), value.into()])
                                .is_ok()
                        })
                        .collect::<Vec<bool>>()
                })
            })
            .collect();
        let mut expected = 0;
        for (i, thread) in threads.into_iter().enumerate() {
            for (j, ok) in thread.join().unwrap().into_iter().enumerate() {
                assert_eq!(ok, (i + j) % 7 != 0, "write {i}-{j}");
                expected += usize::from(ok);
            }
        }
        let conn = group.connection();
        let stored: usize = conn
            .query_row("SELECT count(*) FROM t WHERE v = 'good'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, expected);
        let bad: usize = conn
            .query_row("SELECT count(*) FROM t WHERE v = 'bad'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(bad, 0);
    }

    #[test]
    fn a_group_reports_rows_changed() {
        let dir = tempfile::tempdir().unwrap();
        let group = open(dir.path());
        assert_eq!(
            group.execute(INSERT, vec!["a".into(), "x".into()]).unwrap(),
            1
        );
        assert_eq!(
            group
                .execute("DELETE FROM t WHERE k = ?1", vec!["nothing".into()])
                .unwrap(),
            0
        );
    }
}
