//! Fast paths for the two decodings a replay does millions of times: an
//! `AttemptRecorded` and its metadata, as the folds need them. They read only
//! the exact canonical form this build writes (keys sorted, no whitespace, no
//! escapes in strings) and give up on anything else, which then goes through
//! `serde_json` as before; so they never accept what `serde_json` would refuse,
//! and what they accept decodes to the same value. The tests hold them to that.

use crate::event::AttemptRecorded;
use crate::values::{AttemptStatus, HttpStatusCode, NonEmptyString, RetryAt};

/// A reading position in a document whose UTF-8 was checked once, whole, so
/// that the strings sliced out of it need no check of their own.
struct Cursor<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(data: &'a [u8]) -> Option<Cursor<'a>> {
        let text = std::str::from_utf8(data).ok()?;
        Some(Cursor {
            text,
            bytes: data,
            at: 0,
        })
    }

    /// The bytes `expected` next. Of a fixed length, so that the comparison
    /// compiles to a few loads rather than a call to `memcmp`.
    fn literal<const N: usize>(&mut self, expected: &[u8; N]) -> Option<()> {
        let end = self.at + N;
        let next: &[u8; N] = self.bytes.get(self.at..end)?.try_into().ok()?;
        (next == expected).then(|| self.at = end)
    }

    fn literal_slice(&mut self, expected: &[u8]) -> Option<()> {
        let end = self.at + expected.len();
        (self.bytes.get(self.at..end)? == expected).then(|| self.at = end)
    }

    /// A string without escapes or control characters.
    fn string(&mut self) -> Option<&'a str> {
        self.literal(b"\"")?;
        let start = self.at;
        let len = string_len(&self.bytes[start..])?;
        self.at = start + len;
        self.literal(b"\"")?;
        // Both ends are next to a quote, so on character boundaries.
        self.text.get(start..start + len)
    }

    fn null(&mut self) -> bool {
        self.literal(b"null").is_some()
    }

    fn nullable_string(&mut self) -> Option<Option<&'a str>> {
        if self.null() {
            Some(None)
        } else {
            self.string().map(Some)
        }
    }

    /// A JSON value of any kind, checked by `serde_json`, skipped.
    fn value(&mut self) -> Option<()> {
        let start = self.at;
        let mut depth = 0usize;
        loop {
            match *self.bytes.get(self.at)? {
                b'"' => {
                    self.at += 1;
                    loop {
                        match *self.bytes.get(self.at)? {
                            b'\\' => self.at += 2,
                            b'"' => break,
                            _ => self.at += 1,
                        }
                    }
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' if depth > 0 => depth -= 1,
                b',' | b'}' | b']' if depth == 0 => break,
                _ => {}
            }
            self.at += 1;
            if depth == 0 && matches!(self.bytes.get(self.at), Some(b',' | b'}' | b']')) {
                break;
            }
        }
        // As the serde path reads it: valid JSON, and valid UTF-8 throughout
        // (`IgnoredAny` would skip over bad UTF-8 inside a string).
        let slice = &self.bytes[start..self.at];
        serde_json::from_slice::<&serde_json::value::RawValue>(slice).ok()?;
        Some(())
    }

    fn end(&mut self) -> Option<()> {
        (self.at == self.bytes.len()).then_some(())
    }
}

/// How many bytes of `bytes` come before the first `"`, `\\` or control
/// character, if there is one. Eight bytes at a time: this scan is most of
/// what decoding an attempt's ids costs.
pub(crate) fn string_len(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let special = |b: u8| b == b'"' || b == b'\\' || b < 0x20;
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in chunks.by_ref() {
        let word = u64::from_le_bytes(chunk.try_into().ok()?);
        // A byte's high bit is set where it is zero, in `word ^ c` (equal to
        // c) or in `word` itself (below 0x20). Borrows can flag bytes after
        // the first match, never before it, so the lowest flag is exact.
        let zero = |v: u64| v.wrapping_sub(ONES) & !v;
        let quote = zero(word ^ (ONES * u64::from(b'"')));
        let backslash = zero(word ^ (ONES * u64::from(b'\\')));
        let control = word.wrapping_sub(ONES * 0x20) & !word;
        let found = (quote | backslash | control) & HIGH;
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| special(b))
        .map(|i| at + i)
}

/// The fields of an attempt in its canonical form, borrowed, its response
/// body checked as JSON and skipped.
struct AttemptFields<'a> {
    delivery_id: &'a str,
    event_id: &'a str,
    organization_id: &'a str,
    status: AttemptStatus,
    response_status_code: Option<HttpStatusCode>,
    last_error: Option<&'a str>,
    next_retry_at: Option<&'a str>,
}

