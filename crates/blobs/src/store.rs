//! [`Blobs`]: the store. Bytes live in files under `data/`, metadata in redb; every
//! operation that does IO runs on tokio's blocking pool.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::ops::{Bound, Range};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bao_tree::io::outboard::PreOrderOutboard;
use bao_tree::io::sync::ReadAt;
use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges};
use redb::{Database, ReadableDatabase, ReadableTable};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::pending::Pending;
use crate::tables::{self, BLOBS, META, Record, TYPES, UNSYNCED};
use multibee_feed::faults::{Fault, Faults};

/// The metadata database inside a store's folder.
pub const DB_FILE: &str = "blobs.redb";

/// The folder of blob files (`<hex>` and `<hex>.obao`) inside a store's folder.
pub const DATA_DIR: &str = "data";

/// The folder of files being added; emptied when the store opens.
pub const TMP_DIR: &str = "tmp";

/// The chunk group size of stored outboards: 2^4 BLAKE3 chunks of 1 KiB, i.e. 16 KiB, as in
/// iroh-blobs. The outboard keeps one hash pair (64 bytes) per chunk group, 0.4% of the data
/// (4 MiB per GiB) instead of 6% with single chunks, and proofs and verification work on
/// whole 16 KiB groups, a good unit for network requests. The id does not depend on it.
pub const BLOCK_SIZE: BlockSize = BlockSize::from_chunk_log(4);

/// The largest blob size accepted (2^56 bytes, 64 PiB), so that no offset arithmetic on a
/// size claimed by a peer can overflow.
pub const MAX_SIZE: u64 = 1 << 56;

/// Buffers of file copies.
const COPY_BUFFER: usize = 1 << 20;

/// Adds of at least this many bytes sync their file in a second thread while hashing it.
const PARALLEL_SYNC: u64 = 4 << 20;

/// Operations on one id take one of these locks (chosen by the id's first byte), so that an
/// add, an import and a delete of the same blob never interleave their files and rows.
const LOCK_STRIPES: usize = 64;

/// How a store is opened ([`Blobs::open_with`]).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Options {
    faults: Option<Faults>,
}

impl Options {
    /// Injects `faults` ([`multibee_feed::faults::Faults`]) into the writes and syncs of downloads ([`Blobs::import_ranges`]):
    /// a full disk, a failing write or a failing fsync, for testing what an application does
    /// then. The metadata database and adds are not affected.
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = Some(faults);
        self
    }
}

/// A content-addressed blob store on a folder. Cheap to clone (a handle); every clone is the
/// same store. Async methods need a tokio runtime (they run file and database IO on the
/// blocking pool).
#[derive(Clone)]
pub struct Blobs {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blobs")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

pub(crate) struct Inner {
    dir: PathBuf,
    pub(crate) db: Database,
    locks: Vec<Mutex<()>>,
    next_tmp: AtomicU64,
    /// When each blob was last added, imported or touched by this process: a collection
    /// spares those within its grace period (see `gc.rs`).
    pub(crate) fresh: Mutex<std::collections::HashMap<BlobId, std::time::Instant>>,
    /// Told of every blob that becomes complete ([`Blobs::arrivals`]).
    arrivals: tokio::sync::broadcast::Sender<Arrival>,
    /// Downloads' progress not synced yet (see `pending.rs`).
    pub(crate) pending: Mutex<std::collections::HashMap<BlobId, Pending>>,
    faults: Option<Faults>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.flush_pending() {
            tracing::warn!(%e, "the progress of unfinished downloads was not saved");
        }
    }
}

/// A blob that became complete in the store: added, or its download finished
/// ([`Blobs::arrivals`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// The blob.
    pub id: BlobId,
    /// Its size in bytes.
    pub size: u64,
}

/// How many arrivals a slow subscriber may fall behind before it misses some.
const ARRIVALS_BUFFERED: usize = 1024;

/// What the store holds of one blob ([`Blobs::status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The size in bytes. For a partial blob this is the size claimed by the import that
    /// started it, proven by the tree once the last chunk group is held.
    pub size: u64,
    /// Every byte is held and verified.
    pub complete: bool,
    /// Marked to be kept by garbage collection.
    pub pinned: bool,
    /// The byte ranges held and verified, sorted and disjoint (whole chunk groups, the last one
    /// ending at `size`); `0..size` when complete.
    pub held: Vec<Range<u64>>,
}

