//! Ordered range queries over the index, at the head or at a checkout.

use std::ops::Bound;

use multibee_feed::{LocalId, SnapshotEntries};
use redb::ReadTransaction;

use crate::error::{Error, Result};
use crate::keyspace::Keyspace;
use crate::tables::{self, LATEST, VERSIONS};

/// One key and its value, with the sequence number of the put that set it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The feed sequence number of the put.
    pub seq: u64,
    /// The user key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
}

/// The bounds and order of a range query, as in hyperbee: `gt`/`gte`, `lt`/`lte`, `reverse`,
/// `limit`. Unset bounds are open; if both `gt` and `gte` are set, `gt` wins (likewise `lt`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeOptions {
    /// Keys strictly greater than this.
    pub gt: Option<Vec<u8>>,
    /// Keys greater than or equal to this.
    pub gte: Option<Vec<u8>>,
    /// Keys strictly less than this.
    pub lt: Option<Vec<u8>>,
    /// Keys less than or equal to this.
    pub lte: Option<Vec<u8>>,
    /// Largest key first.
    pub reverse: bool,
    /// At most this many entries.
    pub limit: Option<usize>,
}

impl RangeOptions {
    /// Every key, in order.
    pub fn all() -> Self {
        Self::default()
    }

    /// Sets `gt`.
    pub fn gt(mut self, key: impl AsRef<[u8]>) -> Self {
        self.gt = Some(key.as_ref().to_vec());
        self
    }

    /// Sets `gte`.
    pub fn gte(mut self, key: impl AsRef<[u8]>) -> Self {
        self.gte = Some(key.as_ref().to_vec());
        self
    }

    /// Sets `lt`.
    pub fn lt(mut self, key: impl AsRef<[u8]>) -> Self {
        self.lt = Some(key.as_ref().to_vec());
        self
    }

    /// Sets `lte`.
    pub fn lte(mut self, key: impl AsRef<[u8]>) -> Self {
        self.lte = Some(key.as_ref().to_vec());
        self
    }

    /// Largest key first.
    pub fn reverse(mut self) -> Self {
        self.reverse = true;
        self
    }

    /// At most `n` entries.
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// Whether a user key lies within the bounds.
    pub fn contains(&self, key: &[u8]) -> bool {
        let above = match (&self.gt, &self.gte) {
            (Some(gt), _) => key > gt.as_slice(),
            (None, Some(gte)) => key >= gte.as_slice(),
            (None, None) => true,
        };
        let below = match (&self.lt, &self.lte) {
            (Some(lt), _) => key < lt.as_slice(),
            (None, Some(lte)) => key <= lte.as_slice(),
            (None, None) => true,
        };
        above && below
    }

    /// The stored-key bounds of this range in a keyspace: (lower, upper).
    pub(crate) fn stored_bounds(&self, space: &Keyspace) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        let lower = match (&self.gt, &self.gte) {
            (Some(k), _) => Bound::Excluded(space.encode(k)),
            (None, Some(k)) => Bound::Included(space.encode(k)),
            (None, None) => Bound::Included(space.first()),
        };
        let upper = match (&self.lt, &self.lte) {
            (Some(k), _) => Bound::Excluded(space.encode(k)),
            (None, Some(k)) => Bound::Included(space.encode(k)),
            (None, None) => Bound::Excluded(space.end()),
        };
        (lower, upper)
    }
}

/// The entries of a range query, read lazily from one snapshot.
pub struct Range {
    inner: Box<dyn Iterator<Item = Result<Entry>> + Send>,
}

impl Iterator for Range {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next()
    }
}

impl Range {
    fn new(it: impl Iterator<Item = Result<Entry>> + Send + 'static, limit: Option<usize>) -> Self {
        let inner: Box<dyn Iterator<Item = Result<Entry>> + Send> = match limit {
            Some(n) => Box::new(it.take(n)),
            None => Box::new(it),
        };
        Range { inner }
    }
}

