//! Criterion benchmarks of the feed store, each measured against a raw-redb baseline in the
//! same run (the machine is noisy: compare ratios, not absolute figures).
//!
//! Every entry is 100 bytes. Groups:
//!
//! 1. `append_batch_durable`: durable appends of 1,000-entry batches vs one durable redb write
//!    transaction per 1,000 rows.
//! 2. `append_single_durable`: one awaited durable append at a time, 64 tasks appending single
//!    entries concurrently to the same feed (group commit), and one row per durable redb commit.
//! 3. `ingest`: verifying and ingesting 100,000 replicated entries (chunks of 1,000) into a fresh
//!    replica vs inserting the same rows in durable redb transactions of 1,000.
//! 4. `open`: opening a folder holding a feed of 1,000,000 entries vs opening a redb file of
//!    1,000,000 rows (and, as a control, raw redb opening the store's own file).
//!
//! Run with `cargo bench -p multibee-feed --bench feed`.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use multibee_feed::{Batch, DB_FILE, Feed, Options, Store, SyncMode};
use redb::{Database, Durability, TableDefinition};
use tokio::runtime::Runtime;

/// The raw baseline's table: the same key and value types as the store's entries table.
const RAW: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("entries-1");
const ENTRY_BYTES: usize = 100;
const BATCH: usize = 1_000;
const CONCURRENCY: usize = 64;
const INGEST_ENTRIES: u64 = 100_000;
const OPEN_ENTRIES: u64 = 1_000_000;
const OPEN_BUILD_BATCH: u64 = 10_000;

/// Entry `i`: 100 bytes, distinct per index.
fn entry(i: u64) -> Vec<u8> {
    let mut e = vec![0u8; ENTRY_BYTES];
    e[..8].copy_from_slice(&i.to_le_bytes());
    for (j, b) in e[8..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(j as u8);
    }
    e
}

fn entries(range: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    range.map(entry).collect()
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn open_store(dir: &Path, sync: SyncMode) -> Store {
    Store::open_with(dir, Options::default().sync(sync)).expect("open store")
}

/// A fresh redb database with the baseline table created.
fn raw_db(dir: &Path) -> Database {
    let db = Database::create(dir.join("raw.redb")).expect("create redb");
    let txn = db.begin_write().expect("begin_write");
    txn.open_table(RAW).expect("open table");
    txn.commit().expect("commit");
    db
}

/// Inserts rows `(0, start..)` with the given values in one write transaction.
fn raw_insert(db: &Database, start: u64, values: &[Vec<u8>], durability: Durability) {
    let mut txn = db.begin_write().expect("begin_write");
    txn.set_durability(durability).expect("set_durability");
    {
        let mut table = txn.open_table(RAW).expect("open table");
        for (i, v) in (start..).zip(values) {
            table.insert((0, i), v.as_slice()).expect("insert");
        }
    }
    txn.commit().expect("commit");
}

fn append_batch_durable(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("append_batch_durable");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(BATCH as u64));

    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path(), SyncMode::Durable);
    let feed = rt.block_on(store.create_feed()).expect("create feed");
    group.bench_function("feed", |b| {
        b.iter_custom(|iters| {
            let start = feed.length();
            let batches: Vec<Vec<Vec<u8>>> = (0..iters)
                .map(|k| entries(start + k * BATCH as u64..start + (k + 1) * BATCH as u64))
                .collect();
            rt.block_on(async {
                let t = Instant::now();
                for batch in batches {
                    black_box(feed.append_batch(batch).await.expect("append_batch"));
                }
                t.elapsed()
            })
        });
    });
    drop((feed, store));

    let raw_dir = tempfile::tempdir().expect("tempdir");
    let db = raw_db(raw_dir.path());
    let mut next = 0u64;
    group.bench_function("raw_redb", |b| {
        b.iter_custom(|iters| {
            let batches: Vec<Vec<Vec<u8>>> = (0..iters)
                .map(|k| entries(next + k * BATCH as u64..next + (k + 1) * BATCH as u64))
                .collect();
            let t = Instant::now();
            for batch in &batches {
                raw_insert(&db, next, batch, Durability::Immediate);
                next += BATCH as u64;
            }
            t.elapsed()
        });
    });
    group.finish();
}

