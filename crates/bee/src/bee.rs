//! The [`Bee`] handle: reads, writes, subs and checkouts.

use std::collections::HashMap;

use multibee_feed::{Batch, Feed, Ingested, WriteTxn};
use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use crate::error::{Error, Result};
use crate::index;
use crate::keyspace::Keyspace;
use crate::op::{self, Op};
use crate::range::{self, Entry, Range, RangeOptions};
use crate::tables::{self, BEES, LATEST, VERSIONS};

/// One operation of an atomic [`Bee::batch`], with a user key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    /// Set a key.
    Put(Vec<u8>, Vec<u8>),
    /// Remove a key (nothing is appended if it is absent at that point of the batch).
    Del(Vec<u8>),
}

/// What a compare-and-swap expects to find at a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The key is absent.
    Absent,
    /// The key holds exactly this value.
    Value(Vec<u8>),
    /// The key was last set by the put with this sequence number.
    Seq(u64),
}

/// An ordered key/value store over one feed (own: read-write; replica: read-only).
///
/// The feed is the source of truth: every put, and every delete of a key that is set, is one
/// entry (a delete of an absent key appends nothing, as in hyperbee). The index lives in the
/// same redb database and is written in the same transaction. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Bee {
    feed: Feed,
    id: u64,
    space: Keyspace,
    at: Option<u64>,
}

impl Bee {
    /// Opens the bee over `feed`, indexing any entries the index does not reflect yet.
    pub async fn open(feed: Feed) -> Result<Bee> {
        let key = feed.key();
        loop {
            let level = feed
                .store()
                .write(move |txn| {
                    index::upgrade(txn.raw())?;
                    index::catch_up(txn, &key)
                })
                .await?;
            if level {
                break;
            }
        }
        let txn = feed.store().begin_read()?;
        let (id, _) = registration(&txn, &feed)?;
        Ok(Bee {
            feed,
            id,
            space: Keyspace::default(),
            at: None,
        })
    }

    /// The feed this bee lives on.
    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    /// The version: the feed length the index reflects (or the checkout's version).
    pub fn version(&self) -> Result<u64> {
        match self.at {
            Some(v) => Ok(v),
            None => Ok(registration(&self.feed.store().begin_read()?, &self.feed)?.1),
        }
    }

    /// Whether this is a checkout (a fixed version) rather than the live head.
    pub fn is_checkout(&self) -> bool {
        self.at.is_some()
    }

    /// A sub-database: its keys live under a prefix no other sub or plain key can reach.
    pub fn sub(&self, name: impl AsRef<[u8]>) -> Bee {
        Bee {
            space: self.space.sub(name.as_ref()),
            ..self.clone()
        }
    }

    /// A read-only snapshot at `version`: every read returns what it returned then.
    pub fn checkout(&self, version: u64) -> Result<Bee> {
        let current = self.version()?;
        if version > current {
            return Err(Error::FutureVersion {
                asked: version,
                version: current,
            });
        }
        Ok(Bee {
            at: Some(version),
            ..self.clone()
        })
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        Ok(self.get_entry(key)?.map(|e| e.value))
    }

    /// The entry of `key` (with the sequence number that set it), if set.
    pub fn get_entry(&self, key: impl AsRef<[u8]>) -> Result<Option<Entry>> {
        let key = key.as_ref();
        let stored = self.space.encode(key);
        let txn = self.feed.store().begin_read()?;
        // The head row, if its put is visible at this version: then it is the answer (every
        // version row of a set key is older than its head row).
        let head = {
            let table = txn.open_table(LATEST)?;
            let row = table.get((self.id, stored.as_slice()))?;
            match row {
                None => None,
                Some(row) => {
                    let (seq, value) = tables::split_latest_row(row.value()).ok_or_else(corrupt)?;
                    Some((seq, value.to_vec()))
                }
            }
        };
        let found = match (self.at, head) {
            (None, head) => head,
            (Some(version), Some((seq, value))) if seq < version => Some((seq, value)),
            (Some(version), _) => {
                let table = txn.open_table(VERSIONS)?;
                let lo: (u64, &[u8], u64) = (self.id, &stored, 0);
                let mut rows = table.range(lo..(self.id, stored.as_slice(), version))?;
                match rows.next_back() {
                    None => None,
                    Some(row) => {
                        let (k, v) = row?;
                        let seq = k.value().2;
                        if v.value() == tables::PUT {
                            let entries = multibee_feed::SnapshotEntries::open(&txn)?;
                            let value =
                                range::put_value(&entries, self.feed.local_id(), seq, &stored)?;
                            Some((seq, value))
                        } else {
                            None
                        }
                    }
                }
            }
        };
        Ok(found.map(|(seq, value)| Entry {
            seq,
            key: key.to_vec(),
            value,
        }))
    }

