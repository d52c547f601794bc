//! Sparse replicas: holding any set of a feed's entries, each proven against the writer's
//! signed tree, and proving them on to others.
//!
//! A [`SparseBatch`] carries entries at arbitrary indices (sorted, no duplicates) with one
//! [`SparseProof`]: the hashes of the maximal subtrees of the tree at the signed length that
//! hold none of the entries, depth first, left to right, as for a contiguous [`crate::Proof`].
//! A receiver verifies every entry against the signature before anything is stored
//! ([`crate::Feed::verify_sparse`], [`WriteTxn::ingest_sparse`]) and keeps, with the entries,
//! every tree node the proof established (table `nodes-1`), so that it can prove the same
//! entries to a third peer later ([`crate::Feed::proof_sparse`]).
//!
//! **Upgrades.** A proof names a `base`: a signed length whose roots the receiver already holds
//! (its own head's, usually). The base's roots are not sent; instead the walk descends through
//! every node above them, so the receiver learns every sibling on the way from its old roots to
//! the new ones. That keeps the invariant a sparse replica relies on to serve what it holds:
//! *for every entry held, the siblings on its path up to the roots of the newest head held are
//! known*. A base of 0 assumes nothing. A recomputed base root that differs from the one held is
//! equivocation, recorded as a fork like any other.
//!
//! The contiguous length ([`crate::Feed::length`]) is unchanged by sparse entries: it stays the
//! prefix held without holes. [`crate::Feed::has`] and [`crate::Feed::held`] say what else is
//! held.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use crate::crypto;
use crate::error::{Error, Result, VerifyError};
use crate::feed::{Feed, node_hash};
use crate::keys::{FeedKey, Hash, Signature};
use crate::nodes::known_node;
use crate::proof::SignedHead;
use crate::tables::{self, ENTRIES, FeedRecord, NODES};
use crate::tree;
use crate::txn::WriteTxn;

/// The proof of a [`SparseBatch`] (see the module docs for its layout).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SparseProof {
    /// The signed length the entries are proven against.
    pub length: u64,
    /// The writer's signature over the tree at `length`.
    pub signature: Signature,
    /// The signed length whose roots the receiver holds and the proof leaves out (0: none).
    pub base: u64,
    /// Hashes of the subtrees without entries, depth-first, left to right.
    pub nodes: Vec<Hash>,
}

/// Entries of a feed at any indices, with the proof that the writer signed them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SparseBatch {
    /// The feed the entries belong to.
    pub feed: FeedKey,
    /// `(index, entry)`, sorted by index, no index twice.
    pub entries: Vec<(u64, Vec<u8>)>,
    /// The proof against the writer's signature.
    pub proof: SparseProof,
}

impl SparseBatch {
    /// The number of entry bytes carried.
    pub fn entry_bytes(&self) -> usize {
        self.entries.iter().map(|(_, e)| e.len()).sum()
    }
}

/// A sparse batch whose proof verified, ready for [`WriteTxn::ingest_sparse`]. Only
/// [`Feed::verify_sparse`] makes one.
#[derive(Debug, Clone)]
pub struct VerifiedSparse {
    pub(crate) batch: SparseBatch,
    pub(crate) leaves: Vec<Hash>,
    pub(crate) head: SignedHead,
    /// Every node the walk established (sent, computed, or taken from the base), with its
    /// index: what the receiver stores, and checks against what it holds.
    pub(crate) nodes: Vec<(u64, Hash)>,
}

impl VerifiedSparse {
    /// The batch that verified.
    pub fn batch(&self) -> &SparseBatch {
        &self.batch
    }

    /// The signed head it was verified against.
    pub fn head(&self) -> &SignedHead {
        &self.head
    }
}

/// What the walk does at one node (shared by the prover and the verifier).
enum Step {
    /// A root of the base the receiver holds, with no entry under it: not sent.
    Base,
    /// Descend into the children (`inside`: below a base root).
    Descend { inside: bool },
    /// A leaf that is entry number `i` of the batch.
    Leaf(usize),
    /// A subtree without entries, outside the base: its hash is sent.
    Sent,
}

