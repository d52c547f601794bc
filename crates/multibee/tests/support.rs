//! A cluster of peers in temporary folders, each with a manual clock and no background
//! merging, and delivery of diff feed ranges between them (directly or forwarded).

use multibee_feed::{FeedKey, SyncMode};
use multibee_multibee::{ManualClock, MultiBee, Options, Value};
use serde_json::Value as Json;
use tempfile::TempDir;

pub struct Peer {
    pub mb: MultiBee,
    pub clock: ManualClock,
    pub dir: TempDir,
}

pub fn options(clock: &ManualClock) -> Options {
    Options::default()
        .sync(SyncMode::Relaxed)
        .clock(clock.clone())
        .auto_merge(false)
        .checkpoint_interval(4)
}

impl Peer {
    pub async fn new(now_ms: u64) -> Peer {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(now_ms);
        let mb = MultiBee::open_with(dir.path(), options(&clock))
            .await
            .unwrap();
        Peer { mb, clock, dir }
    }

    /// A peer whose options are the test defaults changed by `f`.
    pub async fn with(now_ms: u64, f: impl FnOnce(Options) -> Options) -> Peer {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(now_ms);
        let mb = MultiBee::open_with(dir.path(), f(options(&clock)))
            .await
            .unwrap();
        Peer { mb, clock, dir }
    }

    /// Closes and reopens the peer on its folder.
    pub async fn reopen(self) -> Peer {
        let Peer { mb, clock, dir } = self;
        mb.close().await;
        let mb = MultiBee::open_with(dir.path(), options(&clock))
            .await
            .unwrap();
        Peer { mb, clock, dir }
    }

    pub fn key(&self) -> FeedKey {
        self.mb.diff_key()
    }

    pub fn json(&self, key: &str) -> Option<Json> {
        self.mb.get(key).unwrap().map(|v| match v {
            Value::Json(j) => j,
            Value::Bytes(b) => panic!("bytes {b:?} where JSON was expected"),
        })
    }

    /// The length of `writer`'s diff feed this peer holds.
    pub fn holds(&self, writer: &FeedKey) -> u64 {
        self.mb.feed_store().feed(writer).map_or(0, |f| f.length())
    }
}

/// A cluster of one database: peer 0 starts it and adds every other peer as a writer (the
/// membership operations are at the start of peer 0's diff feed, and every peer holds them);
/// the diff feeds of peers 1.. hold only their own writes.
pub async fn cluster(n: usize) -> Vec<Peer> {
    let mut peers = vec![Peer::new(1_000_000).await];
    let database = peers[0].key();
    for _ in 1..n {
        peers.push(Peer::with(1_000_000, |o| o.database(database)).await);
    }
    for i in 1..n {
        let key = peers[i].key();
        peers[0].mb.add_writer(key).await.unwrap();
    }
    for i in 1..n {
        deliver(&peers[0], &peers[i], database, u64::MAX).await;
    }
    peers
}

/// Delivers up to `count` of `writer`'s diffs that `to` lacks, taken from `from` (the writer
/// itself or any peer holding a replica): verified, stored and merged by `to`.
pub async fn deliver(from: &Peer, to: &Peer, writer: FeedKey, count: u64) -> u64 {
    let start = to.holds(&writer);
    let end = from.holds(&writer).min(start.saturating_add(count));
    if end <= start {
        return 0;
    }
    let feed = from.mb.feed_store().feed(&writer).unwrap();
    to.mb.ingest(feed.proof(start..end).unwrap()).await.unwrap();
    end - start
}

/// Delivers every diff of every writer to every peer (repeating until nothing moves).
pub async fn sync_all(peers: &[Peer]) {
    loop {
        let mut moved = 0;
        for from in peers {
            for to in peers {
                if std::ptr::eq(from, to) {
                    continue;
                }
                moved += deliver(from, to, from.key(), u64::MAX).await;
            }
        }
        if moved == 0 {
            return;
        }
    }
}

/// How long any wait may take before the test fails (generous: 2-core CI under load).
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs `f`, failing the test with `what` it waited for if it takes longer than [`PATIENCE`].
pub async fn within<T>(what: impl std::fmt::Display, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, f).await {
        Ok(done) => done,
        Err(_) => panic!("timed out after {PATIENCE:?} waiting for {what}"),
    }
}

pub fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Like [`cluster`], but peer 0 adds only the peers `i` with `added[i]` (`added[0]` is
/// ignored: peer 0 is the database's first writer); every peer is opened on the database and
/// holds peer 0's diff feed (its `Add` entries) after setup. The others may write, count their
/// own writes, and be added later.
pub async fn cluster_adding(added: &[bool]) -> Vec<Peer> {
    let mut peers = vec![Peer::new(1_000_000).await];
    let database = peers[0].key();
    for _ in 1..added.len() {
        peers.push(Peer::with(1_000_000, |o| o.database(database)).await);
    }
    for (i, add) in added.iter().enumerate().skip(1) {
        if *add {
            let key = peers[i].key();
            peers[0].mb.add_writer(key).await.unwrap();
        }
    }
    for i in 1..added.len() {
        deliver(&peers[0], &peers[i], database, u64::MAX).await;
    }
    peers
}

/// Like [`deliver`], but returns `ingest`'s error (such as
/// [`multibee_multibee::Error::UnknownWriter`] when `to` does not know `writer`) instead of
/// panicking: nothing moves then.
pub async fn try_deliver(
    from: &Peer,
    to: &Peer,
    writer: FeedKey,
    count: u64,
) -> multibee_multibee::Result<u64> {
    let start = to.holds(&writer);
    let end = from.holds(&writer).min(start.saturating_add(count));
    if end <= start {
        return Ok(0);
    }
    let feed = from.mb.feed_store().feed(&writer).unwrap();
    to.mb.ingest(feed.proof(start..end).unwrap()).await?;
    Ok(end - start)
}

/// A write succeeded, or was refused because its writer learned it was removed.
pub fn written(result: multibee_multibee::Result<u64>) {
    match result {
        Ok(_) | Err(multibee_multibee::Error::Removed { .. }) => {}
        Err(e) => panic!("{e}"),
    }
}
