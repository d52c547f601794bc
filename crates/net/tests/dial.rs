#![allow(clippy::unwrap_used)]
//! Dial outcomes ([`NodeHandle::connect`]), failed dials as events, and the peers listing.

use std::time::Duration;

use multibee_net::{DialError, Event, Multiaddr, PeerId};

use crate::common::{Peer, Transport, Watchdog, append, config, wait_length};

/// A loopback TCP address where nothing listens (a port the OS handed out, then closed).
fn closed_port() -> Multiaddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
}

/// How long a connect may wait in these tests: generous for a loaded 2-core machine.
const CONNECT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_answers_the_peer_or_why_not() {
    let _watchdog = Watchdog::arm("dial::connect_answers_the_peer_or_why_not");
    let a = Peer::start(config()).await;
    let b = Peer::start(config()).await;
    let handle = b.node.handle();
    let a_addr = a.addr(Transport::Tcp).await;

    // Success: the peer id; again at once, for the address and for the peer's address.
    assert_eq!(
        handle.connect(a_addr.clone(), CONNECT).await,
        Ok(a.node.peer_id())
    );
    assert_eq!(
        handle.connect(a_addr.clone(), CONNECT).await,
        Ok(a.node.peer_id())
    );
    let with_id = a_addr
        .clone()
        .with(multibee_net::Protocol::P2p(a.node.peer_id()));
    assert_eq!(handle.connect(with_id, CONNECT).await, Ok(a.node.peer_id()));

    // Nothing listening.
    let refused = handle.connect(closed_port(), CONNECT).await;
    assert_eq!(refused, Err(DialError::Refused));
    assert!(refused.unwrap_err().to_string().contains("refused"));

    // The address names another peer than the one that answers.
    let c = Peer::start(config()).await;
    let other = PeerId::random();
    let wrong = c
        .addr(Transport::Tcp)
        .await
        .with(multibee_net::Protocol::P2p(other));
    match handle.connect(wrong, CONNECT).await {
        Err(DialError::WrongPeerId { expected, found }) => {
            assert_eq!((expected, found), (other, c.node.peer_id()));
        }
        other => panic!("expected a wrong peer id, got {other:?}"),
    }

    // No transport for the address.
    let udp: Multiaddr = "/ip4/127.0.0.1/udp/9".parse().unwrap();
    assert!(matches!(
        handle.connect(udp, CONNECT).await,
        Err(DialError::Unreachable(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_listener_that_never_speaks_times_out_in_time() {
    let _watchdog =
        Watchdog::arm("dial::connect_to_a_listener_that_never_speaks_times_out_in_time");
    // The kernel completes the TCP handshake; nothing ever answers the Noise handshake.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = mute.local_addr().unwrap().port();
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    let mut b = Peer::start(config()).await;
    let limit = Duration::from_millis(500);
    let started = std::time::Instant::now();
    assert_eq!(
        b.node.handle().connect(addr, limit).await,
        Err(DialError::TimedOut)
    );
    let took = started.elapsed();
    assert!(took >= limit, "answered after {took:?}");
    assert!(
        took < limit + Duration::from_secs(20),
        "answered after {took:?}"
    );
    // libp2p gives up on its own later (its connection timeout), and that is reported.
    let reason = b
        .event(|e| match e {
            Event::DialFailed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert_eq!(reason, DialError::TimedOut.to_string());
    drop(mute);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_background_dial_is_an_event() {
    let _watchdog = Watchdog::arm("dial::a_failed_background_dial_is_an_event");
    let closed = closed_port();
    let mut b = Peer::start(config().dial(closed.clone())).await;
    let (address, reason) = b
        .event(|e| match e {
            Event::DialFailed {
                address, reason, ..
            } => Some((address.clone(), reason.clone())),
            _ => None,
        })
        .await;
    assert_eq!(address, Some(closed));
    assert!(reason.contains("refused"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_lists_a_connected_peer_its_address_and_the_feed_it_serves() {
    let _watchdog =
        Watchdog::arm("dial::peers_lists_a_connected_peer_its_address_and_the_feed_it_serves");
    let a = Peer::start(config()).await;
    let feed = a.store.create_feed().await.unwrap();
    append(&feed, 0, 10).await;
    let mut b = Peer::start(config()).await;
    assert!(b.node.handle().peers().await.unwrap().is_empty());
    let a_addr = a.addr(Transport::Tcp).await;
    let a_id = b
        .node
        .handle()
        .connect(a_addr.clone(), CONNECT)
        .await
        .unwrap();
    let replica = b.node.handle().replicate(feed.key()).await.unwrap();
    wait_length(&replica, 10).await;
    let peers = b.node.handle().peers().await.unwrap();
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0].peer, a_id);
    assert_eq!(peers[0].addresses, vec![a_addr]);
    assert_eq!(peers[0].feeds, vec![feed.key()]);
    // Identify told B where A listens.
    let listen = b
        .event(|e| match e {
            Event::PeerIdentified { peer, listen_addrs } if *peer == a_id => {
                Some(listen_addrs.clone())
            }
            _ => None,
        })
        .await;
    assert!(listen.contains(&a.addr(Transport::Tcp).await), "{listen:?}");
    let peers = b.node.handle().peers().await.unwrap();
    assert_eq!(peers[0].listen_addrs, listen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mdns_that_finds_nothing_says_so_once() {
    let _watchdog = Watchdog::arm("dial::mdns_that_finds_nothing_says_so_once");
    let mut quiet = config().mdns(true);
    quiet.mdns_quiet_after = Duration::from_millis(200);
    let mut a = Peer::start(quiet).await;
    let tried = a
        .event(|e| match e {
            Event::MdnsFoundNothing { tried } => Some(tried.clone()),
            _ => None,
        })
        .await;
    assert_eq!(tried, vec!["127.0.0.1".to_string()]);
}
