//! The merge engine, inside one write transaction: records diffs, folds them into the keys'
//! values in `(Hlc, writer)` order (rewinding to a checkpoint when a diff arrives late), and
//! keeps each key's causal heads for `conflicts`. It does no IO itself: what it keeps and reads
//! is behind [`FoldStorage`], the transaction's redb tables ([`RedbStorage`]) or, in its tests,
//! maps in memory.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use multibee_bee::Bee;
use multibee_feed::{EntryReader, Error as FeedError, FeedKey, LocalId};
use redb::{ReadableTable, WriteTransaction};

use crate::diff::{DiffRecord, Dot};
use crate::merge::{Diff, Merge};
use crate::tables::{Head, KeyState};
use crate::value::Value;

#[cfg(test)]
mod memory;
mod storage;
#[cfg(test)]
mod tests;

pub(crate) use storage::{FoldStorage, Pos, RedbStorage};

type FeedResult<T> = multibee_feed::Result<T>;

/// Converts any redb error into the feed layer's storage error.
pub(crate) fn storage<E: Into<redb::Error>>(e: E) -> FeedError {
    FeedError::from(e.into())
}

/// A corrupt-store error naming what is wrong.
pub(crate) fn corrupt(what: impl std::fmt::Display) -> FeedError {
    FeedError::Corrupt(format!("multibee: {what}"))
}

/// A bee error inside a write transaction, as the feed layer's error.
pub(crate) fn bee_error(e: multibee_bee::Error) -> FeedError {
    match e {
        multibee_bee::Error::Feed(e) => e,
        other => FeedError::InvalidArgument(other.to_string()),
    }
}

/// What became of a diff handed to [`Fold::add`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Added {
    /// Merged into its key.
    Merged,
    /// The same diff was merged before (a re-delivery): nothing changed.
    Duplicate,
    /// The writer already wrote a different diff for this key with this timestamp.
    Reused,
}

/// One diff, as the fold handles it.
pub(crate) struct Loaded {
    pub ts: u64,
    pub writer: [u8; 32],
    pub seq: u64,
    pub record: DiffRecord,
}

impl Loaded {
    /// Its place in its key's merge order.
    fn id(&self) -> Pos {
        (self.ts, self.writer)
    }

    /// Whether `self` covers the diff `head` of the same key: it comes after it in merge order
    /// and its writer had merged it (a parent, or an earlier diff of the same writer).
    fn covers(&self, head: &Head) -> bool {
        (head.ts, head.writer) < self.id()
            && if head.writer == self.writer {
                head.seq < self.seq
            } else {
                self.record.has_parent(&Dot {
                    writer: head.writer,
                    seq: head.seq,
                })
            }
    }

    /// The diff as the merge function takes it.
    fn to_diff(&self) -> Diff {
        Diff {
            ts: crate::Hlc(self.ts),
            writer: FeedKey(self.writer),
            change: self.record.change.clone(),
        }
    }

    /// The diff as a head of its key.
    fn head(&self) -> Head {
        Head {
            ts: self.ts,
            writer: self.writer,
            seq: self.seq,
        }
    }
}

/// Where each writer's diff feed is in the store: `mb-diffs-2` rows point into them.
pub(crate) type FeedIds = HashMap<[u8; 32], LocalId>;

/// The diff that entry `seq` of a writer's diff feed holds, which a `mb-diffs-2` row at
/// `(key, ts)` names.
pub(crate) fn diff_at<T: ReadableTable<(u64, u64), &'static [u8]>>(
    entries: &EntryReader<T>,
    feed: LocalId,
    (key, ts, seq): (&[u8], u64, u64),
) -> FeedResult<DiffRecord> {
    let entry = entries
        .get(feed, seq)?
        .ok_or_else(|| corrupt(format!("a diff row names entry {seq}, which is not held")))?;
    match crate::txn::decode_entry(&entry) {
        Ok(crate::txn::Decoded::Diff(record)) if record.key == key && record.ts.0 == ts => {
            Ok(record)
        }
        _ => Err(corrupt(format!(
            "a diff row names entry {seq}, which is not that diff"
        ))),
    }
}