impl Status {
    /// The byte ranges not held yet: what a download still has to fetch.
    pub fn missing(&self) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        let mut at = 0;
        for r in &self.held {
            if r.start > at {
                out.push(at..r.start);
            }
            at = r.end;
        }
        if at < self.size {
            out.push(at..self.size);
        }
        out
    }
}

/// The result of [`Blobs::import_ranges`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Imported {
    /// The blob is now complete (it may have been before).
    pub complete: bool,
    /// Bytes held and verified after this import.
    pub held_bytes: u64,
}

/// An async reader of a complete blob's bytes ([`Blobs::reader`]). It reads the blob's file
/// as it was when opened: a delete meanwhile does not cut it short (on Unix).
#[derive(Debug)]
pub struct BlobReader {
    inner: tokio::io::Take<tokio::fs::File>,
    size: u64,
}

impl BlobReader {
    /// The blob's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl AsyncRead for BlobReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl Blobs {
    /// Opens (or creates) the store in `dir`: the metadata database `dir/blobs.redb`, blob files
    /// under `dir/data/`, and `dir/tmp/` for adds in progress, which is emptied (what a crash
    /// left there was never recorded). Only one `Blobs` may have a folder open.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, Options::default())
    }

    /// [`Blobs::open`] with options.
    pub fn open_with(dir: impl AsRef<Path>, options: Options) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        for sub in [dir.clone(), dir.join(DATA_DIR), dir.join(TMP_DIR)] {
            std::fs::create_dir_all(&sub)
                .map_err(|e| Error::io(format!("creating {}", sub.display()), e))?;
        }
        let db_path = dir.join(DB_FILE);
        let db = Database::create(&db_path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::Locked(dir.clone()),
            e => Error::Corrupt(format!("{}: {e}", db_path.display())),
        })?;
        init_schema(&db)?;
        clear_dir(&dir.join(TMP_DIR))?;
        let locks = (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect();
        let inner = Inner {
            dir,
            db,
            locks,
            next_tmp: AtomicU64::new(0),
            fresh: Mutex::new(std::collections::HashMap::new()),
            arrivals: tokio::sync::broadcast::channel(ARRIVALS_BUFFERED).0,
            pending: Mutex::default(),
            faults: options.faults,
        };
        inner.recover_unsynced()?;
        Ok(Blobs {
            inner: Arc::new(inner),
        })
    }

    /// The folder of this store.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::io("a blocking task failed", std::io::Error::other(e)))?
    }

    /// Adds `bytes` (copied) and returns their id. Adding a blob already held completes at
    /// once; adding one held partially replaces the partial copy.
    pub async fn add_bytes(&self, bytes: &[u8]) -> Result<BlobId> {
        let bytes = bytes.to_vec();
        self.blocking(move |inner| inner.add_sync(&bytes)).await
    }

    /// Adds a copy of the file at `path` (an in-kernel copy on Linux), in bounded memory.
    /// The id is computed from the copy, so a file that changes meanwhile is stored as it
    /// was copied, under the id of what was stored.
    pub async fn add_file(&self, path: impl AsRef<Path>) -> Result<BlobId> {
        let path = path.as_ref().to_path_buf();
        self.blocking(move |inner| inner.add_copy(&path)).await
    }

    /// Adds everything `reader` yields, of any length, in bounded memory: the bytes stream to
    /// a file in the store's `tmp/` folder, then the hash tree is computed from that file and
    /// both are renamed into place. Returns the id.
    pub async fn add_reader(&self, reader: impl AsyncRead + Unpin) -> Result<BlobId> {
        let mut reader = reader;
        let temp = self.inner.temp_files();
        let file = tokio::fs::File::create(&temp.data)
            .await
            .map_err(|e| Error::io(format!("creating {}", temp.data.display()), e))?;
        let mut writer = tokio::io::BufWriter::with_capacity(COPY_BUFFER, file);
        let size = tokio::io::copy(&mut reader, &mut writer)
            .await
            .map_err(|e| Error::io("streaming a blob into the store", e))?;
        writer
            .flush()
            .await
            .map_err(|e| Error::io(format!("writing {}", temp.data.display()), e))?;
        drop(writer);
        self.blocking(move |inner| inner.finish_add(temp, size, None))
            .await
    }

    /// Whether the blob is held complete.
    pub async fn has(&self, id: BlobId) -> Result<bool> {
        self.blocking(move |inner| Ok(inner.record(id)?.is_some_and(|r| r.is_complete())))
            .await
    }

    /// The size of a complete blob. [`Error::NotFound`] if it is not held,
    /// [`Error::Incomplete`] if it is held only in part (see [`Blobs::status`]).
    pub async fn size(&self, id: BlobId) -> Result<u64> {
        self.blocking(move |inner| Ok(inner.complete(id)?.size))
            .await
    }

    /// What is held of a blob, complete or partial; `None` if nothing.
    pub async fn status(&self, id: BlobId) -> Result<Option<Status>> {
        self.blocking(move |inner| Ok(inner.record(id)?.map(status_of)))
            .await
    }

    /// The whole of a complete blob, in memory.
    pub async fn read(&self, id: BlobId) -> Result<Vec<u8>> {
        self.blocking(move |inner| {
            let size = inner.complete(id)?.size;
            inner.read_range_sync(id, 0, size)
        })
        .await
    }

    /// `len` bytes of a complete blob from `offset`. A range reaching beyond the end is
    /// [`Error::OutOfRange`]. Local reads trust the files (they were verified when stored).
    pub async fn read_range(&self, id: BlobId, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.blocking(move |inner| inner.read_range_sync(id, offset, len))
            .await
    }

    /// An async reader of a complete blob, from its first byte.
    pub async fn reader(&self, id: BlobId) -> Result<BlobReader> {
        self.reader_range(id, 0, None).await
    }

    /// An async reader of `len` bytes of a complete blob from `offset` (`None`: to the end),
    /// in bounded memory. A range reaching beyond the end is [`Error::OutOfRange`].
    pub async fn reader_range(
        &self,
        id: BlobId,
        offset: u64,
        len: Option<u64>,
    ) -> Result<BlobReader> {
        use std::io::{Seek, SeekFrom};
        let (file, size, len) = self
            .blocking(move |inner| {
                let size = inner.complete(id)?.size;
                let len = len.unwrap_or(size.saturating_sub(offset));
                inner.range_end(id, size, offset, len)?;
                let path = inner.data_path(id);
                let mut file = File::open(&path).map_err(|e| inner.missing_file(id, &path, e))?;
                file.seek(SeekFrom::Start(offset))
                    .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
                Ok((file, size, len))
            })
            .await?;
        let inner = tokio::fs::File::from_std(file).take(len);
        Ok(BlobReader { inner, size })
    }

    /// Up to `limit` ids of complete blobs, in ascending order, starting after `after` (for
    /// paging: pass the last id of the previous page). Partial blobs are not listed.
    pub async fn list(&self, after: Option<BlobId>, limit: usize) -> Result<Vec<BlobId>> {
        self.blocking(move |inner| inner.list_sync(after, limit))
            .await
    }

    /// Up to `limit` ids of partial blobs (downloads begun and not complete, by this process
    /// or an earlier one), in ascending order after `after`, with what each holds.
    pub async fn list_partial(
        &self,
        after: Option<BlobId>,
        limit: usize,
    ) -> Result<Vec<(BlobId, Status)>> {
        self.blocking(move |inner| inner.list_rows(after, limit, false))
            .await
    }

    /// Deletes a blob, complete or partial: its row first (from then on it is not held), then
    /// its files. [`Error::NotFound`] if it is not held.
    pub async fn delete(&self, id: BlobId) -> Result<()> {
        self.blocking(move |inner| inner.delete_sync(id)).await
    }

    /// Records the media type of a held blob (`None` clears it). Shown by the node's HTTP API;
    /// at most 255 bytes of printable ASCII without spaces around.
    pub async fn set_media_type(&self, id: BlobId, media_type: Option<&str>) -> Result<()> {
        if let Some(t) = media_type
            && (t.is_empty()
                || t.len() > tables::MAX_TYPE_LEN
                || t.trim() != t
                || !t.bytes().all(|b| (0x20..0x7f).contains(&b)))
        {
            return Err(Error::InvalidArgument(format!(
                "a media type is 1 to {} bytes of printable ASCII: {t:?}",
                tables::MAX_TYPE_LEN
            )));
        }
        let media_type = media_type.map(str::to_owned);
        self.blocking(move |inner| {
            let _lock = inner.lock(id);
            let txn = inner.db.begin_write()?;
            if txn.open_table(BLOBS)?.get(id.as_bytes())?.is_none() {
                return Err(Error::NotFound(id));
            }
            {
                let mut types = txn.open_table(TYPES)?;
                match &media_type {
                    Some(t) => types.insert(id.as_bytes(), t.as_str())?,
                    None => types.remove(id.as_bytes())?,
                };
            }
            txn.commit()?;
            Ok(())
        })
        .await
    }

    /// The media type recorded for a blob ([`Blobs::set_media_type`]), if any.
    pub async fn media_type(&self, id: BlobId) -> Result<Option<String>> {
        self.blocking(move |inner| {
            let txn = inner.db.begin_read()?;
            let table = match txn.open_table(TYPES) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            Ok(table.get(id.as_bytes())?.map(|v| v.value().to_owned()))
        })
        .await
    }

    /// Every blob that becomes complete from now on (added, or its download finished), for
    /// indexers that read or transform blobs as they arrive. A subscriber more than 1,024
    /// arrivals behind skips the oldest (`RecvError::Lagged` says how many): catch up with
    /// [`Blobs::list`].
    pub fn arrivals(&self) -> tokio::sync::broadcast::Receiver<Arrival> {
        self.inner.arrivals.subscribe()
    }

    /// Marks a held blob (complete or partial) to be kept by garbage collection.
    pub async fn pin(&self, id: BlobId) -> Result<()> {
        self.blocking(move |inner| inner.set_pinned(id, true)).await
    }

    /// Clears the mark of [`Blobs::pin`].
    pub async fn unpin(&self, id: BlobId) -> Result<()> {
        self.blocking(move |inner| inner.set_pinned(id, false))
            .await
    }
}

