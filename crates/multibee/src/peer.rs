//! The [`MultiBee`] handle: opening a peer, reads, local writes, writers, merging.

use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use multibee_bee::{Bee, RangeOptions};
use multibee_feed::{Batch, Feed, FeedKey, Ingested, Store, VerifiedBatch};
use redb::ReadableTable;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::fold::corrupt;
use crate::hlc::Hlc;
use crate::membership::MemberOp;
use crate::options::{Event, Options};
use crate::tables::{self, META, WRITERS, WriterRow, WriterState};
use crate::txn::{BatchOp, Committed, Ctx, Precondition};
use crate::value::Value;

/// Replicated entries merged per transaction.
const MERGE_CHUNK: u64 = 4096;

/// One peer of a multi-writer database: its own `store` and `diff` bees, the writers whose
/// diff feeds it merges, its HLC and its merge cursors, all in one folder. Cheap to clone.
///
/// **Cancel safety.** Every write (`put`, `patch`, `del`, `batch`, `add_writer`,
/// `remove_writer`, `expel_writer`, `create_invite`, `redeem_invite`, `ingest`, `merge`) runs
/// as one job of the folder's single writer, in one transaction: dropping its future before it
/// completes never applies part of it, but the job may already be queued, and then it commits
/// anyway (the caller just does not learn the outcome; read back to find out). Reading streams
/// ([`crate::Changes::next`]) are cancel-safe: a cancelled wait loses nothing.
#[derive(Clone, Debug)]
pub struct MultiBee {
    inner: Arc<Inner>,
}

mod partial;
mod queries;

#[derive(Debug)]
struct Inner {
    store: Store,
    store_bee: Bee,
    diff_feed: Feed,
    hlc: Mutex<Hlc>,
    options: Options,
    events: broadcast::Sender<Event>,
    wake: Arc<Notify>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The writers whose feeds a task watches (one task each).
    watched: Mutex<std::collections::HashSet<FeedKey>>,
    /// The keys held, if this peer keeps a partial view.
    view: Option<crate::View>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in self.tasks.get_mut().map(std::mem::take).unwrap_or_default() {
            task.abort();
        }
    }
}

/// What a peer knows of one writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterInfo {
    /// The writer's diff feed key.
    pub key: FeedKey,
    /// Whether its diffs count.
    pub state: WriterState,
    /// Entries of its diff feed read (merged, or held back past its cut).
    pub merged: u64,
    /// Entries of its diff feed held: its contiguous length, or on a peer with a partial view,
    /// the entry below which it holds every entry under its view (if further).
    pub length: u64,
    /// For a writer that is not active: its entries from this one on do not count (held, not
    /// merged; 0 for a frozen writer or one expelled).
    pub cut: Option<u64>,
    /// The writer whose membership operation removed it (`None` if it is active, frozen, or
    /// no longer a member because the operation that added it does not count).
    pub removed_by: Option<FeedKey>,
}

impl MultiBee {
    /// Opens (or creates) the peer in `dir` with default options.
    pub async fn open(dir: impl AsRef<Path>) -> Result<MultiBee> {
        Self::open_with(dir, Options::default()).await
    }