/// The merge state of one transaction, over the tables of `S` (a redb transaction's, or maps
/// in memory in tests).
pub(crate) struct Fold<'t, S> {
    merge: &'t dyn Merge,
    interval: u32,
    /// Where diff rows, checkpoints and key states are kept, and diff records read from.
    storage: S,
    /// Diffs added by this transaction whose entries are appended after the fold (local
    /// writes): read back from here, not from their feed.
    fresh: HashMap<([u8; 32], u64), DiffRecord>,
    /// The store's value of every key read, as it was before this transaction.
    original: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// The new value of every key this transaction changed.
    pending: BTreeMap<Vec<u8>, Option<Value>>,
    /// The merge state of the key read or written last (a local write reads it twice).
    last_state: Option<CachedState>,
}

/// The outcome of a fold: the new values, and the store's bytes before, of every changed key.
pub(crate) struct Folded {
    pub pending: BTreeMap<Vec<u8>, Option<Value>>,
    pub original: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

/// A key's merge state as the fold last read or wrote it.
struct CachedState {
    key: Vec<u8>,
    state: Option<KeyState>,
    /// Whether `mb-keys-1` holds a row for it (a single diff's state is not written).
    row: bool,
}

/// The state of a key whose only diff is `head`: what merging that one diff into nothing
/// leaves when no checkpoint follows it (a checkpoint interval above 1). Such a state is not
/// written to `mb-keys-1`: it is derived from the key's one `mb-diffs-2` row.
pub(crate) fn single_state(head: Head) -> KeyState {
    KeyState {
        last: (head.ts, head.writer),
        since_checkpoint: 1,
        heads: vec![head],
    }
}

impl<'t> Fold<'t, RedbStorage<'t>> {
    /// A fold in the write transaction `raw`, over the merged values of `store`; `ids`: the
    /// diff feeds whose diffs it may read back.
    pub(crate) fn new(
        raw: &'t WriteTransaction,
        store: &Bee,
        merge: &'t dyn Merge,
        interval: u32,
        ids: FeedIds,
    ) -> FeedResult<Fold<'t, RedbStorage<'t>>> {
        Ok(Fold::with_storage(
            RedbStorage::open(raw, store, ids)?,
            merge,
            interval,
        ))
    }
}

