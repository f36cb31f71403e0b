//! Inclusion proofs of one entry (C2SP tlog-proof), checkable offline by anyone with the
//! log's verifier key.

use anyhow::Context as _;
use tlog::checkpoint::{Checkpoint, open_checkpoint};
use tlog::note::Verifier;
use tlog::proof::TlogProof;
use tlog::{
    FetcherTileReader, TileFetcher, check_record, leaf_hash, prove_record, tile_hash_reader,
};

use crate::failure::{check_failed, usage};
use crate::fetch::{fetch_entry, unverified_checkpoint};

/// An entry and the proof that it is in the log.
pub struct Proven {
    pub proof: TlogProof,
    /// The entry, as served in its entry bundle.
    pub entry: Vec<u8>,
    /// The checkpoint the proof is against (its signature checked only with a verifier).
    pub checkpoint: Checkpoint,
}

/// Proves that entry `index` is in the log's current checkpoint. With `verifier`, the
/// checkpoint's signature is checked too; without, whoever checks the proof checks it.
pub fn prove(
    log: &dyn TileFetcher,
    index: u64,
    verifier: Option<&Verifier>,
) -> anyhow::Result<Proven> {
    let note = log
        .fetch("checkpoint")
        .context("fetching checkpoint")?
        .ok_or_else(|| check_failed("the log serves no checkpoint"))?;
    let checkpoint = match verifier {
        Some(v) => open_checkpoint(&note, v).map_err(check_failed)?,
        None => unverified_checkpoint(&note)?,
    };
    if index >= checkpoint.size {
        return Err(usage(format!(
            "entry {index} is not in the log: its checkpoint has {} entries",
            checkpoint.size
        )));
    }
    // Every tile read here is authenticated against the checkpoint's root.
    let reader = tile_hash_reader(checkpoint.size, checkpoint.hash, FetcherTileReader(log));
    let hashes = prove_record(checkpoint.size, index, &reader).map_err(|e| {
        // A tile that could not be fetched is not a proof that failed.
        let kind = crate::failure::classify_std(&e).unwrap_or(crate::Failure::CheckFailed);
        anyhow::Error::new(crate::failure::Failed::new(
            kind,
            format!("computing the inclusion proof of entry {index}: {e}"),
        ))
    })?;
    let entry = fetch_entry(log, checkpoint.size, index)?;
    check_record(
        &hashes,
        checkpoint.size,
        &checkpoint.hash,
        index,
        &leaf_hash(&entry),
    )
    .map_err(|e| {
        check_failed(format!(
            "entry {index} as served in its entry bundle is not the one in the tree: {e}"
        ))
    })?;
    Ok(Proven {
        proof: TlogProof {
            extra: None,
            index,
            hashes,
            checkpoint: note,
        },
        entry,
        checkpoint,
    })
}
