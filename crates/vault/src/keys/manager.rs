//! The custodian's key-encryption key (KEK) behind [`KeyManager`], which never hands it out:
//! it only wraps and unwraps data keys, for the reasons it was configured to allow.
//! [`LocalKeyManager`] keeps the KEK in a file readable by its owner only; a cloud KMS or an
//! HSM can implement the same trait.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::keys::aead::{SealError, aead_open, aead_seal, random_bytes};
use crate::keys::error::{KeyError, UnwrapReason};

/// The custodian's key-encryption key, behind an interface that never hands it out.
pub trait KeyManager: Send + Sync {
    /// Names the key-encryption key (never derived reversibly from it). Stored next to every
    /// data key it wraps, so that a mismatch is reported as such.
    fn key_id(&self) -> &str;

    /// Encrypts a data key; `context` is bound to the result as associated data.
    fn wrap(&self, data_key: &[u8; 32], context: &[u8]) -> Result<Vec<u8>, KeyError>;

    /// Refuses with [`KeyError::ReasonNotAllowed`] unless `reason` is allowed (an empty list
    /// allows none). Checked on every use of a data key, also one unwrapped earlier.
    fn check_reason(&self, reason: UnwrapReason) -> Result<(), KeyError>;

    /// Decrypts a data key wrapped with the same `context`. Refuses with
    /// [`KeyError::ReasonNotAllowed`] unless `reason` is allowed (an empty list allows none).
    fn unwrap(
        &self,
        wrapped: &[u8],
        context: &[u8],
        reason: UnwrapReason,
    ) -> Result<Zeroizing<[u8; 32]>, KeyError>;
}

/// A key-encryption key kept in a local file of 64 hex characters, readable by its owner only.
pub struct LocalKeyManager {
    kek: Zeroizing<[u8; 32]>,
    key_id: String,
    allowed: Vec<UnwrapReason>,
}

impl fmt::Debug for LocalKeyManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("LocalKeyManager")
            .field("key_id", &self.key_id)
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

/// A key file is 64 hex characters and perhaps a line end; anything much longer is not one.
const MAX_KEY_FILE_LEN: u64 = 256;

impl LocalKeyManager {
    /// Reads the key-encryption key from `path` (64 hex characters, surrounding whitespace
    /// ignored). On Unix the file must not be readable by group or others. `allowed_reasons`
    /// are the reasons [`KeyManager::unwrap`] accepts; empty allows none.
    pub fn from_file(
        path: &Path,
        allowed_reasons: Vec<UnwrapReason>,
    ) -> Result<LocalKeyManager, KeyError> {
        let problem = |problem: String| KeyError::KeyFile {
            path: path.to_path_buf(),
            problem,
        };
        let mut file = std::fs::File::open(path).map_err(|e| {
            problem(format!(
                "cannot open it ({e}): create one with `LocalKeyManager::generate_key_file` \
                 (`sovereign init` does) or point the configuration at the existing one"
            ))
        })?;
        let metadata = file
            .metadata()
            .map_err(|e| problem(format!("cannot read its metadata ({e})")))?;
        check_private(&metadata).map_err(problem)?;
        if metadata.len() > MAX_KEY_FILE_LEN {
            return Err(problem(format!(
                "it has {} bytes, but a key file holds 64 hex characters",
                metadata.len()
            )));
        }
        let mut text = Zeroizing::new(String::new());
        file.read_to_string(&mut text)
            .map_err(|e| problem(format!("cannot read it ({e})")))?;
        let hex_text = text.trim();
        if hex_text.len() != 64 {
            return Err(problem(format!(
                "it holds {} characters, but a key is 64 hex characters",
                hex_text.chars().count()
            )));
        }
        let mut kek = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex_text, kek.as_mut_slice())
            .map_err(|_| problem("it is not 64 hex characters (0-9, a-f)".into()))?;
        Ok(LocalKeyManager::from_key(kek, allowed_reasons))
    }

    /// Writes a fresh random key-encryption key to `path` (64 hex characters and a line end),
    /// creating its folder if needed, with mode 0600 on Unix. An existing file is never
    /// overwritten: every data key wrapped with it would become unreadable.
    pub fn generate_key_file(path: &Path) -> Result<(), KeyError> {
        let problem = |problem: String| KeyError::KeyFile {
            path: path.to_path_buf(),
            problem,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| problem(format!("cannot create its folder ({e})")))?;
        }
        let mut kek = Zeroizing::new([0u8; 32]);
        random_bytes(kek.as_mut_slice())?;
        let mut text = Zeroizing::new(hex::encode(kek.as_slice()));
        text.push('\n');

        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                problem(
                    "it already exists, and a key file is never overwritten: every data key \
                     wrapped with it would become unreadable"
                        .into(),
                )
            } else {
                problem(format!("cannot create it ({e})"))
            }
        })?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| problem(format!("cannot write it ({e})")))?;
        sync_parent(path).map_err(|e| problem(format!("cannot sync its folder ({e})")))
    }

    fn from_key(kek: Zeroizing<[u8; 32]>, allowed_reasons: Vec<UnwrapReason>) -> Self {
        // A fingerprint, not the key: a one-way hash of it under a fixed label.
        let mut hasher = Sha256::new();
        hasher.update(b"sov:kek-id:v1\0");
        hasher.update(kek.as_slice());
        let key_id = format!("local:{}", &hex::encode(hasher.finalize())[..16]);
        let mut allowed = allowed_reasons;
        allowed.sort();
        allowed.dedup();
        LocalKeyManager {
            kek,
            key_id,
            allowed,
        }
    }

    /// The reasons this manager unwraps for.
    pub fn allowed_reasons(&self) -> &[UnwrapReason] {
        &self.allowed
    }
}

