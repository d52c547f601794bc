#![allow(clippy::unwrap_used)]
//! Criterion benchmarks of the bee, each measured against a raw-redb baseline in the same run
//! (the machine is noisy: compare ratios, not absolute figures).
//!
//! The data set is 100,000 keys of 16 bytes (`key-000000000042`) with 32-byte values, inserted
//! in a shuffled order. The raw baseline is a fresh redb database with one
//! `TableDefinition<&[u8], &[u8]>`, holding the same keys and values, written with the same
//! transaction pattern. Groups:
//!
//! 1. `put_single_durable`: one awaited durable `Bee::put` at a time vs one insert per durable
//!    redb commit.
//! 2. `put_batch_1000`: all 100,000 keys into a fresh bee, in durable `Bee::batch`es of 1,000,
//!    vs 1,000 inserts per durable redb commit.
//! 3. `get`: random gets of existing keys (`Bee::get`) vs raw redb gets opening one read
//!    transaction per get (as `Bee::get` does), and vs raw gets sharing one read transaction.
//! 4. `range_full`: a full scan of the 100,000 keys (`Bee::range(&RangeOptions::all())`) vs
//!    raw redb `table.iter()` (borrowing, and copying every key and value like the bee does).
//! 5. `range_limit_10`: queries `{gte: random existing key, limit: 10}` vs raw redb
//!    `range(key..).take(10)`, one read transaction per query in both.
//! 6. `checkout_get`: after 100,000 puts (version `v1`) and 100,000 overwrites of random keys,
//!    random gets at `Bee::checkout(v1)` vs at the head (and raw redb gets of the final state).
//! 7. `bytes_per_put` (printed, not timed): the size of the store's redb file after 100,000
//!    batched durable puts, per put, vs the raw redb file of the same rows.
//!
//! Run with `cargo bench -p multibee-bee --bench bee`.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use multibee_bee::{BatchOp, Bee, RangeOptions};
use multibee_feed::{DB_FILE, Options, Store, SyncMode};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use tokio::runtime::Runtime;

/// The raw baseline's table.
const RAW: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raw");
const RAW_FILE: &str = "raw.redb";
const KEYS: usize = 100_000;
const BATCH: usize = 1_000;
/// How many random probes (gets, range starts) are drawn; timed loops cycle through them.
const PROBES: usize = 100_000;

type Key = [u8; 16];
type Value = [u8; 32];
type Row = (Key, Value);

/// Key `i`: 16 bytes, `key-` and 12 digits, so key order is index order.
fn key(i: usize) -> Key {
    let mut k = [0u8; 16];
    k.copy_from_slice(format!("key-{i:012}").as_bytes());
    k
}

/// The value of key `i` written in round `round` (0 for the first put): 32 bytes.
fn value(i: usize, round: u64) -> Value {
    let mut v = [0u8; 32];
    v[..8].copy_from_slice(&(i as u64).to_le_bytes());
    v[8..16].copy_from_slice(&round.to_le_bytes());
    for (j, b) in v[16..].iter_mut().enumerate() {
        *b = (i as u8)
            .wrapping_mul(31)
            .wrapping_add(round as u8)
            .wrapping_add(j as u8);
    }
    v
}

/// Every key once, in a shuffled order, cut into batches of 1,000.
fn initial_batches() -> Vec<Vec<Row>> {
    let mut order: Vec<usize> = (0..KEYS).collect();
    fastrand::Rng::with_seed(1).shuffle(&mut order);
    order
        .chunks(BATCH)
        .map(|c| c.iter().map(|&i| (key(i), value(i, 0))).collect())
        .collect()
}

/// 100,000 overwrites of random existing keys (drawn with replacement) in batches of 1,000,
/// and the round of the value each key holds afterwards.
fn overwrite_batches() -> (Vec<Vec<Row>>, Vec<u64>) {
    let mut rng = fastrand::Rng::with_seed(2);
    let mut rounds = vec![0u64; KEYS];
    let batches = (0..KEYS / BATCH)
        .map(|b| {
            (0..BATCH)
                .map(|j| {
                    let i = rng.usize(0..KEYS);
                    let round = (b * BATCH + j + 1) as u64;
                    rounds[i] = round;
                    (key(i), value(i, round))
                })
                .collect()
        })
        .collect();
    (batches, rounds)
}

