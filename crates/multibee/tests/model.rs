//! The convergence property, checked against a reference model written from `docs/merge.md`
//! alone (it shares no code with the crate: only `serde_json` and what the test itself did).
//!
//! 2-5 writers with skewed, stalling, backward and jumping clocks make random edits (nested
//! objects created and edited concurrently at every depth, patches with nested objects and
//! nulls, deletes, re-creates, bytes, batches) while diffs travel in random schedules (any
//! batch size, forwarded through third peers, duplicated, re-delivered), and peers restart.
//! Membership changes at random points too: members add, remove (a cut at what they merged)
//! and expel (a cut at 0) writers, concurrently with each other and with the removed writers'
//! own writes, and re-add removed ones; some schedules start with peers that the first writer
//! did not add, which write on their own until (if ever) a member adds them.
//!
//! The model follows every peer: its physical clock, its HLC `h`, and which prefix of each
//! writer's diff feed it holds (delivery here always moves a prefix, and `ingest` merges at
//! once). A feed holds diffs and membership operations, in the order the model made them
//! (the cluster's setup included: the first writer's `Add`s). For every local write it
//! computes the change against the peer's merged value and the stamp from the peer's clock
//! and the key's newest merged stamp; for every membership operation, its stamp (raised above
//! every operation the peer holds), its cut, or the error the peer must refuse it with; for
//! every merge it observes the remote stamps. Each peer evaluates the operations it holds
//! ("Membership" in docs/merge.md), which gives each writer's status and so how much of its
//! feed counts; the peer knows (and so accepts the feed of) every writer that was ever a
//! member in one of its evaluations. After every step each peer the step touched must show the
//! model's value of every key, the model's counted diffs (writer, seq, stamp) in the model's
//! merge order, causally later writes after what they had merged, the model's conflicts, the
//! model's HLC and the model's writers (state, cut, who removed them, how much is held). In
//! the end, after a full sync, every peer has the model's membership, and peers that count the
//! same diffs hold the same store, the same histories, the same conflicts and the same writers.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use multibee_multibee::{BatchOp, Error, FeedKey, Value, WriterState};
use proptest::prelude::*;
use serde_json::{Map, Value as Json, json};

use crate::support::{Peer, cluster_adding, run, try_deliver};

const KEYS: [&str; 3] = ["a", "ab", "b"];
/// Field names at the top of a document, and below.
const FIELDS: [&str; 3] = ["f", "g", "n"];
const INNER: [&str; 2] = ["x", "y"];

/// Whether to compare conflicts on a peer whose diffs of a key are not causally closed (it
/// holds a diff but not every diff of the key that diff's writer had merged). docs/merge.md
/// defines "e covers d" as "e's writer had merged d", and heads by it; the implementation
/// decides it from the parents dots (the heads the writer had merged), which cannot tell that e
/// covers d when the diff linking them is not held: such a peer lists d as a conflict. Once a
/// peer holds the links (a full sync) both agree. Off until the rule or the doc changes.
const CHECK_CONFLICTS_WITHOUT_CLOSURE: bool = false;

/// `Options::max_drift_ms` (the default: `support::options` leaves it alone).
const MAX_DRIFT_MS: u64 = 60_000;
/// Every clock during the cluster's setup (`support::cluster_adding`).
const SETUP_MS: u64 = 1_000_000;
/// Every clock starts here, plus its peer's skew.
const BASE_MS: u64 = 1_700_000_000_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// How far ahead a jumping clock goes (ten years).
const FAR_AHEAD_MS: u64 = 10 * 365 * DAY as u64;
/// The database's first writer: a member from the start.
const ROOT: usize = 0;

/// One write of a peer.
#[derive(Clone, Debug)]
enum Op {
    /// Sets key `k` to a value.
    Put { k: usize, value: Value },
    /// Applies a JSON merge patch to key `k`.
    Patch { k: usize, patch: Json },
    /// Deletes key `k`.
    Del { k: usize },
}

impl Op {
    fn key(&self) -> usize {
        match self {
            Op::Put { k, .. } | Op::Patch { k, .. } | Op::Del { k } => *k,
        }
    }

    fn batch_op(&self) -> BatchOp {
        let key = |k: usize| KEYS[k].as_bytes().to_vec();
        match self {
            Op::Put { k, value } => BatchOp::Put(key(*k), value.clone()),
            Op::Patch { k, patch } => BatchOp::Patch(key(*k), patch.clone()),
            Op::Del { k } => BatchOp::Del(key(*k)),
        }
    }
}

#[derive(Clone, Debug)]
enum Step {
    /// Writer `w` writes one op (with `put`, `patch` or `del`).
    Write { w: usize, op: Op },
    /// Writer `w` writes several ops in one `batch`.
    Batch { w: usize, ops: Vec<Op> },
    /// Writer `w`'s clock moves by `delta` ms (0: the same millisecond, negative: backwards).
    Tick { w: usize, delta: i64 },
    /// Writer `w`'s clock is set to `ms` (jumping far ahead, or corrected back).
    SetClock { w: usize, ms: u64 },
    /// `to` receives up to `count` entries of `writer`'s feed from `holder` (forwarding when
    /// `holder` is not `writer`).
    Deliver {
        holder: usize,
        to: usize,
        writer: usize,
        count: u64,
    },
    /// `to` receives again a range of `writer`'s entries it already holds.
    Redeliver {
        to: usize,
        writer: usize,
        start: u64,
        len: u64,
    },
    /// Peer `w` closes and reopens its folder.
    Reopen { w: usize },
    /// Peer `by` adds `target` as a writer (`add_writer`).
    AddWriter { by: usize, target: usize },
    /// Peer `by` removes `target` at what it has merged of it (`remove_writer`).
    RemoveWriter { by: usize, target: usize },
    /// Peer `by` removes `target` with a cut at 0 (`expel_writer`).
    ExpelWriter { by: usize, target: usize },
}

// ---------------------------------------------------------------------------------------------
// Strategies.

