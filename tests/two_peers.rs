//! Two served peers that count each other.

use serde_json::json;

use crate::common::{Peer, json, wait_change};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_show_up_live_and_concurrent_edits_merge() {
    let a = Peer::start().await;
    let b = Peer::start().await;
    a.served.add_writer(b.key()).await.unwrap();
    b.served.add_writer(a.key()).await.unwrap();
    b.connect(&a).await;

    // A -> B, seen in B's live changes stream and by `get`.
    let draft = json(json!({"title": "draft", "tags": []}));
    a.mb.put("doc", draft.clone()).await.unwrap();
    wait_change(&b.mb, "doc", &draft).await;
    assert_eq!(b.mb.get("doc").unwrap(), Some(draft.clone()));

    // B -> A.
    let note = json(json!({"text": "from b"}));
    b.mb.put("note", note.clone()).await.unwrap();
    wait_change(&a.mb, "note", &note).await;
    assert_eq!(a.mb.get("note").unwrap(), Some(note));

    // Concurrent edits of two fields of one document: made while the peers are apart, so
    // that neither has seen the other's, then exchanged.
    a.disconnect(&b).await;
    a.mb.put("doc", json(json!({"title": "final", "tags": []})))
        .await
        .unwrap();
    b.mb.put("doc", json(json!({"title": "draft", "tags": ["x"]})))
        .await
        .unwrap();
    b.connect(&a).await;
    a.wait_merged(&[&b]).await;
    b.wait_merged(&[&a]).await;

    let merged = Some(json(json!({"title": "final", "tags": ["x"]})));
    assert_eq!(a.mb.get("doc").unwrap(), merged);
    assert_eq!(b.mb.get("doc").unwrap(), merged);
    assert_eq!(a.mb.state_hash().unwrap(), b.mb.state_hash().unwrap());
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_counted_through_the_multibee_after_serving_is_replicated() {
    let a = Peer::start().await;
    let b = Peer::start().await;
    b.connect(&a).await;
    // Counted on the MultiBee itself, not through `Served`, after both are served.
    b.mb.add_writer(a.key()).await.unwrap();
    let doc = json(json!({"from": "a"}));
    a.mb.put("doc", doc.clone()).await.unwrap();
    wait_change(&b.mb, "doc", &doc).await;
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_writer_is_held_past_its_cut_but_not_merged() {
    let a = Peer::start().await;
    let b = Peer::start().await;
    b.served.add_writer(a.key()).await.unwrap();
    b.connect(&a).await;
    let first = json(json!(1));
    a.mb.put("first", first.clone()).await.unwrap();
    wait_change(&b.mb, "first", &first).await;

    b.served.remove_writer(a.key()).await.unwrap();
    let held = b.mb.feed_store().feed(&a.key()).unwrap().length();
    a.mb.put("second", json(json!(2))).await.unwrap();
    // Still fetched (every peer must hold the same membership operations), but not merged.
    let replica = b.mb.feed_store().feed(&a.key()).unwrap();
    let mut status = replica.subscribe();
    crate::common::within(status.wait_for(|s| s.length > held))
        .await
        .unwrap();
    b.mb.merge().await.unwrap();
    assert_eq!(b.mb.get("second").unwrap(), None);
    assert_eq!(b.mb.get("first").unwrap(), Some(first));
    let w = b.mb.writers().unwrap();
    assert_eq!(w[0].cut, Some(held));
    b.stop().await;
    a.stop().await;
}

/// A remote batch costs the receiver one commit: stored and merged in the same transaction,
/// with no merge round afterwards that commits nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_batch_is_one_commit_on_the_receiver() {
    use multibee::BatchOp;
    let a = Peer::start().await;
    let b = Peer::start().await;
    a.served.add_writer(b.key()).await.unwrap();
    b.served.add_writer(a.key()).await.unwrap();
    b.connect(&a).await;
    // Warm up: the replication stream is open and live.
    let first = json(json!({"n": 0}));
    b.mb.put("warm", first.clone()).await.unwrap();
    wait_change(&a.mb, "warm", &first).await;
    a.mb.merge().await.unwrap();

    for round in 1..=5 {
        let before = a.mb.feed_store().commits();
        let ops = (0..100)
            .map(|i| {
                BatchOp::Put(
                    format!("r{round}/{i:03}").into_bytes(),
                    json(json!({"i": i})),
                )
            })
            .collect();
        b.mb.batch(ops).await.unwrap();
        let last = json(json!({"i": 99}));
        wait_change(&a.mb, &format!("r{round}/099"), &last).await;
        // Nothing is left to merge, and asking for a merge commits nothing.
        assert_eq!(a.mb.merge().await.unwrap(), 0);
        assert_eq!(
            a.mb.feed_store().commits() - before,
            1,
            "round {round}: a batch of 100 remote diffs took more than one commit"
        );
    }
    b.stop().await;
    a.stop().await;
}
