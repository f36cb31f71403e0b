//! The monitor's engine: verify a whole tiled log from what it serves.
//!
//! [`verify_log`] trusts nothing but the log's verifier key and, optionally, the
//! checkpoint the monitor kept from last time. Everything else — checkpoint, hash
//! tiles at every level, entry bundles — is fetched through a [`TileFetcher`] and
//! checked: the root is recomputed from the leaf hashes, every higher-level tile
//! hash is compared with the subtree it stands for, every entry is hashed and
//! compared with its leaf hash, and the old checkpoint's root is recomputed from
//! the new tree. The engine does no I/O itself; the fetcher does (HTTP, files, memory).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use thiserror::Error;

use crate::bundle::{BundleError, decode_bundle};
use crate::checkpoint::{Checkpoint, CheckpointError, open_checkpoint};
use crate::hash::{EMPTY_TREE_HASH, HASH_SIZE, Hash, hash_to_base64, leaf_hash, node_hash};
use crate::note::Verifier;
use crate::tile::{FULL_TILE_WIDTH, TILE_HEIGHT, Tile, TileReader};
use crate::tree::BoxError;

/// Where the log's files come from. Paths are relative to the log's prefix:
/// `checkpoint`, `tile/<L>/<N>[.p/<W>]`, `tile/entries/<N>[.p/<W>]`.
pub trait TileFetcher {
    /// Returns the file's bytes, `Ok(None)` if the log does not serve it (HTTP 404,
    /// no such file), or an error for anything else.
    fn fetch(&self, path: &str) -> Result<Option<Vec<u8>>, FetchError>;

    /// How many entries the server said its log held when it last served `checkpoint`, if
    /// it said (a log's server may publish checkpoints behind its log). Unverified and only
    /// informative: it tells a reader how much a check of that checkpoint leaves out.
    fn log_size_hint(&self) -> Option<u64> {
        None
    }
}

impl<T: TileFetcher + ?Sized> TileFetcher for &T {
    fn fetch(&self, path: &str) -> Result<Option<Vec<u8>>, FetchError> {
        (**self).fetch(path)
    }

    fn log_size_hint(&self) -> Option<u64> {
        (**self).log_size_hint()
    }
}

impl<T: TileFetcher + ?Sized> TileFetcher for Box<T> {
    fn fetch(&self, path: &str) -> Result<Option<Vec<u8>>, FetchError> {
        (**self).fetch(path)
    }

    fn log_size_hint(&self) -> Option<u64> {
        (**self).log_size_hint()
    }
}

/// An in-memory log: path to bytes.
impl TileFetcher for HashMap<String, Vec<u8>> {
    fn fetch(&self, path: &str) -> Result<Option<Vec<u8>>, FetchError> {
        Ok(self.get(path).cloned())
    }
}

/// A log mirrored in a directory (the layout a static tile server serves).
#[derive(Clone, Debug)]
pub struct DirFetcher {
    root: PathBuf,
}

impl DirFetcher {
    /// Serves paths below `root`.
    pub fn new(root: impl Into<PathBuf>) -> DirFetcher {
        DirFetcher { root: root.into() }
    }
}

impl TileFetcher for DirFetcher {
    fn fetch(&self, path: &str) -> Result<Option<Vec<u8>>, FetchError> {
        // Only plain relative paths: the engine never asks for anything else, and a
        // fetcher should not be talked into reading outside its directory.
        if !Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(FetchError::new(format!("refusing path {path:?}")));
        }
        match std::fs::read(self.root.join(path)) {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FetchError::new(e)),
        }
    }
}

/// A fetcher's error (network, disk, ...).
#[derive(Debug, Error)]
#[error(transparent)]
pub struct FetchError(BoxError);

impl FetchError {
    /// Wraps any error or message.
    pub fn new(e: impl Into<BoxError>) -> FetchError {
        FetchError(e.into())
    }

