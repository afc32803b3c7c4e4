//! Reading client input field by field: request-body DTOs hold each field as a
//! [`Field`] (absent, or the JSON text that was sent, `null` included), and
//! their conversions turn them into domain values with the helpers here,
//! collecting every field's error so one 400 names them all.
//!
//! A field is kept as its text, never as a tree of values: a number is judged
//! by what was written (`199.99999999999999999999` is not an integer, however
//! close a float comes), a free-form object stays the text the sender wrote,
//! and a list is counted against its limit before anything is kept of it.
//! Nothing here trusts a type: a wrong one is an error message, never a panic.

use projections::JsonObject;
use projections::canonical::ObjectError;
use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::error::{ApiError, FieldError};

/// One body field as sent: absent, or present with any JSON text (even `null`).
#[derive(Debug, Clone, Default)]
pub enum Field {
    #[default]
    Absent,
    Present(Box<RawValue>),
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(Field::Present)
    }
}

impl Field {
    /// The value, or "is required" when absent. `null` is returned as sent.
    pub fn required(&self, name: &str) -> Result<&RawValue, FieldError> {
        match self {
            Field::Absent => Err(FieldError::new(name, "is required")),
            Field::Present(v) => Ok(v),
        }
    }

    /// The value if present, `null` included.
    pub fn optional(&self) -> Option<&RawValue> {
        match self {
            Field::Absent => None,
            Field::Present(v) => Some(v),
        }
    }

    /// The value unless absent or `null`.
    pub fn nullable(&self) -> Option<&RawValue> {
        self.optional().filter(|v| v.get() != "null")
    }

    /// The value if present; `null` is refused ("absent means unchanged", as in PATCH).
    pub fn not_null(&self, name: &str) -> Result<Option<&RawValue>, FieldError> {
        match self.optional() {
            Some(v) if v.get() == "null" => Err(FieldError::new(name, "must not be null")),
            other => Ok(other),
        }
    }
}

/// Collects field errors while a DTO is converted.
#[derive(Debug, Default)]
pub struct Errors(Vec<FieldError>);

impl Errors {
    /// Keeps the value, or records the error and gives `None`.
    pub fn take<T>(&mut self, result: Result<T, FieldError>) -> Option<T> {
        result.map_err(|e| self.0.push(e)).ok()
    }

    pub fn push(&mut self, error: FieldError) {
        self.0.push(error);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_vec(self) -> Vec<FieldError> {
        self.0
    }

    /// `Err(ApiError::Invalid)` when any error was recorded.
    pub fn check(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Invalid(self.0))
        }
    }
}

/// What a JSON text holds, for a message: `"a string"`, `"an object"`, ...
pub fn type_name(value: &RawValue) -> &'static str {
    projections::canonical::kind(value.get())
}

/// A limit a field is held to, for the message that names it.
#[derive(Debug, Clone, Copy)]
pub struct Max {
    pub value: usize,
    /// The limit's `serve` flag, without `--`.
    pub limit: &'static str,
}

impl Max {
    pub fn new(value: usize, limit: &'static str) -> Self {
        Max { value, limit }
    }
}

/// A string of `1..=max` characters (Unicode scalar values, as JSON Schema counts).
pub fn text(name: &str, value: &RawValue, max: Max) -> Result<String, FieldError> {
    if type_name(value) != "a string" {
        return Err(FieldError::new(
            name,
            format!("must be a string, not {}", type_name(value)),
        ));
    }
    let s: String = serde_json::from_str(value.get())
        .map_err(|e| FieldError::new(name, format!("is not a valid string: {e}")))?;
    let chars = s.chars().count();
    if chars == 0 {
        return Err(FieldError::new(name, "must not be empty"));
    }
    if chars > max.value {
        return Err(FieldError::new(
            name,
            format!(
                "must be at most {} characters, not {chars} (limit {})",
                max.value, max.limit
            ),
        ));
    }
    Ok(s)
}

/// [`text`] for names and event types: labels, which take no control characters.
pub fn label(name: &str, value: &RawValue, max: Max) -> Result<String, FieldError> {
    let text = text(name, value, max)?;
    if text.chars().any(char::is_control) {
        return Err(FieldError::new(name, "must not contain control characters"));
    }
    Ok(text)
}

pub fn boolean(name: &str, value: &RawValue) -> Result<bool, FieldError> {
    match value.get() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(FieldError::new(
            name,
            format!("must be a boolean, not {}", type_name(value)),
        )),
    }
}

/// A JSON object (not an array, string, number or null), kept as sent.
pub fn object(name: &str, value: &RawValue) -> Result<JsonObject, FieldError> {
    JsonObject::parse(value.get()).map_err(|e| match e {
        ObjectError::NotAnObject(kind) => {
            FieldError::new(name, format!("must be an object, not {kind}"))
        }
        ObjectError::Text(e) => FieldError::new(name, e.to_string()),
    })
}

