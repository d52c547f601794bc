//! An HTTP/JSON API over a [`MultiBee`] (see [`router`] and [`serve_http`]).
//!
//! - `GET /`: the peer (peer id, diff key, database, listen addresses, version, state hash).
//! - `PUT /docs/{key}` (a whole JSON document), `PATCH /docs/{key}` (a JSON merge patch),
//!   `DELETE /docs/{key}`, `GET /docs/{key}` (`{"key":..,"rev":..,"doc":..}`, 404 when
//!   absent). A key is any UTF-8 string, percent-encoded in the path (`/` included). Every
//!   document answer carries the key's revision as `ETag`; a write with `If-Match: "REV"`
//!   (or `*`: the document exists) or `If-None-Match: *` (it does not) answers 412 and writes
//!   nothing when the key is not so ([`MultiBee::batch_if`]). A `GET` with
//!   `If-None-Match: "REV"` answers 304 while the document is at that revision.
//! - `GET /docs/{key}/_history` (every counted diff of the key, oldest first) and
//!   `GET /docs/{key}/_conflicts` (the concurrent writes that lost). A key that itself ends in
//!   `/_history` or `/_conflicts` is addressed with that `/` encoded as `%2F`.
//! - `GET /docs?prefix=&start=&end=&limit=&reverse=&include_docs=`: keys in order, a page at a
//!   time (`{"docs":[{"key":..,"rev":..,"doc":..}],"next":KEY|null}`; `next` is the `start`
//!   of the next page; `end` is exclusive).
//! - `POST /docs/_bulk` with `{"ops":[{"put":"k","doc":..}|{"patch":"k","doc":..}|{"delete":"k"}]}`
//!   (each op may add `"if_match":"REV"|"*"` or `"if_none_match":"*"`): one atomic
//!   [`MultiBee::batch_if`].
//! - `GET /_changes?since=SEQ&feed=normal|longpoll&prefix=&limit=&include_docs=&timeout=MS`:
//!   `{"results":[{"seq":N,"key":..,"deleted":bool,"doc":..}],"last_seq":N}`. A change's
//!   `seq` is the store's version once it was made ([`MultiBee::version`], so 1 for the first
//!   change); `since` is exclusive: resume with the `last_seq` of the previous answer, or
//!   start with the `version` of `GET /` for changes from now on. `longpoll` waits (at most
//!   `timeout` ms) for a change when there is none yet. `feed=continuous|eventsource` streams
//!   the changes (JSON lines or Server-Sent Events) with `heartbeat=MS`: see `changes.rs`.
//! - `GET /_writers`, `POST /_writers` with `{"key":"<hex diff key>"}`,
//!   `DELETE /_writers/{key}[?expel=true]`: the membership.
//! - `GET /_peers`: the connected peers. `GET /_status`: per writer the entries held, merged,
//!   behind and the merge rate. `GET /_metrics`: Prometheus (OpenMetrics) text.
//! - `PUT /blobs`, `GET`/`HEAD`/`DELETE /blobs/{id}`, `GET /blobs`, `POST /blobs/_gc` and
//!   `GET /blobs/_downloads` (the downloads in progress): see `blobs.rs`.
//! - `GET /_ui`: a small page for people. `POST /_shutdown`: asks the server's owner to stop.
//!
//! With a token ([`HttpApi::token`]) every request needs `Authorization: Bearer <token>`
//! (401 without); [`serve_http`] refuses to listen on an address other than loopback without
//! one. Bodies are limited ([`HttpApi::body_limit`], 413 beyond). Errors answer
//! `{"error":"<kind>","reason":"<text>"}` with a fitting status.

mod admin;
mod auth;
mod blobs;
mod changes;
mod docs;
mod error;
mod query;
mod stall;

pub use changes::{
    CHUNK_BYTES, CHUNKS_BUFFERED, DEFAULT_HEARTBEAT_MS, DEFAULT_TOO_SLOW, MAX_HEARTBEAT_MS,
    MIN_HEARTBEAT_MS,
};

pub use blobs::download_json;
pub use docs::{change_json, value_json};
pub use query::index_json;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use multibee_net::NodeHandle;
use tokio::sync::{Notify, oneshot};

use crate::MultiBee;
use crate::progress::Progress;
use auth::Requests;
use error::ApiError;

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
    token: Option<Arc<str>>,
    progress: Option<Progress>,
    requests: Requests,
    streams: changes::Streams,
    blobs: Option<multibee_blobs::Blobs>,
}

impl HttpApi {
    /// The API of `mb` alone (`GET /` then shows no peer id nor addresses).
    pub fn new(mb: MultiBee) -> Self {
        HttpApi {
            mb,
            node: None,
            body_limit: DEFAULT_BODY_LIMIT,
            shutdown: Arc::new(Notify::new()),
            token: None,
            progress: None,
            requests: Requests::default(),
            streams: changes::Streams::default(),
            blobs: None,
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

    /// Requires `Authorization: Bearer <token>` on every request (401 without it).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into().into());
        self
    }

    /// Shows merge rates in `GET /_status` from `progress` ([`serve_http`] starts one if none
    /// was given).
    pub fn progress(mut self, progress: Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Serves `blobs` under `/blobs` (without one, those routes answer 404).
    pub fn blobs(mut self, blobs: multibee_blobs::Blobs) -> Self {
        self.blobs = Some(blobs);
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
        .route("/", get(admin::info))
        .route("/docs", get(docs::range))
        .route("/docs/_bulk", post(docs::bulk))
        .route(
            "/docs/{*key}",
            get(docs::get_doc)
                .put(docs::put_doc)
                .patch(docs::patch_doc)
                .delete(docs::del_doc),
        )
        // An upload streams into the blob store: the body limit (of the JSON routes) does
        // not apply to it.
        .route("/blobs", get(blobs::list).put(blobs::put))
        .route("/blobs/_gc", post(blobs::gc))
        .route("/blobs/_downloads", get(blobs::downloads))
        .route("/blobs/{id}", get(blobs::get).delete(blobs::delete))
        .route("/_changes", get(changes::changes))
        .route("/_query", get(query::get).post(query::post))
        .route("/_index", get(query::list).post(query::add))
        .route("/_index/{id}", delete(query::delete))
        .route("/_writers", get(admin::writers).post(admin::add_writer))
        .route("/_writers/{key}", delete(admin::remove_writer))
        .route("/_peers", get(admin::peers).post(admin::dial))
        .route("/_status", get(admin::status))
        .route("/_metrics", get(admin::metrics))
        .route("/_ui", get(ui))
        .route("/_shutdown", post(admin::shutdown))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            auth::check,
        ))
        .with_state(api)
}

/// `GET /_ui`: the page for people (self-contained: no external assets).
async fn ui() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("ui.html"))
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
pub async fn serve_http(addr: SocketAddr, mut api: HttpApi) -> std::io::Result<HttpServer> {
    if !addr.ip().is_loopback() && api.token.is_none() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "refusing to serve HTTP on {addr} without a token: only loopback may go without"
            ),
        ));
    }
    if api.progress.is_none() {
        api.progress = Some(Progress::follow(&api.mb, api.node.clone()));
    }
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
