//! Witness quorums on the monitor's side: a checkpoint is trusted only if, besides the log's
//! own signature, at least K of the witnesses the monitor names cosigned it
//! (C2SP tlog-cosignature), so the log cannot show this monitor a tree the witnesses, and
//! therefore other monitors, did not see.

use anyhow::{Context as _, anyhow, bail};
use tlog::TileFetcher;
use tlog::cosignature::{Cosignature, WitnessKey, WitnessPolicy};
use tlog::note::Verifier;
use tlog::verify::FetchError;

/// The policy of `--witness VKEY... --quorum K`: each VKEY a witness verifier key (C2SP vkey,
/// key type 0x04) or `@FILE` holding one. No witnesses and no quorum trusts the log's
/// signature alone; witnesses need a quorum, and a quorum needs as many witnesses.
pub fn load_witness_policy(
    witnesses: &[String],
    quorum: Option<usize>,
) -> anyhow::Result<WitnessPolicy> {
    read_witness_policy(witnesses, quorum).map_err(|e| crate::failure::usage(format!("{e:#}")))
}

fn read_witness_policy(
    witnesses: &[String],
    quorum: Option<usize>,
) -> anyhow::Result<WitnessPolicy> {
    let keys = witnesses
        .iter()
        .map(|arg| load_witness_key(arg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let quorum = match (keys.len(), quorum) {
        (0, None) => 0,
        (n, None) => bail!(
            "--witness given {n} time(s) without --quorum K: say how many of them must have cosigned"
        ),
        (_, Some(k)) => k,
    };
    if !keys.is_empty() && quorum == 0 {
        bail!(
            "--quorum 0 with --witness would trust the log's signature alone: give K of at least 1"
        );
    }
    if keys.is_empty() && quorum > 0 {
        bail!("--quorum {quorum} needs the witnesses' keys: give --witness VKEY for each");
    }
    WitnessPolicy::new(keys, quorum).map_err(|e| anyhow!("{e}"))
}

/// One `--witness` argument: a vkey, or `@FILE` holding one.
fn load_witness_key(arg: &str) -> anyhow::Result<WitnessKey> {
    let (text, source) = match arg.strip_prefix('@') {
        Some(file) => (
            std::fs::read_to_string(file)
                .with_context(|| format!("reading the witness key file {file}"))?,
            format!("the witness key in {file}"),
        ),
        None => (arg.to_string(), format!("--witness {arg}")),
    };
    WitnessKey::new(text.trim()).map_err(|e| {
        anyhow!("{source} is not a witness verifier key (name+keyid+base64 of key type 0x04, as `sovereign witness key` prints): {e}")
    })
}

/// Checks a checkpoint note against the log's key and the policy: the valid cosignatures
/// found (none with quorum 0).
pub fn check_quorum(
    note: &[u8],
    log: &Verifier,
    policy: &WitnessPolicy,
) -> anyhow::Result<Vec<Cosignature>> {
    policy
        .open(note, log)
        .map(|(_, cosignatures)| cosignatures)
        .map_err(|e| anyhow!("{e}"))
}

/// A log whose `checkpoint` is served only if it meets the witness policy: every check built
/// on [`TileFetcher`] (verify, replay, report) then refuses an unwitnessed checkpoint.
pub struct Witnessed<F> {
    inner: F,
    log: Verifier,
    policy: WitnessPolicy,
}

impl<F: TileFetcher> Witnessed<F> {
    /// `inner`, with its checkpoint checked against `policy`.
    pub fn new(inner: F, log: &Verifier, policy: &WitnessPolicy) -> Witnessed<F> {
        Witnessed {
            inner,
            log: log.clone(),
            policy: policy.clone(),
        }
    }
}

impl<F: TileFetcher> TileFetcher for Witnessed<F> {
    fn log_size_hint(&self) -> Option<u64> {
        self.inner.log_size_hint()
    }

    fn fetch(&self, path: &str) -> Result<Option<Vec<u8>>, FetchError> {
        let data = self.inner.fetch(path)?;
        if path == "checkpoint"
            && self.policy.quorum > 0
            && let Some(note) = &data
            && let Err(e) = self.policy.open(note, &self.log)
        {
            return Err(FetchError::new(crate::failure::Failed::new(
                crate::failure::Failure::CheckFailed,
                format!("the checkpoint is not witnessed: {e}"),
            )));
        }
        Ok(data)
    }
}

/// The log at `url` (see [`crate::open_log`]), its checkpoint checked against `policy`.
pub fn open_witnessed_log(
    url: &str,
    log: &Verifier,
    policy: &WitnessPolicy,
) -> anyhow::Result<Box<dyn TileFetcher>> {
    Ok(Box::new(Witnessed::new(crate::open_log(url)?, log, policy)))
}
