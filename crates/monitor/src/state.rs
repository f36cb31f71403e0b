//! The state file of incremental verification: the last accepted signed checkpoint, kept
//! between runs so that the next run checks the log is an extension of it.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use std::io::Write as _;
use tlog::checkpoint::{Checkpoint, CheckpointError, open_checkpoint};
use tlog::note::{NoteError, Verifier};

/// Reads the checkpoint kept from the previous run, if the file exists.
pub fn read_state(path: &Path, verifier: &Verifier) -> anyhow::Result<Option<Checkpoint>> {
    let note = match fs::read(path) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    match open_checkpoint(&note, verifier) {
        Ok(cp) => Ok(Some(cp)),
        Err(
            e @ (CheckpointError::Note(
                NoteError::Unverified(_) | NoteError::InvalidSignature { .. },
            )
            | CheckpointError::OriginMismatch { .. }),
        ) => bail!(
            "state file {} is not signed by this key ({e})",
            path.display()
        ),
        Err(e) => bail!(
            "state file {} does not hold a signed checkpoint: {e}",
            path.display()
        ),
    }
}

/// Writes `data` to `path` through a temporary file in the same directory and a
/// rename, so a crash leaves either the old or the new content.
pub fn write_atomically(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} is not a file name", path.display()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // Make the rename itself durable (best effort: not every platform can).
        if let Ok(d) = fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    Ok(result?)
}

/// `path` with `suffix` appended to its file name.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}
