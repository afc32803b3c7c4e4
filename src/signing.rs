//! Signed tree heads: the Ed25519 keys a server signs its organizations' tree
//! heads with, and the exact bytes it signs, so that an auditor holding a head
//! and the public keys can check it with any Ed25519 library.
//!
//! The signed bytes of a head (README, "Proofs an auditor can check"):
//!
//! ```text
//! u32 len || "hookledger tree head v1"   domain separation
//! u32 len || organization id (UTF-8)
//! u64 tree size
//! i64 timestamp, microseconds since the Unix epoch
//! 32 bytes root hash
//! ```
//!
//! every integer big-endian, every string prefixed with its length in bytes.
//!
//! The keys live in one file (`DATA/signing-keys` unless `--signing-key`
//! names another, which several nodes on one shared log must do): one key a
//! line, oldest first, `ed25519-secret HEX` for the one that signs and
//! `ed25519-public HEX` for retired ones, which stay published so that the
//! heads they signed still verify. A key's id is the first 16 hex digits of
//! the SHA-256 of its 32-byte public key. The file is made with mode 0600 and
//! refused if others may read it.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::files;
use crate::merkle::Hash;

/// The domain-separation prefix of a signed tree head.
pub const DOMAIN: &str = "hookledger tree head v1";

/// The key file's name in the data directory.
pub const FILE_NAME: &str = "signing-keys";

/// Why the keys could not be read, made or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}, line {line}: {reason}", path.display())]
    Malformed {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(
        "{}: the signing key file may be read by others (mode {mode:o}); run `chmod 600` on it",
        path.display()
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("{}: {reason}", path.display())]
    Unusable { path: PathBuf, reason: String },
    #[error("cannot draw a random key: {0}")]
    Random(String),
}

/// A public key as published, with its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub key_id: String,
    pub key: [u8; 32],
}

impl PublicKey {
    fn of(key: &VerifyingKey) -> PublicKey {
        PublicKey {
            key_id: key_id(key.as_bytes()),
            key: key.to_bytes(),
        }
    }

    /// Whether `signature` is this key's over `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        let (Ok(key), Ok(signature)) = (
            VerifyingKey::from_bytes(&self.key),
            Signature::from_slice(signature),
        ) else {
            return false;
        };
        key.verify(message, &signature).is_ok()
    }
}

/// The id of a public key: the first 16 hex digits of its SHA-256.
pub fn key_id(public: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(public)[..8])
}

/// The bytes a tree head's signature covers (the module's doc gives them).
pub fn head_bytes(org: &str, size: u64, timestamp_micros: i64, root: &Hash) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + DOMAIN.len() + 4 + org.len() + 8 + 8 + 32);
    for text in [DOMAIN, org] {
        let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&timestamp_micros.to_be_bytes());
    out.extend_from_slice(root);
    out
}

/// The signing key and every public key ever used, oldest first (the
/// signing key's last).
pub struct KeyRing {
    signing: SigningKey,
    published: Vec<PublicKey>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("current", &self.current().key_id)
            .field("published", &self.published.len())
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// A ring of one new key held in memory alone: its heads verify only
    /// while this process runs. For embedding the API without a data directory.
    pub fn ephemeral() -> Result<KeyRing, Error> {
        Ok(KeyRing::of(new_key()?, Vec::new()))
    }

    fn of(signing: SigningKey, mut retired: Vec<PublicKey>) -> KeyRing {
        retired.push(PublicKey::of(&signing.verifying_key()));
        KeyRing {
            signing,
            published: retired,
        }
    }

