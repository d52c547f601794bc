//! The hyperbee API: subs, checkouts, history, diff, watch, CAS, invalid entries, rebuild,
//! and where hyperbee's semantics are subtle: deletes of absent keys, diffs of equal values.

use multibee_bee::keyspace::Keyspace;
use multibee_bee::op::Op;
use multibee_bee::{BatchOp, Bee, Change, Error, Expect, HistoryOptions, RangeOptions};
use multibee_feed::Store;

use crate::{pairs, run};

async fn fresh(dir: &std::path::Path) -> Bee {
    let store = Store::open(dir).unwrap();
    Bee::open(store.create_feed().await.unwrap()).await.unwrap()
}

#[test]
fn subs_at_the_edges_of_a_prefix_never_leak() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let bee = fresh(dir.path()).await;
        let a = bee.sub("a");
        let ab = bee.sub("ab");
        let a_nested = a.sub("b");
        let weird = bee.sub(b"a\0");
        bee.put("a", "plain a").await.unwrap();
        bee.put("ab", "plain ab").await.unwrap();
        bee.put(b"a\xff\xff", "plain a-ff").await.unwrap();
        a.put("", "a:empty").await.unwrap();
        a.put("x", "a:x").await.unwrap();
        a.put(b"\xff\xff", "a:ff").await.unwrap();
        ab.put("x", "ab:x").await.unwrap();
        a_nested.put("x", "a/b:x").await.unwrap();
        weird.put("x", "a0:x").await.unwrap();

        let keys = |b: &Bee| -> Vec<Vec<u8>> {
            pairs(b.range(&RangeOptions::all()).unwrap())
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        };
        assert_eq!(
            keys(&bee),
            vec![b"a".to_vec(), b"ab".to_vec(), b"a\xff\xff".to_vec()]
        );
        assert_eq!(
            keys(&a),
            vec![Vec::new(), b"x".to_vec(), b"\xff\xff".to_vec()]
        );
        assert_eq!(keys(&ab), vec![b"x".to_vec()]);
        assert_eq!(keys(&a_nested), vec![b"x".to_vec()]);
        assert_eq!(keys(&weird), vec![b"x".to_vec()]);
        assert_eq!(a.get("x").unwrap(), Some(b"a:x".to_vec()));
        assert_eq!(bee.get("x").unwrap(), None);
        assert_eq!(
            a.peek(&RangeOptions::all().reverse())
                .unwrap()
                .unwrap()
                .value,
            b"a:ff"
        );
        // A sub's history holds only its own operations.
        let history: Vec<Change> = ab
            .history(&HistoryOptions::default())
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].key, b"x");
    });
}

#[test]
fn checkouts_are_frozen_and_cannot_write_or_see_the_future() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let bee = fresh(dir.path()).await;
        bee.put("k", "1").await.unwrap();
        let v1 = bee.version().unwrap();
        let snap = bee.checkout(v1).unwrap();
        bee.put("k", "2").await.unwrap();
        bee.put("j", "3").await.unwrap();
        assert_eq!(snap.get("k").unwrap(), Some(b"1".to_vec()));
        assert_eq!(snap.get("j").unwrap(), None);
        assert_eq!(snap.version().unwrap(), v1);
        assert!(matches!(snap.put("k", "x").await, Err(Error::ReadOnly(_))));
        assert!(matches!(
            bee.checkout(99),
            Err(Error::FutureVersion { asked: 99, .. })
        ));
        assert_eq!(bee.checkout(0).unwrap().get("k").unwrap(), None);
    });
}

