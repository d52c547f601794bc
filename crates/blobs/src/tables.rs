//! The whole redb schema of a blob store, with each table's key and value layout. Names carry
//! a version: a changed layout gets a new name. See `FORMAT.md` in the crate for the files.

use bao_tree::{ChunkNum, ChunkRanges};
use redb::TableDefinition;

use crate::error::{Error, Result};

/// `"format"` → the store format version, a `u32` little-endian ([`FORMAT_VERSION`]).
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta-1");

/// Blob id (32 bytes) → a [`Record`] as encoded by [`Record::encode`]. One row per blob,
/// complete or partial.
pub(crate) const BLOBS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("blobs-1");

/// Blob id (32 bytes) → its media type (`image/png`), as given when it was added over HTTP.
/// Only blobs that were given one have a row; a delete removes it.
pub(crate) const TYPES: TableDefinition<&[u8; 32], &str> = TableDefinition::new("types-1");

/// Blob id (32 bytes) → the chunk groups of its (partial) record that were written but not
/// synced, encoded like a record's held ranges (`[n u32 LE][n boundaries u64 LE]`). Verified
/// again, from the files, when the store opens (see `pending.rs`); a blob without unsynced
/// groups has no row.
pub(crate) const UNSYNCED: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("unsynced-1");

/// The longest media type kept, in bytes.
pub(crate) const MAX_TYPE_LEN: usize = 255;

pub(crate) const FORMAT_KEY: &str = "format";
/// Format 2 added `unsynced-1`; a format 1 store (which has no unsynced groups) is upgraded by
/// writing the new version.
pub(crate) const FORMAT_VERSION: u32 = 2;

const RECORD_VERSION: u8 = 1;
const STATE_COMPLETE: u8 = 0;
const STATE_PARTIAL: u8 = 1;
const FLAG_PINNED: u8 = 1;

/// What the store knows of one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// The size in bytes (for a partial blob: the size claimed by the first import, proven by
    /// the tree once the last chunk group is held).
    pub size: u64,
    /// Kept by garbage collection whatever references it.
    pub pinned: bool,
    /// `None` when complete; otherwise the chunk ranges held, whole chunk groups only.
    pub held: Option<ChunkRanges>,
}

impl Record {
    pub fn is_complete(&self) -> bool {
        self.held.is_none()
    }

    /// `[version u8 = 1][state u8: 0 complete, 1 partial][flags u8: bit 0 pinned][size u64 LE]`
    /// then, when partial, `[n u32 LE][n boundaries u64 LE]`: the held chunk ranges as sorted
    /// boundaries (start, end, start, end, ...), so `n` is even.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        out.push(RECORD_VERSION);
        out.push(if self.held.is_some() {
            STATE_PARTIAL
        } else {
            STATE_COMPLETE
        });
        out.push(if self.pinned { FLAG_PINNED } else { 0 });
        out.extend_from_slice(&self.size.to_le_bytes());
        if let Some(held) = &self.held {
            out.extend(encode_ranges(held));
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = |what: &str| Error::Corrupt(format!("blob record: {what}"));
        let (head, rest) = bytes
            .split_first_chunk::<11>()
            .ok_or_else(|| bad("too short"))?;
        if head[0] != RECORD_VERSION {
            return Err(bad(&format!("unknown record version {}", head[0])));
        }
        let pinned = head[2] & FLAG_PINNED != 0;
        let size = u64::from_le_bytes(head[3..11].try_into().map_err(|_| bad("size"))?);
        let held = match head[1] {
            STATE_COMPLETE if rest.is_empty() => None,
            STATE_PARTIAL => Some(decode_ranges(rest).ok_or_else(|| bad("held ranges"))?),
            _ => return Err(bad("unknown state")),
        };
        Ok(Record { size, pinned, held })
    }
}

/// `[n u32 LE][n boundaries u64 LE]`: chunk ranges as sorted boundaries (start, end, start,
/// end, ...), so `n` is even.
pub(crate) fn encode_ranges(ranges: &ChunkRanges) -> Vec<u8> {
    let bounds = ranges.boundaries();
    let mut out = Vec::with_capacity(4 + 8 * bounds.len());
    out.extend_from_slice(&(bounds.len() as u32).to_le_bytes());
    for b in bounds {
        out.extend_from_slice(&b.0.to_le_bytes());
    }
    out
}

/// The ranges of [`encode_ranges`]; `None` if `bytes` are not such an encoding.
pub(crate) fn decode_ranges(bytes: &[u8]) -> Option<ChunkRanges> {
    let (n, mut rest) = bytes.split_first_chunk::<4>()?;
    let n = u32::from_le_bytes(*n) as usize;
    if !n.is_multiple_of(2) || rest.len() != n.checked_mul(8)? {
        return None;
    }
    let mut ranges = ChunkRanges::empty();
    let mut last = 0u64;
    for _ in 0..n / 2 {
        let (start, r) = rest.split_first_chunk::<8>()?;
        let (end, r) = r.split_first_chunk::<8>()?;
        rest = r;
        let (start, end) = (u64::from_le_bytes(*start), u64::from_le_bytes(*end));
        if start < last || end <= start {
            return None;
        }
        last = end;
        ranges |= ChunkRanges::from(ChunkNum(start)..ChunkNum(end));
    }
    Some(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip() {
        let mut held = ChunkRanges::from(ChunkNum(0)..ChunkNum(16));
        held |= ChunkRanges::from(ChunkNum(32)..ChunkNum(40));
        for record in [
            Record {
                size: 5,
                pinned: true,
                held: None,
            },
            Record {
                size: 40_000,
                pinned: false,
                held: Some(held),
            },
        ] {
            assert_eq!(Record::decode(&record.encode()).unwrap(), record);
        }
        assert!(Record::decode(&[1, 1, 0]).is_err());
        assert!(Record::decode(&[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]).is_err());
    }

    proptest::proptest! {
        /// A damaged row is an error, never a panic; what decodes encodes back the same.
        #[test]
        fn any_bytes_decode_or_fail(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            if let Ok(record) = Record::decode(&bytes) {
                proptest::prop_assert_eq!(Record::decode(&record.encode()).unwrap(), record);
            }
        }
    }
}
