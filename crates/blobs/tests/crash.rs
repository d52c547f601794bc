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

const DOWNLOAD_VAR: &str = "BLOBS_DOWNLOAD_DIR";
/// A download of this many bytes passes two syncs (every `SYNC_BYTES`).
const DOWNLOAD_BYTES: usize = 80 << 20;
/// It stops (and waits to be killed) after this many bytes.
const STOP_AT: u64 = 76 << 20;
const REQUEST: u64 = 2 << 20;

/// With `BLOBS_DOWNLOAD_DIR` set: downloads most of a blob in 2 MiB requests, flushes if
/// `BLOBS_DOWNLOAD_FLUSH` is set, prints how much it holds and waits to be killed.
#[test]
fn download_child() {
    let Some(dir) = std::env::var_os(DOWNLOAD_VAR) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    crate::common::runtime().block_on(async {
        let source = Blobs::open(dir.join("source")).unwrap();
        let target = Blobs::open(dir.join("target")).unwrap();
        let data = bytes(DOWNLOAD_BYTES, 77);
        let id = source.add_bytes(&data).await.unwrap();
        let size = data.len() as u64;
        let mut held = 0;
        for start in (0..STOP_AT).step_by(REQUEST as usize) {
            let range = [start..start + REQUEST];
            let encoded = source.export_ranges(id, &range).await.unwrap();
            held = target
                .import_ranges(id, size, &range, &encoded)
                .await
                .unwrap()
                .held_bytes;
        }
        if std::env::var_os("BLOBS_DOWNLOAD_FLUSH").is_some() {
            target.flush().await.unwrap();
        }
        println!("held {held}");
    });
    std::thread::sleep(Duration::from_secs(600));
}

/// A download killed between syncs keeps every group it imported (the bytes were in the page
/// cache; the groups not synced are verified again when the store opens), and a group whose
/// bytes did not survive (as after a power loss; here overwritten by hand) is dropped and
/// fetched again. After `flush`, nothing needs verifying.
#[test]
fn a_killed_download_keeps_what_verifies_and_drops_what_did_not_survive() {
    use std::io::BufRead;
    for (flush, damage) in [(false, false), (false, true), (true, false)] {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", "crash::download_child", "--nocapture"])
            .args(["--test-threads=1"])
            .env(DOWNLOAD_VAR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if flush {
            command.env("BLOBS_DOWNLOAD_FLUSH", "1");
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        // The child prints its line only once the imports (and the flush) returned.
        let line = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| Some(l.split_once("held ")?.1.to_string()));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        // The harness prints the test's name first, on the same line.
        let imported: u64 = line.expect("the child stopped early").parse().unwrap();
        assert_eq!(imported, STOP_AT);

        let data = bytes(DOWNLOAD_BYTES, 77);
        let id = BlobId::of(&data);
        // A 16 KiB group of the last request (never synced) loses its bytes.
        let group = 16u64 << 10;
        let damaged = (STOP_AT - REQUEST / 2) / group * group;
        if damage {
            use std::os::unix::fs::FileExt;
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.path().join("target/data").join(id.to_hex()))
                .unwrap();
            file.write_all_at(&[0u8; 100], damaged + 5).unwrap();
        }

        crate::common::runtime().block_on(async {
            let source = Blobs::open(dir.path().join("source")).unwrap();
            let target = Blobs::open(dir.path().join("target")).unwrap();
            let status = target.status(id).await.unwrap().unwrap();
            match damage {
                false => assert_eq!(status.held, [0..imported]),
                true => assert_eq!(status.held, [0..damaged, damaged + group..imported]),
            }
            let verifier = Blobs::open(dir.path().join("verifier")).unwrap();
            let encoded = target.export_ranges(id, &status.held).await.unwrap();
            let size = data.len() as u64;
            verifier
                .import_ranges(id, size, &status.held, &encoded)
                .await
                .unwrap();
            let missing = status.missing();
            let encoded = source.export_ranges(id, &missing).await.unwrap();
            let done = target
                .import_ranges(id, size, &missing, &encoded)
                .await
                .unwrap();
            assert!(done.complete);
            assert_eq!(target.read(id).await.unwrap(), data);
        });
    }
}
