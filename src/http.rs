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
//!   `timeout` ms) for a change when there is none yet.
//!
//! Errors answer `{"error":"<kind>","reason":"<text>"}` with a fitting status.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use multibee_bee::RangeOptions;
use multibee_net::NodeHandle;
use serde::Deserialize;
use serde_json::{Value as Json, json};
use tokio::sync::{Notify, oneshot};

use crate::{BatchOp, ChangesOptions, MultiBee, Value};

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
}

impl HttpApi {
    /// The API of `mb` alone (`GET /` then shows no peer id nor addresses).
    pub fn new(mb: MultiBee) -> Self {
        HttpApi {
            mb,
            node: None,
            body_limit: DEFAULT_BODY_LIMIT,
            shutdown: Arc::new(Notify::new()),
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
        .route("/", get(info))
        .route("/docs", get(range))
        .route("/docs/_bulk", post(bulk))
        .route(
            "/docs/{*key}",
            get(get_doc).put(put_doc).patch(patch_doc).delete(del_doc),
        )
        .route("/_changes", get(changes))
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
}

impl HttpServer {
    /// The address it listens on (with the port the OS chose).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections and waits until the open ones are answered.
    pub async fn shutdown(mut self) {
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
    })
}

/// An error answer: `{"error":kind,"reason":text}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    reason: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, reason: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            reason: reason.into(),
        }
    }

    fn bad_request(reason: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", reason)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.kind, "reason": self.reason});
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<crate::db::Error> for ApiError {
    fn from(e: crate::db::Error) -> Self {
        use crate::db::Error as E;
        let (status, kind) = match &e {
            E::InvalidArgument(_) | E::TooDeep { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
            E::Removed { .. } | E::NotAMember(_) => (StatusCode::FORBIDDEN, "forbidden"),
            E::ClockExhausted { .. } => (StatusCode::CONFLICT, "conflict"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "storage"),
        };
        ApiError::new(status, kind, e.to_string())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request(format!("bad key: {}", r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request(format!("bad parameters: {}", r.body_text()))
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        let status = r.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(status, "too_large", r.body_text())
        } else {
            ApiError::bad_request(r.body_text())
        }
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok(body: Json) -> ApiResult {
    Ok(axum::Json(body).into_response())
}

/// The JSON of a stored value (opaque bytes as `{"bytes_hex":..}`).
fn doc_json(value: &Value) -> Json {
    match value {
        Value::Json(j) => j.clone(),
        Value::Bytes(b) => json!({"bytes_hex": hex::encode(b)}),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn parse_json(body: &[u8]) -> Result<Json, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

async fn info(State(api): State<HttpApi>) -> ApiResult {
    let mb = &api.mb;
    let (peer_id, listen) = match &api.node {
        Some(node) => {
            let listen = node.listen_addrs().await.unwrap_or_default();
            (
                Json::String(node.peer_id().to_string()),
                listen.iter().map(|a| json!(a.to_string())).collect(),
            )
        }
        None => (Json::Null, Vec::new()),
    };
    ok(json!({
        "peer_id": peer_id,
        "diff_key": mb.diff_key().to_string(),
        "database": mb.database().map(|d| d.to_string()).ok(),
        "listen": listen,
        "version": mb.version()?,
        "state_hash": hex::encode(mb.state_hash()?),
    }))
}

async fn get_doc(
    State(api): State<HttpApi>,
    key: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let Path(key) = key?;
    match api.mb.get(&key)? {
        Some(value) => ok(json!({"key": key, "doc": doc_json(&value)})),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no document {key:?}"),
        )),
    }
}

async fn put_doc(
    State(api): State<HttpApi>,
    key: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let Path(key) = key?;
    let doc = parse_json(&body?)?;
    let version = api.mb.put(&key, doc).await?;
    ok(json!({"ok": true, "key": key, "version": version}))
}

async fn patch_doc(
    State(api): State<HttpApi>,
    key: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let Path(key) = key?;
    let patch = parse_json(&body?)?;
    let version = api.mb.patch(&key, patch).await?;
    ok(json!({"ok": true, "key": key, "version": version}))
}

async fn del_doc(
    State(api): State<HttpApi>,
    key: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let Path(key) = key?;
    let version = api.mb.del(&key).await?;
    ok(json!({"ok": true, "key": key, "version": version}))
}

async fn shutdown(State(api): State<HttpApi>) -> ApiResult {
    api.shutdown.notify_waiters();
    api.shutdown.notify_one();
    ok(json!({"ok": true}))
}

/// The parameters of `GET /docs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeParams {
    prefix: Option<String>,
    start: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    reverse: bool,
}

fn check_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "limit {n} is out of range: 1 to {MAX_LIMIT}"
        ))),
    }
}

