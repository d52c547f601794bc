//! Following and inspecting the merged store: the changes stream, conflicts and a key's
//! diff history.

use multibee_bee::{HistoryOptions, LiveHistory};
use multibee_feed::{FeedKey, SnapshotEntries};

use crate::change::Change;
use crate::error::Result;
use crate::fold::{corrupt, diff_at};
use crate::hlc::Hlc;
use crate::peer::MultiBee;
use crate::tables::{DIFFS, DiffId, KEYS, KeyState};
use crate::value::Value;

/// One change to the merged store.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreChange {
    /// Its sequence number: resume with `since: seq + 1`.
    pub seq: u64,
    /// The key.
    pub key: Vec<u8>,
    /// The new value, `None` if the key was deleted.
    pub value: Option<Value>,
}

/// Which changes to stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangesOptions {
    /// The first sequence number (inclusive).
    pub since: u64,
    /// Only keys starting with this prefix.
    pub prefix: Option<Vec<u8>>,
    /// Keep yielding new changes as they happen.
    pub live: bool,
}

/// The changes stream of [`MultiBee::changes`].
pub struct Changes {
    source: Source,
    prefix: Option<Vec<u8>>,
}

enum Source {
    Fixed(Box<dyn Iterator<Item = multibee_bee::Result<multibee_bee::Change>> + Send>),
    Live(LiveHistory),
}

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Changes {
    /// These changes as a [`futures::Stream`].
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<StoreChange>> + Send {
        futures::stream::unfold(self, |mut changes| async move {
            changes.next().await.map(|change| (change, changes))
        })
    }

    /// The next change; `None` at the end (never, for a live stream, until the store closes).
    /// Cancel-safe: dropping the future before it completes (in a `select!`, or on a timeout)
    /// loses no change; the next call returns it.
    pub async fn next(&mut self) -> Option<Result<StoreChange>> {
        loop {
            let change = match &mut self.source {
                Source::Fixed(it) => it.next()?,
                Source::Live(live) => live.next().await?,
            };
            let change = match change {
                Ok(c) => c,
                Err(e) => return Some(Err(e.into())),
            };
            if let Some(prefix) = &self.prefix
                && !change.key.starts_with(prefix)
            {
                continue;
            }
            let value = match change.value.map(|v| Value::from_stored(&v)).transpose() {
                Ok(v) => v,
                Err(e) => return Some(Err(corrupt(e).into())),
            };
            return Some(Ok(StoreChange {
                seq: change.seq,
                key: change.key,
                value,
            }));
        }
    }
}

/// A concurrent write that lost to a newer one.
#[derive(Clone, Debug, PartialEq)]
pub struct Conflict {
    /// The writer of the losing diff.
    pub writer: FeedKey,
    /// Its timestamp.
    pub ts: Hlc,
    /// What it changed.
    pub change: Change,
}

/// One diff of a key, as [`MultiBee::history`] lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryEntry {
    /// The writer.
    pub writer: FeedKey,
    /// The diff's timestamp.
    pub ts: Hlc,
    /// Its sequence number in the writer's diff feed.
    pub seq: u64,
    /// What it changed.
    pub change: Change,
}

impl MultiBee {
    /// Every change to the merged store (local or remote) from `opts.since`.
    pub fn changes(&self, opts: ChangesOptions) -> Result<Changes> {
        let bee = self.store_bee();
        let source = if opts.live {
            Source::Live(bee.live_history(opts.since))
        } else {
            let history = bee.history(&HistoryOptions {
                gte: opts.since,
                ..HistoryOptions::default()
            })?;
            Source::Fixed(Box::new(history))
        };
        Ok(Changes {
            source,
            prefix: opts.prefix,
        })
    }

    /// The concurrent writes to `key` that lost: diffs no later write had seen when it was
    /// made, whose fields a newer such diff overwrote (like CouchDB's `_conflicts`). A write
    /// made after merging them resolves them.
    pub fn conflicts(&self, key: impl AsRef<[u8]>) -> Result<Vec<Conflict>> {
        let key = key.as_ref();
        let heads = self.diffs_of(key, true)?;
        let mut out = Vec::new();
        for (i, h) in heads.iter().enumerate() {
            let lost = heads[i + 1..]
                .iter()
                .any(|later| h.change.clobbered_by(&later.change));
            if lost {
                out.push(Conflict {
                    writer: h.writer,
                    ts: h.ts,
                    change: h.change.clone(),
                });
            }
        }
        Ok(out)
    }

    /// Every counted diff of `key`, oldest first: the fold of their changes is its value.
    pub fn history(&self, key: impl AsRef<[u8]>) -> Result<Vec<HistoryEntry>> {
        self.diffs_of(key.as_ref(), false)
    }

    fn diffs_of(&self, key: &[u8], heads_only: bool) -> Result<Vec<HistoryEntry>> {
        let txn = self.read()?;
        let diffs = match txn.open_table(DIFFS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let lo: DiffId = (key, 0, [0; 32]);
        let hi: DiffId = (key, u64::MAX, [0xFF; 32]);
        let ids: Vec<(u64, [u8; 32])> = if heads_only {
            let keys = txn.open_table(KEYS)?;
            let state = match keys.get(key)? {
                None => KeyState::default(),
                Some(row) => {
                    KeyState::decode(row.value()).ok_or_else(|| corrupt("a key state row"))?
                }
            };
            state.heads.iter().map(|h| (h.ts, h.writer)).collect()
        } else {
            Vec::new()
        };
        let mut out = Vec::new();
        let entries = SnapshotEntries::open(&txn)?;
        let mut push = |ts: u64, w: [u8; 32], seq: u64| -> Result<()> {
            let writer = FeedKey(w);
            let feed = self
                .feed_store()
                .feed(&writer)
                .ok_or_else(|| corrupt(format!("a diff of {writer} is not in a known feed")))?;
            let record = diff_at(&entries, feed.local_id(), (key, ts, seq))?;
            out.push(HistoryEntry {
                writer: FeedKey(w),
                ts: Hlc(ts),
                seq,
                change: record.change,
            });
            Ok(())
        };
        if heads_only {
            for (ts, w) in ids {
                let row = diffs
                    .get((key, ts, w))?
                    .ok_or_else(|| corrupt("a head without its diff"))?;
                push(ts, w, row.value())?;
            }
        } else {
            for row in diffs.range(lo..=hi)? {
                let (k, v) = row?;
                let (_, ts, w) = k.value();
                push(ts, w, v.value())?;
            }
        }
        Ok(out)
    }

    /// A blake3 hash of every key and value of the merged store, in key order: two peers with
    /// the same merged state have the same hash.
    pub fn state_hash(&self) -> Result<[u8; 32]> {
        let mut hasher = blake3::Hasher::new();
        for entry in self.store_bee().range(&multibee_bee::RangeOptions::all())? {
            let entry = entry?;
            hasher.update(&(entry.key.len() as u64).to_le_bytes());
            hasher.update(&entry.key);
            hasher.update(&(entry.value.len() as u64).to_le_bytes());
            hasher.update(&entry.value);
        }
        Ok(*hasher.finalize().as_bytes())
    }
}
