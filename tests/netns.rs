//! Partitions on real links: four node processes, each in its own network namespace, joined
//! pairwise by veth links (a full mesh, one subnet per link). All of them write at once while
//! connected; then, each round, the peers are split in two at random: the links across go down,
//! the links left inside each side are throttled with a token bucket (queueing delay and drops)
//! and everyone writes again; each side must converge alone and hold nothing of the other's
//! writes; then the links come back and every store must converge, with every acknowledged
//! write present.
//!
//! `MULTIBEE_NETNS_ROUNDS` sets the rounds (default 2), `MULTIBEE_NETNS_SEED` replays the
//! splits. Needs root and iproute2 (`ip netns`); elsewhere it prints why it skipped and passes.
//! The kernel here has no `netem` qdisc, so delay and loss come from `tbf` (a slow link whose
//! queue overflows); with the `nft` command present, 3% random loss is added on top.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::{Value as Json, json};

use crate::node::Node;
use crate::torture::{Rng, env_u64};

const PEERS: usize = 4;

/// Runs `ip` (or another command) and returns an error with its stderr if it fails.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// One veth link between two namespaces.
struct Link {
    ends: [usize; 2],
    /// The device name in each end's namespace.
    devices: [String; 2],
    /// Each end's address on the link.
    addrs: [String; 2],
}

/// The namespaces and links of the mesh; deleted (with the links) on drop.
struct Mesh {
    names: Vec<String>,
    links: Vec<Link>,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

impl Mesh {
    fn build(peers: usize) -> Result<Mesh, String> {
        let mut mesh = Mesh {
            names: Vec::new(),
            links: Vec::new(),
        };
        let id = std::process::id();
        for i in 0..peers {
            let name = format!("multibee-{id}-{i}");
            run("ip", &["netns", "add", &name])?;
            mesh.names.push(name);
            run("ip", &["-n", &mesh.names[i], "link", "set", "lo", "up"])?;
        }
        for a in 0..peers {
            for b in a + 1..peers {
                let k = mesh.links.len();
                let link = Link {
                    ends: [a, b],
                    devices: [format!("mb{a}{b}"), format!("mb{b}{a}")],
                    addrs: [format!("10.77.{k}.1"), format!("10.77.{k}.2")],
                };
                let (na, nb) = (&mesh.names[a], &mesh.names[b]);
                let [da, db] = &link.devices;
                run(
                    "ip",
                    &[
                        "link", "add", da, "netns", na, "type", "veth", "peer", "name", db,
                        "netns", nb,
                    ],
                )?;
                for side in 0..2 {
                    let ns = &mesh.names[link.ends[side]];
                    let cidr = format!("{}/24", link.addrs[side]);
                    let dev = &link.devices[side];
                    run("ip", &["-n", ns, "addr", "add", &cidr, "dev", dev])?;
                    run("ip", &["-n", ns, "link", "set", dev, "up"])?;
                }
                mesh.links.push(link);
            }
        }
        Ok(mesh)
    }

    /// Sets both ends of the link between `a` and `b` up or down.
    fn set(&self, a: usize, b: usize, up: bool) {
        let link = self.link(a, b);
        for side in 0..2 {
            let ns = &self.names[link.ends[side]];
            let state = if up { "up" } else { "down" };
            run("ip", &["-n", ns, "link", "set", &link.devices[side], state]).unwrap();
        }
    }

    /// Throttles both ends of a link (2 Mbit/s, 50 ms of queue, drops beyond), or lifts it.
    fn throttle(&self, a: usize, b: usize, on: bool) {
        let link = self.link(a, b);
        for side in 0..2 {
            let (ns, dev) = (&self.names[link.ends[side]], link.devices[side].as_str());
            let args: &[&str] = match on {
                true => &[
                    "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate",
                    "2mbit", "burst", "16kbit", "latency", "50ms",
                ],
                false => &[
                    "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root",
                ],
            };
            run("ip", args).unwrap();
        }
    }

