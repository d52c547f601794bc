//! The replication protocol as sans-IO state machines: messages in, actions out.
//!
//! One replicate stream carries one subscription. The client (the peer that wants entries)
//! opens it and sends one [`Want`]; the server answers [`Refused`](Message::Refused), or
//! [`Have`] and then [`Data`] messages: first everything from `from` to its length, in bounded
//! chunks, then every new entry as it is appended, for as long as the stream lives. The client
//! sends nothing after its `Want`.
//!
//! A peer that keeps a partial view sends a [`WantFiltered`] instead: prefixes, each with the
//! index it holds every entry under it before, and the signed length whose roots it holds. The
//! server answers [`Have`], then [`Sparse`] messages: the entries asked for, proven with sparse
//! proofs, each with the index up to which the answer covers the request; then new ones as
//! they come.
//!
//! [`Client`] checks every message against what it asked for and hands entries to a verifier
//! (in a node, [`multibee_feed::Feed::verify`]); [`Server`] checks the request and plans the
//! chunks. Neither does any IO: the node's stream tasks feed them frames and carry out what they
//! return, and the tests drive them directly.

use std::ops::Range;

use multibee_feed::{Batch, DiscoveryKey, FeedKey, SparseBatch, VerifyError};

use crate::error::{ReceiveError, Violation};
use crate::wire::{
    self, Announce, Capability, Data, Have, Message, Refusal, Sparse, Want, WantFiltered,
};

/// Domain separation for [`capability`].
const CAPABILITY_CONTEXT: &[u8] = b"multibee/replicate/1 capability\0";

/// The capability a requester sends to prove it knows `key`: a blake3 hash keyed with the feed
/// key over both peers' identities, so that it cannot be replayed to another peer or by the
/// responder.
pub fn capability(key: &FeedKey, requester: &[u8], responder: &[u8]) -> Capability {
    let mut hasher = blake3::Hasher::new_keyed(key.as_bytes());
    hasher.update(CAPABILITY_CONTEXT);
    for id in [requester, responder] {
        hasher.update(&(id.len() as u64).to_le_bytes());
        hasher.update(id);
    }
    Capability(*hasher.finalize().as_bytes())
}

/// Bounds on what a session sends and accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The longest frame sent or accepted.
    pub max_frame_bytes: usize,
    /// The most entries a server puts in one data message.
    pub max_batch_entries: u64,
    /// The entry bytes a server aims for per data message.
    pub target_batch_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: wire::DEFAULT_MAX_FRAME_BYTES,
            max_batch_entries: 4096,
            target_batch_bytes: 2 << 20,
        }
    }
}

/// What the client's shell does with a message from the server.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientAction<V> {
    /// Store these verified entries (they continue what was asked for).
    Store(V),
    /// The server holds this many entries.
    RemoteLength(u64),
    /// The server will not serve this feed; close the stream.
    Refused(Refusal),
    /// Verify (against the base roots held) and store these entries of a filtered request,
    /// which the server says cover it up to entry `covered`.
    StoreSparse {
        /// The entries and their proof.
        batch: SparseBatch,
        /// The server's claim (above the previous one on the stream).
        covered: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    New,
    Wanting,
    Streaming,
    Closed,
}

/// The requesting side of one replicate stream.
#[derive(Debug)]
pub struct Client {
    key: FeedKey,
    discovery_key: DiscoveryKey,
    capability: Capability,
    state: ClientState,
    next: u64,
    /// The last claim of a filtered stream.
    covered: u64,
    /// Whether the request was a [`WantFiltered`]: its answers are `Sparse`, not `Data`.
    filtered: bool,
}

impl Client {
    /// A client for the feed `key`, on a stream from `local` to `remote` (peer identities as
    /// bytes).
    pub fn new(key: FeedKey, local: &[u8], remote: &[u8]) -> Self {
        Client {
            key,
            discovery_key: key.discovery_key(),
            capability: capability(&key, local, remote),
            state: ClientState::New,
            next: 0,
            covered: 0,
            filtered: false,
        }
    }

    /// The request of a peer keeping a partial view: the entries under each prefix from its
    /// index on, proven over `base` (the signed length held).
    pub fn want_filtered(&mut self, wants: &[(Vec<u8>, u64)], base: u64) -> Message {
        self.state = ClientState::Wanting;
        self.filtered = true;
        self.covered = wants.iter().map(|(_, from)| *from).min().unwrap_or(0);
        Message::WantFiltered(WantFiltered {
            discovery_key: self.discovery_key,
            capability: self.capability,
            wants: wants
                .iter()
                .map(|(p, from)| (serde_bytes::ByteBuf::from(p.clone()), *from))
                .collect(),
            base,
        })
    }

