//! A multibee peer node: opens a folder, serves it on the network, and takes commands on stdin,
//! one per line, answering each with one JSON line on stdout.
//!
//! ```sh
//! cargo run --release --example node -- --dir ./a
//! ```
//!
//! The peer's libp2p identity is kept in the folder (`identity.key`, owner-only), so its peer id
//! is the same after a restart. Once listening it prints
//! `{"event":"ready","peer_id":..,"diff_key":..,"database":..,"listen":[..]}`. Then:
//! `put KEY JSON`, `patch KEY JSON` (a JSON merge patch), `get KEY`, `del KEY`,
//! `list [PREFIX] [--limit N] [--start KEY]` (at most N entries, 1000 by default, from KEY on;
//! `"more":true,"next":KEY` when more remain: pass that KEY as `--start` for the next page),
//! `writer add KEY` (refuses this node's own diff and store keys with the reason; another
//! peer's store key is not recognized: it is accepted, and its entries are reported as
//! `invalid_diff` events), `writer remove KEY` (replicated membership operations),
//! `invite` (answers a `ticket` that `--join TICKET` takes on a new peer), `dial ADDR` (waits
//! up to 10 s for the connection: `{"ok":true,"peer_id":..}`, or `{"ok":false,"error":..}`
//! saying why, e.g. `connection refused`, `timed out`, `wrong peer: ...`, `unreachable: ...`),
//! `conflicts KEY`, `history KEY`, `status`, `blob add PATH`, `blob get ID PATH`,
//! `blob list [AFTER]`, `blob status ID`, `blob status` (the downloads in progress),
//! `blob fetch ID`, `blob gc` (the blob store in `DIR/blobs`), `index add PATH|PREFIX*`,
//! `index list|drop ID|rebuild ID`, `query PATH OP JSON ... [prefix P] [limit N]`, `quit`.
//! Answers
//! carry `"ok"`; other
//! lines carry `"event"` (a change to the merged store, a peer connected or rejected, a failed
//! dial: `{"event":"dial_failed","peer_id":..|null,"address":..|null,"reason":..}`, for
//! background dials too; mDNS that found no peer in its first 10 s, once:
//! `{"event":"mdns_found_nothing","tried":[..]}`). End of
//! input, SIGINT and SIGTERM shut it down cleanly. A bad line (not UTF-8, longer than 16 MiB, an
//! unknown command) is answered with an error quoting at most its first 64 characters, and the
//! node goes on. Logs go to stderr (`RUST_LOG`).
//! With `--http ADDR` it also serves the HTTP API (`multibee::http`; the ready line gains
//! `"http":"http://HOST:PORT"`) and keeps running when stdin closes, until SIGINT, SIGTERM or
//! `POST /_shutdown`.
//!
//! The peers it was connected to are remembered in the folder (`peers.json`, owner-only) and
//! dialed again at the start and whenever one disconnects, with a backoff (1 s doubling to
//! 5 min): a restarted node finds its peers again without `--dial`. A corrupt file is reported
//! on stderr and ignored.
//!
//! Settings can also come from a TOML file: `multibee.toml` in the folder, or `--config PATH`
//! (keys `listen`, `http`, `http_token`, `bootstrap`, `dial`, `mdns`, `max_drift_ms`, `sync`,
//! `cache_mb` or `cache_bytes`, `blob_fetch`, `only`; see `config.rs`). Flags override the file. A bad
//! file (an unknown key, a wrong value) stops the node with an error naming the file and the
//! problem, before the folder is touched.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;

mod config;
mod query;
use multibee::blob_sync::BlobFetcher;
use multibee::db::{Clock, Event as DbEvent, SystemClock};
use multibee::net::Event as NetEvent;
use multibee::{ChangesOptions, Config, FeedKey, MultiBee, Multiaddr, Options, Served, serve};
use serde_json::{Value as Json, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// A multibee peer: a leaderless multi-writer document store served over libp2p.
#[derive(Parser, Debug)]
#[command(version, about, after_help = STDIN_HELP)]
struct Args {
    /// The folder holding this peer's data.
    #[arg(long, default_value = "./multibee-data")]
    dir: PathBuf,
    /// A configuration file (TOML; default: `multibee.toml` in the folder, if there is one).
    /// Flags override its keys.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// A multiaddr to listen on (repeatable) [default: /ip4/0.0.0.0/udp/0/quic-v1 and
    /// /ip4/0.0.0.0/tcp/0]
    #[arg(long, value_name = "ADDR")]
    listen: Vec<Multiaddr>,
    /// A multiaddr to dial at start (repeatable).
    #[arg(long, value_name = "ADDR")]
    dial: Vec<Multiaddr>,
    /// The diff key (hex) of a writer whose changes this peer merges (repeatable).
    #[arg(long, value_name = "KEY")]
    writer: Vec<FeedKey>,
    /// Do not look for peers on the local network with mDNS (the same as `--mdns false`).
    #[arg(long)]
    no_mdns: bool,
    /// Look for peers on the local network with mDNS [default: true]
    #[arg(long, value_name = "BOOL")]
    mdns: Option<bool>,
    /// The largest lead of a writer's clock over this peer's that still advances this peer's
    /// clock; a diff further ahead is reported (`future_timestamp` events) [default: 60000]
    #[arg(long, value_name = "MS")]
    max_drift_ms: Option<u64>,
    /// When an acknowledged write reaches the disk [default: durable]
    #[arg(long, value_enum)]
    sync: Option<config::Sync>,
    /// The store's page cache, in MiB [default: the library's]
    #[arg(long, value_name = "MB")]
    cache_mb: Option<u64>,
    /// Which blobs referenced by documents this node fetches by itself: `all`, `none`, or a
    /// key prefix (repeatable) [default: all]
    #[arg(long, value_name = "all|none|PREFIX")]
    blob_fetch: Vec<String>,
    /// Hold only the keys under this prefix (repeatable): a partial view. Only the diff-feed
    /// entries of those keys are fetched from peers, and writes outside them are refused.
    /// Restarting with other prefixes widens the view (what is new is fetched) or narrows it
    /// (keys outside are dropped). Without `--only`, a folder keeps the view it has;
    /// `--only ""` holds every key again.
    #[arg(long, value_name = "PREFIX")]
    only: Vec<String>,
    /// A Kademlia bootstrap peer's multiaddr (repeatable).
    #[arg(long, value_name = "ADDR")]
    bootstrap: Vec<Multiaddr>,
    /// Join the database of a ticket (made by `invite` on a member) as a new writer, in a new
    /// folder.
    #[arg(long, value_name = "TICKET")]
    join: Option<multibee::Ticket>,
    /// Runs this peer's clock this many milliseconds ahead of the system's (negative: behind),
    /// to try clock skew without changing the machine's time.
    #[arg(
        long,
        value_name = "MS",
        allow_hyphen_values = true,
        default_value_t = 0
    )]
    clock_offset_ms: i64,
    /// Serve the HTTP API (`multibee::http`) on this address (port 0: one the OS chooses);
    /// the node then keeps running when stdin closes, until SIGINT, SIGTERM or
    /// `POST /_shutdown`.
    #[arg(long, value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,
    /// The bearer token HTTP requests must carry. Without one, a node serving HTTP beyond
    /// loopback uses the token in DIR/http.token, made (owner-only) on first start.
    #[arg(long, value_name = "TOKEN")]
    http_token: Option<String>,
}