/// Temporary files of an add; removed on drop unless renamed into place.
pub(crate) struct TempFiles {
    data: PathBuf,
    obao: PathBuf,
    installed: bool,
}

impl Drop for TempFiles {
    fn drop(&mut self) {
        if !self.installed {
            let _ = std::fs::remove_file(&self.data);
            let _ = std::fs::remove_file(&self.obao);
        }
    }
}

impl Inner {
    /// The fault injected into writes or syncs of blob files, if any (see [`Options::faults`]).
    pub(crate) fn inject(&self, when: Fault) -> std::io::Result<()> {
        match &self.faults {
            Some(faults) => faults.check(when),
            None => Ok(()),
        }
    }

    pub(crate) fn data_path(&self, id: BlobId) -> PathBuf {
        self.dir.join(DATA_DIR).join(id.to_hex())
    }

    pub(crate) fn obao_path(&self, id: BlobId) -> PathBuf {
        self.dir
            .join(DATA_DIR)
            .join(format!("{}.obao", id.to_hex()))
    }

    /// Tells the subscribers of [`Blobs::arrivals`] (there may be none).
    pub(crate) fn arrived(&self, id: BlobId, size: u64) {
        let _ = self.arrivals.send(Arrival { id, size });
    }

    /// Marks `id` as just added or fetched (a collection spares it for a while).
    pub(crate) fn touch(&self, id: BlobId) {
        self.fresh
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(id, std::time::Instant::now());
    }

