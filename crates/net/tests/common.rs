#![allow(clippy::unwrap_used)]
//! Helpers shared by the tests: peers in temporary folders and waits with generous timeouts.

use std::future::Future;
use std::time::Duration;

use multibee_feed::{Feed, Store};
use multibee_net::{Config, Event, Multiaddr, Node, Stats};
use tempfile::TempDir;

/// How long any wait may take before the test fails (generous: 2-core CI under load).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A node over a store in its own temporary folder.
pub struct Peer {
    pub dir: TempDir,
    pub store: Store,
    pub node: Node,
}

impl Peer {
    pub async fn start(config: Config) -> Peer {
        let dir = tempfile::tempdir().unwrap();
        Peer::start_in(dir, config).await
    }

    pub async fn start_in(dir: TempDir, config: Config) -> Peer {
        let store = Store::open(dir.path()).unwrap();
        let node = Node::start(store.clone(), config).await.unwrap();
        Peer { dir, store, node }
    }

    pub async fn addr(&self, transport: Transport) -> Multiaddr {
        let addrs = self.node.handle().listen_addrs().await.unwrap();
        addrs
            .into_iter()
            .find(|a| transport.matches(a))
            .expect("a listen address of that transport")
    }

    /// Waits for an event matching `pred` and returns it; fails the test after [`PATIENCE`],
    /// listing the last events seen meanwhile.
    pub async fn event<T>(&mut self, pred: impl FnMut(&Event) -> Option<T>) -> T {
        self.event_within(PATIENCE, pred).await
    }

    /// [`Peer::event`], failing the test after `limit`.
    pub async fn event_within<T>(
        &mut self,
        limit: Duration,
        mut pred: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        let mut seen = std::collections::VecDeque::new();
        let wait = async {
            loop {
                let event = self.node.next_event().await.expect("the node runs");
                if let Some(found) = pred(&event) {
                    return found;
                }
                if seen.len() == 8 {
                    seen.pop_front();
                }
                seen.push_back(format!("{event:?}"));
            }
        };
        match tokio::time::timeout(limit, wait).await {
            Ok(found) => found,
            Err(_) => panic!(
                "the event awaited did not come in {limit:?}; the last ones: {:#?}",
                seen
            ),
        }
    }

    /// Stops the node and closes the store, keeping the folder; returns the node's final
    /// counters.
    pub async fn stop(self) -> (TempDir, Stats) {
        let handle = self.node.handle();
        within("the node to stop", self.node.shutdown()).await;
        let stats = handle.stats();
        drop(handle);
        drop(self.store);
        (self.dir, stats)
    }
}

/// Which transport an address uses.
#[derive(Clone, Copy, Debug)]
pub enum Transport {
    Tcp,
    Quic,
}

impl Transport {
    pub fn matches(self, addr: &Multiaddr) -> bool {
        let text = addr.to_string();
        match self {
            Transport::Tcp => text.contains("/tcp/"),
            Transport::Quic => text.contains("/quic-v1"),
        }
    }
}

/// Loopback nodes for tests: 127.0.0.1, port 0, mDNS off.
pub fn config() -> Config {
    // Logs with RUST_LOG=multibee_net=debug (once per test binary).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Config::loopback()
}

/// How long a whole test may run before [`Watchdog`] ends the test process.
pub const TEST_LIMIT: Duration = Duration::from_secs(180);

/// A backstop for the awaits that have no timeout of their own (a node's commands, its
/// shutdown): if the test is still running after its limit, it says which test and ends the
/// test process, so that a hang fails CI in minutes. Dropping it (the test ended, or
/// panicked) disarms it.
pub struct Watchdog(#[allow(dead_code)] std::sync::mpsc::Sender<()>);

impl Watchdog {
    /// Arms a watchdog for [`TEST_LIMIT`].
    pub fn arm(test: &'static str) -> Watchdog {
        Watchdog::arm_for(test, TEST_LIMIT)
    }

    /// Arms a watchdog for `limit`.
    pub fn arm_for(test: &'static str, limit: Duration) -> Watchdog {
        let (disarm, armed) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = armed.recv_timeout(limit) {
                // Straight to stderr: the test harness captures `eprintln!` in this thread
                // too, and the capture is lost when the process exits.
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "{test} is still running after {limit:?}: something it awaits hangs; \
                     ending the test process"
                );
                std::process::exit(101);
            }
        });
        Watchdog(disarm)
    }
}

