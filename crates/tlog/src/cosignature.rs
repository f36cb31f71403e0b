//! Witness cosignatures, per [C2SP tlog-cosignature](https://c2sp.org/tlog-cosignature)
//! (`cosignature/v1`, Ed25519, signature type `0x04`), and quorums of them.
//!
//! A cosignature is a note signature line on a checkpoint:
//!
//! ```text
//! — <witness name> base64(key ID || timestamp (8 bytes, big-endian) || Ed25519 signature)
//! ```
//!
//! where the key ID is SHA-256(name || "\n" || 0x04 || public key)[:4] and the signature is
//! over `cosignature/v1\ntime <timestamp>\n` followed by the checkpoint's note text. A
//! witness cosigns a checkpoint only if it is consistent with the largest one it saw of that
//! log, so a client that trusts a checkpoint only with a quorum of cosignatures cannot be
//! shown a tree other clients do not see (a split view).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use thiserror::Error;

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::note::{
    self, Note, NoteError, Verifier, format_skey, is_valid_name, key_id, parse_skey, parse_vkey,
    typed_key_of,
};

/// The signature type byte of `cosignature/v1` Ed25519 cosigner keys.
pub const ALG_COSIGNATURE_V1: u8 = 0x04;

/// The largest timestamp a cosignature may carry (2^63 - 1).
pub const MAX_TIMESTAMP: u64 = i64::MAX as u64;

/// The message a `cosignature/v1` signs: the header line, the time line and the checkpoint's
/// note text (with its final newline, without signature lines).
pub fn cosigned_message(checkpoint_text: &str, timestamp: u64) -> Vec<u8> {
    format!("cosignature/v1\ntime {timestamp}\n{checkpoint_text}").into_bytes()
}

/// A witness's public key: verifies its cosignatures.
#[derive(Clone, PartialEq, Eq)]
pub struct WitnessKey {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl WitnessKey {
    /// Parses a C2SP vkey `<name>+<key ID>+<base64(0x04 || key)>`.
    pub fn new(vkey: &str) -> Result<WitnessKey, NoteError> {
        let (name, key_id, key) = parse_vkey(vkey.trim(), ALG_COSIGNATURE_V1)?;
        Ok(WitnessKey { name, key_id, key })
    }

    /// The witness's key for an Ed25519 public key under the given name.
    pub fn from_ed25519(name: &str, key: VerifyingKey) -> Result<WitnessKey, NoteError> {
        if !is_valid_name(name) {
            return Err(NoteError::InvalidName(name.to_string()));
        }
        Ok(WitnessKey {
            name: name.to_string(),
            key_id: key_id(name, &typed_key_of(ALG_COSIGNATURE_V1, &key)),
            key,
        })
    }

    /// The witness's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// Whether `sig` (the part of a signature line after the key ID: timestamp and
    /// signature) is this witness's cosignature of the checkpoint whose note text is
    /// `checkpoint_text`; its timestamp if so.
    pub fn verify(&self, checkpoint_text: &str, sig: &[u8]) -> Option<u64> {
        let (timestamp, signature) = sig.split_first_chunk::<8>()?;
        let timestamp = u64::from_be_bytes(*timestamp);
        if timestamp > MAX_TIMESTAMP {
            return None;
        }
        let signature = ed25519_dalek::Signature::from_slice(signature).ok()?;
        use ed25519_dalek::Verifier as _;
        self.key
            .verify(&cosigned_message(checkpoint_text, timestamp), &signature)
            .ok()
            .map(|()| timestamp)
    }

    /// This witness's valid cosignature of the checkpoint with note text `checkpoint_text`
    /// among `lines` (note signature lines, such as a witness's `add-checkpoint` answer):
    /// the line with its final newline, and its timestamp. Lines by other keys, and lines
    /// that are not signature lines, are passed over.
    pub fn find_cosignature(&self, checkpoint_text: &str, lines: &str) -> Option<(String, u64)> {
        lines.lines().find_map(|line| {
            let rest = line.strip_prefix("\u{2014} ")?;
            let (name, b64) = rest.split_once(' ')?;
            if name != self.name {
                return None;
            }
            let raw = STANDARD.decode(b64).ok()?;
            let (id, sig) = raw.split_first_chunk::<4>()?;
            if u32::from_be_bytes(*id) != self.key_id {
                return None;
            }
            let timestamp = self.verify(checkpoint_text, sig)?;
            Some((format!("{line}\n"), timestamp))
        })
    }

    /// Whether a note signature line is by this key (same name and key ID).
    fn is_signer_of(&self, sig: &note::Signature) -> bool {
        sig.name == self.name && sig.key_id == self.key_id
    }
}

/// Formats as the vkey string.
impl fmt::Display for WitnessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}+{:08x}+{}",
            self.name,
            self.key_id,
            STANDARD.encode(typed_key_of(ALG_COSIGNATURE_V1, &self.key))
        )
    }
}

