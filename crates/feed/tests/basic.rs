//! Appending, reading, reopening, subscribing and locking.

use multibee_feed::{Error, FeedKey, Options, Store, SyncMode};

use crate::common::{all_entries, entry, run, writer_with};

#[test]
fn append_get_range_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let key = run(async {
        let store = Store::open(dir.path()).unwrap();
        let feed = store.create_feed().await.unwrap();
        assert!(feed.is_writable());
        assert_eq!(feed.length(), 0);
        assert_eq!(feed.append(b"a".to_vec()).await.unwrap(), 1);
        assert_eq!(
            feed.append_batch(vec![b"b".to_vec(), Vec::new(), b"d".to_vec()])
                .await
                .unwrap(),
            4
        );
        assert_eq!(feed.get(0).unwrap(), Some(b"a".to_vec()));
        assert_eq!(feed.get(2).unwrap(), Some(Vec::new()));
        assert_eq!(feed.get(4).unwrap(), None);
        let range: Vec<_> = feed.range(1..3).unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(range, vec![(1, b"b".to_vec()), (2, Vec::new())]);
        assert!(matches!(feed.range(2..9), Err(Error::InvalidArgument(_))));
        let head = feed.head().unwrap().unwrap();
        assert_eq!(head.length, 4);
        head.verify(&feed.key()).unwrap();
        feed.key()
    });
    // Reopen: same key, same entries, still writable, and appends continue.
    run(async {
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.feeds(), vec![key]);
        let feed = store.feed(&key).unwrap();
        assert!(feed.is_writable());
        assert_eq!(feed.length(), 4);
        assert_eq!(feed.get(3).unwrap(), Some(b"d".to_vec()));
        assert_eq!(feed.append(b"e".to_vec()).await.unwrap(), 5);
        let parsed: FeedKey = key.to_string().parse().unwrap();
        assert_eq!(parsed, key);
        assert_eq!(feed.discovery_key(), key.discovery_key());
        assert_ne!(feed.discovery_key().0, key.0);
    });
}

#[test]
fn concurrent_appenders_are_group_committed_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let store = Store::open(dir.path()).unwrap();
        let feed = store.create_feed().await.unwrap();
        let tasks: Vec<_> = (0..64u64)
            .map(|t| {
                let feed = feed.clone();
                tokio::spawn(async move {
                    let mut lengths = Vec::new();
                    for i in 0..20u64 {
                        let content = format!("{t}:{i}").into_bytes();
                        lengths.push((feed.append(content.clone()).await.unwrap(), content));
                    }
                    lengths
                })
            })
            .collect();
        let mut acked = Vec::new();
        for task in tasks {
            acked.extend(task.await.unwrap());
        }
        assert_eq!(feed.length(), 64 * 20);
        let mut lengths: Vec<u64> = acked.iter().map(|(l, _)| *l).collect();
        lengths.sort();
        lengths.dedup();
        assert_eq!(lengths.len(), 64 * 20, "every append got its own position");
        for (length, content) in acked {
            assert_eq!(feed.get(length - 1).unwrap(), Some(content));
        }
        feed.head().unwrap().unwrap().verify(&feed.key()).unwrap();
    });
}

#[test]
fn subscribers_see_every_new_length() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let store = Store::open(dir.path()).unwrap();
        let feed = store.create_feed().await.unwrap();
        let mut sub = feed.subscribe();
        let writer = feed.clone();
        let appends = tokio::spawn(async move {
            for i in 0..50 {
                writer.append(entry(i)).await.unwrap();
            }
        });
        // A watch holds the latest value: the subscriber sees lengths rise to 50, in order.
        let mut seen = 0;
        while seen < 50 {
            sub.changed().await.unwrap();
            let length = sub.borrow_and_update().length;
            assert!(length > seen);
            seen = length;
        }
        appends.await.unwrap();
    });
}

#[test]
fn a_job_that_only_reads_a_feed_neither_rewrites_nor_publishes_it() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let store = Store::open(dir.path()).unwrap();
        let feed = store.create_feed().await.unwrap();
        feed.append(entry(0)).await.unwrap();
        let mut sub = feed.subscribe();
        sub.borrow_and_update();
        let key = feed.key();
        let length = store
            .write(move |txn| {
                let length = txn.length(&key)?;
                txn.entries(&key, 0..length)?;
                Ok::<_, Error>(length)
            })
            .await
            .unwrap();
        assert_eq!(length, 1);
        assert!(
            !sub.has_changed().unwrap(),
            "a read woke the feed's subscribers"
        );
        feed.append(entry(1)).await.unwrap();
        assert!(sub.has_changed().unwrap());
        assert_eq!(sub.borrow_and_update().length, 2);
    });
}

