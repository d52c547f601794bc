#![allow(clippy::unwrap_used)]
//! Stopping a node mid-replication and restarting it on the same folder resumes where it was.

use multibee_net::protocol::Limits;

use crate::common::{Peer, Transport, Watchdog, append, check_entries, config, wait_length};

const TOTAL: u64 = 100_000;
const BATCH: u64 = 256;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_resumes_from_its_persisted_length() {
    let _watchdog = Watchdog::arm("restart::a_restarted_node_resumes_from_its_persisted_length");
    let mut limits = Limits::default();
    limits.max_batch_entries = BATCH;
    let config = || config().limits(limits.clone());
    let a = Peer::start(config()).await;
    let feed = a.store.create_feed().await.unwrap();
    append(&feed, 0, TOTAL).await;
    let addr = a.addr(Transport::Tcp).await;

    let b = Peer::start(config().dial(addr.clone())).await;
    let replica = b.node.handle().replicate(feed.key()).await.unwrap();
    wait_length(&replica, 1).await;
    drop(replica);
    let (dir, first) = b.stop().await;

    let b = Peer::start_in(dir, config().dial(addr)).await;
    let resumed_from = b.store.feed(&feed.key()).unwrap().length();
    assert!(resumed_from >= 1, "the replica's length persisted");
    let replica = b.node.handle().replicate(feed.key()).await.unwrap();
    wait_length(&replica, TOTAL).await;
    check_entries(&replica, TOTAL);

    let second = b.node.handle().stats();
    // After the restart, exactly what was missing is received...
    assert_eq!(second.entries_received, TOTAL - resumed_from);
    // ...and before it, nothing beyond the batches in flight when the node stopped (the
    // pipeline's batches, the one being verified and the one being stored).
    let twice = first.entries_received + second.entries_received - TOTAL;
    assert!(twice <= 4 * BATCH, "{twice} entries were received twice");
    eprintln!(
        "stopped at {resumed_from} of {TOTAL}; {twice} entries received twice; sent by A: {}",
        a.node.handle().stats().entries_sent
    );
}
