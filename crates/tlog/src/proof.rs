//! Offline-verifiable inclusion proofs, per
//! [C2SP tlog-proof](https://c2sp.org/tlog-proof):
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! [extra <base64>]
//! index <N>
//! <base64 hash>          (zero or more: the inclusion proof, leaf's sibling first)
//!
//! <signed checkpoint, verbatim>
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use thiserror::Error;

use crate::checkpoint::{Checkpoint, CheckpointError, open_checkpoint};
use crate::hash::{Hash, hash_from_base64, hash_to_base64, leaf_hash};
use crate::note::{MAX_NOTE_SIZE, Verifier};
use crate::tree::{TreeError, check_record};

/// The first line of a proof.
pub const HEADER: &str = "c2sp.org/tlog-proof@v1";

/// The most proof hashes a tree of at most 2^64 entries can need.
const MAX_PROOF_HASHES: usize = 64;

/// A parsed proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlogProof {
    /// Opaque, unauthenticated application data.
    pub extra: Option<Vec<u8>>,
    /// The entry's index in the log.
    pub index: u64,
    /// The inclusion proof, from the leaf's sibling up.
    pub hashes: Vec<Hash>,
    /// The signed checkpoint note, verbatim.
    pub checkpoint: Vec<u8>,
}

/// Errors about proofs.
#[derive(Debug, Error)]
pub enum ProofError {
    /// Not of the tlog-proof form.
    #[error("malformed proof: {0}")]
    Malformed(&'static str),
    /// The checkpoint did not open or parse.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The index is not inside the checkpointed tree.
    #[error("entry {index} is not in the checkpointed tree of size {size}")]
    IndexOutOfRange {
        /// The proof's index.
        index: u64,
        /// The checkpoint's tree size.
        size: u64,
    },
    /// The inclusion proof does not prove the entry is in the checkpointed tree.
    #[error("entry {index} is not proven in the tree of size {size}: {source}")]
    Inclusion {
        /// The proof's index.
        index: u64,
        /// The checkpoint's tree size.
        size: u64,
        /// What failed.
        #[source]
        source: TreeError,
    },
}

impl TlogProof {
    /// The proof's text.
    pub fn encode(&self) -> Vec<u8> {
        let mut s = String::new();
        s.push_str(HEADER);
        s.push('\n');
        if let Some(extra) = &self.extra {
            s.push_str("extra ");
            s.push_str(&STANDARD.encode(extra));
            s.push('\n');
        }
        s.push_str(&format!("index {}\n", self.index));
        for h in &self.hashes {
            s.push_str(&hash_to_base64(h));
            s.push('\n');
        }
        s.push('\n');
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.checkpoint);
        out
    }

