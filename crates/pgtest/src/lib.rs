//! A throwaway PostgreSQL server for tests.
//!
//! Tests of the PostgreSQL stores need a real server, and one that nobody else uses, so that
//! they can create databases freely and leave nothing behind. [`PgServer::start`] runs
//! `initdb` and `pg_ctl` on a temporary folder and a free port; dropping the [`PgServer`]
//! (also when a test panics) stops the server and removes the folder.
//!
//! ```ignore
//! let Some(server) = pgtest::PgServer::start() else { return }; // skipped: said why
//! let url = server.fresh_database(); // postgres://sovereign@127.0.0.1:PORT/db_1
//! ```
//!
//! - Binaries come from `$PG_BIN`, else the highest `/usr/lib/postgresql/*/bin` (Debian's
//!   layout), else `PATH`. Where none are found the test is skipped with a message, or fails
//!   when `SOVEREIGN_REQUIRE_PG=1` (as CI sets it), so CI cannot pass by skipping.
//! - PostgreSQL refuses to run as root; as root, the server runs as the `postgres` user (made by
//!   the Debian package), or `nobody` without it, through `runuser`.
//! - The server trusts every local connection (`-A trust`) as superuser `sovereign`, listens
//!   on 127.0.0.1 only, and runs with `fsync=off`: it is for tests, and its data is thrown
//!   away.
//! - One server per `PgServer`: tests in one process each start their own, so none outlives
//!   its test. A server starts in about a second.
//!
//! The client calls here use the synchronous `postgres` crate: call them from test threads,
//! not from inside an async task.

use std::env;
use std::ffi::OsStr;
use std::fmt;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The superuser `initdb` creates; connections need no password.
pub const USER: &str = "sovereign";

/// Set to `1` to fail, rather than skip, where no PostgreSQL binaries are found.
pub const REQUIRE_ENV: &str = "SOVEREIGN_REQUIRE_PG";

/// A running PostgreSQL server on a temporary folder; stopped and removed when dropped.
#[derive(Debug)]
pub struct PgServer {
    bin: PathBuf,
    /// The user the server runs as, when the tests run as root.
    run_as: Option<String>,
    dir: tempfile::TempDir,
    port: u16,
    /// Whether `pg_ctl start` was attempted, so that dropping stops it.
    started: bool,
    databases: AtomicUsize,
    /// The CA certificate (PEM) that signed the server's, when TLS is on.
    ca: Option<PathBuf>,
}

impl PgServer {
    /// Starts a fresh server. `None` when no PostgreSQL binaries are installed, after printing
    /// `skipping: …` to stderr: the test should return. Panics instead when
    /// `SOVEREIGN_REQUIRE_PG=1`, and whenever binaries exist but the server cannot start.
    pub fn start() -> Option<PgServer> {
        Some(PgServer::start_with(binaries_or_skip()?))
    }

    /// As [`start`](Self::start), with TLS on: a throwaway CA (its certificate at
    /// [`ca_path`](Self::ca_path)) signs a server certificate for the DNS name `localhost`
    /// only, not the address 127.0.0.1, so that `verify-full` to `localhost` succeeds and to
    /// `127.0.0.1` fails, as with libpq. The server accepts plain TCP as well.
    pub fn start_tls() -> Option<PgServer> {
        Some(PgServer::start_tls_with(binaries_or_skip()?))
    }

    /// Starts a fresh server from the binaries in `bin`; panics if it cannot.
    pub fn start_with(bin: PathBuf) -> PgServer {
        let mut server = PgServer::init(bin);
        server.launch();
        server
    }

    /// As [`start_with`](Self::start_with), with TLS on (see [`start_tls`](Self::start_tls)).
    pub fn start_tls_with(bin: PathBuf) -> PgServer {
        let mut server = PgServer::init(bin);
        server.enable_tls();
        server.launch();
        server
    }

