//! [`JsonObject`]: a JSON object a client sent (an event's payload, an
//! attempt's response body), held as its canonical text with every number
//! exactly as sent. It is never turned into a tree of values: written into an
//! event, a response or a model as the text it is.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use super::text::{TextError, from_text};

/// A JSON object in canonical form (see [`crate::canonical`]).
#[derive(Clone)]
pub struct JsonObject(Box<RawValue>);

/// Why a text is not a JSON object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    #[error(transparent)]
    Text(#[from] TextError),
    /// Valid JSON of another kind: `"an array"`, `"a string"`, ...
    #[error("must be an object, not {0}")]
    NotAnObject(&'static str),
}

impl JsonObject {
    /// The object `text` holds, in canonical form; anything else is refused.
    pub fn parse(text: &str) -> Result<JsonObject, ObjectError> {
        let canonical = from_text(text)?;
        match kind(&canonical) {
            "an object" => {}
            other => return Err(ObjectError::NotAnObject(other)),
        }
        // Canonical text is JSON; `RawValue` checks it again, cheaply, rather
        // than take it on trust.
        RawValue::from_string(canonical)
            .map(JsonObject)
            .map_err(|_| ObjectError::NotAnObject("JSON"))
    }

    /// `{}`.
    pub fn empty() -> JsonObject {
        JsonObject::parse("{}").unwrap_or_else(|_| unreachable!("{{}} is an object"))
    }

    /// The object of a JSON value, if it is one: for tests and tools that
    /// build payloads as values.
    pub fn from_value(value: &serde_json::Value) -> Option<JsonObject> {
        JsonObject::parse(&serde_json::to_string(value).ok()?).ok()
    }

    /// The canonical text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    pub fn as_raw(&self) -> &RawValue {
        &self.0
    }
}

/// What a JSON text holds, for a message: `"an object"`, `"a number"`, ...
pub fn kind(text: &str) -> &'static str {
    match text.trim_start().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(b'-' | b'0'..=b'9') => "a number",
        _ => "not JSON",
    }
}

impl PartialEq for JsonObject {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for JsonObject {}

impl fmt::Debug for JsonObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JsonObject").field(&self.get()).finish()
    }
}

impl Serialize for JsonObject {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// Stored data is read as it was stored and hashed, not made canonical
/// again: the hash covers those bytes. It must still be an object.
impl<'de> Deserialize<'de> for JsonObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        match kind(raw.get()) {
            "an object" => Ok(JsonObject(raw)),
            other => Err(serde::de::Error::custom(format!(
                "must be a JSON object, not {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_objects_are_objects() {
        assert_eq!(
            JsonObject::parse(r#" { "b": 1e400, "a": -0 } "#)
                .unwrap()
                .get(),
            r#"{"a":-0,"b":1e400}"#
        );
        for (text, kind) in [("[]", "an array"), ("\"x\"", "a string"), ("1", "a number")] {
            assert_eq!(
                JsonObject::parse(text).unwrap_err(),
                ObjectError::NotAnObject(kind)
            );
        }
        assert!(matches!(
            JsonObject::parse("{\"a\":1,\"a\":2}"),
            Err(ObjectError::Text(_))
        ));
    }

    #[test]
    fn an_object_round_trips_through_serde_json_as_its_text() {
        let object = JsonObject::parse(r#"{"n":18446744073709551616}"#).unwrap();
        let written = serde_json::to_string(&object).unwrap();
        assert_eq!(written, r#"{"n":18446744073709551616}"#);
        let read: JsonObject = serde_json::from_str(&written).unwrap();
        assert_eq!(read, object);
        assert!(serde_json::from_str::<JsonObject>("[1]").is_err());
    }
}
