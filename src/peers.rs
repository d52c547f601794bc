//! Remembered peers: the peers a node was connected to, kept in a file, and dialed again when
//! the node starts and whenever one of them disconnects (see [`crate::Served::remember_peers`]).
//!
//! The file (`peers.json` in the node example's folder) is JSON, readable by the owner only,
//! replaced whole (written to a temporary file, synced, renamed):
//! `{"version":1,"peers":[{"peer_id":"12D3..","addresses":["/ip4/10.0.0.2/tcp/4001"]}]}`,
//! the most recently seen peer first, each one's most recently working address first. A file
//! that cannot be read is reported once and ignored (a node starts all the same); it is
//! replaced at the next write.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use multibee_net::{Event, Multiaddr, NodeHandle, PeerId};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::task::{AbortHandle, JoinSet};

/// The most peers remembered (the least recently seen are forgotten first).
pub const MAX_PEERS: usize = 64;
/// The most addresses remembered per peer (the least recently working are forgotten first).
pub const MAX_ADDRESSES: usize = 8;
/// The version of the file's format.
const VERSION: u32 = 1;
/// How long one attempt to reach one address of a remembered peer may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// The first wait before dialing a peer that disconnected; it doubles with each failed round.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two rounds of dials to a remembered peer.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The peers remembered, most recently seen first, each with the addresses that worked, most
/// recent first. Pure state: the task in [`remember`] does the IO.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Book {
    peers: Vec<(PeerId, Vec<Multiaddr>)>,
}

/// The file's layout.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    peers: Vec<FilePeer>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePeer {
    peer_id: String,
    addresses: Vec<String>,
}

impl Book {
    /// Records that `addresses` (in order of preference) reached `peer`, or are where it
    /// listens: the peer and those addresses move to the front. Returns whether anything
    /// changed.
    pub(crate) fn remember(&mut self, peer: PeerId, addresses: &[Multiaddr]) -> bool {
        let addresses: Vec<Multiaddr> = addresses.iter().filter_map(dialable).collect();
        if addresses.is_empty() {
            return false;
        }
        let before = self.clone();
        let mut known = match self.peers.iter().position(|(p, _)| *p == peer) {
            Some(i) => self.peers.remove(i).1,
            None => Vec::new(),
        };
        known.retain(|a| !addresses.contains(a));
        let mut merged = addresses;
        merged.dedup();
        merged.extend(known);
        merged.truncate(MAX_ADDRESSES);
        self.peers.insert(0, (peer, merged));
        self.peers.truncate(MAX_PEERS);
        *self != before
    }

    /// Forgets `peer`; returns whether it was remembered.
    pub(crate) fn forget(&mut self, peer: &PeerId) -> bool {
        let before = self.peers.len();
        self.peers.retain(|(p, _)| p != peer);
        self.peers.len() != before
    }

    /// The addresses remembered for `peer`, most recent first.
    pub(crate) fn addresses(&self, peer: &PeerId) -> Option<&[Multiaddr]> {
        let found = self.peers.iter().find(|(p, _)| p == peer);
        found.map(|(_, a)| a.as_slice())
    }

    /// The peers remembered, most recent first.
    pub(crate) fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers.iter().map(|(p, _)| *p)
    }

    /// The file's text.
    pub(crate) fn to_json(&self) -> String {
        let file = File {
            version: VERSION,
            peers: self
                .peers
                .iter()
                .map(|(peer, addresses)| FilePeer {
                    peer_id: peer.to_string(),
                    addresses: addresses.iter().map(Multiaddr::to_string).collect(),
                })
                .collect(),
        };
        serde_json::to_string_pretty(&file).unwrap_or_default()
    }

    /// Reads the file's text; what is wrong with it, if anything.
    pub(crate) fn from_json(text: &str) -> Result<Book, String> {
        let file: File = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if file.version != VERSION {
            return Err(format!("unknown version {}", file.version));
        }
        let mut book = Book::default();
        // Oldest first, so that `remember` leaves the newest at the front.
        for entry in file.peers.iter().rev() {
            let peer: PeerId = entry
                .peer_id
                .parse()
                .map_err(|e| format!("bad peer id {:?}: {e}", entry.peer_id))?;
            let addresses = entry
                .addresses
                .iter()
                .map(|a| a.parse().map_err(|e| format!("bad address {a:?}: {e}")))
                .collect::<Result<Vec<Multiaddr>, String>>()?;
            book.remember(peer, &addresses);
        }
        Ok(book)
    }
}

/// `address` as worth dialing again: without a trailing `/p2p/ID`, and not an unspecified IP
/// (`0.0.0.0`, `::`).
fn dialable(address: &Multiaddr) -> Option<Multiaddr> {
    use multibee_net::Protocol;
    let mut address = address.clone();
    if let Some(Protocol::P2p(_)) = address.iter().last() {
        address.pop();
    }
    let unspecified = address.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    });
    (!unspecified && !address.is_empty()).then_some(address)
}

