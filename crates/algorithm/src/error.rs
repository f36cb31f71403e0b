//! What can go wrong with a manifest or a run.

use thiserror::Error;

/// A manifest that does not parse or does not hold.
#[derive(Debug, Error)]
#[error("algorithm manifest: {0}")]
pub struct ManifestError(pub String);

/// The limit a run reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Fuel,
    Memory,
    WallTime,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limit::Fuel => "fuel",
            Limit::Memory => "memory",
            Limit::WallTime => "wall time",
        })
    }
}

/// Why a run failed. Nothing of the module's output leaves with a failed run.
#[derive(Debug, Error)]
pub enum RunError {
    /// The module does not match its manifest's digest, does not compile, imports anything,
    /// or does not export the host interface (`memory`, `alloc`, `run`).
    #[error("module refused: {0}")]
    Module(String),
    /// The input names a field the manifest does not read.
    #[error("input refused: {0}")]
    Input(String),
    /// The run was stopped at one of its manifest's limits.
    #[error("stopped at its {0} limit")]
    Limit(Limit),
    /// The module trapped (an out-of-bounds access, `unreachable`, ...).
    #[error("the module trapped: {0}")]
    Trap(String),
    /// The output is not what the manifest declares, or repeats a protected input value.
    #[error("output refused: {0}")]
    Output(String),
}
