//! Unwrapped data keys, kept for a short while, so that reading a subject's protected fields
//! does not read the key store and unwrap the key with the custodian's key on every request.
//!
//! What keeps erasure's promise (the data unreadable at once):
//! - `Envelope::destroy` and `destroy_all` forget the subject's cached keys as they destroy
//!   the stored ones, and a reader that read a key from the store before the destroy cannot
//!   put it back afterwards: every forget moves an epoch on, and a key is cached only if the
//!   epoch has not moved since its reader began;
//! - every entry lives at most `ttl` (1 s by default), so a gateway sharing the key store with
//!   another gateway that destroyed a key stops using it within that time;
//! - with a PostgreSQL key store, `Envelope::forget_on_remote_erasure` forgets a subject's keys
//!   as soon as another gateway's deletion is heard, and every key when deletions may have been
//!   missed, so a longer `ttl` does not delay erasure there;
//! - the key manager's reason check runs on every use, cached or not (`Envelope::data_key`);
//! - it is bounded by configuration, emptied rather than grown when full, and every key is
//!   zeroised when it leaves (the values are `Zeroizing`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::keys::aead::DataKey;

/// How many unwrapped data keys an envelope keeps unless told otherwise.
pub const DEFAULT_DATA_KEY_CACHE_ENTRIES: usize = 10_000;
/// How long an unwrapped data key is kept unless told otherwise.
pub const DEFAULT_DATA_KEY_CACHE_TTL: Duration = Duration::from_secs(1);

pub(crate) struct DataKeyCache {
    capacity: usize,
    ttl: Duration,
    /// Moves on with every forget; see the module's notes.
    epoch: AtomicU64,
    /// By `subject NUL site` (ids never hold a NUL).
    keys: Mutex<HashMap<String, (DataKey, Instant)>>,
}

fn slot(subject: &str, site: &str) -> String {
    format!("{subject}\0{site}")
}

impl DataKeyCache {
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        DataKeyCache {
            capacity,
            ttl,
            epoch: AtomicU64::new(0),
            keys: Mutex::new(HashMap::new()),
        }
    }

    fn enabled(&self) -> bool {
        self.capacity > 0 && !self.ttl.is_zero()
    }

    /// Where a reader stands before it reads a key from the store.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub(crate) fn get(&self, subject: &str, site: &str) -> Option<DataKey> {
        if !self.enabled() {
            return None;
        }
        let slot = slot(subject, site);
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let (key, cached_at) = keys.get(&slot)?;
        if cached_at.elapsed() < self.ttl {
            return Some(key.clone());
        }
        keys.remove(&slot);
        None
    }

    /// Keeps `key`, unless a forget happened since `epoch` (read before the key was).
    pub(crate) fn insert(&self, subject: &str, site: &str, key: &DataKey, epoch: u64) {
        if !self.enabled() {
            return;
        }
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        // Under the lock, so a forget is either before this check or after the insert.
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if keys.len() >= self.capacity {
            keys.clear();
        }
        keys.insert(slot(subject, site), (key.clone(), Instant::now()));
    }

    /// Forgets every cached key of `subject`.
    pub(crate) fn forget(&self, subject: &str) {
        let prefix = slot(subject, "");
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        keys.retain(|slot, _| !slot.starts_with(&prefix));
    }

    /// Forgets every cached key (deletions may have been missed).
    pub(crate) fn forget_all(&self) {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        keys.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    fn key(byte: u8) -> DataKey {
        Zeroizing::new([byte; 32])
    }

    #[test]
    fn keys_are_kept_until_forgotten() {
        let cache = DataKeyCache::new(10, Duration::from_secs(60));
        let epoch = cache.epoch();
        cache.insert("alice", "us-east", &key(1), epoch);
        cache.insert("alice", "eu-west", &key(2), epoch);
        assert_eq!(*cache.get("alice", "us-east").unwrap(), [1; 32]);
        assert_eq!(cache.get("bob", "us-east"), None);
        cache.forget("alice");
        assert_eq!(cache.get("alice", "us-east"), None);
        assert_eq!(cache.get("alice", "eu-west"), None);
    }

    #[test]
    fn forgetting_all_empties_and_moves_the_epoch() {
        let cache = DataKeyCache::new(10, Duration::from_secs(60));
        let epoch = cache.epoch();
        cache.insert("alice", "us-east", &key(1), epoch);
        cache.insert("bob", "eu-west", &key(2), epoch);
        cache.forget_all();
        assert_eq!(cache.get("alice", "us-east"), None);
        assert_eq!(cache.get("bob", "eu-west"), None);
        // A reader that began before is not let back in.
        cache.insert("alice", "us-east", &key(1), epoch);
        assert_eq!(cache.get("alice", "us-east"), None);
    }

    #[test]
    fn a_key_read_before_a_forget_is_not_kept() {
        let cache = DataKeyCache::new(10, Duration::from_secs(60));
        let epoch = cache.epoch();
        // An erasure destroys and forgets while this reader is unwrapping.
        cache.forget("alice");
        cache.insert("alice", "us-east", &key(1), epoch);
        assert_eq!(cache.get("alice", "us-east"), None);
    }

    #[test]
    fn keys_expire_and_the_size_is_bounded() {
        let cache = DataKeyCache::new(2, Duration::from_millis(50));
        let epoch = cache.epoch();
        cache.insert("a", "s", &key(1), epoch);
        cache.insert("b", "s", &key(2), epoch);
        cache.insert("c", "s", &key(3), epoch);
        assert_eq!(cache.get("a", "s"), None, "emptied when full");
        assert!(cache.get("c", "s").is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get("c", "s"), None, "expired");
    }

    #[test]
    fn zero_entries_or_zero_ttl_keep_nothing() {
        for cache in [
            DataKeyCache::new(0, Duration::from_secs(1)),
            DataKeyCache::new(10, Duration::ZERO),
        ] {
            cache.insert("a", "s", &key(1), cache.epoch());
            assert_eq!(cache.get("a", "s"), None);
        }
    }
}
