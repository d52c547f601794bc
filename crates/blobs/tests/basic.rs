//! The store's API on good input.

use multibee_blobs::{BLOCK_SIZE, BlobId, Blobs, Error};
use tokio::io::AsyncReadExt;

use crate::common::{Pieces, bytes, split};

#[tokio::test]
async fn add_read_delete() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Blobs::open(dir.path()).unwrap();
    let data = bytes(100_000, 1);
    let id = blobs.add_bytes(&data).await.unwrap();
    assert_eq!(id, BlobId::from(blake3::hash(&data)));
    assert!(blobs.has(id).await.unwrap());
    assert_eq!(blobs.size(id).await.unwrap(), 100_000);
    assert_eq!(blobs.read(id).await.unwrap(), data);
    assert_eq!(
        blobs.read_range(id, 16_000, 20_000).await.unwrap(),
        &data[16_000..36_000]
    );
    assert_eq!(blobs.read_range(id, 100_000, 0).await.unwrap(), b"");
    let mut reader = blobs.reader(id).await.unwrap();
    assert_eq!(reader.size(), 100_000);
    let mut all = Vec::new();
    reader.read_to_end(&mut all).await.unwrap();
    assert_eq!(all, data);
    let status = blobs.status(id).await.unwrap().unwrap();
    assert!(status.complete && !status.pinned);
    assert_eq!(status.held, [0..100_000]);
    assert!(status.missing().is_empty());

    // Adding again is a no-op with the same id.
    assert_eq!(blobs.add_bytes(&data).await.unwrap(), id);
    blobs.delete(id).await.unwrap();
    assert!(!blobs.has(id).await.unwrap());
    assert!(matches!(blobs.read(id).await, Err(Error::NotFound(i)) if i == id));
    assert_eq!(blobs.list(None, 10).await.unwrap(), vec![]);
    assert!(!dir.path().join("data").join(id.to_hex()).exists());
}

#[tokio::test]
async fn file_reader_and_bytes_agree() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Blobs::open(dir.path().join("store")).unwrap();
    for len in [
        0,
        1,
        1024,
        1025,
        BLOCK_SIZE.bytes(),
        BLOCK_SIZE.bytes() + 1,
        300_000,
    ] {
        let data = bytes(len, len as u64);
        let path = dir.path().join(format!("file-{len}"));
        std::fs::write(&path, &data).unwrap();
        let expected = BlobId::from(blake3::hash(&data));
        assert_eq!(
            blobs.add_file(&path).await.unwrap(),
            expected,
            "file of {len}"
        );
        blobs.delete(expected).await.unwrap();
        let reader = Pieces(split(&data, &[7, 5000, 100_000]));
        assert_eq!(
            blobs.add_reader(reader).await.unwrap(),
            expected,
            "reader of {len}"
        );
        assert_eq!(blobs.read(expected).await.unwrap(), data);
        assert_eq!(
            blobs.add_bytes(&data).await.unwrap(),
            expected,
            "bytes of {len}"
        );
    }
    // Nothing is left in tmp/ after adds.
    assert_eq!(
        std::fs::read_dir(dir.path().join("store/tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn empty_blob() {
    let dir = tempfile::tempdir().unwrap();
    let a = Blobs::open(dir.path().join("a")).unwrap();
    let id = a.add_bytes(b"").await.unwrap();
    assert_eq!(id, BlobId::from(blake3::hash(b"")));
    assert_eq!(a.read(id).await.unwrap(), b"");
    assert_eq!(a.size(id).await.unwrap(), 0);
    let encoded = a.export_ranges(id, &[0..0]).await.unwrap();
    let b = Blobs::open(dir.path().join("b")).unwrap();
    let imported = b.import_ranges(id, 0, &[], &encoded).await.unwrap();
    assert!(imported.complete);
    assert!(b.has(id).await.unwrap());
}

#[tokio::test]
async fn list_pages_in_id_order() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Blobs::open(dir.path()).unwrap();
    let mut ids = Vec::new();
    for i in 0..10u8 {
        ids.push(blobs.add_bytes(&[i; 3]).await.unwrap());
    }
    ids.sort();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = blobs.list(after, 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().copied();
        seen.extend(page);
    }
    assert_eq!(seen, ids);
    assert_eq!(blobs.list(None, 0).await.unwrap(), vec![]);
}

#[tokio::test]
async fn pins_persist_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let blobs = Blobs::open(dir.path()).unwrap();
        let id = blobs.add_bytes(b"keep me").await.unwrap();
        blobs.pin(id).await.unwrap();
        assert!(blobs.status(id).await.unwrap().unwrap().pinned);
        // A second store on the same folder is refused while the first is open.
        assert!(matches!(Blobs::open(dir.path()), Err(Error::Locked(_))));
        id
    };
    let blobs = Blobs::open(dir.path()).unwrap();
    assert!(blobs.status(id).await.unwrap().unwrap().pinned);
    assert_eq!(blobs.read(id).await.unwrap(), b"keep me");
    // Re-adding keeps the pin.
    blobs.add_bytes(b"keep me").await.unwrap();
    assert!(blobs.status(id).await.unwrap().unwrap().pinned);
    blobs.unpin(id).await.unwrap();
    assert!(!blobs.status(id).await.unwrap().unwrap().pinned);
}

