//! The correctness scenarios of DESIGN.md (1-7, 10-15, and the merge-level parts of 8 and 9),
//! one or more named tests each.

use multibee_feed::Store;
use multibee_multibee::{BatchOp, Change, ChangesOptions, Event, FieldOp, Hlc, Value, WriterState};
use serde_json::json;

use crate::support::{Peer, cluster, deliver, sync_all};

/// Runs a scenario, failing it if it has not finished within a minute: no wait in it can hang.
fn run<F: std::future::Future>(f: F) -> F::Output {
    let limit = std::time::Duration::from_secs(60);
    crate::support::run(async {
        tokio::time::timeout(limit, f)
            .await
            .unwrap_or_else(|_| panic!("the scenario did not finish within {limit:?}"))
    })
}

/// Asserts every peer holds the same merged state.
fn converged(peers: &[Peer]) {
    let hash = peers[0].mb.state_hash().unwrap();
    for p in peers {
        assert_eq!(p.mb.state_hash().unwrap(), hash);
    }
}

#[test]
fn s1_concurrent_edits_to_different_fields_both_survive_with_three_writers() {
    run(async {
        let peers = cluster(3).await;
        peers[0]
            .mb
            .put("doc", json!({"a": 0, "b": 0, "c": 0}))
            .await
            .unwrap();
        sync_all(&peers).await;
        peers[0]
            .mb
            .put("doc", json!({"a": 1, "b": 0, "c": 0}))
            .await
            .unwrap();
        peers[1]
            .mb
            .put("doc", json!({"a": 0, "b": 2, "c": 0}))
            .await
            .unwrap();
        peers[2]
            .mb
            .put("doc", json!({"a": 0, "b": 0, "c": 3}))
            .await
            .unwrap();
        sync_all(&peers).await;
        for p in &peers {
            assert_eq!(p.json("doc"), Some(json!({"a": 1, "b": 2, "c": 3})));
        }
        converged(&peers);
    });
}

#[test]
fn s2_same_field_same_millisecond_and_counter_is_decided_by_the_writer_key_everywhere() {
    run(async {
        let peers = cluster(2).await;
        // Both clocks show the same millisecond and both HLCs are fresh: equal timestamps.
        peers[0].mb.put("k", json!({"f": "from 0"})).await.unwrap();
        peers[1].mb.put("k", json!({"f": "from 1"})).await.unwrap();
        let ts0 = peers[0].mb.history("k").unwrap()[0].ts;
        let ts1 = peers[1].mb.history("k").unwrap()[0].ts;
        assert_eq!(ts0, ts1, "the test needs a true tie");
        sync_all(&peers).await;
        let winner = if peers[0].key() > peers[1].key() {
            "from 0"
        } else {
            "from 1"
        };
        for p in &peers {
            assert_eq!(p.json("k"), Some(json!({"f": winner})));
        }
        converged(&peers);
    });
}

#[test]
fn s3_concurrent_creation_of_the_same_key_converges_and_keeps_both_fields() {
    run(async {
        let peers = cluster(2).await;
        peers[0].mb.put("new", json!({"x": 1})).await.unwrap();
        peers[1].clock.advance(5);
        peers[1].mb.put("new", json!({"y": 2})).await.unwrap();
        sync_all(&peers).await;
        for p in &peers {
            assert_eq!(p.json("new"), Some(json!({"x": 1, "y": 2})));
        }
        converged(&peers);
    });
}

#[test]
fn s4_deletes_replicate_and_an_older_update_never_resurrects() {
    run(async {
        let peers = cluster(2).await;
        peers[0].mb.put("k", json!({"a": 1})).await.unwrap();
        sync_all(&peers).await;
        // 1 updates (older), 0 deletes (newer): the delete wins wherever it arrives.
        peers[1].mb.put("k", json!({"a": 2})).await.unwrap();
        peers[0].clock.advance(10);
        peers[0].mb.del("k").await.unwrap();
        sync_all(&peers).await;
        for p in &peers {
            assert_eq!(p.mb.get("k").unwrap(), None);
        }
        // Delete vs delete.
        peers[0].mb.put("d", json!(1)).await.unwrap();
        sync_all(&peers).await;
        peers[0].mb.del("d").await.unwrap();
        peers[1].mb.del("d").await.unwrap();
        sync_all(&peers).await;
        for p in &peers {
            assert_eq!(p.mb.get("d").unwrap(), None);
        }
        // Delete then re-create: the new document has only its own fields.
        peers[0].clock.advance(10);
        peers[1].clock.advance(10);
        peers[1].mb.put("k", json!({"b": 1})).await.unwrap();
        sync_all(&peers).await;
        for p in &peers {
            assert_eq!(p.json("k"), Some(json!({"b": 1})));
        }
        converged(&peers);
    });
}

#[test]
fn s4_a_newer_field_update_after_a_concurrent_delete_keeps_only_that_field() {
    run(async {
        let peers = cluster(2).await;
        peers[0].mb.put("k", json!({"a": 1, "b": 1})).await.unwrap();
        sync_all(&peers).await;
        peers[0].mb.del("k").await.unwrap();
        peers[1].clock.advance(10);
        peers[1].mb.put("k", json!({"a": 1, "b": 2})).await.unwrap();
        sync_all(&peers).await;
        for p in &peers {
            assert_eq!(p.json("k"), Some(json!({"b": 2})));
        }
        converged(&peers);
    });
}

