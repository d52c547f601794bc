//! The node example as a user runs it: real processes on loopback, driven through stdin and
//! stdout. Every process is killed when its guard drops, on every exit path.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value as Json, json};

const PATIENCE: Duration = Duration::from_secs(60);

/// The node example's binary, built by `cargo test` next to the test binaries (not by
/// `cargo test --test multibee`, which builds no example): checked to exist and to be newer
/// than every source it is built from, so that the tests never run an old build.
fn node_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            // target/<profile>/deps/<test> -> target/<profile>/examples/node
            let profile = exe.parent().unwrap().parent().unwrap();
            let bin = profile.join("examples").join("node");
            let rebuild = "`cargo test -p multibee` builds it, `cargo test --test multibee` does \
                           not: run `cargo build --example node` first";
            let built = std::fs::metadata(&bin).and_then(|m| m.modified());
            let built = built.unwrap_or_else(|_| panic!("{} is missing: {rebuild}", bin.display()));
            let (newest, source) = newest_source();
            assert!(
                built >= newest,
                "{} is older than {}: {rebuild}",
                bin.display(),
                source.display()
            );
            bin
        })
        .clone()
}

/// The most recently modified of the files the node binary is built from, and when.
fn newest_source() -> (SystemTime, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut newest = (SystemTime::UNIX_EPOCH, root.to_path_buf());
    let mut paths = vec![
        root.join("src"),
        root.join("examples"),
        root.join("Cargo.toml"),
        root.join("Cargo.lock"),
    ];
    for krate in ["feed", "bee", "multibee", "net"] {
        paths.push(root.join("crates").join(krate).join("src"));
        paths.push(root.join("crates").join(krate).join("Cargo.toml"));
    }
    while let Some(path) = paths.pop() {
        let meta = std::fs::metadata(&path).unwrap();
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                paths.push(entry.unwrap().path());
            }
        } else if meta.modified().unwrap() > newest.0 {
            newest = (meta.modified().unwrap(), path);
        }
    }
    newest
}

/// Runs `command` to its end (stdin empty, output captured); a watchdog kills it after the
/// patience, so that a node that never exits fails the test instead of hanging it.
fn output_within(command: &mut Command) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let (done, watchdog) = mpsc::channel::<()>();
    let killer = std::thread::spawn(move || {
        let timed_out = watchdog.recv_timeout(PATIENCE).is_err();
        if timed_out {
            let _ = Command::new("kill").args(["-9", &pid]).status();
        }
        timed_out
    });
    let output = child.wait_with_output().unwrap();
    let _ = done.send(());
    assert!(
        !killer.join().unwrap(),
        "the node did not exit within {PATIENCE:?}"
    );
    output
}

/// A running node process; killed on drop.
pub struct Node {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Json>,
    pub ready: Json,
    /// The newest value each change event reported, by key.
    seen: HashMap<String, Json>,
    /// The newest merged length each `merged` event reported, by writer.
    merged: HashMap<String, u64>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// Starts a node on `dir` listening on loopback TCP, with `extra` arguments, and waits for
    /// its ready line.
    pub fn start(dir: &Path, extra: &[&str]) -> Node {
        let mut args = vec!["--dir".to_string(), dir.display().to_string()];
        args.extend(["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"].map(String::from));
        args.extend(extra.iter().map(|a| a.to_string()));
        Node::start_with(&args)
    }

    /// Starts a node with exactly `args` and waits for its ready line.
    pub fn start_with(args: &[String]) -> Node {
        let mut command = Command::new(node_binary());
        command.args(args);
        Node::spawn(command)
    }

    /// Starts a node in the network namespace `netns` (with `ip netns exec`, which becomes the
    /// node's process) with exactly `args`, and waits for its ready line.
    pub fn start_in_netns(netns: &str, args: &[String]) -> Node {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", netns])
            .arg(node_binary())
            .args(args);
        Node::spawn(command)
    }

