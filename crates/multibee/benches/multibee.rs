#![allow(clippy::unwrap_used)]
//! Criterion benchmarks of multibee, each beside a baseline one layer down in the same run
//! (the machine is noisy: compare ratios, not absolute figures). Documents are small JSON
//! objects (`{"n": i, "s": "<16 chars>"}`) under 16-byte keys. Groups:
//!
//! 1. `local_put`: durable `MultiBee::put` one at a time, and `MultiBee::batch`es of 100 and
//!    1,000, vs the same pattern of `Bee::put`/`Bee::batch` (one bee, no diff, no merge).
//! 2. `merge_in_order`: a fresh peer ingests and merges 20,000 diffs of one writer (10,000 keys)
//!    in chunks of 4,096, vs verifying and storing the same chunks in a bare replica feed.
//! 3. `offline_pair`: two peers each write 10,000 ops offline (over 5,000 shared keys), then each
//!    ingests and merges the other's diffs: ops merged per second (autobase ~400/s).
//! 4. `late_diff`: the cost of merging one diff that arrives late (older than the newest diff of
//!    its key) on a key with 10, 1,000 and 100,000 prior diffs, vs one that arrives in order.
//!
//! Run with `cargo bench -p multibee-multibee --bench multibee`.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use multibee_bee::Bee;
use multibee_feed::Store;
use multibee_multibee::{BatchOp, ManualClock, MultiBee, Options, Value};
use serde_json::json;
use tempfile::TempDir;
use tokio::runtime::Runtime;

fn rt() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:012}").into_bytes()
}

fn doc(i: u64) -> Value {
    Value::Json(json!({"n": i, "s": format!("{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15))}))
}

/// Key `i` of a shuffled order over `n` keys (a multiplicative permutation).
fn shuffled(i: u64, n: u64) -> u64 {
    (i.wrapping_mul(7_919) + 13) % n
}

async fn peer(clock: &ManualClock) -> (MultiBee, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().clock(clock.clone()).auto_merge(false);
    (MultiBee::open_with(dir.path(), options).await.unwrap(), dir)
}

fn diff_feed(mb: &MultiBee) -> multibee_feed::Feed {
    mb.feed_store().feed(&mb.diff_key()).unwrap()
}

/// Writes `ops` ops over `keys` keys in batches of 1,000.
async fn write_ops(mb: &MultiBee, ops: u64, keys: u64, salt: u64) {
    let mut i = 0;
    while i < ops {
        let end = (i + 1_000).min(ops);
        let batch = (i..end)
            .map(|j| BatchOp::Put(key(shuffled(j, keys)), doc(j ^ salt)))
            .collect();
        mb.batch(batch).await.unwrap();
        i = end;
    }
}

/// Ingests every diff `from` wrote into `to`, in chunks of 4,096.
async fn ingest_all(from: &MultiBee, to: &MultiBee) -> u64 {
    let feed = diff_feed(from);
    let len = feed.length();
    let mut start = 0;
    while start < len {
        let end = (start + 4_096).min(len);
        to.ingest(feed.proof(start..end).unwrap()).await.unwrap();
        start = end;
    }
    len
}

fn local_put(c: &mut Criterion) {
    let rt = rt();
    let mut g = c.benchmark_group("local_put");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let clock = ManualClock::new(1_000_000);
    let (mb, _d1) = rt.block_on(peer(&clock));
    let bee_dir = tempfile::tempdir().unwrap();
    let store = Store::open(bee_dir.path()).unwrap();
    let bee = rt.block_on(async { Bee::open(store.create_feed().await.unwrap()).await.unwrap() });
    let mut n = 0u64;
    g.throughput(Throughput::Elements(1));
    g.bench_function("multibee_single", |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(mb.put(key(shuffled(n, 100_000)), doc(n)))
                .unwrap()
        })
    });
    g.bench_function("bee_single", |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(bee.put(key(shuffled(n, 100_000)), doc(n).to_stored()))
                .unwrap()
        })
    });
    for size in [100u64, 1_000] {
        g.throughput(Throughput::Elements(size));
        g.bench_function(BenchmarkId::new("multibee_batch", size), |b| {
            b.iter(|| {
                let ops = (0..size)
                    .map(|_| {
                        n += 1;
                        BatchOp::Put(key(shuffled(n, 100_000)), doc(n))
                    })
                    .collect();
                rt.block_on(mb.batch(ops)).unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("bee_batch", size), |b| {
            b.iter(|| {
                let ops = (0..size)
                    .map(|_| {
                        n += 1;
                        multibee_bee::BatchOp::Put(key(shuffled(n, 100_000)), doc(n).to_stored())
                    })
                    .collect();
                rt.block_on(bee.batch(ops)).unwrap()
            })
        });
    }
    g.finish();
}

fn merge_in_order(c: &mut Criterion) {
    const DIFFS: u64 = 20_000;
    let rt = rt();
    let mut g = c.benchmark_group("merge_in_order");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(DIFFS));
    let clock = ManualClock::new(1_000_000);
    let (writer, _d) = rt.block_on(peer(&clock));
    rt.block_on(write_ops(&writer, DIFFS, 10_000, 0));
    g.bench_function("multibee_ingest_and_merge", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (reader, _dir) = rt.block_on(peer(&clock));
                rt.block_on(reader.add_peer(writer.diff_key())).unwrap();
                let start = Instant::now();
                assert_eq!(rt.block_on(ingest_all(&writer, &reader)), DIFFS);
                total += start.elapsed();
                rt.block_on(reader.close());
            }
            total
        })
    });
    g.bench_function("feed_ingest_only", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let feed = diff_feed(&writer);
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let store = Store::open(dir.path()).unwrap();
                let replica = rt.block_on(store.replica(feed.key())).unwrap();
                let start = Instant::now();
                let mut at = 0;
                while at < DIFFS {
                    let end = (at + 4_096).min(DIFFS);
                    rt.block_on(replica.ingest(feed.proof(at..end).unwrap()))
                        .unwrap();
                    at = end;
                }
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

fn offline_pair(c: &mut Criterion) {
    const OPS: u64 = 10_000;
    let rt = rt();
    let mut g = c.benchmark_group("offline_pair");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(2 * OPS));
    g.bench_function("two_peers_10k_each_then_merge", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (ca, cb) = (ManualClock::new(1_000_000), ManualClock::new(1_000_000));
                let (a, _da) = rt.block_on(peer(&ca));
                let (bb, _db) = rt.block_on(peer(&cb));
                rt.block_on(async {
                    a.add_peer(bb.diff_key()).await.unwrap();
                    bb.add_peer(a.diff_key()).await.unwrap();
                    write_ops(&a, OPS, 5_000, 1).await;
                    write_ops(&bb, OPS, 5_000, 2).await;
                });
                let start = Instant::now();
                rt.block_on(async {
                    ingest_all(&bb, &a).await;
                    ingest_all(&a, &bb).await;
                });
                total += start.elapsed();
                assert_eq!(a.state_hash().unwrap(), bb.state_hash().unwrap());
            }
            total
        })
    });
    g.finish();
}

