//! A folder of feeds: the [`Store`] that owns the database and its writer thread, and hands
//! out [`Feed`] handles to each log.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use ed25519_dalek::SigningKey;
use redb::{Database, ReadableDatabase};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::feed::Feed;
use crate::keys::{DiscoveryKey, FeedKey};
use crate::open::{self, DB_FILE};
use crate::options::{Limits, Options};
use crate::registry::{Registry, lock};
use crate::tables::{self, FEEDS, FeedRecord};
use crate::txn::WriteTxn;
use crate::writer::{ClosureJob, Job, Writer};

const JOB_QUEUE: usize = 4096;

struct Inner {
    dir: PathBuf,
    db: Arc<Database>,
    limits: Limits,
    jobs: Option<mpsc::Sender<Box<dyn Job>>>,
    registry: Arc<Mutex<Registry>>,
    writer: Option<JoinHandle<()>>,
    commits: Arc<std::sync::atomic::AtomicU64>,
    /// The folder's exclusive lock, shared with the writer; declared last so that it is
    /// released only after the database is closed.
    _lock: Arc<std::fs::File>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue stops the writer once it has committed what it holds; joining it
        // releases the database lock before the store is gone.
        // The last handle may be dropped by a job on the writer thread itself: then the writer
        // stops on its own once this returns, and it holds the lock until it has closed the
        // database.
        self.jobs = None;
        if let Some(writer) = self.writer.take()
            && writer.thread().id() != std::thread::current().id()
            && writer.join().is_err()
        {
            tracing::error!("the writer thread panicked");
        }
    }
}

/// A folder holding any number of feeds, own and replicated, in one redb database.
///
/// Cheap to clone; the folder is closed when the last clone and the last [`Feed`] are dropped.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

impl Store {
    /// Opens (or creates) the store in `dir` with default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<Store> {
        Store::open_with(dir, Options::default())
    }

    /// Opens (or creates) the store in `dir`.
    ///
    /// Fails with [`Error::Locked`] if another process has it open (a lock that lasts less than
    /// half a second is waited out). Opening reads one small record per feed; it never replays
    /// entries.
    pub fn open_with(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        let dir = dir.as_ref().to_path_buf();
        open::create_private_dir(&dir)?;
        let lock = Arc::new(open::lock_folder(&dir)?);
        open::restrict_own_dir(&dir, &lock)?;
        let path = dir.join(DB_FILE);
        // redb panics on some damaged files instead of returning an error; a damaged file is
        // input we do not control, so it becomes an error here.
        // The backend factory is only called, never observed half-updated after a panic.
        let backend = std::panic::AssertUnwindSafe(&options.backend);
        let opened =
            std::panic::catch_unwind(|| open::open_database(&path, options.cache_bytes, &backend));
        let (db, registry) = opened.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(Error::Corrupt(format!("{}: {what}", path.display())))
        })?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel(JOB_QUEUE);
        let registry = Arc::new(Mutex::new(registry));
        let commits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writer = Writer {
            commits: commits.clone(),
            db: db.clone(),
            jobs: rx,
            registry: registry.clone(),
            sync: options.sync,
            limits: options.limits.clone(),
            cache: HashMap::new(),
            _lock: lock.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("multibee-feed-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| Error::io("starting the writer thread", e))?;
        Ok(Store {
            inner: Arc::new(Inner {
                dir,
                db,
                limits: options.limits,
                jobs: Some(tx),
                registry,
                writer: Some(writer),
                commits,
                _lock: lock,
            }),
        })
    }

    /// How many write transactions this store has committed since it was opened (a group
    /// commit of many jobs counts once): what a layer's write path costs in commits.
    pub fn commits(&self) -> u64 {
        self.inner
            .commits
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many write jobs wait for the writer now (not counting the group being committed):
    /// the depth of the queue that local writes and replicated batches share, first come first
    /// served.
    pub fn queued_writes(&self) -> usize {
        self.inner
            .jobs
            .as_ref()
            .map_or(0, |jobs| jobs.max_capacity() - jobs.capacity())
    }

    /// The folder this store lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Creates a new own feed with a fresh ed25519 key pair.
    pub async fn create_feed(&self) -> Result<Feed> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|e| Error::io("generating a key", std::io::Error::other(e.to_string())))?;
        let secret = SigningKey::from_bytes(&secret);
        let key = FeedKey(secret.verifying_key().to_bytes());
        self.write(move |txn| txn.create_feed(key, Some(secret.clone())))
            .await?;
        self.feed(&key).ok_or(Error::UnknownFeed(key))
    }

    /// Opens the replica of someone else's feed, creating it (empty) if it is not held yet.
    /// For a key whose secret is held here, returns the own feed.
    pub async fn replica(&self, key: FeedKey) -> Result<Feed> {
        if let Some(feed) = self.feed(&key) {
            return Ok(feed);
        }
        self.write(move |txn| txn.create_feed(key, None)).await?;
        self.feed(&key).ok_or(Error::UnknownFeed(key))
    }

    /// The feed with this key, if the store holds it.
    pub fn feed(&self, key: &FeedKey) -> Option<Feed> {
        let shared = lock(&self.inner.registry).get(key).cloned()?;
        Some(Feed {
            store: self.clone(),
            shared,
        })
    }

    /// The keys of every feed held, own and replicated.
    pub fn feeds(&self) -> Vec<FeedKey> {
        let mut keys: Vec<FeedKey> = lock(&self.inner.registry).keys().copied().collect();
        keys.sort();
        keys
    }

    /// The feed whose discovery key this is, if held.
    pub fn feed_by_discovery_key(&self, discovery: &DiscoveryKey) -> Option<Feed> {
        let shared = lock(&self.inner.registry).by_discovery(discovery)?.clone();
        Some(Feed {
            store: self.clone(),
            shared,
        })
    }

    /// Runs `f` inside the next group-committed write transaction and returns its result once
    /// the transaction is durable (see [`WriteTxn`] for the rules a job follows). `f` may run
    /// more than once if another job in its group poisons the transaction.
    ///
    /// The job's error type is its caller's (any type a feed [`Error`] converts into): a layer
    /// above refuses a write with its own error, and gets it back as it was. A job that fails
    /// after writing anything has none of its writes committed.
    pub async fn write<R, E, F>(&self, f: F) -> std::result::Result<R, E>
    where
        F: FnMut(&mut WriteTxn<'_>) -> std::result::Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let jobs = self.inner.jobs.as_ref().ok_or(Error::Closed)?;
        jobs.send(Box::new(ClosureJob::new(f, reply)))
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| E::from(Error::Closed))?
    }

    /// The size limits this store enforces.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// A read transaction on the database, for layers that keep their own tables beside the
    /// feeds.
    pub fn begin_read(&self) -> Result<redb::ReadTransaction> {
        Ok(self.inner.db.begin_read()?)
    }

    pub(crate) fn record(&self, txn: &redb::ReadTransaction, key: &FeedKey) -> Result<FeedRecord> {
        let feeds = txn.open_table(FEEDS)?;
        let bytes = feeds.get(key.0)?.ok_or(Error::UnknownFeed(*key))?;
        let record = FeedRecord::decode(bytes.value())?;
        tables::check_record(key, &record)?;
        Ok(record)
    }
}