struct Walk<'a> {
    wanted: &'a [u64],
    base: u64,
    base_roots: Vec<u64>,
}

impl Walk<'_> {
    fn step(&self, n: u64, inside: bool) -> Step {
        let (s, e) = tree::span(n);
        let first = self.wanted.partition_point(|&i| i < s);
        let has = self.wanted.get(first).is_some_and(|&i| i < e);
        if !inside && self.base_roots.contains(&n) {
            return match (has, tree::depth(n)) {
                (false, _) => Step::Base,
                (true, 0) => Step::Leaf(first),
                (true, _) => Step::Descend { inside: true },
            };
        }
        // Above the base's roots: descend, so that every sibling on the way is learnt.
        if !inside && s < self.base && tree::depth(n) > 0 {
            return Step::Descend { inside: false };
        }
        match (has, tree::depth(n)) {
            (false, _) => Step::Sent,
            (true, 0) => Step::Leaf(first),
            (true, _) => Step::Descend { inside },
        }
    }

    fn new(wanted: &[u64], base: u64) -> Walk<'_> {
        Walk {
            wanted,
            base,
            base_roots: tree::roots(base).collect(),
        }
    }
}

/// The node indices a sparse proof for `wanted` (sorted) against `length` over `base` carries,
/// in order.
pub fn sparse_proof_nodes(wanted: &[u64], base: u64, length: u64) -> Vec<u64> {
    fn walk(w: &Walk<'_>, n: u64, inside: bool, out: &mut Vec<u64>) {
        match w.step(n, inside) {
            Step::Sent => out.push(n),
            Step::Descend { inside } => {
                if let Some((l, r)) = tree::children(n) {
                    walk(w, l, inside, out);
                    walk(w, r, inside, out);
                }
            }
            Step::Base | Step::Leaf(_) => {}
        }
    }
    let w = Walk::new(wanted, base);
    let mut out = Vec::new();
    for root in tree::roots(length) {
        walk(&w, root, false, &mut out);
    }
    out
}

/// Verifies a sparse batch against the feed key, taking the base's roots from `base_root`.
fn verify(
    key: &FeedKey,
    batch: &SparseBatch,
    leaves: &[Hash],
    base_root: &mut dyn FnMut(u64) -> Result<Option<Hash>>,
) -> Result<(SignedHead, Vec<(u64, Hash)>)> {
    let reject = |reason| Error::rejected(*key, reason);
    let proof = &batch.proof;
    if proof.length > tree::MAX_LENGTH || proof.base > proof.length {
        return Err(reject(VerifyError::BadProof("the base is past the length")));
    }
    let wanted: Vec<u64> = batch.entries.iter().map(|(i, _)| *i).collect();
    if !wanted.windows(2).all(|w| w[0] < w[1]) {
        return Err(reject(VerifyError::BadProof("the indices are not sorted")));
    }
    if wanted.last().is_some_and(|&i| i >= proof.length) {
        return Err(reject(VerifyError::BadProof(
            "an entry lies past the signed length",
        )));
    }
    struct V<'a, 'b> {
        walk: Walk<'a>,
        leaves: &'a [Hash],
        sent: std::slice::Iter<'a, Hash>,
        base_root: &'b mut dyn FnMut(u64) -> Result<Option<Hash>>,
        out: Vec<(u64, Hash)>,
    }
    fn node(
        v: &mut V<'_, '_>,
        n: u64,
        inside: bool,
    ) -> Result<std::result::Result<Hash, VerifyError>> {
        let hash = match v.walk.step(n, inside) {
            Step::Sent => match v.sent.next() {
                Some(h) => *h,
                None => return Ok(Err(VerifyError::BadProof("too few hashes"))),
            },
            Step::Base => match (v.base_root)(n)? {
                Some(h) => h,
                None => {
                    return Ok(Err(VerifyError::BadProof(
                        "the proof assumes a base this replica does not hold",
                    )));
                }
            },
            Step::Leaf(i) => v.leaves[i],
            Step::Descend { inside } => {
                let Some((l, r)) = tree::children(n) else {
                    return Ok(Err(VerifyError::BadProof("descends below a leaf")));
                };
                let left = match node(v, l, inside)? {
                    Ok(h) => h,
                    e => return Ok(e),
                };
                let right = match node(v, r, inside)? {
                    Ok(h) => h,
                    e => return Ok(e),
                };
                crypto::parent_hash(&left, &right)
            }
        };
        v.out.push((n, hash));
        Ok(Ok(hash))
    }
    let mut v = V {
        walk: Walk::new(&wanted, proof.base),
        leaves,
        sent: proof.nodes.iter(),
        base_root,
        out: Vec::new(),
    };
    let mut roots = Vec::with_capacity(proof.length.count_ones() as usize);
    for root in tree::roots(proof.length) {
        roots.push(node(&mut v, root, false)?.map_err(reject)?);
    }
    if v.sent.next().is_some() {
        return Err(reject(VerifyError::BadProof("trailing hashes")));
    }
    let head = SignedHead {
        length: proof.length,
        roots,
        signature: proof.signature,
    };
    head.verify(key).map_err(reject)?;
    Ok((head, v.out))
}