    /// A fresh data folder, not yet served.
    fn init(bin: PathBuf) -> PgServer {
        let run_as = is_root().then(server_user);
        let dir = tempfile::Builder::new()
            .prefix("pgtest-")
            .tempdir()
            .expect("pgtest: cannot make a temporary folder");
        if let Some(user) = &run_as {
            chown_to(dir.path(), user);
        }
        let server = PgServer {
            bin,
            run_as,
            dir,
            port: 0,
            started: false,
            databases: AtomicUsize::new(0),
            ca: None,
        };
        let data = server.data_dir();
        server.run_checked(
            "initdb",
            [
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-A"),
                OsStr::new("trust"),
                OsStr::new("-U"),
                OsStr::new(USER),
                OsStr::new("-E"),
                OsStr::new("UTF8"),
                OsStr::new("--locale=C"),
                OsStr::new("--no-sync"),
            ],
        );
        server
    }

    /// Starts the server on the data folder; panics if it cannot.
    fn launch(&mut self) {
        let data = self.data_dir();
        // A port another process takes between our probe and the server's bind makes the
        // start fail; a few tries make that race harmless.
        let mut last = String::new();
        for _ in 0..5 {
            self.port = free_port();
            let options = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                self.port,
                self.dir.path().display()
            );
            self.started = true;
            let out = self.run(
                "pg_ctl",
                [
                    OsStr::new("-D"),
                    data.as_os_str(),
                    OsStr::new("-o"),
                    OsStr::new(&options),
                    OsStr::new("-l"),
                    self.log_file().as_os_str(),
                    OsStr::new("-w"),
                    OsStr::new("start"),
                ],
            );
            if out.status.success() {
                return;
            }
            last = format!(
                "{}{}\nserver log:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(self.log_file()).unwrap_or_default()
            );
        }
        panic!("pgtest: the PostgreSQL server does not start:\n{last}");
    }

    /// The PEM file of the CA that signed the server's certificate, for `sslrootcert`; `None`
    /// without TLS.
    pub fn ca_path(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// Writes a CA and a server certificate it signs (for `localhost`) into the data folder,
    /// readable by the server user only, and turns `ssl` on.
    fn enable_tls(&mut self) {
        let ca = Ca::new("pgtest CA");
        let key = rcgen::KeyPair::generate().expect("pgtest: cannot make a key");
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("pgtest: bad certificate names");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &ca.issuer)
            .expect("pgtest: cannot sign the server certificate");
        let data = self.data_dir();
        self.write_private(&data.join("server.crt"), &cert.pem());
        self.write_private(&data.join("server.key"), &key.serialize_pem());
        let ca_path = self.dir.path().join("ca.crt");
        std::fs::write(&ca_path, ca.pem()).expect("pgtest: cannot write the CA certificate");
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("pgtest: cannot read postgresql.conf");
        text.push_str("\n# pgtest: TLS\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(&conf, text).expect("pgtest: cannot write postgresql.conf");
        self.ca = Some(ca_path);
    }

    /// Writes `text` to `path` with mode 0600, owned by the server user when root: the server
    /// refuses a key that others may read.
    fn write_private(&self, path: &Path, text: &str) {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .unwrap_or_else(|e| panic!("pgtest: cannot write {}: {e}", path.display()));
        if let Some(user) = &self.run_as {
            chown_to(path, user);
        }
    }

    /// The TCP port the server listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of `database` as the superuser, without password:
    /// `postgres://sovereign@127.0.0.1:PORT/DATABASE`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// A client connected to `database` as the superuser.
    pub fn client(&self, database: &str) -> postgres::Client {
        postgres::Client::connect(&self.url(database), postgres::NoTls)
            .unwrap_or_else(|e| panic!("pgtest: cannot connect to `{database}`: {e:?}"))
    }

    /// Creates the empty database `name` (letters, digits and `_`) and returns its
    /// [`url`](Self::url). Panics if it exists.
    pub fn create_database(&self, name: &str) -> String {
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "pgtest: database names are letters, digits and `_`: {name:?}"
        );
        self.client("postgres")
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| panic!("pgtest: cannot create database `{name}`: {e:?}"));
        self.url(name)
    }

    /// Creates a new empty database with a name not used before on this server (`db_1`,
    /// `db_2`, …) and returns its URL.
    pub fn fresh_database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed) + 1;
        self.create_database(&format!("db_{n}"))
    }

    /// The server's log so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// Runs one of the server binaries, as the server user when root.
    fn run<I, S>(&self, program: &str, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let program = self.bin.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        command
            .args(args)
            // The server user may not be allowed into the tests' working folder.
            .current_dir(self.dir.path())
            .env_remove("PGDATA")
            .output()
            .unwrap_or_else(|e| panic!("pgtest: cannot run {}: {e}", program.display()))
    }

    fn run_checked<I, S>(&self, program: &str, args: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.run(program, args);
        assert!(
            out.status.success(),
            "pgtest: {program} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.started {
            // Immediate: the data is thrown away, so nothing needs a clean shutdown. Errors are
            // ignored: panicking in drop would abort a test that is already failing.
            let data = self.data_dir();
            let _ = self.run(
                "pg_ctl",
                [
                    OsStr::new("-D"),
                    data.as_os_str(),
                    OsStr::new("-m"),
                    OsStr::new("immediate"),
                    OsStr::new("-w"),
                    OsStr::new("stop"),
                ],
            );
        }
        // The TempDir removes the folder after this.
    }
}

