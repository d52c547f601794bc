//! `/_query` and `/_index`: queries on the values of document paths, and the indexes that
//! answer them ([`crate::db::MultiBee::query`]).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value as Json, json};

use super::HttpApi;
use super::docs::{text, value_json};
use super::error::{ApiError, ApiResult, ok, parse_json};
use crate::db::{
    Condition, IndexInfo, IndexState, IndexTarget, QueryAnswer, QueryOrder, StoredRef,
};

/// A query as asked over HTTP: the parameters of `GET /_query` (with `q`) or the body of
/// `POST /_query` (with `where`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct QueryRequest {
    /// Conditions in the text form of [`crate::query_text`]: `PATH OP JSON ...`.
    q: Option<String>,
    /// Conditions as JSON.
    #[serde(rename = "where")]
    conditions: Option<Vec<ConditionBody>>,
    limit: Option<usize>,
    after: Option<String>,
    order: Option<String>,
    prefix: Option<String>,
    #[serde(default)]
    scan: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionBody {
    path: String,
    op: String,
    value: Json,
}

/// `GET /_query?q=PATH OP JSON ...[&limit=N&after=C&order=index|key&prefix=P&scan=true]`.
pub(super) async fn get(
    State(api): State<HttpApi>,
    params: Result<Query<QueryRequest>, QueryRejection>,
) -> ApiResult {
    let Query(request) = params?;
    answer(&api, request).await
}

/// `POST /_query` with `{"where":[{"path","op","value"}],"limit","after","order","prefix","scan"}`
/// (or `"q"` in the text form).
pub(super) async fn post(
    State(api): State<HttpApi>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let request: QueryRequest = serde_json::from_value(parse_json(&body?)?)
        .map_err(|e| ApiError::bad_request(format!("bad query: {e}")))?;
    answer(&api, request).await
}

impl QueryRequest {
    /// The query it asks, or why it is not one.
    fn query(self) -> Result<crate::db::Query, ApiError> {
        let (conditions, limit, prefix) = match (self.q, self.conditions) {
            (Some(q), None) => {
                let text = crate::query_text::parse(&q).map_err(ApiError::bad_request)?;
                (
                    text.conditions,
                    self.limit.or(text.limit),
                    self.prefix.or(text.prefix),
                )
            }
            (None, Some(list)) => {
                let mut conditions = Vec::new();
                for c in list {
                    let op =
                        c.op.parse()
                            .map_err(|e: crate::db::Error| ApiError::bad_request(e.to_string()))?;
                    conditions.push(Condition::new(c.path, op, c.value));
                }
                (conditions, self.limit, self.prefix)
            }
            _ => {
                return Err(ApiError::bad_request(
                    "a query has conditions in \"q\" (text) or \"where\" (JSON), one of them",
                ));
            }
        };
        build(
            conditions,
            limit,
            self.after,
            self.order.as_deref(),
            prefix,
            self.scan,
        )
    }
}

/// The most results one answer holds.
const MAX_LIMIT: usize = 10_000;

fn build(
    conditions: Vec<Condition>,
    limit: Option<usize>,
    after: Option<String>,
    order: Option<&str>,
    prefix: Option<String>,
    scan: bool,
) -> Result<crate::db::Query, ApiError> {
    let order = match order {
        None | Some("index") => QueryOrder::Index,
        Some("key") => QueryOrder::Key,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "order is index or key, not {other:?}"
            )));
        }
    };
    let limit = limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!("limit is 1 to {MAX_LIMIT}")));
    }
    Ok(crate::db::Query::new(conditions)
        .limit(limit)
        .after(after)
        .order(order)
        .key_prefix(prefix.unwrap_or_default())
        .allow_scan(scan))
}

