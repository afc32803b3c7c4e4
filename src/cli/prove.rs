//! `hookledger audit prove` and `audit check-proof`: RFC 9162 proofs for an
//! operator, over the whole ledger (leaf `i` is position `i + 1`) or one
//! organization's tree (leaf `i` is its sequence number `i + 1`), and their
//! offline check.
//!
//! `prove` reads the log alone, never the read model, so it runs beside a
//! live server and does not trust what the server folded: it feeds the leaf
//! hashes in order through one [`Frontier`] for the root and one per proof
//! node ([`RangeHashes`]), O(log n) memory, and stops reading at the last
//! leaf it needs. `check-proof` reads JSON files (a proof, the heads it is
//! against, the public keys of signed heads) and needs no data directory.

use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args};
use serde_json::{Value, json};

use crate::cli::{Error, StoreArgs, open};
use crate::merkle::{self, Frontier, Hash, RangeHashes};
use crate::signing::{self, PublicKey};
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

#[derive(Debug, Args)]
pub struct CheckProofArgs {
    /// The proof: an inclusion proof (`auditPath`) or a consistency proof
    /// (`proof`), as `audit prove` or the API wrote it.
    #[arg(long)]
    pub proof: PathBuf,
    /// A head the proof is against (`treeSize`, `rootHash`): one for an
    /// inclusion proof, the two of `from` and `to` for a consistency proof.
    #[arg(long = "head", required = true)]
    pub heads: Vec<PathBuf>,
    /// The public keys (`GET /v1/ledger/public-key`, `signing-key show`):
    /// each head's signature is then checked, and must be there.
    #[arg(long)]
    pub keys: Option<PathBuf>,
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

fn read_json(path: &Path) -> Result<Value, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::setup(&format!("cannot read {}", path.display()), e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Setup(format!("{} is not JSON: {e}", path.display())))
}

/// A field of a file, checked: a failure names the file and the field.
struct Fields<'a> {
    value: &'a Value,
    file: &'a Path,
}

impl Fields<'_> {
    fn bad(&self, field: &str, what: &str) -> Error {
        Error::CheckFailed(format!("{}: `{field}` {what}", self.file.display()))
    }

    fn count(&self, field: &str) -> Result<u64, Error> {
        self.value[field]
            .as_u64()
            .ok_or_else(|| self.bad(field, "is not a whole number"))
    }

    fn bytes(&self, value: &Value, field: &str, len: usize) -> Result<Vec<u8>, Error> {
        value
            .as_str()
            .and_then(|text| hex::decode(text).ok())
            .filter(|bytes| bytes.len() == len)
            .ok_or_else(|| self.bad(field, &format!("is not {} hex digits", 2 * len)))
    }

    fn hash(&self, field: &str) -> Result<Hash, Error> {
        let bytes = self.bytes(&self.value[field], field, 32)?;
        Ok(bytes.try_into().expect("32 bytes"))
    }

    fn hashes(&self, field: &str) -> Result<Vec<Hash>, Error> {
        let items = self.value[field]
            .as_array()
            .ok_or_else(|| self.bad(field, "is not a list"))?;
        items
            .iter()
            .map(|item| {
                let bytes = self.bytes(item, field, 32)?;
                Ok(bytes.try_into().expect("32 bytes"))
            })
            .collect()
    }
}

/// A head read from a file: its size and root, its signature checked when
/// keys are given.
fn head(path: &Path, keys: Option<&[PublicKey]>) -> Result<(u64, Hash), Error> {
    let value = read_json(path)?;
    let fields = Fields {
        value: &value,
        file: path,
    };
    let size = fields.count("treeSize")?;
    let root = fields.hash("rootHash")?;
    let Some(keys) = keys else {
        if !value["signature"].is_null() {
            return Err(Error::Setup(format!(
                "{} is signed: give --keys to check its signature",
                path.display()
            )));
        }
        return Ok((size, root));
    };
    let signature = fields.bytes(&value["signature"], "signature", 64)?;
    let org = value["organizationId"]
        .as_str()
        .ok_or_else(|| fields.bad("organizationId", "is missing"))?;
    let timestamp = value["timestamp"]
        .as_str()
        .and_then(projections::Timestamp::parse_rfc3339)
        .ok_or_else(|| fields.bad("timestamp", "is not an RFC 3339 time"))?;
    let key_id = value["keyId"].as_str().unwrap_or_default();
    let key = keys
        .iter()
        .find(|k| k.key_id == key_id)
        .ok_or_else(|| fields.bad("keyId", "names no published key"))?;
    let message = signing::head_bytes(org, size, timestamp.micros(), &root);
    if !key.verifies(&message, &signature) {
        return Err(fields.bad(
            "signature",
            "does not verify: the head was changed or not signed by that key",
        ));
    }
    Ok((size, root))
}

fn public_keys(path: &Path) -> Result<Vec<PublicKey>, Error> {
    let value = read_json(path)?;
    let fields = Fields {
        value: &value,
        file: path,
    };
    let keys = value["keys"]
        .as_array()
        .ok_or_else(|| fields.bad("keys", "is not a list"))?;
    keys.iter()
        .map(|k| {
            let key: [u8; 32] = fields
                .bytes(&k["publicKey"], "publicKey", 32)?
                .try_into()
                .expect("32 bytes");
            let key_id = signing::key_id(&key);
            if k["keyId"] != key_id.as_str() {
                return Err(fields.bad("keyId", "is not the id of its public key"));
            }
            Ok(PublicKey { key_id, key })
        })
        .collect()
}

pub fn check_proof(args: CheckProofArgs) -> Result<(), Error> {
    let keys = args.keys.as_deref().map(public_keys).transpose()?;
    let heads = args
        .heads
        .iter()
        .map(|path| head(path, keys.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    let root_at = |size: u64| {
        heads
            .iter()
            .find(|(s, _)| *s == size)
            .map(|(_, root)| *root)
            .ok_or_else(|| Error::Setup(format!("no --head of size {size} for this proof")))
    };
    let value = read_json(&args.proof)?;
    let proof = Fields {
        value: &value,
        file: &args.proof,
    };
    if value.get("auditPath").is_some() {
        let size = proof.count("treeSize")?;
        let (name, n) = match value.get("sequence") {
            Some(_) => ("sequence", proof.count("sequence")?),
            None => ("position", proof.count("position")?),
        };
        let leaf = proof.hash("leafHash")?;
        if value.get("eventHash").is_some() && merkle::leaf_hash(&proof.hash("eventHash")?) != leaf
        {
            return Err(proof.bad("leafHash", "is not the leaf hash of `eventHash`"));
        }
        let path = proof.hashes("auditPath")?;
        if n == 0 || !merkle::verify_inclusion(&leaf, n - 1, size, &path, &root_at(size)?) {
            return Err(Error::CheckFailed(format!(
                "{name} {n} is not proved included in the head of size {size}"
            )));
        }
        println!("ok: {name} {n} is included in the head of size {size}");
    } else {
        let (from, to) = (proof.count("from")?, proof.count("to")?);
        let path = proof.hashes("proof")?;
        if !merkle::verify_consistency(from, to, &root_at(from)?, &root_at(to)?, &path) {
            return Err(Error::CheckFailed(format!(
                "the head of size {to} is not proved to extend the head of size {from}"
            )));
        }
        println!("ok: the head of size {to} extends the head of size {from}");
    }
    if keys.is_some() {
        println!("ok: every head's signature verifies");
    }
    Ok(())
}
