//! Model-based property test: random puts, deletes, batches and compare-and-swaps, checked
//! against a `BTreeMap` and an entry log after every step, at every version, with every kind
//! of range query, and with diffs between versions. The model has hyperbee's semantics: a
//! delete of an absent key appends nothing, and a diff compares entries (by sequence number),
//! not values.

use std::collections::BTreeMap;

use multibee_bee::{BatchOp, Bee, DiffEntry, Error, Expect, HistoryOptions, RangeOptions};
use multibee_feed::{Options, Store, SyncMode};
use proptest::prelude::*;

use crate::{pairs, run};

/// The expected bee: its head, and every entry it should have appended.
#[derive(Clone, Debug, Default)]
struct Model {
    /// Each set key: the sequence number of its last put, and its value.
    map: BTreeMap<Vec<u8>, (u64, Vec<u8>)>,
    /// The entries in feed order: a key and its value, `None` for a delete.
    log: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Model {
    fn version(&self) -> u64 {
        self.log.len() as u64
    }

    fn value(&self, k: &[u8]) -> Option<Vec<u8>> {
        self.map.get(k).map(|(_, v)| v.clone())
    }

    /// Returns the sequence number of the put.
    fn put(&mut self, k: Vec<u8>, v: Vec<u8>) -> u64 {
        let seq = self.version();
        self.map.insert(k.clone(), (seq, v.clone()));
        self.log.push((k, Some(v)));
        seq
    }

    /// Returns the sequence number of the delete, `None` (and no entry) if `k` is absent.
    fn del(&mut self, k: Vec<u8>) -> Option<u64> {
        self.map.remove(&k)?;
        self.log.push((k, None));
        Some(self.version() - 1)
    }
}

#[derive(Clone, Debug)]
enum Step {
    Put(u8, u8),
    Del(u8),
    Batch(Vec<(u8, Option<u8>)>),
    CasPut(u8, u8, Option<u8>),
    CasDel(u8, Option<u8>),
}

/// Keys from a small space, with shared prefixes and edge bytes, so ranges and prefixes bite.
fn key(k: u8) -> Vec<u8> {
    match k % 8 {
        0 => Vec::new(),
        1 => vec![0],
        2 => b"a".to_vec(),
        3 => b"a\0".to_vec(),
        4 => b"ab".to_vec(),
        5 => b"b".to_vec(),
        6 => vec![0xff],
        _ => vec![0xff, 0xff],
    }
}

fn value(v: u8) -> Vec<u8> {
    vec![v; (v % 3) as usize]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Step::Put(k, v)),
        any::<u8>().prop_map(Step::Del),
        prop::collection::vec((any::<u8>(), prop::option::of(any::<u8>())), 0..5)
            .prop_map(Step::Batch),
        (any::<u8>(), any::<u8>(), prop::option::of(any::<u8>()))
            .prop_map(|(k, v, e)| Step::CasPut(k, v, e)),
        (any::<u8>(), prop::option::of(any::<u8>())).prop_map(|(k, e)| Step::CasDel(k, e)),
    ]
}

fn bound() -> impl Strategy<Value = Option<(bool, u8)>> {
    prop::option::of((any::<bool>(), any::<u8>()))
}

/// A range query from generated bounds: (inclusive?, key).
fn options(
    lower: Option<(bool, u8)>,
    upper: Option<(bool, u8)>,
    reverse: bool,
    limit: Option<u8>,
) -> RangeOptions {
    let mut o = RangeOptions::all();
    match lower {
        Some((true, k)) => o = o.gte(key(k)),
        Some((false, k)) => o = o.gt(key(k)),
        None => {}
    }
    match upper {
        Some((true, k)) => o = o.lte(key(k)),
        Some((false, k)) => o = o.lt(key(k)),
        None => {}
    }
    if reverse {
        o = o.reverse();
    }
    if let Some(n) = limit {
        o = o.limit(n as usize % 5);
    }
    o
}

fn expected(model: &Model, o: &RangeOptions) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<_> = model
        .map
        .iter()
        .filter(|(k, _)| o.contains(k))
        .map(|(k, (_, v))| (k.clone(), v.clone()))
        .collect();
    if o.reverse {
        out.reverse();
    }
    out.truncate(o.limit.unwrap_or(usize::MAX));
    out
}

/// A key with its (seq, value) on each side of a diff.
type Side = Option<(u64, Vec<u8>)>;

/// The diff hyperbee reports between two models: every key in range whose last write's
/// sequence number differs (whatever the values).
fn expected_diff(left: &Model, right: &Model, o: &RangeOptions) -> Vec<(Vec<u8>, Side, Side)> {
    let keys: std::collections::BTreeSet<&Vec<u8>> =
        left.map.keys().chain(right.map.keys()).collect();
    let mut out: Vec<_> = keys
        .into_iter()
        .filter(|k| o.contains(k))
        .map(|k| {
            (
                k.clone(),
                left.map.get(k).cloned(),
                right.map.get(k).cloned(),
            )
        })
        .filter(|(_, l, r)| l.as_ref().map(|e| e.0) != r.as_ref().map(|e| e.0))
        .collect();
    if o.reverse {
        out.reverse();
    }
    out.truncate(o.limit.unwrap_or(usize::MAX));
    out
}