    pub(crate) fn lock(&self, id: BlobId) -> MutexGuard<'_, ()> {
        let stripe = id.as_bytes()[0] as usize % self.locks.len();
        self.locks[stripe]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn temp_files(&self) -> TempFiles {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(TMP_DIR);
        TempFiles {
            data: tmp.join(format!("{n}")),
            obao: tmp.join(format!("{n}.obao")),
            installed: false,
        }
    }

    /// The error for a recorded blob's file that failed to open: gone because the blob was
    /// deleted meanwhile ([`Error::NotFound`]), or missing from a store that still records it.
    pub(crate) fn missing_file(&self, id: BlobId, path: &Path, e: std::io::Error) -> Error {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Error::io(format!("opening {}", path.display()), e);
        }
        match self.record(id) {
            Ok(None) => Error::NotFound(id),
            Ok(Some(_)) => Error::Corrupt(format!(
                "blob {id} is recorded but {} is missing",
                path.display()
            )),
            Err(e) => e,
        }
    }

    /// What the store holds of `id`.
    pub(crate) fn record(&self, id: BlobId) -> Result<Option<Record>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(BLOBS)?;
        let row = table.get(id.as_bytes())?;
        row.map(|v| Record::decode(v.value())).transpose()
    }

    /// Records `record`. A complete record (whose files were synced) ends the list of groups
    /// not synced of a download of the blob.
    pub(crate) fn write_record(&self, id: BlobId, record: &Record) -> Result<()> {
        if !record.is_complete() {
            return self.put_record(id, record);
        }
        self.pending().remove(&id);
        self.put_progress(id, record, &bao_tree::ChunkRanges::empty())
    }

    /// Writes `record` to the database, and nothing else.
    pub(crate) fn put_record(&self, id: BlobId, record: &Record) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(BLOBS)?
            .insert(id.as_bytes(), record.encode().as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// The record of a complete blob, or the error saying why there is none.
    fn complete(&self, id: BlobId) -> Result<Record> {
        match self.record(id)? {
            None => Err(Error::NotFound(id)),
            Some(r) if !r.is_complete() => Err(Error::Incomplete(id)),
            Some(r) => Ok(r),
        }
    }

    /// Adds `bytes`: written to a temporary file, then installed.
    fn add_sync(&self, bytes: &[u8]) -> Result<BlobId> {
        let size = bytes.len() as u64;
        check_size(size)?;
        let temp = self.temp_files();
        std::fs::write(&temp.data, bytes)
            .map_err(|e| Error::io(format!("writing {}", temp.data.display()), e))?;
        self.finish_add(temp, size, Some(bytes))
    }

    /// Adds a copy of the file at `path` (an in-kernel copy where the platform has one).
    fn add_copy(&self, path: &Path) -> Result<BlobId> {
        let temp = self.temp_files();
        let size = std::fs::copy(path, &temp.data)
            .map_err(|e| Error::io(format!("copying {} into the store", path.display()), e))?;
        self.finish_add(temp, size, None)
    }

    /// Computes the outboard (and so the id) of a temporary file holding `size` bytes while
    /// another thread syncs the file, then installs the blob. The id is always that of the
    /// bytes in the temporary file (read back from it, or `bytes` when they are its content).
    fn finish_add(&self, temp: TempFiles, size: u64, bytes: Option<&[u8]>) -> Result<BlobId> {
        check_size(size)?;
        let hash = || match bytes {
            Some(bytes) => self.outboard_into(bytes, size, &temp.obao),
            None => {
                let file = File::open(&temp.data)
                    .map_err(|e| Error::io(format!("reading {}", temp.data.display()), e))?;
                let source = BufReader::with_capacity(COPY_BUFFER, file);
                self.outboard_into(source, size, &temp.obao)
            }
        };
        let id = if size < PARALLEL_SYNC {
            let id = hash()?;
            sync_file(&temp.data)?;
            id
        } else {
            // The file's write-back to disk and the hashing overlap: an add of a large blob
            // then takes about as long as the copy and its fsync alone.
            std::thread::scope(|scope| {
                let synced = scope.spawn(|| sync_file(&temp.data));
                let id = hash();
                let synced = synced.join().unwrap_or_else(|_| {
                    let e = std::io::Error::other("the thread syncing the file panicked");
                    Err(Error::io(format!("syncing {}", temp.data.display()), e))
                });
                synced.and(id)
            })?
        };
        self.install(id, size, temp)
    }

    /// Adds the empty blob.
    pub(crate) fn add_empty(&self) -> Result<BlobId> {
        self.add_sync(&[])
    }

    /// Reads `size` bytes of `data`, writes the pre-order outboard to `obao` (synced) and
    /// returns the root hash: the id.
    fn outboard_into(&self, data: impl Read, size: u64, obao: &Path) -> Result<BlobId> {
        let tree = BaoTree::new(size, BLOCK_SIZE);
        let file =
            File::create(obao).map_err(|e| Error::io(format!("creating {}", obao.display()), e))?;
        let mut outboard = PreOrderOutboard {
            root: blake3::hash(&[]),
            tree,
            data: file,
        };
        let root = bao_tree::io::sync::outboard(data, tree, &mut outboard).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::InvalidArgument(format!("the source ended before its size ({size} bytes)"))
            } else {
                Error::io("reading and hashing a blob", e)
            }
        })?;
        outboard
            .data
            .sync_all()
            .map_err(|e| Error::io(format!("syncing {}", obao.display()), e))?;
        Ok(root.into())
    }

    /// Renames synced temporary files into place, syncs the folder, then records the blob
    /// complete: a crash before the record leaves unrecorded files that a later add or import
    /// of the same id replaces.
    fn install(&self, id: BlobId, size: u64, mut temp: TempFiles) -> Result<BlobId> {
        let _lock = self.lock(id);
        self.touch(id);
        let existing = self.record(id)?;
        if existing.as_ref().is_some_and(Record::is_complete) {
            return Ok(id); // already held: the temporary files go on drop
        }
        let (data, obao) = (self.data_path(id), self.obao_path(id));
        rename(&temp.obao, &obao)?;
        rename(&temp.data, &data)?;
        temp.installed = true;
        sync_dir(&self.dir.join(DATA_DIR))?;
        let record = Record {
            size,
            pinned: existing.is_some_and(|r| r.pinned),
            held: None,
        };
        self.write_record(id, &record)?;
        tracing::debug!(%id, size, "blob added");
        self.arrived(id, size);
        Ok(id)
    }

    /// The end of the `len` bytes at `offset` of blob `id` of `size` bytes, or
    /// [`Error::OutOfRange`] if they are not all within it.
    fn range_end(&self, id: BlobId, size: u64, offset: u64, len: u64) -> Result<u64> {
        offset
            .checked_add(len)
            .filter(|end| *end <= size)
            .ok_or(Error::OutOfRange {
                id,
                start: offset,
                end: offset.saturating_add(len),
                size,
            })
    }

    fn read_range_sync(&self, id: BlobId, offset: u64, len: u64) -> Result<Vec<u8>> {
        let size = self.complete(id)?.size;
        let end = self.range_end(id, size, offset, len)?;
        let path = self.data_path(id);
        let file = File::open(&path).map_err(|e| self.missing_file(id, &path, e))?;
        let len = usize::try_from(end - offset)
            .map_err(|_| Error::InvalidArgument(format!("{len} bytes do not fit in memory")))?;
        let mut out = vec![0u8; len];
        file.read_exact_at(offset, &mut out).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::Corrupt(format!(
                    "blob {id}: {} is shorter than recorded",
                    path.display()
                ))
            } else {
                Error::io(format!("reading {}", path.display()), e)
            }
        })?;
        Ok(out)
    }

    fn list_sync(&self, after: Option<BlobId>, limit: usize) -> Result<Vec<BlobId>> {
        let rows = self.list_rows(after, limit, true)?;
        Ok(rows.into_iter().map(|(id, _)| id).collect())
    }

    /// Up to `limit` blobs after `after`, complete ones or partial ones, with their status.
    fn list_rows(
        &self,
        after: Option<BlobId>,
        limit: usize,
        complete: bool,
    ) -> Result<Vec<(BlobId, Status)>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(BLOBS)?;
        let start = after.map(|a| *a.as_bytes());
        let lower = match &start {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for row in table.range::<&[u8; 32]>((lower, Bound::Unbounded))? {
            if out.len() >= limit {
                break;
            }
            let (key, value) = row?;
            let record = Record::decode(value.value())?;
            if record.is_complete() == complete {
                out.push((BlobId::from_bytes(*key.value()), status_of(record)));
            }
        }
        Ok(out)
    }

    fn delete_sync(&self, id: BlobId) -> Result<()> {
        let _lock = self.lock(id);
        self.delete_locked(id)
    }

    /// [`Blobs::delete`], with the id's lock held by the caller.
    pub(crate) fn delete_locked(&self, id: BlobId) -> Result<()> {
        self.pending().remove(&id);
        let txn = self.db.begin_write()?;
        let removed = txn.open_table(BLOBS)?.remove(id.as_bytes())?.is_some();
        txn.open_table(UNSYNCED)?.remove(id.as_bytes())?;
        if !removed {
            return Err(Error::NotFound(id));
        }
        txn.open_table(TYPES)?.remove(id.as_bytes())?;
        txn.commit()?;
        for path in [self.data_path(id), self.obao_path(id)] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(%id, path = %path.display(), "removing a deleted blob's file: {e}")
                }
            }
        }
        Ok(())
    }

    fn set_pinned(&self, id: BlobId, pinned: bool) -> Result<()> {
        let _lock = self.lock(id);
        let mut record = self.record(id)?.ok_or(Error::NotFound(id))?;
        if record.pinned != pinned {
            record.pinned = pinned;
            self.write_record(id, &record)?;
        }
        Ok(())
    }
}

