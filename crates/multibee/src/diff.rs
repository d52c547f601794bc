//! The diff feed's entry format: one bee put per local change, keyed by `key ‖ Hlc`, whose value
//! is a versioned postcard [`DiffRecord`].

use multibee_bee::keyspace::Keyspace;
use multibee_bee::op::{self, Op};
use serde::{Deserialize, Serialize};

use crate::change::Change;
use crate::hlc::Hlc;

/// One diff of one writer: the writer's diff feed key and the diff's sequence number in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// The writer's diff feed key.
    pub writer: [u8; 32],
    /// The entry's sequence number in that feed.
    pub seq: u64,
}

/// What a writer records for one change to one key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiffRecord {
    /// The user key.
    pub key: Vec<u8>,
    /// The diff's stamp: its place in the merge order (with the writer's key). The writer's
    /// HLC, raised above every diff of the key the writer had merged, so that a change made
    /// after another comes after it everywhere (see `docs/merge.md`). Unique per writer and key.
    pub ts: Hlc,
    /// Causal context: the other writers' diffs of this key that were heads (not yet
    /// overwritten by a diff that had seen them) when the writer wrote this one, sorted, no
    /// duplicates. Its size depends on how many concurrent writes the key has, never on how
    /// many writers the database has.
    pub parents: Vec<Dot>,
    /// The change.
    pub change: Change,
}

/// The first format, whose context was a version vector of every writer's merged length.
#[derive(Deserialize)]
struct RecordV1 {
    key: Vec<u8>,
    ts: Hlc,
    _context: Vec<([u8; 32], u64)>,
    change: Change,
}

#[derive(Serialize, Deserialize)]
enum Stored<A, B> {
    V1(A),
    V2(B),
}

impl DiffRecord {
    /// The record's bytes (the value of the diff bee's put).
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data into a Vec cannot fail.
        postcard::to_stdvec(&Stored::<(), _>::V2(self)).unwrap_or_default()
    }

    /// Decodes a record; the error says why it is not one. A record of the first format reads
    /// with no parents (its writes stay merged; only the conflicts it could show are lost).
    pub fn decode(bytes: &[u8]) -> Result<DiffRecord, String> {
        match postcard::from_bytes::<Stored<RecordV1, DiffRecord>>(bytes) {
            Ok(Stored::V2(r)) => Ok(r),
            Ok(Stored::V1(r)) => Ok(DiffRecord {
                key: r.key,
                ts: r.ts,
                parents: Vec::new(),
                change: r.change,
            }),
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
        if !record.parents.windows(2).all(|w| w[0] < w[1]) {
            return Err("the parents are not sorted".into());
        }
        record.change.check()?;
        Ok((record, value))
    }

    /// Whether `dot` is one of this diff's parents.
    pub fn has_parent(&self, dot: &Dot) -> bool {
        self.parents.binary_search(dot).is_ok()
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
            parents: vec![
                Dot {
                    writer: [1; 32],
                    seq: 3,
                },
                Dot {
                    writer: [2; 32],
                    seq: 9,
                },
            ],
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
        assert!(r.has_parent(&Dot {
            writer: [2; 32],
            seq: 9
        }));
        assert!(!r.has_parent(&Dot {
            writer: [2; 32],
            seq: 8
        }));
        assert!(DiffRecord::from_entry(&entry(diff_key(b"other", r.ts), &r)).is_err());
        assert!(DiffRecord::from_entry(&entry(diff_key(&r.key, Hlc(1)), &r)).is_err());
        let mut unsorted = r.clone();
        unsorted.parents.reverse();
        assert!(DiffRecord::from_entry(&entry(diff_key(&r.key, r.ts), &unsorted)).is_err());
        assert!(DiffRecord::from_entry(b"garbage").is_err());
        assert!(DiffRecord::decode(&[7, 2, 3]).is_err(), "unknown version");
    }

    #[test]
    fn first_format_records_still_read() {
        #[derive(Serialize)]
        struct V1<'a> {
            key: &'a [u8],
            ts: Hlc,
            context: Vec<([u8; 32], u64)>,
            change: &'a Change,
        }
        let change = Change::Set(Value::Bytes(b"v".to_vec()));
        let old = V1 {
            key: b"k",
            ts: Hlc(9),
            context: vec![([1; 32], 2)],
            change: &change,
        };
        let bytes = postcard::to_stdvec(&Stored::<_, ()>::V1(old)).unwrap();
        let back = DiffRecord::decode(&bytes).unwrap();
        assert_eq!((back.key.as_slice(), back.ts), (&b"k"[..], Hlc(9)));
        assert!(back.parents.is_empty());
        assert_eq!(back.change, change);
    }

    #[test]
    fn diff_keys_are_prefix_free() {
        let a = diff_key(b"a", Hlc(u64::MAX));
        let ab = diff_key(b"a\0", Hlc(0));
        assert!(!ab.starts_with(&a[..a.len() - 8]));
        assert!(a < diff_key(b"a\x01", Hlc(0)));
    }
}
