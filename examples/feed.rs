//! Appends entries to an own feed in a folder and prints the feed key and length.
//!
//! Run: `cargo run --release --example feed -- [DIR] [COUNT]` (defaults: `./multibee-data`, 3).
//! Running it again on the same folder appends to the same feed.

use anyhow::Context;
use multibee_feed::Store;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "multibee-data".into());
    let count: u64 = match args.next() {
        Some(n) => n.parse().context("COUNT must be a whole number")?,
        None => 3,
    };
    let store = Store::open(&dir).with_context(|| format!("opening {dir}"))?;
    let own = store
        .feeds()
        .into_iter()
        .filter_map(|key| store.feed(&key))
        .find(|feed| feed.is_writable());
    let feed = match own {
        Some(feed) => feed,
        None => store.create_feed().await?,
    };
    let start = feed.length();
    let entries = (start..start + count)
        .map(|i| format!("entry {i}").into_bytes())
        .collect();
    let length = feed.append_batch(entries).await?;
    println!("feed {}", feed.key());
    println!("discovery key {}", feed.discovery_key());
    println!("length {length}");
    Ok(())
}
