//! A handle to one feed ([`Feed`]): its status, its reads and proofs, and its appends and
//! ingests through the store's writer.

use std::ops::Range;
use std::sync::Arc;

use redb::ReadableTable;
use tokio::sync::watch;

use crate::crypto;
use crate::error::{Error, Result, VerifyError};
use crate::ingest::Ingested;
use crate::keys::{DiscoveryKey, FeedKey, Hash};
use crate::nodes;
use crate::proof::{self, Batch, Proof, SignedHead};
use crate::registry::{FeedShared, FeedStatus};
use crate::store::Store;
use crate::tables::{self, ENTRIES, FeedRecord, ForkEvidence, NODES};

/// A handle to one feed of a [`Store`]: read it, append to it (if own), prove ranges of it,
/// ingest verified ranges into it (if a replica) and follow its length.
#[derive(Clone)]
pub struct Feed {
    pub(crate) store: Store,
    pub(crate) shared: Arc<FeedShared>,
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
        let held = txn.open_table(NODES)?;
        let nodes = proof::proof_nodes(range.start, range.end, head.length)
            .into_iter()
            .map(|n| node_hash(&table, &held, &record, n))
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
    ///
    /// [`WriteTxn::ingest`]: crate::WriteTxn::ingest
    pub fn verify(&self, batch: Batch) -> Result<proof::VerifiedBatch> {
        let key = self.shared.key;
        let reject = |reason| Error::rejected(key, reason);
        if batch.feed != key {
            return Err(reject(VerifyError::WrongFeed {
                expected: key,
                got: batch.feed,
            }));
        }
        let limits = self.store.limits();
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
pub(crate) fn node_hash(
    table: &impl ReadableTable<(u64, u64), &'static [u8]>,
    held: &impl ReadableTable<(u64, u64), [u8; 32]>,
    record: &FeedRecord,
    n: u64,
) -> Result<Hash> {
    nodes::known_node(table, held, record, n)?
        .ok_or_else(|| Error::Corrupt(format!("tree node {n} is not held")))
}
