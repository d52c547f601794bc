//! The single writer: one thread owns every write transaction and group-commits jobs.
//!
//! Jobs arrive on a bounded channel. The writer takes every job waiting at that moment (up to
//! [`MAX_JOBS_PER_COMMIT`]), runs them in one redb write transaction, signs each own feed that
//! grew once, and commits: one fsync serves every caller in the group. Replies go out only after
//! the commit, so an acknowledged write is durable.
//!
//! A job that fails before writing just reports its error. A job that fails after writing (a
//! storage error, or a bug in a layer above) poisons the transaction: the writer aborts it and
//! runs the group again without that job, so other callers never see its partial writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use redb::{Database, Durability, ReadableTable, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use crate::crypto;
use crate::error::{Error, Result, VerifyError};
use crate::keys::{FeedKey, Hash};
use crate::nodes::{known_node, stored_node};
use crate::proof::{Batch, SignedHead, Verified, VerifiedBatch};
use crate::store::{FeedShared, FeedStatus, ForkEvidence, Ingested, Registry, SyncMode};
use crate::tables::{self, ENTRIES, FEEDS, FeedRecord, META, SECRETS};
use crate::tree;

/// At most this many jobs share one transaction.
pub(crate) const MAX_JOBS_PER_COMMIT: usize = 1024;
/// In [`SyncMode::Relaxed`], a commit is made durable at least this often.
const RELAXED_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// A unit of work run inside a group-committed transaction.
pub(crate) trait Job: Send {
    /// Runs the job; returns `true` if it failed after writing (the transaction is poisoned).
    fn run(&mut self, txn: &mut WriteTxn<'_>) -> bool;
    /// Delivers the job's result once the commit's outcome is known.
    fn finish(self: Box<Self>, committed: Result<()>);
}

/// A job from a closure, replying on a oneshot channel with the closure's own error type.
pub(crate) struct ClosureJob<F, R, E> {
    f: F,
    result: Option<std::result::Result<R, E>>,
    reply: oneshot::Sender<std::result::Result<R, E>>,
}

impl<F, R, E> ClosureJob<F, R, E> {
    pub(crate) fn new(f: F, reply: oneshot::Sender<std::result::Result<R, E>>) -> Self {
        ClosureJob {
            f,
            result: None,
            reply,
        }
    }
}

impl<F, R, E> Job for ClosureJob<F, R, E>
where
    F: FnMut(&mut WriteTxn<'_>) -> std::result::Result<R, E> + Send,
    R: Send,
    E: From<Error> + Send,
{
    fn run(&mut self, txn: &mut WriteTxn<'_>) -> bool {
        txn.dirty = false;
        let result = (self.f)(txn);
        let poisoned = result.is_err() && txn.dirty;
        self.result = Some(result);
        poisoned
    }

    fn finish(self: Box<Self>, committed: Result<()>) {
        let ClosureJob { f, result, reply } = *self;
        // Drop what the job captured (perhaps handles to this store) before the caller wakes,
        // so that the caller, not this thread, is the one that drops the last handle.
        drop(f);
        let result = match (result, committed) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (_, Err(e)) => Err(E::from(e)),
            (None, Ok(())) => Err(E::from(Error::Closed)),
        };
        // The caller may have stopped waiting; that is not an error here.
        let _ = reply.send(result);
    }
}

/// The in-memory state of one feed, as the writer sees it.
#[derive(Clone)]
pub(crate) struct FeedState {
    pub record: FeedRecord,
    pub secret: Option<SigningKey>,
}

/// What the jobs of one transaction changed, applied to the cache only after the commit.
#[derive(Default)]
struct Overlay {
    feeds: HashMap<FeedKey, FeedState>,
    appended: Vec<FeedKey>,
}

/// A write transaction shared by the jobs of one group commit.
///
/// Layers built on the feed (bee, multibee) write their own tables through [`WriteTxn::raw`]
/// in the same transaction as their appends, so both commit or neither does. A job must do its
/// checks before it writes: an error after a write aborts the job's writes (see module docs).
pub struct WriteTxn<'a> {
    txn: &'a WriteTransaction,
    cache: &'a HashMap<FeedKey, FeedState>,
    overlay: &'a mut Overlay,
    limits: &'a crate::store::Limits,
    dirty: bool,
}

