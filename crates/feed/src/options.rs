//! How a store is opened ([`Options`]): when writes reach the disk, size limits, the page
//! cache and the storage under the database file.

use std::path::Path;
use std::sync::Arc;

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
