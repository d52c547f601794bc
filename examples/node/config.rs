//! The node's configuration file: `multibee.toml` in the folder, or the file `--config` names.
//! Every key is optional, and a command-line flag overrides its key (a list flag replaces the
//! file's list):
//!
//! ```toml
//! listen = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]
//! http = "127.0.0.1:8080"
//! bootstrap = ["/ip4/203.0.113.7/tcp/4001/p2p/12D3Koo..."]
//! dial = ["/ip4/192.168.1.20/tcp/4001"]
//! mdns = true
//! max_drift_ms = 60000
//! sync = "durable"        # or "relaxed"
//! cache_mb = 64           # or cache_bytes = 67108864
//! blob_fetch = "all"      # or "none", or key prefixes: ["photos/", "docs/"]
//! only = ["users/alice/"] # a partial view: hold only the keys under these prefixes
//! ```
//!
//! An unknown key, a value of the wrong type or a bad address is an error naming the file and
//! the problem, found before the folder is touched.

use std::net::SocketAddr;
use std::path::Path;

use multibee::{Multiaddr, SyncMode};
use serde::Deserialize;

use crate::Args;

/// The file looked for in the folder when `--config` is not given.
pub const FILE_NAME: &str = "multibee.toml";

/// When an acknowledged write reaches the disk (`multibee::SyncMode`, by name).
#[derive(Clone, Copy, Debug, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Sync {
    /// Every acknowledged write is on disk.
    Durable,
    /// Flushed at least once a second; a crash may lose the newest writes.
    Relaxed,
}

impl From<Sync> for SyncMode {
    fn from(sync: Sync) -> SyncMode {
        match sync {
            Sync::Durable => SyncMode::Durable,
            Sync::Relaxed => SyncMode::Relaxed,
        }
    }
}

/// The file's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<Vec<String>>,
    http: Option<SocketAddr>,
    http_token: Option<String>,
    bootstrap: Option<Vec<String>>,
    dial: Option<Vec<String>>,
    mdns: Option<bool>,
    max_drift_ms: Option<u64>,
    sync: Option<Sync>,
    cache_mb: Option<u64>,
    cache_bytes: Option<u64>,
    blob_fetch: Option<OneOrMany>,
    only: Option<OneOrMany>,
}

/// A string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// What the node runs with: the file's settings under the command line's.
#[derive(Debug)]
pub struct Settings {
    pub listen: Vec<Multiaddr>,
    pub http: Option<SocketAddr>,
    pub http_token: Option<String>,
    pub bootstrap: Vec<Multiaddr>,
    pub dial: Vec<Multiaddr>,
    pub mdns: bool,
    pub max_drift_ms: Option<u64>,
    pub sync: Option<SyncMode>,
    pub cache_bytes: Option<usize>,
    pub blob_fetch: multibee::blob_sync::FetchPolicy,
    /// The partial view's prefixes (empty: the folder's view, every key for a new one).
    pub only: Option<multibee::db::View>,
}

/// Reads the configuration file (`--config`, or `multibee.toml` in the folder if there is
/// one) and lays the command line over it.
pub fn settings(args: &Args) -> Result<Settings, String> {
    let (path, named) = match &args.config {
        Some(path) => (path.clone(), true),
        None => (args.dir.join(FILE_NAME), false),
    };
    let file = read(&path, named)?;
    // A bad flag is not the file's fault: name the file only when there is one.
    let exists = path.exists();
    merge(args, file).map_err(|e| match exists {
        true => format!("{}: {e}", path.display()),
        false => e,
    })
}

/// The file at `path`; none is the same as an empty one unless it was `named`.
fn read(path: &Path, named: bool) -> Result<File, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => {
            return Ok(File::default());
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    toml::from_str(&text).map_err(|e| {
        let at = match e.span() {
            Some(span) => {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {column}: ")
            }
            None => String::new(),
        };
        format!("{}: {at}{}", path.display(), e.message().trim())
    })
}

fn merge(args: &Args, file: File) -> Result<Settings, String> {
    let listen = match (&args.listen, file.listen) {
        (flags, _) if !flags.is_empty() => flags.clone(),
        (_, Some(listen)) => addrs("listen", &listen)?,
        _ => default_listen(),
    };
    let list = |flags: &Vec<Multiaddr>, key, from_file: Option<Vec<String>>| match from_file {
        _ if !flags.is_empty() => Ok(flags.clone()),
        Some(list) => addrs(key, &list),
        None => Ok(Vec::new()),
    };
    if file.cache_mb.is_some() && file.cache_bytes.is_some() {
        return Err("set cache_mb or cache_bytes, not both".into());
    }
    let cache_bytes = match args.cache_mb.or(file.cache_mb) {
        Some(mb) => Some(mb.saturating_mul(1 << 20)),
        None => file.cache_bytes,
    };
    let mdns = match (args.no_mdns, args.mdns) {
        (true, _) => false,
        (false, Some(on)) => on,
        (false, None) => file.mdns.unwrap_or(true),
    };
    let blob_fetch = match (&args.blob_fetch, file.blob_fetch) {
        (flags, _) if !flags.is_empty() => flags.clone(),
        (_, Some(OneOrMany::One(v))) => vec![v],
        (_, Some(OneOrMany::Many(v))) => v,
        _ => Vec::new(),
    };
    let blob_fetch = multibee::blob_sync::FetchPolicy::parse(&blob_fetch)?;
    let only = match (&args.only, file.only) {
        (flags, _) if !flags.is_empty() => flags.clone(),
        (_, Some(OneOrMany::One(v))) => vec![v],
        (_, Some(OneOrMany::Many(v))) => v,
        _ => Vec::new(),
    };
    let only = match only.is_empty() {
        true => None,
        false => Some(
            multibee::db::View::new(only.into_iter().map(String::into_bytes))
                .map_err(|e| format!("`--only` / `only`: {e}"))?,
        ),
    };
    Ok(Settings {
        blob_fetch,
        only,
        listen,
        http: args.http.or(file.http),
        http_token: args.http_token.clone().or(file.http_token),
        bootstrap: list(&args.bootstrap, "bootstrap", file.bootstrap)?,
        dial: list(&args.dial, "dial", file.dial)?,
        mdns,
        max_drift_ms: args.max_drift_ms.or(file.max_drift_ms),
        sync: args.sync.or(file.sync).map(SyncMode::from),
        cache_bytes: cache_bytes.map(|b| usize::try_from(b).unwrap_or(usize::MAX)),
    })
}

/// The addresses of the list `key`.
fn addrs(key: &str, list: &[String]) -> Result<Vec<Multiaddr>, String> {
    list.iter()
        .map(|a| {
            a.parse()
                .map_err(|e| format!("`{key}`: bad multiaddr {a:?}: {e}"))
        })
        .collect()
}

/// Where a node listens unless told: every interface, ports from the OS, QUIC and TCP.
pub fn default_listen() -> Vec<Multiaddr> {
    ["/ip4/0.0.0.0/udp/0/quic-v1", "/ip4/0.0.0.0/tcp/0"]
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect()
}