    /// Parses a proof strictly. The checkpoint is not checked here; see [`verify`].
    pub fn parse(data: &[u8]) -> Result<TlogProof, ProofError> {
        if data.len() > MAX_NOTE_SIZE + 64 * 64 {
            return Err(ProofError::Malformed("too large"));
        }
        // Every line before the checkpoint is non-empty, so the first blank line
        // ends the header and proof lines (the checkpoint has blank lines of its own).
        let split = find(data, b"\n\n")
            .ok_or(ProofError::Malformed("no blank line before the checkpoint"))?;
        let (head, checkpoint) = (&data[..split], &data[split + 2..]);
        if checkpoint.is_empty() {
            return Err(ProofError::Malformed("no checkpoint"));
        }
        let head =
            std::str::from_utf8(head).map_err(|_| ProofError::Malformed("not valid UTF-8"))?;
        let mut lines = head.split('\n').peekable();
        if lines.next() != Some(HEADER) {
            return Err(ProofError::Malformed(
                "first line is not c2sp.org/tlog-proof@v1",
            ));
        }
        let mut extra = None;
        if let Some(b64) = lines.peek().and_then(|l| l.strip_prefix("extra ")) {
            extra = Some(
                STANDARD
                    .decode(b64)
                    .map_err(|_| ProofError::Malformed("extra data is not base64"))?,
            );
            lines.next();
        }
        let index = lines
            .next()
            .and_then(|l| l.strip_prefix("index "))
            .ok_or(ProofError::Malformed("missing index line"))?;
        let index = parse_decimal(index).ok_or(ProofError::Malformed(
            "index is not a decimal number without leading zeros",
        ))?;
        let mut hashes = Vec::new();
        for line in lines {
            if hashes.len() == MAX_PROOF_HASHES {
                return Err(ProofError::Malformed("more than 64 proof hashes"));
            }
            hashes.push(hash_from_base64(line).ok_or(ProofError::Malformed(
                "proof line is not the base64 of 32 bytes",
            ))?);
        }
        Ok(TlogProof {
            extra,
            index,
            hashes,
            checkpoint: checkpoint.to_vec(),
        })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

/// Verifies a proof: the checkpoint is signed by `verifier` (for its own origin),
/// and `leaf_data` is the entry at `proof.index` of the checkpointed tree.
/// Returns the checkpoint. The `extra` data is not authenticated by this.
pub fn verify(
    proof: &TlogProof,
    verifier: &Verifier,
    leaf_data: &[u8],
) -> Result<Checkpoint, ProofError> {
    let checkpoint = open_checkpoint(&proof.checkpoint, verifier)?;
    if proof.index >= checkpoint.size {
        return Err(ProofError::IndexOutOfRange {
            index: proof.index,
            size: checkpoint.size,
        });
    }
    check_record(
        &proof.hashes,
        checkpoint.size,
        &checkpoint.hash,
        proof.index,
        &leaf_hash(leaf_data),
    )
    .map_err(|source| ProofError::Inclusion {
        index: proof.index,
        size: checkpoint.size,
        source,
    })?;
    Ok(checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::sign_checkpoint;
    use crate::note::Signer;
    use crate::tree::{prove_record, stored_hashes, tree_hash};

    fn fixture() -> (Signer, TlogProof, Vec<u8>) {
        let signer = Signer::from_ed25519_seed("example.com/fancylog", &[3; 32]).unwrap();
        let mut store: Vec<Hash> = Vec::new();
        for i in 0..11u64 {
            let hs = stored_hashes(i, format!("entry {i}").as_bytes(), &store).unwrap();
            store.extend(hs);
        }
        let cp = Checkpoint {
            origin: "example.com/fancylog".to_string(),
            size: 11,
            hash: tree_hash(11, &store).unwrap(),
            extensions: Vec::new(),
        };
        let proof = TlogProof {
            extra: Some(b"age-v1.2.1-darwin-arm64.tar.gz".to_vec()),
            index: 7,
            hashes: prove_record(11, 7, &store).unwrap(),
            checkpoint: sign_checkpoint(&cp, &signer).unwrap(),
        };
        (signer, proof, b"entry 7".to_vec())
    }

    #[test]
    fn encode_parse_verify() {
        let (signer, proof, leaf) = fixture();
        let text = proof.encode();
        let s = String::from_utf8(text.clone()).unwrap();
        assert!(s.starts_with(
            "c2sp.org/tlog-proof@v1\nextra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6\nindex 7\n"
        ));
        assert!(s.contains("\n\nexample.com/fancylog\n11\n"));
        let parsed = TlogProof::parse(&text).unwrap();
        assert_eq!(parsed, proof);
        let cp = verify(&parsed, &signer.verifier(), &leaf).unwrap();
        assert_eq!(cp.size, 11);

        assert!(matches!(
            verify(&parsed, &signer.verifier(), b"entry 6"),
            Err(ProofError::Inclusion { .. })
        ));
        let mut wrong_index = parsed.clone();
        wrong_index.index = 6;
        assert!(verify(&wrong_index, &signer.verifier(), &leaf).is_err());
        wrong_index.index = 11;
        assert!(matches!(
            verify(&wrong_index, &signer.verifier(), &leaf),
            Err(ProofError::IndexOutOfRange { .. })
        ));
        let other = Signer::from_ed25519_seed("example.com/fancylog", &[4; 32]).unwrap();
        assert!(matches!(
            verify(&parsed, &other.verifier(), &leaf),
            Err(ProofError::Checkpoint(_))
        ));

        let no_extra = TlogProof {
            extra: None,
            ..proof
        };
        let s = String::from_utf8(no_extra.encode()).unwrap();
        assert!(s.starts_with("c2sp.org/tlog-proof@v1\nindex 7\n"));
        assert_eq!(TlogProof::parse(s.as_bytes()).unwrap(), no_extra);
    }

    #[test]
    fn strict_parsing() {
        let (signer, proof, leaf) = fixture();
        let good = String::from_utf8(proof.encode()).unwrap();
        let h = hash_to_base64(&proof.hashes[0]);
        let head = good.split("\n\n").next().unwrap().to_string();
        for bad in [
            good.replacen("c2sp.org/tlog-proof@v1", "c2sp.org/tlog-proof@v2", 1),
            good.replacen("index 7", "index 07", 1),
            good.replacen("index 7", "index -7", 1),
            good.replacen("index 7", "index  7", 1),
            good.replacen("index 7\n", "", 1),
            good.replacen("extra ", "extra !", 1),
            good.replacen(&h, &h[..40], 1),
            good.replacen(&h, &format!("{h} "), 1),
            head.clone(),
            format!("{head}\n\n"),
            String::new(),
        ] {
            assert!(TlogProof::parse(bad.as_bytes()).is_err(), "{bad:?} parsed");
        }
        // An empty line in the middle of the proof ends it early: what follows is
        // taken as the checkpoint, which then cannot verify.
        let early = TlogProof::parse(good.replacen(&format!("{h}\n"), "\n", 1).as_bytes()).unwrap();
        assert!(early.hashes.is_empty());
        assert!(verify(&early, &signer.verifier(), &leaf).is_err());
    }
}
