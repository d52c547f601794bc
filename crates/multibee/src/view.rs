//! Partial views: a peer that holds only the keys under chosen prefixes ([`View`]), what it
//! has received of each writer under each prefix (its coverage), and the changes of view a
//! restart with other prefixes makes (widening fetches what is new; narrowing drops keys).
//!
//! A partial peer fetches from others only the diff-feed entries whose keys fall under its
//! prefixes, plus every membership operation, as sparse batches (`multibee_feed::sparse`).
//! Each filtered answer says up to which entry it covers the prefixes asked for: the peer's
//! coverage of a writer under a prefix. Its merge reads a writer's entries up to the smallest
//! coverage over its prefixes, skipping the holes, which the serving peer declared outside
//! them. See `docs/partial-views.md` for what a partial peer can and cannot prove.

use multibee_feed::{Feed, FeedKey, SparseBatch, WriteTxn};
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::error::{Error, Result};
use crate::fold::{Folded, corrupt, storage};
use crate::tables::{CHECKPOINTS, DIFFS, KEYS, META};
use crate::txn::{Ctx, Decoded, decode_entry, writer_rows};

type FeedResult<T> = multibee_feed::Result<T>;

/// `mb-coverage-1`: `(writer, prefix)` → the entry of the writer's diff feed before which
/// every entry under the prefix is held.
pub(crate) const COVERAGE: TableDefinition<([u8; 32], &[u8]), u64> =
    TableDefinition::new("mb-coverage-1");
/// The `mb-meta-1` key of the view's prefixes (postcard `Vec<Vec<u8>>`); absent on a full peer.
pub(crate) const VIEW_KEY: &str = "view";
/// The most prefixes a view holds.
pub const MAX_PREFIXES: usize = 64;
/// The longest prefix a view holds, in bytes.
pub const MAX_PREFIX_BYTES: usize = 1024;

/// What a filtered request asks for: `(prefix, from)` pairs, each "the entries of keys under
/// `prefix` from entry `from` on" (see [`entry_wanted`]).
pub type Wants = Vec<(Vec<u8>, u64)>;

/// The key prefixes a partial peer holds: sorted, none under another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    prefixes: Vec<Vec<u8>>,
}

impl View {
    /// The view of `prefixes` (an empty prefix holds every key). Fails on none, too many, or
    /// one too long.
    pub fn new(prefixes: impl IntoIterator<Item = impl Into<Vec<u8>>>) -> Result<View> {
        let mut prefixes: Vec<Vec<u8>> = prefixes.into_iter().map(Into::into).collect();
        if prefixes.is_empty() {
            return Err(Error::InvalidArgument(
                "a partial view needs at least one prefix".into(),
            ));
        }
        if prefixes.len() > MAX_PREFIXES {
            return Err(Error::InvalidArgument(format!(
                "a partial view holds at most {MAX_PREFIXES} prefixes"
            )));
        }
        if let Some(p) = prefixes.iter().find(|p| p.len() > MAX_PREFIX_BYTES) {
            return Err(Error::InvalidArgument(format!(
                "a prefix of {} bytes is over the limit of {MAX_PREFIX_BYTES}",
                p.len()
            )));
        }
        prefixes.sort();
        prefixes.dedup();
        // Sorted, a prefix comes right before the prefixes under it.
        let mut kept: Vec<Vec<u8>> = Vec::with_capacity(prefixes.len());
        for p in prefixes {
            if !kept.last().is_some_and(|k| p.starts_with(k)) {
                kept.push(p);
            }
        }
        Ok(View { prefixes: kept })
    }

    /// The prefixes, sorted, none under another.
    pub fn prefixes(&self) -> &[Vec<u8>] {
        &self.prefixes
    }

    /// Whether `key` is in the view.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.holder(key).is_some()
    }

    /// The prefix of the view that `key` (a key or a prefix) lies under, if any.
    pub fn holder(&self, key: &[u8]) -> Option<&[u8]> {
        // The candidate is the greatest prefix not after `key`.
        let i = self.prefixes.partition_point(|p| p.as_slice() <= key);
        i.checked_sub(1)
            .map(|i| self.prefixes[i].as_slice())
            .filter(|p| key.starts_with(p))
    }

    fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(&self.prefixes).unwrap_or_default()
    }

    pub(crate) fn decode(bytes: &[u8]) -> FeedResult<View> {
        let prefixes: Vec<Vec<u8>> =
            postcard::from_bytes(bytes).map_err(|_| corrupt("the partial view's prefixes"))?;
        View::new(prefixes).map_err(|_| corrupt("the partial view's prefixes"))
    }
}

