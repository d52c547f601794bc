//! "Arbitrary bytes never panic": `DiffRecord::decode`, `DiffRecord::from_entry` and
//! `Value::from_stored` on random bytes and on mutations of real encodings. Only the absence of
//! a panic is asserted; `fuzz/` runs the same for longer.

use multibee_multibee::{Change, DiffRecord, Dot, FieldOp, Hlc, Value, diff_key};
use proptest::prelude::*;
use serde_json::json;

#[path = "../../feed/tests/mutations.rs"]
mod mutations;
use mutations::{check_truncating, edits, mutate};

/// A real record of each change kind.
fn records() -> Vec<DiffRecord> {
    let ts = Hlc::new(1_700_000_000_000, 3);
    let parents = vec![
        Dot {
            writer: [1; 32],
            seq: 4,
        },
        Dot {
            writer: [9; 32],
            seq: 12,
        },
    ];
    let changes = [
        Change::Set(Value::Json(json!({"a": [1, 2.5, "x"], "b": {"c": null}}))),
        Change::Set(Value::Bytes(b"raw\0bytes".to_vec())),
        Change::Fields(vec![
            FieldOp::Set {
                path: vec!["a".into(), "b".into()],
                value: json!(true),
            },
            FieldOp::Remove {
                path: vec!["z".into()],
            },
            FieldOp::Object {
                path: vec!["o".into()],
            },
        ]),
        Change::Delete,
    ];
    changes
        .into_iter()
        .map(|change| DiffRecord {
            key: b"doc\0key".to_vec(),
            ts,
            parents: parents.clone(),
            change,
        })
        .collect()
}

/// Decodes `bytes` as a record, an entry and a stored value.
fn decode_all(bytes: &[u8]) {
    if let Ok(record) = DiffRecord::decode(bytes) {
        let _ = record.has_parent(&Dot {
            writer: [1; 32],
            seq: 0,
        });
    }
    if let Ok((record, value)) = DiffRecord::from_entry(bytes) {
        assert_eq!(DiffRecord::decode(&value), Ok(record));
    }
    if let Ok(value) = Value::from_stored(bytes) {
        assert!(Value::from_stored(&value.to_stored()).is_ok());
    }
}

#[test]
fn the_samples_decode() {
    for r in records() {
        let entry = DiffRecord::entry(&diff_key(&r.key, r.ts), r.encode());
        assert_eq!(DiffRecord::from_entry(&entry).unwrap().0, r);
    }
}

#[test]
fn mutated_records_never_panic() {
    let inputs = (0usize..4, edits());
    check_truncating(
        file!(),
        "mutated_records_never_panic",
        inputs,
        |(which, edits)| {
            let r = &records()[which];
            let encoded = r.encode();
            decode_all(&mutate(encoded.clone(), &edits));
            decode_all(&mutate(
                DiffRecord::entry(&diff_key(&r.key, r.ts), encoded.clone()),
                &edits,
            ));
            // A mutated record inside an intact entry envelope.
            decode_all(&DiffRecord::entry(
                &diff_key(&r.key, r.ts),
                mutate(encoded, &edits),
            ));
            if let Change::Set(v) = &r.change {
                decode_all(&mutate(v.to_stored(), &edits));
            }
            Ok(())
        },
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        decode_all(&bytes);
        // As the value of a well-formed bee put, so that the record decoder sees it.
        let entry = DiffRecord::entry(&diff_key(b"k", Hlc(5)), bytes);
        decode_all(&entry);
    }

    #[test]
    fn mutated_json_values_never_panic(text in "[\\[\\]{}\",:0-9a-z.eE+\\-\\\\ ]{0,64}") {
        let mut stored = vec![1u8];
        stored.extend_from_slice(text.as_bytes());
        decode_all(&stored);
    }
}
