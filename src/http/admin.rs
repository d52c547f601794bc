//! The node itself: `GET /`, writers (`/_writers`), peers (`/_peers`), replication status
//! (`/_status`), metrics (`/_metrics`) and `POST /_shutdown`.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::HttpApi;
use super::error::{ApiError, ApiResult, ok, parse_json};
use crate::{FeedKey, WriterInfo, WriterState};

/// `GET /`: who this peer is and where its store stands.
pub(super) async fn info(State(api): State<HttpApi>) -> ApiResult {
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
        "store_key": mb.store_key().to_string(),
        "database": mb.database().map(|d| d.to_string()).ok(),
        "listen": listen,
        "version": mb.version()?,
        "state_hash": hex::encode(mb.state_hash()?),
        "software": concat!("multibee ", env!("CARGO_PKG_VERSION")),
    }))
}

/// `POST /_shutdown`: asks the program serving the API to stop.
pub(super) async fn shutdown(State(api): State<HttpApi>) -> ApiResult {
    api.shutdown.notify_waiters();
    api.shutdown.notify_one();
    ok(json!({"ok": true}))
}

fn state_name(state: WriterState) -> &'static str {
    match state {
        WriterState::Active => "active",
        WriterState::Removed => "removed",
        WriterState::Forked => "forked",
    }
}

fn writer_json(w: &WriterInfo) -> Json {
    json!({
        "key": w.key.to_string(),
        "state": state_name(w.state),
        "length": w.length,
        "merged": w.merged,
        "cut": w.cut,
        "removed_by": w.removed_by.map(|k| k.to_string()),
    })
}

/// `GET /_writers`: every writer this peer counts or counted.
pub(super) async fn writers(State(api): State<HttpApi>) -> ApiResult {
    ok(json!({"writers": all_writers(&api)?.iter().map(writer_json).collect::<Vec<_>>()}))
}

/// This peer first, then the writers it knows.
fn all_writers(api: &HttpApi) -> Result<Vec<WriterInfo>, ApiError> {
    let mut all = vec![api.mb.own_writer()?];
    all.extend(api.mb.writers()?);
    Ok(all)
}

fn feed_key(text: &str) -> Result<FeedKey, ApiError> {
    text.parse::<FeedKey>()
        .map_err(|e| ApiError::bad_request(format!("bad writer key {:?}: {e}", short(text))))
}

/// At most the first 64 characters of a client's text, for error messages.
fn short(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

/// `POST /_writers` with `{"key":"<hex diff key>"}`: adds a writer (a replicated membership
/// operation).
pub(super) async fn add_writer(
    State(api): State<HttpApi>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = parse_json(&body?)?;
    let key = body
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.get("key"))
        .and_then(Json::as_str)
        .ok_or_else(|| ApiError::bad_request("the body must be {\"key\":\"<hex diff key>\"}"))?;
    let key = feed_key(key)?;
    let mb = &api.mb;
    if key == mb.diff_key() {
        return Err(ApiError::bad_request(
            "that is this peer's own diff key: it is a writer already",
        ));
    }
    if key == mb.store_key() {
        return Err(ApiError::bad_request(
            "that is this peer's store key, not a diff key: give the diff key a peer shows as \
             diff_key",
        ));
    }
    mb.add_writer(key).await?;
    ok(json!({"ok": true, "key": key.to_string()}))
}

/// The parameters of `DELETE /_writers/{key}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RemoveParams {
    /// Un-merge every diff of the writer, not only those after what this peer merged.
    #[serde(default)]
    expel: bool,
}

/// `DELETE /_writers/{key}[?expel=true]`: removes a writer.
pub(super) async fn remove_writer(
    State(api): State<HttpApi>,
    key: Result<Path<String>, PathRejection>,
    params: Result<Query<RemoveParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Path(key) = key?;
    let Query(params) = params?;
    let key = feed_key(&key)?;
    if params.expel {
        api.mb.expel_writer(key).await?;
    } else {
        api.mb.remove_writer(key).await?;
    }
    ok(json!({"ok": true, "key": key.to_string(), "expelled": params.expel}))
}

/// `GET /_peers`: the peers connected now, their addresses, and the feeds they serve us.
pub(super) async fn peers(State(api): State<HttpApi>) -> ApiResult {
    let Some(node) = &api.node else {
        return ok(json!({"peers": []}));
    };
    let text = |addrs: &[crate::Multiaddr]| addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let peers: Vec<Json> = node
        .peers()
        .await
        .map_err(net_error)?
        .iter()
        .map(|p| {
            json!({
                "peer_id": p.peer.to_string(),
                "addresses": text(&p.addresses),
                "listen_addrs": text(&p.listen_addrs),
                "feeds": p.feeds.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
            })
        })
        .collect();
    ok(json!({"peers": peers}))
}

/// How long `POST /_peers` waits for a dial's outcome.
pub const DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `POST /_peers` with `{"addr":"<multiaddr>"}`: dials, and answers the peer once connected, or
/// why it could not connect (502 `dial_failed`; 504 when it timed out).
pub(super) async fn dial(
    State(api): State<HttpApi>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = parse_json(&body?)?;
    let addr = body
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.get("addr"))
        .and_then(Json::as_str)
        .ok_or_else(|| ApiError::bad_request("the body must be {\"addr\":\"<multiaddr>\"}"))?;
    let addr: crate::Multiaddr = addr
        .parse()
        .map_err(|e| ApiError::bad_request(format!("bad multiaddr {:?}: {e}", short(addr))))?;
    let Some(node) = &api.node else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "network",
            "this API serves no network node",
        ));
    };
    match node.connect(addr.clone(), DIAL_TIMEOUT).await {
        Ok(peer) => ok(json!({"ok": true, "peer_id": peer.to_string(), "addr": addr.to_string()})),
        Err(e) => {
            let status = match e {
                crate::net::DialError::TimedOut => StatusCode::GATEWAY_TIMEOUT,
                crate::net::DialError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            };
            Err(ApiError::new(
                status,
                "dial_failed",
                format!("dialing {addr}: {e}"),
            ))
        }
    }
}

