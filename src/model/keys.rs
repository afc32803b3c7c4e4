//! The keys of the read model's tables: tuples of strings, numbers and
//! single bytes, encoded so that byte order is tuple order and no key is a
//! prefix of another unless its tuple is a prefix of the other's. A string is
//! its bytes with 0x00 written as 0x00 0xFF, then 0x00 0x01; a number is 8
//! bytes big-endian. So every organization's rows of a table lie in one key
//! range whatever bytes its name holds, and lists walk that range in id order.

/// A key being built.
#[derive(Debug, Default, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(Vec<u8>);

impl Key {
    pub fn new() -> Key {
        Key(Vec::with_capacity(64))
    }

    pub fn str(mut self, text: &str) -> Key {
        for &b in text.as_bytes() {
            self.0.push(b);
            if b == 0 {
                self.0.push(0xFF);
            }
        }
        self.0.extend_from_slice(&[0, 1]);
        self
    }

    pub fn u64(mut self, n: u64) -> Key {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }

    /// A signed number (a time in microseconds), ordered as numbers are.
    pub fn i64(self, n: i64) -> Key {
        self.u64((n as u64) ^ (1 << 63))
    }

    pub fn byte(mut self, b: u8) -> Key {
        self.0.push(b);
        self
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The first key after every key that starts with this one.
    pub fn prefix_end(&self) -> Vec<u8> {
        let mut end = self.0.clone();
        // Every encoded component ends in a byte below 0xFF (a string in 0x01,
        // a number or byte component can be 0xFF: then carry).
        while let Some(last) = end.pop() {
            if last < 0xFF {
                end.push(last + 1);
                return end;
            }
        }
        // All 0xFF: nothing sorts after it but the end of the table.
        vec![0xFF; self.0.len() + 1]
    }
}

/// Reads the components of a key back, in the order they were written.
#[derive(Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(key: &'a [u8]) -> Reader<'a> {
        Reader { rest: key }
    }

    pub fn str(&mut self) -> Option<String> {
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            let b = *self.rest.get(i)?;
            if b == 0 {
                match *self.rest.get(i + 1)? {
                    0xFF => out.push(0),
                    1 => {
                        self.rest = &self.rest[i + 2..];
                        return String::from_utf8(out).ok();
                    }
                    _ => return None,
                }
                i += 2;
            } else {
                out.push(b);
                i += 1;
            }
        }
    }

    pub fn u64(&mut self) -> Option<u64> {
        let (bytes, rest) = self.rest.split_first_chunk::<8>()?;
        self.rest = rest;
        Some(u64::from_be_bytes(*bytes))
    }

    pub fn i64(&mut self) -> Option<i64> {
        self.u64().map(|n| (n ^ (1 << 63)) as i64)
    }

    pub fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(b)
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tuple() -> impl Strategy<Value = (String, u64, String)> {
        (".{0,6}", any::<u64>(), "[a\u{0}b]{0,4}")
    }

    fn encode((a, n, b): &(String, u64, String)) -> Vec<u8> {
        Key::new().str(a).u64(*n).str(b).into_bytes()
    }

    proptest! {
        #[test]
        fn byte_order_is_tuple_order(x in tuple(), y in tuple()) {
            let bytes = encode(&x).cmp(&encode(&y));
            let tuples = (x.0.as_bytes(), x.1, x.2.as_bytes()).cmp(&(y.0.as_bytes(), y.1, y.2.as_bytes()));
            prop_assert_eq!(bytes, tuples);
        }

        #[test]
        fn signed_numbers_order_and_read_back(a in any::<i64>(), b in any::<i64>()) {
            let (x, y) = (Key::new().i64(a), Key::new().i64(b));
            prop_assert_eq!(x.cmp(&y), a.cmp(&b));
            prop_assert_eq!(Reader::new(x.as_bytes()).i64(), Some(a));
        }

        #[test]
        fn every_component_reads_back(x in tuple()) {
            let bytes = encode(&x);
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(r.str(), Some(x.0.clone()));
            prop_assert_eq!(r.u64(), Some(x.1));
            prop_assert_eq!(r.str(), Some(x.2.clone()));
            prop_assert!(r.is_empty());
        }

        #[test]
        fn a_prefix_range_holds_exactly_the_keys_that_start_with_it(org in "[a\u{0}\u{ff}]{0,3}", other in "[a\u{0}\u{ff}]{0,3}", id in ".{0,4}") {
            let prefix = Key::new().str(&org);
            let key = Key::new().str(&other).str(&id).into_bytes();
            let inside = key.as_slice() >= prefix.as_bytes() && key < prefix.prefix_end();
            prop_assert_eq!(inside, org == other);
        }
    }
}
