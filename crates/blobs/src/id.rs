//! [`BlobId`]: a blob's BLAKE3 hash, its one name.

use std::fmt;
use std::str::FromStr;

use crate::error::ParseIdError;

/// The id of a blob: the BLAKE3 hash of its bytes (equal to `blake3::hash(bytes)`).
///
/// Shown and parsed as 64 lowercase hex characters. Parsing accepts exactly that canonical
/// spelling: uppercase digits are refused ([`ParseIdError::Uppercase`]) so that one blob has
/// one string (ids are used as file names and map keys).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobId([u8; 32]);

impl BlobId {
    /// The id of `bytes` (their BLAKE3 hash), computed without storing them.
    pub fn of(bytes: &[u8]) -> Self {
        BlobId(*blake3::hash(bytes).as_bytes())
    }

    /// The id with these 32 hash bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        BlobId(bytes)
    }

    /// The 32 hash bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The canonical text form: 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub(crate) fn hash(&self) -> blake3::Hash {
        blake3::Hash::from_bytes(self.0)
    }
}

impl From<blake3::Hash> for BlobId {
    fn from(hash: blake3::Hash) -> Self {
        BlobId(*hash.as_bytes())
    }
}

impl From<BlobId> for blake3::Hash {
    fn from(id: BlobId) -> Self {
        blake3::Hash::from_bytes(id.0)
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({})", self.to_hex())
    }
}

impl FromStr for BlobId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64 {
            return Err(ParseIdError::WrongLength(s.chars().count()));
        }
        let mut out = [0u8; 32];
        for (index, byte) in s.bytes().enumerate() {
            let nibble = match byte {
                b'0'..=b'9' => byte - b'0',
                b'a'..=b'f' => byte - b'a' + 10,
                b'A'..=b'F' => return Err(ParseIdError::Uppercase { index }),
                _ => return Err(ParseIdError::NotHex { index }),
            };
            out[index / 2] |= nibble << if index % 2 == 0 { 4 } else { 0 };
        }
        Ok(BlobId(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = BlobId::of(b"abc");
        assert_eq!(id.to_string().parse::<BlobId>(), Ok(id));
        assert_eq!(id.to_string(), blake3::hash(b"abc").to_hex().as_str());
    }
}
