//! Partial views over the network: a peer holding only the keys under a prefix fetches only
//! those (verified), stays subscribed, serves what it holds to another partial peer, and gives
//! a full peer only what it can prove.

use multibee::{FeedKey, MultiBee, Options, SyncMode, Value};
use serde_json::json;

use crate::common::{Peer, config, json as j, wait_change, wait_event};

async fn partial(database: FeedKey, prefix: &str) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let view = multibee::db::View::new([prefix.as_bytes().to_vec()]).unwrap();
    let options = Options::default()
        .sync(SyncMode::Relaxed)
        .database(database)
        .only(view);
    let mb = MultiBee::open_with(dir.path(), options).await.unwrap();
    let served = multibee::serve(&mb, config()).await.unwrap();
    Peer { dir, mb, served }
}

async fn full(database: FeedKey) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default()
        .sync(SyncMode::Relaxed)
        .database(database);
    let mb = MultiBee::open_with(dir.path(), options).await.unwrap();
    let served = multibee::serve(&mb, config()).await.unwrap();
    Peer { dir, mb, served }
}

fn slice(mb: &MultiBee, prefix: &str) -> Vec<(Vec<u8>, Value)> {
    mb.list(prefix.as_bytes())
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_peer_fetches_only_its_prefix_and_serves_it_on() {
    let a = Peer::start().await;
    let db = a.key();
    for n in 0..300 {
        let key = format!("u{}/doc{n}", n % 10);
        a.mb.put(&key, j(json!({"n": n}))).await.unwrap();
    }
    let last = j(json!({"n": 291}));

    // B holds u1/ only, fetched from A.
    let b = partial(db, "u1/").await;
    b.connect(&a).await;
    wait_change(&b.mb, "u1/doc291", &last).await;
    assert_eq!(slice(&b.mb, ""), slice(&a.mb, "u1/"));
    assert_eq!(slice(&b.mb, "").len(), 30);
    // What B reports holding of A: everything under its view, up to A's length.
    let a_length = a.mb.feed_store().feed(&db).unwrap().length();
    let held =
        b.mb.writers()
            .unwrap()
            .into_iter()
            .find(|w| w.key == db)
            .unwrap();
    assert_eq!((held.length, held.merged), (a_length, a_length));
    let stats = b.served.node().stats();
    eprintln!(
        "partial peer: {} entries, {} bytes received for 30 of 300 keys",
        stats.entries_received, stats.bytes_received
    );
    assert!(
        stats.entries_received <= 31,
        "{} entries for 30 keys and the membership",
        stats.entries_received
    );

    // Live: a new key under the prefix comes, one outside does not.
    a.mb.put("u2/new", j(json!("outside"))).await.unwrap();
    a.mb.put("u1/new", j(json!("inside"))).await.unwrap();
    wait_change(&b.mb, "u1/new", &j(json!("inside"))).await;
    assert_eq!(b.mb.get("u2/new").unwrap(), None);
    assert!(matches!(
        b.mb.put("u2/mine", j(json!(1))).await,
        Err(multibee::db::Error::OutsideView(_))
    ));

    // C holds u1/ too and knows only B: B serves what it holds, proven.
    let c = partial(db, "u1/").await;
    c.connect(&b).await;
    wait_change(&c.mb, "u1/new", &j(json!("inside"))).await;
    assert_eq!(slice(&c.mb, ""), slice(&a.mb, "u1/"));

    // D is a full peer that knows only B: it is told B's contiguous length (nothing) and gets
    // nothing it cannot prove.
    let d = full(db).await;
    let mut events = d.served.subscribe();
    d.connect(&b).await;
    wait_event(
        &mut events,
        "D to hear what B holds of A",
        |e| matches!(e, multibee::net::Event::PeerHas { key, .. } if *key == db),
    )
    .await;
    assert!(slice(&d.mb, "").is_empty());
    assert_eq!(d.served.node().stats().entries_received, 0);

    for p in [d, c, b, a] {
        p.stop().await;
    }
}
