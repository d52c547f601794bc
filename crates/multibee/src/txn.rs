//! The bodies of a peer's write transactions: local writes, merge rounds and writer removal.
//! Each runs inside one group-committed redb transaction, so the diff feed, the store bee,
//! the merge tables, the cursors and the HLC move together or not at all.

use std::sync::Mutex;

use multibee_bee::{BatchOp as BeeOp, Bee};
use multibee_feed::{FeedKey, WriteTxn};
use redb::{ReadableTable, WriteTransaction};

use crate::change::{Change, merge_patch};
use crate::diff::{DiffRecord, diff_key};
use crate::error::Error;
use crate::fold::{Added, FeedIds, Fold, Folded, Loaded, bee_error, corrupt, storage};
use crate::hlc::{Clock, Hlc};
use crate::membership::MemberRecord;
use crate::merge::Merge;
use crate::options::Event;
use crate::tables::{self, META, WRITERS, WriterRow, WriterState};
use crate::value::Value;

type FeedResult<T> = multibee_feed::Result<T>;

/// What a transaction body needs of the peer.
pub(crate) struct Ctx<'a> {
    pub own: FeedKey,
    pub store: &'a Bee,
    pub merge: &'a dyn Merge,
    pub interval: u32,
    pub hlc: &'a Mutex<Hlc>,
    pub clock: &'a dyn Clock,
    pub max_drift_ms: u64,
    /// The keys this peer holds, if it keeps a partial view.
    pub view: Option<&'a crate::view::View>,
}

/// One write of a local [`crate::MultiBee::batch`].
#[derive(Clone, Debug, PartialEq)]
pub enum BatchOp {
    /// Sets a key to a value.
    Put(Vec<u8>, Value),
    /// Deletes a key.
    Del(Vec<u8>),
    /// Applies a JSON merge patch (RFC 7386) to a key's current value: see
    /// [`crate::MultiBee::patch`].
    Patch(Vec<u8>, serde_json::Value),
}

/// What a conditional write ([`crate::MultiBee::batch_if`]) expects of a key when it commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// The key is absent (never set, or deleted).
    Absent,
    /// The key is set, to anything.
    Present,
    /// The key's revision ([`crate::MultiBee::get_rev`]) is this one: it did not change since
    /// it was read.
    Rev(u64),
}

impl std::fmt::Display for Precondition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Precondition::Absent => f.write_str("absent"),
            Precondition::Present => f.write_str("present"),
            Precondition::Rev(rev) => write!(f, "at revision {rev}"),
        }
    }
}

/// What a committed [`crate::MultiBee::batch_if`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The store version once it was durable.
    pub version: u64,
    /// Each op's key's revision after the batch (`None`: absent), in the order of the ops.
    pub revs: Vec<Option<u64>>,
}

impl Precondition {
    /// Whether a key whose revision is `rev` (`None`: absent) meets it.
    pub fn holds(self, rev: Option<u64>) -> bool {
        match (self, rev) {
            (Precondition::Absent, None) | (Precondition::Present, Some(_)) => true,
            (Precondition::Rev(want), Some(have)) => want == have,
            _ => false,
        }
    }
}

impl BatchOp {
    /// The key it writes.
    pub fn key(&self) -> &[u8] {
        match self {
            BatchOp::Put(k, _) | BatchOp::Del(k) | BatchOp::Patch(k, _) => k,
        }
    }
}

