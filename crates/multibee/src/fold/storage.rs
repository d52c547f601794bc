//! What the fold reads and writes, behind [`FoldStorage`]: the merge tables of one redb write
//! transaction ([`RedbStorage`]), or maps in memory for the fold's own tests
//! (`super::memory`). The fold itself does no IO.

use std::ops::Bound;

use multibee_bee::{Bee, HeadReader};
use multibee_feed::{EntryReader, FeedKey};
use redb::{ReadableTable, Table, WriteTransaction};

use super::{FeedIds, FeedResult, bee_error, corrupt, diff_at, storage};
use crate::diff::DiffRecord;
use crate::tables::{self, CHECKPOINTS, DIFFS, DiffId, KEYS, KeyState};
use crate::value::Value;

/// A diff's place in its key's merge order: `(stamp, writer)`.
pub(crate) type Pos = (u64, [u8; 32]);

/// Everything the fold keeps or reads: diff rows, diff records, checkpoints, key states and the
/// merged values as they were before the fold. Each key's rows are kept in merge order.
pub(crate) trait FoldStorage {
    /// The seq (entry of its writer's diff feed) of the merged diff of `key` at `at`, if any.
    fn diff(&self, key: &[u8], at: Pos) -> FeedResult<Option<u64>>;

    /// Records that the diff of `key` at `at` is entry `seq` of its writer's diff feed;
    /// returns the seq the row held before, if there was one.
    fn insert_diff(&mut self, key: &[u8], at: Pos, seq: u64) -> FeedResult<Option<u64>>;

    /// Removes the diff row of `key` at `at`, returning its seq if there was one.
    fn remove_diff(&mut self, key: &[u8], at: Pos) -> FeedResult<Option<u64>>;

    /// The diff rows `(at, seq)` of `key` from `from` to the key's last, in merge order
    /// (`Unbounded`: from the key's first).
    fn diffs(&self, key: &[u8], from: Bound<Pos>) -> FeedResult<Vec<(Pos, u64)>>;

    /// The record of the diff of `key` at `at`, entry `seq` of its writer's diff feed (held by
    /// the feed: corrupt if not, or if the entry is another diff).
    fn record(&mut self, key: &[u8], at: Pos, seq: u64) -> FeedResult<DiffRecord>;

    /// The newest checkpoint of `key` strictly before `at`: its place and the value it holds.
    fn checkpoint_before(&self, key: &[u8], at: Pos) -> FeedResult<Option<(Pos, Option<Value>)>>;

    /// Records `value` as the value of `key` after its diff at `at`.
    fn insert_checkpoint(&mut self, key: &[u8], at: Pos, value: Option<&Value>) -> FeedResult<()>;

    /// Removes the checkpoints of `key` from `from` to the key's last (`Unbounded`: all).
    fn remove_checkpoints(&mut self, key: &[u8], from: Bound<Pos>) -> FeedResult<()>;

    /// The merge state of `key`, if it has one.
    fn key_state(&self, key: &[u8]) -> FeedResult<Option<KeyState>>;

    /// Sets the merge state of `key`.
    fn insert_key_state(&mut self, key: &[u8], state: &KeyState) -> FeedResult<()>;

    /// Removes the merge state of `key`.
    fn remove_key_state(&mut self, key: &[u8]) -> FeedResult<()>;

    /// The stored bytes of `key`'s merged value before this fold (`None`: absent).
    fn original(&self, key: &[u8]) -> FeedResult<Option<Vec<u8>>>;
}

/// A storage borrowed for one fold, so that it outlives the fold (tests keep theirs across
/// folds, as a database keeps its tables across transactions).
impl<S: FoldStorage + ?Sized> FoldStorage for &mut S {
    fn diff(&self, key: &[u8], at: Pos) -> FeedResult<Option<u64>> {
        (**self).diff(key, at)
    }

    fn insert_diff(&mut self, key: &[u8], at: Pos, seq: u64) -> FeedResult<Option<u64>> {
        (**self).insert_diff(key, at, seq)
    }

