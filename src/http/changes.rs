//! The changes feed: `GET /_changes`.
//!
//! - `feed=normal` (the default) answers what there is now, `feed=longpoll` waits (at most
//!   `timeout` ms) for a change when there is none yet: `{"results":[..],"last_seq":N}`.
//!   `last_seq` is the version the answer scanned to, past changes that `prefix` skipped, so
//!   a filtered client never rescans them.
//! - `feed=continuous` streams one result object per line (`{"seq":N,"key":..,"deleted":bool}`,
//!   with `"doc"` if `include_docs=true`): first every change after `since`, then each new one
//!   as it is made or merged. A bare newline is sent every `heartbeat` ms while idle.
//! - `feed=eventsource` streams the same results as Server-Sent Events (`id: <seq>` and
//!   `data: <result>`), heartbeats as `:` comments. Without `since`, the `Last-Event-ID`
//!   header is the `since` (how an `EventSource` resumes after a reconnect).
//!
//! A stream ends after `limit` results, or after `timeout` ms without one; `continuous` then
//! sends `{"last_seq":N}` as its last line. A stream is produced lazily: a task reads the
//! history and sends rows in chunks through a bounded channel to the response body, so a
//! client that reads slowly slows the task down and the node buffers at most
//! [`CHUNKS_BUFFERED`] chunks of about [`CHUNK_BYTES`]. A client that reads nothing for
//! [`HttpApi::too_slow_after`] while results wait is cut off: its stream ends with
//! `{"error":"too_slow","reason":..,"last_seq":N}` (delivered if it reads again; `last_seq`
//! is where to resume), and [`super::serve_http`] closes a connection whose writes wait twice
//! that long.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use futures::{FutureExt, StreamExt};
use multibee_bee::{Change, HistoryOptions, LiveHistory};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::docs::check_limit;
use super::error::{ApiError, ApiResult};
use super::{DEFAULT_LONGPOLL_MS, HttpApi, MAX_LONGPOLL_MS};
use crate::Value;
use crate::db::StoredRef;

/// How often an idle `continuous` or `eventsource` stream sends a heartbeat unless
/// `heartbeat` says (ms).
pub const DEFAULT_HEARTBEAT_MS: u64 = 30_000;
/// The shortest `heartbeat` accepted (ms).
pub const MIN_HEARTBEAT_MS: u64 = 100;
/// The longest `heartbeat` accepted (ms).
pub const MAX_HEARTBEAT_MS: u64 = 300_000;
/// How long a streamed `_changes` client may read nothing while results wait before it is
/// cut off, unless [`HttpApi::too_slow_after`] says.
pub const DEFAULT_TOO_SLOW: Duration = Duration::from_secs(30);
/// A stream sends its rows in chunks of about this many bytes (a chunk is sent earlier when
/// the history has nothing more for now).
pub const CHUNK_BYTES: usize = 32 * 1024;
/// How many chunks wait between a stream's producer and the response body at most.
pub const CHUNKS_BUFFERED: usize = 8;

/// How `GET /_changes` answers.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum Feed {
    /// What there is now.
    #[default]
    Normal,
    /// What there is now, or else the next change (within a timeout).
    Longpoll,
    /// A stream of JSON lines.
    Continuous,
    /// A stream of Server-Sent Events.
    Eventsource,
}

/// The parameters of `GET /_changes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChangesParams {
    since: Option<u64>,
    #[serde(default)]
    feed: Feed,
    prefix: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    include_docs: bool,
    /// Milliseconds a `longpoll` waits at most, or a stream waits for a result.
    timeout: Option<u64>,
    /// Milliseconds between heartbeats of an idle stream.
    heartbeat: Option<u64>,
}

/// What the changes streams of one [`HttpApi`] share: the cut-off, its count, and the signal
/// that the server is closing.
#[derive(Clone, Debug)]
pub(super) struct Streams {
    too_slow_after: Duration,
    cut_off: Arc<watch::Sender<u64>>,
    closing: Arc<watch::Sender<bool>>,
}

impl Default for Streams {
    fn default() -> Self {
        Streams {
            too_slow_after: DEFAULT_TOO_SLOW,
            cut_off: Arc::new(watch::Sender::new(0)),
            closing: Arc::new(watch::Sender::new(false)),
        }
    }
}

impl Streams {
    /// How long a connection's write may wait before the connection is closed.
    pub(super) fn stall_after(&self) -> Duration {
        self.too_slow_after.saturating_mul(2)
    }

    /// Ends every stream and long poll (the server is shutting down).
    pub(super) fn close(&self) {
        self.closing.send_replace(true);
    }
}

impl HttpApi {
    /// Sets how long a `continuous` or `eventsource` client may read nothing while results
    /// wait before it is cut off (default [`DEFAULT_TOO_SLOW`]). [`super::serve_http`] closes
    /// a connection whose writes wait twice as long.
    pub fn too_slow_after(mut self, cutoff: Duration) -> Self {
        self.streams.too_slow_after = cutoff;
        self
    }