    /// The wrapped error, for a caller that tells kinds of fetch failure apart.
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

/// Why a log failed verification. Each names the first mismatch found: which
/// file or entry, and what differed.
#[derive(Debug, Error)]
pub enum VerifyError {
    /// The fetcher failed.
    #[error("fetching {path}: {source}")]
    Fetch {
        /// The file.
        path: String,
        /// The fetcher's error.
        #[source]
        source: FetchError,
    },
    /// A file the tree needs is not served.
    #[error("{path} is not served by the log")]
    Missing {
        /// The file (for partial tiles, also the full tile tried as a fallback).
        path: String,
    },
    /// The checkpoint did not open: bad signature, unknown key, malformed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The checkpoint is for another log than the previous one.
    #[error("checkpoint is for log {origin:?}, but the previous checkpoint was for {previous:?}")]
    OriginChanged {
        /// The previous checkpoint's origin.
        previous: String,
        /// The new checkpoint's origin.
        origin: String,
    },
    /// The log is smaller than it was: entries were removed.
    #[error("the log shrank from {previous_size} to {size} entries: it was truncated or forked")]
    Truncated {
        /// The previous checkpoint's size.
        previous_size: u64,
        /// The new checkpoint's size.
        size: u64,
    },
    /// The first `size` entries of the log no longer hash to what the previous
    /// checkpoint said: history was rewritten.
    #[error(
        "the log forked: its first {size} entries now hash to {}, but the previous checkpoint says {}",
        hash_to_base64(.computed),
        hash_to_base64(.previous)
    )]
    Fork {
        /// The previous checkpoint's size.
        size: u64,
        /// The previous checkpoint's root hash.
        previous: Hash,
        /// The root of the same size, recomputed from the log as served now.
        computed: Hash,
    },
    /// A tile of the wrong length.
    #[error("{path} is {got} bytes, want {want}")]
    TileSize {
        /// The tile.
        path: String,
        /// Bytes served.
        got: usize,
        /// Bytes expected.
        want: usize,
    },
    /// An entry bundle that does not decode to the tile's width.
    #[error("{path}: {source}")]
    Bundle {
        /// The bundle.
        path: String,
        /// What is wrong with it.
        #[source]
        source: BundleError,
    },
    /// An entry whose leaf hash is not the one in the level-0 tile.
    #[error(
        "entry {index} (in {bundle}) hashes to {}, but {tile} has {}",
        hash_to_base64(.entry_hash),
        hash_to_base64(.tile_hash)
    )]
    LeafMismatch {
        /// The entry's index in the log.
        index: u64,
        /// The entry bundle it came from.
        bundle: String,
        /// The level-0 tile.
        tile: String,
        /// The entry's leaf hash.
        entry_hash: Hash,
        /// The leaf hash in the tile.
        tile_hash: Hash,
    },
    /// A higher-level tile hash that is not the hash of the entries it covers.
    #[error(
        "{path}: hash {position} is {}, but entries {first}..={last} hash to {}",
        hash_to_base64(.tile_hash),
        hash_to_base64(.computed)
    )]
    TileHashMismatch {
        /// The tile.
        path: String,
        /// Position of the hash in the tile.
        position: usize,
        /// First entry covered.
        first: u64,
        /// Last entry covered.
        last: u64,
        /// The hash in the tile.
        tile_hash: Hash,
        /// The hash recomputed from the entries' leaf hashes.
        computed: Hash,
    },
    /// The entries do not hash to the checkpoint's root.
    #[error(
        "the log's {size} entries hash to root {}, but the checkpoint says {}",
        hash_to_base64(.computed),
        hash_to_base64(.checkpoint)
    )]
    RootMismatch {
        /// The tree size.
        size: u64,
        /// The checkpoint's root hash.
        checkpoint: Hash,
        /// The root recomputed from the leaf hashes.
        computed: Hash,
    },
    /// The caller's `on_entry` rejected an entry.
    #[error("entry {index}: {message}")]
    Entry {
        /// The entry's index.
        index: u64,
        /// The caller's message.
        message: String,
    },
}

