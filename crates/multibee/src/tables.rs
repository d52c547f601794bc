//! The redb schema of a multibee peer, in one place. Every table name carries a version.
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `mb-meta-1` | `&str` | `"store-feed"`, `"diff-feed"`: feed keys; `"hlc"`: u64 LE |
//! | `mb-writers-1` | writer's diff feed key | [`WriterRow`] (postcard, versioned) |
//! | `mb-diffs-1` | `(key, hlc, writer)` | seq (u64 LE) ‖ [`crate::DiffRecord`] bytes |
//! | `mb-checkpoints-1` | `(key, hlc, writer)` | the key's value after that diff ([`encode_state`]) |
//! | `mb-keys-1` | key | newest diff `(hlc u64 LE, writer)` ‖ diffs since the last checkpoint (u32 LE) |
//! | `mb-heads-1` | `(key, hlc, writer)` | seq: the key's diffs no other diff has seen |
//!
//! `mb-diffs-1` holds every merged diff of every counted writer (own and remote), in merge
//! order; the store bee holds the fold. A writer's `merged` length moves in the transaction
//! that merges its diffs, so a crash never skips or doubles one.

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use crate::value::Value;

/// A diff's place in the merge order, below its key.
pub(crate) type DiffId<'a> = (&'a [u8], u64, [u8; 32]);

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("mb-meta-1");
pub(crate) const WRITERS: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("mb-writers-1");
pub(crate) const DIFFS: TableDefinition<DiffId, &[u8]> = TableDefinition::new("mb-diffs-1");
pub(crate) const CHECKPOINTS: TableDefinition<DiffId, &[u8]> =
    TableDefinition::new("mb-checkpoints-1");
pub(crate) const KEYS: TableDefinition<&[u8], [u8; 44]> = TableDefinition::new("mb-keys-1");
pub(crate) const HEADS: TableDefinition<DiffId, u64> = TableDefinition::new("mb-heads-1");

pub(crate) const STORE_FEED: &str = "store-feed";
pub(crate) const DIFF_FEED: &str = "diff-feed";
pub(crate) const HLC: &str = "hlc";

/// Whether a writer's diffs count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriterState {
    /// Replicated and merged.
    Active,
    /// Removed by `remove_peer`: its diffs no longer count.
    Removed,
    /// Caught signing two histories: frozen, its diffs no longer count.
    Forked,
}

/// A `mb-writers-1` row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WriterRow {
    pub state: WriterState,
    /// Entries of the writer's diff feed merged so far.
    pub merged: u64,
}

#[derive(Serialize, Deserialize)]
enum Stored<T> {
    V1(T),
}

impl WriterRow {
    pub(crate) fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(&Stored::V1(*self)).unwrap_or_default()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<WriterRow> {
        match postcard::from_bytes::<Stored<WriterRow>>(bytes) {
            Ok(Stored::V1(row)) => Some(row),
            Err(_) => None,
        }
    }
}

/// A `mb-keys-1` row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyRow {
    pub last: (u64, [u8; 32]),
    pub since_checkpoint: u32,
}

impl KeyRow {
    pub(crate) fn encode(&self) -> [u8; 44] {
        let mut out = [0u8; 44];
        out[..8].copy_from_slice(&self.last.0.to_le_bytes());
        out[8..40].copy_from_slice(&self.last.1);
        out[40..].copy_from_slice(&self.since_checkpoint.to_le_bytes());
        out
    }

    pub(crate) fn decode(row: [u8; 44]) -> KeyRow {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&row[..8]);
        let mut writer = [0u8; 32];
        writer.copy_from_slice(&row[8..40]);
        let mut since = [0u8; 4];
        since.copy_from_slice(&row[40..]);
        KeyRow {
            last: (u64::from_le_bytes(ts), writer),
            since_checkpoint: u32::from_le_bytes(since),
        }
    }
}

/// A `mb-diffs-1` value.
pub(crate) fn diff_row(seq: u64, record: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + record.len());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(record);
    out
}

/// Splits a `mb-diffs-1` value into (seq, record bytes).
pub(crate) fn split_diff_row(row: &[u8]) -> Option<(u64, &[u8])> {
    if row.len() < 8 {
        return None;
    }
    let (seq, record) = row.split_at(8);
    let mut b = [0u8; 8];
    b.copy_from_slice(seq);
    Some((u64::from_le_bytes(b), record))
}

/// A key's value (or its absence) as a checkpoint stores it.
pub(crate) fn encode_state(state: Option<&Value>) -> Vec<u8> {
    match state {
        None => Vec::new(),
        Some(v) => v.to_stored(),
    }
}

/// Decodes what [`encode_state`] wrote.
pub(crate) fn decode_state(bytes: &[u8]) -> Result<Option<Value>, String> {
    if bytes.is_empty() {
        Ok(None)
    } else {
        Value::from_stored(bytes).map(Some)
    }
}