    /// How many `_changes` streams were cut off for reading too slowly, so far.
    pub fn too_slow_cut_offs(&self) -> watch::Receiver<u64> {
        self.streams.cut_off.subscribe()
    }
}

fn db_error(e: impl Into<crate::db::Error>) -> ApiError {
    ApiError::from(e.into())
}

/// Appends one result object: `{"seq":N,"key":..,"deleted":bool}` and, with `docs`, `"doc"`
/// (the stored JSON text as it is, opaque bytes as `{"bytes_hex":..}`).
fn write_row(out: &mut Vec<u8>, change: &Change, docs: bool) -> Result<(), String> {
    out.extend_from_slice(b"{\"seq\":");
    write_json(out, &(change.seq + 1));
    out.extend_from_slice(b",\"key\":");
    write_json(out, &String::from_utf8_lossy(&change.key));
    out.extend_from_slice(match change.value {
        None => b",\"deleted\":true",
        Some(_) => b",\"deleted\":false",
    });
    if docs {
        out.extend_from_slice(b",\"doc\":");
        match change
            .value
            .as_deref()
            .map(Value::peek_stored)
            .transpose()?
        {
            None => out.extend_from_slice(b"null"),
            Some(StoredRef::Json(text)) => out.extend_from_slice(text),
            Some(StoredRef::Bytes(bytes)) => {
                out.extend_from_slice(b"{\"bytes_hex\":\"");
                out.extend_from_slice(hex::encode(bytes).as_bytes());
                out.extend_from_slice(b"\"}");
            }
        }
    }
    out.push(b'}');
    Ok(())
}

fn write_json(out: &mut Vec<u8>, value: &(impl serde::Serialize + ?Sized)) {
    // Writing a number or a string into a Vec cannot fail.
    let _ = serde_json::to_writer(out, value);
}

/// Returns once the server is closing.
async fn closed(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|c| *c).await;
}

fn matches(prefix: Option<&[u8]>, change: &Change) -> bool {
    prefix.is_none_or(|p| change.key.starts_with(p))
}

pub(super) async fn changes(
    State(api): State<HttpApi>,
    headers: HeaderMap,
    params: Result<Query<ChangesParams>, QueryRejection>,
) -> ApiResult {
    let Query(params) = params?;
    if let Some(ms) = params.timeout
        && ms > MAX_LONGPOLL_MS
    {
        return Err(ApiError::bad_request(format!(
            "timeout {ms} is out of range: at most {MAX_LONGPOLL_MS} ms"
        )));
    }
    let heartbeat = params.heartbeat.unwrap_or(DEFAULT_HEARTBEAT_MS);
    if !(MIN_HEARTBEAT_MS..=MAX_HEARTBEAT_MS).contains(&heartbeat) {
        return Err(ApiError::bad_request(format!(
            "heartbeat {heartbeat} is out of range: {MIN_HEARTBEAT_MS} to {MAX_HEARTBEAT_MS} ms"
        )));
    }
    match params.feed {
        Feed::Normal | Feed::Longpoll => answer(&api, params).await,
        Feed::Continuous | Feed::Eventsource => {
            let since = match params.since {
                Some(since) => since,
                None if params.feed == Feed::Eventsource => last_event_id(&headers)?,
                None => 0,
            };
            stream(&api, params, since, Duration::from_millis(heartbeat))
        }
    }
}

/// The `Last-Event-ID` header (0 when absent).
fn last_event_id(headers: &HeaderMap) -> Result<u64, ApiError> {
    let Some(id) = headers.get("last-event-id") else {
        return Ok(0);
    };
    id.to_str()
        .ok()
        .and_then(|id| id.trim().parse().ok())
        .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be a seq (a number)"))
}

