//! The diff feed's entry format: one bee put per local change, keyed by `key ‖ Hlc`, whose value
//! is a versioned postcard [`DiffRecord`].

use multibee_bee::keyspace::Keyspace;
use multibee_bee::op::{self, Op};
use serde::{Deserialize, Serialize};

use crate::change::Change;
use crate::hlc::Hlc;

/// What a writer records for one change to one key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiffRecord {
    /// The user key.
    pub key: Vec<u8>,
    /// The writer's HLC when it wrote the change; unique per writer.
    pub ts: Hlc,
    /// Causal context: for every other writer whose diffs this writer had merged, the length
    /// of that writer's diff feed it had merged (sorted by feed key, no duplicates).
    pub context: Vec<([u8; 32], u64)>,
    /// The change.
    pub change: Change,
}

#[derive(Serialize, Deserialize)]
enum Stored<T> {
    V1(T),
}

impl DiffRecord {
    /// The record's bytes (the value of the diff bee's put).
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data into a Vec cannot fail.
        postcard::to_stdvec(&Stored::V1(self)).unwrap_or_default()
    }

    /// Decodes a record; the error says why it is not one.
    pub fn decode(bytes: &[u8]) -> Result<DiffRecord, String> {
        match postcard::from_bytes::<Stored<DiffRecord>>(bytes) {
            Ok(Stored::V1(r)) => Ok(r),
            Err(e) => Err(format!("not a diff record: {e}")),
        }
    }

    /// The diff feed entry of a record (`bytes`: its encoding) under `diff_key`: a bee put, so
    /// that a diff feed also reads as a bee keyed by key and timestamp.
    pub fn entry(diff_key: &[u8], bytes: Vec<u8>) -> Vec<u8> {
        Op::Put {
            key: Keyspace::default().encode(diff_key),
            value: bytes,
        }
        .encode_entry()
    }

    /// Decodes and checks a diff feed entry (a bee put of `diff_key(key, ts)` → record).
    /// Everything a remote writer could get wrong is an error here, decided by the entry's
    /// bytes alone, so every peer skips the same entries.
    pub fn from_entry(entry: &[u8]) -> Result<(DiffRecord, Vec<u8>), String> {
        let (key, value) = match op::decode(entry)? {
            Op::Put { key, value } => (key, value),
            Op::Del { .. } => return Err("a delete in a diff feed".into()),
        };
        let record = DiffRecord::decode(&value)?;
        if Keyspace::default().encode(&diff_key(&record.key, record.ts)) != key {
            return Err("the entry's key does not match the record's key and timestamp".into());
        }
        if !record.context.windows(2).all(|w| w[0].0 < w[1].0) {
            return Err("the causal context is not sorted by writer".into());
        }
        if !record.change.is_valid() {
            return Err("a field operation with an empty path".into());
        }
        Ok((record, value))
    }

    /// The merged length of `writer`'s feed this diff's writer had seen.
    pub fn saw(&self, writer: &[u8; 32]) -> u64 {
        self.context
            .binary_search_by(|(w, _)| w.cmp(writer))
            .map_or(0, |i| self.context[i].1)
    }
}

/// The diff bee's key of a change: the user key, escaped so that no key is a prefix of another
/// (`0x00` → `0x00 0xFF`), a `0x00 0x00` terminator, then the timestamp big-endian.
pub fn diff_key(key: &[u8], ts: Hlc) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 10);
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&ts.0.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    fn record() -> DiffRecord {
        DiffRecord {
            key: b"k".to_vec(),
            ts: Hlc::new(5, 1),
            context: vec![([1; 32], 3), ([2; 32], 9)],
            change: Change::Set(Value::Bytes(b"v".to_vec())),
        }
    }

    fn entry(key: Vec<u8>, record: &DiffRecord) -> Vec<u8> {
        Op::Put {
            key: Keyspace::default().encode(&key),
            value: record.encode(),
        }
        .encode_entry()
    }

    #[test]
    fn entries_round_trip_and_mismatches_are_refused() {
        let r = record();
        let (back, _) = DiffRecord::from_entry(&entry(diff_key(&r.key, r.ts), &r)).unwrap();
        assert_eq!(back, r);
        assert_eq!(r.saw(&[2; 32]), 9);
        assert_eq!(r.saw(&[3; 32]), 0);
        assert!(DiffRecord::from_entry(&entry(diff_key(b"other", r.ts), &r)).is_err());
        assert!(DiffRecord::from_entry(&entry(diff_key(&r.key, Hlc(1)), &r)).is_err());
        let mut unsorted = r.clone();
        unsorted.context.reverse();
        assert!(DiffRecord::from_entry(&entry(diff_key(&r.key, r.ts), &unsorted)).is_err());
        assert!(DiffRecord::from_entry(b"garbage").is_err());
        assert!(DiffRecord::decode(&[1, 2, 3]).is_err(), "unknown version");
    }

    #[test]
    fn diff_keys_are_prefix_free() {
        let a = diff_key(b"a", Hlc(u64::MAX));
        let ab = diff_key(b"a\0", Hlc(0));
        assert!(!ab.starts_with(&a[..a.len() - 8]));
        assert!(a < diff_key(b"a\x01", Hlc(0)));
    }
}
