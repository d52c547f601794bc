//! The library's blob fetcher: a blob referenced by a document merged while no holder was
//! connected is fetched once a holder connects (policy `all`), or once a connected peer
//! completes it, and not under `none`; arrivals carry the keys that reference the blob.

use multibee::blob_sync::{BlobFetcher, FetchPolicy, FetcherStatus};
use multibee::blobs::{BlobId, Blobs};
use multibee::{ChangesOptions, MultiBee, Options, Value};
use serde_json::json;

use crate::common::{PATIENCE, config, waiting, within};

/// A: a served database without a blob store. B: joined A, with a blob store and a fetcher
/// under `policy`. C: a bare node holding the blob, connected to nobody. A writes documents
/// referencing the blob; B merges them and cannot fetch it (A has no blob store).
struct Scene {
    _dir: tempfile::TempDir,
    a: multibee::Served,
    b: multibee::Served,
    b_blobs: Blobs,
    c_blobs: Blobs,
    fetcher: BlobFetcher,
    c: multibee::net::Node,
    id: BlobId,
    data: Vec<u8>,
}

async fn scene(policy: FetchPolicy) -> Scene {
    let dir = tempfile::tempdir().unwrap();
    let a_mb = MultiBee::open(dir.path().join("a")).await.unwrap();
    let a = multibee::serve(&a_mb, config()).await.unwrap();
    let b_blobs = Blobs::open(dir.path().join("b-blobs")).unwrap();
    let ticket = a.invite().await.unwrap();
    let b = within(multibee::join(
        &dir.path().join("b"),
        &ticket,
        Options::default(),
        config().blobs(b_blobs.clone()),
    ))
    .await
    .unwrap();
    let b_mb = b.multibee().clone();
    let fetcher = BlobFetcher::start(b_mb.clone(), b.node(), b_blobs.clone(), policy).unwrap();

    let c_blobs = Blobs::open(dir.path().join("c-blobs")).unwrap();
    let data: Vec<u8> = (0..400_000u32).map(|i| (i % 249) as u8).collect();
    let id = c_blobs.add_bytes(&data).await.unwrap();
    let c_store = multibee::feed::Store::open(dir.path().join("c")).unwrap();
    let c = multibee::net::Node::start(c_store, config().blobs(c_blobs.clone()))
        .await
        .unwrap();

    // Two documents reference the blob; the second stops referencing it.
    let mut changes = b_mb
        .changes(ChangesOptions {
            live: true,
            ..Default::default()
        })
        .unwrap();
    let reference = json!({"$blob": id.to_hex(), "size": data.len(), "type": "image/png"});
    let a_mb = a.multibee();
    a_mb.put("photos/a", Value::Json(json!({"img": reference})))
        .await
        .unwrap();
    a_mb.put("photos/b", Value::Json(json!({"img": reference})))
        .await
        .unwrap();
    let last = Value::Json(json!({"title": "no photo any more"}));
    a_mb.put("photos/b", last.clone()).await.unwrap();
    let seq = waiting("B to merge the documents", async {
        loop {
            let change = changes.next().await.expect("a live stream").unwrap();
            if change.key == b"photos/b" && change.value.as_ref() == Some(&last) {
                return change.seq;
            }
        }
    })
    .await;
    // The fetcher read them all.
    let mut status = fetcher.status();
    waiting(
        "the fetcher to read the changes",
        status.wait_for(|s| s.next_seq > seq),
    )
    .await
    .unwrap();
    Scene {
        _dir: dir,
        a,
        b,
        b_blobs,
        c_blobs,
        fetcher,
        c,
        id,
        data,
    }
}