#[test]
fn s5_a_late_joiner_applies_every_diff_of_a_large_batch_across_keys() {
    run(async {
        let peers = cluster(2).await;
        let ops = (0..300)
            .map(|i| BatchOp::Put(format!("key{i:03}").into_bytes(), json!({"i": i}).into()))
            .collect();
        peers[1].mb.batch(ops).await.unwrap();
        for i in 0..50 {
            peers[1]
                .mb
                .put(format!("key{i:03}"), json!({"i": i, "v": 2}))
                .await
                .unwrap();
        }
        let late = Peer::new(1_000_000).await;
        late.mb.add_writer(peers[1].key()).await.unwrap();
        assert_eq!(
            deliver(&peers[1], &late, peers[1].key(), u64::MAX).await,
            350
        );
        assert_eq!(late.mb.list(b"key").unwrap().count(), 300);
        assert_eq!(late.json("key007"), Some(json!({"i": 7, "v": 2})));
        assert_eq!(late.json("key299"), Some(json!({"i": 299})));
        assert_eq!(
            late.mb.state_hash().unwrap(),
            peers[1].mb.state_hash().unwrap()
        );
    });
}

#[test]
fn s5_out_of_order_arrival_across_writers_gives_the_same_state() {
    run(async {
        let peers = cluster(3).await;
        for round in 0..6u64 {
            for (i, p) in peers.iter().enumerate() {
                p.clock.advance(1 + i as i64);
                p.mb.put("k", json!({format!("f{}", round % 3): i}))
                    .await
                    .unwrap();
            }
        }
        let (a, b, c) = (&peers[0], &peers[1], &peers[2]);
        // c hears b before a; a hears c before b, one entry at a time.
        deliver(b, c, b.key(), u64::MAX).await;
        deliver(a, c, a.key(), u64::MAX).await;
        for _ in 0..6 {
            deliver(c, a, c.key(), 1).await;
        }
        deliver(b, a, b.key(), u64::MAX).await;
        deliver(a, b, a.key(), 3).await;
        deliver(c, b, c.key(), u64::MAX).await;
        deliver(a, b, a.key(), u64::MAX).await;
        converged(&peers);
    });
}

#[test]
fn s6_an_old_diff_after_many_newer_local_diffs_rebases_from_a_checkpoint() {
    run(async {
        let peers = cluster(2).await;
        // Peer 1 writes first (an old diff), peer 0 writes 200 newer diffs.
        peers[1]
            .mb
            .put("k", json!({"old": true, "n": -1}))
            .await
            .unwrap();
        for n in 0..200 {
            peers[0].clock.advance(1);
            peers[0].mb.put("k", json!({"n": n})).await.unwrap();
        }
        sync_all(&peers).await;
        // The old diff set "old" and "n"; only "n" was overwritten later.
        assert_eq!(peers[0].json("k"), Some(json!({"n": 199, "old": true})));
        converged(&peers);
        // A diff between the last two local ones.
        let p = Peer::new(1_000_000 + 199).await;
        peers[0].mb.add_writer(p.key()).await.unwrap();
        p.mb.put("k", json!({"late": 1})).await.unwrap();
        deliver(&p, &peers[0], p.key(), 1).await;
        assert_eq!(
            peers[0].json("k"),
            Some(json!({"n": 199, "old": true, "late": 1}))
        );
        assert_eq!(peers[0].mb.history("k").unwrap().len(), 202);
    });
}

#[test]
fn s7_duplicate_and_forwarded_delivery_is_idempotent() {
    run(async {
        let peers = cluster(3).await;
        for i in 0..10 {
            peers[1]
                .mb
                .put(format!("k{i}"), json!({"i": i}))
                .await
                .unwrap();
        }
        let (a, b, c) = (&peers[1], &peers[0], &peers[2]);
        deliver(a, b, a.key(), 6).await;
        let before = b.mb.version().unwrap();
        // The same range again changes nothing.
        let again =
            a.mb.feed_store()
                .feed(&a.key())
                .unwrap()
                .proof(0..6)
                .unwrap();
        b.mb.ingest(again).await.unwrap();
        assert_eq!(b.mb.version().unwrap(), before);
        // Forwarded: c gets a's diffs from b, then the rest from a, overlapping.
        deliver(b, c, a.key(), u64::MAX).await;
        let overlap =
            a.mb.feed_store()
                .feed(&a.key())
                .unwrap()
                .proof(3..10)
                .unwrap();
        c.mb.ingest(overlap).await.unwrap();
        deliver(a, b, a.key(), u64::MAX).await;
        converged(&peers);
        assert_eq!(c.mb.list(b"k").unwrap().count(), 10);
    });
}

#[test]
fn s8_a_line_topology_converges_through_the_middle_store() {
    run(async {
        let peers = cluster(3).await;
        let (a, b, c) = (&peers[0], &peers[1], &peers[2]);
        a.mb.put("doc", json!({"from_a": 1})).await.unwrap();
        c.mb.put("doc", json!({"from_c": 1})).await.unwrap();
        b.mb.put("doc", json!({"from_b": 1})).await.unwrap();
        // A and C only ever talk to B; B forwards every writer's feed.
        for _ in 0..2 {
            for w in [a.key(), b.key(), c.key()] {
                deliver(a, b, w, u64::MAX).await;
                deliver(c, b, w, u64::MAX).await;
                deliver(b, a, w, u64::MAX).await;
                deliver(b, c, w, u64::MAX).await;
            }
        }
        for p in &peers {
            assert_eq!(
                p.json("doc"),
                Some(json!({"from_a": 1, "from_b": 1, "from_c": 1}))
            );
        }
        converged(&peers);
    });
}

