//! Bad input gets a clear error and changes nothing.

use multibee_blobs::{BlobId, Blobs, Error, ParseIdError, VerifyError};

use crate::common::bytes;

#[test]
fn malformed_ids() {
    let good = BlobId::of(b"x").to_string();
    assert_eq!(good.parse::<BlobId>().unwrap(), BlobId::of(b"x"));
    assert_eq!("".parse::<BlobId>(), Err(ParseIdError::WrongLength(0)));
    assert_eq!(
        good[1..].parse::<BlobId>(),
        Err(ParseIdError::WrongLength(63))
    );
    assert_eq!(
        format!("{good}0").parse::<BlobId>(),
        Err(ParseIdError::WrongLength(65))
    );
    let not_hex = format!("{}g", &good[..63]);
    assert_eq!(
        not_hex.parse::<BlobId>(),
        Err(ParseIdError::NotHex { index: 63 })
    );
    let upper = good.to_uppercase();
    let first_letter = upper.find(|c: char| c.is_ascii_uppercase()).unwrap();
    assert_eq!(
        upper.parse::<BlobId>(),
        Err(ParseIdError::Uppercase {
            index: first_letter
        })
    );
    // 64 bytes, but not 64 characters.
    let wide = format!("é{}", &good[..62]);
    assert!(matches!(
        wide.parse::<BlobId>(),
        Err(ParseIdError::NotHex { index: 0 })
    ));
    let message = ParseIdError::Uppercase { index: 3 }.to_string();
    assert!(message.contains("lowercase"), "{message}");
}

#[tokio::test]
async fn missing_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Blobs::open(dir.path()).unwrap();
    let id = BlobId::of(b"never added");
    assert!(!blobs.has(id).await.unwrap());
    assert_eq!(blobs.status(id).await.unwrap(), None);
    let not_found = |r: Result<(), Error>| matches!(r, Err(Error::NotFound(i)) if i == id);
    assert!(not_found(blobs.size(id).await.map(drop)));
    assert!(not_found(blobs.read(id).await.map(drop)));
    assert!(not_found(blobs.read_range(id, 0, 1).await.map(drop)));
    assert!(not_found(blobs.reader(id).await.map(drop)));
    assert!(not_found(blobs.export_ranges(id, &[0..1]).await.map(drop)));
    assert!(not_found(blobs.delete(id).await));
    assert!(not_found(blobs.pin(id).await));
    assert!(not_found(blobs.unpin(id).await));
    let message = blobs.delete(id).await.unwrap_err().to_string();
    assert!(message.contains(&id.to_string()) && message.contains("not found"));
}

#[tokio::test]
async fn ranges_beyond_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Blobs::open(dir.path()).unwrap();
    let id = blobs.add_bytes(&bytes(1000, 2)).await.unwrap();
    for (offset, len) in [(0, 1001), (1000, 1), (999, 2), (u64::MAX, 1), (1, u64::MAX)] {
        let err = blobs.read_range(id, offset, len).await.unwrap_err();
        assert!(
            matches!(err, Error::OutOfRange { size: 1000, .. }),
            "{offset}+{len}: {err}"
        );
        assert!(err.to_string().contains("beyond the end"));
    }
    let err = blobs.export_ranges(id, &[0..1001]).await.unwrap_err();
    assert!(matches!(err, Error::OutOfRange { end: 1001, .. }), "{err}");
    let err = blobs
        .export_ranges(id, &[std::ops::Range { start: 5, end: 2 }])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    let err = blobs
        .import_ranges(BlobId::of(b"other"), 10, &[0..11], &[])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OutOfRange { .. }), "{err}");
    let err = blobs
        .import_ranges(BlobId::of(b"other"), u64::MAX, &[0..1], &[])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}