/// The fields of an attempt at `schema_version` 1 (the response body inline)
/// or 2 (its salted digest).
fn attempt_fields(data: &[u8], schema_version: u32) -> Option<AttemptFields<'_>> {
    let mut c = Cursor::new(data)?;
    c.literal(b"{\"deliveryId\":")?;
    let delivery_id = c.string()?;
    c.literal(b",\"eventId\":")?;
    let event_id = c.string()?;
    c.literal(b",\"lastError\":")?;
    let last_error = c.nullable_string()?;
    c.literal(b",\"nextRetryAt\":")?;
    let next_retry_at = c.nullable_string()?;
    c.literal(b",\"organizationId\":")?;
    let organization_id = c.string()?;
    match schema_version {
        1 => {
            c.literal(b",\"responseBody\":")?;
            if !c.null() {
                c.value()?;
            }
        }
        2 => {
            c.literal(b",\"responseBodyDigest\":")?;
            // A digest is 64 lowercase hex digits, as the serde path checks.
            if let Some(digest) = c.nullable_string()?
                && !crate::body::is_digest(digest)
            {
                return None;
            }
        }
        _ => return None,
    }
    c.literal(b",\"responseStatusCode\":")?;
    let response_status_code = if c.null() {
        None
    } else {
        let start = c.at;
        let len = data[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        // Plain digits only, no leading zero: anything else is serde's to judge.
        if len == 0 || len > 3 || (len > 1 && data[start] == b'0') {
            return None;
        }
        c.at += len;
        let code: i64 = std::str::from_utf8(&data[start..start + len])
            .ok()?
            .parse()
            .ok()?;
        Some(HttpStatusCode::parse(code)?)
    };
    c.literal(b",\"status\":")?;
    let status = AttemptStatus::parse(c.string()?)?;
    c.literal(b"}")?;
    c.end()?;
    Some(AttemptFields {
        delivery_id,
        event_id,
        organization_id,
        status,
        response_status_code,
        last_error,
        next_retry_at,
    })
}

/// A nullable field parsed: `None` if the text is there but does not parse.
fn nullable<'a, T>(
    text: Option<&'a str>,
    parse: impl Fn(&'a str) -> Option<T>,
) -> Option<Option<T>> {
    match text {
        None => Some(None),
        Some(text) => parse(text).map(Some),
    }
}

/// An attempt in its canonical form, without its response body (checked as
/// JSON, then dropped, as the fold decoding does).
pub fn attempt_for_fold(data: &[u8], schema_version: u32) -> Option<AttemptRecorded> {
    let f = attempt_fields(data, schema_version)?;
    Some(AttemptRecorded {
        delivery_id: f.delivery_id.to_owned(),
        event_id: f.event_id.to_owned(),
        organization_id: f.organization_id.to_owned(),
        status: f.status,
        response_status_code: f.response_status_code,
        response_body: None,
        last_error: nullable(f.last_error, NonEmptyString::parse)?,
        next_retry_at: nullable(f.next_retry_at, RetryAt::parse)?,
    })
}

/// [`attempt_for_fold`] into `slot`, reusing its strings' memory, and its
/// error and retry time as they are when the attempt repeats them (both were
/// checked when they were decoded). On `None`, `slot` is as it was.
pub fn attempt_for_fold_into(
    data: &[u8],
    schema_version: u32,
    slot: &mut AttemptRecorded,
) -> Option<()> {
    let f = attempt_fields(data, schema_version)?;
    let last_error = match f.last_error {
        Some(text) if slot.last_error.as_ref().is_some_and(|e| e.as_str() == text) => None,
        other => Some(nullable(other, NonEmptyString::parse)?),
    };
    let next_retry_at = match f.next_retry_at {
        Some(text)
            if slot
                .next_retry_at
                .as_ref()
                .is_some_and(|r| r.as_str() == text) =>
        {
            None
        }
        other => Some(nullable(other, RetryAt::parse)?),
    };
    f.delivery_id.clone_into(&mut slot.delivery_id);
    f.event_id.clone_into(&mut slot.event_id);
    f.organization_id.clone_into(&mut slot.organization_id);
    slot.status = f.status;
    slot.response_status_code = f.response_status_code;
    slot.response_body = None;
    if let Some(last_error) = last_error {
        slot.last_error = last_error;
    }
    if let Some(next_retry_at) = next_retry_at {
        slot.next_retry_at = next_retry_at;
    }
    Some(())
}

/// Metadata in its canonical form with no idempotency record: the folds keep
/// nothing of it.
pub fn metadata_without_idempotency(data: &[u8]) -> Option<()> {
    let mut c = Cursor::new(data)?;
    c.literal(b"{")?;
    let mut first = true;
    for key in [&b"\"keyId\":"[..], &b"\"requestId\":"[..]] {
        let mut probe = Cursor {
            text: c.text,
            bytes: data,
            at: c.at,
        };
        if !first && probe.literal(b",").is_none() {
            continue;
        }
        if probe.literal_slice(key).is_some() {
            probe.string()?;
            c.at = probe.at;
            first = false;
        }
    }
    c.literal(b"}")?;
    c.end()
}

#[cfg(test)]
mod tests;