impl<'t, S: FoldStorage> Fold<'t, S> {
    /// A fold over `storage`, merging with `merge` and checkpointing every `interval` diffs.
    pub(crate) fn with_storage(storage: S, merge: &'t dyn Merge, interval: u32) -> Fold<'t, S> {
        Fold {
            merge,
            interval: interval.max(1),
            storage,
            fresh: HashMap::new(),
            original: HashMap::new(),
            pending: BTreeMap::new(),
            last_state: None,
        }
    }

    /// The store's bytes of `key` before this transaction (read once).
    fn original(&mut self, key: &[u8]) -> FeedResult<&Option<Vec<u8>>> {
        if !self.original.contains_key(key) {
            let bytes = self.storage.original(key)?;
            self.original.insert(key.to_vec(), bytes);
        }
        self.original
            .get(key)
            .ok_or_else(|| corrupt("a value read vanished"))
    }

    /// The value of `key` as of everything merged so far, this transaction included.
    pub(crate) fn state(&mut self, key: &[u8]) -> FeedResult<Option<Value>> {
        if let Some(v) = self.pending.get(key) {
            return Ok(v.clone());
        }
        self.original(key)?
            .as_deref()
            .map(|b| Value::from_stored(b).map_err(corrupt))
            .transpose()
    }

    /// What a local write of `key` needs for its causal metadata: the stamp of the key's
    /// newest merged diff, and the key's heads (as dots, sorted).
    pub(crate) fn causal(&mut self, key: &[u8]) -> FeedResult<(Option<u64>, Vec<Dot>)> {
        Ok(match self.key_state(key)? {
            None => (None, Vec::new()),
            Some(state) => {
                let mut heads: Vec<Dot> = state
                    .heads
                    .iter()
                    .map(|h| Dot {
                        writer: h.writer,
                        seq: h.seq,
                    })
                    .collect();
                heads.sort_unstable();
                (Some(state.last.0), heads)
            }
        })
    }

    /// The merge state of `key`, if it has one. A key with a single diff has no row: its
    /// state is that diff alone (see [`single_state`]).
    fn key_state(&mut self, key: &[u8]) -> FeedResult<Option<KeyState>> {
        if let Some(cached) = &self.last_state
            && cached.key == key
        {
            return Ok(cached.state.clone());
        }
        let stored = self.storage.key_state(key)?;
        let row = stored.is_some();
        let state = match stored {
            Some(state) => Some(state),
            None => {
                let rows = self.storage.diffs(key, Bound::Unbounded)?;
                match rows[..] {
                    [] => None,
                    [((ts, writer), seq)] => Some(single_state(Head { ts, writer, seq })),
                    _ => return Err(corrupt("a key with several diffs has no key state row")),
                }
            }
        };
        self.last_state = Some(CachedState {
            key: key.to_vec(),
            state: state.clone(),
            row,
        });
        Ok(state)
    }

    /// Sets (or with `None` removes) the merge state of `key`; `single`: the key has one diff
    /// (its state is then not written, and a row left from before goes).
    fn set_key_state(
        &mut self,
        key: &[u8],
        state: Option<KeyState>,
        single: bool,
    ) -> FeedResult<()> {
        let had_row = match &self.last_state {
            Some(cached) if cached.key == key => cached.row,
            _ => true,
        };
        let row = match &state {
            Some(state)
                if !(single
                    && state
                        .heads
                        .first()
                        .is_some_and(|&h| *state == single_state(h))) =>
            {
                self.storage.insert_key_state(key, state)?;
                true
            }
            _ => {
                if had_row {
                    self.storage.remove_key_state(key)?;
                }
                false
            }
        };
        self.last_state = Some(CachedState {
            key: key.to_vec(),
            state,
            row,
        });
        Ok(())
    }

    /// Records diff `new` and merges it. `held`: its writer's feed holds its entry already
    /// (a local write appends it after the fold).
    pub(crate) fn add(&mut self, new: Loaded, held: bool) -> FeedResult<Added> {
        let key = new.record.key.clone();
        let key = key.as_slice();
        // Read before the new row goes in: a key's state may be derived from its rows.
        let state = self.key_state(key)?;
        if let Some(old) = self.storage.insert_diff(key, new.id(), new.seq)? {
            // Entries never change: the same entry is a re-delivery, another one a reuse,
            // whose row goes back to the entry it named.
            if old == new.seq {
                return Ok(Added::Duplicate);
            }
            self.storage.insert_diff(key, new.id(), old)?;
            return Ok(Added::Reused);
        }
        let first = state.is_none();
        let (mut state, covered_later) = match state {
            Some(state) if new.id() < state.last => {
                // The rebase reads the new diff back with the others: one whose entry is
                // appended after the fold is read from `fresh`.
                if !held {
                    self.fresh.insert((new.writer, new.seq), new.record.clone());
                }
                let (state, covered) = self.rebase(key, &new, state)?;
                (state, covered)
            }
            state => (self.append(key, &new, state)?, false),
        };
        // Heads the new diff had seen are heads no more; it is one unless a later diff saw it.
        state.heads.retain(|h| !new.covers(h));
        if !covered_later {
            let at = state.heads.partition_point(|h| (h.ts, h.writer) < new.id());
            state.heads.insert(at, new.head());
        }
        self.set_key_state(key, Some(state), first)?;
        if !held {
            self.fresh.insert((new.writer, new.seq), new.record);
        }
        Ok(Added::Merged)
    }

    /// Merges a diff newer than every diff of its key.
    fn append(
        &mut self,
        key: &[u8],
        new: &Loaded,
        state: Option<KeyState>,
    ) -> FeedResult<KeyState> {
        let mut ks = state.unwrap_or_default();
        let value = self.state(key)?;
        let value = self.merge.merge(key, value, &[new.to_diff()]);
        ks.since_checkpoint += 1;
        if ks.since_checkpoint >= self.interval {
            self.checkpoint(key, new, value.as_ref())?;
            ks.since_checkpoint = 0;
        }
        ks.last = new.id();
        self.pending.insert(key.to_vec(), value);
        Ok(ks)
    }

    /// Merges a diff older than the key's newest: rewinds to the newest checkpoint before it
    /// and folds the diffs after that checkpoint again. Returns the key state and whether a
    /// later diff had seen the new one.
    fn rebase(
        &mut self,
        key: &[u8],
        new: &Loaded,
        mut ks: KeyState,
    ) -> FeedResult<(KeyState, bool)> {
        let id = new.id();
        let base = self.storage.checkpoint_before(key, id)?;
        // Checkpoints after the new diff no longer hold: they are rebuilt below.
        self.storage.remove_checkpoints(key, Bound::Included(id))?;
        let (start, value) = match base {
            None => (Bound::Unbounded, None),
            Some((at, value)) => (Bound::Excluded(at), value),
        };
        let later = self.load(key, start)?;
        let covered = later.iter().any(|e| e.covers(&new.head()));
        ks.since_checkpoint = self.fold_from(key, value, &later)?;
        Ok((ks, covered))
    }

    /// Folds `diffs` onto `value`, checkpointing every `interval` diffs; sets the key's pending
    /// value and returns the number of diffs after the last checkpoint.
    fn fold_from(
        &mut self,
        key: &[u8],
        mut value: Option<Value>,
        diffs: &[Loaded],
    ) -> FeedResult<u32> {
        let mut since = 0;
        for chunk in diffs.chunks(self.interval as usize) {
            let batch: Vec<Diff> = chunk.iter().map(Loaded::to_diff).collect();
            value = self.merge.merge(key, value, &batch);
            since = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
            if since >= self.interval
                && let Some(last) = chunk.last()
            {
                self.checkpoint(key, last, value.as_ref())?;
                since = 0;
            }
        }
        self.pending.insert(key.to_vec(), value);
        Ok(since)
    }

    /// Records `value` as `key`'s value after the diff `at`.
    fn checkpoint(&mut self, key: &[u8], at: &Loaded, value: Option<&Value>) -> FeedResult<()> {
        self.storage.insert_checkpoint(key, at.id(), value)
    }

    /// The diffs of `key` from `from` on, in merge order, read from the entries their rows
    /// name.
    fn load(&mut self, key: &[u8], from: Bound<Pos>) -> FeedResult<Vec<Loaded>> {
        let rows = self.storage.diffs(key, from)?;
        let mut out = Vec::with_capacity(rows.len());
        for ((ts, writer), seq) in rows {
            let record = match self.fresh.get(&(writer, seq)) {
                Some(record) => record.clone(),
                None => self.storage.record(key, (ts, writer), seq)?,
            };
            out.push(Loaded {
                ts,
                writer,
                seq,
                record,
            });
        }
        Ok(out)
    }

    /// Removes the diffs `(key, ts, seq)` of `writer` and recomputes every key they touched
    /// from the diffs that remain.
    pub(crate) fn remove_writer(
        &mut self,
        writer: [u8; 32],
        diffs: &[(Vec<u8>, u64, u64)],
    ) -> FeedResult<()> {
        let mut keys = std::collections::BTreeSet::new();
        for (key, ts, seq) in diffs {
            // Only the row of that entry: another entry with the same key and stamp (a reuse,
            // refused when it was merged) leaves the diff it reused alone.
            if self.storage.diff(key, (*ts, writer))? == Some(*seq) {
                self.storage.remove_diff(key, (*ts, writer))?;
                keys.insert(key.clone());
            }
        }
        for key in &keys {
            self.recompute(key)?;
        }
        Ok(())
    }

    /// Recomputes a key's value, checkpoints and heads from its diffs alone.
    fn recompute(&mut self, key: &[u8]) -> FeedResult<()> {
        self.storage.remove_checkpoints(key, Bound::Unbounded)?;
        let all = self.load(key, Bound::Unbounded)?;
        let Some(last) = all.last() else {
            self.set_key_state(key, None, false)?;
            self.original(key)?;
            self.pending.insert(key.to_vec(), None);
            return Ok(());
        };
        let last = last.id();
        self.original(key)?;
        let since_checkpoint = self.fold_from(key, None, &all)?;
        // Newest first: a diff is a head unless a later one covers it, which is one whose
        // parents name it or a later diff of its own writer.
        let mut named = std::collections::HashSet::new();
        let mut newest_seq: HashMap<[u8; 32], u64> = HashMap::new();
        let mut heads = Vec::new();
        for d in all.iter().rev() {
            let dot = Dot {
                writer: d.writer,
                seq: d.seq,
            };
            if !named.contains(&dot) && newest_seq.get(&d.writer).is_none_or(|&s| s <= d.seq) {
                heads.push(d.head());
            }
            let own = newest_seq.entry(d.writer).or_default();
            *own = (*own).max(d.seq);
            named.extend(d.record.parents.iter().copied());
        }
        heads.reverse();
        let state = KeyState {
            last,
            since_checkpoint,
            heads,
        };
        let single = all.len() == 1;
        self.set_key_state(key, Some(state), single)?;
        Ok(())
    }

    /// The new value, and the store's bytes before, of every key this transaction changed.
    pub(crate) fn finish(mut self) -> FeedResult<Folded> {
        let keys: Vec<Vec<u8>> = self.pending.keys().cloned().collect();
        for key in keys {
            self.original(&key)?;
        }
        Ok(Folded {
            pending: self.pending,
            original: self.original,
        })
    }
}
