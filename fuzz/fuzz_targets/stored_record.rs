//! Rows as they are stored in redb (feed records and entry rows, multibee's writer rows, key
//! states, diff rows and checkpoints): a damaged database file must give errors, not panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    multibee_feed::fuzzing::decode_stored(data);
    multibee_multibee::fuzzing::decode_stored(data);
});