impl WriteTxn<'_> {
    /// The underlying redb transaction, for tables of the layers above. Using it marks the job
    /// as having written.
    pub fn raw(&mut self) -> &WriteTransaction {
        self.dirty = true;
        self.txn
    }

    /// The feed's number in this store (see [`crate::LocalId`]).
    pub(crate) fn record_id(&mut self, key: &FeedKey) -> Result<u64> {
        Ok(self.state(key)?.record.id)
    }

    /// The current length of a feed, including appends made earlier in this transaction.
    pub fn length(&mut self, key: &FeedKey) -> Result<u64> {
        Ok(self.state(key)?.record.length)
    }

    /// The entries `range` of a feed as this transaction sees them (including its own appends).
    pub fn entries(&mut self, key: &FeedKey, range: std::ops::Range<u64>) -> Result<Vec<Vec<u8>>> {
        let record = &self.state(key)?.record;
        if range.start > range.end || range.end > record.length {
            return Err(Error::InvalidArgument(format!(
                "range {range:?} is not within the {} entries held",
                record.length
            )));
        }
        let id = record.id;
        let table = self.txn.open_table(ENTRIES)?;
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        for row in table.range((id, range.start)..(id, range.end))? {
            let (key, value) = row?;
            out.push(tables::split_row(key.value().1, value.value())?.1.to_vec());
        }
        Ok(out)
    }

    /// Appends entries to an own feed; returns the new length.
    pub fn append<E: AsRef<[u8]>>(&mut self, key: &FeedKey, entries: &[E]) -> Result<u64> {
        let leaves: Vec<Hash> = entries
            .iter()
            .map(|e| crypto::leaf_hash(e.as_ref()))
            .collect();
        self.append_hashed(key, entries, &leaves)
    }

    /// Appends entries whose leaf hashes the caller computed (off the writer thread).
    pub(crate) fn append_hashed<E: AsRef<[u8]>>(
        &mut self,
        key: &FeedKey,
        entries: &[E],
        leaves: &[Hash],
    ) -> Result<u64> {
        let max_entry = self.limits.max_entry_bytes;
        if let Some(e) = entries.iter().find(|e| e.as_ref().len() > max_entry) {
            return Err(Error::InvalidArgument(format!(
                "an entry of {} bytes is over the limit of {max_entry}",
                e.as_ref().len()
            )));
        }
        let state = self.state(key)?;
        if state.secret.is_none() {
            return Err(Error::NotWritable(*key));
        }
        let length = state.record.length;
        if length.saturating_add(entries.len() as u64) > tree::MAX_LENGTH {
            return Err(Error::InvalidArgument(
                "the feed would exceed its maximum length".into(),
            ));
        }
        let (id, mut roots) = (state.record.id, state.record.roots.clone());
        self.dirty = true;
        let mut table = self.txn.open_table(ENTRIES)?;
        push_leaves(&mut table, id, length, &mut roots, entries, leaves)?;
        drop(table);
        let state = self.state(key)?;
        state.record.length = length + entries.len() as u64;
        state.record.roots = roots;
        if !self.overlay.appended.contains(key) {
            self.overlay.appended.push(*key);
        }
        Ok(length + entries.len() as u64)
    }

    /// Stores a batch that [`crate::Feed::verify`] accepted, after the checks that need the
    /// feed's state: contiguity, and agreement with everything already held. A disagreement
    /// under a valid signature marks the feed forked (durably, in this transaction) and stores
    /// nothing else; the feed's status says so once the transaction commits.
    pub fn ingest(&mut self, verified: &VerifiedBatch) -> Result<Ingested> {
        let (batch, leaves, verified) = (&verified.batch, &verified.leaves, &verified.verified);
        let key = batch.feed;
        let state = self.state(&key)?;
        if state.secret.is_some() {
            return Err(Error::NotReplica(key));
        }
        if state.record.fork.is_some() {
            return Err(Error::rejected(key, VerifyError::Forked));
        }
        let record = state.record.clone();
        let (start, end) = (batch.start, batch.end());
        if start > record.length {
            return Err(Error::rejected(
                key,
                VerifyError::Gap {
                    length: record.length,
                    start,
                },
            ));
        }
        if let Some(detail) = self.disagreement(&record, batch, leaves, verified)? {
            return self.mark_forked(&key, &record, verified, detail);
        }
        if end <= record.length && !(end == record.length && upgrades(&record, verified)) {
            return Ok(Ingested {
                added: 0,
                length: record.length,
                signed_length: signed_length(&record),
            });
        }
        let skip = (record.length - start) as usize;
        let mut roots = record.roots.clone();
        self.dirty = true;
        if end > record.length {
            let mut table = self.txn.open_table(ENTRIES)?;
            push_leaves(
                &mut table,
                record.id,
                record.length,
                &mut roots,
                &batch.entries[skip..],
                &leaves[skip..],
            )?;
        }
        let state = self.state(&key)?;
        let added = end.saturating_sub(record.length);
        state.record.length = record.length + added;
        state.record.roots = roots;
        state.record.head = Some(verified.head.clone());
        state.record.frontier = verified.right.clone();
        Ok(Ingested {
            added,
            length: state.record.length,
            signed_length: verified.head.length,
        })
    }

    /// Where the verified batch contradicts what is stored, if anywhere.
    fn disagreement(
        &mut self,
        record: &FeedRecord,
        batch: &Batch,
        leaves: &[Hash],
        verified: &Verified,
    ) -> Result<Option<String>> {
        let Some(ours) = &record.head else {
            return Ok(None); // nothing held, nothing to contradict
        };
        if ours.length == verified.head.length && ours.roots != verified.head.roots {
            return Ok(Some(format!(
                "two different trees signed for length {}",
                ours.length
            )));
        }
        let start = batch.start;
        let our_left = if start == record.length {
            record.roots.clone()
        } else {
            let table = self.txn.open_table(ENTRIES)?;
            tree::roots(start)
                .map(|n| stored_node(&table, record, n))
                .collect::<Result<Vec<_>>>()?
        };
        if our_left != verified.left {
            return Ok(Some(format!("the first {start} entries differ")));
        }
        let overlap = record.length.min(batch.end());
        if start < overlap {
            let table = self.txn.open_table(ENTRIES)?;
            for i in start..overlap {
                let held = stored_node(&table, record, tree::leaf(i))?;
                if held != leaves[(i - start) as usize] {
                    return Ok(Some(format!("entry {i} differs")));
                }
            }
        }
        if !record.frontier.is_empty() {
            let known: HashMap<u64, Hash> = verified
                .computed
                .iter()
                .chain(&verified.right)
                .copied()
                .chain(
                    leaves
                        .iter()
                        .enumerate()
                        .map(|(i, h)| (tree::leaf(start + i as u64), *h)),
                )
                .collect();
            for (n, hash) in &record.frontier {
                if known.get(n).is_some_and(|theirs| theirs != hash) {
                    return Ok(Some(format!("tree node {n} differs")));
                }
            }
        }
        // A shorter signed tree must be a prefix of ours wherever what we hold determines it.
        if verified.head.length < ours.length {
            let table = self.txn.open_table(ENTRIES)?;
            for (n, theirs) in tree::roots(verified.head.length).zip(&verified.head.roots) {
                if known_node(&table, record, n)?.is_some_and(|mine| mine != *theirs) {
                    return Ok(Some(format!(
                        "the tree signed at {} is not a prefix of the one at {}",
                        verified.head.length, ours.length
                    )));
                }
            }
        }
        Ok(None)
    }

    fn mark_forked(
        &mut self,
        key: &FeedKey,
        record: &FeedRecord,
        verified: &Verified,
        detail: String,
    ) -> Result<Ingested> {
        let Some(ours) = record.head.clone() else {
            return Err(Error::Corrupt(
                "fork detected on a feed without a head".into(),
            ));
        };
        tracing::warn!(feed = %key, %detail, "writer equivocated; feed frozen");
        self.dirty = true;
        let state = self.state(key)?;
        state.record.fork = Some(ForkEvidence {
            ours,
            theirs: verified.head.clone(),
            detail,
        });
        Ok(Ingested {
            added: 0,
            length: record.length,
            signed_length: signed_length(record),
        })
    }

    /// Creates a feed record (and stores its secret, for an own feed).
    /// Creates the (empty) replica of someone else's feed in this transaction, if it is not
    /// held yet; it is visible through [`crate::Store::feed`] once the transaction commits.
    pub fn create_replica(&mut self, key: FeedKey) -> Result<()> {
        self.create_feed(key, None)
    }

    pub(crate) fn create_feed(&mut self, key: FeedKey, secret: Option<SigningKey>) -> Result<()> {
        if self.state(&key).is_ok() {
            return Ok(());
        }
        self.dirty = true;
        let id = {
            let mut meta = self.txn.open_table(META)?;
            let next = match meta.get(tables::NEXT_FEED_ID_KEY)? {
                Some(v) => decode_u64(v.value())?,
                None => 0,
            };
            meta.insert(
                tables::NEXT_FEED_ID_KEY,
                next.saturating_add(1).to_le_bytes().as_slice(),
            )?;
            next
        };
        if let Some(secret) = &secret {
            self.txn
                .open_table(SECRETS)?
                .insert(key.0, secret.to_bytes())?;
        }
        let record = FeedRecord {
            id,
            writable: secret.is_some(),
            length: 0,
            roots: Vec::new(),
            head: None,
            frontier: Vec::new(),
            fork: None,
        };
        self.overlay.feeds.insert(key, FeedState { record, secret });
        Ok(())
    }

    /// The state of a feed for this transaction: from the overlay, the cache, or disk.
    fn state(&mut self, key: &FeedKey) -> Result<&mut FeedState> {
        if !self.overlay.feeds.contains_key(key) {
            let state = match self.cache.get(key) {
                Some(state) => state.clone(),
                None => load_state(self.txn, key)?,
            };
            self.overlay.feeds.insert(*key, state);
        }
        // Inserted just above if it was missing.
        self.overlay
            .feeds
            .get_mut(key)
            .ok_or(Error::UnknownFeed(*key))
    }
}

