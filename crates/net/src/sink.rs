//! Where a node puts the verified batches it fetches: the [`Sink`].

use std::fmt;

use futures::future::BoxFuture;
use multibee_feed::{Ingested, Store, VerifiedBatch};

/// Stores the batches a node fetches from its peers, each already verified against its
/// feed's key. The default ([`StoreSink`]) ingests each into the feed store in a write job of
/// its own; a layer above the network can install one ([`crate::Config::sink`]) that also
/// derives what it keeps from the new entries in that same transaction, so that a remote batch
/// costs one commit. The network knows nothing of what the entries mean either way.
pub trait Sink: Send + Sync + fmt::Debug + 'static {
    /// Stores `batch` durably; answers what was stored. The feed's status (its new length,
    /// whether it forked) is published once the transaction commits, as for any write.
    fn ingest(&self, batch: VerifiedBatch) -> BoxFuture<'static, multibee_feed::Result<Ingested>>;
}

/// The default [`Sink`]: each batch in a write job of its own on the feed store.
#[derive(Clone, Debug)]
pub struct StoreSink(pub Store);

impl Sink for StoreSink {
    fn ingest(&self, batch: VerifiedBatch) -> BoxFuture<'static, multibee_feed::Result<Ingested>> {
        let store = self.0.clone();
        Box::pin(async move { store.write(move |txn| txn.ingest(&batch)).await })
    }
}
