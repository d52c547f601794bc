//! The write transaction a job runs in ([`WriteTxn`]): a feed's state as the transaction sees
//! it, appends, new feeds, and the entries rows every append writes. What the jobs change in
//! feed records collects in an [`Overlay`], which the writer signs, stores and publishes once
//! the transaction commits.
//!
//! A job must do its checks before it writes. A job that fails after writing (a storage error,
//! or a bug in a layer above) poisons the transaction: the writer aborts it and runs the group
//! again without that job, so other callers never see its partial writes.

use std::collections::HashMap;

use ed25519_dalek::SigningKey;
use redb::{ReadableTable, WriteTransaction};

use crate::crypto;
use crate::error::{Error, Result};
use crate::keys::{FeedKey, Hash};
use crate::options::Limits;
use crate::tables::{self, ENTRIES, FEEDS, FeedRecord, META, SECRETS, check_record};
use crate::tree;

/// The in-memory state of one feed, as the writer sees it.
#[derive(Clone)]
pub(crate) struct FeedState {
    pub record: FeedRecord,
    pub secret: Option<SigningKey>,
}

/// What the jobs of one transaction changed, applied to the cache only after the commit.
#[derive(Default)]
pub(crate) struct Overlay {
    pub(crate) feeds: HashMap<FeedKey, FeedState>,
    pub(crate) appended: Vec<FeedKey>,
}

/// A write transaction shared by the jobs of one group commit.
///
/// Layers built on the feed (bee, multibee) write their own tables through [`WriteTxn::raw`]
/// in the same transaction as their appends, so both commit or neither does. A job must do its
/// checks before it writes: an error after a write aborts the job's writes (see module docs).
pub struct WriteTxn<'a> {
    pub(crate) txn: &'a WriteTransaction,
    pub(crate) cache: &'a HashMap<FeedKey, FeedState>,
    pub(crate) overlay: &'a mut Overlay,
    pub(crate) limits: &'a Limits,
    pub(crate) dirty: bool,
}

impl WriteTxn<'_> {
    /// The underlying redb transaction, for tables of the layers above. Using it marks the job
    /// as having written.
    pub fn raw(&mut self) -> &WriteTransaction {
        self.dirty = true;
        self.txn
    }

    /// The feed's number in this store (see [`crate::LocalId`]).
    pub(crate) fn record_id(&mut self, key: &FeedKey) -> Result<u64> {
        Ok(self.state(key)?.record.id)
    }

    /// The current length of a feed, including appends made earlier in this transaction.
    pub fn length(&mut self, key: &FeedKey) -> Result<u64> {
        Ok(self.state(key)?.record.length)
    }

    /// The entries `range` of a feed as this transaction sees them (including its own appends).
    pub fn entries(&mut self, key: &FeedKey, range: std::ops::Range<u64>) -> Result<Vec<Vec<u8>>> {
        let record = &self.state(key)?.record;
        if range.start > range.end || range.end > record.length {
            return Err(Error::InvalidArgument(format!(
                "range {range:?} is not within the {} entries held",
                record.length
            )));
        }
        let id = record.id;
        let table = self.txn.open_table(ENTRIES)?;
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        for row in table.range((id, range.start)..(id, range.end))? {
            let (key, value) = row?;
            out.push(tables::split_row(key.value().1, value.value())?.1.to_vec());
        }
        Ok(out)
    }

    /// Appends entries to an own feed; returns the new length.
    pub fn append<E: AsRef<[u8]>>(&mut self, key: &FeedKey, entries: &[E]) -> Result<u64> {
        let leaves: Vec<Hash> = entries
            .iter()
            .map(|e| crypto::leaf_hash(e.as_ref()))
            .collect();
        self.append_hashed(key, entries, &leaves)
    }

    /// Appends entries whose leaf hashes the caller computed (off the writer thread).
    pub(crate) fn append_hashed<E: AsRef<[u8]>>(
        &mut self,
        key: &FeedKey,
        entries: &[E],
        leaves: &[Hash],
    ) -> Result<u64> {
        let max_entry = self.limits.max_entry_bytes;
        if let Some(e) = entries.iter().find(|e| e.as_ref().len() > max_entry) {
            return Err(Error::InvalidArgument(format!(
                "an entry of {} bytes is over the limit of {max_entry}",
                e.as_ref().len()
            )));
        }
        let state = self.state(key)?;
        if state.secret.is_none() {
            return Err(Error::NotWritable(*key));
        }
        let length = state.record.length;
        if length.saturating_add(entries.len() as u64) > tree::MAX_LENGTH {
            return Err(Error::InvalidArgument(
                "the feed would exceed its maximum length".into(),
            ));
        }
        let (id, mut roots) = (state.record.id, state.record.roots.clone());
        self.dirty = true;
        let mut table = self.txn.open_table(ENTRIES)?;
        push_leaves(&mut table, id, length, &mut roots, entries, leaves)?;
        drop(table);
        let state = self.state(key)?;
        state.record.length = length + entries.len() as u64;
        state.record.roots = roots;
        if !self.overlay.appended.contains(key) {
            self.overlay.appended.push(*key);
        }
        Ok(length + entries.len() as u64)
    }

    /// Creates the (empty) replica of someone else's feed in this transaction, if it is not
    /// held yet; it is visible through [`crate::Store::feed`] once the transaction commits.
    pub fn create_replica(&mut self, key: FeedKey) -> Result<()> {
        self.create_feed(key, None)
    }

    /// Creates a feed record (and stores its secret, for an own feed), unless the feed exists.
    pub(crate) fn create_feed(&mut self, key: FeedKey, secret: Option<SigningKey>) -> Result<()> {
        if self.state(&key).is_ok() {
            return Ok(());
        }
        self.dirty = true;
        let id = {
            let mut meta = self.txn.open_table(META)?;
            let next = match meta.get(tables::NEXT_FEED_ID_KEY)? {
                Some(v) => decode_u64(v.value())?,
                None => 0,
            };
            meta.insert(
                tables::NEXT_FEED_ID_KEY,
                next.saturating_add(1).to_le_bytes().as_slice(),
            )?;
            next
        };
        if let Some(secret) = &secret {
            self.txn
                .open_table(SECRETS)?
                .insert(key.0, secret.to_bytes())?;
        }
        let record = FeedRecord {
            id,
            writable: secret.is_some(),
            length: 0,
            roots: Vec::new(),
            head: None,
            frontier: Vec::new(),
            fork: None,
        };
        self.overlay.feeds.insert(key, FeedState { record, secret });
        Ok(())
    }

    /// The state of a feed for this transaction: from the overlay, the cache, or disk.
    pub(crate) fn state(&mut self, key: &FeedKey) -> Result<&mut FeedState> {
        if !self.overlay.feeds.contains_key(key) {
            let state = match self.cache.get(key) {
                Some(state) => state.clone(),
                None => load_state(self.txn, key)?,
            };
            self.overlay.feeds.insert(*key, state);
        }
        // Inserted just above if it was missing.
        self.overlay
            .feeds
            .get_mut(key)
            .ok_or(Error::UnknownFeed(*key))
    }
}

