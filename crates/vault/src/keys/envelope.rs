//! Field values sealed under per-(subject, site) data keys: an [`Envelope`] ties the
//! custodian's [`KeyManager`] to its [`DataKeyStore`], makes and unwraps data keys, and
//! seals a protected field as `"sov:enc:v1:" + base64(nonce || ciphertext)`, with the field's
//! place as associated data so that a ciphertext copied to another place does not decrypt.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::keys::aead::{DataKey, SealError, aead_open, aead_seal, random_bytes};
use crate::keys::cache::{
    DEFAULT_DATA_KEY_CACHE_ENTRIES, DEFAULT_DATA_KEY_CACHE_TTL, DataKeyCache,
};
use crate::keys::error::{FieldPlace, KeyError, UnwrapReason};
use crate::keys::manager::KeyManager;
use crate::keys::store::{DataKeyStore, Deleted, ListenerHandle, WrappedKey};

/// Where a field value lives; bound to its ciphertext as associated data.
pub(crate) struct Place<'a> {
    pub subject: &'a str,
    pub site: &'a str,
    pub collection: &'a str,
    pub key: &'a str,
    pub field: &'a str,
}

impl Place<'_> {
    /// `subject \0 site \0 collection \0 key \0 field`. Ids and names cannot contain `\0`, so
    /// two different places never give the same bytes.
    fn associated_data(&self) -> Vec<u8> {
        [
            self.subject,
            self.site,
            self.collection,
            self.key,
            self.field,
        ]
        .join("\0")
        .into_bytes()
    }

    fn named(&self) -> Box<FieldPlace> {
        Box::new(FieldPlace {
            subject: self.subject.into(),
            site: self.site.into(),
            collection: self.collection.into(),
            key: self.key.into(),
            field: self.field.into(),
        })
    }
}

/// The prefix of an encrypted field value.
pub(crate) const ENCRYPTED_PREFIX: &str = "sov:enc:v1:";

/// A key manager and the key store it wraps data keys for.
#[derive(Clone)]
pub struct Envelope {
    manager: Arc<dyn KeyManager>,
    store: Arc<DataKeyStore>,
    /// Unwrapped data keys, briefly (see `cache.rs`).
    cache: Arc<DataKeyCache>,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("key_id", &self.manager.key_id())
            .field("store", &self.store.describe())
            .finish()
    }
}

impl Envelope {
    pub fn new(manager: Arc<dyn KeyManager>, store: DataKeyStore) -> Envelope {
        Envelope {
            manager,
            store: Arc::new(store),
            cache: Arc::new(DataKeyCache::new(
                DEFAULT_DATA_KEY_CACHE_ENTRIES,
                DEFAULT_DATA_KEY_CACHE_TTL,
            )),
        }
    }

    /// Keeps up to `entries` unwrapped data keys, each for at most `ttl` (either 0: none),
    /// instead of the defaults.
    pub fn with_key_cache(mut self, entries: usize, ttl: Duration) -> Envelope {
        self.cache = Arc::new(DataKeyCache::new(entries, ttl));
        self
    }

    /// The key manager's key id.
    pub fn key_id(&self) -> &str {
        self.manager.key_id()
    }

    /// The custodian's key store.
    pub fn key_store(&self) -> &DataKeyStore {
        &self.store
    }

    /// Forgets cached data keys that another gateway sharing this key store destroys, as soon
    /// as it is heard (a subject's keys when it erases or moves the subject, every key when
    /// deletions may have been missed), until the handle is dropped. Call it once, after
    /// [`with_key_cache`](Self::with_key_cache) (which replaces the cache), from a thread that
    /// may block; it connects once before returning.
    ///
    /// With a PostgreSQL key store this runs [`DataKeyStore::listen`]; with a SQLite one it
    /// does nothing (the handle has no thread), and a key destroyed through another envelope
    /// on the same file is dropped when its cache entry expires.
    pub fn forget_on_remote_erasure(&self) -> Result<ListenerHandle, KeyError> {
        let cache = Arc::clone(&self.cache);
        let handle = self.store.listen(move |deleted| match deleted {
            Deleted::Keys { subject, .. } => cache.forget(&subject),
            Deleted::All => cache.forget_all(),
        })?;
        // Deletions before the listening began were not heard.
        self.cache.forget_all();
        Ok(handle)
    }

