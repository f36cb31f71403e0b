//! `algorithm`: custodian-released WebAssembly algorithms (issue 19), the part that does not
//! depend on the gateway.
//!
//! - [`manifest`]: what a release is, reads, outputs and may use; the custodian's signature
//!   will cover it;
//! - [`runtime`]: the sandbox that runs a release's module on the fields it was allowed, within
//!   its limits, and checks the output against the manifest (declared fields only, of their
//!   types and sizes, never a protected input value); its module documentation is the host
//!   interface modules are written against.
//!
//! Not yet built (issue 19 is open): the manifest in the custodian's signed statement, the
//! `POST /v1/algorithms/{name}/runs` route with its two Cedar decisions and its log entry,
//! batch runs, the monitors' reading of runs, the example and the demo. Nothing in the
//! gateway calls this crate yet.

pub mod error;
pub mod manifest;
pub mod runtime;

pub use error::{Limit, ManifestError, RunError};
pub use manifest::{Limits, Manifest, Output, OutputType, Read};
pub use runtime::{Input, Outcome, Runtime};

#[cfg(test)]
mod tests;
