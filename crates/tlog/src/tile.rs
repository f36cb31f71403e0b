//! Tiles, per [C2SP tlog-tiles](https://c2sp.org/tlog-tiles), after Go's
//! `sumdb/tlog/tile.go`.
//!
//! A tile of height H at level L, number N, lists W consecutive hashes at tree
//! height H*L, starting at hash number N * 2^H. A full tile lists 2^H hashes and
//! stands for the whole subtree of height H with those hashes as leaves; a partial
//! tile lists fewer. C2SP fixes H = 8 ([`TILE_HEIGHT`]), so a full tile is 256
//! hashes, 8,192 bytes. The entries whose leaf hashes a level-0 tile holds are
//! served as an "entry bundle" with the same number and width
//! ([`Tile::entries_path`], and [`crate::bundle`] for the format).

use std::collections::HashMap;
use std::fmt;

use thiserror::Error;

use crate::hash::{HASH_SIZE, Hash, node_hash};
use crate::tree::{
    BoxError, HashReader, TreeError, split_stored_hash_index, stored_hash_index, sub_tree_index,
};

/// The tile height C2SP tlog-tiles prescribes.
pub const TILE_HEIGHT: u8 = 8;

/// The number of hashes (or entries) in a full tile of height [`TILE_HEIGHT`].
pub const FULL_TILE_WIDTH: u16 = 1 << TILE_HEIGHT;

/// One tile: `width` consecutive hashes at tree height `height * level`,
/// starting at hash number `n << height`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tile {
    /// Height of the tile (1..=30); C2SP uses 8.
    pub height: u8,
    /// Level in the tiling (0..=63); level 0 holds leaf hashes.
    pub level: u8,
    /// Number of the tile within its level.
    pub n: u64,
    /// Number of hashes in the tile (1..=2^height); 2^height is a full tile.
    pub width: u16,
}

/// What a tile path names: a tile of hashes, or the entry bundle that goes with
/// the level-0 tile of the same number and width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileKind {
    /// `tile/<L>/<N>[.p/<W>]`: Merkle tree hashes.
    Hashes,
    /// `tile/entries/<N>[.p/<W>]`: log entries.
    Entries,
}