/// Whether a batch that brings no new entries carries a longer signed head worth keeping.
fn upgrades(record: &FeedRecord, verified: &Verified) -> bool {
    record
        .head
        .as_ref()
        .is_none_or(|h| verified.head.length > h.length)
}

fn signed_length(record: &FeedRecord) -> u64 {
    record.head.as_ref().map_or(0, |h| h.length)
}

pub(crate) fn decode_u64(bytes: &[u8]) -> Result<u64> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| Error::Corrupt("a counter is not 8 bytes".into()))?;
    Ok(u64::from_le_bytes(array))
}

/// Reads a feed's record and secret inside a write transaction.
fn load_state(txn: &WriteTransaction, key: &FeedKey) -> Result<FeedState> {
    let feeds = txn.open_table(FEEDS)?;
    let bytes = feeds.get(key.0)?.ok_or(Error::UnknownFeed(*key))?;
    let record = FeedRecord::decode(bytes.value())?;
    check_record(key, &record)?;
    let secret = if record.writable {
        let secrets = txn.open_table(SECRETS)?;
        let bytes = secrets.get(key.0)?.ok_or_else(|| {
            Error::Corrupt(format!("the secret key of own feed {key} is missing"))
        })?;
        let secret = SigningKey::from_bytes(&bytes.value());
        if secret.verifying_key().to_bytes() != key.0 {
            return Err(Error::Corrupt(format!(
                "the secret key stored for {key} does not match it"
            )));
        }
        Some(secret)
    } else {
        None
    };
    Ok(FeedState { record, secret })
}

