//! Merkle tree math over stored hashes, after Go's `golang.org/x/mod/sumdb/tlog`.
//!
//! Every hash of the tree that ever becomes complete is stored exactly once, in a
//! dense linear order (Crosby and Wallach, "Efficient Data Structures for
//! Tamper-Evident Logging", section 3.3): appending record `n` stores its leaf hash
//! followed by the hashes of the subtrees that record completes. The functions here
//! are pure: they compute which stored hashes they need, ask a [`HashReader`] for
//! them in one call, and do the arithmetic. No I/O happens here.
//!
//! Proofs are RFC 6962 / RFC 9162 section 2.1 audit paths and consistency proofs.

use std::error::Error as StdError;

use thiserror::Error;

use crate::hash::{EMPTY_TREE_HASH, Hash, leaf_hash, node_hash};

/// A boxed error from a [`HashReader`] or tile reader.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Errors of the tree math.
#[derive(Debug, Error)]
pub enum TreeError {
    /// A record index that is not inside the tree.
    #[error("record {index} is not in a tree of size {size}")]
    IndexOutOfRange {
        /// The record index asked for.
        index: u64,
        /// The size of the tree.
        size: u64,
    },
    /// A consistency proof between sizes that do not satisfy 1 <= old <= new.
    #[error("no consistency proof between tree sizes {old} and {new} (need 1 <= old <= new)")]
    InvalidTreeSizes {
        /// The older (smaller) tree size.
        old: u64,
        /// The newer tree size.
        new: u64,
    },
    /// A proof that does not prove what it claims.
    #[error("invalid proof: {0}")]
    InvalidProof(&'static str),
    /// The hash reader failed.
    #[error("reading stored hashes: {0}")]
    Read(#[source] BoxError),
    /// The hash reader broke its contract.
    #[error("hash reader returned {got} hashes for {want} indexes")]
    ShortRead {
        /// How many hashes were asked for.
        want: usize,
        /// How many came back.
        got: usize,
    },
}

/// Reads stored hashes by their stored hash index (see [`stored_hash_index`]).
pub trait HashReader {
    /// The reader's own error type.
    type Error: StdError + Send + Sync + 'static;

    /// Returns the hashes at the given stored hash indexes, in the same order and
    /// of the same length as `indexes`, or an error. Callers pass indexes in
    /// increasing order where they can, so readers may rely on that for speed.
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, Self::Error>;
}

impl<R: HashReader + ?Sized> HashReader for &R {
    type Error = R::Error;
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, Self::Error> {
        (**self).read_hashes(indexes)
    }
}

/// The error of the in-memory reader over a slice of stored hashes.
#[derive(Debug, Error)]
#[error("stored hash {index} is not present (only {len} are stored)")]
pub struct MissingHash {
    /// The stored hash index asked for.
    pub index: u64,
    /// How many hashes are stored.
    pub len: usize,
}

/// A slice holding stored hashes at their stored hash index is a reader: the
/// simplest possible storage, used by tests and in-memory logs.
impl HashReader for [Hash] {
    type Error = MissingHash;
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, MissingHash> {
        indexes
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| self.get(i))
                    .copied()
                    .ok_or(MissingHash {
                        index: i,
                        len: self.len(),
                    })
            })
            .collect()
    }
}

impl HashReader for Vec<Hash> {
    type Error = MissingHash;
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, MissingHash> {
        self.as_slice().read_hashes(indexes)
    }
}

/// Calls the reader and checks that it kept its contract.
fn read<R: HashReader + ?Sized>(r: &R, indexes: &[u64]) -> Result<Vec<Hash>, TreeError> {
    let hashes = r
        .read_hashes(indexes)
        .map_err(|e| TreeError::Read(Box::new(e)))?;
    if hashes.len() != indexes.len() {
        return Err(TreeError::ShortRead {
            want: indexes.len(),
            got: hashes.len(),
        });
    }
    Ok(hashes)
}