fn object_of(
    names: &'static [&'static str],
    field: impl Strategy<Value = Json>,
    max: usize,
) -> impl Strategy<Value = Json> {
    proptest::collection::btree_map(prop::sample::select(names), field, 0..=max)
        .prop_map(|m| Json::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

fn leaf() -> impl Strategy<Value = Json> {
    prop_oneof![
        Just(json!(0)),
        Just(json!("")),
        Just(json!(false)),
        Just(json!(null)),
        (1..4i64).prop_map(|n| json!(n)),
        Just(json!([])),
        Just(json!([1, 2])),
        Just(json!([{"x": {}}, null])),
    ]
}

/// A JSON value with at most `depth` levels of objects.
fn json_value(depth: u32) -> BoxedStrategy<Json> {
    if depth == 0 {
        return leaf().boxed();
    }
    prop_oneof![
        1 => leaf(),
        1 => object_of(&INNER, json_value(depth - 1), 2),
    ]
    .boxed()
}

/// A document: mostly an object nesting up to four levels, sometimes a scalar, an array or
/// bytes.
fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => object_of(&FIELDS, json_value(3), 3).prop_map(Value::Json),
        1 => leaf().prop_map(Value::Json),
        1 => proptest::collection::vec(any::<u8>(), 0..3).prop_map(Value::Bytes),
    ]
}

/// A merge patch object at `depth` levels: fields set, removed (`null`) or patched further.
fn patch_object(names: &'static [&'static str], depth: u32) -> BoxedStrategy<Json> {
    let field = if depth <= 1 {
        prop_oneof![2 => Just(Json::Null), 3 => leaf()].boxed()
    } else {
        prop_oneof![
            1 => Just(Json::Null),
            2 => json_value(depth - 1),
            2 => patch_object(&INNER, depth - 1),
        ]
        .boxed()
    };
    object_of(names, field, 3).boxed()
}

fn patch() -> impl Strategy<Value = Json> {
    prop_oneof![
        6 => patch_object(&FIELDS, 4),
        1 => leaf(),
    ]
}

/// A key: "a" most often, so that writes meet.
fn key() -> impl Strategy<Value = usize> {
    prop_oneof![2 => Just(0usize), 1 => Just(1usize), 1 => Just(2usize)]
}

/// Boxed: a story holds several, and their value trees are too large for a test thread's
/// stack otherwise (in debug builds).
fn op() -> BoxedStrategy<Op> {
    prop_oneof![
        6 => (key(), value()).prop_map(|(k, value)| Op::Put { k, value }),
        4 => (key(), patch()).prop_map(|(k, patch)| Op::Patch { k, patch }),
        1 => key().prop_map(|k| Op::Del { k }),
    ]
    .boxed()
}

/// A clock delta: mostly a few milliseconds either way (0: the same millisecond), sometimes an
/// hour or a day either way.
fn delta() -> impl Strategy<Value = i64> {
    prop_oneof![
        8 => -2..3i64,
        1 => prop::sample::select(vec![HOUR, -HOUR, DAY, -DAY]),
    ]
}

/// A peer's clock skew from [`BASE_MS`] at the start.
fn skew() -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => Just(0i64),
        2 => -1_000..1_000i64,
        2 => prop::sample::select(vec![HOUR, -HOUR, DAY, -DAY]),
    ]
}

/// A writer `by` and a target: another peer mostly, sometimes `by` itself (refused).
fn by_and_target(n: usize) -> impl Strategy<Value = (usize, usize)> {
    (0..n, prop_oneof![1 => Just(0usize), 6 => 1..n.max(2)])
        .prop_map(move |(by, offset)| (by, (by + offset) % n))
}

/// A removal (`remove_writer`, or sometimes `expel_writer`) of `target` by `by`.
fn removal(by: usize, target: usize, expel: bool) -> Step {
    if expel {
        Step::ExpelWriter { by, target }
    } else {
        Step::RemoveWriter { by, target }
    }
}

fn step(n: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0..n, op()).prop_map(|(w, op)| Step::Write { w, op }),
        1 => (0..n, proptest::collection::vec(op(), 2..4))
            .prop_map(|(w, ops)| Step::Batch { w, ops }),
        3 => (0..n, delta()).prop_map(|(w, delta)| Step::Tick { w, delta }),
        1 => (0..n, prop::sample::select(vec![BASE_MS + FAR_AHEAD_MS, BASE_MS]))
            .prop_map(|(w, ms)| Step::SetClock { w, ms }),
        5 => (0..n, 0..n, prop_oneof![4 => 1..6u64, 1 => Just(100u64)])
            .prop_map(|(to, writer, count)| Step::Deliver { holder: writer, to, writer, count }),
        4 => (0..n, 0..n, 0..n, prop_oneof![4 => 1..6u64, 1 => Just(100u64)])
            .prop_map(|(holder, to, writer, count)| Step::Deliver { holder, to, writer, count }),
        1 => (0..n, 0..n, 0..6u64, 1..4u64)
            .prop_map(|(to, writer, start, len)| Step::Redeliver { to, writer, start, len }),
        1 => (0..n).prop_map(|w| Step::Reopen { w }),
        2 => by_and_target(n).prop_map(|(by, target)| Step::AddWriter { by, target }),
        1 => by_and_target(n).prop_map(|(by, target)| Step::RemoveWriter { by, target }),
        1 => by_and_target(n).prop_map(|(by, target)| Step::ExpelWriter { by, target }),
    ]
}

/// Membership stories that random steps make too rarely: two peers remove one writer without
/// having seen each other's removal (the writer writing in between); a removal concurrent with
/// the removed writer's own writes (it writes, is removed by a peer that merged only part of
/// it, writes on, learns of it, and is refused); a removed writer re-added by a peer that saw
/// the removal (or one that did not).
fn story(n: usize) -> impl Strategy<Value = Vec<Step>> {
    let concurrent_removals =
        (0..n, 0..n, 0..n, any::<[bool; 2]>(), op()).prop_map(|(a, b, t, expel, op)| {
            vec![
                removal(a, t, expel[0]),
                Step::Write { w: t, op },
                removal(b, t, expel[1]),
            ]
        });
    let removal_during_writes = (0..n, 0..n, 1..4u64, any::<bool>(), (op(), op(), op())).prop_map(
        |(a, t, count, expel, (op1, op2, op3))| {
            vec![
                Step::Write { w: t, op: op1 },
                Step::Deliver {
                    holder: t,
                    to: a,
                    writer: t,
                    count,
                },
                removal(a, t, expel),
                Step::Write { w: t, op: op2 },
                Step::Deliver {
                    holder: a,
                    to: t,
                    writer: a,
                    count: 100,
                },
                Step::Write { w: t, op: op3 },
            ]
        },
    );
    let readd = (0..n, 0..n, 0..n, any::<bool>(), any::<bool>(), op()).prop_map(
        |(a, b, t, expel, seen, op)| {
            let mut steps = vec![removal(a, t, expel), Step::Write { w: t, op }];
            if seen {
                steps.push(Step::Deliver {
                    holder: a,
                    to: b,
                    writer: a,
                    count: 100,
                });
            }
            steps.push(Step::AddWriter { by: b, target: t });
            steps
        },
    );
    prop_oneof![concurrent_removals, removal_during_writes, readd]
}