    /// A reader of this bee's head inside the write transaction `raw` (seeing what it wrote so
    /// far, through [`WriteTxn::raw`]), for layers that read and write in one transaction.
    /// Drop it before writing to the bee.
    pub fn head_in<'t>(&self, raw: &'t redb::WriteTransaction) -> Result<HeadReader<'t>> {
        Ok(HeadReader {
            table: raw.open_table(LATEST).map_err(index::storage)?,
            id: self.id,
            space: self.space.clone(),
            _txn: std::marker::PhantomData,
        })
    }

    /// The entries of a range query, lazily, from one snapshot.
    pub fn range(&self, opts: &RangeOptions) -> Result<Range> {
        let txn = self.feed.store().begin_read()?;
        match self.at {
            None => range::head(&txn, self.id, &self.space, opts),
            Some(version) => range::checkout(
                &txn,
                self.id,
                self.feed.local_id(),
                &self.space,
                opts,
                version,
            ),
        }
    }

    /// The first entry of a range query, if any.
    pub fn peek(&self, opts: &RangeOptions) -> Result<Option<Entry>> {
        self.range(&RangeOptions {
            limit: Some(1),
            ..opts.clone()
        })?
        .next()
        .transpose()
    }

    /// Sets `key` to `value`; returns the sequence number of the put once it is durable. A put
    /// always appends, even of the value the key already holds (as in hyperbee).
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<u64> {
        let op = BatchOp::Put(key.as_ref().to_vec(), value.as_ref().to_vec());
        Ok(self.write(vec![op], None).await?.start)
    }

    /// Removes `key`; returns the sequence number of the delete once it is durable, or `None`
    /// if `key` was absent: then nothing is appended and the version and history stay as they
    /// were (as hyperbee's `del`).
    pub async fn del(&self, key: impl AsRef<[u8]>) -> Result<Option<u64>> {
        let seqs = self
            .write(vec![BatchOp::Del(key.as_ref().to_vec())], None)
            .await?;
        Ok((!seqs.is_empty()).then_some(seqs.start))
    }

    /// Sets `key` only if it currently matches `expect` (checked atomically with the write);
    /// returns the sequence number of the put. A failed check appends nothing.
    pub async fn put_cas(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        expect: Expect,
    ) -> Result<u64> {
        let op = BatchOp::Put(key.as_ref().to_vec(), value.as_ref().to_vec());
        Ok(self.write(vec![op], Some(expect)).await?.start)
    }

    /// Removes `key` only if it currently matches `expect`. Like [`Bee::del`], returns the
    /// sequence number of the delete, or `None` when `key` was absent (so `Expect::Absent`
    /// held) and nothing was appended. A failed check appends nothing.
    pub async fn del_cas(&self, key: impl AsRef<[u8]>, expect: Expect) -> Result<Option<u64>> {
        let seqs = self
            .write(vec![BatchOp::Del(key.as_ref().to_vec())], Some(expect))
            .await?;
        Ok((!seqs.is_empty()).then_some(seqs.start))
    }

    /// Applies the ops in order, atomically, under one signature; returns the new version.
    /// Each put appends one entry; a delete appends one only if its key is set at that point of
    /// the batch (by the head or an earlier op of the batch), as in a hyperbee batch. So the
    /// version grows by at most `ops.len()`, and not at all if every op is such a delete.
    pub async fn batch(&self, ops: Vec<BatchOp>) -> Result<u64> {
        Ok(self.write(ops, None).await?.end)
    }

    /// Writes `ops` inside a transaction the caller runs (for layers that write several bees
    /// and their own tables atomically), with the semantics of [`Bee::batch`] (deletes of
    /// absent keys append nothing); returns the sequence numbers it appended (empty if none,
    /// starting at the feed length).
    pub fn write_in(
        &self,
        txn: &mut WriteTxn<'_>,
        ops: &[BatchOp],
    ) -> Result<std::ops::Range<u64>> {
        self.writable()?;
        let key = self.feed.key();
        index::catch_up_all(txn, &key)?;
        let ops = self.effective_ops(txn.raw(), ops)?;
        let start = txn.length(&key)?;
        if ops.is_empty() {
            return Ok(start..start);
        }
        let entries: Vec<Vec<u8>> = ops.iter().map(op::encode).collect();
        let end = txn.append(&key, &entries)?;
        let raw = txn.raw();
        index::index_ops(raw, self.id, start, ops.iter().map(Ok))?;
        index::set_indexed(raw, &key, self.id, end)?;
        Ok(start..end)
    }

    /// The stored ops of `ops` that change something, in order: every put, and each delete of
    /// a key that the head or an earlier op of `ops` sets. Only the writing side filters: the
    /// index still indexes a delete of an absent key that a feed holds (older writers
    /// appended them), which changes no read.
    fn effective_ops(&self, raw: &WriteTransaction, ops: &[BatchOp]) -> Result<Vec<Op>> {
        let latest = raw.open_table(LATEST).map_err(index::storage)?;
        let mut set: HashMap<Vec<u8>, bool> = HashMap::new();
        let mut out = Vec::with_capacity(ops.len());
        // Only a later delete in the batch asks what an earlier op did to its key.
        let track = ops.iter().any(|op| matches!(op, BatchOp::Del(_)));
        for op in ops {
            let op = self.stored_op(op);
            let is_set = op.value().is_some();
            // Only a delete needs to know whether its key is set: a put always appends.
            let keep = is_set
                || match set.get(op.key()) {
                    Some(&s) => s,
                    None => latest
                        .get((self.id, op.key()))
                        .map_err(index::storage)?
                        .is_some(),
                };
            if track {
                set.insert(op.key().to_vec(), is_set);
            }
            if keep {
                out.push(op);
            }
        }
        Ok(out)
    }

    /// Runs `ops` (after checking `expect` against the first) in one transaction; returns the
    /// sequence numbers appended.
    async fn write(
        &self,
        ops: Vec<BatchOp>,
        expect: Option<Expect>,
    ) -> Result<std::ops::Range<u64>> {
        self.writable()?;
        if ops.is_empty() {
            let version = self.version()?;
            return Ok(version..version);
        }
        let this = self.clone();
        self.feed
            .store()
            .write(move |txn| {
                if let Some(expect) = &expect
                    && !this.matches(txn, &ops[0], expect)?
                {
                    return Ok(Err(Error::CasFailed {
                        key: op_key(&ops[0]).to_vec(),
                    }));
                }
                match this.write_in(txn, &ops) {
                    Err(Error::Feed(e)) => Err(e),
                    other => Ok(other),
                }
            })
            .await?
    }

    /// Whether the key of `op` currently matches `expect`, inside the write transaction.
    fn matches(
        &self,
        txn: &mut WriteTxn<'_>,
        op: &BatchOp,
        expect: &Expect,
    ) -> multibee_feed::Result<bool> {
        let stored = self.space.encode(op_key(op));
        let table = txn.raw().open_table(LATEST).map_err(index::storage)?;
        let row = table
            .get((self.id, stored.as_slice()))
            .map_err(index::storage)?;
        let current = row
            .as_ref()
            .and_then(|r| tables::split_latest_row(r.value()));
        Ok(match (expect, current) {
            (Expect::Absent, None) => true,
            (Expect::Value(want), Some((_, have))) => want.as_slice() == have,
            (Expect::Seq(want), Some((seq, _))) => *want == seq,
            _ => false,
        })
    }

    /// Verifies a batch of the writer's entries and stores and indexes it in one transaction
    /// (for a replica bee).
    pub async fn ingest(&self, batch: Batch) -> Result<Ingested> {
        let verified = self.feed.verify(batch)?;
        let key = self.feed.key();
        let id = self.id;
        let ingested = self
            .feed
            .store()
            .write(move |txn| {
                index::catch_up_all(txn, &key)?;
                let before = txn.length(&key)?;
                let ingested = txn.ingest(&verified)?;
                if ingested.length > before {
                    let batch = verified.batch();
                    let skip = (before - batch.start) as usize;
                    let raw = txn.raw();
                    index::index_entries(raw, id, before, &batch.entries[skip..])?;
                    index::set_indexed(raw, &key, id, ingested.length)?;
                }
                Ok::<_, multibee_feed::Error>(ingested)
            })
            .await?;
        self.feed.check_not_forked()?;
        Ok(ingested)
    }

    /// Re-derives the whole index from the feed alone.
    pub async fn rebuild(&self) -> Result<()> {
        let key = self.feed.key();
        self.feed
            .store()
            .write(move |txn| index::clear(txn, &key))
            .await?;
        while !self
            .feed
            .store()
            .write(move |txn| index::catch_up(txn, &key))
            .await?
        {}
        Ok(())
    }

    pub(crate) fn keyspace(&self) -> &Keyspace {
        &self.space
    }

    fn stored_op(&self, op: &BatchOp) -> Op {
        match op {
            BatchOp::Put(k, v) => Op::Put {
                key: self.space.encode(k),
                value: v.clone(),
            },
            BatchOp::Del(k) => Op::Del {
                key: self.space.encode(k),
            },
        }
    }

    fn writable(&self) -> Result<()> {
        match (self.at, self.feed.is_writable()) {
            (Some(_), _) => Err(Error::ReadOnly("a checkout")),
            (None, false) => Err(Error::ReadOnly("a replica of someone else's feed")),
            (None, true) => Ok(()),
        }
    }
}

