//! Queries: conditions on the values of paths, answered from an index (or, when the caller
//! allows it, by a scan of the store), from one read snapshot.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::ops::Bound;

use multibee_bee::RangeOptions;
use redb::{ReadTransaction, ReadableTable};
use serde_json::Value as Json;

use super::rows::path_prefix;
use super::{DEFS, IndexInfo, IndexState, IndexTarget, ROWS, order, path};
use crate::error::{Error, Result};
use crate::value::Value;

/// How a [`Condition`] compares a path's value with the given one, in the total order of JSON
/// values (null < false < true < numbers < strings < arrays < objects; numbers by value,
/// strings by bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Equal.
    Eq,
    /// Greater.
    Gt,
    /// Greater or equal.
    Gte,
    /// Less.
    Lt,
    /// Less or equal.
    Lte,
    /// A string that starts with the given string.
    Prefix,
}

impl std::str::FromStr for Op {
    type Err = Error;

    fn from_str(s: &str) -> Result<Op> {
        Ok(match s {
            "eq" => Op::Eq,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "prefix" => Op::Prefix,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown operator {other:?}: use eq, gt, gte, lt, lte or prefix"
                )));
            }
        })
    }
}

/// One condition: some value the path reaches in the document compares with `value` by `op`.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    /// A path (`/user/name`, `/tags/[]`).
    pub path: String,
    /// The comparison.
    pub op: Op,
    /// The value compared with (a string for [`Op::Prefix`]).
    pub value: Json,
}

impl Condition {
    /// A condition.
    pub fn new(path: impl Into<String>, op: Op, value: Json) -> Self {
        Condition {
            path: path.into(),
            op,
            value,
        }
    }

    /// Whether `doc` meets it: the reference every answer is checked against.
    pub fn holds(&self, doc: &Json) -> bool {
        match path::parse(&self.path) {
            Ok(segments) => self.holds_at(doc, &segments),
            Err(_) => false,
        }
    }

    /// [`Condition::holds`] with the path parsed.
    fn holds_at(&self, doc: &Json, segments: &[path::Segment]) -> bool {
        path::values_at(doc, segments)
            .into_iter()
            .any(|v| self.matches(v))
    }

    fn matches(&self, v: &Json) -> bool {
        let ord = order::cmp_json(v, &self.value);
        match self.op {
            Op::Eq => ord == Ordering::Equal,
            Op::Gt => ord == Ordering::Greater,
            Op::Gte => ord != Ordering::Less,
            Op::Lt => ord == Ordering::Less,
            Op::Lte => ord != Ordering::Greater,
            Op::Prefix => match (v, &self.value) {
                (Json::String(s), Json::String(p)) => s.starts_with(p.as_str()),
                _ => false,
            },
        }
    }
}

/// The order of a query's results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueryOrder {
    /// The index's order: by the value of the indexed condition's path, then by key (key
    /// order for an `eq` condition). A document matching through several values of the path
    /// (`/tags/[]`) comes once per page, at its first.
    #[default]
    Index,
    /// By key.
    Key,
}

/// A query ([`crate::MultiBee::query`]): documents meeting every condition.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Query {
    /// Conditions, all of which a document meets (at least one).
    pub conditions: Vec<Condition>,
    /// Only documents whose keys start with this.
    pub key_prefix: Vec<u8>,
    /// At most this many results.
    pub limit: usize,
    /// Resume after this cursor (a previous answer's `next`).
    pub after: Option<String>,
    /// The order of the results.
    pub order: QueryOrder,
    /// Without an index for any condition, scan the store (and say so) rather than fail.
    pub allow_scan: bool,
}

impl Query {
    /// Documents meeting `conditions`, at most 100, in index order, from an index only.
    pub fn new(conditions: Vec<Condition>) -> Self {
        Query {
            conditions,
            key_prefix: Vec::new(),
            limit: 100,
            after: None,
            order: QueryOrder::Index,
            allow_scan: false,
        }
    }

    /// Sets `limit`.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Sets `key_prefix`.
    pub fn key_prefix(mut self, prefix: impl Into<Vec<u8>>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Sets `after`.
    pub fn after(mut self, cursor: Option<String>) -> Self {
        self.after = cursor;
        self
    }

    /// Sets `order`.
    pub fn order(mut self, order: QueryOrder) -> Self {
        self.order = order;
        self
    }

    /// Sets `allow_scan`.
    pub fn allow_scan(mut self, allow: bool) -> Self {
        self.allow_scan = allow;
        self
    }
}

/// What a query found.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct QueryAnswer {
    /// The documents, in the query's order.
    pub results: Vec<Hit>,
    /// What answered it: `index N on PATH`, or `scan`.
    pub used: String,
    /// Pass as [`Query::after`] for the next page; `None` when there is none.
    pub next: Option<String>,
}

