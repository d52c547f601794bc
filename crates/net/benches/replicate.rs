//! Replication between two nodes on loopback, against an in-process baseline in the same run.
//!
//! Run: `cargo bench -p multibee-net --bench replicate` (about two minutes). Arguments after
//! `--`: `quick` for a tenth of the sizes, `memory` for the peak-memory run alone (a 1 GiB feed
//! of 64 KiB entries; run it on its own so that the peak belongs to it).
//!
//! Measures: 1,000,000 entries of 100 bytes over TCP and QUIC (verified and stored durably),
//! 64 KiB entries in MB/s, and the live tail (append on A until visible on B) p50/p99. The
//! baseline moves the same batches with `Feed::proof` + `Feed::ingest` in one process, without
//! a network.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use multibee_feed::{Feed, Store};
use multibee_net::{Config, Event, Multiaddr, Node};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Transport {
    Tcp,
    Quic,
}

impl Transport {
    fn pick(self, addrs: &[Multiaddr]) -> anyhow::Result<Multiaddr> {
        let needle = match self {
            Transport::Tcp => "/tcp/",
            Transport::Quic => "/quic-v1",
        };
        addrs
            .iter()
            .find(|a| a.to_string().contains(needle))
            .cloned()
            .context("no listen address for the transport")
    }
}

fn config() -> Config {
    Config::loopback().kademlia(false)
}

async fn fill(feed: &Feed, count: u64, size: usize) -> anyhow::Result<()> {
    let per_batch = (4 << 20) / size.max(1);
    let mut done = 0;
    while done < count {
        let n = (count - done).min(per_batch as u64);
        let batch = (done..done + n)
            .map(|i| {
                let mut e = vec![(i % 251) as u8; size];
                e[..8].copy_from_slice(&i.to_le_bytes());
                e
            })
            .collect();
        feed.append_batch(batch).await?;
        done += n;
    }
    Ok(())
}

/// The same batches the server would send, moved in-process: proof, then verify + store.
async fn baseline(source: &Feed, size: usize) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let store = open_store(dir.path())?;
    let replica = store.replica(source.key()).await?;
    let chunk = ((2u64 << 20) / size as u64).clamp(1, 4096);
    let start = Instant::now();
    let length = source.length();
    let mut next = 0;
    while next < length {
        let end = length.min(next + chunk);
        replica.ingest(source.proof(next..end)?).await?;
        next = end;
    }
    Ok(start.elapsed())
}

/// A fresh node replicates the whole of `source` from `a` over `transport`.
async fn over_network(a: &Node, source: &Feed, transport: Transport) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let store = open_store(dir.path())?;
    let addr = transport.pick(&a.handle().listen_addrs().await?)?;
    let mut b = Node::start(store.clone(), config().dial(addr)).await?;
    let a_id = a.peer_id();
    loop {
        match b.next_event().await {
            Some(Event::PeerConnected { peer, .. }) if peer == a_id => break,
            Some(_) => {}
            None => anyhow::bail!("node stopped"),
        }
    }
    let start = Instant::now();
    let replica = b.handle().replicate(source.key()).await?;
    let length = source.length();
    replica.subscribe().wait_for(|s| s.length >= length).await?;
    let elapsed = start.elapsed();
    b.shutdown().await;
    Ok(elapsed)
}

async fn throughput(a: &Node, a_store: &Store, count: u64, size: usize) -> anyhow::Result<()> {
    let source = a_store.create_feed().await?;
    fill(&source, count, size).await?;
    let bytes = count as f64 * size as f64;
    let report = |what: &str, d: Duration| {
        let s = d.as_secs_f64();
        println!(
            "{what:<28} {count:>9} x {size:>6} B: {:>8.2} s  {:>10.0} entries/s  {:>7.1} MB/s",
            s,
            count as f64 / s,
            bytes / s / 1e6
        );
        count as f64 / s
    };
    let raw = report("baseline (in-process)", baseline(&source, size).await?);
    for transport in [Transport::Tcp, Transport::Quic] {
        let rate = report(
            &format!("replicate over {transport:?}"),
            over_network(a, &source, transport).await?,
        );
        println!("{:<28} ratio to baseline {:.2}", "", rate / raw);
    }
    Ok(())
}

async fn live_tail(a: &Node, a_store: &Store, samples: usize) -> anyhow::Result<()> {
    for transport in [Transport::Tcp, Transport::Quic] {
        let feed = a_store.create_feed().await?;
        feed.append(b"first".to_vec()).await?;
        let dir = tempfile::tempdir()?;
        let addr = transport.pick(&a.handle().listen_addrs().await?)?;
        let b = Node::start(open_store(dir.path())?, config().dial(addr)).await?;
        let replica = b.handle().replicate(feed.key()).await?;
        let mut status = replica.subscribe();
        status.wait_for(|s| s.length >= 1).await?;
        let (mut from_call, mut from_commit) = (Vec::new(), Vec::new());
        for i in 0..samples as u64 {
            let t0 = Instant::now();
            feed.append(vec![7u8; 100]).await?;
            let t1 = Instant::now();
            status.wait_for(|s| s.length >= i + 2).await?;
            let t2 = Instant::now();
            from_call.push(t2 - t0);
            from_commit.push(t2 - t1);
        }
        b.shutdown().await;
        let (call, commit) = (percentiles(&mut from_call), percentiles(&mut from_commit));
        println!(
            "live tail over {transport:?} ({samples} appends of 100 B): append call -> visible on B p50 {:.3} ms p99 {:.3} ms; A committed -> visible on B p50 {:.3} ms p99 {:.3} ms",
            call.0, call.1, commit.0, commit.1
        );
    }
    Ok(())
}

fn percentiles(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    (at(0.5), at(0.99))
}

fn peak_rss_mib() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(|l| l.trim_start_matches("VmHWM:").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Set for the memory run: every store caps redb's page cache (default 1 GiB per database).
static CAPPED_CACHE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The page cache of each store in the memory run.
const MEMORY_RUN_CACHE: usize = 16 << 20;

fn open_store(dir: &std::path::Path) -> multibee_feed::Result<Store> {
    let mut options = multibee_feed::Options::default();
    if CAPPED_CACHE.load(std::sync::atomic::Ordering::Relaxed) {
        options = options.cache_bytes(MEMORY_RUN_CACHE);
    }
    Store::open_with(dir, options)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "quick");
    let memory = args.iter().any(|a| a == "memory");
    let scale = if quick { 10 } else { 1 };
    CAPPED_CACHE.store(memory, std::sync::atomic::Ordering::Relaxed);
    let dir = tempfile::tempdir()?;
    let a_store = open_store(dir.path())?;
    let a = Node::start(a_store.clone(), config()).await?;
    if memory {
        let count = 16_384 / scale;
        let source = a_store.create_feed().await?;
        fill(&source, count, 64 << 10).await?;
        let before = peak_rss_mib();
        let d = over_network(&a, &source, Transport::Tcp).await?;
        println!(
            "1 GiB feed of 64 KiB entries over TCP: {:.2} s; peak RSS of the process (writer, both nodes): {} (before replicating: {before})",
            d.as_secs_f64(),
            peak_rss_mib()
        );
        return Ok(());
    }
    throughput(&a, &a_store, 1_000_000 / scale, 100).await?;
    throughput(&a, &a_store, 4096 / scale, 64 << 10).await?;
    live_tail(&a, &a_store, 2000 / scale as usize).await?;
    a.shutdown().await;
    Ok(())
}