impl fmt::Debug for WitnessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WitnessKey({self})")
    }
}

/// A witness's private key: makes cosignatures.
#[derive(Clone)]
pub struct Cosigner {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl Cosigner {
    /// Parses a signer key string `PRIVATE+KEY+<name>+<key ID>+<base64(0x04 || seed)>`.
    pub fn new(skey: &str) -> Result<Cosigner, NoteError> {
        let (name, stated, seed) = parse_skey(skey.trim(), ALG_COSIGNATURE_V1)?;
        let cosigner = Cosigner::from_ed25519_seed(&name, &seed)?;
        if cosigner.key_id != stated {
            return Err(NoteError::KeyIdMismatch {
                name,
                stated,
                computed: cosigner.key_id,
            });
        }
        Ok(cosigner)
    }

    /// A cosigner for the Ed25519 key with the given seed.
    pub fn from_ed25519_seed(name: &str, seed: &[u8; 32]) -> Result<Cosigner, NoteError> {
        let key = SigningKey::from_bytes(seed);
        let public = WitnessKey::from_ed25519(name, key.verifying_key())?;
        Ok(Cosigner {
            name: public.name,
            key_id: public.key_id,
            key,
        })
    }

    /// A new key from the operating system's random source.
    pub fn generate(name: &str) -> Result<Cosigner, NoteError> {
        let mut seed = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut seed);
        Cosigner::from_ed25519_seed(name, &seed)
    }

    /// The witness's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public key.
    pub fn witness_key(&self) -> WitnessKey {
        WitnessKey {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// The signer key string (secret).
    pub fn to_skey(&self) -> String {
        format_skey(ALG_COSIGNATURE_V1, &self.name, self.key_id, &self.key)
    }

    /// The cosignature of the checkpoint with note text `checkpoint_text` at `timestamp`
    /// (POSIX seconds, at most [`MAX_TIMESTAMP`]), as a note signature line ending in a
    /// newline.
    pub fn cosign(&self, checkpoint_text: &str, timestamp: u64) -> String {
        let timestamp = timestamp.min(MAX_TIMESTAMP);
        let signature = self.key.sign(&cosigned_message(checkpoint_text, timestamp));
        let mut raw = Vec::with_capacity(4 + 8 + 64);
        raw.extend_from_slice(&self.key_id.to_be_bytes());
        raw.extend_from_slice(&timestamp.to_be_bytes());
        raw.extend_from_slice(&signature.to_bytes());
        format!("\u{2014} {} {}\n", self.name, STANDARD.encode(raw))
    }
}

/// Never prints the private key.
impl fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cosigner({}+{:08x})", self.name, self.key_id)
    }
}

/// One valid cosignature found on a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cosignature {
    /// The witness's name.
    pub witness: String,
    /// When the witness cosigned (POSIX seconds).
    pub timestamp: u64,
}

/// Which witnesses a client trusts and how many of them must have cosigned a checkpoint
/// (a c2sp.org/tlog-policy quorum of K of the listed witnesses).
#[derive(Clone, Debug, Default)]
pub struct WitnessPolicy {
    /// The trusted witnesses' keys.
    pub witnesses: Vec<WitnessKey>,
    /// How many distinct witnesses must have cosigned; 0 trusts the log's signature alone.
    pub quorum: usize,
}

/// Errors about cosignatures and quorums.
#[derive(Debug, Error)]
pub enum CosignatureError {
    /// The checkpoint itself did not open (the log's signature, its form or origin).
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Fewer valid cosignatures from the trusted witnesses than the quorum.
    #[error(
        "checkpoint has {} valid cosignature(s) from the trusted witnesses ({}), {required} required{}",
        .valid.len(),
        if .valid.is_empty() { "none".to_string() } else { .valid.join(", ") },
        if .invalid.is_empty() { String::new() } else { format!("; invalid cosignatures from {}", .invalid.join(", ")) }
    )]
    QuorumNotMet {
        /// The quorum.
        required: usize,
        /// The witnesses whose cosignature verified.
        valid: Vec<String>,
        /// The trusted witnesses whose cosignature line did not verify.
        invalid: Vec<String>,
    },
    /// A policy that no checkpoint could meet, or that is not a policy.
    #[error("witness policy: {0}")]
    Policy(String),
}

