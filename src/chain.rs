//! Tamper evidence: the per-stream hash chain and the running ledger digest.
//!
//! `hash = SHA-256(prevHash || canonical bytes of the event)`, where the first event
//! of a stream has a `prevHash` of 32 zero bytes. The canonical bytes are the JSON
//! object `{"data","metadata","recordedAt","schemaVersion","stream","type","version"}`
//! with sorted keys and no whitespace; `data` and `metadata` are themselves
//! canonical JSON. An auditor can recompute every hash from `audit export`.
//!
//! `digest(n) = SHA-256(digest(n-1) || position as 8 big-endian bytes || hash(n))`,
//! with `digest(0)` all zeros: one value that pins the whole history up to `n`.

use sha2::{Digest, Sha256};

use projections::canonical::write_string;
use projections::values::Timestamp;

pub type Hash = [u8; 32];

pub const ZERO: Hash = [0; 32];

/// The fields of an event that its hash covers.
#[derive(Debug, Clone, Copy)]
pub struct Hashed<'a> {
    pub stream: &'a str,
    pub version: u64,
    pub event_type: &'a str,
    pub schema_version: u32,
    pub recorded_at: i64,
    pub data: &'a [u8],
    pub metadata: &'a [u8],
}

impl Hashed<'_> {
    /// The canonical bytes of the event.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + self.metadata.len() + 160);
        out.extend_from_slice(b"{\"data\":");
        out.extend_from_slice(self.data);
        out.extend_from_slice(b",\"metadata\":");
        out.extend_from_slice(self.metadata);
        out.extend_from_slice(b",\"recordedAt\":\"");
        out.extend_from_slice(
            Timestamp::from_micros(self.recorded_at)
                .to_rfc3339()
                .as_bytes(),
        );
        out.extend_from_slice(b"\",\"schemaVersion\":");
        out.extend_from_slice(self.schema_version.to_string().as_bytes());
        out.extend_from_slice(b",\"stream\":");
        write_string(&mut out, self.stream);
        out.extend_from_slice(b",\"type\":");
        write_string(&mut out, self.event_type);
        out.extend_from_slice(b",\"version\":");
        out.extend_from_slice(self.version.to_string().as_bytes());
        out.push(b'}');
        out
    }

    /// The event's link in its stream's chain.
    pub fn hash(&self, prev: &Hash) -> Hash {
        let mut hasher = Sha256::new();
        hasher.update(prev);
        hasher.update(self.canonical_bytes());
        hasher.finalize().into()
    }
}

/// The running ledger digest, folded in position order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct LedgerDigest {
    pub position: u64,
    pub digest: Hash,
}

impl Default for LedgerDigest {
    fn default() -> Self {
        LedgerDigest {
            position: 0,
            digest: ZERO,
        }
    }
}

impl LedgerDigest {
    /// Folds the event at `position`; the caller guarantees position order.
    pub fn fold(&mut self, position: u64, hash: &Hash) {
        let mut hasher = Sha256::new();
        hasher.update(self.digest);
        hasher.update(position.to_be_bytes());
        hasher.update(hash);
        self.digest = hasher.finalize().into();
        self.position = position;
    }

    pub fn hex(&self) -> String {
        hex::encode(self.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event<'a>(data: &'a [u8]) -> Hashed<'a> {
        Hashed {
            stream: "delivery-dlv_1",
            version: 3,
            event_type: "AttemptRecorded",
            schema_version: 1,
            recorded_at: 1_700_000_000_123_456,
            data,
            metadata: b"{}",
        }
    }

    #[test]
    fn canonical_bytes_are_sorted_compact_json() {
        let bytes = event(br#"{"a":1}"#).canonical_bytes();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"data":{"a":1},"metadata":{},"recordedAt":"2023-11-14T22:13:20.123456Z","schemaVersion":1,"stream":"delivery-dlv_1","type":"AttemptRecorded","version":3}"#
        );
    }

    #[test]
    fn the_hash_covers_the_data_and_the_previous_link() {
        let base = event(br#"{"a":1}"#).hash(&ZERO);
        assert_ne!(base, event(br#"{"a":2}"#).hash(&ZERO));
        assert_ne!(base, event(br#"{"a":1}"#).hash(&[1; 32]));
        assert_eq!(base, event(br#"{"a":1}"#).hash(&ZERO));
    }

    #[test]
    fn the_digest_depends_on_order_and_position() {
        let (a, b) = ([1; 32], [2; 32]);
        let mut one = LedgerDigest::default();
        one.fold(1, &a);
        one.fold(2, &b);
        let mut other = LedgerDigest::default();
        other.fold(1, &b);
        other.fold(2, &a);
        assert_ne!(one.digest, other.digest);
        assert_eq!(one.position, 2);
    }
}