#[tokio::test]
async fn bad_imports_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = Blobs::open(dir.path().join("a")).unwrap();
    let b = Blobs::open(dir.path().join("b")).unwrap();
    let data = bytes(70_000, 3);
    let id = a.add_bytes(&data).await.unwrap();
    let size = data.len() as u64;
    let encoded = a.export_ranges(id, &[0..size]).await.unwrap();
    let rejected = |r: Result<_, Error>| match r {
        Err(Error::Rejected { reason, .. }) => reason,
        other => panic!("expected a rejection, got {other:?}"),
    };

    // Truncated, with trailing bytes, for another id, with a wrong size.
    let short = rejected(
        b.import_ranges(id, size, &[0..size], &encoded[..1000])
            .await,
    );
    assert!(matches!(short, VerifyError::Truncated(_)), "{short}");
    let mut long = encoded.clone();
    long.push(0);
    let long = rejected(b.import_ranges(id, size, &[0..size], &long).await);
    assert_eq!(long, VerifyError::TrailingBytes(1));
    let other = BlobId::of(b"another blob");
    let wrong = rejected(b.import_ranges(other, size, &[0..size], &encoded).await);
    assert!(matches!(wrong, VerifyError::HashMismatch(_)), "{wrong}");
    let resized = rejected(b.import_ranges(id, size + 1, &[0..size], &encoded).await);
    assert!(
        matches!(
            resized,
            VerifyError::HashMismatch(_) | VerifyError::Truncated(_)
        ),
        "{resized}"
    );
    let empty = rejected(b.import_ranges(id, 0, &[], &[]).await);
    assert!(matches!(empty, VerifyError::HashMismatch(_)), "{empty}");
    assert_eq!(b.status(id).await.unwrap(), None);
    assert_eq!(b.status(other).await.unwrap(), None);

    // Once a size is recorded, another claimed size is refused.
    let first = a.export_ranges(id, &[0..1]).await.unwrap();
    b.import_ranges(id, size, &[0..1], &first).await.unwrap();
    let bigger = size + 16_384;
    let resized = rejected(b.import_ranges(id, bigger, &[0..1], &first).await);
    assert_eq!(
        resized,
        VerifyError::SizeMismatch {
            recorded: size,
            claimed: bigger
        }
    );
}

#[tokio::test]
async fn corrupted_files_are_detected_on_export() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Blobs::open(dir.path()).unwrap();
    let data = bytes(50_000, 4);
    let id = blobs.add_bytes(&data).await.unwrap();
    let path = dir.path().join("data").join(id.to_hex());
    let mut damaged = data.clone();
    damaged[40_000] ^= 1;
    std::fs::write(&path, &damaged).unwrap();
    assert!(blobs.export_ranges(id, &[0..16_384]).await.is_ok());
    let err = blobs.export_ranges(id, &[0..50_000]).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt(_)), "{err}");
    std::fs::remove_file(&path).unwrap();
    let err = blobs.read(id).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt(_)), "{err}");
}

#[tokio::test]
async fn a_file_that_changes_while_added() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Blobs::open(dir.path().join("s")).unwrap();
    let err = blobs.add_file(dir.path().join("nope")).await.unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("nope"));
    // A directory is not a file.
    let err = blobs.add_file(dir.path()).await.unwrap_err();
    assert!(
        matches!(err, Error::Io { .. } | Error::InvalidArgument(_)),
        "{err}"
    );
}

#[tokio::test]
async fn a_false_size_claim_is_overruled_by_a_proof_of_the_size() {
    let dir = tempfile::tempdir().unwrap();
    let a = Blobs::open(dir.path().join("a")).unwrap();
    let b = Blobs::open(dir.path().join("b")).unwrap();
    let data = bytes(70_000, 5);
    let id = a.add_bytes(&data).await.unwrap();
    let size = data.len() as u64;
    // 70_000 and 80_000 bytes give trees of the same shape on the left: the first chunk group
    // verifies under either size, so a lying peer can start a partial blob of the wrong size.
    let first = a.export_ranges(id, &[0..1]).await.unwrap();
    let imported = b.import_ranges(id, 80_000, &[0..1], &first).await.unwrap();
    assert!(!imported.complete);
    assert_eq!(b.status(id).await.unwrap().unwrap().size, 80_000);
    // An honest import without the last group cannot overrule the claim ...
    let err = b
        .import_ranges(id, size, &[0..1], &first)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Rejected {
            reason: VerifyError::SizeMismatch { .. },
            ..
        }
    ));
    // ... one with the last group proves the size, and the download starts over from it.
    let tail = [60_000..size];
    let encoded = a.export_ranges(id, &tail).await.unwrap();
    let imported = b.import_ranges(id, size, &tail, &encoded).await.unwrap();
    assert!(!imported.complete);
    let status = b.status(id).await.unwrap().unwrap();
    assert_eq!(status.size, size);
    assert_eq!(status.held, [49_152..size]);
    let rest = status.missing();
    let encoded = a.export_ranges(id, &rest).await.unwrap();
    assert!(
        b.import_ranges(id, size, &rest, &encoded)
            .await
            .unwrap()
            .complete
    );
    assert_eq!(b.read(id).await.unwrap(), data);
}

/// A reader that fails after some bytes.
struct Failing(u64);

impl tokio::io::AsyncRead for Failing {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.0 == 0 {
            return std::task::Poll::Ready(Err(std::io::Error::other("the source broke")));
        }
        let n = (buf.remaining() as u64).min(this.0) as usize;
        buf.put_slice(&vec![1; n]);
        this.0 -= n as u64;
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_failing_reader_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Blobs::open(dir.path()).unwrap();
    let err = blobs.add_reader(Failing(3 << 20)).await.unwrap_err();
    assert!(err.to_string().contains("the source broke"), "{err}");
    assert_eq!(blobs.list(None, 10).await.unwrap(), vec![]);
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("data")).unwrap().count(),
        0
    );
}
