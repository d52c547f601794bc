//! Stored values of the merged store.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multibee_multibee::Value;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = Value::from_stored(data) {
        // What decodes re-encodes to something that decodes again.
        assert!(Value::from_stored(&value.to_stored()).is_ok());
    }
});
