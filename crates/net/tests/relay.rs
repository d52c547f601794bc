#![allow(clippy::unwrap_used)]
//! Replication through a circuit relay: A listens only through a relay, B reaches it there.

use futures::StreamExt;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{Multiaddr, SwarmBuilder, identify, noise, relay, tcp, yamux};
use multibee_net::Event;

use crate::common::{Peer, Watchdog, append, check_entries, config, listen_loopback, wait_length};

#[derive(NetworkBehaviour)]
struct RelayServer {
    relay: relay::Behaviour,
    identify: identify::Behaviour,
}

/// A relay server on loopback; returns its address (with its peer id).
async fn relay_server() -> Multiaddr {
    let mut swarm = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|key| {
            let id = key.public().to_peer_id();
            let config = relay::Config {
                max_circuit_bytes: 1 << 30,
                max_circuit_duration: std::time::Duration::from_secs(600),
                ..Default::default()
            };
            RelayServer {
                relay: relay::Behaviour::new(id, config),
                identify: identify::Behaviour::new(identify::Config::new(
                    "/multibee/0.1.0".into(),
                    key.public(),
                )),
            }
        })
        .unwrap()
        .build();
    let addr = listen_loopback(&mut swarm).await;
    swarm.add_external_address(addr.clone());
    let id = *swarm.local_peer_id();
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    addr.with_p2p(id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_through_a_relay() {
    let _watchdog = Watchdog::arm("relay::replication_through_a_relay");
    let relay = relay_server().await;
    let circuit = relay.clone().with(libp2p::multiaddr::Protocol::P2pCircuit);
    let a = Peer::start(config().kademlia(false).listen_on([circuit.clone()])).await;
    let feed = a.store.create_feed().await.unwrap();
    append(&feed, 0, 2_000).await;

    let mut b = Peer::start(config().kademlia(false)).await;
    let a_id = a.node.peer_id();
    let through = circuit.with_p2p(a_id).unwrap();
    b.node.handle().dial(through).await.unwrap();
    let address = b
        .event(|e| match e {
            Event::PeerConnected { peer, address } if *peer == a_id => Some(address.clone()),
            _ => None,
        })
        .await;
    assert!(address.to_string().contains("p2p-circuit"), "{address}");
    let replica = b.node.handle().replicate(feed.key()).await.unwrap();
    wait_length(&replica, 2_000).await;
    feed.append(crate::common::entry(2_000)).await.unwrap();
    wait_length(&replica, 2_001).await;
    check_entries(&replica, 2_001);
}
