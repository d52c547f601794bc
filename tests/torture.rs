//! Crash torture: three node processes write concurrently and replicate while a driver kills
//! random ones with SIGKILL (sometimes in the middle of a write) and restarts them. At the end
//! every write that was answered ok is on every peer and all stores are byte-identical.
//!
//! `MULTIBEE_TORTURE_ROUNDS` sets the rounds (default 30), `MULTIBEE_TORTURE_SEED` replays a
//! run; a failure prints the seed.

use std::collections::BTreeMap;
use std::path::Path;

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

fn torture(seed: u64, rounds: u64) {
    const N: usize = 3;
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
    // Every write answered ok: key -> value (each key is written once).
    let mut acked: BTreeMap<String, Json> = BTreeMap::new();
    for round in 0..rounds {
        // Some nodes write at the same time (one thread each) while, a third of the rounds, a
        // victim is SIGKILLed in the middle of it, half the time right after it was sent a
        // write it may not have answered.
        let victim = (rng.below(3) == 0).then(|| rng.below(N as u64) as usize);
        let writes: Vec<u64> = (0..N)
            .map(|i| match Some(i) == victim || rng.below(2) == 0 {
                true => 0,
                false => 1 + rng.below(4),
            })
            .collect();
        let unacked = victim.map(|_| rng.below(2) == 0);
        let written: Vec<(String, Json)> = std::thread::scope(|scope| {
            let mut writers = Vec::new();
            let mut doomed = None;
            for (i, slot) in nodes.iter_mut().enumerate() {
                if Some(i) == victim {
                    doomed = slot.take();
                    continue;
                }
                let node = slot.as_mut().unwrap();
                let count = writes[i];
                writers.push(scope.spawn(move || {
                    (0..count)
                        .map(|j| {
                            let key = format!("n{i}-r{round}-{j}");
                            let value = json!({"round": round, "j": j, "by": i});
                            node.ok(&format!("put {key} {value}"));
                            (key, value)
                        })
                        .collect::<Vec<_>>()
                }));
            }
            if let (Some(i), Some(mut node)) = (victim, doomed) {
                if unacked == Some(true) {
                    let _ = node.send(&format!("put n{i}-r{round}-unacked {{\"maybe\":true}}"));
                }
                node.kill();
            }
            writers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        acked.extend(written);
        if let Some(victim) = victim {
            let restarted = start(dirs[victim].path(), &nodes, &[]);
            nodes[victim] = Some(restarted);
        }
    }
    // Reconnect everyone, then every acknowledged write must be everywhere and the stores equal.
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
        for (key, value) in &acked {
            assert_eq!(
                node.ok(&format!("get {key}"))["value"],
                *value,
                "node {i} lost {key}"
            );
        }
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

    // Every store's index equals one rebuilt from its store feed.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for dir in &dirs {
        runtime.block_on(async {
            let mb = multibee::MultiBee::open(dir.path()).await.unwrap();
            let indexed = mb.state_hash().unwrap();
            let version = mb.store_bee().version().unwrap();
            mb.store_bee().rebuild().await.unwrap();
            assert_eq!(
                mb.state_hash().unwrap(),
                indexed,
                "{}",
                dir.path().display()
            );
            assert_eq!(mb.store_bee().version().unwrap(), version);
            assert_eq!(json!(hex::encode(indexed)), hashes[0]);
            mb.close().await;
        });
    }
}
