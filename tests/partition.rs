//! Three peers in a line A - B - C (A and C never connect) write concurrently to the same
//! keys while connected, while partitioned and after reconnecting.

use serde_json::json;

use crate::common::{Peer, json, keys};

/// Keys `k0..k9` are written by everyone (`k0` is also deleted by A), `own/{peer}/{i}` by one.
async fn write(peer: &Peer, name: &str, from: u64, to: u64) {
    for i in from..to {
        let shared = format!("k{}", i % 10);
        if name == "a" && i % 10 == 0 {
            peer.mb.del(&shared).await.unwrap();
        } else {
            peer.mb
                .put(&shared, json(json!({ name: i, "round": i })))
                .await
                .unwrap();
        }
        peer.mb
            .put(format!("own/{name}/{i}"), json(json!({"n": i})))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_partitioned_then_reconnected_converges() {
    let a = Peer::start().await;
    let b = Peer::start().await;
    let c = Peer::start().await;
    for p in [&a, &b, &c] {
        for q in [&a, &b, &c] {
            if p.key() != q.key() {
                p.served.add_writer(q.key()).await.unwrap();
            }
        }
    }
    a.connect(&b).await;
    c.connect(&b).await;

    // Connected: everyone writes to the same keys at once.
    tokio::join!(
        write(&a, "a", 0, 30),
        write(&b, "b", 0, 30),
        write(&c, "c", 0, 30)
    );
    a.wait_merged(&[&b, &c]).await;
    c.wait_merged(&[&a, &b]).await;
    b.wait_merged(&[&a, &c]).await;
    let hash = a.mb.state_hash().unwrap();
    assert_eq!(b.mb.state_hash().unwrap(), hash);
    assert_eq!(c.mb.state_hash().unwrap(), hash);

    // Partitioned: B closes both connections; everyone writes more.
    b.disconnect(&a).await;
    b.disconnect(&c).await;
    let before = (a.own_length(), b.own_length(), c.own_length());
    tokio::join!(
        write(&a, "a", 30, 60),
        write(&b, "b", 30, 60),
        write(&c, "c", 30, 60)
    );
    assert!(b.served.node().connected_peers().await.unwrap().is_empty());
    // Nothing crossed the partition.
    assert_eq!(b.merged(a.key()).1, before.0);
    assert_eq!(a.merged(b.key()).1, before.1);
    assert_eq!(a.merged(c.key()).1, before.2);
    assert_ne!(a.mb.state_hash().unwrap(), b.mb.state_hash().unwrap());

    // Reconnected: the line again, and a few more concurrent writes.
    a.connect(&b).await;
    c.connect(&b).await;
    tokio::join!(
        write(&a, "a", 60, 70),
        write(&b, "b", 60, 70),
        write(&c, "c", 60, 70)
    );
    a.wait_merged(&[&b, &c]).await;
    b.wait_merged(&[&a, &c]).await;
    c.wait_merged(&[&a, &b]).await;

    let hash = a.mb.state_hash().unwrap();
    assert_eq!(b.mb.state_hash().unwrap(), hash);
    assert_eq!(c.mb.state_hash().unwrap(), hash);
    let found = keys(&a.mb);
    assert_eq!(found, keys(&c.mb));
    for name in ["a", "b", "c"] {
        for i in 0..70 {
            let key = format!("own/{name}/{i}");
            assert!(found.contains(&key), "{key} is missing");
        }
        assert_eq!(
            c.mb.get(format!("own/{name}/69")).unwrap(),
            Some(json(json!({"n": 69})))
        );
    }
    for k in 1..10 {
        assert!(found.contains(&format!("k{k}")));
    }
    for p in [c, b, a] {
        p.stop().await;
    }
}