pub(crate) fn decode_u64(bytes: &[u8]) -> Result<u64> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| Error::Corrupt("a counter is not 8 bytes".into()))?;
    Ok(u64::from_le_bytes(array))
}

/// Reads a feed's record and secret inside a write transaction.
fn load_state(txn: &WriteTransaction, key: &FeedKey) -> Result<FeedState> {
    let feeds = txn.open_table(FEEDS)?;
    let bytes = feeds.get(key.0)?.ok_or(Error::UnknownFeed(*key))?;
    let record = FeedRecord::decode(bytes.value())?;
    check_record(key, &record)?;
    let secret = if record.writable {
        let secrets = txn.open_table(SECRETS)?;
        let bytes = secrets.get(key.0)?.ok_or_else(|| {
            Error::Corrupt(format!("the secret key of own feed {key} is missing"))
        })?;
        let secret = SigningKey::from_bytes(&bytes.value());
        if secret.verifying_key().to_bytes() != key.0 {
            return Err(Error::Corrupt(format!(
                "the secret key stored for {key} does not match it"
            )));
        }
        Some(secret)
    } else {
        None
    };
    Ok(FeedState { record, secret })
}

/// Appends leaves `length..` to the entries table, extending `roots` (the roots at `length`)
/// and storing with each leaf the parent nodes it completes.
pub(crate) fn push_leaves<E: AsRef<[u8]>>(
    table: &mut redb::Table<(u64, u64), &'static [u8]>,
    id: u64,
    length: u64,
    roots: &mut Vec<Hash>,
    entries: &[E],
    leaves: &[Hash],
) -> Result<()> {
    let mut row = Vec::new();
    for (i, (entry, leaf)) in (length..).zip(entries.iter().zip(leaves)) {
        row.clear();
        let mut hash = *leaf;
        for _ in 0..tree::completed_parents(i) {
            // The roots at length i end with one root per trailing one bit of i.
            let left = roots
                .pop()
                .ok_or_else(|| Error::Corrupt("roots do not match the length".into()))?;
            hash = crypto::parent_hash(&left, &hash);
            row.extend_from_slice(&hash.0);
        }
        roots.push(hash);
        row.extend_from_slice(entry.as_ref());
        table.insert((id, i), row.as_slice())?;
    }
    Ok(())
}
