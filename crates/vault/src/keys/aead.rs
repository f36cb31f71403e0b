//! The one AEAD of the key handling, XChaCha20-Poly1305 with a random 192-bit nonce, for both
//! wrapping data keys and sealing field values: random nonces that long never collide in
//! practice, so no nonce counter has to be kept durable.

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use crate::keys::error::KeyError;

/// A plaintext data key. Zeroed when dropped.
pub(crate) type DataKey = Zeroizing<[u8; 32]>;

pub(super) fn random_bytes(out: &mut [u8]) -> Result<(), KeyError> {
    OsRng
        .try_fill_bytes(out)
        .map_err(|e| KeyError::Randomness(e.to_string()))
}

pub(super) const NONCE_LEN: usize = 24;
pub(super) const TAG_LEN: usize = 16;

/// Why sealing failed: no randomness (the error says so), or the AEAD refused.
pub(super) enum SealError {
    Randomness(Box<KeyError>),
    Aead,
}

/// XChaCha20-Poly1305 under `key` with a fresh random nonce: `nonce || ciphertext || tag`.
pub(super) fn aead_seal(
    key: &[u8; 32],
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, SealError> {
    let mut nonce = [0u8; NONCE_LEN];
    random_bytes(&mut nonce).map_err(|e| SealError::Randomness(Box::new(e)))?;
    let cipher = XChaCha20Poly1305::new(key.into());
    let sealed = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| SealError::Aead)?;
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens what [`aead_seal`] made; `None` if it does not authenticate under `key` and `aad`.
pub(super) fn aead_open(key: &[u8; 32], sealed: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
    let cipher = XChaCha20Poly1305::new(key.into());
    cipher
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
        .map(Zeroizing::new)
}