async fn answer(api: &HttpApi, request: QueryRequest) -> ApiResult {
    let query = request.query()?;
    // A query reads the store (a scan, or a sort in key order, may read much of it): off the
    // async workers.
    let mb = api.mb.clone();
    let answered = tokio::task::spawn_blocking(move || mb.query(&query))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string()))?;
    let QueryAnswer {
        results,
        used,
        next,
        ..
    } = answered?;
    // Stored documents are canonical JSON text: spliced into the answer as they are.
    let mut rows = Vec::with_capacity(results.len());
    for hit in &results {
        let doc = match hit.stored()? {
            StoredRef::Json(text) => {
                let text = std::str::from_utf8(text)
                    .map_err(|e| crate::db::Error::Corrupt(e.to_string()))?;
                Doc::Text(
                    serde_json::from_str(text)
                        .map_err(|e| crate::db::Error::Corrupt(e.to_string()))?,
                )
            }
            StoredRef::Bytes(_) => Doc::Value(value_json(&hit.value()?)),
        };
        rows.push(Row {
            key: text(&hit.key),
            doc,
        });
    }
    let body = Answer {
        results: rows,
        index: &used,
        next,
    };
    Ok(axum::Json(body).into_response())
}

/// A row of a query's answer.
#[derive(Serialize)]
struct Row<'a> {
    key: String,
    doc: Doc<'a>,
}

/// A document: stored JSON text as it is, or a value.
#[derive(Serialize)]
#[serde(untagged)]
enum Doc<'a> {
    Text(&'a RawValue),
    Value(Json),
}

/// A query's answer.
#[derive(Serialize)]
struct Answer<'a> {
    results: Vec<Row<'a>>,
    index: &'a str,
    next: Option<String>,
}

/// An index as the API shows it.
pub fn index_json(info: &IndexInfo) -> Json {
    let (target, value) = match &info.target {
        IndexTarget::Path(p) => ("path", json!(p)),
        IndexTarget::EveryPath(prefix) => ("every", json!(text(prefix))),
    };
    let state = match &info.state {
        IndexState::Ready => json!({"state": "ready"}),
        IndexState::Building { keys, .. } => json!({"state": "building", "keys_done": keys}),
    };
    let mut out = json!({"id": info.id, target: value});
    if let (Some(out), Some(state)) = (out.as_object_mut(), state.as_object()) {
        out.extend(state.clone());
    }
    out
}

/// `GET /_index`: the declared indexes.
pub(super) async fn list(State(api): State<HttpApi>) -> ApiResult {
    let indexes: Vec<Json> = api.mb.indexes()?.iter().map(index_json).collect();
    ok(json!({"indexes": indexes}))
}

/// `POST /_index` with `{"path":"/user/name"}` or `{"every":"KEY PREFIX"}`: declares an index
/// (built in the background; the answer says `building` until it is).
pub(super) async fn add(
    State(api): State<HttpApi>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = parse_json(&body?)?;
    let target = match body.as_object().filter(|o| o.len() == 1) {
        Some(o) if o.get("path").is_some_and(Json::is_string) => {
            IndexTarget::Path(o["path"].as_str().unwrap_or_default().to_string())
        }
        Some(o) if o.get("every").is_some_and(Json::is_string) => {
            IndexTarget::EveryPath(o["every"].as_str().unwrap_or_default().as_bytes().to_vec())
        }
        _ => {
            return Err(ApiError::bad_request(
                "the body is {\"path\":\"/a/b\"} or {\"every\":\"key prefix\"}",
            ));
        }
    };
    let info = api.mb.add_index(target).await?;
    let mut out = index_json(&info);
    if let Some(o) = out.as_object_mut() {
        o.insert("ok".into(), json!(true));
    }
    Ok((StatusCode::ACCEPTED, axum::Json(out)).into_response())
}

/// `DELETE /_index/{id}`: removes an index and its rows.
pub(super) async fn delete(
    State(api): State<HttpApi>,
    id: Result<Path<u32>, PathRejection>,
) -> ApiResult {
    let Path(id) = id?;
    api.mb.drop_index(id).await?;
    ok(json!({"ok": true, "id": id}))
}