/// Which peers the first writer adds during setup: all of them, or some.
fn added(n: usize) -> impl Strategy<Value = Vec<bool>> {
    prop_oneof![
        1 => Just(vec![true; n]),
        1 => proptest::collection::vec(prop_oneof![2 => Just(true), 1 => Just(false)], n),
    ]
}

/// The peers the first writer adds during setup, their clock skews, and the steps (in
/// groups: one step, or a story).
fn scenario() -> impl Strategy<Value = (Vec<bool>, Vec<i64>, Vec<Vec<Step>>)> {
    (2..=5usize).prop_flat_map(|n| {
        (
            added(n),
            proptest::collection::vec(skew(), n),
            proptest::collection::vec(
                prop_oneof![
                    20 => step(n).prop_map(|s| vec![s]),
                    1 => story(n),
                ],
                1..80,
            ),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// The model, from docs/merge.md.

/// A field op of a `Fields` change.
#[derive(Clone, Debug, PartialEq)]
enum FieldOp {
    Set(Vec<String>, Json),
    Object(Vec<String>),
    Remove(Vec<String>),
}

#[derive(Clone, Debug, PartialEq)]
enum Change {
    Set(Value),
    Delete,
    Fields(Vec<FieldOp>),
}

impl Change {
    /// The ops as `(path, is an Object op)`: a whole-value change touches the root.
    fn ops(&self) -> Vec<(&[String], bool)> {
        match self {
            Change::Set(_) | Change::Delete => vec![(&[], false)],
            Change::Fields(ops) => ops
                .iter()
                .map(|op| match op {
                    FieldOp::Set(p, _) | FieldOp::Remove(p) => (p.as_slice(), false),
                    FieldOp::Object(p) => (p.as_slice(), true),
                })
                .collect(),
        }
    }

    /// Whether an op of `self` clobbers an op of `other` (or the reverse: it is symmetric).
    fn clobbers(&self, other: &Change) -> bool {
        self.ops().iter().any(|&(a, a_obj)| {
            other.ops().iter().any(|&(b, b_obj)| {
                let n = a.len().min(b.len());
                let overlap = a[..n] == b[..n];
                // Given an overlap, the longer path is strictly below the shorter.
                overlap
                    && !(a_obj && b_obj)
                    && !(a_obj && b.len() > a.len())
                    && !(b_obj && a.len() > b.len())
            })
        })
    }
}

/// One diff of a writer's feed.
#[derive(Clone, Debug)]
struct Diff {
    writer: usize,
    seq: u64,
    key: usize,
    stamp: u64,
    /// How many entries of each writer's feed the writer had merged (counted) when it wrote
    /// this one (of its own feed: `seq`).
    seen: Vec<u64>,
    change: Change,
}

impl Diff {
    /// Whether `self`'s writer had merged `d` (a diff of the same key) when it wrote `self`.
    fn covers(&self, d: &Diff) -> bool {
        self.key == d.key && d.seq < self.seen[d.writer]
    }
}

/// A membership operation (docs/merge.md, "Membership").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Membership {
    /// Makes the writer a member (again).
    Add(usize),
    /// Keeps the writer's feed entries below the cut counted, and no others.
    Remove(usize, u64),
}

/// A membership operation as an entry of its author's feed.
#[derive(Clone, Debug)]
struct MemberEntry {
    author: usize,
    seq: u64,
    stamp: u64,
    op: Membership,
}

/// One entry of a writer's diff feed.
#[derive(Clone, Debug)]
enum Entry {
    Diff(Diff),
    Member(MemberEntry),
}

impl Entry {
    fn stamp(&self) -> u64 {
        match self {
            Entry::Diff(d) => d.stamp,
            Entry::Member(m) => m.stamp,
        }
    }

    fn diff(&self) -> Option<&Diff> {
        match self {
            Entry::Diff(d) => Some(d),
            Entry::Member(_) => None,
        }
    }

    fn member(&self) -> Option<&MemberEntry> {
        match self {
            Entry::Member(m) => Some(m),
            Entry::Diff(_) => None,
        }
    }
}

/// A member's status once a peer has evaluated the operations it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Active,
    /// Its entries below `cut` count; the operation of `by` named the cut.
    Removed {
        cut: u64,
        by: usize,
    },
}

impl Status {
    /// The first entry of the writer's feed that does not count.
    fn limit(self) -> u64 {
        match self {
            Status::Active => u64::MAX,
            Status::Removed { cut, .. } => cut,
        }
    }
}

/// Why an operation was refused (the model's prediction, or the implementation's error).
#[derive(Clone, Debug, PartialEq)]
enum Refused {
    NotAMember,
    UnknownWriter,
    InvalidArgument,
    Removed,
    /// Any other error (the model never predicts one).
    Other(String),
}

fn refused<T>(r: Result<T, Error>) -> Result<T, Refused> {
    r.map_err(|e| match e {
        Error::NotAMember(_) => Refused::NotAMember,
        Error::UnknownWriter(_) => Refused::UnknownWriter,
        Error::InvalidArgument(_) => Refused::InvalidArgument,
        Error::Removed { .. } => Refused::Removed,
        e => Refused::Other(e.to_string()),
    })
}

/// Which membership call a step makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Add,
    Remove,
    Expel,
}

/// What a peer lists of one writer it knows (`MultiBee::writers`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct WriterView {
    writer: usize,
    state: WriterState,
    cut: Option<u64>,
    removed_by: Option<FeedKey>,
    /// Entries read (all of those held: `ingest` merges at once).
    merged: u64,
    length: u64,
}

