//! I/O faults under the store, through a redb storage backend that fails writes, fsyncs or
//! growth (a full disk) on command: the operation returns an error, the folder stays openable,
//! and nothing acknowledged is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use multibee_feed::{Backend, Options, Store};
use redb::StorageBackend;
use redb::backends::FileBackend;

use crate::common::run;

const NONE: u8 = 0;
const FAIL_SYNC: u8 = 1;
const FAIL_WRITE: u8 = 2;
const DISK_FULL: u8 = 3;

#[derive(Debug)]
struct Faulty {
    file: FileBackend,
    fault: Arc<AtomicU8>,
}

impl Faulty {
    fn check(&self, when: u8) -> std::io::Result<()> {
        match self.fault.load(Ordering::SeqCst) {
            f if f == when && f == DISK_FULL => Err(std::io::ErrorKind::StorageFull.into()),
            f if f == when => Err(std::io::Error::other("injected fault")),
            _ => Ok(()),
        }
    }
}

impl StorageBackend for Faulty {
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        if len > self.file.len()? {
            self.check(DISK_FULL)?;
        }
        self.file.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.check(FAIL_SYNC)?;
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check(FAIL_WRITE)?;
        self.check(DISK_FULL)?;
        self.file.write(offset, data)
    }
}

fn faulty(fault: Arc<AtomicU8>) -> Backend {
    Backend(Arc::new(move |path| {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let file = FileBackend::new(file).map_err(std::io::Error::other)?;
        Ok(Box::new(Faulty {
            file,
            fault: fault.clone(),
        }))
    }))
}

#[test]
fn failed_writes_fsyncs_and_a_full_disk_lose_nothing_acknowledged() {
    for fault_kind in [FAIL_SYNC, FAIL_WRITE, DISK_FULL] {
        let dir = tempfile::tempdir().unwrap();
        let fault = Arc::new(AtomicU8::new(NONE));
        let acked: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 100]).collect();
        let key = run(async {
            let options = Options::default().backend(faulty(fault.clone()));
            let store = Store::open_with(dir.path(), options).unwrap();
            let feed = store.create_feed().await.unwrap();
            feed.append_batch(acked.clone()).await.unwrap();
            fault.store(fault_kind, Ordering::SeqCst);
            // Enough data that the file must grow, so every kind of fault is hit.
            let big: Vec<Vec<u8>> = (0..2_000).map(|_| vec![7u8; 4_000]).collect();
            let failed = feed.append_batch(big).await;
            assert!(
                failed.is_err(),
                "fault {fault_kind}: the append reports the failure"
            );
            fault.store(NONE, Ordering::SeqCst);
            feed.key()
        });
        // Reopened on the plain file, the folder opens and holds everything acknowledged.
        run(async {
            let store = Store::open(dir.path()).unwrap();
            let feed = store.feed(&key).unwrap();
            assert!(feed.length() >= 20, "fault {fault_kind}");
            for (i, entry) in acked.iter().enumerate() {
                assert_eq!(
                    feed.get(i as u64).unwrap().as_ref(),
                    Some(entry),
                    "fault {fault_kind}"
                );
            }
            // And it takes new appends.
            feed.append(b"after".to_vec()).await.unwrap();
        });
    }
}
