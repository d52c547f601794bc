//! A change to one key's value: computed by a local write against the current value, carried
//! in a diff, and applied in `(Hlc, writer)` order by the default merge.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::value::{MAX_DEPTH, Value, json_depth, json_text};

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
    /// Sets the field at `path` to a value (never an object: see [`FieldOp::Object`]).
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
    /// Makes the field at `path` an object: kept if it is one, an empty object otherwise.
    /// The fields of a new object follow as their own ops, so that two peers creating the same
    /// object concurrently both keep their fields.
    Object {
        /// Object keys from the document's root.
        path: Vec<String>,
    },
}

impl FieldOp {
    /// The path this op touches.
    pub fn path(&self) -> &[String] {
        match self {
            FieldOp::Set { path, .. } | FieldOp::Remove { path } | FieldOp::Object { path } => path,
        }
    }

    /// How deep the op reaches: its path's length plus the depth of the value it sets.
    fn depth(&self) -> usize {
        match self {
            FieldOp::Set { path, value } => path.len() + json_depth(value),
            FieldOp::Remove { path } => path.len(),
            FieldOp::Object { path } => path.len() + 1,
        }
    }
}

impl Change {
    /// The change that turns `old` into `new` (`None` for a delete); `None` if nothing changes.
    /// Objects are compared per field, recursively, and an object is never written as one
    /// value: a new object is an [`FieldOp::Object`] followed by its fields, so that objects
    /// created concurrently merge field by field at every depth. A value that is present is
    /// never confused with a missing one, whatever it is (`0`, `""`, `false`, `null`).
    pub fn between(old: Option<&Value>, new: Option<&Value>) -> Option<Change> {
        match (old, new) {
            (None, None) => None,
            (Some(_), None) => Some(Change::Delete),
            (Some(Value::Json(Json::Object(a))), Some(Value::Json(Json::Object(b)))) => {
                let mut ops = Vec::new();
                diff_objects(&mut Vec::new(), a, b, &mut ops);
                (!ops.is_empty()).then_some(Change::Fields(ops))
            }
            // An object where there was none: its fields, recursively, from an empty object.
            (_, Some(Value::Json(Json::Object(b)))) => {
                let mut ops = Vec::new();
                diff_objects(&mut Vec::new(), &Map::new(), b, &mut ops);
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
                        FieldOp::Object { path } => object_path(&mut doc, path),
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

    /// Checks that this is well-formed: every field path non-empty, nothing nested deeper
    /// than [`MAX_DEPTH`]. The error says what is wrong.
    pub(crate) fn check(&self) -> Result<(), String> {
        let deepest = match self {
            Change::Delete => 0,
            Change::Set(v) => v.depth(),
            Change::Fields(ops) => {
                if ops.iter().any(|op| op.path().is_empty()) {
                    return Err("a field operation with an empty path".into());
                }
                ops.iter().map(FieldOp::depth).max().unwrap_or(0)
            }
        };
        if deepest > MAX_DEPTH {
            return Err(format!(
                "the change nests {deepest} levels deep (at most {MAX_DEPTH})"
            ));
        }
        Ok(())
    }

    /// Whether a later change `later` overwrites something of this one when both are applied
    /// (see `docs/merge.md`, "Conflicts").
    pub fn clobbered_by(&self, later: &Change) -> bool {
        let ops = |c: &Change| -> Vec<(bool, Vec<String>)> {
            match c {
                Change::Set(_) | Change::Delete => vec![(false, Vec::new())],
                Change::Fields(ops) => ops
                    .iter()
                    .map(|op| (matches!(op, FieldOp::Object { .. }), op.path().to_vec()))
                    .collect(),
            }
        };
        let later = ops(later);
        ops(self)
            .iter()
            .any(|a| later.iter().any(|b| clobbers(a, b)))
    }
}

/// Whether two ops (`(is an Object op, path)`) overwrite one another.
fn clobbers((a_object, a): &(bool, Vec<String>), (b_object, b): &(bool, Vec<String>)) -> bool {
    let n = a.len().min(b.len());
    if a[..n] != b[..n] {
        return false;
    }
    match (a_object, b_object) {
        (true, true) => false,
        (true, false) => b.len() <= a.len(),
        (false, true) => a.len() <= b.len(),
        (false, false) => true,
    }
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
            (_, Json::Object(y)) => {
                ops.push(FieldOp::Object { path: path.clone() });
                diff_objects(path, &Map::new(), y, ops);
            }
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
    if let Some((last, parents)) = path.split_last() {
        in_object(doc, parents, |map| {
            map.insert(last.clone(), value);
        });
    }
}

fn object_path(doc: &mut Map<String, Json>, path: &[String]) {
    in_object(doc, path, |_| {});
}

/// Runs `f` on the object at `path`, making each field along it an object where it is missing
/// or is not one.
fn in_object(map: &mut Map<String, Json>, path: &[String], f: impl FnOnce(&mut Map<String, Json>)) {
    let Some((first, rest)) = path.split_first() else {
        return f(map);
    };
    let slot = map
        .entry(first.clone())
        .or_insert_with(|| Json::Object(Map::new()));
    if !slot.is_object() {
        *slot = Json::Object(Map::new());
    }
    if let Json::Object(inner) = slot {
        in_object(inner, rest, f);
    }
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
    fn what_clobbers_what() {
        let ch = |v: Json| match Change::between(None, Some(&j(v))).unwrap() {
            Change::Fields(ops) => Change::Fields(ops),
            other => other,
        };
        let meta_a = ch(json!({"meta": {"a": 1}}));
        let meta_b = ch(json!({"meta": {"b": 2}}));
        let meta_5 = ch(json!({"meta": 5}));
        assert!(
            !meta_a.clobbered_by(&meta_b),
            "sibling fields in a new object"
        );
        assert!(meta_a.clobbered_by(&meta_5), "a scalar replaces the object");
        assert!(
            meta_5.clobbered_by(&meta_a),
            "an object replaces the scalar"
        );
        assert!(meta_a.clobbered_by(&Change::Delete));
        assert!(meta_a.clobbered_by(&ch(json!({"meta": {"a": 2}}))));
    }

    #[test]
    fn new_objects_are_written_field_by_field_at_every_depth() {
        let base = j(json!({"title": "t"}));
        let a = merge_patch(Some(&base), &json!({"meta": {"a": 1}}));
        let b = merge_patch(Some(&base), &json!({"meta": {"b": 2}}));
        let left = Change::between(Some(&base), Some(&a)).unwrap();
        let right = Change::between(Some(&base), Some(&b)).unwrap();
        let want = Some(j(json!({"meta": {"a": 1, "b": 2}, "title": "t"})));
        assert_eq!(right.apply(left.apply(Some(base.clone()))), want);
        assert_eq!(left.apply(right.apply(Some(base))), want);
        // The smallest case the random schedules found.
        let p0 = j(json!({"f": {"x": 1}, "g": [], "h": [1, 2]}));
        let p1 = merge_patch(None, &json!({"": {"y": null}, "f": {"y": {"w": null}}}));
        let c0 = Change::between(None, Some(&p0)).unwrap();
        let c1 = Change::between(None, Some(&p1)).unwrap();
        let merged = c1.apply(c0.apply(None));
        assert_eq!(
            merged,
            Some(j(
                json!({"": {}, "f": {"x": 1, "y": {}}, "g": [], "h": [1, 2]})
            ))
        );
    }
}
