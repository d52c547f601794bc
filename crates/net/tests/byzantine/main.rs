#![allow(clippy::unwrap_used)]
//! The Byzantine suite: one attacker per scenario, speaking the replication protocol's framing
//! and breaking it in one way, against an honest node that is also serving a bystander.
//!
//! For every scenario the honest node must: store nothing from the attacker but the writer's
//! own valid entries, report the reason (or, where the attack is indistinguishable from a
//! network fault, drop the stream and ask again), refuse the rejected attacker when it dials
//! again, keep serving the bystander live while the attack goes on, and hold a bounded amount
//! of memory while it lasts (the heap is counted by a global allocator).
//!
//! Scenarios run one after another in a single test, each stopping everything it started
//! before the next begins, so that the heap figures are this scenario's own;
//! `cargo test -p multibee-net --test byzantine -- --nocapture` prints the table that the
//! README shows.

#[allow(dead_code)]
#[path = "../common.rs"]
mod common;

mod attacker;
mod scenarios;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::Stream;
use multibee_feed::{Feed, FeedKey, Options, Store};
use multibee_net::protocol::Client;
use multibee_net::wire::{self, Message, Refusal};
use multibee_net::{Event, Node, PeerId};
use peakmem_alloc::{PeakMemAlloc, PeakMemAllocTrait};
use tokio::sync::{broadcast, watch};

use attacker::Attacker;
use common::{
    AT_ONCE, DialRequest, Peer, Redial, Transport, Watchdog, append, config, copy_dir, redial,
    wait_length, within,
};
use scenarios::{Attack, Expect, Material, Request, Scenario, frame, material, scenarios};

/// Counts the heap the attack adds: reset once the honest node and the bystander are set up.
/// Informational only: memory allocated before its reset and freed during the attack lowers
/// it, so it can hide as much as it frees.
static ATTACK_HEAP: PeakMemAlloc<std::alloc::System> = PeakMemAlloc::new(std::alloc::System);

/// Counts the heap a whole scenario adds (its nodes, the attacker and the attack): reset
/// before anything of the scenario exists, once the previous one has stopped everything it
/// started. What is live then (the material, the runtime) lives on, so no free of it can
/// offset the count: its peak is the most this scenario's memory ever held at once.
#[global_allocator]
static SCENARIO_HEAP: PeakMemAlloc<&PeakMemAlloc<std::alloc::System>> =
    PeakMemAlloc::new(&ATTACK_HEAP);

/// The most heap one scenario may add at its peak (the honest node, the bystander and the
/// attacker together, from their start). An attack that made the node buffer per claimed
/// byte, per stream or per unread frame goes far beyond it.
const HEAP_BOUND: usize = 48 << 20;

/// How long a frame may take once begun: short, so that slowloris scenarios end quickly.
///
/// It applies to the bystander too, and what the bystander needs to stay clear of it, it is
/// given: it sends the honest node nothing that the deadline covers once it is set up. Its
/// `Want` and the announcement it makes as it connects are written as soon as their streams
/// open, during the setup (the `Want` is answered before the setup ends); after that it opens
/// no stream to the honest node (its one fetch stream stays open, so resyncs open none) and
/// sends nothing more. The deadline left that concerns it is on the honest node's writes to
/// it: one data frame of a few hundred bytes per heartbeat entry, each received before the
/// next is appended, so the stream's flow-control window (256 KiB) never fills and no write
/// waits for the bystander to read, however slowly a loaded machine runs it. A bystander
/// rejected anyway fails its scenario with the reason.
const FRAME_TIMEOUT: Duration = Duration::from_secs(5);

/// The honest node's connection limit: small, for the crowd scenario.
const MAX_INCOMING: u32 = 16;

/// Replicate streams a peer may have open to the honest node at once (`Config`'s default).
const MAX_STREAMS: usize = 200;

/// How often the served feed grows while an attack runs.
const HEARTBEAT: Duration = Duration::from_millis(100);

/// The honest node, with its replica of the writer's feed, a feed it serves to the bystander,
/// and a large feed.
struct Honest {
    node: Peer,
    bystander: Peer,
    replica: Feed,
    served: Feed,
    seen: Feed,
    large: Feed,
}

