//! Flat-tree arithmetic: the in-order numbering of a binary merkle tree over leaves `0..`.
//!
//! Leaf `i` is node `2 * i`. A node's depth is the number of trailing one bits of its index; a
//! node of depth `d` and offset `o` covers the leaves `[o << d, (o + 1) << d)`. These functions
//! are pure and never touch storage; callers keep lengths below [`MAX_LENGTH`] so that no
//! index overflows.

/// The largest feed length this crate accepts (2^60 entries), so node indices fit in a `u64`.
pub const MAX_LENGTH: u64 = 1 << 60;

/// The node index of leaf `i`.
pub fn leaf(i: u64) -> u64 {
    i << 1
}

/// The depth of node `n` (0 for leaves).
pub fn depth(n: u64) -> u32 {
    n.trailing_ones()
}

/// The node of depth `d` whose span starts at leaf `offset << d`.
pub fn node(d: u32, offset: u64) -> u64 {
    (offset << (d + 1)) | ((1u64 << d) - 1)
}

/// The leaves `[start, end)` covered by node `n`.
pub fn span(n: u64) -> (u64, u64) {
    let d = depth(n);
    let offset = n >> (d + 1);
    (offset << d, (offset + 1) << d)
}

/// The two children of node `n`, or `None` for a leaf.
pub fn children(n: u64) -> Option<(u64, u64)> {
    match depth(n) {
        0 => None,
        d => {
            let half = 1u64 << (d - 1);
            Some((n - half, n + half))
        }
    }
}

/// The roots of a tree of `length` leaves, left to right: one perfect subtree per set bit.
pub fn roots(length: u64) -> impl Iterator<Item = u64> {
    let mut start = 0u64;
    (0..64u32)
        .rev()
        .filter(move |d| length & (1u64 << d) != 0)
        .map(move |d| {
            let n = node(d, start >> d);
            start += 1u64 << d;
            n
        })
}

/// How many parent nodes become complete when leaf `i` is appended (their last leaf is `i`).
///
/// Their depths are `1..=completed_parents(i)`; the parent of depth `d` is
/// `node(d, i >> d)`.
pub fn completed_parents(i: u64) -> u32 {
    i.trailing_ones()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_matches_the_flat_tree_picture() {
        // 0 1 2 3 4 5 6 (leaves 0..4): node 3 is the root of four leaves.
        assert_eq!(depth(3), 2);
        assert_eq!(span(3), (0, 4));
        assert_eq!(children(3), Some((1, 5)));
        assert_eq!(children(1), Some((0, 2)));
        assert_eq!(children(4), None);
        assert_eq!(span(9), (4, 6));
        assert_eq!(roots(0).count(), 0);
        assert_eq!(roots(5).collect::<Vec<_>>(), vec![3, 8]);
        assert_eq!(roots(6).collect::<Vec<_>>(), vec![3, 9]);
        assert_eq!(roots(7).collect::<Vec<_>>(), vec![3, 9, 12]);
        assert_eq!(completed_parents(0), 0);
        assert_eq!(completed_parents(3), 2);
        assert_eq!(node(2, 3 >> 2), 3);
    }

    #[test]
    fn roots_cover_the_length_exactly() {
        for length in 0..300u64 {
            let mut next = 0;
            for r in roots(length) {
                let (s, e) = span(r);
                assert_eq!(s, next);
                next = e;
            }
            assert_eq!(next, length);
        }
    }
}