#[derive(Clone, Debug)]
struct ModelPeer {
    /// The physical clock (ms).
    now: u64,
    /// The HLC.
    h: u64,
    /// The length of each writer's feed held (and read).
    held: Vec<u64>,
    /// The evaluation of the membership operations held: every writer that is or was a member,
    /// with its status.
    members: BTreeMap<usize, Status>,
    /// The writers this peer knows: every one that was a member in one of its evaluations
    /// (it accepts their feeds, and counts only what their status allows; a writer that is no
    /// longer in the evaluation counts nothing).
    known: Vec<bool>,
}

struct Model {
    /// Each writer's feed key.
    writers: Vec<[u8; 32]>,
    /// Each writer's feed: entry `i` is `feeds[w][i]`.
    feeds: Vec<Vec<Entry>>,
    peers: Vec<ModelPeer>,
}

impl Model {
    /// Every peer starts at its clock `now`, with its HLC at 0, holding nothing, knowing the
    /// first writer alone.
    fn new(writers: Vec<[u8; 32]>, now: u64) -> Model {
        let n = writers.len();
        Model {
            writers,
            feeds: vec![Vec::new(); n],
            peers: (0..n)
                .map(|_| ModelPeer {
                    now,
                    h: 0,
                    held: vec![0; n],
                    members: BTreeMap::from([(ROOT, Status::Active)]),
                    known: (0..n).map(|w| w == ROOT).collect(),
                })
                .collect(),
        }
    }

    /// The diffs among the first `len` entries of `w`'s feed.
    fn diffs(&self, w: usize, len: u64) -> impl Iterator<Item = &Diff> {
        self.feeds[w][..len as usize].iter().filter_map(Entry::diff)
    }

    fn writer_index(&self, key: &FeedKey) -> usize {
        self.writers
            .iter()
            .position(|w| *w == key.0)
            .expect("a writer of the cluster")
    }

    /// The first entry of `w`'s feed that does not count at peer `p`: by `w`'s status in
    /// `p`'s evaluation; nothing for a writer `p` knows that is no longer in it; everything of
    /// `p`'s own feed while `p` has never been a member in its own view.
    fn limit(&self, p: usize, w: usize) -> u64 {
        let peer = &self.peers[p];
        match peer.members.get(&w) {
            Some(status) => status.limit(),
            None if w == p && !peer.known[p] => u64::MAX,
            None => 0,
        }
    }

    /// How many entries of each writer's feed count at peer `p` (a prefix of what it holds).
    fn counted(&self, p: usize) -> Vec<u64> {
        (0..self.writers.len())
            .map(|w| self.peers[p].held[w].min(self.limit(p, w)))
            .collect()
    }

    /// Whether `p` is a member (an active one) in its own evaluation.
    fn active(&self, p: usize) -> bool {
        self.peers[p].members.get(&p) == Some(&Status::Active)
    }

    /// The membership operations `p` holds, in evaluation order: `(stamp, author key)`.
    fn member_ops(&self, p: usize) -> Vec<&MemberEntry> {
        let mut ops: Vec<&MemberEntry> = (0..self.writers.len())
            .flat_map(|w| self.feeds[w][..self.peers[p].held[w] as usize].iter())
            .filter_map(Entry::member)
            .collect();
        ops.sort_by_key(|m| (m.stamp, self.writers[m.author], m.seq));
        ops
    }

    /// Whether operation `m` counts, given the statuses before it.
    fn counts(members: &BTreeMap<usize, Status>, m: &MemberEntry) -> bool {
        match members.get(&m.author) {
            Some(Status::Active) => true,
            Some(Status::Removed { cut, .. }) => m.seq < *cut,
            None => false,
        }
    }

    /// Evaluates the operations `p` holds, starting from the first writer alone; each one
    /// that counts applies (a removal only of a writer that is or was a member).
    fn evaluate(&self, p: usize) -> BTreeMap<usize, Status> {
        let mut members = BTreeMap::from([(ROOT, Status::Active)]);
        for m in self.member_ops(p) {
            if !Self::counts(&members, m) {
                continue;
            }
            match m.op {
                Membership::Add(w) => {
                    members.insert(w, Status::Active);
                }
                Membership::Remove(w, cut) => {
                    if let Some(status) = members.get_mut(&w) {
                        *status = Status::Removed { cut, by: m.author };
                    }
                }
            }
        }
        members
    }

    /// Re-evaluates `p`'s membership (after it got new operations); it knows every member.
    fn reevaluate(&mut self, p: usize) {
        let members = self.evaluate(p);
        let peer = &mut self.peers[p];
        for w in members.keys() {
            peer.known[*w] = true;
        }
        peer.members = members;
    }

    /// The diffs of key `k` peer `p` has merged (those that count), in merge order.
    fn merged(&self, p: usize, k: usize) -> Vec<&Diff> {
        let counted = self.counted(p);
        let mut out: Vec<&Diff> = (0..self.writers.len())
            .flat_map(|w| self.diffs(w, counted[w]))
            .filter(|d| d.key == k)
            .collect();
        out.sort_by_key(|d| self.order(d));
        out
    }

    /// The merge order: `(stamp, writer key bytes)`.
    fn order(&self, d: &Diff) -> (u64, [u8; 32]) {
        (d.stamp, self.writers[d.writer])
    }

    fn value(&self, p: usize, k: usize) -> Option<Value> {
        self.merged(p, k)
            .into_iter()
            .fold(None, |v, d| apply(&d.change, v))
    }

    /// The next HLC tick of peer `p`: `t = max(now << 16, h + 1)`, `h = t`.
    fn tick(&mut self, p: usize) -> u64 {
        let peer = &mut self.peers[p];
        let t = (peer.now << 16).max(peer.h + 1);
        peer.h = t;
        t
    }