    /// Opens (or creates) the peer in `dir`. Diffs that were stored but not merged before a
    /// crash are merged before this returns.
    pub async fn open_with(dir: impl AsRef<Path>, options: Options) -> Result<MultiBee> {
        let mut feed_options = multibee_feed::Options::default().sync(options.sync);
        if let Some(bytes) = options.cache_bytes {
            feed_options = feed_options.cache_bytes(bytes);
        }
        if let Some(backend) = options.backend.clone() {
            feed_options = feed_options.backend(backend);
        }
        let store = Store::open_with(dir, feed_options)?;
        let (store_feed, diff_feed) = match read_meta(&store)? {
            Some((s, d)) => {
                let missing = || corrupt("the peer's own feeds are missing from the folder");
                let feeds = (
                    store.feed(&s).ok_or_else(missing)?,
                    store.feed(&d).ok_or_else(missing)?,
                );
                store
                    .write(move |txn| crate::upgrade::upgrade(txn, d))
                    .await?;
                feeds
            }
            None => {
                let (s, d) = (store.create_feed().await?, store.create_feed().await?);
                let (sk, dk) = (s.key(), d.key());
                store
                    .write(move |txn| {
                        let mut meta = txn.raw().open_table(META).map_err(crate::fold::storage)?;
                        meta.insert(tables::STORE_FEED, sk.0.as_slice())
                            .map_err(crate::fold::storage)?;
                        meta.insert(tables::DIFF_FEED, dk.0.as_slice())
                            .map_err(crate::fold::storage)?;
                        meta.insert(tables::HLC, 0u64.to_le_bytes().as_slice())
                            .map_err(crate::fold::storage)?;
                        meta.insert(tables::FORMAT_KEY, tables::FORMAT.to_le_bytes().as_slice())
                            .map_err(crate::fold::storage)?;
                        Ok::<_, Error>(())
                    })
                    .await?;
                (s, d)
            }
        };
        let hlc = read_hlc(&store)?;
        // Opened without prefixes, a folder keeps the view it has (if any).
        let view = options.only.clone().or(read_view(&store)?);
        let (events, _) = broadcast::channel(1024);
        let mb = MultiBee {
            inner: Arc::new(Inner {
                store_bee: Bee::open(store_feed).await?,
                diff_feed,
                store,
                hlc: Mutex::new(hlc),
                options,
                events,
                wake: Arc::new(Notify::new()),
                tasks: Mutex::new(Vec::new()),
                watched: Mutex::new(std::collections::HashSet::new()),
                view,
            }),
        };
        let wanted = mb.inner.options.database;
        let events = mb
            .write_job(move |this, txn| this.ctx().init_membership(txn, wanted))
            .await?;
        mb.report(events);
        if let Some(view) = mb.inner.view.clone() {
            mb.write_job(move |this, txn| this.ctx().change_view(txn, &view).map_err(Error::from))
                .await?;
        }
        mb.merge().await?;
        mb.resume_index_builds()?;
        if mb.inner.options.auto_merge {
            mb.start_merger();
            for w in mb.writers()? {
                if w.state != WriterState::Forked {
                    mb.watch_writer(w.key);
                }
            }
        }
        Ok(mb)
    }

    /// Stops background merging (for every clone of this handle) and releases this handle.
    /// Once it returns, the folder is closed unless other clones (or feeds or bees taken from
    /// it) are still alive.
    pub async fn close(self) {
        let tasks =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        let store = self.inner.store.clone();
        drop(self);
        // A merge the background task queued before it stopped holds a handle until the
        // writer has run it; the writer runs jobs in order, so once this empty one is done,
        // that handle is gone too.
        let _ = store.write(|_| Ok::<_, multibee_feed::Error>(())).await;
    }

    /// The key of this peer's diff feed: what members pass to [`MultiBee::add_writer`].
    pub fn diff_key(&self) -> FeedKey {
        self.inner.diff_feed.key()
    }

    /// The key of this peer's store feed (local: never replicated).
    pub fn store_key(&self) -> FeedKey {
        self.inner.store_bee.feed().key()
    }

    /// The feed store underneath (for replication: it holds every diff feed this peer has).
    pub fn feed_store(&self) -> &Store {
        &self.inner.store
    }

    /// The merged store as a read-only bee (its version counts store changes).
    pub fn store_bee(&self) -> &Bee {
        &self.inner.store_bee
    }

    /// The current HLC.
    pub fn clock(&self) -> Hlc {
        *self.inner.hlc.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store version: the number of changes the merged store has seen.
    pub fn version(&self) -> Result<u64> {
        Ok(self.inner.store_bee.version()?)
    }

    /// A receiver of what merging reports (future timestamps, invalid diffs, frozen writers,
    /// merged lengths) and of writers added and removed, from now on.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// The merged value of `key`.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Value>> {
        match self.inner.store_bee.get(key)? {
            None => Ok(None),
            Some(bytes) => Ok(Some(Value::from_stored(&bytes).map_err(corrupt)?)),
        }
    }

    /// The merged value of `key` with its revision: the sequence number of the store entry
    /// that last changed it on this peer. The revision changes whenever the value does (by a
    /// local write or a merge) and is what [`Precondition::Rev`] expects; it is this peer's
    /// own token (another peer's revision of the same value differs).
    pub fn get_rev(&self, key: impl AsRef<[u8]>) -> Result<Option<(u64, Value)>> {
        match self.inner.store_bee.get_entry(key)? {
            None => Ok(None),
            Some(e) => Ok(Some((
                e.seq,
                Value::from_stored(&e.value).map_err(corrupt)?,
            ))),
        }
    }