    /// The key file of a data directory.
    pub fn default_path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE_NAME)
    }

    /// Reads the ring at `path`, which must exist.
    pub fn open(path: &Path) -> Result<KeyRing, Error> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mode = file.metadata().map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::Exposed {
                path: path.to_owned(),
                mode,
            });
        }
        let text = std::io::read_to_string(file).map_err(io)?;
        parse(path, &text)
    }

    /// Reads the ring at `path`, first making it with one new key (mode
    /// 0600) if there is no file there.
    pub fn open_or_create(path: &Path) -> Result<KeyRing, Error> {
        match KeyRing::open(path) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            opened => return opened,
        }
        let ring = KeyRing::of(new_key()?, Vec::new());
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        // create_new: of two processes starting at once, one makes the key
        // and the other reads it.
        match files::options().write(true).create_new(true).open(path) {
            Ok(mut file) => {
                file.write_all(ring.encode().as_bytes()).map_err(io)?;
                file.sync_all().map_err(io)?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    files::sync_dir(dir).map_err(io)?;
                }
                tracing::info!(path = %path.display(), key_id = %ring.current().key_id, "made a new tree-head signing key");
                Ok(ring)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => KeyRing::open(path),
            Err(e) => Err(io(e)),
        }
    }

    /// Adds a new signing key to the ring at `path` (made if missing); the
    /// one that signed until now is kept as a public key only. The file is
    /// replaced whole (written aside, synced, renamed).
    pub fn rotate(path: &Path) -> Result<KeyRing, Error> {
        let old = KeyRing::open_or_create(path)?;
        let ring = KeyRing::of(new_key()?, old.published);
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let name = path.file_name().ok_or_else(|| Error::Unusable {
            path: path.to_owned(),
            reason: "not a file name".into(),
        })?;
        let mut aside_name = name.to_owned();
        aside_name.push(".new");
        let aside = path.with_file_name(aside_name);
        let mut file = files::create(&aside).map_err(io)?;
        file.write_all(ring.encode().as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&aside, path).map_err(io)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            files::sync_dir(dir).map_err(io)?;
        }
        Ok(ring)
    }

    /// The key that signs.
    pub fn current(&self) -> &PublicKey {
        self.published.last().expect("a ring holds its signing key")
    }

    /// Every public key, oldest first.
    pub fn published(&self) -> &[PublicKey] {
        &self.published
    }

    /// The public keys as `GET /v1/ledger/public-key` answers them:
    /// `{"keys": [{keyId, algorithm, publicKey (hex), current}]}`, oldest first.
    pub fn published_json(&self) -> serde_json::Value {
        let current = &self.current().key_id;
        let keys: Vec<_> = self
            .published
            .iter()
            .map(|k| {
                serde_json::json!({
                    "keyId": k.key_id,
                    "algorithm": "Ed25519",
                    "publicKey": hex::encode(k.key),
                    "current": &k.key_id == current,
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// Signs `message` with the current key: `(key id, signature)`.
    pub fn sign(&self, message: &[u8]) -> (&str, [u8; 64]) {
        let signature = self.signing.sign(message);
        (&self.current().key_id, signature.to_bytes())
    }

    fn encode(&self) -> String {
        let mut text = String::from(
            "# hookledger tree-head signing keys, oldest first: the secret one signs,\n\
             # the public ones stay published so the heads they signed still verify.\n",
        );
        let retired = &self.published[..self.published.len() - 1];
        for key in retired {
            text.push_str(&format!("ed25519-public {}\n", hex::encode(key.key)));
        }
        text.push_str(&format!(
            "ed25519-secret {}\n",
            hex::encode(self.signing.to_bytes())
        ));
        text
    }
}

fn new_key() -> Result<SigningKey, Error> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| Error::Random(e.to_string()))?;
    Ok(SigningKey::from_bytes(&seed))
}

fn parse(path: &Path, text: &str) -> Result<KeyRing, Error> {
    let malformed = |line: usize, reason: &str| Error::Malformed {
        path: path.to_owned(),
        line,
        reason: reason.to_owned(),
    };
    let mut retired = Vec::new();
    let mut signing: Option<SigningKey> = None;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (kind, value) = line.split_once(' ').ok_or_else(|| {
            malformed(
                line_no,
                "expected `ed25519-secret HEX` or `ed25519-public HEX`",
            )
        })?;
        let bytes: [u8; 32] = hex::decode(value.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| malformed(line_no, "the key must be 64 hex digits"))?;
        match kind {
            "ed25519-public" => {
                if signing.is_some() {
                    return Err(malformed(
                        line_no,
                        "retired keys come before the secret one",
                    ));
                }
                let key = VerifyingKey::from_bytes(&bytes)
                    .map_err(|_| malformed(line_no, "not an Ed25519 public key"))?;
                retired.push(PublicKey::of(&key));
            }
            "ed25519-secret" => {
                if signing.is_some() {
                    return Err(malformed(line_no, "a second secret key; only one signs"));
                }
                signing = Some(SigningKey::from_bytes(&bytes));
            }
            _ => return Err(malformed(line_no, "unknown key kind")),
        }
    }
    let signing = signing.ok_or_else(|| Error::Unusable {
        path: path.to_owned(),
        reason: "no `ed25519-secret` line: no key to sign with".into(),
    })?;
    Ok(KeyRing::of(signing, retired))
}

#[cfg(test)]
mod tests;
