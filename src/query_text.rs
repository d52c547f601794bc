//! The text form of a query, shared by the node's stdin (`query ...`) and `GET /_query?q=...`:
//! conditions `PATH OP JSON` one after the other, then optionally `limit N`.
//!
//! ```
//! use multibee::db::Op;
//! use multibee::query_text::parse;
//!
//! let (conditions, limit) = parse(r#"/city eq "New York" /pop gte 1000000 limit 5"#).unwrap();
//! assert_eq!(conditions.len(), 2);
//! assert_eq!((conditions[0].op, conditions[0].value.clone()), (Op::Eq, "New York".into()));
//! assert_eq!(limit, Some(5));
//! assert!(parse("/city equals 3").is_err());
//! ```

use multibee_multibee::{Condition, Op};
use serde_json::Value as Json;

/// The conditions of `text` and its `limit`, or what is wrong with it.
pub fn parse(text: &str) -> Result<(Vec<Condition>, Option<usize>), String> {
    let mut rest = text.trim_start();
    let mut conditions = Vec::new();
    let mut limit = None;
    while !rest.is_empty() {
        let (word, after) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let after = after.trim_start();
        if word == "limit" {
            let (n, tail) = after.split_once(char::is_whitespace).unwrap_or((after, ""));
            let n = n
                .parse::<usize>()
                .map_err(|_| format!("limit takes a number, not {n:?}"))?;
            if !tail.trim().is_empty() {
                return Err(format!("nothing may follow the limit: {:?}", tail.trim()));
            }
            limit = Some(n);
            break;
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
    Ok((conditions, limit))
}