    /// The request to send first: entries from `from` (the length held) on.
    pub fn want(&mut self, from: u64) -> Message {
        self.state = ClientState::Wanting;
        self.next = from;
        Message::Want(Want {
            discovery_key: self.discovery_key,
            capability: self.capability,
            from,
        })
    }

    /// The feed asked for.
    pub fn key(&self) -> FeedKey {
        self.key
    }

    /// The index the next data message must start at.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Handles one frame body from the server. Entries are rebuilt into a [`Batch`] for the
    /// feed asked for and handed to `verify`; its result is what the shell stores.
    pub fn receive<V>(
        &mut self,
        body: &[u8],
        verify: impl FnOnce(Batch) -> Result<V, multibee_feed::Error>,
    ) -> Result<ClientAction<V>, ReceiveError> {
        let message = wire::decode(body).map_err(Violation::from)?;
        self.receive_message(message, verify)
    }

    /// [`Client::receive`] for a message already decoded.
    pub fn receive_message<V>(
        &mut self,
        message: Message,
        verify: impl FnOnce(Batch) -> Result<V, multibee_feed::Error>,
    ) -> Result<ClientAction<V>, ReceiveError> {
        let result = self.step(message, verify);
        if result.is_err() {
            self.state = ClientState::Closed;
        }
        result
    }

    fn step<V>(
        &mut self,
        message: Message,
        verify: impl FnOnce(Batch) -> Result<V, multibee_feed::Error>,
    ) -> Result<ClientAction<V>, ReceiveError> {
        match (self.state, message) {
            (ClientState::Wanting, Message::Have(have)) => {
                self.check_feed(have.discovery_key)?;
                self.state = ClientState::Streaming;
                Ok(ClientAction::RemoteLength(have.length))
            }
            (ClientState::Wanting, Message::Refused(refusal)) => {
                self.state = ClientState::Closed;
                Ok(ClientAction::Refused(refusal))
            }
            (ClientState::Streaming, Message::Data(data)) if !self.filtered => {
                self.data(data, verify)
            }
            (ClientState::Streaming, Message::Sparse(sparse)) if self.filtered => {
                self.sparse(sparse)
            }
            (ClientState::New | ClientState::Closed, message) => Err(unexpected(
                &message,
                "nothing is expected before a request or after the end",
            )),
            (ClientState::Wanting, message) => {
                Err(unexpected(&message, "expected Have or Refused"))
            }
            (ClientState::Streaming, message) => Err(unexpected(
                &message,
                match self.filtered {
                    true => "expected Sparse",
                    false => "expected Data",
                },
            )),
        }
    }

    fn data<V>(
        &mut self,
        data: Data,
        verify: impl FnOnce(Batch) -> Result<V, multibee_feed::Error>,
    ) -> Result<ClientAction<V>, ReceiveError> {
        self.check_feed(data.discovery_key)?;
        if data.start != self.next {
            return Err(Violation::OutOfOrder {
                expected: self.next,
                got: data.start,
            }
            .into());
        }
        if data.entries.is_empty() {
            return Err(Violation::EmptyData.into());
        }
        let end = data
            .start
            .checked_add(data.entries.len() as u64)
            .ok_or(Violation::Invalid(VerifyError::TooLarge(
                "range end".into(),
            )))?;
        let batch = Batch {
            feed: self.key,
            start: data.start,
            entries: data.entries,
            proof: data.proof,
        };
        let verified = verify(batch).map_err(|e| match e {
            multibee_feed::Error::Rejected { reason, .. } => Violation::Invalid(reason).into(),
            other => ReceiveError::Local(other),
        })?;
        self.next = end;
        Ok(ClientAction::Store(verified))
    }

    fn sparse<V>(&mut self, sparse: Sparse) -> Result<ClientAction<V>, ReceiveError> {
        self.check_feed(sparse.discovery_key)?;
        // Every answer moves the claim on: a server cannot make the client verify and store
        // the same nothing forever.
        if sparse.covered <= self.covered {
            return Err(Violation::OutOfOrder {
                expected: self.covered,
                got: sparse.covered,
            }
            .into());
        }
        if sparse.indices.len() != sparse.entries.len() {
            return Err(Violation::Invalid(VerifyError::BadProof(
                "as many indices as entries are needed",
            ))
            .into());
        }
        self.covered = sparse.covered;
        Ok(ClientAction::StoreSparse {
            batch: SparseBatch {
                feed: self.key,
                entries: sparse.indices.into_iter().zip(sparse.entries).collect(),
                proof: sparse.proof,
            },
            covered: sparse.covered,
        })
    }