/// What [`WriteTxn::ingest_sparse`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SparseIngested {
    /// Entries stored that were not held before.
    pub added: u64,
    /// The length of the signed head held afterwards.
    pub signed_length: u64,
    /// Whether the batch was taken. It is not (and nothing is stored) when it proves the
    /// writer equivocated (the feed is forked), or when it does not join the head held: a
    /// longer head proven over another base than the head held, or a shorter one whose roots
    /// are not known here. The last two are no fault of the sender (another peer may have
    /// moved the head on meanwhile): ask again over the head held.
    pub stored: bool,
}

impl Feed {
    /// Whether entry `index` is held (in the contiguous prefix or sparsely).
    pub fn has(&self, index: u64) -> Result<bool> {
        let txn = self.store.begin_read()?;
        let table = txn.open_table(ENTRIES)?;
        Ok(table.get((self.shared_id(), index))?.is_some())
    }

    /// The runs of entries held, as `[start, end)` ranges in order: the contiguous prefix
    /// first, then every sparse run. What lies between them (up to the signed length) are the
    /// holes.
    pub fn held(&self) -> Result<Vec<std::ops::Range<u64>>> {
        let txn = self.store.begin_read()?;
        let table = txn.open_table(ENTRIES)?;
        let id = self.shared_id();
        let mut out: Vec<std::ops::Range<u64>> = Vec::new();
        let length = self.store.record(&txn, &self.shared.key)?.length;
        if length > 0 {
            out.push(0..length);
        }
        for row in table.range((id, length)..=(id, u64::MAX))? {
            let i = row?.0.value().1;
            match out.last_mut() {
                Some(run) if run.end == i => run.end = i + 1,
                _ => out.push(i..i + 1),
            }
        }
        Ok(out)
    }

    /// The entries at `indices` (held, sorted, no duplicates) with a proof against the newest
    /// signed head held, over `base`: a signed length whose roots the receiver holds (its head
    /// length), or 0. Fails if an entry is not held or a node its proof needs is not known here
    /// (then try `base` 0): a replica never sends what it cannot prove.
    pub fn proof_sparse(&self, indices: &[u64], base: u64) -> Result<SparseBatch> {
        if !indices.windows(2).all(|w| w[0] < w[1]) {
            return Err(Error::InvalidArgument(
                "indices must be sorted and distinct".into(),
            ));
        }
        let txn = self.store.begin_read()?;
        let record = self.store.record(&txn, &self.shared.key)?;
        let Some(head) = &record.head else {
            return Err(Error::InvalidArgument(
                "the feed has no signed head yet".into(),
            ));
        };
        if base > head.length {
            return Err(Error::InvalidArgument(format!(
                "base {base} is past the signed length {}",
                head.length
            )));
        }
        let table = txn.open_table(ENTRIES)?;
        let held = txn.open_table(NODES)?;
        let mut entries = Vec::with_capacity(indices.len());
        for &i in indices {
            let row = table
                .get((record.id, i))?
                .ok_or_else(|| Error::InvalidArgument(format!("entry {i} is not held")))?;
            entries.push((i, tables::split_row(i, row.value())?.1.to_vec()));
        }
        let nodes = sparse_proof_nodes(indices, base, head.length)
            .into_iter()
            .map(|n| node_hash(&table, &held, &record, n))
            .collect::<Result<Vec<_>>>()?;
        Ok(SparseBatch {
            feed: self.shared.key,
            entries,
            proof: SparseProof {
                length: head.length,
                signature: head.signature,
                base,
                nodes,
            },
        })
    }