/// What `--help` says of stdin and stdout.
const STDIN_HELP: &str = "\
Commands on stdin, one per line, each answered with one JSON line carrying \"ok\":
  put KEY JSON | patch KEY JSON | get KEY | del KEY
  list [PREFIX] [--limit N] [--start KEY]   (1000 entries by default; \"more\" and \"next\")
  writer add KEY | writer remove KEY | invite
  dial ADDR   (waits up to 10 s: \"peer_id\", or ok false and the reason, e.g. connection refused)
  conflicts KEY | history KEY | status | quit
  blob add PATH | blob get ID PATH | blob list [AFTER] | blob status ID | blob gc   (DIR/blobs)
  blob fetch ID   (from the connected peers, else DHT providers: \"size\", \"fetched_bytes\")
  blob status     (the downloads in progress: \"downloads\":[{id, size, held_bytes, peers}])
  index add PATH | index add PREFIX* | index list | index drop ID | index rebuild ID
  query PATH OP JSON [PATH OP JSON ...] [prefix P] [limit N]   (OP: eq gt gte lt lte prefix)
A bad line (not UTF-8, over 16 MiB, unknown) is answered with an error; the node goes on.
Event lines carry \"event\": ready, change, peer_connected, peer_disconnected, peer_rejected,
dial_failed (peer_id, address, reason; background dials too), mdns_found_nothing (tried, once),
future_timestamp, invalid_diff, writer_frozen, merged, blob_arrived (id, size, keys),
blob_progress (id, peer_id, held_bytes, size: every 1% or 4 MiB, whichever is more),
blob_peer_rejected (id, peer_id, reason).
Peers are remembered in DIR/peers.json and dialed again at start and when they disconnect.
Settings may come from DIR/multibee.toml or --config PATH (keys: listen, http, http_token,
bootstrap, dial, mdns, max_drift_ms, sync, cache_mb or cache_bytes, blob_fetch, only); flags override
the file.
HTTP beyond loopback needs a bearer token: --http-token, or DIR/http.token (made on first start).";

/// The system clock moved by a fixed offset.
#[derive(Debug)]
struct OffsetClock(i64);

impl Clock for OffsetClock {
    fn now_ms(&self) -> u64 {
        SystemClock.now_ms().saturating_add_signed(self.0)
    }
}

fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // Kademlia warns at every start without bootstrap peers ("No known peers"):
                // noise for a node that finds peers otherwise. RUST_LOG shows it again.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new(
                        "warn,node=info,multibee_multibee::upgrade=info,multibee_bee::index=info,\
                         libp2p_kad=error",
                    )
                }),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fail(&format!("cannot start the runtime: {e}")),
    };
    let result = runtime.block_on(run(args));
    // A read of stdin may still be blocked in its thread (after a signal); it must not hold up
    // the exit: everything else has shut down by now.
    runtime.shutdown_background();
    if let Err(e) = result {
        fail(&e);
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}

/// The file in the folder holding this peer's libp2p identity (an ed25519 keypair in libp2p's
/// protobuf encoding, readable by the owner only): the peer id stays the same across restarts.
const IDENTITY_FILE: &str = "identity.key";

