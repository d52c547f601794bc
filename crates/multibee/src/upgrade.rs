//! Bringing a folder written by an earlier release to this release's format, when it opens.
//!
//! Format 1 kept a copy of every merged diff's record in `mb-diffs-1`; format 2 keeps only
//! its place, entry `seq` of its writer's diff feed (`mb-diffs-2`). The conversion checks
//! every row against the entry it will name (same key, stamp and record bytes) before it
//! writes anything, in one transaction: a folder converts whole or stays as it was, and a
//! row that does not match its entry stops the open with the reason. The bee index below
//! upgrades itself when the store bee opens (`multibee_bee`), before this runs.

use multibee_feed::{EntryReader, FeedKey, WriteTxn};
use redb::{ReadableTable, ReadableTableMetadata, TableHandle};

use crate::diff::DiffRecord;
use crate::error::Error;
use crate::fold::{FeedIds, corrupt, storage};
use crate::tables::{self, DIFFS, DIFFS_1, META};

/// The format of the folder `txn` writes to (one without the key is of format 1).
fn format(txn: &mut WriteTxn<'_>) -> Result<u32, Error> {
    let meta = txn.raw().open_table(META).map_err(storage)?;
    let Some(row) = meta.get(tables::FORMAT_KEY).map_err(storage)? else {
        return Ok(1);
    };
    let bytes: [u8; 4] = row
        .value()
        .try_into()
        .map_err(|_| corrupt("the format in mb-meta-1 is not 4 bytes"))?;
    Ok(u32::from_le_bytes(bytes))
}

/// Upgrades the folder to [`tables::FORMAT`] if it is older; refuses one that is newer.
/// `own`: this peer's diff feed.
pub(crate) fn upgrade(txn: &mut WriteTxn<'_>, own: FeedKey) -> Result<(), Error> {
    match format(txn)? {
        tables::FORMAT => return Ok(()),
        1 => {}
        newer => {
            return Err(corrupt(format!(
                "the folder is of format {newer}, written by a newer release (this one reads \
                 formats 1 to {})",
                tables::FORMAT
            ))
            .into());
        }
    }
    let converted = convert_diffs(txn, own)?;
    if converted > 0 {
        tracing::info!(diffs = converted, "upgraded the folder to format 2");
    }
    let raw = txn.raw();
    let mut meta = raw.open_table(META).map_err(storage)?;
    meta.insert(tables::FORMAT_KEY, tables::FORMAT.to_le_bytes().as_slice())
        .map_err(storage)?;
    Ok(())
}

/// Turns every `mb-diffs-1` row into a `mb-diffs-2` row naming its entry, after checking
/// that the entry holds that very record; drops `mb-diffs-1`. Returns how many rows.
fn convert_diffs(txn: &mut WriteTxn<'_>, own: FeedKey) -> Result<u64, Error> {
    let present = txn
        .raw()
        .list_tables()
        .map_err(storage)?
        .any(|t| t.name() == DIFFS_1.name());
    if !present {
        return Ok(0);
    }
    let mut ids = FeedIds::new();
    ids.insert(own.0, txn.local_id(&own)?);
    for (w, _) in crate::txn::writer_rows(txn.raw())? {
        ids.insert(w, txn.local_id(&FeedKey(w))?);
    }
    let raw = txn.raw();
    let old = raw.open_table(DIFFS_1).map_err(storage)?;
    let mut new = raw.open_table(DIFFS).map_err(storage)?;
    let entries = EntryReader::open_in(raw)?;
    for row in old.iter().map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        let (key, ts, writer) = k.value();
        let (seq, bytes) =
            tables::split_diff_row(v.value()).ok_or_else(|| corrupt("a short mb-diffs-1 row"))?;
        let feed = *ids.get(&writer).ok_or_else(|| {
            corrupt(format!(
                "mb-diffs-1 holds a diff of {}, which is not a writer",
                FeedKey(writer)
            ))
        })?;
        let entry = entries.get(feed, seq)?;
        let matches = entry
            .as_deref()
            .and_then(|e| DiffRecord::from_entry(e).ok())
            .is_some_and(|(record, held)| {
                record.key == key && record.ts.0 == ts && held.as_slice() == bytes
            });
        if !matches {
            return Err(corrupt(format!(
                "mb-diffs-1 row ({}, {ts}, {}) does not match entry {seq} of its writer's feed",
                String::from_utf8_lossy(key),
                FeedKey(writer)
            ))
            .into());
        }
        new.insert((key, ts, writer), seq).map_err(storage)?;
    }
    let converted = old.len().map_err(storage)?;
    drop((old, new, entries));
    raw.delete_table(DIFFS_1).map_err(storage)?;
    Ok(converted)
}
