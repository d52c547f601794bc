//! Bee operations as they are read from a feed entry.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multibee_bee::keyspace::Keyspace;
use multibee_bee::op;

fuzz_target!(|data: &[u8]| {
    if let Ok(op) = op::decode(data) {
        let _ = Keyspace::default().decode(op.key());
        let _ = op.value();
        assert_eq!(op::decode(&op.encode_entry()).as_ref(), Ok(&op));
    }
});
