//! PLACEHOLDER (replaced by the index-keys branch).
#![allow(dead_code)]
use serde_json::Value;
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    Field(String),
    Each,
}
pub(crate) fn parse(path: &str) -> Result<Vec<Segment>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("a path starts with /: {path:?}"));
    };
    Ok(rest
        .split('/')
        .map(|s| {
            if s == "[]" {
                Segment::Each
            } else {
                Segment::Field(s.replace("~1", "/").replace("~0", "~"))
            }
        })
        .collect())
}
pub(crate) fn format(segments: &[Segment]) -> String {
    segments
        .iter()
        .map(|s| match s {
            Segment::Each => "/[]".to_string(),
            Segment::Field(f) => format!("/{}", f.replace('~', "~0").replace('/', "~1")),
        })
        .collect()
}
pub(crate) fn values_at<'a>(doc: &'a Value, path: &[Segment]) -> Vec<&'a Value> {
    let mut cur = vec![doc];
    for seg in path {
        let mut next = Vec::new();
        for v in cur {
            match (seg, v) {
                (Segment::Field(f), Value::Object(m)) => next.extend(m.get(f)),
                (Segment::Each, Value::Array(a)) => next.extend(a.iter()),
                _ => {}
            }
        }
        cur = next;
    }
    cur
}
pub(crate) fn leaves(doc: &Value) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), doc)];
    while let Some((p, v)) = stack.pop() {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, c) in m.iter().rev() {
                    stack.push((
                        format!("{p}/{}", k.replace('~', "~0").replace('/', "~1")),
                        c,
                    ));
                }
            }
            Value::Array(a) if !a.is_empty() => {
                for c in a.iter().rev() {
                    stack.push((format!("{p}/[]"), c));
                }
            }
            _ => out.push((p, v)),
        }
    }
    out
}
