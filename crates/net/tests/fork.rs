#![allow(clippy::unwrap_used)]
//! A writer that equivocates (a folder restored from a backup and written to again): the feed is
//! frozen with the evidence kept, and no longer fetched. The peer that served the second history
//! is not rejected: a node cannot tell the writer from a peer that forwards what it signed.

use multibee_feed::{Store, VerifyError};
use multibee_net::Event;

use crate::common::{Peer, Transport, Watchdog, append, config, copy_dir, wait_length, within};

/// One writer's key with two diverging histories, each served by a node of its own: `one` holds
/// ten entries then "one", `two` (a copy of the folder before) ten then "two", "more".
async fn two_histories() -> (multibee_feed::FeedKey, Peer, Peer) {
    let first = tempfile::tempdir().unwrap();
    let key = {
        let store = Store::open(first.path()).unwrap();
        let feed = store.create_feed().await.unwrap();
        append(&feed, 0, 10).await;
        feed.key()
    };
    let backup = tempfile::tempdir().unwrap();
    copy_dir(first.path(), backup.path());
    // No DHT: who talks to whom is the test's.
    let one = Peer::start_in(first, config().kademlia(false)).await;
    one.store
        .feed(&key)
        .unwrap()
        .append(b"one".to_vec())
        .await
        .unwrap();
    let two = Peer::start_in(backup, config().kademlia(false)).await;
    two.store
        .feed(&key)
        .unwrap()
        .append_batch(vec![b"two".to_vec(), b"more".to_vec()])
        .await
        .unwrap();
    (key, one, two)
}

/// `reader` takes `replica` (11 entries) from `one`, then meets `other`, which serves the
/// second history: waits until the fork is detected.
async fn meet_both(reader: &Peer, replica: &multibee_feed::Feed, one: &Peer, other: &Peer) {
    let handle = reader.node.handle();
    handle.dial(one.addr(Transport::Tcp).await).await.unwrap();
    wait_length(replica, 11).await;
    handle.dial(other.addr(Transport::Tcp).await).await.unwrap();
    let mut status = replica.subscribe();
    within("the fork to be detected", status.wait_for(|s| s.forked))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_equivocating_writer_is_detected_and_its_feed_frozen() {
    let _watchdog = Watchdog::arm("fork::an_equivocating_writer_is_detected_and_its_feed_frozen");
    let (key, one, two) = two_histories().await;
    let feed_two = two.store.feed(&key).unwrap();
    let reader = Peer::start(config().kademlia(false)).await;
    let replica = reader.node.handle().replicate(key).await.unwrap();
    meet_both(&reader, &replica, &one, &two).await;
    assert!(replica.fork_evidence().unwrap().is_some());
    assert_eq!(replica.length(), 11);
    assert_eq!(replica.get(10).unwrap(), Some(b"one".to_vec()));
    // Still connected (a rejected peer is disconnected at once).
    let two_id = two.node.peer_id();
    assert!(
        reader
            .node
            .handle()
            .connected_peers()
            .await
            .unwrap()
            .contains(&two_id)
    );
    // The verification error stays what the feed says: the writer equivocated.
    let more = feed_two.proof(11..12).unwrap();
    assert!(matches!(
        replica.verify(more),
        Err(multibee_feed::Error::Rejected {
            reason: VerifyError::Forked,
            ..
        })
    ));
}

/// The two histories of a forked writer reach an honest node through a peer that only
/// forwards them (it holds the second history, fetched from the writer's second copy): the
/// node detects the fork, keeps the evidence and stops taking the feed, but does not reject
/// the forwarding peer, which cannot tell either, and goes on replicating its other feeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equivocation_forwarded_by_a_relay_freezes_the_feed_and_spares_the_relay() {
    let _watchdog = Watchdog::arm(
        "fork::equivocation_forwarded_by_a_relay_freezes_the_feed_and_spares_the_relay",
    );
    let (key, one, two) = two_histories().await;
    let feed_one = one.store.feed(&key).unwrap();
    // No DHT: who talks to whom is the test's.
    let config = || config().kademlia(false);

    // The relay holds the second history, and a feed of its own.
    let relay = Peer::start(config()).await;
    let on_relay = relay.node.handle().replicate(key).await.unwrap();
    relay
        .node
        .handle()
        .dial(two.addr(Transport::Tcp).await)
        .await
        .unwrap();
    wait_length(&on_relay, 12).await;
    let relays_own = relay.store.create_feed().await.unwrap();
    append(&relays_own, 0, 5).await;

    // The honest node holds the first history, then meets the relay.
    let mut honest = Peer::start(config()).await;
    let mut events = honest.node.handle().subscribe();
    let replica = honest.node.handle().replicate(key).await.unwrap();
    let from_relay = honest
        .node
        .handle()
        .replicate(relays_own.key())
        .await
        .unwrap();
    meet_both(&honest, &replica, &one, &relay).await;
    let evidence = replica
        .fork_evidence()
        .unwrap()
        .expect("the evidence is kept");
    assert_eq!(evidence.ours.length, 11);
    assert_eq!(evidence.theirs.length, 12);
    assert_eq!(replica.length(), 11);
    assert_eq!(replica.get(10).unwrap(), Some(b"one".to_vec()));

    // The relay is not rejected, and is still served: its own feed goes on arriving, live.
    let goes_on = async {
        wait_length(&from_relay, 5).await;
        relays_own.append(b"after the fork".to_vec()).await.unwrap();
        wait_length(&from_relay, 6).await;
    };
    tokio::select! {
        () = goes_on => {}
        (peer, reason) = honest.event(|e| match e {
            Event::PeerRejected { peer, reason } => Some((*peer, reason.clone())),
            _ => None,
        }) => panic!("{peer} was rejected: {reason}"),
    }
    // The feed is frozen: the writer's next entry, from the writer itself, is not taken, and
    // the writer is not rejected for offering it either.
    feed_one.append(b"one more".to_vec()).await.unwrap();
    let writers_other = one.store.create_feed().await.unwrap();
    append(&writers_other, 0, 3).await;
    one.node
        .handle()
        .announce(writers_other.key())
        .await
        .unwrap();
    let other_there = honest
        .node
        .handle()
        .replicate(writers_other.key())
        .await
        .unwrap();
    wait_length(&other_there, 3).await;
    assert_eq!(replica.length(), 11, "nothing more of the forked feed");
    let peers = honest.node.handle().connected_peers().await.unwrap();
    for (name, peer) in [
        ("relay", relay.node.peer_id()),
        ("writer", one.node.peer_id()),
    ] {
        assert!(peers.contains(&peer), "the {name} is still connected");
    }
    while let Ok(event) = events.try_recv() {
        if let Event::PeerRejected { peer, reason } = event {
            panic!("{peer} was rejected: {reason}");
        }
    }
    within("the honest node to stop", honest.stop()).await;
}
