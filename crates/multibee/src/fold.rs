//! The merge engine, inside one write transaction: records diffs, folds them into the keys'
//! values in `(Hlc, writer)` order (rewinding to a checkpoint when a diff arrives late), and
//! keeps each key's causal heads for `conflicts`.

use std::collections::BTreeMap;
use std::ops::Bound;

use multibee_bee::Bee;
use multibee_feed::{Error as FeedError, FeedKey};
use redb::{ReadableTable, Table, WriteTransaction};

use crate::diff::DiffRecord;
use crate::merge::{Diff, Merge};
use crate::tables::{self, CHECKPOINTS, DIFFS, DiffId, HEADS, KEYS, KeyRow};
use crate::value::Value;

type FeedResult<T> = multibee_feed::Result<T>;

/// Converts any redb error into the feed layer's storage error.
pub(crate) fn storage<E: Into<redb::Error>>(e: E) -> FeedError {
    FeedError::from(e.into())
}

pub(crate) fn corrupt(what: impl std::fmt::Display) -> FeedError {
    FeedError::Corrupt(format!("multibee: {what}"))
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

/// One diff loaded from `mb-diffs-1`.
struct Loaded {
    ts: u64,
    writer: [u8; 32],
    seq: u64,
    record: DiffRecord,
}

impl Loaded {
    /// Whether the writer of `self` had seen `(writer, seq)` when it wrote `self`.
    fn covers(&self, writer: &[u8; 32], seq: u64) -> bool {
        if &self.writer == writer {
            self.seq > seq
        } else {
            self.record.saw(writer) > seq
        }
    }

    fn to_diff(&self) -> Diff {
        Diff {
            ts: crate::Hlc(self.ts),
            writer: FeedKey(self.writer),
            change: self.record.change.clone(),
        }
    }
}

fn lo(key: &[u8]) -> DiffId<'_> {
    (key, 0, [0; 32])
}

fn hi(key: &[u8]) -> DiffId<'_> {
    (key, u64::MAX, [0xFF; 32])
}

/// The merge state of one transaction.
pub(crate) struct Fold<'t> {
    raw: &'t WriteTransaction,
    store: &'t Bee,
    merge: &'t dyn Merge,
    interval: u32,
    diffs: Table<'t, DiffId<'static>, &'static [u8]>,
    checkpoints: Table<'t, DiffId<'static>, &'static [u8]>,
    keys: Table<'t, &'static [u8], [u8; 44]>,
    heads: Table<'t, DiffId<'static>, u64>,
    /// The new value of every key this transaction changed.
    pending: BTreeMap<Vec<u8>, Option<Value>>,
}