    /// A local write of `ops` (one batch) by peer `p`: refused if `p` knows itself as a
    /// writer and is not an active member (removed, or its adding no longer counts).
    fn write(&mut self, p: usize, ops: &[Op]) -> Result<(), Refused> {
        if self.peers[p].known[p] && !self.active(p) {
            return Err(Refused::Removed);
        }
        for op in ops {
            let k = op.key();
            let old = self.value(p, k);
            let new = match op {
                Op::Put { value, .. } => Some(value.clone()),
                Op::Del { .. } => None,
                Op::Patch { patch, .. } => Some(merge_patch(old.as_ref(), patch)),
            };
            let Some(change) = change_between(old.as_ref(), new.as_ref()) else {
                continue;
            };
            let m = self.merged(p, k).iter().map(|d| d.stamp).max();
            let t = self.tick(p);
            let stamp = m.map_or(t, |m| t.max(m + 1));
            let seq = self.feeds[p].len() as u64;
            let mut seen = self.counted(p);
            seen[p] = seq;
            self.peers[p].held[p] += 1;
            self.feeds[p].push(Entry::Diff(Diff {
                writer: p,
                seq,
                key: k,
                stamp,
                seen,
                change,
            }));
        }
        Ok(())
    }

    /// A membership call of peer `p` about `target`: the operation it appends to its feed
    /// (stamped above every operation it holds, a removal cut at what it merged of the
    /// target, an expulsion at 0), or why it is refused.
    fn member(&mut self, p: usize, call: Call, target: usize) -> Result<(), Refused> {
        let op = match call {
            Call::Add if target == p => return Err(Refused::InvalidArgument),
            Call::Add if !self.active(p) => return Err(Refused::NotAMember),
            Call::Add => Membership::Add(target),
            Call::Remove | Call::Expel => {
                if !self.active(p) {
                    return Err(Refused::NotAMember);
                }
                if target == p {
                    return Err(Refused::InvalidArgument);
                }
                if !self.peers[p].members.contains_key(&target) {
                    return Err(Refused::UnknownWriter);
                }
                let cut = match call {
                    Call::Expel => 0,
                    _ => self.counted(p)[target],
                };
                Membership::Remove(target, cut)
            }
        };
        let last = self.member_ops(p).iter().map(|m| m.stamp).max();
        let t = self.tick(p);
        let stamp = last.map_or(t, |last| t.max(last + 1));
        let seq = self.feeds[p].len() as u64;
        self.feeds[p].push(Entry::Member(MemberEntry {
            author: p,
            seq,
            stamp,
            op,
        }));
        self.peers[p].held[p] += 1;
        self.reevaluate(p);
        Ok(())
    }

    /// `to` receives up to `count` of `writer`'s entries it lacks, as held by `holder`: refused
    /// if `to` does not know `writer`. Every entry's stamp is observed; the membership is
    /// evaluated again.
    fn deliver(
        &mut self,
        holder: usize,
        to: usize,
        writer: usize,
        count: u64,
    ) -> Result<u64, Refused> {
        let start = self.peers[to].held[writer];
        let end = self.peers[holder].held[writer].min(start.saturating_add(count));
        if end <= start {
            return Ok(0);
        }
        if !self.peers[to].known[writer] {
            return Err(Refused::UnknownWriter);
        }
        let stamps: Vec<u64> = self.feeds[writer][start as usize..end as usize]
            .iter()
            .map(Entry::stamp)
            .collect();
        let peer = &mut self.peers[to];
        for stamp in stamps {
            if stamp >> 16 <= peer.now.saturating_add(MAX_DRIFT_MS) {
                peer.h = peer.h.max(stamp);
            }
        }
        peer.held[writer] = end;
        self.reevaluate(to);
        Ok(end - start)
    }

    /// The writers `p` lists: every one it knows but itself, in key order.
    fn writer_views(&self, p: usize) -> Vec<WriterView> {
        let peer = &self.peers[p];
        let mut out: Vec<WriterView> = (0..self.writers.len())
            .filter(|&w| w != p && peer.known[w])
            .map(|w| {
                let (state, cut, removed_by) = match peer.members.get(&w) {
                    Some(Status::Active) => (WriterState::Active, None, None),
                    Some(Status::Removed { cut, by }) => (
                        WriterState::Removed,
                        Some(*cut),
                        Some(FeedKey(self.writers[*by])),
                    ),
                    // Its adding no longer counts: none of it counts, and nobody removed it.
                    None => (WriterState::Removed, Some(0), None),
                };
                WriterView {
                    writer: w,
                    state,
                    cut,
                    removed_by,
                    merged: peer.held[w],
                    length: peer.held[w],
                }
            })
            .collect();
        out.sort_by_key(|v| self.writers[v.writer]);
        out
    }

    /// The heads of key `k` at peer `p`, in merge order.
    fn heads(&self, p: usize, k: usize) -> Vec<&Diff> {
        let all = self.merged(p, k);
        all.iter()
            .filter(|d| !all.iter().any(|e| e.covers(d)))
            .copied()
            .collect()
    }

    /// Whether peer `p` counts every diff of key `k` that the writer of a diff of `k` it
    /// counts had merged.
    fn closed(&self, p: usize, k: usize) -> bool {
        let counted = self.counted(p);
        self.merged(p, k).iter().all(|e| {
            (0..self.writers.len()).all(|w| {
                self.diffs(w, e.seen[w])
                    .all(|d| d.key != k || d.seq < counted[w])
            })
        })
    }

    /// The conflicts of key `k` at peer `p`: `(writer, stamp)` in merge order.
    fn conflicts(&self, p: usize, k: usize) -> Vec<(usize, u64)> {
        let heads = self.heads(p, k);
        heads
            .iter()
            .enumerate()
            .filter(|(i, d)| heads[i + 1..].iter().any(|e| e.change.clobbers(&d.change)))
            .map(|(_, d)| (d.writer, d.stamp))
            .collect()
    }
}

/// RFC 7386.
fn merge_patch(target: Option<&Value>, patch: &Json) -> Value {
    let target = match target {
        Some(Value::Json(j)) => Some(j),
        _ => None,
    };
    Value::Json(patch_json(target, patch))
}

