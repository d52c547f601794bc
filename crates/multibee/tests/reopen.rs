//! What a peer keeps across a close and a reopen of its folder: the changes stream goes on
//! where it stopped (no change lost, none repeated), and a removed writer stays removed at its
//! cut (nothing of it re-merged).

use multibee_multibee::{ChangesOptions, MultiBee, Value, WriterInfo, WriterState};
use serde_json::json;

use crate::support::{cluster, deliver, run, sync_all, within};

/// Every change from `since` that the store holds now (a stream that is not live: no wait).
async fn changes_since(mb: &MultiBee, since: u64) -> Vec<(u64, String, Option<Value>)> {
    let mut changes = mb
        .changes(ChangesOptions {
            since,
            ..Default::default()
        })
        .unwrap();
    let mut out = Vec::new();
    while let Some(change) = changes.next().await {
        let change = change.unwrap();
        out.push((
            change.seq,
            String::from_utf8(change.key).unwrap(),
            change.value,
        ));
    }
    out
}

/// The changes' keys and values, without their sequence numbers.
fn keys_and_values(changes: &[(u64, String, Option<Value>)]) -> Vec<(&str, Option<&Value>)> {
    changes
        .iter()
        .map(|(_, key, value)| (key.as_str(), value.as_ref()))
        .collect()
}

#[test]
fn the_changes_stream_resumes_across_a_reopen_with_no_change_lost_or_repeated() {
    run(async {
        let mut peers = cluster(2).await;
        // Local and merged remote changes, a delete among them, read before the close.
        peers[0].mb.put("a", json!(1)).await.unwrap();
        peers[1].mb.put("b", json!(2)).await.unwrap();
        sync_all(&peers).await;
        peers[0].mb.del("a").await.unwrap();
        let before = changes_since(&peers[0].mb, 0).await;
        let (one, two) = (json!(1).into(), json!(2).into());
        let expected = vec![("a", Some(&one)), ("b", Some(&two)), ("a", None)];
        assert_eq!(keys_and_values(&before), expected);
        let since = before.last().unwrap().0 + 1;
        // A remote diff stored but not merged when the peer closes: the reopen merges it.
        peers[1].mb.put("c", json!(3)).await.unwrap();
        let writer = peers[1].key();
        let batch = peers[1].mb.export(writer, 1).unwrap();
        let replica = peers[0].mb.feed_store().feed(&writer).unwrap();
        replica.ingest(batch).await.unwrap();
        drop(replica);

        let p = peers.remove(0).reopen().await;
        let remote = &peers[0];
        let mut live =
            p.mb.changes(ChangesOptions {
                since,
                live: true,
                ..Default::default()
            })
            .unwrap();
        p.mb.put("d", json!(4)).await.unwrap();
        remote.mb.put("e", json!(5)).await.unwrap();
        deliver(remote, &p, writer, u64::MAX).await;

        let after = changes_since(&p.mb, since).await;
        let (three, four, five) = (json!(3).into(), json!(4).into(), json!(5).into());
        let expected = vec![("c", Some(&three)), ("d", Some(&four)), ("e", Some(&five))];
        assert_eq!(
            keys_and_values(&after),
            expected,
            "resumed where it stopped"
        );
        // The same from the live stream, and the whole history: each change once, in order.
        for want in &after {
            let got = within("a change in the live stream", live.next()).await;
            let got = got.expect("a live stream").unwrap();
            let got = (got.seq, String::from_utf8(got.key).unwrap(), got.value);
            assert_eq!(&got, want);
        }
        let all = changes_since(&p.mb, 0).await;
        let seqs: Vec<u64> = all.iter().map(|c| c.0).collect();
        let first = seqs[0];
        assert_eq!(
            seqs,
            (first..first + 6).collect::<Vec<_>>(),
            "no gap, no repeat"
        );
        assert_eq!(all, [before, after].concat());
    });
}

/// What `mb` knows of `writer`.
fn info(mb: &MultiBee, writer: &multibee_multibee::FeedKey) -> WriterInfo {
    let writers = mb.writers().unwrap();
    *writers.iter().find(|w| w.key == *writer).unwrap()
}

#[test]
fn a_removed_writer_stays_removed_at_its_cut_across_a_reopen() {
    run(async {
        let mut peers = cluster(2).await;
        let writer = peers[1].key();
        peers[1].mb.put("k", json!({"a": 1})).await.unwrap();
        peers[1].mb.put("j", json!(1)).await.unwrap();
        sync_all(&peers).await;
        // The root removes the writer at what it merged (2 diffs); the writer goes on writing,
        // and the root holds those diffs without merging them.
        peers[0].mb.remove_writer(writer).await.unwrap();
        peers[1].mb.put("k", json!({"a": 2})).await.unwrap();
        peers[1].mb.put("past", json!(1)).await.unwrap();
        deliver(&peers[1], &peers[0], writer, u64::MAX).await;
        let root = &peers[0];
        let removed = info(&root.mb, &writer);
        let expected = (WriterState::Removed, Some(2), Some(root.key()), 4, 4);
        let got = |w: WriterInfo| (w.state, w.cut, w.removed_by, w.merged, w.length);
        assert_eq!(got(removed), expected);
        let (hash, version) = (root.mb.state_hash().unwrap(), root.mb.version().unwrap());
        let history = root.mb.history("k").unwrap();
        assert_eq!(history.len(), 1);

        let root = peers.remove(0).reopen().await;
        let writer_peer = &peers[0];
        // Still removed, at the same cut, by the same member; nothing re-merged.
        assert_eq!(info(&root.mb, &writer), removed);
        assert_eq!(root.mb.merge().await.unwrap(), 0);
        assert_eq!(root.mb.state_hash().unwrap(), hash);
        assert_eq!(root.mb.version().unwrap(), version);
        assert_eq!(root.mb.history("k").unwrap(), history);
        assert_eq!(root.json("k"), Some(json!({"a": 1})));
        assert_eq!(root.json("past"), None);
        // Diffs past the cut that arrive after the reopen are held, not merged, either.
        writer_peer.mb.put("k", json!({"a": 3})).await.unwrap();
        deliver(writer_peer, &root, writer, u64::MAX).await;
        root.mb.merge().await.unwrap();
        assert_eq!(
            (
                info(&root.mb, &writer).length,
                info(&root.mb, &writer).merged
            ),
            (5, 5)
        );
        assert_eq!(root.mb.state_hash().unwrap(), hash);
        assert_eq!(root.mb.version().unwrap(), version);
        let root = root.reopen().await;
        let again = info(&root.mb, &writer);
        assert_eq!(
            got(again),
            (WriterState::Removed, Some(2), Some(root.key()), 5, 5)
        );
        assert_eq!(root.mb.state_hash().unwrap(), hash);
    });
}
