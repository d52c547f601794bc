//! Causality beats clocks, and the merge holds at every depth: named tests for the problems of
//! issue 12 (skewed clocks, nested objects created concurrently, too-deep documents, the end of
//! HLC time, conflicts that differ between converged peers). Rules: `docs/merge.md`.

use multibee_feed::{Feed, Store};
use multibee_multibee::{Change, DiffRecord, Error, Event, Hlc, MAX_DEPTH, Value, diff_key};
use serde_json::{Value as Json, json};

use crate::support::{Peer, cluster, deliver, run, sync_all};

fn converged(peers: &[Peer]) {
    let hash = peers[0].mb.state_hash().unwrap();
    for p in peers {
        assert_eq!(p.mb.state_hash().unwrap(), hash);
    }
}

/// The (writer, stamp) of every conflict of `key` on `p`.
fn conflicts(p: &Peer, key: &str) -> Vec<(multibee_multibee::FeedKey, Hlc)> {
    let list = p.mb.conflicts(key).unwrap();
    list.into_iter().map(|c| (c.writer, c.ts)).collect()
}

/// A writer outside any peer: a bare feed whose entries the test crafts.
async fn raw_writer() -> (tempfile::TempDir, Store, Feed) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let feed = store.create_feed().await.unwrap();
    (dir, store, feed)
}

fn entry(record: &DiffRecord) -> Vec<u8> {
    DiffRecord::entry(&diff_key(&record.key, record.ts), record.encode())
}

fn record(key: &str, ts: Hlc, value: Json) -> DiffRecord {
    DiffRecord {
        key: key.as_bytes().to_vec(),
        ts,
        parents: vec![],
        change: Change::Set(Value::Json(value)),
    }
}

fn nested(depth: usize) -> Json {
    (0..depth).fold(json!(1), |inner, _| json!({ "d": inner }))
}

#[test]
fn p1_a_write_made_after_merging_a_skewed_write_wins_whatever_the_skew() {
    for skew in [600_000i64, 86_400_000, -86_400_000] {
        run(async {
            let peers = cluster(2).await;
            let (a, b) = (&peers[0], &peers[1]);
            let mut events = a.mb.events();
            b.clock.advance(skew);
            b.mb.put("doc", json!({"v": "b"})).await.unwrap();
            deliver(b, a, b.key(), u64::MAX).await;
            assert_eq!(a.json("doc"), Some(json!({"v": "b"})));
            a.mb.put("doc", json!({"v": "a"})).await.unwrap();
            assert_eq!(a.json("doc"), Some(json!({"v": "a"})), "skew {skew}");
            sync_all(&peers).await;
            for p in &peers {
                assert_eq!(p.json("doc"), Some(json!({"v": "a"})), "skew {skew}");
                assert_eq!(conflicts(p, "doc"), vec![], "skew {skew}");
            }
            converged(&peers);
            let mut flagged = None;
            while let Ok(e) = events.try_recv() {
                if let Event::FutureTimestamp { ts, local_ms, .. } = e {
                    flagged = Some(ts.millis() - local_ms);
                }
            }
            if skew > 60_000 {
                assert_eq!(flagged, Some(skew as u64), "the lead is reported");
                assert!(
                    a.mb.clock().millis() < 1_000_000 + 60_000,
                    "the clock did not follow"
                );
            } else {
                assert_eq!(flagged, None);
            }
        });
    }
}

#[test]
fn p1_a_chain_of_edits_with_each_clock_behind_the_last_ends_with_the_last_edit() {
    run(async {
        let peers = cluster(3).await;
        let (a, b, c) = (&peers[0], &peers[1], &peers[2]);
        b.clock.advance(-3_600_000);
        c.clock.advance(-7_200_000);
        a.mb.patch("doc", json!({"title": "a"})).await.unwrap();
        deliver(a, b, a.key(), u64::MAX).await;
        b.mb.patch("doc", json!({"title": "b"})).await.unwrap();
        deliver(b, c, b.key(), u64::MAX).await;
        c.mb.patch("doc", json!({"title": "c"})).await.unwrap();
        sync_all(&peers).await;
        for p in &peers {
            assert_eq!(p.json("doc"), Some(json!({"title": "c"})));
            assert_eq!(conflicts(p, "doc"), vec![]);
        }
        converged(&peers);
    });
}

