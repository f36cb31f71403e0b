//! The witness's data folder: its key pair and the lock that keeps one witness on it.
//!
//! ```text
//! DIR/                 0700 when `init` creates it
//!   witness.key        the signer key (PRIVATE+KEY+<name>+<key ID>+<base64(0x04 || seed)>), 0600
//!   witness.vkey       the verifier key, for operators to hand out, 0600
//!   witness.sqlite     the state: latest cosigned checkpoint per log, evidence (`store.rs`)
//!   witness.lock       held (flock) by the one process that may write the state
//! ```

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use tlog::cosignature::{ALG_COSIGNATURE_V1, Cosigner, WitnessKey};
use tlog::note::NoteError;

use crate::WitnessError;

/// The witness's signer key, in the data folder.
pub const KEY_FILE: &str = "witness.key";
/// The witness's verifier key (C2SP vkey, key type 0x04), in the data folder.
pub const VKEY_FILE: &str = "witness.vkey";
/// The witness's state, in the data folder.
pub const STATE_FILE: &str = "witness.sqlite";
/// The lock file a running witness holds, in the data folder.
pub const LOCK_FILE: &str = "witness.lock";

/// Writes a new witness key pair named `name` into `dir` (created 0700 if missing):
/// `witness.key` (0600) and `witness.vkey`. Refuses to replace an existing key, since the
/// logs and their clients trust the old one. Returns the verifier key.
pub fn init(dir: &Path, name: &str) -> Result<WitnessKey, WitnessError> {
    let cosigner = Cosigner::generate(name).map_err(|e| match e {
        NoteError::InvalidName(_) => WitnessError::BadName(name.to_string()),
        other => WitnessError::BadName(format!("{name}: {other}")),
    })?;
    create_private_dir(dir)?;
    let key_path = dir.join(KEY_FILE);
    let mut key = new_private_file(&key_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            WitnessError::KeyExists(key_path.clone())
        } else {
            io_error(&key_path, e)
        }
    })?;
    write_synced(&mut key, &key_path, &format!("{}\n", cosigner.to_skey()))?;
    let vkey = cosigner.witness_key();
    let vkey_path = dir.join(VKEY_FILE);
    let mut public = private_file_options()
        .truncate(true)
        .create(true)
        .open(&vkey_path)
        .map_err(|e| io_error(&vkey_path, e))?;
    write_synced(&mut public, &vkey_path, &format!("{vkey}\n"))?;
    // The new names are durable only once the folder is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))?;
    Ok(vkey)
}

/// Loads the witness's signer key from `dir`, saying plainly what is wrong with a missing
/// file or a key of another kind.
pub fn load_cosigner(dir: &Path) -> Result<Cosigner, WitnessError> {
    let path = dir.join(KEY_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(WitnessError::NoKey(path));
        }
        Err(e) => return Err(io_error(&path, e)),
    };
    let bad = |reason: String| WitnessError::BadKey {
        path: path.clone(),
        reason,
    };
    let text = text.trim();
    if !text.starts_with("PRIVATE+KEY+") {
        return Err(bad(
            "it does not hold a signer key (PRIVATE+KEY+<name>+<key ID>+<key>)".to_string(),
        ));
    }
    Cosigner::new(text).map_err(|e| match e {
        NoteError::UnknownAlgorithm(alg) => bad(format!(
            "it holds a key of type {alg:#04x}{}, not a cosignature/v1 witness key (type {ALG_COSIGNATURE_V1:#04x})",
            if alg == tlog::note::ALG_ED25519 {
                " (a log's signed-note key)"
            } else {
                ""
            }
        )),
        other => bad(other.to_string()),
    })
}

/// The witness's verifier key, from its signer key in `dir` (the signer key is what signs,
/// so the vkey printed is always the one that verifies).
pub fn read_key(dir: &Path) -> Result<WitnessKey, WitnessError> {
    Ok(load_cosigner(dir)?.witness_key())
}

/// An exclusive `flock` on the data folder's lock file, released when dropped or when the
/// process dies (SIGKILL included), so a crashed witness never blocks its restart.
#[derive(Debug)]
pub(crate) struct DataLock {
    _file: File,
}

impl DataLock {
    /// Takes the lock of `dir`, or fails at once with [`WitnessError::Locked`] if another
    /// witness (another process, or another `Witness` in this one) holds it.
    pub(crate) fn take(dir: &Path) -> Result<DataLock, WitnessError> {
        let path = dir.join(LOCK_FILE);
        let file = private_file_options()
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        lock_exclusive(&file).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                WitnessError::Locked(dir.to_path_buf())
            } else {
                io_error(&path, e)
            }
        })?;
        Ok(DataLock { _file: file })
    }
}

#[cfg(unix)]
fn lock_exclusive(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: flock only reads the descriptor number, which `file` keeps open for the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(unix))]
fn lock_exclusive(_file: &File) -> std::io::Result<()> {
    Ok(())
}

/// Creates `dir` (and its parents) with mode 0700 where they are new; an existing folder
/// keeps its mode.
fn create_private_dir(dir: &Path) -> Result<(), WitnessError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| io_error(dir, e))
}

fn private_file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options
}

fn new_private_file(path: &Path) -> std::io::Result<File> {
    private_file_options().create_new(true).open(path)
}

fn write_synced(file: &mut File, path: &Path, text: &str) -> Result<(), WitnessError> {
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(path, e))
}

fn io_error(path: &Path, source: std::io::Error) -> WitnessError {
    WitnessError::Io {
        path: PathBuf::from(path),
        source,
    }
}
