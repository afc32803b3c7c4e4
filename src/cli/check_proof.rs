//! `hookledger audit check-proof`: checks an inclusion or consistency proof
//! (as `audit prove` or the API wrote it) against the heads it is about,
//! read from files, and with `--keys` each head's Ed25519 signature over the
//! bytes `crate::signing` defines. It needs no data directory: an auditor
//! runs it on what they kept. Exit 1 names the first thing that fails.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::Value;

use crate::cli::Error;
use crate::merkle::{self, Hash};
use crate::signing::{self, PublicKey};

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

pub fn run(args: CheckProofArgs) -> Result<(), Error> {
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