#[test]
fn p4_objects_created_concurrently_merge_field_by_field_at_every_depth() {
    run(async {
        let peers = cluster(2).await;
        let (a, b) = (&peers[0], &peers[1]);
        a.mb.put("doc", json!({"title": "t"})).await.unwrap();
        sync_all(&peers).await;
        a.mb.patch("doc", json!({"meta": {"a": 1}})).await.unwrap();
        b.mb.patch("doc", json!({"meta": {"b": 2}})).await.unwrap();
        // Two peers create one key at once, with different nested fields.
        a.mb.put("new", json!({"x": {"y": {"p": 1}}}))
            .await
            .unwrap();
        b.mb.put("new", json!({"x": {"y": {"q": 2}, "z": []}}))
            .await
            .unwrap();
        // The smallest case the random schedules found.
        a.mb.put("f", json!({"f": {"x": 1}, "g": [], "h": [1, 2]}))
            .await
            .unwrap();
        b.mb.patch("f", json!({"": {"y": null}, "f": {"y": {"w": null}}}))
            .await
            .unwrap();
        sync_all(&peers).await;
        for p in &peers {
            let doc = json!({"meta": {"a": 1, "b": 2}, "title": "t"});
            assert_eq!(p.json("doc"), Some(doc));
            let new = json!({"x": {"y": {"p": 1, "q": 2}, "z": []}});
            assert_eq!(p.json("new"), Some(new));
            let f = json!({"": {}, "f": {"x": 1, "y": {}}, "g": [], "h": [1, 2]});
            assert_eq!(p.json("f"), Some(f));
            assert_eq!(conflicts(p, "doc"), vec![], "nothing was lost");
        }
        converged(&peers);
    });
}

#[test]
fn p5_documents_nested_too_deep_are_refused_up_front_and_skipped_from_remotes() {
    run(async {
        let peers = cluster(2).await;
        let (a, b) = (&peers[0], &peers[1]);
        // The limit itself round-trips everywhere.
        a.mb.put("deep", nested(MAX_DEPTH)).await.unwrap();
        sync_all(&peers).await;
        assert_eq!(b.json("deep"), Some(nested(MAX_DEPTH)));
        let length = a.holds(&a.key());
        for depth in [MAX_DEPTH + 1, 128, 1_000] {
            let err = a.mb.put("deep", nested(depth)).await.unwrap_err();
            assert!(matches!(err, Error::TooDeep { .. }), "{err}");
            let err = a.mb.patch("deep", nested(depth)).await.unwrap_err();
            assert!(matches!(err, Error::TooDeep { .. }), "{err}");
        }
        assert_eq!(a.holds(&a.key()), length, "nothing was written");
        assert_eq!(a.json("deep"), Some(nested(MAX_DEPTH)));
        // The key still takes writes.
        a.mb.put("deep", json!(1)).await.unwrap();

        // A remote writer's too-deep diff is skipped alike, and its later diffs still merge.
        let (_dir, _store, feed) = raw_writer().await;
        let too_deep = record("k", Hlc::new(1_000_000, 0), nested(MAX_DEPTH + 1));
        let fine = record("k", Hlc::new(1_000_001, 0), json!("after"));
        feed.append_batch(vec![entry(&too_deep), entry(&fine)])
            .await
            .unwrap();
        let mut events = b.mb.events();
        for p in &peers {
            p.mb.add_writer(feed.key()).await.unwrap();
            p.mb.ingest(feed.proof(0..2).unwrap()).await.unwrap();
            assert_eq!(p.json("k"), Some(json!("after")));
        }
        let mut reasons = Vec::new();
        while let Ok(e) = events.try_recv() {
            if let Event::InvalidDiff { seq, reason, .. } = e {
                reasons.push((seq, reason));
            }
        }
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert_eq!(reasons[0].0, 0);
        assert!(reasons[0].1.contains("levels deep"), "{}", reasons[0].1);
        sync_all(&peers).await;
        converged(&peers);
    });
}

#[test]
fn p6_at_the_end_of_time_a_write_fails_instead_of_vanishing() {
    run(async {
        // A key whose newest diff has the largest stamp takes no further write...
        let (_dir, _store, feed) = raw_writer().await;
        let last = record("k", Hlc(u64::MAX), json!("end"));
        feed.append_batch(vec![entry(&last)]).await.unwrap();
        let p = Peer::new(1_000_000).await;
        p.mb.add_writer(feed.key()).await.unwrap();
        p.mb.ingest(feed.proof(0..1).unwrap()).await.unwrap();
        let length = p.holds(&p.key());
        for _ in 0..2 {
            let err = p.mb.put("k", json!("mine")).await.unwrap_err();
            assert!(matches!(err, Error::ClockExhausted { .. }), "{err}");
        }
        assert_eq!(p.json("k"), Some(json!("end")));
        assert_eq!(p.holds(&p.key()), length, "nothing was written");
        // ...while other keys still do.
        p.mb.put("other", json!(1)).await.unwrap();

        // A clock at the largest timestamp takes no write at all.
        let q = Peer::with(1_000_000, |o| o.max_drift_ms(u64::MAX)).await;
        q.mb.add_writer(feed.key()).await.unwrap();
        q.mb.ingest(feed.proof(0..1).unwrap()).await.unwrap();
        assert_eq!(q.mb.clock(), Hlc(u64::MAX));
        let length = q.holds(&q.key());
        for key in ["a", "a", "b"] {
            let err = q.mb.put(key, json!(1)).await.unwrap_err();
            assert!(matches!(err, Error::ClockExhausted { .. }), "{err}");
        }
        assert_eq!(q.holds(&q.key()), length, "nothing was written");
    });
}

