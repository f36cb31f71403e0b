//! What kind of failure an error is, so that a monitoring script can tell a log that failed
//! its check from one that could not be read.
//!
//! A check that fails (a tampered tile, an entry that is not in the tree, a decision that
//! replays differently, a report whose figures are wrong) is the finding a monitor exists
//! for; a log, mirror or gateway that cannot be reached only means the check was not made.
//! Errors carry a [`Failed`] marker where the difference is known (the fetchers mark what
//! they could not reach; the checks mark what they found wrong), and [`classify`] finds it
//! anywhere in an error's chain, inside a [`tlog::FetchError`] too.

use std::error::Error as StdError;
use std::fmt;

/// The kinds of failure a tool reports differently (the `sovereign` binary's exit codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// What was checked is wrong: the log, a proof, an entry, a replayed decision, a report.
    CheckFailed,
    /// The arguments or input files are wrong: nothing was checked.
    Usage,
    /// The log, mirror or gateway could not be reached, or answered that it is unavailable
    /// (a transport error, an HTTP 5xx): nothing was checked.
    Unreachable,
}

/// An error marked with its [`Failure`] kind.
#[derive(Debug)]
pub struct Failed {
    pub kind: Failure,
    message: String,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for Failed {}

impl Failed {
    pub fn new(kind: Failure, message: impl fmt::Display) -> Failed {
        Failed {
            kind,
            message: message.to_string(),
        }
    }
}

/// `message` as an error of a check that failed.
pub fn check_failed(message: impl fmt::Display) -> anyhow::Error {
    Failed::new(Failure::CheckFailed, message).into()
}

/// `message` as an error of wrong arguments or input.
pub fn usage(message: impl fmt::Display) -> anyhow::Error {
    Failed::new(Failure::Usage, message).into()
}

/// `message` as an error of a source that could not be reached.
pub fn unreachable(message: impl fmt::Display) -> anyhow::Error {
    Failed::new(Failure::Unreachable, message).into()
}

/// The first [`Failed`] marker in `error`'s chain (looking inside fetch errors too).
pub fn classify_std(error: &(dyn StdError + 'static)) -> Option<Failure> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(failed) = e.downcast_ref::<Failed>() {
            return Some(failed.kind);
        }
        // A fetch error is transparent: its inner error is not a `source`.
        if let Some(fetch) = e.downcast_ref::<tlog::FetchError>()
            && let Some(kind) = classify_std(fetch.get_ref())
        {
            return Some(kind);
        }
        cause = e.source();
    }
    None
}

/// The first [`Failed`] marker in `error`'s chain, if any.
pub fn classify(error: &anyhow::Error) -> Option<Failure> {
    error.chain().find_map(classify_std)
}

/// A failed run of the `tlog` verifier as one message (its `Display` already includes its
/// source, which `{:#}` would otherwise print twice), marked: a file that could not be
/// fetched is [`Failure::Unreachable`] unless its fetcher said otherwise; everything else
/// the verifier reports is a check that failed.
pub fn verify_failed(e: tlog::VerifyError) -> anyhow::Error {
    let kind = classify_std(&e).unwrap_or(match e {
        tlog::VerifyError::Fetch { .. } => Failure::Unreachable,
        _ => Failure::CheckFailed,
    });
    Failed::new(kind, e).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_is_found_through_context_and_fetch_errors() {
        let e = unreachable("connection refused").context("fetching checkpoint");
        assert_eq!(classify(&e), Some(Failure::Unreachable));

        let fetch = tlog::FetchError::new(Failed::new(Failure::CheckFailed, "not witnessed"));
        let verify = tlog::VerifyError::Fetch {
            path: "checkpoint".into(),
            source: fetch,
        };
        let e = verify_failed(verify);
        assert_eq!(classify(&e), Some(Failure::CheckFailed));
        assert!(e.to_string().contains("not witnessed"), "{e}");

        let plain_fetch = tlog::VerifyError::Fetch {
            path: "tile/0/000".into(),
            source: tlog::FetchError::new("disk on fire"),
        };
        assert_eq!(
            classify(&verify_failed(plain_fetch)),
            Some(Failure::Unreachable)
        );
        let missing = tlog::VerifyError::Missing {
            path: "tile/0/000".into(),
        };
        assert_eq!(
            classify(&verify_failed(missing)),
            Some(Failure::CheckFailed)
        );
        assert_eq!(classify(&anyhow::anyhow!("something else")), None);
    }
}
