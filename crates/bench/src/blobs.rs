//! Blob replication between two nodes over loopback (TCP and QUIC): MB/s against the same
//! ranges exported and imported in-process, the resident memory the transfer adds to each
//! node, and the time to finish a download interrupted at 90% against a whole one.
//!
//! The serving node runs in a child process (this binary, re-run with [`SERVER_VAR`] set), so
//! that each node's memory is its own process's.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
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

/// A new node connected to the server at `addr`.
async fn connected(server: multibee_net::PeerId, addr: Multiaddr) -> Peer {
    let mut b = peer(Some(addr)).await;
    loop {
        match b.node.next_event().await {
            Some(Event::PeerConnected { peer, .. }) if peer == server => return b,
            Some(_) => {}
            None => panic!("the node stopped"),
        }
    }
}

/// Samples the resident memory until stopped: the peak above what it was at the start.
struct Peak {
    idle: u64,
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
}

impl Peak {
    fn start() -> Peak {
        let idle = rss();
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(idle));
        let sampler = tokio::spawn({
            let peak = peak.clone();
            async move {
                loop {
                    peak.fetch_max(rss(), std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        Peak {
            idle,
            peak,
            sampler,
        }
    }

    fn stop(self) -> u64 {
        self.sampler.abort();
        let peak = self.peak.load(std::sync::atomic::Ordering::Relaxed);
        peak.max(rss()).saturating_sub(self.idle)
    }
}

/// Fetches `id` on `b` from the server; (elapsed, peak RSS added to this process, to the
/// server's).
async fn fetch(server: &mut Server, b: &Peer, id: BlobId) -> (Duration, u64, u64) {
    server.say("start");
    let peak = Peak::start();
    let start = Instant::now();
    b.node
        .handle()
        .fetch_blob(id, vec![server.peer])
        .await
        .unwrap();
    let took = start.elapsed();
    let added = peak.stop();
    server.say("stop");
    let served: u64 = server.line().parse().unwrap();
    (took, added, served)
}

/// The environment variable that makes this binary the serving node of `MiB` megabytes.
pub const SERVER_VAR: &str = "MULTIBEE_BENCH_BLOB_SERVER";

/// The blob of the run: `mb` MiB that do not repeat in chunk groups.
fn write_blob(mb: u64) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut w = std::io::BufWriter::new(file.as_file());
    let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    for i in 0..mb {
        let mut c = chunk.clone();
        c[..8].copy_from_slice(&i.to_le_bytes());
        w.write_all(&c).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    file
}

/// In the child: serves the blob until stdin ends. Prints `ID PEER TCP_ADDR QUIC_ADDR`, then
/// for each `start` .. `stop` on stdin the peak resident memory added meanwhile.
pub fn serve(mb: u64) {
    let rt = crate::figures::runtime(2);
    rt.block_on(async {
        let a = peer(None).await;
        let file = write_blob(mb);
        let id = a.blobs.add_file(file.path()).await.unwrap();
        drop(file);
        let addrs = a.node.handle().listen_addrs().await.unwrap();
        let find = |t: &str| addrs.iter().find(|x| x.to_string().contains(t)).unwrap();
        println!(
            "{id} {} {} {}",
            a.node.peer_id(),
            find("/tcp/"),
            find("/quic-v1")
        );
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut peak = None;
        while let Some(line) = rx.recv().await {
            match line.as_str() {
                "start" => peak = Some(Peak::start()),
                "stop" => println!("{}", peak.take().map_or(0, Peak::stop)),
                _ => {}
            }
        }
        a.node.shutdown().await;
    });
}

/// The serving node's process, killed on drop.
struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    peer: multibee_net::PeerId,
}

impl Server {
    fn start(mb: u64) -> (Server, BlobId, Multiaddr, Multiaddr) {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(SERVER_VAR, mb.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut server = Server {
            child,
            stdin,
            stdout,
            peer: multibee_net::PeerId::random(),
        };
        let line = server.line();
        let parts: Vec<&str> = line.split(' ').collect();
        server.peer = parts[1].parse().unwrap();
        (
            server,
            parts[0].parse().unwrap(),
            parts[2].parse().unwrap(),
            parts[3].parse().unwrap(),
        )
    }

    fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn figures(s: &Scale) -> Vec<Figure> {
    let rt = crate::figures::runtime(2);
    rt.block_on(async {
        let mb: u64 = if s.n >= 100_000 { 1024 } else { 128 };
        let size = mb << 20;
        let (mut server, id, tcp, quic) = Server::start(mb);
        // The same blob here, for the baseline and to start the interrupted download.
        let local_dir = tempfile::tempdir().unwrap();
        let local = Blobs::open(local_dir.path()).unwrap();
        let file = write_blob(mb);
        assert_eq!(local.add_file(file.path()).await.unwrap(), id);
        drop(file);
        let mbytes = size as f64 / 1e6;

        // In process: the same ranges exported and imported, 16 MiB at a time.
        let base_dir = tempfile::tempdir().unwrap();
        let base_store = Blobs::open(base_dir.path()).unwrap();
        let start = Instant::now();
        copy(&local, &base_store, id, size, size).await;
        let base = mbytes / start.elapsed().as_secs_f64();
        drop((base_store, base_dir));

        let mut out = Vec::new();
        let mut full_tcp = Duration::ZERO;
        for (name, addr) in [("tcp", tcp.clone()), ("quic", quic)] {
            let b = connected(server.peer, addr).await;
            let (took, added, served) = fetch(&mut server, &b, id).await;
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
            let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
            out.push(Figure::new(
                &format!("blobs/replicate-{mb}m-{name}-rss-added-fetching-mib"),
                "MiB",
                mib(added),
            ));
            out.push(Figure::new(
                &format!("blobs/replicate-{mb}m-{name}-rss-added-serving-mib"),
                "MiB",
                mib(served),
            ));
            b.node.shutdown().await;
        }

        // Resume: 90% imported first (as an interrupted download leaves it), then fetched.
        let b = connected(server.peer, tcp).await;
        let held = size / 10 * 9 / (16 << 10) * (16 << 10);
        copy(&local, &b.blobs, id, size, held).await;
        let (took, _, _) = fetch(&mut server, &b, id).await;
        out.push(Figure::new(
            "blobs/resume-from-90pct-ratio",
            "of a whole fetch",
            took.as_secs_f64() / full_tcp.as_secs_f64(),
        ));
        b.node.shutdown().await;
        out
    })
}

/// Exports the first `upto` bytes of blob `id` (of `size`) from `from` and imports them into
/// `to`, 16 MiB at a time.
async fn copy(from: &Blobs, to: &Blobs, id: BlobId, size: u64, upto: u64) {
    let step = 16u64 << 20;
    let mut at = 0;
    while at < upto {
        let range = at..(at + step).min(upto);
        let encoded = from
            .export_ranges(id, std::slice::from_ref(&range))
            .await
            .unwrap();
        to.import_ranges(id, size, std::slice::from_ref(&range), &encoded)
            .await
            .unwrap();
        at = range.end;
    }
}