#[test]
fn cas_by_seq_and_value() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let bee = fresh(dir.path()).await;
        let seq = bee.put_cas("k", "1", Expect::Absent).await.unwrap();
        assert_eq!(bee.get_entry("k").unwrap().unwrap().seq, seq);
        assert!(matches!(
            bee.put_cas("k", "2", Expect::Absent).await,
            Err(Error::CasFailed { .. })
        ));
        assert!(matches!(
            bee.put_cas("k", "2", Expect::Seq(seq + 1)).await,
            Err(Error::CasFailed { .. })
        ));
        bee.put_cas("k", "2", Expect::Seq(seq)).await.unwrap();
        assert!(matches!(
            bee.del_cas("k", Expect::Value(b"1".to_vec())).await,
            Err(Error::CasFailed { .. })
        ));
        bee.del_cas("k", Expect::Value(b"2".to_vec()))
            .await
            .unwrap();
        assert_eq!(bee.get("k").unwrap(), None);
        // A failed CAS appends nothing.
        assert_eq!(bee.version().unwrap(), 3);
    });
}

#[test]
fn history_diff_and_live_streams() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let bee = fresh(dir.path()).await;
        bee.batch(vec![
            BatchOp::Put(b"a".to_vec(), b"1".to_vec()),
            BatchOp::Put(b"b".to_vec(), b"2".to_vec()),
        ])
        .await
        .unwrap();
        let v2 = bee.version().unwrap();
        bee.del("a").await.unwrap();
        bee.put("c", "3").await.unwrap();
        bee.put("b", "2").await.unwrap(); // same value, a new entry: a difference

        let all: Vec<Change> = bee
            .history(&HistoryOptions::default())
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            all.iter().map(|c| c.seq).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
        assert_eq!(
            all[2],
            Change {
                seq: 2,
                key: b"a".to_vec(),
                value: None
            }
        );
        let newest_first: Vec<u64> = bee
            .history(&HistoryOptions {
                gte: 1,
                lt: Some(4),
                reverse: true,
            })
            .unwrap()
            .map(|c| c.unwrap().seq)
            .collect();
        assert_eq!(newest_first, vec![3, 2, 1]);

        let diff = bee
            .diff(v2, bee.version().unwrap(), &RangeOptions::all())
            .unwrap();
        let keys: Vec<&[u8]> = diff.iter().map(|d| d.key.as_slice()).collect();
        assert_eq!(keys, vec![b"a".as_slice(), b"b", b"c"]);
        assert_eq!(diff[0].left.as_ref().unwrap().value, b"1");
        assert!(diff[0].right.is_none());
        assert_eq!(diff[1].left.as_ref().unwrap().seq, 1);
        assert_eq!(diff[1].right.as_ref().unwrap().seq, 4);
        assert!(diff[2].left.is_none());

        // Live history: the backlog, then new writes as they commit.
        let mut live = bee.live_history(3);
        assert_eq!(live.next().await.unwrap().unwrap().seq, 3);
        assert_eq!(live.next().await.unwrap().unwrap().seq, 4);
        let writer = bee.clone();
        let write = tokio::spawn(async move { writer.put("d", "4").await.unwrap() });
        let next = live.next().await.unwrap().unwrap();
        assert_eq!((next.seq, next.key), (5, b"d".to_vec()));
        write.await.unwrap();

        // Watch: only changes inside the range wake it.
        let mut watch = bee.watch(RangeOptions::all().gte("m").lt("n")).unwrap();
        let writer = bee.clone();
        let writes = tokio::spawn(async move {
            writer.put("a", "outside").await.unwrap();
            writer.put("mango", "inside").await.unwrap();
        });
        let event = watch.next().await.unwrap().unwrap();
        assert_eq!(event.changes.len(), 1);
        assert_eq!(event.changes[0].key, b"mango");
        writes.await.unwrap();
    });
}

