//! The wire format: versioned messages in length-prefixed frames.
//!
//! A frame is a 4-byte big-endian length `n`, then `n` bytes: one version byte
//! ([`WIRE_VERSION`]) and a [`Message`] encoded with postcard. A frame longer than the receiver's
//! limit is refused from its length prefix alone, before any of it is buffered. A body that does
//! not decode, has bytes after the message, or names another version is malformed: every one of
//! these is a protocol violation by the sender.
//!
//! The public key of a feed never appears here: requests and data name the feed by its
//! discovery key, and the requester proves it knows the key with a [`Capability`].

use multibee_feed::{DiscoveryKey, Proof, SparseProof};
use serde::{Deserialize, Serialize};

use crate::error::FrameError;

/// The replication protocol: one stream per (peer, feed) subscription.
pub const REPLICATE_PROTOCOL: &str = "/multibee/replicate/1";
/// The announce protocol: one short stream per announcement of held feeds.
pub const ANNOUNCE_PROTOCOL: &str = "/multibee/announce/1";
/// The version byte every frame of this implementation carries.
pub const WIRE_VERSION: u8 = 1;
/// Bytes of the length prefix.
pub const PREFIX_BYTES: usize = 4;
/// The default limit on a frame's length (after the prefix): one 8 MiB entry (the feed's
/// largest) with its proof fits, and no more.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 9 << 20;
/// The most discovery keys one announcement carries.
pub const MAX_ANNOUNCED: usize = 4096;

/// Proof that the sender of a [`Want`] knows the feed's public key, bound to both peers of the
/// stream (see [`crate::protocol::capability`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Capability(pub [u8; 32]);

/// "Send me the entries of this feed from index `from` on, then every new one."
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Want {
    /// The feed, by discovery key.
    pub discovery_key: DiscoveryKey,
    /// Proof that the requester knows the feed's public key.
    pub capability: Capability,
    /// The first entry wanted: the requester's contiguous length.
    pub from: u64,
}

/// "I hold this many entries of this feed."
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Have {
    /// The feed, by discovery key.
    pub discovery_key: DiscoveryKey,
    /// The sender's contiguous length.
    pub length: u64,
}

/// A run of entries with the proof that the feed's writer signed them.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Data {
    /// The feed, by discovery key.
    pub discovery_key: DiscoveryKey,
    /// The index of the first entry.
    pub start: u64,
    /// The entries `start..start + entries.len()`.
    #[serde(with = "byte_strings")]
    pub entries: Vec<Vec<u8>>,
    /// The merkle proof and signature covering them.
    pub proof: Proof,
}

/// The most `(prefix, from)` pairs a [`WantFiltered`] carries.
pub const MAX_WANTS: usize = 256;
/// The longest prefix a [`WantFiltered`] carries, in bytes.
pub const MAX_WANT_PREFIX_BYTES: usize = 1024;

/// "Send me the entries of this feed whose keys start with one of these prefixes, each from its
/// index on, then every new one": the request of a peer that keeps a partial view. The server
/// decides what an entry's key is (the layer above tells it, see [`crate::Filter`]).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct WantFiltered {
    /// The feed, by discovery key.
    pub discovery_key: DiscoveryKey,
    /// Proof that the requester knows the feed's public key.
    pub capability: Capability,
    /// `(prefix, from)`: the entries under `prefix` from index `from` on (at most
    /// [`MAX_WANTS`], prefixes of at most [`MAX_WANT_PREFIX_BYTES`]).
    pub wants: Vec<(serde_bytes::ByteBuf, u64)>,
    /// The signed length whose tree roots the requester holds: proofs leave them out.
    pub base: u64,
}

/// Entries at any indices with the sparse proof that the writer signed them: the answer to a
/// [`WantFiltered`].
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Sparse {
    /// The feed, by discovery key.
    pub discovery_key: DiscoveryKey,
    /// The server's claim: every entry the request asked for below this index was sent on
    /// this stream (or was held by the requester already). Not provable: see
    /// `docs/partial-views.md`.
    pub covered: u64,
    /// The entries' indices, ascending.
    pub indices: Vec<u64>,
    /// The entries.
    #[serde(with = "byte_strings")]
    pub entries: Vec<Vec<u8>>,
    /// The proof and signature covering them.
    pub proof: SparseProof,
}

