//! The stdin commands of path indexes and queries: `index add PATH` (or `PREFIX*` for every
//! path of the documents under a key prefix), `index list`, `index drop ID`, `index rebuild
//! ID`, and `query PATH OP JSON [PATH OP JSON ...] [prefix P] [limit N]`.

use multibee::MultiBee;
use multibee::db::{IndexTarget, Query};
use serde_json::{Value as Json, json};

use crate::Fields;

/// `index add|list|drop|rebuild ...`.
pub async fn index_command(mb: &MultiBee, rest: &str, fields: &mut Fields) -> Result<(), String> {
    let usage =
        "usage: index add PATH | index add PREFIX* | index list | index drop ID | index rebuild ID";
    let (action, arg) = rest.split_once(' ').unwrap_or((rest, ""));
    let arg = arg.trim();
    let id = || {
        arg.parse::<u32>()
            .map_err(|_| format!("{usage} (ID is a number)"))
    };
    match action {
        "add" if arg.starts_with('/') => {
            let info = mb
                .add_index(IndexTarget::Path(arg.to_string()))
                .await
                .map_err(|e| e.to_string())?;
            fields.insert("index".into(), multibee::http::index_json(&info));
        }
        "add" if arg.ends_with('*') => {
            let prefix = arg.trim_end_matches('*').as_bytes().to_vec();
            let info = mb
                .add_index(IndexTarget::EveryPath(prefix))
                .await
                .map_err(|e| e.to_string())?;
            fields.insert("index".into(), multibee::http::index_json(&info));
        }
        "list" if arg.is_empty() => {
            let list: Vec<Json> = mb
                .indexes()
                .map_err(|e| e.to_string())?
                .iter()
                .map(multibee::http::index_json)
                .collect();
            fields.insert("indexes".into(), Json::Array(list));
        }
        "drop" => {
            let id = id()?;
            mb.drop_index(id).await.map_err(|e| e.to_string())?;
            fields.insert("id".into(), json!(id));
        }
        "rebuild" => {
            let info = mb.rebuild_index(id()?).await.map_err(|e| e.to_string())?;
            fields.insert("index".into(), multibee::http::index_json(&info));
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}

/// `query PATH OP JSON [PATH OP JSON ...] [limit N]`: the documents meeting every condition,
/// from an index.
pub fn query_command(mb: &MultiBee, rest: &str, fields: &mut Fields) -> Result<(), String> {
    let text = multibee::query_text::parse(rest).map_err(|e| {
        format!("{e} (usage: query PATH OP JSON [PATH OP JSON ...] [prefix P] [limit N])")
    })?;
    let query = Query::new(text.conditions)
        .limit(text.limit.unwrap_or(100))
        .key_prefix(text.prefix.unwrap_or_default());
    let answer = mb.query(&query).map_err(|e| e.to_string())?;
    let mut results = Vec::with_capacity(answer.results.len());
    for hit in &answer.results {
        let value = hit.value().map_err(|e| e.to_string())?;
        results.push(json!({"key": String::from_utf8_lossy(&hit.key), "value": multibee::http::value_json(&value)}));
    }
    fields.insert("results".into(), Json::Array(results));
    fields.insert("index".into(), json!(answer.used));
    fields.insert("next".into(), json!(answer.next));
    Ok(())
}
