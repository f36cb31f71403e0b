//! Checkpoints, per [C2SP tlog-checkpoint](https://c2sp.org/tlog-checkpoint): the
//! signed note body that commits a log to a tree.
//!
//! ```text
//! <origin>
//! <tree size, decimal>
//! <root hash, base64>
//! [extension lines]
//! ```

use thiserror::Error;

use crate::hash::{Hash, hash_from_base64, hash_to_base64};
use crate::note::{NoteError, Signer, Verifier, open, sign};

/// A log's tree head: which log, how many entries, which root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity (its origin line), e.g. `example.com/log42`.
    pub origin: String,
    /// The number of entries in the tree.
    pub size: u64,
    /// The RFC 6962 root hash of the tree.
    pub hash: Hash,
    /// Opaque extension lines (not recommended by the spec; kept verbatim).
    pub extensions: Vec<String>,
}

/// Errors about checkpoints.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// A note text that is not a well-formed checkpoint.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// The checkpoint's note did not open (bad form or signature, unknown key).
    #[error("checkpoint signature: {0}")]
    Note(#[from] NoteError),
    /// A checkpoint whose origin is not the name of the key that signed it.
    #[error("checkpoint origin {origin:?} is not the log key's name {key_name:?}")]
    OriginMismatch {
        /// The origin line.
        origin: String,
        /// The verifier key's name.
        key_name: String,
    },
}

impl Checkpoint {
    /// The note text of the checkpoint.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            hash_to_base64(&self.hash)
        );
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        s
    }

    /// Parses a checkpoint note text strictly: it ends in a newline; the origin is
    /// non-empty; the size is decimal without leading zeros (except "0"); the hash
    /// is canonical base64 of exactly 32 bytes; extension lines are non-empty; no
    /// control characters.
    pub fn parse(text: &str) -> Result<Checkpoint, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::Malformed("text does not end in a newline"))?;
        if body.chars().any(|c| c < ' ' && c != '\n') {
            return Err(CheckpointError::Malformed("control character in text"));
        }
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or("");
        if origin.is_empty() {
            return Err(CheckpointError::Malformed("empty origin line"));
        }
        let size = lines
            .next()
            .ok_or(CheckpointError::Malformed("missing tree size line"))?;
        let size = parse_size(size).ok_or(CheckpointError::Malformed(
            "tree size is not a decimal number without leading zeros",
        ))?;
        let hash = lines
            .next()
            .ok_or(CheckpointError::Malformed("missing root hash line"))?;
        let hash = hash_from_base64(hash).ok_or(CheckpointError::Malformed(
            "root hash is not the base64 of 32 bytes",
        ))?;
        let mut extensions = Vec::new();
        for line in lines {
            if line.is_empty() {
                return Err(CheckpointError::Malformed("empty extension line"));
            }
            extensions.push(line.to_string());
        }
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            hash,
            extensions,
        })
    }
}

