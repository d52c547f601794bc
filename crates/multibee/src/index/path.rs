//! Paths into JSON documents, and the (path, value) pairs of a document.
//!
//! A path is a string of segments, each `/` followed by:
//! - `[]`: every element of an array (any index);
//! - `~2`: the object field literally named `[]` (so it is never read as the array marker);
//! - otherwise an object field's name with `~` written `~0` and `/` written `~1`, as in JSON
//!   Pointer (`~` followed by anything else is refused).
//!
//! The root is the empty path `""`; `/` is the field named `""`. Every field name has exactly
//! one spelling, so [`format()`] and [`parse`] are inverse bijections between segment lists (of at
//! most [`MAX_SEGMENTS`]) and the paths `parse` accepts. Examples: `/user/name`, `/tags/[]`,
//! `/exports/[]/city`, `/a~1b` (the field `a/b`).

// Used by the index tables and queries (issue 17), which are written separately.

use serde_json::Value;

use crate::value::MAX_DEPTH;

/// The most segments a path may have: a document nests at most [`MAX_DEPTH`] levels, so no
/// longer path reaches anything.
pub(crate) const MAX_SEGMENTS: usize = MAX_DEPTH;

/// One step of a path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Segment {
    /// The object field of this name.
    Field(String),
    /// Every element of an array, written `[]`.
    Each,
}

/// Parses a path (syntax: module docs). The error says what is wrong and where.
pub(crate) fn parse(path: &str) -> Result<Vec<Segment>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!(
            "the path {path:?} does not start with '/' (the root is \"\")"
        ));
    };
    let mut segments = Vec::new();
    for (i, text) in rest.split('/').enumerate() {
        if i == MAX_SEGMENTS {
            return Err(format!("the path has more than {MAX_SEGMENTS} segments"));
        }
        let segment = match text {
            "[]" => Segment::Each,
            "~2" => Segment::Field("[]".to_owned()),
            _ => {
                let mut field = String::with_capacity(text.len());
                let mut chars = text.chars();
                while let Some(c) = chars.next() {
                    if c != '~' {
                        field.push(c);
                        continue;
                    }
                    match chars.next() {
                        Some('0') => field.push('~'),
                        Some('1') => field.push('/'),
                        _ => {
                            return Err(format!(
                                "segment {} of the path ({text:?}) has a '~' that is not followed \
                                 by 0 ('~') or 1 ('/'), or is not the whole segment \"~2\" (a \
                                 field named \"[]\")",
                                i + 1
                            ));
                        }
                    }
                }
                Segment::Field(field)
            }
        };
        segments.push(segment);
    }
    Ok(segments)
}

/// Appends one segment, with its leading `/`, in the syntax [`parse`] reads.
fn push_segment(segment: &Segment, out: &mut String) {
    out.push('/');
    match segment {
        Segment::Each => out.push_str("[]"),
        Segment::Field(name) if name == "[]" => out.push_str("~2"),
        Segment::Field(name) => {
            for c in name.chars() {
                match c {
                    '~' => out.push_str("~0"),
                    '/' => out.push_str("~1"),
                    c => out.push(c),
                }
            }
        }
    }
}

/// Writes segments as a path: the inverse of [`parse`] (`parse(&format(s)) == Ok(s)` for at most
/// [`MAX_SEGMENTS`] segments; longer lists format, but `parse` refuses them).
#[cfg(test)]
pub(crate) fn format(segments: &[Segment]) -> String {
    let mut out = String::new();
    for segment in segments {
        push_segment(segment, &mut out);
    }
    out
}

/// Every value `path` reaches in `doc`, in document order, duplicates kept: a field steps into
/// an object's field, [`Segment::Each`] into every element of an array; a missing field or a
/// value of the wrong type reaches nothing. Iterative.
pub(crate) fn values_at<'a>(doc: &'a Value, path: &[Segment]) -> Vec<&'a Value> {
    let mut reached = vec![doc];
    for segment in path {
        let mut next = Vec::new();
        for value in reached {
            match (segment, value) {
                (Segment::Field(name), Value::Object(fields)) => next.extend(fields.get(name)),
                (Segment::Each, Value::Array(items)) => next.extend(items),
                _ => {}
            }
        }
        if next.is_empty() {
            return next;
        }
        reached = next;
    }
    reached
}