    /// Verifies a sparse batch from a peer against the writer's key and the base roots held
    /// (read, not locked: stored nodes never change), ready for [`WriteTxn::ingest_sparse`].
    pub fn verify_sparse(&self, batch: SparseBatch) -> Result<VerifiedSparse> {
        let key = self.shared.key;
        if batch.feed != key {
            return Err(Error::rejected(
                key,
                VerifyError::WrongFeed {
                    expected: key,
                    got: batch.feed,
                },
            ));
        }
        let limits = self.store.limits();
        if batch.entries.len() > limits.max_batch_entries
            || batch.entry_bytes() > limits.max_batch_bytes
        {
            return Err(Error::rejected(
                key,
                VerifyError::TooLarge(format!(
                    "{} entries, {} bytes",
                    batch.entries.len(),
                    batch.entry_bytes()
                )),
            ));
        }
        self.check_not_forked()?;
        let leaves: Vec<Hash> = batch
            .entries
            .iter()
            .map(|(_, e)| crypto::leaf_hash(e))
            .collect();
        let txn = self.store.begin_read()?;
        let record = self.store.record(&txn, &key)?;
        let table = txn.open_table(ENTRIES)?;
        let held = txn.open_table(NODES)?;
        let mut base_root = |n| known_node(&table, &held, &record, n);
        let (head, nodes) = verify(&key, &batch, &leaves, &mut base_root)?;
        Ok(VerifiedSparse {
            batch,
            leaves,
            head,
            nodes,
        })
    }
}

