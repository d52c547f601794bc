//! Crash torture: three node processes write at the same time and replicate while a driver
//! kills a random one with SIGKILL in the middle of a batch of writes it was sent without
//! waiting for the answers, and restarts it. Each node puts, patches and deletes keys of its
//! own (so each key's value is decided by one writer's writes, in order), over and over across
//! rounds. Per key the test keeps the outcome of the last acknowledged write and the outcomes
//! of the unacknowledged writes sent after it: once the victim is back, each of its keys must
//! hold one of those (what was answered ok survived; what was not may or may not have), and at
//! the end every peer holds exactly the expected keys and values, the stores are identical, a
//! fresh peer that merges every diff feed from scratch agrees, and every derived row of each
//! store bee (its version, history, checkouts at every version, head) equals what the test
//! folds from the store feed's entries with its own decoder.
//!
//! `MULTIBEE_TORTURE_ROUNDS` sets the rounds (default 30), `MULTIBEE_TORTURE_SEED` replays a
//! run; a failure prints the seed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use multibee::bee::{HistoryOptions, RangeOptions};
use serde_json::{Value as Json, json};

use crate::node::Node;

/// A small deterministic generator (xorshift), so a seed replays a run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Starts node `i` on its folder, dialing every running node.
fn start(dir: &Path, running: &[Option<Node>], writers: &[String]) -> Node {
    let mut args: Vec<String> = Vec::new();
    for node in running.iter().flatten() {
        args.push("--dial".into());
        args.push(node.addr());
    }
    for w in writers {
        args.push("--writer".into());
        args.push(w.clone());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Node::start(dir, &args)
}

#[test]
fn sigkill_torture_loses_nothing_acknowledged_and_converges() {
    let rounds = env_u64("MULTIBEE_TORTURE_ROUNDS").unwrap_or(30);
    let seed = env_u64("MULTIBEE_TORTURE_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        t.as_nanos() as u64 | 1
    });
    println!("torture seed {seed} (MULTIBEE_TORTURE_SEED={seed} replays it), {rounds} rounds");
    let result = std::panic::catch_unwind(|| torture(seed, rounds));
    if let Err(panic) = result {
        eprintln!("torture failed: replay with MULTIBEE_TORTURE_SEED={seed}");
        std::panic::resume_unwind(panic);
    }
}

/// The nodes.
const N: usize = 3;
/// The keys each node writes (and only it): few, so that they are written again and again.
const KEYS: u64 = 6;

/// One write a node is sent.
#[derive(Clone, Debug)]
enum Write {
    Put(Json),
    Patch(Json),
    Del,
}

impl Write {
    fn random(rng: &mut Rng, node: usize, n: u64) -> Write {
        match rng.below(10) {
            0..=3 => Write::Put(json!({"by": node, "n": n, "sub": {"x": n}})),
            4..=7 => Write::Patch(match rng.below(4) {
                0 => json!({"n": n}),
                1 => json!({"by": null, "p": n}),
                2 => json!({"sub": {"x": null, "y": n}}),
                _ => json!({"sub": null, "q": {"z": n}}),
            }),
            _ => Write::Del,
        }
    }

    fn command(&self, key: &str) -> String {
        match self {
            Write::Put(v) => format!("put {key} {v}"),
            Write::Patch(p) => format!("patch {key} {p}"),
            Write::Del => format!("del {key}"),
        }
    }

    /// The value after this write, from the value before (null: absent).
    fn apply(&self, before: &Json) -> Json {
        match self {
            Write::Put(v) => v.clone(),
            Write::Patch(p) => merge_patch(before, p),
            Write::Del => Json::Null,
        }
    }
}

