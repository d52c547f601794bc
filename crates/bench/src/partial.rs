//! Partial views (issue 17): the bytes a peer holding 1% of the keys receives against a full
//! peer, both replicating one writer's 1,000,000 keys (100,000 with `--quick`) over loopback
//! TCP in the same run. Keys are `uNN/docI` with `NN = I mod 100`: the partial peer holds
//! `u42/`. Documents are JSON of about 100 bytes. Two orders of writing: interleaved (each
//! user's documents spread evenly over the feed: the worst case for sparse proofs) and
//! clustered (each user's documents written in runs of 100, as a user writing their own).

use std::time::{Duration, Instant};

use multibee::{Config, FeedKey, MultiBee, Options, Served, SyncMode, serve};
use multibee_multibee::{BatchOp, View};
use serde_json::json;

use crate::Scale;
use crate::figures::{Figure, runtime};

async fn open(dir: &std::path::Path, options: Options) -> (MultiBee, Served) {
    let mb = MultiBee::open_with(dir, options.sync(SyncMode::Relaxed))
        .await
        .unwrap();
    let served = serve(&mb, Config::loopback().kademlia(false))
        .await
        .unwrap();
    (mb, served)
}

async fn tcp(served: &Served) -> multibee::Multiaddr {
    let addrs = served.listen_addrs().await.unwrap();
    addrs
        .into_iter()
        .find(|a| a.to_string().contains("/tcp/"))
        .unwrap()
}

/// Waits until `mb` has read `writer`'s feed up to `length` (merged, or covered by its view).
async fn caught_up(mb: &MultiBee, writer: FeedKey, length: u64) -> Duration {
    let start = Instant::now();
    loop {
        let merged = mb
            .writers()
            .unwrap()
            .iter()
            .find(|w| w.key == writer)
            .map_or(0, |w| w.merged);
        if merged >= length {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run(n: u64, clustered: bool) -> Vec<Figure> {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, a_served) = open(dirs[0].path(), Options::default()).await;
    let db = a.diff_key();
    let mut i = 0;
    while i < n {
        let ops = (i..(i + 1000).min(n))
            .map(|j| {
                // Clustered: runs of 100 documents of one user.
                let user = match clustered {
                    true => (j / 100) % 100,
                    false => j % 100,
                };
                BatchOp::Put(
                    format!("u{user:02}/doc{j:07}").into_bytes(),
                    json!({"n": j, "title": "a document of about a hundred bytes", "tags": ["x"]})
                        .into(),
                )
            })
            .collect();
        a.batch(ops).await.unwrap();
        i += 1000;
    }
    let length = a.feed_store().feed(&db).unwrap().length();
    let addr = tcp(&a_served).await;

    let (full, full_served) = open(dirs[1].path(), Options::default().database(db)).await;
    full_served.dial(addr.clone()).await.unwrap();
    let full_time = caught_up(&full, db, length).await;
    let full_bytes = full_served.node().stats().bytes_received;

    let view = View::new([b"u42/".to_vec()]).unwrap();
    let (part, part_served) =
        open(dirs[2].path(), Options::default().database(db).only(view)).await;
    part_served.dial(addr).await.unwrap();
    let part_time = caught_up(&part, db, length).await;
    let part_bytes = part_served.node().stats().bytes_received;
    let held = part.list(b"").unwrap().count() as u64;
    assert_eq!(held, n / 100, "the partial peer holds its 1%");

    let order = if clustered {
        "clustered"
    } else {
        "interleaved"
    };
    let figures = vec![
        Figure::new(
            &format!("partial/bytes-1pct-of-{n}-{order}"),
            "bytes",
            part_bytes as f64,
        )
        .against("full peer", full_bytes as f64),
        Figure::new(
            &format!("partial/catch-up-1pct-of-{n}-{order}"),
            "s",
            part_time.as_secs_f64(),
        )
        .against("full peer", full_time.as_secs_f64()),
    ];
    for s in [part_served, full_served, a_served] {
        s.shutdown().await;
    }
    for mb in [part, full, a] {
        mb.close().await;
    }
    figures
}

pub fn figures(s: &Scale) -> Vec<Figure> {
    let n = s.n * 10;
    runtime(2).block_on(async {
        let mut out = run(n, false).await;
        out.extend(run(n, true).await);
        out
    })
}