/// The invariants a record read from disk must meet before it is used.
pub(crate) fn check_record(key: &FeedKey, record: &FeedRecord) -> Result<()> {
    if record.length > tree::MAX_LENGTH || record.roots.len() != record.length.count_ones() as usize
    {
        return Err(Error::Corrupt(format!(
            "the record of feed {key} has inconsistent roots"
        )));
    }
    Ok(())
}

/// Appends leaves `length..` to the entries table, extending `roots` (the roots at `length`)
/// and storing with each leaf the parent nodes it completes.
fn push_leaves<E: AsRef<[u8]>>(
    table: &mut redb::Table<(u64, u64), &'static [u8]>,
    id: u64,
    length: u64,
    roots: &mut Vec<Hash>,
    entries: &[E],
    leaves: &[Hash],
) -> Result<()> {
    let mut row = Vec::new();
    for (i, (entry, leaf)) in (length..).zip(entries.iter().zip(leaves)) {
        row.clear();
        let mut hash = *leaf;
        for _ in 0..tree::completed_parents(i) {
            // The roots at length i end with one root per trailing one bit of i.
            let left = roots
                .pop()
                .ok_or_else(|| Error::Corrupt("roots do not match the length".into()))?;
            hash = crypto::parent_hash(&left, &hash);
            row.extend_from_slice(&hash.0);
        }
        roots.push(hash);
        row.extend_from_slice(entry.as_ref());
        table.insert((id, i), row.as_slice())?;
    }
    Ok(())
}

