//! Reading tree node hashes from what a store holds: the entries rows and a head's frontier.

use redb::ReadableTable;

use crate::crypto;
use crate::error::{Error, Result};
use crate::keys::Hash;
use crate::tables::{self, FeedRecord};
use crate::tree;

/// The hash of node `n`, which must lie within the feed's stored length, from its entries row.
pub(crate) fn stored_node(
    table: &impl ReadableTable<(u64, u64), &'static [u8]>,
    record: &FeedRecord,
    n: u64,
) -> Result<Hash> {
    let last = tree::span(n).1 - 1;
    let row = table
        .get((record.id, last))?
        .ok_or_else(|| Error::Corrupt(format!("entry {last} is missing")))?;
    let (hashes, entry) = tables::split_row(last, row.value())?;
    let d = tree::depth(n) as usize;
    if d == 0 {
        return Ok(crypto::leaf_hash(entry));
    }
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&hashes[(d - 1) * 32..d * 32]);
    Ok(Hash(hash))
}

/// The hash of node `n` if what is held determines it: nodes within the stored length, frontier
/// nodes, nodes a sparse proof established (`nodes`), the roots of the signed head, and nodes
/// straddling the stored length whose children are known (the recursion follows the boundary,
/// so it is at most the tree's depth).
pub(crate) fn known_node(
    table: &impl ReadableTable<(u64, u64), &'static [u8]>,
    nodes: &impl ReadableTable<(u64, u64), [u8; 32]>,
    record: &FeedRecord,
    n: u64,
) -> Result<Option<Hash>> {
    let (start, end) = tree::span(n);
    if end <= record.length {
        return stored_node(table, record, n).map(Some);
    }
    if let Some((_, hash)) = record.frontier.iter().find(|(m, _)| *m == n) {
        return Ok(Some(*hash));
    }
    if let Some(hash) = nodes.get((record.id, n))? {
        return Ok(Some(Hash(hash.value())));
    }
    if let Some(head) = &record.head
        && let Some(i) = tree::roots(head.length).position(|m| m == n)
    {
        return Ok(head.roots.get(i).copied());
    }
    let Some((l, r)) = tree::children(n).filter(|_| start < record.length) else {
        return Ok(None);
    };
    match (
        known_node(table, nodes, record, l)?,
        known_node(table, nodes, record, r)?,
    ) {
        (Some(left), Some(right)) => Ok(Some(crypto::parent_hash(&left, &right))),
        _ => Ok(None),
    }
}
