//! Blobs (`/blobs`): content-addressed files next to the documents. `PUT /blobs` streams an
//! upload into the store (any size, bounded memory) and answers its id; `GET /blobs/{id}`
//! streams it back, whole or one byte range (`Range: bytes=a-b`, `a-`, `-n`), with its media
//! type, fetching it first from the connected peers, or else its DHT providers, when this node
//! lacks it (a read on demand); `HEAD`, `DELETE`, and `GET /blobs` (ids in order, paged with
//! `after`); `GET /blobs/_downloads`: the downloads in progress, bytes held of total.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use futures::TryStreamExt;
use multibee_blobs::{BlobId, Blobs, Error as BlobError};
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiError, ApiResult, ok};
use super::{DEFAULT_LIMIT, HttpApi, MAX_LIMIT};

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        let (status, kind) = match &e {
            BlobError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            BlobError::Incomplete(_) | BlobError::NotHeld(_) => {
                (StatusCode::CONFLICT, "not_complete")
            }
            BlobError::OutOfRange { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "out_of_range"),
            BlobError::InvalidArgument(_) | BlobError::Rejected { .. } => {
                (StatusCode::BAD_REQUEST, "bad_request")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "storage"),
        };
        ApiError::new(status, kind, e.to_string())
    }
}

fn store(api: &HttpApi) -> Result<&Blobs, ApiError> {
    api.blobs
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no blob store here"))
}

fn parse_id(text: &str) -> Result<BlobId, ApiError> {
    text.parse::<BlobId>()
        .map_err(|e| ApiError::bad_request(format!("bad blob id {text:?}: {e}")))
}

/// `PUT /blobs`: the body, streamed into the store; its `Content-Type` is kept as the blob's
/// media type. Answers `{"ok":true,"id":hex,"size":n}`.
pub(super) async fn put(State(api): State<HttpApi>, headers: HeaderMap, body: Body) -> ApiResult {
    let blobs = store(&api)?;
    let media_type = match headers.get(header::CONTENT_TYPE) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("the Content-Type is not ASCII"))?
                .to_string(),
        ),
    };
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let reader = tokio_util::io::StreamReader::new(stream);
    let id = blobs.add_reader(reader).await?;
    if let Some(t) = media_type
        .as_deref()
        .filter(|t| *t != "application/octet-stream")
    {
        blobs.set_media_type(id, Some(t)).await?;
    }
    let size = blobs.size(id).await?;
    ok(json!({"ok": true, "id": id.to_hex(), "size": size}))
}

/// The byte range a `Range` header asks of a blob of `size` bytes: `Ok(None)` for the whole
/// (no header, or one this server does not serve: several ranges, other units), `Err` for a
/// range that is not satisfiable.
fn byte_range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Err(());
    };
    let number = |s: &str| s.trim().parse::<u64>().map_err(|_| ());
    let (start, end) = match (first.trim().is_empty(), last.trim().is_empty()) {
        // `-n`: the last n bytes.
        (true, false) => {
            let n = number(last)?;
            if n == 0 {
                return Err(());
            }
            (size.saturating_sub(n), size)
        }
        // `a-`: from a to the end.
        (false, true) => (number(first)?, size),
        // `a-b`: both inclusive; b may reach past the end.
        (false, false) => {
            let (a, b) = (number(first)?, number(last)?);
            if b < a {
                return Err(());
            }
            (a, b.saturating_add(1).min(size))
        }
        (true, true) => return Err(()),
    };
    if start >= size {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// `GET /blobs/{id}` (and `HEAD`): the blob's bytes, whole or one range (206), with
/// `Content-Type`, `Accept-Ranges` and a strong `ETag` (the id); `If-None-Match` answers 304.
pub(super) async fn get(
    State(api): State<HttpApi>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let blobs = store(&api)?;
    let id = parse_id(&id)?;
    let size = match blobs.size(id).await {
        Err(BlobError::NotFound(_) | BlobError::Incomplete(_)) if api.node.is_some() => {
            fetch_on_read(&api, id).await?
        }
        other => other?,
    };
    let etag = format!("\"{}\"", id.to_hex());
    let media_type = blobs
        .media_type(id)
        .await?
        .unwrap_or_else(|| "application/octet-stream".into());
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        match byte_range(&headers, size) {
            Err(()) => {
                let mut r = ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "out_of_range",
                    format!("the range asked is not within the blob's {size} bytes"),
                )
                .into_response();
                r.headers_mut().insert(
                    header::CONTENT_RANGE,
                    header_value(&format!("bytes */{size}"))?,
                );
                return Ok(r);
            }
            Ok(range) => {
                let (start, end) = range.unwrap_or((0, size));
                let reader = blobs.reader_range(id, start, Some(end - start)).await?;
                let body = Body::from_stream(tokio_util::io::ReaderStream::new(reader));
                let mut r = body.into_response();
                let h = r.headers_mut();
                h.insert(
                    header::CONTENT_LENGTH,
                    header_value(&(end - start).to_string())?,
                );
                if range.is_some() {
                    *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                    r.headers_mut().insert(
                        header::CONTENT_RANGE,
                        header_value(&format!("bytes {start}-{}/{size}", end - 1))?,
                    );
                }
                r
            }
        }
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, header_value(&etag)?);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_TYPE, header_value(&media_type)?);
    Ok(response)
}

