//! Attachments: documents that reference blobs.
//!
//! A field of the form `{"$blob": "<id>", "size": N, "type": "<media type>"}` (anywhere in a
//! JSON document, at any depth) references the blob `<id>` of the blob store
//! ([`crate::blobs`]); `size` and `type` are optional hints for readers. The referenced set
//! is what a blob collection must keep ([`referenced_blobs`]).
//!
//! ```
//! use multibee::attachments::blob_refs;
//! use serde_json::json;
//!
//! let id = multibee::blobs::BlobId::of(b"a photo");
//! let doc = json!({"title": "trip", "photos": [{"$blob": id.to_hex(), "size": 7, "type": "image/jpeg"}]});
//! let refs = blob_refs(&doc);
//! assert_eq!(refs.len(), 1);
//! assert_eq!((refs[0].id, refs[0].size, refs[0].media_type.as_deref()), (id, Some(7), Some("image/jpeg")));
//! ```

use std::collections::HashSet;

use serde_json::Value as Json;

use crate::blobs::BlobId;
use crate::db::{MultiBee, RangeOptions, Value};

/// The field that makes an object a blob reference.
pub const BLOB_FIELD: &str = "$blob";

/// One reference to a blob from a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobRef {
    /// The blob.
    pub id: BlobId,
    /// Its size in bytes, as the document says (a hint: the blob's id is what is verified).
    pub size: Option<u64>,
    /// Its media type, as the document says.
    pub media_type: Option<String>,
}

/// Every blob reference in `doc`, in document order. An object whose `$blob` is not a valid
/// id (64 lowercase hex characters) is not a reference and is skipped.
pub fn blob_refs(doc: &Json) -> Vec<BlobRef> {
    let mut out = Vec::new();
    let mut stack = vec![doc];
    while let Some(value) = stack.pop() {
        match value {
            Json::Object(map) => {
                if let Some(id) = map
                    .get(BLOB_FIELD)
                    .and_then(Json::as_str)
                    .and_then(|s| s.parse::<BlobId>().ok())
                {
                    out.push(BlobRef {
                        id,
                        size: map.get("size").and_then(Json::as_u64),
                        media_type: map.get("type").and_then(Json::as_str).map(str::to_owned),
                    });
                }
                // Depth first, in document order.
                stack.extend(map.values().rev());
            }
            Json::Array(items) => stack.extend(items.iter().rev()),
            _ => {}
        }
    }
    out
}

/// The ids of every blob a document of the merged store references: what a collection of
/// the blob store keeps.
pub fn referenced_blobs(mb: &MultiBee) -> crate::db::Result<HashSet<BlobId>> {
    let mut out = HashSet::new();
    for entry in mb.range(&RangeOptions::all())? {
        if let (_, Value::Json(doc)) = entry? {
            out.extend(blob_refs(&doc).into_iter().map(|r| r.id));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_are_found_at_any_depth_in_order_and_bad_ones_skipped() {
        let a = BlobId::of(b"a");
        let b = BlobId::of(b"b");
        let doc = json!({
            "x": {"$blob": a.to_hex()},
            "list": [1, {"deep": [{"$blob": b.to_hex(), "size": "big", "type": 3}]}],
            "bad": [{"$blob": "nothex"}, {"$blob": a.to_hex().to_uppercase()}, {"$blob": 7}],
        });
        let refs = blob_refs(&doc);
        let ids: Vec<BlobId> = refs.iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![b, a]); // keys in serde_json's (sorted) order: "list" before "x"
        assert_eq!((refs[0].size, refs[0].media_type.as_deref()), (None, None));
        assert!(blob_refs(&json!("text")).is_empty());
    }
}
