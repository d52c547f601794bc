//! What a peer's writes cost in commits: local writes and replicated batches wait in one queue,
//! first come first served, and whatever waits together commits together.

use multibee_feed::Error as FeedError;
use serde_json::json;

use crate::support::{cluster, run, within};

/// Holds `store`'s writer in a job of its own (one commit) until `release` is sent: the
/// writes made meanwhile wait in its queue. Returns once the writer runs the job.
async fn hold_writer(
    store: &multibee_feed::Store,
) -> (
    tokio::task::JoinHandle<Result<(), FeedError>>,
    std::sync::mpsc::Sender<()>,
) {
    let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let mut started_tx = Some(started_tx);
    let store = store.clone();
    let held = tokio::spawn(async move {
        store
            .write(move |_txn| {
                if let Some(tx) = started_tx.take() {
                    let _ = tx.send(());
                }
                let _ = release_rx.recv();
                Ok::<_, FeedError>(())
            })
            .await
    });
    within("the writer to take the holding job", started)
        .await
        .unwrap();
    (held, release)
}

/// `from` puts `remote`; the batch `to` lacks of `from`'s diff feed, with that put.
async fn remote_put(
    from: &crate::support::Peer,
    to: &crate::support::Peer,
) -> multibee_feed::Batch {
    let start = to.holds(&from.key());
    from.mb.put("remote", json!({"from": "b"})).await.unwrap();
    let feed = from.mb.feed_store().feed(&from.key()).unwrap();
    feed.proof(start..feed.length()).unwrap()
}

#[test]
fn local_writes_and_remote_batches_waiting_together_share_one_commit() {
    run(async {
        let peers = cluster(2).await;
        let (a, batch) = (&peers[0], remote_put(&peers[1], &peers[0]).await);

        // Hold A's writer in a job of its own until both writes wait behind it.
        let store = a.mb.feed_store().clone();
        let before = store.commits();
        let (held, release) = hold_writer(&store).await;
        let local = tokio::spawn({
            let mb = a.mb.clone();
            async move { mb.put("local", json!({"from": "a"})).await }
        });
        let remote = tokio::spawn({
            let mb = a.mb.clone();
            async move { mb.ingest(batch).await }
        });
        within("both writes to wait for the writer", async {
            while store.queued_writes() < 2 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        })
        .await;
        release.send(()).unwrap();
        held.await.unwrap().unwrap();
        local.await.unwrap().unwrap();
        remote.await.unwrap().unwrap();

        // One commit for the holding job, one for the local write and the remote batch.
        assert_eq!(store.commits() - before, 2);
        assert_eq!(a.json("local"), Some(json!({"from": "a"})));
        assert_eq!(a.json("remote"), Some(json!({"from": "b"})));
        assert_eq!(store.queued_writes(), 0);
    });
}

#[test]
fn a_remote_batch_queued_among_local_writes_is_served_in_its_turn() {
    run(async {
        let peers = cluster(2).await;
        let (a, batch) = (&peers[0], remote_put(&peers[1], &peers[0]).await);

        let store = a.mb.feed_store().clone();
        let (held, release) = hold_writer(&store).await;
        // 300 local writes, the remote batch, 300 more: each waits for the writer in turn.
        let mut tasks = Vec::new();
        for i in 0..601 {
            let mb = a.mb.clone();
            let task = if i == 300 {
                let batch = batch.clone();
                tokio::spawn(async move { mb.ingest(batch).await.map(|_| ()) })
            } else {
                tokio::spawn(
                    async move { mb.put(format!("local{i:03}"), json!(i)).await.map(|_| ()) },
                )
            };
            tasks.push(task);
            within("the write to wait for the writer", async {
                while store.queued_writes() <= i {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            })
            .await;
        }
        release.send(()).unwrap();
        held.await.unwrap().unwrap();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        // The store's order is the commit order: the remote change lands between the writes
        // queued before it and those queued after it.
        let rev = |key: &str| a.mb.get_rev(key).unwrap().unwrap().0;
        let remote = rev("remote");
        assert!(
            rev("local299") < remote,
            "served after the writes before it"
        );
        assert!(
            remote < rev("local301"),
            "served before the writes after it"
        );
    });
}
