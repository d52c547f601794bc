//! The measurements, each with its baseline taken in the same run.

use std::time::{Duration, Instant};

use multibee_bee::{BatchOp as BeeOp, Bee, RangeOptions};
use multibee_feed::{Feed, Options as FeedOptions, Store, SyncMode};
use multibee_multibee::{BatchOp, ManualClock, MultiBee, Options, Value};
use redb::{Database, Durability, ReadableDatabase, TableDefinition};
use serde_json::json;
use tokio::runtime::Runtime;

use crate::Scale;

/// One figure: a value and, where there is one, its baseline from the same run.
pub struct Figure {
    name: String,
    unit: &'static str,
    value: f64,
    baseline: Option<(String, f64)>,
}

impl Figure {
    pub fn new(name: &str, unit: &'static str, value: f64) -> Figure {
        Figure {
            name: name.to_string(),
            unit,
            value,
            baseline: None,
        }
    }

    pub fn against(mut self, name: &str, value: f64) -> Figure {
        self.baseline = Some((name.to_string(), value));
        self
    }

    fn ratio(&self) -> Option<f64> {
        self.baseline.as_ref().map(|(_, b)| self.value / b)
    }

    /// `{"name","unit","value","baseline_name","baseline","ratio"}`.
    pub fn json(&self) -> String {
        json!({
            "name": self.name,
            "unit": self.unit,
            "value": round(self.value),
            "baseline_name": self.baseline.as_ref().map(|(n, _)| n),
            "baseline": self.baseline.as_ref().map(|(_, b)| round(*b)),
            "ratio": self.ratio().map(|r| (r * 1000.0).round() / 1000.0),
        })
        .to_string()
    }

    /// A line for people.
    pub fn line(&self) -> String {
        let digits = if self.value < 100.0 { 2 } else { 0 };
        let mut line = format!("{:<34} {:>12.digits$} {}", self.name, self.value, self.unit);
        if let (Some((name, b)), Some(r)) = (&self.baseline, self.ratio()) {
            line.push_str(&format!("   vs {name} {b:.0} {}: {r:.2}", self.unit));
        }
        line
    }
}

/// Rounded to a tenth, or to a thousandth for small values (milliseconds).
fn round(x: f64) -> f64 {
    let scale = if x.abs() < 100.0 { 1000.0 } else { 10.0 };
    (x * scale).round() / scale
}

fn rt() -> Runtime {
    runtime(1)
}

/// A runtime with `workers` worker threads.
pub fn runtime(workers: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

fn per_second(n: u64, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64().max(1e-9)
}

/// A 100-byte entry.
fn entry(i: u64) -> Vec<u8> {
    let mut e = format!("entry-{i:016}-").into_bytes();
    e.resize(100, b'.');
    e
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:012}").into_bytes()
}

/// A spread of `0..n` (each once) for random access.
fn shuffled(i: u64, n: u64) -> u64 {
    (i.wrapping_mul(7_919) + 13) % n
}

