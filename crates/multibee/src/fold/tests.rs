//! The fold against a reference model, on [`MemoryStorage`] (no database): random diffs of 2-4
//! writers over a few keys, delivered in random orders and batches (one fold per batch, as one
//! transaction each), re-delivered, reused, and cut by a writer's removal. After every batch
//! each key must hold the fold of all its merged diffs in `(stamp, writer)` order from nothing,
//! in one go; its heads must be the diffs no later diff covers; its checkpoints must sit every
//! `interval` diffs and hold the fold of the diffs up to them.

use std::collections::{BTreeMap, BTreeSet};

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{Map, Value as Json, json};

use super::memory::MemoryStorage;
use super::{Added, Fold, Folded, Loaded, Pos};
use crate::change::Change;
use crate::diff::{DiffRecord, Dot};
use crate::hlc::Hlc;
use crate::merge::{Diff, LastWriterWins, Merge};
use crate::tables::KeyState;
use crate::tables::{self, Head};
use crate::value::Value;

const KEYS: [&[u8]; 3] = [b"a", b"b", b"c"];
/// The writers' feed keys: their order is not their index's, so that ties of stamps are broken
/// in another order than the writers were generated in.
const WRITERS: [[u8; 32]; 4] = [[0xC0; 32], [0x40; 32], [0x80; 32], [0x00; 32]];
/// Stamps are drawn from a small range, so that diffs tie and arrive late often.
const MAX_TS: u64 = 12;

/// One generated diff.
#[derive(Clone, Debug)]
struct Spec {
    /// Index into [`WRITERS`].
    w: usize,
    /// Index into [`KEYS`].
    k: usize,
    ts: u64,
    /// Entry of its writer's diff feed.
    seq: u64,
    parents: Vec<Dot>,
    change: Change,
}

impl Spec {
    fn writer(&self) -> [u8; 32] {
        WRITERS[self.w]
    }

    fn id(&self) -> Pos {
        (self.ts, self.writer())
    }

    fn dot(&self) -> Dot {
        Dot {
            writer: self.writer(),
            seq: self.seq,
        }
    }

    fn record(&self) -> DiffRecord {
        DiffRecord {
            key: KEYS[self.k].to_vec(),
            ts: Hlc(self.ts),
            parents: self.parents.clone(),
            change: self.change.clone(),
        }
    }