/// A lower or upper bound is empty when the range can hold no key.
pub(crate) fn is_empty(lower: &Bound<Vec<u8>>, upper: &Bound<Vec<u8>>) -> bool {
    match (lower, upper) {
        (Bound::Included(l), Bound::Included(u)) => l > u,
        (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(u))
        | (Bound::Excluded(l), Bound::Included(u)) => l >= u,
        _ => false,
    }
}

type LatestRow = (
    redb::AccessGuard<'static, (u64, &'static [u8])>,
    redb::AccessGuard<'static, &'static [u8]>,
);

/// A range query at the head: the `bee-latest-1` table.
pub(crate) fn head(
    txn: &ReadTransaction,
    id: u64,
    space: &Keyspace,
    opts: &RangeOptions,
) -> Result<Range> {
    let (lower, upper) = opts.stored_bounds(space);
    if is_empty(&lower, &upper) {
        return Ok(Range::new(std::iter::empty(), None));
    }
    let table = txn.open_table(LATEST)?;
    let lo = lower.as_ref().map(|k| (id, k.as_slice()));
    let hi = upper.as_ref().map(|k| (id, k.as_slice()));
    let rows = table.range::<(u64, &[u8])>((lo, hi))?;
    let space = space.clone();
    let decode = move |row: std::result::Result<LatestRow, redb::StorageError>| -> Result<Entry> {
        let (k, v) = row?;
        let stored = k.value().1;
        let key = space.decode(stored).ok_or_else(corrupt)?.to_vec();
        let (seq, value) = tables::split_latest_row(v.value()).ok_or_else(corrupt)?;
        Ok(Entry {
            seq,
            key,
            value: value.to_vec(),
        })
    };
    Ok(match opts.reverse {
        false => Range::new(rows.map(decode), opts.limit),
        true => Range::new(rows.rev().map(decode), opts.limit),
    })
}

/// A range query at `version`: for each key, the newest of its rows before it (its version
/// rows in `bee-versions-2` and its head row in `bee-latest-1`), and the value from the feed
/// entry that row names.
pub(crate) fn checkout(
    txn: &ReadTransaction,
    id: u64,
    feed: LocalId,
    space: &Keyspace,
    opts: &RangeOptions,
    version: u64,
) -> Result<Range> {
    let (lower, upper) = opts.stored_bounds(space);
    if is_empty(&lower, &upper) {
        return Ok(Range::new(std::iter::empty(), None));
    }
    let table = txn.open_table(VERSIONS)?;
    let entries = SnapshotEntries::open(txn)?;
    // Every version of a bound key sorts between (key, 0) and (key, MAX).
    let lo = match &lower {
        Bound::Included(k) => Bound::Included((id, k.as_slice(), 0)),
        Bound::Excluded(k) => Bound::Excluded((id, k.as_slice(), u64::MAX)),
        Bound::Unbounded => Bound::Unbounded,
    };
    let hi = match &upper {
        Bound::Included(k) => Bound::Included((id, k.as_slice(), u64::MAX)),
        Bound::Excluded(k) => Bound::Excluded((id, k.as_slice(), 0)),
        Bound::Unbounded => Bound::Unbounded,
    };
    let rows = table.range::<(u64, &[u8], u64)>((lo, hi))?;
    let rows = rows.map(|row| -> Result<VersionRow> {
        let (k, v) = row?;
        let (_, stored, seq) = k.value();
        Ok((stored.to_vec(), seq, v.value() == tables::PUT))
    });
    // Each set key's newest put is its head row, which sorts after its version rows.
    let heads = txn.open_table(LATEST)?;
    let lo = lower.as_ref().map(|k| (id, k.as_slice()));
    let hi = upper.as_ref().map(|k| (id, k.as_slice()));
    let heads = heads.range::<(u64, &[u8])>((lo, hi))?;
    let heads = heads.map(|row| -> Result<VersionRow> {
        let (k, v) = row?;
        let (seq, _) = tables::split_latest_row(v.value()).ok_or_else(corrupt)?;
        Ok((k.value().1.to_vec(), seq, true))
    });
    let space = space.clone();
    let rows: Rows = match opts.reverse {
        false => Box::new(Merged::new(Box::new(rows), Box::new(heads), false)),
        true => Box::new(Merged::new(
            Box::new(rows.rev()),
            Box::new(heads.rev()),
            true,
        )),
    };
    let newest = NewestBefore {
        rows,
        version,
        reverse: opts.reverse,
        pending: None,
    };
    let entries = newest.filter_map(move |row| match row {
        Err(e) => Some(Err(e)),
        Ok((_, _, false)) => None, // deleted at that version
        Ok((stored, seq, true)) => Some((|| {
            let key = space.decode(&stored).ok_or_else(corrupt)?.to_vec();
            let value = put_value(&entries, feed, seq, &stored)?;
            Ok(Entry { seq, key, value })
        })()),
    });
    Ok(Range::new(entries, opts.limit))
}