/// The folder's identity, or a new one (`true`: not saved yet).
fn load_identity(dir: &std::path::Path) -> Result<(libp2p::identity::Keypair, bool), String> {
    let path = dir.join(IDENTITY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => libp2p::identity::Keypair::from_protobuf_encoding(&bytes)
            .map(|key| (key, false))
            .map_err(|e| format!("{} holds no identity: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok((libp2p::identity::Keypair::generate_ed25519(), true))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Saves `identity` in the folder, owner-only, whole or not at all.
fn save_identity(
    dir: &std::path::Path,
    identity: &libp2p::identity::Keypair,
) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(IDENTITY_FILE);
    let temp = dir.join(format!("{IDENTITY_FILE}.new"));
    let failed = |e: &dyn std::fmt::Display| format!("cannot save {}: {e}", path.display());
    let bytes = identity.to_protobuf_encoding().map_err(|e| failed(&e))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .map_err(|e| failed(&e))?;
    file.write_all(&bytes).map_err(|e| failed(&e))?;
    file.sync_all().map_err(|e| failed(&e))?;
    std::fs::rename(&temp, &path).map_err(|e| failed(&e))?;
    // The rename is durable once the folder is: else a crash could bring back no identity,
    // and the node a new peer id.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| failed(&e))
}

/// Writes whole lines to stdout, one writer for answers and events alike.
#[derive(Clone)]
struct Out(mpsc::Sender<String>);

impl Out {
    async fn send(&self, line: Json) {
        // The printer only stops at shutdown.
        let _ = self.0.send(line.to_string()).await;
    }
}

/// The file in the folder that holds the HTTP token of a node serving beyond loopback.
const TOKEN_FILE: &str = "http.token";

/// The token HTTP requests must carry, and where it comes from (`"given"`, or the token
/// file's path): the one given (flag or configuration file); else, for an address beyond loopback, the one in the
/// folder's token file, made on first start (32 random bytes, hex, owner-only); else none.
fn http_token(
    dir: &std::path::Path,
    addr: std::net::SocketAddr,
    given: Option<String>,
) -> Result<Option<(String, String)>, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(token) = given {
        if token.trim().is_empty() || token.trim() != token {
            return Err("the HTTP token is empty or has spaces around it".into());
        }
        return Ok(Some((token, "given".into())));
    }
    if addr.ip().is_loopback() {
        return Ok(None);
    }
    let path = dir.join(TOKEN_FILE);
    let shown = path.display().to_string();
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(Some((text.trim().to_string(), shown))),
        Ok(_) => return Err(format!("{shown} is empty: delete it to make a new token")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {shown}: {e}")),
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| format!("no randomness for a token: {e}"))?;
    let token = hex::encode(secret);
    let failed = |e: std::io::Error| format!("cannot write {shown}: {e}");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(failed)?;
    file.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(failed)?;
    Ok(Some((token, shown)))
}

/// The file in the folder where the peers this node was connected to are remembered (see
/// `multibee::Served::remember_peers`); they are dialed again at the start.
const PEERS_FILE: &str = "peers.json";

/// How long the `dial` command waits for the connection.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

async fn run(args: Args) -> Result<(), String> {
    // Read before the folder is touched: a bad file changes nothing.
    let settings = config::settings(&args)?;
    let mut config = Config::default()
        .listen_on(settings.listen.iter().cloned())
        .mdns(settings.mdns);
    // Bootstrap peers are dialed like any other; Kademlia learns their routes on connection.
    for addr in settings.dial.iter().chain(&settings.bootstrap) {
        config = config.dial(addr.clone());
    }
    let (identity, new_identity) = load_identity(&args.dir)?;
    config = config.identity(identity.clone());
    // The blob store lives in the folder: made owner-only here if this is its first start.
    private_dir(&args.dir)?;
    let blobs = multibee::blobs::Blobs::open(args.dir.join(BLOBS_DIR))
        .map_err(|e| format!("cannot open the blob store: {e}"))?;
    config = config.blobs(blobs.clone());
    let mut options = Options::default().clock(OffsetClock(args.clock_offset_ms));
    if let Some(ms) = settings.max_drift_ms {
        options = options.max_drift_ms(ms);
    }
    if let Some(sync) = settings.sync {
        options = options.sync(sync);
    }
    let blob_fetch = settings.blob_fetch.clone();
    if let Some(bytes) = settings.cache_bytes {
        options = options.cache_bytes(bytes);
    }
    if let Some(view) = settings.only.clone() {
        options = options.only(view);
    }
    let mut served = match &args.join {
        Some(ticket) => multibee::join(&args.dir, ticket, options, config)
            .await
            .map_err(|e| format!("cannot join with the ticket: {e}"))?,
        None => {
            let mb = MultiBee::open_with(&args.dir, options)
                .await
                .map_err(|e| format!("cannot open {}: {e}", args.dir.display()))?;
            serve(&mb, config)
                .await
                .map_err(|e| format!("cannot start the node: {e}"))?
        }
    };
    served.remember_peers(args.dir.join(PEERS_FILE));
    let mb = served.multibee().clone();
    if new_identity {
        // The folder exists (and is this process's) once the store is open.
        if let Err(e) = save_identity(&args.dir, &identity) {
            served.shutdown().await;
            mb.close().await;
            return Err(e);
        }
    }
    for key in &args.writer {
        served
            .add_writer(*key)
            .await
            .map_err(|e| format!("cannot add writer {key}: {e}"))?;
    }
    let listen = served.listen_addrs().await.map_err(|e| e.to_string())?;

    let (tx, mut rx) = mpsc::channel::<String>(1024);
    let out = Out(tx);
    let printer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = rx.recv().await {
            if stdout
                .write_all(format!("{line}\n").as_bytes())
                .await
                .is_err()
                || stdout.flush().await.is_err()
            {
                return;
            }
        }
    });
    let mut ready = json!({
        "event": "ready",
        "peer_id": served.peer_id().to_string(),
        "diff_key": mb.diff_key().to_string(),
        "database": mb.database().map(|d| d.to_string()).unwrap_or_default(),
        "listen": listen.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
    });
    // Merge rates and what peers hold (for `/_status`), and catch-ups logged as they go.
    let progress = multibee::progress::Progress::start_served(&served);
    let http = match settings.http {
        Some(addr) => {
            let mut api = multibee::http::HttpApi::served(&served)
                .progress(progress.clone())
                .blobs(blobs.clone());
            match http_token(&args.dir, addr, settings.http_token.clone()) {
                Ok(Some((token, from))) => {
                    api = api.token(token);
                    ready["http_token"] = json!(from);
                }
                Ok(None) => {}
                Err(e) => {
                    served.shutdown().await;
                    mb.close().await;
                    return Err(e);
                }
            }
            let requested = api.shutdown_requested();
            let server = multibee::http::serve_http(addr, api)
                .await
                .map_err(|e| format!("cannot serve HTTP on {addr}: {e}"))?;
            ready["http"] = json!(format!("http://{}", server.local_addr()));
            Some((server, requested))
        }
        None => None,
    };
    // Signals are watched before the ready line: a SIGTERM right after it stops the node cleanly.
    let signals = (
        signal(tokio::signal::unix::SignalKind::terminate())?,
        signal(tokio::signal::unix::SignalKind::interrupt())?,
    );
    out.send(ready).await;

    // Fetches referenced blobs by policy, and tells arrivals with their referencing keys.
    let fetcher = match BlobFetcher::start(mb.clone(), served.node(), blobs.clone(), blob_fetch) {
        Ok(fetcher) => fetcher,
        Err(e) => {
            served.shutdown().await;
            mb.close().await;
            return Err(format!("cannot follow the documents' blobs: {e}"));
        }
    };
    let background = [
        tokio::spawn(print_changes(mb.clone(), out.clone())),
        tokio::spawn(print_node_events(served.subscribe(), out.clone())),
        tokio::spawn(print_db_events(mb.events(), out.clone())),
        tokio::spawn(print_blob_arrivals(fetcher.arrivals(), out.clone())),
    ];
    let result = commands(
        &served,
        &blobs,
        &out,
        http.as_ref().map(|(_, r)| r.clone()),
        signals,
    )
    .await;
    tracing::info!("shutting down");
    if let Some((server, _)) = http {
        server.shutdown().await;
    }
    for task in background {
        task.abort();
    }
    served.shutdown().await;
    tracing::debug!("node stopped");
    mb.close().await;
    tracing::debug!("store closed");
    drop(out);
    // The lines still queued go out, unless stdout stays blocked (a pipe nobody reads): the
    // node stops anyway.
    if tokio::time::timeout(STDOUT_GRACE, printer).await.is_err() {
        tracing::warn!("stdout is not being read: the last event lines are dropped");
    }
    result
}