/// The per-entry callback of [`verify_log`]: `(index, entry)`, `Err(message)` to stop.
pub type OnEntry<'a> = dyn FnMut(u64, &[u8]) -> Result<(), String> + 'a;

/// Verifies the whole log that `fetcher` serves.
///
/// 1. Fetches `checkpoint` and opens it with `verifier` (signature, format, origin).
/// 2. With a `previous` checkpoint: same origin, size not smaller, and, while
///    streaming, the root of its size recomputed from the new log must equal its
///    hash (otherwise the log forked or was truncated).
/// 3. Fetches every level-0 tile and entry bundle in order; checks each entry's
///    leaf hash against the tile, then calls `on_entry(index, entry)`.
/// 4. Recomputes the tree from the leaf hashes alone, checks every hash of every
///    higher-level tile against the subtree it stands for, and the final root
///    against the checkpoint.
///
/// Returns the verified checkpoint, to keep as the next `previous`.
/// `progress(done, total)` is called after each tile of 256 entries.
///
/// `on_entry` sees entries as they are checked against their level-0 tile; those
/// tiles are tied to the signed root only when the whole run succeeds, so treat
/// what `on_entry` learned as unverified unless this returns `Ok`. Partial tiles
/// that the log no longer serves are read from the full tile of the same number,
/// as C2SP allows. Memory use is bounded (a few tiles), whatever the log's size.
pub fn verify_log<F: TileFetcher + ?Sized>(
    fetcher: &F,
    verifier: &Verifier,
    previous: Option<&Checkpoint>,
    progress: &mut dyn FnMut(u64, u64),
    on_entry: &mut OnEntry<'_>,
) -> Result<Checkpoint, VerifyError> {
    let note = fetch_required(fetcher, "checkpoint")?;
    let checkpoint = open_checkpoint(&note, verifier)?;
    let size = checkpoint.size;

    if let Some(prev) = previous {
        if prev.origin != checkpoint.origin {
            return Err(VerifyError::OriginChanged {
                previous: prev.origin.clone(),
                origin: checkpoint.origin.clone(),
            });
        }
        if size < prev.size {
            return Err(VerifyError::Truncated {
                previous_size: prev.size,
                size,
            });
        }
        if size == prev.size && checkpoint.hash != prev.hash {
            return Err(VerifyError::Fork {
                size,
                previous: prev.hash,
                computed: checkpoint.hash,
            });
        }
        if prev.size == 0 && prev.hash != EMPTY_TREE_HASH {
            return Err(VerifyError::Fork {
                size: 0,
                previous: prev.hash,
                computed: EMPTY_TREE_HASH,
            });
        }
    }

    progress(0, size);
    let mut tree = Recomputer {
        stack: Vec::with_capacity(64),
        count: 0,
        upper: UpperTiles {
            fetcher,
            size,
            cache: Vec::new(),
        },
    };
    let full = u64::from(FULL_TILE_WIDTH);
    for tile_n in 0..size.div_ceil(full) {
        let width = (size - tile_n * full).min(full) as u16;
        let tile = Tile::new(0, tile_n, width);
        let (tile_path, hashes) = fetch_tile(fetcher, &tile)?;
        let (bundle_path, bundle, bundle_width) = fetch_bundle(fetcher, &tile)?;
        let entries =
            decode_bundle(&bundle, bundle_width).map_err(|source| VerifyError::Bundle {
                path: bundle_path.clone(),
                source,
            })?;
        for (i, entry) in entries.iter().take(usize::from(width)).enumerate() {
            let index = tile_n * full + i as u64;
            let lh = leaf_hash(entry);
            let th: Hash = hashes[i * HASH_SIZE..(i + 1) * HASH_SIZE]
                .try_into()
                .expect("tile length checked");
            if lh != th {
                return Err(VerifyError::LeafMismatch {
                    index,
                    bundle: bundle_path,
                    tile: tile_path,
                    entry_hash: lh,
                    tile_hash: th,
                });
            }
            on_entry(index, entry).map_err(|message| VerifyError::Entry { index, message })?;
            tree.push(lh)?;
            if let Some(prev) = previous
                && tree.count == prev.size
            {
                let computed = tree.root();
                if computed != prev.hash {
                    return Err(VerifyError::Fork {
                        size: prev.size,
                        previous: prev.hash,
                        computed,
                    });
                }
            }
        }
        progress(tree.count, size);
    }

    let computed = tree.root();
    if computed != checkpoint.hash {
        return Err(VerifyError::RootMismatch {
            size,
            checkpoint: checkpoint.hash,
            computed,
        });
    }
    Ok(checkpoint)
}

