//! An HTTP/JSON API over a [`MultiBee`] (see [`router`] and [`serve_http`]).
//!
//! - `GET /`: the peer (peer id, diff key, database, listen addresses, version, state hash).
//! - `PUT /docs/{key}` (a whole JSON document), `PATCH /docs/{key}` (a JSON merge patch),
//!   `DELETE /docs/{key}`, `GET /docs/{key}` (`{"key":..,"doc":..}`, 404 when absent). A key
//!   is any UTF-8 string, percent-encoded in the path (`/` included).
//! - `GET /docs?prefix=&start=&limit=&reverse=`: keys in order, a page at a time
//!   (`{"docs":[{"key":..,"doc":..}],"next":KEY|null}`; `next` is the `start` of the next page).
//! - `POST /docs/_bulk` with `{"ops":[{"put":"k","doc":..}|{"patch":"k","doc":..}|{"delete":"k"}]}`:
//!   one atomic [`MultiBee::batch`].
//! - `GET /_changes?since=SEQ&feed=normal|longpoll&prefix=&limit=&include_docs=&timeout=MS`:
//!   `{"results":[{"seq":N,"key":..,"deleted":bool,"doc":..}],"last_seq":N}`. A change's
//!   `seq` is the store's version once it was made ([`MultiBee::version`], so 1 for the first
//!   change); `since` is exclusive: resume with the `last_seq` of the previous answer, or
//!   start with the `version` of `GET /` for changes from now on. `longpoll` waits (at most
//!   `timeout` ms) for a change when there is none yet. `feed=continuous|eventsource` streams
//!   the changes (JSON lines or Server-Sent Events) with `heartbeat=MS`: see `changes.rs`.
//!
//! Errors answer `{"error":"<kind>","reason":"<text>"}` with a fitting status.

mod changes;
mod docs;
mod error;
mod stall;

pub use changes::{
    CHUNK_BYTES, CHUNKS_BUFFERED, DEFAULT_HEARTBEAT_MS, DEFAULT_TOO_SLOW, MAX_HEARTBEAT_MS,
    MIN_HEARTBEAT_MS,
};

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use multibee_net::NodeHandle;
use serde_json::json;
use tokio::sync::{Notify, oneshot};

use crate::MultiBee;
use error::{ApiError, ApiResult, ok};

/// The largest request body accepted by default (1 MiB).
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;
/// How many entries a page of `GET /docs` or `GET /_changes` holds unless `limit` says.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest `limit` accepted.
pub const MAX_LIMIT: usize = 1000;
/// How long a `longpoll` waits unless `timeout` says (ms).
pub const DEFAULT_LONGPOLL_MS: u64 = 30_000;
/// The longest `timeout` accepted for a `longpoll` (ms).
pub const MAX_LONGPOLL_MS: u64 = 120_000;

/// What the HTTP API serves: a [`MultiBee`], and the node serving it if any.
#[derive(Clone, Debug)]
pub struct HttpApi {
    mb: MultiBee,
    node: Option<NodeHandle>,
    body_limit: usize,
    shutdown: Arc<Notify>,
    streams: changes::Streams,
}

impl HttpApi {
    /// The API of `mb` alone (`GET /` then shows no peer id nor addresses).
    pub fn new(mb: MultiBee) -> Self {
        HttpApi {
            mb,
            node: None,
            body_limit: DEFAULT_BODY_LIMIT,
            shutdown: Arc::new(Notify::new()),
            streams: changes::Streams::default(),
        }
    }

    /// The API of a served [`MultiBee`]: `GET /` shows the node's peer id and addresses.
    pub fn served(served: &crate::Served) -> Self {
        HttpApi {
            node: Some(served.node()),
            ..HttpApi::new(served.multibee().clone())
        }
    }

    /// Sets the largest request body accepted (larger ones answer 413).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Notified by `POST /_shutdown`.
    pub fn shutdown_requested(&self) -> Arc<Notify> {
        self.shutdown.clone()
    }
}

/// The HTTP API's routes.
pub fn router(api: HttpApi) -> Router {
    let limit = api.body_limit;
    Router::new()
        .route("/", get(docs::info))
        .route("/docs", get(docs::range))
        .route("/docs/_bulk", post(docs::bulk))
        .route(
            "/docs/{*key}",
            get(docs::get_doc)
                .put(docs::put_doc)
                .patch(docs::patch_doc)
                .delete(docs::del_doc),
        )
        .route("/_changes", get(changes::changes))
        .route("/_shutdown", post(shutdown))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(api)
}

/// A running HTTP server (see [`serve_http`]).
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    streams: changes::Streams,
}

impl HttpServer {
    /// The address it listens on (with the port the OS chose).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections, ends `_changes` streams and long polls, and waits until
    /// the open connections are answered.
    pub async fn shutdown(mut self) {
        self.streams.close();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Serves `api` over HTTP on `addr` (port 0: one the OS chooses) until
/// [`HttpServer::shutdown`]. Must be called within a tokio runtime.
pub async fn serve_http(addr: SocketAddr, api: HttpApi) -> std::io::Result<HttpServer> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let streams = api.streams.clone();
    let listener = stall::StallListener::new(listener, streams.stall_after());
    let app = router(api);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stopped.await;
        });
        if let Err(e) = served.await {
            tracing::warn!(error = %e, "the HTTP server failed");
        }
    });
    Ok(HttpServer {
        addr,
        stop: Some(stop),
        task,
        streams,
    })
}

async fn shutdown(State(api): State<HttpApi>) -> ApiResult {
    api.shutdown.notify_waiters();
    api.shutdown.notify_one();
    ok(json!({"ok": true}))
}
