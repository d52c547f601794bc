//! The HTTP API against the library, on one machine in one run: puts (library, HTTP with one
//! and 32 clients, `_bulk`), `_changes` catch-up (paged and streamed) and the latency of a put
//! on A until B's `eventsource` stream shows it. The default (durable) sync mode.
//! `cargo bench --bench http [-- quick]` (`quick`: small sizes, to try it out).
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use multibee::http::{HttpApi, HttpServer, serve_http};
use multibee::{BatchOp, Config, MultiBee, Value, serve};
use serde_json::{Value as Json, json};

struct Sizes {
    puts: usize,
    concurrent_puts: usize,
    bulks: usize,
    changes: usize,
    latency_samples: usize,
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let sizes = if quick {
        Sizes {
            puts: 200,
            concurrent_puts: 320,
            bulks: 2,
            changes: 10_000,
            latency_samples: 50,
        }
    } else {
        Sizes {
            puts: 2_000,
            concurrent_puts: 3_200,
            bulks: 10,
            changes: 100_000,
            latency_samples: 1_000,
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(&sizes));
}

async fn run(sizes: &Sizes) {
    println!("sync mode: durable (the default); 2 tokio worker threads; loopback TCP");
    println!("{:<58} {:>14} {:>12}", "what", "rate", "per op");
    let lib = lib_puts(sizes.puts).await;
    row("(a) MultiBee::put, one writer, sequential", lib, "puts/s");
    let one = http_puts(sizes.puts, 1).await;
    row(
        "(b) HTTP PUT /docs/{key}, 1 client (keep-alive)",
        one,
        "puts/s",
    );
    let many = http_puts(sizes.concurrent_puts, 32).await;
    row(
        "(b) HTTP PUT /docs/{key}, 32 concurrent clients",
        many,
        "puts/s",
    );
    let bulk = http_bulk(sizes.bulks, 1000).await;
    row("(c) POST /docs/_bulk of 1,000 docs", bulk, "docs/s");
    let lib_bulk = lib_batches(sizes.bulks, 1000).await;
    row(
        "(c) MultiBee::batch of 1,000 puts (for comparison)",
        lib_bulk,
        "docs/s",
    );
    println!(
        "(c) bulk speedup per document vs single HTTP puts (1 client): {:.0}x (goal >= 50x)",
        bulk / one
    );
    println!(
        "(d) HTTP overhead of a single put vs the library call: {:+.1}% (goal <= 25%)",
        (lib / one - 1.0) * 100.0
    );
    catch_up(sizes.changes).await;
    latency(sizes.latency_samples).await;
}

fn row(what: &str, rate: f64, unit: &str) {
    println!("{what:<58} {:>7.0} {unit:<6} {:>9.1} us", rate, 1e6 / rate);
}

async fn store() -> (tempfile::TempDir, MultiBee) {
    let dir = tempfile::tempdir().unwrap();
    let mb = MultiBee::open(dir.path()).await.unwrap();
    (dir, mb)
}

fn doc(i: usize) -> Json {
    json!({"n": i, "name": format!("document {i}"), "tags": ["a", "b"]})
}

/// Library puts per second.
async fn lib_puts(n: usize) -> f64 {
    let (_dir, mb) = store().await;
    let start = Instant::now();
    for i in 0..n {
        mb.put(format!("k{i:08}"), doc(i)).await.unwrap();
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    mb.close().await;
    rate
}

/// Documents per second through `MultiBee::batch` of `per_batch` puts.
async fn lib_batches(batches: usize, per_batch: usize) -> f64 {
    let (_dir, mb) = store().await;
    let start = Instant::now();
    for b in 0..batches {
        let ops = (0..per_batch)
            .map(|i| BatchOp::Put(format!("k{b:04}-{i:05}").into_bytes(), Value::Json(doc(i))))
            .collect();
        mb.batch(ops).await.unwrap();
    }
    let rate = (batches * per_batch) as f64 / start.elapsed().as_secs_f64();
    mb.close().await;
    rate
}

async fn server(mb: &MultiBee) -> HttpServer {
    serve_http("127.0.0.1:0".parse().unwrap(), HttpApi::new(mb.clone()))
        .await
        .unwrap()
}

type Client = SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Client {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (send, conn) = http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    send
}

async fn request(
    client: &mut Client,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> hyper::Response<hyper::body::Incoming> {
    client.ready().await.unwrap();
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = client.send_request(request).await.unwrap();
    assert!(response.status().is_success(), "{method} {path}");
    response
}

async fn call(client: &mut Client, method: &str, path: &str, body: Vec<u8>) -> Bytes {
    let response = request(client, method, path, body).await;
    response.into_body().collect().await.unwrap().to_bytes()
}

/// HTTP puts per second with `clients` connections, each putting its share in turn.
async fn http_puts(n: usize, clients: usize) -> f64 {
    let (_dir, mb) = store().await;
    let server = server(&mb).await;
    let addr = server.local_addr();
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            tokio::spawn(async move {
                let mut client = connect(addr).await;
                for i in (c..n).step_by(clients) {
                    let body = serde_json::to_vec(&doc(i)).unwrap();
                    call(&mut client, "PUT", &format!("/docs/k{i:08}"), body).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    server.shutdown().await;
    mb.close().await;
    rate
}

/// Documents per second through `POST /docs/_bulk` of `per_bulk` puts.
async fn http_bulk(bulks: usize, per_bulk: usize) -> f64 {
    let (_dir, mb) = store().await;
    let server = server(&mb).await;
    let mut client = connect(server.local_addr()).await;
    let start = Instant::now();
    for b in 0..bulks {
        let ops: Vec<Json> = (0..per_bulk)
            .map(|i| json!({"put": format!("k{b:04}-{i:05}"), "doc": doc(i)}))
            .collect();
        let body = serde_json::to_vec(&json!({ "ops": ops })).unwrap();
        call(&mut client, "POST", "/docs/_bulk", body).await;
    }
    let rate = (bulks * per_bulk) as f64 / start.elapsed().as_secs_f64();
    server.shutdown().await;
    mb.close().await;
    rate
}

/// `_changes` catch-up of `n` changes: pages of 1,000 and one continuous stream.
async fn catch_up(n: usize) {
    let (_dir, mb) = store().await;
    for b in 0..n.div_ceil(1000) {
        let ops = (0..1000.min(n - b * 1000))
            .map(|i| BatchOp::Put(format!("k{b:04}-{i:05}").into_bytes(), Value::Json(doc(i))))
            .collect();
        mb.batch(ops).await.unwrap();
    }
    let server = server(&mb).await;
    let mut client = connect(server.local_addr()).await;
    for docs in [false, true] {
        let start = Instant::now();
        let (mut since, mut seen) = (0, 0);
        loop {
            let path = format!("/_changes?since={since}&limit=1000&include_docs={docs}");
            let page: Json =
                serde_json::from_slice(&call(&mut client, "GET", &path, vec![]).await).unwrap();
            let results = page["results"].as_array().unwrap().len();
            if results == 0 {
                break;
            }
            seen += results;
            since = page["last_seq"].as_u64().unwrap();
        }
        assert_eq!(seen, n);
        let what = format!("(e) _changes catch-up, normal pages of 1,000, docs={docs}");
        row(&what, n as f64 / start.elapsed().as_secs_f64(), "chg/s");

        let start = Instant::now();
        let path = format!("/_changes?feed=continuous&limit={n}&include_docs={docs}");
        let mut body = request(&mut client, "GET", &path, vec![]).await.into_body();
        let mut lines = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                lines += data.iter().filter(|b| **b == b'\n').count();
            }
        }
        assert_eq!(lines, n + 1, "every change and the last_seq line");
        let what = format!("(e) _changes catch-up, one continuous stream, docs={docs}");
        row(&what, n as f64 / start.elapsed().as_secs_f64(), "chg/s");
    }
    println!("(e) goal: >= 100000 changes/s");
    server.shutdown().await;
    mb.close().await;
}

/// A put on A over HTTP until B's `eventsource` stream shows it: two served peers over
/// loopback TCP, each counting the other, each with its HTTP API.
async fn latency(samples: usize) {
    let (dir_a, a) = store().await;
    let (dir_b, b) = store().await;
    let config = || Config::loopback().kademlia(false);
    let served_a = serve(&a, config()).await.unwrap();
    let served_b = serve(&b, config()).await.unwrap();
    served_a.add_writer(b.diff_key()).await.unwrap();
    served_b.add_writer(a.diff_key()).await.unwrap();
    let addr = served_a.listen_addrs().await.unwrap();
    let addr = addr
        .into_iter()
        .find(|a| a.to_string().contains("tcp"))
        .unwrap();
    served_b.dial(addr).await.unwrap();
    let http_a = serve_http("127.0.0.1:0".parse().unwrap(), HttpApi::served(&served_a))
        .await
        .unwrap();
    let http_b = serve_http("127.0.0.1:0".parse().unwrap(), HttpApi::served(&served_b))
        .await
        .unwrap();
    let mut client_a = connect(http_a.local_addr()).await;
    let mut client_b = connect(http_b.local_addr()).await;
    let since = b.version().unwrap();
    let path = format!("/_changes?feed=eventsource&since={since}");
    let mut events = request(&mut client_b, "GET", &path, vec![])
        .await
        .into_body();
    let mut buf = Vec::new();
    let mut histogram = Histogram::<u64>::new(3).unwrap();
    let warmup = samples / 10;
    for i in 0..warmup + samples {
        let key = format!("lat{i:06}");
        let start = Instant::now();
        call(
            &mut client_a,
            "PUT",
            &format!("/docs/{key}"),
            b"{\"v\":1}".to_vec(),
        )
        .await;
        let needle = format!("\"key\":\"{key}\"");
        let wait = async {
            loop {
                if let Some(at) = buf.windows(2).position(|w| w == b"\n\n") {
                    let event: Vec<u8> = buf.drain(..at + 2).collect();
                    if String::from_utf8_lossy(&event).contains(&needle) {
                        return;
                    }
                    continue;
                }
                let frame = events.frame().await.unwrap().unwrap();
                buf.extend_from_slice(&frame.into_data().unwrap());
            }
        };
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .unwrap();
        if i >= warmup {
            histogram
                .record(start.elapsed().as_micros() as u64)
                .unwrap();
        }
    }
    println!(
        "(f) HTTP PUT on A -> B's eventsource: p50 {:.2} ms, p99 {:.2} ms ({samples} puts)",
        histogram.value_at_quantile(0.50) as f64 / 1e3,
        histogram.value_at_quantile(0.99) as f64 / 1e3,
    );
    drop(events);
    http_b.shutdown().await;
    http_a.shutdown().await;
    served_b.shutdown().await;
    served_a.shutdown().await;
    drop((dir_a, dir_b));
}
