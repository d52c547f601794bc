//! Helpers shared by the tests: served peers in temporary folders and waits with generous
//! timeouts (every wait is on an event or a subscription, never a sleep).

use std::fmt::Display;
use std::future::Future;
use std::panic::Location;
use std::time::Duration;

use multibee::{
    ChangesOptions, Config, FeedKey, MultiBee, Multiaddr, Options, PeerId, Served, SyncMode, Value,
    net,
};
use tempfile::TempDir;
use tokio::sync::broadcast;

/// How long any wait may take before the test fails (generous: 2-core CI under load).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Runs `f`, failing the test with `what` it waited for if it takes longer than [`PATIENCE`].
pub async fn waiting<T>(what: impl Display, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, f).await {
        Ok(done) => done,
        Err(_) => panic!("timed out after {PATIENCE:?} waiting for {what}"),
    }
}

/// [`waiting`] for the wait at the caller's line.
#[track_caller]
pub fn within<T>(f: impl Future<Output = T>) -> impl Future<Output = T> {
    let at = Location::caller();
    waiting(format!("the wait at {at}"), f)
}

/// A short name for a feed key in messages.
pub fn short(key: &FeedKey) -> String {
    key.to_string()[..8].to_string()
}

/// Loopback nodes: 127.0.0.1, ports from the OS, mDNS and the DHT off, so that peers connect
/// only when a test dials (a partition stays one).
pub fn config() -> Config {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Config::loopback().kademlia(false)
}

/// A served multibee peer in its own temporary folder.
pub struct Peer {
    pub dir: TempDir,
    pub mb: MultiBee,
    pub served: Served,
}

impl Peer {
    pub async fn start() -> Peer {
        Peer::start_in(tempfile::tempdir().unwrap()).await
    }

    /// Opens the peer in `dir` (again, after [`Peer::stop`]) and serves it.
    pub async fn start_in(dir: TempDir) -> Peer {
        let mb = open(&dir).await;
        let served = multibee::serve(&mb, config()).await.unwrap();
        Peer { dir, mb, served }
    }

    /// Stops the node and closes the peer, keeping the folder.
    pub async fn stop(self) -> TempDir {
        let name = short(&self.key());
        waiting(format!("{name} to shut down"), async {
            self.served.shutdown().await;
            close(self.mb).await;
        })
        .await;
        self.dir
    }

    pub fn key(&self) -> FeedKey {
        self.mb.diff_key()
    }

    pub fn peer_id(&self) -> PeerId {
        self.served.peer_id()
    }

    /// The node's TCP address.
    pub async fn addr(&self) -> Multiaddr {
        let addrs = self.served.listen_addrs().await.unwrap();
        addrs
            .into_iter()
            .find(|a| a.to_string().contains("/tcp/"))
            .expect("a TCP listen address")
    }

    /// Dials `other` and waits until both see the connection.
    pub async fn connect(&self, other: &Peer) {
        let mut mine = self.served.subscribe();
        let mut theirs = other.served.subscribe();
        self.served.dial(other.addr().await).await.unwrap();
        let (me, them) = (self.peer_id(), other.peer_id());
        wait_event(
            &mut mine,
            format!("{me} to see {them} connected"),
            |e| matches!(e, net::Event::PeerConnected { peer, .. } if *peer == them),
        )
        .await;
        wait_event(
            &mut theirs,
            format!("{them} to see {me} connected"),
            |e| matches!(e, net::Event::PeerConnected { peer, .. } if *peer == me),
        )
        .await;
    }

    /// Closes the connections between this peer and `other` and waits until both see it.
    pub async fn disconnect(&self, other: &Peer) {
        let mut mine = self.served.subscribe();
        let mut theirs = other.served.subscribe();
        let (me, them) = (self.peer_id(), other.peer_id());
        assert!(self.served.disconnect(them).await.unwrap());
        wait_event(
            &mut mine,
            format!("{me} to see {them} disconnected"),
            |e| matches!(e, net::Event::PeerDisconnected { peer } if *peer == them),
        )
        .await;
        wait_event(
            &mut theirs,
            format!("{them} to see {me} disconnected"),
            |e| matches!(e, net::Event::PeerDisconnected { peer } if *peer == me),
        )
        .await;
    }

    /// How many entries of the writer `key`'s diff feed this peer has merged (and holds).
    pub fn merged(&self, key: FeedKey) -> (u64, u64) {
        let w = self
            .mb
            .writers()
            .unwrap()
            .into_iter()
            .find(|w| w.key == key)
            .expect("a known writer");
        (w.merged, w.length)
    }