#[tokio::test]
async fn partial_download_resumes_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(200_000, 9);
    let a = Blobs::open(dir.path().join("a")).unwrap();
    let id = a.add_bytes(&data).await.unwrap();
    let size = data.len() as u64;
    let first = [0..50_000];
    let encoded = a.export_ranges(id, &first).await.unwrap();
    {
        let b = Blobs::open(dir.path().join("b")).unwrap();
        let imported = b.import_ranges(id, size, &first, &encoded).await.unwrap();
        assert!(!imported.complete);
        // 50_000 rounds up to four 16 KiB chunk groups.
        assert_eq!(imported.held_bytes, 65_536);
        assert!(!b.has(id).await.unwrap());
        assert!(matches!(b.read(id).await, Err(Error::Incomplete(_))));
        assert_eq!(b.list(None, 10).await.unwrap(), vec![]);
        let partial = b.list_partial(None, 10).await.unwrap();
        assert_eq!(partial.len(), 1);
        assert_eq!(
            (partial[0].0, partial[0].1.held.clone()),
            (id, vec![0..65_536])
        );
        // A partial blob serves what it holds, and only that.
        assert_eq!(b.export_ranges(id, &first).await.unwrap(), encoded);
        assert!(matches!(
            b.export_ranges(id, &[0..size]).await,
            Err(Error::NotHeld(_))
        ));
    }
    let b = Blobs::open(dir.path().join("b")).unwrap();
    let status = b.status(id).await.unwrap().unwrap();
    assert!(!status.complete);
    assert_eq!(status.held, [0..65_536]);
    let missing = status.missing();
    assert_eq!(missing, [65_536..size]);
    let encoded = a.export_ranges(id, &missing).await.unwrap();
    let imported = b.import_ranges(id, size, &missing, &encoded).await.unwrap();
    assert!(imported.complete);
    assert_eq!(b.read(id).await.unwrap(), data);
    assert_eq!(b.list(None, 10).await.unwrap(), vec![id]);
    assert!(b.list_partial(None, 10).await.unwrap().is_empty());
    // A complete blob exports like the original.
    assert_eq!(
        b.export_ranges(id, &[1000..190_000]).await.unwrap(),
        a.export_ranges(id, &[1000..190_000]).await.unwrap()
    );
}

