//! The key store in one PostgreSQL database, shared by several gateways.
//!
//! - The table and its versioning are `pgconn`'s (`sovereign_meta`, key
//!   `data_keys_schema_version`), so the key store may live in the same database as a site
//!   store or the log store, or in one of its own.
//! - Reads and writes each have a small pool of connections, so a read never waits behind a
//!   write's commit (as the SQLite store's separate reader).
//! - Each deletion sends `NOTIFY sovereign_data_keys` in its transaction, so other gateways
//!   hear of it when it commits, and not before; [`PgKeys::listen`] hears them.
//!
//! Crypto-shredding here is weaker than in SQLite, and the operator must make up for it. A
//! deleted row is gone for every query at once, but PostgreSQL does not overwrite it: the old
//! row stays in the table's pages until `VACUUM` reclaims the space (and even then the bytes
//! may stay until the page is rewritten), and the WAL, WAL archives, base backups and replicas
//! keep copies of the page for as long as they are kept. So a destroyed data key can be
//! recovered by whoever has the database's files or backups, together with the
//! key-encryption key (the keys are stored wrapped). Run the key store's database on
//! encrypted storage with encrypted backups, keep WAL archives and backups only as long as the
//! erasure promise allows, and `VACUUM data_keys` regularly (or after erasures).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pgconn::{Pool, Target};
use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;

use crate::keys::error::KeyError;
use crate::keys::store::{Deleted, WrappedKey};

/// The schema this build writes and reads: `SCHEMA[v]` upgrades version `v` to `v + 1`.
/// Text columns sort bytewise (`"C"`), as SQLite's do.
const SCHEMA: &[&str] = &[r#"
    CREATE TABLE data_keys (
        subject TEXT COLLATE "C" NOT NULL,
        site    TEXT COLLATE "C" NOT NULL,
        key_id  TEXT NOT NULL,
        wrapped BYTEA NOT NULL,
        PRIMARY KEY (subject, site)
    );
"#];

/// Where `sovereign_meta` keeps the key store's schema version.
const SCHEMA_KEY: &str = "data_keys_schema_version";

/// The channel deletions are announced on; the payload is [`Notice`] as JSON.
pub(super) const CHANNEL: &str = "sovereign_data_keys";

/// How many connections each of the read and the write pools holds at most.
pub(super) const POOL_SIZE: usize = 2;

/// How long the listener waits for a notice before it looks at its stop flag again.
const POLL: Duration = Duration::from_millis(200);

/// How often the listener checks that its connection is still there (by listening again,
/// which changes nothing).
const PROBE: Duration = Duration::from_secs(5);

/// The first and the longest wait between reconnection attempts.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a deletion's notice says.
#[derive(serde::Serialize, serde::Deserialize)]
struct Notice {
    subject: String,
    site: Option<String>,
}

pub(super) struct PgKeys {
    target: Target,
    reads: Pool,
    writes: Pool,
}

impl PgKeys {
    /// Opens the key store at `url`, creating or upgrading its table.
    pub(super) fn open(url: &str) -> Result<PgKeys, KeyError> {
        let target = Target::parse(url)?;
        let mut first = target.connect()?;
        target.migrate(&mut first, SCHEMA_KEY, SCHEMA)?;
        drop(first);
        Ok(PgKeys {
            reads: target.pool(POOL_SIZE)?,
            writes: target.pool(POOL_SIZE)?,
            target,
        })
    }

    /// The URL without its password or parameters.
    pub(super) fn target(&self) -> &str {
        self.target.name()
    }

    fn on<T>(
        &self,
        pool: &Pool,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, KeyError> {
        let mut conn = pool.get().map_err(|e| self.target.error(e))?;
        f(&mut conn).map_err(|e| self.target.error(e).into())
    }

    pub(super) fn get(&self, subject: &str, site: &str) -> Result<Option<WrappedKey>, KeyError> {
        self.on(&self.reads, |c| select_key(c, subject, site))
    }

    pub(super) fn sites_of(&self, subject: &str) -> Result<Vec<String>, KeyError> {
        self.on(&self.reads, |c| {
            c.query(
                "SELECT site FROM data_keys WHERE subject = $1 ORDER BY site",
                &[&subject],
            )
            .map(|rows| rows.iter().map(|row| row.get(0)).collect())
        })
    }

    /// The first writer's key: ours if the insert took, else the row that was there. Each
    /// statement sees what was committed before it began, so the read after a conflicting
    /// insert sees the row it conflicted with, unless a deletion committed in between; then
    /// the insert is tried again.
    pub(super) fn insert_first(
        &self,
        subject: &str,
        site: &str,
        key: &WrappedKey,
    ) -> Result<WrappedKey, KeyError> {
        self.on(&self.writes, |c| {
            for _ in 0..3 {
                let inserted = c.execute(
                    "INSERT INTO data_keys (subject, site, key_id, wrapped)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (subject, site) DO NOTHING",
                    &[&subject, &site, &key.key_id, &key.wrapped],
                )?;
                if inserted == 1 {
                    return Ok(Some(key.clone()));
                }
                if let Some(stored) = select_key(c, subject, site)? {
                    return Ok(Some(stored));
                }
            }
            Ok(None)
        })?
        .ok_or_else(|| KeyError::Postgres {
            target: self.target().into(),
            source: format!(
                "the data key of subject `{subject}` at site `{site}` was deleted each time it \
                 was created: another gateway is erasing the subject; try again"
            )
            .into(),
        })
    }

    /// Deletes the rows and announces it to other gateways, in one transaction.
    pub(super) fn delete(&self, subject: &str, site: Option<&str>) -> Result<u64, KeyError> {
        let notice = serde_json::to_string(&Notice {
            subject: subject.into(),
            site: site.map(Into::into),
        })
        .map_err(|e| self.target.error(e))?;
        self.on(&self.writes, |c| {
            let mut tx = c.transaction()?;
            let deleted = match site {
                Some(site) => tx.execute(
                    "DELETE FROM data_keys WHERE subject = $1 AND site = $2",
                    &[&subject, &site],
                )?,
                None => tx.execute("DELETE FROM data_keys WHERE subject = $1", &[&subject])?,
            };
            // Also when nothing was deleted: running an erasure again announces it again.
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &notice])?;
            tx.commit()?;
            Ok(deleted)
        })
    }

    /// Starts the listening thread (see `DataKeyStore::listen`), having connected once here.
    pub(super) fn listen(
        &self,
        stop: Arc<AtomicBool>,
        on_deleted: Box<dyn Fn(Deleted) + Send>,
    ) -> Result<JoinHandle<()>, KeyError> {
        let client = listening(&self.target)?;
        let target = self.target.clone();
        std::thread::Builder::new()
            .name("sovereign-key-listener".into())
            .spawn(move || {
                Listener {
                    target,
                    stop,
                    on_deleted,
                }
                .run(client)
            })
            .map_err(|e| KeyError::Postgres {
                target: self.target().into(),
                source: format!("cannot start the listening thread: {e}").into(),
            })
    }
}

