//! Joining a database with a ticket: the time from calling `join` on a fresh folder with an
//! inviter's ticket to holding the whole database, for an inviter with 100,000 JSON documents
//! (one diff feed entry each, written in batches of 1,000 with Relaxed sync; building it is not
//! measured). The joiner is done once it has merged all of the inviter's diff feed (the feed's
//! length when `join` returned: the documents, and the `Add` of the joiner and of any earlier
//! one) and its `state_hash()` equals the inviter's. Reported: the total, documents/s and the
//! split between the join handshake (`join` returning) and replication plus merging (with the
//! moment the joiner held the whole replica of the inviter's feed along the way).
//!
//! The baseline, measured in the same run against the same inviter: a plain feed store on a
//! fresh node (no document store, nothing merged) replicating the inviter's diff feed until it
//! holds all of it, from opening the store to the last entry verified and stored. The gap
//! between the two is what merging costs over moving verified bytes.
//!
//! Everything runs in one process over loopback (127.0.0.1, ports the OS picks), on a 2-thread
//! runtime. The joiner runs durable (the default sync mode), then relaxed.
//!
//! `cargo bench --bench join [-- [durable|relaxed] [DOCS]]` (default: both modes, 100,000).
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use multibee::feed::{Options as FeedOptions, Store};
use multibee::net::Node;
use multibee::{
    BatchOp, Config, FeedKey, MultiBee, Options, Served, SyncMode, Value, db, join, serve,
};
use tokio::sync::broadcast::error::RecvError;

const DOCS: usize = 100_000;
const BATCH: usize = 1_000;
/// The longest any one measured phase may take before the bench gives up.
const TIMEOUT: Duration = Duration::from_secs(300);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let docs = args
        .iter()
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(DOCS);
    let modes = match (
        args.iter().any(|a| a == "durable"),
        args.iter().any(|a| a == "relaxed"),
    ) {
        (true, false) => vec![SyncMode::Durable],
        (false, true) => vec![SyncMode::Relaxed],
        _ => vec![SyncMode::Durable, SyncMode::Relaxed],
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(docs, &modes));
}

fn config() -> Config {
    Config::loopback().kademlia(false)
}

async fn run(docs: usize, modes: &[SyncMode]) {
    let dir_a = tempfile::tempdir().unwrap();
    let a = MultiBee::open_with(dir_a.path(), Options::default().sync(SyncMode::Relaxed))
        .await
        .unwrap();
    let built = Instant::now();
    for first in (0..docs).step_by(BATCH) {
        let ops = (first..(first + BATCH).min(docs))
            .map(|i| {
                let doc = serde_json::json!({
                    "n": i,
                    "title": format!("document {i}"),
                    "tags": ["a", "b"],
                });
                BatchOp::Put(format!("doc/{i:06}").into_bytes(), Value::Json(doc))
            })
            .collect();
        a.batch(ops).await.unwrap();
    }
    let built = built.elapsed();
    let a_feed = a.feed_store().feed(&a.diff_key()).unwrap();
    println!(
        "inviter: {docs} JSON documents, {} diff feed entries, built in {:.1} s \
         (batches of {BATCH}, Relaxed; not measured)",
        a_feed.length(),
        built.as_secs_f64()
    );
    let served_a = serve(&a, config()).await.unwrap();

    for &sync in modes {
        let raw = baseline(&served_a, sync).await;
        println!(
            "{sync:?} baseline: the inviter's diff feed replicated by a plain feed store \
             (no merge): {} entries in {:.2} s, {:.0} entries/s",
            raw.entries,
            raw.time.as_secs_f64(),
            raw.entries as f64 / raw.time.as_secs_f64()
        );
        let joined = join_once(&served_a, sync).await;
        let total = joined.total.as_secs_f64();
        println!(
            "{sync:?} join: {docs} documents in {total:.2} s, {:.0} documents/s: \
             handshake (join returned) {:.3} s + replication, merge and hash check {:.2} s \
             (whole replica held at {:.2} s, all {} entries merged at {:.2} s, \
             state hash checked equal in {:.3} s); {:.2}x the baseline",
            docs as f64 / total,
            joined.handshake.as_secs_f64(),
            (joined.total - joined.handshake).as_secs_f64(),
            joined.held.as_secs_f64(),
            joined.entries,
            joined.merged.as_secs_f64(),
            (joined.total - joined.merged).as_secs_f64(),
            total / raw.time.as_secs_f64(),
        );
    }

    served_a.shutdown().await;
    drop(a_feed);
    a.close().await;
}

