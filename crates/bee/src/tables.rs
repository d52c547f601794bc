//! The redb schema of the bee index, in one place. Every table name carries a version.
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `bees-1` | feed key `[u8; 32]` | bee id (u64 LE) ‖ indexed length (u64 LE) |
//! | `bee-meta-1` | `&str` | the next bee id (`"next-bee-id"` → u64 LE) |
//! | `bee-latest-1` | `(bee id, stored key)` | seq (u64 LE) ‖ value: the value at the head |
//! | `bee-versions-1` | `(bee id, stored key, seq)` | `0x00` for a delete, `0x01` ‖ value for a put |
//!
//! Both index tables are derived from the feed and written in the transaction that appends (or
//! ingests) the entries; `bees-1` records the feed length they reflect.

use redb::TableDefinition;

pub(crate) const BEES: TableDefinition<[u8; 32], [u8; 16]> = TableDefinition::new("bees-1");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("bee-meta-1");
pub(crate) const LATEST: TableDefinition<(u64, &[u8]), &[u8]> =
    TableDefinition::new("bee-latest-1");
pub(crate) const VERSIONS: TableDefinition<(u64, &[u8], u64), &[u8]> =
    TableDefinition::new("bee-versions-1");

pub(crate) const NEXT_BEE_ID: &str = "next-bee-id";

/// A `bees-1` value.
pub(crate) fn bee_row(id: u64, indexed: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&id.to_le_bytes());
    out[8..].copy_from_slice(&indexed.to_le_bytes());
    out
}

/// Splits a `bees-1` value into (bee id, indexed length).
pub(crate) fn split_bee_row(row: [u8; 16]) -> (u64, u64) {
    let (id, indexed) = row.split_at(8);
    (le_u64(id), le_u64(indexed))
}

/// A `bee-latest-1` value: the seq of the put and the value.
pub(crate) fn latest_row(seq: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// Splits a `bee-latest-1` value; `None` if it is too short to be one.
pub(crate) fn split_latest_row(row: &[u8]) -> Option<(u64, &[u8])> {
    (row.len() >= 8).then(|| (le_u64(&row[..8]), &row[8..]))
}

/// A `bee-versions-1` value.
pub(crate) fn version_row(value: Option<&[u8]>) -> Vec<u8> {
    match value {
        None => vec![0],
        Some(value) => {
            let mut out = Vec::with_capacity(1 + value.len());
            out.push(1);
            out.extend_from_slice(value);
            out
        }
    }
}

/// Splits a `bee-versions-1` value: `Some(value)` for a put, `None` for a delete.
pub(crate) fn split_version_row(row: &[u8]) -> Option<&[u8]> {
    match row.split_first() {
        Some((1, value)) => Some(value),
        _ => None,
    }
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut out = [0u8; 8];
    out.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(out)
}
