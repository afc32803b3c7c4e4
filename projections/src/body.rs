//! Bodies the ledger can forget: an accepted event's `payload` and an
//! attempt's `responseBody`.
//!
//! From schema version 2 on, the hashed data of those events holds a body's
//! salted digest, `SHA-256(salt || canonical body)` in lowercase hex, and the
//! salt and the body themselves are the event's *content*, kept beside the
//! hashed record: `salt (16 bytes) || canonical body`. Erasing the body removes
//! the content; the digest stays in the chain, so every hash still verifies,
//! and the salt, gone with the body, stops anyone from confirming a guessed
//! body against the digest.
//!
//! The salt is drawn by the caller (this crate has no randomness): see
//! [`crate::event::Event::encode`].

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::canonical::JsonObject;

/// Bytes of salt before each body.
pub const SALT_LEN: usize = 16;

/// A body as an event holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// In full: as a command made it, as a schema-1 event holds it, or read
    /// back with its content.
    Kept(JsonObject),
    /// Erased: only the salted digest in the hashed data is left.
    Erased,
}

impl Body {
    pub fn kept(&self) -> Option<&JsonObject> {
        match self {
            Body::Kept(body) => Some(body),
            Body::Erased => None,
        }
    }

    pub fn is_erased(&self) -> bool {
        matches!(self, Body::Erased)
    }
}

/// A kept body is the object; an erased one is `null`.
impl Serialize for Body {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Body::Kept(body) => body.serialize(s),
            Body::Erased => s.serialize_none(),
        }
    }
}

/// Only a body in full is ever read from JSON: schema-1 data.
impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        JsonObject::deserialize(d).map(Body::Kept)
    }
}

/// `body` sealed with `salt`: its digest for the hashed data, and the
/// content kept beside it.
pub fn seal(body: &JsonObject, salt: [u8; SALT_LEN]) -> Sealed {
    let mut content = Vec::with_capacity(SALT_LEN + body.get().len());
    content.extend_from_slice(&salt);
    content.extend_from_slice(body.get().as_bytes());
    Sealed {
        digest: digest(&content),
        content,
    }
}

/// A sealed body: what the hashed data holds, and what is kept beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// `SHA-256(salt || canonical body)`, lowercase hex.
    pub digest: String,
    /// `salt || canonical body`.
    pub content: Vec<u8>,
}

/// The salted digest of `content` (`salt || canonical body`), lowercase hex.
pub fn digest(content: &[u8]) -> String {
    let hash: [u8; 32] = Sha256::digest(content).into();
    let mut out = String::with_capacity(64);
    for byte in hash {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.push(HEX[usize::from(byte >> 4)] as char);
        out.push(HEX[usize::from(byte & 0xf)] as char);
    }
    out
}

/// Whether `text` has a digest's form: 64 lowercase hex digits.
pub fn is_digest(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Why stored content does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("content of {0} bytes is shorter than its salt")]
    Short(usize),
    #[error("content does not match the digest the event's hash covers")]
    Digest,
    #[error("content body is not canonical JSON: {0}")]
    Body(String),
    #[error("the event holds content but no body digest")]
    Unexpected,
    #[error("a body digest is not 64 lowercase hex digits")]
    NotADigest,
}

/// The body that `content` holds, checked against `digest`; `None` content
/// (erased) is [`Body::Erased`].
pub fn open(content: Option<&[u8]>, digest_hex: &str) -> Result<Body, ContentError> {
    if !is_digest(digest_hex) {
        return Err(ContentError::NotADigest);
    }
    let Some(content) = content else {
        return Ok(Body::Erased);
    };
    if content.len() <= SALT_LEN {
        return Err(ContentError::Short(content.len()));
    }
    if digest(content) != digest_hex {
        return Err(ContentError::Digest);
    }
    let text =
        std::str::from_utf8(&content[SALT_LEN..]).map_err(|e| ContentError::Body(e.to_string()))?;
    let body = JsonObject::parse(text).map_err(|e| ContentError::Body(e.to_string()))?;
    if body.get() != text {
        return Err(ContentError::Body("not in canonical form".into()));
    }
    Ok(Body::Kept(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(text: &str) -> JsonObject {
        JsonObject::parse(text).unwrap()
    }

    #[test]
    fn a_sealed_body_opens_to_itself() {
        let sealed = seal(&body(r#"{"b":1,"a":[true]}"#), [7; SALT_LEN]);
        assert_eq!(&sealed.content[..SALT_LEN], &[7; SALT_LEN]);
        assert_eq!(&sealed.content[SALT_LEN..], br#"{"a":[true],"b":1}"#);
        assert_eq!(
            open(Some(&sealed.content), &sealed.digest).unwrap(),
            Body::Kept(body(r#"{"a":[true],"b":1}"#))
        );
        assert_eq!(open(None, &sealed.digest).unwrap(), Body::Erased);
    }

    #[test]
    fn the_digest_is_sha256_of_salt_then_body() {
        // Python: hashlib.sha256(bytes(16) + b"{}").hexdigest()
        let sealed = seal(&JsonObject::empty(), [0; SALT_LEN]);
        assert_eq!(
            sealed.digest,
            "333b13ff02f57ae18049b82ca66f37592c5a3d8fd54e44e23ae5c7085c24fd2a"
        );
    }

    #[test]
    fn another_salt_gives_another_digest() {
        let a = seal(&JsonObject::empty(), [1; SALT_LEN]);
        let b = seal(&JsonObject::empty(), [2; SALT_LEN]);
        assert_ne!(a.digest, b.digest);
    }

    #[test]
    fn changed_content_is_refused() {
        let sealed = seal(&body(r#"{"email":"a@example.com"}"#), [3; SALT_LEN]);
        for i in 0..sealed.content.len() {
            let mut damaged = sealed.content.clone();
            damaged[i] ^= 1;
            assert!(open(Some(&damaged), &sealed.digest).is_err(), "byte {i}");
        }
        assert_eq!(
            open(Some(&sealed.content[..SALT_LEN]), &sealed.digest),
            Err(ContentError::Short(SALT_LEN))
        );
    }
}
