//! The exit codes of `sovereign`, documented in the README and in `sovereign --help`, so
//! that a monitoring script tells a tampered log from an unreachable gateway.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success: the command did what it was asked; a check passed |
//! | 1 | a check failed: the log, a proof, an entry, a replayed decision, a report, a policy proof, the residency of subjects, a configuration |
//! | 2 | usage: wrong arguments or input files (clap's own code for a bad command line); nothing was done |
//! | 3 | unreachable: the gateway, log or mirror could not be reached, or answered that it is unavailable (HTTP 5xx) |
//! | 4 | refused: the gateway refused the caller (HTTP 401 no or bad token, 403 not allowed) |
//! | 5 | any other failure: the gateway refused the request for another reason (its error code is printed), or a local error (a file that cannot be written) |
//!
//! A file named on the command line that does not exist is a usage error (2).

use std::process::ExitCode;

use monitor::Failure;

use crate::client::ApiError;

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    CheckFailed = 1,
    Usage = 2,
    Unreachable = 3,
    Refused = 4,
    Failed = 5,
}

/// The table above, for `sovereign --help`.
pub const HELP: &str = "Exit codes: 0 success; 1 a check failed (log, proof, replay, report, policy proof, residency, configuration); 2 usage (wrong arguments or input files); 3 the gateway, log or mirror is unreachable or unavailable (HTTP 5xx); 4 refused by the gateway (HTTP 401, 403); 5 any other failure.";

impl Exit {
    /// The code of a command that failed with `error`. Markers in the error's chain decide;
    /// an error without one is `default`, what the command's failures mean (a check failed,
    /// for the commands that check).
    pub fn of(error: &anyhow::Error, default: Exit) -> Exit {
        if let Some(kind) = monitor::classify(error) {
            return match kind {
                Failure::CheckFailed => Exit::CheckFailed,
                Failure::Usage => Exit::Usage,
                Failure::Unreachable => Exit::Unreachable,
            };
        }
        for cause in error.chain() {
            if let Some(api) = cause.downcast_ref::<ApiError>() {
                return match api.status {
                    401 | 403 => Exit::Refused,
                    500.. => Exit::Unreachable,
                    _ => Exit::Failed,
                };
            }
            // A file named that is not there is a wrong argument; any other trouble with a
            // local file or folder (permissions, a full disk) is a local failure.
            if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                return if io.kind() == std::io::ErrorKind::NotFound {
                    Exit::Usage
                } else {
                    Exit::Failed
                };
            }
        }
        default
    }

    pub fn code(self) -> ExitCode {
        ExitCode::from(self as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_and_gateway_answers_decide_the_code() {
        let refused = anyhow::Error::new(ApiError {
            status: 403,
            code: "forbidden".into(),
            message: "no".into(),
        })
        .context("policy activate");
        assert_eq!(Exit::of(&refused, Exit::Failed), Exit::Refused);
        let unavailable = anyhow::Error::new(ApiError {
            status: 503,
            code: "unavailable".into(),
            message: "later".into(),
        });
        assert_eq!(Exit::of(&unavailable, Exit::Failed), Exit::Unreachable);
        let conflict = anyhow::Error::new(ApiError {
            status: 409,
            code: "conflict".into(),
            message: "already".into(),
        });
        assert_eq!(Exit::of(&conflict, Exit::CheckFailed), Exit::Failed);
        assert_eq!(
            Exit::of(&monitor::failure::usage("bad key"), Exit::Failed),
            Exit::Usage
        );
        let io = anyhow::Error::new(std::io::Error::other("disk full")).context("saving state");
        assert_eq!(Exit::of(&io, Exit::CheckFailed), Exit::Failed);
        let missing = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::NotFound))
            .context("reading note.sig");
        assert_eq!(Exit::of(&missing, Exit::Failed), Exit::Usage);
        assert_eq!(
            Exit::of(&anyhow::anyhow!("mismatch"), Exit::CheckFailed),
            Exit::CheckFailed
        );
    }
}
