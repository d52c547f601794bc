//! Replication between two nodes on loopback, against the same batches moved in-process
//! (`Feed::proof` + verify + store, no network) in the same run.

use std::time::{Duration, Instant};

use multibee_feed::{Feed, Store};
use multibee_net::{Config, Event, Multiaddr, Node};

use crate::Scale;
use crate::figures::Figure;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Transport {
    Tcp,
    Quic,
}

impl Transport {
    fn pick(self, addrs: &[Multiaddr]) -> Multiaddr {
        let needle = match self {
            Transport::Tcp => "/tcp/",
            Transport::Quic => "/quic-v1",
        };
        addrs
            .iter()
            .find(|a| a.to_string().contains(needle))
            .cloned()
            .expect("a listen address for the transport")
    }

    fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Quic => "quic",
        }
    }
}

fn config() -> Config {
    Config::loopback().kademlia(false)
}

async fn fill(feed: &Feed, count: u64, size: usize) {
    let per_batch = ((4 << 20) / size.max(1)) as u64;
    let mut done = 0;
    while done < count {
        let n = (count - done).min(per_batch);
        let batch = (done..done + n)
            .map(|i| {
                let mut e = vec![(i % 251) as u8; size];
                e[..8].copy_from_slice(&i.to_le_bytes());
                e
            })
            .collect();
        feed.append_batch(batch).await.unwrap();
        done += n;
    }
}

/// The same batches the server would send, moved in-process.
async fn in_process(source: &Feed, size: usize) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let replica = store.replica(source.key()).await.unwrap();
    let chunk = ((2u64 << 20) / size as u64).clamp(1, 4096);
    let start = Instant::now();
    let length = source.length();
    let mut next = 0;
    while next < length {
        let end = length.min(next + chunk);
        replica
            .ingest(source.proof(next..end).unwrap())
            .await
            .unwrap();
        next = end;
    }
    start.elapsed()
}

/// A fresh node replicates the whole of `source` from `a` over `transport`.
async fn over_network(a: &Node, source: &Feed, transport: Transport) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let addr = transport.pick(&a.handle().listen_addrs().await.unwrap());
    let mut b = Node::start(store, config().dial(addr)).await.unwrap();
    let a_id = a.peer_id();
    loop {
        match b.next_event().await {
            Some(Event::PeerConnected { peer, .. }) if peer == a_id => break,
            Some(_) => {}
            None => panic!("the node stopped"),
        }
    }
    let start = Instant::now();
    let replica = b.handle().replicate(source.key()).await.unwrap();
    let length = source.length();
    replica
        .subscribe()
        .wait_for(|s| s.length >= length)
        .await
        .unwrap();
    let elapsed = start.elapsed();
    b.shutdown().await;
    elapsed
}

/// Entries/s for 100-byte entries and MB/s for 64 KiB ones, over TCP (and QUIC for 64 KiB),
/// each against the in-process move; and the live tail's p50 over TCP.
pub fn figures(s: &Scale) -> Vec<Figure> {
    let rt = crate::figures::runtime(2);
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let a_store = Store::open(dir.path()).unwrap();
        let a = Node::start(a_store.clone(), config()).await.unwrap();
        let mut out = Vec::new();

        let small = a_store.create_feed().await.unwrap();
        let count = s.n * 10;
        fill(&small, count, 100).await;
        let base = count as f64 / in_process(&small, 100).await.as_secs_f64();
        let rate = count as f64 / over_network(&a, &small, Transport::Tcp).await.as_secs_f64();
        out.push(
            Figure::new("net/replicate-100b-tcp", "entries/s", rate)
                .against("feed/proof-verify-ingest-in-process", base),
        );

        let big = a_store.create_feed().await.unwrap();
        let count = (s.n / 25).max(64);
        let size = 64 << 10;
        fill(&big, count, size).await;
        let mb = (count * size as u64) as f64 / 1e6;
        let base = mb / in_process(&big, size).await.as_secs_f64();
        for transport in [Transport::Tcp, Transport::Quic] {
            let rate = mb / over_network(&a, &big, transport).await.as_secs_f64();
            out.push(
                Figure::new(
                    &format!("net/replicate-64k-{}", transport.name()),
                    "MB/s",
                    rate,
                )
                .against("feed/proof-verify-ingest-in-process", base),
            );
        }

        out.push(Figure::new(
            "net/live-tail-p50-ms",
            "ms",
            live_tail_p50(&a, &a_store).await,
        ));
        a.shutdown().await;
        out
    })
}

/// Append on A until visible on B over TCP, median of 500 appends.
async fn live_tail_p50(a: &Node, a_store: &Store) -> f64 {
    let feed = a_store.create_feed().await.unwrap();
    feed.append(b"first".to_vec()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let addr = Transport::Tcp.pick(&a.handle().listen_addrs().await.unwrap());
    let b = Node::start(Store::open(dir.path()).unwrap(), config().dial(addr))
        .await
        .unwrap();
    let replica = b.handle().replicate(feed.key()).await.unwrap();
    let mut status = replica.subscribe();
    status.wait_for(|s| s.length >= 1).await.unwrap();
    let mut lags = Vec::new();
    for i in 0..500u64 {
        let t0 = Instant::now();
        feed.append(vec![7u8; 100]).await.unwrap();
        status.wait_for(|s| s.length >= i + 2).await.unwrap();
        lags.push(t0.elapsed());
    }
    b.shutdown().await;
    lags.sort();
    lags[lags.len() / 2].as_secs_f64() * 1e3
}