/// Why a server will not serve a [`Want`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Refusal {
    /// No such feed here (or the capability did not match: the two are not told apart).
    NotFound,
    /// Too many streams from this peer at once.
    Busy,
}

/// "I hold these feeds": sent to connected peers so that they can ask for the ones they want.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Announce {
    /// Discovery keys of feeds the sender serves (at most [`MAX_ANNOUNCED`]).
    pub discovery_keys: Vec<DiscoveryKey>,
}

/// Every message of the protocols.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// Client to server, first and only message on a replicate stream.
    Want(Want),
    /// Server to client, once the request is accepted.
    Have(Have),
    /// Server to client: entries.
    Data(Data),
    /// Server to client: the request is not served; the stream ends.
    Refused(Refusal),
    /// Only message on an announce stream.
    Announce(Announce),
    /// Client to server, first and only message on a filtered replicate stream.
    WantFiltered(WantFiltered),
    /// Server to client: entries answering a [`WantFiltered`].
    Sparse(Sparse),
}

impl Message {
    /// The message's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Want(_) => "Want",
            Message::Have(_) => "Have",
            Message::Data(_) => "Data",
            Message::Refused(_) => "Refused",
            Message::Announce(_) => "Announce",
            Message::WantFiltered(_) => "WantFiltered",
            Message::Sparse(_) => "Sparse",
        }
    }
}

/// Encodes a message as a whole frame (prefix included). Fails if the frame would be longer
/// than `max_frame_bytes`, which the receiver would refuse.
pub fn encode(message: &Message, max_frame_bytes: usize) -> Result<Vec<u8>, FrameError> {
    encode_value(message, max_frame_bytes)
}

/// [`encode`] for any postcard value: the frame layout every protocol of this crate shares.
pub(crate) fn encode_value<T: Serialize>(
    message: &T,
    max_frame_bytes: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0u8; PREFIX_BYTES];
    out.push(WIRE_VERSION);
    let out = postcard::to_extend(message, out)
        .map_err(|e| FrameError::Malformed(format!("cannot encode: {e}")))?;
    seal_frame(out, max_frame_bytes)
}

/// Fills in the length prefix of a frame (`out`: [`PREFIX_BYTES`] placeholder bytes, then the
/// body), failing if the body is longer than `max_frame_bytes`.
pub(crate) fn seal_frame(mut out: Vec<u8>, max_frame_bytes: usize) -> Result<Vec<u8>, FrameError> {
    let body = out.len().saturating_sub(PREFIX_BYTES);
    if body > max_frame_bytes {
        return Err(FrameError::TooLarge {
            length: body as u64,
            limit: max_frame_bytes,
        });
    }
    // body <= max_frame_bytes, which the caller keeps below 4 GiB; checked anyway.
    let prefix = u32::try_from(body).map_err(|_| FrameError::TooLarge {
        length: body as u64,
        limit: max_frame_bytes,
    })?;
    out[..PREFIX_BYTES].copy_from_slice(&prefix.to_be_bytes());
    Ok(out)
}

/// The body length a prefix announces, if it is within `max_frame_bytes` and not empty.
pub fn body_length(
    prefix: [u8; PREFIX_BYTES],
    max_frame_bytes: usize,
) -> Result<usize, FrameError> {
    let length = u32::from_be_bytes(prefix) as u64;
    if length == 0 {
        return Err(FrameError::Malformed("empty frame".into()));
    }
    if length > max_frame_bytes as u64 {
        return Err(FrameError::TooLarge {
            length,
            limit: max_frame_bytes,
        });
    }
    Ok(length as usize)
}

/// Decodes a frame body (what follows the prefix): the version byte, then exactly one message.
pub fn decode(body: &[u8]) -> Result<Message, FrameError> {
    decode_value(body)
}

/// [`decode`] for any postcard value.
pub(crate) fn decode_value<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let Some((&version, rest)) = body.split_first() else {
        return Err(FrameError::Malformed("empty frame".into()));
    };
    if version != WIRE_VERSION {
        return Err(FrameError::UnknownVersion(version));
    }
    let (message, trailing) =
        postcard::take_from_bytes::<T>(rest).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !trailing.is_empty() {
        return Err(FrameError::TrailingBytes(trailing.len()));
    }
    Ok(message)
}

