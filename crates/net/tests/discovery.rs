#![allow(clippy::unwrap_used)]
//! Finding a feed's holders through the Kademlia DHT by its discovery key.

use multibee_net::Event;

use crate::common::{Peer, Transport, Watchdog, append, check_entries, config, wait_length};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_finds_the_writer_through_the_dht() {
    let _watchdog = Watchdog::arm("discovery::a_reader_finds_the_writer_through_the_dht");
    // A holds the feed; B knows A; C knows only B, and B does not replicate the feed.
    let a = Peer::start(config()).await;
    let feed = a.store.create_feed().await.unwrap();
    append(&feed, 0, 100).await;
    a.node.handle().announce(feed.key()).await.unwrap();
    let mut b = Peer::start(config()).await;
    b.node
        .handle()
        .dial(a.addr(Transport::Tcp).await)
        .await
        .unwrap();
    let a_id = a.node.peer_id();
    b.event(|e| matches!(e, Event::PeerConnected { peer, .. } if *peer == a_id).then_some(()))
        .await;
    let mut c = Peer::start(config()).await;
    c.node
        .handle()
        .dial(b.addr(Transport::Tcp).await)
        .await
        .unwrap();
    let b_id = b.node.peer_id();
    c.event(|e| matches!(e, Event::PeerConnected { peer, .. } if *peer == b_id).then_some(()))
        .await;

    let replica = c.node.handle().replicate(feed.key()).await.unwrap();
    c.event(|e| matches!(e, Event::PeerConnected { peer, .. } if *peer == a_id).then_some(()))
        .await;
    wait_length(&replica, 100).await;
    check_entries(&replica, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_gets_the_feed_later_is_asked_again() {
    let _watchdog = Watchdog::arm("discovery::a_peer_that_gets_the_feed_later_is_asked_again");
    let writer = tempfile::tempdir().unwrap();
    let writer = multibee_feed::Store::open(writer.path()).unwrap();
    let feed = writer.create_feed().await.unwrap();
    append(&feed, 0, 10).await;

    let mut fast = config().kademlia(false);
    fast.resync_interval = std::time::Duration::from_millis(200);
    let b = Peer::start(fast.clone()).await;
    let c = Peer::start(fast.dial(b.addr(Transport::Tcp).await)).await;
    let replica = c.node.handle().replicate(feed.key()).await.unwrap();
    // B gets the feed behind the node's back: no announcement, so only asking again finds it.
    let on_b = b.store.replica(feed.key()).await.unwrap();
    on_b.ingest(feed.proof(0..10).unwrap()).await.unwrap();
    wait_length(&replica, 10).await;
    check_entries(&replica, 10);
}