impl Ctx<'_> {
    /// The stamp of a local write of a key whose newest merged diff is stamped `last`: the
    /// next HLC tick, raised above `last` so that the write comes after everything it saw.
    pub(crate) fn stamp(&self, last: Option<u64>) -> Result<Hlc, Error> {
        let mut hlc = self.hlc.lock().unwrap_or_else(|p| p.into_inner());
        let t = hlc
            .tick(self.clock.now_ms())
            .ok_or(Error::ClockExhausted { after: *hlc })?;
        let floor = match last.map(Hlc) {
            None => t,
            Some(last) => last.next().ok_or(Error::ClockExhausted { after: last })?,
        };
        *hlc = t;
        Ok(t.max(floor))
    }

    /// Advances the HLC past a merged remote timestamp, unless it is too far ahead.
    pub(crate) fn observe(&self, writer: FeedKey, ts: Hlc, events: &mut Vec<Event>) {
        let now = self.clock.now_ms();
        if ts.millis() > now.saturating_add(self.max_drift_ms) {
            events.push(Event::FutureTimestamp {
                writer,
                ts,
                local_ms: now,
            });
            return;
        }
        let mut hlc = self.hlc.lock().unwrap_or_else(|p| p.into_inner());
        *hlc = (*hlc).max(ts);
    }

    pub(crate) fn persist_hlc(&self, raw: &WriteTransaction) -> FeedResult<()> {
        let hlc = *self.hlc.lock().unwrap_or_else(|p| p.into_inner());
        let mut meta = raw.open_table(META).map_err(storage)?;
        meta.insert(tables::HLC, hlc.0.to_le_bytes().as_slice())
            .map_err(storage)?;
        Ok(())
    }

    /// Local writes: computes each change against the merged value, stamps it, and commits
    /// the diff entries, the merge and the store entries. Returns the store version, and with
    /// `want_revs` each op's key's revision after the write. A write
    /// this peer refuses (a precondition that does not hold, a removed peer, no timestamp
    /// left) fails with the reason, and nothing of it commits.
    pub(crate) fn write_local(
        &self,
        txn: &mut WriteTxn<'_>,
        conditions: &[(Vec<u8>, Precondition)],
        ops: &[BatchOp],
        want_revs: bool,
    ) -> Result<Committed, Error> {
        if !conditions.is_empty() {
            let head = self.store.head_in(txn.raw()).map_err(bee_error)?;
            for (key, condition) in conditions {
                let rev = head.get_seq(key).map_err(bee_error)?.map(|(seq, _)| seq);
                if !condition.holds(rev) {
                    return Err(Error::PreconditionFailed {
                        key: key.clone(),
                        expected: *condition,
                        found: rev,
                    });
                }
            }
        }
        let start = txn.length(&self.own)?;
        if let Some(row) = writer_row(txn.raw(), &self.own.0)?
            && row.state != WriterState::Active
        {
            return Err(Error::Removed {
                by: row.removed_by.map(FeedKey),
            });
        }
        let mut entries = Vec::new();
        // A local diff is stamped after every diff of its key, so the fold reads back no
        // other writer's diff (and its own from memory: they are appended after it).
        let ids = FeedIds::from([(self.own.0, txn.local_id(&self.own)?)]);
        let pending = {
            let mut fold = Fold::new(txn.raw(), self.store, self.merge, self.interval, ids)?;
            for op in ops {
                let key = op.key();
                let old = fold.state(key)?;
                let patched;
                let new = match op {
                    BatchOp::Put(_, v) => Some(v),
                    BatchOp::Del(_) => None,
                    BatchOp::Patch(_, patch) => {
                        patched = merge_patch(old.as_ref(), patch);
                        Some(&patched)
                    }
                };
                let Some(change) = Change::between(old.as_ref(), new) else {
                    continue;
                };
                let (last, mut parents) = fold.causal(key)?;
                parents.retain(|d| d.writer != self.own.0);
                let ts = self.stamp(last)?;
                let record = DiffRecord {
                    key: key.to_vec(),
                    ts,
                    parents,
                    change,
                };
                let entry = DiffRecord::entry(&diff_key(key, record.ts), record.encode());
                let new = Loaded {
                    ts: record.ts.0,
                    writer: self.own.0,
                    seq: start + entries.len() as u64,
                    record,
                };
                fold.add(new, false)?;
                entries.push(entry);
            }
            fold.finish()?
        };
        if !entries.is_empty() {
            txn.append(&self.own, &entries)?;
        }
        let version = self.write_store(txn, pending)?;
        self.persist_hlc(txn.raw())?;
        if !want_revs {
            return Ok(Committed {
                version,
                revs: Vec::new(),
            });
        }
        let head = self.store.head_in(txn.raw()).map_err(bee_error)?;
        let revs = ops
            .iter()
            .map(|op| {
                Ok(head
                    .get_seq(op.key())
                    .map_err(bee_error)?
                    .map(|(seq, _)| seq))
            })
            .collect::<FeedResult<Vec<_>>>()?;
        Ok(Committed { version, revs })
    }

    /// Writes the changed values into the store bee (skipping those that end as they were).
    pub(crate) fn write_store(&self, txn: &mut WriteTxn<'_>, folded: Folded) -> FeedResult<u64> {
        let Folded {
            pending,
            mut original,
        } = folded;
        let mut ops = Vec::new();
        // (key, stored value before, value after) of every key that changes, for the indexes.
        let mut changed = Vec::new();
        for (key, value) in pending {
            let before = original.get(&key).and_then(Option::as_deref);
            let op = match &value {
                Some(v) => {
                    let bytes = v.to_stored();
                    (before != Some(bytes.as_slice())).then(|| BeeOp::Put(key.clone(), bytes))
                }
                None if before.is_some() => Some(BeeOp::Del(key.clone())),
                None => None,
            };
            if let Some(op) = op {
                ops.push(op);
                let before = original.remove(&key).flatten();
                changed.push((key, before, value));
            }
        }
        if !ops.is_empty() {
            self.store.write_in(txn, &ops).map_err(bee_error)?;
            crate::index::maintain(txn.raw(), &changed)?;
        }
        txn.length(&self.store.feed().key())
    }

    /// Merges up to `budget` replicated entries of the writers this peer replicates: diffs
    /// below each writer's limit are merged, membership operations are recorded and the
    /// membership is re-evaluated. Returns how many entries it consumed (0: nothing was
    /// pending).
    pub(crate) fn merge_round(
        &self,
        txn: &mut WriteTxn<'_>,
        budget: u64,
        events: &mut Vec<Event>,
    ) -> FeedResult<u64> {
        let mut work = Vec::new();
        let mut left = budget;
        for (w, row) in writer_rows(txn.raw())? {
            if w == self.own.0 || row.state == WriterState::Forked || left == 0 {
                continue;
            }
            let key = FeedKey(w);
            // A partial peer reads up to where it holds every entry under its view.
            let frontier = match self.view {
                Some(view) => {
                    let table = txn
                        .raw()
                        .open_table(crate::view::COVERAGE)
                        .map_err(storage)?;
                    crate::view::frontier(&table, view, &w)?
                }
                None => txn.length(&key)?,
            };
            if frontier <= row.merged {
                continue;
            }
            let entries = txn.held_entries(&key, row.merged..frontier, left as usize)?;
            let read_to = match entries.last() {
                Some((i, _)) if entries.len() as u64 == left => i + 1,
                _ => frontier,
            };
            left -= entries.len() as u64;
            work.push((w, row, read_to, entries));
        }
        if work.is_empty() {
            return Ok(0);
        }
        // Decode everything first, then merge key by key: each key's diffs land together (and
        // in order when they can), on pages this transaction already touched.
        let mut diffs = Vec::new();
        let mut ops = Vec::new();
        for (w, row, _, entries) in &work {
            let writer = FeedKey(*w);
            for (seq, entry) in entries {
                let seq = *seq;
                match decode_entry(entry) {
                    Ok(Decoded::Member(op)) => {
                        self.observe(writer, op.ts, events);
                        ops.push((*w, seq, op));
                    }
                    Ok(Decoded::Diff(record)) => {
                        self.observe(writer, record.ts, events);
                        if seq < row.limit && self.in_view(&record.key) {
                            diffs.push(Loaded {
                                ts: record.ts.0,
                                writer: *w,
                                seq,
                                record,
                            });
                        }
                    }
                    Err(reason) => events.push(Event::InvalidDiff {
                        writer,
                        seq,
                        reason,
                    }),
                }
            }
        }
        self.fold_remote(txn, diffs, events)?;
        let mut consumed = 0;
        {
            let raw = txn.raw();
            let mut writers = raw.open_table(WRITERS).map_err(storage)?;
            for (w, row, merged, entries) in &work {
                let merged = *merged;
                consumed += entries.len().max(1) as u64;
                let row = WriterRow { merged, ..*row };
                writers
                    .insert(*w, row.encode().as_slice())
                    .map_err(storage)?;
                events.push(Event::Merged {
                    writer: FeedKey(*w),
                    merged,
                });
            }
        }
        if !ops.is_empty() {
            self.record_members(txn, &ops, events)?;
        }
        self.persist_hlc(txn.raw())?;
        Ok(consumed)
    }

    /// Whether this peer holds `key` (every key, unless it keeps a partial view).
    pub(crate) fn in_view(&self, key: &[u8]) -> bool {
        self.view.is_none_or(|v| v.contains(key))
    }

    /// The diff feeds of every writer (this peer's included), for a fold that may read any
    /// of their diffs back.
    fn feed_ids(&self, txn: &mut WriteTxn<'_>) -> FeedResult<FeedIds> {
        let mut ids = FeedIds::new();
        ids.insert(self.own.0, txn.local_id(&self.own)?);
        for (w, _) in writer_rows(txn.raw())? {
            ids.insert(w, txn.local_id(&FeedKey(w))?);
        }
        Ok(ids)
    }

    /// Merges remote diffs (whose entries the store holds) into the store.
    pub(crate) fn fold_remote(
        &self,
        txn: &mut WriteTxn<'_>,
        mut diffs: Vec<Loaded>,
        events: &mut Vec<Event>,
    ) -> FeedResult<()> {
        if diffs.is_empty() {
            return Ok(());
        }
        diffs.sort_by(|a, b| (&a.record.key, a.ts, a.writer).cmp(&(&b.record.key, b.ts, b.writer)));
        let ids = self.feed_ids(txn)?;
        let pending = {
            let mut fold = Fold::new(txn.raw(), self.store, self.merge, self.interval, ids)?;
            for new in diffs {
                let (writer, seq, ts) = (FeedKey(new.writer), new.seq, new.record.ts);
                if fold.add(new, true)? == Added::Reused {
                    events.push(Event::InvalidDiff {
                        writer,
                        seq,
                        reason: format!(
                            "the writer already wrote another diff of this key at {ts}"
                        ),
                    });
                }
            }
            fold.finish()?
        };
        self.write_store(txn, pending)?;
        Ok(())
    }

    /// Stops counting `writer`'s diffs from entry `from` on (frozen, or cut by a removal):
    /// those diffs are taken out and every key they touched is recomputed from the others'
    /// diffs. `merged`: how many of its entries were read. Returns the number of keys.
    pub(crate) fn unmerge(
        &self,
        txn: &mut WriteTxn<'_>,
        writer: FeedKey,
        from: u64,
        until: u64,
    ) -> FeedResult<usize> {
        if from >= until {
            return Ok(0);
        }
        let entries = txn.held_entries(&writer, from..until, usize::MAX)?;
        let diffs: Vec<(Vec<u8>, u64, u64)> = entries
            .iter()
            .filter_map(|(seq, e)| match decode_entry(e) {
                Ok(Decoded::Diff(r)) if self.in_view(&r.key) => Some((r.key, r.ts.0, *seq)),
                _ => None,
            })
            .collect();
        let ids = self.feed_ids(txn)?;
        let pending = {
            let mut fold = Fold::new(txn.raw(), self.store, self.merge, self.interval, ids)?;
            fold.remove_writer(writer.0, &diffs)?;
            fold.finish()?
        };
        let touched = pending.pending.len();
        self.write_store(txn, pending)?;
        Ok(touched)
    }

    /// Merges `writer`'s diffs in entries `from..until` (already read, not counted before).
    pub(crate) fn remerge(
        &self,
        txn: &mut WriteTxn<'_>,
        writer: FeedKey,
        from: u64,
        until: u64,
        events: &mut Vec<Event>,
    ) -> FeedResult<()> {
        if from >= until {
            return Ok(());
        }
        let entries = txn.held_entries(&writer, from..until, usize::MAX)?;
        let mut diffs = Vec::new();
        for (seq, entry) in entries {
            if let Ok(Decoded::Diff(record)) = decode_entry(&entry)
                && self.in_view(&record.key)
            {
                diffs.push(Loaded {
                    ts: record.ts.0,
                    writer: writer.0,
                    seq,
                    record,
                });
            }
        }
        self.fold_remote(txn, diffs, events)
    }

    /// Freezes `writer` (caught signing two histories): none of its diffs count any more.
    pub(crate) fn freeze(&self, txn: &mut WriteTxn<'_>, writer: FeedKey) -> FeedResult<usize> {
        let Some(row) = writer_row(txn.raw(), &writer.0)? else {
            return Ok(0);
        };
        let touched = self.unmerge(txn, writer, 0, row.merged.min(row.limit))?;
        let row = WriterRow {
            state: WriterState::Forked,
            limit: 0,
            ..row
        };
        set_writer(txn.raw(), &writer.0, row)?;
        Ok(touched)
    }
}