/// A number that is exactly an integer (`200`, `200.0` and `2e2` alike, as
/// JSON Schema's `integer` has it; `199.99999999999999999999` is not), clamped
/// to `i64`, whose ends every range check refuses.
pub fn integer(name: &str, value: &RawValue) -> Result<i64, FieldError> {
    if type_name(value) != "a number" {
        return Err(FieldError::new(
            name,
            format!("must be an integer, not {}", type_name(value)),
        ));
    }
    exact_integer(value.get())
        .ok_or_else(|| FieldError::new(name, "must be an integer, not a number with a fraction"))
}

/// The integer the JSON number `text` denotes, exactly; `None` if it has a
/// fractional part. Beyond `i64` it is clamped.
fn exact_integer(text: &str) -> Option<i64> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, e),
        None => (unsigned, "0"),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    // Far past what an i64 holds; clamped so the sums below cannot overflow.
    const FAR: i64 = 1 << 40;
    let exponent = {
        let (sign, digits) = match exponent.as_bytes().first() {
            Some(b'-') => (-1, &exponent[1..]),
            Some(b'+') => (1, &exponent[1..]),
            _ => (1, exponent),
        };
        let magnitude = digits.bytes().try_fold(0i64, |n, d| {
            d.is_ascii_digit()
                .then(|| (n * 10 + i64::from(d - b'0')).min(FAR))
        })?;
        sign * magnitude
    };
    // The value is `digits` × 10^`scale`.
    let digits: Vec<u8> = whole.bytes().chain(fraction.bytes()).collect();
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let first = digits.iter().position(|d| *d != b'0');
    let Some(first) = first else {
        return Some(0);
    };
    let last = digits.iter().rposition(|d| *d != b'0').unwrap_or(first);
    let trailing_zeros = (digits.len() - 1 - last) as i64;
    let scale = exponent - fraction.len() as i64 + trailing_zeros;
    if scale < 0 {
        // The last significant digit lies after the decimal point.
        return None;
    }
    let significant = &digits[first..=last];
    let clamped = if negative { i64::MIN } else { i64::MAX };
    if significant.len() as i64 + scale > 19 {
        return Some(clamped);
    }
    let mut value: i128 = 0;
    for d in significant {
        value = value * 10 + i128::from(d - b'0');
    }
    for _ in 0..scale {
        value *= 10;
    }
    if negative {
        value = -value;
    }
    Some(i64::try_from(value).unwrap_or(clamped))
}

/// An array of at most `max_items` labels, each `1..=max` characters. A longer
/// array is refused as soon as the item past the limit is reached, before
/// any of it is kept.
pub fn label_list(
    name: &str,
    value: &RawValue,
    max: Max,
    max_items: Max,
) -> Result<Vec<String>, FieldError> {
    if type_name(value) != "an array" {
        return Err(FieldError::new(
            name,
            format!("must be an array of strings, not {}", type_name(value)),
        ));
    }
    let too_many = || {
        FieldError::new(
            name,
            format!(
                "must have at most {} items (limit {})",
                max_items.value, max_items.limit
            ),
        )
    };
    let mut reader = serde_json::Deserializer::from_str(value.get());
    let items = AtMost(max_items.value)
        .deserialize(&mut reader)
        .map_err(|_| too_many())?
        .ok_or_else(too_many)?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| label(&format!("{name}[{i}]"), item, max))
        .collect()
}

/// The items of a JSON array as their texts, or `None` past `.0` of them.
struct AtMost(usize);

impl<'de> DeserializeSeed<'de> for AtMost {
    type Value = Option<Vec<&'de RawValue>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for AtMost {
    type Value = Option<Vec<&'de RawValue>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            if items.len() == self.0 {
                return Ok(None);
            }
            items.push(item);
        }
        Ok(Some(items))
    }
}