impl KeyManager for LocalKeyManager {
    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn check_reason(&self, reason: UnwrapReason) -> Result<(), KeyError> {
        if self.allowed.contains(&reason) {
            return Ok(());
        }
        Err(KeyError::ReasonNotAllowed {
            key_id: self.key_id.clone(),
            reason,
            allowed: self
                .allowed
                .iter()
                .map(UnwrapReason::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    fn wrap(&self, data_key: &[u8; 32], context: &[u8]) -> Result<Vec<u8>, KeyError> {
        aead_seal(&self.kek, data_key, context).map_err(|e| match e {
            SealError::Randomness(e) => *e,
            SealError::Aead => KeyError::Seal("a data key".into()),
        })
    }

    fn unwrap(
        &self,
        wrapped: &[u8],
        context: &[u8],
        reason: UnwrapReason,
    ) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        // The reason is checked before any decryption is attempted.
        self.check_reason(reason)?;
        let unwrap_error = || KeyError::Unwrap {
            key_id: self.key_id.clone(),
        };
        let plain = aead_open(&self.kek, wrapped, context).ok_or_else(unwrap_error)?;
        let mut key = Zeroizing::new([0u8; 32]);
        if plain.len() != key.len() {
            return Err(unwrap_error());
        }
        key.copy_from_slice(&plain);
        Ok(key)
    }
}

/// Refuses a key file that group or others can read: the key decrypts every protected field.
#[cfg(unix)]
fn check_private(metadata: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "it is readable or writable by group or others (mode {mode:04o}): restrict it with \
             `chmod 600`"
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_metadata: &std::fs::Metadata) -> Result<(), String> {
    Ok(())
}

/// Makes a new file's directory entry durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    if let Some(parent) = path.parent() {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        std::fs::File::open(parent)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::keys::aead::{NONCE_LEN, TAG_LEN};

    /// A manager over a key file in `dir`, made on first use, allowing `allowed`.
    pub(crate) fn manager(dir: &Path, allowed: Vec<UnwrapReason>) -> LocalKeyManager {
        let path = dir.join("kek.hex");
        if !path.exists() {
            LocalKeyManager::generate_key_file(&path).unwrap();
        }
        LocalKeyManager::from_file(&path, allowed).unwrap()
    }

    #[test]
    fn wrap_round_trip_and_context_binding() {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(dir.path(), vec![UnwrapReason::Access]);
        let data_key = [7u8; 32];
        let wrapped = m.wrap(&data_key, b"ctx").unwrap();
        assert_eq!(wrapped.len(), NONCE_LEN + 32 + TAG_LEN);
        assert_eq!(
            *m.unwrap(&wrapped, b"ctx", UnwrapReason::Access).unwrap(),
            data_key
        );
        assert!(matches!(
            m.unwrap(&wrapped, b"other", UnwrapReason::Access),
            Err(KeyError::Unwrap { .. })
        ));
        let mut tampered = wrapped.clone();
        tampered[30] ^= 1;
        assert!(matches!(
            m.unwrap(&tampered, b"ctx", UnwrapReason::Access),
            Err(KeyError::Unwrap { .. })
        ));
        assert!(matches!(
            m.unwrap(&wrapped[..10], b"ctx", UnwrapReason::Access),
            Err(KeyError::Unwrap { .. })
        ));
        // Random nonces: wrapping twice gives different bytes.
        assert_ne!(m.wrap(&data_key, b"ctx").unwrap(), wrapped);
    }

    #[test]
    fn reasons_are_enforced_before_decryption() {
        let dir = tempfile::tempdir().unwrap();
        let open = manager(dir.path(), UnwrapReason::ALL.to_vec());
        let wrapped = open.wrap(&[1u8; 32], b"c").unwrap();
        let none = manager(dir.path(), vec![]);
        for reason in UnwrapReason::ALL {
            let err = none.unwrap(&wrapped, b"c", reason).unwrap_err();
            assert!(
                matches!(&err, KeyError::ReasonNotAllowed { reason: r, .. } if *r == reason),
                "{err:?}"
            );
        }
        let only_access = manager(dir.path(), vec![UnwrapReason::Access]);
        let err = only_access
            .unwrap(&wrapped, b"c", UnwrapReason::Export)
            .unwrap_err();
        assert!(
            err.to_string().contains("allows only [access]")
                && err.to_string().contains("add `export`"),
            "{err}"
        );
        // Even garbage is refused for the reason first.
        assert!(matches!(
            only_access.unwrap(b"x", b"c", UnwrapReason::Migration),
            Err(KeyError::ReasonNotAllowed { .. })
        ));
    }

    #[test]
    fn key_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deep/kek.hex");
        LocalKeyManager::generate_key_file(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let err = LocalKeyManager::generate_key_file(&path).unwrap_err();
        assert!(err.to_string().contains("never overwritten"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);

        let a = LocalKeyManager::from_file(&path, vec![]).unwrap();
        let b = LocalKeyManager::from_file(&path, vec![]).unwrap();
        assert_eq!(a.key_id(), b.key_id());
        assert!(a.key_id().starts_with("local:"));
        assert!(!format!("{a:?}").contains(text.trim()));
        assert!(!a.key_id().contains(&text[..16]));

        let err = LocalKeyManager::from_file(&dir.path().join("missing"), vec![]).unwrap_err();
        assert!(err.to_string().contains("generate_key_file"), "{err}");

        for (name, content) in [
            ("short", "abcd\n"),
            ("nothex", &"zz".repeat(32)),
            ("long", &"a".repeat(300)),
        ] {
            let bad = dir.path().join(name);
            write_private(&bad, content);
            let err = LocalKeyManager::from_file(&bad, vec![]).unwrap_err();
            assert!(matches!(err, KeyError::KeyFile { .. }), "{name}: {err:?}");
            assert!(!err.to_string().contains("zz"), "{err}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = LocalKeyManager::from_file(&path, vec![]).unwrap_err();
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
    }

    fn write_private(path: &Path, content: &str) {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        options
            .open(path)
            .unwrap()
            .write_all(content.as_bytes())
            .unwrap();
    }
}
