//! A leaderless multi-writer document store: many peers write, each into its own signed feeds,
//! and every peer merges what it receives into the same state, whatever order it arrives in.
//!
//! A [`MultiBee`] owns two feeds in one folder: `store`, a bee of the merged documents, and
//! `diff`, one entry per local change (a bee put keyed by key and timestamp, so it reads as a
//! bee; the peer indexes it, with every other writer's diffs, in its merge table). A database
//! is started by its first writer; members add writers with [`MultiBee::add_writer`], a
//! membership operation in their diff feed that every peer applies alike, so peers learn of
//! writers without being told. Peers replicate the members' diff feeds (with `multibee-net`, or
//! any transport that moves verified feed batches: [`MultiBee::export`] and
//! [`MultiBee::ingest`]) and merge them. The state of a key is the fold of all its diffs from
//! all counted writers in merge order (a change made after another, by any writer, comes after
//! it; concurrent ones by `(HLC, writer key)`): by default per-field last-writer-wins over JSON
//! objects, at every depth, with tombstones, so concurrent edits of different fields both
//! survive and an old write never resurrects a deleted key. A diff that arrives late rewinds its
//! key to the newest checkpoint before it, never further. The rules: `docs/merge.md`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), multibee_multibee::Error> {
//! use multibee_multibee::{MultiBee, Options, Value};
//! use serde_json::json;
//!
//! let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
//! // A starts a database; B opens a peer of it, and A adds B as a writer.
//! let a = MultiBee::open(a_dir.path()).await?;
//! let b = MultiBee::open_with(b_dir.path(), Options::default().database(a.database()?)).await?;
//! a.add_writer(b.diff_key()).await?;
//!
//! a.put("doc", json!({"title": "draft", "tags": []})).await?;
//! // Any transport that moves verified batches will do: here, by hand.
//! b.ingest(a.export(a.diff_key(), 0)?).await?;
//! // Concurrent edits of two fields of one document...
//! a.put("doc", json!({"title": "final", "tags": []})).await?;
//! b.put("doc", json!({"title": "draft", "tags": ["x"]})).await?;
//! // ...exchanged in any order...
//! b.ingest(a.export(a.diff_key(), 2)?).await?;
//! a.ingest(b.export(b.diff_key(), 0)?).await?;
//! // ...merge to the same document on both peers.
//! let merged = Some(Value::Json(json!({"title": "final", "tags": ["x"]})));
//! assert_eq!(a.get("doc")?, merged);
//! assert_eq!(b.get("doc")?, merged);
//! assert_eq!(a.state_hash()?, b.state_hash()?);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod change;
mod changes;
mod diff;
mod error;
mod fold;
mod hlc;
mod index;
mod membership;
mod merge;
mod options;
mod peer;
mod roster;
mod tables;
mod txn;
mod upgrade;
mod value;
mod view;

/// The decoders of stored records, exposed to the fuzz targets only (`cargo fuzz` builds with
/// `--cfg fuzzing`): a damaged database file is untrusted input too.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    use crate::tables;

    /// Runs every decoder of this crate's stored rows on `bytes`; none may panic.
    pub fn decode_stored(bytes: &[u8]) {
        if let Some(row) = tables::WriterRow::decode(bytes) {
            assert_eq!(tables::WriterRow::decode(&row.encode()), Some(row));
        }
        if let Some(state) = tables::KeyState::decode(bytes) {
            assert_eq!(tables::KeyState::decode(&state.encode()), Some(state));
        }
        if let Some((_, record)) = tables::split_diff_row(bytes) {
            let _ = crate::DiffRecord::decode(record);
        }
        let _ = tables::decode_state(bytes);
    }
}

pub use change::{Change, FieldOp, merge_patch};
pub use changes::{Changes, ChangesOptions, Conflict, HistoryEntry, StoreChange};
pub use diff::{DiffRecord, Dot, diff_key};
pub use error::{Error, Result};
pub use hlc::{Clock, Hlc, ManualClock, SystemClock};
pub use index::{
    Condition, Hit, IndexInfo, IndexState, IndexTarget, Op, Query, QueryAnswer, QueryOrder,
};
pub use membership::{MemberOp, MemberRecord};
pub use merge::{Diff, LastWriterWins, Merge};
pub use multibee_bee::RangeOptions;
pub use multibee_feed::FeedKey;
pub use options::{Event, Options};
pub use peer::{MultiBee, WriterInfo, prefix_end};
pub use tables::WriterState;
pub use txn::{BatchOp, Committed, Precondition};
pub use value::{MAX_DEPTH, StoredRef, Value};
pub use view::{MAX_PREFIX_BYTES, MAX_PREFIXES, View, Wants, entry_wanted, filtered_batch};

/// How long an invitation ([`MultiBee::create_invite`]) can be redeemed: 7 days, by the
/// inviter's clock. A leaked ticket is worthless after that, and unused ones are dropped.
pub const INVITE_TTL_MS: u64 = 7 * 24 * 60 * 60 * 1000;