/// Random existing key indices.
fn probes(seed: u64) -> Vec<usize> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..PROBES).map(|_| rng.usize(0..KEYS)).collect()
}

fn ops(batch: &[Row]) -> Vec<BatchOp> {
    batch
        .iter()
        .map(|(k, v)| BatchOp::Put(k.to_vec(), v.to_vec()))
        .collect()
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A fresh store in `dir` with one feed and its bee.
fn new_bee(rt: &Runtime, dir: &Path, sync: SyncMode) -> Bee {
    rt.block_on(async {
        let store = Store::open_with(dir, Options::default().sync(sync)).expect("open store");
        let feed = store.create_feed().await.expect("create feed");
        Bee::open(feed).await.expect("open bee")
    })
}

/// Writes every batch into the bee, one `Bee::batch` each.
fn fill_bee(rt: &Runtime, bee: &Bee, batches: &[Vec<Row>]) {
    rt.block_on(async {
        for batch in batches {
            bee.batch(ops(batch)).await.expect("batch");
        }
    });
}

/// A fresh redb database in `dir` with the baseline table created.
fn raw_db(dir: &Path) -> Database {
    let db = Database::create(dir.join(RAW_FILE)).expect("create redb");
    let txn = db.begin_write().expect("begin_write");
    txn.open_table(RAW).expect("open table");
    txn.commit().expect("commit");
    db
}

/// Inserts rows in one write transaction.
fn raw_insert(db: &Database, rows: &[Row], durability: Durability) {
    let mut txn = db.begin_write().expect("begin_write");
    txn.set_durability(durability).expect("set_durability");
    {
        let mut table = txn.open_table(RAW).expect("open table");
        for (k, v) in rows {
            table.insert(k.as_slice(), v.as_slice()).expect("insert");
        }
    }
    txn.commit().expect("commit");
}

/// Writes every batch into the raw database without syncing, as a relaxed store does, then
/// makes it all durable.
fn fill_raw(db: &Database, batches: &[Vec<Row>]) {
    for batch in batches {
        raw_insert(db, batch, Durability::None);
    }
    raw_insert(db, &[], Durability::Immediate);
}

/// A raw get as a user would write it: one read transaction per get, the value copied out.
fn raw_get(db: &Database, k: &[u8]) -> Option<Vec<u8>> {
    let txn = db.begin_read().expect("begin_read");
    let table = txn.open_table(RAW).expect("open table");
    table.get(k).expect("get").map(|v| v.value().to_vec())
}

fn put_single_durable(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("put_single_durable");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(1));
    let rows: Vec<Row> = initial_batches().concat();

    let dir = tempfile::tempdir().expect("tempdir");
    let bee = new_bee(&rt, dir.path(), SyncMode::Durable);
    let mut next = 0usize;
    group.bench_function("bee_put", |b| {
        b.iter_custom(|iters| {
            let items: Vec<Row> = (0..iters as usize)
                .map(|j| rows[(next + j) % KEYS])
                .collect();
            next += iters as usize;
            rt.block_on(async {
                let t = Instant::now();
                for (k, v) in items {
                    black_box(bee.put(k, v).await.expect("put"));
                }
                t.elapsed()
            })
        });
    });
    let bee_puts = next;
    drop(bee);

    let raw_dir = tempfile::tempdir().expect("tempdir");
    let db = raw_db(raw_dir.path());
    let mut next = 0usize;
    group.bench_function("raw_redb_one_per_commit", |b| {
        b.iter_custom(|iters| {
            let items: Vec<Row> = (0..iters as usize)
                .map(|j| rows[(next + j) % KEYS])
                .collect();
            next += iters as usize;
            let t = Instant::now();
            for row in &items {
                raw_insert(&db, std::slice::from_ref(row), Durability::Immediate);
            }
            t.elapsed()
        });
    });
    group.finish();
    // Not a timing: the file sizes after these single durable puts (warm-up included).
    let bee_size = file_size(&dir.path().join(DB_FILE));
    let raw_size = file_size(&raw_dir.path().join(RAW_FILE));
    println!(
        "put_single_durable: bee file {:.1} B/put after {bee_puts} single puts, raw redb file \
         {:.1} B/put after {next} single commits (hyperbee: ~277 B per single put)",
        bee_size as f64 / bee_puts as f64,
        raw_size as f64 / next as f64,
    );
}