#[tokio::test]
async fn crash_leftovers_never_pass_for_a_blob() {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(120_000, 11);
    let id = BlobId::of(&data);
    let size = data.len() as u64;
    let encoded = {
        let source = Blobs::open(dir.path().join("source")).unwrap();
        source.add_bytes(&data).await.unwrap();
        source.export_ranges(id, &[0..size]).await.unwrap()
    };
    let store = dir.path().join("store");
    drop(Blobs::open(&store).unwrap());
    // What a crash can leave: a half-written add in tmp/, and files renamed into place (or
    // partially written by an import) whose row was never committed.
    std::fs::write(store.join("tmp/0"), b"half an add").unwrap();
    std::fs::write(store.join("data").join(id.to_hex()), vec![0xff; 200_000]).unwrap();
    std::fs::write(store.join(format!("data/{}.obao", id.to_hex())), [7; 99]).unwrap();
    let blobs = Blobs::open(&store).unwrap();
    assert_eq!(std::fs::read_dir(store.join("tmp")).unwrap().count(), 0);
    assert!(!blobs.has(id).await.unwrap());
    assert_eq!(blobs.status(id).await.unwrap(), None);
    // An import over the leftovers holds only what it verified, and completes correctly.
    let half = [0..60_000];
    let encoded_half = {
        let source = Blobs::open(dir.path().join("source")).unwrap();
        source.export_ranges(id, &half).await.unwrap()
    };
    let imported = blobs
        .import_ranges(id, size, &half, &encoded_half)
        .await
        .unwrap();
    assert!(!imported.complete);
    let imported = blobs
        .import_ranges(id, size, &[0..size], &encoded)
        .await
        .unwrap();
    assert!(imported.complete);
    assert_eq!(blobs.read(id).await.unwrap(), data);
    assert_eq!(blobs.export_ranges(id, &[0..size]).await.unwrap(), encoded);

    // A partial blob whose files were removed by hand starts over instead of trusting them.
    let other = bytes(50_000, 12);
    let other_id = BlobId::of(&other);
    let source = Blobs::open(dir.path().join("source")).unwrap();
    source.add_bytes(&other).await.unwrap();
    let first = source.export_ranges(other_id, &[0..16_384]).await.unwrap();
    blobs
        .import_ranges(other_id, 50_000, &[0..16_384], &first)
        .await
        .unwrap();
    std::fs::remove_file(store.join("data").join(other_id.to_hex())).unwrap();
    let rest = source
        .export_ranges(other_id, &[16_384..50_000])
        .await
        .unwrap();
    let imported = blobs
        .import_ranges(other_id, 50_000, &[16_384..50_000], &rest)
        .await
        .unwrap();
    assert!(!imported.complete, "the lost first group is fetched again");
    let imported = blobs
        .import_ranges(other_id, 50_000, &[0..16_384], &first)
        .await
        .unwrap();
    assert!(imported.complete);
    assert_eq!(blobs.read(other_id).await.unwrap(), other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_imports_adds_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let source = Blobs::open(dir.path().join("source")).unwrap();
    let data = bytes(300_000, 13);
    let id = source.add_bytes(&data).await.unwrap();
    let size = data.len() as u64;
    let target = Blobs::open(dir.path().join("target")).unwrap();
    for round in 0..3 {
        let mut tasks = Vec::new();
        for i in 0..8u64 {
            let range = [i * 40_000..((i + 1) * 40_000).min(size)];
            let encoded = source.export_ranges(id, &range).await.unwrap();
            let target = target.clone();
            tasks.push(tokio::spawn(async move {
                target
                    .import_ranges(id, size, &range, &encoded)
                    .await
                    .unwrap();
            }));
        }
        if round == 1 {
            let target = target.clone();
            let data = data.clone();
            tasks.push(tokio::spawn(async move {
                target.add_bytes(&data).await.unwrap();
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert!(target.has(id).await.unwrap(), "round {round}");
        assert_eq!(target.read(id).await.unwrap(), data);
        target.delete(id).await.unwrap();
        assert_eq!(target.status(id).await.unwrap(), None);
    }
}

#[tokio::test]
async fn range_readers_stream_any_range_and_refuse_one_past_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Blobs::open(dir.path()).unwrap();
    let data = bytes(50_000, 3);
    let id = blobs.add_bytes(&data).await.unwrap();
    for (offset, len) in [
        (0, Some(50_000)),
        (1, Some(10)),
        (49_999, Some(1)),
        (50_000, Some(0)),
    ] {
        let mut reader = blobs.reader_range(id, offset, len).await.unwrap();
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.unwrap();
        let end = offset as usize + len.unwrap() as usize;
        assert_eq!(got, &data[offset as usize..end], "{offset} +{len:?}");
    }
    let mut tail = Vec::new();
    let mut reader = blobs.reader_range(id, 40_000, None).await.unwrap();
    reader.read_to_end(&mut tail).await.unwrap();
    assert_eq!(tail, &data[40_000..]);
    let beyond = blobs.reader_range(id, 49_000, Some(1_001)).await;
    assert!(
        matches!(beyond, Err(Error::OutOfRange { size: 50_000, .. })),
        "{beyond:?}"
    );
    let beyond = blobs.reader_range(id, 50_001, None).await;
    assert!(
        matches!(beyond, Err(Error::OutOfRange { .. })),
        "{beyond:?}"
    );
}

#[tokio::test]
async fn media_types_are_kept_checked_and_go_with_the_blob() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Blobs::open(dir.path()).unwrap();
    let id = blobs.add_bytes(b"<svg/>").await.unwrap();
    assert_eq!(blobs.media_type(id).await.unwrap(), None);
    blobs
        .set_media_type(id, Some("image/svg+xml"))
        .await
        .unwrap();
    assert_eq!(
        blobs.media_type(id).await.unwrap().as_deref(),
        Some("image/svg+xml")
    );
    for bad in ["", " text/plain", "text/\u{e9}", &"x".repeat(256)] {
        let err = blobs.set_media_type(id, Some(bad)).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{bad:?}: {err}");
    }
    let missing = BlobId::of(b"not added");
    let err = blobs
        .set_media_type(missing, Some("text/plain"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err}");
    drop(blobs);
    let blobs = Blobs::open(dir.path()).unwrap();
    assert_eq!(
        blobs.media_type(id).await.unwrap().as_deref(),
        Some("image/svg+xml")
    );
    blobs.delete(id).await.unwrap();
    assert_eq!(blobs.media_type(id).await.unwrap(), None);
}

#[tokio::test]
async fn arrivals_tell_of_adds_and_of_finished_downloads_once() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Blobs::open(dir.path()).unwrap();
    let mut arrivals = blobs.arrivals();
    let id = blobs.add_bytes(b"hello").await.unwrap();
    let arrival = arrivals.recv().await.unwrap();
    assert_eq!((arrival.id, arrival.size), (id, 5));

    // A download in two parts arrives once, when its last part is in.
    let source_dir = tempfile::tempdir().unwrap();
    let source = Blobs::open(source_dir.path()).unwrap();
    let data = bytes(2 * BLOCK_SIZE.bytes(), 9);
    let big = source.add_bytes(&data).await.unwrap();
    let size = data.len() as u64;
    let half = BLOCK_SIZE.bytes() as u64;
    for part in [0..half, half..size] {
        let ranges = std::slice::from_ref(&part);
        let encoded = source.export_ranges(big, ranges).await.unwrap();
        blobs
            .import_ranges(big, size, ranges, &encoded)
            .await
            .unwrap();
    }
    let arrival = arrivals.recv().await.unwrap();
    assert_eq!((arrival.id, arrival.size), (big, size));
    assert!(arrivals.try_recv().is_err(), "one arrival per blob");
}

#[tokio::test]
async fn a_format_1_store_opens_and_is_upgraded_and_an_unknown_format_is_refused() {
    const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta-1");
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let blobs = Blobs::open(dir.path()).unwrap();
        blobs.add_bytes(b"kept across the upgrade").await.unwrap()
    };
    let set_format = |version: u32| {
        let db = redb::Database::open(dir.path().join(multibee_blobs::DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("format", version.to_le_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
    };
    let format = || {
        use redb::ReadableDatabase;
        let db = redb::Database::open(dir.path().join(multibee_blobs::DB_FILE)).unwrap();
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(META).unwrap();
        table.get("format").unwrap().unwrap().value().to_vec()
    };
    set_format(1);
    {
        let blobs = Blobs::open(dir.path()).unwrap();
        assert_eq!(blobs.read(id).await.unwrap(), b"kept across the upgrade");
    }
    assert_eq!(format(), 2u32.to_le_bytes());
    set_format(3);
    assert!(matches!(Blobs::open(dir.path()), Err(Error::Corrupt(_))));
}