/// An absolute `http` or `https` URL of at most `max` characters, and a URI
/// as RFC 3986 has it (the API document's `format: uri`), as sent: ASCII
/// only, anything else percent-encoded, so no control character (NUL, CR,
/// LF, tab) and no white space, which a URL parser would quietly strip or
/// encode while the sender's text, the one stored, kept them.
pub fn http_url(name: &str, value: &RawValue, max: Max) -> Result<String, FieldError> {
    let text = text(name, value, max)?;
    if let Err(problem) = rfc3986_characters(&text) {
        return Err(FieldError::new(
            name,
            format!("must be an absolute http or https URL: {problem}"),
        ));
    }
    let parsed = url::Url::parse(&text).map_err(|e| {
        FieldError::new(name, format!("must be an absolute http or https URL ({e})"))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(FieldError::new(
            name,
            "must be an absolute http or https URL",
        ));
    }
    Ok(text)
}

/// Whether `uri` uses only the characters RFC 3986 allows where it uses
/// them: unreserved and reserved ASCII, `%` with two hex digits, and `[`
/// `]` only around an IPv6 host.
fn rfc3986_characters(uri: &str) -> Result<(), String> {
    let authority_end = uri
        .find("://")
        .map(|start| {
            let from = start + 3;
            from + uri[from..]
                .find(['/', '?', '#'])
                .unwrap_or(uri.len() - from)
        })
        .unwrap_or(0);
    let bytes = uri.as_bytes();
    for (i, c) in uri.char_indices() {
        let allowed = match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' => true,
            '-' | '.' | '_' | '~' | ':' | '/' | '?' | '#' | '@' | '!' | '$' | '&' | '\'' => true,
            '(' | ')' | '*' | '+' | ',' | ';' | '=' => true,
            '[' | ']' => i < authority_end,
            '%' => {
                let hex = |k: usize| bytes.get(i + k).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(1) && hex(2)) {
                    return Err("a % must start a percent-encoded byte like %20".into());
                }
                true
            }
            _ => false,
        };
        if !allowed {
            let what = if c.is_control() {
                "a control character".to_owned()
            } else if c.is_whitespace() {
                "white space".to_owned()
            } else {
                format!("{c:?}")
            };
            return Err(format!(
                "{what} (U+{:04X}) must be percent-encoded",
                u32::from(c)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    const MAX: Max = Max {
        value: 256,
        limit: "max-test",
    };

    #[test]
    fn integers_are_exact_whatever_their_notation() {
        for (text, expected) in [
            ("200", Some(200)),
            ("200.0", Some(200)),
            ("2e2", Some(200)),
            ("2000e-1", Some(200)),
            ("-0", Some(0)),
            ("0.000", Some(0)),
            ("-17", Some(-17)),
            ("199.99999999999999999999", None),
            ("200.5", None),
            ("1e-400", None),
            ("5E-1", None),
            ("1e400", Some(i64::MAX)),
            ("-1e400", Some(i64::MIN)),
            ("123456789012345678901234567890", Some(i64::MAX)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", Some(i64::MAX)),
            ("1e99999999999999999999999", Some(i64::MAX)),
            ("1e-99999999999999999999999", None),
        ] {
            assert_eq!(exact_integer(text), expected, "{text}");
        }
        assert!(integer("n", &raw("\"200\"")).is_err());
        assert!(integer("n", &raw("null")).is_err());
    }

    #[test]
    fn text_counts_characters_not_bytes() {
        assert!(text("t", &raw(&format!("\"{}\"", "é".repeat(256))), MAX).is_ok());
        let e = text("t", &raw(&format!("\"{}\"", "é".repeat(257))), MAX).unwrap_err();
        assert!(e.message.contains("limit max-test"), "{}", e.message);
        assert!(text("t", &raw("\"\""), MAX).is_err());
    }

    #[test]
    fn labels_take_no_control_characters() {
        assert!(label("t", &raw(r#""order.paid""#), MAX).is_ok());
        assert!(label("t", &raw(r#""a\u0000b""#), MAX).is_err());
        assert!(label("t", &raw(r#""a\nb""#), MAX).is_err());
    }

    #[test]
    fn a_list_past_its_limit_is_refused_naming_the_limit() {
        let three = raw(r#"["a","b","c"]"#);
        assert_eq!(
            label_list("eventTypes", &three, MAX, Max::new(3, "max-items")).unwrap(),
            ["a", "b", "c"]
        );
        let e = label_list("eventTypes", &three, MAX, Max::new(2, "max-items")).unwrap_err();
        assert_eq!(e.field, "eventTypes");
        assert!(e.message.contains("max-items"), "{}", e.message);
        let e = label_list("eventTypes", &raw(r#"["a",7]"#), MAX, MAX).unwrap_err();
        assert_eq!(e.field, "eventTypes[1]");
    }

    #[test]
    fn urls_must_be_absolute_http_in_uri_characters() {
        let url = |text: &str| http_url("u", &raw(&serde_json::to_string(text).unwrap()), MAX);
        assert!(url("https://example.com/hook?a=1&b=%20").is_ok());
        for bad in [
            "ftp://example.com",
            "/relative",
            "mailto:a@b.c",
            "https://example.com/a b",
            "https://example.com/\u{0}",
            "https://example.com/\r\nX: y",
            "https://example.com/\t",
            "https://example.com/é",
            "https://example.com/\"",
            " https://a.example/",
            "https://a.example/\u{7f}",
            "https://a.example/\u{85}",
            "https://a.example/\u{2028}",
            "https://a.example/\u{3000}",
            "https://bücher.example/",
            "https://a.example/[x]",
            "https://a.example/^",
            "https://a.example/%zz",
            "https://a.example/%2",
        ] {
            assert!(url(bad).is_err(), "{bad:?}");
        }
        for good in [
            "https://xn--bcher-kva.example/%C3%A4?q=%20#top",
            "http://[::1]:8080/hook",
            "https://user@a.example/a;b=c/(d)*+,!$&'~",
        ] {
            assert!(url(good).is_ok(), "{good:?}");
        }
    }
}
