//! Kill -9 in the middle of adds and imports: what reopens is complete and matches its id, or
//! partial with held ranges that verify, and the download then completes.
//!
//! The parent test re-runs this test binary as a child (`crash::child`, which does nothing
//! unless `BLOBS_CRASH_DIR` is set), kills it at a random moment and checks the folder.

use std::process::{Command, Stdio};
use std::time::Duration;

use multibee_blobs::{BlobId, Blobs};

use crate::common::bytes;

const DIR_VAR: &str = "BLOBS_CRASH_DIR";
const BLOBS: u64 = 40;

/// Blob `i` of the child's sequence.
fn blob(i: u64) -> Vec<u8> {
    bytes(((i * 7919) % 97 + 1) as usize * 3_001, i)
}

#[test]
fn child() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    crate::common::runtime().block_on(async {
        let source = Blobs::open(dir.join("source")).unwrap();
        let target = Blobs::open(dir.join("target")).unwrap();
        for i in 0..BLOBS {
            let data = blob(i);
            let id = source.add_bytes(&data).await.unwrap();
            let size = data.len() as u64;
            // The target fetches it in 3 pieces, last group first.
            let cuts = [size * 2 / 3..size, 0..size / 3, size / 3..size * 2 / 3];
            for range in cuts {
                let range = std::slice::from_ref(&range);
                let encoded = source.export_ranges(id, range).await.unwrap();
                target
                    .import_ranges(id, size, range, &encoded)
                    .await
                    .unwrap();
            }
        }
    });
    // Finished before the kill: wait for it.
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn killed_adds_and_imports_leave_verified_blobs() {
    for (round, delay_ms) in [20u64, 45, 70, 95, 120, 145].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash::child", "--nocapture", "--test-threads=1"])
            .env(DIR_VAR, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        crate::common::runtime().block_on(check(dir.path(), round));
    }
}

async fn check(dir: &std::path::Path, round: usize) {
    let (Ok(source), Ok(target)) = (
        Blobs::open(dir.join("source")),
        Blobs::open(dir.join("target")),
    ) else {
        return; // killed before the stores were created
    };
    let verifier = Blobs::open(dir.join("verifier")).unwrap();
    let (mut complete, mut partial) = (0, 0);
    for i in 0..BLOBS {
        let data = blob(i);
        let id = BlobId::of(&data);
        let size = data.len() as u64;
        for store in [&source, &target] {
            let Some(status) = store.status(id).await.unwrap() else {
                continue;
            };
            assert_eq!(status.size, size);
            if status.complete {
                complete += 1;
                assert_eq!(
                    store.read(id).await.unwrap(),
                    data,
                    "round {round}: blob {i}"
                );
            } else {
                partial += 1;
            }
            // Whatever is held exports with proofs that verify against the id.
            let encoded = store.export_ranges(id, &status.held).await.unwrap();
            verifier
                .import_ranges(id, size, &status.held, &encoded)
                .await
                .unwrap();
            verifier.delete(id).await.unwrap();
        }
        // A partial download resumes to completion from what it holds.
        if source.has(id).await.unwrap()
            && let Some(status) = target.status(id).await.unwrap()
            && !status.complete
        {
            let missing = status.missing();
            let encoded = source.export_ranges(id, &missing).await.unwrap();
            let imported = target
                .import_ranges(id, size, &missing, &encoded)
                .await
                .unwrap();
            assert!(imported.complete);
            assert_eq!(target.read(id).await.unwrap(), data);
        }
    }
    eprintln!("round {round}: {complete} complete and {partial} partial blobs after the kill");
}
