#![allow(clippy::unwrap_used)]
//! A line A — B — C where A and C never connect: entries flow through B both ways.

use crate::common::{Peer, Transport, Watchdog, append, check_entries, config, entry, wait_length};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_converges_through_the_middle() {
    let _watchdog = Watchdog::arm("topology::a_line_converges_through_the_middle");
    // No DHT: it could introduce A and C to each other.
    let config = || config().kademlia(false);
    let a = Peer::start(config()).await;
    let b = Peer::start(config()).await;
    let c = Peer::start(config()).await;
    b.node
        .handle()
        .dial(a.addr(Transport::Tcp).await)
        .await
        .unwrap();
    c.node
        .handle()
        .dial(b.addr(Transport::Quic).await)
        .await
        .unwrap();

    let a_feed = a.store.create_feed().await.unwrap();
    append(&a_feed, 0, 1_000).await;
    a.node.handle().announce(a_feed.key()).await.unwrap();
    let c_feed = c.store.create_feed().await.unwrap();
    append(&c_feed, 0, 500).await;
    c.node.handle().announce(c_feed.key()).await.unwrap();

    // C asks for A's feed before B holds it: B's announcement brings it once B does.
    let a_on_c = c.node.handle().replicate(a_feed.key()).await.unwrap();
    let c_on_a = a.node.handle().replicate(c_feed.key()).await.unwrap();
    b.node.handle().replicate(a_feed.key()).await.unwrap();
    b.node.handle().replicate(c_feed.key()).await.unwrap();

    wait_length(&a_on_c, 1_000).await;
    wait_length(&c_on_a, 500).await;
    a_feed.append(entry(1_000)).await.unwrap();
    c_feed.append(entry(500)).await.unwrap();
    wait_length(&a_on_c, 1_001).await;
    wait_length(&c_on_a, 501).await;
    check_entries(&a_on_c, 1_001);
    check_entries(&c_on_a, 501);

    let a_peers = a.node.handle().connected_peers().await.unwrap();
    assert_eq!(a_peers, vec![b.node.peer_id()], "A only ever talks to B");
    let c_peers = c.node.handle().connected_peers().await.unwrap();
    assert_eq!(c_peers, vec![b.node.peer_id()], "C only ever talks to B");
}