    /// The sites where `subject` has a data key, sorted.
    pub fn keys_of(&self, subject: &str) -> Result<Vec<String>, KeyError> {
        self.store.sites_of(subject)
    }

    /// Destroys the data key of (subject, site): whatever it encrypted, in this store or in
    /// any copy of it, can no longer be decrypted. Whether there was one.
    pub fn destroy(&self, subject: &str, site: &str) -> Result<bool, KeyError> {
        let destroyed = self.store.delete(subject, Some(site));
        // Whatever the store answered: a key that may be gone is not used again.
        self.cache.forget(subject);
        Ok(destroyed? > 0)
    }

    /// Destroys every data key of `subject`; how many there were.
    pub fn destroy_all(&self, subject: &str) -> Result<u64, KeyError> {
        let destroyed = self.store.delete(subject, None);
        self.cache.forget(subject);
        destroyed
    }

    /// The data key of (subject, site), unwrapped for `reason`.
    pub(crate) fn data_key(
        &self,
        subject: &str,
        site: &str,
        reason: UnwrapReason,
    ) -> Result<DataKey, KeyError> {
        // On every use, also of a key unwrapped earlier for another reason.
        self.manager.check_reason(reason)?;
        if let Some(key) = self.cache.get(subject, site) {
            return Ok(key);
        }
        let epoch = self.cache.epoch();
        let stored = self
            .store
            .get(subject, site)?
            .ok_or_else(|| KeyError::NoDataKey {
                subject: subject.into(),
                site: site.into(),
            })?;
        let key = self.unwrap_stored(subject, site, &stored, reason)?;
        self.cache.insert(subject, site, &key, epoch);
        Ok(key)
    }

    /// The data key of (subject, site), made, wrapped and stored first if there is none. An
    /// existing key is unwrapped for `reason`; a new one needs no unwrapping.
    pub(crate) fn data_key_or_create(
        &self,
        subject: &str,
        site: &str,
        reason: UnwrapReason,
    ) -> Result<DataKey, KeyError> {
        if let Some(key) = self.cache.get(subject, site) {
            // An existing key is used only for a reason it may be unwrapped for.
            self.manager.check_reason(reason)?;
            return Ok(key);
        }
        let epoch = self.cache.epoch();
        if let Some(stored) = self.store.get(subject, site)? {
            let key = self.unwrap_stored(subject, site, &stored, reason)?;
            self.cache.insert(subject, site, &key, epoch);
            return Ok(key);
        }
        let mut fresh = Zeroizing::new([0u8; 32]);
        random_bytes(fresh.as_mut_slice())?;
        let ours = WrappedKey {
            key_id: self.manager.key_id().to_string(),
            wrapped: self.manager.wrap(&fresh, &wrap_context(subject, site))?,
        };
        let stored = self.store.insert_first(subject, site, &ours)?;
        let key = if stored == ours {
            fresh
        } else {
            // Another writer created it first: use theirs.
            self.unwrap_stored(subject, site, &stored, reason)?
        };
        self.cache.insert(subject, site, &key, epoch);
        Ok(key)
    }

    fn unwrap_stored(
        &self,
        subject: &str,
        site: &str,
        stored: &WrappedKey,
        reason: UnwrapReason,
    ) -> Result<DataKey, KeyError> {
        if stored.key_id != self.manager.key_id() {
            return Err(KeyError::WrongKey {
                subject: subject.into(),
                site: site.into(),
                wrapped_by: stored.key_id.clone(),
                held: self.manager.key_id().into(),
            });
        }
        self.manager
            .unwrap(&stored.wrapped, &wrap_context(subject, site), reason)
    }

