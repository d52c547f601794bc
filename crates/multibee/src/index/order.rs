//! An order-preserving byte encoding of JSON values, for index keys.
//!
//! The order of JSON values (issue 17) is total: `null < false < true < numbers < strings <
//! arrays < objects`; numbers by mathematical value; strings by their UTF-8 bytes; arrays element
//! by element, a proper prefix first; objects as their (key, value) pairs sorted by key, compared
//! pair by pair (key by bytes, then value), a proper prefix first. [`cmp_json`] is the reference
//! comparator; [`encode`] writes bytes whose plain byte order (memcmp) is that order.
//!
//! Layout (every encoding starts with a type tag ≥ 0x10, so a terminator 0x00 sorts before any
//! element):
//! - null `10`, false `20`, true `21`;
//! - number `30`, then 8 bytes: the value rounded to the nearest f64 (as `i as f64` does; exact
//!   for floats), -0.0 normalised to 0.0, big-endian with the sign bit flipped for positives and
//!   all bits flipped for negatives; then 2 bytes: the exact remainder `n - rounded` of an
//!   integer (non-zero only for integers beyond 2^53 that f64 cannot hold), as a big-endian i16
//!   with its sign bit flipped. Numbers therefore compare *exactly* by value, integers beyond
//!   2^53 included;
//! - string `40`, then its UTF-8 bytes with each 0x00 written as `00 FF`, then `00 00`;
//! - array `50`, then each element's encoding, then `00`;
//! - object `60`, then for each field in key order the key's string encoding (with its `40` tag)
//!   and the value's encoding, then `00`.
//!
//! Every encoding is self-delimiting (no encoding is a proper prefix of another), so bytes
//! appended after one (a document key) order pairs lexicographically: (value, suffix).
//!
//! Equality: two values encode to the same bytes iff [`cmp_json`] says `Equal`, that is iff they
//! are equal as `serde_json::Value`s **except that numbers are compared by value**: `1`, `1.0`
//! and `-0.0`/`0.0` encode alike (serde_json's `==` says `1 != 1.0`). So `a == b` implies equal
//! encodings, and equal encodings imply `a == b` up to that number caveat; [`decode`] returns a
//! value-equal number (an integer whenever the value is an integer in `i64`/`u64` range).

// Used by the index tables and queries (issue 17), which are written separately.

use serde_json::{Map, Number, Value};
use std::cmp::Ordering;

#[cfg(test)]
use crate::value::MAX_DEPTH;

const NULL: u8 = 0x10;
const FALSE: u8 = 0x20;
const TRUE: u8 = 0x21;
const NUMBER: u8 = 0x30;
const STRING: u8 = 0x40;
const ARRAY: u8 = 0x50;
const OBJECT: u8 = 0x60;
/// Ends an array or an object (sorts before every tag).
const END: u8 = 0x00;
/// After a 0x00 inside a string: the string goes on with a 0x00 byte.
const ESCAPED_ZERO: u8 = 0xFF;
/// After a 0x00 inside a string: the string ends.
const STRING_END: u8 = 0x00;

/// Appends the order-preserving, self-delimiting encoding of `value` to `out` (layout: module
/// docs). Iterative, so any nesting depth is safe to encode (though [`decode`] accepts at most
/// [`MAX_DEPTH`] levels, as the store holds).
pub(crate) fn encode(value: &Value, out: &mut Vec<u8>) {
    /// A container being written: the children still to write.
    enum Open<'a> {
        /// An array's remaining elements.
        Array(std::slice::Iter<'a, Value>),
        /// An object's remaining fields, in key order.
        Object(std::vec::IntoIter<(&'a String, &'a Value)>),
    }
    let mut stack: Vec<Open<'_>> = Vec::new();
    let mut next = Some(value);
    loop {
        if let Some(value) = next.take() {
            match value {
                Value::Null => out.push(NULL),
                Value::Bool(false) => out.push(FALSE),
                Value::Bool(true) => out.push(TRUE),
                Value::Number(n) => encode_number(n, out),
                Value::String(s) => encode_string(s, out),
                Value::Array(items) => {
                    out.push(ARRAY);
                    stack.push(Open::Array(items.iter()));
                }
                Value::Object(fields) => {
                    out.push(OBJECT);
                    stack.push(Open::Object(sorted_fields(fields).into_iter()));
                }
            }
        }
        let Some(open) = stack.last_mut() else {
            return;
        };
        let child = match open {
            Open::Array(items) => items.next(),
            Open::Object(fields) => fields.next().map(|(key, value)| {
                encode_string(key, out);
                value
            }),
        };
        match child {
            Some(child) => next = Some(child),
            None => {
                out.push(END);
                stack.pop();
            }
        }
    }
}

