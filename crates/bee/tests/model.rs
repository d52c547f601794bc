//! Model-based property test: random puts, deletes, batches and compare-and-swaps, checked
//! against a `BTreeMap` after every step, at every version, with every kind of range query.

use std::collections::BTreeMap;

use multibee_bee::{BatchOp, Bee, Error, Expect, RangeOptions};
use multibee_feed::{Options, Store, SyncMode};
use proptest::prelude::*;

use crate::{pairs, run};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

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
        .iter()
        .filter(|(k, _)| o.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if o.reverse {
        out.reverse();
    }
    out.truncate(o.limit.unwrap_or(usize::MAX));
    out
}

/// Applies one step to the bee and to the model.
async fn apply(bee: &Bee, model: &mut Model, step: &Step) {
    let expect = |e: &Option<u8>| match e {
        None => Expect::Absent,
        Some(v) => Expect::Value(value(*v)),
    };
    let holds = |model: &Model, k: u8, e: &Option<u8>| model.get(&key(k)) == e.map(value).as_ref();
    match step {
        Step::Put(k, v) => {
            bee.put(key(*k), value(*v)).await.unwrap();
            model.insert(key(*k), value(*v));
        }
        Step::Del(k) => {
            bee.del(key(*k)).await.unwrap();
            model.remove(&key(*k));
        }
        Step::Batch(ops) => {
            let ops: Vec<BatchOp> = ops
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => BatchOp::Put(key(*k), value(*v)),
                    None => BatchOp::Del(key(*k)),
                })
                .collect();
            bee.batch(ops.clone()).await.unwrap();
            for op in ops {
                match op {
                    BatchOp::Put(k, v) => model.insert(k, v),
                    BatchOp::Del(k) => model.remove(&k),
                };
            }
        }
        Step::CasPut(k, v, e) => {
            let result = bee.put_cas(key(*k), value(*v), expect(e)).await;
            if holds(model, *k, e) {
                result.unwrap();
                model.insert(key(*k), value(*v));
            } else {
                assert!(matches!(result, Err(Error::CasFailed { .. })), "{result:?}");
            }
        }
        Step::CasDel(k, e) => {
            let result = bee.del_cas(key(*k), expect(e)).await;
            if holds(model, *k, e) {
                result.unwrap();
                model.remove(&key(*k));
            } else {
                assert!(matches!(result, Err(Error::CasFailed { .. })), "{result:?}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn the_bee_matches_a_btreemap_at_every_version(
        steps in prop::collection::vec(step(), 1..25),
        queries in prop::collection::vec((bound(), bound(), any::<bool>(), prop::option::of(any::<u8>())), 4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let store = Store::open_with(dir.path(), Options::default().sync(SyncMode::Relaxed)).unwrap();
            let bee = Bee::open(store.create_feed().await.unwrap()).await.unwrap();
            let mut model = Model::new();
            let mut snapshots = vec![(0u64, Model::new())];
            for step in &steps {
                apply(&bee, &mut model, step).await;
                for k in 0..8 {
                    assert_eq!(bee.get(key(k)).unwrap(), model.get(&key(k)).cloned());
                }
                snapshots.push((bee.version().unwrap(), model.clone()));
            }
            for (version, model) in &snapshots {
                let at = bee.checkout(*version).unwrap();
                for k in 0..8 {
                    assert_eq!(at.get(key(k)).unwrap(), model.get(&key(k)).cloned(), "key {k} at {version}");
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
        });
    }
}