impl WitnessPolicy {
    /// A policy requiring `quorum` of `witnesses`; refuses a quorum above the number of
    /// distinct witnesses, and the same witness key given twice.
    pub fn new(
        witnesses: Vec<WitnessKey>,
        quorum: usize,
    ) -> Result<WitnessPolicy, CosignatureError> {
        for (i, w) in witnesses.iter().enumerate() {
            // The signed message does not name the witness, so one key under two names
            // would count one cosignature twice.
            if witnesses[..i]
                .iter()
                .any(|o| (o.name == w.name && o.key_id == w.key_id) || o.key == w.key)
            {
                return Err(CosignatureError::Policy(format!(
                    "witness {w} is given twice (the same key counts once)"
                )));
            }
        }
        if quorum > witnesses.len() {
            return Err(CosignatureError::Policy(format!(
                "a quorum of {quorum} needs at least {quorum} witnesses, {} given",
                witnesses.len()
            )));
        }
        Ok(WitnessPolicy { witnesses, quorum })
    }

    /// The valid cosignatures on an opened note from the trusted witnesses (one per
    /// witness, the newest), and the trusted witnesses whose lines did not verify.
    pub fn cosignatures(&self, note: &Note) -> (Vec<Cosignature>, Vec<String>) {
        let mut valid: Vec<Cosignature> = Vec::new();
        let mut invalid = Vec::new();
        for w in &self.witnesses {
            let mut newest: Option<u64> = None;
            let mut bad = false;
            for sig in note.unverified_sigs.iter().filter(|s| w.is_signer_of(s)) {
                let checked = STANDARD
                    .decode(&sig.base64)
                    .ok()
                    .and_then(|raw| w.verify(&note.text, raw.get(4..)?));
                match checked {
                    Some(t) => newest = Some(newest.map_or(t, |n| n.max(t))),
                    None => bad = true,
                }
            }
            if let Some(timestamp) = newest {
                valid.push(Cosignature {
                    witness: w.name.clone(),
                    timestamp,
                });
            } else if bad {
                invalid.push(w.name.clone());
            }
        }
        (valid, invalid)
    }

    /// Opens a checkpoint note: the log's signature by `log`, the checkpoint's form and
    /// origin, and at least the quorum of valid cosignatures from the trusted witnesses.
    pub fn open(
        &self,
        note_bytes: &[u8],
        log: &Verifier,
    ) -> Result<(Checkpoint, Vec<Cosignature>), CosignatureError> {
        let checkpoint = crate::checkpoint::open_checkpoint(note_bytes, log)?;
        if self.quorum == 0 {
            return Ok((checkpoint, Vec::new()));
        }
        // open_checkpoint succeeded, so the note opens.
        let note = note::open(note_bytes, [log]).map_err(CheckpointError::from)?;
        let (valid, invalid) = self.cosignatures(&note);
        if valid.len() < self.quorum {
            return Err(CosignatureError::QuorumNotMet {
                required: self.quorum,
                valid: valid.into_iter().map(|c| c.witness).collect(),
                invalid,
            });
        }
        Ok((checkpoint, valid))
    }
}

