//! Diff feed entries and diff records of remote writers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multibee_multibee::DiffRecord;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = DiffRecord::decode(data) {
        let _ = record.saw(&[0; 32]);
    }
    if let Ok((record, bytes)) = DiffRecord::from_entry(data) {
        let _ = record.saw(&[0xFF; 32]);
        assert!(DiffRecord::decode(&bytes).is_ok());
    }
});
