//! The redb schema of a multibee peer, in one place. Every table name carries a version.
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `mb-meta-1` | `&str` | `"store-feed"`, `"diff-feed"`: feed keys; `"hlc"`: u64 LE; `"database"`: the database's identity (its first writer's diff feed key); `"format"`: [`FORMAT`] (u32 LE) |
//! | `mb-writers-1` | writer's diff feed key | [`WriterRow`] (postcard, versioned) |
//! | `mb-diffs-2` | `(key, hlc, writer)` | seq: the diff is entry `seq` of the writer's diff feed |
//! | `mb-checkpoints-1` | `(key, hlc, writer)` | the key's value after that diff ([`encode_state`]) |
//! | `mb-members-1` | `(stamp, author)` | seq (u64 LE) ‖ [`crate::MemberRecord`] bytes: every membership operation held |
//! | `mb-invites-1` | blake3 hash of an invitation's secret | when it was made (ms): each redeems once |
//! | `mb-keys-1` | key | [`KeyState`] (postcard, versioned): newest diff (stamp, writer), diffs since the last checkpoint, causal heads (stamp, writer, seq) |
//! | `mb-indexes-1` | index id (u32) | [`crate::IndexInfo`] (postcard, versioned): target and build state |
//! | `mb-index-1` | index id ‖ path ‖ value ‖ key (see [`crate::index`]) | `()` |
//!
//! `mb-diffs-2` names every merged diff of every counted writer (own and remote), in merge
//! order; the store bee holds the fold. A writer's `merged` length moves in the transaction
//! that merges its diffs, so a crash never skips or doubles one.

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use crate::value::Value;

/// A diff's place in the merge order, below its key.
pub(crate) type DiffId<'a> = (&'a [u8], u64, [u8; 32]);

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("mb-meta-1");
pub(crate) const WRITERS: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("mb-writers-1");
pub(crate) const DIFFS: TableDefinition<DiffId, u64> = TableDefinition::new("mb-diffs-2");
/// The diff table of format 1, whose rows copied each diff's record: converted by the upgrade.
pub(crate) const DIFFS_1: TableDefinition<DiffId, &[u8]> = TableDefinition::new("mb-diffs-1");
pub(crate) const CHECKPOINTS: TableDefinition<DiffId, &[u8]> =
    TableDefinition::new("mb-checkpoints-1");
pub(crate) const KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("mb-keys-1");
pub(crate) const MEMBERS: TableDefinition<(u64, [u8; 32]), &[u8]> =
    TableDefinition::new("mb-members-1");
pub(crate) const INVITES: TableDefinition<[u8; 32], u64> = TableDefinition::new("mb-invites-1");

pub(crate) const STORE_FEED: &str = "store-feed";
pub(crate) const DIFF_FEED: &str = "diff-feed";
pub(crate) const HLC: &str = "hlc";
pub(crate) const DATABASE: &str = "database";
/// The `mb-meta-1` key of the layer's format.
pub(crate) const FORMAT_KEY: &str = "format";
/// The format this release writes: 2 (diff rows point at feed entries). A folder without the
/// key is of format 1.
pub(crate) const FORMAT: u32 = 2;

/// Whether a writer's diffs count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriterState {
    /// A member: replicated and merged.
    Active,
    /// Removed (or never made a member by an operation that counts): its diffs below its cut
    /// count, the rest are held but not merged. Still replicated, so that every peer holds
    /// the same membership operations.
    Removed,
    /// Caught signing two histories: frozen, its diffs no longer count.
    Forked,
}

/// A `mb-writers-1` row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WriterRow {
    pub state: WriterState,
    /// Entries of the writer's diff feed read so far (merged, or held back past the limit).
    pub merged: u64,
    /// Entries from this one on do not count (`u64::MAX`: all count).
    pub limit: u64,
    /// The writer whose operation removed it, if it is removed.
    pub removed_by: Option<[u8; 32]>,
}

/// The first format of a writer row.
#[derive(Deserialize)]
struct WriterRowV1 {
    state: WriterState,
    merged: u64,
}

#[derive(Serialize, Deserialize)]
enum Stored<A, B> {
    V1(A),
    V2(B),
}

