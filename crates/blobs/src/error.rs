//! The errors of this crate: one umbrella [`Error`], [`VerifyError`] for what a peer sent and
//! [`ParseIdError`] for a malformed id string.

use std::path::PathBuf;
use std::sync::Arc;

use crate::id::BlobId;

/// A result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a blob store.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another process (or another `Blobs` in this process) has the folder open.
    #[error("the blob folder {} is in use by another process", .0.display())]
    Locked(PathBuf),
    /// The metadata database or one of its rows is not what this version wrote, or a stored
    /// file does not match its metadata.
    #[error("corrupt blob store: {0}")]
    Corrupt(String),
    /// The metadata database failed (I/O error, disk full, ...). Nothing was committed.
    #[error("storage error: {0}")]
    Storage(#[from] StorageError),
    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// No blob with this id is in the store (neither complete nor partial).
    #[error("blob {0} not found")]
    NotFound(BlobId),
    /// The blob is only partially held (a download in progress): its bytes cannot be read yet.
    #[error("blob {0} is not complete (only part of it is held)")]
    Incomplete(BlobId),
    /// A byte range reaches beyond the end of the blob.
    #[error("range {start}..{end} is beyond the end of blob {id} ({size} bytes)")]
    OutOfRange {
        /// The blob.
        id: BlobId,
        /// The first byte asked for.
        start: u64,
        /// One past the last byte asked for.
        end: u64,
        /// The blob's size.
        size: u64,
    },
    /// Ranges were asked for export that this store does not hold (yet).
    #[error("blob {0} does not hold every chunk group of the requested ranges")]
    NotHeld(BlobId),
    /// An argument was malformed (an inverted range, a size over the limit, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Encoded ranges received for a blob failed verification; nothing of them was stored.
    #[error("rejected data for blob {id}: {reason}")]
    Rejected {
        /// The blob the data was for.
        id: BlobId,
        /// Why it was rejected.
        reason: VerifyError,
    },
}

/// Why encoded ranges received for a blob were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A chunk group or a proof hash does not lead to the blob's id.
    #[error("hash mismatch: {0}")]
    HashMismatch(String),
    /// The encoding ends before every requested chunk group and proof was read.
    #[error("truncated: {0}")]
    Truncated(String),
    /// Bytes follow the end of the encoding of the requested ranges.
    #[error("{0} unexpected bytes after the encoded ranges")]
    TrailingBytes(u64),
    /// The claimed size differs from the size recorded for the blob here.
    #[error("claimed size {claimed} differs from the size {recorded} recorded for this blob")]
    SizeMismatch {
        /// The size this store recorded (from an earlier import or add).
        recorded: u64,
        /// The size claimed with this import.
        claimed: u64,
    },
}

/// A string that is not the canonical form of a [`BlobId`]: 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseIdError {
    /// The string does not have 64 characters.
    #[error("not a blob id: expected 64 lowercase hex characters, got {0} characters")]
    WrongLength(usize),
    /// A character is not a hex digit.
    #[error("not a blob id: character {index} is not a hex digit")]
    NotHex {
        /// The byte offset of the offending character.
        index: usize,
    },
    /// A character is an uppercase hex digit: ids have one spelling, lowercase.
    #[error("not a blob id: character {index} is uppercase (ids are lowercase hex)")]
    Uppercase {
        /// The byte offset of the offending character.
        index: usize,
    },
}

/// A failure of the metadata database, kept opaque so that redb is not part of the API.
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
    redb::CommitError
);

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn rejected(id: BlobId, reason: VerifyError) -> Self {
        Error::Rejected { id, reason }
    }
}
