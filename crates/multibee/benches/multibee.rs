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
//! 5. `writers`: how diffs scale with the number of writers (2, 10, 100 and 1,000) of one
//!    database (its root adds the others: `Add` entries in the root's diff feed, which every
//!    writer merges first): a one-field patch by a writer that counts and has merged every
//!    other writer (time, and bytes per diff entry, printed), and a fresh peer of the database
//!    that has merged the root's membership entries ingesting and merging 20,000 diffs spread
//!    over the writers (diffs/s over the diffs alone). Goal: within 2x of the 2-writer figures
//!    at 1,000 writers. Run it alone with
//!    `cargo bench -p multibee-multibee --bench multibee -- writers`.
//!
//! Run with `cargo bench -p multibee-multibee --bench multibee`.

use std::ops::Range;
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use multibee_bee::Bee;
use multibee_feed::{Batch, FeedKey, Store, SyncMode};
use multibee_multibee::{
    BatchOp, ManualClock, MemberRecord, MultiBee, Options, Value, WriterState,
};
use serde_json::json;
use tempfile::TempDir;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

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
                rt.block_on(reader.add_writer(writer.diff_key())).unwrap();
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
                    a.add_writer(bb.diff_key()).await.unwrap();
                    bb.add_writer(a.diff_key()).await.unwrap();
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
    reader.add_writer(a.diff_key()).await.unwrap();
    reader.add_writer(b.diff_key()).await.unwrap();
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

/// The writer counts of the `writers` group.
const WRITER_COUNTS: [usize; 4] = [2, 10, 100, 1_000];
/// Diffs in the stream the `writers` merge benchmark ingests, spread evenly over the writers
/// (membership entries not counted: the receiver merges them before the timed part).
const STREAM_DIFFS: u64 = 20_000;
/// How many other writers each stream writer merges (one diff of each) before writing the rest
/// of its diffs: all of them up to 100 writers, its 100 successors on a ring at 1,000. All to
/// all at 1,000 writers would be a million ingests and merges of setup, so the stream's diffs
/// carry the causal metadata of 100 merged writers there, not 999 (the `patch` scenario is
/// the full worst case).
const MAX_MERGED: usize = 100;
/// One-field patches whose diff feed entries `writers/bytes_per_diff` averages.
const PATCHES: u64 = 100;
const GOAL: &str = "goal: within 2x of the 2-writer figure at 1,000 writers";

/// A peer of the database `root` for setup: relaxed sync and a small page cache, as there are
/// up to 999 of them.
async fn setup_peer(clock: &ManualClock, root: FeedKey) -> (MultiBee, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default()
        .clock(clock.clone())
        .auto_merge(false)
        .sync(SyncMode::Relaxed)
        .cache_bytes(1 << 20)
        .database(root);
    (MultiBee::open_with(dir.path(), options).await.unwrap(), dir)
}

/// A peer of the database `root` with the options of [`peer`] (durable).
async fn database_peer(clock: &ManualClock, root: FeedKey) -> (MultiBee, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default()
        .clock(clock.clone())
        .auto_merge(false)
        .database(root);
    (MultiBee::open_with(dir.path(), options).await.unwrap(), dir)
}

/// Makes every writer of `keys` a member, all at once (the adds share group commits): one
/// `Add` entry each in `mb`'s diff feed.
async fn add_writers(mb: &MultiBee, keys: Vec<FeedKey>) {
    let mut adds = JoinSet::new();
    for key in keys {
        let mb = mb.clone();
        adds.spawn(async move { mb.add_writer(key).await });
    }
    while let Some(added) = adds.join_next().await {
        added.unwrap().unwrap();
    }
}

/// Verifies and stores `batches` in `mb`'s replica feeds, all at once (the ingests share group
/// commits), without merging them.
async fn store_all(mb: &MultiBee, batches: Vec<Batch>) {
    let mut ingests = JoinSet::new();
    for batch in batches {
        let feed = mb.feed_store().feed(&batch.feed).unwrap();
        ingests.spawn(async move { feed.ingest(batch).await });
    }
    while let Some(ingested) = ingests.join_next().await {
        ingested.unwrap().unwrap();
    }
}

/// How many entries of `feed` in `range` are membership operations (the others are diffs).
fn membership_entries(feed: &multibee_feed::Feed, range: Range<u64>) -> u64 {
    feed.range(range)
        .unwrap()
        .filter(|entry| MemberRecord::from_entry(&entry.as_ref().unwrap().1).is_some())
        .count() as u64
}

fn hello_key(w: usize) -> Vec<u8> {
    format!("hello-{w:06}").into_bytes()
}