fn put_batch(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("put_batch_1000");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(KEYS as u64));
    let batches = initial_batches();

    group.bench_function("bee_batch", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().expect("tempdir");
                let bee = new_bee(&rt, dir.path(), SyncMode::Durable);
                let all: Vec<Vec<BatchOp>> = batches.iter().map(|b| ops(b)).collect();
                total += rt.block_on(async {
                    let t = Instant::now();
                    for ops in all {
                        black_box(bee.batch(ops).await.expect("batch"));
                    }
                    t.elapsed()
                });
                assert_eq!(bee.version().expect("version"), KEYS as u64);
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
                let t = Instant::now();
                for batch in &batches {
                    raw_insert(&db, batch, Durability::Immediate);
                }
                total += t.elapsed();
            }
            total
        });
    });
    group.finish();
}

/// Groups 3 to 5, on one bee and one raw database of the 100,000 keys, built once.
fn reads(c: &mut Criterion) {
    let rt = runtime();
    let batches = initial_batches();
    let dir = tempfile::tempdir().expect("tempdir");
    let bee = new_bee(&rt, dir.path(), SyncMode::Relaxed);
    fill_bee(&rt, &bee, &batches);
    assert_eq!(bee.version().unwrap(), KEYS as u64);
    let raw_dir = tempfile::tempdir().expect("tempdir");
    let db = raw_db(raw_dir.path());
    fill_raw(&db, &batches);
    let keys: Vec<Key> = (0..KEYS).map(key).collect();
    let probes = probes(3);
    for &i in probes.iter().take(1_000) {
        let want = Some(value(i, 0).to_vec());
        assert_eq!(bee.get(keys[i]).unwrap(), want);
        assert_eq!(raw_get(&db, &keys[i]), want);
    }

    // 3. Random gets.
    let mut group = c.benchmark_group("get");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(1));
    let mut next = 0usize;
    group.bench_function("bee_get", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                let k = &keys[probes[next % PROBES]];
                next += 1;
                black_box(bee.get(k).unwrap().unwrap());
            }
            t.elapsed()
        });
    });
    let mut next = 0usize;
    group.bench_function("raw_redb_txn_per_get", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                let k = &keys[probes[next % PROBES]];
                next += 1;
                black_box(raw_get(&db, k).unwrap());
            }
            t.elapsed()
        });
    });
    let mut next = 0usize;
    group.bench_function("raw_redb_one_txn", |b| {
        b.iter_custom(|iters| {
            let txn = db.begin_read().unwrap();
            let table = txn.open_table(RAW).unwrap();
            let t = Instant::now();
            for _ in 0..iters {
                let k = &keys[probes[next % PROBES]];
                next += 1;
                black_box(table.get(k.as_slice()).unwrap().unwrap().value().to_vec());
            }
            t.elapsed()
        });
    });
    group.finish();

    // 4. Full scans.
    let mut group = c.benchmark_group("range_full");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(KEYS as u64));
    group.bench_function("bee_range_all", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for entry in bee.range(&RangeOptions::all()).unwrap() {
                black_box(entry.unwrap());
                n += 1;
            }
            assert_eq!(n, KEYS);
        });
    });
    group.bench_function("raw_redb_iter", |b| {
        b.iter(|| {
            let txn = db.begin_read().unwrap();
            let table = txn.open_table(RAW).unwrap();
            let mut n = 0usize;
            for row in table.iter().unwrap() {
                let (k, v) = row.unwrap();
                black_box((k.value(), v.value()));
                n += 1;
            }
            assert_eq!(n, KEYS);
        });
    });
    // The bee hands out owned keys and values: the same scan, copying both.
    group.bench_function("raw_redb_iter_owned", |b| {
        b.iter(|| {
            let txn = db.begin_read().unwrap();
            let table = txn.open_table(RAW).unwrap();
            let mut n = 0usize;
            for row in table.iter().unwrap() {
                let (k, v) = row.unwrap();
                black_box((k.value().to_vec(), v.value().to_vec()));
                n += 1;
            }
            assert_eq!(n, KEYS);
        });
    });
    group.finish();

    // 5. Short ranges from a random existing key.
    let mut group = c.benchmark_group("range_limit_10");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(1));
    let starts = &probes[..1_000];
    let mut next = 0usize;
    group.bench_function("bee_range_gte_limit_10", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                let i = starts[next % starts.len()];
                next += 1;
                let mut n = 0usize;
                for entry in bee
                    .range(&RangeOptions::all().gte(keys[i]).limit(10))
                    .unwrap()
                {
                    black_box(entry.unwrap());
                    n += 1;
                }
                assert_eq!(n, 10.min(KEYS - i));
            }
            t.elapsed()
        });
    });
    let mut next = 0usize;
    group.bench_function("raw_redb_range_take_10", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                let i = starts[next % starts.len()];
                next += 1;
                let txn = db.begin_read().unwrap();
                let table = txn.open_table(RAW).unwrap();
                let mut n = 0usize;
                for row in table.range(keys[i].as_slice()..).unwrap().take(10) {
                    let (k, v) = row.unwrap();
                    black_box((k.value().to_vec(), v.value().to_vec()));
                    n += 1;
                }
                assert_eq!(n, 10.min(KEYS - i));
            }
            t.elapsed()
        });
    });
    group.finish();
}

