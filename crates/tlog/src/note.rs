//! Signed notes, per [C2SP signed-note](https://c2sp.org/signed-note), with
//! Ed25519 keys (signature type `0x01`), after Go's `golang.org/x/mod/sumdb/note`.
//!
//! A note is a text ending in a newline, a blank line, and one or more signature
//! lines `— <key name> <base64(key ID || signature)>`. Keys travel as strings:
//!
//! * verifier key: `<name>+<key ID, 8 hex digits>+<base64(0x01 || public key)>`
//! * signer key: `PRIVATE+KEY+<name>+<key ID>+<base64(0x01 || seed)>`
//!
//! where the key ID is the first four bytes, big-endian, of
//! SHA-256(name || "\n" || 0x01 || public key).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The signature type byte of Ed25519 keys.
pub const ALG_ED25519: u8 = 0x01;

/// The largest note [`open`] accepts, in bytes. Checkpoints are a few hundred
/// bytes; this leaves room for many cosignatures, even post-quantum ones.
pub const MAX_NOTE_SIZE: usize = 1 << 20;

/// The most signature lines [`open`] accepts (the spec asks for at least 16).
pub const MAX_SIGNATURES: usize = 100;

/// The prefix of a signature line: em dash (U+2014) and a space.
const SIG_PREFIX: &str = "\u{2014} ";