    /// Encrypts one field value for its place.
    pub(crate) fn seal_field(
        &self,
        key: &DataKey,
        place: &Place<'_>,
        value: &Value,
    ) -> Result<Value, KeyError> {
        let plaintext = Zeroizing::new(serde_json::to_vec(value).map_err(|_| {
            KeyError::Seal(format!(
                "field `{}` of record {}/{}/{}: it cannot be encoded as JSON",
                place.field, place.subject, place.collection, place.key
            ))
        })?);
        let sealed = aead_seal(key, &plaintext, &place.associated_data()).map_err(|e| match e {
            SealError::Randomness(e) => *e,
            SealError::Aead => KeyError::Seal(format!(
                "field `{}` of record {}/{}/{}",
                place.field, place.subject, place.collection, place.key
            )),
        })?;
        Ok(Value::String(format!(
            "{ENCRYPTED_PREFIX}{}",
            BASE64.encode(sealed)
        )))
    }

    /// Decrypts one field value stored at `place`. Anything but a value sealed for exactly
    /// this place under this key is an error, never a value.
    pub(crate) fn open_field(
        &self,
        key: &DataKey,
        place: &Place<'_>,
        stored: &Value,
    ) -> Result<Value, KeyError> {
        let encoded = stored
            .as_str()
            .and_then(|text| text.strip_prefix(ENCRYPTED_PREFIX))
            .ok_or_else(|| KeyError::NotEncrypted(place.named()))?;
        let failed = || KeyError::Decrypt(place.named());
        let sealed = BASE64.decode(encoded).map_err(|_| failed())?;
        let plaintext = aead_open(key, &sealed, &place.associated_data()).ok_or_else(failed)?;
        serde_json::from_slice(&plaintext).map_err(|_| failed())
    }
}

