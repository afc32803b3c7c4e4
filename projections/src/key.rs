//! [`Key`]: the key of the big maps of the read model (deliveries and webhook
//! events by id). It orders exactly as the string it holds, so maps iterate and
//! page in id order as before and archive as maps of strings, but it keeps its
//! first 32 bytes inline and compares them as four big-endian words.
//!
//! Ids are a type prefix and a ULID (`dlv_01J…`), so neighbouring keys share a
//! long prefix: comparing them as `String`s meant a call to `memcmp` and a trip
//! to the heap for every key a B-tree search passed, the largest share of a
//! replay's profile (BENCHMARKS.md, "What the profiles showed", Rebuild). A key
//! of up to 32 bytes (every id) needs no allocation at all, so a fold can build
//! one to look up with for free.

use std::borrow::Cow;
use std::cmp::Ordering;

use rkyv::rancor::{Fallible, Source};
use rkyv::ser::Writer;
use rkyv::string::{ArchivedString, StringResolver};
use rkyv::{Archive, Deserialize, Place, Serialize};

/// Bytes held inline.
const INLINE: usize = 32;

/// A string map key whose order is the string's, compared word by word.
#[derive(Clone)]
pub struct Key {
    /// The first 32 bytes, zero padded.
    head: [u8; INLINE],
    /// The length of the whole string.
    len: u32,
    /// The whole string when it is longer than `head`; empty (no allocation)
    /// otherwise.
    long: Box<str>,
}

impl Key {
    #[inline]
    pub fn new(text: &str) -> Key {
        let mut head = [0; INLINE];
        let inline = text.len().min(INLINE);
        head[..inline].copy_from_slice(&text.as_bytes()[..inline]);
        Key {
            head,
            len: u32::try_from(text.len()).expect("a key shorter than 4 GiB"),
            long: if text.len() > INLINE {
                text.into()
            } else {
                Box::default()
            },
        }
    }

    pub fn as_str(&self) -> &str {
        if self.long.is_empty() {
            // Built from a `&str` of at most `INLINE` bytes, all of them kept.
            std::str::from_utf8(&self.head[..self.len as usize]).expect("a key holds UTF-8")
        } else {
            &self.long
        }
    }

    /// Inline bytes `8 * i..8 * i + 8` as a big-endian word.
    #[inline(always)]
    fn word(&self, i: usize) -> u64 {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(&self.head[8 * i..8 * i + 8]);
        u64::from_be_bytes(bytes)
    }
}

impl Ord for Key {
    // Always inlined: it is the inner loop of every B-tree search of the maps.
    #[inline(always)]
    fn cmp(&self, other: &Self) -> Ordering {
        // Zero padding sorts a string before any longer one it is a prefix of,
        // as `str` does; what padding cannot tell apart (trailing NUL bytes, or
        // a difference past the inline bytes) the rest of the comparison does.
        for i in 0..INLINE / 8 {
            let (mine, theirs) = (self.word(i), other.word(i));
            if mine != theirs {
                return mine.cmp(&theirs);
            }
        }
        if self.long.is_empty() && other.long.is_empty() {
            self.len.cmp(&other.len)
        } else {
            self.long.cmp(&other.long)
        }
    }
}

impl PartialOrd for Key {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Key {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.head == other.head && self.long == other.long
    }
}

impl Eq for Key {}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for Key {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Key {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl From<&str> for Key {
    fn from(text: &str) -> Key {
        Key::new(text)
    }
}

impl From<&String> for Key {
    fn from(text: &String) -> Key {
        Key::new(text)
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::ops::Deref for Key {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        Ok(Key::new(&text))
    }
}

/// Archived as the string itself: a snapshot's maps are maps of strings,
/// whichever key type the live model uses.
impl Archive for Key {
    type Archived = ArchivedString;
    type Resolver = StringResolver;

    fn resolve(&self, resolver: Self::Resolver, out: Place<Self::Archived>) {
        ArchivedString::resolve_from_str(self.as_str(), resolver, out);
    }
}

impl<S> Serialize<S> for Key
where
    S: Fallible + Writer + ?Sized,
    S::Error: Source,
{
    fn serialize(&self, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        ArchivedString::serialize_from_str(self.as_str(), serializer)
    }
}

impl<D: Fallible + ?Sized> Deserialize<Key, D> for ArchivedString {
    fn deserialize(&self, _: &mut D) -> Result<Key, D::Error> {
        Ok(Key::new(self.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "dlv_[0-9A-Z]{26}",
            "[a\u{0}]{0,40}",
            "[ab\u{0}\u{7f}\u{e9}]{28,36}",
            any::<String>(),
        ]
    }

    proptest! {
        #[test]
        fn keys_order_and_compare_as_their_strings(a in text(), b in text()) {
            let (x, y) = (Key::new(&a), Key::new(&b));
            prop_assert_eq!(x.cmp(&y), a.as_str().cmp(b.as_str()));
            prop_assert_eq!(x == y, a == b);
            prop_assert_eq!(x.as_str(), a.as_str());
        }

        #[test]
        fn a_key_archives_as_its_string(a in text()) {
            let key = Key::new(&a);
            let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&key).unwrap();
            prop_assert_eq!(&bytes[..], &rkyv::to_bytes::<rkyv::rancor::Error>(&a).unwrap()[..]);
            let back = rkyv::from_bytes::<Key, rkyv::rancor::Error>(&bytes).unwrap();
            prop_assert_eq!(back, key);
        }
    }

    #[test]
    fn prefixes_and_trailing_nuls_sort_first() {
        let long = |n: usize, last: &str| format!("{}{last}", "a".repeat(n));
        let ordered = [
            "",
            "\0",
            "a",
            "a\0",
            "a\0\0",
            &long(31, ""),
            &long(31, "\0"),
            &long(32, ""),
            &long(32, "\0"),
            &long(33, ""),
            &long(40, ""),
            &long(31, "b"),
            "ab",
        ];
        for pair in ordered.windows(2) {
            assert!(Key::new(pair[0]) < Key::new(pair[1]), "{pair:?}");
        }
    }
}