/// Parses a decimal with no sign and no leading zeros ("0" itself is fine).
fn parse_size(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

/// Signs the checkpoint, returning the signed note. Refuses a checkpoint whose
/// text would not parse back to itself (an origin with a newline, say).
pub fn sign_checkpoint(
    checkpoint: &Checkpoint,
    signer: &Signer,
) -> Result<Vec<u8>, CheckpointError> {
    let text = checkpoint.to_text();
    if Checkpoint::parse(&text)? != *checkpoint {
        return Err(CheckpointError::Malformed(
            "checkpoint does not survive encoding",
        ));
    }
    Ok(sign(&text, [signer])?)
}

/// Opens a signed checkpoint: the note must carry a valid signature by
/// `verifier` (other signatures, such as witness cosignatures, are ignored), its
/// text must be a well-formed checkpoint, and its origin must be the key's name,
/// so that a key used by two logs cannot pass one log's checkpoint off as the other's.
pub fn open_checkpoint(note: &[u8], verifier: &Verifier) -> Result<Checkpoint, CheckpointError> {
    let note = open(note, [verifier])?;
    let checkpoint = Checkpoint::parse(&note.text)?;
    if checkpoint.origin != verifier.name() {
        return Err(CheckpointError::OriginMismatch {
            origin: checkpoint.origin,
            key_name: verifier.name().to_string(),
        });
    }
    Ok(checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{EMPTY_TREE_HASH, leaf_hash};

    fn cp() -> Checkpoint {
        Checkpoint {
            origin: "example.com/log".to_string(),
            size: 20852163,
            hash: leaf_hash(b"x"),
            extensions: Vec::new(),
        }
    }

    #[test]
    fn text_round_trip() {
        let mut c = cp();
        assert_eq!(Checkpoint::parse(&c.to_text()).unwrap(), c);
        c.extensions = vec!["ext one".to_string(), "two".to_string()];
        let text = c.to_text();
        assert!(text.ends_with("\next one\ntwo\n"));
        assert_eq!(Checkpoint::parse(&text).unwrap(), c);
        let empty = Checkpoint {
            size: 0,
            hash: EMPTY_TREE_HASH,
            ..cp()
        };
        assert_eq!(
            empty.to_text(),
            "example.com/log\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
        );
        assert_eq!(Checkpoint::parse(&empty.to_text()).unwrap(), empty);
    }

    #[test]
    fn strict_parsing() {
        let h = hash_to_base64(&leaf_hash(b"x"));
        for bad in [
            String::new(),
            format!("o\n1\n{h}"),                      // no final newline
            format!("\n1\n{h}\n"),                     // empty origin
            format!("o\n01\n{h}\n"),                   // leading zero
            format!("o\n+1\n{h}\n"),                   // sign
            format!("o\n-1\n{h}\n"),                   // negative
            format!("o\n 1\n{h}\n"),                   // space
            format!("o\n\n{h}\n"),                     // empty size
            format!("o\n18446744073709551616\n{h}\n"), // overflow
            format!("o\n1\n{}\n", &h[..43]),           // short hash
            "o\n1\nV3JvbmdSb290\n".to_string(),        // not 32 bytes
            format!("o\n1\n{h}\n\n"),                  // empty extension line
            format!("o\n1\n{h}\next\n\n"),             // empty extension line
            "o\n1\n".to_string(),                      // no hash
            format!("o\r\n1\n{h}\n"),                  // control character
        ] {
            assert!(Checkpoint::parse(&bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(Checkpoint::parse(&format!("o\n0\n{h}\n")).unwrap().size, 0);
        assert_eq!(
            Checkpoint::parse(&format!("o\n18446744073709551615\n{h}\n"))
                .unwrap()
                .size,
            u64::MAX
        );
    }

    #[test]
    fn sign_and_open() {
        let signer = Signer::from_ed25519_seed("example.com/log", &[9; 32]).unwrap();
        let note = sign_checkpoint(&cp(), &signer).unwrap();
        assert_eq!(open_checkpoint(&note, &signer.verifier()).unwrap(), cp());

        // Another log's key, and the right key under another name.
        let other = Signer::from_ed25519_seed("example.com/log", &[8; 32]).unwrap();
        assert!(matches!(
            open_checkpoint(&note, &other.verifier()),
            Err(CheckpointError::Note(NoteError::Unverified(_)))
        ));
        let renamed = Signer::from_ed25519_seed("example.com/other", &[9; 32]).unwrap();
        let note2 = sign_checkpoint(&cp(), &renamed).unwrap();
        assert!(matches!(
            open_checkpoint(&note2, &renamed.verifier()),
            Err(CheckpointError::OriginMismatch { .. })
        ));

        // Tampering with the size breaks the signature.
        let tampered = String::from_utf8(note)
            .unwrap()
            .replace("20852163", "20852164");
        assert!(matches!(
            open_checkpoint(tampered.as_bytes(), &signer.verifier()),
            Err(CheckpointError::Note(NoteError::InvalidSignature { .. }))
        ));

        let bad = Checkpoint {
            origin: "a\nb".to_string(),
            ..cp()
        };
        assert!(sign_checkpoint(&bad, &signer).is_err());
    }
}