/// A throwaway certificate authority.
pub struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    cert: rcgen::Certificate,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// A new self-signed CA named `name`, with a fresh key.
    pub fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().expect("pgtest: cannot make a key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .expect("pgtest: bad certificate parameters");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params
            .self_signed(&key)
            .expect("pgtest: cannot make a CA certificate");
        Ca {
            issuer: rcgen::Issuer::new(params, key),
            cert,
        }
    }

    /// The CA's certificate, PEM-encoded (for an `sslrootcert` file).
    pub fn pem(&self) -> String {
        self.cert.pem()
    }
}

/// The binaries, or `None` after saying why the test is skipped (a panic instead when
/// `SOVEREIGN_REQUIRE_PG=1`).
fn binaries_or_skip() -> Option<PathBuf> {
    let bin = find_binaries();
    if bin.is_none() {
        if env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
            panic!(
                "no PostgreSQL server binaries found (initdb, pg_ctl) and {REQUIRE_ENV}=1: \
                 install PostgreSQL (Debian package `postgresql-15`) or set PG_BIN to \
                 the folder holding them"
            );
        }
        eprintln!("skipping: no PostgreSQL server binaries found (apt-get install postgresql-15)");
    }
    bin
}

/// The folder holding `initdb` and `pg_ctl`: `$PG_BIN`, else the highest
/// `/usr/lib/postgresql/VERSION/bin`, else the first `PATH` entry with both.
pub fn find_binaries() -> Option<PathBuf> {
    find_binaries_in(
        env::var_os("PG_BIN").map(PathBuf::from),
        Path::new("/usr/lib/postgresql"),
        env::var_os("PATH"),
    )
}

fn find_binaries_in(
    pg_bin: Option<PathBuf>,
    versions: &Path,
    path: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = pg_bin {
        if has_both(&dir) {
            return Some(dir);
        }
        eprintln!(
            "pgtest: PG_BIN={} holds no initdb and pg_ctl; looking elsewhere",
            dir.display()
        );
    }
    let versioned = std::fs::read_dir(versions)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = version_key(&entry.file_name().to_string_lossy())?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_both(bin))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin);
    versioned.or_else(|| env::split_paths(&path?).find(|dir| has_both(dir)))
}

