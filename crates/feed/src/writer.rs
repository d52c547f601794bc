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

use redb::{Database, Durability, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use crate::crypto;
use crate::error::{Error, Result};
use crate::keys::FeedKey;
use crate::options::{Limits, SyncMode};
use crate::proof::SignedHead;
use crate::registry::{FeedShared, FeedStatus, Registry};
use crate::tables::FEEDS;
use crate::txn::{FeedState, Overlay, WriteTxn};

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

/// The writer thread's state.
pub(crate) struct Writer {
    pub db: Arc<Database>,
    pub jobs: mpsc::Receiver<Box<dyn Job>>,
    pub registry: Arc<Mutex<Registry>>,
    pub sync: SyncMode,
    pub limits: Limits,
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
