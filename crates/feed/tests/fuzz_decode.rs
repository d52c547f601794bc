//! "Arbitrary bytes never panic": the decoders of untrusted feed data (postcard `Batch`, `Proof`,
//! `SignedHead`) and the stateless proof check, on random bytes and on mutations of a real
//! encoding. Only the absence of a panic is asserted; `fuzz/` runs the same for longer.

use std::sync::OnceLock;

use multibee_feed::{Batch, Hash, Proof, SignedHead, Store, proof};
use proptest::prelude::*;

use crate::common::{entry, run};

#[path = "mutations.rs"]
mod mutations;
use mutations::{check_truncating, edits, mutate};

/// A real batch (entries 3..7 of a 10-entry feed) and the feed's signed head.
fn sample() -> &'static (Batch, SignedHead) {
    static SAMPLE: OnceLock<(Batch, SignedHead)> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let store = Store::open(dir.path()).unwrap();
            let feed = store.create_feed().await.unwrap();
            feed.append_batch((0..10).map(entry).collect())
                .await
                .unwrap();
            (feed.proof(3..7).unwrap(), feed.head().unwrap().unwrap())
        })
    })
}

/// Decodes `bytes` as every feed wire type and checks whatever decodes.
fn decode_all(bytes: &[u8]) {
    if let Ok(batch) = postcard::from_bytes::<Batch>(bytes) {
        let _ = batch.end();
        let _ = batch.entry_bytes();
        let _ = proof::verify(&batch.feed, batch.start, &batch.entries, &[], &batch.proof);
    }
    if let Ok(p) = postcard::from_bytes::<Proof>(bytes) {
        let (batch, _) = sample();
        let _ = proof::verify(&batch.feed, batch.start, &batch.entries, &[], &p);
    }
    if let Ok(head) = postcard::from_bytes::<SignedHead>(bytes) {
        let _ = head.verify(&sample().0.feed);
    }
}

#[test]
fn the_sample_batch_verifies() {
    let (batch, head) = sample();
    let bytes = postcard::to_stdvec(batch).unwrap();
    assert_eq!(&postcard::from_bytes::<Batch>(&bytes).unwrap(), batch);
    proof::verify(&batch.feed, batch.start, &batch.entries, &[], &batch.proof).unwrap();
    head.verify(&batch.feed).unwrap();
}

#[test]
fn mutated_batches_never_panic() {
    check_truncating(file!(), "mutated_batches_never_panic", edits(), |edits| {
        let (batch, head) = sample();
        decode_all(&mutate(postcard::to_stdvec(batch).unwrap(), &edits));
        decode_all(&mutate(postcard::to_stdvec(&batch.proof).unwrap(), &edits));
        decode_all(&mutate(postcard::to_stdvec(head).unwrap(), &edits));
        Ok(())
    });
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        decode_all(&bytes);
    }

    #[test]
    fn altered_proofs_never_panic(
        start in prop_oneof![0u64..12, any::<u64>()],
        length in prop_oneof![0u64..16, any::<u64>(), Just(u64::MAX), Just(1u64 << 60)],
        drop_entries in 0usize..5,
        extra_nodes in prop::collection::vec(any::<[u8; 32]>(), 0..6),
        drop_nodes in 0usize..6,
        leaf_hashes in prop::collection::vec(any::<[u8; 32]>(), 0..6),
        edits in edits(),
    ) {
        let (batch, _) = sample();
        let mut b = batch.clone();
        b.start = start;
        b.proof.length = length;
        b.entries.truncate(b.entries.len().saturating_sub(drop_entries));
        if let Some(first) = b.entries.first_mut() {
            *first = mutate(first.clone(), &edits);
        }
        b.proof.nodes.truncate(b.proof.nodes.len().saturating_sub(drop_nodes));
        b.proof.nodes.extend(extra_nodes.into_iter().map(Hash));
        let leaves: Vec<Hash> = leaf_hashes.into_iter().map(Hash).collect();
        let _ = proof::verify(&b.feed, b.start, &b.entries, &leaves, &b.proof);
        let _ = proof::verify(&b.feed, b.start, &b.entries, &[], &b.proof);
    }
}
