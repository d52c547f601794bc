//! Documents: one at a time (`/docs/{key}`), ranges (`GET /docs`) and batches (`POST /docs/_bulk`).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use multibee_bee::RangeOptions;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::error::{ApiError, ApiResult, ok, parse_json};
use super::{DEFAULT_LIMIT, HttpApi, MAX_LIMIT};
use crate::{BatchOp, Value};

/// The JSON of a stored value (opaque bytes as `{"bytes_hex":..}`).
pub(super) fn doc_json(value: &Value) -> Json {
    match value {
        Value::Json(j) => j.clone(),
        Value::Bytes(b) => json!({"bytes_hex": hex::encode(b)}),
    }
}

pub(super) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

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
        "database": mb.database().map(|d| d.to_string()).ok(),
        "listen": listen,
        "version": mb.version()?,
        "state_hash": hex::encode(mb.state_hash()?),
    }))
}

pub(super) async fn get_doc(
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

pub(super) async fn put_doc(
    State(api): State<HttpApi>,
    key: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let Path(key) = key?;
    let doc = parse_json(&body?)?;
    let version = api.mb.put(&key, doc).await?;
    ok(json!({"ok": true, "key": key, "version": version}))
}

pub(super) async fn patch_doc(
    State(api): State<HttpApi>,
    key: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let Path(key) = key?;
    let patch = parse_json(&body?)?;
    let version = api.mb.patch(&key, patch).await?;
    ok(json!({"ok": true, "key": key, "version": version}))
}

pub(super) async fn del_doc(
    State(api): State<HttpApi>,
    key: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let Path(key) = key?;
    let version = api.mb.del(&key).await?;
    ok(json!({"ok": true, "key": key, "version": version}))
}

/// The parameters of `GET /docs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RangeParams {
    prefix: Option<String>,
    start: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    reverse: bool,
}

pub(super) fn check_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "limit {n} is out of range: 1 to {MAX_LIMIT}"
        ))),
    }
}

pub(super) async fn range(
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

pub(super) async fn bulk(
    State(api): State<HttpApi>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
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