/// One database of `n` writers and what they wrote, ready to send. The root (writer 0) starts
/// the database and adds the other `n - 1` writers, all at once: `n - 1` `Add` entries at the
/// head of its diff feed (`membership`). Each other writer opens a peer of the database and
/// merges those, so that it counts every writer. Then each writer writes one document (its
/// hello, `hellos[w]`: its first diff); then merges the hellos of the next
/// `min(n - 1, MAX_MERGED)` writers on a ring, so that its later diffs carry causal metadata;
/// then patches the hello it merged from its successor (a diff with a parent) and puts
/// `STREAM_DIFFS / n - 2` documents over 10,000 keys (diff `m` of writer `w` is the stream's
/// diff `w + n·m`, round robin) in batches of 1,000. `feeds[w]` holds its diffs: its whole
/// feed, less the root's membership entries. The root stays open, with the options of
/// [`peer`]: it is the patching peer of `writers/patch`.
struct Stream {
    root: MultiBee,
    _root_dir: TempDir,
    membership: Batch,
    hellos: Vec<Batch>,
    feeds: Vec<Batch>,
}

async fn stream(n: usize, clock: &ManualClock) -> Stream {
    let adds = n as u64 - 1;
    let (root, root_dir) = peer(clock).await;
    let database = root.database().unwrap();
    assert_eq!(database, root.diff_key());
    let mut writers = Vec::with_capacity(n - 1);
    for _ in 1..n {
        writers.push(setup_peer(clock, database).await);
    }
    add_writers(&root, writers.iter().map(|(mb, _)| mb.diff_key()).collect()).await;
    let membership = root.export(database, 0).unwrap();
    assert_eq!(membership.entries.len() as u64, adds);
    assert_eq!(membership_entries(&diff_feed(&root), 0..adds), adds);
    root.put(hello_key(0), doc(0)).await.unwrap();
    // The other writers work at once (each peer has its own writer thread).
    let mut hellos = vec![diff_feed(&root).proof(adds..adds + 1).unwrap()];
    let mut work = JoinSet::new();
    for (w, (mb, _)) in (1..).zip(&writers) {
        let (mb, membership) = (mb.clone(), membership.clone());
        work.spawn(async move {
            mb.ingest(membership).await.unwrap();
            let known = mb.writers().unwrap();
            assert_eq!(known.len(), n - 1, "every writer but itself");
            assert!(known.iter().all(|k| k.state == WriterState::Active));
            mb.put(hello_key(w), doc(w as u64)).await.unwrap();
            (w, diff_feed(&mb).proof(0..1).unwrap())
        });
    }
    hellos.extend(in_order(work).await);
    let successors = |w: usize| -> Vec<Batch> {
        (1..=(n - 1).min(MAX_MERGED))
            .map(|d| hellos[(w + d) % n].clone())
            .collect()
    };
    let mut feeds = vec![write_stream(&root, 0, n, adds, successors(0)).await];
    let mut work = JoinSet::new();
    for (w, (mb, dir)) in (1..).zip(writers) {
        let others = successors(w);
        work.spawn(async move {
            let feed = write_stream(&mb, w, n, 0, others).await;
            mb.close().await;
            drop(dir);
            (w, feed)
        });
    }
    feeds.extend(in_order(work).await);
    Stream {
        root,
        _root_dir: root_dir,
        membership,
        hellos,
        feeds,
    }
}

/// The results of `work`'s tasks, each `(index, result)`, in index order.
async fn in_order<T: 'static>(mut work: JoinSet<(usize, T)>) -> Vec<T> {
    let mut done = Vec::with_capacity(work.len());
    while let Some(result) = work.join_next().await {
        done.push(result.unwrap());
    }
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, t)| t).collect()
}

/// Writer `w` of `n` (whose diff feed starts with `adds` membership entries) merges `others`,
/// the hellos of its successors, and writes the rest of its diffs; returns them.
async fn write_stream(mb: &MultiBee, w: usize, n: usize, adds: u64, others: Vec<Batch>) -> Batch {
    let per = STREAM_DIFFS / n as u64;
    let merged = others.len() as u64;
    store_all(mb, others).await;
    assert_eq!(mb.merge().await.unwrap(), merged);
    let mut ops = vec![BatchOp::Patch(hello_key((w + 1) % n), json!({"by": w}))];
    for m in 0..per - 2 {
        let j = w as u64 + n as u64 * m;
        ops.push(BatchOp::Put(key(shuffled(j, 10_000)), doc(j)));
        if ops.len() == 1_000 {
            mb.batch(std::mem::take(&mut ops)).await.unwrap();
        }
    }
    if !ops.is_empty() {
        mb.batch(ops).await.unwrap();
    }
    let feed = diff_feed(mb);
    assert_eq!(
        feed.length(),
        adds + per,
        "{adds} membership entries and {per} diffs"
    );
    assert_eq!(
        membership_entries(&feed, 0..feed.length()),
        adds,
        "the membership entries are the root's adds"
    );
    feed.proof(adds..adds + per).unwrap()
}

