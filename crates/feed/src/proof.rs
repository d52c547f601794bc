//! Merkle proofs: a range of entries proven against a writer's signed tree.
//!
//! A proof for the entries `[start, end)` against a signed length `L >= end` lists the hashes of
//! the maximal subtrees of the tree at `L` that lie wholly outside `[start, end)` and do not
//! straddle `start` or `end`, in depth-first, left-to-right order. The verifier walks the roots
//! of `L` in the same order: a node outside the range takes the next hash from the proof, a leaf
//! inside it is hashed from its entry, and any other node is the parent hash of its children.
//! The result is the roots of the tree at `L`, which must carry the writer's signature.
//!
//! The hashes left of `start` are always exactly the roots of a tree of `start` leaves, so a
//! receiver holding `[0, start)` compares them with its own roots: a mismatch under a valid
//! signature means the writer signed two different histories.

use serde::{Deserialize, Serialize};

use crate::crypto;
use crate::error::VerifyError;
use crate::keys::{FeedKey, Hash, Signature};
use crate::tree;

/// A writer's signed statement: "my feed has `length` entries and these tree roots".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHead {
    /// The length the writer signed.
    pub length: u64,
    /// The roots of the tree at `length`, left to right.
    pub roots: Vec<Hash>,
    /// The writer's signature over [`crypto::signable_tree`] of the above.
    pub signature: Signature,
}

impl SignedHead {
    /// Checks the signature against the feed key and the root count against the length.
    pub fn verify(&self, key: &FeedKey) -> Result<(), VerifyError> {
        if self.length > tree::MAX_LENGTH {
            return Err(VerifyError::TooLarge(format!("length {}", self.length)));
        }
        if self.roots.len() != self.length.count_ones() as usize {
            return Err(VerifyError::BadProof(
                "root count does not match the length",
            ));
        }
        if !crypto::verify_tree(key, self.length, &self.roots, &self.signature) {
            return Err(VerifyError::BadSignature);
        }
        Ok(())
    }
}

/// The proof that accompanies a batch of entries (see the module docs for its layout).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// The signed length the entries are proven against.
    pub length: u64,
    /// The writer's signature over the tree at `length`.
    pub signature: Signature,
    /// Hashes of the subtrees outside the range, depth-first, left to right.
    pub nodes: Vec<Hash>,
}

/// A contiguous run of a feed's entries with the proof that the writer signed them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The feed the entries belong to.
    pub feed: FeedKey,
    /// The index of the first entry.
    pub start: u64,
    /// The entries `start..start + entries.len()`; empty for a bare upgrade to a longer head.
    pub entries: Vec<Vec<u8>>,
    /// The proof against the writer's signature.
    pub proof: Proof,
}

impl Batch {
    /// The index after the last entry.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.entries.len() as u64)
    }

    /// The number of entry bytes carried.
    pub fn entry_bytes(&self) -> usize {
        self.entries.iter().map(Vec::len).sum()
    }
}

/// A batch whose proof verified against the feed key, ready for [`crate::WriteTxn::ingest`].
///
/// Only [`crate::Feed::verify`] makes one, so holding it means the stateless checks passed.
#[derive(Debug, Clone)]
pub struct VerifiedBatch {
    pub(crate) batch: Batch,
    pub(crate) leaves: Vec<Hash>,
    pub(crate) verified: Verified,
}

impl VerifiedBatch {
    /// The batch that verified.
    pub fn batch(&self) -> &Batch {
        &self.batch
    }

    /// The signed head it was verified against.
    pub fn head(&self) -> &SignedHead {
        &self.verified.head
    }
}

/// What verifying a batch established, for the receiver to store.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The signed head the batch was checked against.
    pub head: SignedHead,
    /// The hashes left of the batch: the roots of a tree of `start` leaves.
    pub left: Vec<Hash>,
    /// The hashes right of the batch, with their node indices.
    pub right: Vec<(u64, Hash)>,
    /// Every parent node computed from the entries, with its index.
    pub computed: Vec<(u64, Hash)>,
}

