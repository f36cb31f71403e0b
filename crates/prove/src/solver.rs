//! Locating and describing the SMT solver (cvc5).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use crate::ProveError;

/// Default per-proof time limit.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to get a solver, for error messages.
pub const INSTALL_HINT: &str = "apt-get install cvc5, or set CVC5=/path/to/cvc5";

/// A cvc5 executable that answered `--version`, and the per-proof time limit to give it.
#[derive(Debug, Clone)]
pub struct Solver {
    path: PathBuf,
    version: String,
    timeout: Duration,
}

/// The solver as recorded in a [`crate::ProofReport`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SolverInfo {
    pub name: String,
    pub version: String,
    pub path: String,
    pub timeout_ms: u64,
}

impl Solver {
    /// Finds cvc5 as SymCC does: the `CVC5` environment variable if set, else `cvc5` on
    /// `PATH`; runs `--version` to check it works. Fails, saying how to install one, when
    /// there is none.
    pub fn from_env() -> Result<Solver, ProveError> {
        match std::env::var_os("CVC5") {
            Some(path) if !path.is_empty() => Self::at(path),
            _ => match find_on_path("cvc5") {
                Some(path) => Self::at(path),
                None => Err(ProveError::SolverNotFound {
                    tried: "`cvc5` on PATH (CVC5 is not set)".into(),
                    hint: INSTALL_HINT,
                }),
            },
        }
    }

    /// Uses the cvc5 executable at `path` (checked by running `path --version`).
    pub fn at(path: impl Into<PathBuf>) -> Result<Solver, ProveError> {
        let path = path.into();
        let output = match Command::new(&path).arg("--version").output() {
            Ok(output) => output,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ProveError::SolverNotFound {
                    tried: path.display().to_string(),
                    hint: INSTALL_HINT,
                });
            }
            Err(e) => {
                return Err(ProveError::SolverUnusable(format!(
                    "cannot run {}: {e} ({INSTALL_HINT})",
                    path.display()
                )));
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let version = parse_version(&stdout).ok_or_else(|| {
            ProveError::SolverUnusable(format!(
                "{} --version did not say \"This is cvc5 version ...\" (exit status {}); {INSTALL_HINT}",
                path.display(),
                output.status
            ))
        })?;
        Ok(Solver {
            path,
            version,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// This solver with another per-proof time limit (at least 1 ms; cvc5 reads 0 as "none").
    pub fn with_timeout(mut self, timeout: Duration) -> Solver {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The per-proof time limit: each solver query (one invariant or policy in one request
    /// environment) gets this long.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Path of the executable.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Always `"cvc5"`.
    pub fn name(&self) -> &'static str {
        "cvc5"
    }

    /// Version reported by `cvc5 --version`, e.g. `1.0.3`.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub(crate) fn timeout_ms(&self) -> u64 {
        u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX)
    }

    /// Name, version, path and time limit, for reports.
    pub fn info(&self) -> SolverInfo {
        SolverInfo {
            name: self.name().to_owned(),
            version: self.version.clone(),
            path: self.path.display().to_string(),
            timeout_ms: self.timeout_ms(),
        }
    }
}

/// `This is cvc5 version 1.0.3 [git ...]` -> `1.0.3`.
fn parse_version(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("This is cvc5 version ")?;
        let version = rest.split_whitespace().next()?;
        Some(version.to_owned())
    })
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let paths: OsString = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cvc5_version_lines() {
        assert_eq!(
            parse_version("This is cvc5 version 1.0.3\ncompiled with GCC version 12.2.0\n"),
            Some("1.0.3".into())
        );
        assert_eq!(
            parse_version("This is cvc5 version 1.2.1 [git tag 1.2.1 branch HEAD]\n"),
            Some("1.2.1".into())
        );
        assert_eq!(parse_version("Z3 version 4.12.2 - 64 bit"), None);
    }

    #[test]
    fn missing_solver_says_how_to_install() {
        let err = Solver::at("/nonexistent/cvc5").unwrap_err();
        let message = err.to_string();
        assert!(message.contains("apt-get install cvc5"), "{message}");
        assert!(message.contains("CVC5=/path/to/cvc5"), "{message}");
    }
}