/// Returns `(k, log2 k)` for `k` the largest power of two smaller than `n`
/// (for `n >= 2`; `(1, 0)` for smaller `n`). This is RFC 6962's split point.
fn maxpow2(n: u64) -> (u64, u32) {
    if n <= 2 {
        return (1, 0);
    }
    let l = 63 - (n - 1).leading_zeros();
    (1 << l, l)
}

/// Maps the tree coordinates (`level`, `n`), the `n`th hash at height `level`
/// (0 = leaves), to its position in the dense stored hash order.
pub fn stored_hash_index(level: u32, n: u64) -> u64 {
    // Level L's nth hash is written right after level L+1's (2n+1)th hash, so walk
    // down to the level-0 hash stored just before it...
    let n0 = (n << level) + ((1u64 << level) - 1);
    // ...where level 0's nth hash sits at n + n/2 + n/4 + ... = 2n - popcount(n);
    // then add back one slot per level climbed.
    2 * n0 - u64::from(n0.count_ones()) + u64::from(level)
}

/// The inverse of [`stored_hash_index`]: returns `(level, n)`.
pub fn split_stored_hash_index(index: u64) -> (u32, u64) {
    // stored_hash_index(0, n) < 2n, so the record that stored `index` is in
    // [index/2, index/2 + log2(index)]: start low and walk forward.
    let mut n = index / 2;
    let mut index_n = stored_hash_index(0, n);
    debug_assert!(index_n <= index);
    loop {
        // Record n stores 1 + trailing_zeros(n+1) hashes.
        let next = index_n + 1 + u64::from((n + 1).trailing_zeros());
        if next > index {
            break;
        }
        n += 1;
        index_n = next;
    }
    // The hash was stored with record n: it is one of (0, n), (1, n/2), (2, n/4), ...
    let level = (index - index_n) as u32;
    (level, n >> level)
}

/// The number of stored hashes of a tree with `n` records.
pub fn stored_hash_count(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    // The hashes up to the last leaf hash, plus those of the subtrees it completes.
    stored_hash_index(0, n - 1) + 1 + u64::from((n - 1).trailing_ones())
}

/// Returns the hashes to store, starting at `stored_hash_index(0, n)`, when
/// appending record `n` with the given data: its leaf hash followed by the hashes
/// of every subtree it completes. Reads at most log2(n) earlier hashes from `r`.
pub fn stored_hashes<R: HashReader + ?Sized>(
    n: u64,
    data: &[u8],
    r: &R,
) -> Result<Vec<Hash>, TreeError> {
    stored_hashes_for_record_hash(n, leaf_hash(data), r)
}

/// Like [`stored_hashes`], given the record's leaf hash instead of its data.
pub fn stored_hashes_for_record_hash<R: HashReader + ?Sized>(
    n: u64,
    h: Hash,
    r: &R,
) -> Result<Vec<Hash>, TreeError> {
    // Each trailing 1 bit of n completes a subtree whose left sibling is stored.
    let m = (n + 1).trailing_zeros();
    // Sorted order: the left siblings from the largest (highest level) down.
    let indexes: Vec<u64> = (0..m)
        .rev()
        .map(|i| stored_hash_index(i, (n >> i) - 1))
        .collect();
    let old = read(r, &indexes)?;
    let mut hashes = Vec::with_capacity(1 + m as usize);
    let mut h = h;
    hashes.push(h);
    for left in old.iter().rev() {
        h = node_hash(left, &h);
        hashes.push(h);
    }
    Ok(hashes)
}

/// The root hash of the tree with `n` records, from at most 1 + log2(n) stored
/// hashes read in one call. The empty tree's hash is SHA-256 of the empty string.
pub fn tree_hash<R: HashReader + ?Sized>(n: u64, r: &R) -> Result<Hash, TreeError> {
    if n == 0 {
        return Ok(EMPTY_TREE_HASH);
    }
    let mut indexes = Vec::new();
    sub_tree_index(0, n, &mut indexes);
    let hashes = read(r, &indexes)?;
    let (h, rest) = sub_tree_hash(0, n, &hashes);
    debug_assert!(rest.is_empty());
    Ok(h)
}

