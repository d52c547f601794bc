#![allow(clippy::unwrap_used)]
//! A writer that equivocates (a folder restored from a backup and written to again): the peer
//! serving the second history is rejected, and the feed is frozen with the evidence kept.

use multibee_feed::{Store, VerifyError};
use multibee_net::{Event, Violation};

use crate::common::{Peer, Transport, append, config, copy_dir, wait_length};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_equivocating_writer_is_detected_and_its_peer_rejected() {
    let first = tempfile::tempdir().unwrap();
    let key = {
        let store = Store::open(first.path()).unwrap();
        let feed = store.create_feed().await.unwrap();
        append(&feed, 0, 10).await;
        feed.key()
    };
    let backup = tempfile::tempdir().unwrap();
    copy_dir(first.path(), backup.path());

    // Two diverging histories under one key.
    let one = Peer::start_in(first, config().kademlia(false)).await;
    one.store
        .feed(&key)
        .unwrap()
        .append(b"one".to_vec())
        .await
        .unwrap();
    let two = Peer::start_in(backup, config().kademlia(false)).await;
    let feed_two = two.store.feed(&key).unwrap();
    feed_two
        .append_batch(vec![b"two".to_vec(), b"more".to_vec()])
        .await
        .unwrap();

    let mut reader = Peer::start(config().kademlia(false)).await;
    let replica = reader.node.handle().replicate(key).await.unwrap();
    reader
        .node
        .handle()
        .dial(one.addr(Transport::Tcp).await)
        .await
        .unwrap();
    wait_length(&replica, 11).await;

    reader
        .node
        .handle()
        .dial(two.addr(Transport::Tcp).await)
        .await
        .unwrap();
    let two_id = two.node.peer_id();
    let reason = reader
        .event(|e| match e {
            Event::PeerRejected { peer, reason } if *peer == two_id => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert_eq!(reason, Violation::Invalid(VerifyError::Forked));
    assert!(replica.status().forked);
    assert!(replica.fork_evidence().unwrap().is_some());
    assert_eq!(replica.length(), 11);
    assert_eq!(replica.get(10).unwrap(), Some(b"one".to_vec()));
}