    /// The length of this peer's own diff feed.
    pub fn own_length(&self) -> u64 {
        self.mb.feed_store().feed(&self.key()).unwrap().length()
    }

    /// Waits until this peer has merged every diff the `others` have written so far.
    pub async fn wait_merged(&self, others: &[&Peer]) {
        let targets: Vec<(FeedKey, u64)> =
            others.iter().map(|o| (o.key(), o.own_length())).collect();
        wait_merged(&self.mb, &targets).await;
    }
}

/// Opens a multibee peer in `dir` (relaxed syncing: the tests do not crash the machine).
pub async fn open(dir: &TempDir) -> MultiBee {
    MultiBee::open_with(dir.path(), Options::default().sync(SyncMode::Relaxed))
        .await
        .unwrap()
}

/// Closes `mb` and waits until its folder is released. `MultiBee::close` aborts a background
/// merge without waiting for the write it queued, whose job holds a handle to the store: a
/// no-op write queued after it returns once that job finished and dropped its handle.
pub async fn close(mb: MultiBee) {
    let store = mb.feed_store().clone();
    mb.close().await;
    store
        .write(|_| Ok::<_, multibee::feed::Error>(()))
        .await
        .unwrap();
}

/// Waits until `mb` has merged at least `length` entries of each writer's diff feed.
pub async fn wait_merged(mb: &MultiBee, targets: &[(FeedKey, u64)]) {
    let mut events = mb.events();
    let wanted: Vec<String> = targets
        .iter()
        .map(|(key, length)| format!("{}: {length}", short(key)))
        .collect();
    let what = format!("{} to merge {wanted:?}", short(&mb.diff_key()));
    waiting(what, async {
        loop {
            let writers = mb.writers().unwrap();
            let done = targets
                .iter()
                .all(|(key, length)| writers.iter().any(|w| w.key == *key && w.merged >= *length));
            if done {
                return;
            }
            match events.recv().await {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("the peer closed"),
            }
        }
    })
    .await
}

/// Waits on `mb`'s live changes stream (from the start) for a change of `key` to `value`.
pub async fn wait_change(mb: &MultiBee, key: &str, value: &Value) {
    let mut changes = mb
        .changes(ChangesOptions {
            live: true,
            ..Default::default()
        })
        .unwrap();
    let what = format!(
        "{key} = {value:?} in the changes of {}",
        short(&mb.diff_key())
    );
    waiting(what, async {
        loop {
            let change = changes.next().await.expect("a live stream").unwrap();
            if change.key == key.as_bytes() && change.value.as_ref() == Some(value) {
                return;
            }
        }
    })
    .await
}

/// Waits for a node event matching `pred` (`what`, for the message if it never comes).
pub async fn wait_event(
    events: &mut broadcast::Receiver<net::Event>,
    what: impl Display,
    pred: impl Fn(&net::Event) -> bool,
) {
    waiting(what, async {
        loop {
            match events.recv().await {
                Ok(event) if pred(&event) => return,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("the node stopped"),
            }
        }
    })
    .await
}

/// A JSON value.
pub fn json(v: serde_json::Value) -> Value {
    Value::Json(v)
}

/// Every key of the merged store.
pub fn keys(mb: &MultiBee) -> Vec<String> {
    mb.list(b"")
        .unwrap()
        .map(|e| String::from_utf8(e.unwrap().0).unwrap())
        .collect()
}

/// A new peer in `dir` that joined `inviter`'s database with one of its tickets (loopback).
pub async fn join_through(inviter: &multibee::Served, dir: &std::path::Path) -> multibee::Served {
    let ticket = inviter.invite().await.unwrap();
    let config = multibee::Config::loopback();
    within(multibee::join(
        dir,
        &ticket,
        multibee::Options::default(),
        config,
    ))
    .await
    .unwrap()
}

/// One HTTP/1.1 request with extra headers (`Name: value`) on a fresh connection; the status
/// and the JSON answer (`null` when the body is not JSON).
pub async fn http_with_headers(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[String],
    body: &str,
) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = within(tokio::net::TcpStream::connect(addr)).await.unwrap();
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    within(stream.read_to_end(&mut response)).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// The body of a chunked HTTP/1.1 response.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// `api` served on a loopback port the OS chooses; the server and its `host:port`.
pub async fn serve_on_loopback(
    api: multibee::http::HttpApi,
) -> (multibee::http::HttpServer, String) {
    let server = multibee::http::serve_http("127.0.0.1:0".parse().unwrap(), api)
        .await
        .unwrap();
    let addr = server.local_addr().to_string();
    (server, addr)
}