    fn check_feed(&self, got: DiscoveryKey) -> Result<(), Violation> {
        match got == self.discovery_key {
            true => Ok(()),
            false => Err(Violation::UnrequestedFeed {
                asked: self.discovery_key,
                got,
            }),
        }
    }
}

fn unexpected(message: &Message, detail: &'static str) -> ReceiveError {
    Violation::Unexpected {
        message: message.name(),
        detail,
    }
    .into()
}

/// What the server's shell does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerAction {
    /// Serve the feed `key` from entry `from` on: send [`Server::have`], then data.
    Serve {
        /// The feed.
        key: FeedKey,
        /// The first entry wanted.
        from: u64,
    },
    /// Serve the entries of feed `key` under `wants` (`(prefix, from)`), proven over `base`:
    /// send [`Server::have`], then [`Server::sparse_frame`]s.
    ServeFiltered {
        /// The feed.
        key: FeedKey,
        /// What is asked for.
        wants: Vec<(Vec<u8>, u64)>,
        /// The signed length whose roots the client holds.
        base: u64,
    },
    /// Send this refusal and close the stream.
    Refuse(Message),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    Idle,
    Serving {
        key: FeedKey,
        discovery_key: DiscoveryKey,
    },
    Closed,
}

/// The serving side of one replicate stream.
#[derive(Debug)]
pub struct Server {
    local: Vec<u8>,
    remote: Vec<u8>,
    limits: Limits,
    state: ServerState,
    next: u64,
    /// The most entries the next batch may carry (adapts to the entry size).
    batch_entries: u64,
}

impl Server {
    /// A server on a stream from `remote` to `local` (peer identities as bytes).
    pub fn new(local: &[u8], remote: &[u8], limits: Limits) -> Self {
        Server {
            local: local.to_vec(),
            remote: remote.to_vec(),
            batch_entries: limits.max_batch_entries.clamp(1, 64),
            limits,
            state: ServerState::Idle,
            next: 0,
        }
    }

    /// Handles one frame body from the client. `lookup` finds the key of a held feed by its
    /// discovery key.
    pub fn receive(
        &mut self,
        body: &[u8],
        lookup: impl FnOnce(&DiscoveryKey) -> Option<FeedKey>,
    ) -> Result<ServerAction, Violation> {
        let message = match wire::decode(body) {
            Ok(message) => message,
            Err(e) => {
                self.state = ServerState::Closed;
                return Err(e.into());
            }
        };
        let (want, filtered) = match message {
            Message::Want(want) => (want, None),
            Message::WantFiltered(w) => {
                let too_many = w.wants.len() > wire::MAX_WANTS || w.wants.is_empty();
                if too_many
                    || w.wants
                        .iter()
                        .any(|(p, _)| p.len() > wire::MAX_WANT_PREFIX_BYTES)
                {
                    self.state = ServerState::Closed;
                    return Err(Violation::Unexpected {
                        message: "WantFiltered",
                        detail: "1 to 256 prefixes of at most 1024 bytes",
                    });
                }
                let from = w.wants.iter().map(|(_, f)| *f).min().unwrap_or(0);
                let want = Want {
                    discovery_key: w.discovery_key,
                    capability: w.capability,
                    from,
                };
                let wants: Vec<(Vec<u8>, u64)> = w
                    .wants
                    .into_iter()
                    .map(|(p, f)| (p.into_vec(), f))
                    .collect();
                (want, Some((wants, w.base)))
            }
            message => {
                self.state = ServerState::Closed;
                return Err(Violation::Unexpected {
                    message: message.name(),
                    detail: "a replicate stream carries one Want from the client",
                });
            }
        };
        if self.state != ServerState::Idle {
            self.state = ServerState::Closed;
            return Err(Violation::Unexpected {
                message: "Want",
                detail: "one Want per stream",
            });
        }
        let found = lookup(&want.discovery_key)
            .filter(|key| capability(key, &self.remote, &self.local) == want.capability);
        let Some(key) = found else {
            self.state = ServerState::Closed;
            return Ok(ServerAction::Refuse(Message::Refused(Refusal::NotFound)));
        };
        self.state = ServerState::Serving {
            key,
            discovery_key: want.discovery_key,
        };
        self.next = want.from;
        Ok(match filtered {
            None => ServerAction::Serve {
                key,
                from: want.from,
            },
            Some((wants, base)) => ServerAction::ServeFiltered { key, wants, base },
        })
    }