#[test]
fn relaxed_mode_keeps_data_across_a_clean_close() {
    let dir = tempfile::tempdir().unwrap();
    let key = run(async {
        let store =
            Store::open_with(dir.path(), Options::default().sync(SyncMode::Relaxed)).unwrap();
        let feed = store.create_feed().await.unwrap();
        for i in 0..100 {
            feed.append(entry(i)).await.unwrap();
        }
        feed.key()
    });
    let store = Store::open(dir.path()).unwrap();
    let feed = store.feed(&key).unwrap();
    assert_eq!(all_entries(&feed), (0..100).map(entry).collect::<Vec<_>>());
}

#[test]
fn a_second_open_of_the_folder_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    match Store::open(dir.path()) {
        Err(Error::Locked(path)) => assert_eq!(path, dir.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(store);
    Store::open(dir.path()).unwrap();
}

#[cfg(unix)]
#[test]
fn the_database_holding_secret_keys_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    run(async {
        writer_with(dir.path(), 1, 1).await;
    });
    let db = dir.path().join(multibee_feed::DB_FILE);
    assert_eq!(
        std::fs::metadata(db).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let folder = std::fs::metadata(dir.path()).unwrap().permissions().mode();
    assert_eq!(folder & 0o777, 0o700);
}

#[test]
fn appending_to_a_replica_or_an_oversized_entry_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let store = Store::open(dir.path()).unwrap();
        let other = FeedKey([9; 32]);
        let replica = store.replica(other).await.unwrap();
        assert!(!replica.is_writable());
        assert!(
            matches!(replica.append(b"x".to_vec()).await, Err(Error::NotWritable(k)) if k == other)
        );
        let feed = store.create_feed().await.unwrap();
        let huge = vec![0u8; (8 << 20) + 1];
        assert!(matches!(
            feed.append(huge).await,
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(feed.length(), 0);
        assert!(matches!(
            "not hex".parse::<FeedKey>(),
            Err(multibee_feed::ParseKeyError { .. })
        ));
    });
}

#[test]
fn a_job_holding_the_last_handle_neither_deadlocks_nor_keeps_the_folder_open() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let store = Store::open(dir.path()).unwrap();
        let captured = store.clone();
        let length = store
            .write(move |_txn| Ok::<_, multibee_feed::Error>(captured.feeds().len()))
            .await
            .unwrap();
        assert_eq!(length, 0);
    });
    // Every handle is gone once the caller's are: the folder reopens at once.
    Store::open(dir.path()).unwrap();
}

#[test]
fn a_store_with_a_tiny_page_cache_reads_back_what_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let options = Options::default().cache_bytes(64 << 10);
        let store = Store::open_with(dir.path(), options).unwrap();
        assert_eq!(store.limits().max_entry_bytes, 8 << 20);
        let feed = store.create_feed().await.unwrap();
        let entries: Vec<Vec<u8>> = (0..5_000u64).map(|i| vec![i as u8; 200]).collect();
        feed.append_batch(entries.clone()).await.unwrap();
        let back: Vec<Vec<u8>> = feed
            .range(0..5_000)
            .unwrap()
            .map(|e| e.unwrap().1)
            .collect();
        assert_eq!(back, entries);
    });
}

#[test]
fn feeds_are_found_by_discovery_key_own_replicated_and_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (own, replica) = run(async {
        let store = Store::open(dir.path()).unwrap();
        let own = store.create_feed().await.unwrap().key();
        let elsewhere = tempfile::tempdir().unwrap();
        let other = Store::open(elsewhere.path()).unwrap();
        let replica = other.create_feed().await.unwrap().key();
        store.replica(replica).await.unwrap();
        for key in [own, replica] {
            let found = store.feed_by_discovery_key(&key.discovery_key()).unwrap();
            assert_eq!(found.key(), key);
        }
        (own, replica)
    });
    let store = Store::open(dir.path()).unwrap();
    for key in [own, replica] {
        let found = store.feed_by_discovery_key(&key.discovery_key()).unwrap();
        assert_eq!(found.key(), key);
    }
    let unknown = FeedKey([7; 32]).discovery_key();
    assert!(store.feed_by_discovery_key(&unknown).is_none());
}