/// Appends the stored hash indexes needed to compute the hash of the records
/// `[lo, hi)`: the complete subtrees that tile the range, largest first.
pub(crate) fn sub_tree_index(mut lo: u64, hi: u64, need: &mut Vec<u64>) {
    while lo < hi {
        let (k, level) = maxpow2(hi - lo + 1);
        debug_assert_eq!(lo & (k - 1), 0, "bad math in sub_tree_index");
        need.push(stored_hash_index(level, lo >> level));
        lo += k;
    }
}

/// Computes the hash of records `[lo, hi)` from the hashes named by
/// [`sub_tree_index`], returning the unused rest of `hashes`.
fn sub_tree_hash(mut lo: u64, hi: u64, hashes: &[Hash]) -> (Hash, &[Hash]) {
    // The range is a sequence of complete subtrees of decreasing size; the hash is
    // that sequence folded from the right.
    let mut num_tree = 0;
    while lo < hi {
        let (k, _) = maxpow2(hi - lo + 1);
        num_tree += 1;
        lo += k;
    }
    let mut h = hashes[num_tree - 1];
    for left in hashes[..num_tree - 1].iter().rev() {
        h = node_hash(left, &h);
    }
    (h, &hashes[num_tree..])
}

/// Returns the inclusion proof (RFC 6962 audit path, leaf's sibling first) that
/// record `n` is in the tree of size `t`.
pub fn prove_record<R: HashReader + ?Sized>(t: u64, n: u64, r: &R) -> Result<Vec<Hash>, TreeError> {
    if n >= t {
        return Err(TreeError::IndexOutOfRange { index: n, size: t });
    }
    let mut indexes = Vec::new();
    leaf_proof_index(0, t, n, &mut indexes);
    if indexes.is_empty() {
        return Ok(Vec::new());
    }
    let hashes = read(r, &indexes)?;
    let mut proof = Vec::with_capacity(64);
    let rest = leaf_proof(0, t, n, &hashes, &mut proof);
    debug_assert!(rest.is_empty());
    Ok(proof)
}

/// Appends the indexes needed for the proof that leaf `n` is in records `[lo, hi)`.
fn leaf_proof_index(lo: u64, hi: u64, n: u64, need: &mut Vec<u64>) {
    debug_assert!(lo <= n && n < hi);
    if lo + 1 == hi {
        return;
    }
    let (k, _) = maxpow2(hi - lo);
    if n < lo + k {
        leaf_proof_index(lo, lo + k, n, need);
        sub_tree_index(lo + k, hi, need);
    } else {
        sub_tree_index(lo, lo + k, need);
        leaf_proof_index(lo + k, hi, n, need);
    }
}

/// Builds the proof that leaf `n` is in records `[lo, hi)` into `proof`, from the
/// hashes named by [`leaf_proof_index`]; returns the unused rest of `hashes`.
fn leaf_proof<'a>(
    lo: u64,
    hi: u64,
    n: u64,
    hashes: &'a [Hash],
    proof: &mut Vec<Hash>,
) -> &'a [Hash] {
    if lo + 1 == hi {
        // The verifier knows the leaf hash; nothing to send.
        return hashes;
    }
    // Walk down towards n, recording the hash of the side not taken. The deeper
    // hashes come first in the proof, so recurse before pushing.
    let (k, _) = maxpow2(hi - lo);
    if n < lo + k {
        let hashes = leaf_proof(lo, lo + k, n, hashes, proof);
        let (th, hashes) = sub_tree_hash(lo + k, hi, hashes);
        proof.push(th);
        hashes
    } else {
        let (th, hashes) = sub_tree_hash(lo, lo + k, hashes);
        let hashes = leaf_proof(lo + k, hi, n, hashes, proof);
        proof.push(th);
        hashes
    }
}

