//! Egress cursors as the platform holds them: sealed, so that they name no subject id.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::http::error::{ApiError, AppResult, ErrorCode};
use crate::pseudonym::Pseudonymizer;

/// Egress cursors as the platform sees them: the vault's cursor (which names a subject id)
/// sealed with XChaCha20-Poly1305 under a key derived from the egress pseudonym key, so that
/// a cursor tells its holder nothing and cannot be forged or altered.
pub struct CursorSeal {
    cipher: XChaCha20Poly1305,
}

const CURSOR_NONCE_BYTES: usize = 24;
/// Far longer than any sealed cursor; longer text is refused before decoding.
const MAX_SEALED_CURSOR: usize = 2048;

impl CursorSeal {
    pub fn new(egress_pseudonyms: &Pseudonymizer) -> CursorSeal {
        let key = egress_pseudonyms.derive_key(b"sovereign egress cursor v1");
        CursorSeal {
            cipher: XChaCha20Poly1305::new((&key).into()),
        }
    }

    pub fn seal(&self, cursor: &vault::Cursor) -> String {
        let mut nonce = [0u8; CURSOR_NONCE_BYTES];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        let sealed = self
            .cipher
            .encrypt(&XNonce::from(nonce), cursor.to_string().as_bytes())
            .expect("sealing a short cursor cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    pub fn open(&self, text: &str) -> AppResult<vault::Cursor> {
        let invalid = || {
            ApiError::bad_request(
                ErrorCode::InvalidCursor,
                "`since` is not a cursor this gateway issued: pass back exactly the `cursor` of the previous page",
            )
        };
        if text.is_empty() || text.len() > MAX_SEALED_CURSOR {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        if bytes.len() <= CURSOR_NONCE_BYTES {
            return Err(invalid());
        }
        let (nonce, sealed) = bytes.split_at(CURSOR_NONCE_BYTES);
        let nonce: [u8; CURSOR_NONCE_BYTES] = nonce.try_into().map_err(|_| invalid())?;
        let plain = self
            .cipher
            .decrypt(&XNonce::from(nonce), sealed)
            .map_err(|_| invalid())?;
        let text = String::from_utf8(plain).map_err(|_| invalid())?;
        vault::Cursor::parse(&text).map_err(|_| invalid())
    }
}