/// Errors about keys and notes.
#[derive(Debug, Error)]
pub enum NoteError {
    /// A key string that is not of the documented form.
    #[error("malformed key: {0}")]
    MalformedKey(&'static str),
    /// A key of a signature type other than Ed25519.
    #[error("unknown key algorithm {0:#04x}")]
    UnknownAlgorithm(u8),
    /// A key string whose key ID does not match its name and key.
    #[error("key ID {stated:08x} of {name:?} does not match its key (computed {computed:08x})")]
    KeyIdMismatch {
        /// The key name.
        name: String,
        /// The key ID in the string.
        stated: u32,
        /// The key ID computed from name and key.
        computed: u32,
    },
    /// A key name that is empty or has a space or a plus.
    #[error("invalid key name {0:?}: must be non-empty, without spaces or '+'")]
    InvalidName(String),
    /// A note that is not of the signed-note form.
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// A note over the size limit.
    #[error("note is {size} bytes; the limit is {max}")]
    TooLarge {
        /// The note's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A note with more signature lines than [`MAX_SIGNATURES`].
    #[error("note has more than {max} signatures")]
    TooManySignatures {
        /// The limit.
        max: usize,
    },
    /// A well-formed note without any signature from a known key. The note is
    /// included so the caller can see who did sign it.
    #[error("note has no signature from a known key (signed by: {})", names(&.0.unverified_sigs))]
    Unverified(Box<Note>),
    /// A signature by a known key that does not verify: the note is rejected.
    #[error("invalid signature for key {name}+{key_id:08x}")]
    InvalidSignature {
        /// The key name.
        name: String,
        /// The key ID.
        key_id: u32,
    },
    /// More than one known key with this name and key ID.
    #[error("ambiguous key {name}+{key_id:08x}: given more than once")]
    AmbiguousKey {
        /// The key name.
        name: String,
        /// The key ID.
        key_id: u32,
    },
    /// [`sign`] was given no signer, or too many.
    #[error("a note needs 1 to {MAX_SIGNATURES} signers, got {0}")]
    SignerCount(usize),
}

fn names(sigs: &[Signature]) -> String {
    if sigs.is_empty() {
        return "nobody".to_string();
    }
    sigs.iter()
        .map(|s| format!("{}+{:08x}", s.name, s.key_id))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `name` is a valid key name: non-empty, no Unicode white space, no '+'.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

/// The key ID of a key: the first four bytes, big-endian, of
/// SHA-256(name || "\n" || typed_key), where `typed_key` is the signature type
/// byte followed by the public key.
pub fn key_id(name: &str, typed_key: &[u8]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update(typed_key);
    let sum = h.finalize();
    u32::from_be_bytes([sum[0], sum[1], sum[2], sum[3]])
}

/// Splits `s` at the first `sep`: `(before, after)`, or `(s, "")` without one.
pub(crate) fn chop(s: &str, sep: char) -> (&str, &str) {
    s.split_once(sep).unwrap_or((s, ""))
}

/// Parses exactly eight hexadecimal digits.
fn parse_key_id(s: &str) -> Option<u32> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// Parses `<name>+<key ID>+<base64>`, the part verifier and signer key strings share: the
/// name (checked), the stated key ID and the decoded bytes. The base64 may itself contain
/// '+': only the first two separate.
fn parse_named_key(s: &str) -> Result<(&str, u32, Vec<u8>), NoteError> {
    let (name, rest) = chop(s, '+');
    let (id_hex, key64) = chop(rest, '+');
    if !is_valid_name(name) {
        return Err(NoteError::InvalidName(name.to_string()));
    }
    let stated =
        parse_key_id(id_hex).ok_or(NoteError::MalformedKey("key ID is not 8 hex digits"))?;
    let typed = STANDARD
        .decode(key64)
        .map_err(|_| NoteError::MalformedKey("key is not base64"))?;
    Ok((name, stated, typed))
}

/// Parses a verifier key string `<name>+<key ID>+<base64(alg || Ed25519 key)>` whose
/// signature type must be `alg`: the name, the key ID (checked against name and key) and the
/// key. Shared by note keys (`0x01`) and cosigner keys (`0x04`).
pub(crate) fn parse_vkey(vkey: &str, alg: u8) -> Result<(String, u32, VerifyingKey), NoteError> {
    let (name, stated, typed) = parse_named_key(vkey)?;
    let Some((&stated_alg, key)) = typed.split_first() else {
        return Err(NoteError::MalformedKey("empty key"));
    };
    let computed = key_id(name, &typed);
    if computed != stated {
        return Err(NoteError::KeyIdMismatch {
            name: name.to_string(),
            stated,
            computed,
        });
    }
    if stated_alg != alg {
        return Err(NoteError::UnknownAlgorithm(stated_alg));
    }
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| NoteError::MalformedKey("Ed25519 public key is not 32 bytes"))?;
    let key = VerifyingKey::from_bytes(&key)
        .map_err(|_| NoteError::MalformedKey("invalid Ed25519 public key"))?;
    Ok((name.to_string(), stated, key))
}

/// Parses a signer key string `PRIVATE+KEY+<name>+<key ID>+<base64(alg || seed)>` whose
/// signature type must be `alg`: the name, the stated key ID (for the caller to check
/// against the derived public key) and the Ed25519 seed.
pub(crate) fn parse_skey(skey: &str, alg: u8) -> Result<(String, u32, [u8; 32]), NoteError> {
    let (private, rest) = chop(skey, '+');
    let (key_word, rest) = chop(rest, '+');
    if private != "PRIVATE" || key_word != "KEY" {
        return Err(NoteError::MalformedKey(
            "signer key does not start with PRIVATE+KEY+",
        ));
    }
    let (name, stated, typed) = parse_named_key(rest)?;
    let Some((&stated_alg, seed)) = typed.split_first() else {
        return Err(NoteError::MalformedKey("empty key"));
    };
    if stated_alg != alg {
        return Err(NoteError::UnknownAlgorithm(stated_alg));
    }
    let seed: [u8; 32] = seed
        .try_into()
        .map_err(|_| NoteError::MalformedKey("Ed25519 seed is not 32 bytes"))?;
    Ok((name.to_string(), stated, seed))
}

/// The signer key string `PRIVATE+KEY+<name>+<key ID>+<base64(alg || seed)>` (secret).
pub(crate) fn format_skey(alg: u8, name: &str, key_id: u32, key: &SigningKey) -> String {
    let mut typed = Vec::with_capacity(33);
    typed.push(alg);
    typed.extend_from_slice(key.as_bytes());
    format!("PRIVATE+KEY+{name}+{key_id:08x}+{}", STANDARD.encode(typed))
}

/// A public key that verifies note signatures.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl Verifier {
    /// Parses a verifier key string `<name>+<key ID>+<base64(0x01 || key)>`.
    pub fn new(vkey: &str) -> Result<Verifier, NoteError> {
        let (name, stated, key) = parse_vkey(vkey, ALG_ED25519)?;
        Ok(Verifier {
            name,
            key_id: stated,
            key,
        })
    }

    /// A verifier for an Ed25519 public key under the given name.
    pub fn from_ed25519(name: &str, key: VerifyingKey) -> Result<Verifier, NoteError> {
        if !is_valid_name(name) {
            return Err(NoteError::InvalidName(name.to_string()));
        }
        Ok(Verifier {
            name: name.to_string(),
            key_id: key_id(name, &typed_key_of(ALG_ED25519, &key)),
            key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Whether `sig` is a valid signature of `msg` by this key. Uses the same
    /// (RFC 8032, cofactorless, canonical S) rule as Go's `ed25519.Verify`, so every
    /// verifier of the ecosystem agrees on every signature.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else {
            return false;
        };
        use ed25519_dalek::Verifier as _;
        self.key.verify(msg, &sig).is_ok()
    }
}

/// Formats as the verifier key string.
impl fmt::Display for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}+{:08x}+{}",
            self.name,
            self.key_id,
            STANDARD.encode(typed_key_of(ALG_ED25519, &self.key))
        )
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verifier({self})")
    }
}

