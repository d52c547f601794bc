//! Download progress whose bytes are not synced yet.
//!
//! An fsync per import would bound a download by the disk's latency (on the development VM,
//! 2 MiB synced writes run at 200 MB/s, 32 MiB ones at 740 MB/s). So an import records the
//! chunk groups it wrote at once (a small redb commit), but syncs the blob's files only every
//! [`SYNC_BYTES`] of a download, when the blob completes or its download starts, and on
//! [`Blobs::flush`]. The groups recorded but not synced are listed in the `unsynced-1` table
//! (and mirrored here in memory). When the store opens, it verifies those groups again, from
//! the files, against the id (bao-tree's `valid_ranges`): the ones whose bytes and proof
//! survived are kept, the others are dropped from the held ranges. A process killed in the
//! middle of a download thus keeps every group it verified (the bytes were in the page cache),
//! and a machine that lost power keeps what reached the disk; a record never claims a group
//! whose bytes do not match the id once the store is open.

use std::collections::HashMap;
use std::sync::MutexGuard;

use bao_tree::io::outboard::PreOrderOutboard;
use bao_tree::io::sync::valid_ranges;
use bao_tree::{BaoTree, ChunkRanges};
use redb::{ReadableDatabase, ReadableTable};

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::store::{BLOCK_SIZE, Blobs, Inner};
use crate::tables::{BLOBS, Record, UNSYNCED, decode_ranges, encode_ranges};
use multibee_feed::faults::Fault;

/// Bytes of a download imported between two syncs of its files.
pub const SYNC_BYTES: u64 = 32 << 20;

/// One blob's groups recorded since its files were last synced.
#[derive(Clone)]
pub(crate) struct Pending {
    /// The chunk groups written and recorded but not synced (the `unsynced-1` row).
    pub(crate) groups: ChunkRanges,
    /// Bytes imported since the last sync.
    pub(crate) bytes: u64,
    /// Which download of the blob this is: a sync that ran without the lock applies only to
    /// the download it synced, not to one that started over (delete, restart) meanwhile.
    pub(crate) generation: u64,
}

impl Pending {
    pub(crate) fn new() -> Pending {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Pending {
            groups: ChunkRanges::empty(),
            bytes: 0,
            generation: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

impl Blobs {
    /// Syncs the files of every download in progress, so that the groups they hold need no
    /// verification when the store next opens. Imports sync by themselves every
    /// [`SYNC_BYTES`] of a download and when a blob completes; the network layer calls this
    /// when a fetch stops before the blob is complete. Dropping the last handle of a store
    /// flushes too.
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

    /// Records `record` and, in the same commit, the groups of it not synced yet.
    pub(crate) fn put_progress(
        &self,
        id: BlobId,
        record: &Record,
        unsynced: &ChunkRanges,
    ) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(BLOBS)?
            .insert(id.as_bytes(), record.encode().as_slice())?;
        let mut table = txn.open_table(UNSYNCED)?;
        match unsynced.is_empty() {
            true => table.remove(id.as_bytes())?,
            false => table.insert(id.as_bytes(), encode_ranges(unsynced).as_slice())?,
        };
        drop(table);
        txn.commit()?;
        Ok(())
    }

    /// The files were synced after `synced` (groups that were unsynced) were written: they
    /// leave the unsynced list, unless the blob completed, was deleted or was flushed
    /// meanwhile (its pending entry is gone then), or its download started over (another
    /// `generation`).
    pub(crate) fn record_synced(
        &self,
        id: BlobId,
        generation: u64,
        synced: &ChunkRanges,
    ) -> Result<()> {
        let _lock = self.lock(id);
        let mut pending = self.pending();
        let Some(entry) = pending.get_mut(&id).filter(|e| e.generation == generation) else {
            return Ok(());
        };
        entry.groups.difference_with(synced);
        let left = entry.groups.clone();
        if left.is_empty() && entry.bytes == 0 {
            pending.remove(&id);
        }
        drop(pending);
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(UNSYNCED)?;
            match left.is_empty() {
                true => table.remove(id.as_bytes())?,
                false => table.insert(id.as_bytes(), encode_ranges(&left).as_slice())?,
            };
        }
        txn.commit()?;
        Ok(())
    }

    /// [`Blobs::flush`].
    pub(crate) fn flush_pending(&self) -> Result<()> {
        let ids: Vec<BlobId> = self.pending().keys().copied().collect();
        for id in ids {
            let _lock = self.lock(id);
            if !self.pending().contains_key(&id) {
                continue; // synced by an import meanwhile
            }
            // The list is cleared only once the files are synced.
            self.sync_files(id)?;
            let txn = self.db.begin_write()?;
            txn.open_table(UNSYNCED)?.remove(id.as_bytes())?;
            txn.commit()?;
            self.pending().remove(&id);
        }
        Ok(())
    }

    /// On open: verifies the groups recorded but not synced when the store was last used,
    /// keeping in each partial blob's held ranges only those that verify; then syncs the files
    /// and clears the unsynced list.
    pub(crate) fn recover_unsynced(&self) -> Result<()> {
        let rows: Vec<(BlobId, Vec<u8>)> = {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(UNSYNCED)?;
            let mut rows = Vec::new();
            for row in table.iter()? {
                let (key, value) = row?;
                rows.push((BlobId::from_bytes(*key.value()), value.value().to_vec()));
            }
            rows
        };
        for (id, value) in rows {
            let unsynced = decode_ranges(&value)
                .ok_or_else(|| Error::Corrupt(format!("blob {id}: unsynced ranges")))?;
            let record = {
                let txn = self.db.begin_read()?;
                let table = txn.open_table(BLOBS)?;
                let row = table.get(id.as_bytes())?;
                row.map(|v| Record::decode(v.value())).transpose()?
            };
            let txn = self.db.begin_write()?;
            if let Some(mut record) = record
                && let Some(held) = &record.held
            {
                let valid = self.valid_groups(id, record.size, &unsynced);
                let dropped = &unsynced - &valid;
                if !dropped.is_empty() {
                    tracing::warn!(%id, ?dropped, "groups of an unfinished download did not survive: they will be fetched again");
                }
                let kept = held - &dropped;
                record.held = Some(kept);
                if self.data_path(id).exists() && self.obao_path(id).exists() {
                    self.sync_files(id)?;
                }
                txn.open_table(BLOBS)?
                    .insert(id.as_bytes(), record.encode().as_slice())?;
            }
            txn.open_table(UNSYNCED)?.remove(id.as_bytes())?;
            txn.commit()?;
        }
        Ok(())
    }

    /// The groups among `groups` whose bytes and proof in the blob's files verify against the
    /// id (none when the files cannot be read).
    fn valid_groups(&self, id: BlobId, size: u64, groups: &ChunkRanges) -> ChunkRanges {
        let (Ok(data), Ok(obao)) = (
            std::fs::File::open(self.data_path(id)),
            std::fs::File::open(self.obao_path(id)),
        ) else {
            return ChunkRanges::empty();
        };
        let outboard = PreOrderOutboard {
            root: id.hash(),
            tree: BaoTree::new(size, BLOCK_SIZE),
            data: obao,
        };
        let mut valid = ChunkRanges::empty();
        for range in valid_ranges(outboard, data, groups) {
            match range {
                Ok(range) => valid |= ChunkRanges::from(range),
                Err(e) => {
                    tracing::warn!(%id, %e, "reading an unfinished download to verify it");
                    break;
                }
            }
        }
        &valid & groups
    }
}
