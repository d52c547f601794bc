//! The errors of this crate: [`Error`] for callers, [`Violation`] for what a peer did wrong.

use multibee_feed::{DiscoveryKey, VerifyError};

/// A frame that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix is over the limit.
    #[error("frame of {length} bytes is over the limit of {limit}")]
    TooLarge {
        /// The announced length.
        length: u64,
        /// The receiver's limit.
        limit: usize,
    },
    /// The frame names a wire version this implementation does not speak.
    #[error("unknown wire version {0}")]
    UnknownVersion(u8),
    /// The body does not decode as a message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The body holds bytes after the message.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}

/// What a peer did wrong: reason enough to disconnect it. Nothing it sent in the offending
/// message is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// A frame that could not be read.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A message that is not allowed at this point of the protocol.
    #[error("unexpected {message} message: {detail}")]
    Unexpected {
        /// The message's name.
        message: &'static str,
        /// What was expected instead.
        detail: &'static str,
    },
    /// Entries of a feed that was not requested on this stream.
    #[error("entries of feed {got} that was not requested (asked for {asked})")]
    UnrequestedFeed {
        /// The discovery key asked for.
        asked: DiscoveryKey,
        /// The discovery key sent.
        got: DiscoveryKey,
    },
    /// Entries that do not continue where the previous ones ended.
    #[error("entries start at {got}, expected {expected}")]
    OutOfOrder {
        /// The next index expected.
        expected: u64,
        /// The index sent.
        got: u64,
    },
    /// A data message without entries.
    #[error("empty data message")]
    EmptyData,
    /// Entries that fail verification against the writer's signature (bad signature, bad
    /// proof, over a limit, or proof that the writer equivocated). A node does not reject a
    /// peer for the last ([`VerifyError::Forked`]): the peer may only have forwarded what the
    /// writer signed; the feed is frozen and no longer fetched instead.
    #[error("invalid entries: {0}")]
    Invalid(VerifyError),
    /// A frame that had begun stopped moving, or a request on a new stream did not come,
    /// within [`crate::Config::frame_timeout`] (a slowloris, or a reader that stopped reading).
    #[error("too slow: no progress for {0:?}")]
    TooSlow(std::time::Duration),
    /// An announcement of more feeds than allowed.
    #[error("announcement of {0} feeds is over the limit")]
    AnnounceTooLarge(usize),
}

/// Receiving a message failed: either the peer broke the protocol, or something local failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiveError {
    /// The peer broke the protocol.
    #[error("protocol violation: {0}")]
    Peer(#[from] Violation),
    /// The local store failed; the peer is not to blame.
    #[error("local store error: {0}")]
    Local(multibee_feed::Error),
}

/// Everything that can go wrong in a node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The node's event loop has stopped.
    #[error("the node has stopped")]
    Stopped,
    /// A multiaddr could not be listened on or dialed.
    #[error("{context}: {detail}")]
    Transport {
        /// What was being done.
        context: String,
        /// The underlying error, as text (libp2p's errors are not part of this API).
        detail: String,
    },
    /// The local feed store failed.
    #[error("store error: {0}")]
    Store(#[from] multibee_feed::Error),
}

impl Error {
    pub(crate) fn transport(context: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Error::Transport {
            context: context.into(),
            detail: detail.to_string(),
        }
    }
}