impl WriteTxn<'_> {
    /// Stores a sparse batch [`Feed::verify_sparse`] accepted: its entries not held yet, the
    /// nodes that prove them, and its head if newer than the one held. Every node and entry it
    /// shares with what is held must agree; a disagreement under a valid signature marks the
    /// feed forked (durably, in this transaction) and stores nothing else. A batch that does
    /// not join the head held is not taken either ([`SparseIngested::stored`]).
    pub fn ingest_sparse(&mut self, verified: &VerifiedSparse) -> Result<SparseIngested> {
        let key = verified.batch.feed;
        let record = self.replica_record(&key)?;
        let signed = record.head.as_ref().map_or(0, |h| h.length);
        let not_taken = SparseIngested {
            added: 0,
            signed_length: signed,
            stored: false,
        };
        if let Some(detail) = self.sparse_disagreement(&record, verified)? {
            let head = crate::proof::Verified {
                head: verified.head.clone(),
                left: Vec::new(),
                right: Vec::new(),
                computed: Vec::new(),
            };
            self.mark_forked(&key, &record, &head, detail)?;
            return Ok(not_taken);
        }
        if !self.joins(&record, verified)? {
            return Ok(not_taken);
        }
        self.dirty = true;
        let mut added = 0;
        {
            let mut table = self.txn.open_table(ENTRIES)?;
            let mut row = Vec::new();
            for (i, entry) in &verified.batch.entries {
                if *i < record.length || table.get((record.id, *i))?.is_some() {
                    continue;
                }
                row.clear();
                row.resize(32 * tree::completed_parents(*i) as usize, 0);
                row.extend_from_slice(entry);
                table.insert((record.id, *i), row.as_slice())?;
                added += 1;
            }
            let mut nodes = self.txn.open_table(NODES)?;
            for (n, hash) in &verified.nodes {
                if tree::span(*n).1 > record.length {
                    nodes.insert((record.id, *n), hash.0)?;
                }
            }
        }
        let newer = record
            .head
            .as_ref()
            .is_none_or(|h| verified.head.length > h.length);
        let state = self.state(&key)?;
        if newer {
            state.record.head = Some(verified.head.clone());
        }
        Ok(SparseIngested {
            added,
            signed_length: state.record.head.as_ref().map_or(0, |h| h.length),
            stored: true,
        })
    }

    /// Whether what a sparse batch proves joins the head held, so that every entry held stays
    /// provable against the newest head: a longer head must be proven over the head held (its
    /// walk then learns every sibling above the old roots), a shorter one must end at roots
    /// known here.
    fn joins(&mut self, record: &FeedRecord, verified: &VerifiedSparse) -> Result<bool> {
        let Some(ours) = &record.head else {
            return Ok(true);
        };
        let theirs = verified.head.length;
        if theirs > ours.length {
            return Ok(verified.batch.proof.base == ours.length);
        }
        if theirs == ours.length {
            return Ok(true);
        }
        let table = self.txn.open_table(ENTRIES)?;
        let held = self.txn.open_table(NODES)?;
        for n in tree::roots(theirs) {
            if known_node(&table, &held, record, n)?.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether a feed holds entries sparsely (it has proven nodes of its own).
    pub(crate) fn holds_sparse(&mut self, id: u64) -> Result<bool> {
        let held = self.txn.open_table(NODES)?;
        Ok(held.range((id, 0)..=(id, u64::MAX))?.next().is_some())
    }

    /// Where a verified sparse batch contradicts what is stored, if anywhere.
    fn sparse_disagreement(
        &mut self,
        record: &FeedRecord,
        verified: &VerifiedSparse,
    ) -> Result<Option<String>> {
        if let Some(ours) = &record.head
            && ours.length == verified.head.length
            && ours.roots != verified.head.roots
        {
            return Ok(Some(format!(
                "two different trees signed for length {}",
                ours.length
            )));
        }
        let table = self.txn.open_table(ENTRIES)?;
        let held = self.txn.open_table(NODES)?;
        for ((i, _), leaf) in verified.batch.entries.iter().zip(&verified.leaves) {
            if let Some(row) = table.get((record.id, *i))? {
                let (_, entry) = tables::split_row(*i, row.value())?;
                if crypto::leaf_hash(entry) != *leaf {
                    return Ok(Some(format!("entry {i} differs")));
                }
            }
        }
        for (n, theirs) in &verified.nodes {
            if known_node(&table, &held, record, *n)?.is_some_and(|mine| mine != *theirs) {
                return Ok(Some(format!("tree node {n} differs")));
            }
        }
        Ok(None)
    }
}

impl Feed {
    /// The entries held in `range` (contiguous or sparse), in order, at most `max` of them,
    /// from one snapshot.
    pub fn held_entries(
        &self,
        range: std::ops::Range<u64>,
        max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let txn = self.store.begin_read()?;
        let table = txn.open_table(ENTRIES)?;
        read_held(&table, self.shared_id(), range, max)
    }
}

impl WriteTxn<'_> {
    /// The entries of a feed held in `range` (contiguous or sparse) as this transaction sees
    /// them, in order, at most `max` of them.
    pub fn held_entries(
        &mut self,
        key: &FeedKey,
        range: std::ops::Range<u64>,
        max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let id = self.state(key)?.record.id;
        let table = self.txn.open_table(ENTRIES)?;
        read_held(&table, id, range, max)
    }
}

fn read_held(
    table: &impl ReadableTable<(u64, u64), &'static [u8]>,
    id: u64,
    range: std::ops::Range<u64>,
    max: usize,
) -> Result<Vec<(u64, Vec<u8>)>> {
    let mut out = Vec::new();
    if range.start >= range.end {
        return Ok(out);
    }
    for row in table.range((id, range.start)..(id, range.end))?.take(max) {
        let (k, v) = row?;
        let i = k.value().1;
        out.push((i, tables::split_row(i, v.value())?.1.to_vec()));
    }
    Ok(out)
}
