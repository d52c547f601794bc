//! The history stream, the diff between two versions, and watching a range.

use std::collections::{BTreeSet, VecDeque};

use multibee_feed::FeedStatus;
use tokio::sync::watch;

use crate::bee::Bee;
use crate::error::{Error, Result};
use crate::op;
use crate::range::{Entry, RangeOptions};

/// One operation of the history, with user keys of the bee it was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The feed sequence number.
    pub seq: u64,
    /// The user key.
    pub key: Vec<u8>,
    /// The value put, or `None` for a delete.
    pub value: Option<Vec<u8>>,
}

/// Which part of the history to read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryOptions {
    /// The first sequence number (inclusive).
    pub gte: u64,
    /// The end (exclusive); `None` for the current version.
    pub lt: Option<u64>,
    /// Newest first.
    pub reverse: bool,
}

/// For one key whose entry differs between two versions, its entry on each side (`None` where
/// the key is absent). The entries differ by sequence number; their values may be equal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffEntry {
    /// The user key.
    pub key: Vec<u8>,
    /// The entry at the first version, if set.
    pub left: Option<Entry>,
    /// The entry at the second version, if set.
    pub right: Option<Entry>,
}

impl Bee {
    /// The operations in feed order (or reversed) with their sequence numbers. An entry that is
    /// not a bee operation is reported as [`Error::InvalidEntry`] and the stream goes on.
    /// Operations on keys outside this (sub-)database are left out.
    pub fn history(
        &self,
        opts: &HistoryOptions,
    ) -> Result<impl Iterator<Item = Result<Change>> + Send + use<>> {
        let version = self.version()?;
        let end = opts.lt.map_or(version, |lt| lt.min(version));
        let start = opts.gte.min(end);
        let rows = self.feed().range(start..end)?;
        let rows: Box<dyn Iterator<Item = _> + Send> = match opts.reverse {
            false => Box::new(rows),
            true => Box::new(rows.rev()),
        };
        let space = self.keyspace().clone();
        Ok(rows.filter_map(move |row| decode_change(&space, row)))
    }

    /// The history from `gte` on, then every new operation as it is written or ingested.
    pub fn live_history(&self, gte: u64) -> LiveHistory {
        LiveHistory {
            bee: self.clone(),
            next: gte,
            status: self.feed().subscribe(),
            buffered: VecDeque::new(),
        }
    }