#[test]
fn s9_diffs_received_but_not_merged_before_a_crash_are_merged_on_reopen() {
    run(async {
        let mut peers = cluster(2).await;
        for i in 0..5 {
            peers[1].mb.put(format!("k{i}"), json!(i)).await.unwrap();
        }
        let writer = peers[1].key();
        // Receive at the feed level only (as the network does), then "crash" before merging.
        let batch = peers[1]
            .mb
            .feed_store()
            .feed(&writer)
            .unwrap()
            .proof(0..5)
            .unwrap();
        peers[0]
            .mb
            .feed_store()
            .feed(&writer)
            .unwrap()
            .ingest(batch)
            .await
            .unwrap();
        assert_eq!(peers[0].mb.get("k0").unwrap(), None);
        // A local write an hour ahead of the writer's: only the persisted HLC, not merging the
        // writer's diffs on reopen, keeps the clock past it.
        peers[0].clock.advance(3_600_000);
        peers[0].mb.put("mine", json!(0)).await.unwrap();
        let clock_before = peers[0].mb.clock();
        assert!(clock_before >= peers[0].mb.history("mine").unwrap()[0].ts);
        let b = peers.remove(0).reopen().await;
        assert_eq!(b.json("k4"), Some(json!(4)));
        assert_eq!(b.mb.writers().unwrap()[0].merged, 5);
        assert!(
            b.mb.clock() >= clock_before,
            "the HLC never goes back across a restart"
        );
        // Merging again (or reopening again) doubles nothing.
        assert_eq!(b.mb.merge().await.unwrap(), 0);
        assert_eq!(b.mb.history("k0").unwrap().len(), 1);
    });
}

#[test]
fn s9_the_hlc_is_persisted_and_never_goes_backwards_across_restarts() {
    run(async {
        let p = Peer::new(5_000).await;
        p.mb.put("k", json!(1)).await.unwrap();
        let t1 = p.mb.history("k").unwrap()[0].ts;
        let p = p.reopen().await;
        assert!(p.mb.clock() >= t1, "the HLC is read back: {}", p.mb.clock());
        p.clock.set(10); // the wall clock went far back while we were down
        // A key never written: no diff of it raises the stamp, only the persisted HLC does.
        p.mb.put("fresh", json!(0)).await.unwrap();
        let fresh = p.mb.history("fresh").unwrap()[0].ts;
        assert!(fresh > t1, "{fresh} is not after {t1}");
        p.mb.put("k", json!(2)).await.unwrap();
        let t2 = p.mb.history("k").unwrap()[1].ts;
        assert!(t2 > fresh);
        assert_eq!(p.json("k"), Some(json!(2)));
    });
}

#[test]
fn s10_clock_skew_backward_jumps_and_counter_overflow_keep_order_and_convergence() {
    run(async {
        let peers = cluster(2).await;
        peers[0].clock.advance(3_600_000); // +1 h
        peers[1].clock.advance(-3_600_000); // -1 h
        peers[0].mb.put("k", json!({"a": "ahead"})).await.unwrap();
        sync_all(&peers).await;
        // The peer behind does not adopt the remote time (2 h ahead of it: flagged), but its
        // write, made after merging the one ahead, is stamped after it: it wins everywhere.
        peers[1].mb.put("k", json!({"a": "behind"})).await.unwrap();
        sync_all(&peers).await;
        converged(&peers);
        assert_eq!(peers[0].json("k"), Some(json!({"a": "behind"})));
        assert!(peers[1].mb.clock().millis() < 1_000_000 + 3_600_000);

        // A clock that jumps back never makes timestamps go back.
        let before = peers[0].mb.clock();
        peers[0].clock.advance(-10_000_000);
        peers[0].mb.put("x", json!(1)).await.unwrap();
        assert!(peers[0].mb.clock() > before);

        // 70,000 writes in one millisecond overflow the 16-bit counter into the next ms.
        let p = Peer::new(1_000).await;
        let ops: Vec<BatchOp> = (0..70_000u32)
            .map(|i| BatchOp::Put(i.to_be_bytes().to_vec(), Value::Bytes(vec![1])))
            .collect();
        p.mb.batch(ops).await.unwrap();
        assert!(p.mb.clock() > Hlc::new(1_001, 0));
        let h = p.mb.history(69_999u32.to_be_bytes()).unwrap();
        assert!(h[0].ts > p.mb.history(0u32.to_be_bytes()).unwrap()[0].ts);
    });
}

