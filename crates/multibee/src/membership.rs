//! Membership as replicated operations: who counts as a writer of a database is the fold of
//! the `Add` and `Remove` operations in the writers' diff feeds, so every peer that holds the
//! same operations counts the same writers. Sans-IO: [`evaluate`] is a pure function.
//!
//! The rules (also in `docs/merge.md`): the database's first writer (its identity) is a member
//! from the start. Operations are evaluated in `(stamp, author key)` order; an operation counts
//! if its author is a member at that point (a removed author's operations count below its cut).
//! `Add(w)` makes `w` a member (again, with every diff counted, if it had been removed).
//! `Remove(w, cut)` keeps `w`'s diffs below `cut` counted and the rest held but not merged; the
//! last removal in order names the cut. A removal of a writer that is not a member, and any
//! operation of a non-member, is rejected (the same way on every peer) and reported.

use std::collections::BTreeMap;

use multibee_bee::keyspace::Keyspace;
use multibee_bee::op::{self, Op};
use serde::{Deserialize, Serialize};

use crate::hlc::Hlc;

/// A change to the membership of a database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberOp {
    /// Makes the writer with this diff feed key a member.
    Add {
        /// The writer's diff feed key.
        writer: [u8; 32],
    },
    /// Stops counting a writer's diffs from `cut` on: its entries below `cut` stay counted, on
    /// every peer; those from `cut` on are held but not merged. A cut of 0 un-merges
    /// everything the writer ever wrote.
    Remove {
        /// The writer's diff feed key.
        writer: [u8; 32],
        /// The first of its diff feed's entries that no longer counts.
        cut: u64,
    },
}

/// A membership operation as a diff feed entry holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Its place in the order of membership operations (with the author's key).
    pub ts: Hlc,
    /// The operation.
    pub op: MemberOp,
}

#[derive(Serialize, Deserialize)]
enum Stored<T> {
    V1(T),
}

/// The bee keyspace of membership entries in a diff feed: apart from every user key.
fn keyspace() -> Keyspace {
    Keyspace::default().sub(b"members")
}

impl MemberRecord {
    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(&Stored::V1(*self)).unwrap_or_default()
    }

    /// Decodes a record; the error says why it is not one.
    pub fn decode(bytes: &[u8]) -> Result<MemberRecord, String> {
        match postcard::from_bytes::<Stored<MemberRecord>>(bytes) {
            Ok(Stored::V1(r)) => Ok(r),
            Err(e) => Err(format!("not a membership operation: {e}")),
        }
    }

    /// The diff feed entry of this record: a bee put keyed by its stamp in the members
    /// keyspace.
    pub fn entry(&self) -> Vec<u8> {
        Op::Put {
            key: keyspace().encode(&self.ts.0.to_be_bytes()),
            value: self.encode(),
        }
        .encode_entry()
    }

    /// Decodes a diff feed entry if it is a membership operation: `None` if the entry is not
    /// in the members keyspace, an error if it is but does not hold a valid record.
    pub fn from_entry(entry: &[u8]) -> Option<Result<MemberRecord, String>> {
        let Ok(Op::Put { key, value }) = op::decode(entry) else {
            return None;
        };
        let stamp = keyspace().decode(&key)?;
        Some(MemberRecord::decode(&value).and_then(|r| {
            if stamp == r.ts.0.to_be_bytes() {
                Ok(r)
            } else {
                Err("the entry's key does not match the operation's stamp".into())
            }
        }))
    }
}

/// Whether, and how far, a writer counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Every diff counts.
    Active,
    /// Diffs below `cut` count; `by` removed it.
    Removed {
        /// The first diff feed entry that does not count.
        cut: u64,
        /// The writer whose operation removed it.
        by: [u8; 32],
    },
}

impl Status {
    /// The first entry of the writer's diff feed that does not count.
    pub fn limit(self) -> u64 {
        match self {
            Status::Active => u64::MAX,
            Status::Removed { cut, .. } => cut,
        }
    }
}

/// One stored membership operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamped {
    /// Its stamp.
    pub ts: u64,
    /// Its author.
    pub author: [u8; 32],
    /// Its entry in the author's diff feed.
    pub seq: u64,
    /// The operation.
    pub op: MemberOp,
}

/// The membership that a set of operations gives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Every writer that is or was a member, with how far it counts.
    pub members: BTreeMap<[u8; 32], Status>,
    /// The operations that did not count, with the reason: `(stamp, author, seq, reason)`.
    pub rejected: Vec<(u64, [u8; 32], u64, String)>,
}