    fn spawn(mut command: Command) -> Node {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let json: Json = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
                if tx.send(json).is_err() {
                    return;
                }
            }
        });
        let mut node = Node {
            child,
            stdin: Some(stdin),
            lines,
            ready: Json::Null,
            seen: HashMap::new(),
            merged: HashMap::new(),
        };
        node.ready = node.next_matching("the ready line", |l| l["event"] == "ready");
        node
    }

    pub fn diff_key(&self) -> String {
        self.ready["diff_key"].as_str().unwrap().to_string()
    }

    pub fn addr(&self) -> String {
        self.ready["listen"][0].as_str().unwrap().to_string()
    }

    /// The next stdout line `matches` accepts (skipping others, but remembering what change
    /// and merge events they reported), within the patience; `what` names it if none comes.
    pub fn next_matching(&mut self, what: &str, matches: impl Fn(&Json) -> bool) -> Json {
        self.next_matching_within(what, PATIENCE, matches)
    }

    /// [`Node::next_matching`] with another patience (for a long transfer).
    pub fn next_matching_within(
        &mut self,
        what: &str,
        patience: Duration,
        matches: impl Fn(&Json) -> bool,
    ) -> Json {
        let deadline = Instant::now() + patience;
        loop {
            let line = self.next_line(deadline, what);
            if matches(&line) {
                return line;
            }
        }
    }

    fn next_line(&mut self, deadline: Instant, what: &str) -> Json {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match self.lines.recv_timeout(left) {
            Ok(line) => line,
            Err(e) => panic!("waiting for {what} from the node: {e} (until {deadline:?})"),
        };
        match line["event"].as_str() {
            Some("change") => {
                let key = line["key"].as_str().unwrap_or_default().to_string();
                self.seen.insert(key, line["value"].clone());
            }
            Some("merged") => {
                let writer = line["writer"].as_str().unwrap_or_default().to_string();
                let merged = line["merged"].as_u64().unwrap_or_default();
                let slot = self.merged.entry(writer).or_default();
                *slot = (*slot).max(merged);
            }
            _ => {}
        }
        line
    }

    /// The length of this node's own diff feed, from `status`.
    pub fn own_length(&mut self) -> u64 {
        let key = self.diff_key();
        let status = self.ok("status");
        status["feeds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["key"] == key.as_str())
            .and_then(|f| f["length"].as_u64())
            .expect("status lists the node's own diff feed")
    }

    /// Waits until this node has merged `length` diffs of `writer`.
    pub fn wait_merged(&mut self, writer: &str, length: u64) {
        let status = self.ok("status");
        let merged = status["feeds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["key"] == writer)
            .and_then(|f| f["merged"].as_u64())
            .unwrap_or(0);
        let slot = self.merged.entry(writer.to_string()).or_default();
        *slot = (*slot).max(merged);
        let deadline = Instant::now() + PATIENCE;
        let what = format!("{length} diffs of {writer} merged");
        while self.merged.get(writer).copied().unwrap_or(0) < length {
            self.next_line(deadline, &what);
        }
    }

    /// Sends one command and returns its answer (the next line with "ok").
    pub fn cmd(&mut self, line: &str) -> Json {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        self.next_matching(&format!("the answer to {line}"), |l| l.get("ok").is_some())
    }

    /// The next answer (line with "ok") to a command sent earlier, within the patience.
    pub fn answer(&mut self) -> Json {
        self.next_matching("the answer to a command", |l| l.get("ok").is_some())
    }

    /// Sends a command line without waiting for its answer.
    pub fn send(&mut self, line: &str) -> std::io::Result<()> {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}")?;
        stdin.flush()
    }

    /// Sends raw bytes (a newline is not added) and returns the next answer.
    pub fn cmd_bytes(&mut self, bytes: &[u8]) -> Json {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
        self.answer()
    }

    /// Sends a command that must succeed, waiting up to `patience` for its answer (for a long
    /// transfer).
    pub fn ok_within(&mut self, line: &str, patience: Duration) -> Json {
        self.send(line).unwrap();
        let answer = self.next_matching_within(&format!("the answer to {line}"), patience, |l| {
            l.get("ok").is_some()
        });
        assert_eq!(answer["ok"], true, "{line} -> {answer}");
        answer
    }

    /// Sends a command that must succeed.
    pub fn ok(&mut self, line: &str) -> Json {
        let answer = self.cmd(line);
        assert_eq!(answer["ok"], true, "{line} -> {answer}");
        answer
    }

    /// Waits until `key` holds `value` (a change event says so, or it already does).
    pub fn wait_value(&mut self, key: &str, value: Json) {
        if self.ok(&format!("get {key}"))["value"] == value {
            return;
        }
        let deadline = Instant::now() + PATIENCE;
        let what = format!("a change of {key} to {value}");
        while self.seen.get(key) != Some(&value) {
            self.next_line(deadline, &what);
        }
    }

    /// Closes stdin and waits for a clean exit.
    pub fn stop(mut self) {
        drop(self.stdin.take());
        self.clean_exit("end of input");
    }

    /// Closes stdin (a node with `--http` keeps running).
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// Waits for a clean exit caused by something else (`cause`).
    pub fn wait_exit(mut self, cause: &str) {
        self.clean_exit(cause);
    }

    /// Sends SIGTERM (stdin stays open) and waits for a clean exit.
    pub fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        self.clean_exit("SIGTERM");
    }

    /// Waits for the process to exit successfully; a watchdog kills it after the patience.
    fn clean_exit(&mut self, cause: &str) {
        let pid = self.child.id().to_string();
        let (done, watchdog) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if watchdog.recv_timeout(PATIENCE).is_err() {
                let _ = Command::new("kill").args(["-9", &pid]).status();
            }
        });
        let status = self.child.wait().unwrap();
        let _ = done.send(());
        assert!(status.success(), "the node exited with {status} on {cause}");
    }

    /// Sends the signal `name` (`STOP`, `CONT`, ...) to the process. A process stopped with
    /// `STOP` is still killed when the guard drops.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{name} {pid}");
    }

    /// The process's peer id (from its ready line).
    pub fn peer_id(&self) -> String {
        self.ready["peer_id"].as_str().unwrap().to_string()
    }

    /// Kills the process with SIGKILL.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Makes the node of `dir` forget the peers it was connected to (it dials them again when it
