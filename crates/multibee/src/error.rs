//! The errors of the multibee crate.

use multibee_feed::FeedKey;

/// A result with multibee's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a multibee peer.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The feed or storage layer failed (including a verification failure on ingest).
    #[error(transparent)]
    Feed(#[from] multibee_feed::Error),
    /// The bee layer failed.
    #[error(transparent)]
    Bee(multibee_bee::Error),
    /// The feed is not the diff feed of a writer this peer counts.
    #[error("{0} is not a writer of this peer (add it with add_writer)")]
    UnknownWriter(FeedKey),
    /// The writer was caught signing two histories and is frozen.
    #[error("writer {0} is frozen: it signed two different histories")]
    ForkedWriter(FeedKey),
    /// A wrong argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No index with this id is declared.
    #[error("no index {0}")]
    UnknownIndex(u32),
    /// A write of a key outside this peer's partial view ([`crate::Options::only`]).
    #[error("the key {0:?} is outside this peer's partial view")]
    OutsideView(String),
    /// This peer is not a member of its database (yet): it cannot change the membership.
    #[error("{0} is not a member of this database: a member must add it first")]
    NotAMember(FeedKey),
    /// This peer was removed from its database: its writes would not count anywhere.
    #[error("this peer was removed from the database{}", by.map(|b| format!(" by {b}")).unwrap_or_default())]
    Removed {
        /// The writer whose operation removed it, if one did.
        by: Option<FeedKey>,
    },
    /// An invitation's secret that this peer did not make, that was used already, or that
    /// is older than [`crate::INVITE_TTL_MS`].
    #[error("unknown, already used or expired invitation")]
    InvalidInvite,
    /// A value nests deeper than [`crate::MAX_DEPTH`].
    #[error("the value nests {depth} levels deep; at most {max} are allowed")]
    TooDeep {
        /// How deep the value nests.
        depth: usize,
        /// The limit.
        max: usize,
    },
    /// No fresh timestamp is left for a write of this key (the clock, or the key's newest
    /// diff, is at the largest timestamp): the write is refused rather than reusing one.
    #[error("no timestamp is left after {after} for a write of this key")]
    ClockExhausted {
        /// The newest timestamp in the way.
        after: crate::Hlc,
    },
    /// A conditional write ([`crate::MultiBee::batch_if`]) found a key not as it expected:
    /// nothing of the batch was written.
    #[error("{:?} is not {expected}: it is {}", String::from_utf8_lossy(key), found.map_or("absent".to_string(), |r| format!("at revision {r}")))]
    PreconditionFailed {
        /// The key.
        key: Vec<u8>,
        /// What the write expected.
        expected: crate::Precondition,
        /// The key's revision when the write was tried (`None`: absent).
        found: Option<u64>,
    },
    /// A query would use an index that is still being built: it answers once built (see
    /// [`crate::MultiBee::indexes`] for its progress).
    #[error("{index} is still being built ({keys_done} keys indexed so far)")]
    IndexBuilding {
        /// The index.
        index: String,
        /// Keys indexed so far.
        keys_done: u64,
    },
    /// No index covers any condition of a query that does not allow a scan.
    #[error("no index covers {0}: add one, or allow a scan")]
    NoIndex(String),
    /// Stored data that does not decode.
    #[error("corrupt store: {0}")]
    Corrupt(String),
}

impl From<multibee_bee::Error> for Error {
    fn from(e: multibee_bee::Error) -> Self {
        match e {
            multibee_bee::Error::Feed(e) => Error::Feed(e),
            other => Error::Bee(other),
        }
    }
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
