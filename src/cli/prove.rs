//! `hookledger audit prove`: RFC 9162 proofs and tree heads for an operator,
//! over the whole ledger (leaf `i` is position `i + 1`) or one
//! organization's tree (leaf `i` is its sequence number `i + 1`).
//!
//! It reads the log alone, never the read model, so it runs beside a
//! live server and does not trust what the server folded: it feeds the leaf
//! hashes in order through one [`Frontier`] for the root and one per proof
//! node ([`RangeHashes`]), O(log n) memory, and stops reading at the last
//! leaf it needs. `check_proof` checks what it prints, offline.

use clap::{ArgGroup, Args};
use serde_json::json;

use crate::cli::{Error, StoreArgs, open};
use crate::merkle::{self, Frontier, Hash, RangeHashes};
use crate::store::EventStore;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("what").required(true).args(["position", "sequence", "from", "head"])))]
pub struct ProveArgs {
    /// The organization whose tree to prove in; without it, the whole ledger's.
    #[arg(long)]
    pub org: Option<String>,
    /// Inclusion of the event at this position (whole ledger).
    #[arg(long, conflicts_with = "org", value_parser = clap::value_parser!(u64).range(1..))]
    pub position: Option<u64>,
    /// Inclusion of the organization's event with this sequence number.
    #[arg(long, requires = "org", value_parser = clap::value_parser!(u64).range(1..))]
    pub sequence: Option<u64>,
    /// The tree size to prove inclusion in, or of the head; default: the
    /// tree's current size.
    #[arg(long, conflicts_with = "from", value_parser = clap::value_parser!(u64).range(1..))]
    pub size: Option<u64>,
    /// Consistency from the tree of this size...
    #[arg(long, requires = "to", value_parser = clap::value_parser!(u64).range(1..))]
    pub from: Option<u64>,
    /// ...to the tree of this size.
    #[arg(long, requires = "from", value_parser = clap::value_parser!(u64).range(1..))]
    pub to: Option<u64>,
    /// Print the tree's head (`treeSize`, `rootHash`) at `--size`, to keep.
    #[arg(long)]
    pub head: bool,
}

/// The leaf hashes of a tree, in order, from the log: every event, or one
/// organization's.
struct Leaves<'a> {
    store: &'a dyn EventStore,
    org: Option<&'a str>,
}

impl Leaves<'_> {
    /// Calls `f` with each leaf's event hash until it returns false or the log ends.
    async fn each(&self, mut f: impl FnMut(u64, &Hash) -> bool) -> Result<(), Error> {
        let (mut next, mut index) = (1, 0u64);
        loop {
            let events = self
                .store
                .read_all(next, 8192)
                .await
                .map_err(|e| Error::CheckFailed(format!("reading the log failed: {e}")))?;
            let Some(last) = events.last() else {
                return Ok(());
            };
            next = last.position + 1;
            for event in &events {
                if let Some(org) = self.org {
                    let decoded = crate::model::decode(event)
                        .map_err(|e| Error::CheckFailed(e.to_string()))?;
                    if decoded.event.organization_id() != org {
                        continue;
                    }
                }
                if !f(index, &event.hash) {
                    return Ok(());
                }
                index += 1;
            }
        }
    }

    /// How many leaves the tree has now.
    async fn count(&self) -> Result<u64, Error> {
        if self.org.is_none() {
            return Ok(self.store.head());
        }
        let mut n = 0;
        self.each(|_, _| {
            n += 1;
            true
        })
        .await?;
        Ok(n)
    }
}

/// What one pass over the leaves gathers.
struct Pass {
    /// The root of the first `size` leaves, for each size asked.
    roots: Vec<(u64, Frontier)>,
    nodes: RangeHashes,
    /// `(index, event hash)` of the leaf asked for.
    event: Option<(u64, Hash)>,
}

impl Pass {
    async fn run(
        leaves: &Leaves<'_>,
        sizes: &[u64],
        ranges: Vec<(u64, u64)>,
        event: Option<u64>,
    ) -> Result<Pass, Error> {
        let mut pass = Pass {
            roots: sizes.iter().map(|s| (*s, Frontier::default())).collect(),
            nodes: RangeHashes::new(ranges),
            event: None,
        };
        let end = sizes.iter().copied().max().unwrap_or(0);
        leaves
            .each(|index, hash| {
                let leaf = merkle::leaf_hash(hash);
                for (size, tree) in &mut pass.roots {
                    if index < *size {
                        tree.push_leaf(leaf);
                    }
                }
                pass.nodes.push(leaf);
                if event == Some(index) {
                    pass.event = Some((index, *hash));
                }
                index + 1 < end
            })
            .await?;
        if let Some((size, tree)) = pass.roots.iter().find(|(size, tree)| tree.size < *size) {
            return Err(Error::Setup(format!(
                "the tree has {} leaves, fewer than the size {size} asked for",
                tree.size
            )));
        }
        Ok(pass)
    }

    fn root(&self, size: u64) -> String {
        let tree = self
            .roots
            .iter()
            .find(|(s, _)| *s == size)
            .map(|(_, t)| t.root());
        hex::encode(tree.unwrap_or_else(merkle::empty_root))
    }

    fn path(&self) -> Result<Vec<String>, Error> {
        let hashes = self
            .nodes
            .hashes()
            .ok_or_else(|| Error::Setup("the log ended before the proof's last leaf".into()))?;
        Ok(hashes.iter().map(hex::encode).collect())
    }
}

pub async fn prove(args: &StoreArgs, prove: ProveArgs) -> Result<(), Error> {
    let store = open::store_for_reading(args).await?;
    let leaves = Leaves {
        store: store.as_ref(),
        org: prove.org.as_deref(),
    };
    let mut out = match &prove.org {
        Some(org) => json!({"tree": "organization", "organizationId": org}),
        None => json!({"tree": "ledger"}),
    };
    if let (Some(from), Some(to)) = (prove.from, prove.to) {
        if from > to {
            return Err(Error::Setup(format!("--from {from} is past --to {to}")));
        }
        let pass = Pass::run(
            &leaves,
            &[from, to],
            merkle::consistency_ranges(from, to),
            None,
        )
        .await?;
        out["from"] = json!(from);
        out["to"] = json!(to);
        out["fromRoot"] = json!(pass.root(from));
        out["toRoot"] = json!(pass.root(to));
        out["proof"] = json!(pass.path()?);
    } else {
        let size = match prove.size {
            Some(size) => size,
            None => leaves.count().await?,
        };
        let number = prove.position.or(prove.sequence);
        if let Some(n) = number.filter(|n| *n > size) {
            return Err(Error::Setup(format!("{n} is past the tree's size {size}")));
        }
        let ranges = number.map_or_else(Vec::new, |n| merkle::inclusion_ranges(n - 1, size));
        let pass = Pass::run(&leaves, &[size], ranges, number.map(|n| n - 1)).await?;
        out["treeSize"] = json!(size);
        out["rootHash"] = json!(pass.root(size));
        if let Some(n) = number {
            let (_, event) = pass
                .event
                .ok_or_else(|| Error::Setup(format!("no leaf {n} in the log")))?;
            let name = if prove.org.is_some() {
                "sequence"
            } else {
                "position"
            };
            out[name] = json!(n);
            out["eventHash"] = json!(hex::encode(event));
            out["leafHash"] = json!(hex::encode(merkle::leaf_hash(&event)));
            out["auditPath"] = json!(pass.path()?);
        }
    }
    println!("{out}");
    Ok(())
}
