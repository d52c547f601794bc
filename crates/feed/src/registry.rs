//! The feeds a store holds, in memory: what every handle of one feed shares (its key, id and
//! status channel), found by key or by discovery key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::keys::{DiscoveryKey, FeedKey};
use crate::tables::FeedRecord;

/// What a subscriber to a feed is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedStatus {
    /// Contiguous entries held.
    pub length: u64,
    /// The length of the newest signed head held (may exceed `length` on a replica).
    pub signed_length: u64,
    /// Whether the writer was caught equivocating.
    pub forked: bool,
}

impl FeedStatus {
    pub(crate) fn of(record: &FeedRecord) -> Self {
        FeedStatus {
            length: record.length,
            signed_length: record.head.as_ref().map_or(0, |h| h.length),
            forked: record.fork.is_some(),
        }
    }
}

/// What every handle of one feed shares.
pub(crate) struct FeedShared {
    pub(crate) key: FeedKey,
    pub(crate) discovery: DiscoveryKey,
    pub(crate) id: u64,
    pub(crate) writable: bool,
    pub(crate) status: watch::Sender<FeedStatus>,
}

impl FeedShared {
    pub(crate) fn new(key: FeedKey, id: u64, writable: bool, status: FeedStatus) -> Self {
        FeedShared {
            key,
            discovery: key.discovery_key(),
            id,
            writable,
            status: watch::Sender::new(status),
        }
    }
}

/// The feeds held, by key and by discovery key (a peer names a feed by its discovery key, so
/// that lookup must not cost a scan).
#[derive(Default)]
pub(crate) struct Registry {
    feeds: HashMap<FeedKey, Arc<FeedShared>>,
    discovery: HashMap<DiscoveryKey, FeedKey>,
}

impl Registry {
    pub(crate) fn get(&self, key: &FeedKey) -> Option<&Arc<FeedShared>> {
        self.feeds.get(key)
    }

    pub(crate) fn insert(&mut self, key: FeedKey, shared: Arc<FeedShared>) {
        self.discovery.insert(shared.discovery, key);
        self.feeds.insert(key, shared);
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &FeedKey> {
        self.feeds.keys()
    }

    pub(crate) fn by_discovery(&self, discovery: &DiscoveryKey) -> Option<&Arc<FeedShared>> {
        self.feeds.get(self.discovery.get(discovery)?)
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The registry is a plain map: a panic while it was held cannot leave it half-updated.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