impl<'t> Fold<'t> {
    pub(crate) fn new(
        raw: &'t WriteTransaction,
        store: &'t Bee,
        merge: &'t dyn Merge,
        interval: u32,
    ) -> FeedResult<Fold<'t>> {
        Ok(Fold {
            raw,
            store,
            merge,
            interval: interval.max(1),
            diffs: raw.open_table(DIFFS).map_err(storage)?,
            checkpoints: raw.open_table(CHECKPOINTS).map_err(storage)?,
            keys: raw.open_table(KEYS).map_err(storage)?,
            heads: raw.open_table(HEADS).map_err(storage)?,
            pending: BTreeMap::new(),
        })
    }

    /// The value of `key` as of everything merged so far, this transaction included.
    pub(crate) fn state(&mut self, key: &[u8]) -> FeedResult<Option<Value>> {
        if let Some(v) = self.pending.get(key) {
            return Ok(v.clone());
        }
        let stored = self.store.get_in(self.raw, key).map_err(bee_error)?;
        stored
            .map(|b| Value::from_stored(&b).map_err(corrupt))
            .transpose()
    }

    /// Records `record` (the diff `seq` of `writer`, `bytes` its encoding) and merges it.
    pub(crate) fn add(
        &mut self,
        writer: [u8; 32],
        seq: u64,
        record: &DiffRecord,
        bytes: &[u8],
    ) -> FeedResult<Added> {
        let key = record.key.as_slice();
        let ts = record.ts.0;
        let row = tables::diff_row(seq, bytes);
        if let Some(old) = self.diffs.get((key, ts, writer)).map_err(storage)? {
            return Ok(if old.value() == row.as_slice() {
                Added::Duplicate
            } else {
                Added::Reused
            });
        }
        self.diffs
            .insert((key, ts, writer), row.as_slice())
            .map_err(storage)?;
        let new = Loaded {
            ts,
            writer,
            seq,
            record: record.clone(),
        };
        let last = self
            .keys
            .get(key)
            .map_err(storage)?
            .map(|r| KeyRow::decode(r.value()));
        let covered_later = match last {
            Some(row) if (ts, writer) < row.last => self.rebase(key, &new)?,
            _ => {
                self.append(key, &new, last)?;
                false
            }
        };
        self.update_heads(key, &new, covered_later)?;
        Ok(Added::Merged)
    }

    /// Merges a diff newer than every diff of its key.
    fn append(&mut self, key: &[u8], new: &Loaded, last: Option<KeyRow>) -> FeedResult<()> {
        let state = self.state(key)?;
        let state = self.merge.merge(key, state, &[new.to_diff()]);
        let mut since = last.map_or(0, |r| r.since_checkpoint) + 1;
        if since >= self.interval {
            self.checkpoint(key, new, state.as_ref())?;
            since = 0;
        }
        let row = KeyRow {
            last: (new.ts, new.writer),
            since_checkpoint: since,
        };
        self.keys.insert(key, row.encode()).map_err(storage)?;
        self.pending.insert(key.to_vec(), state);
        Ok(())
    }

    /// Merges a diff older than the key's newest: rewinds to the newest checkpoint before it
    /// and folds the diffs after that checkpoint again. Returns whether a later diff had seen
    /// the new one.
    fn rebase(&mut self, key: &[u8], new: &Loaded) -> FeedResult<bool> {
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
        let (start, state) = match base {
            None => (Bound::Included(lo(key)), None),
            Some(((ts, w), state)) => (Bound::Excluded((key, ts, w)), state),
        };
        let later = self.load(key, (start, Bound::Included(hi(key))))?;
        let covered = later
            .iter()
            .any(|e| (e.ts, e.writer) > (new.ts, new.writer) && e.covers(&new.writer, new.seq));
        let since = self.fold_from(key, state, &later)?;
        let last = later
            .last()
            .map_or((new.ts, new.writer), |l| (l.ts, l.writer));
        let row = KeyRow {
            last,
            since_checkpoint: since,
        };
        self.keys.insert(key, row.encode()).map_err(storage)?;
        Ok(covered)
    }

    /// Folds `diffs` onto `state`, checkpointing every `interval` diffs; sets the key's pending
    /// value and returns the number of diffs after the last checkpoint.
    fn fold_from(
        &mut self,
        key: &[u8],
        mut state: Option<Value>,
        diffs: &[Loaded],
    ) -> FeedResult<u32> {
        let mut since = 0;
        for chunk in diffs.chunks(self.interval as usize) {
            let batch: Vec<Diff> = chunk.iter().map(Loaded::to_diff).collect();
            state = self.merge.merge(key, state, &batch);
            since = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
            if since >= self.interval
                && let Some(last) = chunk.last()
            {
                self.checkpoint(key, last, state.as_ref())?;
                since = 0;
            }
        }
        self.pending.insert(key.to_vec(), state);
        Ok(since)
    }

    fn checkpoint(&mut self, key: &[u8], at: &Loaded, state: Option<&Value>) -> FeedResult<()> {
        let bytes = tables::encode_state(state);
        self.checkpoints
            .insert((key, at.ts, at.writer), bytes.as_slice())
            .map_err(storage)?;
        Ok(())
    }

    /// The diffs of `key` in `range`, in merge order.
    fn load(
        &self,
        _key: &[u8],
        range: (Bound<DiffId<'_>>, Bound<DiffId<'_>>),
    ) -> FeedResult<Vec<Loaded>> {
        let mut out = Vec::new();
        for row in self.diffs.range::<DiffId>(range).map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            let (_, ts, writer) = k.value();
            out.push(decode_loaded(ts, writer, v.value())?);
        }
        Ok(out)
    }

    fn loaded(&self, key: &[u8], ts: u64, writer: [u8; 32]) -> FeedResult<Loaded> {
        let row = self
            .diffs
            .get((key, ts, writer))
            .map_err(storage)?
            .ok_or_else(|| corrupt("a head names a diff that is not stored"))?;
        decode_loaded(ts, writer, row.value())
    }

    /// Drops the heads `new` has seen, and makes `new` a head unless a stored diff saw it.
    fn update_heads(&mut self, key: &[u8], new: &Loaded, covered_later: bool) -> FeedResult<()> {
        let mut heads = Vec::new();
        for row in self.heads.range(lo(key)..=hi(key)).map_err(storage)? {
            let (k, _) = row.map_err(storage)?;
            let (_, ts, w) = k.value();
            heads.push((ts, w));
        }
        let mut covered = covered_later;
        for (ts, w) in heads {
            let head = self.loaded(key, ts, w)?;
            if new.covers(&head.writer, head.seq) {
                self.heads.remove((key, ts, w)).map_err(storage)?;
            } else if head.covers(&new.writer, new.seq) {
                covered = true;
            }
        }
        if !covered {
            self.heads
                .insert((key, new.ts, new.writer), new.seq)
                .map_err(storage)?;
        }
        Ok(())
    }

    /// Removes the diffs `(key, ts)` of `writer` and recomputes every key they touched from
    /// the diffs that remain.
    pub(crate) fn remove_writer(
        &mut self,
        writer: [u8; 32],
        diffs: &[(Vec<u8>, u64)],
    ) -> FeedResult<usize> {
        let mut keys = std::collections::BTreeSet::new();
        for (key, ts) in diffs {
            if self
                .diffs
                .remove((key.as_slice(), *ts, writer))
                .map_err(storage)?
                .is_some()
            {
                keys.insert(key.clone());
            }
        }
        for key in &keys {
            self.recompute(key)?;
        }
        Ok(keys.len())
    }

    /// Recomputes a key's value, checkpoints and heads from its diffs alone.
    fn recompute(&mut self, key: &[u8]) -> FeedResult<()> {
        self.checkpoints
            .retain_in(lo(key)..=hi(key), |_, _| false)
            .map_err(storage)?;
        self.heads
            .retain_in(lo(key)..=hi(key), |_, _| false)
            .map_err(storage)?;
        let all = self.load(key, (Bound::Included(lo(key)), Bound::Included(hi(key))))?;
        let Some(last) = all.last() else {
            self.keys.remove(key).map_err(storage)?;
            self.pending.insert(key.to_vec(), None);
            return Ok(());
        };
        let row = KeyRow {
            last: (last.ts, last.writer),
            since_checkpoint: 0,
        };
        let since = self.fold_from(key, None, &all)?;
        let row = KeyRow {
            since_checkpoint: since,
            ..row
        };
        self.keys.insert(key, row.encode()).map_err(storage)?;
        // Newest first: `seen[w]` is the highest seq of writer `w` a later diff had seen (for
        // `w` itself, its own later seq), so a diff is a head iff nothing later saw it.
        let mut seen: std::collections::HashMap<[u8; 32], u64> = Default::default();
        for d in all.iter().rev() {
            if seen.get(&d.writer).is_none_or(|&s| s <= d.seq) {
                self.heads
                    .insert((key, d.ts, d.writer), d.seq)
                    .map_err(storage)?;
            }
            let own = seen.entry(d.writer).or_default();
            *own = (*own).max(d.seq);
            for (w, len) in &d.record.context {
                let s = seen.entry(*w).or_default();
                *s = (*s).max(*len);
            }
        }
        Ok(())
    }

    /// The new value of every key this transaction changed.
    pub(crate) fn into_pending(self) -> BTreeMap<Vec<u8>, Option<Value>> {
        self.pending
    }
}

fn decode_loaded(ts: u64, writer: [u8; 32], row: &[u8]) -> FeedResult<Loaded> {
    let (seq, bytes) = tables::split_diff_row(row).ok_or_else(|| corrupt("a short diff row"))?;
    let record = DiffRecord::decode(bytes).map_err(corrupt)?;
    Ok(Loaded {
        ts,
        writer,
        seq,
        record,
    })
}

/// A bee error inside a write transaction, as the feed layer's error.
pub(crate) fn bee_error(e: multibee_bee::Error) -> FeedError {
    match e {
        multibee_bee::Error::Feed(e) => e,
        other => FeedError::InvalidArgument(other.to_string()),
    }
}