/// A reader holding one key with `prior` diffs from writer A, the newest 5 of them 5 ms after
/// the rest, and a writer B whose clock sits in that gap, so each of its diffs arrives older
/// than the key's newest 5 diffs.
struct LateSetup {
    reader: MultiBee,
    a: MultiBee,
    b: MultiBee,
    a_clock: ManualClock,
    _dirs: Vec<TempDir>,
}

async fn late_setup(prior: u64) -> LateSetup {
    const BASE: u64 = 1_000_000;
    let a_clock = ManualClock::new(BASE);
    let (a, da) = peer(&a_clock).await;
    let hot = |range: std::ops::Range<u64>| -> Vec<BatchOp> {
        range
            .map(|j| BatchOp::Put(b"hot".to_vec(), Value::Json(json!({"n": j}))))
            .collect()
    };
    let mut i = 0;
    while i < prior - 5 {
        let end = (i + 1_000).min(prior - 5);
        a.batch(hot(i..end)).await.unwrap();
        i = end;
    }
    let gap = a.clock().millis() + 1_000;
    a_clock.set(gap + 5);
    a.batch(hot(prior - 5..prior)).await.unwrap();
    let (b, db) = peer(&ManualClock::new(gap)).await;
    let (reader, dr) = peer(&ManualClock::new(0)).await;
    reader.add_peer(a.diff_key()).await.unwrap();
    reader.add_peer(b.diff_key()).await.unwrap();
    ingest_all(&a, &reader).await;
    LateSetup {
        reader,
        a,
        b,
        a_clock,
        _dirs: vec![da, db, dr],
    }
}

/// Writes one diff on `w` and times how long `reader` takes to ingest and merge it.
fn one_diff(rt: &Runtime, w: &MultiBee, reader: &MultiBee, n: u64) -> Duration {
    rt.block_on(w.put("hot", json!({"late": n}))).unwrap();
    let feed = diff_feed(w);
    let len = feed.length();
    let batch = feed.proof(len - 1..len).unwrap();
    let start = Instant::now();
    rt.block_on(reader.ingest(batch)).unwrap();
    start.elapsed()
}

fn late_diff(c: &mut Criterion) {
    let rt = rt();
    let mut g = c.benchmark_group("late_diff");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    for prior in [10u64, 1_000, 100_000] {
        let s = rt.block_on(late_setup(prior));
        let mut n = 0;
        g.bench_function(BenchmarkId::new("late", prior), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        n += 1;
                        one_diff(&rt, &s.b, &s.reader, n)
                    })
                    .sum()
            })
        });
        g.bench_function(BenchmarkId::new("in_order", prior), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        n += 1;
                        s.a_clock.advance(1);
                        one_diff(&rt, &s.a, &s.reader, n)
                    })
                    .sum()
            })
        });
        let history = s.reader.history("hot").unwrap().len();
        println!("late_diff/{prior}: the key ended with {history} diffs");
    }
    g.finish();
}

criterion_group!(benches, local_put, merge_in_order, offline_pair, late_diff);
criterion_main!(benches);