fn patch_json(target: Option<&Json>, patch: &Json) -> Json {
    let Json::Object(fields) = patch else {
        return patch.clone();
    };
    let mut out = match target {
        Some(Json::Object(t)) => t.clone(),
        _ => Map::new(),
    };
    for (name, v) in fields {
        if v.is_null() {
            out.remove(name);
        } else {
            let patched = patch_json(out.get(name), v);
            out.insert(name.clone(), patched);
        }
    }
    Json::Object(out)
}

/// The change a local write makes, against the merged value `old`; `None`: nothing is written.
fn change_between(old: Option<&Value>, new: Option<&Value>) -> Option<Change> {
    match new {
        None => old.map(|_| Change::Delete),
        Some(Value::Json(Json::Object(n))) => {
            let old_object = match old {
                Some(Value::Json(Json::Object(o))) => Some(o),
                _ => None,
            };
            let mut ops = Vec::new();
            object_ops(
                &mut Vec::new(),
                old_object.unwrap_or(&Map::new()),
                n,
                &mut ops,
            );
            (!ops.is_empty() || old_object.is_none()).then_some(Change::Fields(ops))
        }
        Some(v) => (old != Some(v)).then(|| Change::Set(v.clone())),
    }
}

fn object_ops(
    path: &mut Vec<String>,
    o: &Map<String, Json>,
    n: &Map<String, Json>,
    ops: &mut Vec<FieldOp>,
) {
    let mut names: Vec<&String> = n.keys().collect();
    names.sort();
    for f in names {
        path.push(f.clone());
        match (&n[f], o.get(f)) {
            (Json::Object(nf), Some(Json::Object(of))) => object_ops(path, of, nf, ops),
            (Json::Object(nf), _) => {
                ops.push(FieldOp::Object(path.clone()));
                object_ops(path, &Map::new(), nf, ops);
            }
            (nv, ov) => {
                if ov != Some(nv) {
                    ops.push(FieldOp::Set(path.clone(), nv.clone()));
                }
            }
        }
        path.pop();
    }
    let mut gone: Vec<&String> = o.keys().filter(|f| !n.contains_key(*f)).collect();
    gone.sort();
    for f in gone {
        let mut p = path.clone();
        p.push(f.clone());
        ops.push(FieldOp::Remove(p));
    }
}

fn apply(change: &Change, state: Option<Value>) -> Option<Value> {
    match change {
        Change::Set(v) => Some(v.clone()),
        Change::Delete => None,
        Change::Fields(ops) => {
            let mut doc = match state {
                Some(Value::Json(Json::Object(m))) => m,
                _ => Map::new(),
            };
            for op in ops {
                match op {
                    FieldOp::Set(path, v) => {
                        let (last, parents) = path.split_last().expect("a field path");
                        make_parents(&mut doc, parents).insert(last.clone(), v.clone());
                    }
                    FieldOp::Object(path) => {
                        let (last, parents) = path.split_last().expect("a field path");
                        let map = make_parents(&mut doc, parents);
                        if !map.get(last).is_some_and(Json::is_object) {
                            map.insert(last.clone(), Json::Object(Map::new()));
                        }
                    }
                    FieldOp::Remove(path) => {
                        let (last, parents) = path.split_last().expect("a field path");
                        if let Some(map) = existing_parents(&mut doc, parents) {
                            map.remove(last);
                        }
                    }
                }
            }
            Some(Value::Json(Json::Object(doc)))
        }
    }
}

/// Walks `parents`, making each an empty object where it is missing or not an object.
fn make_parents<'a>(
    doc: &'a mut Map<String, Json>,
    parents: &[String],
) -> &'a mut Map<String, Json> {
    let mut map = doc;
    for k in parents {
        let slot = map
            .entry(k.clone())
            .or_insert_with(|| Json::Object(Map::new()));
        if !slot.is_object() {
            *slot = Json::Object(Map::new());
        }
        map = slot.as_object_mut().expect("made an object just above");
    }
    map
}

/// Walks `parents` through existing objects only.
fn existing_parents<'a>(
    doc: &'a mut Map<String, Json>,
    parents: &[String],
) -> Option<&'a mut Map<String, Json>> {
    let mut map = doc;
    for k in parents {
        map = map.get_mut(k)?.as_object_mut()?;
    }
    Some(map)
}

// ---------------------------------------------------------------------------------------------
// Checking the peers against the model.

fn show_stamp(stamp: u64) -> String {
    let ms = i128::from(stamp >> 16) - i128::from(BASE_MS);
    format!("B{ms:+}.{}", stamp & 0xFFFF)
}

fn show_status(status: Option<&Status>) -> String {
    match status {
        None => "-".into(),
        Some(Status::Active) => "active".into(),
        Some(Status::Removed { cut, by }) => format!("removed at {cut} by w{by}"),
    }
}

/// Peer `p`'s membership, model and implementation side by side.
fn describe_membership(model: &Model, peer: &Peer, p: usize) -> String {
    let mut out = String::new();
    let mp = &model.peers[p];
    let _ = writeln!(
        out,
        "peer {p} membership: held {:?}, counted {:?}, knows {:?}",
        mp.held,
        model.counted(p),
        (0..model.writers.len())
            .filter(|w| mp.known[*w])
            .collect::<Vec<_>>(),
    );
    let _ = writeln!(out, "  model operations (evaluation order):");
    let mut members = BTreeMap::from([(ROOT, Status::Active)]);
    for m in model.member_ops(p) {
        let counts = Model::counts(&members, m);
        if counts {
            match m.op {
                Membership::Add(w) => {
                    members.insert(w, Status::Active);
                }
                Membership::Remove(w, cut) => {
                    if let Some(s) = members.get_mut(&w) {
                        *s = Status::Removed { cut, by: m.author };
                    }
                }
            }
        }
        let _ = writeln!(
            out,
            "    w{}#{} {}: {:?}{}",
            m.author,
            m.seq,
            show_stamp(m.stamp),
            m.op,
            if counts { "" } else { " (rejected)" }
        );
    }
    for w in 0..model.writers.len() {
        let _ = writeln!(out, "  model w{w}: {}", show_status(mp.members.get(&w)));
    }
    let _ = writeln!(out, "  model writers: {:?}", model.writer_views(p));
    let _ = writeln!(out, "  got writers:   {:?}", got_writers(model, peer));
    out
}

