//! Runs the README's quickstart as written: every `X$` line starts peer X with the command's
//! arguments (in a temporary folder instead of `./x`), every `X>` line is typed into peer X, and
//! the line after each is the answer it must give (`get` waits until the value arrives).

use std::collections::HashMap;

use serde_json::{Value as Json, json};

use crate::common::http_with_headers;
use crate::node::Node;

/// The lines of the README's code blocks marked `kind`.
fn block(kind: &str) -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let fence = format!("```{kind}");
    let mut lines = Vec::new();
    let mut inside = false;
    for line in readme.lines() {
        match (inside, line.trim()) {
            (false, l) if l == fence => inside = true,
            (true, "```") => inside = false,
            (true, l) => lines.push(l.to_string()),
            _ => {}
        }
    }
    assert!(lines.len() > 10, "the README has a {kind} block");
    lines
}

#[test]
fn the_readme_quickstart_does_what_it_says() {
    let dirs: HashMap<char, tempfile::TempDir> = ['A', 'B']
        .into_iter()
        .map(|p| (p, tempfile::tempdir().unwrap()))
        .collect();
    let mut vars: HashMap<String, String> = HashMap::new();
    let mut nodes: HashMap<char, Node> = HashMap::new();
    let lines = block("quickstart");
    let mut i = 0;
    let fill = |text: &str, vars: &HashMap<String, String>| {
        vars.iter()
            .fold(text.to_string(), |t, (k, v)| t.replace(k.as_str(), v))
    };
    while i < lines.len() {
        let line = &lines[i];
        let peer = line.chars().next().unwrap();
        let expected = lines.get(i + 1).cloned().unwrap_or_default();
        i += 2;
        if let Some(command) = line.strip_prefix(&format!("{peer}$ ")) {
            let (_, args) = command
                .split_once(" -- ")
                .expect("a node command with arguments");
            let dir = dirs[&peer].path().display().to_string();
            let args: Vec<String> = fill(args, &vars)
                .split_whitespace()
                .map(|a| {
                    if a.starts_with("./") {
                        dir.clone()
                    } else {
                        a.to_string()
                    }
                })
                .collect();
            let node = Node::start_with(&args);
            let ready: Json = serde_json::from_str(&expected.replace("...", "")).unwrap();
            assert_eq!(ready["event"], node.ready["event"]);
            vars.insert(format!("<{peer}_KEY>"), node.diff_key());
            vars.insert(format!("<{peer}_ADDR>"), node.addr());
            let id = node.ready["peer_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            vars.insert(format!("<{peer}_PEER_ID>"), id);
            nodes.insert(peer, node);
        } else if let Some(command) = line.strip_prefix(&format!("{peer}> ")) {
            let command = fill(command, &vars);
            let expected: Json = serde_json::from_str(&fill(&expected, &vars)).unwrap();
            let node = nodes.get_mut(&peer).expect("a started peer");
            if let Some(key) = command.strip_prefix("get ") {
                node.wait_value(key, expected["value"].clone());
            }
            assert_eq!(node.cmd(&command), expected, "{peer}> {command}");
            if command == "quit" {
                nodes.remove(&peer).unwrap().stop();
            }
        } else {
            panic!("a quickstart line neither starts a peer nor types into one: {line}");
        }
    }
}

/// Splits a shell command line into words (single and double quotes, no expansions).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote = None;
    for c in line.chars() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (_, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// Whether `actual` is `expected`, where an expected `"...": "..."` field stands for any
/// other fields.
fn matches(expected: &Json, actual: &Json) -> bool {
    match (expected, actual) {
        (Json::Object(e), Json::Object(a)) if e.contains_key("...") => e
            .iter()
            .filter(|(k, _)| *k != "...")
            .all(|(k, v)| a.get(k).is_some_and(|a| matches(v, a))),
        _ => expected == actual,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_http_quickstart_does_what_it_says() {
    let dir = tempfile::tempdir().unwrap();
    let lines = block("http-quickstart");
    let (first, ready) = (&lines[0], &lines[1]);
    let args = first
        .strip_prefix("$ cargo run --release --example node -- ")
        .expect("the block starts a node");
    let readme_http = shell_words(args)
        .windows(2)
        .find(|w| w[0] == "--http")
        .map(|w| w[1].clone())
        .expect("the node serves HTTP");
    let readme_host = readme_http.replace("127.0.0.1", "localhost");
    // A temporary folder, a port the OS chooses, and no network beyond loopback.
    let args: Vec<String> = shell_words(args)
        .into_iter()
        .map(|a| match a {
            a if a.starts_with("./") => dir.path().display().to_string(),
            a if a == readme_http => "127.0.0.1:0".to_string(),
            a => a,
        })
        .chain(["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"].map(String::from))
        .collect();
    let mut node = Node::start_with(&args);
    let expected: Json = serde_json::from_str(ready).unwrap();
    let mut actual = node.ready.clone();
    let http = actual["http"].as_str().unwrap().to_string();
    let addr = http.trim_start_matches("http://").to_string();
    actual["http"] = json!(format!("http://{readme_http}"));
    assert!(matches(&expected, &actual), "{ready} vs {actual}");
    node.close_stdin();

    for pair in lines[2..].chunks(2) {
        let [command, answer] = pair else {
            panic!("a command without its answer: {pair:?}")
        };
        let words = shell_words(command.strip_prefix("$ ").expect("a shell command"));
        assert_eq!(words[0], "curl", "{command}");
        let (mut method, mut body, mut headers, mut url) =
            ("GET".to_string(), String::new(), Vec::new(), None);
        let mut words = words[1..].iter();
        while let Some(word) = words.next() {
            match word.as_str() {
                "-X" => method = words.next().unwrap().clone(),
                "-d" => {
                    body = words.next().unwrap().clone();
                    if method == "GET" {
                        method = "POST".to_string();
                    }
                }
                "-H" => headers.push(words.next().unwrap().clone()),
                w if w.starts_with('-') => panic!("the test does not know curl's {w}"),
                w => url = Some(w.to_string()),
            }
        }
        let url = url.expect("a URL");
        let path = url
            .strip_prefix(&readme_host)
            .unwrap_or_else(|| panic!("{url} is not on {readme_host}"));
        let (status, got) = http_with_headers(&addr, &method, path, &headers, &body).await;
        let want: Json = serde_json::from_str(answer).unwrap();
        assert!(
            matches(&want, &got),
            "{command}: answered {status} {got}, the README says {want}"
        );
    }
    node.wait_exit("POST /_shutdown");
}

/// The README's example `multibee.toml` is one the node takes (its network settings replaced
/// by flags: loopback only, no mDNS).
#[test]
fn the_readme_settings_file_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let lines = {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let start = readme.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let end = start + readme[start..].find("```").unwrap();
        readme[start..end].to_string()
    };
    let config = dir.path().join("settings.toml");
    std::fs::write(&config, lines).unwrap();
    let args: Vec<String> = [
        "--dir",
        &dir.path().join("data").display().to_string(),
        "--config",
        &config.display().to_string(),
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--no-mdns",
        "--http",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec();
    let node = Node::start_with(&args);
    assert!(node.ready["http"].is_string(), "{}", node.ready);
    node.terminate();
}
