//! The errors of this crate: one umbrella [`Error`], and [`VerifyError`] for what a peer sent.

use std::path::PathBuf;
use std::sync::Arc;

use crate::keys::FeedKey;

/// A result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a feed store.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another process (or another `Store` in this process) has the folder open.
    #[error("the folder {} is in use by another process", .0.display())]
    Locked(PathBuf),
    /// The database file or one of its records is not what this version wrote.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The storage engine failed (I/O error, disk full, ...). Nothing was committed.
    #[error("storage error: {0}")]
    Storage(#[from] StorageError),
    /// A file-system operation on the folder failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// No feed with this key is in the store.
    #[error("unknown feed {0}")]
    UnknownFeed(FeedKey),
    /// The feed is a replica: only its writer can append to it.
    #[error("feed {0} is not writable here (it is a replica)")]
    NotWritable(FeedKey),
    /// The feed is writable here: it cannot ingest entries from others.
    #[error("feed {0} is our own: it does not ingest entries from peers")]
    NotReplica(FeedKey),
    /// An argument was out of range (an entry too large, a range past the end, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Entries or a proof from a peer failed verification; nothing was stored.
    #[error("rejected data for feed {feed}: {reason}")]
    Rejected {
        /// The feed the data was for.
        feed: FeedKey,
        /// Why it was rejected.
        reason: VerifyError,
    },
    /// The store was closed while the operation was in flight.
    #[error("the store is closed")]
    Closed,
}

/// Why entries or a proof received from a peer were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The signature does not verify against the writer's key for the claimed tree.
    #[error("bad signature")]
    BadSignature,
    /// The proof is malformed or its hashes do not lead to the signed roots.
    #[error("bad proof: {0}")]
    BadProof(&'static str),
    /// The batch is for another feed.
    #[error("entries of feed {got} sent for feed {expected}")]
    WrongFeed {
        /// The feed the receiver asked for.
        expected: FeedKey,
        /// The feed named in the batch.
        got: FeedKey,
    },
    /// The batch starts after the entries the receiver holds.
    #[error("gap: the batch starts at {start} but {length} entries are held")]
    Gap {
        /// The receiver's length.
        length: u64,
        /// Where the batch starts.
        start: u64,
    },
    /// The batch, an entry or a claimed length is over a limit.
    #[error("too large: {0}")]
    TooLarge(String),
    /// The writer signed two different trees: the feed is frozen and ingests nothing more.
    #[error("the writer equivocated (signed two different trees); the feed is forked")]
    Forked,
}

/// A failure of the storage engine, kept opaque so that the engine is not part of the API.
#[derive(Debug, Clone)]
pub struct StorageError(Arc<redb::Error>);

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// A string that is not the hex form of a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a {what}: expected {expected_hex_chars} hex characters")]
pub struct ParseKeyError {
    pub(crate) what: &'static str,
    pub(crate) expected_hex_chars: usize,
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Storage(StorageError(Arc::new(e.into())))
            }
        }
    )*};
}

from_redb!(
    redb::Error,
    redb::StorageError,
    redb::TransactionError,
    redb::TableError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn rejected(feed: FeedKey, reason: VerifyError) -> Self {
        Error::Rejected { feed, reason }
    }
}
