//! I/O faults under the store, through a redb storage backend that fails writes, fsyncs or
//! growth (a full disk) on command: the operation returns an error, the folder stays openable,
//! and nothing acknowledged is lost.

use multibee_feed::faults::{Fault, Faults};
use multibee_feed::{Options, Store};

use crate::common::run;

#[test]
fn failed_writes_fsyncs_and_a_full_disk_lose_nothing_acknowledged() {
    for fault_kind in [Fault::FailSync, Fault::FailWrite, Fault::DiskFull] {
        let dir = tempfile::tempdir().unwrap();
        let faults = Faults::new();
        let acked: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 100]).collect();
        let key = run(async {
            let options = Options::default().backend(faults.backend());
            let store = Store::open_with(dir.path(), options).unwrap();
            let feed = store.create_feed().await.unwrap();
            feed.append_batch(acked.clone()).await.unwrap();
            faults.set(fault_kind);
            // Enough data that the file must grow, so every kind of fault is hit.
            let big: Vec<Vec<u8>> = (0..2_000).map(|_| vec![7u8; 4_000]).collect();
            let failed = feed.append_batch(big).await;
            assert!(
                failed.is_err(),
                "fault {fault_kind:?}: the append reports the failure"
            );
            faults.set(Fault::None);
            feed.key()
        });
        // Reopened on the plain file, the folder opens and holds everything acknowledged.
        run(async {
            let store = Store::open(dir.path()).unwrap();
            let feed = store.feed(&key).unwrap();
            assert!(feed.length() >= 20, "fault {fault_kind:?}");
            for (i, entry) in acked.iter().enumerate() {
                assert_eq!(
                    feed.get(i as u64).unwrap().as_ref(),
                    Some(entry),
                    "fault {fault_kind:?}"
                );
            }
            // And it takes new appends.
            feed.append(b"after".to_vec()).await.unwrap();
        });
    }
}