#[test]
fn an_entry_that_is_not_an_op_is_reported_and_skipped_the_same_way_everywhere() {
    let (wd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run(async {
        let store = Store::open(wd.path()).unwrap();
        let feed = store.create_feed().await.unwrap();
        let bee = Bee::open(feed.clone()).await.unwrap();
        bee.put("a", "1").await.unwrap();
        // Someone appends garbage to the feed directly, then more ops.
        feed.append(b"\xffnot an op".to_vec()).await.unwrap();
        bee.put("b", "2").await.unwrap();
        let history: Vec<_> = bee.history(&HistoryOptions::default()).unwrap().collect();
        assert!(matches!(
            &history[1],
            Err(Error::InvalidEntry { seq: 1, .. })
        ));
        assert_eq!(history[2].as_ref().unwrap().key, b"b");
        assert_eq!(bee.get("b").unwrap(), Some(b"2".to_vec()));

        let reader = Store::open(rd.path()).unwrap();
        let replica = Bee::open(reader.replica(feed.key()).await.unwrap())
            .await
            .unwrap();
        replica.ingest(feed.proof(0..3).unwrap()).await.unwrap();
        assert_eq!(
            pairs(replica.range(&RangeOptions::all()).unwrap()),
            pairs(bee.range(&RangeOptions::all()).unwrap())
        );
    });
}

#[test]
fn rebuild_and_reopen_catch_up_from_the_feed() {
    let dir = tempfile::tempdir().unwrap();
    let key = run(async {
        let bee = fresh(dir.path()).await;
        for i in 0..200u32 {
            bee.put(format!("k{:03}", i % 50), i.to_string())
                .await
                .unwrap();
        }
        let before = pairs(bee.range(&RangeOptions::all()).unwrap());
        bee.rebuild().await.unwrap();
        assert_eq!(pairs(bee.range(&RangeOptions::all()).unwrap()), before);
        // Entries appended behind the bee's back are indexed on the next open.
        bee.feed()
            .append(
                multibee_bee::op::Op::Put {
                    key: vec![1, b'z'],
                    value: b"late".to_vec(),
                }
                .encode_entry(),
            )
            .await
            .unwrap();
        bee.feed().key()
    });
    run(async {
        let store = Store::open(dir.path()).unwrap();
        let bee = Bee::open(store.feed(&key).unwrap()).await.unwrap();
        assert_eq!(bee.version().unwrap(), 201);
        assert_eq!(bee.get("z").unwrap(), Some(b"late".to_vec()));
        assert_eq!(bee.checkout(200).unwrap().get("z").unwrap(), None);
    });
}

/// Every operation of the history, as (seq, key, value).
fn history(bee: &Bee) -> Vec<Change> {
    bee.history(&HistoryOptions::default())
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn deleting_an_absent_key_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let bee = fresh(dir.path()).await;
        assert_eq!(bee.del("never").await.unwrap(), None, "on an empty bee");
        assert_eq!(bee.version().unwrap(), 0);
        bee.put("k", "1").await.unwrap();
        bee.sub("s").put("in a sub", "1").await.unwrap();
        assert_eq!(bee.del("k").await.unwrap(), Some(2));
        let (version, before) = (bee.version().unwrap(), history(&bee));
        assert_eq!(version, 3);

        // Never set, set then deleted, and set only in another keyspace.
        assert_eq!(bee.del("never").await.unwrap(), None);
        assert_eq!(bee.del("k").await.unwrap(), None);
        assert_eq!(bee.del("in a sub").await.unwrap(), None);
        assert_eq!(bee.sub("s").del("k").await.unwrap(), None);
        // A delete CAS that expects the key absent passes and appends nothing; one that
        // expects a value fails.
        assert_eq!(bee.del_cas("k", Expect::Absent).await.unwrap(), None);
        assert!(matches!(
            bee.del_cas("k", Expect::Value(b"1".to_vec())).await,
            Err(Error::CasFailed { .. })
        ));
        assert!(matches!(
            bee.del_cas("k", Expect::Seq(0)).await,
            Err(Error::CasFailed { .. })
        ));
        // A batch of such deletes returns the version as it was.
        let ops = vec![BatchOp::Del(b"k".to_vec()), BatchOp::Del(b"x".to_vec())];
        assert_eq!(bee.batch(ops).await.unwrap(), version);
        assert_eq!(bee.batch(Vec::new()).await.unwrap(), version);

        assert_eq!(bee.version().unwrap(), version);
        assert_eq!(history(&bee), before);
        assert_eq!(bee.sub("s").get("in a sub").unwrap(), Some(b"1".to_vec()));
        // The next write lands where it would have without those deletes.
        assert_eq!(bee.put("k", "2").await.unwrap(), version);
    });
}