/// A diff feed entry, decoded.
pub(crate) enum Decoded {
    /// A change to a key.
    Diff(DiffRecord),
    /// A membership operation.
    Member(MemberRecord),
}

/// Decodes a diff feed entry; the error says why it is neither a diff nor a membership
/// operation, decided by the entry's bytes alone.
pub(crate) fn decode_entry(entry: &[u8]) -> Result<Decoded, String> {
    match MemberRecord::from_entry(entry) {
        Some(op) => op.map(Decoded::Member),
        None => DiffRecord::from_entry(entry).map(|(r, _)| Decoded::Diff(r)),
    }
}

/// Every writer row, in key order.
pub(crate) fn writer_rows(raw: &WriteTransaction) -> FeedResult<Vec<([u8; 32], WriterRow)>> {
    let table = raw.open_table(WRITERS).map_err(storage)?;
    let mut out = Vec::new();
    for row in table.iter().map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        let row = WriterRow::decode(v.value()).ok_or_else(|| corrupt("a writer row"))?;
        out.push((k.value(), row));
    }
    Ok(out)
}

pub(crate) fn writer_row(raw: &WriteTransaction, key: &[u8; 32]) -> FeedResult<Option<WriterRow>> {
    let table = raw.open_table(WRITERS).map_err(storage)?;
    let row = table.get(*key).map_err(storage)?;
    row.map(|r| WriterRow::decode(r.value()).ok_or_else(|| corrupt("a writer row")))
        .transpose()
}

pub(crate) fn set_writer(raw: &WriteTransaction, key: &[u8; 32], row: WriterRow) -> FeedResult<()> {
    let mut table = raw.open_table(WRITERS).map_err(storage)?;
    table
        .insert(*key, row.encode().as_slice())
        .map_err(storage)?;
    Ok(())
}
