//! Where hookledger's streams live in KurrentDB: every ledger stream `s` is
//! the KurrentDB stream `{prefix}:s`, so one server can hold several ledgers
//! (and anything else) side by side, and a `$all` filter on the prefix `{prefix}:`
//! selects exactly one ledger's events. The claim streams of the claims
//! protocol are `{prefix}-claim-{sha256 of the claim}`: outside that filter,
//! so they take no ledger position.

use sha2::{Digest, Sha256};

use crate::store::{Error, Result};

/// The default prefix.
pub const DEFAULT_PREFIX: &str = "hookledger";

/// The names of one ledger's streams.
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
    /// `{prefix}:`, the start of every ledger stream.
    ledger: String,
}

impl Names {
    /// Checks `prefix`: letters, digits, `_`, `.` and `-`, at most 64, and not
    /// starting with `$` (KurrentDB's system streams) or `-`.
    pub fn new(prefix: &str) -> Result<Names> {
        let valid = !prefix.is_empty()
            && prefix.len() <= 64
            && !prefix.starts_with('-')
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !valid {
            return Err(Error::Unavailable(format!(
                "the KurrentDB stream prefix {prefix:?} must be 1 to 64 letters, digits, '_', '.' or '-', not starting with '-'"
            )));
        }
        Ok(Names {
            prefix: prefix.to_owned(),
            ledger: format!("{prefix}:"),
        })
    }

    /// The prefix every ledger stream starts with, for the `$all` filter.
    pub fn ledger_prefix(&self) -> &str {
        &self.ledger
    }

    /// The KurrentDB stream of ledger stream `stream`.
    pub fn stream(&self, stream: &str) -> String {
        format!("{}{stream}", self.ledger)
    }

    /// The ledger stream of KurrentDB stream `name`, if it is one of this ledger's.
    pub fn ledger_stream<'a>(&self, name: &'a str) -> Option<&'a str> {
        name.strip_prefix(&self.ledger)
    }

    /// The claim stream of the claim whose digest is `key` (see [`claim_key`]).
    pub fn claim_stream(&self, key: &str) -> String {
        format!("{}-claim-{key}", self.prefix)
    }
}

/// A claim's digest, hex: claims can be long and hold any text, stream names
/// should not.
pub fn claim_key(claim: &str) -> String {
    hex::encode(Sha256::digest(claim.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_streams_and_claim_streams_do_not_share_the_filter_prefix() {
        let names = Names::new("ledger-a").unwrap();
        let stream = names.stream("delivery-dlv_1");
        assert_eq!(stream, "ledger-a:delivery-dlv_1");
        assert_eq!(names.ledger_stream(&stream), Some("delivery-dlv_1"));
        let claim = names.claim_stream(&claim_key("sourceKey\norg\nk"));
        assert!(!claim.starts_with(names.ledger_prefix()));
        // Another ledger's prefix that extends this one is still apart.
        let other = Names::new("ledger-ab").unwrap().stream("s");
        assert_eq!(names.ledger_stream(&other), None);
        for bad in ["", "$all", "a:b", "-x", "a b", &"x".repeat(65)] {
            assert!(Names::new(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
