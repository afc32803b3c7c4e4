//! Reading the Merkle trees the folds keep (`crate::merkle`): an
//! organization's, over its events in sequence order, and the whole
//! ledger's, in position order. Each is stored as tiles and an edge
//! (`crate::merkle::tiles`); roots and proofs for any size up to the tree's
//! current one read O(log n) rows, at most two tiles a tile level.

use super::Error;
use super::tables::{self, key};
use super::view::View;
use crate::merkle::tiles::{Edge, Tile, TiledNodes, Tiles};
use crate::merkle::{self, Hash, Nodes};

/// Which tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tree<'a> {
    /// An organization's events, leaf `i` being its sequence number `i + 1`.
    Org(&'a str),
    /// Every event, leaf `i` being position `i + 1`.
    Ledger,
}

impl Tree<'_> {
    fn id(&self) -> Vec<u8> {
        match self {
            Tree::Org(org) => key::org_tree(org),
            Tree::Ledger => key::ledger_tree(),
        }
    }
}

/// A tree's tiles as the view holds them.
struct Stored<'a> {
    view: &'a View,
    id: Vec<u8>,
}

impl Tiles for Stored<'_> {
    type Error = Error;

    fn tile(&self, level: u8, index: u64) -> Result<Tile, Error> {
        let key = key::tree_tile(&self.id, level, index);
        self.view
            .get(tables::TREE_TILES, &key, |o| &o.tree_tiles)?
            .ok_or_else(|| {
                Error::Inconsistent(format!(
                    "the Merkle tile at level {level}, index {index} is missing"
                ))
            })
    }
}

impl View {
    /// The tree's current edge: its size, its root, and its partial tiles.
    pub fn tree(&self, tree: &Tree<'_>) -> Result<Edge, Error> {
        Ok(self
            .get(tables::TREE_EDGES, &tree.id(), |o| &o.tree_edges)?
            .unwrap_or_default())
    }

    /// Reads the tree's edge once, then hands `read` its nodes.
    fn with_nodes<T>(
        &self,
        tree: &Tree<'_>,
        read: impl FnOnce(&TiledNodes<'_, Stored<'_>>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let edge = self.tree(tree)?;
        let stored = Stored {
            view: self,
            id: tree.id(),
        };
        read(&TiledNodes::new(&edge, stored))
    }

    /// The root of the tree's first `size` leaves (`size` at most its size).
    pub fn tree_root(&self, tree: &Tree<'_>, size: u64) -> Result<Hash, Error> {
        self.with_nodes(tree, |nodes| merkle::root(nodes, size))
    }

    /// The audit path of leaf `index` in the tree of the first `size` leaves.
    pub fn inclusion_proof(
        &self,
        tree: &Tree<'_>,
        index: u64,
        size: u64,
    ) -> Result<Vec<Hash>, Error> {
        self.with_nodes(tree, |nodes| merkle::inclusion(nodes, index, size))
    }

    /// The proof that the tree's first `old` leaves are a prefix of its first `new`.
    pub fn consistency_proof(
        &self,
        tree: &Tree<'_>,
        old: u64,
        new: u64,
    ) -> Result<Vec<Hash>, Error> {
        self.with_nodes(tree, |nodes| merkle::consistency(nodes, old, new))
    }

    /// Leaf `index`'s hash (tile level 0's, stored or on the edge) and its audit path in the tree of the first
    /// `size` leaves, from one read of the tree's edge and tiles.
    pub fn leaf_and_path(
        &self,
        tree: &Tree<'_>,
        index: u64,
        size: u64,
    ) -> Result<(Hash, Vec<Hash>), Error> {
        self.with_nodes(tree, |nodes| {
            Ok((
                nodes.node(0, index)?,
                merkle::inclusion(nodes, index, size)?,
            ))
        })
    }
}