    /// The merged entries of a range query, in key order (or reversed), lazily.
    pub fn range(
        &self,
        opts: &RangeOptions,
    ) -> Result<impl Iterator<Item = Result<(Vec<u8>, Value)>> + use<>> {
        Ok(self.inner.store_bee.range(opts)?.map(|e| {
            let e = e?;
            let value = Value::from_stored(&e.value).map_err(corrupt)?;
            Ok((e.key, value))
        }))
    }

    /// The merged entries of a range query with their revisions ([`MultiBee::get_rev`]):
    /// `(key, revision, value)`, in key order (or reversed), lazily.
    pub fn range_revs(
        &self,
        opts: &RangeOptions,
    ) -> Result<impl Iterator<Item = Result<(Vec<u8>, u64, Value)>> + use<>> {
        Ok(self.inner.store_bee.range(opts)?.map(|e| {
            let e = e?;
            let value = Value::from_stored(&e.value).map_err(corrupt)?;
            Ok((e.key, e.seq, value))
        }))
    }

    /// Every merged entry whose key starts with `prefix`.
    pub fn list(
        &self,
        prefix: &[u8],
    ) -> Result<impl Iterator<Item = Result<(Vec<u8>, Value)>> + use<>> {
        self.range(&prefix_range(prefix))
    }