/// The signature type byte followed by the public key, as key IDs hash it.
pub(crate) fn typed_key_of(alg: u8, key: &VerifyingKey) -> Vec<u8> {
    let mut typed = Vec::with_capacity(33);
    typed.push(alg);
    typed.extend_from_slice(key.as_bytes());
    typed
}

/// A private key that signs notes.
#[derive(Clone)]
pub struct Signer {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl Signer {
    /// Parses a signer key string `PRIVATE+KEY+<name>+<key ID>+<base64(0x01 || seed)>`.
    pub fn new(skey: &str) -> Result<Signer, NoteError> {
        let (name, stated, seed) = parse_skey(skey, ALG_ED25519)?;
        // The key ID hashes the public key, which must be derived first.
        let signer = Signer::from_ed25519_seed(&name, &seed)?;
        if signer.key_id != stated {
            return Err(NoteError::KeyIdMismatch {
                name,
                stated,
                computed: signer.key_id,
            });
        }
        Ok(signer)
    }

    /// A signer for the Ed25519 key with the given 32-byte seed.
    pub fn from_ed25519_seed(name: &str, seed: &[u8; 32]) -> Result<Signer, NoteError> {
        if !is_valid_name(name) {
            return Err(NoteError::InvalidName(name.to_string()));
        }
        let key = SigningKey::from_bytes(seed);
        Ok(Signer {
            name: name.to_string(),
            key_id: key_id(name, &typed_key_of(ALG_ED25519, &key.verifying_key())),
            key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// Signs `msg` (Ed25519, 64 bytes).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }

    /// The matching verifier.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// The signer key string (secret).
    pub fn to_skey(&self) -> String {
        format_skey(ALG_ED25519, &self.name, self.key_id, &self.key)
    }
}

/// Never prints the private key.
impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({}+{:08x})", self.name, self.key_id)
    }
}

/// Generates a new Ed25519 key under `name` from the operating system's random
/// source; returns `(signer key string, verifier key string)`.
pub fn generate_key(name: &str) -> Result<(String, String), NoteError> {
    let mut seed = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut seed);
    let signer = Signer::from_ed25519_seed(name, &seed)?;
    Ok((signer.to_skey(), signer.verifier().to_string()))
}

/// One signature line of a note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// The key name.
    pub name: String,
    /// The key ID.
    pub key_id: u32,
    /// The base64 of key ID and signature, as in the note.
    pub base64: String,
}

/// An opened note: its text and its signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// The text, including its final newline.
    pub text: String,
    /// Signatures by known keys, all verified.
    pub sigs: Vec<Signature>,
    /// Signatures by unknown keys, not verified (such as witness cosignatures).
    pub unverified_sigs: Vec<Signature>,
}

/// Checks the character rules shared by [`sign`] and [`open`].
fn check_text_chars(s: &str) -> Result<(), NoteError> {
    if s.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::Malformed("control character other than newline"));
    }
    Ok(())
}

