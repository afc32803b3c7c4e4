//! Reading client input field by field: request-body DTOs hold each field as a
//! [`Field`] (absent, or whatever JSON was sent, `null` included), and their
//! `TryFrom` impls turn them into domain values with the helpers here, collecting
//! every field's error so one 400 names them all.
//!
//! Nothing here trusts a type: a wrong type is an error message, never a panic.

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::error::{ApiError, FieldError};

/// One body field as sent: absent, or present with any JSON value (even `null`).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Field {
    #[default]
    Absent,
    Present(Value),
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(Field::Present)
    }
}

impl Field {
    /// The value, or "is required" when absent. `null` is returned as sent.
    pub fn required(&self, name: &str) -> Result<&Value, FieldError> {
        match self {
            Field::Absent => Err(FieldError::new(name, "is required")),
            Field::Present(v) => Ok(v),
        }
    }

    /// The value if present, `null` included.
    pub fn optional(&self) -> Option<&Value> {
        match self {
            Field::Absent => None,
            Field::Present(v) => Some(v),
        }
    }

    /// The value unless absent or `null`.
    pub fn nullable(&self) -> Option<&Value> {
        self.optional().filter(|v| !v.is_null())
    }

    /// The value if present; `null` is refused ("absent means unchanged", as in PATCH).
    pub fn not_null(&self, name: &str) -> Result<Option<&Value>, FieldError> {
        match self.optional() {
            Some(Value::Null) => Err(FieldError::new(name, "must not be null")),
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

/// The JSON type name a message can mention.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A string of `1..=max` characters (Unicode scalar values, as JSON Schema counts).
pub fn text(name: &str, value: &Value, max: usize) -> Result<String, FieldError> {
    let Value::String(s) = value else {
        return Err(FieldError::new(
            name,
            format!("must be a string, not {}", type_name(value)),
        ));
    };
    let chars = s.chars().count();
    if chars == 0 {
        return Err(FieldError::new(name, "must not be empty"));
    }
    if chars > max {
        return Err(FieldError::new(
            name,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(s.clone())
}

pub fn boolean(name: &str, value: &Value) -> Result<bool, FieldError> {
    value.as_bool().ok_or_else(|| {
        FieldError::new(name, format!("must be a boolean, not {}", type_name(value)))
    })
}

/// A JSON object (not an array, string, number or null).
pub fn object(name: &str, value: &Value) -> Result<Map<String, Value>, FieldError> {
    match value {
        Value::Object(map) => Ok(map.clone()),
        other => Err(FieldError::new(
            name,
            format!("must be an object, not {}", type_name(other)),
        )),
    }
}

/// A number that is mathematically an integer (`200` and `200.0` alike, as JSON
/// Schema's `integer` type has it), within `i64`.
pub fn integer(name: &str, value: &Value) -> Result<i64, FieldError> {
    let not_integer = || {
        FieldError::new(
            name,
            format!("must be an integer, not {}", type_name(value)),
        )
    };
    let Value::Number(n) = value else {
        return Err(not_integer());
    };
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    match n.as_f64() {
        Some(f) if f.is_finite() && f.fract() == 0.0 => {
            // Saturates far outside i64, which every range check then refuses.
            Ok(f as i64)
        }
        _ => Err(FieldError::new(name, "must be an integer")),
    }
}

/// An array of strings, each `1..=max` characters.
pub fn string_list(name: &str, value: &Value, max: usize) -> Result<Vec<String>, FieldError> {
    let Value::Array(items) = value else {
        return Err(FieldError::new(
            name,
            format!("must be an array of strings, not {}", type_name(value)),
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| text(&format!("{name}[{i}]"), item, max))
        .collect()
}

/// An absolute `http` or `https` URL of at most `max` characters, and a URI
/// as RFC 3986 has it (the API document's `format: uri`), as sent: ASCII
/// only, anything else percent-encoded, so no control character (NUL, CR,
/// LF, tab) and no white space, which a URL parser would quietly strip or
/// encode while the sender's text, the one stored, kept them.
pub fn http_url(name: &str, value: &Value, max: usize) -> Result<String, FieldError> {
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
    use serde_json::json;

    #[test]
    fn integers_include_integral_floats_only() {
        assert_eq!(integer("n", &json!(200)).unwrap(), 200);
        assert_eq!(integer("n", &json!(200.0)).unwrap(), 200);
        assert!(integer("n", &json!(200.5)).is_err());
        assert!(integer("n", &json!("200")).is_err());
        assert!(integer("n", &json!(null)).is_err());
    }

    #[test]
    fn text_counts_characters_not_bytes() {
        assert!(text("t", &json!("é".repeat(256)), 256).is_ok());
        assert!(text("t", &json!("é".repeat(257)), 256).is_err());
        assert!(text("t", &json!(""), 256).is_err());
    }

    #[test]
    fn urls_must_be_absolute_http() {
        assert!(http_url("u", &json!("https://example.com/hook"), 2048).is_ok());
        assert!(http_url("u", &json!("ftp://example.com"), 2048).is_err());
        assert!(http_url("u", &json!("/relative"), 2048).is_err());
        assert!(http_url("u", &json!("mailto:a@b.c"), 2048).is_err());
        for bad in [
            "https://a.example/\u{0}",
            "https://a.example/x\r\nHost: evil",
            "https://a.example/\tx",
            " https://a.example/",
            "https://a.example/a b",
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
            assert!(http_url("u", &json!(bad), 2048).is_err(), "{bad:?}");
        }
        for good in [
            "https://xn--bcher-kva.example/%C3%A4?q=%20#top",
            "http://[::1]:8080/hook",
            "https://user@a.example/a;b=c/(d)*+,!$&'~",
        ] {
            assert!(http_url("u", &json!(good), 2048).is_ok(), "{good:?}");
        }
    }
}