#[test]
fn s10_a_far_future_timestamp_is_reported_does_not_drag_the_clock_and_merges_alike() {
    run(async {
        let peers = cluster(3).await;
        let mut events = peers[1].mb.events();
        peers[0].clock.advance(86_400_000); // a day ahead
        peers[0].mb.put("k", json!({"f": "future"})).await.unwrap();
        deliver(&peers[0], &peers[1], peers[0].key(), u64::MAX).await;
        let clock = peers[1].mb.clock();
        assert!(
            clock.millis() < 1_000_000 + 86_400_000,
            "the local clock was not dragged"
        );
        let mut flagged = false;
        while let Ok(e) = events.try_recv() {
            flagged |= matches!(e, Event::FutureTimestamp { .. });
        }
        assert!(flagged);
        // Peer 1's write, made after it merged the future diff, wins on every peer; its clock
        // still stays where it was for every other key.
        peers[1].mb.put("k", json!({"f": "now"})).await.unwrap();
        peers[1].mb.put("other", json!(1)).await.unwrap();
        sync_all(&peers).await;
        for p in &peers {
            assert_eq!(p.json("k"), Some(json!({"f": "now"})));
            assert_eq!(p.mb.conflicts("k").unwrap(), vec![]);
        }
        assert!(peers[1].mb.history("other").unwrap()[0].ts.millis() < 1_000_000 + 86_400_000);
        converged(&peers);
    });
}

/// Two copies of one peer's folder that both write: the same diff feed key, two histories.
async fn equivocating_writer() -> (Peer, Peer) {
    let a = Peer::new(1_000_000).await;
    a.mb.put("shared", json!({"v": 0})).await.unwrap();
    let Peer { mb, clock, dir } = a;
    mb.close().await;
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.path().join(multibee_feed::DB_FILE),
        copy.path().join(multibee_feed::DB_FILE),
    )
    .unwrap();
    let one = Peer {
        mb: multibee_multibee::MultiBee::open_with(dir.path(), crate::support::options(&clock))
            .await
            .unwrap(),
        clock: clock.clone(),
        dir,
    };
    let clock2 = multibee_multibee::ManualClock::new(1_000_000);
    let two = Peer {
        mb: multibee_multibee::MultiBee::open_with(copy.path(), crate::support::options(&clock2))
            .await
            .unwrap(),
        clock: clock2,
        dir: copy,
    };
    one.mb.put("k", json!({"by": "one"})).await.unwrap();
    two.mb.put("k", json!({"by": "two"})).await.unwrap();
    (one, two)
}

#[test]
fn s11_an_equivocating_writer_is_frozen_with_the_same_result_on_every_peer() {
    run(async {
        let (one, two) = equivocating_writer().await;
        assert_eq!(one.key(), two.key());
        let peers = cluster(2).await;
        for p in &peers {
            p.mb.add_writer(one.key()).await.unwrap();
        }
        peers[0].mb.put("k", json!({"other": 1})).await.unwrap();
        sync_all(&peers).await;
        // Peer 0 hears "one" first, peer 1 hears "two" first; each then sees the other.
        deliver(&one, &peers[0], one.key(), u64::MAX).await;
        deliver(&two, &peers[1], two.key(), u64::MAX).await;
        assert_eq!(peers[0].json("k"), Some(json!({"by": "one", "other": 1})));
        let mut events = peers[0].mb.events();
        for (p, other) in [(&peers[0], &two), (&peers[1], &one)] {
            let feed = other.mb.feed_store().feed(&other.key()).unwrap();
            let err = p.mb.ingest(feed.proof(1..2).unwrap()).await.unwrap_err();
            assert!(err.to_string().contains("fork"), "{err}");
        }
        let mut frozen = false;
        while let Ok(e) = events.try_recv() {
            frozen |= matches!(e, Event::WriterFrozen { .. });
        }
        assert!(frozen);
        for p in &peers {
            assert_eq!(p.json("k"), Some(json!({"other": 1})));
            assert_eq!(
                p.mb.get("shared").unwrap(),
                None,
                "the frozen writer's diffs do not count"
            );
            assert!(p.mb.add_writer(one.key()).await.is_err());
        }
        converged(&peers);
    });
}

#[test]
fn s12_bad_signatures_unknown_and_removed_writers_are_rejected() {
    run(async {
        let peers = cluster(2).await;
        peers[1].mb.put("k", json!(1)).await.unwrap();
        let feed = peers[1].mb.feed_store().feed(&peers[1].key()).unwrap();
        let mut forged = feed.proof(0..1).unwrap();
        forged.entries[0][3] ^= 1;
        assert!(peers[0].mb.ingest(forged).await.is_err());
        assert_eq!(peers[0].holds(&peers[1].key()), 0, "nothing stored");
        assert_eq!(peers[0].mb.get("k").unwrap(), None);

        let stranger = Peer::new(1_000_000).await;
        stranger.mb.put("k", json!(2)).await.unwrap();
        let batch = stranger
            .mb
            .feed_store()
            .feed(&stranger.key())
            .unwrap()
            .proof(0..1)
            .unwrap();
        let err = peers[0].mb.ingest(batch.clone()).await.unwrap_err();
        assert!(
            matches!(err, multibee_multibee::Error::UnknownWriter(_)),
            "{err}"
        );

        // A writer removed before anything of it was merged: held, never merged.
        peers[0].mb.add_writer(stranger.key()).await.unwrap();
        peers[0].mb.remove_writer(stranger.key()).await.unwrap();
        peers[0].mb.ingest(batch).await.unwrap();
        assert_eq!(peers[0].mb.get("k").unwrap(), None, "held, not merged");
        assert!(
            peers[0].mb.add_writer(peers[0].key()).await.is_err(),
            "not oneself"
        );
    });
}

/// A writer's diff feed written by hand (outside any peer): its folder and the feed.
async fn foreign_writer() -> (tempfile::TempDir, multibee_feed::Feed) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let feed = store.create_feed().await.unwrap();
    (dir, feed)
}