/// Every (path, value) pair of `doc` for "every path" indexing: each scalar (null, boolean,
/// number, string) and each empty array or object at its path, arrays' elements under `/[]`, in
/// document order (an object's fields in its map's order). `{"a":[{"b":1},{"b":2}],"c":{}}`
/// gives `("/a/[]/b", 1)`, `("/a/[]/b", 2)`, `("/c", {})`; a scalar document gives `("", doc)`.
/// Iterative; values deeper than [`MAX_SEGMENTS`] levels (which the store never holds) are left
/// out, so every path returned parses.
pub(crate) fn leaves(doc: &Value) -> Vec<(String, &Value)> {
    let mut found = Vec::new();
    // (path, segments in it, value), children pushed in reverse so they pop in document order.
    let mut stack = vec![(String::new(), 0usize, doc)];
    while let Some((path, depth, value)) = stack.pop() {
        let children: Vec<(Segment, &Value)> = match value {
            Value::Array(items) if !items.is_empty() => {
                items.iter().map(|item| (Segment::Each, item)).collect()
            }
            Value::Object(fields) if !fields.is_empty() => fields
                .iter()
                .map(|(name, item)| (Segment::Field(name.clone()), item))
                .collect(),
            _ => {
                found.push((path, value));
                continue;
            }
        };
        if depth == MAX_SEGMENTS {
            continue;
        }
        for (segment, child) in children.into_iter().rev() {
            let mut child_path = path.clone();
            push_segment(&segment, &mut child_path);
            stack.push((child_path, depth + 1, child));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// A scalar, or an empty array or object: what [`leaves`] reports.
    fn is_leaf(v: &Value) -> bool {
        match v {
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            _ => true,
        }
    }

    fn field(name: &str) -> Segment {
        Segment::Field(name.to_owned())
    }

    /// Field names made of the characters paths treat specially.
    fn awkward_name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("[]".to_owned()),
            Just("~2".to_owned()),
            Just(String::new()),
            prop::collection::vec(
                prop::sample::select(vec![
                    "~", "/", "[", "]", "0", "1", "2", "a", "é", "~0", "~1"
                ]),
                0..5
            )
            .prop_map(|parts| parts.concat()),
        ]
    }

    fn segments(max: usize) -> impl Strategy<Value = Vec<Segment>> {
        prop::collection::vec(
            prop_oneof![Just(Segment::Each), awkward_name().prop_map(Segment::Field)],
            0..=max,
        )
    }

    /// Documents over a few field names, so that paths are shared between leaves.
    fn doc() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::from),
            "[a-c]{0,2}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(awkward_name(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn barrel_headquarters_belgium() {
        let doc = json!({"headquarters": "belgium"});
        assert_eq!(
            leaves(&doc),
            vec![("/headquarters".to_owned(), &json!("belgium"))]
        );
        let path = parse("/headquarters").expect("parses");
        assert_eq!(path, vec![field("headquarters")]);
        assert_eq!(values_at(&doc, &path), vec![&json!("belgium")]);
    }

    #[test]
    fn barrel_exports_city_moscow() {
        let doc = json!({
            "headquarters": "belgium",
            "exports": [{"city": "Moscow"}, {"city": "Athens"}],
        });
        let moscow = json!("Moscow");
        let athens = json!("Athens");
        let belgium = json!("belgium");
        let mut found = leaves(&doc);
        found.sort_by(|a, b| a.0.cmp(&b.0)); // stable: Moscow stays before Athens
        assert_eq!(
            found,
            vec![
                ("/exports/[]/city".to_owned(), &moscow),
                ("/exports/[]/city".to_owned(), &athens),
                ("/headquarters".to_owned(), &belgium),
            ]
        );
        let path = parse("/exports/[]/city").expect("parses");
        assert_eq!(path, vec![field("exports"), Segment::Each, field("city")]);
        assert_eq!(values_at(&doc, &path), vec![&moscow, &athens]);
    }

    #[test]
    fn leaves_of_scalars_and_empty_containers() {
        assert_eq!(leaves(&json!(3)), vec![(String::new(), &json!(3))]);
        assert_eq!(leaves(&json!([])), vec![(String::new(), &json!([]))]);
        let doc = json!({"tags": [], "meta": {}, "n": [null, [true]], "[]": 1, "a/b~": 2});
        let mut got: Vec<(String, Value)> = leaves(&doc)
            .into_iter()
            .map(|(p, v)| (p, v.clone()))
            .collect();
        // Fields come in the map's order: sort, so the test holds with `preserve_order` too.
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            vec![
                ("/a~1b~0".to_owned(), json!(2)),
                ("/meta".to_owned(), json!({})),
                ("/n/[]".to_owned(), json!(null)),
                ("/n/[]/[]".to_owned(), json!(true)),
                ("/tags".to_owned(), json!([])),
                ("/~2".to_owned(), json!(1)),
            ]
        );
    }

    #[test]
    fn values_at_misses_and_type_mismatches() {
        let doc = json!({"a": [1, {"b": 2}, [3]], "c": "x"});
        assert_eq!(values_at(&doc, &[]), vec![&doc]);
        assert!(values_at(&doc, &[field("z")]).is_empty());
        assert!(values_at(&doc, &[field("c"), Segment::Each]).is_empty());
        assert!(values_at(&doc, &[Segment::Each]).is_empty());
        assert_eq!(
            values_at(&doc, &[field("a"), Segment::Each, field("b")]),
            vec![&json!(2)]
        );
        assert_eq!(
            values_at(&doc, &[field("a"), Segment::Each, Segment::Each]),
            vec![&json!(3)]
        );
    }

    #[test]
    fn paths_parse() {
        assert_eq!(parse(""), Ok(vec![]));
        assert_eq!(parse("/"), Ok(vec![field("")]));
        assert_eq!(parse("/a//b"), Ok(vec![field("a"), field(""), field("b")]));
        assert_eq!(parse("/tags/[]"), Ok(vec![field("tags"), Segment::Each]));
        assert_eq!(parse("/~2/[]"), Ok(vec![field("[]"), Segment::Each]));
        assert_eq!(parse("/a~1b~0c"), Ok(vec![field("a/b~c")]));
        assert_eq!(parse("/a[]/[x]"), Ok(vec![field("a[]"), field("[x]")]));
        assert_eq!(
            parse(&"/a".repeat(MAX_SEGMENTS)).map(|s| s.len()),
            Ok(MAX_SEGMENTS)
        );
    }

    #[test]
    fn bad_paths_are_rejected() {
        for bad in [
            "a", "a/b", "[]", "~0", "/~", "/a~", "/~3", "/a~2", "/~2~0", "/~~0",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let too_long = "/a".repeat(MAX_SEGMENTS + 1);
        assert!(parse(&too_long).expect_err("too long").contains("segments"));
        assert!(parse("x").expect_err("no slash").contains("start with '/'"));
    }

    #[test]
    fn deep_documents_do_not_overflow() {
        let deep = (0..100_000).fold(json!(1), |v, _| Value::Array(vec![v]));
        assert!(leaves(&deep).is_empty());
        let path = vec![Segment::Each; MAX_SEGMENTS];
        assert!(values_at(&deep, &path)[0].is_array());
        // serde_json drops values recursively: take the nest apart by hand.
        let mut v = deep;
        while let Value::Array(mut items) = v {
            v = items.pop().unwrap_or(Value::Null);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn format_then_parse_round_trips(s in segments(MAX_SEGMENTS)) {
            prop_assert_eq!(parse(&format(&s)), Ok(s));
        }

        #[test]
        fn parse_then_format_round_trips(text in "(/(\\[\\]|~[0-3]|[a~/\\[\\]]{0,3}){0,4})|[a/~]{0,4}") {
            if let Ok(s) = parse(&text) {
                prop_assert_eq!(format(&s), text);
            }
        }

        #[test]
        fn every_leaf_is_reached_by_its_path(doc in doc()) {
            for (path, value) in leaves(&doc) {
                let segments = parse(&path).map_err(TestCaseError::fail)?;
                let reached = values_at(&doc, &segments);
                prop_assert!(reached.iter().any(|r| std::ptr::eq(*r, value)), "{path}");
                prop_assert!(is_leaf(value));
            }
        }

        #[test]
        fn leaves_under_a_path_are_what_values_at_reaches(doc in doc()) {
            // For each leaf path, the leaves with that path are exactly the leaf values reached.
            for (path, _) in leaves(&doc) {
                let segments = parse(&path).map_err(TestCaseError::fail)?;
                let from_leaves: Vec<*const Value> = leaves(&doc)
                    .into_iter()
                    .filter(|(p, _)| *p == path)
                    .map(|(_, v)| v as *const Value)
                    .collect();
                let reached: Vec<*const Value> = values_at(&doc, &segments)
                    .into_iter()
                    .filter(|v| is_leaf(v))
                    .map(|v| v as *const Value)
                    .collect();
                prop_assert_eq!(from_leaves, reached, "{}", path);
            }
        }
    }
}