/// The membership of the database whose identity is `root`, from `ops` in any order.
pub fn evaluate(root: [u8; 32], ops: &[Stamped]) -> Outcome {
    let mut ops = ops.to_vec();
    ops.sort_by_key(|o| (o.ts, o.author, o.seq));
    let mut out = Outcome::default();
    out.members.insert(root, Status::Active);
    for o in ops {
        let counts = out
            .members
            .get(&o.author)
            .is_some_and(|s| o.seq < s.limit());
        if !counts {
            let why = if out.members.contains_key(&o.author) {
                "its author was removed before it"
            } else {
                "its author is not a member"
            };
            out.rejected.push((o.ts, o.author, o.seq, why.into()));
            continue;
        }
        match o.op {
            MemberOp::Add { writer } => {
                out.members.insert(writer, Status::Active);
            }
            MemberOp::Remove { writer, cut } => match out.members.get_mut(&writer) {
                Some(status) => *status = Status::Removed { cut, by: o.author },
                None => out.rejected.push((
                    o.ts,
                    o.author,
                    o.seq,
                    "it removes a writer that is not a member".into(),
                )),
            },
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(ts: u64, author: u8, seq: u64, op: MemberOp) -> Stamped {
        Stamped {
            ts,
            author: [author; 32],
            seq,
            op,
        }
    }

    fn add(w: u8) -> MemberOp {
        MemberOp::Add { writer: [w; 32] }
    }

    fn remove(w: u8, cut: u64) -> MemberOp {
        MemberOp::Remove {
            writer: [w; 32],
            cut,
        }
    }

    #[test]
    fn adds_chain_from_the_root_and_order_of_arrival_does_not_matter() {
        let ops = [
            op(1, 0, 0, add(1)),
            op(2, 1, 0, add(2)),
            op(3, 2, 0, add(3)),
        ];
        let mut reversed = ops;
        reversed.reverse();
        let a = evaluate([0; 32], &ops);
        assert_eq!(a, evaluate([0; 32], &reversed));
        assert_eq!(a.members.len(), 4);
        assert!(a.rejected.is_empty());
    }

    #[test]
    fn non_members_and_unknown_removals_are_rejected() {
        let out = evaluate([0; 32], &[op(1, 9, 0, add(9)), op(2, 0, 0, remove(5, 0))]);
        assert_eq!(out.members.len(), 1);
        assert_eq!(out.rejected.len(), 2);
        assert!(out.rejected[0].3.contains("not a member"));
        assert!(out.rejected[1].3.contains("removes a writer"));
    }

    #[test]
    fn the_last_removal_names_the_cut_and_a_later_add_restores_everything() {
        let base = [op(1, 0, 0, add(1)), op(2, 0, 1, add(2))];
        let concurrent = [op(5, 0, 2, remove(2, 3)), op(6, 1, 0, remove(2, 7))];
        let out = evaluate([0; 32], &[&base[..], &concurrent[..]].concat());
        assert_eq!(
            out.members[&[2; 32]],
            Status::Removed {
                cut: 7,
                by: [1; 32]
            }
        );
        let readd = [op(9, 1, 1, add(2))];
        let out = evaluate([0; 32], &[&base[..], &concurrent[..], &readd[..]].concat());
        assert_eq!(out.members[&[2; 32]], Status::Active);
    }

    #[test]
    fn a_removed_author_counts_below_its_cut_only() {
        let ops = [
            op(1, 0, 0, add(1)),
            op(2, 0, 1, remove(1, 1)),
            op(3, 1, 0, add(4)), // seq 0 < cut 1: counts
            op(4, 1, 1, add(5)), // seq 1: beyond the cut
        ];
        let out = evaluate([0; 32], &ops);
        assert_eq!(out.members.get(&[4; 32]), Some(&Status::Active));
        assert_eq!(out.members.get(&[5; 32]), None);
        assert_eq!(out.rejected.len(), 1);
    }

    #[test]
    fn entries_round_trip_and_stay_apart_from_diffs() {
        let r = MemberRecord {
            ts: Hlc(77),
            op: remove(3, 4),
        };
        assert_eq!(MemberRecord::from_entry(&r.entry()), Some(Ok(r)));
        let diff = crate::DiffRecord::entry(&crate::diff_key(b"members", Hlc(77)), vec![1]);
        assert_eq!(MemberRecord::from_entry(&diff), None);
        assert!(crate::DiffRecord::from_entry(&r.entry()).is_err());
    }
}
