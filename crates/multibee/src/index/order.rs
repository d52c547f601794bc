//! PLACEHOLDER (replaced by the index-keys branch).
#![allow(dead_code)]
use serde_json::Value;
pub(crate) fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(1),
        Value::Bool(false) => out.push(2),
        Value::Bool(true) => out.push(3),
        Value::Number(n) => {
            out.push(4);
            let f = n.as_f64().unwrap_or(0.0);
            let f = if f == 0.0 { 0.0 } else { f };
            let bits = f.to_bits();
            let bits = if f.is_sign_negative() {
                !bits
            } else {
                bits ^ (1 << 63)
            };
            out.extend_from_slice(&bits.to_be_bytes());
        }
        Value::String(s) => {
            out.push(5);
            string_body(s, out);
            out.extend_from_slice(&[0, 0]);
        }
        Value::Array(items) => {
            out.push(6);
            for i in items {
                encode(i, out);
            }
            out.push(0);
        }
        Value::Object(map) => {
            out.push(7);
            let mut fields: Vec<_> = map.iter().collect();
            fields.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            for (k, v) in fields {
                string_body(k, out);
                out.extend_from_slice(&[0, 0]);
                encode(v, out);
            }
            out.push(0);
        }
    }
}
fn string_body(s: &str, out: &mut Vec<u8>) {
    for &b in s.as_bytes() {
        if b == 0 {
            out.extend_from_slice(&[0, 0xff]);
        } else {
            out.push(b);
        }
    }
}
pub(crate) fn string_prefix(prefix: &str, out: &mut Vec<u8>) {
    out.push(5);
    string_body(prefix, out);
}
pub(crate) fn decode(bytes: &[u8]) -> Option<(Value, usize)> {
    dec(bytes, 0)
}
fn dec_str(b: &[u8]) -> Option<(String, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let c = *b.get(i)?;
        if c != 0 {
            out.push(c);
            i += 1;
            continue;
        }
        match *b.get(i + 1)? {
            0 => return Some((String::from_utf8(out).ok()?, i + 2)),
            0xff => {
                out.push(0);
                i += 2;
            }
            _ => return None,
        }
    }
}
fn dec(b: &[u8], depth: usize) -> Option<(Value, usize)> {
    if depth > 64 {
        return None;
    }
    match *b.first()? {
        1 => Some((Value::Null, 1)),
        2 => Some((Value::Bool(false), 1)),
        3 => Some((Value::Bool(true), 1)),
        4 => {
            let raw: [u8; 8] = b.get(1..9)?.try_into().ok()?;
            let bits = u64::from_be_bytes(raw);
            let bits = if bits >> 63 == 1 {
                bits ^ (1 << 63)
            } else {
                !bits
            };
            Some((
                serde_json::Number::from_f64(f64::from_bits(bits)).map(Value::Number)?,
                9,
            ))
        }
        5 => {
            let (s, n) = dec_str(&b[1..])?;
            Some((Value::String(s), 1 + n))
        }
        6 => {
            let mut i = 1;
            let mut items = Vec::new();
            loop {
                if *b.get(i)? == 0 {
                    return Some((Value::Array(items), i + 1));
                }
                let (v, n) = dec(&b[i..], depth + 1)?;
                items.push(v);
                i += n;
            }
        }
        7 => {
            let mut i = 1;
            let mut m = serde_json::Map::new();
            loop {
                if *b.get(i)? == 0 {
                    return Some((Value::Object(m), i + 1));
                }
                let (k, n) = dec_str(&b[i..])?;
                i += n;
                let (v, n) = dec(&b[i..], depth + 1)?;
                m.insert(k, v);
                i += n;
            }
        }
        _ => None,
    }
}
pub(crate) fn cmp_json(a: &Value, b: &Value) -> std::cmp::Ordering {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    encode(a, &mut x);
    encode(b, &mut y);
    x.cmp(&y)
}