#[test]
fn p7_converged_peers_list_the_same_conflicts() {
    run(async {
        let mut peers = Vec::new();
        for _ in 0..3 {
            peers.push(Peer::with(1_000_000, |o| o.max_drift_ms(10)).await);
        }
        for i in 0..3 {
            for j in 0..3 {
                if i != j {
                    let key = peers[j].key();
                    peers[i].mb.add_writer(key).await.unwrap();
                }
            }
        }
        let (a, b, c) = (&peers[0], &peers[1], &peers[2]);
        c.clock.advance(3_600_000);
        c.mb.put("k", json!("c")).await.unwrap();
        deliver(c, a, c.key(), u64::MAX).await;
        a.mb.put("k", json!("a")).await.unwrap();
        deliver(a, b, a.key(), u64::MAX).await;
        b.mb.put("k", json!("b")).await.unwrap();
        // And a real conflict: two writes of one field that never saw each other.
        a.mb.put("x", json!({"f": 1})).await.unwrap();
        b.mb.put("x", json!({"f": 2})).await.unwrap();
        sync_all(&peers).await;
        converged(&peers);
        for p in &peers {
            assert_eq!(p.json("k"), Some(json!("b")));
            assert_eq!(conflicts(p, "k"), vec![], "each write saw the one before");
            assert_eq!(conflicts(p, "x"), conflicts(a, "x"));
        }
        assert_eq!(conflicts(a, "x").len(), 1);
    });
}

#[test]
fn the_changes_stream_is_a_futures_stream_and_a_cancelled_wait_loses_nothing() {
    use futures::StreamExt;
    run(async {
        let p = Peer::new(1_000_000).await;
        let mut changes =
            p.mb.changes(multibee_multibee::ChangesOptions {
                live: true,
                ..Default::default()
            })
            .unwrap();
        // A wait cancelled before anything happened...
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(1), changes.next()).await;
        assert!(waited.is_err());
        p.mb.put("a", json!(1)).await.unwrap();
        p.mb.put("b", json!(2)).await.unwrap();
        // ...and the stream still yields every change, in order.
        let two = changes
            .into_stream()
            .take(2)
            .map(|c| c.unwrap().key)
            .collect();
        let got: Vec<_> = crate::support::within("two changes in the live stream", two).await;
        assert_eq!(got, vec![b"a".to_vec(), b"b".to_vec()]);
    });
}

#[test]
fn membership_operations_of_non_members_and_removals_of_strangers_are_rejected_alike() {
    use multibee_multibee::{MemberOp, MemberRecord};
    run(async {
        let peers = cluster(2).await;
        let (root, other) = (&peers[0], &peers[1]);
        // W is a member whose feed (crafted) removes a writer that is not one; V is expelled
        // before the operation it wrote, which then does not count.
        let (_wd, _ws, w) = raw_writer().await;
        let (_vd, _vs, v) = raw_writer().await;
        let stranger = [42u8; 32];
        let far = Hlc::new(9_000_000, 0);
        let remove = MemberRecord {
            ts: far,
            op: MemberOp::Remove {
                writer: stranger,
                cut: 0,
            },
        };
        w.append_batch(vec![remove.entry()]).await.unwrap();
        let add = MemberRecord {
            ts: far,
            op: MemberOp::Add { writer: stranger },
        };
        v.append_batch(vec![add.entry()]).await.unwrap();
        root.mb.add_writer(w.key()).await.unwrap();
        root.mb.add_writer(v.key()).await.unwrap();
        root.mb.expel_writer(v.key()).await.unwrap();
        for p in &peers {
            let mut events = p.mb.events();
            if !std::ptr::eq(p, root) {
                deliver(root, p, root.key(), u64::MAX).await;
            }
            p.mb.ingest(w.proof(0..1).unwrap()).await.unwrap();
            p.mb.ingest(v.proof(0..1).unwrap()).await.unwrap();
            let mut rejected = Vec::new();
            while let Ok(e) = events.try_recv() {
                if let Event::MembershipRejected { author, reason, .. } = e {
                    rejected.push((author, reason));
                }
            }
            rejected.sort();
            let mut want = vec![
                (
                    w.key(),
                    "it removes a writer that is not a member".to_string(),
                ),
                (v.key(), "its author was removed before it".to_string()),
            ];
            want.sort();
            assert_eq!(rejected, want);
            let keys: Vec<_> = p.mb.writers().unwrap().iter().map(|w| w.key.0).collect();
            assert!(!keys.contains(&stranger), "the stranger is no member");
        }
        assert!(other.mb.writers().unwrap().iter().any(|x| x.key == w.key()));
    });
}