/// starts).
fn forget_peers(dir: &Path) {
    match std::fs::remove_file(dir.join("peers.json")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("{e}"),
        _ => {}
    }
}

/// Two nodes, B dialing A, each counting the other's writes.
pub fn counting_each_other(dir_a: &Path, dir_b: &Path) -> (Node, Node) {
    let mut a = Node::start(dir_a, &[]);
    let b = Node::start(dir_b, &["--dial", &a.addr(), "--writer", &a.diff_key()]);
    a.ok(&format!("writer add {}", b.diff_key()));
    (a, b)
}

#[test]
fn two_nodes_replicate_merge_concurrent_edits_and_survive_sigkill() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut a, mut b) = counting_each_other(dir_a.path(), dir_b.path());
    let (a_key, b_key) = (a.diff_key(), b.diff_key());

    a.ok(r#"put doc {"a":1,"b":1}"#);
    b.wait_value("doc", json!({"a": 1, "b": 1}));
    b.ok(r#"put other {"from":"b"}"#);
    a.wait_value("other", json!({"from": "b"}));

    // Bad input gets an answer, not a crash.
    assert_eq!(a.cmd("put doc {not json")["ok"], false);
    assert_eq!(a.cmd("frobnicate")["ok"], false);
    assert_eq!(a.cmd("writer add nothex")["ok"], false);

    // SIGKILL B; A edits one field while B is down.
    b.kill();
    a.ok(r#"put doc {"a":2,"b":1}"#);
    // Restarted on its folder, B still has everything it answered ok, and edits another field
    // of the same document before it hears of A's edit (so it does not dial A on its own).
    forget_peers(dir_b.path());
    let mut b = Node::start(dir_b.path(), &[]);
    assert_eq!(b.diff_key(), b_key);
    assert_eq!(b.ok("get doc")["value"], json!({"a": 1, "b": 1}));
    assert_eq!(b.ok("get other")["value"], json!({"from": "b"}));
    b.ok(r#"put doc {"a":1,"b":2}"#);
    // Connected again, replication resumes and both converge to the merged document.
    b.ok(&format!("dial {}", a.addr()));
    a.wait_value("doc", json!({"a": 2, "b": 2}));
    b.wait_value("doc", json!({"a": 2, "b": 2}));
    a.ok(r#"put after {"restart":true}"#);
    b.wait_value("after", json!({"restart": true}));
    let status = b.ok("status");
    assert!(
        status["feeds"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["key"] == a_key.as_str())
    );
    let listed = b.ok("list");
    assert_eq!(listed["entries"].as_array().unwrap().len(), 3);
    b.terminate();
    a.stop();
}

#[test]
fn nodes_join_with_tickets_and_converge_without_writer_add() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut a = Node::start(dirs[0].path(), &[]);
    let ticket = a.ok("invite")["ticket"].as_str().unwrap().to_string();
    let mut b = Node::start(dirs[1].path(), &["--join", &ticket]);
    let ticket = a.ok("invite")["ticket"].as_str().unwrap().to_string();
    let mut c = Node::start(dirs[2].path(), &["--join", &ticket, "--dial", &b.addr()]);
    for node in [&b, &c] {
        assert_eq!(node.ready["database"], a.diff_key());
    }
    a.ok(r#"put from_a {"n":1}"#);
    b.ok(r#"put from_b {"n":2}"#);
    c.ok(r#"put from_c {"n":3}"#);
    for node in [&mut a, &mut b, &mut c] {
        node.wait_value("from_a", json!({"n": 1}));
        node.wait_value("from_b", json!({"n": 2}));
        node.wait_value("from_c", json!({"n": 3}));
    }
    // A fourth joins through C's ticket while A is offline.
    let ticket = c.ok("invite")["ticket"].as_str().unwrap().to_string();
    a.stop();
    let mut d = Node::start(dirs[3].path(), &["--join", &ticket]);
    d.wait_value("from_a", json!({"n": 1}));
    d.ok(r#"put from_d {"n":4}"#);
    for node in [&mut b, &mut c, &mut d] {
        node.wait_value("from_d", json!({"n": 4}));
    }
    // A used ticket is refused with the reason, on one line.
    let used = output_within(
        Command::new(node_binary())
            .args(["--dir", &dirs[0].path().join("x").display().to_string()])
            .args([
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--no-mdns",
                "--join",
                &ticket,
            ])
            .stdin(Stdio::null()),
    );
    assert!(!used.status.success());
    let err = String::from_utf8_lossy(&used.stderr);
    assert!(err.contains("already used"), "{err}");
}

#[test]
fn a_write_made_after_merging_a_write_from_a_skewed_clock_wins() {
    // Ten minutes ahead, a day ahead, a day behind.
    for offset in ["600000", "86400000", "-86400000"] {
        let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut a = Node::start(dirs[0].path(), &[]);
        let ticket = a.ok("invite")["ticket"].as_str().unwrap().to_string();
        let mut skewed = Node::start(
            dirs[1].path(),
            &["--join", &ticket, "--clock-offset-ms", offset],
        );
        skewed.ok(r#"put doc {"v":"skewed"}"#);
        a.wait_value("doc", json!({"v": "skewed"}));
        a.ok(r#"put doc {"v":"a"}"#);
        for node in [&mut a, &mut skewed] {
            node.wait_value("doc", json!({"v": "a"}));
            assert_eq!(node.ok("conflicts doc")["conflicts"], json!([]), "{offset}");
        }
    }
}

#[test]
fn three_nodes_in_a_line_converge() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut a = Node::start(dirs[0].path(), &[]);
    let mut b = Node::start(dirs[1].path(), &["--dial", &a.addr()]);
    let mut c = Node::start(dirs[2].path(), &["--dial", &b.addr()]);
    let keys = [a.diff_key(), b.diff_key(), c.diff_key()];
    for (i, node) in [&mut a, &mut b, &mut c].into_iter().enumerate() {
        for (j, key) in keys.iter().enumerate() {
            if i != j {
                node.ok(&format!("writer add {key}"));
            }
        }
    }
    a.ok(r#"put from_a {"n":1}"#);
    b.ok(r#"put from_b {"n":2}"#);
    c.ok(r#"put from_c {"n":3}"#);
    for node in [&mut a, &mut b, &mut c] {
        node.wait_value("from_a", json!({"n": 1}));
        node.wait_value("from_b", json!({"n": 2}));
        node.wait_value("from_c", json!({"n": 3}));
    }
}

#[test]
fn bad_arguments_and_a_folder_in_use_fail_with_one_line() {
    let out = output_within(
        Command::new(node_binary())
            .arg("--listen")
            .arg("not-an-addr"),
    );
    assert!(!out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let _a = Node::start(dir.path(), &[]);
    let out = output_within(
        Command::new(node_binary())
            .arg("--dir")
            .arg(dir.path())
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
            .stdin(Stdio::null()),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(
        stderr.contains("in use") || stderr.contains("lock"),
        "{stderr}"
    );
}

/// What `node`'s `status` says of the diff feed `key`.
fn feed_status(node: &mut Node, key: &str) -> Json {
    let status = node.ok("status");
    let feeds = status["feeds"].as_array().unwrap();
    let feed = feeds.iter().find(|f| f["key"] == key);
    feed.cloned()
        .unwrap_or_else(|| panic!("status lists no feed {key}: {status}"))
}

#[test]
fn patch_del_conflicts_history_and_writer_remove_between_two_nodes() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut a, mut b) = counting_each_other(dir_a.path(), dir_b.path());
    let (a_key, b_key) = (a.diff_key(), b.diff_key());

    // patch: only the fields it names, `null` removing one.
    a.ok(r#"put doc {"title":"draft","tags":[],"n":1}"#);
    b.wait_value("doc", json!({"title": "draft", "tags": [], "n": 1}));
    b.ok(r#"patch doc {"tags":["x"],"n":null}"#);
    a.wait_value("doc", json!({"title": "draft", "tags": ["x"]}));

    // del: a tombstone that replicates.
    b.ok(r#"put gone {"v":1}"#);
    a.wait_value("gone", json!({"v": 1}));
    a.ok("del gone");
    b.wait_value("gone", Json::Null);

    // conflicts: the same field edited on both while B is stopped, then exchanged.
    b.ok("quit");
    b.stop();
    a.ok(r#"patch doc {"title":"from a"}"#);
    // B would dial A again on its own (peers.json): it must edit before it hears of A's edit.
    forget_peers(dir_b.path());
    let mut b = Node::start(dir_b.path(), &[]);
    b.ok(r#"patch doc {"title":"from b"}"#);
    b.ok(&format!("dial {}", a.addr()));
    let (a_length, b_length) = (a.own_length(), b.own_length());
    a.wait_merged(&b_key, b_length);
    b.wait_merged(&a_key, a_length);
    let merged = a.ok("get doc")["value"].clone();
    assert_eq!(b.ok("get doc")["value"], merged);
    let title = merged["title"].as_str().unwrap().to_string();
    assert_eq!(merged, json!({"title": title, "tags": ["x"]}));
    let (loser, lost) = match title.as_str() {
        "from b" => (&a_key, "from a"),
        _ => (&b_key, "from b"),
    };
    let conflicts = a.ok("conflicts doc")["conflicts"].clone();
    assert_eq!(b.ok("conflicts doc")["conflicts"], conflicts);
    let listed = conflicts.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{conflicts}");
    assert_eq!(listed[0]["writer"], loser.as_str());
    assert_eq!(
        listed[0]["change"],
        json!([{"set": ["title"], "value": lost}])
    );

    // history: every diff of the key, the same on both, oldest first.
    let history = a.ok("history doc")["history"].clone();
    assert_eq!(b.ok("history doc")["history"], history);
    let entries = history.as_array().unwrap();
    let writers: Vec<&str> = entries
        .iter()
        .map(|h| h["writer"].as_str().unwrap())
        .collect();
    assert_eq!(writers.len(), 4, "{history}");
    assert_eq!(writers[..2], [a_key.as_str(), b_key.as_str()], "{history}");
    let patch = entries[1]["change"].as_array().unwrap();
    assert!(
        patch.contains(&json!({"set": ["tags"], "value": ["x"]})),
        "{history}"
    );
    assert!(patch.contains(&json!({"remove": ["n"]})), "{history}");
    let titles: Vec<&Json> = entries[2..]
        .iter()
        .map(|h| &h["change"][0]["value"])
        .collect();
    assert_eq!(
        titles.last().unwrap().as_str(),
        Some(title.as_str()),
        "{history}"
    );
    // A write made after merging both resolves the conflict, on both.
    a.ok(r#"patch doc {"title":"final"}"#);
    b.wait_value("doc", json!({"title": "final", "tags": ["x"]}));
    for node in [&mut a, &mut b] {
        assert_eq!(node.ok("conflicts doc")["conflicts"], json!([]));
    }

    // writer remove: a cut at what A merged of B, which stays; B learns it and is refused.
    let merged_of_b = feed_status(&mut a, &b_key)["merged"].as_u64().unwrap();
    a.ok(&format!("writer remove {b_key}"));
    let entry = feed_status(&mut a, &b_key);
    assert_eq!(entry["role"], "writer (removed)", "{entry}");
    assert_eq!(entry["removed_by"], a_key.as_str(), "{entry}");
    assert_eq!(entry["cut"].as_u64(), Some(merged_of_b), "{entry}");
    let a_length = a.own_length();
    b.wait_merged(&a_key, a_length);
    let refused = b.cmd(r#"put late {"v":1}"#);
    assert_eq!(refused["ok"], false, "{refused}");
    let error = refused["error"].as_str().unwrap();
    assert!(error.contains("removed"), "{error}");
    assert_eq!(
        a.ok("get doc")["value"],
        json!({"title": "final", "tags": ["x"]})
    );
    b.stop();
    a.stop();
}

#[test]
fn bad_lines_get_an_error_quoting_a_short_prefix_and_the_node_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Node::start(dir.path(), &[]);
    let not_utf8 = a.cmd_bytes(b"put k \xff\xfe {}\n");
    assert_eq!(not_utf8["ok"], false, "{not_utf8}");
    assert!(
        not_utf8["error"].as_str().unwrap().contains("not UTF-8"),
        "{not_utf8}"
    );
    // A line over 16 MiB, then a good command right behind it.
    let mut long = vec![b'x'; (16 << 20) + 10];
    long.push(b'\n');
    let too_long = a.cmd_bytes(&long);
    assert_eq!(too_long["ok"], false);
    let error = too_long["error"].as_str().unwrap();
    assert!(error.contains("longer than"), "{error}");
    assert!(error.len() < 200, "{error}");
    let unknown = a.cmd(&format!("{} arg", "y".repeat(10_000)));
    let error = unknown["error"].as_str().unwrap();
    assert!(error.contains("unknown command"), "{error}");
    assert!(error.len() < 200, "{error}");
    a.ok(r#"put k {"v":1}"#);
    assert_eq!(a.ok("get k")["value"], json!({"v": 1}));
    a.stop();
}

#[test]
fn list_pages_with_limit_and_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Node::start(dir.path(), &[]);
    for i in 0..5 {
        a.ok(&format!("put p/{i} {i}"));
    }
    a.ok("put q/0 0");
    let all = a.ok("list p/");
    assert_eq!(all["entries"].as_array().unwrap().len(), 5);
    assert_eq!(all["more"], false);
    let first = a.ok("list p/ --limit 2");
    let keys = |page: &Json| -> Vec<String> {
        page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["key"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(keys(&first), ["p/0", "p/1"]);
    assert_eq!(first["more"], true);
    assert_eq!(first["next"], "p/2");
    let second = a.ok("list p/ --limit 2 --start p/2");
    assert_eq!(keys(&second), ["p/2", "p/3"]);
    let last = a.ok("list p/ --start p/4 --limit 2");
    assert_eq!(keys(&last), ["p/4"]);
    assert_eq!(last["more"], false);
    assert_eq!(keys(&a.ok("list --limit 1 --start q")), ["q/0"]);
    assert_eq!(a.cmd("list --limit 0")["ok"], false);
    assert_eq!(a.cmd("list a b")["ok"], false);
    a.stop();
}

#[test]
fn a_restarted_node_keeps_its_peer_id() {
    let dir = tempfile::tempdir().unwrap();
    let a = Node::start(dir.path(), &[]);
    let peer_id = a.ready["peer_id"].clone();
    a.stop();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(dir.path().join("identity.key")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    let a = Node::start(dir.path(), &[]);
    assert_eq!(a.ready["peer_id"], peer_id);
    a.kill();
    let a = Node::start(dir.path(), &[]);
    assert_eq!(a.ready["peer_id"], peer_id);
    a.stop();
}

#[test]
fn help_documents_the_stdin_commands_and_event_lines() {
    let out = output_within(Command::new(node_binary()).arg("--help"));
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "list [PREFIX] [--limit N] [--start KEY]",
        "writer add KEY",
        "peer_connected",
        "invalid_diff",
    ] {
        assert!(help.contains(word), "{word}: {help}");
    }
}

#[test]
fn writer_add_refuses_the_nodes_own_feeds_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Node::start(dir.path(), &[]);
    let status = a.ok("status");
    let feeds = status["feeds"].as_array().unwrap();
    let store = feeds.iter().find(|f| f["role"] == "store").unwrap()["key"].clone();
    for key in [store.as_str().unwrap().to_string(), a.diff_key()] {
        let refused = a.cmd(&format!("writer add {key}"));
        assert_eq!(refused["ok"], false, "{refused}");
        assert!(
            refused["error"].as_str().unwrap().contains("own feeds"),
            "{refused}"
        );
    }
    a.stop();
}

/// Waits until `dir`'s `peers.json` names `peer` (the node writes it once connected).
fn wait_remembered(dir: &Path, peer: &str) {
    let path = dir.join("peers.json");
    let deadline = Instant::now() + PATIENCE;
    loop {
        if std::fs::read_to_string(&path).is_ok_and(|text| text.contains(peer)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not name {peer} within {PATIENCE:?}",
            path.display()
        );
        // A file written by another process: no event to wait on, so look again shortly.
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_restarted_node_on_a_new_port_finds_its_peer_again_without_dial() {
    use std::os::unix::fs::PermissionsExt;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut a, mut b) = counting_each_other(dir_a.path(), dir_b.path());
    let (b_id, b_addr) = (b.ready["peer_id"].clone(), b.addr());
    a.ok(r#"put before {"v":1}"#);
    b.wait_value("before", json!({"v": 1}));
    let a_id = a.ready["peer_id"].as_str().unwrap().to_string();
    wait_remembered(dir_b.path(), &a_id);
    let mode = std::fs::metadata(dir_b.path().join("peers.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    b.kill();
    a.ok(r#"put while_down {"v":2}"#);
    // Restarted on a new port (port 0 again), without --dial: it dials A from peers.json.
    let mut b = Node::start(dir_b.path(), &[]);
    assert_eq!(b.ready["peer_id"], b_id);
    assert_ne!(b.addr(), b_addr);
    b.wait_value("while_down", json!({"v": 2}));
    b.stop();
    a.stop();
}

#[test]
fn a_corrupt_peers_file_is_reported_and_the_node_starts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("peers.json"), "{not json").unwrap();
    let out = output_within(
        Command::new(node_binary())
            .arg("--dir")
            .arg(dir.path())
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
            .stdin(Stdio::null()),
    );
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(r#""event":"ready""#), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("corrupt"), "{stderr}");
}

#[test]
fn dial_waits_for_the_outcome_and_says_why_it_failed() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Node::start(dir_a.path(), &[]);
    let mut b = Node::start(dir_b.path(), &[]);
    let answer = b.ok(&format!("dial {}", a.addr()));
    assert_eq!(answer["peer_id"], a.ready["peer_id"], "{answer}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let addr = format!("/ip4/127.0.0.1/tcp/{port}");
    // The event and the answer may come in either order.
    b.send(&format!("dial {addr}")).unwrap();
    let (mut answer, mut event) = (Json::Null, Json::Null);
    while answer.is_null() || event.is_null() {
        let line = b.next_matching("the answer to dial and a dial_failed event", |l| {
            l.get("ok").is_some() || l["event"] == "dial_failed"
        });
        match line.get("ok") {
            Some(_) => answer = line,
            None => event = line,
        }
    }
    assert_eq!(answer["ok"], false, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("refused"), "{error}");
    assert_eq!(event["address"], addr.as_str(), "{event}");
    assert!(
        event["reason"].as_str().unwrap().contains("refused"),
        "{event}"
    );
    b.stop();
}

#[test]
fn a_configuration_file_is_read_and_a_bad_key_stops_the_node() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("multibee.toml"),
        "listen = [\"/ip4/127.0.0.1/tcp/0\"]\nmdns = false\nfrobnicate = 1\n",
    )
    .unwrap();
    let out = output_within(Command::new(node_binary()).arg("--dir").arg(dir.path()));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("frobnicate"), "{stderr}");
    assert!(stderr.contains("multibee.toml"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "the folder was touched: {left:?}");

    // A good file takes effect: only the one listen address it names (no QUIC, no 0.0.0.0),
    // and a named file (--config) is read from anywhere.
    let named = dir.path().join("node.toml");
    std::fs::write(
        &named,
        "listen = [\"/ip4/127.0.0.1/tcp/0\"]\nmdns = false\nsync = \"relaxed\"\ncache_mb = 8\n",
    )
    .unwrap();
    std::fs::remove_file(dir.path().join("multibee.toml")).unwrap();
    let data = dir.path().join("data");
    let args = [
        "--dir".to_string(),
        data.display().to_string(),
        "--config".to_string(),
        named.display().to_string(),
    ];
    let node = Node::start_with(&args);
    let listen = node.ready["listen"].as_array().unwrap();
    assert_eq!(listen.len(), 1, "{listen:?}");
    assert!(
        listen[0]
            .as_str()
            .unwrap()
            .starts_with("/ip4/127.0.0.1/tcp/"),
        "{listen:?}"
    );
    node.stop();
    // A named file that is missing is an error too.
    let out = output_within(
        Command::new(node_binary())
            .args(["--dir", &data.display().to_string(), "--config"])
            .arg(dir.path().join("missing.toml")),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
    // A bad flag is named as a flag, not blamed on a file that does not exist.
    let fresh = dir.path().join("fresh");
    let out = output_within(
        Command::new(node_binary())
            .args(["--dir", &fresh.display().to_string(), "--only"])
            .arg("x".repeat(1100)),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`--only`") && stderr.contains("1024"),
        "{stderr}"
    );
    assert!(!stderr.contains("multibee.toml"), "{stderr}");
    assert!(!fresh.exists());
}

#[test]
fn an_http_token_guards_the_node_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(
        dir.path(),
        &["--http", "127.0.0.1:0", "--http-token", "s3cret"],
    );
    assert_eq!(node.ready["http_token"], json!("given"));
    let addr = node.ready["http"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use crate::common::http_with_headers;
        let (status, body) = http_with_headers(&addr, "GET", "/", &[], "").await;
        assert_eq!(
            (status, &body["error"]),
            (401, &json!("unauthorized")),
            "{body}"
        );
        let wrong = ["Authorization: Bearer nope".to_string()];
        let (status, _) = http_with_headers(&addr, "GET", "/", &wrong, "").await;
        assert_eq!(status, 401);
        let right = ["Authorization: Bearer s3cret".to_string()];
        let (status, body) = http_with_headers(&addr, "PUT", "/docs/a", &right, "1").await;
        assert_eq!(status, 200, "{body}");
    });
    assert_eq!(node.cmd("get a"), json!({"ok": true, "value": 1}));
    node.terminate();
}

/// A node whose stdout is a pipe nobody reads (its event lines pile up until the pipe is
/// full) still stops when asked: it drops the lines it cannot write.
#[test]
fn a_node_whose_stdout_is_never_read_still_stops_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(node_binary());
    command
        .args(["--dir", &dir.path().display().to_string()])
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
        .args(["--http", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = KillOnDrop(command.spawn().unwrap());
    // Read the ready line only; the pipe is never read again (but kept open).
    let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let _ = tx.send(line);
        stdout
    });
    let line = rx.recv_timeout(PATIENCE).expect("the ready line");
    let ready: Json = serde_json::from_str(&line).unwrap();
    let _unread = reader.join().unwrap();
    let http = ready["http"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // 20,000 change lines: far more than the pipe and the node's queue of lines hold.
        for batch in 0..20 {
            let ops: Vec<Json> = (0..1000)
                .map(|i| json!({"put": format!("k{batch}-{i}"), "doc": {"i": i}}))
                .collect();
            let body = json!({ "ops": ops }).to_string();
            let (status, answer) =
                crate::http::http_request(&http, "POST", "/docs/_bulk", &body).await;
            assert_eq!(status, 200, "{answer}");
        }
        let (status, _) = crate::http::http_request(&http, "POST", "/_shutdown", "").await;
        assert_eq!(status, 200);
    });
    // The exit is the event waited for; the child stays owned here, so a failure kills it.
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not stop within {PATIENCE:?} while its stdout was not read"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "the node exited with {status}");
}

/// A child process killed (and reaped) when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_node_declares_indexes_and_answers_queries_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), &[]);
    node.ok(
        r#"put co/acme {"headquarters":"belgium","exports":[{"city":"Moscow"},{"city":"Athens"}]}"#,
    );
    node.ok(r#"put co/other {"headquarters":"france","exports":[{"city":"Athens"}]}"#);
    let added = node.ok("index add co/*");
    assert_eq!(added["index"]["every"], "co/");
    let path = node.ok("index add /headquarters");
    assert_eq!(path["index"]["path"], "/headquarters");
    // Built in the background: wait on the list, never on time (a few batches at most).
    let mut polls = 0;
    loop {
        polls += 1;
        assert!(polls < 100_000, "the indexes were never built");
        let list = node.ok("index list");
        if list["indexes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["state"] == "ready")
        {
            break;
        }
    }
    let hq = node.ok(r#"query /headquarters eq "belgium""#);
    assert_eq!(hq["results"][0]["key"], "co/acme");
    assert_eq!(hq["results"].as_array().unwrap().len(), 1);
    assert!(hq["index"].as_str().unwrap().starts_with("index"), "{hq}");
    // The every-path index answers for documents under its prefix.
    let athens = node.ok(r#"query /exports/[]/city eq "Athens" prefix co/ limit 1"#);
    assert_eq!(athens["results"].as_array().unwrap().len(), 1);
    assert!(athens["next"].is_string());
    for bad in [
        "query",
        "query /x",
        "query /x eq",
        "query x eq 1",
        "query /x eq 1 limit many",
        "index add x",
        "index drop seven",
        "index",
    ] {
        let answer = node.cmd(bad);
        assert_eq!(answer["ok"], false, "{bad}: {answer}");
        assert!(answer["error"].is_string(), "{bad}: {answer}");
    }
    node.stop();
}

#[test]
fn a_node_with_only_holds_the_keys_under_its_prefixes_and_widens_and_narrows_on_restart() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Node::start(dir_a.path(), &[]);
    a.ok(r#"put u1/x {"n":1}"#);
    a.ok(r#"put u2/y {"n":2}"#);
    let only = [
        "--only",
        "u1/",
        "--writer",
        &a.diff_key(),
        "--dial",
        &a.addr(),
    ];
    let mut b = Node::start(dir_b.path(), &only);
    b.wait_value("u1/x", json!({"n": 1}));
    a.ok(r#"put u1/z {"n":3}"#);
    b.wait_value("u1/z", json!({"n": 3}));
    assert!(b.ok("get u2/y")["value"].is_null());
    let refused = b.cmd(r#"put u2/mine {"n":4}"#);
    assert_eq!(refused["ok"], false);
    assert!(
        refused["error"].as_str().unwrap().contains("partial view"),
        "{refused}"
    );
    assert_eq!(b.ok("status")["only"], json!(["u1/"]));
    b.stop();

    // Widened: what is new comes; narrowed: what is outside goes.
    forget_peers(dir_b.path());
    let wider = ["--only", "u1/", "--only", "u2/", "--dial", &a.addr()];
    let mut b = Node::start(dir_b.path(), &wider);
    b.wait_value("u2/y", json!({"n": 2}));
    assert_eq!(b.ok("get u1/z")["value"], json!({"n": 3}));
    b.stop();
    forget_peers(dir_b.path());
    let mut b = Node::start(dir_b.path(), &["--only", "u2/"]);
    assert!(b.ok("get u1/x")["value"].is_null());
    assert_eq!(b.ok("get u2/y")["value"], json!({"n": 2}));
    assert_eq!(b.ok("status")["only"], json!(["u2/"]));
    b.stop();
    // Without --only, the folder keeps its view.
    let mut b = Node::start(dir_b.path(), &[]);
    assert_eq!(b.ok("status")["only"], json!(["u2/"]));
    assert!(b.ok("get u1/x")["value"].is_null());
    b.stop();
    a.stop();
}