/// `15` or `9.6` as numbers, so that 15 sorts above 9.6.
fn version_key(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The unprivileged user to run the server as: `postgres` if it exists, else `nobody`.
fn server_user() -> String {
    if user_id("postgres", "-u").is_some() {
        "postgres".into()
    } else {
        "nobody".into()
    }
}

fn user_id(user: &str, flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, user]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn chown_to(path: &Path, user: &str) {
    let uid = user_id(user, "-u").unwrap_or_else(|| panic!("pgtest: no user `{user}`"));
    let gid = user_id(user, "-g").unwrap_or_else(|| panic!("pgtest: no group of `{user}`"));
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("pgtest: cannot give {} to {user}: {e}", path.display()));
}

/// A TCP port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("pgtest: cannot find a free port")
        .port()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically() {
        assert!(version_key("15") > version_key("9.6"));
        assert!(version_key("16") > version_key("15"));
        assert_eq!(version_key("main"), None);
    }

    #[test]
    fn a_server_starts_serves_and_goes_away() {
        let Some(server) = PgServer::start() else {
            return;
        };
        let url = server.fresh_database();
        assert!(url.ends_with("/db_1"), "{url}");
        let mut client = server.client("db_1");
        let one: i32 = client.query_one("SELECT 1", &[]).unwrap().get(0);
        assert_eq!(one, 1);
        let data = server.data_dir();
        let pid_file = data.join("postmaster.pid");
        assert!(pid_file.exists());
        let folder = server.dir.path().to_path_buf();
        drop(client);
        drop(server);
        assert!(!folder.exists(), "the folder is removed");
    }

    #[test]
    fn a_tls_server_has_its_certificates_and_ssl_on() {
        use std::os::unix::fs::PermissionsExt;
        let Some(server) = PgServer::start_tls() else {
            return;
        };
        let ca = std::fs::read_to_string(server.ca_path().unwrap()).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
        let key = std::fs::metadata(server.data_dir().join("server.key")).unwrap();
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
        let ssl: String = server
            .client("postgres")
            .query_one("SHOW ssl", &[])
            .unwrap()
            .get(0);
        assert_eq!(ssl, "on", "{}", server.log());
        assert!(PgServer::start().is_some_and(|plain| plain.ca_path().is_none()));
    }

    #[test]
    fn binaries_are_looked_for_in_order() {
        let root = tempfile::tempdir().unwrap();
        let make = |dir: &str| {
            let dir = root.path().join(dir);
            std::fs::create_dir_all(&dir).unwrap();
            for name in ["initdb", "pg_ctl"] {
                std::fs::write(dir.join(name), "").unwrap();
            }
            dir
        };
        let versions = root.path().join("versions");
        let nothing = root.path().join("empty");
        assert_eq!(find_binaries_in(None, &versions, None), None);
        assert_eq!(
            find_binaries_in(
                Some(nothing.clone()),
                &versions,
                Some(nothing.clone().into())
            ),
            None
        );
        let on_path = make("path-bin");
        assert_eq!(
            find_binaries_in(None, &versions, Some(on_path.clone().into())),
            Some(on_path.clone())
        );
        make("versions/9.6/bin");
        let v15 = make("versions/15/bin");
        std::fs::create_dir_all(versions.join("16/bin")).unwrap(); // no binaries
        assert_eq!(
            find_binaries_in(None, &versions, Some(on_path.clone().into())),
            Some(v15)
        );
        let explicit = make("explicit");
        assert_eq!(
            find_binaries_in(Some(explicit.clone()), &versions, None),
            Some(explicit)
        );
    }

    #[test]
    fn a_panicking_test_leaves_no_server() {
        let folder = std::sync::Mutex::new(None);
        let result = std::panic::catch_unwind(|| {
            let Some(server) = PgServer::start() else {
                return;
            };
            *folder.lock().unwrap() = Some((server.dir.path().to_path_buf(), server.port()));
            panic!("a failing test");
        });
        let Some((folder, port)) = folder.into_inner().unwrap() else {
            return; // skipped: no binaries
        };
        assert!(result.is_err());
        assert!(!folder.exists(), "the folder is removed");
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "nothing listens on the port any more"
        );
    }
}
