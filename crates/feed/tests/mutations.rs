//! Mutations of real encodings for the "arbitrary bytes never panic" proptests of every crate
//! (each crate's `tests/fuzz_decode.rs` includes this file).

use proptest::prelude::*;

/// Byte-level edits: (kind, position, byte).
pub fn edits() -> impl Strategy<Value = Vec<(u8, prop::sample::Index, u8)>> {
    prop::collection::vec((0u8..4, any::<prop::sample::Index>(), any::<u8>()), 1..8)
}

/// Applies flips, overwrites, insertions, deletions and a truncation to `bytes`.
pub fn mutate(mut bytes: Vec<u8>, edits: &[(u8, prop::sample::Index, u8)]) -> Vec<u8> {
    for (kind, at, byte) in edits {
        let i = at.index(bytes.len() + 1);
        match kind {
            0 if i < bytes.len() => bytes[i] ^= 1 << (byte % 8),
            1 if i < bytes.len() => bytes[i] = *byte,
            2 => bytes.insert(i, *byte),
            3 if i < bytes.len() => {
                bytes.remove(i);
            }
            _ => bytes.truncate(i),
        }
    }
    bytes
}