/// An object's fields sorted by key bytes (a `serde_json::Map` is sorted already unless the
/// `preserve_order` feature is on somewhere in the build; sorting keeps this independent of it).
fn sorted_fields(fields: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut sorted: Vec<_> = fields.iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    sorted
}

/// The exact value of an integer `Number`, or `None` for a float.
fn integer(n: &Number) -> Option<i128> {
    n.as_u64()
        .map(i128::from)
        .or_else(|| n.as_i64().map(i128::from))
}

/// Appends a number: tag, order-preserving f64 (rounded for large integers), exact remainder.
fn encode_number(n: &Number, out: &mut Vec<u8>) {
    let (rounded, remainder) = match (n.as_u64(), n.as_i64()) {
        (Some(u), _) => {
            let rounded = u as f64;
            (rounded, i128::from(u) - rounded as i128)
        }
        (None, Some(i)) => {
            let rounded = i as f64;
            (rounded, i128::from(i) - rounded as i128)
        }
        // serde_json numbers are finite; a float is its own exact value.
        (None, None) => (n.as_f64().unwrap_or(0.0), 0),
    };
    out.push(NUMBER);
    out.extend_from_slice(&f64_key(rounded));
    // |remainder| ≤ 1024 (half the f64 spacing just below 2^64), so it fits an i16.
    let remainder = i16::try_from(remainder).unwrap_or(0);
    out.extend_from_slice(&((remainder as u16) ^ 0x8000).to_be_bytes());
}

/// The 8 bytes of `f` whose byte order is the numeric order (-0.0 as 0.0).
fn f64_key(f: f64) -> [u8; 8] {
    let f = if f == 0.0 { 0.0 } else { f };
    let bits = f.to_bits();
    let key = if bits >> 63 == 1 {
        !bits
    } else {
        bits ^ (1 << 63)
    };
    key.to_be_bytes()
}

/// Appends the escaped bytes of `s` (0x00 as `00 FF`), without tag or terminator.
fn escape_into(s: &str, out: &mut Vec<u8>) {
    for &b in s.as_bytes() {
        out.push(b);
        if b == 0 {
            out.push(ESCAPED_ZERO);
        }
    }
}

/// Appends a string: tag, escaped bytes, `00 00`.
fn encode_string(s: &str, out: &mut Vec<u8>) {
    out.push(STRING);
    escape_into(s, out);
    out.extend_from_slice(&[0, STRING_END]);
}

/// Appends the bytes that the encoding of every string starting with `prefix` starts with, and
/// that no other value's encoding starts with. The encodings starting with them are therefore a
/// contiguous range of the byte order (the strings with that prefix), for `prefix` queries.
pub(crate) fn string_prefix(prefix: &str, out: &mut Vec<u8>) {
    out.push(STRING);
    escape_into(prefix, out);
}

/// Parses one encoding at the start of `bytes`: the value and how many bytes it took. `None` if
/// the bytes do not start with a valid encoding, including non-canonical ones (-0.0, a remainder
/// that is not the one [`encode`] writes, unsorted or repeated object keys, invalid UTF-8) and
/// values nesting deeper than [`MAX_DEPTH`]. A `Some((v, n))` always has
/// `encode(v) == bytes[..n]`. Never panics; recursion is bounded by [`MAX_DEPTH`].
#[cfg(test)]
pub(crate) fn decode(bytes: &[u8]) -> Option<(Value, usize)> {
    let mut at = 0;
    let value = decode_at(bytes, &mut at, 0)?;
    Some((value, at))
}