/// A diff setting key `k` to `value`, stamped at 1,000,000 ms.
fn diff_of_k(value: i64) -> multibee_multibee::DiffRecord {
    multibee_multibee::DiffRecord {
        key: b"k".to_vec(),
        ts: Hlc::new(1_000_000, 0),
        parents: vec![],
        change: Change::Set(Value::Json(json!(value))),
    }
}

#[test]
fn s12_an_entry_that_is_not_a_valid_diff_is_skipped_alike_and_reported() {
    run(async {
        let (_writer_dir, feed) = foreign_writer().await;
        let good = diff_of_k(7);
        let entry = |key: Vec<u8>, r: &multibee_multibee::DiffRecord| {
            multibee_bee::op::Op::Put {
                key: multibee_bee::keyspace::Keyspace::default().encode(&key),
                value: r.encode(),
            }
            .encode_entry()
        };
        let reused = diff_of_k(8);
        feed.append_batch(vec![
            b"not a diff".to_vec(),
            entry(multibee_multibee::diff_key(b"k", good.ts), &good),
            entry(b"mismatched key".to_vec(), &good),
            entry(multibee_multibee::diff_key(b"k", good.ts), &reused),
        ])
        .await
        .unwrap();
        let peers = cluster(2).await;
        for p in &peers {
            p.mb.add_writer(feed.key()).await.unwrap();
        }
        let mut events = peers[0].mb.events();
        for p in &peers {
            p.mb.ingest(feed.proof(0..2).unwrap()).await.unwrap();
            p.mb.ingest(feed.proof(2..4).unwrap()).await.unwrap();
            assert_eq!(p.json("k"), Some(json!(7)));
        }
        let mut invalid = Vec::new();
        while let Ok(e) = events.try_recv() {
            if let Event::InvalidDiff { seq, .. } = e {
                invalid.push(seq);
            }
        }
        assert_eq!(invalid, vec![0, 2, 3]);
        converged(&peers);
    });
}

/// A writer that reuses a key and stamp after a cut: the diff below the cut counts, the reuse
/// after it does not. A peer that had merged both (the reuse refused as invalid) and then
/// applies the cut takes out the entries after it, and only those: it once took out the row of
/// the same key and stamp, which was the diff below the cut, and so diverged from a peer that
/// never read past the cut.
#[test]
fn s12_a_cut_between_a_diff_and_its_reused_stamp_keeps_the_diff() {
    run(async {
        let (_writer_dir, feed) = foreign_writer().await;
        let good = diff_of_k(7);
        let reused = diff_of_k(8);
        let key = multibee_multibee::diff_key(b"k", good.ts);
        feed.append_batch(vec![
            multibee_multibee::DiffRecord::entry(&key, good.encode()),
            multibee_multibee::DiffRecord::entry(&key, reused.encode()),
        ])
        .await
        .unwrap();
        let peers = cluster(2).await;
        peers[0].mb.add_writer(feed.key()).await.unwrap();
        sync_all(&peers).await;
        // Peer 0 reads both entries (the second is refused as a reuse), peer 1 only the first,
        // and removes the writer there: a cut at 1.
        peers[0].mb.ingest(feed.proof(0..2).unwrap()).await.unwrap();
        peers[1].mb.ingest(feed.proof(0..1).unwrap()).await.unwrap();
        for p in &peers {
            assert_eq!(p.json("k"), Some(json!(7)));
        }
        peers[1].mb.remove_writer(feed.key()).await.unwrap();
        sync_all(&peers).await;
        for p in &peers {
            let info = p.mb.writers().unwrap();
            let row = info.iter().find(|w| w.key == feed.key()).unwrap();
            assert_eq!((row.state, row.cut), (WriterState::Removed, Some(1)));
            assert_eq!(p.json("k"), Some(json!(7)), "entry 0 is below the cut");
        }
        converged(&peers);
    });
}

#[test]
fn s13_falsy_values_nested_deletes_and_arrays() {
    run(async {
        let peers = cluster(2).await;
        let doc = json!({"zero": 0, "empty": "", "no": false, "nil": null, "n": {"x": 1, "y": {"z": 2}}, "arr": [1, 2]});
        peers[0].mb.put("d", doc.clone()).await.unwrap();
        sync_all(&peers).await;
        assert_eq!(peers[1].json("d"), Some(doc));
        // Concurrent: 0 deletes a nested field and edits the array; 1 edits a falsy field.
        peers[0].clock.advance(1);
        peers[0].mb.put("d", json!({"zero": 0, "empty": "", "no": false, "nil": null, "n": {"x": 1}, "arr": [3]})).await.unwrap();
        peers[1].clock.advance(2);
        peers[1].mb.put("d", json!({"zero": 5, "empty": "", "no": false, "nil": null, "n": {"x": 1, "y": {"z": 2}}, "arr": [1, 2]})).await.unwrap();
        sync_all(&peers).await;
        let merged =
            json!({"zero": 5, "empty": "", "no": false, "nil": null, "n": {"x": 1}, "arr": [3]});
        for p in &peers {
            assert_eq!(p.json("d"), Some(merged.clone()));
        }
        converged(&peers);
    });
}