/// How long to wait before round `attempt` (0: the first) of dials to a peer: 1 s doubling to
/// 5 min, plus up to as much again of jitter (`jitter` in `0.0..1.0`) so that peers that
/// dropped together do not come back together.
pub(crate) fn backoff(attempt: u32, jitter: f64) -> Duration {
    let base = FIRST_BACKOFF.saturating_mul(1 << attempt.min(16));
    let base = base.min(MAX_BACKOFF);
    base + base.mul_f64(jitter.clamp(0.0, 1.0))
}

/// A number in `0.0..1.0` that differs from call to call.
fn jitter(peer: &PeerId, attempt: u32) -> f64 {
    use std::hash::BuildHasher;
    let hash = std::collections::hash_map::RandomState::new().hash_one((peer, attempt));
    (hash % 1000) as f64 / 1000.0
}

/// Reads the book in `path`: empty if there is none, and empty with a warning if it cannot be
/// read.
fn load(path: &Path) -> Book {
    match std::fs::read_to_string(path) {
        Ok(text) => Book::from_json(&text).unwrap_or_else(|e| {
            tracing::warn!(
                path = %path.display(),
                error = %e,
                "the remembered peers file is corrupt: ignored (it is replaced at the next write)"
            );
            Book::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Book::default(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the remembered peers");
            Book::default()
        }
    }
}

/// Replaces the file at `path` with `text`, owner-only, whole or not at all.
fn save(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut temp = path.as_os_str().to_owned();
    temp.push(".new");
    let temp = PathBuf::from(temp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Saves `book` in `path` (off the runtime's threads); a failure is logged.
async fn store(path: &Path, book: &Book) {
    let (to, text) = (path.to_path_buf(), book.to_json());
    let saved = tokio::task::spawn_blocking(move || save(&to, &text)).await;
    if let Ok(Err(e)) = saved {
        tracing::warn!(path = %path.display(), error = %e, "cannot save the remembered peers");
    }
}

/// Remembers the peers of `node` in `path` and dials them again: the ones in the file now,
/// and each one that disconnects, in rounds over its addresses, waiting longer after each
/// failed round ([`backoff`]), until it connects. Runs until the node stops.
pub(crate) async fn remember(
    node: NodeHandle,
    path: PathBuf,
    mut events: broadcast::Receiver<Event>,
) {
    let mut book = load(&path);
    let mut state = Redials::default();
    // Peers connected before `events` was subscribed to (the node dials at its start) are
    // remembered with the listen addresses they reported meanwhile.
    let connected = node.peers().await.unwrap_or_default();
    let mut learned = false;
    for info in &connected {
        learned |= book.remember(info.peer, &info.listen_addrs);
    }
    if learned {
        store(&path, &book).await;
    }
    let connected: Vec<PeerId> = connected.iter().map(|info| info.peer).collect();
    let remembered: Vec<PeerId> = book.peers().collect();
    for peer in remembered {
        if !connected.contains(&peer) {
            state.schedule(&node, &book, peer, Duration::ZERO);
        }
    }
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => {
                    if state.on_event(&node, &mut book, event) {
                        store(&path, &book).await;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
            Some(done) = state.rounds.join_next() => {
                if let Ok((peer, reached)) = done {
                    state.on_round(&node, &book, peer, reached);
                }
            }
        }
    }
}

/// The rounds of dials under way, and how many failed in a row per peer.
#[derive(Default)]
struct Redials {
    rounds: JoinSet<(PeerId, bool)>,
    waiting: HashMap<PeerId, AbortHandle>,
    failures: HashMap<PeerId, u32>,
}

impl Redials {
    /// Handles a node event; returns whether the book changed.
    fn on_event(&mut self, node: &NodeHandle, book: &mut Book, event: Event) -> bool {
        match event {
            Event::DialSucceeded { peer, address } => book.remember(peer, &[address]),
            Event::PeerIdentified { peer, listen_addrs } => book.remember(peer, &listen_addrs),
            Event::PeerConnected { peer, .. } => {
                self.failures.remove(&peer);
                if let Some(round) = self.waiting.remove(&peer) {
                    round.abort();
                }
                false
            }
            Event::PeerDisconnected { peer } if book.addresses(&peer).is_some() => {
                self.failures.remove(&peer);
                let wait = backoff(0, jitter(&peer, 0));
                self.schedule(node, book, peer, wait);
                false
            }
            // A peer that broke the protocol is not dialed again.
            Event::PeerRejected { peer, .. } => {
                if let Some(round) = self.waiting.remove(&peer) {
                    round.abort();
                }
                book.forget(&peer)
            }
            _ => false,
        }
    }

    /// A round of dials to `peer` ended.
    fn on_round(&mut self, node: &NodeHandle, book: &Book, peer: PeerId, reached: bool) {
        self.waiting.remove(&peer);
        if reached || book.addresses(&peer).is_none() {
            self.failures.remove(&peer);
            return;
        }
        let failures = self.failures.entry(peer).or_default();
        *failures = failures.saturating_add(1);
        let wait = backoff(*failures, jitter(&peer, *failures));
        self.schedule(node, book, peer, wait);
    }

    /// Dials every remembered address of `peer` in turn after `wait`, unless a round is
    /// already under way.
    fn schedule(&mut self, node: &NodeHandle, book: &Book, peer: PeerId, wait: Duration) {
        if self.waiting.contains_key(&peer) {
            return;
        }
        let Some(addresses) = book.addresses(&peer).map(<[Multiaddr]>::to_vec) else {
            return;
        };
        let node = node.clone();
        let round = self.rounds.spawn(async move {
            tokio::time::sleep(wait).await;
            for address in addresses {
                let address = address.with(multibee_net::Protocol::P2p(peer));
                match node.connect(address.clone(), DIAL_TIMEOUT).await {
                    Ok(_) => return (peer, true),
                    Err(e) => tracing::debug!(%peer, %address, error = %e, "redial failed"),
                }
            }
            (peer, false)
        });
        self.waiting.insert(peer, round);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn addr(text: &str) -> Multiaddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_most_recent_peers_and_addresses_come_first_and_are_bounded() {
        let mut book = Book::default();
        let peers: Vec<PeerId> = (0..MAX_PEERS + 2).map(|_| PeerId::random()).collect();
        for (i, peer) in peers.iter().enumerate() {
            assert!(book.remember(*peer, &[addr(&format!("/ip4/10.0.0.1/tcp/{i}"))]));
        }
        let kept: Vec<PeerId> = book.peers().collect();
        assert_eq!(kept.len(), MAX_PEERS);
        assert_eq!(kept[0], peers[MAX_PEERS + 1]);
        assert!(book.addresses(&peers[0]).is_none());

        let peer = peers[MAX_PEERS + 1];
        for port in 0..MAX_ADDRESSES as u16 + 3 {
            book.remember(peer, &[addr(&format!("/ip4/10.0.0.2/tcp/{port}"))]);
        }
        let addresses = book.addresses(&peer).unwrap();
        assert_eq!(addresses.len(), MAX_ADDRESSES);
        assert_eq!(addresses[0], addr("/ip4/10.0.0.2/tcp/10"));
        // The same again changes nothing; an older one moves to the front.
        assert!(!book.remember(peer, &[addr("/ip4/10.0.0.2/tcp/10")]));
        assert!(book.remember(peer, &[addr("/ip4/10.0.0.2/tcp/5")]));
        assert_eq!(
            book.addresses(&peer).unwrap()[0],
            addr("/ip4/10.0.0.2/tcp/5")
        );
    }

    #[test]
    fn unspecified_addresses_and_peer_ids_are_not_kept() {
        let mut book = Book::default();
        let peer = PeerId::random();
        assert!(!book.remember(peer, &[addr("/ip4/0.0.0.0/tcp/1")]));
        let with_id = addr("/ip4/10.0.0.1/tcp/1").with(multibee_net::Protocol::P2p(peer));
        assert!(book.remember(peer, &[with_id, addr("/ip6/::/tcp/1")]));
        assert_eq!(
            book.addresses(&peer).unwrap(),
            [addr("/ip4/10.0.0.1/tcp/1")]
        );
    }

    #[test]
    fn the_file_round_trips_and_a_corrupt_one_is_an_error() {
        let mut book = Book::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        book.remember(
            a,
            &[
                addr("/ip4/10.0.0.1/tcp/1"),
                addr("/ip4/10.0.0.1/udp/1/quic-v1"),
            ],
        );
        book.remember(b, &[addr("/ip4/10.0.0.2/tcp/2")]);
        assert_eq!(Book::from_json(&book.to_json()), Ok(book));
        assert!(Book::from_json("{not json").is_err());
        assert!(Book::from_json(r#"{"version":2,"peers":[]}"#).is_err());
        let bad_id = r#"{"version":1,"peers":[{"peer_id":"x","addresses":[]}]}"#;
        assert!(Book::from_json(bad_id).unwrap_err().contains("peer id"));
    }

    #[test]
    fn the_backoff_doubles_from_one_second_to_five_minutes_with_jitter() {
        assert_eq!(backoff(0, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(3, 0.0), Duration::from_secs(8));
        assert_eq!(backoff(30, 0.0), MAX_BACKOFF);
        assert_eq!(backoff(0, 0.5), Duration::from_millis(1500));
        assert!(backoff(40, 0.999) < MAX_BACKOFF * 2);
    }

    #[test]
    fn a_saved_file_is_owner_only_and_whole() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.json");
        let mut book = Book::default();
        book.remember(PeerId::random(), &[addr("/ip4/10.0.0.1/tcp/1")]);
        save(&path, &book.to_json()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load(&path), book);
        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(load(&path), Book::default());
    }
}
