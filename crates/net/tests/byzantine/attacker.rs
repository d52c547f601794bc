//! The attacker: a bare libp2p swarm that frames messages like a node but sends whatever a
//! scenario tells it, as the server of the streams the honest node opens to it, as a client
//! opening streams to the honest node, or both.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol};
use multibee_net::wire;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::common::{DialRequest, Dials, bare_swarm, dial_bare, listen_loopback, within};

/// What the attacker does with each replicate stream the honest node opens to it.
pub type Script = Arc<dyn Fn(Stream) -> BoxFuture<'static, ()> + Send + Sync>;

/// A running attacker; its swarm stops when this is dropped.
pub struct Attacker {
    pub id: PeerId,
    pub addr: Multiaddr,
    pub control: libp2p_stream::Control,
    /// How many replicate streams the honest node has opened to the attacker.
    pub asked: watch::Receiver<usize>,
    /// Dials for the attacker's swarm (see [`crate::common::redial`]).
    pub dials: mpsc::Sender<DialRequest>,
    task: Option<JoinHandle<()>>,
}

impl Drop for Attacker {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Attacker {
    /// Starts listening on loopback; answers replicate streams with `script` if given, and
    /// dials `dial` if given (returning once connected).
    pub async fn start(script: Option<Script>, dial: Option<Multiaddr>) -> Attacker {
        let mut swarm = bare_swarm();
        let addr = listen_loopback(&mut swarm).await;
        if let Some(dial) = dial {
            // Connected, or turned away (a node at its connection limit): either is an answer.
            dial_bare(&mut swarm, dial).await;
        }
        let id = *swarm.local_peer_id();
        let control = swarm.behaviour().new_control();
        let mut incoming = swarm
            .behaviour()
            .new_control()
            .accept(StreamProtocol::new(wire::REPLICATE_PROTOCOL))
            .unwrap();
        let (asked_tx, asked) = watch::channel(0);
        let (dials, mut requests) = mpsc::channel(4);
        let task = tokio::spawn(async move {
            let mut dialing = Dials::default();
            loop {
                tokio::select! {
                    event = swarm.select_next_some() => dialing.on_event(&mut swarm, &event),
                    Some(request) = requests.recv() => dialing.start(&mut swarm, request),
                    Some((_, stream)) = incoming.next() => {
                        asked_tx.send_modify(|n| *n += 1);
                        if let Some(script) = &script {
                            tokio::spawn(script(stream));
                        }
                    }
                }
            }
        });
        Attacker {
            id,
            addr,
            control,
            asked,
            dials,
            task: Some(task),
        }
    }

    /// Stops the attacker's swarm and waits until it is gone (its connections closed).
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = within("an attacker's swarm to stop", task).await;
        }
    }

    /// Opens a stream of `protocol` to `peer`.
    pub async fn open(&mut self, peer: PeerId, protocol: &'static str) -> Option<Stream> {
        self.control
            .open_stream(peer, StreamProtocol::new(protocol))
            .await
            .ok()
    }
}

/// A script that reads the request, sends `parts` one after the other and keeps the stream
/// open until the other side closes it.
pub fn answer(parts: Vec<Vec<u8>>) -> Script {
    Arc::new(move |mut stream| {
        let parts = parts.clone();
        Box::pin(async move {
            let mut request = [0u8; 256];
            let _ = stream.read(&mut request).await;
            for part in parts {
                if stream.write_all(&part).await.is_err() {
                    return;
                }
            }
            let _ = stream.flush().await;
            hold(stream).await;
        })
    })
}

/// A script that reads the request, sends `first` whole, then `dribbled` one byte per
/// `every` (a slowloris).
pub fn dribble(first: Vec<u8>, dribbled: Vec<u8>, every: Duration) -> Script {
    Arc::new(move |mut stream| {
        let (first, dribbled) = (first.clone(), dribbled.clone());
        Box::pin(async move {
            let mut request = [0u8; 256];
            let _ = stream.read(&mut request).await;
            let _ = stream.write_all(&first).await;
            let _ = stream.flush().await;
            for byte in dribbled {
                tokio::time::sleep(every).await;
                if stream.write_all(&[byte]).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
            }
            hold(stream).await;
        })
    })
}

/// A script that reads the request, sends `bytes` and closes the stream.
pub fn send_and_close(bytes: Vec<u8>) -> Script {
    Arc::new(move |mut stream| {
        let bytes = bytes.clone();
        Box::pin(async move {
            let mut request = [0u8; 256];
            let _ = stream.read(&mut request).await;
            let _ = stream.write_all(&bytes).await;
            let _ = stream.close().await;
        })
    })
}

/// A script that answers the request for any feed with a `Have`, then sends a frame prefix
/// claiming `claim` bytes and a few of them, and nothing more.
pub fn claim_then_stall(claim: u32) -> Script {
    Arc::new(move |mut stream| {
        Box::pin(async move {
            let mut prefix = [0u8; wire::PREFIX_BYTES];
            if stream.read_exact(&mut prefix).await.is_err() {
                return;
            }
            let mut body = vec![0u8; u32::from_be_bytes(prefix).min(256) as usize];
            if stream.read_exact(&mut body).await.is_err() {
                return;
            }
            let Ok(wire::Message::Want(want)) = wire::decode(&body) else {
                return;
            };
            let have = wire::Message::Have(wire::Have {
                discovery_key: want.discovery_key,
                length: 1_000,
            });
            let mut bytes = wire::encode(&have, wire::DEFAULT_MAX_FRAME_BYTES).unwrap();
            bytes.extend_from_slice(&claim.to_be_bytes());
            bytes.extend_from_slice(&[1; 100]);
            let _ = stream.write_all(&bytes).await;
            let _ = stream.flush().await;
            hold(stream).await;
        })
    })
}

/// Reads and drops whatever comes until the stream ends.
pub async fn hold(mut stream: Stream) {
    let mut sink = [0u8; 4096];
    while let Ok(1..) = stream.read(&mut sink).await {}
}