#[test]
fn a_batch_appends_its_puts_and_only_the_deletes_of_keys_that_are_set() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let bee = fresh(dir.path()).await;
        bee.put("x", "0").await.unwrap();
        let del = |k: &str| BatchOp::Del(k.as_bytes().to_vec());
        let put = |k: &str, v: &str| BatchOp::Put(k.as_bytes().to_vec(), v.as_bytes().to_vec());
        let version = bee
            .batch(vec![
                del("absent"),
                put("a", "1"),
                del("a"), // set earlier in the batch: appended
                del("a"), // absent again: nothing
                del("x"), // set at the head: appended
                del("x"),
                put("b", "2"),
                del("absent"),
            ])
            .await
            .unwrap();
        assert_eq!(version, 5);
        let change = |seq, key: &str, value: Option<&str>| Change {
            seq,
            key: key.as_bytes().to_vec(),
            value: value.map(|v| v.as_bytes().to_vec()),
        };
        assert_eq!(
            history(&bee),
            vec![
                change(0, "x", Some("0")),
                change(1, "a", Some("1")),
                change(2, "a", None),
                change(3, "x", None),
                change(4, "b", Some("2")),
            ]
        );
        assert_eq!(bee.get("a").unwrap(), None);
        assert_eq!(bee.get("x").unwrap(), None);
        assert_eq!(bee.get_entry("b").unwrap().unwrap().seq, 4);
        // A batch of puts and absent deletes only: just the puts.
        let version = bee
            .batch(vec![del("a"), put("c", "3"), del("zz")])
            .await
            .unwrap();
        assert_eq!(version, 6);
        assert_eq!(bee.get_entry("c").unwrap().unwrap().seq, 5);
    });
}

#[test]
fn diff_compares_entries_so_a_same_value_re_put_is_a_difference() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let bee = fresh(dir.path()).await;
        bee.put("same", "v").await.unwrap(); // 0
        bee.put("gone", "v").await.unwrap(); // 1
        bee.put("still", "v").await.unwrap(); // 2
        let from = bee.version().unwrap();
        bee.put("same", "v").await.unwrap(); // 3: same value again
        bee.del("gone").await.unwrap(); // 4
        bee.put("gone", "v").await.unwrap(); // 5: deleted and put back as it was
        bee.put("brief", "v").await.unwrap(); // 6
        bee.del("brief").await.unwrap(); // 7: absent on both sides
        let to = bee.version().unwrap();

        let diff = bee.diff(from, to, &RangeOptions::all()).unwrap();
        let seen: Vec<(&[u8], Option<u64>, Option<u64>)> = diff
            .iter()
            .map(|d| {
                let seq = |e: &Option<multibee_bee::Entry>| e.as_ref().map(|e| e.seq);
                (d.key.as_slice(), seq(&d.left), seq(&d.right))
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (b"gone".as_slice(), Some(1), Some(5)),
                (b"same".as_slice(), Some(0), Some(3)),
            ]
        );
        assert!(diff.iter().all(|d| {
            d.left.as_ref().unwrap().value == b"v" && d.right.as_ref().unwrap().value == b"v"
        }));
        // The other way round swaps the sides.
        let back = bee.diff(to, from, &RangeOptions::all()).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].left, diff[0].right);
        assert_eq!(back[0].right, diff[0].left);
        // Ranges and limits apply as to any diff.
        let only = bee
            .diff(from, to, &RangeOptions::all().gt("gone").reverse().limit(1))
            .unwrap();
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].key, b"same");
        assert!(bee.diff(to, to, &RangeOptions::all()).unwrap().is_empty());
    });
}

