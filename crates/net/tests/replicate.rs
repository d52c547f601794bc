#![allow(clippy::unwrap_used)]
//! Two nodes: full replication, then the live tail, over TCP and over QUIC.

use multibee_net::Event;

use crate::common::{Peer, Transport, Watchdog, append, check_entries, config, wait_length};

async fn full_then_live(transport: Transport) {
    let a = Peer::start(config()).await;
    let feed = a.store.create_feed().await.unwrap();
    append(&feed, 0, 10_000).await;

    let mut b = Peer::start(config()).await;
    b.node.handle().dial(a.addr(transport).await).await.unwrap();
    let a_id = a.node.peer_id();
    let address = b
        .event(|e| match e {
            Event::PeerConnected { peer, address } if *peer == a_id => Some(address.clone()),
            _ => None,
        })
        .await;
    assert!(transport.matches(&address), "connected over {address}");
    let replica = b.node.handle().replicate(feed.key()).await.unwrap();
    wait_length(&replica, 10_000).await;
    check_entries(&replica, 10_000);

    // Live: every new entry is pushed as it is appended.
    for i in 10_000..10_020 {
        feed.append(crate::common::entry(i)).await.unwrap();
        wait_length(&replica, i + 1).await;
    }
    check_entries(&replica, 10_020);
    // The counters move just after the store commits: wait for the event that follows them.
    let key = feed.key();
    b.event(|e| match e {
        Event::FeedProgressed { key: k, length, .. } if *k == key && *length == 10_020 => Some(()),
        _ => None,
    })
    .await;
    let stats = b.node.handle().stats();
    assert_eq!(stats.entries_stored, 10_020);
    // A counts a frame once written, which may be just after B stored it.
    let a_handle = a.node.handle();
    crate::common::within("A to count 10,020 entries sent", async {
        while a_handle.stats().entries_sent < 10_020 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(a_handle.stats().entries_sent, 10_020);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_over_tcp() {
    let _watchdog = Watchdog::arm("replicate::two_nodes_over_tcp");
    full_then_live(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_over_quic() {
    let _watchdog = Watchdog::arm("replicate::two_nodes_over_quic");
    full_then_live(Transport::Quic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_directions_and_many_feeds_on_one_connection() {
    let _watchdog = Watchdog::arm("replicate::both_directions_and_many_feeds_on_one_connection");
    let a = Peer::start(config()).await;
    let b = Peer::start(config()).await;
    let a_feeds = [
        a.store.create_feed().await.unwrap(),
        a.store.create_feed().await.unwrap(),
    ];
    let b_feed = b.store.create_feed().await.unwrap();
    for (n, feed) in a_feeds.iter().chain([&b_feed]).enumerate() {
        append(feed, 0, 100 * (n as u64 + 1)).await;
    }
    b.node
        .handle()
        .dial(a.addr(Transport::Tcp).await)
        .await
        .unwrap();
    let on_b = [
        b.node.handle().replicate(a_feeds[0].key()).await.unwrap(),
        b.node.handle().replicate(a_feeds[1].key()).await.unwrap(),
    ];
    let on_a = a.node.handle().replicate(b_feed.key()).await.unwrap();
    wait_length(&on_b[0], 100).await;
    wait_length(&on_b[1], 200).await;
    wait_length(&on_a, 300).await;
    check_entries(&on_a, 300);
    assert_eq!(a.node.handle().connected_peers().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_feeds_at_once() {
    let _watchdog = Watchdog::arm("replicate::many_feeds_at_once");
    let a = Peer::start(config()).await;
    let mut feeds = Vec::new();
    for _ in 0..100 {
        let feed = a.store.create_feed().await.unwrap();
        append(&feed, 0, 20).await;
        feeds.push(feed);
    }
    let b = Peer::start(config()).await;
    let mut replicas = Vec::new();
    for feed in &feeds {
        replicas.push(b.node.handle().replicate(feed.key()).await.unwrap());
    }
    b.node
        .handle()
        .dial(a.addr(Transport::Tcp).await)
        .await
        .unwrap();
    for replica in &replicas {
        wait_length(replica, 20).await;
        check_entries(replica, 20);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnected_peer_catches_up_and_goes_live_again() {
    let _watchdog = Watchdog::arm("replicate::a_reconnected_peer_catches_up_and_goes_live_again");
    // No DHT: its queries could dial the peer again while the test wants it disconnected.
    let config = || config().kademlia(false);
    let a = Peer::start(config()).await;
    let feed = a.store.create_feed().await.unwrap();
    append(&feed, 0, 1_000).await;
    let mut b = Peer::start(config()).await;
    let replica = b.node.handle().replicate(feed.key()).await.unwrap();
    let addr = a.addr(Transport::Tcp).await;
    b.node.handle().dial(addr.clone()).await.unwrap();
    wait_length(&replica, 1_000).await;

    let a_id = a.node.peer_id();
    assert!(b.node.handle().disconnect(a_id).await.unwrap());
    b.event(|e| matches!(e, Event::PeerDisconnected { peer } if *peer == a_id).then_some(()))
        .await;
    append(&feed, 1_000, 2_000).await;
    let received = b.node.handle().stats().entries_received;
    assert_eq!(
        replica.length(),
        1_000,
        "nothing arrives while disconnected"
    );

    b.node.handle().dial(addr).await.unwrap();
    wait_length(&replica, 2_000).await;
    feed.append(crate::common::entry(2_000)).await.unwrap();
    wait_length(&replica, 2_001).await;
    check_entries(&replica, 2_001);
    let stats = b.node.handle().stats();
    assert_eq!(
        stats.entries_received - received,
        1_001,
        "only the new entries were sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_no_longer_replicated_stops_growing_while_others_go_on() {
    let _watchdog =
        Watchdog::arm("replicate::a_feed_no_longer_replicated_stops_growing_while_others_go_on");
    // No DHT: C must reach the feed only through B.
    let config = || config().kademlia(false);
    let a = Peer::start(config()).await;
    let (dropped, kept) = (
        a.store.create_feed().await.unwrap(),
        a.store.create_feed().await.unwrap(),
    );
    append(&dropped, 0, 10).await;
    append(&kept, 0, 10).await;
    let b = Peer::start(config()).await;
    let handle = b.node.handle();
    handle.dial(a.addr(Transport::Tcp).await).await.unwrap();
    let (dropped_there, kept_there) = (
        handle.replicate(dropped.key()).await.unwrap(),
        handle.replicate(kept.key()).await.unwrap(),
    );
    wait_length(&dropped_there, 10).await;
    wait_length(&kept_there, 10).await;

    handle.stop_replicating(dropped.key()).await.unwrap();
    append(&dropped, 10, 20).await;
    append(&kept, 10, 20).await;
    wait_length(&kept_there, 20).await;
    assert_eq!(
        dropped_there.length(),
        10,
        "nothing more of the dropped feed"
    );

    // What B holds stays served: C, which knows only B, fetches it from B.
    let mut c = Peer::start(config()).await;
    c.node
        .handle()
        .dial(b.addr(Transport::Tcp).await)
        .await
        .unwrap();
    let on_c = c.node.handle().replicate(dropped.key()).await.unwrap();
    let b_id = b.node.peer_id();
    let from = c
        .event(|e| match e {
            Event::FeedProgressed { key, peer, .. } if *key == dropped.key() => Some(*peer),
            _ => None,
        })
        .await;
    assert_eq!(from, b_id, "served by B");
    wait_length(&on_c, 10).await;
    check_entries(&on_c, 10);
    assert_eq!(
        c.node.handle().connected_peers().await.unwrap(),
        vec![b_id],
        "C only ever talks to B"
    );
}
