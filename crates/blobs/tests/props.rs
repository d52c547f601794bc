//! Property tests: ids, splits, range round trips, bit flips and downloads in pieces.

use std::ops::Range;

use multibee_blobs::{BlobId, Blobs, Error};
use proptest::prelude::*;

use crate::common::{Pieces, bytes, runtime, split};

const MAX_LEN: usize = 200_000;

fn config(cases: u32) -> ProptestConfig {
    // Failures are saved under `tests/proptest-regressions/` (to be committed).
    ProptestConfig::with_cases(cases)
}

/// A byte range within `size` (empty ranges included).
fn range_in(size: u64, a: u64, b: u64) -> Range<u64> {
    let (a, b) = (a % (size + 1), b % (size + 1));
    a.min(b)..a.max(b)
}

proptest! {
    #![proptest_config(config(24))]

    /// Any split of a blob into reader pieces gives the same id, equal to `blake3::hash`.
    #[test]
    fn splits_give_the_same_id(
        len in 0..MAX_LEN,
        seed in any::<u64>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let data = bytes(len, seed);
        runtime().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let blobs = Blobs::open(dir.path()).unwrap();
            let id = blobs.add_reader(Pieces(split(&data, &cuts))).await.unwrap();
            assert_eq!(id, BlobId::from(blake3::hash(&data)));
            assert_eq!(id, BlobId::of(&data));
            assert_eq!(blobs.read(id).await.unwrap(), data);
        });
    }

    /// Every set of ranges round-trips export → import, and the importer then serves the
    /// same encoding.
    #[test]
    fn ranges_round_trip(
        len in 1..MAX_LEN,
        seed in any::<u64>(),
        points in proptest::collection::vec((any::<u64>(), any::<u64>()), 1..4),
    ) {
        let data = bytes(len, seed);
        let size = len as u64;
        let ranges: Vec<_> = points.iter().map(|(a, b)| range_in(size, *a, *b)).collect();
        runtime().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let a = Blobs::open(dir.path().join("a")).unwrap();
            let b = Blobs::open(dir.path().join("b")).unwrap();
            let id = a.add_bytes(&data).await.unwrap();
            let encoded = a.export_ranges(id, &ranges).await.unwrap();
            let imported = b.import_ranges(id, size, &ranges, &encoded).await.unwrap();
            let wanted: u64 = ranges.iter().map(|r| r.end - r.start).sum();
            assert!(imported.held_bytes >= wanted.min(1).min(size));
            assert_eq!(b.export_ranges(id, &ranges).await.unwrap(), encoded);
            if let Some(status) = b.status(id).await.unwrap() {
                for r in ranges.iter().filter(|r| r.start < r.end) {
                    assert!(status.held.iter().any(|h| h.start <= r.start && r.end <= h.end));
                }
            }
        });
    }

    /// A flipped bit anywhere in the encoding fails the import, and nothing of it is held.
    #[test]
    fn flipped_bits_are_rejected(
        len in 1..MAX_LEN,
        seed in any::<u64>(),
        point in (any::<u64>(), any::<u64>()),
        flip in any::<(usize, u8)>(),
        held_first in any::<bool>(),
    ) {
        let data = bytes(len, seed);
        let size = len as u64;
        let mut range = range_in(size, point.0, point.1);
        if range.is_empty() {
            range = 0..size;
        }
        runtime().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let a = Blobs::open(dir.path().join("a")).unwrap();
            let b = Blobs::open(dir.path().join("b")).unwrap();
            let id = a.add_bytes(&data).await.unwrap();
            let mut encoded = a.export_ranges(id, std::slice::from_ref(&range)).await.unwrap();
            let at = flip.0 % encoded.len();
            encoded[at] ^= 1 << (flip.1 % 8);
            if held_first {
                // The receiver already holds the last chunk group: a rejected import leaves
                // exactly that.
                let last = [size - 1..size];
                let encoded = a.export_ranges(id, &last).await.unwrap();
                b.import_ranges(id, size, &last, &encoded).await.unwrap();
            }
            let before = b.status(id).await.unwrap();
            let result = b.import_ranges(id, size, &[range], &encoded).await;
            assert!(matches!(result, Err(Error::Rejected { .. })), "{result:?}");
            assert_eq!(b.status(id).await.unwrap(), before);
            if !held_first {
                let mut files = std::fs::read_dir(dir.path().join("b/data")).unwrap();
                assert!(files.next().is_none());
            }
        });
    }

    /// A download in random range requests, in random order with duplicates and a reopen of
    /// the receiver in the middle, then the missing rest, completes byte-identical.
    #[test]
    fn downloads_in_pieces_complete(
        len in 1..MAX_LEN,
        seed in any::<u64>(),
        points in proptest::collection::vec((any::<u64>(), any::<u64>()), 0..10),
        reopen_at in any::<usize>(),
    ) {
        let data = bytes(len, seed);
        let size = len as u64;
        let mut requests: Vec<_> = points.iter().map(|(a, b)| range_in(size, *a, *b)).collect();
        if let Some(first) = requests.first().cloned() {
            requests.push(first); // a duplicate
        }
        runtime().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let a = Blobs::open(dir.path().join("a")).unwrap();
            let mut b = Blobs::open(dir.path().join("b")).unwrap();
            let id = a.add_bytes(&data).await.unwrap();
            let mut held = 0;
            for (i, range) in requests.iter().enumerate() {
                if i == reopen_at % (requests.len() + 1) {
                    drop(b);
                    b = Blobs::open(dir.path().join("b")).unwrap();
                }
                let request = std::slice::from_ref(range);
                let encoded = a.export_ranges(id, request).await.unwrap();
                let imported = b.import_ranges(id, size, request, &encoded).await.unwrap();
                assert!(imported.held_bytes >= held, "held bytes never shrink");
                held = imported.held_bytes;
            }
            let missing = match b.status(id).await.unwrap() {
                Some(status) if status.complete => vec![],
                Some(status) => status.missing(),
                None => [0..size].to_vec(),
            };
            let encoded = a.export_ranges(id, &missing).await.unwrap();
            let imported = b.import_ranges(id, size, &missing, &encoded).await.unwrap();
            assert!(imported.complete);
            assert_eq!(imported.held_bytes, size);
            assert_eq!(b.read(id).await.unwrap(), data);
        });
    }
}
