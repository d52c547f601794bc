//! "Arbitrary bytes never panic": `op::decode` on random feed entries and on mutations of real
//! ones. Only the absence of a panic is asserted; `fuzz/` runs the same for longer.

use multibee_bee::keyspace::Keyspace;
use multibee_bee::op::{self, Op};
use proptest::prelude::*;

#[path = "../../feed/tests/mutations.rs"]
mod mutations;
use mutations::{check_truncating, edits, mutate};

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
}

#[test]
fn mutated_entries_never_panic() {
    let inputs = (
        prop::collection::vec(any::<u8>(), 0..40),
        prop::collection::vec(any::<u8>(), 0..200),
        any::<bool>(),
        edits(),
    );
    check_truncating(
        file!(),
        "mutated_entries_never_panic",
        inputs,
        |(key, value, put, edits)| {
            let key = Keyspace::default().sub(b"s").encode(&key);
            let op = if put {
                Op::Put { key, value }
            } else {
                Op::Del { key }
            };
            decode(&mutate(op.encode_entry(), &edits));
            Ok(())
        },
    );
}
