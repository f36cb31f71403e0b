//! Entry bundles, per [C2SP tlog-tiles](https://c2sp.org/tlog-tiles#log-entries):
//! the log entries of one level-0 tile, each as a big-endian `uint16` length
//! followed by that many bytes, concatenated.

use thiserror::Error;

use crate::tile::FULL_TILE_WIDTH;

/// The largest entry a bundle can hold (its length must fit in a `uint16`).
pub const MAX_ENTRY_SIZE: usize = u16::MAX as usize;

/// Errors of encoding or decoding an entry bundle.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BundleError {
    /// An entry longer than [`MAX_ENTRY_SIZE`].
    #[error("entry {index} is {len} bytes; a bundle entry is at most 65535")]
    EntryTooLarge {
        /// Position of the entry in the bundle.
        index: usize,
        /// Its length.
        len: usize,
    },
    /// A bundle must hold between 1 and 256 entries.
    #[error("a bundle holds 1 to 256 entries, not {0}")]
    BadWidth(usize),
    /// The data ends inside an entry, or before all entries.
    #[error("bundle ends at byte {offset}, inside entry {index} of {width}")]
    Truncated {
        /// The entry that is cut short (or missing).
        index: usize,
        /// The bundle's expected number of entries.
        width: usize,
        /// The length of the data.
        offset: usize,
    },
    /// Bytes after the last expected entry.
    #[error("bundle has {extra} bytes after its {width} entries")]
    TrailingData {
        /// The bundle's expected number of entries.
        width: usize,
        /// Bytes left over.
        extra: usize,
    },
}

/// Encodes entries as a bundle. Fails if an entry is longer than 65535 bytes or
/// there are not 1 to 256 entries.
pub fn encode_bundle<'a>(
    entries: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<u8>, BundleError> {
    let mut out = Vec::new();
    let mut count = 0;
    for (index, e) in entries.into_iter().enumerate() {
        let len = u16::try_from(e.len()).map_err(|_| BundleError::EntryTooLarge {
            index,
            len: e.len(),
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(e);
        count += 1;
    }
    if count == 0 || count > usize::from(FULL_TILE_WIDTH) {
        return Err(BundleError::BadWidth(count));
    }
    Ok(out)
}

/// Decodes a bundle that must hold exactly `width` entries (the width of its
/// tile) and nothing after them. The entries borrow from `data`.
pub fn decode_bundle(data: &[u8], width: usize) -> Result<Vec<&[u8]>, BundleError> {
    if width == 0 || width > usize::from(FULL_TILE_WIDTH) {
        return Err(BundleError::BadWidth(width));
    }
    let mut entries = Vec::with_capacity(width);
    let mut rest = data;
    for index in 0..width {
        let truncated = BundleError::Truncated {
            index,
            width,
            offset: data.len(),
        };
        let Some((len, tail)) = rest.split_first_chunk::<2>() else {
            return Err(truncated);
        };
        let len = usize::from(u16::from_be_bytes(*len));
        if tail.len() < len {
            return Err(truncated);
        }
        let (entry, tail) = tail.split_at(len);
        entries.push(entry);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(BundleError::TrailingData {
            width,
            extra: rest.len(),
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let entries: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"a".to_vec(),
            vec![7u8; 300],
            vec![1u8; MAX_ENTRY_SIZE],
        ];
        let data = encode_bundle(entries.iter().map(Vec::as_slice)).unwrap();
        assert_eq!(&data[..5], &[0, 0, 0, 1, b'a']);
        assert_eq!(&data[5..7], &300u16.to_be_bytes());
        let decoded = decode_bundle(&data, 4).unwrap();
        assert_eq!(
            decoded,
            entries.iter().map(Vec::as_slice).collect::<Vec<_>>()
        );
    }

    #[test]
    fn strict_decoding() {
        let data = encode_bundle([b"ab".as_slice(), b"cde".as_slice()]).unwrap();
        // Exactly the tile's width, no more, no less.
        assert_eq!(
            decode_bundle(&data, 1),
            Err(BundleError::TrailingData { width: 1, extra: 5 })
        );
        assert_eq!(
            decode_bundle(&data, 3),
            Err(BundleError::Truncated {
                index: 2,
                width: 3,
                offset: 9
            })
        );
        // Cut inside a length prefix and inside an entry body.
        assert!(matches!(
            decode_bundle(&data[..5], 2),
            Err(BundleError::Truncated { index: 1, .. })
        ));
        assert!(matches!(
            decode_bundle(&data[..8], 2),
            Err(BundleError::Truncated { index: 1, .. })
        ));
        let mut extra = data.clone();
        extra.push(0);
        assert!(matches!(
            decode_bundle(&extra, 2),
            Err(BundleError::TrailingData { extra: 1, .. })
        ));
        assert_eq!(decode_bundle(&data, 0), Err(BundleError::BadWidth(0)));
        assert_eq!(decode_bundle(&data, 257), Err(BundleError::BadWidth(257)));
        assert_eq!(
            decode_bundle(&[], 1),
            Err(BundleError::Truncated {
                index: 0,
                width: 1,
                offset: 0
            })
        );
    }

    #[test]
    fn encoding_limits() {
        let big = vec![0u8; MAX_ENTRY_SIZE + 1];
        assert_eq!(
            encode_bundle([b"x".as_slice(), big.as_slice()]),
            Err(BundleError::EntryTooLarge {
                index: 1,
                len: MAX_ENTRY_SIZE + 1
            })
        );
        assert_eq!(
            encode_bundle(std::iter::empty()),
            Err(BundleError::BadWidth(0))
        );
        let many = vec![b"e".as_slice(); 257];
        assert_eq!(encode_bundle(many), Err(BundleError::BadWidth(257)));
        let full = vec![b"e".as_slice(); 256];
        assert_eq!(
            decode_bundle(&encode_bundle(full).unwrap(), 256)
                .unwrap()
                .len(),
            256
        );
    }
}
