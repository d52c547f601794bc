//! Sparse replicas: any subset of a feed's entries, verified, held, and proven on.

use std::collections::BTreeSet;

use multibee_feed::{Error, Feed, SparseBatch, Store};
use proptest::prelude::*;

use crate::common::{entry, run, writer_with};

/// Verifies and stores a sparse batch in `replica`.
async fn ingest(replica: &Feed, batch: SparseBatch) -> multibee_feed::Result<u64> {
    let verified = replica.verify_sparse(batch)?;
    let done = replica
        .store()
        .write(move |txn| txn.ingest_sparse(&verified))
        .await?;
    assert!(
        done.stored || replica.status().forked,
        "the batch was taken"
    );
    Ok(done.added)
}

/// Like [`ingest`], but says whether the batch was taken.
async fn offer(replica: &Feed, batch: SparseBatch) -> multibee_feed::SparseIngested {
    let verified = replica.verify_sparse(batch).unwrap();
    replica
        .store()
        .write(move |txn| txn.ingest_sparse(&verified))
        .await
        .unwrap()
}

fn base_of(replica: &Feed) -> u64 {
    replica.status().signed_length
}

/// One step of a schedule: the writer appends, or the sparse replica takes some entries.
#[derive(Clone, Debug)]
enum Step {
    Append(u64),
    Take(Vec<u64>),
}

fn schedule() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            (1u64..40).prop_map(Step::Append),
            prop::collection::vec(0u64..400, 0..12).prop_map(Step::Take),
        ],
        1..14,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A replica A that takes random entries at random times (each over its own head as
    /// base) holds exactly them, and proves them on: after each take to a replica C that takes
    /// the same from A over C's head (a chain of partial peers), and at the end all of them to
    /// a fresh replica (base 0).
    #[test]
    fn a_sparse_replica_holds_and_proves_any_subset(steps in schedule()) {
        let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
        run(async {
            let writer = Store::open(dirs[0].path()).unwrap().create_feed().await.unwrap();
            let a = Store::open(dirs[1].path()).unwrap().replica(writer.key()).await.unwrap();
            let c = Store::open(dirs[2].path()).unwrap().replica(writer.key()).await.unwrap();
            let mut held = BTreeSet::new();
            for step in &steps {
                match step {
                    Step::Append(n) => {
                        let len = writer.length();
                        writer.append_batch((len..len + n).map(entry).collect()).await.unwrap();
                    }
                    Step::Take(picks) => {
                        let len = writer.length();
                        if len == 0 {
                            continue;
                        }
                        let want: BTreeSet<u64> = picks.iter().map(|i| i % len).collect();
                        let want: Vec<u64> = want.into_iter().collect();
                        let batch = writer.proof_sparse(&want, base_of(&a)).unwrap();
                        let fresh = want.iter().filter(|i| !held.contains(*i)).count() as u64;
                        assert_eq!(ingest(&a, batch).await.unwrap(), fresh);
                        held.extend(want.iter().copied());
                        let batch = a.proof_sparse(&want, base_of(&c)).unwrap();
                        ingest(&c, batch).await.unwrap();
                        assert_eq!(base_of(&c), base_of(&a));
                    }
                }
            }
            // What is held, entry by entry and as runs.
            let len = writer.length();
            for i in 0..len {
                assert_eq!(a.has(i).unwrap(), held.contains(&i), "entry {i}");
                assert_eq!(a.get(i).unwrap(), held.contains(&i).then(|| entry(i)));
                assert_eq!(c.get(i).unwrap(), held.contains(&i).then(|| entry(i)));
            }
            let runs: Vec<u64> = a.held().unwrap().into_iter().flatten().collect();
            assert_eq!(runs, held.iter().copied().collect::<Vec<_>>());
            assert_eq!(a.length(), 0, "the contiguous length counts no sparse entry");
            let all: Vec<u64> = held.iter().copied().collect();
            if all.is_empty() {
                return;
            }
            // A fresh replica verifies everything A holds, proven by A alone.
            let d = Store::open(dirs[3].path()).unwrap().replica(writer.key()).await.unwrap();
            let batch = a.proof_sparse(&all, 0).unwrap();
            assert_eq!(ingest(&d, batch).await.unwrap(), all.len() as u64);
            // A fills its holes from the writer; a contiguous batch is refused.
            let holes: Vec<u64> = (0..len).filter(|i| !held.contains(i)).collect();
            ingest(&a, writer.proof_sparse(&holes, base_of(&a)).unwrap()).await.unwrap();
            assert_eq!(a.held().unwrap(), vec![0..len]);
            assert!(a.ingest(writer.proof(0..len).unwrap()).await.is_err());
            assert!(!a.status().forked);
        });
    }
}