/// Runs `f`, failing the test, with `what` was awaited, if it takes longer than [`PATIENCE`].
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, f).await {
        Ok(done) => done,
        Err(_) => panic!("timed out after {PATIENCE:?} waiting for {what}"),
    }
}

/// Waits until `feed` holds at least `length` entries.
pub async fn wait_length(feed: &Feed, length: u64) {
    let mut status = feed.subscribe();
    let reached = tokio::time::timeout(PATIENCE, status.wait_for(|s| s.length >= length)).await;
    match reached {
        Ok(status) => drop(status.unwrap()),
        Err(_) => panic!(
            "timed out after {PATIENCE:?} waiting for feed {} to reach {length} entries \
             (it holds {})",
            feed.key(),
            feed.length()
        ),
    }
}

/// Entries `i` of the test feeds.
pub fn entry(i: u64) -> Vec<u8> {
    format!("entry number {i}").into_bytes()
}

/// Appends entries `from..to` in batches of 1,000.
pub async fn append(feed: &Feed, from: u64, to: u64) {
    let mut i = from;
    while i < to {
        let end = to.min(i + 1000);
        feed.append_batch((i..end).map(entry).collect())
            .await
            .unwrap();
        i = end;
    }
}

/// Checks every entry of `feed` up to `length`.
pub fn check_entries(feed: &Feed, length: u64) {
    assert_eq!(feed.length(), length);
    for (i, e) in feed.range(0..length).unwrap().map(Result::unwrap) {
        assert_eq!(e, entry(i));
    }
}

/// Copies the files of the folder `from` into `to` (a store "restored from a backup").
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for file in std::fs::read_dir(from).unwrap() {
        let file = file.unwrap();
        std::fs::copy(file.path(), to.join(file.file_name())).unwrap();
    }
}

/// A bare swarm over TCP+Noise+Yamux that speaks only `libp2p-stream`: a peer that frames
/// protocol messages by hand (to misbehave, or to probe a node's limits).
pub fn bare_swarm() -> libp2p::Swarm<libp2p_stream::Behaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build()
}

/// Dials `addr` from `swarm` and drives it until the connection is up (`true`) or the dial
/// failed (`false`: a node at its connection limit turns it away).
pub async fn dial_bare(
    swarm: &mut libp2p::Swarm<libp2p_stream::Behaviour>,
    addr: Multiaddr,
) -> bool {
    use futures::StreamExt;
    use libp2p::swarm::SwarmEvent;
    swarm.dial(addr).unwrap();
    within("a dial from a bare swarm to end", async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => return true,
                SwarmEvent::OutgoingConnectionError { .. } => return false,
                _ => {}
            }
        }
    })
    .await
}

/// Makes `swarm` listen on loopback TCP (port from the OS) and returns the address.
pub async fn listen_loopback<B: libp2p::swarm::NetworkBehaviour>(
    swarm: &mut libp2p::Swarm<B>,
) -> Multiaddr {
    use futures::StreamExt;
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    within("a bare swarm to listen", async {
        loop {
            if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } =
                swarm.select_next_some().await
            {
                return address;
            }
        }
    })
    .await
}

/// A dial for the task that drives a bare swarm (see [`Dials`]): to `addr`, once the swarm has
/// no connection to `peer` left (so that what is asked next goes over the new connection).
/// The reply is `None` if the dial failed, or else resolves once that connection closed.
pub struct DialRequest {
    pub addr: Multiaddr,
    pub peer: libp2p::PeerId,
    pub reply: tokio::sync::oneshot::Sender<Option<tokio::sync::oneshot::Receiver<()>>>,
}

/// The dials a bare swarm's driving task was asked for, and the connections they opened.
#[derive(Default)]
pub struct Dials {
    deferred: Vec<DialRequest>,
    pending: std::collections::HashMap<
        libp2p::swarm::ConnectionId,
        tokio::sync::oneshot::Sender<Option<tokio::sync::oneshot::Receiver<()>>>,
    >,
    open: std::collections::HashMap<libp2p::swarm::ConnectionId, tokio::sync::oneshot::Sender<()>>,
}

impl Dials {
    /// Dials as asked, or once the swarm's last connection to the peer closed.
    pub fn start<B: libp2p::swarm::NetworkBehaviour>(
        &mut self,
        swarm: &mut libp2p::Swarm<B>,
        request: DialRequest,
    ) {
        if swarm.is_connected(&request.peer) {
            self.deferred.push(request);
            return;
        }
        let opts = libp2p::swarm::dial_opts::DialOpts::unknown_peer_id()
            .address(request.addr)
            .build();
        let id = opts.connection_id();
        match swarm.dial(opts) {
            Ok(()) => drop(self.pending.insert(id, request.reply)),
            Err(_) => drop(request.reply.send(None)),
        }
    }