/// The length of the encoding at the start of `bytes`, found without decoding it (for index
/// rows, whose key follows the value); `None` if the bytes end first or hold an unknown tag.
/// Unlike [`decode`] it does not check that the encoding is canonical.
pub(crate) fn encoded_len(bytes: &[u8]) -> Option<usize> {
    let (mut at, mut depth) = (0usize, 0usize);
    loop {
        let tag = *bytes.get(at)?;
        at += 1;
        match tag {
            NULL | FALSE | TRUE => {}
            NUMBER => {
                at += 10;
                if at > bytes.len() {
                    return None;
                }
            }
            STRING => loop {
                let byte = *bytes.get(at)?;
                at += 1;
                if byte == 0 {
                    match *bytes.get(at)? {
                        STRING_END => {
                            at += 1;
                            break;
                        }
                        ESCAPED_ZERO => at += 1,
                        _ => return None,
                    }
                }
            },
            ARRAY | OBJECT => {
                depth += 1;
                continue;
            }
            END if depth > 0 => depth -= 1,
            _ => return None,
        }
        if depth == 0 {
            return Some(at);
        }
    }
}

/// Decodes the value at `bytes[*at..]`, `depth` containers deep, advancing `at`.
#[cfg(test)]
fn decode_at(bytes: &[u8], at: &mut usize, depth: usize) -> Option<Value> {
    let tag = *bytes.get(*at)?;
    *at += 1;
    match tag {
        NULL => Some(Value::Null),
        FALSE => Some(Value::Bool(false)),
        TRUE => Some(Value::Bool(true)),
        NUMBER => decode_number(bytes, at).map(Value::Number),
        STRING => decode_string(bytes, at).map(Value::String),
        ARRAY | OBJECT => {
            if depth >= MAX_DEPTH {
                return None;
            }
            if tag == ARRAY {
                let mut items = Vec::new();
                while *bytes.get(*at)? != END {
                    items.push(decode_at(bytes, at, depth + 1)?);
                }
                *at += 1;
                Some(Value::Array(items))
            } else {
                let mut fields = Map::new();
                let mut last: Option<String> = None;
                while *bytes.get(*at)? != END {
                    if bytes[*at] != STRING {
                        return None;
                    }
                    *at += 1;
                    let key = decode_string(bytes, at)?;
                    if last
                        .as_ref()
                        .is_some_and(|last| last.as_bytes() >= key.as_bytes())
                    {
                        return None;
                    }
                    let value = decode_at(bytes, at, depth + 1)?;
                    last = Some(key.clone());
                    fields.insert(key, value);
                }
                *at += 1;
                Some(Value::Object(fields))
            }
        }
        _ => None,
    }
}

/// Decodes a number's 10 bytes after its tag (canonical encodings only).
#[cfg(test)]
fn decode_number(bytes: &[u8], at: &mut usize) -> Option<Number> {
    let body = bytes.get(*at..*at + 10)?;
    *at += 10;
    let key = u64::from_be_bytes(body[..8].try_into().ok()?);
    let bits = if key >> 63 == 1 {
        key ^ (1 << 63)
    } else {
        !key
    };
    let rounded = f64::from_bits(bits);
    if !rounded.is_finite() || bits == (-0.0f64).to_bits() {
        return None;
    }
    let remainder = i128::from((u16::from_be_bytes([body[8], body[9]]) ^ 0x8000) as i16);
    // Integers in range are read back as integers (`5.0` encodes like `5`: either will do).
    let integral =
        rounded.fract() == 0.0 && rounded >= -(2f64.powi(63)) && rounded <= 2f64.powi(64);
    if integral {
        let n = rounded as i128 + remainder;
        // Canonical: the remainder is what `encode` writes for `n` (`n` rounds to `rounded`).
        if n as f64 != rounded {
            return None;
        }
        let exact = if n >= 0 {
            u64::try_from(n).ok().map(Number::from)
        } else {
            i64::try_from(n).ok().map(Number::from)
        };
        if exact.is_some() {
            return exact;
        }
    }
    // A float (2^64 included), which has no remainder.
    if remainder == 0 {
        Number::from_f64(rounded)
    } else {
        None
    }
}

