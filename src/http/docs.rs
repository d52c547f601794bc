//! Documents: one at a time (`/docs/{key}`), ranges (`GET /docs`) and batches (`POST /docs/_bulk`).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::header::{ETAG, IF_MATCH, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::IntoResponse;
use multibee_bee::RangeOptions;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::error::{ApiError, ApiResult, ok, parse_json};
use super::{DEFAULT_LIMIT, HttpApi, MAX_LIMIT};
use crate::db::Precondition;
use crate::{BatchOp, Value};

/// The JSON of a stored value (opaque bytes as `{"bytes_hex":..}`).
pub fn value_json(value: &Value) -> Json {
    match value {
        Value::Json(j) => j.clone(),
        Value::Bytes(b) => json!({"bytes_hex": hex::encode(b)}),
    }
}

pub(super) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What a `/docs/{key}...` path names: the document, or one of its sub-resources.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Doc,
    History,
    Conflicts,
}

/// Splits the raw (still percent-encoded) path of a `/docs/...` request into its key and
/// target. A path ending in `/_history` or `/_conflicts` names that sub-resource of the key
/// before it; a key that itself ends so is addressed with its `/` encoded as `%2F`.
fn doc_path(uri: &Uri) -> Result<(String, Target), ApiError> {
    let raw = uri.path().strip_prefix("/docs/").unwrap_or_default();
    let (raw, target) = if let Some(k) = raw.strip_suffix("/_history") {
        (k, Target::History)
    } else if let Some(k) = raw.strip_suffix("/_conflicts") {
        (k, Target::Conflicts)
    } else {
        (raw, Target::Doc)
    };
    let key = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::bad_request("bad key: not UTF-8 once percent-decoded"))?;
    if key.is_empty() {
        return Err(ApiError::bad_request("bad key: empty"));
    }
    Ok((key.into_owned(), target))
}

/// A revision as an `ETag` value (a strong validator: `"12"`).
fn etag(rev: u64) -> HeaderValue {
    HeaderValue::try_from(format!("\"{rev}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

/// A revision token as a client sends it back (`"12"`, or bare `12`).
fn parse_rev(token: &str) -> Option<u64> {
    let token = token.trim();
    token
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(token)
        .parse()
        .ok()
}

/// The precondition of `If-Match` (`*`: the document exists; `"REV"`: it is at that
/// revision) or `If-None-Match: *` (it does not exist), as a write's headers state it.
fn precondition(headers: &HeaderMap) -> Result<Option<Precondition>, ApiError> {
    let header = |name: &HeaderName| -> Result<Option<&str>, ApiError> {
        headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .map_err(|_| ApiError::bad_request(format!("{name} is not ASCII")))
            })
            .transpose()
    };
    match (header(&IF_MATCH)?, header(&IF_NONE_MATCH)?) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "give If-Match or If-None-Match, not both",
        )),
        (Some(m), None) => condition_of(m, "If-Match").map(Some),
        (None, Some(n)) if n.trim() == "*" => Ok(Some(Precondition::Absent)),
        (None, Some(_)) => Err(ApiError::bad_request(
            "a write takes only If-None-Match: * (create only)",
        )),
        (None, None) => Ok(None),
    }
}

/// An `If-Match`-style token: `*` or one revision.
fn condition_of(token: &str, what: &str) -> Result<Precondition, ApiError> {
    if token.trim() == "*" {
        return Ok(Precondition::Present);
    }
    parse_rev(token).map(Precondition::Rev).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{what} must be \"*\" or one revision like \"12\" (an ETag this node gave)"
        ))
    })
}

fn not_found(key: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no document {key:?}"),
    )
}

/// `GET /docs/{key}` (with `If-None-Match: "REV"`: 304 while unchanged),
/// `GET /docs/{key}/_history`, `GET /docs/{key}/_conflicts`.
pub(super) async fn get_doc(State(api): State<HttpApi>, uri: Uri, headers: HeaderMap) -> ApiResult {
    let (key, target) = doc_path(&uri)?;
    match target {
        Target::Doc => {}
        Target::History => return history(&api, &key),
        Target::Conflicts => return conflicts(&api, &key),
    }
    let Some((rev, value)) = api.mb.get_rev(&key)? else {
        return Err(not_found(&key));
    };
    let unchanged = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == "*" || parse_rev(t) == Some(rev))
        });
    if unchanged {
        return Ok((StatusCode::NOT_MODIFIED, [(ETAG, etag(rev))]).into_response());
    }
    let body = json!({"key": key, "rev": rev.to_string(), "doc": value_json(&value)});
    Ok(([(ETAG, etag(rev))], axum::Json(body)).into_response())
}

fn history(api: &HttpApi, key: &str) -> ApiResult {
    let rows: Vec<Json> = api
        .mb
        .history(key)?
        .iter()
        .map(|h| {
            json!({
                "writer": h.writer.to_string(),
                "seq": h.seq,
                "ts": h.ts.to_string(),
                "change": change_json(&h.change),
            })
        })
        .collect();
    ok(json!({"key": key, "history": rows}))
}

fn conflicts(api: &HttpApi, key: &str) -> ApiResult {
    let rows: Vec<Json> = api
        .mb
        .conflicts(key)?
        .iter()
        .map(|c| {
            json!({
                "writer": c.writer.to_string(),
                "ts": c.ts.to_string(),
                "change": change_json(&c.change),
            })
        })
        .collect();
    ok(json!({"key": key, "conflicts": rows}))
}