    /// The refusal sent when a peer has too many streams open.
    pub fn busy() -> Message {
        Message::Refused(Refusal::Busy)
    }

    /// The first answer to an accepted request: the length held.
    pub fn have(&self, length: u64) -> Option<Message> {
        let ServerState::Serving { discovery_key, .. } = self.state else {
            return None;
        };
        Some(Message::Have(Have {
            discovery_key,
            length,
        }))
    }

    /// The entries to send next, given the `length` held now; `None` when the client has them
    /// all (or asked from beyond the end).
    pub fn next_range(&self, length: u64) -> Option<Range<u64>> {
        let ServerState::Serving { .. } = self.state else {
            return None;
        };
        if self.next >= length {
            return None;
        }
        Some(self.next..length.min(self.next.saturating_add(self.batch_entries)))
    }

    /// Encodes a batch for the range [`Server::next_range`] returned, as a whole frame.
    /// Returns `None` if it would not fit in a frame; the next range is then smaller.
    pub fn data_frame(&mut self, batch: Batch) -> Option<Vec<u8>> {
        let ServerState::Serving { discovery_key, .. } = self.state else {
            return None;
        };
        let (start, count, bytes) = (batch.start, batch.entries.len() as u64, batch.entry_bytes());
        if start != self.next || count == 0 {
            return None;
        }
        let message = Message::Data(Data {
            discovery_key,
            start,
            entries: batch.entries,
            proof: batch.proof,
        });
        match wire::encode(&message, self.limits.max_frame_bytes) {
            Ok(frame) => {
                self.next = start + count;
                self.adapt(count, bytes);
                Some(frame)
            }
            Err(_) => {
                self.batch_entries = (count / 2).max(1);
                None
            }
        }
    }

    /// Encodes the answer to a filtered request as a whole frame, or `None` if it would not
    /// fit in one (send fewer entries).
    pub fn sparse_frame(&self, batch: SparseBatch, covered: u64) -> Option<Vec<u8>> {
        let ServerState::Serving { discovery_key, .. } = self.state else {
            return None;
        };
        let (indices, entries) = batch.entries.into_iter().unzip();
        let message = Message::Sparse(Sparse {
            discovery_key,
            covered,
            indices,
            entries,
            proof: batch.proof,
        });
        wire::encode(&message, self.limits.max_frame_bytes).ok()
    }

    /// The feed served, once a request was accepted.
    pub fn feed(&self) -> Option<FeedKey> {
        match self.state {
            ServerState::Serving { key, .. } => Some(key),
            _ => None,
        }
    }

    /// Sizes the next batch from the mean entry size of the last one.
    fn adapt(&mut self, count: u64, bytes: usize) {
        let mean = (bytes as u64 / count).max(1);
        let fit = self.limits.target_batch_bytes as u64 / mean;
        self.batch_entries = fit.clamp(1, self.limits.max_batch_entries.max(1));
    }
}

/// Checks an announcement: the discovery keys a peer says it holds.
pub fn receive_announce(body: &[u8]) -> Result<Vec<DiscoveryKey>, Violation> {
    match wire::decode(body)? {
        Message::Announce(Announce { discovery_keys }) => {
            if discovery_keys.len() > wire::MAX_ANNOUNCED {
                return Err(Violation::AnnounceTooLarge(discovery_keys.len()));
            }
            Ok(discovery_keys)
        }
        other => Err(Violation::Unexpected {
            message: other.name(),
            detail: "an announce stream carries one Announce",
        }),
    }
}

/// The announcement of `keys` (at most [`wire::MAX_ANNOUNCED`] are taken).
pub fn announce(keys: impl IntoIterator<Item = DiscoveryKey>) -> Message {
    Message::Announce(Announce {
        discovery_keys: keys.into_iter().take(wire::MAX_ANNOUNCED).collect(),
    })
}

#[cfg(test)]
mod tests {
    use multibee_feed::{Feed, Store, VerifiedBatch};

    use super::*;
    use crate::error::FrameError;

    /// Whether a violation is the one expected.
    type Check = fn(&Violation) -> bool;

    const CLIENT: &[u8] = b"client";
    const SERVER: &[u8] = b"server";

