//! A folder of feeds: the [`Store`] that owns the database, and [`Feed`] handles to each log.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use ed25519_dalek::SigningKey;
use redb::{Database, ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::crypto;
use crate::error::{Error, Result, VerifyError};
use crate::keys::{DiscoveryKey, FeedKey, Hash};
use crate::nodes;
use crate::proof::{self, Batch, Proof, SignedHead};
use crate::tables::{self, ENTRIES, FEEDS, FeedRecord, META, SECRETS};
use crate::writer::{self, ClosureJob, Job, WriteTxn, Writer};

/// The database file inside a store's folder.
pub const DB_FILE: &str = "multibee.redb";
const JOB_QUEUE: usize = 4096;

/// When an acknowledged write reaches the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SyncMode {
    /// Every acknowledged write is on disk (fsync), group-committed with concurrent writes.
    #[default]
    Durable,
    /// Writes are acknowledged once committed in memory and flushed to disk at least once a
    /// second. A crash keeps the store consistent but may lose the newest writes.
    Relaxed,
}

/// Size limits on what a store accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The largest entry, in bytes.
    pub max_entry_bytes: usize,
    /// The most entries one ingested batch may carry.
    pub max_batch_entries: usize,
    /// The most entry bytes one ingested batch may carry (bounds unverified data in memory).
    pub max_batch_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entry_bytes: 8 << 20,
            max_batch_entries: 1 << 16,
            max_batch_bytes: 16 << 20,
        }
    }
}

/// The page cache a store gets unless [`Options::cache_bytes`] says (128 MiB): a node's memory
/// stays bounded whatever the size of its store (redb's own default is 1 GiB per database).
pub const DEFAULT_CACHE_BYTES: usize = 128 << 20;

/// How to open a store.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Options {
    /// When writes reach the disk.
    pub sync: SyncMode,
    /// Size limits.
    pub limits: Limits,
    /// The most memory redb may use to cache pages (`None`: [`DEFAULT_CACHE_BYTES`]).
    pub cache_bytes: Option<usize>,
    /// The storage under the database file (`None`: the file itself). For fault injection in
    /// tests and for custom storage.
    pub backend: Option<Backend>,
}

/// Opens the storage of a store's database file (see [`Options::backend`]).
#[derive(Clone)]
pub struct Backend(
    /// Given the database file's path, the storage to use for it.
    #[allow(clippy::type_complexity)]
    pub Arc<dyn Fn(&Path) -> std::io::Result<Box<dyn redb::StorageBackend>> + Send + Sync>,
);

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Backend(..)")
    }
}

/// A boxed backend, as redb takes a sized one.
#[derive(Debug)]
struct Boxed(Box<dyn redb::StorageBackend>);

impl redb::StorageBackend for Boxed {
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.0.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.0.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write(offset, data)
    }

    fn close(&self) -> std::io::Result<()> {
        self.0.close()
    }
}

impl Options {
    /// Options with the given sync mode.
    pub fn sync(mut self, sync: SyncMode) -> Self {
        self.sync = sync;
        self
    }

    /// Options with the database stored through `backend` (see [`Options::backend`]).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Options with redb's page cache capped at `bytes`.
    pub fn cache_bytes(mut self, bytes: usize) -> Self {
        self.cache_bytes = Some(bytes);
        self
    }
}

/// What a subscriber to a feed is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedStatus {
    /// Contiguous entries held.
    pub length: u64,
    /// The length of the newest signed head held (may exceed `length` on a replica).
    pub signed_length: u64,
    /// Whether the writer was caught equivocating.
    pub forked: bool,
}

impl FeedStatus {
    pub(crate) fn of(record: &FeedRecord) -> Self {
        FeedStatus {
            length: record.length,
            signed_length: record.head.as_ref().map_or(0, |h| h.length),
            forked: record.fork.is_some(),
        }
    }
}

/// The outcome of ingesting a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ingested {
    /// New entries stored (0 for a batch already held).
    pub added: u64,
    /// The feed's length afterwards.
    pub length: u64,
    /// The length of the signed head held afterwards.
    pub signed_length: u64,
}

/// Proof that a writer signed two different histories: both signed statements.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkEvidence {
    /// The signed head this store held.
    pub ours: SignedHead,
    /// The conflicting signed head a peer sent.
    pub theirs: SignedHead,
    /// Where the two disagree.
    pub detail: String,
}

/// What every handle of one feed shares.
pub(crate) struct FeedShared {
    key: FeedKey,
    discovery: DiscoveryKey,
    id: u64,
    writable: bool,
    pub(crate) status: watch::Sender<FeedStatus>,
}

