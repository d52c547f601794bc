//! A served peer restarted on its folder resumes replication where it stopped: it fetches
//! only the entries it lacks (not the feed again from 0), and it must fetch them.

use multibee::ChangesOptions;
use serde_json::json;

use crate::common::{Peer, close, json, open, wait_change, within};

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
    let version = b.mb.version().unwrap();

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
    assert_eq!(mb.version().unwrap(), version, "reopening changed nothing");
    mb.put("offline", json(json!({"from": "b"}))).await.unwrap();
    close(mb).await;
    let b = Peer::start_in(b_dir).await;
    assert_eq!(b.key(), b_key);
    let sent_before = a.served.node().stats().entries_sent;
    b.connect(&a).await;

    // Progress is required: B must come to hold and merge A's 30 new entries.
    b.wait_merged(&[&a]).await;
    a.wait_merged(&[&b]).await;
    wait_change(&a.mb, "offline", &json(json!({"from": "b"}))).await;
    assert_eq!(b.merged(a_key), (51, 51));
    assert_eq!(b.mb.get("k49").unwrap(), Some(json(json!({"n": 49}))));
    assert_eq!(a.mb.state_hash().unwrap(), b.mb.state_hash().unwrap());
    // Nothing was downloaded twice: B received (and stored) only A's 30 new entries, and A
    // sent no more (a fetch from 0 would move all 51).
    // The session counts what it stored once the store answers, which may be just after the
    // merge (in the same commit) became visible: wait for the count, then check it exactly.
    let stats = within(async {
        loop {
            let stats = b.served.node().stats();
            if stats.entries_stored >= 30 {
                return stats;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!((stats.entries_received, stats.entries_stored), (30, 30));
    assert_eq!(a.served.node().stats().entries_sent - sent_before, 30);
    // B's store saw each change once: its offline write, then A's 30 new keys (a stream that
    // is not live ends at the newest change: no wait).
    let mut changes =
        b.mb.changes(ChangesOptions {
            since: version,
            ..Default::default()
        })
        .unwrap();
    let mut keys = Vec::new();
    while let Some(change) = changes.next().await {
        keys.push(String::from_utf8(change.unwrap().key).unwrap());
    }
    let mut expected = vec!["offline".to_string()];
    expected.extend((20..50).map(|i| format!("k{i}")));
    assert_eq!(keys, expected);
    b.stop().await;
    a.stop().await;
}
