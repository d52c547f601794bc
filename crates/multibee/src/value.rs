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
        match bytes.split_first() {
            Some((&TAG_JSON, text)) => serde_json::from_slice(text)
                .map(Value::Json)
                .map_err(|e| format!("stored JSON does not parse: {e}")),
            Some((&TAG_BYTES, b)) => Ok(Value::Bytes(b.to_vec())),
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
    fn postcard_carries_json_as_text() {
        let v = Value::Json(json!({"x": [1, false, 0, ""]}));
        let bytes = postcard::to_stdvec(&v).unwrap();
        assert_eq!(postcard::from_bytes::<Value>(&bytes).unwrap(), v);
    }
}
