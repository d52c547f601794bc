#![allow(clippy::unwrap_used)]
//! The Byzantine suite: one attacker per scenario, speaking the replication protocol's framing
//! and breaking it in one way, against an honest node that is also serving a bystander.
//!
//! For every scenario the honest node must: store nothing from the attacker but the writer's
//! own valid entries, report the reason (or, where the attack is indistinguishable from a
//! network fault, drop the stream and ask again), keep serving the bystander, and hold a
//! bounded amount of memory while it lasts (the heap is counted by a global allocator).
//!
//! Scenarios run one after another in a single test so that the heap figures are this
//! scenario's own; `cargo test -p multibee-net --test byzantine -- --nocapture` prints the
//! table that the README shows.

#[allow(dead_code)]
#[path = "../common.rs"]
mod common;

mod attacker;
mod scenarios;

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::Stream;
use multibee_feed::{Feed, FeedKey};
use multibee_net::protocol::Client;
use multibee_net::wire;
use multibee_net::{Event, PeerId};
use peakmem_alloc::{INSTRUMENTED_SYSTEM, PeakMemAlloc, PeakMemAllocTrait};

use attacker::Attacker;
use common::{Peer, Transport, append, config, wait_length, within};
use scenarios::{Attack, Expect, Material, Request, Scenario, frame, material, scenarios};

#[global_allocator]
static HEAP: &PeakMemAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// The most heap one scenario may add at its peak (the honest node, the bystander and the
/// attacker together). An attack that made the node buffer per claimed byte, per stream or per
/// unread frame goes far beyond it.
const HEAP_BOUND: usize = 48 << 20;

/// How long a frame may take once begun: short, so that slowloris scenarios end quickly, yet
/// long enough that a loaded 2-core machine never stalls an honest frame that long.
const FRAME_TIMEOUT: Duration = Duration::from_secs(5);

/// The honest node's connection limit: small, for the crowd scenario.
const MAX_INCOMING: u32 = 16;

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
    let node = Peer::start(settings).await;
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
    let large = node.store.create_feed().await.unwrap();
    let block = vec![7u8; 4096];
    for _ in 0..4 {
        large.append_batch(vec![block.clone(); 512]).await.unwrap();
    }
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
                async move {
                    let protocol = libp2p::StreamProtocol::new(wire::REPLICATE_PROTOCOL);
                    let Ok(mut stream) = control.open_stream(them, protocol).await else {
                        return None;
                    };
                    stream.write_all(&served).await.ok()?;
                    stream.flush().await.ok()?;
                    let mut answer = [0u8; 64];
                    let answered = stream.read(&mut answer).await.ok()?;
                    (answered > 0).then_some(stream)
                }
            });
            kept.extend(futures::future::join_all(opens).await.into_iter().flatten());
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
    let mut h = honest(m, s.held).await;
    if let Attack::Serve { claims: true, .. } = s.attack {
        for key in &m.claimed {
            h.node.node.handle().replicate(*key).await.unwrap();
        }
    }
    let feeds_before = h.node.store.feeds().len();
    HEAP.reset_peak_memory();
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
            let addr = h.node.addr(Transport::Tcp).await;
            let mut attacker = Attacker::start(None, Some(addr)).await;
            let kept = within(request(r, &mut attacker, &h)).await;
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
            h.node
                .event(|e| {
                    matches!(e, Event::PeerDisconnected { peer } if *peer == bad).then_some(())
                })
                .await;
            format!("rejected: {reason}")
        }
        Expect::AskedAgain => {
            within(attacker.asked.wait_for(|n| *n >= 2)).await.unwrap();
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
                    "served within its caps: {} streams answered",
                    kept.streams.len()
                ),
                n => format!(
                    "served within its caps: {connected} of {} peers connected",
                    n + 2
                ),
            }
        }
    };
    drop(kept);

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
    assert_eq!(
        h.node.store.feeds().len(),
        feeds_before,
        "{}: feeds",
        s.name
    );
    // The bystander is still served, live.
    h.served.append(b"after the attack".to_vec()).await.unwrap();
    wait_length(&h.seen, 11).await;
    assert!(
        h.bystander
            .node
            .handle()
            .connected_peers()
            .await
            .unwrap()
            .contains(&h.node.node.peer_id())
    );
    let peak = HEAP.get_peak_memory();
    assert!(
        peak <= HEAP_BOUND,
        "{}: the heap grew by {} MiB at its peak",
        s.name,
        peak >> 20
    );
    drop(attacker);
    format!("{outcome} | {:.1} MiB", peak as f64 / (1 << 20) as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attack_is_contained() {
    let m = material().await;
    let scenarios = scenarios(&m);
    assert!(scenarios.len() >= 20);
    println!("| # | attack | honest node | peak heap added |");
    println!("|---|---|---|---|");
    for (i, s) in scenarios.iter().enumerate() {
        let row = within(run(s, &m)).await;
        println!("| {} | {} | {row} |", i + 1, s.name);
    }
}