/// Decodes a whole frame held in memory (prefix included), as a receiver would read it.
pub fn decode_frame(frame: &[u8], max_frame_bytes: usize) -> Result<Message, FrameError> {
    let (prefix, body) = frame
        .split_first_chunk::<PREFIX_BYTES>()
        .ok_or_else(|| FrameError::Malformed("truncated length prefix".into()))?;
    let length = body_length(*prefix, max_frame_bytes)?;
    if body.len() != length {
        return Err(FrameError::Malformed(format!(
            "the prefix says {length} bytes, {} follow",
            body.len()
        )));
    }
    decode(body)
}

/// Serde for a list of byte strings, each as one byte string (serde would otherwise write and
/// read a `Vec<u8>` one element at a time; postcard's bytes on the wire are the same).
mod byte_strings {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(entries: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(entries.iter().map(|e| Bytes::new(e)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let bufs = Vec::<ByteBuf>::deserialize(d)?;
        Ok(bufs.into_iter().map(ByteBuf::into_vec).collect())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn entries_are_byte_strings_with_the_bytes_of_a_plain_list() {
        #[derive(Serialize)]
        struct Plain {
            entries: Vec<Vec<u8>>,
        }
        #[derive(Serialize, Deserialize)]
        struct Fast {
            #[serde(with = "super::byte_strings")]
            entries: Vec<Vec<u8>>,
        }
        let entries = vec![vec![], vec![1, 2, 3], vec![7; 300]];
        let plain = postcard::to_allocvec(&Plain {
            entries: entries.clone(),
        })
        .unwrap();
        let fast = postcard::to_allocvec(&Fast {
            entries: entries.clone(),
        })
        .unwrap();
        assert_eq!(plain, fast);
        assert_eq!(
            postcard::from_bytes::<Fast>(&plain).unwrap().entries,
            entries
        );
    }

    use super::*;
    use multibee_feed::Signature;

    fn data() -> Message {
        Message::Data(Data {
            discovery_key: DiscoveryKey([7; 32]),
            start: 3,
            entries: vec![b"a".to_vec(), vec![0; 300]],
            proof: Proof {
                length: 9,
                signature: Signature([1; 64]),
                nodes: vec![],
            },
        })
    }

    #[test]
    fn round_trip() {
        let frame = encode(&data(), DEFAULT_MAX_FRAME_BYTES).unwrap();
        assert_eq!(frame[PREFIX_BYTES], WIRE_VERSION);
        assert_eq!(
            decode_frame(&frame, DEFAULT_MAX_FRAME_BYTES).unwrap(),
            data()
        );
    }

    #[test]
    fn want_is_a_fixed_layout() {
        let want = Message::Want(Want {
            discovery_key: DiscoveryKey([0xab; 32]),
            capability: Capability([0xcd; 32]),
            from: 300,
        });
        let frame = encode(&want, DEFAULT_MAX_FRAME_BYTES).unwrap();
        // prefix, version, variant 0, 32 + 32 bytes, varint 300.
        assert_eq!(&frame[..6], &[0, 0, 0, 68, 1, 0]);
        assert_eq!(&frame[frame.len() - 2..], &[0xac, 0x02]);
    }

    #[test]
    fn oversized_prefix_is_refused_before_reading() {
        let err = body_length((10u32 << 20).to_be_bytes(), DEFAULT_MAX_FRAME_BYTES).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
        assert!(encode(&data(), 10).is_err());
    }

    #[test]
    fn garbage_trailing_and_versions_are_rejected() {
        let frame = encode(&data(), DEFAULT_MAX_FRAME_BYTES).unwrap();
        let body = &frame[PREFIX_BYTES..];
        let mut trailing = body.to_vec();
        trailing.push(0);
        assert_eq!(decode(&trailing), Err(FrameError::TrailingBytes(1)));
        let mut version = body.to_vec();
        version[0] = 2;
        assert_eq!(decode(&version), Err(FrameError::UnknownVersion(2)));
        assert!(matches!(
            decode(&[1, 0xff, 0xff]),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(decode(&[]), Err(FrameError::Malformed(_))));
        assert!(matches!(
            decode(&body[..body.len() - 1]),
            Err(FrameError::Malformed(_))
        ));
    }
}
