//! Maintaining the index tables from feed entries, inside the feed's write transaction.

use multibee_feed::{FeedKey, WriteTxn};
use redb::{ReadableTable, WriteTransaction};

use crate::op::{self, Op};
use crate::tables::{self, BEES, LATEST, META, VERSIONS};

type FeedResult<T> = multibee_feed::Result<T>;

/// Converts any redb error into the feed layer's storage error.
pub(crate) fn storage<E: Into<redb::Error>>(e: E) -> multibee_feed::Error {
    multibee_feed::Error::from(e.into())
}

/// At most this many entries are indexed per transaction when catching up.
pub(crate) const CATCH_UP_CHUNK: u64 = 16_384;

/// Brings an index of an earlier format to this one. Format 1 copied every value into its
/// version rows: the upgrade drops that table and re-derives every bee's index from its feed
/// ([`catch_up`] does, from the start, in chunks; a crash in between resumes there). An
/// index of a later format is refused, untouched.
pub(crate) fn upgrade(raw: &WriteTransaction) -> FeedResult<()> {
    let mut meta = raw.open_table(META).map_err(storage)?;
    let format = meta
        .get(tables::FORMAT_KEY)
        .map_err(storage)?
        .map(|v| v.value());
    match format {
        Some(tables::FORMAT) => return Ok(()),
        Some(newer) if newer > tables::FORMAT => {
            return Err(multibee_feed::Error::Corrupt(format!(
                "the bee index is of format {newer}, written by a newer release (this one \
                 reads up to {})",
                tables::FORMAT
            )));
        }
        _ => {}
    }
    let old = redb::TableDefinition::<(u64, &[u8], u64), &[u8]>::new(tables::VERSIONS_1);
    if raw.delete_table(old).map_err(storage)? {
        raw.open_table(LATEST)
            .map_err(storage)?
            .retain(|_, _| false)
            .map_err(storage)?;
        let mut bees = raw.open_table(BEES).map_err(storage)?;
        let mut rows = Vec::new();
        for row in bees.iter().map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            rows.push((k.value(), tables::split_bee_row(v.value()).0));
        }
        for (feed, id) in rows {
            bees.insert(feed, tables::bee_row(id, 0)).map_err(storage)?;
        }
        tracing::info!("bee index of format 1: re-deriving it from the feeds");
    }
    meta.insert(tables::FORMAT_KEY, tables::FORMAT)
        .map_err(storage)?;
    Ok(())
}

/// The bee id and indexed length of `feed`, registering the bee if it is new.
pub(crate) fn register(txn: &mut WriteTxn<'_>, feed: &FeedKey) -> FeedResult<(u64, u64)> {
    if let Some(found) = lookup(txn.raw(), feed)? {
        return Ok(found);
    }
    let raw = txn.raw();
    let mut meta = raw.open_table(META).map_err(storage)?;
    let id = meta
        .get(tables::NEXT_BEE_ID)
        .map_err(storage)?
        .map_or(0, |v| v.value());
    meta.insert(tables::NEXT_BEE_ID, id + 1).map_err(storage)?;
    // Create the index tables, so that reads of an empty bee find them.
    raw.open_table(LATEST).map_err(storage)?;
    raw.open_table(VERSIONS).map_err(storage)?;
    set_indexed(raw, feed, id, 0)?;
    Ok((id, 0))
}

/// The bee id and indexed length of `feed`, if registered.
pub(crate) fn lookup(raw: &WriteTransaction, feed: &FeedKey) -> FeedResult<Option<(u64, u64)>> {
    let bees = raw.open_table(BEES).map_err(storage)?;
    let row = bees.get(feed.0).map_err(storage)?;
    Ok(row.map(|r| tables::split_bee_row(r.value())))
}

/// Records the feed length the index reflects.
pub(crate) fn set_indexed(
    raw: &WriteTransaction,
    feed: &FeedKey,
    id: u64,
    indexed: u64,
) -> FeedResult<()> {
    let mut bees = raw.open_table(BEES).map_err(storage)?;
    bees.insert(feed.0, tables::bee_row(id, indexed))
        .map_err(storage)?;
    Ok(())
}

