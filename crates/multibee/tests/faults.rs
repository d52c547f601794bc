//! I/O faults under a peer (writes, fsyncs, a full disk, injected with
//! `multibee_feed::faults`): local writes and merges of remote diffs fail with an error, reads
//! go on, and the folder reopens on the plain file with everything acknowledged, merged as it
//! was, taking new writes and the diffs that failed before.

use multibee_feed::SyncMode;
use multibee_feed::faults::{Fault, Faults};
use multibee_multibee::{BatchOp, ManualClock, MultiBee, Value};
use serde_json::json;

use crate::support::{Peer, options, run};

#[test]
fn failed_writes_fsyncs_and_a_full_disk_lose_nothing_acknowledged() {
    for fault in [Fault::FailSync, Fault::FailWrite, Fault::DiskFull] {
        run(async {
            let remote = Peer::new(1_000_000).await;
            let clock = ManualClock::new(1_000_000);
            let dir = tempfile::tempdir().unwrap();
            let faults = Faults::new();
            let durable = || options(&clock).sync(SyncMode::Durable);
            let mb = MultiBee::open_with(dir.path(), durable().backend(faults.backend()))
                .await
                .unwrap();
            mb.add_writer(remote.key()).await.unwrap();
            for i in 0..20 {
                mb.put(format!("doc{i}"), json!({"n": i})).await.unwrap();
                remote.mb.put(format!("remote{i}"), json!(i)).await.unwrap();
            }
            let remote_feed = remote.mb.feed_store().feed(&remote.key()).unwrap();
            mb.ingest(remote_feed.proof(0..20).unwrap()).await.unwrap();
            let acknowledged = mb.state_hash().unwrap();

            // Enough bytes that the file must grow, so every kind of fault is hit.
            for i in 20..40 {
                remote.mb.put(format!("remote{i}"), json!(i)).await.unwrap();
            }
            faults.set(fault);
            let big: Vec<BatchOp> = (0..2_000)
                .map(|i| BatchOp::Put(format!("big{i}").into_bytes(), Value::Bytes(vec![7; 4_000])))
                .collect();
            assert!(mb.batch(big).await.is_err(), "{fault:?}: the write fails");
            let failed = mb.ingest(remote_feed.proof(20..40).unwrap()).await;
            assert!(failed.is_err(), "{fault:?}: the merge fails");
            assert_eq!(mb.get("doc3").unwrap(), Some(Value::Json(json!({"n": 3}))));
            faults.set(Fault::None);
            mb.close().await;

            // Reopened on the plain file: everything acknowledged, as merged before.
            let mb = MultiBee::open_with(dir.path(), durable()).await.unwrap();
            assert_eq!(mb.state_hash().unwrap(), acknowledged, "{fault:?}");
            mb.put("after", json!(true)).await.unwrap();
            mb.ingest(remote_feed.proof(20..40).unwrap()).await.unwrap();
            assert_eq!(mb.get("remote39").unwrap(), Some(Value::Json(json!(39))));
            assert_eq!(
                mb.get("big0").unwrap(),
                None,
                "{fault:?}: nothing of the failed write"
            );
            mb.close().await;
        });
    }
}