impl FeedShared {
    pub(crate) fn new(key: FeedKey, id: u64, writable: bool, status: FeedStatus) -> Self {
        FeedShared {
            key,
            discovery: key.discovery_key(),
            id,
            writable,
            status: watch::Sender::new(status),
        }
    }
}

/// The feeds held, by key and by discovery key (a peer names a feed by its discovery key, so
/// that lookup must not cost a scan).
#[derive(Default)]
pub(crate) struct Registry {
    feeds: HashMap<FeedKey, Arc<FeedShared>>,
    discovery: HashMap<DiscoveryKey, FeedKey>,
}

impl Registry {
    pub(crate) fn get(&self, key: &FeedKey) -> Option<&Arc<FeedShared>> {
        self.feeds.get(key)
    }

    pub(crate) fn insert(&mut self, key: FeedKey, shared: Arc<FeedShared>) {
        self.discovery.insert(shared.discovery, key);
        self.feeds.insert(key, shared);
    }

    fn keys(&self) -> impl Iterator<Item = &FeedKey> {
        self.feeds.keys()
    }

    fn by_discovery(&self, discovery: &DiscoveryKey) -> Option<&Arc<FeedShared>> {
        self.feeds.get(self.discovery.get(discovery)?)
    }
}

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
    /// half a second is waited out). Opening reads one small
    /// record per feed; it never replays entries.
    pub fn open_with(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        let dir = dir.as_ref().to_path_buf();
        create_private_dir(&dir)?;
        let lock = Arc::new(lock_folder(&dir)?);
        restrict_own_dir(&dir, &lock)?;
        let path = dir.join(DB_FILE);
        // redb panics on some damaged files instead of returning an error; a damaged file is
        // input we do not control, so it becomes an error here.
        // The backend factory is only called, never observed half-updated after a panic.
        let backend = std::panic::AssertUnwindSafe(&options.backend);
        let opened =
            std::panic::catch_unwind(|| open_database(&path, options.cache_bytes, &backend));
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

    fn record(&self, txn: &redb::ReadTransaction, key: &FeedKey) -> Result<FeedRecord> {
        let feeds = txn.open_table(FEEDS)?;
        let bytes = feeds.get(key.0)?.ok_or(Error::UnknownFeed(*key))?;
        let record = FeedRecord::decode(bytes.value())?;
        writer::check_record(key, &record)?;
        Ok(record)
    }
}

/// A handle to one feed of a [`Store`]: read it, append to it (if own), prove ranges of it,
/// ingest verified ranges into it (if a replica) and follow its length.
#[derive(Clone)]
pub struct Feed {
    store: Store,
    shared: Arc<FeedShared>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("key", &self.shared.key)
            .field("status", &self.status())
            .finish()
    }
}

impl Feed {
    /// The feed's number in this store (see [`crate::LocalId`]).
    pub(crate) fn shared_id(&self) -> u64 {
        self.shared.id
    }

    /// The feed's public key.
    pub fn key(&self) -> FeedKey {
        self.shared.key
    }

    /// The feed's discovery key.
    pub fn discovery_key(&self) -> DiscoveryKey {
        self.shared.discovery
    }

    /// Whether this store holds the feed's secret key.
    pub fn is_writable(&self) -> bool {
        self.shared.writable
    }

    /// The number of contiguous entries held.
    pub fn length(&self) -> u64 {
        self.status().length
    }

    /// Length, signed length and fork state.
    pub fn status(&self) -> FeedStatus {
        *self.shared.status.borrow()
    }

    /// A subscription that sees every new status (new length, new signed head, fork). It holds
    /// only the latest value, so a slow subscriber never makes anything buffer.
    pub fn subscribe(&self) -> watch::Receiver<FeedStatus> {
        self.shared.status.subscribe()
    }

    /// The store this feed lives in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Entry `index`, or `None` if it is not held.
    pub fn get(&self, index: u64) -> Result<Option<Vec<u8>>> {
        let txn = self.store.begin_read()?;
        let table = txn.open_table(ENTRIES)?;
        let Some(row) = table.get((self.shared.id, index))? else {
            return Ok(None);
        };
        let (_, entry) = tables::split_row(index, row.value())?;
        Ok(Some(entry.to_vec()))
    }

    /// The entries in `range`, in order, read lazily from one consistent snapshot. The range
    /// must lie within the feed's length.
    pub fn range(
        &self,
        range: Range<u64>,
    ) -> Result<impl DoubleEndedIterator<Item = Result<(u64, Vec<u8>)>> + Send + use<>> {
        let txn = self.store.begin_read()?;
        let record = self.store.record(&txn, &self.shared.key)?;
        if range.start > range.end || range.end > record.length {
            return Err(Error::InvalidArgument(format!(
                "range {range:?} is not within the {} entries held",
                record.length
            )));
        }
        let table = txn.open_table(ENTRIES)?;
        let id = self.shared.id;
        let rows = table.range((id, range.start)..(id, range.end))?;
        Ok(rows.map(|row| {
            let (key, value) = row?;
            let index = key.value().1;
            let (_, entry) = tables::split_row(index, value.value())?;
            Ok((index, entry.to_vec()))
        }))
    }