/// The wrapped data key of (subject, site) as `conn` reads it.
fn select_key(
    conn: &mut Client,
    subject: &str,
    site: &str,
) -> Result<Option<WrappedKey>, postgres::Error> {
    conn.query_opt(
        "SELECT key_id, wrapped FROM data_keys WHERE subject = $1 AND site = $2",
        &[&subject, &site],
    )
    .map(|row| {
        row.map(|row| WrappedKey {
            key_id: row.get(0),
            wrapped: row.get(1),
        })
    })
}

/// A new connection listening on [`CHANNEL`].
fn listening(target: &Target) -> Result<Client, KeyError> {
    let mut client = target.connect()?;
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .map_err(|e| target.error(e))?;
    Ok(client)
}

/// The listening thread's state.
struct Listener {
    target: Target,
    stop: Arc<AtomicBool>,
    on_deleted: Box<dyn Fn(Deleted) + Send>,
}

impl Listener {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Hears notices until stopped, reconnecting whenever the connection is lost.
    fn run(self, mut client: Client) {
        loop {
            self.serve(&mut client);
            drop(client);
            if self.stopped() {
                return;
            }
            (self.on_deleted)(Deleted::All);
            match self.reconnect() {
                Some(again) => client = again,
                None => return,
            }
            // Whatever was deleted while away was not heard.
            (self.on_deleted)(Deleted::All);
        }
    }

    /// Passes notices on until stopped or the connection fails.
    fn serve(&self, client: &mut Client) {
        let mut probed = Instant::now();
        while !self.stopped() {
            {
                let mut notices = client.notifications();
                let mut heard = notices.timeout_iter(POLL);
                loop {
                    match heard.next() {
                        Ok(Some(notice)) if notice.channel() == CHANNEL => {
                            (self.on_deleted)(read_notice(notice.payload()));
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => return,
                    }
                }
            }
            if client.is_closed() {
                return;
            }
            if probed.elapsed() >= PROBE {
                // A connection the server dropped without a word shows up on a write.
                if client.batch_execute(&format!("LISTEN {CHANNEL}")).is_err() {
                    return;
                }
                probed = Instant::now();
            }
        }
    }

    /// A listening connection again, trying with growing waits; `None` once stopped.
    fn reconnect(&self) -> Option<Client> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            if !self.sleep(backoff) {
                return None;
            }
            match listening(&self.target) {
                Ok(client) => return Some(client),
                Err(_) => {
                    // Still deaf: whatever was cached meanwhile may be stale too.
                    (self.on_deleted)(Deleted::All);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Waits `time` in short steps; false if stopped meanwhile.
    fn sleep(&self, time: Duration) -> bool {
        let until = Instant::now() + time;
        while !self.stopped() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(POLL));
        }
        false
    }
}

/// A notice's payload as a deletion; one that cannot be read may have been about any key.
fn read_notice(payload: &str) -> Deleted {
    match serde_json::from_str::<Notice>(payload) {
        Ok(Notice { subject, site }) => Deleted::Keys { subject, site },
        Err(_) => Deleted::All,
    }
}
