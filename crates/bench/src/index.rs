//! Path indexes (issue 17): the put rate of documents of 10 fields with 0, 1 and 5 declared
//! indexes and with every path indexed (batches of 100, relaxed sync, so that the index work
//! is not hidden behind fsyncs); equality queries returning 10 documents and range queries
//! returning 1,000, on 100,000 documents (20,000 with `--quick`).

use std::time::{Duration, Instant};

use multibee_feed::SyncMode;
use multibee_multibee::{BatchOp, Condition, IndexTarget, MultiBee, Op, Options, Query};
use serde_json::json;

use crate::Scale;
use crate::figures::{Figure, runtime};

/// A document of 10 fields: `g` takes `n / 10` values (an equality query finds 10), `r` is
/// unique (a range of 1,000 finds 1,000).
fn doc(i: u64, n: u64) -> serde_json::Value {
    let city = ["Paris", "Lyon", "Nice", "Lille"][(i % 4) as usize];
    json!({
        "g": (i * 7919) % (n / 10).max(1),
        "r": i,
        "name": format!("name-{i}"),
        "city": city,
        "tags": ["a", "b"],
        "score": (i % 100) as f64 / 10.0,
        "active": i.is_multiple_of(2),
        "nested": {"x": i % 13, "y": "why"},
        "email": format!("user{i}@example.com"),
        "n5": i % 5,
    })
}

async fn open(dir: &std::path::Path) -> MultiBee {
    let options = Options::default().sync(SyncMode::Relaxed).auto_merge(false);
    MultiBee::open_with(dir, options).await.unwrap()
}

/// Puts `n` documents in batches of 100; puts per second.
async fn put_all(mb: &MultiBee, n: u64) -> f64 {
    let start = Instant::now();
    let mut i = 0;
    while i < n {
        let batch = (i..(i + 100).min(n))
            .map(|j| BatchOp::Put(format!("doc/{j:08}").into_bytes(), doc(j, n).into()))
            .collect();
        mb.batch(batch).await.unwrap();
        i += 100;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Runs `f` for about `secs` seconds; calls per second, and what they returned per second.
fn per_second(secs: f64, mut f: impl FnMut(u64) -> usize) -> (f64, f64) {
    let start = Instant::now();
    let (mut calls, mut found) = (0u64, 0usize);
    while start.elapsed() < Duration::from_secs_f64(secs) {
        for _ in 0..20 {
            found += f(calls);
            calls += 1;
        }
    }
    let took = start.elapsed().as_secs_f64();
    (calls as f64 / took, found as f64 / took)
}

pub fn figures(s: &Scale) -> Vec<Figure> {
    let rt = runtime(1);
    rt.block_on(async {
        let n = s.n;
        let mut out = Vec::new();
        let declared: [&[&str]; 3] = [
            &[],
            &["/g"],
            &["/g", "/city", "/score", "/nested/x", "/tags/[]"],
        ];
        let mut base = 0.0;
        for paths in declared {
            let dir = tempfile::tempdir().unwrap();
            let mb = open(dir.path()).await;
            for p in paths {
                mb.add_index(IndexTarget::Path((*p).into())).await.unwrap();
            }
            let rate = put_all(&mb, n).await;
            let name = format!("index/put-{}-indexes", paths.len());
            match paths.len() {
                0 => {
                    base = rate;
                    out.push(Figure::new(&name, "puts/s", rate));
                }
                _ => out
                    .push(Figure::new(&name, "puts/s", rate).against("index/put-0-indexes", base)),
            }
            mb.close().await;
        }
        let dir = tempfile::tempdir().unwrap();
        let mb = open(dir.path()).await;
        mb.add_index(IndexTarget::EveryPath(Vec::new()))
            .await
            .unwrap();
        let rate = put_all(&mb, n).await;
        out.push(
            Figure::new("index/put-every-path", "puts/s", rate)
                .against("index/put-0-indexes", base),
        );
        mb.close().await;

        // Queries on n documents with /g and /r indexed.
        let dir = tempfile::tempdir().unwrap();
        let mb = open(dir.path()).await;
        put_all(&mb, n).await;
        for p in ["/g", "/r"] {
            let info = mb.add_index(IndexTarget::Path(p.into())).await.unwrap();
            mb.wait_index(info.id).await.unwrap();
        }
        let groups = (n / 10).max(1);
        let (qps, found) = per_second(2.0, |i| {
            let q = Query::new(vec![Condition::new("/g", Op::Eq, json!(i % groups))]).limit(100);
            mb.query(&q).unwrap().results.len()
        });
        assert!(found >= qps * 9.0, "an equality query finds 10 documents");
        // The baseline: getting 10 documents by key.
        let (gets, _) = per_second(2.0, |i| {
            (0..10)
                .map(|j| {
                    usize::from(
                        mb.get(format!("doc/{:08}", (i * 10 + j) % n))
                            .unwrap()
                            .is_some(),
                    )
                })
                .sum()
        });
        out.push(
            Figure::new("index/query-eq-10", "queries/s", qps).against("index/get-10-by-key", gets),
        );
        let (rqps, results) = per_second(2.0, |i| {
            let from = (i * 1000) % (n - 1000);
            let q = Query::new(vec![
                Condition::new("/r", Op::Gte, json!(from)),
                Condition::new("/r", Op::Lt, json!(from + 1000)),
            ])
            .limit(1000);
            mb.query(&q).unwrap().results.len()
        });
        assert!(
            results >= rqps * 999.0,
            "a range query finds 1,000 documents"
        );
        // The baseline: a scan of the same 1,000 keys.
        let (_, scans) = per_second(2.0, |i| {
            let from = (i * 1000) % (n - 1000);
            let opts = multibee_multibee::RangeOptions::all()
                .gte(format!("doc/{from:08}"))
                .limit(1000);
            mb.range(&opts).unwrap().count()
        });
        let _ = rqps;
        out.push(
            Figure::new("index/query-range-1000", "results/s", results)
                .against("index/scan-1000-by-key", scans),
        );
        mb.close().await;
        out
    })
}
