//! The errors of the bee crate.

/// A result with the bee's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a bee.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The feed or storage layer failed.
    #[error(transparent)]
    Feed(#[from] multibee_feed::Error),
    /// A feed entry is not a bee operation. It is skipped by the index, the same way on every
    /// peer; history reports it with this error.
    #[error("entry {seq} is not a bee operation: {reason}")]
    InvalidEntry {
        /// The entry's sequence number.
        seq: u64,
        /// Why it does not decode.
        reason: String,
    },
    /// A compare-and-swap found something other than what the caller expected.
    #[error("compare-and-swap failed on key {key:?}")]
    CasFailed {
        /// The user key.
        key: Vec<u8>,
    },
    /// Writes go only through the head of a writable bee, not a checkout or a replica.
    #[error("this bee is read-only ({0})")]
    ReadOnly(&'static str),
    /// A version past the bee's current version was asked for.
    #[error("version {asked} is ahead of the bee's version {version}")]
    FutureVersion {
        /// The version asked for.
        asked: u64,
        /// The bee's version.
        version: u64,
    },
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Feed(multibee_feed::Error::from(redb::Error::from(e)))
            }
        }
    )*};
}

from_redb!(redb::StorageError, redb::TableError);