/// How long a stopping node waits for stdout to take its last lines.
const STDOUT_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The longest command line read; a longer one is answered with an error and skipped.
const MAX_LINE: usize = 16 << 20;

/// How much of a bad input an error message quotes.
const QUOTE_CHARS: usize = 64;

/// At most the first [`QUOTE_CHARS`] characters of `input`, marked when cut.
fn quote(input: &str) -> String {
    match input.char_indices().nth(QUOTE_CHARS) {
        Some((end, _)) => format!("{:?}...", &input[..end]),
        None => format!("{input:?}"),
    }
}

/// One line of stdin: a command, or why it cannot be one.
enum Line {
    Text(String),
    Bad(String),
}

/// Reads the next line (without its newline) holding at most [`MAX_LINE`] bytes; `None` at the
/// end of input. A longer line is read to its end and discarded, keeping only a prefix to quote.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<Option<Line>> {
    let mut line = Vec::new();
    let mut overlong = false;
    let mut read_any = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            if !read_any {
                return Ok(None);
            }
            break;
        }
        read_any = true;
        let (chunk, used, end) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        if !overlong && line.len() + chunk.len() > max {
            overlong = true;
        }
        if !overlong {
            line.extend_from_slice(chunk);
        } else if line.len() < 4 * QUOTE_CHARS {
            let room = 4 * QUOTE_CHARS - line.len();
            line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        reader.consume(used);
        if end {
            break;
        }
    }
    let prefix = |bytes: &[u8]| {
        let head = &bytes[..bytes.len().min(4 * QUOTE_CHARS)];
        quote(&String::from_utf8_lossy(head))
    };
    if overlong {
        let error = format!("the line is longer than {max} bytes: {}", prefix(&line));
        return Ok(Some(Line::Bad(error)));
    }
    Ok(Some(match String::from_utf8(line) {
        Ok(text) => Line::Text(text),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let bytes = e.into_bytes();
            Line::Bad(format!(
                "the line is not UTF-8 (byte {at}): {}",
                prefix(&bytes)
            ))
        }
    }))
}

