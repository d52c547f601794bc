//! One test per failure of multi-hyperbee listed in DESIGN.md ("Lessons from
//! multi-hyperbee"): each would have caught it.

use multibee_multibee::{Change, FieldOp, Hlc};
use serde_json::json;

use crate::support::{Peer, cluster, deliver, run, sync_all};

#[test]
fn lesson_same_millisecond_writes_to_one_field_do_not_swap_values() {
    run(async {
        let peers = cluster(2).await;
        peers[0].mb.put("k", json!({"f": 0})).await.unwrap();
        peers[1].mb.put("k", json!({"f": 1})).await.unwrap();
        sync_all(&peers).await;
        // Both end with the same value, not each with the other's.
        assert_eq!(peers[0].json("k"), peers[1].json("k"));
    });
}

#[test]
fn lesson_two_peers_creating_the_same_key_concurrently_do_not_diverge() {
    run(async {
        let peers = cluster(2).await;
        peers[0]
            .mb
            .put("new", json!({"by": 0, "a": 1}))
            .await
            .unwrap();
        peers[1]
            .mb
            .put("new", json!({"by": 1, "b": 1}))
            .await
            .unwrap();
        sync_all(&peers).await;
        assert_eq!(
            peers[0].mb.state_hash().unwrap(),
            peers[1].mb.state_hash().unwrap()
        );
        let doc = peers[0].json("new").unwrap();
        assert_eq!((doc["a"].clone(), doc["b"].clone()), (json!(1), json!(1)));
    });
}

#[test]
fn lesson_a_late_joiner_applies_every_diff_of_a_batch_and_persists_its_cursor() {
    run(async {
        let peers = cluster(1).await;
        for i in 0..20 {
            peers[0].mb.put(format!("k{i}"), json!(i)).await.unwrap();
        }
        let late = Peer::new(1_000_000).await;
        late.mb.add_writer(peers[0].key()).await.unwrap();
        deliver(&peers[0], &late, peers[0].key(), 20).await;
        let late = late.reopen().await;
        assert_eq!(late.mb.list(b"k").unwrap().count(), 20);
        assert_eq!(late.mb.writers().unwrap()[0].merged, 20);
    });
}

#[test]
fn lesson_deletes_replicate() {
    run(async {
        let peers = cluster(2).await;
        peers[0].mb.put("k", json!(1)).await.unwrap();
        sync_all(&peers).await;
        peers[0].clock.advance(1);
        peers[0].mb.del("k").await.unwrap();
        sync_all(&peers).await;
        assert_eq!(peers[1].mb.get("k").unwrap(), None);
    });
}

#[test]
fn lesson_remote_timestamps_advance_the_local_clock() {
    run(async {
        let peers = cluster(2).await;
        peers[0].clock.advance(30_000); // ahead, within the 60 s bound
        peers[0].mb.put("k", json!({"f": "ahead"})).await.unwrap();
        sync_all(&peers).await;
        let remote = peers[0].mb.history("k").unwrap()[0].ts;
        assert!(peers[1].mb.clock() >= remote);
        // So peer 1's next write, made after it saw the remote one, wins.
        peers[1].mb.put("k", json!({"f": "after"})).await.unwrap();
        sync_all(&peers).await;
        assert_eq!(peers[0].json("k"), Some(json!({"f": "after"})));
    });
}

#[test]
fn lesson_falsy_old_values_are_not_resent_as_missing() {
    run(async {
        let peers = cluster(2).await;
        peers[0]
            .mb
            .put("k", json!({"zero": 0, "empty": "", "no": false, "x": 1}))
            .await
            .unwrap();
        sync_all(&peers).await;
        // Peer 0 edits the falsy fields; peer 1 concurrently edits only x.
        peers[0]
            .mb
            .put("k", json!({"zero": 1, "empty": "e", "no": true, "x": 1}))
            .await
            .unwrap();
        peers[1]
            .mb
            .put("k", json!({"zero": 0, "empty": "", "no": false, "x": 2}))
            .await
            .unwrap();
        let mine = peers[1].mb.history("k").unwrap().pop().unwrap();
        assert_eq!(
            mine.change,
            Change::Fields(vec![FieldOp::Set {
                path: vec!["x".into()],
                value: json!(2)
            }]),
            "an unchanged falsy field is not part of the diff"
        );
        sync_all(&peers).await;
        for p in &peers {
            assert_eq!(
                p.json("k"),
                Some(json!({"zero": 1, "empty": "e", "no": true, "x": 2}))
            );
        }
    });
}

#[test]
fn lesson_metadata_in_a_read_modify_write_value_is_never_taken_as_the_timestamp() {
    run(async {
        let peers = cluster(2).await;
        peers[0]
            .mb
            .put("k", json!({"v": 1, "_timestamp": 1, "_writer": "x"}))
            .await
            .unwrap();
        sync_all(&peers).await;
        peers[1].clock.advance(5);
        // Peer 1 reads, modifies and writes back the whole document, metadata-looking fields and
        // all: its write still gets a fresh timestamp and wins.
        let mut doc = peers[1].json("k").unwrap();
        doc["v"] = json!(2);
        peers[1].mb.put("k", doc).await.unwrap();
        let h = peers[1].mb.history("k").unwrap();
        assert!(h[1].ts > h[0].ts);
        assert!(h[1].ts > Hlc::new(1_000_000, 0));
        sync_all(&peers).await;
        assert_eq!(peers[0].json("k").unwrap()["v"], json!(2));
    });
}

#[test]
fn lesson_keys_that_are_prefixes_of_other_keys_do_not_share_diffs() {
    run(async {
        let peers = cluster(2).await;
        peers[0].mb.put("a", json!({"f": 1})).await.unwrap();
        peers[0].mb.put("ab", json!({"f": 2})).await.unwrap();
        peers[0].mb.put("a\0", json!({"f": 3})).await.unwrap();
        sync_all(&peers).await;
        for p in &peers {
            assert_eq!(p.mb.history("a").unwrap().len(), 1);
            assert_eq!(p.json("a"), Some(json!({"f": 1})));
            assert_eq!(p.json("ab"), Some(json!({"f": 2})));
        }
    });
}

#[test]
fn lesson_store_and_diff_writes_are_one_transaction_and_survive_reopening() {
    run(async {
        let p = Peer::new(1_000_000).await;
        for i in 0..10 {
            p.mb.put("k", json!({"i": i})).await.unwrap();
        }
        let p = p.reopen().await;
        let diffs = p.mb.feed_store().feed(&p.key()).unwrap().length();
        assert_eq!(diffs, 10);
        assert_eq!(p.mb.history("k").unwrap().len(), 10);
        assert_eq!(p.json("k"), Some(json!({"i": 9})));
        assert_eq!(p.mb.version().unwrap(), 10);
    });
}