    fn remove_diff(&mut self, key: &[u8], at: Pos) -> FeedResult<Option<u64>> {
        (**self).remove_diff(key, at)
    }

    fn diffs(&self, key: &[u8], from: Bound<Pos>) -> FeedResult<Vec<(Pos, u64)>> {
        (**self).diffs(key, from)
    }

    fn record(&mut self, key: &[u8], at: Pos, seq: u64) -> FeedResult<DiffRecord> {
        (**self).record(key, at, seq)
    }

    fn checkpoint_before(&self, key: &[u8], at: Pos) -> FeedResult<Option<(Pos, Option<Value>)>> {
        (**self).checkpoint_before(key, at)
    }

    fn insert_checkpoint(&mut self, key: &[u8], at: Pos, value: Option<&Value>) -> FeedResult<()> {
        (**self).insert_checkpoint(key, at, value)
    }

    fn remove_checkpoints(&mut self, key: &[u8], from: Bound<Pos>) -> FeedResult<()> {
        (**self).remove_checkpoints(key, from)
    }

    fn key_state(&self, key: &[u8]) -> FeedResult<Option<KeyState>> {
        (**self).key_state(key)
    }

    fn insert_key_state(&mut self, key: &[u8], state: &KeyState) -> FeedResult<()> {
        (**self).insert_key_state(key, state)
    }

    fn remove_key_state(&mut self, key: &[u8]) -> FeedResult<()> {
        (**self).remove_key_state(key)
    }

    fn original(&self, key: &[u8]) -> FeedResult<Option<Vec<u8>>> {
        (**self).original(key)
    }
}

/// The first row id of `key` in a `(key, stamp, writer)` table.
fn lo(key: &[u8]) -> DiffId<'_> {
    (key, 0, [0; 32])
}

/// The last row id of `key` in a `(key, stamp, writer)` table.
fn hi(key: &[u8]) -> DiffId<'_> {
    (key, u64::MAX, [0xFF; 32])
}

/// `from` as a lower bound of `key`'s rows (`Unbounded`: the key's first).
fn start(key: &[u8], from: Bound<Pos>) -> Bound<DiffId<'_>> {
    match from {
        Bound::Unbounded => Bound::Included(lo(key)),
        Bound::Included((ts, w)) => Bound::Included((key, ts, w)),
        Bound::Excluded((ts, w)) => Bound::Excluded((key, ts, w)),
    }
}

/// The diff feeds' entries as a write transaction sees them.
type Entries<'t> = EntryReader<Table<'t, (u64, u64), &'static [u8]>>;

/// The fold's storage in one redb write transaction: `mb-diffs-2`, `mb-checkpoints-1`,
/// `mb-keys-1`, the store bee's head, and the diff feeds' entries.
pub(crate) struct RedbStorage<'t> {
    /// The transaction, for the entries table (opened when a record is first read).
    raw: &'t WriteTransaction,
    /// The diff feeds of the writers whose diffs may be read back (rebase, recompute).
    ids: FeedIds,
    /// The store bee's merged values.
    head: HeadReader<'t>,
    /// `mb-diffs-2`.
    diffs: Table<'t, DiffId<'static>, u64>,
    /// `mb-checkpoints-1`.
    checkpoints: Table<'t, DiffId<'static>, &'static [u8]>,
    /// `mb-keys-1`.
    keys: Table<'t, &'static [u8], &'static [u8]>,
    /// The feeds' entries, once a record was read.
    entries: Option<Entries<'t>>,
}

impl<'t> RedbStorage<'t> {
    /// Opens the merge tables of `raw` and the head of `store`; `ids` are the diff feeds whose
    /// records may be read.
    pub(crate) fn open(
        raw: &'t WriteTransaction,
        store: &Bee,
        ids: FeedIds,
    ) -> FeedResult<RedbStorage<'t>> {
        Ok(RedbStorage {
            raw,
            ids,
            head: store.head_in(raw).map_err(bee_error)?,
            diffs: raw.open_table(DIFFS).map_err(storage)?,
            checkpoints: raw.open_table(CHECKPOINTS).map_err(storage)?,
            keys: raw.open_table(KEYS).map_err(storage)?,
            entries: None,
        })
    }
}

