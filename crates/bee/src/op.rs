//! The feed entry format of a bee: one entry per put or delete, postcard, versioned.

use serde::{Deserialize, Serialize};

/// One mutation as it is stored in the feed. Keys are full stored keys (see [`crate::keyspace`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Set `key` to `value`.
    Put {
        /// The stored key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove `key`.
    Del {
        /// The stored key.
        key: Vec<u8>,
    },
}

impl Op {
    /// The stored key this op touches.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Del { key } => key,
        }
    }

    /// The feed entry that carries this op.
    pub fn encode_entry(&self) -> Vec<u8> {
        encode(self)
    }

    /// The value it sets, or `None` for a delete.
    pub fn value(&self) -> Option<&[u8]> {
        match self {
            Op::Put { value, .. } => Some(value),
            Op::Del { .. } => None,
        }
    }
}

/// The versioned envelope of an op in a feed entry.
#[derive(Serialize, Deserialize)]
enum Stored<O> {
    V1(O),
}

/// Encodes an op as a feed entry.
pub(crate) fn encode(op: &Op) -> Vec<u8> {
    // Encoding into a Vec cannot fail for these plain types; an empty entry would decode as
    // invalid, never as another op.
    postcard::to_stdvec(&Stored::V1(op)).unwrap_or_default()
}

/// Decodes a feed entry; the error says why it is not a bee op.
pub fn decode(entry: &[u8]) -> Result<Op, String> {
    match postcard::from_bytes::<Stored<Op>>(entry) {
        Ok(Stored::V1(op)) => Ok(op),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_format_is_pinned() {
        let op = Op::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        };
        // version tag 0 (V1), variant 0 (Put), len 1 "k", len 1 "v"
        assert_eq!(encode(&op), vec![0, 0, 1, b'k', 1, b'v']);
        assert_eq!(encode(&Op::Del { key: b"k".to_vec() }), vec![0, 1, 1, b'k']);
        assert_eq!(decode(&encode(&op)), Ok(op));
        assert!(decode(b"").is_err());
        assert!(decode(&[1, 0]).is_err(), "an unknown version is refused");
    }
}
