#![allow(clippy::unwrap_used)]
//! A peer rejected for being too slow is blocked for `slow_peer_block`, then may connect again.

use std::time::Duration;

use futures::{AsyncWriteExt, StreamExt};
use libp2p::StreamProtocol;
use multibee_net::wire;
use multibee_net::{Event, Violation};

use crate::common::{Peer, Transport, bare_swarm, config, dial_bare, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_too_slow_is_blocked_for_a_while_then_let_back() {
    let mut settings = config().kademlia(false);
    settings.frame_timeout = Duration::from_millis(500);
    settings.slow_peer_block = Duration::from_secs(1);
    let mut honest = Peer::start(settings).await;
    let addr = honest.addr(Transport::Tcp).await;

    let mut swarm = bare_swarm();
    let slow = *swarm.local_peer_id();
    let mut control = swarm.behaviour().new_control();
    assert!(dial_bare(&mut swarm, addr.clone()).await);
    // The swarm runs on its own; once told, it dials the node again and again.
    let (redial, mut redialing) = tokio::sync::watch::channel(false);
    let driver = tokio::spawn(async move {
        loop {
            let pause = tokio::time::sleep(Duration::from_millis(200));
            tokio::select! {
                _ = swarm.select_next_some() => {}
                () = pause, if *redialing.borrow() => {
                    let _ = swarm.dial(addr.clone());
                }
                Ok(()) = redialing.changed() => {}
            }
        }
    });

    // One byte of a request, then nothing.
    let protocol = StreamProtocol::new(wire::REPLICATE_PROTOCOL);
    let mut stream = within(control.open_stream(honest.node.peer_id(), protocol))
        .await
        .unwrap();
    stream.write_all(&[0]).await.unwrap();
    stream.flush().await.unwrap();
    let reason = honest
        .event(|e| match e {
            Event::PeerRejected { peer, reason } if *peer == slow => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert!(matches!(reason, Violation::TooSlow(_)), "{reason}");

    // Once the block is over, a dial gets through.
    redial.send(true).unwrap();
    honest
        .event(|e| matches!(e, Event::PeerConnected { peer, .. } if *peer == slow).then_some(()))
        .await;
    driver.abort();
}