struct Raw {
    entries: u64,
    time: Duration,
}

/// A fresh feed store on a fresh node replicating the inviter's diff feed, from opening the
/// store until it holds every entry.
async fn baseline(served_a: &Served, sync: SyncMode) -> Raw {
    let a = served_a.multibee();
    let a_key = a.diff_key();
    let target = a.feed_store().feed(&a_key).unwrap().length();
    let addrs = served_a.listen_addrs().await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    let start = Instant::now();
    let store = Store::open_with(dir.path(), FeedOptions::default().sync(sync)).unwrap();
    let node = Node::start(store, config()).await.unwrap();
    let handle = node.handle();
    for addr in addrs {
        handle.dial(addr).await.unwrap();
    }
    let replica = handle.replicate(a_key).await.unwrap();
    let mut status = replica.subscribe();
    tokio::time::timeout(TIMEOUT, status.wait_for(|s| s.length >= target))
        .await
        .expect("the baseline did not replicate the feed in time")
        .unwrap();
    let time = start.elapsed();

    drop((status, replica, handle));
    node.shutdown().await;
    Raw {
        entries: target,
        time,
    }
}

struct Joined {
    /// Entries of the inviter's diff feed to merge.
    entries: u64,
    /// Until `join` returned.
    handshake: Duration,
    /// Until the joiner held the whole replica of the inviter's diff feed.
    held: Duration,
    /// Until the joiner had merged all of it.
    merged: Duration,
    /// Until the joiner's state hash was computed (and found equal to the inviter's).
    total: Duration,
}

/// Joins the inviter with a fresh ticket on a fresh folder and waits until the joiner holds
/// the whole database.
async fn join_once(served_a: &Served, sync: SyncMode) -> Joined {
    let a = served_a.multibee();
    let a_key = a.diff_key();
    let a_feed = a.feed_store().feed(&a_key).unwrap();
    let ticket = served_a.invite().await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    let start = Instant::now();
    let served = tokio::time::timeout(
        TIMEOUT,
        join(dir.path(), &ticket, Options::default().sync(sync), config()),
    )
    .await
    .expect("join did not return in time")
    .unwrap();
    let handshake = start.elapsed();
    // The inviter wrote the joiner's `Add` before it answered: nothing more comes.
    let target = a_feed.length();
    let mb = served.multibee().clone();
    // Subscribed before the merged count is first read, so that no merge is missed.
    let mut events = mb.events();
    let replica = mb
        .feed_store()
        .feed(&a_key)
        .expect("the joiner does not replicate the inviter");
    let mut status = replica.subscribe();

    let held = async {
        status.wait_for(|s| s.length >= target).await.unwrap();
        start.elapsed()
    };
    let merged = async {
        loop {
            if merged_of(&mb, a_key) >= target {
                return start.elapsed();
            }
            loop {
                match events.recv().await {
                    Ok(db::Event::Merged { writer, merged }) if writer == a_key => {
                        if merged >= target {
                            return start.elapsed();
                        }
                    }
                    Ok(_) => {}
                    // Missed events: read the merged count again.
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => panic!("the joiner closed"),
                }
            }
        }
    };
    let (held, merged) = tokio::time::timeout(TIMEOUT, async { tokio::join!(held, merged) })
        .await
        .expect("the joiner did not replicate and merge the database in time");
    let hash = mb.state_hash().unwrap();
    let total = start.elapsed();

    assert_eq!(
        hash,
        a.state_hash().unwrap(),
        "the joiner's state differs from the inviter's"
    );
    assert_eq!(merged_of(&mb, a_key), target);
    served.shutdown().await;
    drop((status, replica, events));
    mb.close().await;
    Joined {
        entries: target,
        handshake,
        held,
        merged,
        total,
    }
}

/// How much of `writer`'s diff feed `mb` has merged.
fn merged_of(mb: &MultiBee, writer: FeedKey) -> u64 {
    mb.writers()
        .unwrap()
        .into_iter()
        .find(|w| w.key == writer)
        .map_or(0, |w| w.merged)
}
