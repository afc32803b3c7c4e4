//! Merkle trees exactly as RFC 9162 §2.1 defines them, over event hashes:
//! the leaf hash of an event is `SHA-256(0x00 || event hash)`, a node's is
//! `SHA-256(0x01 || left || right)`, and a tree of `n` leaves splits at the
//! largest power of two below `n`.
//!
//! The node at `(level, index)` covers leaves `index * 2^level .. (index +
//! 1) * 2^level` and never changes once its last leaf is in. A root, an
//! inclusion proof or a consistency proof for any size up to the current one
//! reads O(log n) complete nodes ([`Nodes`]), never the leaves; the read
//! model keeps them as tiles ([`tiles`]), and appending a leaf costs O(log n).
//! A [`Frontier`] alone is what a walk over the log keeps.
//!
//! The verifiers are the algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2, as an
//! auditor outside runs them.

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The hash of a leaf whose data is an event's 32-byte chain hash.
pub fn leaf_hash(event_hash: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(event_hash);
    h.finalize().into()
}

/// The hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: the hash of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The right edge of a tree: its size and the roots of its perfect
/// subtrees, largest (leftmost) first, one per bit set in the size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    pub size: u64,
    pub peaks: Vec<Hash>,
}

impl Frontier {
    /// Appends a leaf hash.
    pub fn push_leaf(&mut self, leaf: Hash) {
        let (mut hash, mut index) = (leaf, self.size);
        // Each trailing one bit of the old size is a peak this leaf completes.
        while index & 1 == 1 {
            let left = self.peaks.pop().expect("a peak for each bit of the size");
            hash = node_hash(&left, &hash);
            index >>= 1;
        }
        self.peaks.push(hash);
        self.size += 1;
    }

    /// The tree's root (RFC 9162's MTH over all its leaves).
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(last) = peaks.next() else {
            return empty_root();
        };
        peaks.fold(*last, |right, left| node_hash(left, &right))
    }
}

/// Where a tree's complete nodes are read from.
pub trait Nodes {
    type Error;
    /// The complete node at `(level, index)`; the caller asks only for
    /// nodes whose leaves are all in.
    fn node(&self, level: u8, index: u64) -> Result<Hash, Self::Error>;
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// MTH of leaves `start..end`, where `start` is a multiple of the largest
/// power of two not above `end - start` (true of every range RFC 9162's
/// recursion visits from a root): the left part is always a stored node.
fn mth<N: Nodes>(nodes: &N, start: u64, end: u64) -> Result<Hash, N::Error> {
    let n = end - start;
    if n == 0 {
        return Ok(empty_root());
    }
    if n.is_power_of_two() {
        let level = n.trailing_zeros() as u8;
        return nodes.node(level, start >> level);
    }
    let k = split(n);
    let left = mth(nodes, start, start + k)?;
    let right = mth(nodes, start + k, end)?;
    Ok(node_hash(&left, &right))
}

/// The root of the tree's first `size` leaves.
pub fn root<N: Nodes>(nodes: &N, size: u64) -> Result<Hash, N::Error> {
    mth(nodes, 0, size)
}

/// The audit path of leaf `index` in the tree of the first `size` leaves
/// (RFC 9162 §2.1.3.1), nearest sibling first. `index < size`.
pub fn inclusion<N: Nodes>(nodes: &N, index: u64, size: u64) -> Result<Vec<Hash>, N::Error> {
    inclusion_ranges(index, size)
        .into_iter()
        .map(|(start, end)| mth(nodes, start, end))
        .collect()
}

/// The leaf ranges `start..end` whose tree hashes make the audit path of
/// leaf `index` in the tree of `size` leaves, nearest sibling first.
pub fn inclusion_ranges(index: u64, size: u64) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    let (mut start, mut end, mut m) = (0u64, size, index);
    while end - start > 1 {
        let k = split(end - start);
        if m < k {
            ranges.push((start + k, end));
            end = start + k;
        } else {
            ranges.push((start, start + k));
            start += k;
            m -= k;
        }
    }
    ranges.reverse();
    ranges
}

/// The proof that the tree of the first `old` leaves is a prefix of the tree
/// of the first `new` (RFC 9162 §2.1.4.1). `0 < old <= new`; empty when equal.
pub fn consistency<N: Nodes>(nodes: &N, old: u64, new: u64) -> Result<Vec<Hash>, N::Error> {
    consistency_ranges(old, new)
        .into_iter()
        .map(|(start, end)| mth(nodes, start, end))
        .collect()
}

/// The leaf ranges whose tree hashes make the consistency proof from `old`
/// to `new` leaves, in the proof's order.
pub fn consistency_ranges(old: u64, new: u64) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    let (mut start, mut end, mut m, mut complete) = (0u64, new, old, true);
    while m != end - start {
        let k = split(end - start);
        if m <= k {
            ranges.push((start + k, end));
            end = start + k;
        } else {
            ranges.push((start, start + k));
            start += k;
            m -= k;
            complete = false;
        }
    }
    if !complete {
        ranges.push((start, end));
    }
    ranges.reverse();
    ranges
}

/// The tree hashes of chosen leaf ranges, computed from the leaves alone in
/// one pass in order: one [`Frontier`] a range, so O(log n) memory a range.
/// How a proof is made from the log, without the stored nodes.
#[derive(Debug, Clone)]
pub struct RangeHashes {
    ranges: Vec<(u64, u64)>,
    trees: Vec<Frontier>,
    next: u64,
}

impl RangeHashes {
    pub fn new(ranges: Vec<(u64, u64)>) -> RangeHashes {
        let trees = vec![Frontier::default(); ranges.len()];
        RangeHashes {
            ranges,
            trees,
            next: 0,
        }
    }

    /// The leaves needed: every one before the end of the last range.
    pub fn end(&self) -> u64 {
        self.ranges.iter().map(|r| r.1).max().unwrap_or(0)
    }

    /// Feeds leaf number `next` (counting from 0).
    pub fn push(&mut self, leaf: Hash) {
        let index = self.next;
        for (range, tree) in self.ranges.iter().zip(&mut self.trees) {
            if (range.0..range.1).contains(&index) {
                tree.push_leaf(leaf);
            }
        }
        self.next += 1;
    }

    /// The ranges' hashes, in the ranges' order; `None` until every leaf
    /// they cover was fed.
    pub fn hashes(&self) -> Option<Vec<Hash>> {
        (self.next >= self.end()).then(|| self.trees.iter().map(Frontier::root).collect())
    }
}

/// RFC 9162 §2.1.3.2: whether `path` proves the leaf `leaf` is at `index`
/// in the tree of `size` leaves whose root is `root`.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s, mut r) = (index, size - 1, *leaf);
    for p in path {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

/// RFC 9162 §2.1.4.2: whether `proof` shows the tree of `old` leaves with
/// root `old_root` is a prefix of the tree of `new` leaves with `new_root`.
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old == 0 || old > new {
        return false;
    }
    if old == new {
        return proof.is_empty() && old_root == new_root;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut f, mut s) = (old - 1, new - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    fr == *old_root && sr == *new_root && s == 0
}

pub mod tiles;

#[cfg(test)]
mod tests;