/// A document a query found: its key, and its value as stored (parsed by [`Hit::value`], or
/// passed on as JSON text with [`Hit::stored`] by layers that serialise it again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    /// The document's key.
    pub key: Vec<u8>,
    stored: Vec<u8>,
}

impl Hit {
    /// The document.
    pub fn value(&self) -> Result<Value> {
        Value::from_stored(&self.stored).map_err(Error::Corrupt)
    }

    /// The document as stored: canonical JSON text (or bytes), not parsed.
    pub fn stored(&self) -> Result<crate::value::StoredRef<'_>> {
        Value::peek_stored(&self.stored).map_err(Error::Corrupt)
    }
}

/// The most matches a query in key order sorts (all of them are read to sort them).
pub const MAX_KEY_ORDERED: usize = 100_000;

/// Answers `query` from the snapshot `txn` of the store whose head `head` reads.
pub(crate) fn run(
    txn: &ReadTransaction,
    head: &multibee_bee::SnapshotHead,
    query: &Query,
) -> Result<QueryAnswer> {
    if query.conditions.is_empty() {
        return Err(Error::InvalidArgument("a query needs a condition".into()));
    }
    for c in &query.conditions {
        path::parse(&c.path)
            .map_err(|e| Error::InvalidArgument(format!("bad path {:?}: {e}", c.path)))?;
        if c.op == Op::Prefix && !c.value.is_string() {
            return Err(Error::InvalidArgument(format!(
                "prefix compares strings: {} is not one",
                c.value
            )));
        }
    }
    let indexes = load_read(txn)?;
    // An eq condition narrows best; then any other.
    // An eq condition narrows best; then any other. A ready index first: a building one
    // answers only if nothing else can.
    let ordered: Vec<&Condition> = query
        .conditions
        .iter()
        .filter(|c| c.op == Op::Eq)
        .chain(query.conditions.iter().filter(|c| c.op != Op::Eq))
        .collect();
    let find = |ready: bool| {
        ordered.iter().find_map(|c| {
            indexes
                .iter()
                .find(|i| {
                    (i.state == IndexState::Ready) == ready && usable(i, c, &query.key_prefix)
                })
                .map(|i| (i, *c))
        })
    };
    let choice = find(true).or_else(|| find(false));
    let limit = query.limit.max(1);
    match choice {
        Some((index, _)) if index.state != IndexState::Ready => Err(Error::IndexBuilding {
            index: format!("index {} on {}", index.id, index.target),
            keys_done: match &index.state {
                IndexState::Building { keys, .. } => *keys,
                IndexState::Ready => 0,
            },
        }),
        Some((index, condition)) => {
            let used = format!("index {} on {}", index.id, condition.path);
            match query.order {
                QueryOrder::Index => from_index(txn, head, query, index, condition, limit, used),
                QueryOrder::Key => {
                    let all = MAX_KEY_ORDERED + 1;
                    let mut all = from_index(txn, head, query, index, condition, all, used)?;
                    if all.results.len() > MAX_KEY_ORDERED {
                        return Err(Error::InvalidArgument(format!(
                            "more than {MAX_KEY_ORDERED} documents match: key order sorts them \
                             all, so ask for index order (or narrow the query)"
                        )));
                    }
                    all.results.sort_by(|a, b| a.key.cmp(&b.key));
                    Ok(key_page(all.results, query, limit, all.used))
                }
            }
        }
        None if query.allow_scan => scan(head, query, limit),
        None => Err(Error::NoIndex(
            query
                .conditions
                .iter()
                .map(|c| c.path.clone())
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// Every declared index, from a read snapshot.
pub(crate) fn load_read(txn: &ReadTransaction) -> Result<Vec<IndexInfo>> {
    let table = match txn.open_table(DEFS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(storage(e)),
    };
    let mut out = Vec::new();
    for row in table.iter().map_err(storage)? {
        let (id, bytes) = row.map_err(storage)?;
        out.push(IndexInfo::decode(id.value(), bytes.value()).map_err(Error::Corrupt)?);
    }
    Ok(out)
}

fn storage(e: impl Into<redb::Error>) -> Error {
    Error::Feed(crate::fold::storage(e))
}

/// Whether `index` has a row for every value that could meet `condition` in the documents
/// under `key_prefix`. A path index has one for every value its path reaches. An every-path
/// index has rows for leaves only (scalars, empty arrays and objects), so it answers only
/// conditions that no non-empty array or object can meet: those sort above every scalar and
/// empty container.
fn usable(index: &IndexInfo, condition: &Condition, key_prefix: &[u8]) -> bool {
    match &index.target {
        IndexTarget::Path(p) => *p == condition.path,
        IndexTarget::EveryPath(prefix) => {
            let leaf = |v: &Json| match v {
                Json::Array(a) => a.is_empty(),
                Json::Object(o) => o.is_empty(),
                _ => true,
            };
            let scalar = !matches!(condition.value, Json::Array(_) | Json::Object(_));
            key_prefix.starts_with(prefix)
                && match condition.op {
                    Op::Eq | Op::Prefix => leaf(&condition.value),
                    Op::Lt | Op::Lte => scalar,
                    Op::Gt | Op::Gte => false,
                }
        }
    }
}

/// The bounds of the rows of `index` whose value meets `condition`.
fn bounds(index: u32, condition: &Condition) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let base = path_prefix(index, &condition.path);
    let all_end = crate::prefix_end(&base).map_or(Bound::Unbounded, Bound::Excluded);
    let mut at = base.clone();
    if condition.op == Op::Prefix {
        let text = condition.value.as_str().unwrap_or_default();
        order::string_prefix(text, &mut at);
    } else {
        order::encode(&condition.value, &mut at);
    }
    // Every row whose value is the condition's starts with `at` (values are self-delimiting).
    let at_end = crate::prefix_end(&at).map_or(Bound::Unbounded, Bound::Excluded);
    match condition.op {
        Op::Eq | Op::Prefix => (Bound::Included(at), at_end),
        Op::Gt => (
            match at_end {
                Bound::Excluded(end) => Bound::Included(end),
                _ => Bound::Excluded(at),
            },
            all_end,
        ),
        Op::Gte => (Bound::Included(at), all_end),
        Op::Lt => (Bound::Included(base), Bound::Excluded(at)),
        Op::Lte => (Bound::Included(base), at_end),
    }
}

fn from_index(
    txn: &ReadTransaction,
    head: &multibee_bee::SnapshotHead,
    query: &Query,
    index: &IndexInfo,
    condition: &Condition,
    limit: usize,
    used: String,
) -> Result<QueryAnswer> {
    // A document has several rows only when the path fans out over an array. Otherwise every
    // condition on the same path narrows the one range of rows, and the rows prove them all.
    let fans_out = path::parse(&condition.path)
        .unwrap_or_default()
        .contains(&path::Segment::Each);
    let proven: Vec<&Condition> = query
        .conditions
        .iter()
        .filter(|c| std::ptr::eq(*c, condition) || !fans_out && c.path == condition.path)
        .collect();
    let (mut lower, mut upper) = (Bound::Unbounded, Bound::Unbounded);
    for c in &proven {
        let (lo, hi) = bounds(index.id, c);
        lower = tighter(lower, lo, Ordering::Greater);
        upper = tighter(upper, hi, Ordering::Less);
    }
    if query.order == QueryOrder::Index
        && let Some(after) = &query.after
    {
        let row = from_hex(after)?;
        // A cursor of this index and path (another answered the previous page otherwise).
        if !row.starts_with(&path_prefix(index.id, &condition.path)) {
            return Err(Error::InvalidArgument(format!(
                "the cursor {after:?} is not one of index {} on {}: start again without it",
                index.id, condition.path
            )));
        }
        if bound_below(&lower, &row) {
            lower = Bound::Excluded(row);
        }
    }
    let table = match txn.open_table(ROWS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return Ok(QueryAnswer {
                results: Vec::new(),
                used,
                next: None,
            });
        }
        Err(e) => return Err(storage(e)),
    };
    let range = table
        .range::<&[u8]>((
            lower.as_ref().map(Vec::as_slice),
            upper.as_ref().map(Vec::as_slice),
        ))
        .map_err(storage)?;
    let prefix_len = path_prefix(index.id, &condition.path).len();
    // The rows prove their conditions (in this snapshot): only the others are checked, on the
    // parsed document.
    let checks: Vec<_> = parsed(&query.conditions)
        .into_iter()
        .filter(|(c, _)| !proven.iter().any(|p| std::ptr::eq(*p, *c)))
        .collect();
    let mut results = Vec::new();
    let mut seen = HashSet::new();
    let mut last_row = None;
    for row in range {
        let (row, ()) = row.map(|(k, v)| (k, v.value())).map_err(storage)?;
        let row = row.value();
        let Some(used_len) = order::encoded_len(&row[prefix_len.min(row.len())..]) else {
            return Err(Error::Corrupt("an index row does not decode".into()));
        };
        let key = &row[(prefix_len + used_len).min(row.len())..];
        if !key.starts_with(&query.key_prefix) || fans_out && !seen.insert(key.to_vec()) {
            continue;
        }
        // The document as this snapshot holds it.
        let Some(stored) = head.get(key)? else {
            continue;
        };
        if !checks.is_empty() {
            let value = Value::from_stored(&stored).map_err(Error::Corrupt)?;
            let Value::Json(doc) = &value else { continue };
            if !checks.iter().all(|(c, segments)| c.holds_at(doc, segments)) {
                continue;
            }
        }
        results.push(Hit {
            key: key.to_vec(),
            stored,
        });
        if results.len() >= limit {
            last_row = Some(row.to_vec());
            break;
        }
    }
    Ok(QueryAnswer {
        results,
        used,
        next: last_row.map(|r| to_hex(&r)),
    })
}

/// A scan of the store (only with [`Query::allow_scan`]), in key order.
fn scan(head: &multibee_bee::SnapshotHead, query: &Query, limit: usize) -> Result<QueryAnswer> {
    let mut opts = RangeOptions::default();
    if !query.key_prefix.is_empty() {
        opts.gte = Some(query.key_prefix.clone());
        opts.lt = crate::prefix_end(&query.key_prefix);
    }
    if let Some(after) = &query.after {
        let after = from_hex(after)?;
        if after >= query.key_prefix {
            opts.gt = Some(after);
            opts.gte = None;
        }
    }
    let checks = parsed(&query.conditions);
    let mut results = Vec::new();
    let mut next = None;
    for entry in head.scan(&opts)? {
        if !entry.key.starts_with(&query.key_prefix) {
            break;
        }
        let value = Value::from_stored(&entry.value).map_err(Error::Corrupt)?;
        let Value::Json(doc) = &value else { continue };
        if checks.iter().all(|(c, segments)| c.holds_at(doc, segments)) {
            results.push(Hit {
                key: entry.key.clone(),
                stored: entry.value,
            });
            if results.len() >= limit {
                next = Some(to_hex(&entry.key));
                break;
            }
        }
    }
    Ok(QueryAnswer {
        results,
        used: "scan".into(),
        next,
    })
}

/// The conditions with their paths parsed (checked by `run` before).
fn parsed(conditions: &[Condition]) -> Vec<(&Condition, Vec<path::Segment>)> {
    conditions
        .iter()
        .map(|c| (c, path::parse(&c.path).unwrap_or_default()))
        .collect()
}

/// A page in key order of all the results.
fn key_page(all: Vec<Hit>, query: &Query, limit: usize, used: String) -> QueryAnswer {
    let after = query.after.as_deref().and_then(|a| from_hex(a).ok());
    let mut results: Vec<_> = all
        .into_iter()
        .filter(|hit| after.as_ref().is_none_or(|a| &hit.key > a))
        .take(limit + 1)
        .collect();
    let next = match results.len() > limit {
        true => {
            results.truncate(limit);
            results.last().map(|hit| to_hex(&hit.key))
        }
        false => None,
    };
    QueryAnswer {
        results,
        used,
        next,
    }
}

/// The tighter of two bounds of one side: the larger lower bound (`Greater`) or the smaller
/// upper bound (`Less`); at the same bytes, the exclusive one.
fn tighter(a: Bound<Vec<u8>>, b: Bound<Vec<u8>>, side: Ordering) -> Bound<Vec<u8>> {
    let bytes = |x: &Bound<Vec<u8>>| match x {
        Bound::Included(v) | Bound::Excluded(v) => Some(v.clone()),
        Bound::Unbounded => None,
    };
    match (bytes(&a), bytes(&b)) {
        (None, _) => b,
        (_, None) => a,
        (Some(x), Some(y)) => match x.cmp(&y) {
            Ordering::Equal if matches!(a, Bound::Excluded(_)) => a,
            Ordering::Equal => b,
            ord if ord == side => a,
            _ => b,
        },
    }
}

fn bound_below(lower: &Bound<Vec<u8>>, row: &[u8]) -> bool {
    match lower {
        Bound::Included(l) | Bound::Excluded(l) => l.as_slice() <= row,
        Bound::Unbounded => true,
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Result<Vec<u8>> {
    let bad = || Error::InvalidArgument(format!("bad cursor {text:?}"));
    if !text.len().is_multiple_of(2) {
        return Err(bad());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(bad)
        })
        .collect()
}