async fn honest(m: &Material, held: u64) -> Honest {
    let mut settings = config().kademlia(false);
    settings.frame_timeout = FRAME_TIMEOUT;
    settings.max_incoming_connections = MAX_INCOMING;
    // The large feed, written once for every scenario. redb's page cache is capped: it fills
    // as pages are read (17 MiB when the store opens, by default), which would blur the
    // figures of what the node itself holds.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(m.template.path(), dir.path());
    let store = Store::open_with(dir.path(), Options::default().cache_bytes(1 << 20)).unwrap();
    let node = Peer {
        node: Node::start(store.clone(), settings).await.unwrap(),
        dir,
        store,
    };
    let large = node.store.feed(&m.large).unwrap();
    let replica = node.node.handle().replicate(m.one.key()).await.unwrap();
    if held > 0 {
        let verified = replica.verify(m.one.proof(0..held).unwrap()).unwrap();
        node.store
            .write(move |txn| txn.ingest(&verified))
            .await
            .unwrap();
    }
    let served = node.store.create_feed().await.unwrap();
    append(&served, 0, 10).await;
    let bystander = Peer::start(config().kademlia(false)).await;
    let seen = bystander
        .node
        .handle()
        .replicate(served.key())
        .await
        .unwrap();
    bystander
        .node
        .handle()
        .dial(node.addr(Transport::Tcp).await)
        .await
        .unwrap();
    wait_length(&seen, 10).await;
    Honest {
        node,
        bystander,
        replica,
        served,
        seen,
        large,
    }
}

