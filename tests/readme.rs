//! Runs the README's quickstart as written: every `X$` line starts peer X with the command's
//! arguments (in a temporary folder instead of `./x`), every `X>` line is typed into peer X, and
//! the line after each is the answer it must give (`get` waits until the value arrives).

use std::collections::HashMap;

use serde_json::Value as Json;

use crate::node::Node;

fn quickstart() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut lines = Vec::new();
    let mut inside = false;
    for line in readme.lines() {
        match (inside, line.trim()) {
            (false, "```quickstart") => inside = true,
            (true, "```") => inside = false,
            (true, l) => lines.push(l.to_string()),
            _ => {}
        }
    }
    assert!(lines.len() > 10, "the README has a quickstart");
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
    let lines = quickstart();
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
