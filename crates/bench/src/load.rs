//! Sustained load: four served peers in one process, connected in a full mesh over loopback
//! TCP, each writing single durable puts as fast as it can while replicating and merging the
//! other three. Reports writes/s per peer, replication lag (a put called on one peer to the
//! change in another peer's live `changes()`, and by stage: committed on the writer, stored and
//! merged on the reader, all from the same start), the process's resident memory every second
//! (flat: no growth beyond 10% after the first 10 s), and, as the baseline in the same run, one
//! peer writing alone without the network.
//!
//! `cargo run --release -p multibee-bench -- load` (60 s, durable; `--quick`: 10 s). The
//! report for people goes to stderr; the figures are `load/4-peers-durable` (puts/s per peer,
//! against one peer alone) and `load/4-peers-lag-p99-ms`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use multibee::db::Event;
use multibee::{ChangesOptions, Config, MultiBee, Options, Served, SyncMode, Value, serve};

use crate::figures::Figure;

const PEERS: usize = 4;
/// redb's page cache per peer (its default of 1 GiB per database would read as growth).
const CACHE_BYTES: usize = 8 << 20;

/// Runs the load for `seconds` (and the baseline for up to 10 s); the figures.
pub fn figures(sync: SyncMode, seconds: u64) -> Vec<Figure> {
    let rt = crate::figures::runtime(2);
    rt.block_on(async {
        let alone = baseline(sync, seconds.min(10)).await;
        eprintln!("baseline: one peer alone, no network: {alone:.0} puts/s ({sync:?})");
        let outcome = load(sync, seconds).await;
        let mode = match sync {
            SyncMode::Durable => "durable",
            _ => "relaxed",
        };
        vec![
            Figure::new(
                &format!("load/4-peers-{mode}"),
                "puts/s per peer",
                outcome.per_peer,
            )
            .against("one-peer-alone", alone),
            Figure::new("load/4-peers-lag-p99-ms", "ms", outcome.lag_p99_ms),
        ]
    })
}

/// What a load run measured.
struct Outcome {
    per_peer: f64,
    lag_p99_ms: f64,
}

fn options(sync: SyncMode) -> Options {
    Options::default().sync(sync).cache_bytes(CACHE_BYTES)
}

/// Microseconds since the epoch: the peers share this machine's clock.
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// A 100-byte value that carries `at`, the moment its put was called.
fn stamped(at: u64) -> Value {
    let mut bytes = vec![0u8; 100];
    bytes[..8].copy_from_slice(&at.to_le_bytes());
    Value::Bytes(bytes)
}

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap()
}

async fn baseline(sync: SyncMode, seconds: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mb = MultiBee::open_with(dir.path(), options(sync))
        .await
        .unwrap();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        mb.put(format!("alone/{n:010}"), stamped(now_us()))
            .await
            .unwrap();
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    mb.close().await;
    rate
}

/// Resident memory of this process, from /proc.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

