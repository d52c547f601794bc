//! A served peer restarted on its folder resumes replication where it stopped.

use serde_json::json;

use crate::common::{Peer, close, json, open, wait_change};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_the_merged_lengths() {
    let a = Peer::start().await;
    let b = Peer::start().await;
    a.served.add_writer(b.key()).await.unwrap();
    b.served.add_writer(a.key()).await.unwrap();
    b.connect(&a).await;

    for i in 0..20 {
        a.mb.put(format!("k{i}"), json(json!({"n": i})))
            .await
            .unwrap();
    }
    b.wait_merged(&[&a]).await;
    let (a_key, b_key) = (a.key(), b.key());
    // A's feed: its membership operation adding B, then its 20 writes.
    assert_eq!(b.merged(a_key), (21, 21));

    // B stops; A writes on.
    let b_dir = b.stop().await;
    for i in 20..50 {
        a.mb.put(format!("k{i}"), json(json!({"n": i})))
            .await
            .unwrap();
    }

    // B reopens its folder: what it merged persisted; it writes offline, then serves again.
    let mb = open(&b_dir).await;
    let writer = mb
        .writers()
        .unwrap()
        .into_iter()
        .find(|w| w.key == a_key)
        .unwrap();
    assert_eq!((writer.merged, writer.length), (21, 21));
    mb.put("offline", json(json!({"from": "b"}))).await.unwrap();
    close(mb).await;
    let b = Peer::start_in(b_dir).await;
    assert_eq!(b.key(), b_key);
    b.connect(&a).await;

    b.wait_merged(&[&a]).await;
    a.wait_merged(&[&b]).await;
    wait_change(&a.mb, "offline", &json(json!({"from": "b"}))).await;
    assert_eq!(b.merged(a_key), (51, 51));
    assert_eq!(b.mb.get("k49").unwrap(), Some(json(json!({"n": 49}))));
    assert_eq!(a.mb.state_hash().unwrap(), b.mb.state_hash().unwrap());
    // Nothing was downloaded twice: B received only A's 30 new entries.
    assert_eq!(b.served.node().stats().entries_received, 30);
    b.stop().await;
    a.stop().await;
}