/// Reads a bee's head inside a write transaction (see [`Bee::head_in`]) or a read snapshot
/// ([`Bee::head_at`]).
pub struct HeadReader<'t, T = redb::Table<'t, (u64, &'static [u8]), &'static [u8]>> {
    table: T,
    id: u64,
    space: Keyspace,
    _txn: std::marker::PhantomData<&'t ()>,
}

/// A [`HeadReader`] of a read snapshot.
pub type SnapshotHead =
    HeadReader<'static, redb::ReadOnlyTable<(u64, &'static [u8]), &'static [u8]>>;

impl Bee {
    /// A reader of this bee's head in the read snapshot `txn` (of this bee's feed store), for
    /// layers that read the bee and their own tables from one snapshot.
    pub fn head_at(&self, txn: &ReadTransaction) -> Result<SnapshotHead> {
        Ok(HeadReader {
            table: txn.open_table(LATEST)?,
            id: self.id,
            space: self.space.clone(),
            _txn: std::marker::PhantomData,
        })
    }
}

impl<T: ReadableTable<(u64, &'static [u8]), &'static [u8]>> HeadReader<'_, T> {
    /// The value of `key`, if set.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get_seq(key)?.map(|(_, value)| value))
    }

    /// The entries of a range query at the head, in key order (or reversed): at most
    /// `opts.limit` of them, or all.
    pub fn scan(&self, opts: &RangeOptions) -> Result<Vec<Entry>> {
        let (lower, upper) = opts.stored_bounds(&self.space);
        if range::is_empty(&lower, &upper) {
            return Ok(Vec::new());
        }
        let lo = lower.as_ref().map(|k| (self.id, k.as_slice()));
        let hi = upper.as_ref().map(|k| (self.id, k.as_slice()));
        let rows = self
            .table
            .range::<(u64, &[u8])>((lo, hi))
            .map_err(index::storage)?;
        let rows: Box<dyn Iterator<Item = _>> = match opts.reverse {
            false => Box::new(rows),
            true => Box::new(rows.rev()),
        };
        let mut out = Vec::new();
        for row in rows.take(opts.limit.unwrap_or(usize::MAX)) {
            let (k, v) = row.map_err(index::storage)?;
            let key = self.space.decode(k.value().1).ok_or_else(corrupt)?.to_vec();
            let (seq, value) = tables::split_latest_row(v.value()).ok_or_else(corrupt)?;
            out.push(Entry {
                seq,
                key,
                value: value.to_vec(),
            });
        }
        Ok(out)
    }

    /// The sequence number of the entry that set `key`, and its value, if set.
    pub fn get_seq(&self, key: &[u8]) -> Result<Option<(u64, Vec<u8>)>> {
        let stored = self.space.encode(key);
        let row = self
            .table
            .get((self.id, stored.as_slice()))
            .map_err(index::storage)?;
        match row {
            None => Ok(None),
            Some(row) => {
                let (seq, value) = tables::split_latest_row(row.value()).ok_or_else(corrupt)?;
                Ok(Some((seq, value.to_vec())))
            }
        }
    }
}

fn op_key(op: &BatchOp) -> &[u8] {
    match op {
        BatchOp::Put(k, _) | BatchOp::Del(k) => k,
    }
}

/// The bee id and indexed length of a feed's bee, in a read snapshot.
fn registration(txn: &ReadTransaction, feed: &Feed) -> Result<(u64, u64)> {
    let bees = txn.open_table(BEES)?;
    let row = bees.get(feed.key().0)?.ok_or_else(|| {
        Error::Feed(multibee_feed::Error::InvalidArgument(format!(
            "feed {} has no bee; open it with Bee::open",
            feed.key()
        )))
    })?;
    Ok(tables::split_bee_row(row.value()))
}

fn corrupt() -> Error {
    Error::Feed(multibee_feed::Error::Corrupt(
        "an index row does not match its layout".into(),
    ))
}