    /// Sets `key` to `value`; returns the store version once it is durable.
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl Into<Value>) -> Result<u64> {
        self.batch(vec![BatchOp::Put(key.as_ref().to_vec(), value.into())])
            .await
    }

    /// Applies the JSON merge patch `patch` (RFC 7386) to `key`'s current value: the fields it
    /// names are set, `null` ones removed, objects patched recursively; fields it does not name
    /// are left alone. Prefer it to `put` of a whole document read earlier: a `put` writes
    /// every field that differs from the value at the time of the write, so it reverts fields
    /// that another peer changed since the read; a patch touches only its own fields. A patch
    /// that is not an object replaces the value. Returns the store version.
    pub async fn patch(&self, key: impl AsRef<[u8]>, patch: serde_json::Value) -> Result<u64> {
        self.batch(vec![BatchOp::Patch(key.as_ref().to_vec(), patch)])
            .await
    }

    /// Deletes `key` (a tombstone that replicates); returns the store version.
    pub async fn del(&self, key: impl AsRef<[u8]>) -> Result<u64> {
        self.batch(vec![BatchOp::Del(key.as_ref().to_vec())]).await
    }

    /// Applies every op atomically (one transaction, one signature per feed); returns the
    /// store version once it is durable. A put of the value a key already has writes nothing.
    ///
    /// Fails with [`Error::TooDeep`] for a value or patch nested deeper than
    /// [`crate::MAX_DEPTH`], and with [`Error::ClockExhausted`] if no fresh timestamp is left for
    /// a key (nothing of the batch is written then).
    pub async fn batch(&self, ops: Vec<BatchOp>) -> Result<u64> {
        Ok(self.write_ops(Vec::new(), ops, false).await?.version)
    }

    /// Applies every op atomically, as [`MultiBee::batch`] does, if every key of `conditions`
    /// meets its [`Precondition`] when the batch commits (checked in the write transaction, so
    /// no write can come between the check and the batch). Fails with
    /// [`Error::PreconditionFailed`], writing nothing, if one does not: the optimistic
    /// concurrency of a read-modify-write (read with [`MultiBee::get_rev`], write expecting
    /// that revision). Answers the version and each op's key's revision after the batch.
    pub async fn batch_if(
        &self,
        conditions: Vec<(Vec<u8>, Precondition)>,
        ops: Vec<BatchOp>,
    ) -> Result<Committed> {
        self.write_ops(conditions, ops, true).await
    }

    /// [`MultiBee::batch_if`]; the revisions are read only if `revs` (else `Committed::revs`
    /// is empty).
    async fn write_ops(
        &self,
        conditions: Vec<(Vec<u8>, Precondition)>,
        ops: Vec<BatchOp>,
        revs: bool,
    ) -> Result<Committed> {
        if let Some(view) = &self.inner.view {
            let outside = conditions
                .iter()
                .map(|(k, _)| k)
                .chain(ops.iter().map(|op| match op {
                    BatchOp::Put(k, _) | BatchOp::Del(k) | BatchOp::Patch(k, _) => k,
                }))
                .find(|k| !view.contains(k));
            if let Some(key) = outside {
                return Err(Error::OutsideView(
                    String::from_utf8_lossy(key).into_owned(),
                ));
            }
        }
        for op in &ops {
            let depth = match op {
                BatchOp::Put(_, v) => v.depth(),
                BatchOp::Patch(_, p) => crate::value::json_depth(p),
                BatchOp::Del(_) => 0,
            };
            if depth > crate::MAX_DEPTH {
                return Err(Error::TooDeep {
                    depth,
                    max: crate::MAX_DEPTH,
                });
            }
        }
        self.write_job(move |this, txn| this.ctx().write_local(txn, &conditions, &ops, revs))
            .await
    }

    /// Runs a write job that may fail with one of this crate's errors (nothing it wrote
    /// commits then).
    async fn write_job<R, F>(&self, mut job: F) -> Result<R>
    where
        F: FnMut(&MultiBee, &mut multibee_feed::WriteTxn<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let this = self.clone();
        self.inner.store.write(move |txn| job(&this, txn)).await
    }

    /// Makes the writer whose diff feed is `key` a member of the database: a membership
    /// operation in this peer's diff feed, which every peer that replicates it applies alike
    /// (and then replicates and merges that writer without being told). Fails unless this peer
    /// is a member. Adding a writer that was removed counts all its diffs again.
    pub async fn add_writer(&self, key: FeedKey) -> Result<()> {
        if key == self.diff_key() || key == self.store_key() {
            return Err(Error::InvalidArgument(
                "a peer cannot add its own feeds".into(),
            ));
        }
        if self.writer_state(&key)? == Some(WriterState::Forked)
            || self
                .inner
                .store
                .feed(&key)
                .is_some_and(|f| f.status().forked)
        {
            return Err(Error::ForkedWriter(key));
        }
        let op = MemberOp::Add { writer: key.0 };
        self.write_member(op).await
    }

    /// Removes the writer `key` from the database, as a deterministic cut: its diffs that this
    /// peer has merged stay counted on every peer; those beyond (written concurrently, or
    /// later) are held but no longer merged anywhere, and [`MultiBee::writers`] lists the cut
    /// and who made it. To un-merge everything a writer wrote, see
    /// [`MultiBee::expel_writer`].
    pub async fn remove_writer(&self, key: FeedKey) -> Result<()> {
        let op = MemberOp::Remove {
            writer: key.0,
            cut: u64::MAX,
        };
        self.write_member(op).await
    }

    /// Removes the writer `key` and un-merges **everything it ever wrote**, on every peer: for a
    /// writer whose secret key leaked. Every key it touched is recomputed from the other
    /// writers' diffs, so values and fields it set revert to what the others wrote, which may
    /// undo changes that people relied on. Prefer [`MultiBee::remove_writer`] otherwise.
    pub async fn expel_writer(&self, key: FeedKey) -> Result<()> {
        let op = MemberOp::Remove {
            writer: key.0,
            cut: 0,
        };
        self.write_member(op).await
    }

    /// Makes a one-time invitation: a random secret that one peer may redeem (through
    /// [`MultiBee::redeem_invite`] on this peer, within [`crate::INVITE_TTL_MS`]) to be added
    /// as a writer. The network layer
    /// wraps it in a ticket with this peer's addresses. Fails unless this peer is a member.
    pub async fn create_invite(&self) -> Result<[u8; 32]> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|e| Error::InvalidArgument(format!("no randomness for a secret: {e}")))?;
        self.write_job(move |this, txn| this.ctx().write_invite(txn, secret))
            .await?;
        Ok(secret)
    }

    /// Adds `writer` as a member if `secret` is an invitation of this peer that was not used
    /// yet ([`Error::InvalidInvite`] otherwise), using it up in the same transaction.
    pub async fn redeem_invite(&self, secret: [u8; 32], writer: FeedKey) -> Result<()> {
        if writer == self.diff_key() || writer == self.store_key() {
            return Err(Error::InvalidArgument(
                "a peer cannot add its own feeds".into(),
            ));
        }
        let events = self
            .write_job(move |this, txn| this.ctx().redeem_invite(txn, secret, writer))
            .await?;
        self.report(events);
        Ok(())
    }

    /// The old name of [`MultiBee::add_writer`].
    #[deprecated(note = "use add_writer")]
    pub async fn add_peer(&self, key: FeedKey) -> Result<()> {
        self.add_writer(key).await
    }

    /// The old name of [`MultiBee::remove_writer`]. Unlike before, a removal is a cut: what
    /// this peer had merged of the writer stays counted.
    #[deprecated(note = "use remove_writer (a cut) or expel_writer (un-merges everything)")]
    pub async fn remove_peer(&self, key: FeedKey) -> Result<()> {
        self.remove_writer(key).await
    }

    async fn write_member(&self, op: MemberOp) -> Result<()> {
        let events = self
            .write_job(move |this, txn| this.ctx().write_member(txn, op))
            .await?;
        self.report(events);
        Ok(())
    }

    /// The identity of the database this peer belongs to: the diff feed key of its first
    /// writer.
    pub fn database(&self) -> Result<FeedKey> {
        let txn = self.inner.store.begin_read()?;
        let meta = txn.open_table(META)?;
        let row = meta
            .get(tables::DATABASE)?
            .ok_or_else(|| corrupt("the database identity is missing"))?;
        let key: [u8; 32] = row
            .value()
            .try_into()
            .map_err(|_| corrupt("the database identity in mb-meta-1"))?;
        Ok(FeedKey(key))
    }

    /// The writers this peer knows other than itself, in key order.
    pub fn writers(&self) -> Result<Vec<WriterInfo>> {
        let txn = self.inner.store.begin_read()?;
        let table = match txn.open_table(WRITERS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let key = FeedKey(k.value());
            if key != self.diff_key() {
                out.push(self.writer_info(key, v.value())?);
            }
        }
        Ok(out)
    }

    /// This peer as a writer: its own diff feed, all of it merged, and whether it is still
    /// active (a peer that was never added nor removed is active).
    pub fn own_writer(&self) -> Result<WriterInfo> {
        let key = self.diff_key();
        let txn = self.inner.store.begin_read()?;
        let row = match txn.open_table(WRITERS) {
            Ok(t) => t.get(key.0)?.map(|v| v.value().to_vec()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let length = self.inner.store.feed(&key).map_or(0, |f| f.length());
        let mut info = match row {
            Some(row) => self.writer_info(key, &row)?,
            None => WriterInfo {
                key,
                state: WriterState::Active,
                merged: length,
                length,
                cut: None,
                removed_by: None,
            },
        };
        info.merged = length;
        Ok(info)
    }

    fn writer_info(&self, key: FeedKey, row: &[u8]) -> Result<WriterInfo> {
        let row = WriterRow::decode(row).ok_or_else(|| corrupt("a writer row"))?;
        Ok(WriterInfo {
            key,
            state: row.state,
            merged: row.merged,
            length: self.held_length(&key)?,
            cut: (row.state != WriterState::Active).then_some(row.limit),
            removed_by: row.removed_by.map(FeedKey),
        })
    }

    /// How much of `key`'s diff feed is held: its contiguous length, or for a partial peer,
    /// the entry below which every entry under its view is held, if that is further.
    fn held_length(&self, key: &FeedKey) -> Result<u64> {
        let length = self.inner.store.feed(key).map_or(0, |f| f.length());
        let Some(view) = &self.inner.view else {
            return Ok(length);
        };
        if *key == self.diff_key() {
            return Ok(length);
        }
        let txn = self.read()?;
        let table = txn.open_table(crate::view::COVERAGE)?;
        Ok(length.max(crate::view::frontier(&table, view, &key.0)?))
    }

    /// The state of one writer, if this peer knows it (a point read, for the ingest path).
    fn writer_state(&self, key: &FeedKey) -> Result<Option<WriterState>> {
        let txn = self.inner.store.begin_read()?;
        let table = match txn.open_table(WRITERS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match table.get(key.0)? {
            None => Ok(None),
            Some(v) => Ok(Some(
                WriterRow::decode(v.value())
                    .ok_or_else(|| corrupt("a writer row"))?
                    .state,
            )),
        }
    }

    /// The entries of `writer`'s diff feed (this peer's own, or a replica it holds) from
    /// `from` to the length held, as a batch that any peer can verify against the writer's
    /// key alone: what [`MultiBee::ingest`] takes on another peer. Empty if nothing is held
    /// past `from`.
    pub fn export(&self, writer: FeedKey, from: u64) -> Result<Batch> {
        let feed = self
            .inner
            .store
            .feed(&writer)
            .ok_or(Error::UnknownWriter(writer))?;
        let length = feed.length();
        Ok(feed.proof(from.min(length)..length)?)
    }

    /// Verifies a batch of a writer's diff feed, stores it and merges it in one transaction.
    pub async fn ingest(&self, batch: Batch) -> Result<u64> {
        let key = batch.feed;
        let feed = self
            .inner
            .store
            .feed(&key)
            .ok_or(Error::UnknownWriter(key))?;
        if matches!(self.writer_state(&key)?, None | Some(WriterState::Forked)) {
            return Err(Error::UnknownWriter(key));
        }
        let verified = feed.verify(batch)?;
        let this = self.clone();
        let (length, events) = self
            .inner
            .store
            .write(move |txn| {
                let ingested = txn.ingest(&verified)?;
                let mut events = Vec::new();
                this.ctx().merge_round(txn, MERGE_CHUNK, &mut events)?;
                Ok::<_, Error>((ingested.length, events))
            })
            .await?;
        self.report(events);
        // Merging first freezes a writer this batch caught equivocating.
        self.merge().await?;
        feed.check_not_forked()?;
        Ok(length)
    }

    /// Stores a batch already verified against its feed's key (by the network, say) and
    /// merges it in the same transaction: one commit for a remote batch. What is left past one
    /// round's budget is merged in the background. `multibee::serve` has the network store
    /// what it fetches through this.
    pub async fn ingest_verified(&self, batch: VerifiedBatch) -> Result<Ingested> {
        let this = self.clone();
        let (ingested, events, consumed) = self
            .inner
            .store
            .write(move |txn| {
                let ingested = txn.ingest(&batch)?;
                let mut events = Vec::new();
                let consumed = this.ctx().merge_round(txn, MERGE_CHUNK, &mut events)?;
                Ok::<_, Error>((ingested, events, consumed))
            })
            .await?;
        self.report(events);
        if consumed >= MERGE_CHUNK {
            self.inner.wake.notify_one();
        }
        Ok(ingested)
    }

    /// Whether some writer's feed holds entries not read by the merge yet.
    fn merge_pending(&self) -> Result<bool> {
        // A partial peer's `length` is its coverage: what its merge reads up to.
        Ok(self.writers()?.iter().any(|w| {
            w.state != WriterState::Forked && w.key != self.diff_key() && w.length > w.merged
        }))
    }

    /// Merges every stored, not yet merged diff of every active writer (freezing writers
    /// caught forking first); returns the number of entries merged. Commits nothing when
    /// nothing is pending.
    pub async fn merge(&self) -> Result<u64> {
        self.freeze_forked().await?;
        let mut total = 0;
        loop {
            if !self.merge_pending()? {
                return Ok(total);
            }
            let this = self.clone();
            let (n, events) = self
                .inner
                .store
                .write(move |txn| {
                    let mut events = Vec::new();
                    let n = this.ctx().merge_round(txn, MERGE_CHUNK, &mut events)?;
                    Ok::<_, Error>((n, events))
                })
                .await?;
            self.report(events);
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    async fn freeze_forked(&self) -> Result<()> {
        for w in self.writers()? {
            let forked = self
                .inner
                .store
                .feed(&w.key)
                .is_some_and(|f| f.status().forked);
            if w.state == WriterState::Forked || !forked {
                continue;
            }
            let this = self.clone();
            let key = w.key;
            self.inner
                .store
                .write(move |txn| this.ctx().freeze(txn, key))
                .await?;
            self.report(vec![Event::WriterFrozen { writer: key }]);
        }
        Ok(())
    }

    fn report(&self, events: Vec<Event>) {
        for event in events {
            if let Event::WriterAdded { writer } | Event::WriterRemoved { writer } = &event
                && self.inner.options.auto_merge
            {
                // A removed writer's feed is still read, for its membership operations.
                self.watch_writer(*writer);
            }
            match &event {
                Event::FutureTimestamp { .. }
                | Event::InvalidDiff { .. }
                | Event::WriterFrozen { .. }
                | Event::MembershipRejected { .. } => tracing::warn!(?event, "merge report"),
                _ => tracing::debug!(?event, "peer event"),
            }
            // No receiver is not an error.
            let _ = self.inner.events.send(event);
        }
    }

    pub(crate) fn ctx(&self) -> Ctx<'_> {
        let inner = &*self.inner;
        Ctx {
            own: inner.diff_feed.key(),
            store: &inner.store_bee,
            merge: &*inner.options.merge,
            interval: inner.options.checkpoint_interval,
            hlc: &inner.hlc,
            clock: &*inner.options.clock,
            max_drift_ms: inner.options.max_drift_ms,
            view: inner.view.as_ref(),
        }
    }

    pub(crate) fn read(&self) -> Result<redb::ReadTransaction> {
        Ok(self.inner.store.begin_read()?)
    }

    /// Merges in the background whenever a writer's feed grows.
    fn start_merger(&self) {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let wake = self.inner.wake.clone();
        let task = tokio::spawn(async move {
            loop {
                wake.notified().await;
                let Some(inner) = weak.upgrade() else { return };
                let mb = MultiBee { inner };
                if let Err(e) = mb.merge().await {
                    tracing::warn!(error = %e, "background merge failed");
                }
            }
        });
        self.push_task(task);
    }

    fn watch_writer(&self, key: FeedKey) {
        let Some(feed) = self.inner.store.feed(&key) else {
            return;
        };
        let mut watched = self.inner.watched.lock().unwrap_or_else(|p| p.into_inner());
        if !watched.insert(key) {
            return;
        }
        drop(watched);
        let mut status = feed.subscribe();
        drop(feed);
        let wake = self.inner.wake.clone();
        wake.notify_one();
        let task = tokio::spawn(async move {
            while status.changed().await.is_ok() {
                wake.notify_one();
            }
        });
        self.push_task(task);
    }

    fn push_task(&self, task: JoinHandle<()>) {
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
    }
}

/// The range of keys starting with `prefix`.
pub(crate) fn prefix_range(prefix: &[u8]) -> RangeOptions {
    let opts = RangeOptions::all().gte(prefix);
    match prefix_end(prefix) {
        Some(end) => opts.lt(end),
        None => opts,
    }
}

/// The smallest key greater than every key starting with `prefix` (`None`: no such key): the
/// exclusive end of a prefix range.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn read_meta(store: &Store) -> Result<Option<(FeedKey, FeedKey)>> {
    let txn = store.begin_read()?;
    let meta = match txn.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let key = |name: &str| -> Result<Option<FeedKey>> {
        match meta.get(name)? {
            None => Ok(None),
            Some(v) => {
                let bytes: [u8; 32] = v
                    .value()
                    .try_into()
                    .map_err(|_| corrupt("a feed key in mb-meta-1"))?;
                Ok(Some(FeedKey(bytes)))
            }
        }
    };
    Ok(key(tables::STORE_FEED)?.zip(key(tables::DIFF_FEED)?))
}

/// The partial view stored in the folder, if it has one.
fn read_view(store: &Store) -> Result<Option<crate::View>> {
    let txn = store.begin_read()?;
    let meta = txn.open_table(META)?;
    let row = meta.get(crate::view::VIEW_KEY)?;
    Ok(row
        .map(|v| crate::view::View::decode(v.value()))
        .transpose()?)
}

fn read_hlc(store: &Store) -> Result<Hlc> {
    let txn = store.begin_read()?;
    let meta = txn.open_table(META)?;
    let hlc = match meta.get(tables::HLC)? {
        None => 0,
        Some(v) => {
            let bytes: [u8; 8] = v
                .value()
                .try_into()
                .map_err(|_| corrupt("the HLC in mb-meta-1"))?;
            u64::from_le_bytes(bytes)
        }
    };
    Ok(Hlc(hlc))
}