/// RFC 7386, written here again: the test's model does not borrow the database's code.
fn merge_patch(target: &Json, patch: &Json) -> Json {
    let Json::Object(fields) = patch else {
        return patch.clone();
    };
    let mut doc = match target {
        Json::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    for (name, value) in fields {
        if value.is_null() {
            doc.remove(name);
        } else {
            let old = doc.get(name).cloned().unwrap_or(Json::Null);
            doc.insert(name.clone(), merge_patch(&old, value));
        }
    }
    Json::Object(doc)
}

/// What a key may hold: the outcome of the last acknowledged write (null: absent), and the
/// outcomes of the writes sent after it whose answers never came, in order.
#[derive(Clone, Debug, Default)]
struct Expected {
    acked: Json,
    unacked: Vec<Json>,
}

impl Expected {
    fn latest(&self) -> &Json {
        self.unacked.last().unwrap_or(&self.acked)
    }
}

fn torture(seed: u64, rounds: u64) {
    let mut rng = Rng(seed);
    let dirs: Vec<_> = (0..N).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: Vec<Option<Node>> = Vec::new();
    for dir in &dirs {
        let node = start(dir.path(), &nodes, &[]);
        nodes.push(Some(node));
    }
    let keys: Vec<String> = nodes
        .iter()
        .map(|n| n.as_ref().unwrap().diff_key())
        .collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        for (j, key) in keys.iter().enumerate() {
            if i != j {
                node.as_mut().unwrap().ok(&format!("writer add {key}"));
            }
        }
    }
    let key_name = |node: usize, k: u64| format!("n{node}-k{k}");
    let mut expected: BTreeMap<String, Expected> = (0..N)
        .flat_map(|i| (0..KEYS).map(move |k| (i, k)))
        .map(|(i, k)| (key_name(i, k), Expected::default()))
        .collect();
    let (mut sent, mut answered, mut batches) = (0usize, 0usize, 0usize);
    // Keys whose unanswered writes were found applied after the restart, and not applied.
    let (mut applied, mut dropped) = (0usize, 0usize);
    for round in 0..rounds {
        // A third of the rounds, a victim is sent a batch of writes all at once and killed
        // after reading a random number of its answers (fewer than it was sent), while the
        // others write one at a time (half of them, up to four writes each).
        let victim = (rng.below(3) == 0).then(|| rng.below(N as u64) as usize);
        let plans: Vec<Vec<(String, Write)>> = (0..N)
            .map(|i| {
                let count = match (Some(i) == victim, rng.below(2)) {
                    (true, _) => 2 + rng.below(11),
                    (false, 0) => 0,
                    (false, _) => 1 + rng.below(4),
                };
                (0..count)
                    .map(|j| {
                        let key = key_name(i, rng.below(KEYS));
                        (key, Write::random(&mut rng, i, round * 100 + j))
                    })
                    .collect()
            })
            .collect();
        let read_before_kill = victim.map(|v| rng.below(plans[v].len() as u64) as usize);
        let acked: Vec<usize> = std::thread::scope(|scope| {
            let threads: Vec<_> = nodes
                .iter_mut()
                .zip(&plans)
                .enumerate()
                .map(|(i, (slot, plan))| {
                    let doomed = (Some(i) == victim).then(|| slot.take().unwrap());
                    let node = slot.as_mut();
                    scope.spawn(move || match (doomed, node) {
                        (Some(mut node), _) => {
                            for (key, write) in plan {
                                let line = write.command(key);
                                node.send(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
                            }
                            let read = read_before_kill.unwrap();
                            for (key, write) in &plan[..read] {
                                let answer = node.answer();
                                assert_eq!(
                                    answer["ok"],
                                    true,
                                    "{} -> {answer}",
                                    write.command(key)
                                );
                            }
                            node.kill();
                            read
                        }
                        (None, Some(node)) => {
                            for (key, write) in plan {
                                node.ok(&write.command(key));
                            }
                            plan.len()
                        }
                        (None, None) => unreachable!("a node that is not the victim is running"),
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        for (plan, acked) in plans.iter().zip(&acked) {
            sent += plan.len();
            answered += acked;
            for (j, (key, write)) in plan.iter().enumerate() {
                let state = expected.get_mut(key).unwrap();
                let after = write.apply(state.latest());
                match j < *acked {
                    true => {
                        *state = Expected {
                            acked: after,
                            unacked: Vec::new(),
                        }
                    }
                    false => state.unacked.push(after),
                }
            }
        }
        if let Some(victim) = victim {
            batches += 1;
            let mut restarted = start(dirs[victim].path(), &nodes, &[]);
            // Each of its keys holds what its last acknowledged write left, or what one of the
            // writes sent after it left; from now on that is what the key holds.
            for k in 0..KEYS {
                let key = key_name(victim, k);
                let state = expected.get_mut(&key).unwrap();
                let got = restarted.ok(&format!("get {key}"))["value"].clone();
                assert!(
                    got == state.acked || state.unacked.contains(&got),
                    "round {round}: after the kill node {victim} has {key} = {got}, neither the \
                     last acknowledged outcome {} nor one sent after it {}",
                    state.acked,
                    Json::Array(state.unacked.clone())
                );
                if !state.unacked.is_empty() {
                    match got == state.acked {
                        true => dropped += 1,
                        false => applied += 1,
                    }
                }
                *state = Expected {
                    acked: got,
                    unacked: Vec::new(),
                };
            }
            nodes[victim] = Some(restarted);
        }
    }
    println!(
        "{rounds} rounds: {sent} writes sent, {answered} answered, {batches} batches cut by \
         SIGKILL; keys with unanswered writes: {applied} found written, {dropped} not"
    );
    let expected: BTreeMap<String, Json> = expected
        .into_iter()
        .filter(|(_, e)| !e.acked.is_null())
        .map(|(k, e)| (k, e.acked))
        .collect();

    // Reconnect everyone, then every peer holds exactly the expected keys and the same store.
    let addrs: Vec<String> = nodes.iter().map(|n| n.as_ref().unwrap().addr()).collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        for (j, addr) in addrs.iter().enumerate() {
            if i != j {
                node.as_mut().unwrap().ok(&format!("dial {addr}"));
            }
        }
    }
    let lengths: Vec<u64> = nodes
        .iter_mut()
        .map(|n| n.as_mut().unwrap().own_length())
        .collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        let node = node.as_mut().unwrap();
        for (j, key) in keys.iter().enumerate() {
            if i != j {
                node.wait_merged(key, lengths[j]);
            }
        }
        let listed: BTreeMap<String, Json> = node.ok("list")["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["key"].as_str().unwrap().to_string(), e["value"].clone()))
            .collect();
        assert_eq!(listed, expected, "node {i}");
    }
    let hashes: Vec<Json> = nodes
        .iter_mut()
        .map(|n| n.as_mut().unwrap().ok("status")["state_hash"].clone())
        .collect();
    assert!(
        hashes.iter().all(|h| *h == hashes[0]),
        "stores differ: {hashes:?}"
    );

    // The merged store rebuilt from the diff feeds alone: a fresh peer that merges every
    // writer's whole feed reaches the same state.
    let fresh_dir = tempfile::tempdir().unwrap();
    let mut fresh = start(fresh_dir.path(), &nodes, &keys);
    for (j, key) in keys.iter().enumerate() {
        fresh.wait_merged(key, lengths[j]);
    }
    assert_eq!(
        fresh.ok("status")["state_hash"],
        hashes[0],
        "a rebuilt store differs"
    );
    fresh.stop();
    for node in nodes.into_iter().flatten() {
        node.stop();
    }

    // Every derived row of every store bee equals what the store feed's entries give when the
    // test decodes and folds them itself; so does the head after `Bee::rebuild`.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for dir in &dirs {
        let path = dir.path().display().to_string();
        let mb = within(&runtime, "opening", multibee::MultiBee::open(dir.path())).unwrap();
        let head = check_store_bee(&mb, &path);
        let values: BTreeMap<String, Json> = head
            .into_iter()
            .map(|(key, (_, value))| {
                let key = String::from_utf8(key).unwrap();
                assert_eq!(value.first(), Some(&1), "{path}: {key} is stored as JSON");
                (key, serde_json::from_slice(&value[1..]).unwrap())
            })
            .collect();
        assert_eq!(values, expected, "{path}: the store feed's values");
        assert_eq!(json!(hex::encode(mb.state_hash().unwrap())), hashes[0]);
        within(&runtime, "Bee::rebuild", mb.store_bee().rebuild()).unwrap();
        check_store_bee(&mb, &format!("{path} after Bee::rebuild"));
        within(&runtime, "closing", mb.close());
    }
}

/// Runs `f` on `runtime`, failing the test if `what` takes longer than a minute.
fn within<T>(runtime: &tokio::runtime::Runtime, what: &str, f: impl Future<Output = T>) -> T {
    let limit = Duration::from_secs(60);
    runtime
        .block_on(async { tokio::time::timeout(limit, f).await })
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

/// A store bee's head or checkout: key -> (the sequence number of the put, the stored value).
type Rows = BTreeMap<Vec<u8>, (u64, Vec<u8>)>;

/// Checks the store bee of `mb` against its feed: the version is the feed's length, the
/// history is its entries, and at every version a checkout (read key by key, and ranged at up
/// to about 200 versions) holds exactly what folding the entries before it gives; so does the
/// head. Returns the head.
fn check_store_bee(mb: &multibee::MultiBee, what: &str) -> Rows {
    let bee = mb.store_bee();
    let version = bee.version().unwrap();
    assert_eq!(version, bee.feed().length(), "{what}: version");
    let ops: Vec<(Vec<u8>, Option<Vec<u8>>)> = bee
        .feed()
        .range(0..version)
        .unwrap()
        .zip(0..)
        .map(|(row, i)| {
            let (seq, entry) = row.unwrap();
            assert_eq!(seq, i, "{what}: feed range");
            decode_store_entry(&entry).unwrap_or_else(|e| panic!("{what}: entry {seq}: {e}"))
        })
        .collect();

    let history: Vec<(u64, Vec<u8>, Option<Vec<u8>>)> = bee
        .history(&HistoryOptions::default())
        .unwrap()
        .map(|c| {
            let c = c.unwrap();
            (c.seq, c.key, c.value)
        })
        .collect();
    let mut want: Vec<_> = (0..)
        .zip(&ops)
        .map(|(seq, (key, value))| (seq, key.clone(), value.clone()))
        .collect();
    assert_eq!(history, want, "{what}: history");
    let reversed = HistoryOptions {
        reverse: true,
        ..HistoryOptions::default()
    };
    let history: Vec<u64> = bee
        .history(&reversed)
        .unwrap()
        .map(|c| c.unwrap().seq)
        .collect();
    want.reverse();
    assert_eq!(
        history,
        want.iter().map(|w| w.0).collect::<Vec<_>>(),
        "{what}: reversed history"
    );

    // Every key is read at every version. A whole range (which scans older rows too) is read
    // at every version of a store of up to 200 changes, and at about 200 spread evenly past that.
    let step = version / 200 + 1;
    let keys: BTreeSet<&Vec<u8>> = ops.iter().map(|(k, _)| k).collect();
    let check = |at: &multibee::bee::Bee, rows: &Rows, label: &str| {
        let v = at.version().unwrap();
        if v.is_multiple_of(step) || v == version {
            let ranged: Rows = at
                .range(&RangeOptions::all())
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (e.key, (e.seq, e.value))
                })
                .collect();
            assert!(
                &ranged == rows,
                "{what}: {label}, ranged: {} where the feed gives {}",
                show(&ranged),
                show(rows)
            );
        }
        for key in &keys {
            let got = at.get_entry(key).unwrap().map(|e| (e.seq, e.value));
            assert!(
                got.as_ref() == rows.get(*key),
                "{what}: {label}, key {}: {got:?} where the feed gives {:?}",
                String::from_utf8_lossy(key),
                rows.get(*key)
            );
        }
    };
    let mut rows = Rows::new();
    check(&bee.checkout(0).unwrap(), &rows, "checkout 0");
    for (seq, (key, value)) in (0..).zip(&ops) {
        match value {
            Some(value) => rows.insert(key.clone(), (seq, value.clone())),
            None => rows.remove(key),
        };
        let label = format!("checkout {}", seq + 1);
        check(&bee.checkout(seq + 1).unwrap(), &rows, &label);
    }
    check(bee, &rows, "head");
    rows
}

/// Rows as text, for failure messages.
fn show(rows: &Rows) -> String {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let rows: Vec<String> = rows
        .iter()
        .map(|(k, (seq, v))| format!("{} @{seq} = {:?}", text(k), text(v)))
        .collect();
    format!("{{{}}}", rows.join(", "))
}

/// Decodes a store bee entry with the test's own reading of the bee's entry format
/// (crates/bee/src/op.rs): postcard of the envelope `V1(Op)`, that is a varint 0, a varint
/// variant (0: `Put`, 1: `Del`), the stored key and, for a put, the value, each a varint length
/// and its bytes. The store bee uses the root keyspace (crates/bee/src/keyspace.rs): a stored
/// key is `0x01` then the user key. Returns the user key and the value (`None`: a delete).
fn decode_store_entry(entry: &[u8]) -> Result<(Vec<u8>, Option<Vec<u8>>), String> {
    let mut r = Reader(entry);
    let envelope = r.varint()?;
    if envelope != 0 {
        return Err(format!("unknown envelope {envelope}"));
    }
    let (stored, value) = match r.varint()? {
        0 => (r.bytes()?, Some(r.bytes()?)),
        1 => (r.bytes()?, None),
        other => return Err(format!("unknown variant {other}")),
    };
    if !r.0.is_empty() {
        return Err(format!("{} bytes left over", r.0.len()));
    }
    match stored.split_first() {
        Some((0x01, key)) => Ok((key.to_vec(), value)),
        _ => Err(format!("stored key {stored:?} is not a root user key")),
    }
}

/// Reads postcard's pieces off the front of a slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    /// An unsigned LEB128 varint.
    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.0.split_first().ok_or("truncated varint")?;
            self.0 = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("overlong varint".into())
    }

    /// A varint length and that many bytes.
    fn bytes(&mut self) -> Result<Vec<u8>, String> {
        let len = usize::try_from(self.varint()?).map_err(|e| e.to_string())?;
        if self.0.len() < len {
            return Err("truncated bytes".into());
        }
        let (bytes, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(bytes.to_vec())
    }
}
