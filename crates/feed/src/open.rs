//! Opening a store's folder: the folder is made private and locked, then the database is
//! opened (or created), its format checked and every feed's record read into a [`Registry`].

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable};

use crate::error::{Error, Result};
use crate::keys::FeedKey;
use crate::options::{Backend, DEFAULT_CACHE_BYTES};
use crate::registry::{FeedShared, FeedStatus, Registry};
use crate::tables::{self, ENTRIES, FEEDS, FeedRecord, META, SECRETS};

/// The database file inside a store's folder.
pub const DB_FILE: &str = "multibee.redb";

/// The lock file inside a store's folder.
pub const LOCK_FILE: &str = "LOCK";

/// How long opening waits for a lock that may be held only for an instant.
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Creates `dir` (and missing parents) readable by the owner only. An existing folder must open
/// before anything is changed in it: one this process cannot open is left exactly as it is.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
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
pub(crate) fn restrict_own_dir(dir: &Path, lock: &std::fs::File) -> Result<()> {
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

/// Takes the folder's exclusive lock: one store per folder, across processes.
pub(crate) fn lock_folder(dir: &Path) -> Result<std::fs::File> {
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

/// Opens (or creates) the database, checks its format and reads every feed's record.
pub(crate) fn open_database(
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
        txn.open_table(tables::NODES)?;
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
        tables::check_record(&key, &record)?;
        let status = FeedStatus::of(&record);
        let shared = FeedShared::new(key, record.id, record.writable, status);
        registry.insert(key, Arc::new(shared));
    }
    Ok(registry)
}