/// The value put by entry `seq` of the bee's feed, which an index row says puts `stored`.
pub(crate) fn put_value(
    entries: &SnapshotEntries,
    feed: LocalId,
    seq: u64,
    stored: &[u8],
) -> Result<Vec<u8>> {
    let entry = entries.get(feed, seq)?.ok_or_else(|| {
        Error::Feed(multibee_feed::Error::Corrupt(format!(
            "a version row names entry {seq}, which the feed does not hold"
        )))
    })?;
    match crate::op::decode(&entry) {
        Ok(crate::op::Op::Put { key, value }) if key == stored => Ok(value),
        _ => Err(Error::Feed(multibee_feed::Error::Corrupt(format!(
            "a version row names entry {seq}, which is not a put of its key"
        )))),
    }
}

/// A version row: stored key, seq, and whether it is a put.
type VersionRow = (Vec<u8>, u64, bool);

/// Rows in `(key, seq)` order (or its reverse).
type Rows = Box<dyn Iterator<Item = Result<VersionRow>> + Send>;

/// Two streams of rows, each in `(key, seq)` order (or both reversed), as one.
struct Merged {
    a: std::iter::Peekable<Rows>,
    b: std::iter::Peekable<Rows>,
    reverse: bool,
}

impl Merged {
    fn new(a: Rows, b: Rows, reverse: bool) -> Merged {
        Merged {
            a: a.peekable(),
            b: b.peekable(),
            reverse,
        }
    }
}

impl Iterator for Merged {
    type Item = Result<VersionRow>;

    fn next(&mut self) -> Option<Self::Item> {
        let take_a = match (self.a.peek(), self.b.peek()) {
            (None, None) => return None,
            (Some(_), None) | (Some(Err(_)), _) => true,
            (None, Some(_)) | (_, Some(Err(_))) => false,
            (Some(Ok(x)), Some(Ok(y))) => {
                let ordered = (&x.0, x.1) <= (&y.0, y.1);
                ordered != self.reverse
            }
        };
        if take_a { self.a.next() } else { self.b.next() }
    }
}

/// Groups version rows by key and yields, per key, the newest row with `seq < version`.
struct NewestBefore {
    rows: Rows,
    version: u64,
    reverse: bool,
    /// Forward: the best row so far of the key being read.
    pending: Option<VersionRow>,
}

impl Iterator for NewestBefore {
    type Item = Result<VersionRow>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let row = match self.rows.next() {
                Some(Ok(row)) => row,
                Some(Err(e)) => return Some(Err(e)),
                None => return self.pending.take().map(Ok),
            };
            if row.1 >= self.version {
                continue;
            }
            if self.reverse {
                // Newest first: the first visible row of a key is its answer; skip the rest.
                if self.pending.as_ref().is_some_and(|p| p.0 == row.0) {
                    continue;
                }
                self.pending = Some((row.0.clone(), row.1, false));
                return Some(Ok(row));
            }
            match &self.pending {
                Some(p) if p.0 != row.0 => return self.pending.replace(row).map(Ok),
                _ => self.pending = Some(row),
            }
        }
    }
}

fn corrupt() -> Error {
    Error::Feed(multibee_feed::Error::Corrupt(
        "an index row does not match its layout".into(),
    ))
}
