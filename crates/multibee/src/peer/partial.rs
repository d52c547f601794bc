//! Partial views on the peer: what it asks of each writer, what it answers for when asked,
//! and storing the sparse batches a filtered request brings ([`crate::view`]).

use multibee_feed::{FeedKey, SparseBatch, SparseIngested, VerifiedSparse};

use super::{MERGE_CHUNK, MultiBee};
use crate::error::{Error, Result};
use crate::tables::WriterState;
use crate::txn::{Decoded, decode_entry, writer_row};
use crate::view::{self, COVERAGE, View, Wants};

impl MultiBee {
    /// The partial view this peer keeps, or `None` if it holds every key.
    pub fn view(&self) -> Option<&View> {
        self.inner.view.as_ref()
    }

    /// What this peer fetches of `writer`'s diff feed: `None` for all of it (a full peer, or a
    /// feed that is not a writer's), or each prefix of its view with the entry it holds every
    /// entry under that prefix before (what a filtered request asks from).
    pub fn wanted(&self, writer: &FeedKey) -> Result<Option<Wants>> {
        let Some(view) = &self.inner.view else {
            return Ok(None);
        };
        if *writer == self.diff_key() || self.writer_state(writer)?.is_none() {
            return Ok(None);
        }
        let txn = self.read()?;
        let table = txn.open_table(COVERAGE)?;
        let mut out = view::rows(&table, &writer.0)?;
        // A writer added since the view was set has no rows yet: nothing is held of it.
        for p in view.prefixes() {
            if !out.iter().any(|(q, _)| q == p) {
                out.push((p.clone(), 0));
            }
        }
        Ok(Some(out))
    }

    /// The next answer to a filtered request for `writer`'s diff feed (this peer's own, or a
    /// replica): the entries under `wants` (`(prefix, from)`) from `cursor` on, at most
    /// `max_bytes` of them, proven over `base` (the asker's signed length), and the entry the
    /// answer covers the request up to. `None` once the cursor reached what this peer can
    /// answer for: its contiguous length, or for a partial peer whose view holds every prefix
    /// asked, its coverage. A peer never sends what it cannot prove.
    pub fn export_filtered(
        &self,
        writer: &FeedKey,
        wants: &[(Vec<u8>, u64)],
        cursor: u64,
        base: u64,
        max_bytes: usize,
    ) -> Result<Option<(SparseBatch, u64)>> {
        let feed = self
            .inner
            .store
            .feed(writer)
            .ok_or(Error::UnknownWriter(*writer))?;
        let prefixes: Vec<Vec<u8>> = wants.iter().map(|(p, _)| p.clone()).collect();
        let claimed = match &self.inner.view {
            None => feed.length(),
            Some(v) => {
                let txn = self.read()?;
                let table = txn.open_table(COVERAGE)?;
                view::claim(&table, v, &feed, &prefixes)?
            }
        };
        Ok(view::filtered_batch(
            &feed, wants, cursor, claimed, base, max_bytes,
        )?)
    }

    /// Verifies a sparse batch of `writer`'s diff feed (the answer to a filtered request for
    /// `prefixes`, said to cover them up to entry `covered`), stores it and merges what it
    /// makes ready, in one transaction. See [`MultiBee::ingest_sparse_verified`].
    pub async fn ingest_sparse(
        &self,
        batch: SparseBatch,
        prefixes: Vec<Vec<u8>>,
        covered: u64,
    ) -> Result<SparseIngested> {
        let feed = self
            .inner
            .store
            .feed(&batch.feed)
            .ok_or(Error::UnknownWriter(batch.feed))?;
        let verified = feed.verify_sparse(batch)?;
        let done = self
            .ingest_sparse_verified(verified, prefixes, covered)
            .await?;
        self.merge().await?;
        feed.check_not_forked()?;
        Ok(done)
    }

    /// Stores a verified sparse batch of a writer's diff feed, answering a filtered request for
    /// `prefixes` that covers them up to entry `covered` (capped at the batch's signed length),
    /// and raises this peer's coverage of the writer under them. Diffs below the writer's merge
    /// cursor (fetched after a widening) are merged at once; the rest with the merge round run
    /// in the same transaction. Only a peer with a partial view takes sparse batches.
    pub async fn ingest_sparse_verified(
        &self,
        verified: VerifiedSparse,
        prefixes: Vec<Vec<u8>>,
        covered: u64,
    ) -> Result<SparseIngested> {
        if self.inner.view.is_none() {
            return Err(Error::InvalidArgument(
                "a full peer takes contiguous batches, not sparse ones".into(),
            ));
        }
        let writer = verified.batch().feed;
        if matches!(
            self.writer_state(&writer)?,
            None | Some(WriterState::Forked)
        ) {
            return Err(Error::UnknownWriter(writer));
        }
        let covered = covered.min(verified.head().length);
        let (done, events, consumed) = self
            .write_job(move |this, txn| {
                let done = txn.ingest_sparse(&verified)?;
                let mut events = Vec::new();
                let ctx = this.ctx();
                // Not taken (a fork, or a head that does not join ours): nothing changes.
                let Some(view) = ctx.view.filter(|_| done.stored) else {
                    return Ok((done, events, 0));
                };
                let row = writer_row(txn.raw(), &writer.0)?;
                if let Some(row) = row.filter(|r| r.state != WriterState::Forked) {
                    let late: Vec<_> = verified
                        .batch()
                        .entries
                        .iter()
                        .filter(|(seq, _)| *seq < row.merged.min(row.limit))
                        .filter_map(|(seq, entry)| match decode_entry(entry) {
                            Ok(Decoded::Diff(record)) if view.contains(&record.key) => {
                                Some(crate::fold::Loaded {
                                    ts: record.ts.0,
                                    writer: writer.0,
                                    seq: *seq,
                                    record,
                                })
                            }
                            _ => None,
                        })
                        .collect();
                    ctx.fold_remote(txn, late, &mut events)?;
                    view::raise(txn.raw(), view, &writer.0, &prefixes, covered)?;
                }
                let consumed = ctx.merge_round(txn, MERGE_CHUNK, &mut events)?;
                Ok((done, events, consumed))
            })
            .await?;
        self.report(events);
        if consumed >= MERGE_CHUNK {
            self.inner.wake.notify_one();
        }
        Ok(done)
    }
}
