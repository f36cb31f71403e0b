//! A monitor of a Sovereign transparency log, as a library.
//!
//! A monitor trusts nothing but the log's verifier key and the checkpoint it kept from its
//! previous run. Everything else is fetched (over HTTP(S) from the gateway or any static
//! mirror, or from a local copy) and checked with the standalone `tlog` crate. A third-party
//! monitor gets, without the gateway or any of its stores:
//!
//! - [`entry`]: the log entry format (v1 and v2) as an outside reader sees it: the
//!   member-by-member check of every entry, and typed access, custody, alert and data
//!   event entries;
//! - [`verify()`]: the whole log checked (signed checkpoint, consistency with the checkpoint
//!   kept in a [`state`] file, every tile, bundle and entry), entries parsed in parallel;
//! - [`fetch`]: the log over HTTP(S), from a directory or a file:// URL;
//! - [`replay()`]: every logged access decided again with the policy set it names, and every
//!   policy activation's proofs checked (and, optionally, proven again with cvc5);
//! - [`proof`]: offline-verifiable inclusion proofs of one entry;
//! - [`report`]: a signed transparency report of a period, and its check;
//! - [`witness`]: quorums of witness cosignatures, required of every checkpoint read.
//!
//! Nothing here prints: long runs report through a [`Progress`] (any `FnMut(done, total)`
//! is one), results are values whose `Display` is the `sovereign` tool's report.
//!
//! ```no_run
//! let verifier = monitor::load_verifier("@log.vkey")?;
//! let log = monitor::open_log("https://gateway.example/log")?;
//! let verified = monitor::verify(&*log, &verifier, Some("monitor.state".as_ref()), &mut |done, total| {
//!     eprintln!("{done} of {total} entries checked");
//! })?;
//! println!("{} entries, consistent with the last run: {verified}", verified.checkpoint.size);
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod entry;
pub mod failure;
pub mod fetch;
pub mod key;
mod problems;
pub mod progress;
pub mod proof;
pub mod replay;
pub mod report;
pub mod runs;
pub mod search;
pub mod state;
pub mod subject;
pub mod verify;
pub mod witness;

pub use entry::{EntryInfo, check_entry};
pub use failure::{Failure, classify};
pub use fetch::open_log;
pub use key::{load_verifier, load_verifier_of};
pub use progress::{Progress, Silent};
pub use replay::replay;
pub use verify::{CheckpointLines, Verified, verify, verify_entries};
pub use witness::{check_quorum, load_witness_policy, open_witnessed_log};

/// An error of the `tlog` crate as one message. Its `Display` already includes what its
/// `source` says, so it is not kept as a cause (which `{:#}` would print a second time).
pub fn plain(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}
