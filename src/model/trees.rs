//! Reading the Merkle trees the folds keep (`crate::merkle`): an
//! organization's, over its events in sequence order, and the whole
//! ledger's, in position order. Roots and proofs for any size up to the
//! tree's current one, from O(log n) stored nodes.

use super::Error;
use super::tables::{self, key};
use super::view::View;
use crate::merkle::{self, Frontier, Hash, Nodes};

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

/// A tree's nodes as the view holds them.
struct Stored<'a> {
    view: &'a View,
    id: Vec<u8>,
}

impl Nodes for Stored<'_> {
    type Error = Error;

    fn node(&self, level: u8, index: u64) -> Result<Hash, Error> {
        let key = key::tree_node(&self.id, level, index);
        self.view
            .get(tables::TREE_NODES, &key, |o| &o.tree_nodes)?
            .ok_or_else(|| {
                Error::Inconsistent(format!(
                    "the Merkle node at level {level}, index {index} is missing"
                ))
            })
    }
}

impl View {
    /// The tree's current frontier: its size and the roots of its peaks.
    pub fn tree(&self, tree: &Tree<'_>) -> Result<Frontier, Error> {
        Ok(self
            .get(tables::TREE_FRONTIERS, &tree.id(), |o| &o.frontiers)?
            .unwrap_or_default())
    }

    fn nodes<'a>(&'a self, tree: &Tree<'_>) -> Stored<'a> {
        Stored {
            view: self,
            id: tree.id(),
        }
    }

    /// The root of the tree's first `size` leaves (`size` at most its size).
    pub fn tree_root(&self, tree: &Tree<'_>, size: u64) -> Result<Hash, Error> {
        merkle::root(&self.nodes(tree), size)
    }

    /// The audit path of leaf `index` in the tree of the first `size` leaves.
    pub fn inclusion_proof(
        &self,
        tree: &Tree<'_>,
        index: u64,
        size: u64,
    ) -> Result<Vec<Hash>, Error> {
        merkle::inclusion(&self.nodes(tree), index, size)
    }

    /// The proof that the tree's first `old` leaves are a prefix of its first `new`.
    pub fn consistency_proof(
        &self,
        tree: &Tree<'_>,
        old: u64,
        new: u64,
    ) -> Result<Vec<Hash>, Error> {
        merkle::consistency(&self.nodes(tree), old, new)
    }

    /// The hash of leaf `index` as stored: its node at level 0.
    pub fn leaf(&self, tree: &Tree<'_>, index: u64) -> Result<Hash, Error> {
        self.nodes(tree).node(0, index)
    }
}
