//! Canonical JSON straight from JSON text as a client sent it, in one pass over
//! its bytes: object keys sorted by their UTF-8 bytes, no insignificant
//! whitespace, strings escaped as `serde_json` escapes them, and numbers kept
//! exactly as written. `18446744073709551616`, `1e-400` and `-0` stay what they
//! are, where a trip through `f64` would change them: a ledger keeps what the
//! sender sent.
//!
//! It is also the strict reader of request bodies. It refuses what RFC 8259
//! refuses (with the byte offset), an object that names a key twice (which of
//! the two would the ledger keep?) and nesting deeper than [`MAX_DEPTH`]; each
//! error names the path to where it is. It never panics, and it keeps no tree:
//! what it holds beside its output is the keys of the objects it is inside.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use crate::canonical::write_string;

/// How deeply arrays and objects may nest, as `serde_json` allows by default.
pub const MAX_DEPTH: usize = 128;

/// Why a text has no canonical form, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextError {
    /// Keys and indexes from the top down to the problem, innermost last.
    path: Vec<Segment>,
    pub reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Not JSON: what was wrong, and the byte offset in the text.
    Syntax { message: String, offset: usize },
    /// The key at the path appears twice in its object.
    DuplicateKey,
    /// Arrays and objects nest deeper than [`MAX_DEPTH`] at the path.
    TooDeep,
}

impl TextError {
    /// The path to the problem, `a.b[2].c`; empty for the text as a whole.
    /// Long keys are shortened: the path is for a message, not for lookup.
    pub fn path(&self) -> String {
        let mut out = String::new();
        for segment in &self.path {
            match segment {
                Segment::Key(key) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    let mut chars = key.chars();
                    out.extend(chars.by_ref().take(64));
                    if chars.next().is_some() {
                        out.push('…');
                    }
                }
                Segment::Index(i) => {
                    out.push('[');
                    out.push_str(&i.to_string());
                    out.push(']');
                }
            }
        }
        out
    }

    /// The same error, found inside `segment` of an enclosing value.
    fn inside(mut self, segment: Segment) -> Self {
        // Segments are gathered innermost first while the reader unwinds.
        self.path.push(segment);
        self
    }

    fn finish(mut self) -> Self {
        self.path.reverse();
        self
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Syntax { message, offset } => {
                write!(f, "is not valid JSON: {message} at byte {offset}")
            }
            Reason::DuplicateKey => f.write_str("appears twice in one object; send each key once"),
            Reason::TooDeep => write!(f, "nests arrays and objects deeper than {MAX_DEPTH} levels"),
        }
    }
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path() {
            path if path.is_empty() => write!(f, "{}", self.reason),
            path => write!(f, "{path}: {}", self.reason),
        }
    }
}

impl std::error::Error for TextError {}

/// The canonical form of the one JSON value in `text` (whitespace around it
/// allowed), or why it has none.
pub fn from_text(text: &str) -> Result<String, TextError> {
    let mut reader = Reader {
        text,
        bytes: text.as_bytes(),
        at: 0,
    };
    let mut out = Vec::with_capacity(text.len());
    let read = reader.whole(&mut out);
    read.map_err(TextError::finish)?;
    // Every piece written is a slice of `text` at character boundaries or a
    // string `serde_json` wrote, so this cannot fail; an error is still
    // better than a panic if it ever did.
    String::from_utf8(out).map_err(|_| reader.syntax("text that is not UTF-8"))
}

struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn whole(&mut self, out: &mut Vec<u8>) -> Result<(), TextError> {
        self.whitespace();
        self.value(out, 0)?;
        self.whitespace();
        if self.at < self.bytes.len() {
            return Err(self.syntax("trailing characters after the value"));
        }
        Ok(())
    }

    fn syntax(&self, message: &str) -> TextError {
        TextError {
            path: Vec::new(),
            reason: Reason::Syntax {
                message: message.to_owned(),
                offset: self.at,
            },
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8, message: &str) -> Result<(), TextError> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.syntax(message))
        }
    }

    /// One value; `depth` counts the arrays and objects around it.
    fn value(&mut self, out: &mut Vec<u8>, depth: usize) -> Result<(), TextError> {
        match self.peek() {
            Some(b'{') => self.object(out, depth + 1),
            Some(b'[') => self.array(out, depth + 1),
            Some(b'"') => {
                let string = self.string()?;
                write_text(out, &string);
                Ok(())
            }
            Some(b'-' | b'0'..=b'9') => self.number(out),
            Some(b't') => self.literal(b"true", out),
            Some(b'f') => self.literal(b"false", out),
            Some(b'n') => self.literal(b"null", out),
            Some(_) => Err(self.syntax("expected a value")),
            None => Err(self.syntax("the text ends where a value should be")),
        }
    }

    fn too_deep(depth: usize) -> Result<(), TextError> {
        if depth > MAX_DEPTH {
            return Err(TextError {
                path: Vec::new(),
                reason: Reason::TooDeep,
            });
        }
        Ok(())
    }

    fn object(&mut self, out: &mut Vec<u8>, depth: usize) -> Result<(), TextError> {
        Self::too_deep(depth)?;
        self.at += 1;
        self.whitespace();
        if self.peek() == Some(b'}') {
            self.at += 1;
            out.extend_from_slice(b"{}");
            return Ok(());
        }
        // Members are written to `values` as they come, then copied out in
        // key order: each byte of a subtree is copied once per level.
        let mut members: Vec<(Cow<'a, str>, Range<usize>)> = Vec::new();
        let mut values = Vec::new();
        loop {
            self.whitespace();
            if self.peek() != Some(b'"') {
                return Err(self.syntax("expected a key in quotes"));
            }
            let key = self.string()?;
            self.whitespace();
            self.expect(b':', "expected ':' after a key")?;
            self.whitespace();
            let start = values.len();
            if let Err(e) = self.value(&mut values, depth) {
                return Err(e.inside(Segment::Key(key.into_owned())));
            }
            members.push((key, start..values.len()));
            self.whitespace();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    break;
                }
                _ => return Err(self.syntax("expected ',' or '}' in an object")),
            }
        }
        members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        if let Some(pair) = members.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(TextError {
                path: vec![Segment::Key(pair[0].0.clone().into_owned())],
                reason: Reason::DuplicateKey,
            });
        }
        out.push(b'{');
        for (i, (key, range)) in members.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_text(out, key);
            out.push(b':');
            out.extend_from_slice(&values[range.clone()]);
        }
        out.push(b'}');
        Ok(())
    }

    fn array(&mut self, out: &mut Vec<u8>, depth: usize) -> Result<(), TextError> {
        Self::too_deep(depth)?;
        self.at += 1;
        self.whitespace();
        out.push(b'[');
        if self.peek() == Some(b']') {
            self.at += 1;
            out.push(b']');
            return Ok(());
        }
        for index in 0.. {
            if index > 0 {
                out.push(b',');
            }
            self.whitespace();
            if let Err(e) = self.value(out, depth) {
                return Err(e.inside(Segment::Index(index)));
            }
            self.whitespace();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    break;
                }
                _ => return Err(self.syntax("expected ',' or ']' in an array")),
            }
        }
        out.push(b']');
        Ok(())
    }

    /// A string token, decoded: borrowed from the text when it has no escapes.
    fn string(&mut self) -> Result<Cow<'a, str>, TextError> {
        let start = self.at;
        self.at += 1;
        let mut escaped = false;
        loop {
            let rest = &self.bytes[self.at..];
            let Some(len) = crate::fast::string_len(rest) else {
                self.at = self.bytes.len();
                return Err(self.syntax("a string is not closed"));
            };
            self.at += len;
            match self.bytes[self.at] {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    // The escaped character is checked by the decoding below;
                    // skipping it here keeps `\"` from ending the string.
                    self.at += 2;
                    if self.at > self.bytes.len() {
                        self.at = self.bytes.len();
                        return Err(self.syntax("a string is not closed"));
                    }
                }
                _ => return Err(self.syntax("a control character inside a string")),
            }
        }
        self.at += 1;
        // Both ends are quotes, so on character boundaries.
        let token = &self.text[start..self.at];
        if !escaped {
            return Ok(Cow::Borrowed(&token[1..token.len() - 1]));
        }
        serde_json::from_str::<String>(token)
            .map(Cow::Owned)
            .map_err(|e| {
                let mut error = self.syntax(&format!("a bad escape in a string ({e})"));
                if let Reason::Syntax { offset, .. } = &mut error.reason {
                    *offset = start;
                }
                error
            })
    }

    /// A number, checked against the JSON grammar and copied as written.
    fn number(&mut self, out: &mut Vec<u8>) -> Result<(), TextError> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.syntax("a number needs a digit")),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.syntax("a number needs a digit after '.'"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.syntax("a number needs a digit in its exponent"));
            }
            self.digits();
        }
        out.extend_from_slice(&self.bytes[start..self.at]);
        Ok(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }

    fn literal(&mut self, word: &[u8], out: &mut Vec<u8>) -> Result<(), TextError> {
        if self.bytes[self.at..].starts_with(word) {
            self.at += word.len();
            out.extend_from_slice(word);
            Ok(())
        } else {
            Err(self.syntax("expected true, false or null"))
        }
    }
}

/// A decoded string as `serde_json` writes it. Text that needs no escaping
/// (the usual case) is copied whole.
fn write_text(out: &mut Vec<u8>, text: &str) {
    if crate::fast::string_len(text.as_bytes()).is_none() {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        write_string(out, text);
    }
}

#[cfg(test)]
#[path = "text_tests.rs"]
mod tests;
