//! The errors of this crate: [`Error`] for callers, [`Violation`] for what a peer did wrong,
//! [`DialError`] for why a connection could not be made.

use libp2p::{Multiaddr, PeerId};
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

/// Why a connection to an address could not be made (see [`crate::NodeHandle::connect`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// Nothing listens at the address: the host answered that the port is closed.
    #[error("connection refused")]
    Refused,
    /// No answer, or no complete handshake, in time.
    #[error("timed out")]
    TimedOut,
    /// The address names a peer id (`/p2p/...`), and another peer answered there.
    #[error("wrong peer: the address names {expected}, but {found} answered")]
    WrongPeerId {
        /// The peer id the address names.
        expected: PeerId,
        /// The peer that answered.
        found: PeerId,
    },
    /// The address cannot be reached: no transport for it, no route to its network or host, or
    /// no address known for the peer.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The peer is blocked by this node (it broke the protocol).
    #[error("the peer is blocked (it broke the protocol)")]
    Blocked,
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
    /// Anything else (a handshake that failed, a connection limit), as text.
    #[error("{0}")]
    Other(String),
}

impl DialError {
    /// Classifies libp2p's dial error; `expected` is the peer id the dial named, if any.
    pub(crate) fn classify(error: &libp2p::swarm::DialError, expected: Option<PeerId>) -> Self {
        use libp2p::swarm::DialError as E;
        match error {
            E::WrongPeerId { obtained, .. } => match expected {
                Some(expected) => DialError::WrongPeerId {
                    expected,
                    found: *obtained,
                },
                None => DialError::Other(format!("unexpected peer {obtained} answered")),
            },
            E::Denied { cause } => {
                if cause
                    .downcast_ref::<libp2p::allow_block_list::Blocked>()
                    .is_some()
                {
                    DialError::Blocked
                } else {
                    DialError::Other(format!("refused by this node: {cause}"))
                }
            }
            E::NoAddresses => DialError::Unreachable("no address known for the peer".into()),
            E::LocalPeerId { address } => {
                DialError::Other(format!("{address} is this node's own address"))
            }
            E::Transport(errors) => Self::from_transport(errors),
            other => DialError::Other(other.to_string()),
        }
    }

    /// The most telling of the errors of each address tried.
    fn from_transport(errors: &[(Multiaddr, libp2p::TransportError<std::io::Error>)]) -> Self {
        let mut found: Vec<DialError> = errors
            .iter()
            .map(|(addr, error)| match error {
                libp2p::TransportError::MultiaddrNotSupported(_) => {
                    DialError::Unreachable(format!("no transport for {addr}"))
                }
                libp2p::TransportError::Other(e) => Self::from_io(e),
            })
            .collect();
        found.sort_by_key(DialError::rank);
        found
            .into_iter()
            .next()
            .unwrap_or_else(|| DialError::Unreachable("no address to dial".into()))
    }

    /// Looks through the chain of errors behind `error` for an IO error kind that says why.
    fn from_io(error: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
        let mut deepest = error.to_string();
        while let Some(err) = next {
            deepest = err.to_string();
            if deepest == TRANSPORT_TIMEOUT {
                return DialError::TimedOut;
            }
            let io = err.downcast_ref::<std::io::Error>();
            match io
                .map(std::io::Error::kind)
                .or_else(|| os_error_kind(&deepest))
            {
                Some(K::ConnectionRefused) => return DialError::Refused,
                Some(K::TimedOut) => return DialError::TimedOut,
                Some(K::NetworkUnreachable | K::HostUnreachable | K::AddrNotAvailable) => {
                    return DialError::Unreachable(deepest);
                }
                _ => {}
            }
            // `io::Error::source` skips the error it wraps: step into it by hand.
            next = match io.and_then(std::io::Error::get_ref) {
                Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                None => err.source(),
            };
        }
        DialError::Other(deepest)
    }

    /// Which of several addresses' errors to report: the most specific first.
    fn rank(&self) -> u8 {
        match self {
            DialError::Refused | DialError::WrongPeerId { .. } => 0,
            DialError::TimedOut => 1,
            DialError::Other(_) | DialError::Blocked | DialError::Stopped => 2,
            DialError::Unreachable(_) => 3,
        }
    }
}

/// What libp2p's connection timeout (`TransportTimeoutError::Timeout`, generic over a
/// transport error type that is not nameable here) says.
const TRANSPORT_TIMEOUT: &str = "Timeout has been reached";

/// The kind of the OS error a message ends with (`... (os error 111)`): libp2p wraps transport
/// errors in `Either`s, whose `source` skips the IO error they hold, so only its text is left.
fn os_error_kind(message: &str) -> Option<std::io::ErrorKind> {
    let code = message.strip_suffix(')')?.rsplit_once("(os error ")?.1;
    Some(std::io::Error::from_raw_os_error(code.parse().ok()?).kind())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_are_read_from_the_end_of_a_message() {
        // 111 is ECONNREFUSED on Linux.
        if cfg!(target_os = "linux") {
            let os = std::io::Error::from_raw_os_error(111);
            let message = format!("{os}");
            assert_eq!(
                os_error_kind(&message),
                Some(std::io::ErrorKind::ConnectionRefused)
            );
        }
        assert_eq!(os_error_kind("no code here"), None);
        assert_eq!(os_error_kind("bad (os error x)"), None);
    }
}

/// Why a [`crate::NodeHandle::fetch_blob`] did not complete the blob.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The node has no blob store ([`crate::Config::blobs`]).
    #[error("the node has no blob store")]
    NoStore,
    /// The peers given refused, failed or were rejected before every byte was held: what
    /// arrived and verified is kept, and a later fetch resumes from it.
    #[error("no peer could serve the rest of blob {id} ({missing} bytes missing)")]
    Incomplete {
        /// The blob.
        id: multibee_blobs::BlobId,
        /// Bytes still missing (the whole blob if its size is not known yet: then 0).
        missing: u64,
    },
    /// The local blob store failed (before the fetch, or while storing what peers sent, in
    /// which case what verified before is kept).
    #[error("blob store error: {0}")]
    Store(#[from] multibee_blobs::Error),
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
}