#[test]
fn watch_wakes_on_a_same_value_re_put() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let bee = fresh(dir.path()).await;
        let first = bee.put("k", "v").await.unwrap();
        let mut watch = bee.watch(RangeOptions::all()).unwrap();
        let writer = bee.clone();
        let write = tokio::spawn(async move {
            assert_eq!(writer.del("absent").await.unwrap(), None);
            writer.put("k", "v").await.unwrap()
        });
        let event = watch.next().await.unwrap().unwrap();
        let second = write.await.unwrap();
        assert_eq!((event.from, event.to), (1, 2));
        assert_eq!(event.changes.len(), 1);
        let change = &event.changes[0];
        assert_eq!(change.key, b"k");
        assert_eq!(change.left.as_ref().map(|e| e.seq), Some(first));
        assert_eq!(change.right.as_ref().map(|e| e.seq), Some(second));
    });
}

#[test]
fn a_replica_indexes_an_old_style_delete_of_an_absent_key_like_the_writer() {
    let (wd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run(async {
        let store = Store::open(wd.path()).unwrap();
        let feed = store.create_feed().await.unwrap();
        let bee = Bee::open(feed.clone()).await.unwrap();
        bee.put("a", "1").await.unwrap();
        // An older writer appended a delete entry even for a key that was absent.
        let old_del = |key: &[u8]| {
            Op::Del {
                key: Keyspace::default().encode(key),
            }
            .encode_entry()
        };
        feed.append(old_del(b"ghost")).await.unwrap(); // 1
        feed.append(old_del(b"a")).await.unwrap(); // 2: a real delete
        feed.append(old_del(b"a")).await.unwrap(); // 3: absent again
        bee.put("ghost", "now").await.unwrap(); // 4 (indexes 1..4 first)
        bee.put("a", "2").await.unwrap(); // 5
        assert_eq!(bee.version().unwrap(), 6);
        assert_eq!(bee.checkout(2).unwrap().get("ghost").unwrap(), None);
        assert_eq!(
            bee.checkout(2).unwrap().get("a").unwrap(),
            Some(b"1".to_vec())
        );
        assert_eq!(bee.checkout(4).unwrap().get("a").unwrap(), None);
        // The old entries stay in the history; no diff reports a key absent on both sides.
        assert_eq!(history(&bee).len(), 6);
        assert!(
            bee.diff(0, 2, &RangeOptions::all().gte("ghost"))
                .unwrap()
                .is_empty()
        );
        assert!(
            bee.diff(3, 4, &RangeOptions::all().lt("b"))
                .unwrap()
                .is_empty()
        );

        let reader = Store::open(rd.path()).unwrap();
        let replica = Bee::open(reader.replica(feed.key()).await.unwrap())
            .await
            .unwrap();
        replica.ingest(feed.proof(0..3).unwrap()).await.unwrap();
        replica.ingest(feed.proof(3..6).unwrap()).await.unwrap();
        assert_eq!(replica.version().unwrap(), 6);
        assert_eq!(history(&replica), history(&bee));
        let entries = |b: &Bee| {
            b.range(&RangeOptions::all())
                .unwrap()
                .map(Result::unwrap)
                .collect::<Vec<_>>()
        };
        for v in 0..=6 {
            let (w, r) = (bee.checkout(v).unwrap(), replica.checkout(v).unwrap());
            assert_eq!(entries(&w), entries(&r), "at {v}");
            for key in ["a", "ghost"] {
                assert_eq!(w.get_entry(key).unwrap(), r.get_entry(key).unwrap());
            }
            for to in 0..=6 {
                assert_eq!(
                    bee.diff(v, to, &RangeOptions::all()).unwrap(),
                    replica.diff(v, to, &RangeOptions::all()).unwrap(),
                    "diff {v} -> {to}"
                );
            }
        }
        // And re-deriving the writer's index from its feed gives the same answers.
        bee.rebuild().await.unwrap();
        assert_eq!(
            entries(&bee.checkout(4).unwrap()),
            entries(&replica.checkout(4).unwrap())
        );
        assert_eq!(entries(&bee), entries(&replica));
    });
}