#[test]
fn s13_bytes_merge_as_a_whole_value_register() {
    run(async {
        let peers = cluster(2).await;
        peers[0].mb.put("b", vec![1u8, 2]).await.unwrap();
        peers[1].clock.advance(1);
        peers[1].mb.put("b", vec![9u8]).await.unwrap();
        sync_all(&peers).await;
        for p in &peers {
            assert_eq!(p.mb.get("b").unwrap(), Some(Value::Bytes(vec![9])));
        }
    });
}

#[test]
fn s14_removing_and_re_adding_a_writer_while_replicating_is_deterministic() {
    run(async {
        let peers = cluster(3).await;
        let (root, one, two) = (&peers[0], &peers[1], &peers[2]);
        root.mb.put("k", json!({"a": 0})).await.unwrap();
        one.clock.advance(1);
        one.mb.put("k", json!({"a": 1, "b": 1})).await.unwrap();
        two.clock.advance(2);
        two.mb.put("j", json!(2)).await.unwrap();
        sync_all(&peers).await;
        assert_eq!(root.json("k"), Some(json!({"a": 1, "b": 1})));
        // The root removes peer 1: a cut at what it had merged, so peer 1's write stays.
        root.mb.remove_writer(one.key()).await.unwrap();
        assert_eq!(root.json("k"), Some(json!({"a": 1, "b": 1})));
        // Peer 1 keeps writing; every peer holds its feed but does not count past the cut.
        one.mb.put("k", json!({"a": 5, "b": 1})).await.unwrap();
        sync_all(&peers).await;
        for p in [root, two] {
            assert_eq!(p.json("k"), Some(json!({"a": 1, "b": 1})));
            let w = p.mb.writers().unwrap();
            let w = w.iter().find(|w| w.key == one.key()).unwrap();
            assert_eq!(
                (w.state, w.cut, w.removed_by),
                (WriterState::Removed, Some(1), Some(root.key()))
            );
            assert_eq!(w.length, 2, "held");
        }
        // Peer 1 learns of its removal and refuses further writes.
        let err = one.mb.put("k", json!(9)).await.unwrap_err();
        assert!(
            matches!(err, multibee_multibee::Error::Removed { .. }),
            "{err}"
        );
        converged(&peers);
        // Re-added (by another member), all of its diffs count again, everywhere.
        two.mb.add_writer(one.key()).await.unwrap();
        sync_all(&peers).await;
        for p in &peers {
            assert_eq!(p.json("k"), Some(json!({"a": 5, "b": 1})));
        }
        converged(&peers);
        // Expelled: everything it wrote is un-merged, everywhere.
        root.mb.expel_writer(one.key()).await.unwrap();
        sync_all(&peers).await;
        for p in &peers {
            assert_eq!(p.json("k"), Some(json!({"a": 0})));
            assert_eq!(p.json("j"), Some(json!(2)));
        }
        converged(&peers);
    });
}

#[test]
fn s15_applying_one_n_or_all_entries_at_a_time_gives_identical_bytes() {
    run(async {
        let peers = cluster(2).await;
        for i in 0..40u64 {
            let p = &peers[(i % 2) as usize];
            p.clock.advance((i % 3) as i64);
            p.mb.put(format!("k{}", i % 5), json!({format!("f{}", i % 4): i}))
                .await
                .unwrap();
            if i % 7 == 0 {
                p.mb.del(format!("k{}", (i + 1) % 5)).await.unwrap();
            }
        }
        let mut hashes = Vec::new();
        for step in [1, 3, 1000] {
            let r = Peer::new(0).await;
            for p in &peers {
                r.mb.add_writer(p.key()).await.unwrap();
            }
            loop {
                let moved = deliver(&peers[1], &r, peers[1].key(), step).await
                    + deliver(&peers[0], &r, peers[0].key(), step).await;
                if moved == 0 {
                    break;
                }
            }
            hashes.push(r.mb.state_hash().unwrap());
        }
        sync_all(&peers).await;
        assert!(hashes.iter().all(|h| *h == hashes[0]));
        assert_eq!(peers[0].mb.state_hash().unwrap(), hashes[0]);
    });
}

#[test]
fn conflicts_list_the_concurrent_loser_until_a_write_that_saw_it() {
    run(async {
        let peers = cluster(2).await;
        peers[0].mb.put("k", json!({"f": 0, "g": 0})).await.unwrap();
        sync_all(&peers).await;
        peers[0].mb.put("k", json!({"f": 1, "g": 0})).await.unwrap();
        peers[1].clock.advance(1);
        peers[1].mb.put("k", json!({"f": 2, "g": 0})).await.unwrap();
        sync_all(&peers).await;
        for p in &peers {
            let conflicts = p.mb.conflicts("k").unwrap();
            assert_eq!(conflicts.len(), 1, "{conflicts:?}");
            assert_eq!(conflicts[0].writer, peers[0].key());
            assert_eq!(
                conflicts[0].change,
                Change::Fields(vec![FieldOp::Set {
                    path: vec!["f".into()],
                    value: json!(1)
                }])
            );
        }
        // Concurrent edits of different fields are merged, not conflicts.
        peers[0].mb.put("j", json!({"a": 0, "b": 0})).await.unwrap();
        sync_all(&peers).await;
        peers[0].mb.put("j", json!({"a": 1, "b": 0})).await.unwrap();
        peers[1].mb.put("j", json!({"a": 0, "b": 1})).await.unwrap();
        sync_all(&peers).await;
        assert!(peers[0].mb.conflicts("j").unwrap().is_empty());
        // A write made after merging both resolves the conflict everywhere.
        peers[0].clock.advance(10);
        peers[0].mb.put("k", json!({"f": 3, "g": 0})).await.unwrap();
        sync_all(&peers).await;
        for p in &peers {
            assert!(p.mb.conflicts("k").unwrap().is_empty());
        }
    });
}