/// Signs `text` (which must end in a newline) with each signer and returns the
/// note: the text, a blank line, one signature line per signer.
pub fn sign<'a>(
    text: &str,
    signers: impl IntoIterator<Item = &'a Signer>,
) -> Result<Vec<u8>, NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::Malformed("text does not end in a newline"));
    }
    check_text_chars(text)?;
    let mut out = Vec::with_capacity(text.len() + 128);
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
    let mut seen: Vec<(&str, u32)> = Vec::new();
    for s in signers {
        // The same key twice adds nothing.
        if seen.contains(&(s.name(), s.key_id())) {
            continue;
        }
        seen.push((s.name(), s.key_id()));
        let mut raw = Vec::with_capacity(4 + 64);
        raw.extend_from_slice(&s.key_id().to_be_bytes());
        raw.extend_from_slice(&s.sign(text.as_bytes()));
        out.extend_from_slice(SIG_PREFIX.as_bytes());
        out.extend_from_slice(s.name().as_bytes());
        out.push(b' ');
        out.extend_from_slice(STANDARD.encode(raw).as_bytes());
        out.push(b'\n');
    }
    if seen.is_empty() || seen.len() > MAX_SIGNATURES {
        return Err(NoteError::SignerCount(seen.len()));
    }
    if out.len() > MAX_NOTE_SIZE {
        return Err(NoteError::TooLarge {
            size: out.len(),
            max: MAX_NOTE_SIZE,
        });
    }
    Ok(out)
}

