//! The HLC across SIGKILL: a child process writes from four tasks at once and reports the
//! timestamp of each acknowledged write (from its history); the test kills it with SIGKILL at
//! random moments and, after each kill, reopens the folder with the wall clock far behind
//! (10 ms after the epoch) and checks that the HLC is at least the largest acknowledged
//! timestamp, that every acknowledged write is there, and that a new write of a key never
//! written before (so no diff of the key raises its stamp) is stamped after all of them.
//!
//! The child is this test binary itself, re-run with `crash::hlc_child` selected and the
//! folder in `MULTIBEE_HLC_CRASH_DIR`. Rounds: `MULTIBEE_HLC_CRASH_ROUNDS` (default 8); seed:
//! `MULTIBEE_HLC_CRASH_SEED` (printed).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use child::{next_after, spawn_self};
use multibee_multibee::{Hlc, ManualClock, MultiBee, Options, Value};
use serde_json::json;

#[path = "../../feed/tests/child.rs"]
mod child;

const DIR_VAR: &str = "MULTIBEE_HLC_CRASH_DIR";
/// The round, so that the child's values grow across restarts.
const ROUND_VAR: &str = "MULTIBEE_HLC_CRASH_ROUND";

/// How long any wait may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// Runs `f` to its end on a fresh runtime, failing the test if it takes longer than the
/// patience.
fn within<T>(f: impl Future<Output = T>) -> T {
    crate::support::run(async {
        tokio::time::timeout(PATIENCE, f)
            .await
            .unwrap_or_else(|_| panic!("not done within {PATIENCE:?}"))
    })
}

/// The child: four tasks put values forever, on the system clock, durably, each printing
/// `ack KEY N TS` once its put of `{"task": T, "n": N}` to KEY (written by that task alone)
/// is acknowledged, TS being the write's timestamp in the key's history. N grows across
/// restarts (it starts at the round times a million).
#[test]
#[ignore = "run by the_hlc_survives_sigkill_ahead_of_every_acknowledged_write as a child process"]
fn hlc_child() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return;
    };
    let round: u64 = std::env::var(ROUND_VAR).unwrap().parse().unwrap();
    crate::support::run(async move {
        let mb = MultiBee::open(&dir).await.unwrap();
        let tasks: Vec<_> = (0..4u64)
            .map(|task| {
                let mb = mb.clone();
                tokio::spawn(async move {
                    for i in 0u64.. {
                        let key = format!("t{task}-{}", i % 3);
                        let n = round * 1_000_000 + i;
                        mb.put(&key, json!({"task": task, "n": n})).await.unwrap();
                        let ts = mb.history(&key).unwrap().iter().map(|h| h.ts).max();
                        let ts = ts.expect("the write is in the history");
                        // The parent stops reading just before it kills us: stop quietly.
                        let mut out = std::io::stdout().lock();
                        if writeln!(out, "ack {key} {n} {}", ts.0).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
}

#[test]
fn the_hlc_survives_sigkill_ahead_of_every_acknowledged_write() {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let rounds = env("MULTIBEE_HLC_CRASH_ROUNDS").unwrap_or(8);
    let seed = env("MULTIBEE_HLC_CRASH_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        t.unwrap().as_nanos() as u64 | 1
    });
    println!("HLC crash test seed {seed} ({rounds} rounds)");
    let mut rng = seed;
    let mut below = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let dir = tempfile::tempdir().unwrap();
    // Per key, the newest acknowledged write: (n, its timestamp).
    let mut acked: BTreeMap<String, (u64, Hlc)> = BTreeMap::new();
    for round in 0..rounds {
        let envs = [
            (DIR_VAR, dir.path().display().to_string()),
            (ROUND_VAR, round.to_string()),
        ];
        let (child, lines) = spawn_self("crash::hlc_child", &envs);
        let wanted = 1 + below(40);
        let mut seen = 0;
        let deadline = Instant::now() + PATIENCE;
        while seen < wanted {
            let ack = next_after(&lines, "ack ", deadline).unwrap_or_else(|why| {
                panic!(
                    "seed {seed} round {round}: the child acknowledged {seen} of {wanted} \
                     writes within {PATIENCE:?}: {why}"
                )
            });
            let ack = ack.as_str();
            let fields: Vec<&str> = ack.split(' ').collect();
            let (n, ts) = (fields[1].parse().unwrap(), Hlc(fields[2].parse().unwrap()));
            acked.insert(fields[0].to_string(), (n, ts));
            seen += 1;
        }
        drop(child); // SIGKILL, with other writes in flight
        let newest = acked.values().map(|(_, ts)| *ts).max().unwrap();

        within(async {
            let clock = ManualClock::new(10);
            let mb = MultiBee::open_with(dir.path(), Options::default().clock(clock))
                .await
                .unwrap();
            assert!(
                mb.clock() >= newest,
                "seed {seed} round {round}: the HLC after the kill is {}, behind the \
                 acknowledged timestamp {newest}",
                mb.clock()
            );
            for (key, (n, ts)) in &acked {
                let history = mb.history(key).unwrap();
                assert!(
                    history.iter().any(|h| h.ts == *ts),
                    "seed {seed} round {round}: the write of {key} at {ts} is gone"
                );
                // A later write the child sent may have landed too, never an older one.
                let Some(Value::Json(value)) = mb.get(key).unwrap() else {
                    panic!("seed {seed} round {round}: {key} is gone");
                };
                assert!(
                    value["n"].as_u64().unwrap() >= *n,
                    "seed {seed} round {round}: {key} = {value}, older than the acknowledged {n}"
                );
            }
            let key = format!("after-{round}");
            mb.put(&key, json!(round)).await.unwrap();
            let after = mb.history(&key).unwrap()[0].ts;
            assert!(
                after > newest,
                "seed {seed} round {round}: a write after the kill is stamped {after}, not \
                 after the acknowledged {newest}"
            );
            mb.close().await;
        });
    }
}