/// Whether a diff feed entry belongs to a request for `wants` (`(prefix, from)`): a diff whose
/// longest matching prefix has its `from` at or before the entry, or any other entry
/// (membership operations, and entries that do not decode, which every peer must see alike)
/// at or after the greatest `from` (the asker holds all of those before it).
pub fn entry_wanted(index: u64, entry: &[u8], wants: &[(Vec<u8>, u64)]) -> bool {
    match decode_entry(entry) {
        Ok(Decoded::Diff(record)) => wants
            .iter()
            .filter(|(p, _)| record.key.starts_with(p))
            .max_by_key(|(p, _)| p.len())
            .is_some_and(|(_, from)| index >= *from),
        _ => wants
            .iter()
            .map(|(_, from)| *from)
            .max()
            .is_some_and(|m| index >= m),
    }
}

/// The view stored in the folder, if the peer is partial.
pub(crate) fn stored_view(raw: &WriteTransaction) -> FeedResult<Option<View>> {
    let meta = raw.open_table(META).map_err(storage)?;
    let row = meta.get(VIEW_KEY).map_err(storage)?;
    row.map(|v| View::decode(v.value())).transpose()
}

/// The entry of `writer`'s feed before which every entry under every prefix of `view` is
/// held (by the coverage rows of `table`): where its merge may read up to.
pub(crate) fn frontier(
    table: &impl ReadableTable<([u8; 32], &'static [u8]), u64>,
    view: &View,
    writer: &[u8; 32],
) -> FeedResult<u64> {
    let mut min = u64::MAX;
    for p in view.prefixes() {
        let row = table.get((*writer, p.as_slice())).map_err(storage)?;
        min = min.min(row.map_or(0, |v| v.value()));
    }
    Ok(min)
}

/// Raises the coverage of `writer` under each of `prefixes` that is the view's or has a row
/// (the narrower ones kept from before a widening) to `covered`.
pub(crate) fn raise(
    raw: &WriteTransaction,
    view: &View,
    writer: &[u8; 32],
    prefixes: &[Vec<u8>],
    covered: u64,
) -> FeedResult<()> {
    let mut table = raw.open_table(COVERAGE).map_err(storage)?;
    for p in prefixes {
        let old = table
            .get((*writer, p.as_slice()))
            .map_err(storage)?
            .map(|v| v.value());
        // The view's prefixes always have a row (a writer added later gets its rows here).
        let old = old.or_else(|| view.prefixes().contains(p).then_some(0));
        if let Some(old) = old
            && covered > old
        {
            table
                .insert((*writer, p.as_slice()), covered)
                .map_err(storage)?;
        }
    }
    Ok(())
}

/// Every coverage row of `writer`: `(prefix, covered)`, in prefix order.
pub(crate) fn rows(
    table: &impl ReadableTable<([u8; 32], &'static [u8]), u64>,
    writer: &[u8; 32],
) -> FeedResult<Vec<(Vec<u8>, u64)>> {
    let lo: ([u8; 32], &[u8]) = (*writer, &[]);
    let mut out = Vec::new();
    for row in table.range(lo..).map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        let (w, p) = k.value();
        if w != *writer {
            break;
        }
        out.push((p.to_vec(), v.value()));
    }
    Ok(out)
}

/// What a partial peer tells another about `feed` under `prefixes`: up to which entry it can
/// answer for every entry under them. Its contiguous length, or its coverage when every prefix
/// asked lies under one of its own. (A full peer answers for its contiguous length.)
pub(crate) fn claim(
    table: &impl ReadableTable<([u8; 32], &'static [u8]), u64>,
    view: &View,
    feed: &Feed,
    prefixes: &[Vec<u8>],
) -> FeedResult<u64> {
    let length = feed.length();
    let mut min = u64::MAX;
    for p in prefixes {
        let Some(holder) = view.holder(p) else {
            return Ok(length);
        };
        let row = table.get((feed.key().0, holder)).map_err(storage)?;
        min = min.min(row.map_or(0, |v| v.value()));
    }
    Ok(min.max(length))
}

/// The next filtered batch of `feed` for a request for `wants` (`(prefix, from)`), scanning
/// from entry `cursor` up to `claimed` (what this peer answers for) with at most `max_bytes` of
/// entries: the batch, proven over `base`, and the entry it covers the request up to. `None`
/// once the cursor reached the claim.
pub fn filtered_batch(
    feed: &Feed,
    wants: &[(Vec<u8>, u64)],
    cursor: u64,
    claimed: u64,
    base: u64,
    max_bytes: usize,
) -> multibee_feed::Result<Option<(SparseBatch, u64)>> {
    const SCAN_ROWS: usize = 4096;
    const MAX_ENTRIES: usize = 4096;
    // The most rows one answer scans: a request that matches little still gets answers (empty
    // ones, moving its claim on) at a bounded cost each.
    const MAX_SCANNED: usize = 64 * SCAN_ROWS;
    if cursor >= claimed {
        return Ok(None);
    }
    let mut picked: Vec<u64> = Vec::new();
    let mut bytes = 0;
    let mut at = cursor;
    let mut scanned = 0;
    'scan: while at < claimed && scanned < MAX_SCANNED {
        let rows = feed.held_entries(at..claimed, SCAN_ROWS)?;
        scanned += SCAN_ROWS;
        let last = rows.last().map(|(i, _)| *i);
        for (i, entry) in &rows {
            if entry_wanted(*i, entry, wants) {
                if !picked.is_empty()
                    && (bytes + entry.len() > max_bytes || picked.len() >= MAX_ENTRIES)
                {
                    at = *i;
                    break 'scan;
                }
                bytes += entry.len();
                picked.push(*i);
            }
        }
        match last {
            Some(i) if rows.len() == SCAN_ROWS => at = i + 1,
            _ => at = claimed,
        }
    }
    // Over the asker's head if ours reaches it (a sparse replica may not know every node that
    // takes: it then fails, and the asker asks others). A shorter head is proven over no base;
    // the asker takes it only if it knows its roots.
    let head = feed.status().signed_length;
    let base = if base <= head { base } else { 0 };
    let batch = feed.proof_sparse(&picked, base)?;
    let covered = at.min(batch.proof.length);
    Ok(Some((batch, covered)))
}

impl Ctx<'_> {
    /// Applies a change of view at open: stores `view` and sets each of its prefixes' coverage (a
    /// prefix under an old one inherits its coverage; a full peer's coverage is what it holds;
    /// a new prefix starts from nothing). Keys outside the new view are dropped, with their merge
    /// rows.
    pub(crate) fn change_view(&self, txn: &mut WriteTxn<'_>, view: &View) -> FeedResult<()> {
        let writers: Vec<[u8; 32]> = writer_rows(txn.raw())?
            .into_iter()
            .map(|(w, _)| w)
            .filter(|w| *w != self.own.0)
            .collect();
        let old = stored_view(txn.raw())?;
        if old.as_ref() == Some(view) {
            return Ok(());
        }
        let mut rows = Vec::new();
        for w in &writers {
            let before = match &old {
                None => Vec::new(),
                Some(_) => {
                    let table = txn.raw().open_table(COVERAGE).map_err(storage)?;
                    self::rows(&table, w)?
                }
            };
            let held = |p: &[u8]| before.iter().find(|(q, _)| q == p).map_or(0, |(_, c)| *c);
            for p in view.prefixes() {
                let covered = match &old {
                    None => txn.length(&FeedKey(*w))?,
                    Some(old) => match old.holder(p) {
                        Some(holder) => held(holder),
                        None => {
                            // A new prefix: what was held under it (narrower prefixes of the old
                            // view) keeps its rows, so that it is not fetched again.
                            for (q, c) in &before {
                                if q.starts_with(p) && q != p {
                                    rows.push((*w, q.clone(), *c));
                                }
                            }
                            0
                        }
                    },
                };
                rows.push((*w, p.clone(), covered));
            }
        }
        let raw = txn.raw();
        {
            let mut table = raw.open_table(COVERAGE).map_err(storage)?;
            table.retain(|_, _| false).map_err(storage)?;
            for (w, p, covered) in &rows {
                table
                    .insert((*w, p.as_slice()), *covered)
                    .map_err(storage)?;
            }
            let mut meta = raw.open_table(META).map_err(storage)?;
            meta.insert(VIEW_KEY, view.encode().as_slice())
                .map_err(storage)?;
        }
        self.drop_outside(txn, view)
    }

    /// Drops every key outside `view`: its merged value (and index rows) and its merge rows.
    fn drop_outside(&self, txn: &mut WriteTxn<'_>, view: &View) -> FeedResult<()> {
        let raw = txn.raw();
        let mut dropped: Vec<Vec<u8>> = Vec::new();
        {
            let diffs = raw.open_table(DIFFS).map_err(storage)?;
            for row in diffs.iter().map_err(storage)? {
                let (k, _) = row.map_err(storage)?;
                let key = k.value().0;
                if !view.contains(key) && dropped.last().is_none_or(|d| d.as_slice() != key) {
                    dropped.push(key.to_vec());
                }
            }
        }
        let mut folded = Folded {
            pending: Default::default(),
            original: Default::default(),
        };
        {
            let head = self.store.head_in(raw).map_err(crate::fold::bee_error)?;
            let mut diffs = raw.open_table(DIFFS).map_err(storage)?;
            let mut checkpoints = raw.open_table(CHECKPOINTS).map_err(storage)?;
            let mut keys = raw.open_table(KEYS).map_err(storage)?;
            for key in &dropped {
                let (lo, hi) = (
                    (key.as_slice(), 0u64, [0u8; 32]),
                    (key.as_slice(), u64::MAX, [0xFFu8; 32]),
                );
                diffs.retain_in(lo..=hi, |_, _| false).map_err(storage)?;
                checkpoints
                    .retain_in(lo..=hi, |_, _| false)
                    .map_err(storage)?;
                keys.remove(key.as_slice()).map_err(storage)?;
                let before = head.get(key).map_err(crate::fold::bee_error)?;
                folded.original.insert(key.clone(), before);
                folded.pending.insert(key.clone(), None);
            }
        }
        self.write_store(txn, folded)?;
        Ok(())
    }
}
