//! The hyperbee API: subs, checkouts, history, diff, watch, CAS, invalid entries, rebuild.

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
        bee.put("b", "2").await.unwrap(); // same value: not a difference

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
        assert_eq!(keys, vec![b"a".as_slice(), b"c"]);
        assert_eq!(diff[0].left.as_ref().unwrap().value, b"1");
        assert!(diff[0].right.is_none());
        assert!(diff[1].left.is_none());

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
