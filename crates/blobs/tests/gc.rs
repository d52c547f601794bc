//! Garbage collection keeps what is referenced, pinned, partial or new, and removes the rest;
//! racing adds lose nothing.

use std::collections::HashSet;
use std::time::Duration;

use multibee_blobs::{BLOCK_SIZE, Blobs, Error};

use crate::common::bytes;

#[tokio::test]
async fn a_collection_keeps_referenced_pinned_partial_and_new_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Blobs::open(dir.path()).unwrap();
    let referenced = blobs.add_bytes(b"referenced").await.unwrap();
    let pinned = blobs.add_bytes(b"pinned").await.unwrap();
    blobs.pin(pinned).await.unwrap();
    let garbage = blobs.add_bytes(&bytes(70_000, 1)).await.unwrap();
    // A partial blob: the first chunk group of a larger one, imported from another store.
    let source_dir = tempfile::tempdir().unwrap();
    let source = Blobs::open(source_dir.path()).unwrap();
    let big = bytes(3 * BLOCK_SIZE.bytes(), 2);
    let partial = source.add_bytes(&big).await.unwrap();
    let first = 0..BLOCK_SIZE.bytes() as u64;
    let encoded = source
        .export_ranges(partial, std::slice::from_ref(&first))
        .await
        .unwrap();
    blobs
        .import_ranges(partial, big.len() as u64, &[first], &encoded)
        .await
        .unwrap();

    // Within the grace period every new blob is spared.
    let kept = blobs
        .collect(HashSet::from([referenced]), Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(kept.removed.is_empty(), "{kept:?}");
    assert_eq!(
        (kept.referenced, kept.pinned, kept.partial, kept.fresh),
        (1, 1, 1, 1)
    );

    // Past it, only the unreferenced, unpinned, complete one goes.
    let collected = blobs
        .collect(HashSet::from([referenced]), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(collected.removed, vec![garbage]);
    assert_eq!(collected.removed_bytes, 70_000);
    assert!(!blobs.has(garbage).await.unwrap());
    for id in [referenced, pinned] {
        assert!(blobs.has(id).await.unwrap());
    }
    assert!(!blobs.status(partial).await.unwrap().unwrap().complete);
    assert!(!dir.path().join("data").join(garbage.to_hex()).exists());

    // Unpinned and unreferenced, it goes at the next collection; a touched one is spared.
    blobs.unpin(pinned).await.unwrap();
    blobs.touch(referenced).await.unwrap();
    let collected = blobs
        .collect(HashSet::new(), Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(!collected.removed.contains(&referenced));
    let err = blobs.touch(garbage).await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err}");
}

#[tokio::test]
async fn adds_racing_a_collection_are_never_removed() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Blobs::open(dir.path()).unwrap();
    for i in 0..50 {
        blobs.add_bytes(&bytes(1_000, 1_000 + i)).await.unwrap();
    }
    let adder = {
        let blobs = blobs.clone();
        tokio::spawn(async move {
            let mut added = Vec::new();
            for i in 0..200 {
                added.push(blobs.add_bytes(&bytes(2_000, i)).await.unwrap());
            }
            added
        })
    };
    // Collections with a grace period, over and over while the adds go on.
    let mut collections = 0;
    while !adder.is_finished() || collections < 3 {
        blobs
            .collect(HashSet::new(), Duration::from_secs(3600))
            .await
            .unwrap();
        collections += 1;
    }
    for id in adder.await.unwrap() {
        assert!(
            blobs.has(id).await.unwrap(),
            "{id} was added and then collected"
        );
    }
}