/// Recomputes the tree from leaf hashes, keeping one hash per complete subtree of
/// the prefix seen so far (one per set bit of the count): O(log n) memory and one
/// node hash per leaf on average.
struct Recomputer<'f, F: ?Sized> {
    /// Roots of the complete subtrees, largest (leftmost) first.
    stack: Vec<Hash>,
    /// Leaves pushed so far.
    count: u64,
    /// Higher-level tiles, checked as the subtrees they hold complete.
    upper: UpperTiles<'f, F>,
}

impl<F: TileFetcher + ?Sized> Recomputer<'_, F> {
    fn push(&mut self, leaf: Hash) -> Result<(), VerifyError> {
        let before = self.count;
        let mut h = leaf;
        let mut height = 0u32;
        // Each trailing 1 bit of the old count is a subtree the new leaf completes.
        while (before >> height) & 1 == 1 {
            let left = self.stack.pop().expect("one subtree per set bit");
            h = node_hash(&left, &h);
            height += 1;
            if height.is_multiple_of(u32::from(TILE_HEIGHT)) {
                // A subtree of 256^k leaves: a level-k tile must hold its hash.
                self.upper.check(height, ((before + 1) >> height) - 1, &h)?;
            }
        }
        self.stack.push(h);
        self.count += 1;
        Ok(())
    }

    /// The root of the leaves pushed so far (RFC 6962: fold from the right).
    fn root(&self) -> Hash {
        let mut it = self.stack.iter().rev();
        let Some(&last) = it.next() else {
            return EMPTY_TREE_HASH;
        };
        it.fold(last, |right, left| node_hash(left, &right))
    }
}

/// The tiles above level 0, fetched when first needed, one per level at a time
/// (subtrees complete in order, so each tile is fetched once).
struct UpperTiles<'f, F: ?Sized> {
    fetcher: &'f F,
    size: u64,
    /// By level (index 0 unused): the tile, the path it was read from, its data.
    cache: Vec<Option<(Tile, String, Vec<u8>)>>,
}

impl<F: TileFetcher + ?Sized> UpperTiles<'_, F> {
    /// Checks that the subtree of height `height` (a multiple of 8) and number
    /// `index` at that height, whose hash was recomputed as `h`, is what the tile
    /// holding it says.
    fn check(&mut self, height: u32, index: u64, h: &Hash) -> Result<(), VerifyError> {
        let tile_height = u32::from(TILE_HEIGHT);
        let level = (height / tile_height) as usize;
        let n = index >> tile_height;
        let position = (index & (u64::from(FULL_TILE_WIDTH) - 1)) as usize;
        if self.cache.len() <= level {
            self.cache.resize_with(level + 1, || None);
        }
        let stale = !matches!(&self.cache[level], Some((t, _, _)) if t.n == n);
        if stale {
            let hashes_at_level = self.size >> height;
            let width =
                (hashes_at_level - (n << tile_height)).min(u64::from(FULL_TILE_WIDTH)) as u16;
            let tile = Tile::new(level as u8, n, width);
            let (path, data) = fetch_tile(self.fetcher, &tile)?;
            self.cache[level] = Some((tile, path, data));
        }
        let (_, path, data) = self.cache[level].as_ref().expect("filled above");
        let have: Hash = data[position * HASH_SIZE..(position + 1) * HASH_SIZE]
            .try_into()
            .expect("tile length checked");
        if have != *h {
            return Err(VerifyError::TileHashMismatch {
                path: path.clone(),
                position,
                first: index << height,
                last: ((index + 1) << height) - 1,
                tile_hash: have,
                computed: *h,
            });
        }
        Ok(())
    }
}