/// `normal` and `longpoll`: one JSON answer, written row by row.
async fn answer(api: &HttpApi, params: ChangesParams) -> ApiResult {
    let limit = check_limit(params.limit)?;
    let prefix = params.prefix.as_deref().map(str::as_bytes);
    let bee = api.mb.store_bee();
    let since = params.since.unwrap_or(0);
    let version = bee.version().map_err(db_error)?;
    let history = bee
        .history(&HistoryOptions {
            gte: since,
            lt: Some(version),
            reverse: false,
        })
        .map_err(db_error)?;
    let mut body = b"{\"results\":[".to_vec();
    let mut count = 0;
    let mut last_seq = since;
    for change in history {
        let change = change.map_err(db_error)?;
        last_seq = change.seq + 1;
        if matches(prefix, &change) {
            push_row(&mut body, &mut count, &change, params.include_docs)?;
            if count == limit {
                break;
            }
        }
    }
    if count < limit {
        // Everything up to `version` was scanned (the bee skips entries it does not show).
        last_seq = last_seq.max(version);
    }
    if count == 0 && params.feed == Feed::Longpoll {
        let timeout = Duration::from_millis(params.timeout.unwrap_or(DEFAULT_LONGPOLL_MS));
        let mut live = bee.live_history(last_seq);
        let mut closing = api.streams.closing.subscribe();
        let deadline = Instant::now() + timeout;
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout_at(deadline, live.next()) => next,
                () = closed(&mut closing) => break,
            };
            let Ok(Some(change)) = next else { break };
            let change = change.map_err(db_error)?;
            last_seq = change.seq + 1;
            if matches(prefix, &change) {
                push_row(&mut body, &mut count, &change, params.include_docs)?;
                break;
            }
        }
    }
    body.extend_from_slice(b"],\"last_seq\":");
    write_json(&mut body, &last_seq);
    body.push(b'}');
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

fn push_row(
    out: &mut Vec<u8>,
    count: &mut usize,
    change: &Change,
    docs: bool,
) -> Result<(), ApiError> {
    if *count > 0 {
        out.push(b',');
    }
    write_row(out, change, docs).map_err(corrupt)?;
    *count += 1;
    Ok(())
}

fn corrupt(reason: String) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "storage",
        format!("a stored value does not decode: {reason}"),
    )
}

/// How a stream frames results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// One JSON object per line (`continuous`).
    Lines,
    /// Server-Sent Events (`eventsource`).
    Events,
}

impl Framing {
    fn heartbeat(self) -> Bytes {
        match self {
            Framing::Lines => Bytes::from_static(b"\n"),
            Framing::Events => Bytes::from_static(b":\n\n"),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Framing::Lines => "application/x-ndjson",
            Framing::Events => "text/event-stream",
        }
    }

    /// Appends one result; `seq` is its seq, `row` its JSON object.
    fn push(self, out: &mut Vec<u8>, seq: u64, row: &[u8]) {
        if self == Framing::Events {
            out.extend_from_slice(b"id: ");
            write_json(out, &seq);
            out.extend_from_slice(b"\ndata: ");
            out.extend_from_slice(row);
            out.extend_from_slice(b"\n\n");
        } else {
            out.extend_from_slice(row);
            out.push(b'\n');
        }
    }

    /// A message that is not a result (the end, an error): a line or an event without an id.
    fn message(self, json: serde_json::Value) -> Bytes {
        let mut out = Vec::new();
        if self == Framing::Events {
            out.extend_from_slice(b"data: ");
            write_json(&mut out, &json);
            out.extend_from_slice(b"\n\n");
        } else {
            write_json(&mut out, &json);
            out.push(b'\n');
        }
        Bytes::from(out)
    }
}