/// Verifies `entries` (the leaves `start..`) and `proof` against the feed key alone.
///
/// `leaf_hashes` may carry the already computed leaf hashes of `entries` (in order); pass an
/// empty slice to have them computed here.
pub fn verify(
    key: &FeedKey,
    start: u64,
    entries: &[Vec<u8>],
    leaf_hashes: &[Hash],
    proof: &Proof,
) -> Result<Verified, VerifyError> {
    let end = start
        .checked_add(entries.len() as u64)
        .ok_or(VerifyError::TooLarge("range end".into()))?;
    if proof.length > tree::MAX_LENGTH {
        return Err(VerifyError::TooLarge(format!("length {}", proof.length)));
    }
    if end > proof.length {
        return Err(VerifyError::BadProof(
            "the range ends after the signed length",
        ));
    }
    let mut walk = VerifyWalk {
        start,
        end,
        entries,
        leaf_hashes,
        nodes: proof.nodes.iter(),
        out: Verified {
            head: SignedHead {
                length: proof.length,
                roots: Vec::new(),
                signature: proof.signature,
            },
            left: Vec::new(),
            right: Vec::new(),
            computed: Vec::with_capacity(entries.len()),
        },
    };
    let mut roots = Vec::with_capacity(proof.length.count_ones() as usize);
    for root in tree::roots(proof.length) {
        roots.push(walk.node(root)?);
    }
    if walk.nodes.next().is_some() {
        return Err(VerifyError::BadProof("trailing hashes"));
    }
    let mut out = walk.out;
    out.head.roots = roots;
    out.head.verify(key)?;
    Ok(out)
}

struct VerifyWalk<'a> {
    start: u64,
    end: u64,
    entries: &'a [Vec<u8>],
    leaf_hashes: &'a [Hash],
    nodes: std::slice::Iter<'a, Hash>,
    out: Verified,
}

impl VerifyWalk<'_> {
    fn node(&mut self, n: u64) -> Result<Hash, VerifyError> {
        let (s, e) = tree::span(n);
        if e <= self.start || s >= self.end {
            let hash = *self
                .nodes
                .next()
                .ok_or(VerifyError::BadProof("too few hashes"))?;
            if e <= self.start {
                self.out.left.push(hash);
            } else {
                self.out.right.push((n, hash));
            }
            return Ok(hash);
        }
        let Some((l, r)) = tree::children(n) else {
            // A leaf inside [start, end): `s - start` is in bounds because s < end.
            let i = (s - self.start) as usize;
            return Ok(match self.leaf_hashes.get(i) {
                Some(hash) => *hash,
                None => crypto::leaf_hash(&self.entries[i]),
            });
        };
        let left = self.node(l)?;
        let right = self.node(r)?;
        let hash = crypto::parent_hash(&left, &right);
        self.out.computed.push((n, hash));
        Ok(hash)
    }
}

/// The node indices a proof for `[start, end)` against `length` must carry, in order.
pub fn proof_nodes(start: u64, end: u64, length: u64) -> Vec<u64> {
    fn walk(n: u64, start: u64, end: u64, out: &mut Vec<u64>) {
        let (s, e) = tree::span(n);
        if e <= start || s >= end {
            out.push(n);
        } else if let Some((l, r)) = tree::children(n) {
            walk(l, start, end, out);
            walk(r, start, end, out);
        }
    }
    let mut out = Vec::new();
    for root in tree::roots(length) {
        walk(root, start, end, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_nodes_left_of_start_are_the_roots_of_start() {
        for length in 1..70u64 {
            for start in 0..=length {
                for end in start..=length {
                    let nodes = proof_nodes(start, end, length);
                    let left: Vec<u64> = nodes
                        .iter()
                        .copied()
                        .filter(|&n| tree::span(n).1 <= start)
                        .collect();
                    assert_eq!(left, tree::roots(start).collect::<Vec<_>>());
                }
            }
        }
    }
}
