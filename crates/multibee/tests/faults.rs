//! I/O faults under a peer (writes, fsyncs, a full disk, injected with
//! `multibee_feed::faults`): local writes and merges of remote diffs (explicit or in the
//! background) fail with an error, reads go on, and the folder reopens on the plain file with
//! everything acknowledged, merged as it was and an HLC no older than any stamp acknowledged,
//! taking new writes and the diffs that failed before.

use std::fmt::Debug;

use multibee_feed::faults::{Fault, Faults};
use multibee_feed::{FeedKey, SyncMode};
use multibee_multibee::{BatchOp, Event, Hlc, ManualClock, MultiBee, Options, Value};
use serde_json::json;
use tokio::sync::{broadcast, watch};

use crate::support::{Peer, options, run, within};

/// A durable peer in a new folder whose database file sits on a fault-injecting backend.
async fn open_on_faults(options: Options) -> (tempfile::TempDir, Faults, MultiBee) {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let mb = MultiBee::open_with(dir.path(), options.backend(faults.backend()))
        .await
        .unwrap();
    (dir, faults, mb)
}

#[test]
fn failed_writes_fsyncs_and_a_full_disk_lose_nothing_acknowledged() {
    for fault in [Fault::FailSync, Fault::FailWrite, Fault::DiskFull] {
        run(async {
            let remote = Peer::new(1_000_000).await;
            let clock = ManualClock::new(1_000_000);
            let durable = || options(&clock).sync(SyncMode::Durable);
            let (dir, faults, mb) = open_on_faults(durable()).await;
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

/// Counts the background merger's "background merge failed" warnings logged on this thread.
struct MergeFailures(watch::Sender<u64>);

impl tracing::Subscriber for MergeFailures {
    fn enabled(&self, meta: &tracing::Metadata<'_>) -> bool {
        meta.is_event() && *meta.level() == tracing::Level::WARN
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        if message.0 == "background merge failed" {
            self.0.send_modify(|n| *n += 1);
        }
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// Waits for `mb`'s report that it has merged `length` entries of `writer`.
async fn merged(events: &mut broadcast::Receiver<Event>, writer: FeedKey, length: u64) {
    within(format!("{length} entries of a writer merged"), async {
        loop {
            match events.recv().await {
                Ok(Event::Merged { writer: w, merged }) if w == writer && merged >= length => {
                    return;
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("the peer closed"),
            }
        }
    })
    .await
}

/// More diffs than one merge transaction takes (4,096): merging them takes several.
const MANY: u64 = 5_000;

#[test]
fn background_merges_under_faults_lose_nothing_and_resume() {
    for fault in [Fault::FailSync, Fault::FailWrite, Fault::DiskFull] {
        let (failed, mut failures) = watch::channel(0u64);
        // The test runs on one thread (`run`), background tasks included.
        let _log = tracing::subscriber::set_default(MergeFailures(failed));
        run(async {
            let early = Peer::new(1_000_000).await;
            let late = Peer::new(1_000_000).await;
            let clock = ManualClock::new(1_000_000);
            let dir = tempfile::tempdir().unwrap();
            let faults = Faults::new();
            let auto = || {
                options(&clock)
                    .sync(SyncMode::Durable)
                    .auto_merge(true)
                    .backend(faults.backend())
            };
            let mb = MultiBee::open_with(dir.path(), auto()).await.unwrap();
            let mut events = mb.events();
            mb.add_writer(early.key()).await.unwrap();
            for i in 0..20 {
                mb.put(format!("doc{i}"), json!({"n": i})).await.unwrap();
                early.mb.put(format!("early{i}"), json!(i)).await.unwrap();
            }
            for chunk in 0..MANY / 1_000 {
                let puts = (chunk * 1_000..(chunk + 1) * 1_000)
                    .map(|i| BatchOp::Put(format!("late{i}").into_bytes(), json!(i).into()))
                    .collect();
                late.mb.batch(puts).await.unwrap();
            }
            // Stored as the network stores them, and merged in the background.
            let early_feed = early.mb.feed_store().feed(&early.key()).unwrap();
            let replica = mb.feed_store().feed(&early.key()).unwrap();
            replica
                .ingest(early_feed.proof(0..20).unwrap())
                .await
                .unwrap();
            merged(&mut events, early.key(), 20).await;
            // `late`'s diffs are held before it is a member; adding it wakes the merger, which
            // runs on this thread once the test awaits: after the fault is on. (A merge already
            // under way may have one transaction queued: it merges at most 4,096 of them.)
            let held = mb.feed_store().replica(late.key()).await.unwrap();
            let late_feed = late.mb.feed_store().feed(&late.key()).unwrap();
            held.ingest(late_feed.proof(0..MANY).unwrap())
                .await
                .unwrap();
            mb.add_writer(late.key()).await.unwrap();
            faults.set(fault);
            within("a background merge to fail", failures.wait_for(|n| *n > 0))
                .await
                .unwrap();
            assert!(mb.put("refused", json!(1)).await.is_err(), "{fault:?}");
            // Reads go on, and show exactly what was committed.
            let w = mb.writers().unwrap();
            let cursor = w.iter().find(|w| w.key == late.key()).unwrap().merged;
            assert!(
                cursor < MANY,
                "{fault:?}: {cursor} merged in spite of the fault"
            );
            for i in 0..20 {
                assert_eq!(
                    mb.get(format!("doc{i}")).unwrap(),
                    Some(json!({"n": i}).into())
                );
                assert_eq!(mb.get(format!("early{i}")).unwrap(), Some(json!(i).into()));
            }
            for i in [0, cursor.saturating_sub(1), cursor, MANY - 1] {
                let value = (i < cursor).then(|| json!(i).into());
                assert_eq!(
                    mb.get(format!("late{i}")).unwrap(),
                    value,
                    "{fault:?}: late{i}"
                );
            }
            // A failed commit leaves redb refusing every write of this handle until it is
            // reopened (`PreviousIo`): merging resumes on the folder reopened, faults off.
            faults.set(Fault::None);
            drop((replica, held));
            mb.close().await;
            let mb = MultiBee::open_with(dir.path(), auto()).await.unwrap();
            let mut events = mb.events();
            for i in 20..40 {
                early.mb.put(format!("early{i}"), json!(i)).await.unwrap();
            }
            let replica = mb.feed_store().feed(&early.key()).unwrap();
            replica
                .ingest(early_feed.proof(20..40).unwrap())
                .await
                .unwrap();
            merged(&mut events, early.key(), 40).await;
            let w = mb.writers().unwrap();
            assert_eq!(w.iter().find(|w| w.key == late.key()).unwrap().merged, MANY);
            // Everything acknowledged, the diffs whose merge failed, and the new ones: the
            // same state as a fresh peer that merges every feed from scratch.
            assert_eq!(mb.get("refused").unwrap(), None);
            let fresh = Peer::with(1_000_000, |o| o.database(mb.diff_key())).await;
            let feeds = [
                (&mb, mb.diff_key()),
                (&early.mb, early.key()),
                (&late.mb, late.key()),
            ];
            for (peer, writer) in feeds {
                let batch = peer.export(writer, 0).unwrap();
                fresh.mb.ingest(batch).await.unwrap();
            }
            assert_eq!(
                mb.state_hash().unwrap(),
                fresh.mb.state_hash().unwrap(),
                "{fault:?}"
            );
            drop(replica);
            mb.close().await;
        });
    }
}

#[test]
fn the_hlc_after_a_fault_and_a_reopen_is_at_least_every_timestamp_acknowledged() {
    for fault in [Fault::FailSync, Fault::FailWrite, Fault::DiskFull] {
        run(async {
            // A remote clock 30 s ahead (within the drift): merging its diff raises the HLC.
            let ahead = Peer::new(1_030_000).await;
            let clock = ManualClock::new(1_000_000);
            let durable = || options(&clock).sync(SyncMode::Durable);
            let (dir, faults, mb) = open_on_faults(durable()).await;
            mb.add_writer(ahead.key()).await.unwrap();
            mb.put("local", json!(1)).await.unwrap();
            ahead.mb.put("remote", json!(2)).await.unwrap();
            let ahead_feed = ahead.mb.feed_store().feed(&ahead.key()).unwrap();
            // Acknowledged last: the merge of the remote diff, stamped after every local one.
            mb.ingest(ahead_feed.proof(0..1).unwrap()).await.unwrap();
            let stamps =
                |key: &str| -> Vec<Hlc> { mb.history(key).unwrap().iter().map(|h| h.ts).collect() };
            let (local, remote) = (stamps("local"), stamps("remote"));
            let acknowledged = *remote.iter().chain(&local).max().unwrap();
            assert!(remote[0] > local[0], "the newest stamp is the merged one");

            faults.set(fault);
            assert!(mb.put("failed", json!(3)).await.is_err(), "{fault:?}");
            ahead.mb.put("remote2", json!(4)).await.unwrap();
            let failed = mb.ingest(ahead_feed.proof(0..2).unwrap()).await;
            assert!(failed.is_err(), "{fault:?}");
            faults.set(Fault::None);
            mb.close().await;

            // The wall clock went far back while the peer was down.
            clock.set(10);
            let mb = MultiBee::open_with(dir.path(), durable()).await.unwrap();
            assert!(
                mb.clock() >= acknowledged,
                "{fault:?}: the HLC {} is behind {acknowledged}, acknowledged before the fault",
                mb.clock()
            );
            mb.put("after", json!(5)).await.unwrap();
            let after = mb.history("after").unwrap()[0].ts;
            assert!(after > acknowledged, "{fault:?}: {after} <= {acknowledged}");
            mb.close().await;
        });
    }
}
