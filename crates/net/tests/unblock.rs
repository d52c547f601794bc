#![allow(clippy::unwrap_used)]
//! A peer rejected for being too slow is blocked for `slow_peer_block`: its redials are refused
//! and nothing is served to it; once the block is over, it is let back and served again.

use std::time::{Duration, Instant};

use futures::{AsyncWriteExt, StreamExt};
use libp2p::StreamProtocol;
use multibee_net::protocol::Client;
use multibee_net::wire;
use multibee_net::{Event, Violation};

use crate::common::{
    AT_ONCE, Dials, Peer, Redial, Transport, Watchdog, append, bare_swarm, config, dial_bare,
    redial, served, within,
};

const FRAME_TIMEOUT: Duration = Duration::from_millis(500);
const BLOCK: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_too_slow_is_blocked_for_a_while_then_let_back() {
    let _watchdog = Watchdog::arm("unblock::a_peer_too_slow_is_blocked_for_a_while_then_let_back");
    let mut settings = config().kademlia(false);
    settings.frame_timeout = FRAME_TIMEOUT;
    settings.slow_peer_block = BLOCK;
    let mut honest = Peer::start(settings).await;
    let feed = honest.store.create_feed().await.unwrap();
    append(&feed, 0, 3).await;
    let addr = honest.addr(Transport::Tcp).await;
    let them = honest.node.peer_id();

    let mut swarm = bare_swarm();
    let slow = *swarm.local_peer_id();
    let mut control = swarm.behaviour().new_control();
    assert!(dial_bare(&mut swarm, addr.clone()).await);
    // The swarm runs on its own and dials when told.
    let (dials, mut requests) = tokio::sync::mpsc::channel(4);
    let driver = tokio::spawn(async move {
        let mut dialing = Dials::default();
        loop {
            tokio::select! {
                event = swarm.select_next_some() => dialing.on_event(&mut swarm, &event),
                Some(request) = requests.recv() => dialing.start(&mut swarm, request),
            }
        }
    });
    let mut client = Client::new(feed.key(), &slow.to_bytes(), &them.to_bytes());
    let want = wire::encode(&client.want(0), wire::DEFAULT_MAX_FRAME_BYTES).unwrap();
    assert!(
        within(
            "a first request to be answered",
            served(&mut control, them, &want)
        )
        .await,
        "the peer is served before it misbehaves"
    );

    // One byte of a request, then nothing.
    let asked_at = Instant::now();
    let protocol = StreamProtocol::new(wire::REPLICATE_PROTOCOL);
    let mut stream = within("a stream to open", control.open_stream(them, protocol))
        .await
        .unwrap();
    within("one byte to be written", async {
        stream.write_all(&[0]).await.unwrap();
        stream.flush().await.unwrap();
    })
    .await;
    let reason = honest
        .event(|e| match e {
            Event::PeerRejected { peer, reason } if *peer == slow => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert!(matches!(reason, Violation::TooSlow(_)), "{reason}");
    honest
        .event_within(AT_ONCE, |e| {
            matches!(e, Event::PeerDisconnected { peer } if *peer == slow).then_some(())
        })
        .await;
    // The request's deadline began after `asked_at`, and the block after the deadline: the
    // peer cannot be let back before this.
    let earliest_unblock = asked_at + FRAME_TIMEOUT + BLOCK;

    // Redial until let back: every attempt before the block can have ended must be refused
    // (the first is made right after the rejection, seconds before), and one after it served.
    let mut refused = 0;
    within("the peer to be let back after its block", async {
        loop {
            let outcome = redial(&dials, &mut control, them, addr.clone(), &want).await;
            let after = Instant::now();
            match outcome {
                Redial::Served => {
                    assert!(
                        after >= earliest_unblock,
                        "served {:?} before its block could end (after {refused} refusals)",
                        earliest_unblock - after
                    );
                    return;
                }
                Redial::Refused => refused += 1,
            }
            // Pacing the attempts, not waiting for an outcome.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    eprintln!("refused {refused} redials while blocked, then let back");
    driver.abort();
    within("the honest node to stop", honest.stop()).await;
}
