//! The redb schema of the bee index, in one place. Every table name carries a version.
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `bees-1` | feed key `[u8; 32]` | bee id (u64 LE) ‖ indexed length (u64 LE) |
//! | `bee-meta-1` | `&str` | `"next-bee-id"` → the next bee id; `"format"` → [`FORMAT`] |
//! | `bee-latest-1` | `(bee id, stored key)` | seq (u64 LE) ‖ value: the value at the head |
//! | `bee-versions-2` | `(bee id, stored key, seq)` | [`DEL`] or [`PUT`]: the value is entry `seq`. Every op but each set key's newest put (that one is its `bee-latest-1` row) |
//!
//! Both index tables are derived from the feed and written in the transaction that appends (or
//! ingests) the entries; `bees-1` records the feed length they reflect. A version row holds no
//! value: a checkout reads it from the feed entry it names.

use redb::TableDefinition;

pub(crate) const BEES: TableDefinition<[u8; 32], [u8; 16]> = TableDefinition::new("bees-1");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("bee-meta-1");
pub(crate) const LATEST: TableDefinition<(u64, &[u8]), &[u8]> =
    TableDefinition::new("bee-latest-1");
pub(crate) const VERSIONS: TableDefinition<(u64, &[u8], u64), u8> =
    TableDefinition::new("bee-versions-2");
/// The version table of format 1, whose rows copied every value: dropped by the upgrade.
pub(crate) const VERSIONS_1: &str = "bee-versions-1";

pub(crate) const NEXT_BEE_ID: &str = "next-bee-id";
/// The `bee-meta-1` key of the index format.
pub(crate) const FORMAT_KEY: &str = "format";
/// The index format this release writes: 2 (version rows point at entries). A store without
/// the key is of format 1.
pub(crate) const FORMAT: u64 = 2;

/// A `bee-versions-2` value: the entry is a delete.
pub(crate) const DEL: u8 = 0;
/// A `bee-versions-2` value: the entry is a put.
pub(crate) const PUT: u8 = 1;

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

fn le_u64(bytes: &[u8]) -> u64 {
    let mut out = [0u8; 8];
    out.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(out)
}
