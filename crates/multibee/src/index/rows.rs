//! The rows of indexes: what a document contributes, kept right in every write transaction,
//! and written for existing documents by an index's builder.

use std::collections::BTreeSet;

use multibee_bee::{Bee, RangeOptions};
use multibee_feed::Error as FeedError;
use redb::{ReadableTable, WriteTransaction};
use serde_json::Value as Json;

use super::{DEFS, IndexInfo, IndexState, IndexTarget, ROWS, order, path};
use crate::fold::storage;
use crate::value::Value;

/// Keys an index's builder indexes per write transaction.
pub(crate) const BUILD_BATCH: usize = 512;

/// The first bytes of every row of `index` for `path`.
pub(crate) fn path_prefix(index: u32, path: &str) -> Vec<u8> {
    let mut out = index.to_be_bytes().to_vec();
    order::encode(&Json::String(path.to_string()), &mut out);
    out
}

/// The segments of a path index's path (parsed once per transaction, not per document);
/// none for an every-path index. Declared paths were checked when the index was added.
fn segments(index: &IndexInfo) -> Vec<path::Segment> {
    match &index.target {
        IndexTarget::Path(p) => path::parse(p).unwrap_or_default(),
        IndexTarget::EveryPath(_) => Vec::new(),
    }
}

/// The rows `value` (the document at `key`) gives `index`, whose path is `segments`.
pub(crate) fn rows_of(
    index: &IndexInfo,
    segments: &[path::Segment],
    key: &[u8],
    value: Option<&Value>,
) -> BTreeSet<Vec<u8>> {
    let mut rows = BTreeSet::new();
    let Some(Value::Json(doc)) = value else {
        return rows;
    };
    let mut push = |path: &str, v: &Json| {
        let mut row = path_prefix(index.id, path);
        order::encode(v, &mut row);
        row.extend_from_slice(key);
        rows.insert(row);
    };
    match &index.target {
        IndexTarget::Path(p) => {
            for v in path::values_at(doc, segments) {
                push(p, v);
            }
        }
        IndexTarget::EveryPath(prefix) if key.starts_with(prefix) => {
            for (p, v) in path::leaves(doc) {
                push(&p, v);
            }
        }
        IndexTarget::EveryPath(_) => {}
    }
    rows
}

/// Every declared index, in id order.
pub(crate) fn load(raw: &WriteTransaction) -> Result<Vec<IndexInfo>, FeedError> {
    let table = raw.open_table(DEFS).map_err(storage)?;
    let mut out = Vec::new();
    for row in table.iter().map_err(storage)? {
        let (id, bytes) = row.map_err(storage)?;
        let info = IndexInfo::decode(id.value(), bytes.value())
            .map_err(|e| FeedError::Corrupt(format!("index definition: {e}")))?;
        out.push(info);
    }
    Ok(out)
}

/// A key whose value changes in a write: (key, stored value before, value after).
pub(crate) type Change = (Vec<u8>, Option<Vec<u8>>, Option<Value>);

/// Brings the rows of every index up to date with `changes` (key, value before, value after),
/// inside the write transaction that makes them. Nothing is read when no index is declared.
pub(crate) fn maintain(raw: &WriteTransaction, changes: &[Change]) -> Result<(), FeedError> {
    if changes.is_empty() {
        return Ok(());
    }
    let indexes = load(raw)?;
    if indexes.is_empty() {
        return Ok(());
    }
    let mut table = raw.open_table(ROWS).map_err(storage)?;
    let indexes: Vec<(&IndexInfo, Vec<path::Segment>)> =
        indexes.iter().map(|i| (i, segments(i))).collect();
    for (key, before, after) in changes {
        let covering: Vec<_> = indexes
            .iter()
            .filter(|(i, _)| i.covers_written(key))
            .collect();
        if covering.is_empty() {
            continue;
        }
        // A stored value that does not decode indexes nothing (it is reported where read).
        let before = before.as_deref().and_then(|b| Value::from_stored(b).ok());
        for (index, segments) in covering {
            let old = rows_of(index, segments, key, before.as_ref());
            let new = rows_of(index, segments, key, after.as_ref());
            for row in old.difference(&new) {
                table.remove(row.as_slice()).map_err(storage)?;
            }
            for row in new.difference(&old) {
                table.insert(row.as_slice(), ()).map_err(storage)?;
            }
        }
    }
    Ok(())
}

/// Indexes the next [`BUILD_BATCH`] keys of the store for the building index `id`, inside one
/// write transaction; returns the index as it is after (`Ready` once every key is indexed),
/// or `None` if it was dropped meanwhile.
pub(crate) fn build_batch(
    raw: &WriteTransaction,
    store: &Bee,
    id: u32,
) -> Result<Option<IndexInfo>, FeedError> {
    let Some(mut index) = load(raw)?.into_iter().find(|i| i.id == id) else {
        return Ok(None);
    };
    let IndexState::Building { done, keys } = &index.state else {
        return Ok(Some(index));
    };
    let mut opts = RangeOptions {
        limit: Some(BUILD_BATCH),
        ..RangeOptions::default()
    };
    match (done, &index.target) {
        (Some(done), _) => opts.gt = Some(done.clone()),
        (None, IndexTarget::EveryPath(prefix)) if !prefix.is_empty() => {
            opts.gte = Some(prefix.clone())
        }
        (None, _) => {}
    }
    if let IndexTarget::EveryPath(prefix) = &index.target
        && let Some(end) = crate::prefix_end(prefix)
    {
        opts.lt = Some(end);
    }
    let entries = store
        .head_in(raw)
        .and_then(|head| head.scan(&opts))
        .map_err(|e| FeedError::Corrupt(format!("reading the store to build an index: {e}")))?;
    let mut table = raw.open_table(ROWS).map_err(storage)?;
    let segments = segments(&index);
    for entry in &entries {
        let value = Value::from_stored(&entry.value).ok();
        for row in rows_of(&index, &segments, &entry.key, value.as_ref()) {
            table.insert(row.as_slice(), ()).map_err(storage)?;
        }
    }
    drop(table);
    index.state = match entries.last() {
        Some(last) if entries.len() == BUILD_BATCH => IndexState::Building {
            done: Some(last.key.clone()),
            keys: keys + entries.len() as u64,
        },
        _ => IndexState::Ready,
    };
    save(raw, &index)?;
    Ok(Some(index))
}

/// Writes `index` to `mb-indexes-1`.
pub(crate) fn save(raw: &WriteTransaction, index: &IndexInfo) -> Result<(), FeedError> {
    raw.open_table(DEFS)
        .map_err(storage)?
        .insert(index.id, index.encode().as_slice())
        .map_err(storage)?;
    Ok(())
}

/// Removes every row of index `id`.
pub(crate) fn clear(raw: &WriteTransaction, id: u32) -> Result<(), FeedError> {
    let mut table = raw.open_table(ROWS).map_err(storage)?;
    let lo = id.to_be_bytes();
    let rows: Vec<Vec<u8>> = {
        let range = table.range::<&[u8]>(lo.as_slice()..).map_err(storage)?;
        let mut rows = Vec::new();
        for row in range {
            let (k, ()) = row.map(|(k, v)| (k, v.value())).map_err(storage)?;
            if !k.value().starts_with(&lo) {
                break;
            }
            rows.push(k.value().to_vec());
        }
        rows
    };
    for row in rows {
        table.remove(row.as_slice()).map_err(storage)?;
    }
    Ok(())
}
