//! The monitor's trust anchor: the log's verifier key, as the operator gives it.

use std::fs;
use std::path::Path;

use anyhow::{Context as _, anyhow, bail};
use tlog::note::Verifier;

/// Parses `--key`: a verifier key string, or `@FILE` holding one.
pub fn load_verifier(arg: &str) -> anyhow::Result<Verifier> {
    load_verifier_of("--key", arg)
}

/// Parses the verifier key given with `flag`: a key string, or `@FILE` holding one.
/// A key that cannot be read is a usage error ([`crate::Failure::Usage`]).
pub fn load_verifier_of(flag: &str, arg: &str) -> anyhow::Result<Verifier> {
    read_verifier(flag, arg).map_err(|e| crate::failure::usage(format!("{e:#}")))
}

fn read_verifier(flag: &str, arg: &str) -> anyhow::Result<Verifier> {
    let (text, source) = match arg.strip_prefix('@') {
        Some(file) => (
            fs::read_to_string(file).with_context(|| format!("reading the key file {file}"))?,
            format!("the key in {file}"),
        ),
        // A key file named without its `@` is an easy slip: say so rather than only
        // that the name is not a key.
        None if Path::new(arg).is_file() => {
            bail!("{flag} {arg}: to read the key from that file, write {flag} @{arg}")
        }
        None => (arg.to_string(), flag.to_string()),
    };
    let text = text.trim();
    if text.starts_with("PRIVATE+KEY+") {
        bail!(
            "{source} is a private signer key; give the verifier key (`sovereign audit key` prints it, the gateway serves it at /log/key)"
        );
    }
    Verifier::new(text)
        .map_err(|e| anyhow!("{source} is not a signed-note verifier key (name+keyid+base64): {e}"))
}
