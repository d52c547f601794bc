//! Diff feed entries, diff records and membership operations of remote writers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multibee_multibee::{DiffRecord, Dot, MemberRecord};

fuzz_target!(|data: &[u8]| {
    let dot = Dot {
        writer: [0; 32],
        seq: 0,
    };
    if let Ok(record) = DiffRecord::decode(data) {
        let _ = record.has_parent(&dot);
    }
    if let Ok((record, bytes)) = DiffRecord::from_entry(data) {
        let _ = record.has_parent(&dot);
        assert!(DiffRecord::decode(&bytes).is_ok());
    }
    if let Some(Ok(op)) = MemberRecord::from_entry(data) {
        assert_eq!(MemberRecord::from_entry(&op.entry()), Some(Ok(op)));
    }
});
