//! How a peer is opened, and what it reports.

use std::sync::Arc;

use multibee_feed::{FeedKey, SyncMode};

use crate::hlc::{Clock, Hlc, SystemClock};
use crate::merge::{LastWriterWins, Merge};

/// How a [`crate::MultiBee`] is opened.
#[derive(Clone, Debug)]
pub struct Options {
    /// When writes reach the disk (default: durable, fsync per group commit).
    pub sync: SyncMode,
    /// The most memory the database may use to cache pages (default:
    /// [`multibee_feed::DEFAULT_CACHE_BYTES`], 128 MiB).
    pub cache_bytes: Option<usize>,
    /// The storage under the database file (default: the file itself); see
    /// [`multibee_feed::faults`] for one that injects I/O faults.
    pub backend: Option<multibee_feed::Backend>,
    /// The physical clock under the HLC (default: the system clock).
    pub clock: Arc<dyn Clock>,
    /// How far ahead of the local clock a remote timestamp may be and still advance the HLC
    /// (default 60 s). A diff further ahead is merged like any other (in its timestamp's
    /// place, the same on every peer) but leaves the local clock alone and is reported.
    pub max_drift_ms: u64,
    /// The merge function (default: per-field last-writer-wins).
    pub merge: Arc<dyn Merge>,
    /// A key's value is checkpointed every this many diffs, which bounds the cost of a late
    /// diff (default 64).
    pub checkpoint_interval: u32,
    /// The database this peer belongs to (its first writer's diff feed key). `None` (the
    /// default): a new folder starts a new database whose first writer is this peer; a folder
    /// that exists keeps the database it has. Set it to join an existing database (see
    /// `multibee::join` in the root crate, with a ticket): the peer's writes count once a
    /// member adds it.
    pub database: Option<multibee_feed::FeedKey>,
    /// Merge replicated diffs as soon as they are stored (default). Off: only
    /// [`crate::MultiBee::merge`] and [`crate::MultiBee::ingest`] merge.
    pub auto_merge: bool,
    /// Hold only the keys under these prefixes: a partial view (see [`crate::View`]). `None`
    /// (the default): the view the folder has (every key, for a folder that never had one).
    /// Opening with other prefixes than the folder's changes the view: keys outside the new
    /// one are dropped; new prefixes are fetched from peers. A folder that had a view goes on
    /// fetching filtered, even with the prefix `""` (every key).
    pub only: Option<crate::View>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sync: SyncMode::Durable,
            cache_bytes: None,
            backend: None,
            clock: Arc::new(SystemClock),
            max_drift_ms: 60_000,
            merge: Arc::new(LastWriterWins),
            checkpoint_interval: 64,
            database: None,
            auto_merge: true,
            only: None,
        }
    }
}

impl Options {
    /// Joins the database `key` (the diff feed key of its first writer) instead of starting one.
    pub fn database(mut self, key: multibee_feed::FeedKey) -> Self {
        self.database = Some(key);
        self
    }

    /// Sets the sync mode.
    pub fn sync(mut self, sync: SyncMode) -> Self {
        self.sync = sync;
        self
    }

    /// Caps the database's page cache at `bytes`.
    pub fn cache_bytes(mut self, bytes: usize) -> Self {
        self.cache_bytes = Some(bytes);
        self
    }

    /// Puts `backend` under the database file.
    pub fn backend(mut self, backend: multibee_feed::Backend) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Sets the physical clock.
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Sets the largest remote clock lead that still advances the HLC.
    pub fn max_drift_ms(mut self, ms: u64) -> Self {
        self.max_drift_ms = ms;
        self
    }

    /// Sets the merge function.
    pub fn merge(mut self, merge: impl Merge + 'static) -> Self {
        self.merge = Arc::new(merge);
        self
    }

    /// Sets the checkpoint interval (at least 1).
    pub fn checkpoint_interval(mut self, n: u32) -> Self {
        self.checkpoint_interval = n.max(1);
        self
    }

    /// Holds only the keys under the prefixes of `view` (see [`Options::only`]).
    pub fn only(mut self, view: crate::View) -> Self {
        self.only = Some(view);
        self
    }

    /// Turns automatic merging of replicated diffs on or off.
    pub fn auto_merge(mut self, on: bool) -> Self {
        self.auto_merge = on;
        self
    }
}

/// Something a peer noticed while merging, or a change to the writers it counts, reported
/// through [`crate::MultiBee::events`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A diff's timestamp is further ahead of the local clock than `max_drift_ms`. It was
    /// merged in its place; the local clock did not follow it.
    FutureTimestamp {
        /// The writer.
        writer: FeedKey,
        /// The diff's timestamp.
        ts: Hlc,
        /// The local physical clock when it was merged.
        local_ms: u64,
    },
    /// A diff feed entry that is not a valid diff: skipped (on every peer alike).
    InvalidDiff {
        /// The writer.
        writer: FeedKey,
        /// The entry's sequence number in the writer's diff feed.
        seq: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A writer was caught signing two histories: it is frozen and its diffs no longer count.
    WriterFrozen {
        /// The writer.
        writer: FeedKey,
    },
    /// A writer became a member (added here with [`crate::MultiBee::add_writer`], or by a
    /// replicated membership operation): a network layer serving this peer starts replicating
    /// its diff feed.
    WriterAdded {
        /// The writer.
        writer: FeedKey,
    },
    /// A writer is no longer a member ([`crate::MultiBee::remove_writer`], here or replicated):
    /// its diffs past its cut no longer count. Its feed is still replicated, so that every
    /// peer holds the same membership operations.
    WriterRemoved {
        /// The writer.
        writer: FeedKey,
    },
    /// A membership operation that does not count (its author is not a member, or it removes
    /// a writer that is not one): skipped on every peer alike.
    MembershipRejected {
        /// The operation's author.
        author: FeedKey,
        /// Its entry in the author's diff feed.
        seq: u64,
        /// Its stamp.
        ts: Hlc,
        /// Why it does not count.
        reason: String,
    },
    /// Diffs of a writer were merged.
    Merged {
        /// The writer.
        writer: FeedKey,
        /// Its diff feed length merged so far.
        merged: u64,
    },
}