fn diff_sides(diff: Vec<DiffEntry>) -> Vec<(Vec<u8>, Side, Side)> {
    let side = |e: Option<multibee_bee::Entry>| e.map(|e| (e.seq, e.value));
    diff.into_iter()
        .map(|d| (d.key, side(d.left), side(d.right)))
        .collect()
}

/// Applies one step to the bee and to the model.
async fn apply(bee: &Bee, model: &mut Model, step: &Step) {
    let expect = |e: &Option<u8>| match e {
        None => Expect::Absent,
        Some(v) => Expect::Value(value(*v)),
    };
    let holds = |model: &Model, k: u8, e: &Option<u8>| model.value(&key(k)) == e.map(value);
    match step {
        Step::Put(k, v) => {
            let seq = bee.put(key(*k), value(*v)).await.unwrap();
            assert_eq!(seq, model.put(key(*k), value(*v)));
        }
        Step::Del(k) => {
            let seq = bee.del(key(*k)).await.unwrap();
            assert_eq!(seq, model.del(key(*k)), "del of key {k}");
        }
        Step::Batch(ops) => {
            let ops: Vec<BatchOp> = ops
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => BatchOp::Put(key(*k), value(*v)),
                    None => BatchOp::Del(key(*k)),
                })
                .collect();
            let version = bee.batch(ops.clone()).await.unwrap();
            for op in ops {
                match op {
                    BatchOp::Put(k, v) => {
                        model.put(k, v);
                    }
                    BatchOp::Del(k) => {
                        model.del(k);
                    }
                }
            }
            assert_eq!(version, model.version());
        }
        Step::CasPut(k, v, e) => {
            let result = bee.put_cas(key(*k), value(*v), expect(e)).await;
            if holds(model, *k, e) {
                assert_eq!(result.unwrap(), model.put(key(*k), value(*v)));
            } else {
                assert!(matches!(result, Err(Error::CasFailed { .. })), "{result:?}");
            }
        }
        Step::CasDel(k, e) => {
            let result = bee.del_cas(key(*k), expect(e)).await;
            if holds(model, *k, e) {
                assert_eq!(result.unwrap(), model.del(key(*k)));
            } else {
                assert!(matches!(result, Err(Error::CasFailed { .. })), "{result:?}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn the_bee_matches_the_model_at_every_version(
        steps in prop::collection::vec(step(), 1..25),
        queries in prop::collection::vec((bound(), bound(), any::<bool>(), prop::option::of(any::<u8>())), 4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let store = Store::open_with(dir.path(), Options::default().sync(SyncMode::Relaxed)).unwrap();
            let bee = Bee::open(store.create_feed().await.unwrap()).await.unwrap();
            let mut model = Model::default();
            let mut snapshots = vec![(0u64, Model::default())];
            for step in &steps {
                apply(&bee, &mut model, step).await;
                assert_eq!(bee.version().unwrap(), model.version(), "after {step:?}");
                for k in 0..8 {
                    let entry = bee.get_entry(key(k)).unwrap().map(|e| (e.seq, e.value));
                    assert_eq!(entry, model.map.get(&key(k)).cloned());
                }
                snapshots.push((bee.version().unwrap(), model.clone()));
            }
            let history: Vec<_> = bee
                .history(&HistoryOptions::default())
                .unwrap()
                .map(|c| c.unwrap())
                .map(|c| (c.key, c.value))
                .collect();
            assert_eq!(history, model.log);
            for (version, model) in &snapshots {
                let at = bee.checkout(*version).unwrap();
                for k in 0..8 {
                    assert_eq!(at.get(key(k)).unwrap(), model.value(&key(k)), "key {k} at {version}");
                }
                for (lower, upper, reverse, limit) in &queries {
                    let o = options(*lower, *upper, *reverse, *limit);
                    assert_eq!(pairs(at.range(&o).unwrap()), expected(model, &o), "{o:?} at {version}");
                }
            }
            for (lower, upper, reverse, limit) in &queries {
                let o = options(*lower, *upper, *reverse, *limit);
                assert_eq!(pairs(bee.range(&o).unwrap()), expected(&model, &o), "{o:?} at head");
            }
            // Diffs between neighbouring versions and from each version to the head, both ways.
            let head = (model.version(), model.clone());
            let pairs_of_versions = snapshots
                .windows(2)
                .map(|w| (&w[0], &w[1]))
                .chain(snapshots.iter().map(|s| (s, &head)));
            for (a, b) in pairs_of_versions {
                for (l, r) in [(a, b), (b, a)] {
                    for (lower, upper, reverse, limit) in &queries {
                        let o = options(*lower, *upper, *reverse, *limit);
                        assert_eq!(
                            diff_sides(bee.diff(l.0, r.0, &o).unwrap()),
                            expected_diff(&l.1, &r.1, &o),
                            "diff {} -> {} {o:?}", l.0, r.0
                        );
                    }
                }
            }
        });
    }
}
