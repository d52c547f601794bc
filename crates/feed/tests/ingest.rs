//! Replicas: verified ingest, forwarding through a relay, rejections and forks.

use multibee_feed::{Batch, Error, Feed, Store, VerifyError};

use crate::common::{all_entries, entry, run, writer_with};

/// Ingests `src[from..to]` into `dst` in chunks of `chunk`, each proven by `src`.
async fn copy(src: &Feed, dst: &Feed, from: u64, to: u64, chunk: u64) {
    let mut at = from;
    while at < to {
        let end = (at + chunk).min(to);
        dst.ingest(src.proof(at..end).unwrap()).await.unwrap();
        at = end;
    }
}

fn rejected(result: Result<multibee_feed::Ingested, Error>) -> VerifyError {
    match result {
        Err(Error::Rejected { reason, .. }) => reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn a_replica_matches_the_writer_and_a_relay_serves_it_onwards() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    run(async {
        let (_a, writer) = writer_with(dirs[0].path(), 5_000, 777).await;
        let b = Store::open(dirs[1].path()).unwrap();
        let c = Store::open(dirs[2].path()).unwrap();
        let relay = b.replica(writer.key()).await.unwrap();
        // The relay holds only part of the feed, proven against the writer's full head.
        copy(&writer, &relay, 0, 1_234, 500).await;
        assert_eq!(relay.length(), 1_234);
        assert_eq!(relay.status().signed_length, 5_000);
        // C never talks to the writer: everything comes through the relay, verified.
        let far = c.replica(writer.key()).await.unwrap();
        copy(&relay, &far, 0, 1_234, 100).await;
        copy(&writer, &relay, 1_234, 5_000, 1_000).await;
        copy(&relay, &far, 1_234, 5_000, 333).await;
        assert_eq!(all_entries(&far), (0..5_000).map(entry).collect::<Vec<_>>());
        assert_eq!(far.head().unwrap(), writer.head().unwrap());
        // Live growth: the writer appends, the relay upgrades, the far replica follows.
        writer.append(entry(5_000)).await.unwrap();
        copy(&writer, &relay, 5_000, 5_001, 1).await;
        copy(&relay, &far, 5_000, 5_001, 1).await;
        assert_eq!(far.get(5_000).unwrap(), Some(entry(5_000)));
    });
}

#[test]
fn a_replica_survives_reopening_and_continues() {
    let (wd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run(async {
        let (_w, writer) = writer_with(wd.path(), 300, 300).await;
        {
            let store = Store::open(rd.path()).unwrap();
            let replica = store.replica(writer.key()).await.unwrap();
            copy(&writer, &replica, 0, 120, 50).await;
        }
        let store = Store::open(rd.path()).unwrap();
        let replica = store.feed(&writer.key()).unwrap();
        assert!(!replica.is_writable());
        assert_eq!(replica.length(), 120);
        copy(&writer, &replica, 120, 300, 50).await;
        assert_eq!(
            all_entries(&replica),
            (0..300).map(entry).collect::<Vec<_>>()
        );
    });
}

#[test]
fn one_huge_signed_batch_is_fetched_in_bounded_chunks() {
    let (wd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run(async {
        // 200,000 entries under a single signature.
        let (_w, writer) = writer_with(wd.path(), 200_000, 200_000).await;
        let store = Store::open(rd.path()).unwrap();
        let replica = store.replica(writer.key()).await.unwrap();
        // A batch over the limit is refused before anything is hashed or stored.
        let whole = writer.proof(0..100_000).unwrap();
        assert!(matches!(
            rejected(replica.ingest(whole).await),
            VerifyError::TooLarge(_)
        ));
        assert_eq!(replica.length(), 0);
        copy(&writer, &replica, 0, 200_000, 4_096).await;
        assert_eq!(replica.length(), 200_000);
        assert_eq!(replica.get(199_999).unwrap(), Some(entry(199_999)));
    });
}

#[test]
fn bad_batches_are_rejected_and_nothing_stored_changes() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    run(async {
        let (_w, writer) = writer_with(dirs[0].path(), 100, 10).await;
        let (_o, other) = writer_with(dirs[1].path(), 100, 10).await;
        let store = Store::open(dirs[2].path()).unwrap();
        let replica = store.replica(writer.key()).await.unwrap();
        copy(&writer, &replica, 0, 20, 10).await;
        let before = (
            all_entries(&replica),
            replica.head().unwrap(),
            replica.status(),
        );

        let good = writer.proof(20..30).unwrap();
        let mut forged = good.clone();
        forged.entries[3] = b"forged".to_vec();
        assert!(matches!(
            rejected(replica.ingest(forged).await),
            VerifyError::BadSignature
        ));
        let mut bad_proof = good.clone();
        bad_proof.proof.nodes.pop();
        assert!(matches!(
            rejected(replica.ingest(bad_proof).await),
            VerifyError::BadProof(_)
        ));
        let mut trailing = good.clone();
        trailing.proof.nodes.push(multibee_feed::Hash([0; 32]));
        assert!(matches!(
            rejected(replica.ingest(trailing).await),
            VerifyError::BadProof(_)
        ));
        let mut bad_sig = good.clone();
        bad_sig.proof.signature.0[0] ^= 1;
        assert!(matches!(
            rejected(replica.ingest(bad_sig).await),
            VerifyError::BadSignature
        ));
        let foreign = other.proof(20..30).unwrap();
        assert!(matches!(
            rejected(replica.ingest(foreign.clone()).await),
            VerifyError::WrongFeed { .. }
        ));
        let renamed = Batch {
            feed: writer.key(),
            ..foreign
        };
        assert!(matches!(
            rejected(replica.ingest(renamed).await),
            VerifyError::BadSignature
        ));
        let gap = writer.proof(25..30).unwrap();
        assert!(matches!(
            rejected(replica.ingest(gap).await),
            VerifyError::Gap {
                length: 20,
                start: 25
            }
        ));
        let mut huge_length = good.clone();
        huge_length.proof.length = 1 << 63;
        assert!(matches!(
            rejected(replica.ingest(huge_length).await),
            VerifyError::TooLarge(_)
        ));

        assert_eq!(
            (
                all_entries(&replica),
                replica.head().unwrap(),
                replica.status()
            ),
            before
        );
        // The honest batch still goes in afterwards; a replayed old one changes nothing.
        replica.ingest(good).await.unwrap();
        let replay = replica.ingest(writer.proof(0..10).unwrap()).await.unwrap();
        assert_eq!((replay.added, replay.length), (0, 30));
        assert!(matches!(
            writer.ingest(writer.proof(0..1).unwrap()).await,
            Err(Error::NotReplica(_))
        ));
        assert!(matches!(
            writer.proof(0..101),
            Err(Error::InvalidArgument(_))
        ));
    });
}

#[test]
fn a_bare_upgrade_moves_the_signed_head_forward() {
    let (wd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run(async {
        let (_w, writer) = writer_with(wd.path(), 10, 10).await;
        let store = Store::open(rd.path()).unwrap();
        let replica = store.replica(writer.key()).await.unwrap();
        copy(&writer, &replica, 0, 10, 10).await;
        writer.append(entry(10)).await.unwrap();
        let upgrade = writer.proof(10..10).unwrap();
        let ingested = replica.ingest(upgrade).await.unwrap();
        assert_eq!(
            (ingested.added, ingested.length, ingested.signed_length),
            (0, 10, 11)
        );
        // The replica can still prove what it holds, against the newer head.
        let batch = replica.proof(3..10).unwrap();
        assert_eq!(batch.proof.length, 11);
        multibee_feed::proof::verify(&batch.feed, 3, &batch.entries, &[], &batch.proof).unwrap();
        copy(&writer, &replica, 10, 11, 1).await;
        assert_eq!(replica.length(), 11);
    });
}

/// Two copies of one writer's folder (a restored backup written to again) make two histories:
/// one appends two entries after the common ten, the other `two_len` different ones.
async fn forked_writers(a: &std::path::Path, b: &std::path::Path, two_len: u64) -> (Feed, Feed) {
    let key = {
        let (_s, feed) = writer_with(a, 10, 5).await;
        feed.key()
    };
    std::fs::copy(
        a.join(multibee_feed::DB_FILE),
        b.join(multibee_feed::DB_FILE),
    )
    .unwrap();
    let one = Store::open(a).unwrap().feed(&key).unwrap();
    let two = Store::open(b).unwrap().feed(&key).unwrap();
    one.append_batch(vec![b"one".to_vec(), b"one again".to_vec()])
        .await
        .unwrap();
    two.append_batch(
        (0..two_len)
            .map(|i| format!("two {i}").into_bytes())
            .collect(),
    )
    .await
    .unwrap();
    (one, two)
}

#[test]
fn equivocation_forks_the_feed_with_evidence_that_survives_reopening() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    run(async {
        let (one, two) = forked_writers(dirs[0].path(), dirs[1].path(), 1).await;
        {
            let store = Store::open(dirs[2].path()).unwrap();
            let replica = store.replica(one.key()).await.unwrap();
            copy(&one, &replica, 0, 12, 12).await;
            let mut sub = replica.subscribe();
            // The other history's entry 10 comes with a valid signature: that is equivocation.
            let conflicting = two.proof(10..11).unwrap();
            assert!(matches!(
                rejected(replica.ingest(conflicting).await),
                VerifyError::Forked
            ));
            assert!(sub.borrow_and_update().forked);
            let evidence = replica.fork_evidence().unwrap().unwrap();
            assert_eq!(evidence.ours, one.head().unwrap().unwrap());
            assert_eq!(evidence.theirs, two.head().unwrap().unwrap());
            evidence.ours.verify(&one.key()).unwrap();
            evidence.theirs.verify(&one.key()).unwrap();
            assert_eq!(replica.length(), 12, "nothing held was lost");
        }
        let store = Store::open(dirs[2].path()).unwrap();
        let replica = store.feed(&one.key()).unwrap();
        assert!(replica.status().forked);
        assert!(replica.fork_evidence().unwrap().is_some());
        let more = one.proof(12..12).unwrap();
        assert!(matches!(
            rejected(replica.ingest(more).await),
            VerifyError::Forked
        ));
        assert_eq!(replica.get(11).unwrap(), Some(b"one again".to_vec()));
    });
}

#[test]
fn equivocation_is_caught_against_the_frontier_and_at_equal_lengths() {
    for (two_len, upto) in [(3, 12), (2, 11)] {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        run(async {
            let (one, two) = forked_writers(dirs[0].path(), dirs[1].path(), two_len).await;
            let store = Store::open(dirs[2].path()).unwrap();
            let replica = store.replica(one.key()).await.unwrap();
            // Only the common prefix is held, with the frontier of history one's head (12).
            copy(&one, &replica, 0, 10, 10).await;
            // History two (13 entries: its node over 10..12 contradicts the frontier; or 12
            // entries: a second tree signed for the same length) is refused.
            let conflicting = two.proof(10..upto).unwrap();
            assert!(matches!(
                rejected(replica.ingest(conflicting).await),
                VerifyError::Forked
            ));
            assert_eq!(replica.length(), 10);
        });
    }
}

#[test]
fn a_shorter_head_that_contradicts_what_is_held_is_equivocation() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    run(async {
        let (one, two) = forked_writers(dirs[0].path(), dirs[1].path(), 1).await;
        let store = Store::open(dirs[2].path()).unwrap();
        let replica = store.replica(one.key()).await.unwrap();
        copy(&one, &replica, 0, 12, 12).await;
        // History two's head (11) proves only old entries, but its roots contradict ours.
        let old_range = two.proof(0..5).unwrap();
        assert!(matches!(
            rejected(replica.ingest(old_range).await),
            VerifyError::Forked
        ));
    });
}