/// The writer thread's state.
pub(crate) struct Writer {
    pub db: Arc<Database>,
    pub jobs: mpsc::Receiver<Box<dyn Job>>,
    pub registry: Arc<Mutex<Registry>>,
    pub sync: SyncMode,
    pub limits: crate::store::Limits,
    pub cache: HashMap<FeedKey, FeedState>,
    /// Write transactions committed since the store opened (see [`crate::Store::commits`]).
    pub commits: Arc<std::sync::atomic::AtomicU64>,
    /// The folder's lock: declared last, so it outlives this thread's handle on the database.
    pub _lock: Arc<std::fs::File>,
}

impl Writer {
    /// Runs until every sender is gone, then makes everything durable.
    pub(crate) fn run(mut self) {
        let mut last_durable = Instant::now();
        let mut group: Vec<Box<dyn Job>> = Vec::new();
        while let Some(job) = self.jobs.blocking_recv() {
            group.push(job);
            while group.len() < MAX_JOBS_PER_COMMIT {
                match self.jobs.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            let durable = match self.sync {
                SyncMode::Durable => true,
                SyncMode::Relaxed => last_durable.elapsed() >= RELAXED_FLUSH_INTERVAL,
            };
            if durable {
                last_durable = Instant::now();
            }
            self.commit_group(std::mem::take(&mut group), durable);
        }
        if self.sync == SyncMode::Relaxed
            && let Err(e) = self.flush()
        {
            tracing::error!(error = %e, "final flush failed");
        }
    }

    fn flush(&self) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.commit()?;
        Ok(())
    }

    fn commit_group(&mut self, mut jobs: Vec<Box<dyn Job>>, durable: bool) {
        let mut failed: Vec<Box<dyn Job>> = Vec::new();
        let outcome = loop {
            match self.try_group(&mut jobs, durable) {
                Ok(Attempt::Committed(overlay)) => break Ok(overlay),
                Ok(Attempt::Poisoned(i)) => failed.push(jobs.remove(i)),
                Err(e) => break Err(e),
            }
        };
        for job in failed {
            job.finish(Ok(()));
        }
        match outcome {
            Ok(overlay) => {
                self.publish(overlay);
                for job in jobs {
                    job.finish(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "group commit failed");
                for job in jobs {
                    job.finish(Err(e.clone()));
                }
            }
        }
    }

    fn try_group(&mut self, jobs: &mut [Box<dyn Job>], durable: bool) -> Result<Attempt> {
        let mut txn = self.db.begin_write()?;
        if !durable {
            txn.set_durability(Durability::None)?;
        }
        let mut overlay = Overlay::default();
        for (i, job) in jobs.iter_mut().enumerate() {
            let mut w = WriteTxn {
                txn: &txn,
                cache: &self.cache,
                overlay: &mut overlay,
                limits: &self.limits,
                dirty: false,
            };
            if job.run(&mut w) {
                txn.abort()?;
                return Ok(Attempt::Poisoned(i));
            }
        }
        // Feeds only read (their length, their entries) are not written back nor published.
        overlay
            .feeds
            .retain(|key, state| self.cache.get(key).is_none_or(|c| c.record != state.record));
        sign_and_store(&txn, &mut overlay)?;
        txn.commit()?;
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Attempt::Committed(overlay))
    }

    /// Moves a committed overlay into the cache and tells subscribers.
    fn publish(&mut self, overlay: Overlay) {
        let mut registry = match self.registry.lock() {
            Ok(registry) => registry,
            Err(poisoned) => poisoned.into_inner(),
        };
        for (key, state) in overlay.feeds {
            let status = FeedStatus::of(&state.record);
            match registry.get(&key) {
                Some(shared) => {
                    shared.status.send_replace(status);
                }
                None => {
                    let shared =
                        FeedShared::new(key, state.record.id, state.record.writable, status);
                    registry.insert(key, Arc::new(shared));
                }
            }
            self.cache.insert(key, state);
        }
    }
}

enum Attempt {
    Committed(Overlay),
    Poisoned(usize),
}

/// Signs the new head of every own feed that grew, and writes every touched record.
fn sign_and_store(txn: &WriteTransaction, overlay: &mut Overlay) -> Result<()> {
    for key in &overlay.appended {
        if let Some(state) = overlay.feeds.get_mut(key)
            && let Some(secret) = &state.secret
        {
            let record = &mut state.record;
            let signature = crypto::sign_tree(secret, record.length, &record.roots);
            record.head = Some(SignedHead {
                length: record.length,
                roots: record.roots.clone(),
                signature,
            });
        }
    }
    let mut feeds = txn.open_table(FEEDS)?;
    for (key, state) in &overlay.feeds {
        feeds.insert(key.0, state.record.encode()?.as_slice())?;
    }
    Ok(())
}
