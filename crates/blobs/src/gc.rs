//! Garbage collection: removing the complete blobs nothing references any more.
//!
//! The caller says what is referenced (for a node: every blob a document names); the store
//! keeps, besides those, every pinned blob, every partial blob (a download in progress), and
//! every blob added, fetched or touched by this process within the grace period, so that a
//! collection racing an add (whose referencing document is not written yet) or a download
//! never removes it. Each blob is decided and removed under its own lock, the one adds,
//! imports and deletes take: an add of the same blob comes wholly before or after.

use std::collections::HashSet;
use std::time::Duration;

use redb::{ReadableDatabase, ReadableTable};

use crate::error::Result;
use crate::id::BlobId;
use crate::store::Blobs;
use crate::tables::{BLOBS, Record};

/// What a collection did ([`Blobs::collect`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Collected {
    /// The blobs removed, in id order.
    pub removed: Vec<BlobId>,
    /// Bytes they held.
    pub removed_bytes: u64,
    /// Blobs kept because they are referenced.
    pub referenced: usize,
    /// Blobs kept because they are pinned.
    pub pinned: usize,
    /// Partial blobs kept (downloads in progress).
    pub partial: usize,
    /// Blobs kept because they were added, fetched or touched within the grace period.
    pub fresh: usize,
}

impl Blobs {
    /// Marks a held blob as just used, so that a collection within its grace period keeps it:
    /// touch a blob before writing the first document that references it (an add does it).
    pub async fn touch(&self, id: BlobId) -> Result<()> {
        self.blocking(move |inner| {
            let _lock = inner.lock(id);
            if inner.record(id)?.is_none() {
                return Err(crate::Error::NotFound(id));
            }
            inner.touch(id);
            Ok(())
        })
        .await
    }

    /// Removes every complete, unpinned blob that is not in `referenced` and was not added,
    /// fetched or touched by this process within `grace`.
    pub async fn collect(&self, referenced: HashSet<BlobId>, grace: Duration) -> Result<Collected> {
        self.blocking(move |inner| {
            let ids: Vec<BlobId> = {
                let txn = inner.db.begin_read()?;
                let table = txn.open_table(BLOBS)?;
                let mut ids = Vec::new();
                for row in table.iter()? {
                    ids.push(BlobId::from_bytes(*row?.0.value()));
                }
                ids
            };
            let mut out = Collected::default();
            for id in ids {
                if referenced.contains(&id) {
                    out.referenced += 1;
                    continue;
                }
                let _lock = inner.lock(id);
                // Decided on the row as it is now, under the lock adds and imports take.
                let Some(record) = inner.record(id)? else {
                    continue; // deleted meanwhile
                };
                let fresh = inner
                    .fresh
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&id)
                    .is_some_and(|at| at.elapsed() < grace);
                match record {
                    Record { held: Some(_), .. } => out.partial += 1,
                    Record { pinned: true, .. } => out.pinned += 1,
                    _ if fresh => out.fresh += 1,
                    Record { size, .. } => {
                        inner.delete_locked(id)?;
                        out.removed.push(id);
                        out.removed_bytes += size;
                    }
                }
            }
            // Forget what no longer needs sparing.
            inner
                .fresh
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, at| at.elapsed() < grace);
            tracing::debug!(
                removed = out.removed.len(),
                bytes = out.removed_bytes,
                "blobs collected"
            );
            Ok(out)
        })
        .await
    }
}

/// How long [`Blobs::collect`] spares a new blob unless told otherwise: long enough for the
/// document that references it to be written.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60 * 60);
