//! Keyed subject pseudonyms: the log and egress name subjects only by these.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Replaces subject ids in the log by HMAC-SHA256 pseudonyms under a key that stays with the
/// gateway: a monitor can follow one subject through the log without learning who it is.
#[derive(Clone)]
pub struct Pseudonymizer {
    key: Vec<u8>,
}

impl Pseudonymizer {
    pub fn from_hex(text: &str) -> anyhow::Result<Self> {
        let key = hex::decode(text.trim())
            .map_err(|_| anyhow::anyhow!("the pseudonym key is not hex"))?;
        if key.len() < 32 {
            anyhow::bail!("the pseudonym key must be at least 32 bytes");
        }
        Ok(Pseudonymizer { key })
    }

    /// A 256-bit key for another purpose, derived from this one: HMAC-SHA256(key, label).
    pub fn derive_key(&self, label: &[u8]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key size");
        mac.update(label);
        mac.finalize().into_bytes().into()
    }

    /// 128 bits of HMAC-SHA256(key, subject id), hex.
    pub fn pseudonym(&self, subject: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key size");
        mac.update(subject.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }
}
