#![allow(clippy::unwrap_used)]
//! A misbehaving peer, built from the protocol module and a bare libp2p swarm: whatever it
//! sends that is invalid gets it rejected, disconnected and reported, and nothing is stored.

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder, noise, tcp, yamux};
use multibee_feed::{Feed, Store};
use multibee_net::wire::{self, Data, Have, Message};
use multibee_net::{Event, Violation};

use crate::common::{Peer, Transport, append, config, within};

/// Whether a violation is the one expected.
type Check = fn(&Violation) -> bool;

/// What the bad peer answers to a request.
#[derive(Clone, Copy, Debug)]
enum Misdeed {
    ForgedEntry,
    WrongProof,
    BadSignature,
    OversizedFrame,
    Garbage,
    TrailingBytes,
    UnknownVersion,
    UnrequestedFeed,
}

/// The honest writer's feed and another feed, for the bad peer to draw on.
struct Material {
    _dirs: tempfile::TempDir,
    feed: Feed,
    other: Feed,
}

async fn material() -> Material {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let feed = store.create_feed().await.unwrap();
    append(&feed, 0, 50).await;
    let other = store.create_feed().await.unwrap();
    append(&other, 0, 50).await;
    Material {
        _dirs: dir,
        feed,
        other,
    }
}

fn data_of(feed: &Feed) -> Data {
    let batch = feed.proof(0..20).unwrap();
    Data {
        discovery_key: feed.discovery_key(),
        start: 0,
        entries: batch.entries,
        proof: batch.proof,
    }
}

fn frame(message: &Message) -> Vec<u8> {
    wire::encode(message, wire::DEFAULT_MAX_FRAME_BYTES).unwrap()
}

/// The bytes the bad peer sends after its (honest) `Have`.
fn misdeed_bytes(misdeed: Misdeed, m: &Material) -> Vec<u8> {
    let mut data = data_of(&m.feed);
    match misdeed {
        Misdeed::ForgedEntry => data.entries[7] = b"forged".to_vec(),
        Misdeed::WrongProof => data.proof.nodes[0].0[5] ^= 0x40,
        Misdeed::BadSignature => data.proof.signature.0[10] ^= 1,
        Misdeed::UnrequestedFeed => data = data_of(&m.other),
        Misdeed::OversizedFrame => {
            let mut bytes = (64u32 << 20).to_be_bytes().to_vec();
            bytes.extend_from_slice(&[0; 1024]);
            return bytes;
        }
        Misdeed::Garbage => return [&[0, 0, 0, 8, 1][..], &[0xff; 7]].concat(),
        Misdeed::TrailingBytes => {
            let mut bytes = frame(&Message::Data(data));
            bytes.extend_from_slice(&[0, 0, 0]);
            let length = (bytes.len() - wire::PREFIX_BYTES) as u32;
            bytes[..4].copy_from_slice(&length.to_be_bytes());
            return bytes;
        }
        Misdeed::UnknownVersion => {
            let mut bytes = frame(&Message::Data(data));
            bytes[wire::PREFIX_BYTES] = 77;
            return bytes;
        }
    }
    frame(&Message::Data(data))
}

