//! "Arbitrary bytes never panic": `op::decode` on random feed entries and on mutations of real
//! ones. Only the absence of a panic is asserted; `fuzz/` runs the same for longer.

use multibee_bee::keyspace::Keyspace;
use multibee_bee::op::{self, Op};
use proptest::prelude::*;

/// Byte-level edits: (kind, position, byte).
fn edits() -> impl Strategy<Value = Vec<(u8, prop::sample::Index, u8)>> {
    prop::collection::vec((0u8..4, any::<prop::sample::Index>(), any::<u8>()), 1..8)
}

/// Applies flips, overwrites, insertions, deletions and a truncation to `bytes`.
fn mutate(mut bytes: Vec<u8>, edits: &[(u8, prop::sample::Index, u8)]) -> Vec<u8> {
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

/// Decodes an entry and uses what decodes.
fn decode(bytes: &[u8]) {
    if let Ok(op) = op::decode(bytes) {
        let _ = Keyspace::default().decode(op.key());
        assert_eq!(op::decode(&op.encode_entry()), Ok(op));
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        decode(&bytes);
    }

    #[test]
    fn mutated_entries_never_panic(
        key in prop::collection::vec(any::<u8>(), 0..40),
        value in prop::collection::vec(any::<u8>(), 0..200),
        put in any::<bool>(),
        edits in edits(),
    ) {
        let key = Keyspace::default().sub(b"s").encode(&key);
        let op = if put { Op::Put { key, value } } else { Op::Del { key } };
        decode(&mutate(op.encode_entry(), &edits));
    }
}
