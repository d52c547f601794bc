//! Helpers shared by the tests.

use multibee_feed::{Feed, Store};

/// Runs an async test body on a fresh multi-thread runtime.
pub fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A writer store with one own feed holding `n` entries `"entry {i}"`, appended in `batch`es.
pub async fn writer_with(dir: &std::path::Path, n: u64, batch: u64) -> (Store, Feed) {
    let store = Store::open(dir).unwrap();
    let feed = store.create_feed().await.unwrap();
    let mut i = 0;
    while i < n {
        let end = (i + batch).min(n);
        feed.append_batch((i..end).map(entry).collect())
            .await
            .unwrap();
        i = end;
    }
    (store, feed)
}

/// The deterministic content of entry `i` in these tests.
pub fn entry(i: u64) -> Vec<u8> {
    format!("entry {i}").into_bytes()
}

/// Every entry of a feed, in order.
pub fn all_entries(feed: &Feed) -> Vec<Vec<u8>> {
    feed.range(0..feed.length())
        .unwrap()
        .map(|r| r.unwrap().1)
        .collect()
}