/// Everything about key `k` at peer `p`, model and implementation side by side.
fn describe(model: &Model, peer: &Peer, p: usize, k: usize) -> String {
    let mut out = String::new();
    let mp = &model.peers[p];
    let _ = writeln!(
        out,
        "peer {p} key {:?}: clock B{:+} held {:?}, model h {} / got h {}",
        KEYS[k],
        i128::from(mp.now) - i128::from(BASE_MS),
        mp.held,
        show_stamp(mp.h),
        show_stamp(peer.mb.clock().0),
    );
    let _ = writeln!(out, "  model value: {:?}", model.value(p, k));
    let _ = writeln!(out, "  got value:   {:?}", peer.mb.get(KEYS[k]));
    let _ = writeln!(out, "  model diffs (merge order):");
    for d in model.merged(p, k) {
        let _ = writeln!(
            out,
            "    w{}#{} {} seen {:?}: {:?}",
            d.writer,
            d.seq,
            show_stamp(d.stamp),
            d.seen,
            d.change
        );
    }
    let _ = writeln!(out, "  got history:");
    match peer.mb.history(KEYS[k]) {
        Ok(history) => {
            for e in history {
                let _ = writeln!(
                    out,
                    "    w{}#{} {}: {:?}",
                    model.writer_index(&e.writer),
                    e.seq,
                    show_stamp(e.ts.0),
                    e.change
                );
            }
        }
        Err(e) => {
            let _ = writeln!(out, "    {e}");
        }
    }
    let _ = writeln!(
        out,
        "  model conflicts: {:?}",
        show_conflicts(&model.conflicts(p, k))
    );
    let got = got_conflicts(model, peer, k);
    let _ = writeln!(out, "  got conflicts:   {:?}", show_conflicts(&got));
    out.push_str(&describe_membership(model, peer, p));
    out
}

fn show_conflicts(c: &[(usize, u64)]) -> Vec<String> {
    c.iter()
        .map(|(w, s)| format!("w{w} {}", show_stamp(*s)))
        .collect()
}

fn got_history(model: &Model, peer: &Peer, k: usize) -> Vec<(usize, u64, u64)> {
    peer.mb
        .history(KEYS[k])
        .unwrap()
        .iter()
        .map(|e| (model.writer_index(&e.writer), e.seq, e.ts.0))
        .collect()
}

fn got_conflicts(model: &Model, peer: &Peer, k: usize) -> Vec<(usize, u64)> {
    peer.mb
        .conflicts(KEYS[k])
        .unwrap()
        .iter()
        .map(|c| (model.writer_index(&c.writer), c.ts.0))
        .collect()
}

fn got_writers(model: &Model, peer: &Peer) -> Vec<WriterView> {
    peer.mb
        .writers()
        .unwrap()
        .iter()
        .map(|w| WriterView {
            writer: model.writer_index(&w.key),
            state: w.state,
            cut: w.cut,
            removed_by: w.removed_by,
            merged: w.merged,
            length: w.length,
        })
        .collect()
}

/// Checks peer `p` against the model: every key's value, diffs, causal order and conflicts,
/// its HLC, and the writers it lists.
fn check_peer(model: &Model, peers: &[Peer], p: usize, when: &str) -> Result<(), TestCaseError> {
    let peer = &peers[p];
    for (k, key) in KEYS.iter().enumerate() {
        let mut problems = Vec::new();
        let history = got_history(model, peer, k);
        // Causality: a diff whose writer had merged another of the key comes after it.
        let position =
            |w: usize, seq: u64| history.iter().position(|&(hw, hs, _)| (hw, hs) == (w, seq));
        for e in model.merged(p, k) {
            for d in model.merged(p, k) {
                if e.covers(d)
                    && let (Some(pd), Some(pe)) =
                        (position(d.writer, d.seq), position(e.writer, e.seq))
                    && pe < pd
                {
                    problems.push(format!(
                        "w{}#{} was written after merging w{}#{} but is before it in merge order",
                        e.writer, e.seq, d.writer, d.seq
                    ));
                }
            }
        }
        let want: Vec<(usize, u64, u64)> = model
            .merged(p, k)
            .iter()
            .map(|d| (d.writer, d.seq, d.stamp))
            .collect();
        if history != want {
            problems.push("the diffs (writer, seq, stamp) in merge order differ".into());
        }
        if peer.mb.get(key).unwrap() != model.value(p, k) {
            problems.push("the value differs".into());
        }
        if (CHECK_CONFLICTS_WITHOUT_CLOSURE || model.closed(p, k))
            && got_conflicts(model, peer, k) != model.conflicts(p, k)
        {
            problems.push("the conflicts differ".into());
        }
        if peer.mb.clock().0 != model.peers[p].h {
            problems.push("the HLC differs".into());
        }
        if !problems.is_empty() {
            return Err(TestCaseError::fail(format!(
                "{when}: {}\n{}",
                problems.join("; "),
                describe(model, peer, p, k)
            )));
        }
    }
    if got_writers(model, peer) != model.writer_views(p) {
        return Err(TestCaseError::fail(format!(
            "{when}: the writers differ\n{}",
            describe_membership(model, peer, p)
        )));
    }
    Ok(())
}

/// Fails unless the implementation's outcome `got` is the model's `want`.
fn agree<T: std::fmt::Debug + PartialEq>(
    got: &Result<T, Refused>,
    want: &Result<T, Refused>,
    model: &Model,
    peers: &[Peer],
    p: usize,
    when: &str,
) -> Result<(), TestCaseError> {
    if got == want {
        return Ok(());
    }
    Err(TestCaseError::fail(format!(
        "{when}: got {got:?}, the model says {want:?}\n{}",
        describe_membership(model, &peers[p], p)
    )))
}

/// Delivers `writer`'s entries from `holder` to `to` on both sides; returns how many moved.
async fn deliver_both(
    model: &mut Model,
    peers: &[Peer],
    (holder, to, writer, count): (usize, usize, usize, u64),
    when: &str,
) -> Result<u64, TestCaseError> {
    let key = peers[writer].key();
    let got = refused(try_deliver(&peers[holder], &peers[to], key, count).await);
    let want = model.deliver(holder, to, writer, count);
    agree(&got, &want, model, peers, to, when)?;
    Ok(want.unwrap_or(0))
}

