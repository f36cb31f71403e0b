//! Encryption at rest of protected fields: envelope encryption with per-(subject, site) data
//! keys, wrapped by the custodian's key-encryption key.
//!
//! - A [`KeyManager`] holds the custodian's key-encryption key (KEK) and never hands it out:
//!   it only wraps and unwraps data keys. [`LocalKeyManager`] keeps the KEK in a file; a cloud
//!   KMS or an HSM can implement the same trait. Unwrapping names an [`UnwrapReason`], and a
//!   manager refuses every reason it was not configured to allow.
//! - A [`DataKeyStore`] is the custodian's store of wrapped data keys, one per
//!   (subject, site): a SQLite file, or a PostgreSQL database that several gateways share. It
//!   is separate from the site stores, so a copy of a site store holds no key. Destroying a
//!   key makes every copy of the data it protected unreadable (crypto-shredding): SQLite
//!   deletes with `secure_delete`, so the key's bytes are overwritten; PostgreSQL leaves them
//!   in dead rows, WAL and backups until those are gone, which the operator must cover
//!   (`store/postgres.rs`). On PostgreSQL each deletion is announced (`NOTIFY`), and
//!   [`Envelope::forget_on_remote_erasure`] makes a gateway drop the keys it cached at once.
//! - An [`Envelope`] ties the two together and seals field values: a protected field is stored
//!   as `"sov:enc:v1:" + base64(nonce || ciphertext)`, with the field's place (subject, site,
//!   collection, record key, field name) as associated data, so a ciphertext copied to another
//!   place does not decrypt.
//!
//! Both AEADs are XChaCha20-Poly1305 with a random 192-bit nonce: random nonces that long
//! never collide in practice, so no nonce counter has to be kept durable.
//!
//! Errors name subjects, sites, collections, fields and key ids, never a value or a key byte.
//!
//! One module a job: `error.rs` (what fails, and the unwrap reasons), `aead.rs` (the cipher),
//! `manager.rs` (the KEK), `store/` (the wrapped keys: `sqlite.rs`, `postgres.rs`), `cache.rs`
//! (unwrapped keys, briefly), `envelope.rs` (data keys and fields).
//! This module only names what the rest of the crate uses.

mod aead;
mod cache;
mod envelope;
mod error;
mod manager;
mod store;

pub use cache::{DEFAULT_DATA_KEY_CACHE_ENTRIES, DEFAULT_DATA_KEY_CACHE_TTL};
pub use envelope::Envelope;
pub(crate) use envelope::Place;
pub use error::{FieldPlace, KeyError, UnwrapReason};
pub use manager::{KeyManager, LocalKeyManager};
pub use store::{DataKeyStore, Deleted, ListenerHandle, WrappedKey};