async fn load(sync: SyncMode, seconds: u64) -> Outcome {
    let dirs: Vec<_> = (0..PEERS).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut peers: Vec<(MultiBee, Served)> = Vec::new();
    for dir in &dirs {
        let mb = MultiBee::open_with(dir.path(), options(sync))
            .await
            .unwrap();
        let served = serve(&mb, Config::loopback().kademlia(false))
            .await
            .unwrap();
        peers.push((mb, served));
    }
    for (i, (_, served)) in peers.iter().enumerate() {
        for (j, (other, _)) in peers.iter().enumerate() {
            if i != j {
                served.add_writer(other.diff_key()).await.unwrap();
            }
        }
    }
    for i in 0..PEERS {
        for j in i + 1..PEERS {
            let addr = peers[j].1.listen_addrs().await.unwrap();
            let tcp = addr
                .into_iter()
                .find(|a| a.to_string().contains("/tcp/"))
                .unwrap();
            peers[i].1.dial(tcp).await.unwrap();
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let written: Arc<Vec<AtomicU64>> = Arc::new((0..PEERS).map(|_| AtomicU64::new(0)).collect());
    let seen: Arc<Vec<AtomicU64>> = Arc::new((0..PEERS).map(|_| AtomicU64::new(0)).collect());

    // When each put was called, by writer and put number, for the lag by stage. Put `n` of a
    // writer is entry `first[w] + n` of its diff feed (after its membership operations).
    let called: Arc<Vec<std::sync::Mutex<Vec<u64>>>> = Arc::new(
        (0..PEERS)
            .map(|_| std::sync::Mutex::new(Vec::new()))
            .collect(),
    );
    let keys: Vec<_> = peers.iter().map(|(mb, _)| mb.diff_key()).collect();
    let first: Vec<u64> = peers
        .iter()
        .map(|(mb, _)| mb.feed_store().feed(&mb.diff_key()).unwrap().length())
        .collect();

    // Observers: every remote change seen, with its lag, until told to stop.
    let (done, finished) = tokio::sync::watch::channel(false);
    let mut observers = Vec::new();
    for (i, (mb, _)) in peers.iter().enumerate() {
        let own = format!("p{i}/").into_bytes();
        let mut changes = mb
            .changes(ChangesOptions {
                live: true,
                ..Default::default()
            })
            .unwrap();
        let seen = seen.clone();
        let mut finished = finished.clone();
        observers.push(tokio::spawn(async move {
            let mut lags = histogram();
            loop {
                let change = tokio::select! {
                    change = changes.next() => change,
                    _ = finished.wait_for(|f| *f) => break,
                };
                let Some(change) = change else { break };
                let change = change.unwrap();
                if change.key.starts_with(&own) {
                    continue;
                }
                if let Some(Value::Bytes(bytes)) = &change.value {
                    let at = u64::from_le_bytes(bytes[..8].try_into().unwrap());
                    lags.saturating_record(now_us().saturating_sub(at).max(1));
                }
                seen[i].fetch_add(1, Ordering::Relaxed);
            }
            lags
        }));
    }
    // Lag from the put called on its writer to each diff being stored here (net's
    // `FeedProgressed`) and merged here (`Merged`).
    let mut stage_observers = Vec::new();
    for (mb, served) in &peers {
        let stored = served.subscribe();
        let merged = mb.events();
        let (called, keys, first) = (called.clone(), keys.clone(), first.clone());
        stage_observers.push(tokio::spawn(observe_stages(
            stored,
            merged,
            Stamps {
                called,
                keys,
                first,
            },
            finished.clone(),
        )));
    }
    // Writers.
    let start = Instant::now();
    let mut writers = Vec::new();
    for (i, (mb, _)) in peers.iter().enumerate() {
        let (mb, stop, written) = (mb.clone(), stop.clone(), written.clone());
        let called = called.clone();
        writers.push(tokio::spawn(async move {
            // Put called -> committed on the writer.
            let mut lags = histogram();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let at = now_us();
                called[i].lock().unwrap().push(at);
                mb.put(format!("p{i}/{n:010}"), stamped(at)).await.unwrap();
                lags.saturating_record(now_us().saturating_sub(at).max(1));
                n += 1;
                written[i].store(n, Ordering::Relaxed);
            }
            lags
        }));
    }
    // Memory, once a second.
    let mut rss = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    for second in 1..=seconds {
        ticker.tick().await;
        rss.push(rss_bytes());
        let total: u64 = written.iter().map(|w| w.load(Ordering::Relaxed)).sum();
        let behind: u64 = (0..PEERS)
            .map(|i| {
                let others = total - written[i].load(Ordering::Relaxed);
                others.saturating_sub(seen[i].load(Ordering::Relaxed))
            })
            .sum();
        eprintln!(
            "{second:>3} s: {total} puts, {behind} remote changes not yet seen, rss {} MiB",
            rss.last().unwrap() >> 20
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut commit_lags = histogram();
    for w in writers {
        commit_lags.add(w.await.unwrap()).unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let counts: Vec<u64> = written.iter().map(|w| w.load(Ordering::Relaxed)).collect();
    let total: u64 = counts.iter().sum();
    // Drain: every peer sees every other peer's writes.
    let drain = Instant::now();
    let drained = tokio::time::timeout(Duration::from_secs(600), async {
        loop {
            let done = (0..PEERS).all(|i| seen[i].load(Ordering::Relaxed) >= total - counts[i]);
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let drain = drain.elapsed();
    let mut lags = histogram();
    done.send(true).unwrap();
    for o in observers {
        lags.add(o.await.unwrap()).unwrap();
    }
    let mut stored_lags = histogram();
    let mut merge_lags = histogram();
    for o in stage_observers {
        let (stored, merged) = o.await.unwrap();
        stored_lags.add(stored).unwrap();
        merge_lags.add(merged).unwrap();
    }
    for (mb, served) in peers {
        served.shutdown().await;
        mb.close().await;
    }

    eprintln!(
        "load: {PEERS} peers, {seconds} s, {sync:?} single puts of 100 B, full mesh over loopback TCP"
    );
    for (i, c) in counts.iter().enumerate() {
        eprintln!("  peer {i}: {c} puts, {:.0} puts/s", *c as f64 / elapsed);
    }
    eprintln!(
        "  all peers: {:.0} puts/s; every peer merged the others' {} puts",
        total as f64 / elapsed,
        total - counts.iter().min().unwrap()
    );
    match drained {
        Ok(()) => eprintln!(
            "  caught up {:.2} s after the writers stopped",
            drain.as_secs_f64()
        ),
        Err(_) => eprintln!("  NOT caught up 600 s after the writers stopped"),
    }
    let ms = |q: f64| lags.value_at_quantile(q) as f64 / 1e3;
    eprintln!(
        "  replication lag (put called on one peer -> change out of another's changes()): p50 {:.1} ms, \
         p99 {:.1} ms, max {:.1} ms over {} changes",
        ms(0.5),
        ms(0.99),
        lags.max() as f64 / 1e3,
        lags.len()
    );
    eprintln!("  by stage, each from the put called on its writer:");
    let stages = [
        ("committed on the writer", &commit_lags, "puts"),
        ("stored on another peer", &stored_lags, "diffs"),
        ("merged there", &merge_lags, "diffs"),
        ("out of its changes()", &lags, "changes"),
    ];
    for (stage, h, what) in stages {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
        eprintln!(
            "    -> {stage}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} {what}",
            ms(0.5),
            ms(0.99),
            h.max() as f64 / 1e3,
            h.len()
        );
    }
    let settled = rss.get(9).copied().unwrap_or(0).max(1);
    let peak_after = rss.iter().skip(10).copied().max().unwrap_or(settled);
    eprintln!(
        "  resident memory of the process (4 peers): at 10 s {} MiB, peak after {} MiB ({:+.1}%), \
         peak overall {} MiB",
        settled >> 20,
        peak_after >> 20,
        (peak_after as f64 / settled as f64 - 1.0) * 100.0,
        rss.iter().max().copied().unwrap_or(0) >> 20
    );
    Outcome {
        per_peer: total as f64 / elapsed / PEERS as f64,
        lag_p99_ms: lags.value_at_quantile(0.99) as f64 / 1e3,
    }
}

/// When each writer's puts were called: `called[w][n]` for put `n` of writer `keys[w]`, which
/// is entry `first[w] + n` of its diff feed.
struct Stamps {
    called: Arc<Vec<std::sync::Mutex<Vec<u64>>>>,
    keys: Vec<multibee::FeedKey>,
    first: Vec<u64>,
}

/// Records, for every put's diff stored (net's `FeedProgressed`) and merged (`Merged`) on one
/// peer, how long after the put was called on its writer that happened.
async fn observe_stages(
    mut stored: tokio::sync::broadcast::Receiver<multibee::net::Event>,
    mut merged: tokio::sync::broadcast::Receiver<Event>,
    stamps: Stamps,
    mut finished: tokio::sync::watch::Receiver<bool>,
) -> (Histogram<u64>, Histogram<u64>) {
    use tokio::sync::broadcast::error::RecvError;
    let (mut stored_lags, mut merged_lags) = (histogram(), histogram());
    let (mut stored_so_far, mut merged_so_far) = ([0u64; PEERS], [0u64; PEERS]);
    let record = |lags: &mut Histogram<u64>, so_far: &mut [u64; PEERS], writer, length: u64| {
        let Some(w) = stamps.keys.iter().position(|k| *k == writer) else {
            return;
        };
        let now = now_us();
        let times = stamps.called[w].lock().unwrap();
        // Entries before `first` are membership operations, not puts.
        for seq in so_far[w].max(stamps.first[w])..length {
            if let Some(&at) = times.get((seq - stamps.first[w]) as usize) {
                lags.saturating_record(now.saturating_sub(at).max(1));
            }
        }
        so_far[w] = so_far[w].max(length);
    };
    loop {
        tokio::select! {
            event = stored.recv() => match event {
                Ok(multibee::net::Event::FeedProgressed { key, length, .. }) => {
                    record(&mut stored_lags, &mut stored_so_far, key, length)
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            },
            event = merged.recv() => match event {
                Ok(Event::Merged { writer, merged }) => {
                    record(&mut merged_lags, &mut merged_so_far, writer, merged)
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            },
            _ = finished.wait_for(|f| *f) => break,
        }
    }
    (stored_lags, merged_lags)
}
