//! A change to one key's value: computed by a local write against the current value, carried
//! in a diff, and applied in `(Hlc, writer)` order by the default merge.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::value::{Value, json_text};

/// What one diff does to a key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// Replaces the whole value (bytes, a JSON scalar or array, or an object replacing a
    /// non-object).
    Set(Value),
    /// Sets and removes fields of a JSON object (creating the object, and objects along a path,
    /// where missing).
    Fields(Vec<FieldOp>),
    /// Deletes the key (a tombstone: it replicates, and older writes stay beneath it).
    Delete,
}

/// `target` with the JSON merge patch `patch` applied (RFC 7386): an object patch sets its
/// fields, recursively for object values, and removes those it sets to `null`; any other
/// patch replaces the value. Only the fields the patch names differ from `target`, so the
/// change a patch makes ([`Change::between`]) touches only those paths.
pub fn merge_patch(target: Option<&Value>, patch: &Json) -> Value {
    match patch {
        Json::Object(fields) => {
            let mut doc = match target {
                Some(Value::Json(Json::Object(map))) => map.clone(),
                _ => Map::new(),
            };
            patch_object(&mut doc, fields);
            Value::Json(Json::Object(doc))
        }
        other => Value::Json(other.clone()),
    }
}

fn patch_object(doc: &mut Map<String, Json>, patch: &Map<String, Json>) {
    for (name, value) in patch {
        match value {
            Json::Null => {
                doc.remove(name);
            }
            Json::Object(inner) => {
                let field = doc
                    .entry(name.clone())
                    .or_insert_with(|| Json::Object(Map::new()));
                if !field.is_object() {
                    *field = Json::Object(Map::new());
                }
                if let Json::Object(map) = field {
                    patch_object(map, inner);
                }
            }
            other => {
                doc.insert(name.clone(), other.clone());
            }
        }
    }
}

/// One field operation of [`Change::Fields`]; `path` is never empty.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FieldOp {
    /// Sets the field at `path` to a value.
    Set {
        /// Object keys from the document's root.
        path: Vec<String>,
        /// The new value of the field.
        #[serde(with = "json_text")]
        value: Json,
    },
    /// Removes the field at `path` (a tombstone for the field).
    Remove {
        /// Object keys from the document's root.
        path: Vec<String>,
    },
}

impl FieldOp {
    /// The path this op touches.
    pub fn path(&self) -> &[String] {
        match self {
            FieldOp::Set { path, .. } | FieldOp::Remove { path } => path,
        }
    }
}

impl Change {
    /// The change that turns `old` into `new` (`None` for a delete); `None` if nothing changes.
    /// Objects are compared per field, recursively; a value that is present is never confused
    /// with a missing one, whatever it is (`0`, `""`, `false`, `null`).
    pub fn between(old: Option<&Value>, new: Option<&Value>) -> Option<Change> {
        match (old, new) {
            (None, None) => None,
            (Some(_), None) => Some(Change::Delete),
            (Some(Value::Json(Json::Object(a))), Some(Value::Json(Json::Object(b)))) => {
                let mut ops = Vec::new();
                diff_objects(&mut Vec::new(), a, b, &mut ops);
                (!ops.is_empty()).then_some(Change::Fields(ops))
            }
            // An object where there was none: set each field, so that concurrent creations of
            // the same key merge per field.
            (_, Some(Value::Json(Json::Object(b)))) => {
                let ops = b
                    .iter()
                    .map(|(k, v)| FieldOp::Set {
                        path: vec![k.clone()],
                        value: v.clone(),
                    })
                    .collect();
                Some(Change::Fields(ops))
            }
            (old, Some(new)) => (old != Some(new)).then(|| Change::Set(new.clone())),
        }
    }

    /// Applies this change to `state`.
    pub fn apply(&self, state: Option<Value>) -> Option<Value> {
        match self {
            Change::Set(v) => Some(v.clone()),
            Change::Delete => None,
            Change::Fields(ops) => {
                let mut doc = match state {
                    Some(Value::Json(Json::Object(map))) => map,
                    _ => Map::new(),
                };
                for op in ops {
                    match op {
                        FieldOp::Set { path, value } => set_path(&mut doc, path, value.clone()),
                        FieldOp::Remove { path } => remove_path(&mut doc, path),
                    }
                }
                Some(Value::Json(Json::Object(doc)))
            }
        }
    }

    /// The paths this change touches: the root (empty path) for a whole-value change.
    pub fn paths(&self) -> Vec<&[String]> {
        match self {
            Change::Set(_) | Change::Delete => vec![&[]],
            Change::Fields(ops) => ops.iter().map(FieldOp::path).collect(),
        }
    }

    /// Whether this is well-formed (every field path non-empty).
    pub(crate) fn is_valid(&self) -> bool {
        match self {
            Change::Fields(ops) => ops.iter().all(|op| !op.path().is_empty()),
            Change::Set(_) | Change::Delete => true,
        }
    }
}