/// A diff's change as JSON: `{"set":VALUE}`, `"delete"`, or a list of field operations
/// (`{"set":PATH,"value":..}`, `{"remove":PATH}`, `{"object":PATH}`).
pub fn change_json(change: &crate::db::Change) -> Json {
    use crate::db::{Change, FieldOp};
    match change {
        Change::Set(v) => json!({"set": value_json(v)}),
        Change::Delete => json!("delete"),
        Change::Fields(ops) => ops
            .iter()
            .map(|op| match op {
                FieldOp::Set { path, value } => json!({"set": path, "value": value}),
                FieldOp::Remove { path } => json!({"remove": path}),
                FieldOp::Object { path } => json!({"object": path}),
            })
            .collect(),
    }
}

/// Runs one write of `/docs/{key}` under the request's precondition, answering the key's
/// revision as `ETag` (none once deleted).
async fn write_doc(
    api: &HttpApi,
    uri: &Uri,
    headers: &HeaderMap,
    op: impl FnOnce(Vec<u8>) -> BatchOp,
) -> ApiResult {
    let (key, target) = doc_path(uri)?;
    if target != Target::Doc {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "_history and _conflicts are read only",
        ));
    }
    let conditions = precondition(headers)?
        .map(|c| vec![(key.as_bytes().to_vec(), c)])
        .unwrap_or_default();
    let done = api
        .mb
        .batch_if(conditions, vec![op(key.as_bytes().to_vec())])
        .await?;
    let rev = done.revs.first().copied().flatten();
    let body =
        json!({"ok": true, "key": key, "version": done.version, "rev": rev.map(|r| r.to_string())});
    Ok(match rev {
        Some(rev) => ([(ETAG, etag(rev))], axum::Json(body)).into_response(),
        None => axum::Json(body).into_response(),
    })
}

/// `PUT /docs/{key}`: the whole document.
pub(super) async fn put_doc(
    State(api): State<HttpApi>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let doc = parse_json(&body?)?;
    write_doc(&api, &uri, &headers, |k| BatchOp::Put(k, Value::Json(doc))).await
}

/// `PATCH /docs/{key}`: a JSON merge patch.
pub(super) async fn patch_doc(
    State(api): State<HttpApi>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let patch = parse_json(&body?)?;
    write_doc(&api, &uri, &headers, |k| BatchOp::Patch(k, patch)).await
}

/// `DELETE /docs/{key}`.
pub(super) async fn del_doc(State(api): State<HttpApi>, uri: Uri, headers: HeaderMap) -> ApiResult {
    write_doc(&api, &uri, &headers, BatchOp::Del).await
}

/// The parameters of `GET /docs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RangeParams {
    prefix: Option<String>,
    start: Option<String>,
    /// Where the range stops (exclusive), in the order of iteration.
    end: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    reverse: bool,
    /// Whether rows carry the documents (else keys and revisions only).
    include_docs: Option<bool>,
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
        // `end` is a lower bound going backwards.
        if let Some(stop) = params.end.map(String::into_bytes)
            && opts.gte.as_ref().is_none_or(|g| &stop >= g)
        {
            opts.gte = None;
            opts.gt = Some(stop);
        }
    } else {
        opts.lt = end.clone();
        match start {
            Some(s) if end.as_ref().is_some_and(|e| &s >= e) => return empty(),
            Some(s) if s > prefix => opts.gte = Some(s),
            _ => opts.gte = Some(prefix),
        }
        if let Some(stop) = params.end.map(String::into_bytes)
            && opts.lt.as_ref().is_none_or(|l| &stop < l)
        {
            opts.lt = Some(stop);
        }
    }
    let include_docs = params.include_docs.unwrap_or(true);
    let mut docs = Vec::new();
    let mut next = Json::Null;
    for entry in api.mb.range_revs(&opts)? {
        let (key, rev, value) = entry?;
        if docs.len() == limit {
            next = json!(text(&key));
            break;
        }
        let mut row = json!({"key": text(&key), "rev": rev.to_string()});
        if include_docs {
            row["doc"] = value_json(&value);
        }
        docs.push(row);
    }
    ok(json!({"docs": docs, "next": next}))
}

/// One operation of `POST /docs/_bulk`, with its precondition if it states one.
fn bulk_op(i: usize, op: &Json) -> Result<(BatchOp, Option<Precondition>), ApiError> {
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
        &["delete", "if_match", "if_none_match"]
    } else {
        &[verb, "doc", "if_match", "if_none_match"]
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
    let condition = match (obj.get("if_match"), obj.get("if_none_match")) {
        (Some(_), Some(_)) => return Err(bad("give if_match or if_none_match, not both")),
        (Some(m), None) => {
            let m = m.as_str().ok_or_else(|| bad("if_match must be a string"))?;
            Some(condition_of(m, &format!("op {i}: if_match"))?)
        }
        (None, Some(n)) if n.as_str() == Some("*") => Some(Precondition::Absent),
        (None, Some(_)) => return Err(bad("if_none_match takes only \"*\" (create only)")),
        (None, None) => None,
    };
    let op = match verb {
        "put" => BatchOp::Put(key, Value::Json(doc()?)),
        "patch" => BatchOp::Patch(key, doc()?),
        _ => BatchOp::Del(key),
    };
    Ok((op, condition))
}

/// `POST /docs/_bulk`: every op in one atomic batch, or none if one is malformed or one
/// precondition does not hold.
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
    let mut batch = Vec::with_capacity(ops.len());
    let mut conditions = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let (op, condition) = bulk_op(i, op)?;
        if let Some(c) = condition {
            conditions.push((op.key().to_vec(), c));
        }
        batch.push(op);
    }
    let count = batch.len();
    let done = api.mb.batch_if(conditions, batch).await?;
    let revs: Vec<Json> = done
        .revs
        .iter()
        .map(|r| r.map_or(Json::Null, |r| json!(r.to_string())))
        .collect();
    ok(json!({"ok": true, "ops": count, "version": done.version, "revs": revs}))
}
