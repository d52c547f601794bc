//! Live latency of a multibee peer served over the network: a put on A -> the change visible
//! in B's live `changes()` stream (replicated, verified, stored and merged), one at a time,
//! over loopback TCP and QUIC. `cargo bench -p multibee --bench live [-- relaxed]`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use multibee::{ChangesOptions, Config, MultiBee, Options, SyncMode, Value, serve};

const WARMUP: usize = 200;
const SAMPLES: usize = 5_000;

fn main() {
    let relaxed = std::env::args().any(|a| a == "relaxed");
    let sync = if relaxed {
        SyncMode::Relaxed
    } else {
        SyncMode::Durable
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for transport in ["tcp", "quic-v1"] {
        rt.block_on(run(transport, sync));
    }
}

async fn run(transport: &str, sync: SyncMode) {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let options = Options::default().sync(sync);
    let a = MultiBee::open_with(dir_a.path(), options.clone())
        .await
        .unwrap();
    let b = MultiBee::open_with(dir_b.path(), options).await.unwrap();
    let config = || Config::loopback().kademlia(false);
    let served_a = serve(&a, config()).await.unwrap();
    let served_b = serve(&b, config()).await.unwrap();
    served_a.add_writer(b.diff_key()).await.unwrap();
    served_b.add_writer(a.diff_key()).await.unwrap();
    let addr = served_a
        .listen_addrs()
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.to_string().contains(transport))
        .unwrap();
    served_b.dial(addr).await.unwrap();

    let mut changes = b
        .changes(ChangesOptions {
            live: true,
            ..Default::default()
        })
        .unwrap();
    let mut committed = Vec::with_capacity(SAMPLES);
    let mut visible = Vec::with_capacity(SAMPLES);
    for i in 0..WARMUP + SAMPLES {
        let key = format!("key{i:08}");
        let value = Value::Bytes(vec![7; 100]);
        let start = Instant::now();
        a.put(&key, value).await.unwrap();
        let put = start.elapsed();
        let wait = async {
            loop {
                let change = changes.next().await.unwrap().unwrap();
                if change.key == key.as_bytes() {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .unwrap();
        if i >= WARMUP {
            committed.push(put);
            visible.push(start.elapsed());
        }
    }
    let (pc, pv) = (percentiles(&mut committed), percentiles(&mut visible));
    println!(
        "{transport:>7} {sync:?}: put on A committed p50 {:.2} ms p99 {:.2} ms; \
         visible in B's changes() p50 {:.2} ms p99 {:.2} ms ({SAMPLES} puts of 100 B)",
        pc.0, pc.1, pv.0, pv.1
    );
    served_b.shutdown().await;
    served_a.shutdown().await;
}

/// p50 and p99 in milliseconds.
fn percentiles(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    (at(0.50), at(0.99))
}