pub(crate) fn status_of(record: Record) -> Status {
    let size = record.size;
    let held = match &record.held {
        None if size == 0 => Vec::new(),
        None => std::iter::once(0..size).collect(),
        Some(held) => byte_ranges(held, size),
    };
    Status {
        size,
        complete: record.is_complete(),
        pinned: record.pinned,
        held,
    }
}

/// Chunk ranges as byte ranges, the last one cut at `size`.
pub(crate) fn byte_ranges(ranges: &ChunkRanges, size: u64) -> Vec<Range<u64>> {
    let bounds = ranges.boundaries();
    bounds
        .chunks(2)
        .map(|pair| {
            let start = pair[0].to_bytes().min(size);
            let end = pair
                .get(1)
                .map_or(size, |e: &ChunkNum| e.to_bytes().min(size));
            start..end
        })
        .filter(|r| r.start < r.end)
        .collect()
}

pub(crate) fn check_size(size: u64) -> Result<()> {
    if size > MAX_SIZE {
        return Err(Error::InvalidArgument(format!(
            "a blob of {size} bytes is over the limit of {MAX_SIZE} bytes"
        )));
    }
    Ok(())
}

pub(crate) fn open_rw(path: &Path, truncate: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| {
        Error::io(
            format!("renaming {} to {}", from.display(), to.display()),
            e,
        )
    })
}

fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(format!("syncing {}", path.display()), e))
}

/// Makes renames and new files in `dir` durable (a no-op where folders cannot be opened).
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    sync_file(dir)?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn clear_dir(dir: &Path) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    for entry in entries {
        let path = entry
            .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?
            .path();
        std::fs::remove_file(&path)
            .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
    }
    Ok(())
}

fn init_schema(db: &Database) -> Result<()> {
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        let format = meta.get(tables::FORMAT_KEY)?.map(|v| v.value().to_vec());
        match format {
            None => {
                let version = tables::FORMAT_VERSION.to_le_bytes();
                meta.insert(tables::FORMAT_KEY, version.as_slice())?;
            }
            Some(v) if v == tables::FORMAT_VERSION.to_le_bytes() => {}
            Some(v) if v == 1u32.to_le_bytes() => {
                let version = tables::FORMAT_VERSION.to_le_bytes();
                meta.insert(tables::FORMAT_KEY, version.as_slice())?;
            }
            Some(v) => {
                return Err(Error::Corrupt(format!(
                    "unsupported blob store format {v:?} (this version reads format {})",
                    tables::FORMAT_VERSION
                )));
            }
        }
        txn.open_table(BLOBS)?;
        txn.open_table(TYPES)?;
        txn.open_table(UNSYNCED)?;
    }
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use bao_tree::io::outboard::PreOrderMemOutboard;

    use super::*;

    /// The root of bao-tree's tree is plain BLAKE3 whatever the chunk group size: an id does
    /// not depend on [`BLOCK_SIZE`].
    #[test]
    fn roots_equal_blake3_for_every_block_size() {
        for len in [
            0usize,
            1,
            1023,
            1024,
            1025,
            16 * 1024,
            16 * 1024 + 1,
            100_000,
            1 << 20,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            for log in 0..=8 {
                let outboard = PreOrderMemOutboard::create(&data, BlockSize::from_chunk_log(log));
                assert_eq!(
                    outboard.root,
                    blake3::hash(&data),
                    "{len} bytes, block log {log}"
                );
            }
        }
    }

    #[test]
    fn missing_ranges_complement_held() {
        let status = Status {
            size: 100,
            complete: false,
            pinned: false,
            held: vec![10..20, 30..100],
        };
        assert_eq!(status.missing(), vec![0..10, 20..30]);
    }
}
