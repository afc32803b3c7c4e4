//! The tree against RFC 9162's recursive definitions, written out literally
//! over the leaves, for every size and index of small trees and random ones.

use std::collections::HashMap;
use std::convert::Infallible;

use proptest::prelude::*;

use super::*;

/// RFC 9162 §2.1.1, literally.
fn reference_mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaf_hash(&leaves[0]),
        n => {
            let k = split(n as u64) as usize;
            node_hash(&reference_mth(&leaves[..k]), &reference_mth(&leaves[k..]))
        }
    }
}

/// RFC 9162 §2.1.3.1, literally.
fn reference_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    let n = leaves.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = split(n as u64) as usize;
    if m < k {
        let mut p = reference_path(m, &leaves[..k]);
        p.push(reference_mth(&leaves[k..]));
        p
    } else {
        let mut p = reference_path(m - k, &leaves[k..]);
        p.push(reference_mth(&leaves[..k]));
        p
    }
}

/// RFC 9162 §2.1.4.1, literally.
fn reference_subproof(m: usize, leaves: &[Hash], complete: bool) -> Vec<Hash> {
    let n = leaves.len();
    if m == n {
        return if complete {
            Vec::new()
        } else {
            vec![reference_mth(leaves)]
        };
    }
    let k = split(n as u64) as usize;
    if m <= k {
        let mut p = reference_subproof(m, &leaves[..k], complete);
        p.push(reference_mth(&leaves[k..]));
        p
    } else {
        let mut p = reference_subproof(m - k, &leaves[k..], false);
        p.push(reference_mth(&leaves[..k]));
        p
    }
}

/// Tiles kept in memory.
#[derive(Debug, Default)]
struct Stored(HashMap<(u8, u64), tiles::Tile>);

impl tiles::Tiles for &Stored {
    type Error = Infallible;
    fn tile(&self, level: u8, index: u64) -> Result<tiles::Tile, Infallible> {
        Ok(self
            .0
            .get(&(level, index))
            .unwrap_or_else(|| panic!("tile ({level}, {index}) asked for but not complete"))
            .clone())
    }
}

/// Event hashes `0..n`.
fn event_hashes(n: usize) -> Vec<Hash> {
    (0..n as u32)
        .map(|i| {
            let mut h = [0u8; 32];
            h[..4].copy_from_slice(&i.to_be_bytes());
            h[31] = 0x5a;
            h
        })
        .collect()
}

/// Event hashes `0..n`, appended; the tiles they completed, and the edge.
fn grown(n: usize) -> (Vec<Hash>, Stored, tiles::Edge) {
    let leaves = event_hashes(n);
    let mut edge = tiles::Edge::default();
    let mut stored = Stored::default();
    for leaf in &leaves {
        edge.push(leaf_hash(leaf), |level, index, tile| {
            assert!(
                stored.0.insert((level, index), tile).is_none(),
                "a tile made twice"
            );
        });
    }
    (leaves, stored, edge)
}

/// Checks the tree of `n` leaves, and every root, path and proof at each of
/// `sizes` up to it.
fn check_tree(n: usize, sizes: impl IntoIterator<Item = usize>) {
    let (leaves, stored, edge) = grown(n);
    assert_eq!(edge.root(), reference_mth(&leaves), "edge root at {n}");
    let mut plain = Frontier::default();
    for leaf in &leaves {
        plain.push_leaf(leaf_hash(leaf));
    }
    assert_eq!(edge.frontier(), plain, "peaks at {n}");
    assert_eq!(tiles::Edge::decode(&edge.encode()), Some(edge.clone()));
    let nodes = tiles::TiledNodes::new(&edge, &stored);
    for size in sizes.into_iter().filter(|s| (1..=n).contains(s)) {
        let root_at = root(&nodes, size as u64).unwrap();
        assert_eq!(root_at, reference_mth(&leaves[..size]), "root at {size}");
        for m in 0..size {
            let path = inclusion(&nodes, m as u64, size as u64).unwrap();
            assert_eq!(
                path,
                reference_path(m, &leaves[..size]),
                "path {m} of {size}"
            );
            let leaf = leaf_hash(&leaves[m]);
            assert!(verify_inclusion(
                &leaf,
                m as u64,
                size as u64,
                &path,
                &root_at
            ));
        }
        for old in 1..=size {
            let proof = consistency(&nodes, old as u64, size as u64).unwrap();
            let expected = reference_subproof(old, &leaves[..size], true);
            assert_eq!(proof, expected, "consistency {old} -> {size}");
            let old_root = reference_mth(&leaves[..old]);
            assert!(
                verify_consistency(old as u64, size as u64, &old_root, &root_at, &proof),
                "consistency {old} -> {size} verifies"
            );
        }
    }
}