/// Opens a note: checks its form, verifies every signature by a known key, and
/// keeps the others as unverified.
///
/// Fails if the note is malformed or too large, if any signature by a known key
/// does not verify, if a signature matches more than one known key, or if no
/// signature is by a known key ([`NoteError::Unverified`]).
pub fn open<'a>(
    msg: &[u8],
    verifiers: impl IntoIterator<Item = &'a Verifier>,
) -> Result<Note, NoteError> {
    if msg.len() > MAX_NOTE_SIZE {
        return Err(NoteError::TooLarge {
            size: msg.len(),
            max: MAX_NOTE_SIZE,
        });
    }
    let msg = std::str::from_utf8(msg).map_err(|_| NoteError::Malformed("not valid UTF-8"))?;
    check_text_chars(msg)?;
    let known: Vec<&Verifier> = verifiers.into_iter().collect();

    // The text is separated from the signatures by the last blank line.
    let split = msg
        .rfind("\n\n")
        .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
    let (text, sigs) = (&msg[..split + 1], &msg[split + 2..]);
    if sigs.is_empty() {
        return Err(NoteError::Malformed("no signatures"));
    }
    let Some(sigs) = sigs.strip_suffix('\n') else {
        return Err(NoteError::Malformed(
            "signature block does not end in a newline",
        ));
    };

    let mut note = Note {
        text: text.to_string(),
        sigs: Vec::new(),
        unverified_sigs: Vec::new(),
    };
    for (count, line) in sigs.split('\n').enumerate() {
        if count >= MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures {
                max: MAX_SIGNATURES,
            });
        }
        let line = line.strip_prefix(SIG_PREFIX).ok_or(NoteError::Malformed(
            "signature line does not start with an em dash and a space",
        ))?;
        let (name, b64) = chop(line, ' ');
        if !is_valid_name(name) {
            return Err(NoteError::Malformed("invalid key name in a signature line"));
        }
        let raw = STANDARD
            .decode(b64)
            .map_err(|_| NoteError::Malformed("signature is not base64"))?;
        if raw.len() < 5 {
            return Err(NoteError::Malformed("signature is too short"));
        }
        let id = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let sig = Signature {
            name: name.to_string(),
            key_id: id,
            base64: b64.to_string(),
        };

        let mut matching = known
            .iter()
            .filter(|v| v.name() == name && v.key_id() == id);
        let Some(v) = matching.next() else {
            // Unknown keys are kept, not verified; identical repeats are dropped.
            if !note.unverified_sigs.contains(&sig) {
                note.unverified_sigs.push(sig);
            }
            continue;
        };
        if matching.next().is_some() {
            return Err(NoteError::AmbiguousKey {
                name: name.to_string(),
                key_id: id,
            });
        }
        // Every signature by a known key must verify, repeats included.
        if !v.verify(text.as_bytes(), &raw[4..]) {
            return Err(NoteError::InvalidSignature {
                name: name.to_string(),
                key_id: id,
            });
        }
        if !note
            .sigs
            .iter()
            .any(|s| s.name == sig.name && s.key_id == sig.key_id)
        {
            note.sigs.push(sig);
        }
    }
    if note.sigs.is_empty() {
        return Err(NoteError::Unverified(Box::new(note)));
    }
    Ok(note)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip() {
        let (skey, vkey) = generate_key("example.com/log").unwrap();
        assert!(skey.starts_with("PRIVATE+KEY+example.com/log+"));
        let signer = Signer::new(&skey).unwrap();
        let verifier = Verifier::new(&vkey).unwrap();
        assert_eq!(signer.verifier(), verifier);
        assert_eq!(verifier.to_string(), vkey);
        assert_eq!(signer.to_skey(), skey);
        assert_eq!(signer.name(), "example.com/log");
        assert_eq!(signer.key_id(), verifier.key_id());
        // Debug output never shows the seed.
        let seed64 = skey.splitn(5, '+').nth(4).unwrap();
        assert!(seed64.len() == 44 && !format!("{signer:?}").contains(seed64));

        let msg = b"hi";
        let mut sig = signer.sign(msg);
        assert!(verifier.verify(msg, &sig));
        assert!(!verifier.verify(b"ho", &sig));
        sig[0] ^= 1;
        assert!(!verifier.verify(msg, &sig));
        assert!(!verifier.verify(msg, &sig[..63]));

        let (_, other) = generate_key("example.com/log").unwrap();
        assert_ne!(other, vkey);
        assert!(generate_key("bad name").is_err());
        assert!(generate_key("a+b").is_err());
        assert!(generate_key("").is_err());
    }

    #[test]
    fn names() {
        assert!(is_valid_name("example.com/log42"));
        assert!(is_valid_name("PeterNeumann"));
        for bad in ["", "a b", "a+b", "a\tb", "a\u{a0}b", "a\u{2003}b", "a\nb"] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn sign_then_open() {
        let a = Signer::from_ed25519_seed("a.example", &[1; 32]).unwrap();
        let b = Signer::from_ed25519_seed("b.example", &[2; 32]).unwrap();
        let text = "line one\n\nline three after an empty line\n";
        let msg = sign(text, [&a, &b, &a]).unwrap();
        let s = String::from_utf8(msg.clone()).unwrap();
        assert_eq!(s.matches('\u{2014}').count(), 2);

        let n = open(&msg, [&a.verifier()]).unwrap();
        assert_eq!(n.text, text);
        assert_eq!(n.sigs.len(), 1);
        assert_eq!(n.sigs[0].name, "a.example");
        assert_eq!(n.unverified_sigs.len(), 1);
        assert_eq!(n.unverified_sigs[0].name, "b.example");

        let both = [a.verifier(), b.verifier()];
        let n = open(&msg, &both).unwrap();
        assert_eq!(n.sigs.len(), 2);
        assert!(n.unverified_sigs.is_empty());

        match open(&msg, []) {
            Err(NoteError::Unverified(n)) => assert_eq!(n.unverified_sigs.len(), 2),
            other => panic!("{other:?}"),
        }
        let err = open(&msg, [&a.verifier(), &a.verifier()]).unwrap_err();
        assert!(matches!(err, NoteError::AmbiguousKey { .. }), "{err}");

        assert!(matches!(
            sign("no newline", [&a]),
            Err(NoteError::Malformed(_))
        ));
        assert!(matches!(
            sign("bell\u{7}\n", [&a]),
            Err(NoteError::Malformed(_))
        ));
        assert!(matches!(sign("x\n", []), Err(NoteError::SignerCount(0))));
    }

    #[test]
    fn open_limits() {
        let a = Signer::from_ed25519_seed("a.example", &[1; 32]).unwrap();
        let msg = sign("x\n", [&a]).unwrap();
        let sig_line = &msg[3..];
        let mut many = b"x\n\n".to_vec();
        for _ in 0..MAX_SIGNATURES {
            many.extend_from_slice(sig_line);
        }
        assert_eq!(open(&many, [&a.verifier()]).unwrap().sigs.len(), 1);
        many.extend_from_slice(sig_line);
        assert!(matches!(
            open(&many, [&a.verifier()]),
            Err(NoteError::TooManySignatures { .. })
        ));
        let mut huge = vec![b'a'; MAX_NOTE_SIZE];
        huge.extend_from_slice(&msg);
        assert!(matches!(
            open(&huge, [&a.verifier()]),
            Err(NoteError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_bad_repeat_of_a_known_signature_rejects_the_note() {
        let a = Signer::from_ed25519_seed("a.example", &[1; 32]).unwrap();
        let good = sign("x\n", [&a]).unwrap();
        let other = sign("y\n", [&a]).unwrap();
        let mut msg = good.clone();
        msg.extend_from_slice(&other[3..]); // a's signature over different text
        assert!(matches!(
            open(&msg, [&a.verifier()]),
            Err(NoteError::InvalidSignature { .. })
        ));
    }
}
