//! The whole redb schema of a feed store, in one place. Every table name carries a version.
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `meta-1` | `&str` | format version (`"format"` → u32 LE), next feed id (`"next-feed-id"` → u64 LE) |
//! | `feeds-1` | feed key `[u8; 32]` | [`FeedRecord`], postcard, inside the versioned [`StoredFeed`] |
//! | `secrets-1` | feed key `[u8; 32]` | the ed25519 secret key of an own feed |
//! | `entries-1` | `(feed id, index)` | the hashes of the parent nodes completed by this leaf (depth 1 first, `32 * trailing_ones(index)` bytes) followed by the entry |
//! | `nodes-1` | `(feed id, node index)` | the hash of a tree node a sparse proof established (see [`crate::sparse`]) |
//!
//! The entries table holds, with each leaf, the tree nodes whose last leaf it is, so an append
//! writes one row per entry and any node within the stored length is one row read away (leaf
//! hashes are recomputed from the entry). Nodes of a replica beyond its length (the frontier of
//! its newest signed head) live in its [`FeedRecord`].
//!
//! A sparse replica ([`crate::sparse`]) also holds entries past its contiguous length: their
//! rows have the same layout, with the parent-node hashes zeroed (nothing reads them: a node
//! is read from a row only within the contiguous length, and a contiguous ingest rewrites the
//! row). The tree nodes that prove them are rows of `nodes-1`.

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::keys::{FeedKey, Hash};
use crate::proof::SignedHead;
use crate::tree;

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta-1");
pub(crate) const FEEDS: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("feeds-1");
pub(crate) const SECRETS: TableDefinition<[u8; 32], [u8; 32]> = TableDefinition::new("secrets-1");
pub(crate) const ENTRIES: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("entries-1");
pub(crate) const NODES: TableDefinition<(u64, u64), [u8; 32]> = TableDefinition::new("nodes-1");

pub(crate) const FORMAT_KEY: &str = "format";
pub(crate) const FORMAT_VERSION: u32 = 1;
pub(crate) const NEXT_FEED_ID_KEY: &str = "next-feed-id";

/// What the store knows of one feed, besides its entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FeedRecord {
    /// The local id used in the entries table.
    pub id: u64,
    /// Whether the secret key is held here.
    pub writable: bool,
    /// How many contiguous entries are stored.
    pub length: u64,
    /// The roots of the tree at `length`.
    pub roots: Vec<Hash>,
    /// The newest signed head this store can prove its entries against.
    pub head: Option<SignedHead>,
    /// The hashes covering `[length, head.length)`, with their node indices.
    pub frontier: Vec<(u64, Hash)>,
    /// Set once the writer was caught signing two different trees.
    pub fork: Option<ForkEvidence>,
}

/// Proof that a writer signed two different histories: both signed statements.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkEvidence {
    /// The signed head this store held.
    pub ours: SignedHead,
    /// The conflicting signed head a peer sent.
    pub theirs: SignedHead,
    /// Where the two disagree.
    pub detail: String,
}

/// The versioned envelope of a [`FeedRecord`] on disk.
#[derive(Deserialize)]
enum StoredFeed {
    V1(FeedRecord),
}

/// The same envelope, borrowed for writing (serde encodes both identically).
#[derive(Serialize)]
enum StoredFeedRef<'a> {
    V1(&'a FeedRecord),
}

impl FeedRecord {
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        postcard::to_stdvec(&StoredFeedRef::V1(self))
            .map_err(|e| Error::Corrupt(format!("feed record does not encode: {e}")))
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        match postcard::from_bytes(bytes) {
            Ok(StoredFeed::V1(record)) => Ok(record),
            Err(e) => Err(Error::Corrupt(format!("feed record does not decode: {e}"))),
        }
    }
}

/// Splits an entries row into the node hashes it carries and the entry itself.
pub(crate) fn split_row(index: u64, row: &[u8]) -> Result<(&[u8], &[u8])> {
    let hashes = 32 * crate::tree::completed_parents(index) as usize;
    if row.len() < hashes {
        return Err(Error::Corrupt(format!("entry row {index} is too short")));
    }
    Ok(row.split_at(hashes))
}

/// The invariants a record read from disk must meet before it is used.
pub(crate) fn check_record(key: &FeedKey, record: &FeedRecord) -> Result<()> {
    if record.length > tree::MAX_LENGTH || record.roots.len() != record.length.count_ones() as usize
    {
        return Err(Error::Corrupt(format!(
            "the record of feed {key} has inconsistent roots"
        )));
    }
    Ok(())
}