impl WriterRow {
    /// A row for a writer not read yet.
    pub(crate) fn new(state: WriterState, limit: u64, removed_by: Option<[u8; 32]>) -> WriterRow {
        WriterRow {
            state,
            merged: 0,
            limit,
            removed_by,
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(&Stored::<(), _>::V2(*self)).unwrap_or_default()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<WriterRow> {
        match postcard::from_bytes::<Stored<WriterRowV1, WriterRow>>(bytes) {
            Ok(Stored::V2(row)) => Some(row),
            Ok(Stored::V1(old)) => Some(WriterRow {
                state: old.state,
                merged: if old.state == WriterState::Active {
                    old.merged
                } else {
                    0
                },
                limit: if old.state == WriterState::Active {
                    u64::MAX
                } else {
                    0
                },
                removed_by: None,
            }),
            Err(_) => None,
        }
    }
}

/// A diff of a key that no other diff of the key had seen when it was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Head {
    pub ts: u64,
    pub writer: [u8; 32],
    pub seq: u64,
}

/// A `mb-keys-1` row: what the merge keeps per key besides its diffs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyState {
    /// The newest diff `(stamp, writer)`: a local write to the key is stamped after it.
    pub last: (u64, [u8; 32]),
    /// Diffs after the newest checkpoint.
    pub since_checkpoint: u32,
    /// The causal heads, in merge order.
    pub heads: Vec<Head>,
}

/// A head of the first format: stamp, writer, seq and a version vector.
type HeadV1 = (u64, [u8; 32], u64, Vec<([u8; 32], u64)>);

/// The first format of a key state, whose heads carried version vectors.
#[derive(Deserialize)]
struct KeyStateV1 {
    last: (u64, [u8; 32]),
    since_checkpoint: u32,
    heads: Vec<HeadV1>,
}

#[derive(Serialize, Deserialize)]
enum Versioned<A, B> {
    V1(A),
    V2(B),
}

impl KeyState {
    pub(crate) fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(&Versioned::<(), _>::V2(self)).unwrap_or_default()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<KeyState> {
        match postcard::from_bytes::<Versioned<KeyStateV1, KeyState>>(bytes) {
            Ok(Versioned::V2(state)) => Some(state),
            Ok(Versioned::V1(old)) => Some(KeyState {
                last: old.last,
                since_checkpoint: old.since_checkpoint,
                heads: old
                    .heads
                    .into_iter()
                    .map(|(ts, writer, seq, _)| Head { ts, writer, seq })
                    .collect(),
            }),
            Err(_) => None,
        }
    }
}

/// A `mb-members-1` value (and a `mb-diffs-1` value of format 1).
pub(crate) fn diff_row(seq: u64, record: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + record.len());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(record);
    out
}

/// Splits a `mb-members-1` (or format 1 `mb-diffs-1`) value into (seq, record bytes).
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of the first format, written out byte by byte (postcard: a varint variant index,
    /// varint integers, arrays as their bytes): what folders of that release hold.
    #[test]
    fn first_format_writer_rows_decode() {
        // Stored::V1 (0), WriterState::Active (0), merged 300 (varint ac 02).
        let active = [0x00, 0x00, 0xAC, 0x02];
        assert_eq!(
            WriterRow::decode(&active),
            Some(WriterRow {
                state: WriterState::Active,
                merged: 300,
                limit: u64::MAX,
                removed_by: None,
            })
        );
        // WriterState::Removed (1): nothing of it counted in that format.
        let removed = [0x00, 0x01, 0x05];
        assert_eq!(
            WriterRow::decode(&removed),
            Some(WriterRow {
                state: WriterState::Removed,
                merged: 0,
                limit: 0,
                removed_by: None,
            })
        );
        assert_eq!(WriterRow::decode(&[0x00]), None);
        assert_eq!(WriterRow::decode(&[0x07, 0x00, 0x00]), None);
        let now = WriterRow::new(WriterState::Active, 9, Some([3; 32]));
        assert_eq!(WriterRow::decode(&now.encode()), Some(now));
    }

    #[test]
    fn first_format_key_states_decode() {
        // Versioned::V1 (0); last = (ts 5, writer [1; 32]); since_checkpoint 2; one head
        // (ts 5, writer [1; 32], seq 7, a version vector of one entry ([2; 32], 4)).
        let mut bytes = vec![0x00, 0x05];
        bytes.extend([1u8; 32]);
        bytes.extend([0x02, 0x01, 0x05]);
        bytes.extend([1u8; 32]);
        bytes.extend([0x07, 0x01]);
        bytes.extend([2u8; 32]);
        bytes.push(0x04);
        assert_eq!(
            KeyState::decode(&bytes),
            Some(KeyState {
                last: (5, [1; 32]),
                since_checkpoint: 2,
                heads: vec![Head {
                    ts: 5,
                    writer: [1; 32],
                    seq: 7,
                }],
            })
        );
        assert_eq!(KeyState::decode(&bytes[..bytes.len() - 1]), None);
        let now = KeyState {
            last: (9, [4; 32]),
            since_checkpoint: 0,
            heads: vec![],
        };
        assert_eq!(KeyState::decode(&now.encode()), Some(now));
    }
}