/// How long a read of a blob this node lacks waits for it to be fetched from its peers.
const FETCH_ON_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Fetches a blob this node lacks from the peers connected now, or else from its providers in
/// the DHT (a read on demand); its size once held.
async fn fetch_on_read(api: &HttpApi, id: BlobId) -> Result<u64, ApiError> {
    let not_here = |why: String| ApiError::new(StatusCode::NOT_FOUND, "not_found", why);
    let Some(node) = &api.node else {
        return Err(not_here(format!("blob {id} not found")));
    };
    let peers = node
        .connected_peers()
        .await
        .map_err(|e| not_here(format!("blob {id} not found here ({e})")))?;
    if peers.is_empty() {
        return Err(not_here(format!(
            "blob {id} not found here, and no peer is connected to fetch it from"
        )));
    }
    let fetch = node.fetch_blob_anywhere(id);
    match tokio::time::timeout(FETCH_ON_READ_TIMEOUT, fetch).await {
        Ok(Ok(outcome)) => Ok(outcome.size),
        Ok(Err(e)) => Err(not_here(format!(
            "blob {id} not found here, nor fetched from the peers: {e}"
        ))),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!("blob {id} is being fetched: ask again later"),
        )),
    }
}

fn header_value(text: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(text).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage",
            format!("a header value that cannot be sent: {text:?}"),
        )
    })
}

/// `DELETE /blobs/{id}`.
pub(super) async fn delete(State(api): State<HttpApi>, Path(id): Path<String>) -> ApiResult {
    let blobs = store(&api)?;
    let id = parse_id(&id)?;
    blobs.delete(id).await?;
    stop_providing(&api, &[id]).await;
    ok(json!({"ok": true, "id": id.to_hex()}))
}

/// Tells the node (if any) to stop providing deleted blobs in the DHT.
async fn stop_providing(api: &HttpApi, ids: &[BlobId]) {
    let Some(node) = &api.node else { return };
    for id in ids {
        if let Err(e) = node.stop_providing_blob(*id).await {
            tracing::debug!(%id, "cannot stop providing a deleted blob: {e}");
        }
    }
}

/// A blob download in progress as JSON: `{"id","size","held_bytes","peers":[..]}` (`size`
/// is `null` until a peer has answered with it). The node example's `blob status` lists these
/// too.
pub fn download_json(download: &multibee_net::BlobDownload) -> serde_json::Value {
    let peers: Vec<String> = download.peers.iter().map(|p| p.to_string()).collect();
    json!({
        "id": download.id.to_hex(),
        "size": download.size,
        "held_bytes": download.held_bytes,
        "peers": peers,
    })
}

/// `GET /blobs/_downloads`: the blobs being fetched from peers now (by a read on demand, the
/// node's own fetches of referenced blobs, or any other), in id order:
/// `{"downloads":[{"id","size","held_bytes","peers"}]}`. A finished or failed download has
/// left the list. Empty on an API without a node.
pub(super) async fn downloads(State(api): State<HttpApi>) -> ApiResult {
    store(&api)?;
    let list = match &api.node {
        Some(node) => node.blob_downloads().await.map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string())
        })?,
        None => Vec::new(),
    };
    let rows: Vec<serde_json::Value> = list.iter().map(download_json).collect();
    ok(json!({"downloads": rows}))
}

/// The parameters of `GET /blobs`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /blobs?after=ID&limit=N`: complete blobs in id order, with size and media type;
/// `next` is the `after` of the following page (`null` at the end).
pub(super) async fn list(
    State(api): State<HttpApi>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let blobs = store(&api)?;
    let Query(params) = params?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let after = params.after.as_deref().map(parse_id).transpose()?;
    let ids = blobs.list(after, limit + 1).await?;
    let more = ids.len() > limit;
    let mut rows = Vec::new();
    for &id in ids.iter().take(limit) {
        let size = match blobs.size(id).await {
            Ok(size) => size,
            Err(BlobError::NotFound(_)) => continue, // deleted meanwhile
            Err(e) => return Err(e.into()),
        };
        let media_type = blobs.media_type(id).await?;
        rows.push(json!({"id": id.to_hex(), "size": size, "type": media_type}));
    }
    let next = match (more, ids.get(limit - 1)) {
        (true, Some(last)) => json!(last.to_hex()),
        _ => serde_json::Value::Null,
    };
    ok(json!({"blobs": rows, "next": next}))
}

/// The parameters of `POST /blobs/_gc`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GcParams {
    grace_ms: Option<u64>,
}

/// `POST /blobs/_gc?grace_ms=N`: removes the blobs no document references (keeping pinned
/// ones, downloads in progress, and those added within the grace period: an hour unless
/// `grace_ms` says). Answers what it removed and kept.
pub(super) async fn gc(
    State(api): State<HttpApi>,
    params: Result<Query<GcParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let blobs = store(&api)?;
    let Query(params) = params?;
    let grace = params.grace_ms.map_or(
        multibee_blobs::DEFAULT_GRACE,
        std::time::Duration::from_millis,
    );
    let referenced = crate::attachments::referenced_blobs(&api.mb)?;
    let done = blobs.collect(referenced, grace).await?;
    stop_providing(&api, &done.removed).await;
    let removed: Vec<String> = done.removed.iter().map(BlobId::to_hex).collect();
    ok(json!({
        "ok": true,
        "removed": removed,
        "removed_bytes": done.removed_bytes,
        "kept": {"referenced": done.referenced, "pinned": done.pinned, "partial": done.partial, "recent": done.fresh},
    }))
}
