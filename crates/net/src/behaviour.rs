//! The libp2p side: the combined network behaviour and the swarm that runs it.

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    Swarm, SwarmBuilder, allow_block_list, autonat, connection_limits, dcutr, identify,
    identity::Keypair, kad, mdns, noise, ping, relay, tcp, yamux,
};

use crate::config::Config;
use crate::error::Error;

/// The identify protocol version this crate speaks.
const IDENTIFY_VERSION: &str = "/multibee/0.1.0";
/// The Kademlia protocol of multibee's DHT (kept apart from the public IPFS DHT).
const KAD_PROTOCOL: &str = "/multibee/kad/1.0.0";

/// Connections to one peer at once (TCP, QUIC and relayed ones may coexist for a while).
const MAX_CONNECTIONS_PER_PEER: u32 = 4;

/// Every behaviour a node runs.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub(crate) stream: libp2p_stream::Behaviour,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) kad: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(crate) relay: relay::client::Behaviour,
    pub(crate) dcutr: dcutr::Behaviour,
    pub(crate) autonat: autonat::Behaviour,
}

/// Builds the swarm: TCP+Noise+Yamux, QUIC, and the relay client transport.
pub(crate) fn build_swarm(config: &Config) -> Result<Swarm<Behaviour>, Error> {
    let keypair = config
        .identity
        .clone()
        .unwrap_or_else(Keypair::generate_ed25519);
    let mdns_on = config.mdns;
    let kad_on = config.kademlia;
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established_incoming(Some(config.max_incoming_connections))
        .with_max_pending_incoming(Some(config.max_incoming_connections))
        .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER));
    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| Error::transport("setting up TCP", e))?
        .with_quic()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| Error::transport("setting up the relay client", e))?
        .with_behaviour(|key, relay| {
            let mut behaviour = behaviour(key, relay, mdns_on, kad_on)?;
            behaviour.limits = connection_limits::Behaviour::new(limits);
            Ok(behaviour)
        })
        .map_err(|e| Error::transport("setting up the behaviours", e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
        .build();
    Ok(swarm)
}

fn behaviour(
    key: &Keypair,
    relay: relay::client::Behaviour,
    mdns_on: bool,
    kad_on: bool,
) -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
    let id = key.public().to_peer_id();
    let mdns = match mdns_on {
        true => Some(mdns::tokio::Behaviour::new(mdns::Config::default(), id)?),
        false => None,
    };
    let kad = kad_on.then(|| {
        let config = kad::Config::new(libp2p::StreamProtocol::new(KAD_PROTOCOL));
        let mut kad = kad::Behaviour::with_config(id, kad::store::MemoryStore::new(id), config);
        // Answer queries even before an external address is confirmed (LANs, tests).
        kad.set_mode(Some(kad::Mode::Server));
        kad
    });
    Ok(Behaviour {
        limits: connection_limits::Behaviour::new(Default::default()),
        blocked: Default::default(),
        stream: libp2p_stream::Behaviour::new(),
        identify: identify::Behaviour::new(identify::Config::new(
            IDENTIFY_VERSION.into(),
            key.public(),
        )),
        ping: ping::Behaviour::default(),
        kad: kad.into(),
        mdns: mdns.into(),
        relay,
        dcutr: dcutr::Behaviour::new(id),
        autonat: autonat::Behaviour::new(id, autonat::Config::default()),
    })
}