/// 6. Gets at an old checkout vs at the head, after every key was put and 100,000 random keys
///    were overwritten.
fn checkout_get(c: &mut Criterion) {
    let rt = runtime();
    let initial = initial_batches();
    let (overwrites, rounds) = overwrite_batches();
    let dir = tempfile::tempdir().expect("tempdir");
    let bee = new_bee(&rt, dir.path(), SyncMode::Relaxed);
    fill_bee(&rt, &bee, &initial);
    let v1 = bee.version().unwrap();
    assert_eq!(v1, KEYS as u64);
    fill_bee(&rt, &bee, &overwrites);
    assert_eq!(bee.version().unwrap(), 2 * KEYS as u64);
    let old = bee.checkout(v1).unwrap();
    let raw_dir = tempfile::tempdir().expect("tempdir");
    let db = raw_db(raw_dir.path());
    fill_raw(&db, &initial);
    fill_raw(&db, &overwrites);

    let keys: Vec<Key> = (0..KEYS).map(key).collect();
    let overwritten = rounds.iter().filter(|&&r| r > 0).count();
    println!(
        "checkout_get: {overwritten} of {KEYS} keys overwritten after v1 = {v1} (head version {})",
        bee.version().unwrap()
    );
    // Every key reads its first value at v1 and its last one at the head.
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(
            old.get(k).unwrap(),
            Some(value(i, 0).to_vec()),
            "key {i} at v1"
        );
        let last = Some(value(i, rounds[i]).to_vec());
        assert_eq!(bee.get(k).unwrap(), last, "key {i} at the head");
        assert_eq!(raw_get(&db, k), last, "key {i} in raw redb");
    }
    assert_eq!(old.range(&RangeOptions::all()).unwrap().count(), KEYS);
    assert_eq!(bee.range(&RangeOptions::all()).unwrap().count(), KEYS);

    let probes = probes(4);
    let mut group = c.benchmark_group("checkout_get");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(1));
    for (name, bee) in [("bee_get_head", &bee), ("bee_get_checkout_v1", &old)] {
        let mut next = 0usize;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    let k = &keys[probes[next % PROBES]];
                    next += 1;
                    black_box(bee.get(k).unwrap().unwrap());
                }
                t.elapsed()
            });
        });
    }
    let mut next = 0usize;
    group.bench_function("raw_redb_txn_per_get", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                let k = &keys[probes[next % PROBES]];
                next += 1;
                black_box(raw_get(&db, k).unwrap());
            }
            t.elapsed()
        });
    });
    group.finish();
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).expect("file metadata").len()
}