    /// The signed head this store holds for the feed, if any.
    pub fn head(&self) -> Result<Option<SignedHead>> {
        let txn = self.store.begin_read()?;
        Ok(self.store.record(&txn, &self.shared.key)?.head)
    }

    /// The evidence of equivocation, if the feed is forked.
    pub fn fork_evidence(&self) -> Result<Option<ForkEvidence>> {
        let txn = self.store.begin_read()?;
        Ok(self.store.record(&txn, &self.shared.key)?.fork)
    }

    /// Appends one entry; returns the new length once the append is durable.
    pub async fn append(&self, entry: impl Into<Vec<u8>>) -> Result<u64> {
        self.append_batch(vec![entry.into()]).await
    }

    /// Appends entries atomically under one signature; returns the new length once durable.
    pub async fn append_batch(&self, entries: Vec<Vec<u8>>) -> Result<u64> {
        if !self.shared.writable {
            return Err(Error::NotWritable(self.shared.key));
        }
        let leaves: Vec<Hash> = entries.iter().map(|e| crypto::leaf_hash(e)).collect();
        let key = self.shared.key;
        self.store
            .write(move |txn| txn.append_hashed(&key, &entries, &leaves))
            .await
    }

    /// The entries `range` with a proof against the newest signed head held, ready to send to
    /// a peer. The range must lie within the feed's length; an empty range at the end proves
    /// just the head (an upgrade).
    pub fn proof(&self, range: Range<u64>) -> Result<Batch> {
        let txn = self.store.begin_read()?;
        let record = self.store.record(&txn, &self.shared.key)?;
        let Some(head) = &record.head else {
            return Err(Error::InvalidArgument(
                "the feed has no signed head yet".into(),
            ));
        };
        if range.start > range.end || range.end > record.length {
            return Err(Error::InvalidArgument(format!(
                "range {range:?} is not within the {} entries held",
                record.length
            )));
        }
        let table = txn.open_table(ENTRIES)?;
        let nodes = proof::proof_nodes(range.start, range.end, head.length)
            .into_iter()
            .map(|n| node_hash(&table, &record, n))
            .collect::<Result<Vec<_>>>()?;
        let mut entries = Vec::with_capacity((range.end - range.start) as usize);
        for row in table.range((record.id, range.start)..(record.id, range.end))? {
            let (key, value) = row?;
            entries.push(tables::split_row(key.value().1, value.value())?.1.to_vec());
        }
        Ok(Batch {
            feed: self.shared.key,
            start: range.start,
            entries,
            proof: Proof {
                length: head.length,
                signature: head.signature,
                nodes,
            },
        })
    }

    /// Verifies a batch from a peer and stores its new entries. Nothing is stored unless every
    /// entry verifies against the writer's signature and agrees with what is held; a batch that
    /// proves the writer equivocated marks the feed forked (durably) and is rejected.
    pub async fn ingest(&self, batch: Batch) -> Result<Ingested> {
        let verified = self.verify(batch)?;
        let ingested = self.store.write(move |txn| txn.ingest(&verified)).await?;
        self.check_not_forked()?;
        Ok(ingested)
    }

    /// The checks of [`Feed::ingest`] that need no lock: the feed, the size limits and the proof.
    /// Run it off the writer (it hashes and verifies a signature), then store the result with
    /// [`WriteTxn::ingest`], possibly with other writes in the same transaction.
    pub fn verify(&self, batch: Batch) -> Result<proof::VerifiedBatch> {
        let key = self.shared.key;
        let reject = |reason| Error::rejected(key, reason);
        if batch.feed != key {
            return Err(reject(VerifyError::WrongFeed {
                expected: key,
                got: batch.feed,
            }));
        }
        let limits = &self.store.inner.limits;
        if batch.entries.len() > limits.max_batch_entries
            || batch.entry_bytes() > limits.max_batch_bytes
        {
            return Err(reject(VerifyError::TooLarge(format!(
                "{} entries, {} bytes",
                batch.entries.len(),
                batch.entry_bytes()
            ))));
        }
        self.check_not_forked()?;
        let leaves: Vec<Hash> = batch.entries.iter().map(|e| crypto::leaf_hash(e)).collect();
        let verified = proof::verify(&key, batch.start, &batch.entries, &leaves, &batch.proof)
            .map_err(reject)?;
        Ok(proof::VerifiedBatch {
            batch,
            leaves,
            verified,
        })
    }