/// Reads commands until `quit`, end of input, SIGINT or SIGTERM; with `http` (the HTTP API's
/// `POST /_shutdown`), until that instead of the end of input.
async fn commands(
    served: &Served,
    blobs: &multibee::blobs::Blobs,
    out: &Out,
    http: Option<std::sync::Arc<tokio::sync::Notify>>,
    (mut term, mut int): (tokio::signal::unix::Signal, tokio::signal::unix::Signal),
) -> Result<(), String> {
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut stdin_open = true;
    let requested = async {
        match &http {
            Some(r) => r.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(requested);
    loop {
        let line = tokio::select! {
            line = read_line(&mut stdin, MAX_LINE), if stdin_open => line.map_err(|e| format!("reading stdin: {e}"))?,
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = &mut requested => return Ok(()),
        };
        let line = match line {
            None => {
                if http.is_some() {
                    stdin_open = false;
                    continue;
                }
                return Ok(());
            }
            Some(Line::Text(line)) => line,
            Some(Line::Bad(error)) => {
                out.send(json!({"ok": false, "error": error})).await;
                continue;
            }
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "quit" {
            out.send(json!({"ok": true})).await;
            return Ok(());
        }
        let answer = match command(served, blobs, line).await {
            Ok(mut fields) => {
                fields.insert("ok".into(), json!(true));
                Json::Object(fields)
            }
            Err(error) => json!({"ok": false, "error": error}),
        };
        out.send(answer).await;
    }
}

fn signal(kind: tokio::signal::unix::SignalKind) -> Result<tokio::signal::unix::Signal, String> {
    tokio::signal::unix::signal(kind).map_err(|e| format!("cannot watch signals: {e}"))
}

type Fields = serde_json::Map<String, Json>;

/// Runs one command line; the fields of its answer, or what was wrong.
async fn command(
    served: &Served,
    blobs: &multibee::blobs::Blobs,
    line: &str,
) -> Result<Fields, String> {
    let mb = served.multibee();
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim();
    let mut fields = Fields::new();
    match verb {
        "put" | "patch" => {
            let usage = format!("usage: {verb} KEY JSON");
            let (key, doc) = rest.split_once(' ').ok_or(usage)?;
            let doc: Json = serde_json::from_str(doc.trim())
                .map_err(|e| format!("the value is not JSON: {e}"))?;
            let written = match verb {
                "put" => mb.put(key, doc).await,
                _ => mb.patch(key, doc).await,
            };
            let version = written.map_err(|e| e.to_string())?;
            fields.insert("version".into(), json!(version));
        }
        "get" => {
            let key = one_arg(rest, "get KEY")?;
            let value = mb.get(key).map_err(|e| e.to_string())?;
            fields.insert(
                "value".into(),
                value
                    .as_ref()
                    .map_or(Json::Null, multibee::http::value_json),
            );
        }
        "del" => {
            let key = one_arg(rest, "del KEY")?;
            let version = mb.del(key).await.map_err(|e| e.to_string())?;
            fields.insert("version".into(), json!(version));
        }
        "list" => {
            let (prefix, limit, start) = list_args(rest)?;
            let mut opts = multibee::db::RangeOptions::all()
                .gte(start.max(prefix))
                .limit(limit + 1);
            if let Some(end) = multibee::db::prefix_end(prefix.as_bytes()) {
                opts = opts.lt(end);
            }
            let mut entries = Vec::new();
            for entry in mb.range(&opts).map_err(|e| e.to_string())? {
                let (key, value) = entry.map_err(|e| e.to_string())?;
                if entries.len() == limit {
                    fields.insert("more".into(), json!(true));
                    fields.insert("next".into(), json!(text(&key)));
                    break;
                }
                entries
                    .push(json!({"key": text(&key), "value": multibee::http::value_json(&value)}));
            }
            fields.entry("more").or_insert(json!(false));
            fields.insert("entries".into(), Json::Array(entries));
        }
        "writer" => {
            let (action, key) = rest.split_once(' ').ok_or("usage: writer add|remove KEY")?;
            let key: FeedKey = key.trim().parse().map_err(|e| format!("bad key: {e}"))?;
            match action {
                "add" => served.add_writer(key).await.map_err(|e| e.to_string())?,
                "remove" => served.remove_writer(key).await.map_err(|e| e.to_string())?,
                other => {
                    return Err(format!(
                        "unknown writer action {}: use add or remove",
                        quote(other)
                    ));
                }
            }
        }
        "invite" => {
            let ticket = served.invite().await.map_err(|e| e.to_string())?;
            fields.insert("ticket".into(), json!(ticket.to_string()));
        }
        "dial" => {
            let addr: Multiaddr = one_arg(rest, "dial ADDR")?
                .parse()
                .map_err(|e| format!("bad multiaddr: {e}"))?;
            let peer = served
                .node()
                .connect(addr, DIAL_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?;
            fields.insert("peer_id".into(), json!(peer.to_string()));
        }
        "conflicts" => {
            let key = one_arg(rest, "conflicts KEY")?;
            let conflicts = mb.conflicts(key).map_err(|e| e.to_string())?;
            let list = conflicts
                .iter()
                .map(|c| json!({"writer": c.writer.to_string(), "ts": c.ts.to_string(), "change": multibee::http::change_json(&c.change)}))
                .collect();
            fields.insert("conflicts".into(), Json::Array(list));
        }
        "history" => {
            let key = one_arg(rest, "history KEY")?;
            let history = mb.history(key).map_err(|e| e.to_string())?;
            let list = history
                .iter()
                .map(|h| json!({"writer": h.writer.to_string(), "ts": h.ts.to_string(), "seq": h.seq, "change": multibee::http::change_json(&h.change)}))
                .collect();
            fields.insert("history".into(), Json::Array(list));
        }
        "status" => {
            let node = served.node();
            let listen = served.listen_addrs().await.map_err(|e| e.to_string())?;
            let peers = node.connected_peers().await.map_err(|e| e.to_string())?;
            let mut feeds = vec![
                json!({"key": mb.diff_key().to_string(), "role": "diff", "length": feed_length(mb, &mb.diff_key())}),
                json!({"key": mb.store_key().to_string(), "role": "store", "length": feed_length(mb, &mb.store_key())}),
            ];
            for w in mb.writers().map_err(|e| e.to_string())? {
                feeds.push(json!({
                    "key": w.key.to_string(),
                    "role": format!("writer ({:?})", w.state).to_lowercase(),
                    "length": w.length,
                    "merged": w.merged,
                    "cut": w.cut,
                    "removed_by": w.removed_by.map(|k| k.to_string()),
                }));
            }
            let hash = mb.state_hash().map_err(|e| e.to_string())?;
            fields.insert("state_hash".into(), json!(hex::encode(hash)));
            if let Some(view) = mb.view() {
                let only: Vec<String> = view
                    .prefixes()
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect();
                fields.insert("only".into(), json!(only));
            }
            fields.insert("peer_id".into(), json!(served.peer_id().to_string()));
            fields.insert("diff_key".into(), json!(mb.diff_key().to_string()));
            fields.insert(
                "listen".into(),
                json!(listen.iter().map(|a| a.to_string()).collect::<Vec<_>>()),
            );
            fields.insert(
                "peers".into(),
                json!(peers.iter().map(|p| p.to_string()).collect::<Vec<_>>()),
            );
            fields.insert("feeds".into(), Json::Array(feeds));
        }
        "blob" => blob_command(served, blobs, rest, &mut fields).await?,
        "index" => query::index_command(mb, rest, &mut fields).await?,
        "query" => query::query_command(mb, rest, &mut fields)?,
        other => return Err(format!("unknown command {}", quote(other))),
    }
    Ok(fields)
}

/// The folder (inside the node's) of its blob store.
const BLOBS_DIR: &str = "blobs";

/// Makes the node's folder, owner-only, if it does not exist yet.
fn private_dir(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.exists() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// `blob add PATH`, `blob get ID PATH`, `blob list [AFTER]`, `blob status ID`, `blob status`
/// (the downloads in progress), `blob fetch ID`, `blob gc` (removes the blobs no document
/// references, except pinned ones, downloads and those added within the last hour).
async fn blob_command(
    served: &Served,
    blobs: &multibee::blobs::Blobs,
    rest: &str,
    fields: &mut Fields,
) -> Result<(), String> {
    use multibee::blobs::BlobId;
    const USAGE: &str = "usage: blob add PATH | blob get ID PATH | blob list [AFTER] | \
                         blob status [ID] | blob fetch ID | blob gc";
    let parse = |id: &str| {
        id.parse::<BlobId>()
            .map_err(|e| format!("bad blob id {}: {e}", quote(id)))
    };
    let (action, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let rest = rest.trim();
    match action {
        "add" => {
            if rest.is_empty() {
                return Err("usage: blob add PATH".into());
            }
            let id = blobs.add_file(rest).await.map_err(|e| e.to_string())?;
            let size = blobs.size(id).await.map_err(|e| e.to_string())?;
            fields.insert("id".into(), json!(id.to_hex()));
            fields.insert("size".into(), json!(size));
        }
        "get" => {
            let (id, path) = rest.split_once(' ').ok_or("usage: blob get ID PATH")?;
            let (id, path) = (parse(id)?, std::path::Path::new(path.trim()));
            // Into a folder: a file named after the id (as `cp` does).
            let path = if path.is_dir() {
                path.join(id.to_hex())
            } else {
                path.to_path_buf()
            };
            let path = path.as_path();
            let size = copy_blob(blobs, id, path).await?;
            fields.insert("id".into(), json!(id.to_hex()));
            fields.insert("size".into(), json!(size));
            fields.insert("path".into(), json!(path.display().to_string()));
        }
        "list" => {
            let after = match rest {
                "" => None,
                id => Some(parse(id)?),
            };
            let ids = blobs
                .list(after, LIST_LIMIT + 1)
                .await
                .map_err(|e| e.to_string())?;
            let mut list = Vec::new();
            for &id in ids.iter().take(LIST_LIMIT) {
                let size = blobs.size(id).await.map_err(|e| e.to_string())?;
                list.push(json!({"id": id.to_hex(), "size": size}));
            }
            fields.insert("more".into(), json!(ids.len() > LIST_LIMIT));
            fields.insert("blobs".into(), Json::Array(list));
        }
        "status" if rest.is_empty() => {
            let downloads = served
                .node()
                .blob_downloads()
                .await
                .map_err(|e| e.to_string())?;
            let list = downloads
                .iter()
                .map(multibee::http::download_json)
                .collect();
            fields.insert("downloads".into(), Json::Array(list));
            // Downloads begun earlier (by this run or another) and not complete: a `blob fetch`
            // resumes each from what it holds.
            let partial = blobs
                .list_partial(None, LIST_LIMIT)
                .await
                .map_err(|e| e.to_string())?;
            let partial = partial
                .iter()
                .map(|(id, s)| {
                    let held: u64 = s.held.iter().map(|r| r.end - r.start).sum();
                    json!({"id": id.to_hex(), "size": s.size, "held_bytes": held})
                })
                .collect();
            fields.insert("partial".into(), Json::Array(partial));
        }
        "status" => {
            let id = parse(one_arg(rest, "blob status [ID]")?)?;
            let status = blobs
                .status(id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("blob {id} not found"))?;
            let held: u64 = status.held.iter().map(|r| r.end - r.start).sum();
            fields.insert("id".into(), json!(id.to_hex()));
            fields.insert("size".into(), json!(status.size));
            fields.insert("complete".into(), json!(status.complete));
            fields.insert("held_bytes".into(), json!(held));
            fields.insert("pinned".into(), json!(status.pinned));
            let media_type = blobs.media_type(id).await.map_err(|e| e.to_string())?;
            fields.insert("type".into(), json!(media_type));
        }
        "fetch" => {
            let id = parse(one_arg(rest, "blob fetch ID")?)?;
            // Said in the error if nobody could serve it.
            let alone = served
                .node()
                .connected_peers()
                .await
                .map_err(|e| e.to_string())?
                .is_empty();
            let outcome = served
                .node()
                .fetch_blob_anywhere(id)
                .await
                .map_err(|e| fetch_error(id, e, alone))?;
            fields.insert("id".into(), json!(id.to_hex()));
            fields.insert("size".into(), json!(outcome.size));
            fields.insert("fetched_bytes".into(), json!(outcome.bytes_fetched));
        }
        "gc" => {
            if !rest.is_empty() {
                return Err(USAGE.into());
            }
            let referenced = multibee::attachments::referenced_blobs(served.multibee())
                .map_err(|e| e.to_string())?;
            let done = blobs
                .collect(referenced, multibee::blobs::DEFAULT_GRACE)
                .await
                .map_err(|e| e.to_string())?;
            for id in &done.removed {
                // No longer held: no longer announced in the DHT.
                let _ = served.node().stop_providing_blob(*id).await;
            }
            let removed: Vec<String> = done.removed.iter().map(|id| id.to_hex()).collect();
            fields.insert("removed".into(), json!(removed));
            fields.insert("removed_bytes".into(), json!(done.removed_bytes));
        }
        "" => return Err(USAGE.into()),
        other => return Err(format!("unknown blob action {}: {USAGE}", quote(other))),
    }
    Ok(())
}

/// What a failed `blob fetch` of `id` answers (`alone`: no peer was connected): the fetch's
/// error, said for a user (a blob nobody holds is not "0 bytes missing").
fn fetch_error(id: multibee::blobs::BlobId, e: multibee::net::FetchError, alone: bool) -> String {
    match e {
        multibee::net::FetchError::Incomplete { missing: 0, .. } if alone => format!(
            "blob {id} is not held here, no peer is connected to fetch it from, and the DHT \
             found no provider of it (dial a peer that holds it first)"
        ),
        multibee::net::FetchError::Incomplete { missing: 0, .. } => {
            format!("no connected peer holds blob {id}, nor any provider found in the DHT")
        }
        multibee::net::FetchError::Incomplete { missing, .. } => format!(
            "no peer found could serve the rest of blob {id} ({missing} bytes missing; what \
             arrived is kept, and a later fetch resumes from it)"
        ),
        other => other.to_string(),
    }
}

/// Writes the held, complete blob `id` to `path` (through a temporary file beside it, renamed
/// into place once whole, and removed if anything fails); its size.
async fn copy_blob(
    blobs: &multibee::blobs::Blobs,
    id: multibee::blobs::BlobId,
    path: &std::path::Path,
) -> Result<u64, String> {
    let mut reader = blobs.reader(id).await.map_err(|e| match e {
        multibee::blobs::Error::NotFound(_) => {
            format!("{e} (`blob fetch {id}` gets it from the connected peers)")
        }
        multibee::blobs::Error::Incomplete(_) => {
            format!("{e}: `blob fetch {id}` resumes its download")
        }
        e => e.to_string(),
    })?;
    let temp = path.with_file_name(format!(
        ".{}.part",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| id.to_hex())
    ));
    let failed = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut file = tokio::fs::File::create(&temp).await.map_err(failed)?;
    let copied = tokio::io::copy(&mut reader, &mut file).await;
    let done = match copied {
        Ok(n) => file.sync_all().await.map(|()| n),
        Err(e) => Err(e),
    };
    drop(file);
    let done = match done {
        Ok(n) => tokio::fs::rename(&temp, path).await.map(|()| n),
        Err(e) => Err(e),
    };
    if done.is_err() {
        let _ = tokio::fs::remove_file(&temp).await;
    }
    done.map_err(failed)
}

/// How many entries `list` answers unless `--limit` says.
const LIST_LIMIT: usize = 1000;

/// `[PREFIX] [--limit N] [--start KEY]`: the prefix, the limit and the first key.
fn list_args(rest: &str) -> Result<(&str, usize, &str), String> {
    let usage = "usage: list [PREFIX] [--limit N] [--start KEY]";
    let (mut prefix, mut limit, mut start) = (None, LIST_LIMIT, "");
    let mut words = rest.split_whitespace();
    while let Some(word) = words.next() {
        match word {
            "--limit" => {
                limit = words
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n: &usize| n > 0)
                    .ok_or(format!("--limit takes a number above 0; {usage}"))?;
            }
            "--start" => start = words.next().ok_or(usage)?,
            _ if prefix.is_none() && !word.starts_with("--") => prefix = Some(word),
            _ => return Err(format!("unexpected {}; {usage}", quote(word))),
        }
    }
    Ok((prefix.unwrap_or(""), limit, start))
}

fn one_arg<'a>(rest: &'a str, usage: &str) -> Result<&'a str, String> {
    if rest.is_empty() || rest.contains(' ') {
        return Err(format!("usage: {usage}"));
    }
    Ok(rest)
}

fn feed_length(mb: &MultiBee, key: &FeedKey) -> u64 {
    mb.feed_store().feed(key).map_or(0, |f| f.length())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Prints every change to the merged store as an event line.
async fn print_changes(mb: MultiBee, out: Out) {
    let since = mb.version().unwrap_or(0);
    let Ok(mut changes) = mb.changes(ChangesOptions {
        since,
        live: true,
        ..ChangesOptions::default()
    }) else {
        return;
    };
    while let Some(change) = changes.next().await {
        match change {
            Ok(c) => {
                let value = c
                    .value
                    .as_ref()
                    .map_or(Json::Null, multibee::http::value_json);
                out.send(
                    json!({"event": "change", "seq": c.seq, "key": text(&c.key), "value": value}),
                )
                .await;
            }
            Err(e) => tracing::warn!(error = %e, "changes stream"),
        }
    }
}

/// The least a blob download advances between two of its `blob_progress` lines: 1% of its
/// size, and at least this (so a download prints at most 100 lines).
const PROGRESS_STEP: u64 = 4 << 20;

/// Prints peers connecting, disconnecting and rejected, blob downloads progressing
/// (`blob_progress`, rate-limited) and peers rejected by one; logs replication progress to
/// stderr.
async fn print_node_events(mut events: tokio::sync::broadcast::Receiver<NetEvent>, out: Out) {
    let mut last_progress = Instant::now();
    // The bytes held each download's last line reported.
    let mut blob_lines: std::collections::HashMap<multibee::blobs::BlobId, u64> =
        std::collections::HashMap::new();
    let terminal = std::io::stderr().is_terminal();
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::debug!(missed = n, "node events lagged");
                continue;
            }
            Err(_) => return,
        };
        match event {
            NetEvent::PeerConnected { peer, address } => {
                out.send(json!({"event": "peer_connected", "peer_id": peer.to_string(), "address": address.to_string()}))
                    .await
            }
            NetEvent::PeerDisconnected { peer } => {
                out.send(json!({"event": "peer_disconnected", "peer_id": peer.to_string()})).await
            }
            NetEvent::PeerRejected { peer, reason } => {
                out.send(json!({"event": "peer_rejected", "peer_id": peer.to_string(), "reason": reason.to_string()}))
                    .await
            }
            NetEvent::DialFailed {
                peer,
                address,
                reason,
            } => {
                out.send(json!({
                    "event": "dial_failed",
                    "peer_id": peer.map(|p| p.to_string()),
                    "address": address.map(|a| a.to_string()),
                    "reason": reason,
                }))
                .await
            }
            NetEvent::MdnsFoundNothing { tried } => {
                out.send(json!({"event": "mdns_found_nothing", "tried": tried}))
                    .await
            }
            NetEvent::BlobProgress {
                id,
                peer,
                held_bytes,
                size,
            } => {
                if held_bytes >= size {
                    // Complete: `blob_arrived` says so.
                    blob_lines.remove(&id);
                    continue;
                }
                let last = blob_lines.get(&id).copied().unwrap_or(0);
                if held_bytes < last.saturating_add(PROGRESS_STEP.max(size / 100)) {
                    continue;
                }
                blob_lines.insert(id, held_bytes);
                out.send(json!({
                    "event": "blob_progress",
                    "id": id.to_hex(),
                    "peer_id": peer.to_string(),
                    "held_bytes": held_bytes,
                    "size": size,
                }))
                .await
            }
            NetEvent::BlobPeerRejected { peer, id, reason } => {
                out.send(json!({
                    "event": "blob_peer_rejected",
                    "id": id.to_hex(),
                    "peer_id": peer.to_string(),
                    "reason": reason,
                }))
                .await
            }
            NetEvent::FeedProgressed { key, length, peer } if terminal => {
                // A one-line progress display, rewritten in place.
                let short = &key.to_string()[..12];
                eprint!("\rreplicating {short}..: {length} entries from {peer}\x1b[K");
            }
            NetEvent::FeedProgressed { key, length, peer }
                if last_progress.elapsed() >= Duration::from_secs(1) =>
            {
                last_progress = Instant::now();
                tracing::info!(feed = %key, length, %peer, "replicating");
            }
            _ => {}
        }
    }
}