    fn loaded(&self) -> Loaded {
        Loaded {
            ts: self.ts,
            writer: self.writer(),
            seq: self.seq,
            record: self.record(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies.

fn leaf() -> impl Strategy<Value = Json> {
    prop_oneof![
        Just(json!(0)),
        Just(json!(1)),
        Just(json!("s")),
        Just(json!(null)),
        Just(json!(false)),
        Just(json!([1, {"x": 2}])),
    ]
}

fn object(names: &'static [&'static str], field: BoxedStrategy<Json>) -> BoxedStrategy<Json> {
    proptest::collection::btree_map(prop::sample::select(names), field, 0..=2)
        .prop_map(|m| Json::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
        .boxed()
}

/// A document: mostly an object (with nested objects), sometimes a scalar or bytes.
fn value() -> impl Strategy<Value = Value> {
    let inner = object(&["x", "y"], leaf().boxed());
    let field = prop_oneof![2 => leaf(), 1 => inner].boxed();
    prop_oneof![
        4 => object(&["f", "g", "h"], field).prop_map(Value::Json),
        1 => leaf().prop_map(Value::Json),
        1 => vec(any::<u8>(), 0..3).prop_map(Value::Bytes),
    ]
}

/// A change as a local write makes one: from one value to another (a `Fields` change when both
/// are objects, a `Set` or a `Delete` otherwise).
fn change() -> impl Strategy<Value = Change> {
    (
        proptest::option::weighted(0.8, value()),
        proptest::option::weighted(0.85, value()),
    )
        .prop_map(|(old, new)| {
            Change::between(old.as_ref(), new.as_ref()).unwrap_or(match new {
                Some(v) => Change::Set(v),
                None => Change::Delete,
            })
        })
}

/// Raw diffs: (writer, key, stamp, parent choice, change).
fn raw_diffs() -> impl Strategy<Value = Vec<(usize, usize, u64, u8, Change)>> {
    vec(
        (0..4usize, 0..KEYS.len(), 0..=MAX_TS, any::<u8>(), change()),
        1..=20,
    )
}

/// Makes diffs of raw ones: each (writer, key, stamp) once, seqs in generation order per
/// writer, parents chosen among the key's diffs of other writers generated before.
fn build(writers: usize, raw: Vec<(usize, usize, u64, u8, Change)>) -> Vec<Spec> {
    let mut out: Vec<Spec> = Vec::new();
    let mut seqs = [0u64; 4];
    for (w, k, ts, mask, change) in raw {
        let w = w % writers;
        if out.iter().any(|d| (d.w, d.k, d.ts) == (w, k, ts)) {
            continue;
        }
        let mut parents: Vec<Dot> = out
            .iter()
            .filter(|d| d.k == k && d.w != w)
            .enumerate()
            .filter(|(i, _)| mask & (1 << (i % 8)) != 0)
            .map(|(_, d)| d.dot())
            .collect();
        parents.sort_unstable();
        parents.dedup();
        out.push(Spec {
            w,
            k,
            ts,
            seq: seqs[w],
            parents,
            change,
        });
        seqs[w] += 1;
    }
    out
}

#[derive(Clone, Debug)]
struct Case {
    interval: u32,
    diffs: Vec<Spec>,
    /// Indices into `diffs`, in delivery order: every diff at least once, some twice.
    order: Vec<usize>,
    /// Whether a batch (one fold) ends after the delivery at the same index.
    cut: Vec<bool>,
    /// Whether the delivery's entry is held by its feed before the fold.
    held: Vec<bool>,
    /// A diff to re-deliver, and to reuse the key and stamp of, at the end.
    again: usize,
    /// The writer removed at the end, and the first of its entries that stop counting.
    removed: (usize, u64),
}

fn case() -> impl Strategy<Value = Case> {
    (2usize..=4, 1u32..=5, raw_diffs()).prop_flat_map(|(writers, interval, raw)| {
        let diffs = build(writers, raw);
        let n = diffs.len();
        (Just(diffs), vec(0..n, 0..=n / 2)).prop_flat_map(move |(diffs, dups)| {
            let n = diffs.len();
            let order: Vec<usize> = (0..n).chain(dups).collect();
            let len = order.len();
            (
                Just(order).prop_shuffle(),
                vec(any::<bool>(), len),
                vec(any::<bool>(), len),
                0..n,
                (0..writers, 0u64..=8),
            )
                .prop_map(move |(order, cut, held, again, removed)| Case {
                    interval,
                    diffs: diffs.clone(),
                    order,
                    cut,
                    held,
                    again,
                    removed,
                })
        })
    })
}

// ---------------------------------------------------------------------------------------------
// The reference.

/// The diffs of key `k` among `merged`, in merge order.
fn of_key<'a>(diffs: &'a [Spec], merged: &BTreeSet<usize>, k: usize) -> Vec<&'a Spec> {
    let mut out: Vec<&Spec> = merged
        .iter()
        .map(|&i| &diffs[i])
        .filter(|d| d.k == k)
        .collect();
    out.sort_by_key(|d| d.id());
    out
}

/// The fold of `diffs` (in merge order) from nothing, in one go.
fn reference(k: usize, diffs: &[&Spec]) -> Option<Value> {
    let all: Vec<Diff> = diffs
        .iter()
        .map(|d| Diff {
            ts: Hlc(d.ts),
            writer: crate::FeedKey(d.writer()),
            change: d.change.clone(),
        })
        .collect();
    LastWriterWins.merge(KEYS[k], None, &all)
}

/// Whether `e` covers `d` (docs/merge.md): it comes after it and its writer had merged it,
/// being a later diff of the same writer or naming it as a parent.
fn covers(e: &Spec, d: &Spec) -> bool {
    d.id() < e.id()
        && if e.w == d.w {
            d.seq < e.seq
        } else {
            e.parents.contains(&d.dot())
        }
}

/// The heads of a key whose diffs are `diffs` (in merge order): those no other diff covers.
fn reference_heads(diffs: &[&Spec]) -> Vec<Head> {
    diffs
        .iter()
        .filter(|d| !diffs.iter().any(|e| covers(e, d)))
        .map(|d| Head {
            ts: d.ts,
            writer: d.writer(),
            seq: d.seq,
        })
        .collect()
}

fn stored(value: Option<&Value>) -> Vec<u8> {
    tables::encode_state(value)
}

/// Checks everything the fold keeps of every key against the reference, for the diffs
/// `merged`.
fn check(mem: &MemoryStorage, case: &Case, merged: &BTreeSet<usize>) -> Result<(), TestCaseError> {
    let interval = case.interval as usize;
    for (k, &key) in KEYS.iter().enumerate() {
        let ds = of_key(&case.diffs, merged, k);
        let want = reference(k, &ds);
        prop_assert_eq!(
            mem.store.get(key).cloned(),
            want.as_ref().map(Value::to_stored),
            "the value of {:?}",
            String::from_utf8_lossy(key)
        );
        let rows: BTreeMap<Pos, u64> = ds.iter().map(|d| (d.id(), d.seq)).collect();
        prop_assert_eq!(mem.diffs.get(key).cloned().unwrap_or_default(), rows);
        let checkpoints = mem.checkpoints_of(key);
        let Some(last) = ds.last() else {
            prop_assert!(!mem.keys.contains_key(key));
            prop_assert!(checkpoints.is_empty());
            continue;
        };
        let ks = state_of(mem, key).unwrap_or_default();
        prop_assert_eq!(ks.last, last.id());
        prop_assert_eq!(&ks.heads, &reference_heads(&ds), "the heads of {:?}", key);
        // A checkpoint after every `interval` diffs, holding the fold up to it.
        let places: Vec<Pos> = ds
            .iter()
            .skip(interval - 1)
            .step_by(interval)
            .map(|d| d.id())
            .collect();
        let held: Vec<Pos> = checkpoints.iter().map(|(at, _)| *at).collect();
        prop_assert_eq!(held, places, "the checkpoints of {:?}", key);
        for (at, value) in &checkpoints {
            let upto = ds.iter().take_while(|d| d.id() <= *at).count();
            prop_assert_eq!(
                stored(value.as_ref()),
                stored(reference(k, &ds[..upto]).as_ref()),
                "the checkpoint at {:?}",
                at
            );
        }
        prop_assert_eq!(ks.since_checkpoint as usize, ds.len() % interval);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Driving the fold as a peer's transactions do.

/// One transaction: the entries `held` are in their feeds first, then `adds` are folded in
/// order, then the store takes the outcome and the other entries are appended.
fn transact(
    mem: &mut MemoryStorage,
    interval: u32,
    adds: &[(Loaded, bool)],
) -> (Vec<Added>, Folded) {
    for (d, held) in adds {
        if *held {
            mem.entries.insert((d.writer, d.seq), d.record.clone());
        }
    }
    let merge = LastWriterWins;
    let mut fold = Fold::with_storage(&mut *mem, &merge, interval);
    let mut added = Vec::new();
    for (d, held) in adds {
        let copy = Loaded {
            record: d.record.clone(),
            ..*d
        };
        added.push(fold.add(copy, *held).unwrap_or_else(|e| panic!("add: {e}")));
    }
    let folded = fold.finish().unwrap_or_else(|e| panic!("finish: {e}"));
    mem.apply(&folded);
    for (d, held) in adds {
        if !held {
            mem.entries.insert((d.writer, d.seq), d.record.clone());
        }
    }
    (added, folded)
}

/// A key's causal metadata as a local write reads it.
fn causal(mem: &mut MemoryStorage, key: &[u8]) -> (Option<u64>, Vec<Dot>) {
    let merge = LastWriterWins;
    let mut fold = Fold::with_storage(&mut *mem, &merge, 1);
    fold.causal(key).unwrap_or_else(|e| panic!("causal: {e}"))
}

/// Everything the fold keeps, without the feeds' entries (which only grow).
/// The merge state of `key`: its row, or for a key with one diff (no row), that diff alone.
fn state_of(mem: &MemoryStorage, key: &[u8]) -> Option<KeyState> {
    if let Some(state) = mem.keys.get(key) {
        return Some(state.clone());
    }
    let rows = mem.diffs.get(key)?;
    match rows.iter().collect::<Vec<_>>()[..] {
        [(&(ts, writer), &seq)] => Some(super::single_state(Head { ts, writer, seq })),
        _ => None,
    }
}

fn tables_of(mem: &MemoryStorage) -> MemoryStorage {
    MemoryStorage {
        entries: Default::default(),
        ..mem.clone()
    }
}

/// Delivers every diff of `case` in its order and batches, checking the tables after every
/// batch, the result against all the diffs folded at once in merge order, and each key's causal
/// metadata. Returns the storage and the merged diffs (all of them).
fn deliver(case: &Case) -> Result<(MemoryStorage, BTreeSet<usize>), TestCaseError> {
    let mut mem = MemoryStorage::default();
    let mut merged = BTreeSet::new();
    let mut batch: Vec<(Loaded, bool)> = Vec::new();
    let mut expect = Vec::new();
    for (at, &i) in case.order.iter().enumerate() {
        let d = &case.diffs[i];
        // An entry appended after the fold may be one of a diff that arrives late.
        let held = case.held[at] || merged.contains(&i);
        batch.push((d.loaded(), held));
        expect.push(if merged.insert(i) {
            Added::Merged
        } else {
            Added::Duplicate
        });
        if case.cut[at] || at + 1 == case.order.len() {
            let (added, _) = transact(&mut mem, case.interval, &batch);
            prop_assert_eq!(&added, &expect);
            batch.clear();
            expect.clear();
            check(&mem, case, &merged)?;
        }
    }
    // The order of delivery leaves no trace: all the diffs at once, in merge order, keep the
    // same tables.
    prop_assert_eq!(tables_of(&at_once(case)), tables_of(&mem));
    for key in KEYS {
        let ks = state_of(&mem, key);
        let mut dots: Vec<Dot> = ks
            .iter()
            .flat_map(|s| &s.heads)
            .map(|h| Dot {
                writer: h.writer,
                seq: h.seq,
            })
            .collect();
        dots.sort_unstable();
        prop_assert_eq!(
            causal(&mut mem, key),
            (ks.map(|s| s.last.0), dots),
            "causal of {:?}",
            key
        );
    }
    Ok((mem, merged))
}

/// Every diff of `case` merged in one fold, in the order a merge round adds them.
fn at_once(case: &Case) -> MemoryStorage {
    let mut sorted: Vec<&Spec> = case.diffs.iter().collect();
    sorted.sort_by_key(|d| (d.k, d.id()));
    let all: Vec<(Loaded, bool)> = sorted.iter().map(|d| (d.loaded(), true)).collect();
    let mut mem = MemoryStorage::default();
    transact(&mut mem, case.interval, &all);
    mem
}

/// After every diff is merged: the same diff again changes nothing, and neither does another
/// entry with the same key and stamp.
fn redeliver_and_reuse(case: &Case, mem: &mut MemoryStorage) -> Result<(), TestCaseError> {
    let before = tables_of(mem);
    let d = &case.diffs[case.again];
    let (added, folded) = transact(mem, case.interval, &[(d.loaded(), true)]);
    prop_assert_eq!(added, vec![Added::Duplicate]);
    prop_assert!(folded.pending.is_empty());
    let mut reuse = d.loaded();
    reuse.seq += 1000;
    reuse.record.change = Change::Delete;
    let (added, folded) = transact(mem, case.interval, &[(reuse, true)]);
    prop_assert_eq!(added, vec![Added::Reused]);
    prop_assert!(folded.pending.is_empty());
    prop_assert_eq!(&tables_of(mem), &before);
    Ok(())
}

/// After every diff is merged: removing a writer's diffs from an entry on leaves the fold of
/// the others, and counting them again merges them back.
fn remove_and_readd(
    case: &Case,
    mem: &mut MemoryStorage,
    merged: &mut BTreeSet<usize>,
) -> Result<(), TestCaseError> {
    let (w, from) = case.removed;
    let gone: Vec<usize> = (0..case.diffs.len())
        .filter(|&i| case.diffs[i].w == w && case.diffs[i].seq >= from)
        .collect();
    // The entries from the cut on: the diffs that go, and entries that reused the key and
    // stamp of the writer's diffs before the cut (refused when they were merged), which must
    // leave those alone.
    let list: Vec<(Vec<u8>, u64, u64)> = (0..case.diffs.len())
        .filter(|&i| case.diffs[i].w == w)
        .map(|i| {
            let d = &case.diffs[i];
            let seq = if d.seq >= from { d.seq } else { d.seq + 1000 };
            (KEYS[d.k].to_vec(), d.ts, seq)
        })
        .collect();
    let folded = {
        let merge = LastWriterWins;
        let mut fold = Fold::with_storage(&mut *mem, &merge, case.interval);
        fold.remove_writer(WRITERS[w], &list)
            .unwrap_or_else(|e| panic!("remove_writer: {e}"));
        fold.finish().unwrap_or_else(|e| panic!("finish: {e}"))
    };
    mem.apply(&folded);
    let touched: BTreeSet<Vec<u8>> = gone
        .iter()
        .map(|&i| KEYS[case.diffs[i].k].to_vec())
        .collect();
    prop_assert_eq!(
        folded.pending.keys().cloned().collect::<BTreeSet<_>>(),
        touched
    );
    for i in &gone {
        merged.remove(i);
    }
    check(mem, case, merged)?;

    let mut back: Vec<&Spec> = gone.iter().map(|&i| &case.diffs[i]).collect();
    back.sort_by_key(|d| (d.k, d.id()));
    let adds: Vec<(Loaded, bool)> = back.iter().map(|d| (d.loaded(), true)).collect();
    let (added, _) = transact(mem, case.interval, &adds);
    prop_assert!(added.iter().all(|a| *a == Added::Merged));
    merged.extend(gone);
    check(mem, case, merged)?;
    prop_assert_eq!(tables_of(&at_once(case)), tables_of(mem));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any delivery of any diffs, in any batches, some twice: after every batch each key holds
    /// the reference fold, heads and checkpoints, and in the end the tables are those of all
    /// the diffs merged at once.
    #[test]
    fn deliveries_in_any_order_fold_to_the_reference(case in case()) {
        deliver(&case)?;
    }

    /// A re-delivered diff is a duplicate and a reused (key, stamp, writer) is refused, and
    /// neither changes anything.
    #[test]
    fn redelivered_and_reused_diffs_change_nothing(case in case()) {
        let (mut mem, _) = deliver(&case)?;
        redeliver_and_reuse(&case, &mut mem)?;
    }

    /// Removing a writer's diffs from an entry on recomputes the keys they touched to the fold
    /// of the others (value, heads, checkpoints), and a reuse after the cut of a stamp before
    /// it takes nothing out; merging them again restores everything.
    #[test]
    fn removing_a_writer_leaves_the_fold_of_the_others(case in case()) {
        let (mut mem, mut merged) = deliver(&case)?;
        remove_and_readd(&case, &mut mem, &mut merged)?;
    }
}

/// Every diff arrives late (stamps fall as they arrive, one per fold): each one rebases.
#[test]
fn diffs_arriving_newest_first_rebase_to_the_reference() {
    let set = |n: i64| {
        let mut m = Map::new();
        m.insert("f".into(), json!(n));
        Change::Set(Value::Json(Json::Object(m)))
    };
    let diffs: Vec<Spec> = (0..6)
        .map(|i| Spec {
            w: (i % 2) as usize,
            k: 0,
            ts: 10 - i,
            seq: i / 2,
            parents: Vec::new(),
            change: set(i as i64),
        })
        .collect();
    let case = Case {
        interval: 2,
        order: (0..6).collect(),
        cut: vec![true; 6],
        held: vec![true; 6],
        again: 0,
        removed: (1, 1),
        diffs,
    };
    let (mut mem, mut merged) = deliver(&case).unwrap_or_else(|e| panic!("{e}"));
    assert!(mem.checkpoints_of(b"a").len() == 3);
    redeliver_and_reuse(&case, &mut mem).unwrap_or_else(|e| panic!("{e}"));
    remove_and_readd(&case, &mut mem, &mut merged).unwrap_or_else(|e| panic!("{e}"));
}

/// A diff older than its key's newest whose entry is appended after the fold (`held` false)
/// rebases: the rebase reads it back from the fold's memory, with the held diffs after it from
/// their feeds. It once failed as a corrupt store ("a diff row names entry 0, which is not
/// held"): the rebase read it before the fold remembered it.
#[test]
fn a_late_diff_appended_after_the_fold_rebases() {
    let set = |n: i64| Change::Set(Value::Json(json!({ "f": n })));
    let spec = |w: usize, ts: u64, n: i64| Spec {
        w,
        k: 0,
        ts,
        seq: 0,
        parents: Vec::new(),
        change: set(n),
    };
    let (newer, older) = (spec(0, 5, 1), spec(1, 3, 2));
    let mut mem = MemoryStorage::default();
    let (added, folded) = transact(
        &mut mem,
        1,
        &[(newer.loaded(), true), (older.loaded(), false)],
    );
    assert_eq!(added, vec![Added::Merged, Added::Merged]);
    let want = reference(0, &[&older, &newer]);
    assert_eq!(folded.pending.get(KEYS[0]), Some(&want));
    assert_eq!(
        mem.checkpoints_of(KEYS[0]),
        vec![
            (older.id(), reference(0, &[&older])),
            (newer.id(), want.clone()),
        ]
    );
}