#[test]
fn every_root_path_and_proof_of_small_trees_is_rfc_9162s() {
    for n in 0..=40 {
        check_tree(n, 1..=n);
    }
    // Into a third tile level: 16 * 16 leaves complete the first tile of
    // tile level 1.
    for n in [255, 256, 257, 300] {
        check_tree(n, [1, 15, 16, 17, 31, 32, 33, 129, 255, 256, 257, n]);
    }
}

#[test]
fn the_empty_tree_is_the_hash_of_nothing() {
    assert_eq!(
        hex::encode(empty_root()),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(Frontier::default().root(), empty_root());
}

#[test]
fn a_wrong_prefix_or_sibling_order_is_a_different_tree() {
    let (leaves, stored, edge) = grown(5);
    let nodes = tiles::TiledNodes::new(&edge, &stored);
    let root5 = root(&nodes, 5).unwrap();
    // Without the 0x00 leaf prefix, or with the children swapped, the
    // root is another one.
    let bare: Hash = Sha256::digest(leaves[0]).into();
    assert_ne!(bare, leaf_hash(&leaves[0]));
    let (a, b) = (leaf_hash(&leaves[0]), leaf_hash(&leaves[1]));
    assert_ne!(node_hash(&a, &b), node_hash(&b, &a));
    let path = inclusion(&nodes, 1, 5).unwrap();
    let mut swapped = path.clone();
    swapped.swap(0, 1);
    assert!(!verify_inclusion(&b, 1, 5, &swapped, &root5));
}

proptest! {
    #[test]
    fn a_changed_byte_anywhere_fails_verification(
        n in 2usize..200,
        m_seed in any::<u64>(),
        old_seed in any::<u64>(),
        byte in 0usize..32,
        which in any::<u64>(),
    ) {
        let (leaves, stored, edge) = grown(n);
        let nodes = tiles::TiledNodes::new(&edge, &stored);
        let size = n as u64;
        let m = m_seed % size;
        let root_n = root(&nodes, size).unwrap();
        let leaf = leaf_hash(&leaves[m as usize]);
        let path = inclusion(&nodes, m, size).unwrap();
        prop_assert!(verify_inclusion(&leaf, m, size, &path, &root_n));
        let mut bad_leaf = leaf;
        bad_leaf[byte] ^= 1;
        prop_assert!(!verify_inclusion(&bad_leaf, m, size, &path, &root_n));
        if !path.is_empty() {
            let mut bad = path.clone();
            let i = (which % bad.len() as u64) as usize;
            bad[i][byte] ^= 1;
            prop_assert!(!verify_inclusion(&leaf, m, size, &bad, &root_n));
        }

        let old = 1 + old_seed % (size - 1);
        let root_old = root(&nodes, old).unwrap();
        let proof = consistency(&nodes, old, size).unwrap();
        prop_assert!(verify_consistency(old, size, &root_old, &root_n, &proof));
        let mut bad = proof.clone();
        let i = (which % bad.len() as u64) as usize;
        bad[i][byte] ^= 1;
        prop_assert!(!verify_consistency(old, size, &root_old, &root_n, &bad));
        let mut bad_root = root_old;
        bad_root[byte] ^= 1;
        prop_assert!(!verify_consistency(old, size, &bad_root, &root_n, &proof));
    }
}

/// A proof made from the leaves in one pass, as `audit prove` makes it from
/// the log (feeding more leaves than the ranges need, as a log longer than the
/// proven size does).
fn from_leaves(ranges: Vec<(u64, u64)>, leaves: &[Hash]) -> Vec<Hash> {
    let mut hashes = RangeHashes::new(ranges);
    for leaf in leaves {
        assert!(hashes.hashes().is_none() || hashes.end() <= hashes.next);
        hashes.push(leaf_hash(leaf));
    }
    hashes.hashes().expect("every leaf fed")
}

#[test]
fn proofs_made_from_the_leaves_in_one_pass_are_the_stored_nodes_proofs() {
    for n in 1..=20 {
        let (leaves, stored, edge) = grown(n);
        let nodes = tiles::TiledNodes::new(&edge, &stored);
        for size in 1..=n as u64 {
            for m in 0..size {
                let ranges = inclusion_ranges(m, size);
                assert_eq!(
                    from_leaves(ranges, &leaves),
                    inclusion(&nodes, m, size).unwrap(),
                    "path {m} of {size}"
                );
            }
            for old in 1..=size {
                let ranges = consistency_ranges(old, size);
                assert_eq!(
                    from_leaves(ranges, &leaves),
                    consistency(&nodes, old, size).unwrap(),
                    "consistency {old} -> {size}"
                );
            }
        }
    }
    let mut unfinished = RangeHashes::new(inclusion_ranges(0, 4));
    unfinished.push([0; 32]);
    assert_eq!(unfinished.hashes(), None, "leaves missing");
}