/// The writer of the served feed appends an entry every [`HEARTBEAT`] and waits until the
/// bystander holds it, until stopped.
struct Heartbeat {
    /// When the bystander received each entry of the heartbeat.
    received: Arc<Mutex<Vec<Instant>>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Heartbeat {
    fn start(h: &Honest) -> Heartbeat {
        let (served, seen) = (h.served.clone(), h.seen.clone());
        let mut rejections = Rejections::of(h);
        let received = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = watch::channel(false);
        let times = received.clone();
        let task = tokio::spawn(async move {
            let mut pace = tokio::time::interval(HEARTBEAT);
            loop {
                tokio::select! {
                    _ = stopped.changed() => return,
                    _ = pace.tick() => {}
                }
                let length = served.append(b"heartbeat".to_vec()).await.unwrap();
                rejections.or_fail(wait_length(&seen, length)).await;
                times.lock().unwrap().push(Instant::now());
            }
        });
        Heartbeat {
            received,
            stop,
            task,
        }
    }

    /// How many entries the bystander received within `window`.
    fn received_within(&self, window: std::ops::Range<Instant>) -> usize {
        let times = self.received.lock().unwrap();
        times.iter().filter(|t| window.contains(*t)).count()
    }

    /// Stops after the round in progress (a failed round fails the test here).
    async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = within("the heartbeat to stop", self.task).await {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// The honest node's rejections of the bystander.
struct Rejections {
    bystander: PeerId,
    events: broadcast::Receiver<Event>,
}

impl Rejections {
    fn of(h: &Honest) -> Rejections {
        Rejections {
            bystander: h.bystander.node.peer_id(),
            events: h.node.node.handle().subscribe(),
        }
    }

    /// Awaits `f`, failing at once with the reason if the bystander is rejected meanwhile.
    async fn or_fail<T>(&mut self, f: impl Future<Output = T>) -> T {
        let rejected = async {
            loop {
                match self.events.recv().await {
                    Ok(Event::PeerRejected { peer, reason }) if peer == self.bystander => {
                        return reason;
                    }
                    Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                    _ => {}
                }
            }
        };
        tokio::select! {
            done = f => done,
            reason = rejected => panic!("the bystander was rejected: {reason}"),
        }
    }
}

/// The served feed grows by one entry, and the bystander receives it.
async fn bystander_served_live(h: &Honest, rejections: &mut Rejections) {
    let length = h.served.append(b"live".to_vec()).await.unwrap();
    rejections.or_fail(wait_length(&h.seen, length)).await;
}

/// A valid request for `key` from the attacker to the honest node.
fn want(key: FeedKey, attacker: PeerId, honest: PeerId) -> Vec<u8> {
    let mut client = Client::new(key, &attacker.to_bytes(), &honest.to_bytes());
    frame(&client.want(0))
}

/// What an attack keeps open until its scenario ends.
#[derive(Default)]
struct Held {
    streams: Vec<Stream>,
    crowd: Vec<Attacker>,
    /// For the streams scenario: requests of the burst served, and refused as busy.
    served: usize,
    busy: usize,
}

/// The first message on a replicate stream, if one came whole.
async fn answer(stream: &mut Stream) -> Option<Message> {
    let mut prefix = [0u8; wire::PREFIX_BYTES];
    stream.read_exact(&mut prefix).await.ok()?;
    let length = wire::body_length(prefix, 1 << 16).ok()?;
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.ok()?;
    wire::decode(&body).ok()
}

/// Why a request got no answer.
#[derive(Debug, PartialEq, Eq)]
enum Unanswered {
    /// There is no connection to the peer.
    NotConnected,
    /// The stream was reset or closed.
    Closed,
}

/// Opens a replicate stream and sends `request`; returns the stream and the answer.
async fn ask(
    control: &mut libp2p_stream::Control,
    them: PeerId,
    request: &[u8],
) -> Result<(Stream, Message), Unanswered> {
    let protocol = libp2p::StreamProtocol::new(wire::REPLICATE_PROTOCOL);
    let mut stream = match control.open_stream(them, protocol).await {
        Ok(stream) => stream,
        Err(libp2p_stream::OpenStreamError::Io(e))
            if e.kind() == std::io::ErrorKind::NotConnected =>
        {
            return Err(Unanswered::NotConnected);
        }
        Err(_) => return Err(Unanswered::Closed),
    };
    stream
        .write_all(request)
        .await
        .map_err(|_| Unanswered::Closed)?;
    stream.flush().await.map_err(|_| Unanswered::Closed)?;
    let message = answer(&mut stream).await.ok_or(Unanswered::Closed)?;
    Ok((stream, message))
}

/// Carries out a request; returns what to keep open until the scenario ends.
async fn request(request: &Request, a: &mut Attacker, h: &Honest) -> Held {
    let them = h.node.node.peer_id();
    let served = want(h.served.key(), a.id, them);
    let mut held = Held::default();
    let kept = &mut held.streams;
    match request {
        Request::Raw(bytes) | Request::Announce(bytes) => {
            let protocol = match request {
                Request::Announce(_) => wire::ANNOUNCE_PROTOCOL,
                _ => wire::REPLICATE_PROTOCOL,
            };
            let mut stream = a.open(them, protocol).await.unwrap();
            // The honest node may hang up before the last byte: that is its answer.
            let _ = stream.write_all(bytes).await;
            let _ = stream.flush().await;
            kept.push(stream);
        }
        Request::WantThen(bytes) => {
            let mut stream = a.open(them, wire::REPLICATE_PROTOCOL).await.unwrap();
            let _ = stream.write_all(&[&served[..], bytes].concat()).await;
            let _ = stream.flush().await;
            kept.push(stream);
        }
        Request::SlowWant => {
            let mut stream = a.open(them, wire::REPLICATE_PROTOCOL).await.unwrap();
            for byte in served {
                // The attack itself: one byte per second until the honest node hangs up.
                if stream.write_all(&[byte]).await.is_err() || stream.flush().await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Request::Streams(n) => {
            let opens = (0..*n).map(|_| {
                let mut control = a.control.clone();
                let served = served.clone();
                async move { ask(&mut control, them, &served).await }
            });
            for (stream, message) in futures::future::join_all(opens).await.into_iter().flatten() {
                match message {
                    Message::Have(_) => kept.push(stream),
                    Message::Refused(Refusal::Busy) => held.busy += 1,
                    other => panic!("a burst request was answered with {other:?}"),
                }
            }
            held.served = kept.len();
            assert!(
                held.served <= MAX_STREAMS,
                "{} streams of the burst served at once",
                held.served
            );
            // The burst may end short of the cap (the transport resets streams beyond its own
            // limit, and yamux closes a connection that goes beyond it), so, one at a time,
            // fill the cap and see the next request refused.
            loop {
                match ask(&mut a.control, them, &served).await {
                    Ok((stream, Message::Have(_))) => {
                        kept.push(stream);
                        assert!(
                            kept.len() <= MAX_STREAMS,
                            "{} streams served to one peer at once",
                            kept.len()
                        );
                    }
                    Ok((_, Message::Refused(Refusal::Busy))) if kept.len() == MAX_STREAMS => break,
                    // Below the cap: slots of streams that closed are not given back yet.
                    Ok((_, Message::Refused(Refusal::Busy))) | Err(Unanswered::Closed) => {}
                    Ok((_, other)) => panic!("a request was answered with {other:?}"),
                    Err(Unanswered::NotConnected) => {
                        // The burst's connection is gone, and its streams with it.
                        kept.clear();
                        let (reply, dialed) = tokio::sync::oneshot::channel();
                        let addr = h.node.addr(Transport::Tcp).await;
                        let dial = DialRequest {
                            addr,
                            peer: them,
                            reply,
                        };
                        a.dials.send(dial).await.unwrap();
                        assert!(dialed.await.unwrap().is_some(), "connected again");
                    }
                }
            }
        }
        Request::NeverRead(n) => {
            let large = want(h.large.key(), a.id, them);
            for _ in 0..*n {
                let Some(mut stream) = a.open(them, wire::REPLICATE_PROTOCOL).await else {
                    break;
                };
                if stream.write_all(&large).await.is_err() || stream.flush().await.is_err() {
                    break;
                }
                kept.push(stream);
            }
        }
        Request::Crowd(n) => {
            let addr = h.node.addr(Transport::Tcp).await;
            let joining = (0..*n).map(|_| Attacker::start(None, Some(addr.clone())));
            held.crowd = futures::future::join_all(joining).await;
        }
    }
    held
}

/// Runs one scenario; returns what the honest node did, for the table.
async fn run(s: &Scenario, m: &Material) -> String {
    SCENARIO_HEAP.reset_peak_memory();
    let mut h = honest(m, s.held).await;
    if let Attack::Serve { claims: true, .. } = s.attack {
        for key in &m.claimed {
            h.node.node.handle().replicate(*key).await.unwrap();
        }
    }
    let feeds_before: BTreeSet<FeedKey> = h.node.store.feeds().into_iter().collect();
    let mut events = h.node.node.handle().subscribe();
    let mut rejections = Rejections::of(&h);
    let them = h.node.node.peer_id();
    let addr = h.node.addr(Transport::Tcp).await;
    ATTACK_HEAP.reset_peak_memory();
    let heartbeat = Heartbeat::start(&h);
    let started = Instant::now();
    let (mut attacker, kept) = match &s.attack {
        Attack::Serve { script, .. } => {
            let attacker = Attacker::start(Some(script.clone()), None).await;
            h.node
                .node
                .handle()
                .dial(attacker.addr.clone())
                .await
                .unwrap();
            (attacker, Held::default())
        }
        Attack::Request(r) => {
            let mut attacker = Attacker::start(None, Some(addr.clone())).await;
            let kept = within("the attack's requests", request(r, &mut attacker, &h)).await;
            (attacker, kept)
        }
    };
    let bad = attacker.id;
    let outcome = match s.expect {
        Expect::Rejected(is) => {
            let reason = h
                .node
                .event(|e| match e {
                    Event::PeerRejected { peer, reason } if *peer == bad => Some(reason.clone()),
                    _ => None,
                })
                .await;
            assert!(is(&reason), "{}: rejected for {reason}", s.name);
            format!("rejected: {reason}")
        }
        Expect::Frozen => {
            let mut status = h.replica.subscribe();
            within("the fork to be detected", status.wait_for(|s| s.forked))
                .await
                .unwrap();
            let evidence = h.replica.fork_evidence().unwrap().expect("the evidence");
            assert_ne!(
                evidence.ours, evidence.theirs,
                "{}: two signed heads",
                s.name
            );
            "frozen: the writer equivocated, both signed heads kept as evidence; the peer is \
             not rejected (it may only have forwarded them)"
                .to_string()
        }
        Expect::AskedAgain => {
            within(
                "the honest node to ask the attacker again",
                attacker.asked.wait_for(|n| *n >= 2),
            )
            .await
            .unwrap();
            "stream dropped, asked again".to_string()
        }
        Expect::Served => {
            let connected = h.node.node.handle().connected_peers().await.unwrap().len();
            assert!(
                connected <= MAX_INCOMING as usize,
                "{}: {connected} peers",
                s.name
            );
            match kept.crowd.len() {
                0 => format!(
                    "served within its caps: of the burst, {} streams served at once, {} \
                     refused as busy, the rest reset by the transport; one at a time, {} \
                     served, the next refused as busy",
                    kept.served,
                    kept.busy,
                    kept.streams.len()
                ),
                n => format!(
                    "served within its caps: {connected} of {} peers connected",
                    n + 2
                ),
            }
        }
    };
    // The bystander was served live while the attack went on: through the middle of attacks
    // that last (a slow peer is cut off only after `FRAME_TIMEOUT`), by the heartbeat; and
    // in any case one entry more before the attacker and what it holds open are gone.
    let lasted = started.elapsed();
    if lasted >= FRAME_TIMEOUT {
        let middle = started + FRAME_TIMEOUT / 4..started + FRAME_TIMEOUT * 3 / 4;
        let received = heartbeat.received_within(middle.clone());
        assert!(
            received >= 1,
            "{}: the bystander received nothing from {:?} to {:?} into the attack",
            s.name,
            middle.start - started,
            middle.end - started
        );
    }
    heartbeat.stop().await;
    within("the bystander to be served during the attack", async {
        bystander_served_live(&h, &mut rejections).await
    })
    .await;

    // A rejected peer is blocked: a new connection from it is refused, nothing served on it.
    if let Expect::Rejected(_) = s.expect {
        h.node
            .event_within(AT_ONCE, |e| {
                matches!(e, Event::PeerDisconnected { peer } if *peer == bad).then_some(())
            })
            .await;
        let request = want(h.served.key(), bad, them);
        let redialed = redial(&attacker.dials, &mut attacker.control, them, addr, &request).await;
        assert_eq!(redialed, Redial::Refused, "{}: a redial", s.name);
    }
    drop(kept.streams);
    for peer in kept.crowd {
        peer.stop().await;
    }
    let asked = *attacker.asked.borrow();
    attacker.stop().await;

    // Nothing but the writer's own entries was stored, and no feed was created.
    let stored = h.replica.length();
    assert!(
        stored <= s.max_stored,
        "{}: {stored} entries stored",
        s.name
    );
    for (i, entry) in h.replica.range(0..stored).unwrap().map(Result::unwrap) {
        assert_eq!(Some(entry), m.one.get(i).unwrap(), "{}: entry {i}", s.name);
    }
    let feeds_after: BTreeSet<FeedKey> = h.node.store.feeds().into_iter().collect();
    let created: Vec<_> = feeds_after.difference(&feeds_before).collect();
    let gone: Vec<_> = feeds_before.difference(&feeds_after).collect();
    assert!(
        created.is_empty() && gone.is_empty(),
        "{}: feeds created {created:?}, gone {gone:?}",
        s.name
    );
    // The feeds the attacker claimed to hold: asked for, and nothing of them stored.
    if let Attack::Serve { claims: true, .. } = s.attack {
        for key in &m.claimed {
            let claimed = h.node.store.feed(key).unwrap();
            let status = claimed.status();
            assert_eq!(
                (status.length, status.signed_length, status.forked),
                (0, 0, false),
                "{}: claimed feed {key}",
                s.name
            );
            assert!(claimed.head().unwrap().is_none(), "{}: {key}", s.name);
        }
    }
    // The bystander is still served, live, and was never rejected.
    within("the bystander to be served after the attack", async {
        bystander_served_live(&h, &mut rejections).await
    })
    .await;
    let bystander = h.bystander.node.peer_id();
    assert!(
        h.bystander
            .node
            .handle()
            .connected_peers()
            .await
            .unwrap()
            .contains(&them)
    );
    loop {
        match events.try_recv() {
            Ok(Event::PeerRejected { peer, reason }) if peer == bystander => {
                panic!("{}: the bystander was rejected: {reason}", s.name)
            }
            Ok(Event::PeerRejected { peer, reason })
                if peer == bad && matches!(s.expect, Expect::Frozen) =>
            {
                panic!("{}: the peer was rejected: {reason}", s.name)
            }
            Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => break,
        }
    }
    let attack_peak = ATTACK_HEAP.get_peak_memory();
    within("the nodes to stop", async {
        h.node.stop().await;
        h.bystander.stop().await;
    })
    .await;
    let peak = SCENARIO_HEAP.get_peak_memory();
    assert!(
        peak <= HEAP_BOUND,
        "{}: the heap grew by {} MiB at its peak",
        s.name,
        peak >> 20
    );
    let mib = |bytes: usize| bytes as f64 / (1 << 20) as f64;
    let outcome = match s.attack {
        Attack::Serve { claims: true, .. } => format!("{outcome} (asked on {asked} streams)"),
        _ => outcome,
    };
    format!(
        "{outcome} | {:.1} MiB | {:.1} MiB",
        mib(peak),
        mib(attack_peak)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attack_is_contained() {
    // About 30 s when all goes well; each scenario fails on its own after a minute.
    let _watchdog = Watchdog::arm_for("every_attack_is_contained", Duration::from_secs(600));
    let m = material().await;
    let scenarios = scenarios(&m);
    assert!(scenarios.len() >= 20);
    let start = Instant::now();
    println!("| # | attack | honest node | peak heap: scenario | of it, the attack |");
    println!("|---|---|---|---|---|");
    // `MULTIBEE_BYZANTINE_ONLY=22,29` runs only those scenarios (to try one, or a mutation).
    let only: Option<Vec<usize>> = std::env::var("MULTIBEE_BYZANTINE_ONLY")
        .ok()
        .map(|list| list.split(',').map(|n| n.trim().parse().unwrap()).collect());
    let mut ran = 0;
    for (i, s) in scenarios.iter().enumerate() {
        if only.as_ref().is_some_and(|only| !only.contains(&(i + 1))) {
            continue;
        }
        let row = within(s.name, run(s, &m)).await;
        println!("| {} | {} | {row} |", i + 1, s.name);
        ran += 1;
    }
    println!("{ran} scenarios in {:.1?}", start.elapsed());
}
