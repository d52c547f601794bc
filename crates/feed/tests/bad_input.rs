//! Corrupt and truncated files give clear errors, never a panic.

use multibee_feed::{DB_FILE, Error, Store};

use crate::common::{run, writer_with};

#[test]
fn a_file_of_garbage_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(DB_FILE), vec![0xa5u8; 64 * 1024]).unwrap();
    match Store::open(dir.path()) {
        Err(Error::Corrupt(msg)) => assert!(msg.contains(DB_FILE), "{msg}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_truncated_or_damaged_file_errors_or_opens_but_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        writer_with(dir.path(), 2_000, 100).await;
    });
    let original = std::fs::read(dir.path().join(DB_FILE)).unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    for round in 0..24 {
        let mut bytes = original.clone();
        if round % 2 == 0 {
            bytes.truncate(rng.usize(0..bytes.len()));
        } else {
            for _ in 0..16 {
                let i = rng.usize(0..bytes.len());
                bytes[i] ^= 1 << rng.u8(0..8);
            }
        }
        let case = tempfile::tempdir().unwrap();
        std::fs::write(case.path().join(DB_FILE), &bytes).unwrap();
        // Any outcome but a panic is acceptable: an error, or a store whose reads either
        // succeed or report an error.
        if let Ok(store) = Store::open(case.path()) {
            for key in store.feeds() {
                let feed = store.feed(&key).unwrap();
                let _ = feed.head();
                if let Ok(entries) = feed.range(0..feed.length()) {
                    entries.for_each(drop);
                }
                let _ = feed.proof(0..feed.length());
            }
        }
    }
}

#[test]
fn a_damaged_feed_record_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        writer_with(dir.path(), 5, 5).await;
    });
    let db = redb::Database::create(dir.path().join(DB_FILE)).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let def: redb::TableDefinition<[u8; 32], &[u8]> = redb::TableDefinition::new("feeds-1");
        let mut table = txn.open_table(def).unwrap();
        let key = redb::ReadableTable::iter(&table)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .0
            .value();
        table
            .insert(key, b"\xff\xff not a record".as_slice())
            .unwrap();
    }
    txn.commit().unwrap();
    drop(db);
    match Store::open(dir.path()) {
        Err(Error::Corrupt(msg)) => assert!(msg.contains("feed record"), "{msg}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[cfg(unix)]
#[test]
fn opening_never_changes_a_folder_it_cannot_open_or_does_not_own() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = |p: &std::path::Path| std::fs::metadata(p).unwrap();
    let parent = tempfile::tempdir().unwrap();
    let running_as = meta(parent.path()).uid();
    // A folder of another user (only root can make one): left exactly as it is.
    let theirs = parent.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o755)).unwrap();
    if running_as == 0 {
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        drop(Store::open(&theirs));
        assert_eq!(meta(&theirs).mode() & 0o777, 0o755);
    }
    // A folder this process cannot open (root can open any): an error, and unchanged.
    let closed = parent.path().join("closed");
    std::fs::create_dir(&closed).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read_dir(&closed).is_err() {
        assert!(Store::open(&closed).is_err());
        assert_eq!(meta(&closed).mode() & 0o777, 0o000);
    }
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    // A folder the store creates, parents included, is the owner's only.
    let fresh = parent.path().join("a").join("b");
    drop(Store::open(&fresh).unwrap());
    assert_eq!(meta(&fresh).mode() & 0o077, 0);
}
