//! Canonical JSON: the one byte form in which event data and metadata are stored
//! and hashed, so an auditor's tool can recompute every hash from an export.
//!
//! Object keys are sorted by the bytes of their UTF-8 form at every depth; there is
//! no insignificant whitespace; strings are written as `serde_json` writes them.
//! Numbers the ledger writes itself are written as `serde_json` writes them;
//! numbers a client sent (in a payload or a response body) are kept exactly as
//! sent, read by [`from_text`] and held in a [`JsonObject`]. The order is imposed
//! here, not left to a `serde_json` feature flag.

use serde_json::Value;

mod object;
mod text;

pub use object::{JsonObject, ObjectError, kind};
pub use text::{MAX_DEPTH, Reason, TextError, from_text};

/// The canonical bytes of a JSON value. Numbers are written as `serde_json`
/// writes them; text a client sent goes through [`from_text`], which keeps
/// them as written.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    write(&mut out, value);
    out
}

fn write(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(out, key);
                out.push(b':');
                write(out, item);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(out, item);
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar).expect("writing to a Vec cannot fail"),
    }
}

/// Writes `text` as a JSON string literal.
pub fn write_string(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(&mut *out, text).expect("writing to a Vec cannot fail");
}

/// [`to_vec`] as a string: canonical JSON is always UTF-8.
pub fn to_string(value: &Value) -> String {
    String::from_utf8(to_vec(value)).expect("canonical JSON is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_sorted_at_every_depth_and_whitespace_dropped() {
        let value = json!({"b": 1, "a": {"z": [3, {"y": null, "x": true}], "c": "é\n"}});
        assert_eq!(
            String::from_utf8(to_vec(&value)).unwrap(),
            r#"{"a":{"c":"é\n","z":[3,{"x":true,"y":null}]},"b":1}"#
        );
    }

    #[test]
    fn canonical_bytes_parse_back_to_the_same_value() {
        let value = json!({"n": -1.5e300, "big": 18446744073709551615u64, "s": "\u{1F600}\"\\"});
        let bytes = to_vec(&value);
        assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), value);
        assert_eq!(
            to_vec(&serde_json::from_slice::<Value>(&bytes).unwrap()),
            bytes
        );
    }
}