    struct Fixture {
        _dirs: (tempfile::TempDir, tempfile::TempDir),
        writer: Feed,
        replica: Feed,
    }

    async fn fixture(entries: usize) -> Fixture {
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let writer = Store::open(dirs.0.path())
            .unwrap()
            .create_feed()
            .await
            .unwrap();
        let batch = (0..entries)
            .map(|i| format!("entry {i}").into_bytes())
            .collect();
        writer.append_batch(batch).await.unwrap();
        let replica = Store::open(dirs.1.path()).unwrap();
        let replica = replica.replica(writer.key()).await.unwrap();
        Fixture {
            _dirs: dirs,
            writer,
            replica,
        }
    }

    fn body(message: &Message) -> Vec<u8> {
        wire::encode(message, wire::DEFAULT_MAX_FRAME_BYTES).unwrap()[wire::PREFIX_BYTES..].to_vec()
    }

    fn streaming_client(f: &Fixture) -> Client {
        let mut client = Client::new(f.writer.key(), CLIENT, SERVER);
        client.want(0);
        let have = Message::Have(Have {
            discovery_key: f.writer.discovery_key(),
            length: f.writer.length(),
        });
        let action = client.receive(&body(&have), |_| -> Result<(), _> { unreachable!() });
        assert!(matches!(action, Ok(ClientAction::RemoteLength(_))));
        client
    }

    fn data(f: &Fixture, range: Range<u64>) -> Data {
        let batch = f.writer.proof(range).unwrap();
        Data {
            discovery_key: f.writer.discovery_key(),
            start: batch.start,
            entries: batch.entries,
            proof: batch.proof,
        }
    }

    fn receive(
        f: &Fixture,
        client: &mut Client,
        data: Data,
    ) -> Result<VerifiedBatch, ReceiveError> {
        match client.receive(&body(&Message::Data(data)), |b| f.replica.verify(b))? {
            ClientAction::Store(verified) => Ok(verified),
            other => panic!("expected entries, got {other:?}"),
        }
    }

