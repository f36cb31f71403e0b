//! WAL checkpoints on a thread of their own.
//!
//! With automatic checkpoints, the commit that takes the WAL past its threshold also copies
//! the whole WAL into the database file and syncs it: one commit in thousands takes tens to
//! hundreds of milliseconds, and every request waiting on it with it. A [`Checkpointer`]
//! copies committed frames on its own connection instead (`PASSIVE`: it never blocks the
//! writer or readers), while the writer's connection turns automatic checkpoints off
//! ([`no_automatic_checkpoints`]). SQLite starts the WAL over from the beginning at the next
//! write once every frame is copied; should a busy writer keep that from happening until the
//! WAL passes `restart_above` frames, the checkpointer waits for a moment between writes to
//! copy everything and have the WAL start over (`RESTART`), so the WAL stays bounded.
//!
//! A failed checkpoint loses nothing (the WAL still holds every commit) and is tried again
//! on the next round.

use std::path::Path;
use std::sync::mpsc::{RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::{Error, Options};

/// Turns off the automatic checkpoints of the writer's connection, whose file a
/// [`Checkpointer`] checkpoints.
pub fn no_automatic_checkpoints(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("PRAGMA wal_autocheckpoint = 0")
}

/// Checkpoints one file every `every` until dropped.
pub struct Checkpointer {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the WAL of the (existing) file at `path`.
    pub fn spawn(
        path: &Path,
        options: &Options,
        every: Duration,
        restart_above: u32,
    ) -> Result<Checkpointer, Error> {
        // Read-write: a checkpoint writes the database file (it takes no write transaction,
        // so the writer is not held up).
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(options.busy_timeout)?;
        let (stop, stopped) = channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    let _ = checkpoint(&conn, restart_above);
                }
            })
            .map_err(Error::Io)?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// One round: copy what is committed; if the WAL has grown past `restart_above` frames,
/// copy everything and have the next write start the WAL over.
fn checkpoint(conn: &Connection, restart_above: u32) -> rusqlite::Result<()> {
    let frames: i64 = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))?;
    if frames > i64::from(restart_above) {
        conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))?;
    }
    Ok(())
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::open_durable;

    /// Writes 400 pages, one commit each, pausing now and then as a live store does; the
    /// WAL file's size in pages afterwards.
    fn wal_pages_after_writes(checkpointed: bool) -> u64 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let writer = open_durable(&path, &Options::DEFAULT).unwrap();
        no_automatic_checkpoints(&writer).unwrap();
        writer
            .execute_batch("CREATE TABLE t (v BLOB NOT NULL)")
            .unwrap();
        let checkpointer = checkpointed.then(|| {
            Checkpointer::spawn(&path, &Options::DEFAULT, Duration::from_millis(2), 64).unwrap()
        });
        for i in 0..400 {
            writer
                .execute("INSERT INTO t (v) VALUES (zeroblob(4000))", [])
                .unwrap();
            if i % 20 == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        drop(checkpointer);
        let rows: i64 = writer
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 400);
        let wal = std::fs::metadata(dir.path().join("c.db-wal"))
            .unwrap()
            .len();
        wal / 4096
    }

    #[test]
    fn the_wal_is_copied_and_started_over_without_the_writer() {
        let without = wal_pages_after_writes(false);
        let with = wal_pages_after_writes(true);
        assert!(
            without >= 400,
            "without checkpoints the WAL holds every page: {without}"
        );
        assert!(
            with < 200,
            "with the checkpointer the WAL starts over: {with} pages"
        );
    }
}
