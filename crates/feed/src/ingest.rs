//! Storing a verified batch from a peer ([`WriteTxn::ingest`]): the checks against what the
//! store already holds, and the fork evidence kept when the writer signed two histories.

use std::collections::HashMap;

use crate::error::{Error, Result, VerifyError};
use crate::keys::{FeedKey, Hash};
use crate::nodes::{known_node, stored_node};
use crate::proof::{Batch, Verified, VerifiedBatch};
use crate::tables::{ENTRIES, FeedRecord, ForkEvidence, NODES};
use crate::tree;
use crate::txn::{WriteTxn, push_leaves};

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

impl WriteTxn<'_> {
    /// Stores a batch that [`crate::Feed::verify`] accepted, after the checks that need the
    /// feed's state: contiguity, and agreement with everything already held. A disagreement
    /// under a valid signature marks the feed forked (durably, in this transaction) and stores
    /// nothing else; the feed's status says so once the transaction commits.
    pub fn ingest(&mut self, verified: &VerifiedBatch) -> Result<Ingested> {
        let (batch, leaves, verified) = (&verified.batch, &verified.leaves, &verified.verified);
        let key = batch.feed;
        let record = self.replica_record(&key)?;
        // A sparse replica's nodes and head are not a contiguous replica's frontier: it takes
        // sparse batches only (a contiguous batch is one, with base 0: see `crate::sparse`).
        if self.holds_sparse(record.id)? {
            return Err(Error::InvalidArgument(format!(
                "feed {key} is held sparsely here: it takes sparse batches"
            )));
        }
        let (start, end) = (batch.start, batch.end());
        if start > record.length {
            return Err(Error::rejected(
                key,
                VerifyError::Gap {
                    length: record.length,
                    start,
                },
            ));
        }
        if let Some(detail) = self.disagreement(&record, batch, leaves, verified)? {
            return self.mark_forked(&key, &record, verified, detail);
        }
        if end <= record.length && !(end == record.length && upgrades(&record, verified)) {
            return Ok(Ingested {
                added: 0,
                length: record.length,
                signed_length: signed_length(&record),
            });
        }
        let skip = (record.length - start) as usize;
        let mut roots = record.roots.clone();
        self.dirty = true;
        if end > record.length {
            let mut table = self.txn.open_table(ENTRIES)?;
            push_leaves(
                &mut table,
                record.id,
                record.length,
                &mut roots,
                &batch.entries[skip..],
                &leaves[skip..],
            )?;
        }
        let state = self.state(&key)?;
        let added = end.saturating_sub(record.length);
        state.record.length = record.length + added;
        state.record.roots = roots;
        state.record.head = Some(verified.head.clone());
        state.record.frontier = verified.right.clone();
        Ok(Ingested {
            added,
            length: state.record.length,
            signed_length: verified.head.length,
        })
    }

    /// The record of a replica that may take entries from peers: not an own feed, not forked.
    pub(crate) fn replica_record(&mut self, key: &FeedKey) -> Result<FeedRecord> {
        let state = self.state(key)?;
        if state.secret.is_some() {
            return Err(Error::NotReplica(*key));
        }
        if state.record.fork.is_some() {
            return Err(Error::rejected(*key, VerifyError::Forked));
        }
        Ok(state.record.clone())
    }

    /// Where the verified batch contradicts what is stored, if anywhere.
    fn disagreement(
        &mut self,
        record: &FeedRecord,
        batch: &Batch,
        leaves: &[Hash],
        verified: &Verified,
    ) -> Result<Option<String>> {
        let Some(ours) = &record.head else {
            return Ok(None); // nothing held, nothing to contradict
        };
        if ours.length == verified.head.length && ours.roots != verified.head.roots {
            return Ok(Some(format!(
                "two different trees signed for length {}",
                ours.length
            )));
        }
        let start = batch.start;
        let our_left = if start == record.length {
            record.roots.clone()
        } else {
            let table = self.txn.open_table(ENTRIES)?;
            tree::roots(start)
                .map(|n| stored_node(&table, record, n))
                .collect::<Result<Vec<_>>>()?
        };
        if our_left != verified.left {
            return Ok(Some(format!("the first {start} entries differ")));
        }
        let overlap = record.length.min(batch.end());
        if start < overlap {
            let table = self.txn.open_table(ENTRIES)?;
            for i in start..overlap {
                let held = stored_node(&table, record, tree::leaf(i))?;
                if held != leaves[(i - start) as usize] {
                    return Ok(Some(format!("entry {i} differs")));
                }
            }
        }
        if !record.frontier.is_empty() {
            let known: HashMap<u64, Hash> = verified
                .computed
                .iter()
                .chain(&verified.right)
                .copied()
                .chain(
                    leaves
                        .iter()
                        .enumerate()
                        .map(|(i, h)| (tree::leaf(start + i as u64), *h)),
                )
                .collect();
            for (n, hash) in &record.frontier {
                if known.get(n).is_some_and(|theirs| theirs != hash) {
                    return Ok(Some(format!("tree node {n} differs")));
                }
            }
        }
        // A shorter signed tree must be a prefix of ours wherever what we hold determines it.
        if verified.head.length < ours.length {
            let table = self.txn.open_table(ENTRIES)?;
            let held = self.txn.open_table(NODES)?;
            for (n, theirs) in tree::roots(verified.head.length).zip(&verified.head.roots) {
                if known_node(&table, &held, record, n)?.is_some_and(|mine| mine != *theirs) {
                    return Ok(Some(format!(
                        "the tree signed at {} is not a prefix of the one at {}",
                        verified.head.length, ours.length
                    )));
                }
            }
        }
        Ok(None)
    }

    pub(crate) fn mark_forked(
        &mut self,
        key: &FeedKey,
        record: &FeedRecord,
        verified: &Verified,
        detail: String,
    ) -> Result<Ingested> {
        let Some(ours) = record.head.clone() else {
            return Err(Error::Corrupt(
                "fork detected on a feed without a head".into(),
            ));
        };
        tracing::warn!(feed = %key, %detail, "writer equivocated; feed frozen");
        self.dirty = true;
        let state = self.state(key)?;
        state.record.fork = Some(ForkEvidence {
            ours,
            theirs: verified.head.clone(),
            detail,
        });
        Ok(Ingested {
            added: 0,
            length: record.length,
            signed_length: signed_length(record),
        })
    }
}

/// Whether a batch that brings no new entries carries a longer signed head worth keeping.
fn upgrades(record: &FeedRecord, verified: &Verified) -> bool {
    record
        .head
        .as_ref()
        .is_none_or(|h| verified.head.length > h.length)
}

fn signed_length(record: &FeedRecord) -> u64 {
    record.head.as_ref().map_or(0, |h| h.length)
}