/// Indexes ops (or undecodable entries, which are skipped) at sequence numbers `start..`.
///
/// `bee-latest-1` holds each set key's newest put; `bee-versions-2` holds everything older:
/// a put gets a version row once a later op supersedes it, and a delete gets one at once. So
/// a put of a new key writes one row, and a checkout reads the newest of the key's version
/// rows and its head row. A delete of a key that is absent is indexed like any delete (a
/// version row): writers no longer append one, but feeds from older writers hold them, and a
/// replica must index every feed alike.
pub(crate) fn index_ops<'a>(
    raw: &WriteTransaction,
    id: u64,
    start: u64,
    ops: impl IntoIterator<Item = Result<&'a Op, String>>,
) -> FeedResult<()> {
    let mut valid: Vec<(u64, &Op)> = Vec::new();
    for (seq, op) in (start..).zip(ops) {
        match op {
            Ok(op) => valid.push((seq, op)),
            Err(reason) => {
                tracing::warn!(seq, %reason, "skipping a feed entry that is not a bee operation");
            }
        }
    }
    // Key order makes neighbouring inserts land on pages this transaction already copied; the
    // sort is stable, so each key's ops stay in seq order and the last one sets the head.
    valid.sort_by(|a, b| a.1.key().cmp(b.1.key()));
    let mut latest = raw.open_table(LATEST).map_err(storage)?;
    let mut versions = raw.open_table(VERSIONS).map_err(storage)?;
    for (seq, op) in valid {
        let key = op.key();
        let superseded = match op.value() {
            Some(value) => latest
                .insert((id, key), tables::latest_row(seq, value).as_slice())
                .map_err(storage)?
                .map(|old| tables::split_latest_row(old.value()).map(|(s, _)| s)),
            None => {
                versions
                    .insert((id, key, seq), tables::DEL)
                    .map_err(storage)?;
                latest
                    .remove((id, key))
                    .map_err(storage)?
                    .map(|old| tables::split_latest_row(old.value()).map(|(s, _)| s))
            }
        };
        match superseded {
            None => {}
            Some(Some(old)) => {
                versions
                    .insert((id, key, old), tables::PUT)
                    .map_err(storage)?;
            }
            Some(None) => {
                return Err(multibee_feed::Error::Corrupt(
                    "a bee-latest-1 row is shorter than its seq".into(),
                ));
            }
        }
    }
    Ok(())
}

/// Indexes raw feed entries at `start..`, decoding each.
pub(crate) fn index_entries(
    raw: &WriteTransaction,
    id: u64,
    start: u64,
    entries: &[Vec<u8>],
) -> FeedResult<()> {
    let decoded: Vec<Result<Op, String>> = entries.iter().map(|e| op::decode(e)).collect();
    index_ops(
        raw,
        id,
        start,
        decoded.iter().map(|d| d.as_ref().map_err(Clone::clone)),
    )
}

/// Indexes up to [`CATCH_UP_CHUNK`] entries the index is missing; returns whether it is now
/// level with the feed.
pub(crate) fn catch_up(txn: &mut WriteTxn<'_>, feed: &FeedKey) -> FeedResult<bool> {
    let (id, indexed) = register(txn, feed)?;
    let length = txn.length(feed)?;
    if indexed >= length {
        return Ok(true);
    }
    let end = length.min(indexed + CATCH_UP_CHUNK);
    let entries = txn.entries(feed, indexed..end)?;
    let raw = txn.raw();
    index_entries(raw, id, indexed, &entries)?;
    set_indexed(raw, feed, id, end)?;
    Ok(end == length)
}

/// Removes every index row of a bee and marks it as indexing nothing.
pub(crate) fn clear(txn: &mut WriteTxn<'_>, feed: &FeedKey) -> FeedResult<()> {
    let (id, _) = register(txn, feed)?;
    let raw = txn.raw();
    let mut latest = raw.open_table(LATEST).map_err(storage)?;
    let lo: (u64, &[u8]) = (id, &[]);
    latest
        .retain_in(lo..(id + 1, &[][..]), |_, _| false)
        .map_err(storage)?;
    let mut versions = raw.open_table(VERSIONS).map_err(storage)?;
    let lo: (u64, &[u8], u64) = (id, &[], 0);
    versions
        .retain_in(lo..(id + 1, &[][..], 0), |_, _| false)
        .map_err(storage)?;
    drop((latest, versions));
    set_indexed(raw, feed, id, 0)
}

/// Brings the index level with the feed inside this transaction (normally a no-op: every
/// write through a bee indexes as it appends).
pub(crate) fn catch_up_all(txn: &mut WriteTxn<'_>, feed: &FeedKey) -> FeedResult<()> {
    while !catch_up(txn, feed)? {}
    Ok(())
}
