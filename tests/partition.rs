//! Four peers in a line A - B - C - D (only neighbours connect) write concurrently to the same
//! keys while connected, while the line is cut in the middle, and after it is joined again.

use serde_json::json;

use crate::common::{Peer, json, keys};

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

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

/// Every peer writes `from..to` at once.
async fn write_all(peers: &[Peer], from: u64, to: u64) {
    tokio::join!(
        write(&peers[0], NAMES[0], from, to),
        write(&peers[1], NAMES[1], from, to),
        write(&peers[2], NAMES[2], from, to),
        write(&peers[3], NAMES[3], from, to),
    );
}

/// Waits until every peer has merged every other peer's writes; all hold the same state.
async fn converge(peers: &[Peer]) {
    for p in peers {
        let others: Vec<&Peer> = peers.iter().filter(|q| q.key() != p.key()).collect();
        p.wait_merged(&others).await;
    }
    let hash = peers[0].mb.state_hash().unwrap();
    for p in peers {
        assert_eq!(p.mb.state_hash().unwrap(), hash);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_partitioned_then_reconnected_converges() {
    let mut peers = Vec::new();
    for _ in NAMES {
        peers.push(Peer::start().await);
    }
    for p in &peers {
        for q in &peers {
            if p.key() != q.key() {
                p.served.add_writer(q.key()).await.unwrap();
            }
        }
    }
    let [a, b, c, d] = [&peers[0], &peers[1], &peers[2], &peers[3]];
    a.connect(b).await;
    c.connect(b).await;
    d.connect(c).await;

    // Connected: everyone writes to the same keys at once.
    write_all(&peers, 0, 30).await;
    converge(&peers).await;

    // Partitioned: the link B - C goes, leaving {A, B} and {C, D}; everyone writes more.
    b.disconnect(c).await;
    let before: Vec<u64> = peers.iter().map(Peer::own_length).collect();
    write_all(&peers, 30, 60).await;
    // Each side converges alone: replication ran on both sides after every write of the
    // other side had been made...
    converge(&peers[..2]).await;
    converge(&peers[2..]).await;
    assert_ne!(a.mb.state_hash().unwrap(), d.mb.state_hash().unwrap());
    // ...and nothing crossed: no connection, and no entry of the other side's feeds.
    for (mine, theirs) in [([0, 1], [2, 3]), ([2, 3], [0, 1])] {
        for i in mine {
            let p = &peers[i];
            let neighbour = peers[mine[0] + mine[1] - i].peer_id();
            let connected = p.served.node().connected_peers().await.unwrap();
            assert_eq!(
                connected,
                vec![neighbour],
                "{}: its neighbour only",
                NAMES[i]
            );
            for j in theirs {
                let (name, writer) = (NAMES[j], peers[j].key());
                assert_eq!(
                    p.merged(writer).1,
                    before[j],
                    "{name}'s feed crossed the cut"
                );
                assert_eq!(p.mb.get(format!("own/{name}/30")).unwrap(), None);
            }
        }
    }

    // Reconnected: the line again, and a few more concurrent writes.
    c.connect(b).await;
    write_all(&peers, 60, 70).await;
    converge(&peers).await;

    let found = keys(&a.mb);
    for p in &peers {
        assert_eq!(keys(&p.mb), found);
    }
    for name in NAMES {
        for i in 0..70 {
            let key = format!("own/{name}/{i}");
            assert!(found.contains(&key), "{key} is missing");
        }
        assert_eq!(
            d.mb.get(format!("own/{name}/69")).unwrap(),
            Some(json(json!({"n": 69})))
        );
    }
    for k in 1..10 {
        assert!(found.contains(&format!("k{k}")));
    }
    for p in peers.into_iter().rev() {
        p.stop().await;
    }
}