/// Prints what merging reports (future timestamps, invalid diffs, frozen writers).
/// `{"event":"blob_arrived","id","size","keys"}` for every blob that becomes complete in the
/// store, with the keys of the documents that reference it.
async fn print_blob_arrivals(
    mut arrivals: tokio::sync::broadcast::Receiver<multibee::blob_sync::BlobArrival>,
    out: Out,
) {
    loop {
        match arrivals.recv().await {
            Ok(a) => {
                let keys: Vec<String> = a
                    .keys
                    .iter()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .collect();
                let line = json!({"event": "blob_arrived", "id": a.id.to_hex(), "size": a.size, "keys": keys});
                out.send(line).await
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "blob arrival lines were dropped");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn print_db_events(mut events: tokio::sync::broadcast::Receiver<DbEvent>, out: Out) {
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "merge reports were dropped");
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let line = match event {
            DbEvent::FutureTimestamp {
                writer,
                ts,
                local_ms,
            } => {
                json!({"event": "future_timestamp", "writer": writer.to_string(), "ts": ts.to_string(), "local_ms": local_ms})
            }
            DbEvent::InvalidDiff {
                writer,
                seq,
                reason,
            } => {
                json!({"event": "invalid_diff", "writer": writer.to_string(), "seq": seq, "reason": reason})
            }
            DbEvent::WriterFrozen { writer } => {
                json!({"event": "writer_frozen", "writer": writer.to_string()})
            }
            DbEvent::Merged { writer, merged } => {
                json!({"event": "merged", "writer": writer.to_string(), "merged": merged})
            }
            // Writers added and removed: the `writer` command answers those.
            _ => continue,
        };
        out.send(line).await;
    }
}