/// What a data key is wrapped for: a wrapped key moved to another subject's or site's row in
/// the key store does not unwrap.
fn wrap_context(subject: &str, site: &str) -> Vec<u8> {
    format!("sov:dek:v1\0{subject}\0{site}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::manager::tests::manager;

    #[test]
    fn data_keys_are_made_once_and_destroyed() {
        let dir = tempfile::tempdir().unwrap();
        let store = DataKeyStore::open(&dir.path().join("keys/keys.db")).unwrap();
        let m: Arc<dyn KeyManager> = Arc::new(manager(dir.path(), vec![UnwrapReason::Access]));
        let envelope = Envelope::new(m, store);
        let first = envelope
            .data_key_or_create("alice", "us", UnwrapReason::Access)
            .unwrap();
        let again = envelope
            .data_key_or_create("alice", "us", UnwrapReason::Access)
            .unwrap();
        assert_eq!(*first, *again);
        assert_eq!(
            *envelope
                .data_key("alice", "us", UnwrapReason::Access)
                .unwrap(),
            *first
        );
        envelope
            .data_key_or_create("alice", "sg", UnwrapReason::Access)
            .unwrap();
        assert_eq!(envelope.keys_of("alice").unwrap(), vec!["sg", "us"]);
        assert!(envelope.destroy("alice", "us").unwrap());
        assert!(!envelope.destroy("alice", "us").unwrap());
        assert!(matches!(
            envelope.data_key("alice", "us", UnwrapReason::Access),
            Err(KeyError::NoDataKey { .. })
        ));
        assert_eq!(envelope.destroy_all("alice").unwrap(), 1);
        assert_eq!(envelope.keys_of("alice").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_cached_key_still_needs_an_allowed_reason_and_dies_with_its_destruction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        let m: Arc<dyn KeyManager> = Arc::new(manager(dir.path(), vec![UnwrapReason::Access]));
        let envelope = Envelope::new(m.clone(), DataKeyStore::open(&path).unwrap())
            .with_key_cache(100, Duration::from_secs(3600));
        let key = envelope
            .data_key_or_create("alice", "us", UnwrapReason::Access)
            .unwrap();
        assert_eq!(
            *envelope
                .data_key("alice", "us", UnwrapReason::Access)
                .unwrap(),
            *key
        );
        // Cached, yet a reason the manager refuses is still refused.
        assert!(matches!(
            envelope.data_key("alice", "us", UnwrapReason::Export),
            Err(KeyError::ReasonNotAllowed { .. })
        ));
        assert!(matches!(
            envelope.data_key_or_create("alice", "us", UnwrapReason::Export),
            Err(KeyError::ReasonNotAllowed { .. })
        ));
        // Destroyed here: gone at once, cache or not.
        assert!(envelope.destroy("alice", "us").unwrap());
        assert!(matches!(
            envelope.data_key("alice", "us", UnwrapReason::Access),
            Err(KeyError::NoDataKey { .. })
        ));
        envelope
            .data_key_or_create("bob", "us", UnwrapReason::Access)
            .unwrap();
        envelope
            .data_key("bob", "us", UnwrapReason::Access)
            .unwrap();
        assert_eq!(envelope.destroy_all("bob").unwrap(), 1);
        assert!(matches!(
            envelope.data_key("bob", "us", UnwrapReason::Access),
            Err(KeyError::NoDataKey { .. })
        ));
    }

    #[test]
    fn a_key_destroyed_by_another_envelope_is_dropped_within_the_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        let m: Arc<dyn KeyManager> = Arc::new(manager(dir.path(), vec![UnwrapReason::Access]));
        let ttl = Duration::from_millis(300);
        let ours =
            Envelope::new(m.clone(), DataKeyStore::open(&path).unwrap()).with_key_cache(100, ttl);
        // Another gateway on the same key store.
        let theirs = Envelope::new(m, DataKeyStore::open(&path).unwrap());
        ours.data_key_or_create("alice", "us", UnwrapReason::Access)
            .unwrap();
        ours.data_key("alice", "us", UnwrapReason::Access).unwrap();
        assert_eq!(theirs.destroy_all("alice").unwrap(), 1);
        std::thread::sleep(ttl + Duration::from_millis(50));
        assert!(matches!(
            ours.data_key("alice", "us", UnwrapReason::Access),
            Err(KeyError::NoDataKey { .. })
        ));
    }

    /// Two gateways on one PostgreSQL key store: the one that did not erase stops using its
    /// cached keys as soon as it hears of the erasure, long before they would expire.
    #[test]
    fn a_key_erased_by_another_gateway_leaves_the_cache_at_once() {
        let Some(server) = pgtest::PgServer::start() else {
            return;
        };
        let url = server.fresh_database();
        let dir = tempfile::tempdir().unwrap();
        let m: Arc<dyn KeyManager> = Arc::new(manager(dir.path(), vec![UnwrapReason::Access]));
        let open = || DataKeyStore::open_url(&url, dir.path()).unwrap();
        let first = Envelope::new(m.clone(), open());
        // Cached for an hour: only the notice can drop them in time.
        let second = Envelope::new(m, open()).with_key_cache(100, Duration::from_secs(3600));
        let _listening = second.forget_on_remote_erasure().unwrap();
        for subject in ["alice", "bob"] {
            for site in ["us", "eu"] {
                second
                    .data_key_or_create(subject, site, UnwrapReason::Access)
                    .unwrap();
                assert!(
                    second.cache.get(subject, site).is_some(),
                    "{subject} {site}"
                );
            }
        }
        let cached = |subject: &str, site: &str| second.cache.get(subject, site).is_some();

        assert!(first.destroy("alice", "us").unwrap());
        gone_within(Duration::from_secs(2), || !cached("alice", "us"));
        assert!(matches!(
            second.data_key("alice", "us", UnwrapReason::Access),
            Err(KeyError::NoDataKey { .. })
        ));
        assert!(
            cached("bob", "us"),
            "only the erased subject's keys are dropped"
        );

        assert_eq!(first.destroy_all("bob").unwrap(), 2);
        gone_within(Duration::from_secs(2), || {
            !cached("bob", "us") && !cached("bob", "eu")
        });
        assert!(matches!(
            second.data_key("bob", "eu", UnwrapReason::Access),
            Err(KeyError::NoDataKey { .. })
        ));

        // Deaf for a moment: every cached key goes, as deletions may have been missed.
        second
            .data_key_or_create("carol", "us", UnwrapReason::Access)
            .unwrap();
        assert!(cached("carol", "us"));
        let db = url.rsplit('/').next().unwrap();
        crate::keys::store::tests::kill_the_listener(&server, db);
        gone_within(Duration::from_secs(2), || !cached("carol", "us"));
    }

    /// Polls `done` until it holds, failing after `within`.
    fn gone_within(within: Duration, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + within;
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "still cached after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_wrapped_key_moved_to_another_row_does_not_unwrap() {
        let dir = tempfile::tempdir().unwrap();
        let m: Arc<dyn KeyManager> = Arc::new(manager(dir.path(), vec![UnwrapReason::Access]));
        let envelope = Envelope::new(m, DataKeyStore::open(&dir.path().join("k.db")).unwrap());
        envelope
            .data_key_or_create("alice", "us", UnwrapReason::Access)
            .unwrap();
        let alice = envelope.store.get("alice", "us").unwrap().unwrap();
        envelope.store.insert_first("bob", "us", &alice).unwrap();
        assert!(matches!(
            envelope.data_key("bob", "us", UnwrapReason::Access),
            Err(KeyError::Unwrap { .. })
        ));
    }

    #[test]
    fn another_kek_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        let a: Arc<dyn KeyManager> = Arc::new(manager(dir.path(), vec![UnwrapReason::Access]));
        Envelope::new(a, DataKeyStore::open(&path).unwrap())
            .data_key_or_create("alice", "us", UnwrapReason::Access)
            .unwrap();
        let b: Arc<dyn KeyManager> = Arc::new(manager(other.path(), vec![UnwrapReason::Access]));
        let err = Envelope::new(b, DataKeyStore::open(&path).unwrap())
            .data_key("alice", "us", UnwrapReason::Access)
            .unwrap_err();
        assert!(matches!(err, KeyError::WrongKey { .. }), "{err:?}");
        assert!(err.to_string().contains("key file that wrote it"), "{err}");
    }

    #[test]
    fn fields_are_bound_to_their_place() {
        let dir = tempfile::tempdir().unwrap();
        let m: Arc<dyn KeyManager> = Arc::new(manager(dir.path(), vec![UnwrapReason::Access]));
        let envelope = Envelope::new(m, DataKeyStore::open(&dir.path().join("k.db")).unwrap());
        let key = envelope
            .data_key_or_create("alice", "us", UnwrapReason::Access)
            .unwrap();
        let place = Place {
            subject: "alice",
            site: "us",
            collection: "profile",
            key: "main",
            field: "email",
        };
        let value = serde_json::json!({"deep": ["secret-marker", 1]});
        let sealed = envelope.seal_field(&key, &place, &value).unwrap();
        let text = sealed.as_str().unwrap();
        assert!(text.starts_with(ENCRYPTED_PREFIX));
        assert!(!text.contains("secret-marker"));
        assert_eq!(envelope.open_field(&key, &place, &sealed).unwrap(), value);

        let moved = Place {
            field: "phone",
            ..place
        };
        let err = envelope.open_field(&key, &moved, &sealed).unwrap_err();
        assert!(matches!(err, KeyError::Decrypt(_)), "{err:?}");
        for bad in [
            serde_json::json!("plain"),
            serde_json::json!(5),
            serde_json::json!(format!("{ENCRYPTED_PREFIX}!!!")),
            serde_json::json!(format!("{ENCRYPTED_PREFIX}AAAA")),
        ] {
            assert!(envelope.open_field(&key, &place, &bad).is_err());
        }
    }
}