#[test]
fn changes_stream_local_and_remote_changes_resumably_live_and_by_prefix() {
    run(async {
        let peers = cluster(2).await;
        peers[0].mb.put("a/1", json!(1)).await.unwrap();
        peers[1].mb.put("b/1", json!(2)).await.unwrap();
        sync_all(&peers).await;
        let mut all = peers[0].mb.changes(ChangesOptions::default()).unwrap();
        let first = all.next().await.unwrap().unwrap();
        assert_eq!(
            (first.key.as_slice(), first.value),
            (&b"a/1"[..], Some(json!(1).into()))
        );
        let second = all.next().await.unwrap().unwrap();
        assert_eq!(second.key, b"b/1");
        assert!(all.next().await.is_none());
        // Resume after `second`, live, only "a/".
        let mut live = peers[0]
            .mb
            .changes(ChangesOptions {
                since: second.seq + 1,
                prefix: Some(b"a/".to_vec()),
                live: true,
            })
            .unwrap();
        peers[1].mb.put("b/2", json!(3)).await.unwrap();
        peers[1].mb.del("a/1").await.unwrap();
        sync_all(&peers).await;
        let next = crate::support::within("the delete of a/1 in the live stream", live.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((next.key.as_slice(), next.value), (&b"a/1"[..], None));
    });
}

#[derive(Debug)]
struct Counter;

impl multibee_multibee::Merge for Counter {
    fn merge(
        &self,
        _key: &[u8],
        base: Option<Value>,
        diffs: &[multibee_multibee::Diff],
    ) -> Option<Value> {
        // Every write adds its value to the total, in any order.
        let total = diffs.iter().fold(number(&base), |sum, d| match &d.change {
            Change::Set(v) => sum + number(&Some(v.clone())),
            _ => sum,
        });
        Some(Value::Json(json!(total)))
    }
}

fn number(v: &Option<Value>) -> i64 {
    v.as_ref()
        .and_then(|v| v.as_json())
        .and_then(|j| j.as_i64())
        .unwrap_or(0)
}

#[test]
fn a_user_merge_function_is_used_by_every_peer() {
    run(async {
        let mut peers = Vec::new();
        for _ in 0..2 {
            let dir = tempfile::tempdir().unwrap();
            let clock = multibee_multibee::ManualClock::new(1_000_000);
            let mb = multibee_multibee::MultiBee::open_with(
                dir.path(),
                crate::support::options(&clock).merge(Counter),
            )
            .await
            .unwrap();
            peers.push(Peer { mb, clock, dir });
        }
        let (k0, k1) = (peers[0].key(), peers[1].key());
        peers[0].mb.add_writer(k1).await.unwrap();
        peers[1].mb.add_writer(k0).await.unwrap();
        peers[0].mb.put("n", json!(5)).await.unwrap();
        peers[1].mb.put("n", json!(7)).await.unwrap();
        sync_all(&peers).await;
        for p in &peers {
            assert_eq!(p.json("n"), Some(json!(12)));
        }
    });
}

#[test]
fn diffs_stored_at_the_feed_level_are_merged_in_the_background() {
    run(async {
        let a = Peer::new(1_000_000).await;
        let dir = tempfile::tempdir().unwrap();
        let clock = multibee_multibee::ManualClock::new(1_000_000);
        let options = crate::support::options(&clock).auto_merge(true);
        let b = multibee_multibee::MultiBee::open_with(dir.path(), options)
            .await
            .unwrap();
        b.add_writer(a.key()).await.unwrap();
        let mut changes = b
            .changes(ChangesOptions {
                live: true,
                ..ChangesOptions::default()
            })
            .unwrap();
        a.mb.put("k", json!({"v": 1})).await.unwrap();
        // As the network would: verified and stored into the replica feed, nothing more.
        let batch =
            a.mb.feed_store()
                .feed(&a.key())
                .unwrap()
                .proof(0..1)
                .unwrap();
        b.feed_store()
            .feed(&a.key())
            .unwrap()
            .ingest(batch)
            .await
            .unwrap();
        let change = crate::support::within("k merged in the background", changes.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(change.key, b"k");
        assert_eq!(change.value, Some(json!({"v": 1}).into()));
        b.close().await;
    });
}

#[test]
fn a_patch_made_on_a_stale_read_keeps_fields_changed_elsewhere_where_a_put_reverts_them() {
    run(async {
        let peers = cluster(2).await;
        let (a, b) = (&peers[0], &peers[1]);
        let doc = json!({"title": "draft", "tags": [], "meta": {"x": 1, "y": 2}});
        for key in ["patched", "put"] {
            a.mb.put(key, doc.clone()).await.unwrap();
        }
        sync_all(&peers).await;
        // B's application reads the documents; then A's new titles arrive.
        let stale = b.json("put").unwrap();
        for key in ["patched", "put"] {
            a.mb.patch(key, json!({"title": "final"})).await.unwrap();
        }
        sync_all(&peers).await;
        // B edits from what it read: a patch of the tags, and a put of the whole document.
        b.mb.patch(
            "patched",
            json!({"tags": ["x"], "meta": {"y": null, "z": 3}}),
        )
        .await
        .unwrap();
        let mut whole = stale;
        whole["tags"] = json!(["x"]);
        b.mb.put("put", whole).await.unwrap();
        sync_all(&peers).await;
        for p in &peers {
            let patched = json!({"title": "final", "tags": ["x"], "meta": {"x": 1, "z": 3}});
            assert_eq!(p.json("patched"), Some(patched));
            let reverted = json!({"title": "draft", "tags": ["x"], "meta": {"x": 1, "y": 2}});
            assert_eq!(p.json("put"), Some(reverted));
        }
        converged(&peers);
    });
}

#[test]
fn conditional_writes_see_local_writes_and_merges_alike() {
    use multibee_multibee::{Error, Precondition};
    run(async {
        let peers = cluster(2).await;
        let (a, b) = (&peers[0].mb, &peers[1].mb);
        // Create-only, then a read-modify-write at the revision read.
        let created = a
            .batch_if(
                vec![(b"doc".to_vec(), Precondition::Absent)],
                vec![BatchOp::Put(b"doc".to_vec(), json!({"n": 1}).into())],
            )
            .await
            .unwrap();
        let (rev, _) = a.get_rev("doc").unwrap().unwrap();
        assert_eq!(created.revs, vec![Some(rev)]);
        assert_eq!(created.version, a.version().unwrap());
        let again = a
            .batch_if(
                vec![(b"doc".to_vec(), Precondition::Absent)],
                vec![BatchOp::Put(b"doc".to_vec(), json!({"n": 9}).into())],
            )
            .await;
        assert!(matches!(again, Err(Error::PreconditionFailed { found: Some(r), .. }) if r == rev));
        // A change merged from another writer moves the revision: a write expecting the old
        // one fails and writes nothing, not even its other ops.
        sync_all(&peers).await;
        b.put("doc", json!({"n": 2})).await.unwrap();
        sync_all(&peers).await;
        let (moved, value) = a.get_rev("doc").unwrap().unwrap();
        assert_ne!(moved, rev);
        assert_eq!(value, Value::Json(json!({"n": 2})));
        let version = a.version().unwrap();
        let stale = a
            .batch_if(
                vec![(b"doc".to_vec(), Precondition::Rev(rev))],
                vec![
                    BatchOp::Put(b"other".to_vec(), json!(1).into()),
                    BatchOp::Put(b"doc".to_vec(), json!({"n": 3}).into()),
                ],
            )
            .await;
        assert!(
            matches!(stale, Err(Error::PreconditionFailed { .. })),
            "{stale:?}"
        );
        assert_eq!(a.version().unwrap(), version);
        assert_eq!(a.get("other").unwrap(), None);
        // At the revision it holds now, the write goes through; a put of the same value
        // writes nothing and keeps the revision.
        a.batch_if(
            vec![(b"doc".to_vec(), Precondition::Rev(moved))],
            vec![BatchOp::Put(b"doc".to_vec(), json!({"n": 3}).into())],
        )
        .await
        .unwrap();
        let (now, _) = a.get_rev("doc").unwrap().unwrap();
        a.put("doc", json!({"n": 3})).await.unwrap();
        assert_eq!(a.get_rev("doc").unwrap().unwrap().0, now);
        // Deleted: absent again, and `Present` fails.
        a.del("doc").await.unwrap();
        assert!(a.get_rev("doc").unwrap().is_none());
        let gone = a
            .batch_if(
                vec![(b"doc".to_vec(), Precondition::Present)],
                vec![BatchOp::Del(b"doc".to_vec())],
            )
            .await;
        assert!(matches!(
            gone,
            Err(Error::PreconditionFailed { found: None, .. })
        ));
    });
}

#[test]
fn an_invitation_expires_after_its_time_and_is_used_once() {
    use multibee_multibee::{Error, INVITE_TTL_MS};
    run(async {
        let a = Peer::new(1_000_000).await;
        let (b, c) = (Peer::new(1_000_000).await, Peer::new(1_000_000).await);
        // A peer becomes a member by writing (the database's first writer).
        a.mb.put("x", serde_json::json!(1)).await.unwrap();
        let fresh = a.mb.create_invite().await.unwrap();
        let old = a.mb.create_invite().await.unwrap();
        // Within its time: redeemed once, then refused.
        a.mb.redeem_invite(fresh, b.key()).await.unwrap();
        let again = a.mb.redeem_invite(fresh, c.key()).await;
        assert!(matches!(again, Err(Error::InvalidInvite)), "{again:?}");
        // Past its time: refused, and nothing is written.
        a.clock.set(1_000_000 + INVITE_TTL_MS + 1);
        let version = a.mb.version().unwrap();
        let late = a.mb.redeem_invite(old, c.key()).await;
        assert!(matches!(late, Err(Error::InvalidInvite)), "{late:?}");
        assert_eq!(a.mb.version().unwrap(), version);
        assert!(a.mb.writers().unwrap().iter().all(|w| w.key != c.key()));
        // A new one works; making it dropped the expired one.
        let new = a.mb.create_invite().await.unwrap();
        a.mb.redeem_invite(new, c.key()).await.unwrap();
    });
}
