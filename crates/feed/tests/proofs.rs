//! Property tests of the merkle tree, signatures and proofs.

use multibee_feed::{Batch, Options, Store, SyncMode, proof};
use proptest::prelude::*;

use crate::common::{entry, run};

/// Appends `entries` to a fresh relaxed-mode feed in batches of the given sizes (cycled).
async fn feed_with_batches(
    dir: &std::path::Path,
    entries: &[Vec<u8>],
    sizes: &[usize],
) -> multibee_feed::Feed {
    let store = Store::open_with(dir, Options::default().sync(SyncMode::Relaxed)).unwrap();
    let feed = store.create_feed().await.unwrap();
    let mut i = 0;
    for size in sizes.iter().cycle() {
        if i >= entries.len() {
            break;
        }
        let end = (i + size).min(entries.len());
        feed.append_batch(entries[i..end].to_vec()).await.unwrap();
        i = end;
    }
    feed
}

fn check(batch: &Batch) -> Result<(), multibee_feed::VerifyError> {
    proof::verify(&batch.feed, batch.start, &batch.entries, &[], &batch.proof).map(|_| ())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn any_split_into_batches_gives_the_same_roots(
        entries in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..60),
        a in prop::collection::vec(1usize..9, 1..5),
        b in prop::collection::vec(1usize..9, 1..5),
    ) {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (r1, r2) = run(async {
            let f1 = feed_with_batches(d1.path(), &entries, &a).await;
            let f2 = feed_with_batches(d2.path(), &entries, &b).await;
            (f1.head().unwrap().unwrap(), f2.head().unwrap().unwrap())
        });
        prop_assert_eq!(r1.length, entries.len() as u64);
        prop_assert_eq!(r1.roots, r2.roots);
    }

    #[test]
    fn every_range_proof_of_every_length_verifies(n in 1u64..20, sizes in prop::collection::vec(1usize..4, 1..4)) {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let store = Store::open_with(dir.path(), Options::default().sync(SyncMode::Relaxed)).unwrap();
            let feed = store.create_feed().await.unwrap();
            let mut sizes = sizes.iter().cycle();
            while feed.length() < n {
                let from = feed.length();
                let to = (from + *sizes.next().unwrap() as u64).min(n);
                feed.append_batch((from..to).map(entry).collect()).await.unwrap();
                // Every range at this signed length, including empty ones (upgrades).
                for start in 0..=to {
                    for end in start..=to {
                        let batch = feed.proof(start..end).unwrap();
                        assert_eq!(batch.proof.length, to);
                        check(&batch).unwrap_or_else(|e| panic!("{start}..{end} of {to}: {e}"));
                    }
                }
            }
        });
    }

    #[test]
    fn flipping_any_bit_fails_verification(
        n in 1u64..40,
        range in (0u64..40, 0u64..40),
        target in 0usize..4,
        pick in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (start, end) = (range.0.min(range.1) % n, range.0.max(range.1) % n + 1);
        let (start, end) = (start.min(end - 1), end);
        let mut batch = run(async {
            let feed = feed_with_batches(dir.path(), &(0..n).map(entry).collect::<Vec<_>>(), &[3]).await;
            feed.proof(start..end).unwrap()
        });
        check(&batch).unwrap();
        let flip = 1u8 << bit;
        match target {
            0 => {
                let e = pick.get_mut(&mut batch.entries);
                if e.is_empty() { e.push(flip) } else { let i = pick.index(e.len()); e[i] ^= flip }
            }
            1 if !batch.proof.nodes.is_empty() => {
                let h = pick.get_mut(&mut batch.proof.nodes);
                h.0[pick.index(32)] ^= flip;
            }
            2 => batch.proof.length ^= 1u64 << pick.index(64),
            _ => batch.proof.signature.0[pick.index(64)] ^= flip,
        }
        prop_assert!(check(&batch).is_err());
    }
}

#[test]
fn a_proof_is_bound_to_its_feed_key() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run(async {
        let f1 = feed_with_batches(d1.path(), &[b"x".to_vec()], &[1]).await;
        let f2 = feed_with_batches(d2.path(), &[b"x".to_vec()], &[1]).await;
        let mut batch = f1.proof(0..1).unwrap();
        batch.feed = f2.key();
        assert_eq!(check(&batch), Err(multibee_feed::VerifyError::BadSignature));
    });
}
