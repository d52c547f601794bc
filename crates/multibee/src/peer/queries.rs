//! Declaring path indexes and querying them ([`crate::index`]).

use std::sync::{Arc, Weak};

use super::{Inner, MultiBee};
use crate::error::{Error, Result};
use crate::fold::storage;
use crate::index::{self, IndexInfo, IndexState, IndexTarget, Query, QueryAnswer};

impl MultiBee {
    /// Declares an index (or returns the one already declared with the same target): on a
    /// path (`/user/name`, `/tags/[]`), or on every path of the documents under a key prefix.
    /// Its rows are written with every write from now on; the documents already held are
    /// indexed in the background, and until that is done a query that would use it fails with
    /// [`Error::IndexBuilding`] rather than answer partially ([`MultiBee::wait_index`]).
    pub async fn add_index(&self, target: IndexTarget) -> Result<IndexInfo> {
        if let IndexTarget::Path(p) = &target {
            index::path::parse(p)
                .map_err(|e| Error::InvalidArgument(format!("bad path {p:?}: {e}")))?;
        }
        let info = self
            .write_job(move |_, txn| {
                let raw = txn.raw();
                let existing = index::rows::load(raw)?;
                if let Some(found) = existing.iter().find(|i| i.target == target) {
                    return Ok(found.clone());
                }
                let id = existing.last().map_or(1, |i| i.id + 1);
                let info = IndexInfo {
                    id,
                    target: target.clone(),
                    state: IndexState::Building {
                        done: None,
                        keys: 0,
                    },
                };
                index::rows::save(raw, &info)?;
                Ok(info)
            })
            .await?;
        if info.state != IndexState::Ready {
            self.start_index_build(info.id);
        }
        Ok(info)
    }

    /// The declared indexes, with their build progress.
    pub fn indexes(&self) -> Result<Vec<IndexInfo>> {
        let txn = self.inner.store.begin_read()?;
        index::load_read(&txn)
    }

    /// Waits until index `id` is built (building it in this task too), and returns it.
    pub async fn wait_index(&self, id: u32) -> Result<IndexInfo> {
        loop {
            let step = self.build_step(id).await?;
            match step {
                None => return Err(Error::UnknownIndex(id)),
                Some(info) if info.state == IndexState::Ready => return Ok(info),
                Some(_) => {}
            }
        }
    }

    /// Removes index `id` and its rows.
    pub async fn drop_index(&self, id: u32) -> Result<()> {
        self.write_job(move |_, txn| {
            let raw = txn.raw();
            let removed = raw
                .open_table(index::DEFS)
                .map_err(storage)?
                .remove(id)
                .map_err(storage)?
                .is_some();
            if !removed {
                return Err(Error::UnknownIndex(id));
            }
            index::rows::clear(raw, id)?;
            Ok(())
        })
        .await
    }

    /// Derives index `id` again from the store: its rows are removed and built anew (in the
    /// background, as for a new index).
    pub async fn rebuild_index(&self, id: u32) -> Result<IndexInfo> {
        let info = self
            .write_job(move |_, txn| {
                let raw = txn.raw();
                let Some(mut info) = index::rows::load(raw)?.into_iter().find(|i| i.id == id)
                else {
                    return Err(Error::UnknownIndex(id));
                };
                index::rows::clear(raw, id)?;
                info.state = IndexState::Building {
                    done: None,
                    keys: 0,
                };
                index::rows::save(raw, &info)?;
                Ok(info)
            })
            .await?;
        self.start_index_build(id);
        Ok(info)
    }

    /// Answers `query` from one snapshot of the store and its indexes.
    pub fn query(&self, query: &Query) -> Result<QueryAnswer> {
        let txn = self.inner.store.begin_read()?;
        let head = self.inner.store_bee.head_at(&txn)?;
        index::run(&txn, &head, query)
    }

    /// Builds one batch of index `id` ([`index::build_batch`]).
    async fn build_step(&self, id: u32) -> Result<Option<IndexInfo>> {
        self.write_job(move |this, txn| {
            Ok(index::build_batch(txn.raw(), &this.inner.store_bee, id)?)
        })
        .await
    }

    /// Resumes building the indexes a previous run left unbuilt.
    pub(crate) fn resume_index_builds(&self) -> Result<()> {
        for info in self.indexes()? {
            if info.state != IndexState::Ready {
                self.start_index_build(info.id);
            }
        }
        Ok(())
    }

    /// Builds index `id` in the background, a batch of keys per write transaction.
    fn start_index_build(&self, id: u32) {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let task = tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let mb = MultiBee { inner };
                let step = mb.build_step(id).await;
                match step {
                    Ok(Some(info)) if info.state != IndexState::Ready => {}
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, id, "building an index failed");
                        return;
                    }
                }
            }
        });
        self.push_task(task);
    }
}
