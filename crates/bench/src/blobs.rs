//! Blob replication between two nodes over loopback (TCP and QUIC): MB/s against the same
//! ranges exported and imported in-process, the resident memory the transfer adds, and the
//! time to finish a download interrupted at 90% against a whole one.

use std::time::{Duration, Instant};

use multibee::blobs::{BlobId, Blobs};
use multibee_feed::Store;
use multibee_net::{Config, Event, Multiaddr, Node};

use crate::Scale;
use crate::figures::Figure;

/// The process's resident memory now, in bytes (Linux).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

struct Peer {
    node: Node,
    blobs: Blobs,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn peer(dial: Option<Multiaddr>) -> Peer {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let blobs = Blobs::open(d2.path()).unwrap();
    let mut config = Config::loopback().kademlia(false).blobs(blobs.clone());
    if let Some(addr) = dial {
        config = config.dial(addr);
    }
    let node = Node::start(Store::open(d1.path()).unwrap(), config)
        .await
        .unwrap();
    Peer {
        node,
        blobs,
        _dirs: (d1, d2),
    }
}

/// B connected to A over `transport` (`"/tcp/"` or `"/quic-v1"`).
async fn connected(a: &Peer, transport: &str) -> Peer {
    let addrs = a.node.handle().listen_addrs().await.unwrap();
    let addr = addrs
        .into_iter()
        .find(|x| x.to_string().contains(transport))
        .unwrap();
    let mut b = peer(Some(addr)).await;
    let a_id = a.node.peer_id();
    loop {
        match b.node.next_event().await {
            Some(Event::PeerConnected { peer, .. }) if peer == a_id => return b,
            Some(_) => {}
            None => panic!("the node stopped"),
        }
    }
}

/// Fetches `id` on `b` from `a`, sampling the resident memory; (elapsed, peak RSS added).
async fn fetch(a: &Peer, b: &Peer, id: BlobId) -> (Duration, u64) {
    let idle = rss();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(idle));
    let sampler = tokio::spawn({
        let peak = peak.clone();
        async move {
            loop {
                peak.fetch_max(rss(), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let start = Instant::now();
    b.node
        .handle()
        .fetch_blob(id, vec![a.node.peer_id()])
        .await
        .unwrap();
    let took = start.elapsed();
    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    (took, peak.saturating_sub(idle))
}

pub fn figures(s: &Scale) -> Vec<Figure> {
    let rt = crate::figures::runtime(2);
    rt.block_on(async {
        let mb: u64 = if s.n >= 100_000 { 1024 } else { 128 };
        let size = mb << 20;
        let a = peer(None).await;
        let file = tempfile::NamedTempFile::new().unwrap();
        {
            use std::io::Write;
            let mut w = std::io::BufWriter::new(file.as_file());
            let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
            for i in 0..mb {
                let mut c = chunk.clone();
                c[..8].copy_from_slice(&i.to_le_bytes());
                w.write_all(&c).unwrap();
            }
        }
        let id = a.blobs.add_file(file.path()).await.unwrap();
        drop(file);
        let mbytes = size as f64 / 1e6;

        // In process: the same ranges exported and imported, 16 MiB at a time.
        let base_dir = tempfile::tempdir().unwrap();
        let local = Blobs::open(base_dir.path()).unwrap();
        let start = Instant::now();
        let step = 16u64 << 20;
        let mut at = 0;
        while at < size {
            let range = at..(at + step).min(size);
            let encoded = a
                .blobs
                .export_ranges(id, std::slice::from_ref(&range))
                .await
                .unwrap();
            local
                .import_ranges(id, size, std::slice::from_ref(&range), &encoded)
                .await
                .unwrap();
            at = range.end;
        }
        let base = mbytes / start.elapsed().as_secs_f64();
        drop((local, base_dir));

        let mut out = Vec::new();
        let mut full_tcp = Duration::ZERO;
        for (name, transport) in [("tcp", "/tcp/"), ("quic", "/quic-v1")] {
            let b = connected(&a, transport).await;
            let (took, added) = fetch(&a, &b, id).await;
            if name == "tcp" {
                full_tcp = took;
            }
            out.push(
                Figure::new(
                    &format!("blobs/replicate-{mb}m-{name}"),
                    "MB/s",
                    mbytes / took.as_secs_f64(),
                )
                .against("blobs/export-import-in-process", base),
            );
            out.push(Figure::new(
                &format!("blobs/replicate-{mb}m-{name}-rss-added-mib"),
                "MiB",
                added as f64 / (1 << 20) as f64,
            ));
            b.node.shutdown().await;
        }

        // Resume: 90% imported first (as an interrupted download leaves it), then fetched.
        let b = connected(&a, "/tcp/").await;
        let held = size / 10 * 9 / (16 << 10) * (16 << 10);
        let mut at = 0;
        while at < held {
            let range = at..(at + step).min(held);
            let encoded = a
                .blobs
                .export_ranges(id, std::slice::from_ref(&range))
                .await
                .unwrap();
            b.blobs
                .import_ranges(id, size, std::slice::from_ref(&range), &encoded)
                .await
                .unwrap();
            at = range.end;
        }
        let (took, _) = fetch(&a, &b, id).await;
        out.push(Figure::new(
            "blobs/resume-from-90pct-ratio",
            "of a whole fetch",
            took.as_secs_f64() / full_tcp.as_secs_f64(),
        ));
        b.node.shutdown().await;
        a.node.shutdown().await;
        out
    })
}
