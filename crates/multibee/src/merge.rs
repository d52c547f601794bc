//! The merge function: how a key's ordered diffs fold into its value.

use multibee_feed::FeedKey;

use crate::change::Change;
use crate::hlc::Hlc;
use crate::value::Value;

/// One diff as a merge function sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Diff {
    /// When it was written.
    pub ts: Hlc,
    /// The diff feed key of the writer.
    pub writer: FeedKey,
    /// What it changes.
    pub change: Change,
}

/// A deterministic merge: folds a key's diffs, in `(Hlc, writer key)` order, into its value.
///
/// Every peer calls it with the same diffs in the same order, so it must depend on nothing
/// else (no clock, no randomness, no local state). It must also be a fold: merging `a` then
/// `b` onto the result must equal merging `a ++ b` at once, because the store merges diffs as
/// they arrive and restarts from checkpoints when an older diff arrives late.
pub trait Merge: Send + Sync + std::fmt::Debug {
    /// The value after applying `diffs` (oldest first) to `base` (`None`: absent or deleted).
    fn merge(&self, key: &[u8], base: Option<Value>, diffs: &[Diff]) -> Option<Value>;
}

/// The default merge: last writer wins per field of a JSON object (recursively), whole values
/// for arrays, scalars and bytes, with tombstones for deleted fields and keys.
///
/// Applying each diff in `(Hlc, writer)` order is exactly per-field last-writer-wins: a field
/// ends with the value of the newest diff that touched it, and a delete hides every older
/// write, so an old write can never resurrect a deleted key or field.
#[derive(Clone, Copy, Debug, Default)]
pub struct LastWriterWins;

impl Merge for LastWriterWins {
    fn merge(&self, _key: &[u8], base: Option<Value>, diffs: &[Diff]) -> Option<Value> {
        diffs.iter().fold(base, |state, d| d.change.apply(state))
    }
}
