//! The merge engine, inside one write transaction: records diffs, folds them into the keys'
//! values in `(Hlc, writer)` order (rewinding to a checkpoint when a diff arrives late), and
//! keeps each key's causal heads for `conflicts`.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use multibee_bee::{Bee, HeadReader};
use multibee_feed::{EntryReader, Error as FeedError, FeedKey, LocalId};
use redb::{ReadableTable, Table, WriteTransaction};

use crate::diff::{DiffRecord, Dot};
use crate::merge::{Diff, Merge};
use crate::tables::{self, CHECKPOINTS, DIFFS, DiffId, Head, KEYS, KeyState};
use crate::value::Value;

type FeedResult<T> = multibee_feed::Result<T>;

/// Converts any redb error into the feed layer's storage error.
pub(crate) fn storage<E: Into<redb::Error>>(e: E) -> FeedError {
    FeedError::from(e.into())
}

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
    fn id(&self) -> (u64, [u8; 32]) {
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

    fn to_diff(&self) -> Diff {
        Diff {
            ts: crate::Hlc(self.ts),
            writer: FeedKey(self.writer),
            change: self.record.change.clone(),
        }
    }

    fn head(&self) -> Head {
        Head {
            ts: self.ts,
            writer: self.writer,
            seq: self.seq,
        }
    }
}

fn lo(key: &[u8]) -> DiffId<'_> {
    (key, 0, [0; 32])
}

fn hi(key: &[u8]) -> DiffId<'_> {
    (key, u64::MAX, [0xFF; 32])
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

/// The merge state of one transaction.
pub(crate) struct Fold<'t> {
    merge: &'t dyn Merge,
    interval: u32,
    raw: &'t WriteTransaction,
    /// The diff feeds of the writers whose diffs may be read back (rebase, recompute).
    ids: FeedIds,
    /// Diffs added by this transaction whose entries are appended after the fold (local
    /// writes): read back from here, not from their feed.
    fresh: HashMap<([u8; 32], u64), DiffRecord>,
    head: HeadReader<'t>,
    diffs: Table<'t, DiffId<'static>, u64>,
    checkpoints: Table<'t, DiffId<'static>, &'static [u8]>,
    keys: Table<'t, &'static [u8], &'static [u8]>,
    /// The store's value of every key read, as it was before this transaction.
    original: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// The new value of every key this transaction changed.
    pending: BTreeMap<Vec<u8>, Option<Value>>,
}

/// The outcome of a fold: the new values, and the store's bytes before, of every changed key.
pub(crate) struct Folded {
    pub pending: BTreeMap<Vec<u8>, Option<Value>>,
    pub original: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'t> Fold<'t> {
    pub(crate) fn new(
        raw: &'t WriteTransaction,
        store: &Bee,
        merge: &'t dyn Merge,
        interval: u32,
        ids: FeedIds,
    ) -> FeedResult<Fold<'t>> {
        Ok(Fold {
            merge,
            interval: interval.max(1),
            raw,
            ids,
            fresh: HashMap::new(),
            head: store.head_in(raw).map_err(bee_error)?,
            diffs: raw.open_table(DIFFS).map_err(storage)?,
            checkpoints: raw.open_table(CHECKPOINTS).map_err(storage)?,
            keys: raw.open_table(KEYS).map_err(storage)?,
            original: HashMap::new(),
            pending: BTreeMap::new(),
        })
    }