fn fetch_optional<F: TileFetcher + ?Sized>(
    fetcher: &F,
    path: &str,
) -> Result<Option<Vec<u8>>, VerifyError> {
    fetcher.fetch(path).map_err(|source| VerifyError::Fetch {
        path: path.to_string(),
        source,
    })
}

fn fetch_required<F: TileFetcher + ?Sized>(
    fetcher: &F,
    path: &str,
) -> Result<Vec<u8>, VerifyError> {
    fetch_optional(fetcher, path)?.ok_or_else(|| VerifyError::Missing {
        path: path.to_string(),
    })
}

/// Fetches a hash tile's data, exactly `width * 32` bytes. A partial tile the log
/// no longer serves is read as the prefix of the full tile of the same number.
/// Returns the path actually read, for error messages.
fn fetch_tile<F: TileFetcher + ?Sized>(
    fetcher: &F,
    tile: &Tile,
) -> Result<(String, Vec<u8>), VerifyError> {
    let want = usize::from(tile.width) * HASH_SIZE;
    let path = tile.path();
    let (path, mut data, expect) = match fetch_optional(fetcher, &path)? {
        Some(data) => (path, data, want),
        None if !tile.is_full() => {
            let full = tile.full().path();
            match fetch_optional(fetcher, &full)? {
                Some(data) => (full, data, usize::from(FULL_TILE_WIDTH) * HASH_SIZE),
                None => {
                    return Err(VerifyError::Missing {
                        path: format!("{path} (nor {full})"),
                    });
                }
            }
        }
        None => return Err(VerifyError::Missing { path }),
    };
    if data.len() != expect {
        return Err(VerifyError::TileSize {
            path,
            got: data.len(),
            want: expect,
        });
    }
    data.truncate(want);
    Ok((path, data))
}

/// Fetches the entry bundle of a level-0 tile, with the same fallback as
/// [`fetch_tile`]. Returns the path read, the data and the number of entries it
/// must hold.
fn fetch_bundle<F: TileFetcher + ?Sized>(
    fetcher: &F,
    tile: &Tile,
) -> Result<(String, Vec<u8>, usize), VerifyError> {
    let path = tile.entries_path();
    if let Some(data) = fetch_optional(fetcher, &path)? {
        return Ok((path, data, usize::from(tile.width)));
    }
    if tile.is_full() {
        return Err(VerifyError::Missing { path });
    }
    let full = tile.full().entries_path();
    match fetch_optional(fetcher, &full)? {
        Some(data) => Ok((full, data, usize::from(FULL_TILE_WIDTH))),
        None => Err(VerifyError::Missing {
            path: format!("{path} (nor {full})"),
        }),
    }
}

/// Reads hash tiles through a [`TileFetcher`], for a
/// [`TileHashReader`](crate::tile::TileHashReader): lets a monitor compute
/// inclusion and consistency proofs from the tiles a log serves.
#[derive(Clone, Copy, Debug)]
pub struct FetcherTileReader<'a, F: ?Sized>(pub &'a F);

impl<F: TileFetcher + ?Sized> TileReader for FetcherTileReader<'_, F> {
    type Error = VerifyError;
    fn read_tiles(&self, tiles: &[Tile]) -> Result<Vec<Vec<u8>>, VerifyError> {
        tiles.iter().map(|t| Ok(fetch_tile(self.0, t)?.1)).collect()
    }
}