/// `continuous` and `eventsource`: a response whose body a [`Producer`] task feeds.
fn stream(api: &HttpApi, params: ChangesParams, since: u64, heartbeat: Duration) -> ApiResult {
    let limit = match params.limit {
        Some(0) => return Err(ApiError::bad_request("limit 0 is out of range: at least 1")),
        limit => limit,
    };
    let framing = match params.feed {
        Feed::Eventsource => Framing::Events,
        _ => Framing::Lines,
    };
    let (tx, mut rx) = mpsc::channel::<Bytes>(CHUNKS_BUFFERED);
    let (end_tx, end_rx) = oneshot::channel::<Bytes>();
    let producer = Producer {
        live: api.mb.store_bee().live_history(since),
        prefix: params.prefix.map(String::into_bytes),
        docs: params.include_docs,
        framing,
        limit,
        heartbeat,
        idle_timeout: params.timeout.map(Duration::from_millis),
        too_slow_after: api.streams.too_slow_after,
        streams: api.streams.clone(),
        tx,
        buf: Vec::with_capacity(CHUNK_BYTES + 1024),
        row: Vec::with_capacity(256),
        count: 0,
        scanned: since,
        delivered: since,
        last_result: Instant::now(),
    };
    tokio::spawn(producer.run(end_tx));
    let chunks = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let end = end_rx
        .into_stream()
        .filter_map(|end| std::future::ready(end.ok()));
    let body = Body::from_stream(chunks.chain(end).map(Ok::<_, Infallible>));
    let headers = [
        (header::CONTENT_TYPE, framing.content_type()),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    Ok((headers, body).into_response())
}

/// Why a stream's producer stopped.
#[derive(Debug)]
enum Stop {
    /// The limit, the timeout, the server or the store closing.
    Done,
    /// The client hung up.
    Gone,
    /// The client read nothing for the cut-off.
    TooSlow,
    /// Reading the history failed.
    Failed(String),
}

/// Reads the history and sends it to a stream's body in chunks, through a bounded channel.
struct Producer {
    live: LiveHistory,
    prefix: Option<Vec<u8>>,
    docs: bool,
    framing: Framing,
    limit: Option<usize>,
    heartbeat: Duration,
    idle_timeout: Option<Duration>,
    too_slow_after: Duration,
    streams: Streams,
    tx: mpsc::Sender<Bytes>,
    /// Framed results not sent yet.
    buf: Vec<u8>,
    /// The result being written.
    row: Vec<u8>,
    /// Results so far.
    count: usize,
    /// The version the history was read up to.
    scanned: u64,
    /// The version every result up to which is in the channel: where a cut-off client resumes.
    delivered: u64,
    /// When the newest result was written (for `idle_timeout`).
    last_result: Instant,
}

impl Producer {
    async fn run(mut self, end: oneshot::Sender<Bytes>) {
        let last = match self.pump().await {
            Stop::Gone => return,
            Stop::Done if self.framing == Framing::Lines => {
                serde_json::json!({"last_seq": self.scanned})
            }
            Stop::Done => return,
            Stop::TooSlow => {
                tracing::warn!(
                    last_seq = self.delivered,
                    cutoff = ?self.too_slow_after,
                    "a _changes client read nothing for too long: cut off"
                );
                self.streams.cut_off.send_modify(|n| *n += 1);
                serde_json::json!({
                    "error": "too_slow",
                    "reason": format!(
                        "the client read nothing for {:?} while results waited",
                        self.too_slow_after
                    ),
                    "last_seq": self.delivered,
                })
            }
            Stop::Failed(reason) => {
                tracing::warn!(%reason, "a _changes stream failed");
                serde_json::json!({"error": "storage", "reason": reason, "last_seq": self.delivered})
            }
        };
        let _ = end.send(self.framing.message(last));
    }

    /// Sends results until the stream ends.
    async fn pump(&mut self) -> Stop {
        let mut closing = self.streams.closing.subscribe();
        loop {
            // Catch up without waiting while the history has changes; send them in chunks.
            let next = match self.live.next().now_or_never() {
                Some(next) => next,
                None => {
                    if let Err(stop) = self.flush().await {
                        return stop;
                    }
                    match self.wait(&mut closing).await {
                        Ok(next) => next,
                        Err(stop) => return stop,
                    }
                }
            };
            let change = match next {
                None => return Stop::Done,
                Some(Err(e)) => return Stop::Failed(e.to_string()),
                Some(Ok(change)) => change,
            };
            self.scanned = change.seq + 1;
            if !matches(self.prefix.as_deref(), &change) {
                continue;
            }
            self.row.clear();
            if let Err(reason) = write_row(&mut self.row, &change, self.docs) {
                return Stop::Failed(format!("a stored value does not decode: {reason}"));
            }
            self.framing.push(&mut self.buf, change.seq + 1, &self.row);
            self.count += 1;
            self.last_result = Instant::now();
            let done = self.limit == Some(self.count);
            if done || self.buf.len() >= CHUNK_BYTES {
                if let Err(stop) = self.flush().await {
                    return stop;
                }
                if done {
                    return Stop::Done;
                }
            }
        }
    }

    /// Waits for the next change, sending heartbeats meanwhile.
    async fn wait(
        &mut self,
        closing: &mut watch::Receiver<bool>,
    ) -> Result<Option<multibee_bee::Result<Change>>, Stop> {
        loop {
            let idle_end = self.idle_timeout.map(|t| self.last_result + t);
            let beat = Instant::now() + self.heartbeat;
            let until = idle_end.map_or(beat, |end| end.min(beat));
            tokio::select! {
                next = tokio::time::timeout_at(until, self.live.next()) => match next {
                    Ok(next) => return Ok(next),
                    Err(_) if idle_end.is_some_and(|end| Instant::now() >= end) => {
                        return Err(Stop::Done);
                    }
                    Err(_) => self.send(self.framing.heartbeat()).await?,
                },
                () = self.tx.closed() => return Err(Stop::Gone),
                () = closed(closing) => return Err(Stop::Done),
            }
        }
    }

    /// Sends the framed results written so far.
    async fn flush(&mut self) -> Result<(), Stop> {
        if !self.buf.is_empty() {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES + 1024));
            self.send(Bytes::from(chunk)).await?;
        }
        self.delivered = self.scanned;
        Ok(())
    }

    /// Sends one chunk, waiting at most the cut-off for the client to take earlier ones.
    async fn send(&mut self, chunk: Bytes) -> Result<(), Stop> {
        match tokio::time::timeout(self.too_slow_after, self.tx.reserve()).await {
            Ok(Ok(permit)) => {
                permit.send(chunk);
                Ok(())
            }
            Ok(Err(_)) => Err(Stop::Gone),
            Err(_) => Err(Stop::TooSlow),
        }
    }
}
