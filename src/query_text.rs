//! The text form of a query, shared by the node's stdin (`query ...`) and `GET /_query?q=...`:
//! conditions `PATH OP JSON` one after the other, then optionally `prefix P` (only documents
//! whose keys start with `P`, which lets an index on every path under `P` answer) and
//! `limit N`.
//!
//! ```
//! use multibee::db::Op;
//! use multibee::query_text::parse;
//!
//! let q = parse(r#"/city eq "New York" /pop gte 1000000 prefix cities/ limit 5"#).unwrap();
//! assert_eq!(q.conditions.len(), 2);
//! assert_eq!((q.conditions[0].op, q.conditions[0].value.clone()), (Op::Eq, "New York".into()));
//! assert_eq!((q.prefix.as_deref(), q.limit), (Some("cities/"), Some(5)));
//! assert!(parse("/city equals 3").is_err());
//! ```

use multibee_multibee::{Condition, Op};
use serde_json::Value as Json;

/// A query in text form ([`parse`]).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct TextQuery {
    /// The conditions, all of which a document meets.
    pub conditions: Vec<Condition>,
    /// `prefix P`: only documents whose keys start with `P`.
    pub prefix: Option<String>,
    /// `limit N`.
    pub limit: Option<usize>,
}

/// The query `text` says, or what is wrong with it.
pub fn parse(text: &str) -> Result<TextQuery, String> {
    let mut rest = text.trim_start();
    let mut conditions = Vec::new();
    let (mut limit, mut prefix) = (None, None);
    while !rest.is_empty() {
        let (word, after) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let after = after.trim_start();
        if word == "limit" || word == "prefix" {
            let (arg, tail) = after.split_once(char::is_whitespace).unwrap_or((after, ""));
            if arg.is_empty() {
                return Err(format!("{word} takes an argument"));
            }
            match word {
                "limit" => {
                    let n = arg
                        .parse::<usize>()
                        .map_err(|_| format!("limit takes a number, not {arg:?}"))?;
                    limit = Some(n);
                }
                _ => prefix = Some(arg.to_string()),
            }
            rest = tail.trim_start();
            if !rest.is_empty() && !rest.starts_with("limit") && !rest.starts_with("prefix") {
                return Err(format!("only prefix and limit may follow {word}: {rest:?}"));
            }
            continue;
        }
        if !word.starts_with('/') {
            return Err(format!(
                "expected a path (starting with /) or limit, found {word:?}"
            ));
        }
        let (op, after) = after.split_once(char::is_whitespace).unwrap_or((after, ""));
        if op.is_empty() {
            return Err(format!("{word} needs an operator and a JSON value"));
        }
        let op: Op = op
            .parse()
            .map_err(|e: multibee_multibee::Error| e.to_string())?;
        let after = after.trim_start();
        let mut values = serde_json::Deserializer::from_str(after).into_iter::<Json>();
        let value = match values.next() {
            Some(Ok(value)) => value,
            Some(Err(e)) => return Err(format!("the value after {word} is not JSON: {e}")),
            None => return Err(format!("{word} needs a JSON value")),
        };
        rest = after[values.byte_offset()..].trim_start();
        conditions.push(Condition::new(word, op, value));
    }
    if conditions.is_empty() {
        return Err("a query needs a condition: PATH OP JSON (OP: eq gt gte lt lte prefix)".into());
    }
    Ok(TextQuery {
        conditions,
        prefix,
        limit,
    })
}