async fn connect_b_to_c(scene: &Scene) {
    let addr = scene.c.handle().listen_addrs().await.unwrap()[0].clone();
    within(scene.b.node().connect(addr, PATIENCE))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wanted_blob_is_fetched_when_a_holder_connects_with_its_referencing_keys() {
    let scene = scene(FetchPolicy::All).await;
    let mut arrivals = scene.fetcher.arrivals();
    // B tried the peers it had (A, without a blob store) and gave up: the blob stays wanted.
    let mut status = scene.fetcher.status();
    let tried = |s: &FetcherStatus| s.wanted == 1 && s.fetching == 0 && s.failed >= 1;
    waiting("the first fetch to fail", status.wait_for(tried))
        .await
        .unwrap();
    assert!(!scene.b_blobs.has(scene.id).await.unwrap());

    // C connects: B lists its ids, finds the wanted blob and fetches it.
    connect_b_to_c(&scene).await;
    let arrival = waiting("the blob to arrive", async {
        loop {
            let arrival = arrivals.recv().await.unwrap();
            if arrival.id == scene.id {
                return arrival;
            }
        }
    })
    .await;
    assert_eq!(
        (arrival.size, arrival.keys.clone()),
        (scene.data.len() as u64, vec![b"photos/a".to_vec()]),
        "{arrival:?}"
    );
    assert!(scene.b_blobs.read(scene.id).await.unwrap() == scene.data);
    assert_eq!(
        scene.b_blobs.media_type(scene.id).await.unwrap().as_deref(),
        Some("image/png")
    );
    waiting("nothing to be wanted", status.wait_for(|s| s.wanted == 0))
        .await
        .unwrap();

    // A document references a blob nobody holds yet: B tries (C is connected now) and fails.
    let later: Vec<u8> = (0..50_000u32).map(|i| (i % 7) as u8).collect();
    let later_id = BlobId::of(&later);
    let failed = status.borrow().failed;
    let doc = json!({"file": {"$blob": later_id.to_hex()}});
    scene
        .a
        .multibee()
        .put("docs/later", Value::Json(doc))
        .await
        .unwrap();
    let tried = |s: &FetcherStatus| s.wanted == 1 && s.fetching == 0 && s.failed > failed;
    waiting(
        "the fetch of the later blob to fail",
        status.wait_for(tried),
    )
    .await
    .unwrap();
    // Once C completes it, C's live queue tells B, which fetches it.
    scene.c_blobs.add_bytes(&later).await.unwrap();
    let arrival = waiting("the later blob to arrive", async {
        loop {
            let arrival = arrivals.recv().await.unwrap();
            if arrival.id == later_id {
                return arrival;
            }
        }
    })
    .await;
    assert_eq!(arrival.keys, vec![b"docs/later".to_vec()]);
    assert!(scene.b_blobs.read(later_id).await.unwrap() == later);

    // A blob added on B and referenced later: its arrival names no key (none referenced it).
    let local = scene.b_blobs.add_bytes(b"a note").await.unwrap();
    let arrival = within(arrivals.recv()).await.unwrap();
    assert_eq!(
        (arrival.id, arrival.size, arrival.keys.len()),
        (local, 6, 0)
    );
    drop(scene.fetcher);
    scene.c.shutdown().await;
    scene.b.shutdown().await;
    scene.a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_policy_none_a_holder_connecting_brings_nothing() {
    let scene = scene(FetchPolicy::None).await;
    assert_eq!(scene.fetcher.status().borrow().wanted, 0);
    connect_b_to_c(&scene).await;
    // The fetcher takes no peer's list under `none`; a document read after the connection is
    // processed after it, and still nothing is wanted or fetched.
    let seq = {
        let mut changes = scene
            .b
            .multibee()
            .changes(ChangesOptions {
                live: true,
                ..Default::default()
            })
            .unwrap();
        scene
            .a
            .multibee()
            .put(
                "photos/c",
                Value::Json(json!({"img": {"$blob": scene.id.to_hex()}})),
            )
            .await
            .unwrap();
        waiting("B to merge photos/c", async {
            loop {
                let change = changes.next().await.unwrap().unwrap();
                if change.key == b"photos/c" {
                    return change.seq;
                }
            }
        })
        .await
    };
    let mut status = scene.fetcher.status();
    waiting(
        "the fetcher to read it",
        status.wait_for(|s| s.next_seq > seq),
    )
    .await
    .unwrap();
    let status = status.borrow().clone();
    assert_eq!(
        (status.wanted, status.fetching, status.fetched),
        (0, 0, 0),
        "{status:?}"
    );
    assert_eq!(status.peers_listed, 0, "{status:?}");
    assert!(!scene.b_blobs.has(scene.id).await.unwrap());
    drop(scene.fetcher);
    scene.c.shutdown().await;
    scene.b.shutdown().await;
    scene.a.shutdown().await;
}
