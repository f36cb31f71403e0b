//! The Merkle tree's right edge and stored hashes, shared by the SQLite and PostgreSQL logs.
//!
//! Each entry's row holds the Merkle hashes its append created (Go sumdb's stored hashes for
//! record n: the leaf hash and the subtree roots it completes), so any stored hash is found
//! from its index ([`tlog::split_stored_hash_index`]). The integrating writer keeps the tree's
//! right edge (at most 64 hashes) in memory and never reads back while appending.

use std::time::SystemTime;

use tlog::note::Verifier;
use tlog::{Hash, HashReader};

use crate::Published;

/// What a log store keeps: entries and, per entry, the hashes its append created.
pub(crate) trait Store {
    /// Entries `start..end`, in order; fewer if the store holds fewer.
    fn entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, String>;

    /// The stored-hash column of each entry in `rows`, in the same order.
    fn hash_rows(&self, rows: &[u64]) -> Result<Vec<Vec<u8>>, String>;
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ReadError(pub(crate) String);

/// Stored hashes read from a store. The hash at (level L, index k) was created by the append
/// of entry ((k + 1) << L) - 1, and is the L-th hash of that entry's row.
pub(crate) struct StoredHashes<'s, S: ?Sized>(pub(crate) &'s S);

impl<S: Store + ?Sized> HashReader for StoredHashes<'_, S> {
    type Error = ReadError;

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, ReadError> {
        let places: Vec<(u64, usize)> = indexes
            .iter()
            .map(|&index| {
                let (level, k) = tlog::split_stored_hash_index(index);
                (((k + 1) << level) - 1, level as usize)
            })
            .collect();
        let rows: Vec<u64> = places.iter().map(|&(row, _)| row).collect();
        let blobs = self.0.hash_rows(&rows).map_err(ReadError)?;
        places
            .iter()
            .zip(blobs)
            .map(|(&(row, level), blob)| {
                let at = level * 32;
                blob.get(at..at + 32)
                    .and_then(|h| h.try_into().ok())
                    .ok_or_else(|| ReadError(format!("entry {row} lacks its level-{level} hash")))
            })
            .collect()
    }
}

/// Appends entry `n`: returns the hashes it adds to the store (at consecutive stored
/// indexes from `stored_hash_index(0, n)`), as Go's `tlog.StoredHashes` does, using the
/// right edge instead of reading earlier hashes back.
pub(crate) fn append_hashes(frontier: &mut Vec<Option<Hash>>, n: u64, entry: &[u8]) -> Vec<Hash> {
    let mut hash = tlog::leaf_hash(entry);
    let mut added = vec![hash];
    let mut level = 0;
    while (n >> level) & 1 == 1 {
        let left = frontier[level]
            .take()
            .expect("right edge holds every set bit");
        hash = tlog::node_hash(&left, &hash);
        added.push(hash);
        level += 1;
    }
    if frontier.len() <= level {
        frontier.resize(level + 1, None);
    }
    frontier[level] = Some(hash);
    added
}

/// The RFC 6962 root of a tree from its right edge: fold the complete subtrees from the
/// smallest up.
pub(crate) fn frontier_root(frontier: &[Option<Hash>], size: u64) -> Hash {
    let mut root: Option<Hash> = None;
    for (level, hash) in frontier.iter().enumerate() {
        if (size >> level) & 1 == 0 {
            continue;
        }
        let hash = hash.expect("right edge holds every set bit");
        root = Some(match root {
            None => hash,
            Some(right) => tlog::node_hash(&hash, &right),
        });
    }
    root.unwrap_or(tlog::EMPTY_TREE_HASH)
}

/// The right edge of the stored tree of `size` entries: O(log n) reads.
pub(crate) fn read_frontier(
    reader: &impl HashReader<Error = ReadError>,
    size: u64,
) -> Result<Vec<Option<Hash>>, ReadError> {
    let mut frontier = vec![None; 64];
    for (level, slot) in frontier.iter_mut().enumerate() {
        if (size >> level) & 1 == 1 {
            let index = tlog::stored_hash_index(level as u32, (size >> level) - 1);
            *slot = Some(reader.read_hashes(&[index])?[0]);
        }
    }
    Ok(frontier)
}

/// Checks a stored checkpoint note against the key and the stored tree of `size` entries:
/// it must verify, cover no more than is stored, and match the stored tree. Anything else
/// means the store was altered, and the log must not be served or signed.
pub(crate) fn check_checkpoint(
    note: Vec<u8>,
    verifier: &Verifier,
    size: u64,
    reader: &impl HashReader<Error = ReadError>,
) -> Result<Published, CheckpointProblem> {
    let checkpoint = tlog::open_checkpoint(&note, verifier).map_err(|e| {
        CheckpointProblem::Inconsistent(format!("the last checkpoint does not verify: {e}"))
    })?;
    if checkpoint.size > size {
        return Err(CheckpointProblem::Inconsistent(format!(
            "the last signed checkpoint covers {} entries but only {size} are stored",
            checkpoint.size
        )));
    }
    let root = tlog::tree_hash(checkpoint.size, reader)
        .map_err(|e| CheckpointProblem::Unreadable(e.to_string()))?;
    if root != checkpoint.hash {
        return Err(CheckpointProblem::Inconsistent(format!(
            "the stored tree of size {} does not match the signed checkpoint",
            checkpoint.size
        )));
    }
    Ok(Published {
        size: checkpoint.size,
        hash: checkpoint.hash,
        note,
        signed_at: SystemTime::now(),
    })
}

pub(crate) enum CheckpointProblem {
    /// The store holds something no honest log wrote.
    Inconsistent(String),
    /// The store could not be read.
    Unreadable(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn right_edge_hashes_match_tlog() {
        let mut stored: Vec<Hash> = Vec::new();
        let mut frontier = vec![None; 64];
        for n in 0..1000u64 {
            let entry = n.to_be_bytes();
            let expected = tlog::stored_hashes(n, &entry, &stored).unwrap();
            let ours = append_hashes(&mut frontier, n, &entry);
            assert_eq!(ours, expected, "entry {n}");
            stored.extend(ours);
            assert_eq!(
                frontier_root(&frontier, n + 1),
                tlog::tree_hash(n + 1, &stored).unwrap(),
                "root at size {}",
                n + 1
            );
        }
        assert_eq!(frontier_root(&[], 0), tlog::EMPTY_TREE_HASH);
    }
}