    /// Drops 3% of the packets leaving `ns` at random, if `nft` is installed; says whether.
    fn lossy(&self, i: usize) -> bool {
        let ns = &self.names[i];
        let nft = |rule: &str| run("ip", &["netns", "exec", ns, "nft", rule]);
        nft("add table inet mbloss").is_ok()
            && nft("add chain inet mbloss out { type filter hook output priority 0 ; }").is_ok()
            && nft("add rule inet mbloss out numgen random mod 100 < 3 drop").is_ok()
    }

    /// Lifts [`Mesh::lossy`].
    fn lossless(&self, i: usize) {
        let ns = &self.names[i];
        run(
            "ip",
            &["netns", "exec", ns, "nft", "delete table inet mbloss"],
        )
        .unwrap();
    }

    fn link(&self, a: usize, b: usize) -> &Link {
        let (a, b) = (a.min(b), a.max(b));
        self.links.iter().find(|l| l.ends == [a, b]).unwrap()
    }

    /// `peer`'s address on every link it has.
    fn addrs_of(&self, peer: usize) -> Vec<&str> {
        let mut addrs = Vec::new();
        for link in &self.links {
            for side in 0..2 {
                if link.ends[side] == peer {
                    addrs.push(link.addrs[side].as_str());
                }
            }
        }
        addrs
    }
}

/// The multiaddr `node` listens on at `ip`.
fn listen_addr(node: &Node, ip: &str) -> String {
    let prefix = format!("/ip4/{ip}/tcp/");
    node.ready["listen"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Json::as_str)
        .find(|a| a.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no listen address on {ip}: {}", node.ready))
        .to_string()
}

/// Dials every link between `group`'s members (from its lower end).
fn dial_links(mesh: &Mesh, nodes: &mut [Node], group: &[usize]) {
    for link in &mesh.links {
        let [a, b] = link.ends;
        if group.contains(&a) && group.contains(&b) {
            let addr = listen_addr(&nodes[b], &link.addrs[1]);
            nodes[a].ok(&format!("dial {addr}"));
        }
    }
}

/// Every node writes `count` keys of its own and to five shared keys, all at once; returns
/// the writes to its own keys, all answered ok.
fn write_all(nodes: &mut [Node], phase: &str, count: usize) -> Vec<(String, Json)> {
    std::thread::scope(|scope| {
        let writers: Vec<_> = nodes
            .iter_mut()
            .enumerate()
            .map(|(i, node)| {
                scope.spawn(move || {
                    let mut acked = Vec::new();
                    for k in 0..count {
                        let key = format!("n{i}-{phase}-{k}");
                        let value = json!({"by": i, "phase": phase, "k": k});
                        node.ok(&format!("put {key} {value}"));
                        node.ok(&format!("put shared-{} {value}", k % 5));
                        acked.push((key, value));
                    }
                    acked
                })
            })
            .collect();
        writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    })
}

/// The writes among `written` made by a node of `group`.
fn by(group: &[usize], written: &[(String, Json)]) -> Vec<(String, Json)> {
    written
        .iter()
        .filter(|(_, v)| group.contains(&(v["by"].as_u64().unwrap() as usize)))
        .cloned()
        .collect()
}

/// Waits until every node of `group` merged every other member's whole diff feed; then their
/// state hashes must be equal and every acknowledged write present.
fn converge(nodes: &mut [Node], group: &[usize], acked: &BTreeMap<String, Json>) {
    let keys: Vec<String> = nodes.iter().map(Node::diff_key).collect();
    let lengths: Vec<u64> = nodes.iter_mut().map(Node::own_length).collect();
    for &i in group {
        for &j in group {
            if i != j {
                nodes[i].wait_merged(&keys[j], lengths[j]);
            }
        }
    }
    let hash = nodes[group[0]].ok("status")["state_hash"].clone();
    for &i in group {
        assert_eq!(
            nodes[i].ok("status")["state_hash"],
            hash,
            "node {i} differs"
        );
        for (key, value) in acked {
            assert_eq!(
                nodes[i].ok(&format!("get {key}"))["value"],
                *value,
                "node {i}: {key}"
            );
        }
    }
}

#[test]
fn partitioned_mesh_in_network_namespaces_converges_after_heal() {
    let mesh = match Mesh::build(PEERS) {
        Ok(mesh) => mesh,
        Err(why) => {
            println!("skipping: cannot create network namespaces here ({why})");
            return;
        }
    };
    let dirs: Vec<_> = (0..PEERS).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: Vec<Node> = (0..PEERS)
        .map(|i| {
            let mut args = vec![
                "--dir".to_string(),
                dirs[i].path().display().to_string(),
                "--no-mdns".into(),
            ];
            for ip in mesh.addrs_of(i) {
                args.extend(["--listen".into(), format!("/ip4/{ip}/tcp/0")]);
            }
            Node::start_in_netns(&mesh.names[i], &args)
        })
        .collect();
    let keys: Vec<String> = nodes.iter().map(Node::diff_key).collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        for (j, key) in keys.iter().enumerate() {
            if i != j {
                node.ok(&format!("writer add {key}"));
            }
        }
    }
    let everyone: Vec<usize> = (0..PEERS).collect();
    let mut acked = BTreeMap::new();

    // Connected: everyone writes at once.
    dial_links(&mesh, &mut nodes, &everyone);
    acked.extend(write_all(&mut nodes, "connected", 15));
    converge(&mut nodes, &everyone, &acked);

    let rounds = env_u64("MULTIBEE_NETNS_ROUNDS").unwrap_or(2);
    let seed = env_u64("MULTIBEE_NETNS_SEED").unwrap_or_else(|| std::process::id() as u64 | 1);
    println!("partition seed {seed} (MULTIBEE_NETNS_SEED={seed} replays it), {rounds} rounds");
    let mut rng = Rng(seed);
    for round in 0..rounds {
        // A random split; the links across it go down, the links inside each side are
        // throttled and (with nft) lossy.
        let mut left: Vec<usize> = Vec::new();
        while left.is_empty() || left.len() == PEERS {
            let mask = rng.below(1 << PEERS);
            left = (0..PEERS).filter(|i| mask & (1 << i) != 0).collect();
        }
        let right: Vec<usize> = (0..PEERS).filter(|i| !left.contains(i)).collect();
        let inside: Vec<(usize, usize)> = mesh
            .links
            .iter()
            .map(|l| (l.ends[0], l.ends[1]))
            .filter(|(a, b)| left.contains(a) == left.contains(b))
            .collect();
        for &a in &left {
            for &b in &right {
                mesh.set(a, b, false);
            }
        }
        for &(a, b) in &inside {
            mesh.throttle(a, b, true);
        }
        let lossy = (0..PEERS).all(|i| mesh.lossy(i));
        println!(
            "round {round}: {left:?} | {right:?}, links inside throttled (tbf 2 Mbit/s, 50 ms \
             queue){}",
            if lossy {
                ", 3% loss (nft)"
            } else {
                "; no nft, so no random loss"
            }
        );
        let written = write_all(&mut nodes, &format!("r{round}"), 10);
        // Each side converges on its own, through its slow links...
        for side in [&left, &right] {
            let mut side_acked = acked.clone();
            side_acked.extend(by(side, &written));
            converge(&mut nodes, side, &side_acked);
        }
        // ... and the partition held: neither side has the other's writes.
        let (l, r) = (left[0], right[0]);
        assert_eq!(
            nodes[l].ok(&format!("get n{r}-r{round}-0"))["value"],
            Json::Null
        );
        assert_eq!(
            nodes[r].ok(&format!("get n{l}-r{round}-0"))["value"],
            Json::Null
        );

        // Healed: links up, throttles and loss lifted, every link dialed again.
        for &a in &left {
            for &b in &right {
                mesh.set(a, b, true);
            }
        }
        for &(a, b) in &inside {
            mesh.throttle(a, b, false);
        }
        if lossy {
            (0..PEERS).for_each(|i| mesh.lossless(i));
        }
        dial_links(&mesh, &mut nodes, &everyone);
        acked.extend(written);
        converge(&mut nodes, &everyone, &acked);
    }
    for node in nodes {
        node.stop();
    }
}