/// Decodes a string's escaped bytes and terminator after its tag (valid UTF-8 only).
#[cfg(test)]
fn decode_string(bytes: &[u8], at: &mut usize) -> Option<String> {
    let mut text = Vec::new();
    loop {
        let b = *bytes.get(*at)?;
        *at += 1;
        if b != 0 {
            text.push(b);
            continue;
        }
        let after = *bytes.get(*at)?;
        *at += 1;
        match after {
            STRING_END => return String::from_utf8(text).ok(),
            ESCAPED_ZERO => text.push(0),
            _ => return None,
        }
    }
}

/// The reference comparator of the order in the module docs, written directly over the values
/// (independently of the encoding). `Equal` means equal with numbers compared by value. Recursive:
/// its depth is that of the shallower value (at most [`MAX_DEPTH`] for stored documents, 128 for
/// values serde_json parses).
pub(crate) fn cmp_json(a: &Value, b: &Value) -> Ordering {
    /// The position of a value's type in the order.
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Bool(false) => 1,
            Value::Bool(true) => 2,
            Value::Number(_) => 3,
            Value::String(_) => 4,
            Value::Array(_) => 5,
            Value::Object(_) => 6,
        }
    }
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => cmp_numbers(a, b),
        (Value::String(a), Value::String(b)) => a.as_bytes().cmp(b.as_bytes()),
        (Value::Array(a), Value::Array(b)) => {
            for (x, y) in a.iter().zip(b) {
                match cmp_json(x, y) {
                    Ordering::Equal => {}
                    unequal => return unequal,
                }
            }
            a.len().cmp(&b.len())
        }
        (Value::Object(a), Value::Object(b)) => {
            let (a, b) = (sorted_fields(a), sorted_fields(b));
            for ((ka, va), (kb, vb)) in a.iter().zip(&b) {
                match ka
                    .as_bytes()
                    .cmp(kb.as_bytes())
                    .then_with(|| cmp_json(va, vb))
                {
                    Ordering::Equal => {}
                    unequal => return unequal,
                }
            }
            a.len().cmp(&b.len())
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

/// Compares two numbers by their exact mathematical value.
fn cmp_numbers(a: &Number, b: &Number) -> Ordering {
    /// Compares an integer with a finite float exactly.
    fn int_float(i: i128, f: f64) -> Ordering {
        if f >= 2f64.powi(64) {
            return Ordering::Less;
        }
        if f < -(2f64.powi(63)) {
            return Ordering::Greater;
        }
        // Here floor(f) is an integer in [-2^63, 2^64), exact as an i128.
        let floor = f.floor();
        match i.cmp(&(floor as i128)) {
            Ordering::Equal if f > floor => Ordering::Less,
            other => other,
        }
    }
    match (integer(a), integer(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(x), None) => int_float(x, b.as_f64().unwrap_or(0.0)),
        (None, Some(y)) => int_float(y, a.as_f64().unwrap_or(0.0)).reverse(),
        (None, None) => {
            let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Each value is below the next, both by `cmp_json` and by its encoding.
    fn assert_ascending(ascending: &[Value]) {
        for pair in ascending.windows(2) {
            assert_eq!(cmp_json(&pair[0], &pair[1]), Ordering::Less, "{pair:?}");
            assert!(enc(&pair[0]) < enc(&pair[1]), "{pair:?}");
        }
    }

    fn enc(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode(v, &mut out);
        out
    }

    /// A number from a float, for tests (the ones used are finite).
    fn float(f: f64) -> Value {
        Number::from_f64(f).map_or(Value::Null, Value::Number)
    }

    /// Numbers of every kind, with many near the places where f64 loses integers.
    fn number() -> impl Strategy<Value = Value> {
        let edges = prop::sample::select(vec![
            0i128,
            1,
            -1,
            1 << 53,
            -(1 << 53),
            1 << 62,
            1 << 63,
            -(1 << 63),
            (1 << 64) - 1,
            (1 << 63) - 1,
        ]);
        let near_edge = (edges, -3000i128..3000).prop_filter_map("out of range", |(e, d)| {
            let n = e + d;
            if n >= 0 {
                u64::try_from(n).ok().map(Value::from)
            } else {
                i64::try_from(n).ok().map(Value::from)
            }
        });
        let floats = prop::num::f64::POSITIVE
            | prop::num::f64::NEGATIVE
            | prop::num::f64::NORMAL
            | prop::num::f64::SUBNORMAL
            | prop::num::f64::ZERO;
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-5i64..5).prop_map(Value::from),
            (-20i32..20).prop_map(|i| float(f64::from(i) / 4.0)),
            floats.prop_map(float),
            // Floats that are integers, often equal to (or next to) the integers above.
            near_edge
                .clone()
                .prop_map(|v| float(v.as_f64().unwrap_or(0.0))),
            near_edge,
            Just(float(-0.0)),
        ]
    }

    /// Strings over a small alphabet with the awkward bytes, so that ties and prefixes happen.
    fn string() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec![
                '\u{0}',
                '\u{1}',
                'a',
                'b',
                '\u{7f}',
                'é',
                '\u{ff}',
                '\u{10ffff}',
            ]),
            0..5,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    /// JSON values nesting at most 4 deep.
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            number(),
            string().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(string(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn type_order() {
        let ascending = [
            json!(null),
            json!(false),
            json!(true),
            json!(-1e300),
            json!(-1),
            json!(0),
            json!(0.5),
            json!(1e300),
            json!(""),
            json!("z"),
            json!([]),
            json!([null]),
            json!({}),
            json!({"": null}),
        ];
        assert_ascending(&ascending);
    }

    #[test]
    fn tricky_strings() {
        let ascending = [
            json!(""),
            json!("\u{0}"),
            json!("a"),
            json!("a\u{0}"),
            json!("a\u{0}\u{0}"),
            json!("a\u{1}"),
            json!("ab"),
            json!("é"),
        ];
        assert_ascending(&ascending);
    }

    #[test]
    fn containers_order_by_elements_then_length() {
        let ascending = [
            json!([]),
            json!([1]),
            json!([1, 2]),
            json!([2]),
            json!({}),
            json!({"a": 1}),
            json!({"a": 1, "b": 0}),
            json!({"a": 2}),
            json!({"b": 0}),
        ];
        assert_ascending(&ascending);
    }

    #[test]
    fn numbers_compare_exactly_beyond_2_pow_53() {
        let big = 1u64 << 53;
        // Distinct integers that round to the same f64 still order and encode apart.
        assert_eq!(big as f64, (big + 1) as f64);
        assert!(enc(&json!(big)) < enc(&json!(big + 1)));
        assert!(enc(&json!(u64::MAX - 1)) < enc(&json!(u64::MAX)));
        assert!(enc(&json!(u64::MAX)) < enc(&float(2f64.powi(64))));
        assert!(enc(&json!(i64::MIN)) < enc(&json!(i64::MIN + 1)));
        assert!(enc(&float(-(2f64.powi(63)) * 2.0)) < enc(&json!(i64::MIN)));
        // Integers and floats of the same value are equal in the order (serde_json says not).
        assert_ne!(json!(1), json!(1.0));
        assert_eq!(enc(&json!(1)), enc(&json!(1.0)));
        assert_eq!(enc(&json!(big)), enc(&float(big as f64)));
        assert_eq!(enc(&float(-0.0)), enc(&json!(0)));
        assert_eq!(cmp_json(&json!(1), &json!(1.0)), Ordering::Equal);
        assert_eq!(decode(&enc(&json!(2.0))), Some((json!(2), 11)));
        assert_eq!(decode(&enc(&json!(2.5))), Some((json!(2.5), 11)));
    }

    #[test]
    fn decode_rejects_malformed_and_deep_input() {
        let deep = |n: usize| (0..n).fold(json!(null), |v, _| Value::Array(vec![v]));
        let ok = enc(&deep(MAX_DEPTH));
        assert_eq!(decode(&ok), Some((deep(MAX_DEPTH), ok.len())));
        assert_eq!(decode(&enc(&deep(MAX_DEPTH + 1))), None);
        assert_eq!(decode(&[ARRAY; 100_000]), None);
        // Encoding is iterative: any depth encodes (and decode refuses it).
        let mut very_deep = deep(100_000);
        let bytes = enc(&very_deep);
        assert_eq!(bytes.len(), 1 + 2 * 100_000);
        assert_eq!(decode(&bytes), None);
        // serde_json drops values recursively: take the nest apart by hand.
        while let Value::Array(mut items) = very_deep {
            very_deep = items.pop().unwrap_or(Value::Null);
        }
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[0x00]), None);
        // -0.0 spelt out, a wrong remainder, invalid UTF-8, unsorted keys, a bad escape.
        let mut minus_zero = vec![NUMBER];
        minus_zero.extend_from_slice(&(!(-0.0f64).to_bits()).to_be_bytes());
        minus_zero.extend_from_slice(&[0x80, 0]);
        assert_eq!(decode(&minus_zero), None);
        let mut one = enc(&json!(1));
        one[10] = 1;
        assert_eq!(decode(&one), None);
        assert_eq!(decode(&[STRING, 0xC3, 0, 0]), None);
        assert_eq!(decode(&[STRING, 0, 1]), None);
        let mut unsorted = vec![OBJECT];
        for key in ["b", "a"] {
            encode_string(key, &mut unsorted);
            unsorted.push(NULL);
        }
        unsorted.push(END);
        assert_eq!(decode(&unsorted), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn encoding_order_is_cmp_json(a in json(), b in json()) {
            prop_assert_eq!(enc(&a).cmp(&enc(&b)), cmp_json(&a, &b));
        }

        #[test]
        fn number_encoding_order_is_exact(a in number(), b in number()) {
            prop_assert_eq!(enc(&a).cmp(&enc(&b)), cmp_json(&a, &b));
            let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
            // Where f64 tells them apart, the order is f64's.
            if x != y {
                prop_assert_eq!(x.partial_cmp(&y), Some(cmp_json(&a, &b)));
            }
        }

        #[test]
        fn equal_values_encode_alike(a in json()) {
            let b = a.clone();
            prop_assert_eq!(enc(&a), enc(&b));
            prop_assert_eq!(cmp_json(&a, &b), Ordering::Equal);
        }

        #[test]
        fn decode_inverts_encode(v in json(), suffix in prop::collection::vec(any::<u8>(), 0..8)) {
            let bytes = enc(&v);
            let mut longer = bytes.clone();
            longer.extend_from_slice(&suffix);
            let (back, used) = decode(&longer).expect("decodes");
            prop_assert_eq!(used, bytes.len());
            prop_assert_eq!(encoded_len(&longer), Some(bytes.len()));
            prop_assert_eq!(cmp_json(&back, &v), Ordering::Equal);
            prop_assert_eq!(enc(&back), bytes);
        }

        #[test]
        fn self_delimiting(
            a in json(),
            b in json(),
            s1 in prop::collection::vec(any::<u8>(), 0..6),
            s2 in prop::collection::vec(any::<u8>(), 0..6),
        ) {
            let order = cmp_json(&a, &b);
            let (mut x, mut y) = (enc(&a), enc(&b));
            prop_assert!(order == Ordering::Equal || (!x.starts_with(&y) && !y.starts_with(&x)));
            x.extend_from_slice(&s1);
            y.extend_from_slice(&s2);
            if order != Ordering::Equal {
                prop_assert_eq!(x.cmp(&y), order);
            }
        }

        #[test]
        fn string_prefix_matches_exactly_the_strings_with_that_prefix(
            p in string(),
            s in string(),
            other in json(),
        ) {
            let mut prefix = Vec::new();
            string_prefix(&p, &mut prefix);
            prop_assert_eq!(enc(&json!(s.clone())).starts_with(&prefix), s.starts_with(&p));
            let joined = format!("{p}{s}");
            prop_assert!(enc(&json!(joined)).starts_with(&prefix));
            if !other.as_str().is_some_and(|o| o.starts_with(&p)) {
                prop_assert!(!enc(&other).starts_with(&prefix));
            }
        }

        #[test]
        fn decode_never_panics_and_accepts_only_canonical_bytes(
            v in json(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = enc(&v);
            for (at, byte) in edits {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            if let Some((back, used)) = decode(&bytes) {
                prop_assert_eq!(enc(&back), &bytes[..used]);
            }
        }

        #[test]
        fn decode_of_random_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Some((back, used)) = decode(&bytes) {
                prop_assert_eq!(enc(&back), &bytes[..used]);
            }
        }
    }
}
