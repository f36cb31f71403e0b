//! `tlog`: a standalone transparency log library.
//!
//! It holds the tree math, formats and checks a log server and its monitors
//! share, and nothing else: no storage, no network, no dependency on any other
//! crate of Sovereign, so a monitor can audit a log with this crate alone.
//! The design follows Go's `golang.org/x/mod/sumdb/tlog` and `sumdb/note`: the
//! math is pure functions over a [`HashReader`], and I/O stays with the caller.
//!
//! What it speaks:
//!
//! * RFC 6962 / [RFC 9162 section 2](https://www.rfc-editor.org/rfc/rfc9162#section-2)
//!   Merkle trees: [`leaf_hash`], [`node_hash`], [`tree_hash`], inclusion proofs
//!   ([`prove_record`], [`check_record`]) and consistency proofs ([`prove_tree`],
//!   [`check_tree`]), over hashes stored in Go's dense order ([`stored_hash_index`]).
//! * [C2SP tlog-tiles](https://c2sp.org/tlog-tiles): [`Tile`] paths
//!   (`tile/<L>/<N>[.p/<W>]`, `tile/entries/<N>[.p/<W>]`), which tiles to write
//!   ([`new_tiles`]), reading hashes from tiles authenticated against a root
//!   ([`tile_hash_reader`]), and entry bundles ([`encode_bundle`], [`decode_bundle`]).
//! * [C2SP signed-note](https://c2sp.org/signed-note) with Ed25519 keys: [`note`].
//! * [C2SP tlog-checkpoint](https://c2sp.org/tlog-checkpoint): [`checkpoint`].
//! * [C2SP tlog-proof](https://c2sp.org/tlog-proof): [`proof`].
//! * [C2SP tlog-cosignature](https://c2sp.org/tlog-cosignature) (`cosignature/v1`) and
//!   quorums of witnesses: [`cosignature`]; the [C2SP tlog-witness](https://c2sp.org/tlog-witness)
//!   `add-checkpoint` request: [`witness`].
//!
//! And [`verify::verify_log`], the monitor's engine: given a way to fetch the
//! log's files and the log's key, it checks the signed checkpoint, consistency
//! with the checkpoint seen last time, every tile and every entry.
//!
//! ```
//! use tlog::{check_record, leaf_hash, prove_record, stored_hashes, tree_hash, Hash};
//!
//! // A log writer stores the hashes each appended record adds...
//! let mut store: Vec<Hash> = Vec::new();
//! for (i, record) in [b"a", b"b", b"c"].iter().enumerate() {
//!     let new = stored_hashes(i as u64, *record, &store).unwrap();
//!     store.extend(new);
//! }
//! // ...and proves inclusion against the tree hash; anyone can check the proof.
//! let root = tree_hash(3, &store).unwrap();
//! let proof = prove_record(3, 1, &store).unwrap();
//! check_record(&proof, 3, &root, 1, &leaf_hash(b"b")).unwrap();
//! ```

#![warn(missing_docs)]

pub mod bundle;
pub mod checkpoint;
pub mod cosignature;
pub mod hash;
pub mod note;
pub mod proof;
pub mod tile;
pub mod tree;
pub mod verify;
pub mod witness;

pub use bundle::{BundleError, MAX_ENTRY_SIZE, decode_bundle, encode_bundle};
pub use checkpoint::{Checkpoint, CheckpointError, open_checkpoint, sign_checkpoint};
pub use hash::{
    EMPTY_TREE_HASH, HASH_SIZE, Hash, hash_from_base64, hash_to_base64, leaf_hash, node_hash,
};
pub use tile::{
    FULL_TILE_WIDTH, TILE_HEIGHT, Tile, TileError, TileHashReader, TileKind, TileReader,
    hash_from_tile, new_tiles, parse_tile_path, read_tile_data, tile_for_index, tile_hash_reader,
};
pub use tree::{
    BoxError, HashReader, MissingHash, TreeError, check_record, check_tree, prove_record,
    prove_tree, split_stored_hash_index, stored_hash_count, stored_hash_index, stored_hashes,
    stored_hashes_for_record_hash, tree_hash,
};
pub use verify::{
    DirFetcher, FetchError, FetcherTileReader, OnEntry, TileFetcher, VerifyError, verify_log,
};