/// Checks that `proof` proves that the tree of size `t` with root hash `th` has
/// record `n` with leaf hash `h`.
pub fn check_record(proof: &[Hash], t: u64, th: &Hash, n: u64, h: &Hash) -> Result<(), TreeError> {
    if n >= t {
        return Err(TreeError::IndexOutOfRange { index: n, size: t });
    }
    let computed = run_record_proof(proof, 0, t, n, h)?;
    if computed != *th {
        return Err(TreeError::InvalidProof(
            "inclusion proof does not lead to the tree hash",
        ));
    }
    Ok(())
}

/// Runs the proof that leaf `n` is in records `[lo, hi)`, returning the implied
/// hash of that range.
fn run_record_proof(p: &[Hash], lo: u64, hi: u64, n: u64, leaf: &Hash) -> Result<Hash, TreeError> {
    if lo + 1 == hi {
        // The proof must not carry unused hashes.
        if !p.is_empty() {
            return Err(TreeError::InvalidProof(
                "inclusion proof has too many hashes",
            ));
        }
        return Ok(*leaf);
    }
    let Some((last, rest)) = p.split_last() else {
        return Err(TreeError::InvalidProof(
            "inclusion proof has too few hashes",
        ));
    };
    let (k, _) = maxpow2(hi - lo);
    if n < lo + k {
        let th = run_record_proof(rest, lo, lo + k, n, leaf)?;
        Ok(node_hash(&th, last))
    } else {
        let th = run_record_proof(rest, lo + k, hi, n, leaf)?;
        Ok(node_hash(last, &th))
    }
}

/// Returns the consistency proof that the tree of size `t` contains, as a prefix,
/// the tree of size `n` (1 <= n <= t).
pub fn prove_tree<R: HashReader + ?Sized>(t: u64, n: u64, r: &R) -> Result<Vec<Hash>, TreeError> {
    if n < 1 || n > t {
        return Err(TreeError::InvalidTreeSizes { old: n, new: t });
    }
    let mut indexes = Vec::new();
    tree_proof_index(0, t, n, &mut indexes);
    if indexes.is_empty() {
        return Ok(Vec::new());
    }
    let hashes = read(r, &indexes)?;
    let mut proof = Vec::with_capacity(64);
    let rest = tree_proof(0, t, n, &hashes, &mut proof);
    debug_assert!(rest.is_empty());
    Ok(proof)
}

/// Appends the indexes needed for the consistency sub-proof of records `[lo, hi)`.
fn tree_proof_index(lo: u64, hi: u64, n: u64, need: &mut Vec<u64>) {
    debug_assert!(lo < n && n <= hi);
    if n == hi {
        // Common ground. At lo == 0 this is the old tree itself, which the
        // verifier knows; otherwise send the subtree hash.
        if lo != 0 {
            sub_tree_index(lo, hi, need);
        }
        return;
    }
    let (k, _) = maxpow2(hi - lo);
    if n <= lo + k {
        tree_proof_index(lo, lo + k, n, need);
        sub_tree_index(lo + k, hi, need);
    } else {
        sub_tree_index(lo, lo + k, need);
        tree_proof_index(lo + k, hi, n, need);
    }
}

/// Builds the consistency sub-proof of records `[lo, hi)` into `proof`.
fn tree_proof<'a>(
    lo: u64,
    hi: u64,
    n: u64,
    hashes: &'a [Hash],
    proof: &mut Vec<Hash>,
) -> &'a [Hash] {
    if n == hi {
        if lo == 0 {
            return hashes;
        }
        let (th, hashes) = sub_tree_hash(lo, hi, hashes);
        proof.push(th);
        return hashes;
    }
    let (k, _) = maxpow2(hi - lo);
    if n <= lo + k {
        let hashes = tree_proof(lo, lo + k, n, hashes, proof);
        let (th, hashes) = sub_tree_hash(lo + k, hi, hashes);
        proof.push(th);
        hashes
    } else {
        let (th, hashes) = sub_tree_hash(lo, lo + k, hashes);
        let hashes = tree_proof(lo + k, hi, n, hashes, proof);
        proof.push(th);
        hashes
    }
}