/// A bare swarm that answers every replicate stream with `misdeed`; returns its id and address.
async fn bad_peer(misdeed: Misdeed, m: &Material) -> (PeerId, Multiaddr) {
    let mut swarm: Swarm<libp2p_stream::Behaviour> = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        .build();
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let addr = within(async {
        loop {
            if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } =
                swarm.select_next_some().await
            {
                return address;
            }
        }
    })
    .await;
    let id = *swarm.local_peer_id();
    let mut incoming = swarm
        .behaviour()
        .new_control()
        .accept(StreamProtocol::new(wire::REPLICATE_PROTOCOL))
        .unwrap();
    let have = frame(&Message::Have(Have {
        discovery_key: m.feed.discovery_key(),
        length: 50,
    }));
    let bytes = misdeed_bytes(misdeed, m);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = swarm.select_next_some() => {}
                Some((_, mut stream)) = incoming.next() => {
                    let (have, bytes) = (have.clone(), bytes.clone());
                    tokio::spawn(async move {
                        let mut request = [0u8; 256];
                        let _ = stream.read(&mut request).await;
                        let _ = stream.write_all(&have).await;
                        let _ = stream.write_all(&bytes).await;
                        let _ = stream.flush().await;
                        // Hold the stream until the other side drops it.
                        let _ = stream.read(&mut request).await;
                    });
                }
            }
        }
    });
    (id, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_misdeed_is_rejected_and_nothing_is_stored() {
    let m = material().await;
    let mut honest = Peer::start(config().kademlia(false)).await;
    let replica = honest.node.handle().replicate(m.feed.key()).await.unwrap();
    let cases: [(Misdeed, Check); 8] = [
        (Misdeed::ForgedEntry, |v| matches!(v, Violation::Invalid(_))),
        (Misdeed::WrongProof, |v| matches!(v, Violation::Invalid(_))),
        (Misdeed::BadSignature, |v| {
            matches!(v, Violation::Invalid(_))
        }),
        (Misdeed::OversizedFrame, |v| {
            matches!(
                v,
                Violation::Frame(multibee_net::FrameError::TooLarge { .. })
            )
        }),
        (Misdeed::Garbage, |v| {
            matches!(v, Violation::Frame(multibee_net::FrameError::Malformed(_)))
        }),
        (Misdeed::TrailingBytes, |v| {
            matches!(
                v,
                Violation::Frame(multibee_net::FrameError::TrailingBytes(3))
            )
        }),
        (Misdeed::UnknownVersion, |v| {
            matches!(
                v,
                Violation::Frame(multibee_net::FrameError::UnknownVersion(77))
            )
        }),
        (Misdeed::UnrequestedFeed, |v| {
            matches!(v, Violation::UnrequestedFeed { .. })
        }),
    ];
    for (misdeed, expected) in cases {
        let (bad, addr) = bad_peer(misdeed, &m).await;
        honest.node.handle().dial(addr).await.unwrap();
        let reason = honest
            .event(|e| match e {
                Event::PeerRejected { peer, reason } if *peer == bad => Some(reason.clone()),
                _ => None,
            })
            .await;
        assert!(expected(&reason), "{misdeed:?} was rejected for {reason}");
        honest
            .event(|e| matches!(e, Event::PeerDisconnected { peer } if *peer == bad).then_some(()))
            .await;
        assert_eq!(replica.length(), 0, "nothing from {misdeed:?} was stored");
        assert!(
            !honest
                .node
                .handle()
                .connected_peers()
                .await
                .unwrap()
                .contains(&bad)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_garbage_is_rejected() {
    let mut honest = Peer::start(config()).await;
    let addr = honest.addr(Transport::Tcp).await;
    let mut swarm: Swarm<libp2p_stream::Behaviour> = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        .build();
    let bad = *swarm.local_peer_id();
    let mut control = swarm.behaviour().new_control();
    swarm.dial(addr).unwrap();
    within(async {
        loop {
            if let libp2p::swarm::SwarmEvent::ConnectionEstablished { .. } =
                swarm.select_next_some().await
            {
                return;
            }
        }
    })
    .await;
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let mut stream = within(control.open_stream(
        honest.node.peer_id(),
        StreamProtocol::new(wire::REPLICATE_PROTOCOL),
    ))
    .await
    .unwrap();
    stream
        .write_all(&[0, 0, 0, 3, 1, 0xfe, 0xfe])
        .await
        .unwrap();
    stream.flush().await.unwrap();
    let reason = honest
        .event(|e| match e {
            Event::PeerRejected { peer, reason } if *peer == bad => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert!(matches!(reason, Violation::Frame(_)), "{reason}");
}
