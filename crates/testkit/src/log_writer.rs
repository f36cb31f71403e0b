//! A minimal in-memory log writer for tests and benches: appends entries, and
//! publishes tiles, entry bundles and a signed checkpoint the way a tiled log
//! server does (only the tiles that changed since the last publication).

use std::collections::HashMap;

use tlog::checkpoint::{Checkpoint, sign_checkpoint};
use tlog::note::Signer;
use tlog::{Hash, TILE_HEIGHT, encode_bundle, new_tiles, read_tile_data, stored_hashes, tree_hash};

pub struct LogWriter {
    pub signer: Signer,
    pub store: Vec<Hash>,
    pub entries: Vec<Vec<u8>>,
    pub files: HashMap<String, Vec<u8>>,
    published: u64,
}

impl LogWriter {
    pub fn new(origin: &str, seed: u8) -> LogWriter {
        LogWriter {
            signer: Signer::from_ed25519_seed(origin, &[seed; 32]).unwrap(),
            store: Vec::new(),
            entries: Vec::new(),
            files: HashMap::new(),
            published: 0,
        }
    }

    pub fn append(&mut self, entry: Vec<u8>) {
        let n = self.entries.len() as u64;
        let new = stored_hashes(n, &entry, &self.store).unwrap();
        self.store.extend(new);
        self.entries.push(entry);
    }

    pub fn size(&self) -> u64 {
        self.entries.len() as u64
    }

    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            origin: self.signer.name().to_string(),
            size: self.size(),
            hash: tree_hash(self.size(), &self.store).unwrap(),
            extensions: Vec::new(),
        }
    }

    /// Writes the new and widened tiles and bundles, and a new checkpoint.
    /// Older partial tiles stay, as on a static file server.
    pub fn publish(&mut self) -> Checkpoint {
        let size = self.size();
        for tile in new_tiles(TILE_HEIGHT, self.published, size) {
            let data = read_tile_data(&tile, &self.store).unwrap();
            self.files.insert(tile.path(), data);
            if tile.level == 0 {
                let start = (tile.n << TILE_HEIGHT) as usize;
                let end = start + usize::from(tile.width);
                let bundle =
                    encode_bundle(self.entries[start..end].iter().map(Vec::as_slice)).unwrap();
                self.files.insert(tile.entries_path(), bundle);
            }
        }
        self.published = size;
        let cp = self.checkpoint();
        self.files.insert(
            "checkpoint".to_string(),
            sign_checkpoint(&cp, &self.signer).unwrap(),
        );
        cp
    }
}

/// The entry a test log holds at `i`: a few dozen bytes, like a logged decision.
pub fn entry(i: u64) -> Vec<u8> {
    format!(
        "{{\"i\":{i},\"decision\":\"allow\",\"principal\":\"user-{}\"}}",
        i % 97
    )
    .into_bytes()
}
