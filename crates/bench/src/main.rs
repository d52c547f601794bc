//! multibee's benchmark binary: each measurement runs with its baseline (raw redb doing the
//! same rows the same way, or the layer below) in the same run, so that the ratio holds on a
//! shared, noisy machine.
//!
//! ```sh
//! cargo run --release -p multibee-bench -- [NAME...] [--quick] [--json]
//! ```
//!
//! `NAME` filters by prefix (`feed`, `bee/put`, `multibee/merge-in-order`). `--quick` uses small
//! sizes (the whole set in well under 3 minutes). `--json` prints one object per line:
//! `{"name","unit","value","baseline_name","baseline","ratio"}`. Values are operations per
//! second unless the unit says otherwise. `load/...` runs four served peers under sustained
//! writes (60 s; 10 s with `--quick`). `net/...` replicates between two nodes on loopback
//! (TCP and QUIC) against the same batches moved in-process. `blobs/...` replicates a 1 GiB
//! blob (128 MiB with `--quick`) between two nodes, with the memory it adds and the time to
//! finish a download from 90% against a whole one. `index/...` measures path indexes: the put
//! rate with 0, 1 and 5 indexes and every path indexed, and equality and range queries.
//! `partial/...` measures the bytes a peer holding 1% of 1,000,000 keys receives against a
//! full peer (100,000 with `--quick`).
#![allow(clippy::unwrap_used)]

mod blobs;
mod figures;
mod index;
mod load;
mod net;
mod partial;

use figures::Figure;

/// What a run measures: (name, function taking the size scale).
type Measure = (&'static str, fn(&Scale) -> Vec<Figure>);

/// Sizes of a run.
pub struct Scale {
    /// Entries, puts or diffs per measurement.
    pub n: u64,
    /// Ops per peer in the offline merge.
    pub offline: u64,
    /// How long the load runs.
    pub load_seconds: u64,
}

const MEASURES: &[Measure] = &[
    ("feed/append-batch-1000", figures::feed_append),
    ("feed/verify-ingest", figures::feed_ingest),
    ("bee/put-batch-1000", figures::bee_put_durable),
    ("bee/put-batch-1000-relaxed", figures::bee_put_relaxed),
    ("bee/get-random", figures::bee_get),
    ("bee/scan", figures::bee_scan),
    ("multibee/put-batch-100", figures::multibee_put_100),
    ("multibee/put-batch-1000", figures::multibee_put_1000),
    ("multibee/merge-in-order", figures::multibee_merge),
    ("multibee/offline-merge-2x10000", figures::multibee_offline),
    ("net/replicate", net::figures),
    ("blobs/replicate", blobs::figures),
    ("index/", index::figures),
    ("partial/", partial::figures),
    ("load/4-peers-durable", load_durable),
];

fn load_durable(s: &Scale) -> Vec<Figure> {
    load::figures(multibee::SyncMode::Durable, s.load_seconds)
}

fn main() {
    if let Some(mb) = std::env::var_os(blobs::SERVER_VAR) {
        let mb = mb.to_str().and_then(|v| v.parse().ok()).unwrap();
        return blobs::serve(mb);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let json = args.iter().any(|a| a == "--json");
    let names: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    if let Some(unknown) = args
        .iter()
        .find(|a| a.starts_with("--") && !["--quick", "--json"].contains(&a.as_str()))
    {
        eprintln!("unknown option {unknown}: use [NAME...] [--quick] [--json]");
        std::process::exit(2);
    }
    let scale = if quick {
        Scale {
            n: 20_000,
            offline: 2_000,
            load_seconds: 10,
        }
    } else {
        Scale {
            n: 100_000,
            offline: 10_000,
            load_seconds: 60,
        }
    };
    let chosen: Vec<&Measure> = MEASURES
        .iter()
        .filter(|(name, _)| names.is_empty() || names.iter().any(|n| name.starts_with(n.as_str())))
        .collect();
    if chosen.is_empty() {
        let all: Vec<&str> = MEASURES.iter().map(|(n, _)| *n).collect();
        eprintln!("no measurement matches; there are: {}", all.join(", "));
        std::process::exit(2);
    }
    for (name, measure) in chosen {
        eprintln!("{name} ...");
        for figure in measure(&scale) {
            if json {
                println!("{}", figure.json());
            } else {
                println!("{}", figure.line());
            }
        }
    }
}