async fn range(
    State(api): State<HttpApi>,
    params: Result<Query<RangeParams>, QueryRejection>,
) -> ApiResult {
    let Query(params) = params?;
    let limit = check_limit(params.limit)?;
    let prefix = params.prefix.unwrap_or_default().into_bytes();
    let end = multibee_multibee::prefix_end(&prefix);
    let start = params.start.map(String::into_bytes);
    let mut opts = RangeOptions {
        reverse: params.reverse,
        limit: Some(limit + 1),
        ..RangeOptions::default()
    };
    let empty = || ok(json!({"docs": [], "next": null}));
    if params.reverse {
        opts.gte = Some(prefix.clone());
        match (start, end) {
            (Some(s), _) if s < prefix => return empty(),
            (Some(s), Some(e)) if s >= e => opts.lt = Some(e),
            (Some(s), _) => opts.lte = Some(s),
            (None, e) => opts.lt = e,
        }
    } else {
        opts.lt = end.clone();
        match start {
            Some(s) if end.as_ref().is_some_and(|e| &s >= e) => return empty(),
            Some(s) if s > prefix => opts.gte = Some(s),
            _ => opts.gte = Some(prefix),
        }
    }
    let mut docs = Vec::new();
    let mut next = Json::Null;
    for entry in api.mb.range(&opts)? {
        let (key, value) = entry?;
        if docs.len() == limit {
            next = json!(text(&key));
            break;
        }
        docs.push(json!({"key": text(&key), "doc": doc_json(&value)}));
    }
    ok(json!({"docs": docs, "next": next}))
}

/// One operation of `POST /docs/_bulk`.
fn bulk_op(i: usize, op: &Json) -> Result<BatchOp, ApiError> {
    let bad = |what: &str| ApiError::bad_request(format!("op {i}: {what}"));
    let obj = op.as_object().ok_or_else(|| bad("not an object"))?;
    let key_of = |name: &str| -> Result<Vec<u8>, ApiError> {
        obj.get(name)
            .and_then(Json::as_str)
            .map(|k| k.as_bytes().to_vec())
            .ok_or_else(|| bad(&format!("{name:?} must be a string key")))
    };
    let verbs: Vec<&str> = ["put", "patch", "delete"]
        .into_iter()
        .filter(|v| obj.contains_key(*v))
        .collect();
    let [verb] = verbs[..] else {
        return Err(bad("needs exactly one of \"put\", \"patch\", \"delete\""));
    };
    let allowed: &[&str] = if verb == "delete" {
        &["delete"]
    } else {
        &[verb, "doc"]
    };
    if let Some(extra) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(bad(&format!("unexpected field {extra:?}")));
    }
    let key = key_of(verb)?;
    let doc = || {
        obj.get("doc")
            .cloned()
            .ok_or_else(|| bad("needs a \"doc\""))
    };
    Ok(match verb {
        "put" => BatchOp::Put(key, Value::Json(doc()?)),
        "patch" => BatchOp::Patch(key, doc()?),
        _ => BatchOp::Del(key),
    })
}

async fn bulk(State(api): State<HttpApi>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let body = parse_json(&body?)?;
    let ops = body
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.get("ops"))
        .and_then(Json::as_array)
        .ok_or_else(|| ApiError::bad_request("the body must be {\"ops\":[..]}"))?;
    if ops.is_empty() {
        return Err(ApiError::bad_request("no ops"));
    }
    let ops = ops
        .iter()
        .enumerate()
        .map(|(i, op)| bulk_op(i, op))
        .collect::<Result<Vec<_>, _>>()?;
    let count = ops.len();
    let version = api.mb.batch(ops).await?;
    ok(json!({"ok": true, "ops": count, "version": version}))
}

/// How `GET /_changes` answers.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Feed {
    /// What there is now.
    #[default]
    Normal,
    /// What there is now, or else the next change (within a timeout).
    Longpoll,
}

/// The parameters of `GET /_changes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangesParams {
    since: Option<u64>,
    #[serde(default)]
    feed: Feed,
    prefix: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    include_docs: bool,
    /// Milliseconds a `longpoll` waits at most.
    timeout: Option<u64>,
}

fn change_json(change: &crate::StoreChange, include_docs: bool) -> Json {
    let mut row = json!({
        "seq": change.seq + 1,
        "key": text(&change.key),
        "deleted": change.value.is_none(),
    });
    if include_docs {
        row["doc"] = change.value.as_ref().map_or(Json::Null, doc_json);
    }
    row
}

async fn changes(
    State(api): State<HttpApi>,
    params: Result<Query<ChangesParams>, QueryRejection>,
) -> ApiResult {
    let Query(params) = params?;
    let limit = check_limit(params.limit)?;
    let timeout = params.timeout.unwrap_or(DEFAULT_LONGPOLL_MS);
    if timeout > MAX_LONGPOLL_MS {
        return Err(ApiError::bad_request(format!(
            "timeout {timeout} is out of range: at most {MAX_LONGPOLL_MS} ms"
        )));
    }
    let opts = ChangesOptions {
        since: params.since.unwrap_or(0),
        prefix: params.prefix.map(String::into_bytes),
        live: false,
    };
    let mut results = Vec::new();
    let mut last_seq = params.since.unwrap_or(0);
    let mut stream = api.mb.changes(opts.clone())?;
    while results.len() < limit {
        let Some(change) = stream.next().await else {
            break;
        };
        let change = change?;
        last_seq = change.seq + 1;
        results.push(change_json(&change, params.include_docs));
    }
    if results.is_empty() && params.feed == Feed::Longpoll {
        let mut live = api.mb.changes(ChangesOptions { live: true, ..opts })?;
        if let Ok(Some(change)) =
            tokio::time::timeout(Duration::from_millis(timeout), live.next()).await
        {
            let change = change?;
            last_seq = change.seq + 1;
            results.push(change_json(&change, params.include_docs));
        }
    }
    ok(json!({"results": results, "last_seq": last_seq}))
}
