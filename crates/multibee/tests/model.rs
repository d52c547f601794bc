//! The convergence property: 2-5 writers make random edits (nested fields, deletes,
//! re-creates, bytes, same-millisecond writes, clocks going back) while diffs travel in random
//! schedules (any batch size, forwarded through third peers, duplicated, re-delivered). In the
//! end every peer's store is byte-identical and equal to the reference model: all diffs of all
//! writers, sorted by `(Hlc, writer)`, folded.

use std::collections::BTreeMap;

use multibee_multibee::{Change, DiffRecord, Value};
use proptest::prelude::*;
use serde_json::{Value as Json, json};

use crate::support::{Peer, cluster, deliver, run, sync_all};

#[derive(Clone, Debug)]
enum Step {
    /// Writer `w` puts a document (or deletes, `None`) at key `k`.
    Write {
        w: usize,
        k: usize,
        doc: Option<Value>,
    },
    /// Writer `w` applies a JSON merge patch to key `k`.
    Patch { w: usize, k: usize, patch: Json },
    /// Writer `w`'s clock moves by `delta` ms (0: the same millisecond, negative: backwards).
    Tick { w: usize, delta: i64 },
    /// `to` receives up to `count` diffs of `writer` from `holder` (forwarding when `holder`
    /// is not `writer`).
    Deliver {
        holder: usize,
        to: usize,
        writer: usize,
        count: u64,
    },
    /// `to` receives again a range of `writer`'s diffs it already holds.
    Redeliver {
        to: usize,
        writer: usize,
        start: u64,
        len: u64,
    },
}

const KEYS: [&str; 3] = ["a", "ab", "b"];

fn leaf() -> impl Strategy<Value = Json> {
    prop_oneof![
        Just(json!(0)),
        Just(json!("")),
        Just(json!(false)),
        Just(json!(null)),
        (1..4i64).prop_map(|n| json!(n)),
        Just(json!([1, 2])),
    ]
}

fn field_value() -> impl Strategy<Value = Json> {
    prop_oneof![
        3 => leaf(),
        1 => proptest::collection::btree_map(prop::sample::select(vec!["x", "y"]), leaf(), 0..3)
            .prop_map(|m| Json::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
    ]
}

fn doc() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        1 => Just(None),
        6 => proptest::collection::btree_map(prop::sample::select(vec!["f", "g", "n"]), field_value(), 0..4)
            .prop_map(|m| Some(Value::Json(Json::Object(
                m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )))),
        1 => leaf().prop_map(|j| Some(Value::Json(j))),
        1 => proptest::collection::vec(any::<u8>(), 0..3).prop_map(|b| Some(Value::Bytes(b))),
    ]
}

/// A merge patch: mostly objects whose fields are set, removed (`null`) or patched further.
fn patch() -> impl Strategy<Value = Json> {
    let field = prop_oneof![3 => field_value(), 1 => Just(Json::Null)];
    prop_oneof![
        6 => proptest::collection::btree_map(prop::sample::select(vec!["f", "g", "n"]), field, 0..3)
            .prop_map(|m| Json::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        1 => leaf(),
    ]
}

fn step(n: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..n, 0..KEYS.len(), doc()).prop_map(|(w, k, doc)| Step::Write { w, k, doc }),
        2 => (0..n, 0..KEYS.len(), patch()).prop_map(|(w, k, patch)| Step::Patch { w, k, patch }),
        2 => (0..n, -2..3i64).prop_map(|(w, delta)| Step::Tick { w, delta }),
        4 => (0..n, 0..n, 0..n, 1..6u64)
            .prop_map(|(holder, to, writer, count)| Step::Deliver { holder, to, writer, count }),
        1 => (0..n, 0..n, 0..6u64, 1..4u64)
            .prop_map(|(to, writer, start, len)| Step::Redeliver { to, writer, start, len }),
    ]
}

fn scenario() -> impl Strategy<Value = (usize, Vec<Step>)> {
    (2..=5usize).prop_flat_map(|n| (Just(n), proptest::collection::vec(step(n), 1..40)))
}

/// The reference: every diff of every writer, sorted by `(Hlc, writer)`, folded per key, and
/// hashed the way `MultiBee::state_hash` hashes a store.
fn reference(peers: &[Peer]) -> [u8; 32] {
    let mut diffs = Vec::new();
    for p in peers {
        let feed = p.mb.feed_store().feed(&p.key()).unwrap();
        for entry in feed.range(0..feed.length()).unwrap() {
            let (record, _) = DiffRecord::from_entry(&entry.unwrap().1).unwrap();
            diffs.push((record.ts, p.key(), record.key, record.change));
        }
    }
    diffs.sort_by_key(|d| (d.0, d.1));
    let mut state: BTreeMap<Vec<u8>, Option<Value>> = BTreeMap::new();
    for (_, _, key, change) in diffs {
        let slot = state.entry(key).or_default();
        *slot = Change::apply(&change, slot.take());
    }
    let mut hasher = blake3::Hasher::new();
    for (key, value) in state {
        if let Some(value) = value {
            let value = value.to_stored();
            hasher.update(&(key.len() as u64).to_le_bytes());
            hasher.update(&key);
            hasher.update(&(value.len() as u64).to_le_bytes());
            hasher.update(&value);
        }
    }
    *hasher.finalize().as_bytes()
}

async fn play(n: usize, steps: &[Step]) -> Result<(), TestCaseError> {
    let peers = cluster(n).await;
    for step in steps {
        match step {
            Step::Write { w, k, doc } => {
                let mb = &peers[*w].mb;
                match doc {
                    Some(v) => mb.put(KEYS[*k], v.clone()).await.unwrap(),
                    None => mb.del(KEYS[*k]).await.unwrap(),
                };
            }
            Step::Patch { w, k, patch } => {
                peers[*w].mb.patch(KEYS[*k], patch.clone()).await.unwrap();
            }
            Step::Tick { w, delta } => peers[*w].clock.advance(*delta),
            Step::Deliver {
                holder,
                to,
                writer,
                count,
            } => {
                if holder != to {
                    let key = peers[*writer].key();
                    deliver(&peers[*holder], &peers[*to], key, *count).await;
                }
            }
            Step::Redeliver {
                to,
                writer,
                start,
                len,
            } => {
                let key = peers[*writer].key();
                let held = peers[*to].holds(&key);
                if to != writer && *start < held {
                    let end = held.min(start + len);
                    let feed = peers[*to].mb.feed_store().feed(&key).unwrap();
                    let again = feed.proof(*start..end).unwrap();
                    let version = peers[*to].mb.version().unwrap();
                    peers[*to].mb.ingest(again).await.unwrap();
                    prop_assert_eq!(peers[*to].mb.version().unwrap(), version);
                }
            }
        }
    }
    sync_all(&peers).await;
    let expected = reference(&peers);
    for p in &peers {
        prop_assert_eq!(p.mb.state_hash().unwrap(), expected);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_peer_converges_to_the_sorted_fold_of_all_diffs((n, steps) in scenario()) {
        run(play(n, &steps))?;
    }
}