    /// Follows the swarm's events: answers the dials and reports their connections' closing.
    pub fn on_event<B: libp2p::swarm::NetworkBehaviour>(
        &mut self,
        swarm: &mut libp2p::Swarm<B>,
        event: &libp2p::swarm::SwarmEvent<B::ToSwarm>,
    ) {
        use libp2p::swarm::SwarmEvent;
        match event {
            SwarmEvent::ConnectionEstablished { connection_id, .. } => {
                if let Some(reply) = self.pending.remove(connection_id) {
                    let (closed, on_close) = tokio::sync::oneshot::channel();
                    self.open.insert(*connection_id, closed);
                    let _ = reply.send(Some(on_close));
                }
            }
            SwarmEvent::OutgoingConnectionError { connection_id, .. } => {
                if let Some(reply) = self.pending.remove(connection_id) {
                    let _ = reply.send(None);
                }
            }
            SwarmEvent::ConnectionClosed {
                connection_id,
                peer_id,
                num_established,
                ..
            } => {
                if let Some(closed) = self.open.remove(connection_id) {
                    let _ = closed.send(());
                }
                if *num_established == 0 {
                    let (due, waiting) = std::mem::take(&mut self.deferred)
                        .into_iter()
                        .partition(|d| d.peer == *peer_id);
                    self.deferred = waiting;
                    for request in due {
                        self.start(swarm, request);
                    }
                }
            }
            _ => {}
        }
    }
}

/// What dialing a node again came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redial {
    /// The dial failed, or the connection was closed at once and nothing was served on it.
    Refused,
    /// The node answered a request for a feed it holds over the new connection.
    Served,
}

/// How long a node may take to close a connection it does not keep ("at once": generous for a
/// loaded machine, and well under the node's 60 s idle timeout, which would close it anyway).
pub const AT_ONCE: Duration = Duration::from_secs(10);

/// Dials `node` at `addr` again through the task behind `dials` (which drives the swarm of
/// `control`), and asks it, on a new replicate stream, with the request frame `want` for a
/// feed it holds.
pub async fn redial(
    dials: &tokio::sync::mpsc::Sender<DialRequest>,
    control: &mut libp2p_stream::Control,
    node: libp2p::PeerId,
    addr: Multiaddr,
    want: &[u8],
) -> Redial {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let request = DialRequest {
        addr,
        peer: node,
        reply,
    };
    dials.send(request).await.expect("the swarm's task runs");
    let dialed = within("a redial to connect or fail", answer).await;
    let Some(closed) = dialed.expect("the swarm's task answers") else {
        return Redial::Refused;
    };
    if within(
        "a request on the new connection to be answered or fail",
        async { served(control, node, want).await },
    )
    .await
    {
        return Redial::Served;
    }
    match tokio::time::timeout(AT_ONCE, closed).await {
        Ok(_) => Redial::Refused,
        Err(_) => panic!(
            "a new connection that served nothing was still open after {AT_ONCE:?}: neither \
             refused nor served"
        ),
    }
}

/// Whether `node` answers the request `want` on a new replicate stream with `Have`.
pub async fn served(
    control: &mut libp2p_stream::Control,
    node: libp2p::PeerId,
    want: &[u8],
) -> bool {
    use futures::{AsyncReadExt, AsyncWriteExt};
    let protocol = libp2p::StreamProtocol::new(multibee_net::wire::REPLICATE_PROTOCOL);
    let Ok(mut stream) = control.open_stream(node, protocol).await else {
        return false;
    };
    if stream.write_all(want).await.is_err() || stream.flush().await.is_err() {
        return false;
    }
    let mut prefix = [0u8; multibee_net::wire::PREFIX_BYTES];
    if stream.read_exact(&mut prefix).await.is_err() {
        return false;
    }
    let Ok(length) = multibee_net::wire::body_length(prefix, 1 << 16) else {
        return false;
    };
    let mut body = vec![0u8; length];
    if stream.read_exact(&mut body).await.is_err() {
        return false;
    }
    matches!(
        multibee_net::wire::decode(&body),
        Ok(multibee_net::wire::Message::Have(_))
    )
}
