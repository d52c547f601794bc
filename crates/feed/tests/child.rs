//! A child process for crash tests: this test binary re-run with one ignored test selected,
//! killed and reaped on every exit path, its stdout lines read on a thread so that every wait on
//! them can time out. Shared by the feed and multibee crash tests (`#[path]`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Instant;

/// Kills and reaps the child on every exit path, including a failed assertion.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Re-runs this test binary with only the ignored test `test` and the environment `envs`; its
/// stdout lines arrive on the receiver.
pub fn spawn_self(test: &str, envs: &[(&str, String)]) -> (KillOnDrop, mpsc::Receiver<String>) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (name, value) in envs {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (KillOnDrop(child), rx)
}

/// The child's next line containing `word`, with what follows it (the harness may print its
/// own words before ours on the same line); `Err` says why none came by `deadline`.
pub fn next_after(
    lines: &mpsc::Receiver<String>,
    word: &str,
    deadline: Instant,
) -> Result<String, String> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some((_, rest)) = line.split_once(word) {
                    return Ok(rest.to_string());
                }
            }
            Err(RecvTimeoutError::Timeout) => return Err("none in time".into()),
            Err(RecvTimeoutError::Disconnected) => return Err("the child ended".into()),
        }
    }
}
