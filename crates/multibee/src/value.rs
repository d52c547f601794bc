//! Document values: JSON documents (merged per field) and opaque bytes (merged as a whole).

use serde::{Deserialize, Serialize};

/// The value of a key in the merged store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// A JSON document. Objects merge per field, recursively; arrays and scalars as a whole.
    Json(#[serde(with = "json_text")] serde_json::Value),
    /// Opaque bytes, merged as a whole-value register.
    Bytes(Vec<u8>),
}

/// How deep a JSON value may nest: objects and arrays count one level each, so `{"a":[1]}` is
/// two deep. Writes deeper than this are refused, and remote diffs deeper than this are skipped
/// as invalid, so that every stored value reads back (JSON parsers stop at 128 levels).
pub const MAX_DEPTH: usize = 64;

/// How deeply `v` nests (0 for a scalar). Iterative, so any input is safe to measure.
pub fn json_depth(v: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &serde_json::Value>> = match v {
            serde_json::Value::Array(items) => Box::new(items.iter()),
            serde_json::Value::Object(fields) => Box::new(fields.values()),
            _ => {
                deepest = deepest.max(depth);
                continue;
            }
        };
        deepest = deepest.max(depth + 1);
        stack.extend(children.map(|c| (c, depth + 1)));
    }
    deepest
}

/// A stored value, borrowed and not decoded: see [`Value::peek_stored`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredRef<'a> {
    /// Canonical JSON text.
    Json(&'a [u8]),
    /// Opaque bytes.
    Bytes(&'a [u8]),
}

const TAG_JSON: u8 = 1;
const TAG_BYTES: u8 = 2;

impl Value {
    /// The JSON document, if this is one.
    pub fn as_json(&self) -> Option<&serde_json::Value> {
        match self {
            Value::Json(v) => Some(v),
            Value::Bytes(_) => None,
        }
    }

    /// How deeply the value nests (0 for bytes and JSON scalars); see [`MAX_DEPTH`].
    pub fn depth(&self) -> usize {
        match self {
            Value::Json(v) => json_depth(v),
            Value::Bytes(_) => 0,
        }
    }

    /// The bytes this value is stored as in the store bee: a tag, then canonical JSON text
    /// (object fields sorted) or the bytes. Two peers with the same value store the same bytes.
    pub fn to_stored(&self) -> Vec<u8> {
        match self {
            Value::Json(v) => {
                let mut out = vec![TAG_JSON];
                // Writing a `serde_json::Value` into a Vec cannot fail: its keys are strings.
                let _ = serde_json::to_writer(&mut out, v);
                out
            }
            Value::Bytes(b) => {
                let mut out = Vec::with_capacity(1 + b.len());
                out.push(TAG_BYTES);
                out.extend_from_slice(b);
                out
            }
        }
    }

    /// Decodes what [`Value::to_stored`] wrote.
    pub fn from_stored(bytes: &[u8]) -> Result<Value, String> {
        match Value::peek_stored(bytes)? {
            StoredRef::Json(text) => serde_json::from_slice(text)
                .map(Value::Json)
                .map_err(|e| format!("stored JSON does not parse: {e}")),
            StoredRef::Bytes(b) => Ok(Value::Bytes(b.to_vec())),
        }
    }

    /// What [`Value::to_stored`] wrote, split without parsing the JSON text: to copy a stored
    /// document into JSON output as it is (the text is what `serde_json` wrote, so it parses).
    pub fn peek_stored(bytes: &[u8]) -> Result<StoredRef<'_>, String> {
        match bytes.split_first() {
            Some((&TAG_JSON, text)) => Ok(StoredRef::Json(text)),
            Some((&TAG_BYTES, b)) => Ok(StoredRef::Bytes(b)),
            Some((tag, _)) => Err(format!("unknown value tag {tag}")),
            None => Err("empty stored value".into()),
        }
    }
}

impl From<serde_json::Value> for Value {
    fn from(v: serde_json::Value) -> Self {
        Value::Json(v)
    }
}

impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        Value::Bytes(b)
    }
}

/// Serializes a JSON value as its canonical text, so that non-self-describing formats
/// (postcard) can carry it.
pub(crate) mod json_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &serde_json::Value, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<serde_json::Value, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        serde_json::from_str(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stored_form_is_canonical_and_round_trips() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":[1,2,{"z":null,"y":""}]}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"a":[1,2,{"y":"","z":null}],"b":1}"#).unwrap();
        assert_eq!(
            Value::Json(a.clone()).to_stored(),
            Value::Json(b).to_stored()
        );
        assert_eq!(
            Value::from_stored(&Value::Json(a.clone()).to_stored()),
            Ok(Value::Json(a))
        );
        let bytes = Value::Bytes(vec![0, 1, 2]);
        assert_eq!(Value::from_stored(&bytes.to_stored()), Ok(bytes));
        assert!(Value::from_stored(&[]).is_err());
        assert!(Value::from_stored(&[9]).is_err());
        assert!(Value::from_stored(&[1, b'{']).is_err());
    }

    #[test]
    fn depth_counts_objects_and_arrays() {
        assert_eq!(json_depth(&json!(1)), 0);
        assert_eq!(json_depth(&json!({})), 1);
        assert_eq!(json_depth(&json!({"a": [1]})), 2);
        assert_eq!(json_depth(&json!([[], {"x": {"y": []}}])), 4);
        assert_eq!(Value::Bytes(vec![1]).depth(), 0);
    }

    #[test]
    fn postcard_carries_json_as_text() {
        let v = Value::Json(json!({"x": [1, false, 0, ""]}));
        let bytes = postcard::to_stdvec(&v).unwrap();
        assert_eq!(postcard::from_bytes::<Value>(&bytes).unwrap(), v);
    }
}