/// Whether two paths overlap: one is a prefix of the other.
pub(crate) fn overlaps(a: &[String], b: &[String]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

fn diff_objects(
    path: &mut Vec<String>,
    a: &Map<String, Json>,
    b: &Map<String, Json>,
    ops: &mut Vec<FieldOp>,
) {
    for (k, new) in b {
        path.push(k.clone());
        match (a.get(k), new) {
            (Some(Json::Object(x)), Json::Object(y)) => diff_objects(path, x, y, ops),
            (Some(old), new) if old == new => {}
            (_, new) => ops.push(FieldOp::Set {
                path: path.clone(),
                value: new.clone(),
            }),
        }
        path.pop();
    }
    for k in a.keys().filter(|k| !b.contains_key(*k)) {
        let mut path = path.clone();
        path.push(k.clone());
        ops.push(FieldOp::Remove { path });
    }
}

fn set_path(doc: &mut Map<String, Json>, path: &[String], value: Json) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut map = doc;
    for k in parents {
        let slot = map
            .entry(k.clone())
            .or_insert_with(|| Json::Object(Map::new()));
        if !slot.is_object() {
            *slot = Json::Object(Map::new());
        }
        map = match slot {
            Json::Object(m) => m,
            // Made an object just above.
            _ => return,
        };
    }
    map.insert(last.clone(), value);
}

fn remove_path(doc: &mut Map<String, Json>, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut map = doc;
    for k in parents {
        map = match map.get_mut(k) {
            Some(Json::Object(m)) => m,
            _ => return,
        };
    }
    map.remove(last);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn j(v: Json) -> Value {
        Value::Json(v)
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let doc = j(json!({"a": "b", "c": {"d": "e", "f": "g"}, "keep": 0}));
        let patched = merge_patch(Some(&doc), &json!({"a": "z", "c": {"f": null, "h": 1}}));
        assert_eq!(
            patched,
            j(json!({"a": "z", "c": {"d": "e", "h": 1}, "keep": 0}))
        );
        // Objects are created along the way, and replace non-objects.
        let patched = merge_patch(Some(&j(json!({"a": 1}))), &json!({"a": {"b": {"c": 2}}}));
        assert_eq!(patched, j(json!({"a": {"b": {"c": 2}}})));
        // Removing what is missing changes nothing; a non-object patch replaces the value.
        assert_eq!(merge_patch(None, &json!({"x": null})), j(json!({})));
        assert_eq!(merge_patch(Some(&doc), &json!([1, 2])), j(json!([1, 2])));
        let bytes = Value::Bytes(vec![1]);
        assert_eq!(
            merge_patch(Some(&bytes), &json!({"x": 1})),
            j(json!({"x": 1}))
        );
    }

    #[test]
    fn a_patch_changes_only_the_paths_it_names() {
        let doc = j(json!({"title": "t", "tags": [], "meta": {"x": 1, "y": 2}}));
        let patched = merge_patch(Some(&doc), &json!({"tags": ["a"], "meta": {"y": null}}));
        let Some(Change::Fields(ops)) = Change::between(Some(&doc), Some(&patched)) else {
            panic!("a field change");
        };
        let mut paths: Vec<Vec<String>> = ops.iter().map(|op| op.path().to_vec()).collect();
        paths.sort();
        assert_eq!(
            paths,
            vec![vec!["meta".to_string(), "y".into()], vec!["tags".into()]]
        );
    }

    #[test]
    fn a_change_applied_to_the_old_value_gives_the_new_one() {
        let cases = [
            (None, Some(json!({}))),
            (None, Some(json!({"a": 0, "b": "", "c": false, "d": null}))),
            (Some(json!({"a": 1})), Some(json!({"a": 0}))),
            (
                Some(json!({"a": {"x": 1, "y": [1]}})),
                Some(json!({"a": {"x": 1, "y": [2]}})),
            ),
            (Some(json!({"a": {"x": 1}})), Some(json!({"a": 5}))),
            (Some(json!({"a": 5})), Some(json!({"a": {"x": 1}}))),
            (Some(json!({"a": 1, "b": 2})), Some(json!({"b": 2}))),
            (Some(json!([1])), Some(json!({"a": 1}))),
            (Some(json!({"a": 1})), Some(json!("text"))),
            (Some(json!({"a": 1})), None),
        ];
        for (old, new) in cases {
            let old = old.map(j);
            let new = new.map(j);
            let change = Change::between(old.as_ref(), new.as_ref()).unwrap();
            assert_eq!(
                change.apply(old.clone()),
                new,
                "{old:?} -> {new:?} via {change:?}"
            );
        }
    }

    #[test]
    fn nothing_changes_gives_no_change_and_falsy_values_are_values() {
        let v = j(json!({"a": 0, "b": {"c": ""}}));
        assert_eq!(Change::between(Some(&v), Some(&v)), None);
        assert_eq!(Change::between(None, None), None);
        let change = Change::between(Some(&j(json!({}))), Some(&j(json!({"a": 0})))).unwrap();
        assert_eq!(
            change,
            Change::Fields(vec![FieldOp::Set {
                path: vec!["a".into()],
                value: json!(0)
            }])
        );
    }

    #[test]
    fn concurrent_field_changes_both_survive() {
        let base = j(json!({"a": 1, "b": 1}));
        let left = Change::between(Some(&base), Some(&j(json!({"a": 2, "b": 1})))).unwrap();
        let right = Change::between(Some(&base), Some(&j(json!({"a": 1, "b": 3})))).unwrap();
        let merged = right.apply(left.apply(Some(base)));
        assert_eq!(merged, Some(j(json!({"a": 2, "b": 3}))));
    }

    #[test]
    fn paths_overlap_when_one_is_a_prefix() {
        let p = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(overlaps(&p(&["a"]), &p(&["a", "b"])));
        assert!(overlaps(&p(&[]), &p(&["a"])));
        assert!(!overlaps(&p(&["a"]), &p(&["b"])));
    }
}