    /// Fails with [`VerifyError::Forked`] once the writer was caught equivocating.
    pub fn check_not_forked(&self) -> Result<()> {
        match self.status().forked {
            true => Err(Error::rejected(self.shared.key, VerifyError::Forked)),
            false => Ok(()),
        }
    }
}

/// The hash of any node a proof against the feed's signed head needs.
fn node_hash(
    table: &impl ReadableTable<(u64, u64), &'static [u8]>,
    record: &FeedRecord,
    n: u64,
) -> Result<Hash> {
    nodes::known_node(table, record, n)?
        .ok_or_else(|| Error::Corrupt(format!("tree node {n} is not held")))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The registry is a plain map: a panic while it was held cannot leave it half-updated.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Creates `dir` (and missing parents) readable by the owner only. An existing folder must open
/// before anything is changed in it: one this process cannot open is left exactly as it is.
fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("opening {}", dir.display()), e))?;
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))
}

/// Makes the folder owner-only (it holds secret keys) if this process owns it (owns it as it
/// owns the lock file it just created there); another user's folder is never changed.
fn restrict_own_dir(dir: &Path, lock: &std::fs::File) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let folder = std::fs::metadata(dir)
            .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
        let ours = lock
            .metadata()
            .map_err(|e| Error::io(format!("reading the lock of {}", dir.display()), e))?;
        if folder.uid() == ours.uid() && folder.mode() & 0o777 != 0o700 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io(format!("restricting {}", dir.display()), e))?;
        }
    }
    Ok(())
}

/// The lock file inside a store's folder.
pub const LOCK_FILE: &str = "LOCK";

/// Takes the folder's exclusive lock: one store per folder, across processes.
fn lock_folder(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    // The lock (flock) belongs to the open file, which a child process forked by another
    // thread of this process shares until it execs: a folder just closed here can stay locked
    // for that instant. Such a lock is waited out briefly; a folder in use stays an error.
    let deadline = std::time::Instant::now() + LOCK_GRACE;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked(dir.to_path_buf()));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(format!("locking {}", path.display()), e));
            }
        }
    }
}

/// How long opening waits for a lock that may be held only for an instant.
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Opens (or creates) the database, checks its format and reads every feed's record.
fn open_database(
    path: &Path,
    cache_bytes: Option<usize>,
    backend: &Option<Backend>,
) -> Result<(Database, Registry)> {
    let mut builder = Database::builder();
    builder.set_cache_size(cache_bytes.unwrap_or(DEFAULT_CACHE_BYTES));
    let db = match backend {
        None => builder.create(path),
        Some(Backend(open)) => {
            let storage =
                open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
            builder.create_with_backend(Boxed(storage))
        }
    }
    .map_err(|e| Error::Corrupt(format!("{}: {e}", path.display())))?;
    restrict_to_owner(path)?;
    init_schema(&db)?;
    let registry = load_registry(&db)?;
    Ok((db, registry))
}

/// The database holds secret keys: only the owner may read it.
fn restrict_to_owner(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(format!("restricting {}", path.display()), e))?;
    }
    Ok(())
}

fn init_schema(db: &Database) -> Result<()> {
    // The common case, an existing store of this format, needs no write (and no fsync).
    let read = db.begin_read()?;
    if let Ok(meta) = read.open_table(META)
        && let Some(format) = meta.get(tables::FORMAT_KEY)?
        && format.value() == tables::FORMAT_VERSION.to_le_bytes()
    {
        return Ok(());
    }
    drop(read);
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        let format = meta.get(tables::FORMAT_KEY)?.map(|v| v.value().to_vec());
        match format {
            None => {
                meta.insert(
                    tables::FORMAT_KEY,
                    tables::FORMAT_VERSION.to_le_bytes().as_slice(),
                )?;
            }
            Some(v) if v == tables::FORMAT_VERSION.to_le_bytes() => {}
            Some(v) => {
                return Err(Error::Corrupt(format!(
                    "unsupported store format {v:?} (this version reads format {})",
                    tables::FORMAT_VERSION
                )));
            }
        }
        txn.open_table(FEEDS)?;
        txn.open_table(SECRETS)?;
        txn.open_table(ENTRIES)?;
    }
    txn.commit()?;
    Ok(())
}

fn load_registry(db: &Database) -> Result<Registry> {
    let txn = db.begin_read()?;
    let feeds = txn.open_table(FEEDS)?;
    let mut registry = Registry::default();
    for row in feeds.iter()? {
        let (key, value) = row?;
        let key = FeedKey(key.value());
        let record = FeedRecord::decode(value.value())?;
        writer::check_record(&key, &record)?;
        let status = FeedStatus::of(&record);
        let shared = FeedShared::new(key, record.id, record.writable, status);
        registry.insert(key, Arc::new(shared));
    }
    Ok(registry)
}