impl FoldStorage for RedbStorage<'_> {
    fn diff(&self, key: &[u8], (ts, w): Pos) -> FeedResult<Option<u64>> {
        Ok(self
            .diffs
            .get((key, ts, w))
            .map_err(storage)?
            .map(|v| v.value()))
    }

    fn insert_diff(&mut self, key: &[u8], (ts, w): Pos, seq: u64) -> FeedResult<Option<u64>> {
        Ok(self
            .diffs
            .insert((key, ts, w), seq)
            .map_err(storage)?
            .map(|v| v.value()))
    }

    fn remove_diff(&mut self, key: &[u8], (ts, w): Pos) -> FeedResult<Option<u64>> {
        Ok(self
            .diffs
            .remove((key, ts, w))
            .map_err(storage)?
            .map(|v| v.value()))
    }

    fn diffs(&self, key: &[u8], from: Bound<Pos>) -> FeedResult<Vec<(Pos, u64)>> {
        let mut out = Vec::new();
        let range = (start(key, from), Bound::Included(hi(key)));
        for row in self.diffs.range::<DiffId>(range).map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            let (_, ts, writer) = k.value();
            out.push(((ts, writer), v.value()));
        }
        Ok(out)
    }

    fn record(&mut self, key: &[u8], (ts, writer): Pos, seq: u64) -> FeedResult<DiffRecord> {
        let feed = *self.ids.get(&writer).ok_or_else(|| {
            corrupt(format!(
                "a diff of {} is not in a known feed",
                FeedKey(writer)
            ))
        })?;
        let entries = match &mut self.entries {
            Some(entries) => entries,
            None => self.entries.insert(EntryReader::open_in(self.raw)?),
        };
        diff_at(entries, feed, (key, ts, seq))
    }

    fn checkpoint_before(
        &self,
        key: &[u8],
        (ts, w): Pos,
    ) -> FeedResult<Option<(Pos, Option<Value>)>> {
        match self
            .checkpoints
            .range(lo(key)..(key, ts, w))
            .map_err(storage)?
            .next_back()
        {
            None => Ok(None),
            Some(row) => {
                let (k, v) = row.map_err(storage)?;
                let (_, ts, w) = k.value();
                let state = tables::decode_state(v.value()).map_err(corrupt)?;
                Ok(Some(((ts, w), state)))
            }
        }
    }

    fn insert_checkpoint(
        &mut self,
        key: &[u8],
        (ts, w): Pos,
        value: Option<&Value>,
    ) -> FeedResult<()> {
        let bytes = tables::encode_state(value);
        self.checkpoints
            .insert((key, ts, w), bytes.as_slice())
            .map_err(storage)?;
        Ok(())
    }

    fn remove_checkpoints(&mut self, key: &[u8], from: Bound<Pos>) -> FeedResult<()> {
        let range = (start(key, from), Bound::Included(hi(key)));
        self.checkpoints
            .retain_in::<DiffId, _>(range, |_, _| false)
            .map_err(storage)?;
        Ok(())
    }

    fn key_state(&self, key: &[u8]) -> FeedResult<Option<KeyState>> {
        match self.keys.get(key).map_err(storage)? {
            None => Ok(None),
            Some(row) => KeyState::decode(row.value())
                .map(Some)
                .ok_or_else(|| corrupt("a key state row")),
        }
    }

    fn insert_key_state(&mut self, key: &[u8], state: &KeyState) -> FeedResult<()> {
        self.keys
            .insert(key, state.encode().as_slice())
            .map_err(storage)?;
        Ok(())
    }

    fn remove_key_state(&mut self, key: &[u8]) -> FeedResult<()> {
        self.keys.remove(key).map_err(storage)?;
        Ok(())
    }

    fn original(&self, key: &[u8]) -> FeedResult<Option<Vec<u8>>> {
        self.head.get(key).map_err(bee_error)
    }
}