    /// Every key in `opts` whose entry differs between versions `from` and `to`, in key order
    /// (or reversed, then cut to `opts.limit`), with its entry at `from` as `left` and at `to`
    /// as `right`. Entries are compared, not values, as hyperbee's diff stream does: a key
    /// written between the two versions is reported even if it holds the same bytes on both
    /// sides (a re-put of the same value, or a delete and a re-put), since the sequence number
    /// of its last write differs. A key absent on both sides is never reported (a put then a
    /// delete in between, or a delete of an absent key an older writer appended).
    pub fn diff(&self, from: u64, to: u64, opts: &RangeOptions) -> Result<Vec<DiffEntry>> {
        let (lo, hi) = (from.min(to), from.max(to));
        let mut keys = BTreeSet::new();
        let history = HistoryOptions {
            gte: lo,
            lt: Some(hi),
            reverse: false,
        };
        for change in self.checkout(hi)?.history(&history)? {
            match change {
                Ok(change) if opts.contains(&change.key) => {
                    keys.insert(change.key);
                }
                Ok(_) | Err(Error::InvalidEntry { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let (left, right) = (self.checkout(from)?, self.checkout(to)?);
        let mut out = Vec::new();
        for key in keys {
            let (l, r) = (left.get_entry(&key)?, right.get_entry(&key)?);
            if l.as_ref().map(|e| e.seq) != r.as_ref().map(|e| e.seq) {
                out.push(DiffEntry {
                    key,
                    left: l,
                    right: r,
                });
            }
        }
        if opts.reverse {
            out.reverse();
        }
        if let Some(n) = opts.limit {
            out.truncate(n);
        }
        Ok(out)
    }

    /// Watches a range: each time the bee moves on, yields the keys of the range whose entry
    /// changed, by [`Bee::diff`] (so a re-put of the same value wakes it too, as a hyperbee
    /// watcher does). A write that changes no entry of the range (such as a write outside it)
    /// does not wake it.
    pub fn watch(&self, opts: RangeOptions) -> Result<Watch> {
        Ok(Watch {
            bee: self.clone(),
            opts,
            version: self.version()?,
            status: self.feed().subscribe(),
        })
    }
}

fn decode_change(
    space: &crate::keyspace::Keyspace,
    row: multibee_feed::Result<(u64, Vec<u8>)>,
) -> Option<Result<Change>> {
    let (seq, entry) = match row {
        Ok(row) => row,
        Err(e) => return Some(Err(e.into())),
    };
    match op::decode(&entry) {
        Err(reason) => Some(Err(Error::InvalidEntry { seq, reason })),
        Ok(op) => space.decode(op.key()).map(|key| {
            Ok(Change {
                seq,
                key: key.to_vec(),
                value: op.value().map(<[u8]>::to_vec),
            })
        }),
    }
}

/// The history as it grows: see [`Bee::live_history`].
pub struct LiveHistory {
    bee: Bee,
    next: u64,
    status: watch::Receiver<FeedStatus>,
    buffered: VecDeque<Result<Change>>,
}

impl LiveHistory {
    /// This history as a [`futures::Stream`].
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<Change>> + Send {
        futures::stream::unfold(self, |mut live| async move {
            live.next().await.map(|change| (change, live))
        })
    }

    /// The next operation, waiting for one if need be; `None` once the store is closed.
    /// Cancel-safe: dropping the future before it completes loses nothing (what was read is
    /// kept for the next call; the wait itself holds no item).
    pub async fn next(&mut self) -> Option<Result<Change>> {
        const CHUNK: u64 = 256;
        loop {
            if let Some(change) = self.buffered.pop_front() {
                return Some(change);
            }
            let version = match self.bee.version() {
                Ok(v) => v,
                Err(e) => return Some(Err(e)),
            };
            if self.next < version {
                let end = version.min(self.next + CHUNK);
                let opts = HistoryOptions {
                    gte: self.next,
                    lt: Some(end),
                    reverse: false,
                };
                match self.bee.history(&opts) {
                    Ok(changes) => self.buffered.extend(changes),
                    Err(e) => return Some(Err(e)),
                }
                self.next = end;
                continue;
            }
            self.status.changed().await.ok()?;
        }
    }
}

/// Changes to a watched range: see [`Bee::watch`].
pub struct Watch {
    bee: Bee,
    opts: RangeOptions,
    version: u64,
    status: watch::Receiver<FeedStatus>,
}

/// What a [`Watch`] reports: the bee moved from one version to another and these keys in the
/// range changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// The version before.
    pub from: u64,
    /// The version after.
    pub to: u64,
    /// The keys of the range whose entry differs, as [`Bee::diff`] reports them.
    pub changes: Vec<DiffEntry>,
}

impl Watch {
    /// This watch as a [`futures::Stream`].
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<WatchEvent>> + Send {
        futures::stream::unfold(self, |mut watch| async move {
            watch.next().await.map(|event| (event, watch))
        })
    }

    /// Waits until a key in the range changes; `None` once the store is closed. Cancel-safe:
    /// the version it reports from moves only when it returns an event.
    pub async fn next(&mut self) -> Option<Result<WatchEvent>> {
        loop {
            let now = match self.bee.version() {
                Ok(v) => v,
                Err(e) => return Some(Err(e)),
            };
            if now > self.version {
                let from = std::mem::replace(&mut self.version, now);
                let opts = RangeOptions {
                    reverse: false,
                    limit: None,
                    ..self.opts.clone()
                };
                match self.bee.diff(from, now, &opts) {
                    Ok(changes) if changes.is_empty() => {}
                    Ok(changes) => {
                        return Some(Ok(WatchEvent {
                            from,
                            to: now,
                            changes,
                        }));
                    }
                    Err(e) => return Some(Err(e)),
                }
            }
            self.status.changed().await.ok()?;
        }
    }
}
