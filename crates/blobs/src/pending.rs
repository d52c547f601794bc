//! Download progress that is verified and written but not durable yet.
//!
//! An import writes its chunk groups to the blob's files at once, but syncs those files and
//! records the groups held in redb only every [`SYNC_BYTES`] of a download (and when the blob
//! completes, when a download starts, and on [`Blobs::flush`]): an fsync per request would
//! bound a download by the disk's latency (on the development VM, 2 MiB synced writes run at
//! 200 MB/s, 32 MiB ones at 740 MB/s). Until then the progress lives here, and every read of a
//! blob's record sees it ([`Inner::record`]). The invariant that a crash never leaves a blob
//! recorded with bytes that do not match its id holds because a record is only ever written
//! after the files it describes are synced; a crash loses at most the progress made since the
//! last sync, which the download then fetches again.

use std::collections::HashMap;
use std::sync::MutexGuard;

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::store::{Blobs, Inner};
use crate::tables::Record;
use multibee_feed::faults::Fault;

/// Bytes of a download imported between two syncs of its files and record.
pub const SYNC_BYTES: u64 = 32 << 20;

/// One blob's progress since its files were last synced.
pub(crate) struct Pending {
    /// What the blob's record will say once synced (partial: `held` is set).
    pub(crate) record: Record,
    /// Bytes imported since the last sync.
    pub(crate) unsynced: u64,
}

impl Blobs {
    /// Makes every download's progress durable: syncs the files of partial blobs and records
    /// the chunk groups they hold. Imports do so by themselves every [`SYNC_BYTES`] of a
    /// download and when a blob completes; call this when a download stops before it
    /// completes (the network layer does), so that a restart resumes from every group
    /// imported. Dropping the last handle of a store flushes too.
    pub async fn flush(&self) -> Result<()> {
        self.blocking(|inner| inner.flush_pending()).await
    }
}

impl Inner {
    pub(crate) fn pending(&self) -> MutexGuard<'_, HashMap<BlobId, Pending>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Syncs a blob's data file and outboard.
    pub(crate) fn sync_files(&self, id: BlobId) -> Result<()> {
        for path in [self.data_path(id), self.obao_path(id)] {
            self.inject(Fault::FailSync)
                .and_then(|()| std::fs::File::open(&path))
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(format!("syncing {}", path.display()), e))?;
        }
        Ok(())
    }

    /// Records `synced`, a partial record whose files were synced after it was taken, while
    /// imports of the blob may have gone on: unless the blob completed, was deleted or was
    /// flushed meanwhile (its pending progress is gone then, and its record is newer), the
    /// durable record catches up to `synced` and the pending progress stays.
    pub(crate) fn record_synced(&self, id: BlobId, synced: &Record) -> Result<()> {
        let _lock = self.lock(id);
        if !self.pending().contains_key(&id) {
            return Ok(());
        }
        self.put_record(id, synced)
    }

    /// [`Blobs::flush`].
    pub(crate) fn flush_pending(&self) -> Result<()> {
        let ids: Vec<BlobId> = self.pending().keys().copied().collect();
        for id in ids {
            let _lock = self.lock(id);
            let Some(pending) = self.pending().remove(&id) else {
                continue; // synced by an import meanwhile
            };
            self.sync_files(id)?;
            self.write_record(id, &pending.record)?;
        }
        Ok(())
    }
}
