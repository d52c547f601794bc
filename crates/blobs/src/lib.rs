//! A content-addressed blob store with BLAKE3 verified streaming: the attachments of
//! multibee.
//!
//! A blob is any byte string, named by its BLAKE3 hash ([`BlobId`], equal to
//! `blake3::hash(bytes)`, shown as 64 lowercase hex characters). [`Blobs`] keeps blobs in a
//! folder: bytes in plain files, each with its BLAKE3 hash tree (an *outboard*, computed with
//! n0's `bao-tree` at 16 KiB chunk groups, see [`BLOCK_SIZE`]), and metadata in a redb
//! database. Adds from a byte slice, a file or an async reader of unknown length run in
//! bounded memory and are crash-safe: files are written under temporary names, synced and
//! renamed, and the blob is recorded only then.
//!
//! The outboard lets any byte range be sent with a proof ([`Blobs::export_ranges`]) that the
//! receiver checks against the id alone, chunk group by chunk group, before it writes anything
//! ([`Blobs::import_ranges`]). A receiver records which chunk groups it holds, so a download
//! in many requests, from many peers, in any order, resumes after a crash from what it holds
//! and completes when every group is there. This crate knows nothing of feeds, documents or
//! the network: it moves verified bytes between stores.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), multibee_blobs::Error> {
//! use multibee_blobs::{BlobId, Blobs};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let alice = Blobs::open(dir.path().join("alice"))?;
//! let id = alice.add_bytes(b"hello, blobs").await?;
//! assert_eq!(id, BlobId::from(blake3::hash(b"hello, blobs")));
//! assert_eq!(id.to_string().parse::<BlobId>().unwrap(), id);
//! assert_eq!(alice.read_range(id, 7, 5).await?, b"blobs");
//!
//! // Bob knows only the id and the size; he verifies what Alice sends before storing it.
//! let bob = Blobs::open(dir.path().join("bob"))?;
//! let size = alice.size(id).await?;
//! let encoded = alice.export_ranges(id, &[0..size]).await?;
//! let imported = bob.import_ranges(id, size, &[0..size], &encoded).await?;
//! assert!(imported.complete);
//! assert_eq!(bob.read(id).await?, b"hello, blobs");
//! # Ok(())
//! # }
//! ```
//!
//! The on-disk layout (files, tables and rows, crash-safety invariants) is described in
//! `FORMAT.md` beside this crate; add and streaming throughput, with the command that measures
//! them (`examples/add_throughput.rs`), in its `README.md`.
//!
//! Choices worth knowing:
//! - Ids are shown and parsed as 64 lowercase hex characters only ([`ParseIdError`]).
//! - Outboards use 16 KiB chunk groups ([`BLOCK_SIZE`]); export and import round byte ranges
//!   out to whole chunk groups, the unit of verification and of what a partial blob holds.
//! - A partial blob's size is the one claimed by its first import; the tree proves it once the
//!   last chunk group is held. Blobs are at most [`MAX_SIZE`] bytes.
//! - Every operation that does IO runs on tokio's blocking pool and commits its own redb
//!   transaction; operations on one id are serialized by a lock.
#![deny(missing_docs)]

mod error;
mod gc;
mod id;
mod pending;
mod store;
mod stream;
mod tables;

pub use error::{Error, ParseIdError, Result, StorageError, VerifyError};
pub use gc::{Collected, DEFAULT_GRACE};
pub use id::BlobId;
pub use pending::SYNC_BYTES;
pub use store::{
    Arrival, BLOCK_SIZE, BlobReader, Blobs, DATA_DIR, DB_FILE, Imported, MAX_SIZE, Options, Status,
    TMP_DIR,
};
