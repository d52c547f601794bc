#![allow(clippy::unwrap_used)]
//! Store sync over the blob protocol (sorted id lists in pages, a live queue of new ids) and
//! finding a blob's providers through the DHT.
// Lists of byte ranges are what requests carry: a list of one range is not a mistake here.
#![allow(clippy::single_range_in_vec_init)]

use multibee_blobs::{BlobId, Blobs};
use multibee_net::blob_wire::{BlobLimits, BlobRefusal};
use multibee_net::{PeerBlobsError, WatchEvent};

use crate::blobs::{bytes, connect, peer, peer_with};
use crate::common::{Peer, Watchdog, config, within};

/// Adds `n` small distinct blobs; their ids, sorted.
async fn add_many(blobs: &Blobs, n: usize) -> Vec<BlobId> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            blobs
                .add_bytes(format!("blob {i}").as_bytes())
                .await
                .unwrap(),
        );
    }
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_ids_are_listed_in_sorted_pages() {
    let _watchdog = Watchdog::arm("blob_sync::a_peers_ids_are_listed_in_sorted_pages");
    let (a, a_blobs) = peer().await;
    let (b, _) = peer().await;
    let ids = add_many(&a_blobs, 10).await;
    // A partial blob is not listed.
    let big = bytes(100_000);
    let partial = BlobId::of(&big);
    let encoded = {
        let dir = tempfile::tempdir().unwrap();
        let scratch = Blobs::open(dir.path()).unwrap();
        let id = scratch.add_bytes(&big).await.unwrap();
        scratch.export_ranges(id, &[0..16384]).await.unwrap()
    };
    a_blobs
        .import_ranges(partial, big.len() as u64, &[0..16384], &encoded)
        .await
        .unwrap();
    let a_id = connect(&b, &a).await;

    let handle = b.node.handle();
    let mut listed = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = within("a page", handle.list_peer_blobs(a_id, after, 3))
            .await
            .unwrap();
        pages += 1;
        assert!(page.ids.len() <= 3, "{page:?}");
        listed.extend(page.ids.iter().copied());
        after = page.ids.last().copied();
        if !page.more {
            break;
        }
    }
    assert_eq!(listed, ids);
    assert_eq!(pages, 4);
    // Resuming after any id gives exactly the ids after it.
    let rest = handle
        .list_peer_blobs(a_id, Some(ids[6]), 100)
        .await
        .unwrap();
    assert_eq!((rest.ids.as_slice(), rest.more), (&ids[7..], false));
    let none = handle
        .list_peer_blobs(a_id, Some(ids[9]), 100)
        .await
        .unwrap();
    assert_eq!((none.ids.len(), none.more), (0, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_asking_for_more_than_the_limit_is_clamped_and_watches_are_capped() {
    let _watchdog = Watchdog::arm("blob_sync::a_list_asking_for_more_than_the_limit_is_clamped");
    let mut limits = BlobLimits::default();
    limits.max_list_ids = 4;
    limits.max_watches_per_peer = 1;
    let (a, a_blobs) = peer_with(limits).await;
    let (b, _) = peer().await;
    let ids = add_many(&a_blobs, 6).await;
    let a_id = connect(&b, &a).await;
    let handle = b.node.handle();

    // Clamped, not refused: 4 ids and "more".
    let page = handle.list_peer_blobs(a_id, None, 1000).await.unwrap();
    assert_eq!((page.ids.as_slice(), page.more), (&ids[..4], true));
    let rest = handle
        .list_peer_blobs(a_id, Some(ids[3]), 1000)
        .await
        .unwrap();
    assert_eq!((rest.ids.as_slice(), rest.more), (&ids[4..], false));

    // One watch per peer here: the second is refused while the first is open.
    let first = within("a watch", handle.watch_peer_blobs(a_id))
        .await
        .unwrap();
    let second = within("a second watch", handle.watch_peer_blobs(a_id)).await;
    assert!(
        matches!(second, Err(PeerBlobsError::Refused(BlobRefusal::Busy))),
        "{second:?}"
    );
    drop(first);

    // A peer without a blob store refuses both.
    let c = Peer::start(config().kademlia(false)).await;
    let c_id = connect(&b, &c).await;
    let listed = handle.list_peer_blobs(c_id, None, 10).await;
    assert!(
        matches!(listed, Err(PeerBlobsError::Refused(BlobRefusal::NoStore))),
        "{listed:?}"
    );
    let watched = handle.watch_peer_blobs(c_id).await;
    assert!(
        matches!(watched, Err(PeerBlobsError::Refused(BlobRefusal::NoStore))),
        "{watched:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_delivers_the_ids_of_blobs_completed_after_it() {
    let _watchdog =
        Watchdog::arm("blob_sync::a_watch_delivers_the_ids_of_blobs_completed_after_it");
    let (a, a_blobs) = peer().await;
    let (b, b_blobs) = peer().await;
    add_many(&a_blobs, 2).await;
    let a_id = connect(&b, &a).await;
    let mut watch = within("a watch", b.node.handle().watch_peer_blobs(a_id))
        .await
        .unwrap();
    assert_eq!(watch.peer(), a_id);

    let first = a_blobs.add_bytes(b"added after the watch").await.unwrap();
    assert_eq!(
        within("the first arrival", watch.next()).await,
        Some(WatchEvent::Arrived(first))
    );
    // A blob fetched by A (complete only once its last range arrived) is told too.
    let data = bytes(300_000);
    let fetched = b_blobs.add_bytes(&data).await.unwrap();
    let b_id = b.node.peer_id();
    within("A's fetch", a.node.handle().fetch_blob(fetched, vec![b_id]))
        .await
        .unwrap();
    assert_eq!(
        within("the second arrival", watch.next()).await,
        Some(WatchEvent::Arrived(fetched))
    );

    // The watch ends when A goes.
    drop(a.stop().await);
    assert_eq!(within("the end of the watch", watch.next()).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_finds_the_holder_of_a_blob_through_the_dht_and_fetches_it() {
    let _watchdog = Watchdog::arm("blob_sync::a_peer_finds_the_holder_of_a_blob_through_the_dht");
    // A holds the blob (from before its start); B knows A and holds no blob store; C knows
    // only B.
    let data = bytes(2 << 20);
    let a_dir = tempfile::tempdir().unwrap();
    let a_blobs = Blobs::open(a_dir.path().join("blobs")).unwrap();
    let id = a_blobs.add_bytes(&data).await.unwrap();
    let a = Peer::start_in(a_dir, config().blobs(a_blobs.clone())).await;
    let b = Peer::start(config()).await;
    let c_dir = tempfile::tempdir().unwrap();
    let c_blobs = Blobs::open(c_dir.path().join("blobs")).unwrap();
    let c = Peer::start_in(c_dir, config().blobs(c_blobs.clone())).await;
    let a_id = connect(&b, &a).await;
    let b_id = connect(&c, &b).await;

    // Asking the connected peer (B) alone gets nothing.
    let from_b = c.node.handle().fetch_blob(id, vec![b_id]).await;
    assert!(
        matches!(from_b, Err(multibee_net::FetchError::Incomplete { .. })),
        "{from_b:?}"
    );
    let providers = within("the providers", c.node.handle().find_blob_providers(id))
        .await
        .unwrap();
    assert_eq!(providers, vec![a_id]);

    let outcome = within("the fetch", c.node.handle().fetch_blob_anywhere(id))
        .await
        .unwrap();
    assert_eq!(outcome.size, data.len() as u64);
    assert!(c_blobs.read(id).await.unwrap() == data, "other bytes");
    // D, who knows only C, finds a provider too (A, or C that holds it now).
    let d = Peer::start(config()).await;
    connect(&d, &c).await;
    let found = within("the providers", d.node.handle().find_blob_providers(id))
        .await
        .unwrap();
    assert!(!found.is_empty(), "{found:?}");
    // An id nobody holds: no provider, and the fetch says what is missing.
    let nobody = BlobId::of(b"nobody has this");
    assert!(
        c.node
            .handle()
            .find_blob_providers(nobody)
            .await
            .unwrap()
            .is_empty()
    );
    let missing = c.node.handle().fetch_blob_anywhere(nobody).await;
    assert!(
        matches!(missing, Err(multibee_net::FetchError::Incomplete { .. })),
        "{missing:?}"
    );
}

#[test]
fn blob_record_keys_are_not_discovery_keys() {
    let id = BlobId::of(b"x");
    let key = multibee_net::blob_record_key(id);
    assert_eq!(key.as_ref().len(), 32);
    assert_ne!(key.as_ref(), id.as_bytes());
    assert_ne!(key, multibee_net::blob_record_key(BlobId::of(b"y")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_no_longer_provided_is_not_found_in_the_dht() {
    let _watchdog = Watchdog::arm("blob_sync::a_blob_no_longer_provided_is_not_found_in_the_dht");
    let a_dir = tempfile::tempdir().unwrap();
    let a_blobs = Blobs::open(a_dir.path().join("blobs")).unwrap();
    let id = a_blobs.add_bytes(b"provided, then deleted").await.unwrap();
    let a = Peer::start_in(a_dir, config().blobs(a_blobs.clone())).await;
    let b = Peer::start(config()).await;
    let a_id = connect(&b, &a).await;
    let found = within("the providers", b.node.handle().find_blob_providers(id)).await;
    assert_eq!(found.unwrap(), vec![a_id]);

    a_blobs.delete(id).await.unwrap();
    a.node.handle().stop_providing_blob(id).await.unwrap();
    let found = within("the providers", b.node.handle().find_blob_providers(id)).await;
    assert_eq!(found.unwrap(), vec![]);
}