/// The note `note` with the signature lines `lines` (each ending in a newline) added after
/// its own, leaving out lines it already carries.
pub fn add_signature_lines(note: &[u8], lines: &str) -> Vec<u8> {
    let mut out = note.to_vec();
    let existing = String::from_utf8_lossy(note).into_owned();
    for line in lines.split_inclusive('\n') {
        if line.starts_with('\u{2014}') && line.ends_with('\n') && !existing.contains(line) {
            out.extend_from_slice(line.as_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::sign_checkpoint;
    use crate::hash::hash_from_base64;
    use crate::note::Signer;

    fn stranger_line(text: &str) -> String {
        Cosigner::from_ed25519_seed("w2.example", &[98; 32])
            .unwrap()
            .cosign(text, 1)
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "example.com/behind-the-sofa".to_string(),
            size: 20852163,
            hash: hash_from_base64("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=").unwrap(),
            extensions: Vec::new(),
        }
    }

    /// The signed message and the signature line of the specification's example: the
    /// timestamp line of the message is the timestamp the line's bytes carry.
    #[test]
    fn the_specification_example() {
        assert_eq!(
            String::from_utf8(cosigned_message(&checkpoint().to_text(), 1679315147)).unwrap(),
            "cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n\
             CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
        );
        let example = "\u{2014} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==";
        let b64 = example.rsplit(' ').next().unwrap();
        let raw = STANDARD.decode(b64).unwrap();
        assert_eq!(raw.len(), 4 + 8 + 64);
        assert_eq!(
            u64::from_be_bytes(raw[4..12].try_into().unwrap()),
            1679315147
        );
    }

    #[test]
    fn keys_round_trip_and_are_typed() {
        let c = Cosigner::from_ed25519_seed("witness.example/w1", &[7; 32]).unwrap();
        let vkey = c.witness_key().to_string();
        assert_eq!(WitnessKey::new(&vkey).unwrap(), c.witness_key());
        let decoded = STANDARD
            .decode(vkey.splitn(3, '+').nth(2).unwrap())
            .unwrap();
        assert_eq!(decoded[0], 0x04);
        assert_eq!(
            Cosigner::new(&c.to_skey()).unwrap().witness_key(),
            c.witness_key()
        );
        // A note key (type 0x01) is not a witness key, nor the other way round.
        let signer = Signer::from_ed25519_seed("witness.example/w1", &[7; 32]).unwrap();
        assert!(matches!(
            WitnessKey::new(&signer.verifier().to_string()),
            Err(NoteError::UnknownAlgorithm(0x01))
        ));
        assert!(Verifier::new(&vkey).is_err());
        assert!(Cosigner::new(&signer.to_skey()).is_err());
        // The key ID of the same public key differs with the type byte.
        assert_ne!(signer.key_id(), c.witness_key().key_id());
    }

    #[test]
    fn quorum() {
        let log = Signer::from_ed25519_seed("example.com/behind-the-sofa", &[1; 32]).unwrap();
        let w: Vec<Cosigner> = (0..3)
            .map(|i| Cosigner::from_ed25519_seed(&format!("w{i}.example"), &[10 + i; 32]).unwrap())
            .collect();
        let keys: Vec<WitnessKey> = w.iter().map(Cosigner::witness_key).collect();
        let cp = checkpoint();
        let note = sign_checkpoint(&cp, &log).unwrap();
        let text = cp.to_text();
        let two = add_signature_lines(
            &note,
            &format!("{}{}", w[0].cosign(&text, 100), w[1].cosign(&text, 200)),
        );
        let policy = WitnessPolicy::new(keys.clone(), 2).unwrap();
        let (opened, cosigs) = policy.open(&two, &log.verifier()).unwrap();
        assert_eq!(opened, cp);
        assert_eq!(cosigs.len(), 2);
        assert_eq!(cosigs[1].timestamp, 200);
        // The log's own signature still opens the note alone.
        assert_eq!(
            crate::checkpoint::open_checkpoint(&two, &log.verifier()).unwrap(),
            cp
        );

        let three = WitnessPolicy::new(keys.clone(), 3).unwrap();
        let err = three.open(&two, &log.verifier()).unwrap_err();
        assert!(
            matches!(err, CosignatureError::QuorumNotMet { required: 3, .. }),
            "{err}"
        );
        // Repeating one witness does not count twice.
        let repeated = add_signature_lines(
            &note,
            &format!("{}{}", w[0].cosign(&text, 1), w[0].cosign(&text, 2)),
        );
        assert!(policy.open(&repeated, &log.verifier()).is_err());
        // A cosignature of another tree does not count, and is named.
        let other = Checkpoint {
            size: 1,
            ..cp.clone()
        };
        let forged = add_signature_lines(
            &note,
            &format!(
                "{}{}",
                w[0].cosign(&text, 1),
                w[1].cosign(&other.to_text(), 1)
            ),
        );
        match policy.open(&forged, &log.verifier()) {
            Err(CosignatureError::QuorumNotMet { valid, invalid, .. }) => {
                assert_eq!(valid, ["w0.example"]);
                assert_eq!(invalid, ["w1.example"]);
            }
            other => panic!("{other:?}"),
        }
        // A witness's answer is searched for its own valid line.
        let answer = format!("{}{}", stranger_line(&text), w[2].cosign(&text, 7));
        assert_eq!(keys[2].find_cosignature(&text, &answer).unwrap().1, 7);
        assert!(keys[1].find_cosignature(&text, &answer).is_none());
        assert!(
            keys[2]
                .find_cosignature(&other.to_text(), &answer)
                .is_none()
        );
        // A cosignature by an untrusted witness does not count.
        let stranger = Cosigner::from_ed25519_seed("w9.example", &[99; 32]).unwrap();
        let untrusted = add_signature_lines(
            &note,
            &format!("{}{}", w[0].cosign(&text, 1), stranger.cosign(&text, 1)),
        );
        assert!(policy.open(&untrusted, &log.verifier()).is_err());
        // Policies that cannot be met are refused.
        assert!(WitnessPolicy::new(keys.clone(), 4).is_err());
        assert!(WitnessPolicy::new(vec![keys[0].clone(), keys[0].clone()], 1).is_err());
        // One key under two names would count one cosignature twice.
        let renamed = Cosigner::from_ed25519_seed("w0-again.example", &[10; 32]).unwrap();
        assert!(WitnessPolicy::new(vec![keys[0].clone(), renamed.witness_key()], 2).is_err());
        // Quorum 0 trusts the log's signature alone.
        assert!(
            WitnessPolicy::default()
                .open(&note, &log.verifier())
                .is_ok()
        );
    }
}