/// Checks that `proof` proves that the tree of size `t` with root hash `th`
/// contains as a prefix the tree of size `n` with root hash `h`.
pub fn check_tree(proof: &[Hash], t: u64, th: &Hash, n: u64, h: &Hash) -> Result<(), TreeError> {
    if n < 1 || n > t {
        return Err(TreeError::InvalidTreeSizes { old: n, new: t });
    }
    let (old, new) = run_tree_proof(proof, 0, t, n, h)?;
    if old != *h {
        return Err(TreeError::InvalidProof(
            "consistency proof does not lead to the old tree hash",
        ));
    }
    if new != *th {
        return Err(TreeError::InvalidProof(
            "consistency proof does not lead to the new tree hash",
        ));
    }
    Ok(())
}

/// Runs the consistency sub-proof of records `[lo, hi)`, where `old` is the hash of
/// the old tree of size `n`; returns the implied hashes of that range in the old
/// and in the new tree.
fn run_tree_proof(
    p: &[Hash],
    lo: u64,
    hi: u64,
    n: u64,
    old: &Hash,
) -> Result<(Hash, Hash), TreeError> {
    if n == hi {
        if lo == 0 {
            if !p.is_empty() {
                return Err(TreeError::InvalidProof(
                    "consistency proof has too many hashes",
                ));
            }
            return Ok((*old, *old));
        }
        return match p {
            [h] => Ok((*h, *h)),
            [] => Err(TreeError::InvalidProof(
                "consistency proof has too few hashes",
            )),
            _ => Err(TreeError::InvalidProof(
                "consistency proof has too many hashes",
            )),
        };
    }
    let Some((last, rest)) = p.split_last() else {
        return Err(TreeError::InvalidProof(
            "consistency proof has too few hashes",
        ));
    };
    let (k, _) = maxpow2(hi - lo);
    if n <= lo + k {
        let (oh, th) = run_tree_proof(rest, lo, lo + k, n, old)?;
        Ok((oh, node_hash(&th, last)))
    } else {
        let (oh, th) = run_tree_proof(rest, lo + k, hi, n, old)?;
        Ok((node_hash(last, &oh), node_hash(last, &th)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds the stored hashes of a tree whose record i is `i.to_be_bytes()`.
    fn build(n: u64) -> Vec<Hash> {
        let mut store: Vec<Hash> = Vec::new();
        for i in 0..n {
            let hs = stored_hashes(i, &i.to_be_bytes(), &store).unwrap();
            assert_eq!(store.len() as u64, stored_hash_index(0, i));
            store.extend(hs);
            assert_eq!(store.len() as u64, stored_hash_count(i + 1));
        }
        store
    }

    /// The RFC 6962 definition of the tree hash, straight from the text.
    fn reference_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => EMPTY_TREE_HASH,
            1 => leaves[0],
            n => {
                let (k, _) = maxpow2(n as u64);
                let k = k as usize;
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    #[test]
    fn maxpow2_is_the_rfc_split() {
        for (n, k) in [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (1000, 512)] {
            assert_eq!(maxpow2(n).0, k, "n={n}");
        }
        assert_eq!(maxpow2((1 << 63) + 1), (1 << 63, 63));
    }

    #[test]
    fn stored_hash_index_matches_go_layout() {
        // The first few stored hashes: leaf 0, leaf 1, node(0..2), leaf 2, leaf 3,
        // node(2..4), node(0..4), leaf 4.
        let expect = [
            (0, 0),
            (0, 1),
            (1, 0),
            (0, 2),
            (0, 3),
            (1, 1),
            (2, 0),
            (0, 4),
        ];
        for (i, &(level, n)) in expect.iter().enumerate() {
            assert_eq!(stored_hash_index(level, n), i as u64);
            assert_eq!(split_stored_hash_index(i as u64), (level, n));
        }
        for index in 0..10_000 {
            let (level, n) = split_stored_hash_index(index);
            assert_eq!(stored_hash_index(level, n), index);
        }
        // Far out, too.
        for index in [1u64 << 40, (1 << 50) + 12345, (1 << 61) - 1] {
            let (level, n) = split_stored_hash_index(index);
            assert_eq!(stored_hash_index(level, n), index);
        }
    }

    #[test]
    fn tree_hash_matches_reference_for_every_size() {
        let store = build(70);
        let leaves: Vec<Hash> = (0..70u64).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for n in 0..=70u64 {
            assert_eq!(
                tree_hash(n, &store).unwrap(),
                reference_root(&leaves[..n as usize]),
                "n={n}"
            );
        }
    }

    #[test]
    fn every_inclusion_proof_verifies_and_tampering_fails() {
        let store = build(40);
        for t in 1..=40u64 {
            let th = tree_hash(t, &store).unwrap();
            for n in 0..t {
                let h = leaf_hash(&n.to_be_bytes());
                let p = prove_record(t, n, &store).unwrap();
                check_record(&p, t, &th, n, &h).unwrap();
                // Wrong leaf, wrong index, wrong size, flipped bit, truncated, extended.
                assert!(check_record(&p, t, &th, n, &leaf_hash(b"other")).is_err());
                if t > 1 {
                    assert!(check_record(&p, t, &th, (n + 1) % t, &h).is_err());
                }
                // (The same path can be valid for another tree size of the same
                // shape, e.g. leaf 0 of sizes 3 and 4, so size is not tampered here.)
                for i in 0..p.len() {
                    let mut bad = p.clone();
                    bad[i][0] ^= 1;
                    assert!(check_record(&bad, t, &th, n, &h).is_err());
                }
                if !p.is_empty() {
                    assert!(check_record(&p[..p.len() - 1], t, &th, n, &h).is_err());
                }
                let mut longer = p.clone();
                longer.push(th);
                assert!(check_record(&longer, t, &th, n, &h).is_err());
            }
            assert!(matches!(
                prove_record(t, t, &store),
                Err(TreeError::IndexOutOfRange { .. })
            ));
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_tampering_fails() {
        let store = build(40);
        for t in 1..=40u64 {
            let th = tree_hash(t, &store).unwrap();
            for n in 1..=t {
                let h = tree_hash(n, &store).unwrap();
                let p = prove_tree(t, n, &store).unwrap();
                check_tree(&p, t, &th, n, &h).unwrap();
                assert!(check_tree(&p, t, &h, n, &th).is_err() || h == th);
                for i in 0..p.len() {
                    let mut bad = p.clone();
                    bad[i][31] ^= 0x80;
                    assert!(check_tree(&bad, t, &th, n, &h).is_err());
                }
                let mut longer = p.clone();
                longer.push(h);
                assert!(check_tree(&longer, t, &th, n, &h).is_err());
            }
        }
        assert!(matches!(
            prove_tree(5, 0, &store),
            Err(TreeError::InvalidTreeSizes { .. })
        ));
        assert!(matches!(
            check_tree(&[], 5, &EMPTY_TREE_HASH, 6, &EMPTY_TREE_HASH),
            Err(TreeError::InvalidTreeSizes { .. })
        ));
    }

    #[test]
    fn reader_errors_and_short_reads_are_reported() {
        let store = build(3);
        let err = tree_hash(8, &store).unwrap_err();
        assert!(matches!(err, TreeError::Read(_)), "{err}");
        assert!(err.to_string().contains("not present"), "{err}");

        struct Short;
        impl HashReader for Short {
            type Error = MissingHash;
            fn read_hashes(&self, _: &[u64]) -> Result<Vec<Hash>, MissingHash> {
                Ok(Vec::new())
            }
        }
        assert!(matches!(
            tree_hash(5, &Short),
            Err(TreeError::ShortRead { want: 2, got: 0 })
        ));
    }
}
