//! A signed, verifiable, append-only log on redb: the foundation of multibee.
//!
//! A [`Store`] is a folder holding any number of feeds in one redb database. A [`Feed`] is a
//! log of byte entries identified by an ed25519 public key ([`FeedKey`]); only the holder of
//! the secret key appends. Entries are the leaves of a blake3 merkle tree (flat-tree layout),
//! and every append batch is covered by one signature over the tree's roots, so any range can be
//! proven to a reader that knows only the public key ([`Feed::proof`], [`proof::verify`]) and
//! ingested into a replica elsewhere ([`Feed::ingest`]), directly from the writer or through any
//! relay. A writer caught signing two different histories is recorded as forked, with both
//! signed statements kept as evidence.
//!
//! Concurrent appends are group-committed: one fsync serves every append waiting at that
//! moment. Layers above (bee, multibee) write their own tables in the same transaction through
//! [`Store::write`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), multibee_feed::Error> {
//! use multibee_feed::Store;
//!
//! let writer_dir = tempfile::tempdir().unwrap();
//! let reader_dir = tempfile::tempdir().unwrap();
//! let writer = Store::open(writer_dir.path())?;
//! let feed = writer.create_feed().await?;
//! feed.append_batch(vec![b"hello".to_vec(), b"world".to_vec()]).await?;
//!
//! // A reader that knows only the public key verifies and stores a proven range.
//! let reader = Store::open(reader_dir.path())?;
//! let replica = reader.replica(feed.key()).await?;
//! replica.ingest(feed.proof(0..2)?).await?;
//! assert_eq!(replica.get(1)?, Some(b"world".to_vec()));
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod crypto;
mod entries;
mod error;
pub mod faults;
mod feed;
mod ingest;
mod keys;
mod nodes;
mod open;
mod options;
pub mod proof;
mod registry;
pub mod sparse;
mod store;
mod tables;
pub mod tree;
mod txn;
mod writer;

/// The decoders of stored records, exposed to the fuzz targets only (`cargo fuzz` builds with
/// `--cfg fuzzing`): a damaged database file is untrusted input too.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    /// Runs every decoder of this crate's stored rows on `bytes`; none may panic.
    pub fn decode_stored(bytes: &[u8]) {
        if let Ok(record) = crate::tables::FeedRecord::decode(bytes) {
            let again = record.encode().expect("a decoded record encodes");
            crate::tables::FeedRecord::decode(&again).expect("and decodes again");
        }
        if let Some((index, row)) = bytes.split_first_chunk::<8>() {
            let _ = crate::tables::split_row(u64::from_le_bytes(*index), row);
        }
        let _ = crate::txn::decode_u64(bytes);
    }
}

pub use entries::{EntryReader, LocalId, SnapshotEntries};
pub use error::{Error, ParseKeyError, Result, StorageError, VerifyError};
pub use feed::Feed;
pub use ingest::Ingested;
pub use keys::{DiscoveryKey, FeedKey, Hash, Signature};
pub use open::{DB_FILE, LOCK_FILE};
pub use options::{Backend, DEFAULT_CACHE_BYTES, Limits, Options, SyncMode};
pub use proof::{Batch, Proof, SignedHead, VerifiedBatch};
pub use registry::FeedStatus;
pub use sparse::{SparseBatch, SparseIngested, SparseProof, VerifiedSparse};
pub use store::Store;
pub use tables::ForkEvidence;
pub use txn::WriteTxn;