fn doc(i: u64) -> Value {
    Value::Json(json!({"n": i, "s": format!("{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15))}))
}

const U64_ROWS: TableDefinition<u64, &[u8]> = TableDefinition::new("rows");
const KV_ROWS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

/// Raw redb inserting `n` rows of `row(i)` in transactions of 1,000, durable or not: the
/// baseline of a layer that writes the same rows. Returns rows/s.
fn raw_redb_inserts(n: u64, durable: bool, keyed: bool) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("raw.redb")).unwrap();
    let start = Instant::now();
    let mut i = 0;
    while i < n {
        let end = (i + 1_000).min(n);
        let mut txn = db.begin_write().unwrap();
        if !durable {
            txn.set_durability(Durability::None).unwrap();
        }
        {
            if keyed {
                let mut t = txn.open_table(KV_ROWS).unwrap();
                // The bee's order: keys spread over the range.
                for j in i..end {
                    t.insert(key(shuffled(j, n)).as_slice(), entry(j).as_slice())
                        .unwrap();
                }
            } else {
                let mut t = txn.open_table(U64_ROWS).unwrap();
                for j in i..end {
                    t.insert(j, entry(j).as_slice()).unwrap();
                }
            }
        }
        txn.commit().unwrap();
        i = end;
    }
    per_second(n, start.elapsed())
}

/// Appends `n` entries to `feed` in batches of 1,000.
async fn fill(feed: &Feed, n: u64) {
    let mut i = 0;
    while i < n {
        let end = (i + 1_000).min(n);
        feed.append_batch((i..end).map(entry).collect())
            .await
            .unwrap();
        i = end;
    }
}

/// Verifies and stores all of `feed` into a replica in `store`, `chunk` entries at a time;
/// entries/s.
async fn copy_in_process(feed: &Feed, store: &Store, chunk: u64) -> f64 {
    let replica = store.replica(feed.key()).await.unwrap();
    let n = feed.length();
    let start = Instant::now();
    let mut at = 0;
    while at < n {
        let end = (at + chunk).min(n);
        replica.ingest(feed.proof(at..end).unwrap()).await.unwrap();
        at = end;
    }
    per_second(n, start.elapsed())
}

pub fn feed_append(s: &Scale) -> Vec<Figure> {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let rate = rt.block_on(async {
        let feed = store.create_feed().await.unwrap();
        let start = Instant::now();
        fill(&feed, s.n).await;
        per_second(s.n, start.elapsed())
    });
    let raw = raw_redb_inserts(s.n, true, false);
    vec![
        Figure::new("feed/append-batch-1000", "entries/s", rate)
            .against("redb/insert-batch-1000", raw),
    ]
}

pub fn feed_ingest(s: &Scale) -> Vec<Figure> {
    let rt = rt();
    let (dir_w, dir_r) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let writer = Store::open(dir_w.path()).unwrap();
    let reader = Store::open(dir_r.path()).unwrap();
    let rate = rt.block_on(async {
        let feed = writer.create_feed().await.unwrap();
        fill(&feed, s.n).await;
        copy_in_process(&feed, &reader, 1_000).await
    });
    let raw = raw_redb_inserts(s.n, true, false);
    vec![
        Figure::new("feed/verify-ingest", "entries/s", rate).against("redb/insert-batch-1000", raw),
    ]
}

/// A bee of `n` keys written in batches of 1,000 with `sync`; the bee and its put rate.
fn bee_of(rt: &Runtime, dir: &std::path::Path, n: u64, sync: SyncMode) -> (Bee, f64) {
    let store = Store::open_with(dir, FeedOptions::default().sync(sync)).unwrap();
    rt.block_on(async {
        let bee = Bee::open(store.create_feed().await.unwrap()).await.unwrap();
        let start = Instant::now();
        let mut i = 0;
        while i < n {
            let end = (i + 1_000).min(n);
            let ops = (i..end)
                .map(|j| BeeOp::Put(key(shuffled(j, n)), entry(j)))
                .collect();
            bee.batch(ops).await.unwrap();
            i = end;
        }
        (bee, per_second(n, start.elapsed()))
    })
}

fn bee_put(s: &Scale, sync: SyncMode, name: &str) -> Vec<Figure> {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let (_bee, rate) = bee_of(&rt, dir.path(), s.n, sync);
    let raw = raw_redb_inserts(s.n, sync == SyncMode::Durable, true);
    let raw_name = match sync {
        SyncMode::Durable => "redb/insert-keyed-batch-1000",
        _ => "redb/insert-keyed-batch-1000-no-fsync",
    };
    vec![Figure::new(name, "puts/s", rate).against(raw_name, raw)]
}

pub fn bee_put_durable(s: &Scale) -> Vec<Figure> {
    bee_put(s, SyncMode::Durable, "bee/put-batch-1000")
}

pub fn bee_put_relaxed(s: &Scale) -> Vec<Figure> {
    bee_put(s, SyncMode::Relaxed, "bee/put-batch-1000-relaxed")
}

/// A raw redb table of the same keyed rows as a bee of `n` keys.
fn raw_kv(n: u64) -> (tempfile::TempDir, Database) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("raw.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(KV_ROWS).unwrap();
        for j in 0..n {
            t.insert(key(j).as_slice(), entry(j).as_slice()).unwrap();
        }
    }
    txn.commit().unwrap();
    (dir, db)
}

pub fn bee_get(s: &Scale) -> Vec<Figure> {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let (bee, _) = bee_of(&rt, dir.path(), s.n, SyncMode::Durable);
    let start = Instant::now();
    for i in 0..s.n {
        assert!(bee.get(key(shuffled(i * 31 + 7, s.n))).unwrap().is_some());
    }
    let rate = per_second(s.n, start.elapsed());
    let (_raw_dir, db) = raw_kv(s.n);
    let start = Instant::now();
    for i in 0..s.n {
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(KV_ROWS).unwrap();
        assert!(
            t.get(key(shuffled(i * 31 + 7, s.n)).as_slice())
                .unwrap()
                .is_some()
        );
    }
    let raw = per_second(s.n, start.elapsed());
    vec![Figure::new("bee/get-random", "gets/s", rate).against("redb/get-random", raw)]
}

pub fn bee_scan(s: &Scale) -> Vec<Figure> {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let (bee, _) = bee_of(&rt, dir.path(), s.n, SyncMode::Durable);
    let start = Instant::now();
    let seen = bee.range(&RangeOptions::all()).unwrap().count() as u64;
    let rate = per_second(seen, start.elapsed());
    assert_eq!(seen, s.n);
    let (_raw_dir, db) = raw_kv(s.n);
    let start = Instant::now();
    let txn = db.begin_read().unwrap();
    let t = txn.open_table(KV_ROWS).unwrap();
    let raw_seen = t.range::<&[u8]>(..).unwrap().count() as u64;
    let raw = per_second(raw_seen, start.elapsed());
    vec![Figure::new("bee/scan", "entries/s", rate).against("redb/scan", raw)]
}

async fn multibee(dir: &std::path::Path, clock: &ManualClock) -> MultiBee {
    let options = Options::default().clock(clock.clone()).auto_merge(false);
    MultiBee::open_with(dir, options).await.unwrap()
}

/// Writes `ops` puts over `keys` keys in batches of `size`.
async fn write_ops(mb: &MultiBee, ops: u64, keys: u64, size: u64, salt: u64) {
    let mut i = 0;
    while i < ops {
        let end = (i + size).min(ops);
        let batch = (i..end)
            .map(|j| BatchOp::Put(key(shuffled(j, keys)), doc(j ^ salt)))
            .collect();
        mb.batch(batch).await.unwrap();
        i = end;
    }
}

fn multibee_put(s: &Scale, size: u64, name: &str) -> Vec<Figure> {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let rate = rt.block_on(async {
        let mb = multibee(dir.path(), &clock).await;
        let start = Instant::now();
        write_ops(&mb, s.n, s.n, size, 0).await;
        per_second(s.n, start.elapsed())
    });
    let bee_dir = tempfile::tempdir().unwrap();
    let (_bee, bee_rate) = bee_of(&rt, bee_dir.path(), s.n, SyncMode::Durable);
    vec![Figure::new(name, "puts/s", rate).against("bee/put-batch-1000", bee_rate)]
}

pub fn multibee_put_100(s: &Scale) -> Vec<Figure> {
    multibee_put(s, 100, "multibee/put-batch-100")
}

pub fn multibee_put_1000(s: &Scale) -> Vec<Figure> {
    multibee_put(s, 1_000, "multibee/put-batch-1000")
}

/// Ingests every diff `from` wrote into `to` in chunks of 4,096; how many.
async fn ingest_all(from: &MultiBee, to: &MultiBee) -> u64 {
    let feed = from.feed_store().feed(&from.diff_key()).unwrap();
    let len = feed.length();
    let mut start = 0;
    while start < len {
        let end = (start + 4_096).min(len);
        to.ingest(feed.proof(start..end).unwrap()).await.unwrap();
        start = end;
    }
    len
}

pub fn multibee_merge(s: &Scale) -> Vec<Figure> {
    let rt = rt();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let clock = ManualClock::new(1_000_000);
    let (rate, feed_rate) = rt.block_on(async {
        let writer = multibee(dirs[0].path(), &clock).await;
        write_ops(&writer, s.n, s.n / 2, 1_000, 0).await;
        let reader = multibee(dirs[1].path(), &clock).await;
        reader.add_writer(writer.diff_key()).await.unwrap();
        let start = Instant::now();
        let n = ingest_all(&writer, &reader).await;
        let rate = per_second(n, start.elapsed());
        // The same entries, verified and stored with no merge.
        let feed = writer.feed_store().feed(&writer.diff_key()).unwrap();
        let store = Store::open(dirs[2].path()).unwrap();
        (rate, copy_in_process(&feed, &store, 4_096).await)
    });
    vec![
        Figure::new("multibee/merge-in-order", "diffs/s", rate)
            .against("feed/verify-ingest-same-entries", feed_rate),
    ]
}

pub fn multibee_offline(s: &Scale) -> Vec<Figure> {
    let rt = rt();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let rate = rt.block_on(async {
        let (ca, cb) = (ManualClock::new(1_000_000), ManualClock::new(1_000_000));
        let a = multibee(da.path(), &ca).await;
        let b = multibee(db.path(), &cb).await;
        a.add_writer(b.diff_key()).await.unwrap();
        b.add_writer(a.diff_key()).await.unwrap();
        write_ops(&a, s.offline, s.offline / 2, 1_000, 1).await;
        write_ops(&b, s.offline, s.offline / 2, 1_000, 2).await;
        let start = Instant::now();
        ingest_all(&b, &a).await;
        ingest_all(&a, &b).await;
        let took = start.elapsed();
        assert_eq!(a.state_hash().unwrap(), b.state_hash().unwrap());
        per_second(2 * s.offline, took)
    });
    let name = if s.offline == 10_000 {
        "multibee/offline-merge-2x10000".to_string()
    } else {
        format!("multibee/offline-merge-2x{}", s.offline)
    };
    vec![Figure::new(&name, "ops/s", rate)]
}
