//! A writer that puts entries into its diff feed that are signed and proven but are not diffs:
//! every peer skips them alike, reports them, merges the writer's valid diffs around them, and
//! goes on serving, across a relay peer.

use multibee::Value;
use multibee::db::Event;
use serde_json::json;
use tokio::sync::broadcast;

use crate::common::{Peer, json, waiting};

/// Waits for `count` invalid-diff reports of `writer` and returns their sequence numbers.
async fn invalid_reports(events: &mut broadcast::Receiver<Event>, count: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    waiting(format!("{count} invalid-diff reports"), async {
        while seqs.len() < count {
            match events.recv().await {
                Ok(Event::InvalidDiff { seq, .. }) => seqs.push(seq),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("the peer closed"),
            }
        }
    })
    .await;
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_that_are_not_diffs_are_skipped_alike_reported_and_served_on() {
    // A writes; B and C count A; C reaches A only through B.
    let a = Peer::start().await;
    let b = Peer::start().await;
    let c = Peer::start().await;
    for p in [&b, &c] {
        p.served.add_writer(a.key()).await.unwrap();
    }
    let (mut b_events, mut c_events) = (b.mb.events(), c.mb.events());
    b.connect(&a).await;
    c.connect(&b).await;

    let own = a.mb.feed_store().feed(&a.key()).unwrap();
    a.mb.put("before", json(json!(1))).await.unwrap();
    own.append(b"not a diff".to_vec()).await.unwrap();
    a.mb.put("after", json(json!(2))).await.unwrap();
    own.append(vec![0xff; 64]).await.unwrap();
    a.mb.put("last", json(json!(3))).await.unwrap();

    let expected = vec![1, 3];
    assert_eq!(invalid_reports(&mut b_events, 2).await, expected);
    assert_eq!(invalid_reports(&mut c_events, 2).await, expected);
    b.wait_merged(&[&a]).await;
    c.wait_merged(&[&a]).await;
    for p in [&b, &c] {
        for (key, n) in [("before", 1), ("after", 2), ("last", 3)] {
            assert_eq!(p.mb.get(key).unwrap(), Some(Value::Json(json!(n))), "{key}");
        }
    }
    assert_eq!(b.mb.state_hash().unwrap(), c.mb.state_hash().unwrap());
    assert_eq!(a.mb.state_hash().unwrap(), b.mb.state_hash().unwrap());
    c.stop().await;
    b.stop().await;
    a.stop().await;
}
