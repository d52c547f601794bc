//! Feed batches, proofs and signed heads (postcard), and the proof check on what decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multibee_feed::{Batch, FeedKey, Proof, SignedHead, proof};

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = postcard::from_bytes::<Batch>(data) {
        let _ = batch.end();
        let _ = batch.entry_bytes();
        let _ = proof::verify(&batch.feed, batch.start, &batch.entries, &[], &batch.proof);
    }
    if let Ok(p) = postcard::from_bytes::<Proof>(data) {
        let entries = [b"a".to_vec(), b"b".to_vec()];
        let _ = proof::verify(&FeedKey([1; 32]), 1, &entries, &[], &p);
    }
    if let Ok(head) = postcard::from_bytes::<SignedHead>(data) {
        let _ = head.verify(&FeedKey([1; 32]));
    }
});
