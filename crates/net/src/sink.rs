//! Where a node puts the verified batches it fetches: the [`Sink`].

use std::fmt;

use futures::future::BoxFuture;
use multibee_feed::{Ingested, SparseIngested, Store, VerifiedBatch, VerifiedSparse};

/// Stores the batches a node fetches from its peers, each already verified against its
/// feed's key. The default ([`StoreSink`]) ingests each into the feed store in a write job of
/// its own; a layer above the network can install one ([`crate::Config::sink`]) that also
/// derives what it keeps from the new entries in that same transaction, so that a remote batch
/// costs one commit. The network knows nothing of what the entries mean either way.
pub trait Sink: Send + Sync + fmt::Debug + 'static {
    /// Stores `batch` durably; answers what was stored. The feed's status (its new length,
    /// whether it forked) is published once the transaction commits, as for any write.
    fn ingest(&self, batch: VerifiedBatch) -> BoxFuture<'static, multibee_feed::Result<Ingested>>;

    /// Stores a verified sparse batch answering a filtered request for `prefixes`, which the
    /// serving peer says covers them up to entry `covered` (see [`crate::Filter`]).
    fn ingest_sparse(
        &self,
        batch: VerifiedSparse,
        prefixes: Vec<Vec<u8>>,
        covered: u64,
    ) -> BoxFuture<'static, multibee_feed::Result<SparseIngested>>;
}

/// The default [`Sink`]: each batch in a write job of its own on the feed store.
#[derive(Clone, Debug)]
pub struct StoreSink(pub Store);

impl Sink for StoreSink {
    fn ingest(&self, batch: VerifiedBatch) -> BoxFuture<'static, multibee_feed::Result<Ingested>> {
        let store = self.0.clone();
        Box::pin(async move { store.write(move |txn| txn.ingest(&batch)).await })
    }

    fn ingest_sparse(
        &self,
        batch: VerifiedSparse,
        _prefixes: Vec<Vec<u8>>,
        _covered: u64,
    ) -> BoxFuture<'static, multibee_feed::Result<SparseIngested>> {
        let store = self.0.clone();
        Box::pin(async move { store.write(move |txn| txn.ingest_sparse(&batch)).await })
    }
}