fn append_single_durable(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("append_single_durable");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sampling_mode(SamplingMode::Flat);

    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path(), SyncMode::Durable);
    let feed = rt.block_on(store.create_feed()).expect("create feed");

    group.throughput(Throughput::Elements(1));
    group.bench_function("append_one_durable", |b| {
        b.iter_custom(|iters| {
            let start = feed.length();
            let items = entries(start..start + iters);
            rt.block_on(async {
                let t = Instant::now();
                for e in items {
                    black_box(feed.append(e).await.expect("append"));
                }
                t.elapsed()
            })
        });
    });

    // One iteration is one append by each of 64 tasks; every task makes `iters` appends in a
    // row, so the writer always has up to 64 appends waiting.
    group.throughput(Throughput::Elements(CONCURRENCY as u64));
    group.bench_function("append_concurrent_64", |b| {
        b.iter_custom(|iters| {
            let start = feed.length();
            let per_task: Vec<Vec<Vec<u8>>> = (0..CONCURRENCY as u64)
                .map(|t| entries(start + t * iters..start + (t + 1) * iters))
                .collect();
            rt.block_on(async {
                let t = Instant::now();
                let tasks: Vec<_> = per_task
                    .into_iter()
                    .map(|items| {
                        let feed: Feed = feed.clone();
                        tokio::spawn(async move {
                            for e in items {
                                black_box(feed.append(e).await.expect("append"));
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.expect("append task");
                }
                t.elapsed()
            })
        });
    });
    drop((feed, store));

    let raw_dir = tempfile::tempdir().expect("tempdir");
    let db = raw_db(raw_dir.path());
    let mut next = 0u64;
    group.throughput(Throughput::Elements(1));
    group.bench_function("raw_redb_one_per_commit", |b| {
        b.iter_custom(|iters| {
            let items = entries(next..next + iters);
            let t = Instant::now();
            for e in &items {
                raw_insert(&db, next, std::slice::from_ref(e), Durability::Immediate);
                next += 1;
            }
            t.elapsed()
        });
    });
    group.finish();
}

fn ingest(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("ingest");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(INGEST_ENTRIES));

    // The writer's feed and the proofs of its chunks, built once.
    let writer_dir = tempfile::tempdir().expect("tempdir");
    let chunks: Vec<Batch> = {
        let writer = open_store(writer_dir.path(), SyncMode::Relaxed);
        let feed = rt.block_on(writer.create_feed()).expect("create feed");
        rt.block_on(async {
            for a in (0..INGEST_ENTRIES).step_by(BATCH) {
                feed.append_batch(entries(a..a + BATCH as u64))
                    .await
                    .expect("append_batch");
            }
        });
        (0..INGEST_ENTRIES)
            .step_by(BATCH)
            .map(|a| feed.proof(a..a + BATCH as u64).expect("proof"))
            .collect()
    };
    let key = chunks[0].feed;

    group.bench_function("feed", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().expect("tempdir");
                let store = open_store(dir.path(), SyncMode::Durable);
                let replica = rt.block_on(store.replica(key)).expect("replica");
                let batches = chunks.clone();
                total += rt.block_on(async {
                    let t = Instant::now();
                    for batch in batches {
                        black_box(replica.ingest(batch).await.expect("ingest"));
                    }
                    t.elapsed()
                });
                assert_eq!(replica.length(), INGEST_ENTRIES);
            }
            total
        });
    });

    group.bench_function("raw_redb", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().expect("tempdir");
                let db = raw_db(dir.path());
                let batches: Vec<Vec<Vec<u8>>> =
                    chunks.iter().map(|batch| batch.entries.clone()).collect();
                let t = Instant::now();
                for (k, batch) in batches.iter().enumerate() {
                    raw_insert(&db, (k * BATCH) as u64, batch, Durability::Immediate);
                }
                total += t.elapsed();
            }
            total
        });
    });
    group.finish();
}

fn open(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("open");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    // A folder holding one feed of 1,000,000 entries, and a redb file of as many rows.
    let dir = tempfile::tempdir().expect("tempdir");
    let key = {
        let store = open_store(dir.path(), SyncMode::Relaxed);
        let feed = rt.block_on(store.create_feed()).expect("create feed");
        rt.block_on(async {
            for a in (0..OPEN_ENTRIES).step_by(OPEN_BUILD_BATCH as usize) {
                feed.append_batch(entries(a..a + OPEN_BUILD_BATCH))
                    .await
                    .expect("append_batch");
            }
        });
        assert_eq!(feed.length(), OPEN_ENTRIES);
        feed.key()
    };
    let raw_dir = tempfile::tempdir().expect("tempdir");
    {
        let db = raw_db(raw_dir.path());
        for a in (0..OPEN_ENTRIES).step_by(OPEN_BUILD_BATCH as usize) {
            raw_insert(&db, a, &entries(a..a + OPEN_BUILD_BATCH), Durability::None);
        }
        raw_insert(&db, OPEN_ENTRIES, &[], Durability::Immediate);
    }
    // Both files are on disk before timing starts, so background writeback of the build does
    // not land in either measurement.
    let feed_file = dir.path().join(DB_FILE);
    let raw_file = raw_dir.path().join("raw.redb");
    for file in [&feed_file, &raw_file] {
        std::fs::File::open(file)
            .and_then(|f| f.sync_all())
            .expect("sync the built file");
    }

    group.bench_function("feed_1m", |b| {
        b.iter(|| {
            let store = Store::open(dir.path()).expect("open store");
            let feed = store.feed(&key).expect("feed");
            assert_eq!(black_box(feed.length()), OPEN_ENTRIES);
        });
    });
    group.bench_function("raw_redb_1m", |b| {
        b.iter(|| {
            let db = Database::create(&raw_file).expect("open redb");
            black_box(db);
        });
    });
    // A control: raw redb opening the store's own file, so the store's overhead on top of
    // redb is measured on identical bytes.
    group.bench_function("raw_redb_1m_feed_file", |b| {
        b.iter(|| {
            let db = Database::create(&feed_file).expect("open redb");
            black_box(db);
        });
    });
    group.finish();
}

criterion_group!(
    benches,
    append_batch_durable,
    append_single_durable,
    ingest,
    open
);
criterion_main!(benches);