/// A longer head is taken only over the head held, and a shorter one only if its roots are
/// known: otherwise the batch is not taken (its entries could not be proven on).
#[test]
fn a_batch_that_does_not_join_the_head_held_is_not_taken() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    run(async {
        let (_store, writer) = writer_with(dirs[0].path(), 3, 3).await;
        let early = writer.proof_sparse(&[2], 0).unwrap();
        writer
            .append_batch((3..8).map(entry).collect())
            .await
            .unwrap();
        let replica = Store::open(dirs[1].path())
            .unwrap()
            .replica(writer.key())
            .await
            .unwrap();
        ingest(&replica, writer.proof_sparse(&[0], 0).unwrap())
            .await
            .unwrap();
        assert_eq!(base_of(&replica), 8);
        // Over no base, a head of 9 would leave entry 0 unprovable: not taken.
        writer.append(entry(8)).await.unwrap();
        let done = offer(&replica, writer.proof_sparse(&[8], 0).unwrap()).await;
        assert!(!done.stored);
        assert!(!replica.has(8).unwrap());
        // Over the head held, it is.
        assert!(
            offer(&replica, writer.proof_sparse(&[8], 8).unwrap())
                .await
                .stored
        );
        assert_eq!(base_of(&replica), 9);
        replica.proof_sparse(&[0, 8], 0).unwrap();
        // A head of 3 whose last root (entry 2) is not known here: not taken.
        assert!(!offer(&replica, early).await.stored);
        assert!(!replica.has(2).unwrap());
    });
}

#[test]
fn forged_sparse_batches_are_rejected_and_store_nothing() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    run(async {
        let (_store, writer) = writer_with(dirs[0].path(), 100, 100).await;
        let replica = Store::open(dirs[1].path())
            .unwrap()
            .replica(writer.key())
            .await
            .unwrap();
        let good = writer.proof_sparse(&[3, 40, 77], 0).unwrap();
        let mut forged = Vec::new();
        let mut b = good.clone();
        b.entries[1].1[0] ^= 1;
        forged.push(("a flipped entry byte", b));
        let mut b = good.clone();
        b.proof.nodes[2].0[5] ^= 1;
        forged.push(("a flipped node", b));
        let mut b = good.clone();
        b.entries[2].0 = 78;
        forged.push(("a moved entry", b));
        let mut b = good.clone();
        b.entries.swap(0, 1);
        forged.push(("unsorted indices", b));
        let mut b = good.clone();
        b.proof.nodes.pop();
        forged.push(("a missing node", b));
        let mut b = writer.proof_sparse(&[40, 77], 0).unwrap();
        b.proof.base = 32;
        forged.push(("a base the replica does not hold", b));
        let mut b = good.clone();
        b.proof.length = 99;
        forged.push(("another length", b));
        for (what, batch) in forged {
            let err = ingest(&replica, batch).await.unwrap_err();
            assert!(matches!(err, Error::Rejected { .. }), "{what}: {err}");
            assert!(replica.held().unwrap().is_empty(), "{what}");
        }
        assert_eq!(ingest(&replica, good).await.unwrap(), 3);
        assert_eq!(replica.held().unwrap(), vec![3..4, 40..41, 77..78]);
        // Bad arguments to the prover are errors too.
        assert!(replica.proof_sparse(&[4], 0).is_err(), "an entry not held");
        assert!(replica.proof_sparse(&[40, 3], 0).is_err(), "unsorted");
        assert!(
            replica.proof_sparse(&[3], 101).is_err(),
            "a base past the head"
        );
    });
}

#[test]
fn a_sparse_batch_of_another_history_forks_the_feed() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    run(async {
        let one = Store::open(dirs[0].path())
            .unwrap()
            .create_feed()
            .await
            .unwrap();
        one.append_batch((0..10).map(entry).collect())
            .await
            .unwrap();
        std::fs::copy(
            dirs[0].path().join(multibee_feed::DB_FILE),
            dirs[1].path().join(multibee_feed::DB_FILE),
        )
        .unwrap();
        let key = one.key();
        drop(one);
        let one = Store::open(dirs[0].path()).unwrap().feed(&key).unwrap();
        let two = Store::open(dirs[1].path()).unwrap().feed(&key).unwrap();
        one.append_batch(vec![b"one".to_vec()]).await.unwrap();
        two.append_batch(vec![b"two".to_vec()]).await.unwrap();
        let replica = Store::open(dirs[2].path())
            .unwrap()
            .replica(key)
            .await
            .unwrap();
        ingest(&replica, one.proof_sparse(&[2, 10], 0).unwrap())
            .await
            .unwrap();
        let err = ingest(&replica, two.proof_sparse(&[10], 0).unwrap()).await;
        assert!(replica.status().forked, "{err:?}");
        assert!(replica.fork_evidence().unwrap().is_some());
        assert_eq!(replica.get(10).unwrap(), Some(b"one".to_vec()));
    });
}