/// Opens a redb file whose previous owner may still be closing it.
fn reopen(path: &Path) -> Database {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Database::open(path) {
            Ok(db) => return db,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("reopen {}: {e}", path.display()),
        }
    }
}

/// Prints the file size per put, and where the bytes are, of one redb file.
fn report_file(label: &str, path: &Path) {
    let size = file_size(path);
    let mut db = reopen(path);
    {
        let txn = db.begin_read().unwrap();
        let mut tables: Vec<_> = txn
            .list_tables()
            .unwrap()
            .map(|h| txn.open_untyped_table(h).unwrap())
            .collect();
        tables.sort_by_key(|t| redb::TableHandle::name(t).to_string());
        for table in tables {
            let s = table.stats().unwrap();
            println!(
                "bytes_per_put: {label:>8} table {:<16} stored {:>6.1} B/put, metadata {:>5.1} B/put, \
                 fragmented {:>5.1} B/put, {} leaf + {} branch pages, height {}",
                redb::TableHandle::name(&table),
                s.stored_bytes() as f64 / KEYS as f64,
                s.metadata_bytes() as f64 / KEYS as f64,
                s.fragmented_bytes() as f64 / KEYS as f64,
                s.leaf_pages(),
                s.branch_pages(),
                s.tree_height(),
            );
        }
    }
    let stats = db.begin_write().unwrap().stats().unwrap();
    println!(
        "bytes_per_put: {label:>8} all tables: stored {:.1} B/put, metadata {:.1} B/put, \
         fragmented {:.1} B/put, {} pages of {} B allocated ({:.1} B/put)",
        stats.stored_bytes() as f64 / KEYS as f64,
        stats.metadata_bytes() as f64 / KEYS as f64,
        stats.fragmented_bytes() as f64 / KEYS as f64,
        stats.allocated_pages(),
        stats.page_size(),
        (stats.allocated_pages() * stats.page_size() as u64) as f64 / KEYS as f64,
    );
    db.compact().unwrap();
    drop(db);
    println!(
        "bytes_per_put: {label:>8} file {size} B = {:.1} B/put; after compaction {:.1} B/put",
        size as f64 / KEYS as f64,
        file_size(path) as f64 / KEYS as f64,
    );
}

/// 7. Bytes on disk per put (printed; not a timing).
fn bytes_per_put(_c: &mut Criterion) {
    let rt = runtime();
    let batches = initial_batches();

    let dir = tempfile::tempdir().expect("tempdir");
    {
        let bee = new_bee(&rt, dir.path(), SyncMode::Durable);
        fill_bee(&rt, &bee, &batches);
        assert_eq!(bee.version().unwrap(), KEYS as u64);
    }
    let raw_dir = tempfile::tempdir().expect("tempdir");
    {
        let db = raw_db(raw_dir.path());
        for batch in &batches {
            raw_insert(&db, batch, Durability::Immediate);
        }
    }
    let bee_file = dir.path().join(DB_FILE);
    let raw_file = raw_dir.path().join(RAW_FILE);
    let (bee_size, raw_size) = (file_size(&bee_file), file_size(&raw_file));
    println!(
        "bytes_per_put: after {KEYS} puts of 16 B keys and 32 B values in durable batches of \
         {BATCH}: bee file {:.1} B/put, raw redb file {:.1} B/put, ratio {:.2}x \
         (hyperbee: ~277 B per single put)",
        bee_size as f64 / KEYS as f64,
        raw_size as f64 / KEYS as f64,
        bee_size as f64 / raw_size as f64,
    );
    report_file("bee", &bee_file);
    report_file("raw_redb", &raw_file);
}

criterion_group!(
    benches,
    put_single_durable,
    put_batch,
    reads,
    checkout_get,
    bytes_per_put
);
criterion_main!(benches);