fn net_error(e: crate::net::Error) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "network", e.to_string())
}

/// `GET /_status`: per writer, what is held, merged and known elsewhere, and the merge rate.
pub(super) async fn status(State(api): State<HttpApi>) -> ApiResult {
    let mb = &api.mb;
    let writers: Vec<Json> = all_writers(&api)?
        .iter()
        .map(|w| {
            let rate = api.progress.as_ref().map(|p| p.rate(&w.key));
            let best = api.progress.as_ref().and_then(|p| p.best_peer(&w.key));
            let mut row = writer_json(w);
            row["best_peer"] = json!(best.map(|(peer, length)| json!({
                "peer_id": peer.to_string(),
                "length": length,
                "ahead": length.saturating_sub(w.length),
            })));
            row["behind"] = json!(w.length.saturating_sub(w.merged));
            row["catching_up"] = json!(w.state == WriterState::Active && w.merged < w.length);
            row["merge_rate"] = json!(rate.map(|r| (r * 10.0).round() / 10.0));
            row
        })
        .collect();
    let (peers, replication) = match &api.node {
        Some(node) => {
            let stats = node.stats();
            (
                json!(node.connected_peers().await.map_err(net_error)?.len()),
                json!({
                    "entries_sent": stats.entries_sent,
                    "entries_received": stats.entries_received,
                    "entries_stored": stats.entries_stored,
                    "bytes_sent": stats.bytes_sent,
                    "bytes_received": stats.bytes_received,
                }),
            )
        }
        None => (Json::Null, Json::Null),
    };
    let only = mb.view().map(|v| {
        v.prefixes()
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect::<Vec<_>>()
    });
    ok(json!({
        "version": mb.version()?,
        "writers": writers,
        "peers": peers,
        "replication": replication,
        "only": only,
    }))
}

/// `GET /_metrics`: the Prometheus (OpenMetrics) text format.
pub(super) async fn metrics(State(api): State<HttpApi>) -> ApiResult {
    let mb = &api.mb;
    let mut registry = Registry::with_prefix("multibee");
    let gauge = |registry: &mut Registry, name: &str, help: &str, value: u64| {
        let g: Gauge = Gauge::default();
        g.set(i64::try_from(value).unwrap_or(i64::MAX));
        registry.register(name, help, g);
    };
    gauge(
        &mut registry,
        "store_version",
        "Changes the merged store has seen (local writes and merges)",
        mb.version()?,
    );
    let held: Family<Vec<(String, String)>, Gauge> = Family::default();
    let merged: Family<Vec<(String, String)>, Gauge> = Family::default();
    let behind: Family<Vec<(String, String)>, Gauge> = Family::default();
    let own = mb.diff_key();
    let writers = all_writers(&api)?;
    for w in &writers {
        let labels = vec![
            ("writer".to_string(), w.key.to_string()),
            ("state".to_string(), state_name(w.state).to_string()),
            ("own".to_string(), (w.key == own).to_string()),
        ];
        let set = |f: &Family<Vec<(String, String)>, Gauge>, v: u64| {
            f.get_or_create(&labels)
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        set(&held, w.length);
        set(&merged, w.merged);
        set(&behind, w.length.saturating_sub(w.merged));
    }
    registry.register("writer_length", "Diff feed entries held per writer", held);
    registry.register(
        "writer_merged",
        "Diff feed entries merged per writer",
        merged,
    );
    registry.register(
        "writer_behind",
        "Diff feed entries held and not merged yet per writer (merge lag)",
        behind,
    );
    if let Some(node) = &api.node {
        let stats = node.stats();
        gauge(
            &mut registry,
            "peers",
            "Peers connected now",
            node.connected_peers().await.map_err(net_error)?.len() as u64,
        );
        gauge(
            &mut registry,
            "entries_sent",
            "Feed entries sent to peers since start",
            stats.entries_sent,
        );
        gauge(
            &mut registry,
            "entries_received",
            "Feed entries received from peers since start (before verification)",
            stats.entries_received,
        );
        gauge(
            &mut registry,
            "entries_stored",
            "Feed entries received, verified and newly stored since start",
            stats.entries_stored,
        );
        gauge(
            &mut registry,
            "bytes_sent",
            "Bytes of replication frames sent since start",
            stats.bytes_sent,
        );
        gauge(
            &mut registry,
            "bytes_received",
            "Bytes of replication frames received since start",
            stats.bytes_received,
        );
    }
    if let Some(progress) = &api.progress {
        let ahead: Family<Vec<(String, String)>, Gauge> = Family::default();
        for w in &writers {
            if let Some((_, length)) = progress.best_peer(&w.key) {
                let labels = vec![("writer".to_string(), w.key.to_string())];
                ahead
                    .get_or_create(&labels)
                    .set(i64::try_from(length.saturating_sub(w.length)).unwrap_or(i64::MAX));
            }
        }
        registry.register(
            "writer_peer_ahead",
            "Diff feed entries the best connected peer holds beyond ours (replication lag)",
            ahead,
        );
    }
    api.requests.register(&mut registry);
    let mut text = String::new();
    encode(&mut text, &registry)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "metrics", e.to_string()))?;
    Ok((
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
