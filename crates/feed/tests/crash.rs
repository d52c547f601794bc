//! Crash safety: a child process appends and reports every acknowledged length; the test kills
//! it with SIGKILL at random moments (once it has acknowledged a random number of appends, which
//! it must do within a minute) and checks, after each kill, that the folder reopens, every
//! acknowledged entry is there, and the signed head verifies.
//!
//! The child is this test binary itself, re-run with `crash_child` selected and the folder in
//! `MULTIBEE_CRASH_DIR`. Rounds: `MULTIBEE_CRASH_ROUNDS` (default 20); seed:
//! `MULTIBEE_CRASH_SEED` (printed on failure).

use std::io::Write;
use std::time::{Duration, Instant};

use multibee_feed::{Error, Store, proof};

use crate::child::{next_after, spawn_self};
use crate::common::{all_entries, run};

const DIR_VAR: &str = "MULTIBEE_CRASH_DIR";

/// How long any wait on the child may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// The content of batch `seq` of task `task`, entry `j`.
fn content(task: u64, seq: u64, j: u64) -> Vec<u8> {
    format!("{task}:{seq}:{j}").into_bytes()
}

/// The child: four tasks append batches forever, printing `ack LENGTH SIZE TASK SEQ` after each
/// acknowledged append.
#[test]
#[ignore = "run by the crash tests as a child process"]
fn crash_child() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return;
    };
    run(async move {
        let store = Store::open(&dir).unwrap();
        let feed = match store.feeds().first() {
            Some(key) => store.feed(key).unwrap(),
            None => store.create_feed().await.unwrap(),
        };
        let seq_base = feed.length(); // distinct sequence numbers across restarts
        let tasks: Vec<_> = (0..4u64)
            .map(|task| {
                let feed = feed.clone();
                tokio::spawn(async move {
                    for seq in seq_base.. {
                        let size = 1 + (seq * 7 + task) % 5;
                        let batch = (0..size).map(|j| content(task, seq, j)).collect();
                        let length = feed.append_batch(batch).await.unwrap();
                        // The parent stops reading just before it kills us: stop quietly.
                        let mut out = std::io::stdout().lock();
                        if writeln!(out, "ack {length} {size} {task} {seq}").is_err() {
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
fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let rounds: u32 = std::env::var("MULTIBEE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("MULTIBEE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("crash test seed {seed} ({rounds} rounds)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Vec<(u64, u64, u64, u64)> = Vec::new();
    for round in 0..rounds {
        let (child, lines) = spawn_self(
            "crash::crash_child",
            &[(DIR_VAR, dir.path().display().to_string())],
        );
        // The child must make progress: each round it acknowledges `wanted` appends in time.
        let wanted = rng.usize(1..60);
        let deadline = Instant::now() + PATIENCE;
        for seen in 0..wanted {
            let ack = next_after(&lines, "ack ", deadline).unwrap_or_else(|e| {
                panic!(
                    "seed {seed} round {round}: the child acknowledged {seen} of {wanted} \
                     appends: {e}"
                )
            });
            let v: Vec<u64> = ack.split(' ').map(|x| x.parse().unwrap()).collect();
            acked.push((v[0], v[1], v[2], v[3]));
        }
        drop(child); // SIGKILL, mid-stream: other appends are in flight
        check_folder(dir.path(), &acked)
            .unwrap_or_else(|e| panic!("seed {seed} round {round}: {e}"));
    }
}

fn check_folder(dir: &std::path::Path, acked: &[(u64, u64, u64, u64)]) -> Result<(), String> {
    let store = Store::open(dir).map_err(|e| format!("reopen failed: {e}"))?;
    let key = *store.feeds().first().ok_or("no feed after reopen")?;
    let feed = store.feed(&key).ok_or("feed vanished")?;
    let length = feed.length();
    for &(end, size, task, seq) in acked {
        if end > length {
            return Err(format!(
                "acknowledged length {end} but only {length} after reopen"
            ));
        }
        for j in 0..size {
            let got = feed.get(end - size + j).map_err(|e| e.to_string())?;
            if got.as_deref() != Some(content(task, seq, j).as_slice()) {
                return Err(format!("entry {} lost or changed", end - size + j));
            }
        }
    }
    let batch = feed.proof(0..length).map_err(|e| e.to_string())?;
    proof::verify(&key, 0, &batch.entries, &[], &batch.proof).map_err(|e| e.to_string())?;
    if all_entries(&feed) != batch.entries {
        return Err("range and proof disagree".into());
    }
    Ok(())
}

/// The child for the lock test: reports what opening the folder said.
#[test]
#[ignore = "run by a_second_process_gets_a_clear_error as a child process"]
fn lock_child() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return;
    };
    match Store::open(&dir) {
        Err(Error::Locked(_)) => println!("result locked"),
        Err(e) => println!("result error {e}"),
        Ok(_) => println!("result opened"),
    }
}

#[test]
fn a_second_process_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _store = Store::open(dir.path()).unwrap();
    let (_child, lines) = spawn_self(
        "crash::lock_child",
        &[(DIR_VAR, dir.path().display().to_string())],
    );
    let result = next_after(&lines, "result ", Instant::now() + PATIENCE);
    assert_eq!(result.as_deref(), Ok("locked"));
}
