//! Reading entries inside a transaction the caller already holds, read or write.
//!
//! Layers above keep pointers `(feed, index)` into their feeds instead of copies of entry
//! bytes: an index row names the entry, and a read follows it in the same snapshot as the
//! row, with [`EntryReader::get`].

use redb::{ReadOnlyTable, ReadTransaction, ReadableTable, Table, WriteTransaction};

use crate::FeedKey;
use crate::error::Result;
use crate::feed::Feed;
use crate::tables::{self, ENTRIES};
use crate::txn::WriteTxn;

/// A feed's number in this store: what [`EntryReader::get`] takes. It is local (another store
/// numbers its feeds otherwise) and never changes once the feed exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LocalId(pub(crate) u64);

/// Reads entries of any feed of the store through a table opened in a transaction.
pub struct EntryReader<T> {
    table: T,
}

impl<T> std::fmt::Debug for EntryReader<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EntryReader")
    }
}

/// An [`EntryReader`] on a read snapshot.
pub type SnapshotEntries = EntryReader<ReadOnlyTable<(u64, u64), &'static [u8]>>;

impl SnapshotEntries {
    /// Opens the entries of the snapshot `txn` (from [`crate::Store::begin_read`]).
    pub fn open(txn: &ReadTransaction) -> Result<Self> {
        Ok(EntryReader {
            table: txn.open_table(ENTRIES)?,
        })
    }
}

impl<'t> EntryReader<Table<'t, (u64, u64), &'static [u8]>> {
    /// Opens the entries as the write transaction `raw` sees them (its own appends included).
    /// Drop the reader before appending or ingesting in the same transaction.
    pub fn open_in(raw: &'t WriteTransaction) -> Result<Self> {
        Ok(EntryReader {
            table: raw.open_table(ENTRIES)?,
        })
    }
}

impl<T: ReadableTable<(u64, u64), &'static [u8]>> EntryReader<T> {
    /// Entry `index` of feed `feed`, or `None` if it is not held.
    pub fn get(&self, feed: LocalId, index: u64) -> Result<Option<Vec<u8>>> {
        let Some(row) = self.table.get((feed.0, index))? else {
            return Ok(None);
        };
        let (_, entry) = tables::split_row(index, row.value())?;
        Ok(Some(entry.to_vec()))
    }
}

impl Feed {
    /// The feed's number in this store, for [`EntryReader::get`].
    pub fn local_id(&self) -> LocalId {
        LocalId(self.shared_id())
    }
}

impl WriteTxn<'_> {
    /// The number in this store of a feed this transaction knows (created in it included),
    /// for [`EntryReader::get`].
    pub fn local_id(&mut self, key: &FeedKey) -> Result<LocalId> {
        self.record_id(key).map(LocalId)
    }
}