    fn original(&mut self, key: &[u8]) -> FeedResult<&Option<Vec<u8>>> {
        if !self.original.contains_key(key) {
            let bytes = self.head.get(key).map_err(bee_error)?;
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
    pub(crate) fn causal(&self, key: &[u8]) -> FeedResult<(Option<u64>, Vec<Dot>)> {
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

    fn key_state(&self, key: &[u8]) -> FeedResult<Option<KeyState>> {
        match self.keys.get(key).map_err(storage)? {
            None => Ok(None),
            Some(row) => KeyState::decode(row.value())
                .map(Some)
                .ok_or_else(|| corrupt("a key state row")),
        }
    }

    /// Records diff `new` and merges it. `held`: its writer's feed holds its entry already
    /// (a local write appends it after the fold).
    pub(crate) fn add(&mut self, new: Loaded, held: bool) -> FeedResult<Added> {
        let key = new.record.key.clone();
        let key = key.as_slice();
        if let Some(old) = self.diffs.get((key, new.ts, new.writer)).map_err(storage)? {
            // Entries never change: the same entry is a re-delivery, another one a reuse.
            return Ok(if old.value() == new.seq {
                Added::Duplicate
            } else {
                Added::Reused
            });
        }
        self.diffs
            .insert((key, new.ts, new.writer), new.seq)
            .map_err(storage)?;
        let (mut state, covered_later) = match self.key_state(key)? {
            Some(state) if new.id() < state.last => {
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
        self.keys
            .insert(key, state.encode().as_slice())
            .map_err(storage)?;
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
        let id = (key, new.ts, new.writer);
        let base = match self
            .checkpoints
            .range(lo(key)..id)
            .map_err(storage)?
            .next_back()
        {
            None => None,
            Some(row) => {
                let (k, v) = row.map_err(storage)?;
                let (_, ts, w) = k.value();
                let state = tables::decode_state(v.value()).map_err(corrupt)?;
                Some(((ts, w), state))
            }
        };
        // Checkpoints after the new diff no longer hold: they are rebuilt below.
        self.checkpoints
            .retain_in(id..=hi(key), |_, _| false)
            .map_err(storage)?;
        let (start, value) = match base {
            None => (Bound::Included(lo(key)), None),
            Some(((ts, w), value)) => (Bound::Excluded((key, ts, w)), value),
        };
        let later = self.load((start, Bound::Included(hi(key))))?;
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

    fn checkpoint(&mut self, key: &[u8], at: &Loaded, value: Option<&Value>) -> FeedResult<()> {
        let bytes = tables::encode_state(value);
        self.checkpoints
            .insert((key, at.ts, at.writer), bytes.as_slice())
            .map_err(storage)?;
        Ok(())
    }

    /// The diffs in `range`, in merge order, read from the entries their rows name.
    fn load(&self, range: (Bound<DiffId<'_>>, Bound<DiffId<'_>>)) -> FeedResult<Vec<Loaded>> {
        let mut out = Vec::new();
        let mut entries = None;
        for row in self.diffs.range::<DiffId>(range).map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            let (key, ts, writer) = k.value();
            let seq = v.value();
            let record = match self.fresh.get(&(writer, seq)) {
                Some(record) => record.clone(),
                None => {
                    let feed = *self.ids.get(&writer).ok_or_else(|| {
                        corrupt(format!(
                            "a diff of {} is not in a known feed",
                            FeedKey(writer)
                        ))
                    })?;
                    let entries = match &mut entries {
                        Some(entries) => entries,
                        None => entries.insert(EntryReader::open_in(self.raw)?),
                    };
                    diff_at(entries, feed, (key, ts, seq))?
                }
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

    /// Removes the diffs `(key, ts)` of `writer` and recomputes every key they touched from
    /// the diffs that remain.
    pub(crate) fn remove_writer(
        &mut self,
        writer: [u8; 32],
        diffs: &[(Vec<u8>, u64)],
    ) -> FeedResult<()> {
        let mut keys = std::collections::BTreeSet::new();
        for (key, ts) in diffs {
            let removed = self
                .diffs
                .remove((key.as_slice(), *ts, writer))
                .map_err(storage)?;
            if removed.is_some() {
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
        self.checkpoints
            .retain_in(lo(key)..=hi(key), |_, _| false)
            .map_err(storage)?;
        let all = self.load((Bound::Included(lo(key)), Bound::Included(hi(key))))?;
        let Some(last) = all.last() else {
            self.keys.remove(key).map_err(storage)?;
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
        self.keys
            .insert(key, state.encode().as_slice())
            .map_err(storage)?;
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