/// The patching peer P of `writers/patch`: the root, which counts the other `n - 1` writers
/// (it added them) and has merged a diff of each (their hellos), the worst case for causal
/// metadata of every writer. Also the entry sizes of its first `PATCHES` one-field patches of
/// `doc` (diffs only: none of them is a membership entry): `(average, first)`.
async fn patcher(stream: &Stream) -> (MultiBee, f64, usize) {
    let p = stream.root.clone();
    let n = stream.hellos.len();
    // It merged its ring successors' hellos while writing its stream diffs.
    let rest = stream.hellos[(n - 1).min(MAX_MERGED) + 1..].to_vec();
    let count = rest.len() as u64;
    store_all(&p, rest).await;
    assert_eq!(p.merge().await.unwrap(), count);
    let known = p.writers().unwrap();
    assert_eq!(known.len(), n - 1);
    assert!(
        known
            .iter()
            .all(|w| w.state == WriterState::Active && w.merged == 1)
    );
    p.put("doc", doc(0)).await.unwrap();
    let feed = diff_feed(&p);
    let start = feed.length();
    for i in 1..=PATCHES {
        p.patch("doc", json!({"n": i})).await.unwrap();
    }
    let sizes: Vec<usize> = feed
        .range(start..feed.length())
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap().1;
            assert!(MemberRecord::from_entry(&entry).is_none(), "a diff");
            entry.len()
        })
        .collect();
    assert_eq!(sizes.len() as u64, PATCHES);
    let average = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
    (p, average, sizes[0])
}

/// A figure against the 2-writer one (if that one ran), and the goal.
fn versus(figure: f64, base: Option<f64>) -> String {
    match base {
        Some(base) => format!("{:.2}x the 2-writer figure; {GOAL}", figure / base),
        None => GOAL.to_string(),
    }
}

fn writers(c: &mut Criterion) {
    let rt = rt();
    let mut g = c.benchmark_group("writers");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let clock = ManualClock::new(1_000_000);
    // The 2-writer figures: bytes per diff, diffs merged per second.
    let mut base: (Option<f64>, Option<f64>) = (None, None);
    for n in WRITER_COUNTS {
        // Set up on first use: criterion runs only the benchmarks its filter selects.
        let mut setup: Option<Stream> = None;
        let mut patching = None;
        let mut sizes = None;
        let mut i = 0u64;
        g.throughput(Throughput::Elements(1));
        g.sampling_mode(SamplingMode::Auto);
        g.bench_function(BenchmarkId::new("patch", n), |b| {
            let s = setup.get_or_insert_with(|| rt.block_on(stream(n, &clock)));
            let (p, average, first) = patching.get_or_insert_with(|| rt.block_on(patcher(s)));
            sizes = Some((*average, *first));
            b.iter(|| {
                i += 1;
                rt.block_on(p.patch("doc", json!({"n": PATCHES + i})))
                    .unwrap()
            });
        });
        drop(patching);
        if let Some((average, first)) = sizes {
            if n == 2 {
                base.0 = Some(average);
            }
            println!(
                "writers/bytes_per_diff/{n}: {average:.1} B ({}; the first patch after \
                 merging: {first} B)",
                versus(average, base.0)
            );
        }
        let mut measured = (0u64, Duration::ZERO);
        g.throughput(Throughput::Elements(STREAM_DIFFS));
        g.sampling_mode(SamplingMode::Flat);
        g.bench_function(BenchmarkId::new("ingest_and_merge", n), |b| {
            let s = setup.get_or_insert_with(|| rt.block_on(stream(n, &clock)));
            let database = s.root.database().unwrap();
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (reader, _dir) = rt.block_on(database_peer(&clock, database));
                    // Not timed: the root's membership entries, so that it counts every writer.
                    rt.block_on(reader.ingest(s.membership.clone())).unwrap();
                    assert_eq!(reader.writers().unwrap().len(), n);
                    let feeds = s.feeds.clone();
                    let start = Instant::now();
                    let merged = rt.block_on(async {
                        store_all(&reader, feeds).await;
                        reader.merge().await.unwrap()
                    });
                    total += start.elapsed();
                    // Diffs only: the membership entries were merged before.
                    assert_eq!(merged, STREAM_DIFFS);
                    rt.block_on(reader.close());
                }
                measured.0 += iters * STREAM_DIFFS;
                measured.1 += total;
                total
            })
        });
        if measured.0 > 0 {
            let rate = measured.0 as f64 / measured.1.as_secs_f64();
            if n == 2 {
                base.1 = Some(rate);
            }
            println!(
                "writers/ingest_and_merge/{n}: {rate:.0} diffs/s ({})",
                versus(rate, base.1)
            );
        }
    }
    g.finish();
}

criterion_group!(
    benches,
    local_put,
    merge_in_order,
    offline_pair,
    late_diff,
    writers
);
criterion_main!(benches);