async fn play(added: &[bool], skews: &[i64], steps: &[Step]) -> Result<(), TestCaseError> {
    let n = added.len();
    let mut peers = cluster_adding(added).await;
    // The setup, in the model: the first writer adds some peers, every peer gets its feed.
    let mut model = Model::new(peers.iter().map(|p| p.key().0).collect(), SETUP_MS);
    for (i, add) in added.iter().enumerate().skip(1) {
        if *add {
            prop_assert_eq!(model.member(ROOT, Call::Add, i), Ok(()));
        }
    }
    for i in 1..n {
        prop_assert_eq!(
            model.deliver(ROOT, i, ROOT, u64::MAX),
            Ok(model.peers[ROOT].held[ROOT])
        );
    }
    for (p, peer) in peers.iter().enumerate() {
        for (w, writer) in peers.iter().enumerate() {
            prop_assert_eq!(peer.holds(&writer.key()), model.peers[p].held[w]);
        }
        check_peer(&model, &peers, p, "after the setup")?;
    }
    let clocks: Vec<u64> = skews
        .iter()
        .map(|s| BASE_MS.saturating_add_signed(*s))
        .collect();
    for (p, ms) in clocks.iter().enumerate() {
        peers[p].clock.set(*ms);
        model.peers[p].now = *ms;
    }
    for (i, step) in steps.iter().enumerate() {
        let when = format!("after step {i} {step:?}");
        let touched = match step {
            Step::Write { w, op } => {
                let mb = &peers[*w].mb;
                let got = refused(match op {
                    Op::Put { k, value } => mb.put(KEYS[*k], value.clone()).await,
                    Op::Patch { k, patch } => mb.patch(KEYS[*k], patch.clone()).await,
                    Op::Del { k } => mb.del(KEYS[*k]).await,
                })
                .map(|_| ());
                let want = model.write(*w, std::slice::from_ref(op));
                agree(&got, &want, &model, &peers, *w, &when)?;
                Some(*w)
            }
            Step::Batch { w, ops } => {
                let got = refused(
                    peers[*w]
                        .mb
                        .batch(ops.iter().map(Op::batch_op).collect())
                        .await,
                )
                .map(|_| ());
                let want = model.write(*w, ops);
                agree(&got, &want, &model, &peers, *w, &when)?;
                Some(*w)
            }
            Step::Tick { w, delta } => {
                peers[*w].clock.advance(*delta);
                let now = &mut model.peers[*w].now;
                *now = now.saturating_add_signed(*delta);
                None
            }
            Step::SetClock { w, ms } => {
                peers[*w].clock.set(*ms);
                model.peers[*w].now = *ms;
                None
            }
            Step::Deliver {
                holder,
                to,
                writer,
                count,
            } => {
                if holder == to {
                    None
                } else {
                    deliver_both(&mut model, &peers, (*holder, *to, *writer, *count), &when)
                        .await?;
                    Some(*to)
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
                    Some(*to)
                } else {
                    None
                }
            }
            Step::Reopen { w } => {
                let peer = peers.remove(*w);
                peers.insert(*w, peer.reopen().await);
                Some(*w)
            }
            Step::AddWriter { by, target }
            | Step::RemoveWriter { by, target }
            | Step::ExpelWriter { by, target } => {
                let (mb, key) = (&peers[*by].mb, peers[*target].key());
                let (got, call) = match step {
                    Step::AddWriter { .. } => (mb.add_writer(key).await, Call::Add),
                    Step::RemoveWriter { .. } => (mb.remove_writer(key).await, Call::Remove),
                    _ => (mb.expel_writer(key).await, Call::Expel),
                };
                let want = model.member(*by, call, *target);
                agree(&refused(got), &want, &model, &peers, *by, &when)?;
                Some(*by)
            }
        };
        if let Some(p) = touched {
            check_peer(&model, &peers, p, &when)?;
        }
    }

    // A full sync: every entry any peer holds goes to every peer that knows its writer
    // (forwarded: a writer's feed travels through the others), until nothing moves.
    loop {
        let mut moved = 0;
        for holder in 0..n {
            for to in (0..n).filter(|to| *to != holder) {
                for writer in 0..n {
                    let what = (holder, to, writer, u64::MAX);
                    moved += deliver_both(&mut model, &peers, what, "in the full sync").await?;
                }
            }
        }
        if moved == 0 {
            break;
        }
    }
    for p in 0..n {
        check_peer(&model, &peers, p, "after the full sync")?;
    }
    // Every peer evaluates the same membership once it holds the same operations.
    for p in 1..n {
        prop_assert_eq!(&model.peers[p].members, &model.peers[0].members);
    }
    // Peers that count the same diffs hold the same store, histories, conflicts and writers
    // (a peer that no member added counts its own writes alone).
    for a in 0..n {
        for b in a + 1..n {
            if model.counted(a) != model.counted(b) {
                continue;
            }
            let (pa, pb) = (&peers[a], &peers[b]);
            prop_assert_eq!(pa.mb.state_hash().unwrap(), pb.mb.state_hash().unwrap());
            for key in KEYS {
                prop_assert_eq!(pa.mb.history(key).unwrap(), pb.mb.history(key).unwrap());
                prop_assert_eq!(pa.mb.conflicts(key).unwrap(), pb.mb.conflicts(key).unwrap());
            }
            let listed = |p: &Peer| -> BTreeMap<[u8; 32], _> {
                p.mb.writers()
                    .unwrap()
                    .into_iter()
                    .filter(|w| w.key != pa.key() && w.key != pb.key())
                    .map(|w| (w.key.0, (w.state, w.cut, w.removed_by)))
                    .collect()
            };
            let (la, lb) = (listed(pa), listed(pb));
            for (w, status) in &la {
                if let Some(other) = lb.get(w) {
                    prop_assert_eq!(status, other);
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_peer_matches_the_model_of_docs_merge_md((added, skews, steps) in scenario()) {
        let steps: Vec<Step> = steps.into_iter().flatten().collect();
        run(play(&added, &skews, &steps))?;
    }
}
