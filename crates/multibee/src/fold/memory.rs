//! A [`FoldStorage`] in maps, for the fold's tests: what the redb tables, the store bee and the
//! diff feeds hold, without a database.

use std::collections::{BTreeMap, HashMap};
use std::ops::{Bound, RangeBounds};

use super::storage::{FoldStorage, Pos};
use super::{FeedResult, Folded, corrupt};
use crate::diff::DiffRecord;
use crate::tables::{self, KeyState};
use crate::value::Value;

/// Everything a peer keeps for the fold, in memory. Checkpoints and merged values are kept as
/// the bytes the database stores, so that what the fold reads back went through the same
/// encoding.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct MemoryStorage {
    /// `mb-diffs-2`: per key, `(stamp, writer)` → seq.
    pub diffs: BTreeMap<Vec<u8>, BTreeMap<Pos, u64>>,
    /// `mb-checkpoints-1`: per key, `(stamp, writer)` → [`tables::encode_state`] bytes.
    pub checkpoints: BTreeMap<Vec<u8>, BTreeMap<Pos, Vec<u8>>>,
    /// `mb-keys-1`.
    pub keys: BTreeMap<Vec<u8>, KeyState>,
    /// The diff feeds' entries: `(writer, seq)` → the diff it holds.
    pub entries: HashMap<([u8; 32], u64), DiffRecord>,
    /// The store bee: key → [`Value::to_stored`] bytes.
    pub store: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl MemoryStorage {
    /// Writes a fold's outcome into the store, as a transaction does after the fold.
    pub(crate) fn apply(&mut self, folded: &Folded) {
        for (key, value) in &folded.pending {
            match value {
                Some(v) => self.store.insert(key.clone(), v.to_stored()),
                None => self.store.remove(key),
            };
        }
    }

    /// The checkpoints of `key`, decoded.
    pub(crate) fn checkpoints_of(&self, key: &[u8]) -> Vec<(Pos, Option<Value>)> {
        self.checkpoints
            .get(key)
            .into_iter()
            .flatten()
            .map(|(at, bytes)| {
                let value = tables::decode_state(bytes).unwrap_or_else(|e| panic!("{e}"));
                (*at, value)
            })
            .collect()
    }
}

impl FoldStorage for MemoryStorage {
    fn diff(&self, key: &[u8], at: Pos) -> FeedResult<Option<u64>> {
        Ok(self.diffs.get(key).and_then(|rows| rows.get(&at)).copied())
    }

    fn insert_diff(&mut self, key: &[u8], at: Pos, seq: u64) -> FeedResult<Option<u64>> {
        Ok(self.diffs.entry(key.to_vec()).or_default().insert(at, seq))
    }

    fn remove_diff(&mut self, key: &[u8], at: Pos) -> FeedResult<Option<u64>> {
        let Some(rows) = self.diffs.get_mut(key) else {
            return Ok(None);
        };
        let removed = rows.remove(&at);
        if rows.is_empty() {
            self.diffs.remove(key);
        }
        Ok(removed)
    }

    fn diffs(&self, key: &[u8], from: Bound<Pos>) -> FeedResult<Vec<(Pos, u64)>> {
        Ok(self
            .diffs
            .get(key)
            .into_iter()
            .flat_map(|rows| rows.range((from, Bound::Unbounded)))
            .map(|(at, seq)| (*at, *seq))
            .collect())
    }

    fn record(&mut self, key: &[u8], (ts, writer): Pos, seq: u64) -> FeedResult<DiffRecord> {
        let record = self
            .entries
            .get(&(writer, seq))
            .ok_or_else(|| corrupt(format!("a diff row names entry {seq}, which is not held")))?;
        if record.key != key || record.ts.0 != ts {
            return Err(corrupt(format!(
                "a diff row names entry {seq}, which is not that diff"
            )));
        }
        Ok(record.clone())
    }

    fn checkpoint_before(&self, key: &[u8], at: Pos) -> FeedResult<Option<(Pos, Option<Value>)>> {
        let Some((at, bytes)) = self
            .checkpoints
            .get(key)
            .and_then(|rows| rows.range(..at).next_back())
        else {
            return Ok(None);
        };
        let value = tables::decode_state(bytes).map_err(corrupt)?;
        Ok(Some((*at, value)))
    }

    fn insert_checkpoint(&mut self, key: &[u8], at: Pos, value: Option<&Value>) -> FeedResult<()> {
        self.checkpoints
            .entry(key.to_vec())
            .or_default()
            .insert(at, tables::encode_state(value));
        Ok(())
    }

    fn remove_checkpoints(&mut self, key: &[u8], from: Bound<Pos>) -> FeedResult<()> {
        if let Some(rows) = self.checkpoints.get_mut(key) {
            rows.retain(|at, _| !(from, Bound::Unbounded).contains(at));
            if rows.is_empty() {
                self.checkpoints.remove(key);
            }
        }
        Ok(())
    }

    fn key_state(&self, key: &[u8]) -> FeedResult<Option<KeyState>> {
        Ok(self.keys.get(key).cloned())
    }

    fn insert_key_state(&mut self, key: &[u8], state: &KeyState) -> FeedResult<()> {
        self.keys.insert(key.to_vec(), state.clone());
        Ok(())
    }

    fn remove_key_state(&mut self, key: &[u8]) -> FeedResult<()> {
        self.keys.remove(key);
        Ok(())
    }

    fn original(&self, key: &[u8]) -> FeedResult<Option<Vec<u8>>> {
        Ok(self.store.get(key).cloned())
    }
}
