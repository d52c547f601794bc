//! The changes feed: `GET /_changes`.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::docs::{check_limit, doc_json, text};
use super::error::{ApiError, ApiResult, ok};
use super::{DEFAULT_LONGPOLL_MS, HttpApi, MAX_LONGPOLL_MS};
use crate::ChangesOptions;

/// How `GET /_changes` answers.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum Feed {
    /// What there is now.
    #[default]
    Normal,
    /// What there is now, or else the next change (within a timeout).
    Longpoll,
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

pub(super) async fn changes(
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