/// Errors about tiles.
#[derive(Debug, Error)]
pub enum TileError {
    /// A path that is not a canonical C2SP tile path.
    #[error("malformed tile path {0:?}")]
    BadPath(String),
    /// Tile coordinates out of range.
    #[error("invalid tile {0:?}")]
    InvalidTile(Tile),
    /// Tile data of the wrong length.
    #[error("{path} is {got} bytes, want {want}")]
    DataLength {
        /// The tile's path.
        path: String,
        /// Bytes received.
        got: usize,
        /// Bytes expected.
        want: usize,
    },
    /// A stored hash asked of a tile that does not hold it.
    #[error("stored hash {index} is in {holder}, not {path}")]
    WrongTile {
        /// The stored hash index.
        index: u64,
        /// The tile that holds it.
        holder: String,
        /// The tile that was given.
        path: String,
    },
    /// A stored hash that is not part of the tree being read.
    #[error("stored hash {index} is not in the tree of size {size}")]
    IndexNotInTree {
        /// The stored hash index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// Tiles that do not hash to the trusted tree hash.
    #[error("tiles {paths} do not hash to the tree hash of size {size}")]
    RootMismatch {
        /// The tiles used to recompute the root, space separated.
        paths: String,
        /// The tree size.
        size: u64,
    },
    /// A full tile whose hash does not match the hash its parent tile holds.
    #[error("{path} does not hash to the value its parent tile {parent} holds")]
    ParentMismatch {
        /// The inconsistent tile.
        path: String,
        /// Its parent tile.
        parent: String,
    },
    /// The tile reader failed.
    #[error("reading tiles: {0}")]
    Read(#[source] BoxError),
    /// The tile reader broke its contract.
    #[error("tile reader returned {got} tiles for {want}")]
    ShortRead {
        /// Tiles asked for.
        want: usize,
        /// Tiles returned.
        got: usize,
    },
}

/// Directory listings stay small: N is written three digits at a time.
const PATH_BASE: u64 = 1000;

impl Tile {
    /// The level-`level` tile of height [`TILE_HEIGHT`] with number `n` and `width` hashes.
    pub fn new(level: u8, n: u64, width: u16) -> Tile {
        Tile {
            height: TILE_HEIGHT,
            level,
            n,
            width,
        }
    }

    /// Whether the tile lists all 2^height hashes.
    pub fn is_full(&self) -> bool {
        u32::from(self.width) == 1u32 << self.height
    }

    /// The full-width tile with the same coordinates (a partial tile's hashes are a
    /// prefix of it, since tiles never change once written).
    pub fn full(&self) -> Tile {
        Tile {
            width: 1 << self.height,
            ..*self
        }
    }

    /// The C2SP path of this tile of hashes: `tile/<L>/<N>[.p/<W>]`.
    pub fn path(&self) -> String {
        format!("tile/{}/{}", self.level, self.suffix())
    }

    /// The C2SP path of the entry bundle that goes with this level-0 tile:
    /// `tile/entries/<N>[.p/<W>]`. (Only level-0 tiles have bundles; the level is
    /// ignored here.)
    pub fn entries_path(&self) -> String {
        format!("tile/entries/{}", self.suffix())
    }

    /// `<N>[.p/<W>]`, with N as `x001/x234/067` for 1234067.
    fn suffix(&self) -> String {
        let mut n = self.n;
        let mut s = format!("{:03}", n % PATH_BASE);
        while n >= PATH_BASE {
            n /= PATH_BASE;
            s = format!("x{:03}/{s}", n % PATH_BASE);
        }
        if !self.is_full() {
            s.push_str(&format!(".p/{}", self.width));
        }
        s
    }

    /// Whether the coordinates are in range.
    fn is_valid(&self) -> bool {
        (1..=30).contains(&self.height)
            && self.level < 64
            && self.width >= 1
            && u32::from(self.width) <= 1u32 << self.height
    }
}

impl fmt::Display for Tile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

/// Parses a C2SP tile path (`tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]`),
/// accepting only the canonical form (no leading zeros, 3-digit groups, W < 256).
/// For entry bundles the returned tile is the matching level-0 tile.
pub fn parse_tile_path(path: &str) -> Result<(TileKind, Tile), TileError> {
    let bad = || TileError::BadPath(path.to_string());
    let rest = path.strip_prefix("tile/").ok_or_else(bad)?;
    let mut parts: Vec<&str> = rest.split('/').collect();
    if parts.len() < 2 {
        return Err(bad());
    }
    let (kind, level) = match parts[0] {
        "entries" => (TileKind::Entries, 0),
        l => (
            TileKind::Hashes,
            parse_decimal(l).filter(|&l| l < 64).ok_or_else(bad)? as u8,
        ),
    };
    let mut width = FULL_TILE_WIDTH;
    let second_last = parts[parts.len() - 2];
    if let Some(stripped) = second_last.strip_suffix(".p") {
        let w = parse_decimal(parts[parts.len() - 1])
            .filter(|&w| (1..u64::from(FULL_TILE_WIDTH)).contains(&w))
            .ok_or_else(bad)?;
        width = w as u16;
        let k = parts.len() - 2;
        parts[k] = stripped;
        parts.pop();
    }
    let groups = &parts[1..];
    if groups.is_empty() {
        return Err(bad());
    }
    let mut n: u64 = 0;
    for (i, g) in groups.iter().enumerate() {
        let digits = if i + 1 < groups.len() {
            g.strip_prefix('x').ok_or_else(bad)?
        } else {
            g
        };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let v: u64 = digits.parse().map_err(|_| bad())?;
        n = n
            .checked_mul(PATH_BASE)
            .and_then(|n| n.checked_add(v))
            .ok_or_else(bad)?;
    }
    let tile = Tile::new(level, n, width);
    // The canonical encoding is unique: anything that does not round-trip (such as
    // "x000/001" for 1) is rejected.
    let canonical = match kind {
        TileKind::Hashes => tile.path(),
        TileKind::Entries => tile.entries_path(),
    };
    if canonical != path {
        return Err(bad());
    }
    Ok((kind, tile))
}

/// Parses a decimal with no sign and no leading zeros ("0" itself is fine).
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

/// Returns the tile of the given height, and of least width, that holds the
/// stored hash with the given index.
///
/// # Panics
///
/// If `height` is not in 1..=30.
pub fn tile_for_index(height: u8, index: u64) -> Tile {
    tile_for_index_range(height, index).0
}

/// Like [`tile_for_index`], also returning the byte range of the tile data whose
/// hashes, hashed together, give the stored hash.
fn tile_for_index_range(height: u8, index: u64) -> (Tile, usize, usize) {
    assert!(
        (1..=30).contains(&height),
        "tile height {height} out of range"
    );
    let h = u32::from(height);
    let (level, n) = split_stored_hash_index(index);
    let tile_level = level / h;
    let level_in_tile = level - tile_level * h;
    // The hash is the subtree over 2^level_in_tile consecutive tile hashes.
    let tile_n = (n << level_in_tile) >> h;
    let n_in_tile = n - ((tile_n << h) >> level_in_tile);
    let width = (n_in_tile + 1) << level_in_tile;
    let tile = Tile {
        height,
        level: tile_level as u8,
        n: tile_n,
        width: width as u16,
    };
    let start = ((n_in_tile << level_in_tile) as usize) * HASH_SIZE;
    let end = (width as usize) * HASH_SIZE;
    (tile, start, end)
}

/// Returns the hash with the given stored hash index from the data of `tile`,
/// which must be the tile [`tile_for_index`] names or a wider one.
pub fn hash_from_tile(tile: &Tile, data: &[u8], index: u64) -> Result<Hash, TileError> {
    if !tile.is_valid() {
        return Err(TileError::InvalidTile(*tile));
    }
    let want = usize::from(tile.width) * HASH_SIZE;
    if data.len() < want {
        return Err(TileError::DataLength {
            path: tile.path(),
            got: data.len(),
            want,
        });
    }
    let (holder, start, end) = tile_for_index_range(tile.height, index);
    if tile.level != holder.level || tile.n != holder.n || tile.width < holder.width {
        return Err(TileError::WrongTile {
            index,
            holder: holder.path(),
            path: tile.path(),
        });
    }
    Ok(tile_hash(&data[start..end]))
}

/// The hash of the subtree whose leaves are the 2^k hashes in `data`.
fn tile_hash(data: &[u8]) -> Hash {
    debug_assert!(data.len() >= HASH_SIZE && (data.len() / HASH_SIZE).is_power_of_two());
    if data.len() == HASH_SIZE {
        return data.try_into().expect("one hash");
    }
    let (l, r) = data.split_at(data.len() / 2);
    node_hash(&tile_hash(l), &tile_hash(r))
}

/// Returns the tiles of the given height that must be (re)written when the tree
/// grows from `old_size` to `new_size`: every tile that is new or wider.
/// (A tree of size zero has no tiles.)
///
/// # Panics
///
/// If `height` is not in 1..=30.
pub fn new_tiles(height: u8, old_size: u64, new_size: u64) -> Vec<Tile> {
    assert!(
        (1..=30).contains(&height),
        "tile height {height} out of range"
    );
    let h = u32::from(height);
    let mut tiles = Vec::new();
    let mut level = 0u32;
    while level * h < 64 && (new_size >> (level * h)) > 0 {
        let old_n = old_size >> (level * h);
        let new_n = new_size >> (level * h);
        if old_n != new_n {
            for n in (old_n >> h)..(new_n >> h) {
                tiles.push(Tile {
                    height,
                    level: level as u8,
                    n,
                    width: 1 << h,
                });
            }
            let n = new_n >> h;
            let w = new_n - (n << h);
            if w > 0 {
                tiles.push(Tile {
                    height,
                    level: level as u8,
                    n,
                    width: w as u16,
                });
            }
        }
        level += 1;
    }
    tiles
}

/// Reads the hashes of `tile` from `r` and returns the tile's data (the hashes
/// concatenated), as a log writes it.
pub fn read_tile_data<R: HashReader + ?Sized>(tile: &Tile, r: &R) -> Result<Vec<u8>, TreeError> {
    let level = u32::from(tile.height) * u32::from(tile.level);
    let start = tile.n << tile.height;
    let indexes: Vec<u64> = (0..u64::from(tile.width))
        .map(|i| stored_hash_index(level, start + i))
        .collect();
    let hashes = r
        .read_hashes(&indexes)
        .map_err(|e| TreeError::Read(Box::new(e)))?;
    if hashes.len() != indexes.len() {
        return Err(TreeError::ShortRead {
            want: indexes.len(),
            got: hashes.len(),
        });
    }
    Ok(hashes.concat())
}

/// A source of tile data, such as a tile server or an on-disk cache.
pub trait TileReader {
    /// The reader's own error type.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The height of the tiles; C2SP logs use [`TILE_HEIGHT`].
    fn height(&self) -> u8 {
        TILE_HEIGHT
    }

    /// Returns the data of each tile, in order. Each must be exactly
    /// `width * 32` bytes. Data from a server is unauthenticated at this point.
    fn read_tiles(&self, tiles: &[Tile]) -> Result<Vec<Vec<u8>>, Self::Error>;

    /// Called with tiles that have been authenticated against the tree hash, so a
    /// caching reader may keep them. The default does nothing.
    fn save_tiles(&self, _tiles: &[Tile], _data: &[Vec<u8>]) {}
}

impl<R: TileReader + ?Sized> TileReader for &R {
    type Error = R::Error;
    fn height(&self) -> u8 {
        (**self).height()
    }
    fn read_tiles(&self, tiles: &[Tile]) -> Result<Vec<Vec<u8>>, Self::Error> {
        (**self).read_tiles(tiles)
    }
    fn save_tiles(&self, tiles: &[Tile], data: &[Vec<u8>]) {
        (**self).save_tiles(tiles, data)
    }
}

/// A [`HashReader`] that reads hashes from tiles and authenticates every tile it
/// uses against a trusted tree size and root hash before returning anything, so a
/// hash it returns is proven to be in that tree. See [`tile_hash_reader`].
#[derive(Debug, Clone)]
pub struct TileHashReader<R> {
    tree_size: u64,
    tree_hash: Hash,
    reader: R,
}

/// Returns a [`TileHashReader`] for the tree of `tree_size` records with root
/// `tree_hash` (taken from a verified checkpoint).
pub fn tile_hash_reader<R: TileReader>(
    tree_size: u64,
    tree_hash: Hash,
    reader: R,
) -> TileHashReader<R> {
    TileHashReader {
        tree_size,
        tree_hash,
        reader,
    }
}

/// Returns `t`'s `k`th parent among the tiles of a tree of size `size`, with the
/// width it has in that tree, or `None` if the tree has no such tile.
fn tile_parent(t: Tile, k: u32, size: u64) -> Option<Tile> {
    let h = u32::from(t.height);
    let level = u32::from(t.level) + k;
    let n = t.n.checked_shr(k * h).unwrap_or(0);
    let hashes_at_level = size.checked_shr(level * h).unwrap_or(0);
    let start = n << h;
    let mut width = 1u64 << h;
    if start + width >= hashes_at_level {
        if start >= hashes_at_level {
            return None;
        }
        width = hashes_at_level - start;
    }
    Some(Tile {
        height: t.height,
        level: level as u8,
        n,
        width: width as u16,
    })
}

impl<R: TileReader> HashReader for TileHashReader<R> {
    type Error = TileError;

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, TileError> {
        let h = self.reader.height();
        let size = self.tree_size;
        let lost = |what: &str| -> TileError {
            // Only reachable through a bug in this file; say so rather than panic
            // inside a verifier.
            TileError::Read(
                format!("bad math in tile hash reader ({what}), tree size {size}").into(),
            )
        };

        let mut tile_order: HashMap<Tile, usize> = HashMap::new();
        let mut tiles: Vec<Tile> = Vec::new();

        // Plan the tiles needed to recompute the tree hash; once it matches, those
        // tiles are authenticated.
        let mut stx = Vec::new();
        sub_tree_index(0, size, &mut stx);
        let mut stx_tile = Vec::with_capacity(stx.len());
        for &x in &stx {
            let t = tile_parent(tile_for_index(h, x), 0, size).ok_or_else(|| lost("root tile"))?;
            let j = *tile_order.entry(t).or_insert_with(|| {
                tiles.push(t);
                tiles.len() - 1
            });
            stx_tile.push(j);
        }
        let num_root_tiles = tiles.len();

        // Plan the tiles holding the requested hashes, along with the parents
        // needed to authenticate them (usually being fetched anyway).
        let limit = stored_hash_index(0, size);
        let mut index_tile = Vec::with_capacity(indexes.len());
        for &x in indexes {
            if x >= limit {
                return Err(TileError::IndexNotInTree { index: x, size });
            }
            let t = tile_for_index(h, x);
            // Walk up until reaching a tile already planned: it will be authenticated.
            let mut k = 0;
            let found = loop {
                let p = tile_parent(t, k, size).ok_or_else(|| lost("no planned ancestor"))?;
                if let Some(&j) = tile_order.get(&p) {
                    break j;
                }
                k += 1;
            };
            if k == 0 {
                index_tile.push(found);
                continue;
            }
            // Walk back down, planning each child after its parent.
            for kk in (0..k).rev() {
                let p = tile_parent(t, kk, size).ok_or_else(|| lost("child tile"))?;
                if !p.is_full() {
                    // A tile that has a parent tile is complete.
                    return Err(lost("partial tile with a parent"));
                }
                tile_order.insert(p, tiles.len());
                tiles.push(p);
            }
            index_tile.push(tiles.len() - 1);
        }

        let data = self
            .reader
            .read_tiles(&tiles)
            .map_err(|e| TileError::Read(Box::new(e)))?;
        if data.len() != tiles.len() {
            return Err(TileError::ShortRead {
                want: tiles.len(),
                got: data.len(),
            });
        }
        for (t, d) in tiles.iter().zip(&data) {
            let want = usize::from(t.width) * HASH_SIZE;
            if d.len() != want {
                return Err(TileError::DataLength {
                    path: t.path(),
                    got: d.len(),
                    want,
                });
            }
        }

        // Authenticate the root tiles against the tree hash: fold the subtree
        // hashes from the right, exactly as tree_hash does.
        let mut th: Option<Hash> = None;
        for (&x, &j) in stx.iter().zip(&stx_tile).rev() {
            let sub = hash_from_tile(&tiles[j], &data[j], x)?;
            th = Some(match th {
                None => sub,
                Some(right) => node_hash(&sub, &right),
            });
        }
        if th.unwrap_or(crate::hash::EMPTY_TREE_HASH) != self.tree_hash {
            let paths: Vec<String> = tiles[..num_root_tiles].iter().map(Tile::path).collect();
            return Err(TileError::RootMismatch {
                paths: paths.join(" "),
                size,
            });
        }

        // Authenticate each remaining (full) tile against its parent, which was
        // planned, and so authenticated, before it.
        for i in num_root_tiles..tiles.len() {
            let t = tiles[i];
            let p = tile_parent(t, 1, size).ok_or_else(|| lost("lost parent"))?;
            let &j = tile_order
                .get(&p)
                .ok_or_else(|| lost("parent not planned"))?;
            let level = u32::from(p.level) * u32::from(p.height);
            let want = hash_from_tile(&p, &data[j], stored_hash_index(level, t.n))?;
            if tile_hash(&data[i]) != want {
                return Err(TileError::ParentMismatch {
                    path: t.path(),
                    parent: p.path(),
                });
            }
        }

        self.reader.save_tiles(&tiles, &data);

        indexes
            .iter()
            .zip(&index_tile)
            .map(|(&x, &j)| hash_from_tile(&tiles[j], &data[j], x))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;
    use crate::tree::{
        check_record, check_tree, prove_record, prove_tree, stored_hashes, tree_hash,
    };
    use std::cell::RefCell;

    #[test]
    fn paths_follow_c2sp() {
        assert_eq!(Tile::new(0, 0, 256).path(), "tile/0/000");
        assert_eq!(Tile::new(0, 1234067, 256).path(), "tile/0/x001/x234/067");
        assert_eq!(Tile::new(2, 1234067, 1).path(), "tile/2/x001/x234/067.p/1");
        assert_eq!(Tile::new(1, 999, 255).path(), "tile/1/999.p/255");
        assert_eq!(Tile::new(0, 1000, 256).path(), "tile/0/x001/000");
        assert_eq!(Tile::new(0, 5, 17).entries_path(), "tile/entries/005.p/17");
        assert_eq!(
            Tile::new(0, 123456789, 256).entries_path(),
            "tile/entries/x123/x456/789"
        );
    }

    #[test]
    fn parse_accepts_exactly_the_canonical_paths() {
        for t in [
            Tile::new(0, 0, 256),
            Tile::new(0, 1234067, 1),
            Tile::new(63, u64::MAX, 255),
            Tile::new(5, 999_999, 256),
        ] {
            assert_eq!(parse_tile_path(&t.path()).unwrap(), (TileKind::Hashes, t));
            assert_eq!(
                parse_tile_path(&t.entries_path()).unwrap(),
                (TileKind::Entries, Tile { level: 0, ..t })
            );
        }
        for bad in [
            "",
            "tile",
            "tile/",
            "tile/0",
            "tile/0/",
            "tile/00/000",
            "tile/01/000",
            "tile/64/000",
            "tile/-1/000",
            "tile/0/0",
            "tile/0/0000",
            "tile/0/x000/001",
            "tile/0/001/001",
            "tile/0/x001",
            "tile/0/000.p/0",
            "tile/0/000.p/256",
            "tile/0/000.p/017",
            "tile/0/000.p/",
            "tile/0/000.p",
            "tile/0/000/",
            "tile/data/000",
            "tile/8/0/000",
            "tiles/0/000",
            "/tile/0/000",
            "tile/entries/000.p/1/",
            "tile/0/x018/x446/x744/x073/x709/x551/616",
        ] {
            assert!(parse_tile_path(bad).is_err(), "{bad:?} parsed");
        }
        // u64::MAX itself is 18446744073709551615.
        assert_eq!(
            parse_tile_path("tile/0/x018/x446/x744/x073/x709/x551/615")
                .unwrap()
                .1
                .n,
            u64::MAX
        );
    }

    #[test]
    fn new_tiles_matches_the_c2sp_example() {
        // "a tree of size 70,000 will be represented by 273 full level 0 tiles, one
        // partial level 0 tile of width 112, one full level 1 tile, one partial
        // level 1 tile of width 17, and one partial level 2 tile of width 1."
        let tiles = new_tiles(8, 0, 70_000);
        let level0: Vec<_> = tiles.iter().filter(|t| t.level == 0).collect();
        assert_eq!(level0.len(), 274);
        assert!(level0[..273].iter().all(|t| t.is_full()));
        assert_eq!(level0[273].width, 112);
        let level1: Vec<_> = tiles.iter().filter(|t| t.level == 1).collect();
        assert_eq!(level1.len(), 2);
        assert!(level1[0].is_full());
        assert_eq!(level1[1].width, 17);
        let level2: Vec<_> = tiles.iter().filter(|t| t.level == 2).collect();
        assert_eq!(level2, [&Tile::new(2, 0, 1)]);
        assert_eq!(tiles.len(), 277);

        // "a tree of size 256 will be represented by a full level 0 tile and a
        // partial level 1 tile of width 1."
        assert_eq!(
            new_tiles(8, 0, 256),
            [Tile::new(0, 0, 256), Tile::new(1, 0, 1)]
        );
        assert!(new_tiles(8, 0, 0).is_empty());
        // Growing from 300 to 600: level-0 tile 1 becomes full, tile 2 is new and
        // partial, and the level-1 tile widens from 1 to 2.
        assert_eq!(
            new_tiles(8, 300, 600),
            [
                Tile::new(0, 1, 256),
                Tile::new(0, 2, 88),
                Tile::new(1, 0, 2)
            ]
        );
        assert!(new_tiles(8, 600, 600).is_empty());
    }

    /// Builds stored hashes for records `i.to_be_bytes()`.
    fn build(n: u64) -> Vec<Hash> {
        let mut store: Vec<Hash> = Vec::new();
        for i in 0..n {
            let hs = stored_hashes(i, &i.to_be_bytes(), &store).unwrap();
            store.extend(hs);
        }
        store
    }

    #[test]
    fn hash_from_tile_agrees_with_the_store() {
        for height in [1u8, 2, 3, 8] {
            let size = 300;
            let store = build(size);
            let tiles = new_tiles(height, 0, size);
            for t in &tiles {
                let data = read_tile_data(t, &store).unwrap();
                assert_eq!(data.len(), usize::from(t.width) * HASH_SIZE);
            }
            for index in 0..store.len() as u64 {
                let t = tile_for_index(height, index);
                // The full tile (or the widest one written) holds it too.
                let data = read_tile_data(&t, &store).unwrap();
                assert_eq!(
                    hash_from_tile(&t, &data, index).unwrap(),
                    store[index as usize]
                );
            }
        }
        let store = build(10);
        let t = tile_for_index(2, 5);
        let data = read_tile_data(&t, &store).unwrap();
        let other = Tile { n: t.n + 1, ..t };
        assert!(matches!(
            hash_from_tile(&other, &data, 5),
            Err(TileError::WrongTile { .. })
        ));
        assert!(matches!(
            hash_from_tile(&t, &data[..data.len() - 1], 5),
            Err(TileError::DataLength { .. })
        ));
    }

    /// An in-memory tile server built from stored hashes, optionally lying about
    /// one tile, counting what it serves.
    struct MemTiles {
        height: u8,
        store: Vec<Hash>,
        corrupt: Option<Tile>,
        served: RefCell<Vec<Tile>>,
    }

    impl TileReader for MemTiles {
        type Error = TreeError;
        fn height(&self) -> u8 {
            self.height
        }
        fn read_tiles(&self, tiles: &[Tile]) -> Result<Vec<Vec<u8>>, TreeError> {
            self.served.borrow_mut().extend_from_slice(tiles);
            tiles
                .iter()
                .map(|t| {
                    let mut d = read_tile_data(t, &self.store)?;
                    if Some(*t) == self.corrupt {
                        d[0] ^= 1;
                    }
                    Ok(d)
                })
                .collect()
        }
    }

    #[test]
    fn tile_hash_reader_serves_authenticated_proofs() {
        for height in [1u8, 2, 3, 8] {
            let full = build(600);
            for size in [1u64, 2, 3, 7, 8, 15, 16, 17, 255, 256, 257, 300, 513, 600] {
                let store = full[..crate::tree::stored_hash_count(size) as usize].to_vec();
                let th = tree_hash(size, &store).unwrap();
                let tiles = MemTiles {
                    height,
                    store,
                    corrupt: None,
                    served: RefCell::new(Vec::new()),
                };
                let r = tile_hash_reader(size, th, &tiles);
                assert_eq!(tree_hash(size, &r).unwrap(), th);
                for n in [0, size / 2, size - 1] {
                    let p = prove_record(size, n, &r).unwrap();
                    check_record(&p, size, &th, n, &leaf_hash(&n.to_be_bytes())).unwrap();
                    if n >= 1 {
                        let old = tree_hash(n, &r).unwrap();
                        let p = prove_tree(size, n, &r).unwrap();
                        check_tree(&p, size, &th, n, &old).unwrap();
                    }
                }
                // Nothing outside the tree.
                let beyond = stored_hash_index(0, size);
                assert!(matches!(
                    r.read_hashes(&[beyond]),
                    Err(TileError::IndexNotInTree { .. })
                ));
            }
        }
    }

    #[test]
    fn tile_hash_reader_rejects_any_corrupt_tile_it_uses() {
        let height = 2;
        let size = 45;
        let store = build(size);
        let th = tree_hash(size, &store).unwrap();
        let mut rejected = 0;
        for corrupt in new_tiles(height, 0, size) {
            let tiles = MemTiles {
                height,
                store: store.clone(),
                corrupt: Some(corrupt),
                served: RefCell::new(Vec::new()),
            };
            let r = tile_hash_reader(size, th, &tiles);
            // Read every leaf hash: each corrupt tile is used by some read.
            for n in 0..size {
                match prove_record(size, n, &r) {
                    Ok(p) => {
                        if tiles.served.borrow().contains(&corrupt) {
                            panic!("served corrupt {corrupt} without error");
                        }
                        check_record(&p, size, &th, n, &leaf_hash(&n.to_be_bytes())).unwrap();
                    }
                    Err(e) => {
                        assert!(tiles.served.borrow().contains(&corrupt), "{e}");
                        let msg = e.to_string();
                        assert!(msg.contains("hash"), "{msg}");
                        rejected += 1;
                        break;
                    }
                }
                tiles.served.borrow_mut().clear();
            }
        }
        assert!(rejected > 0);
    }
}