    fn violation(result: Result<VerifiedBatch, ReceiveError>) -> Violation {
        match result {
            Err(ReceiveError::Peer(v)) => v,
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_whole_exchange_replicates() {
        let f = fixture(100).await;
        let mut server = Server::new(SERVER, CLIENT, Limits::default());
        let mut client = Client::new(f.writer.key(), CLIENT, SERVER);
        let want = body(&client.want(f.replica.length()));
        let writer_key = f.writer.key();
        let action = server.receive(&want, |dk| {
            (*dk == writer_key.discovery_key()).then_some(writer_key)
        });
        assert_eq!(
            action,
            Ok(ServerAction::Serve {
                key: writer_key,
                from: 0
            })
        );
        let have = server.have(f.writer.length()).unwrap();
        let action = client.receive(&body(&have), |_| -> Result<(), _> { unreachable!() });
        assert!(matches!(action, Ok(ClientAction::RemoteLength(100))));
        let mut batches = 0;
        while let Some(range) = server.next_range(f.writer.length()) {
            let frame = server.data_frame(f.writer.proof(range).unwrap()).unwrap();
            let verified =
                match client.receive(&frame[wire::PREFIX_BYTES..], |b| f.replica.verify(b)) {
                    Ok(ClientAction::Store(v)) => v,
                    other => panic!("{other:?}"),
                };
            f.replica
                .store()
                .write(move |txn| txn.ingest(&verified))
                .await
                .unwrap();
            batches += 1;
        }
        assert_eq!(f.replica.length(), 100);
        assert_eq!(client.next(), 100);
        assert!(batches >= 2, "the first batch is small, then they grow");
        assert_eq!(f.replica.get(99).unwrap(), Some(b"entry 99".to_vec()));
    }

    #[tokio::test]
    async fn forged_entries_are_rejected() {
        let f = fixture(10).await;
        let mut client = streaming_client(&f);
        let mut forged = data(&f, 0..10);
        forged.entries[3] = b"forged".to_vec();
        let v = violation(receive(&f, &mut client, forged));
        assert_eq!(v, Violation::Invalid(VerifyError::BadSignature));
        assert_eq!(f.replica.length(), 0);
    }

    #[tokio::test]
    async fn bad_signatures_are_rejected() {
        let f = fixture(10).await;
        let mut client = streaming_client(&f);
        let mut bad = data(&f, 0..10);
        bad.proof.signature.0[0] ^= 1;
        let v = violation(receive(&f, &mut client, bad));
        assert_eq!(v, Violation::Invalid(VerifyError::BadSignature));
    }

    #[tokio::test]
    async fn wrong_proofs_are_rejected() {
        let f = fixture(10).await;
        let mut client = streaming_client(&f);
        let mut wrong = data(&f, 2..5);
        wrong.start = 0;
        assert!(matches!(
            violation(receive(&f, &mut client, wrong)),
            Violation::Invalid(_)
        ));
        let mut client = streaming_client(&f);
        let mut short = data(&f, 0..5);
        short.proof.nodes.pop();
        assert!(matches!(
            violation(receive(&f, &mut client, short)),
            Violation::Invalid(VerifyError::BadProof(_))
        ));
        let mut client = streaming_client(&f);
        let mut long = data(&f, 0..5);
        long.proof.nodes.push(long.proof.nodes[0]);
        assert!(matches!(
            violation(receive(&f, &mut client, long)),
            Violation::Invalid(VerifyError::BadProof(_))
        ));
        let mut client = streaming_client(&f);
        let mut altered = data(&f, 0..5);
        altered.proof.nodes[0].0[0] ^= 1;
        assert!(matches!(
            violation(receive(&f, &mut client, altered)),
            Violation::Invalid(_)
        ));
    }

    #[tokio::test]
    async fn unrequested_feeds_and_gaps_are_rejected() {
        let f = fixture(10).await;
        let other = fixture(10).await;
        let mut client = streaming_client(&f);
        let v = violation(receive(&f, &mut client, data(&other, 0..10)));
        assert!(matches!(v, Violation::UnrequestedFeed { .. }), "{v}");
        // The right discovery key with another feed's entries: verified against our key.
        let mut client = streaming_client(&f);
        let mut disguised = data(&other, 0..10);
        disguised.discovery_key = f.writer.discovery_key();
        let v = violation(receive(&f, &mut client, disguised));
        assert_eq!(v, Violation::Invalid(VerifyError::BadSignature));
        let mut client = streaming_client(&f);
        let v = violation(receive(&f, &mut client, data(&f, 3..10)));
        assert_eq!(
            v,
            Violation::OutOfOrder {
                expected: 0,
                got: 3
            }
        );
        let mut client = streaming_client(&f);
        receive(&f, &mut client, data(&f, 0..3)).unwrap();
        let v = violation(receive(&f, &mut client, data(&f, 0..3)));
        assert_eq!(
            v,
            Violation::OutOfOrder {
                expected: 3,
                got: 0
            }
        );
        assert_eq!(f.replica.length(), 0, "the client itself stores nothing");
    }

    #[tokio::test]
    async fn malformed_frames_are_rejected() {
        let f = fixture(4).await;
        let frame = body(&Message::Data(data(&f, 0..4)));
        let cases: Vec<(Vec<u8>, Check)> = vec![
            (vec![1, 0xff, 0xff, 0xff], |v| {
                matches!(v, Violation::Frame(FrameError::Malformed(_)))
            }),
            (vec![9, 0, 1, 2], |v| {
                matches!(v, Violation::Frame(FrameError::UnknownVersion(9)))
            }),
            ([frame.as_slice(), &[0, 0]].concat(), |v| {
                matches!(v, Violation::Frame(FrameError::TrailingBytes(2)))
            }),
            (frame[..frame.len() - 3].to_vec(), |v| {
                matches!(v, Violation::Frame(FrameError::Malformed(_)))
            }),
        ];
        for (bytes, expected) in cases {
            let mut client = streaming_client(&f);
            let v = match client.receive(&bytes, |b| f.replica.verify(b)) {
                Err(ReceiveError::Peer(v)) => v,
                other => panic!("expected a violation, got {other:?}"),
            };
            assert!(expected(&v), "{v}");
        }
        let oversized = wire::body_length(u32::MAX.to_be_bytes(), wire::DEFAULT_MAX_FRAME_BYTES);
        assert!(matches!(oversized, Err(FrameError::TooLarge { .. })));
    }

    #[tokio::test]
    async fn messages_out_of_turn_are_rejected() {
        let f = fixture(4).await;
        let mut client = Client::new(f.writer.key(), CLIENT, SERVER);
        let early = client.receive(&body(&Message::Data(data(&f, 0..4))), |b| {
            f.replica.verify(b)
        });
        assert!(matches!(
            early,
            Err(ReceiveError::Peer(Violation::Unexpected { .. }))
        ));
        let mut client = Client::new(f.writer.key(), CLIENT, SERVER);
        client.want(0);
        let skipped = client.receive(&body(&Message::Data(data(&f, 0..4))), |b| {
            f.replica.verify(b)
        });
        assert!(matches!(
            skipped,
            Err(ReceiveError::Peer(Violation::Unexpected { .. }))
        ));
        let mut client = streaming_client(&f);
        let want = client.want(0);
        let mut client = streaming_client(&f);
        let echoed = client.receive(&body(&want), |b| f.replica.verify(b));
        assert!(matches!(
            echoed,
            Err(ReceiveError::Peer(Violation::Unexpected { .. }))
        ));
    }

    #[tokio::test]
    async fn servers_check_capabilities_and_refuse_unknown_feeds() {
        let f = fixture(4).await;
        let key = f.writer.key();
        let lookup = |dk: &DiscoveryKey| (*dk == key.discovery_key()).then_some(key);
        // A capability made for another responder is not accepted.
        let mut client = Client::new(key, CLIENT, b"someone else");
        let mut server = Server::new(SERVER, CLIENT, Limits::default());
        let refused = server.receive(&body(&client.want(0)), lookup);
        assert_eq!(
            refused,
            Ok(ServerAction::Refuse(Message::Refused(Refusal::NotFound)))
        );
        // A feed not held.
        let other = fixture(1).await;
        let mut client = Client::new(other.writer.key(), CLIENT, SERVER);
        let mut server = Server::new(SERVER, CLIENT, Limits::default());
        let refused = server.receive(&body(&client.want(0)), lookup);
        assert_eq!(
            refused,
            Ok(ServerAction::Refuse(Message::Refused(Refusal::NotFound)))
        );
        // Garbage, a second request, and server messages sent to a server.
        let mut server = Server::new(SERVER, CLIENT, Limits::default());
        assert!(matches!(
            server.receive(&[1, 0xff], lookup),
            Err(Violation::Frame(_))
        ));
        let mut client = Client::new(key, CLIENT, SERVER);
        let want = body(&client.want(0));
        let mut server = Server::new(SERVER, CLIENT, Limits::default());
        assert!(matches!(
            server.receive(&want, lookup),
            Ok(ServerAction::Serve { .. })
        ));
        assert!(matches!(
            server.receive(&want, lookup),
            Err(Violation::Unexpected { .. })
        ));
        let mut server = Server::new(SERVER, CLIENT, Limits::default());
        let have = body(&Message::Have(Have {
            discovery_key: key.discovery_key(),
            length: 1,
        }));
        assert!(matches!(
            server.receive(&have, lookup),
            Err(Violation::Unexpected { .. })
        ));
    }

    #[tokio::test]
    async fn filtered_requests_are_bounded_and_sparse_answers_checked() {
        let f = fixture(8).await;
        let key = f.writer.key();
        let lookup = |dk: &DiscoveryKey| (*dk == key.discovery_key()).then_some(key);
        let wants = vec![(b"u1/".to_vec(), 2), (b"u2/".to_vec(), 0)];
        let mut client = Client::new(key, CLIENT, SERVER);
        let mut server = Server::new(SERVER, CLIENT, Limits::default());
        let action = server.receive(&body(&client.want_filtered(&wants, 5)), lookup);
        assert_eq!(
            action,
            Ok(ServerAction::ServeFiltered {
                key,
                wants: wants.clone(),
                base: 5
            })
        );
        // Too many prefixes, one too long, or none: refused as a violation.
        for bad in [
            vec![(b"p".to_vec(), 0); wire::MAX_WANTS + 1],
            vec![(vec![b'p'; wire::MAX_WANT_PREFIX_BYTES + 1], 0)],
            Vec::new(),
        ] {
            let mut client = Client::new(key, CLIENT, SERVER);
            let mut server = Server::new(SERVER, CLIENT, Limits::default());
            let got = server.receive(&body(&client.want_filtered(&bad, 0)), lookup);
            assert!(matches!(got, Err(Violation::Unexpected { .. })), "{got:?}");
        }
        // The answers: in order of their claims, as many indices as entries.
        let have = server.have(8).unwrap();
        assert!(matches!(
            client.receive_message::<()>(have, |_| unreachable!()),
            Ok(ClientAction::RemoteLength(8))
        ));
        let sparse = |covered, batch: SparseBatch| {
            let frame = server.sparse_frame(batch, covered).unwrap();
            frame[wire::PREFIX_BYTES..].to_vec()
        };
        let first = sparse(6, f.writer.proof_sparse(&[3, 5], 0).unwrap());
        match client.receive::<()>(&first, |_| unreachable!()) {
            Ok(ClientAction::StoreSparse { batch, covered }) => {
                assert_eq!(covered, 6);
                assert_eq!(
                    batch.entries.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
                    [3, 5]
                );
                f.replica.verify_sparse(batch).unwrap();
            }
            other => panic!("{other:?}"),
        }
        // A plain stream takes no Sparse message (nor a filtered one Data).
        let mut plain = Client::new(key, CLIENT, SERVER);
        plain.want(0);
        plain
            .receive_message::<()>(server.have(8).unwrap(), |_| unreachable!())
            .unwrap();
        assert!(matches!(
            plain.receive::<()>(&first, |_| unreachable!()),
            Err(ReceiveError::Peer(Violation::Unexpected { .. }))
        ));
        let data = body(&Message::Data(data(&f, 0..1)));
        assert!(matches!(
            client.receive::<()>(&data, |_| unreachable!()),
            Err(ReceiveError::Peer(Violation::Unexpected { .. }))
        ));
        let mut client = Client::new(key, CLIENT, SERVER);
        client.want_filtered(&wants, 0);
        client
            .receive_message::<()>(server.have(8).unwrap(), |_| unreachable!())
            .unwrap();
        client.receive::<()>(&first, |_| unreachable!()).unwrap();
        let back = sparse(4, f.writer.proof_sparse(&[], 0).unwrap());
        assert!(matches!(
            client.receive::<()>(&back, |_| unreachable!()),
            Err(ReceiveError::Peer(Violation::OutOfOrder { .. }))
        ));
        let mut client = Client::new(key, CLIENT, SERVER);
        client.want_filtered(&wants, 0);
        let have = server.have(8).unwrap();
        client
            .receive_message::<()>(have, |_| unreachable!())
            .unwrap();
        let mut lopsided = f.writer.proof_sparse(&[1, 2], 0).unwrap();
        lopsided.entries.truncate(1);
        let Message::Sparse(mut message) = wire::decode(&sparse(3, lopsided)).unwrap() else {
            unreachable!()
        };
        message.indices.push(2);
        assert!(matches!(
            client.receive_message::<()>(Message::Sparse(message), |_| unreachable!()),
            Err(ReceiveError::Peer(Violation::Invalid(_)))
        ));
    }

    #[tokio::test]
    async fn servers_size_batches_to_the_frame_limit() {
        let f = fixture(0).await;
        f.writer
            .append_batch(vec![vec![7u8; 1000]; 64])
            .await
            .unwrap();
        let limits = Limits {
            max_frame_bytes: 10_000,
            max_batch_entries: 4096,
            target_batch_bytes: 4_000,
        };
        let key = f.writer.key();
        let mut client = Client::new(key, CLIENT, SERVER);
        let mut server = Server::new(SERVER, CLIENT, limits);
        server
            .receive(&body(&client.want(0)), |_| Some(key))
            .unwrap();
        let mut sent = 0;
        while let Some(range) = server.next_range(f.writer.length()) {
            let count = range.end - range.start;
            match server.data_frame(f.writer.proof(range).unwrap()) {
                Some(frame) => {
                    assert!(frame.len() <= 10_000 + wire::PREFIX_BYTES);
                    sent += count;
                }
                None => assert!(count > 1, "a single entry always fits here"),
            }
        }
        assert_eq!(sent, 64);
    }

    #[test]
    fn capabilities_bind_both_peers_and_the_key() {
        let key = FeedKey([1; 32]);
        let cap = capability(&key, b"a", b"b");
        assert_ne!(cap, capability(&key, b"b", b"a"));
        assert_ne!(cap, capability(&key, b"ab", b""));
        assert_ne!(cap, capability(&FeedKey([2; 32]), b"a", b"b"));
        assert_eq!(cap, capability(&key, b"a", b"b"));
    }

    #[test]
    fn announcements_are_bounded() {
        let keys = vec![DiscoveryKey([0; 32]); wire::MAX_ANNOUNCED + 1];
        let too_many = body(&Message::Announce(Announce {
            discovery_keys: keys.clone(),
        }));
        assert!(matches!(
            receive_announce(&too_many),
            Err(Violation::AnnounceTooLarge(_))
        ));
        let ok = body(&announce(keys));
        assert_eq!(receive_announce(&ok).unwrap().len(), wire::MAX_ANNOUNCED);
    }
}
