//! The hottest answer, the parent event after a recorded attempt, written as
//! JSON straight into bytes. `serde_json` escapes strings a byte at a time and
//! goes through its serializer state for every field; this answer is mostly ids,
//! names and URLs that need no escaping, so a string is checked in one pass and
//! copied whole, and only one that needs escaping goes through `serde_json`.
//!
//! The output is byte for byte what `serde_json::to_vec` writes for the same
//! view, field order included; the tests hold it to that for arbitrary views.

use crate::values::{RFC3339_LEN, Timestamp};
use crate::view::{DeliverySnapshot, EventSnapshot};

impl EventSnapshot {
    /// The view as compact JSON, as `serde_json::to_vec` would write it.
    pub fn to_json(&self) -> Vec<u8> {
        let payload = self.payload.kept().map_or(0, |p| p.get().len());
        let mut out = Vec::with_capacity(640 + 480 * self.deliveries.len() + payload);
        self.write_json(&mut out);
        out
    }

    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut o = Object::open(out);
        o.key("id").string(&self.id);
        o.key("organizationId").string(&self.organization_id);
        o.key("eventType").string(&self.event_type);
        o.key("sourceKey")
            .nullable_string(self.source_key.as_deref());
        o.key("status").string(self.status.as_str());
        o.key("endpointCount").unsigned(self.endpoint_count);
        match self.payload.kept() {
            Some(payload) => o.key("payload").raw(payload.get()),
            None => o.key("payload").null(),
        }
        if self.payload_erased {
            o.key("payloadErased").raw("true");
        }
        let out = o.key("deliveries").0;
        out.push(b'[');
        for (i, delivery) in self.deliveries.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            delivery.write_json(out);
        }
        out.push(b']');
        o.key("createdAt").timestamp(self.created_at);
        o.key("updatedAt").timestamp(self.updated_at);
        o.close();
    }
}

impl DeliverySnapshot {
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut o = Object::open(out);
        o.key("id").string(&self.id);
        o.key("organizationId").string(&self.organization_id);
        o.key("endpointId").string(&self.endpoint_id);
        o.key("endpointName").string(&self.endpoint_name);
        o.key("endpointUrl").string(&self.endpoint_url);
        o.key("attemptCount").unsigned(self.attempt_count);
        match self.response_status_code {
            Some(code) => o.key("responseStatusCode").unsigned(u64::from(code)),
            None => o.key("responseStatusCode").null(),
        }
        o.key("lastError")
            .nullable_string(self.last_error.as_deref());
        o.key("nextRetryAt").nullable_timestamp(self.next_retry_at);
        o.key("attemptedAt").nullable_timestamp(self.attempted_at);
        o.key("deliveredAt").nullable_timestamp(self.delivered_at);
        o.key("createdAt").timestamp(self.created_at);
        o.key("updatedAt").timestamp(self.updated_at);
        o.key("status").string(self.status.as_str());
        o.close();
    }
}

/// A JSON object being written: keys and their values, commas between.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

/// The place for one value, after its key.
struct Value<'a>(&'a mut Vec<u8>);

impl<'a> Object<'a> {
    fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Object { out, empty: true }
    }

    /// Starts the member `name`, which needs no escaping.
    fn key(&mut self, name: &str) -> Value<'_> {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
        Value(self.out)
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

impl Value<'_> {
    fn string(self, s: &str) {
        string(self.0, s);
    }

    fn nullable_string(self, s: Option<&str>) {
        match s {
            Some(s) => self.string(s),
            None => self.null(),
        }
    }

    fn unsigned(self, n: u64) {
        let mut digits = itoa::Buffer::new();
        self.0.extend_from_slice(digits.format(n).as_bytes());
    }

    fn raw(self, json: &str) {
        self.0.extend_from_slice(json.as_bytes());
    }

    fn null(self) {
        self.0.extend_from_slice(b"null");
    }

    fn timestamp(self, at: Timestamp) {
        let mut buf = [0u8; RFC3339_LEN];
        match at.write_rfc3339(&mut buf) {
            // RFC 3339 text needs no escaping.
            Some(text) => {
                self.0.push(b'"');
                self.0.extend_from_slice(text.as_bytes());
                self.0.push(b'"');
            }
            // Outside the years 0-9999: as the serde path writes it.
            None => string(self.0, &at.to_chrono_rfc3339()),
        }
    }

    fn nullable_timestamp(self, at: Option<Timestamp>) {
        match at {
            Some(at) => self.timestamp(at),
            None => self.null(),
        }
    }
}

/// A JSON string as `serde_json` writes it: quotes, backslashes and control
/// characters escaped, everything else as it is.
fn string(out: &mut Vec<u8>, s: &str) {
    // One pass over the bytes with no early exit, which the compiler vectorises.
    let needs_escape = s.bytes().fold(false, |acc, b| {
        acc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if needs_escape {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::body::Body;
    use crate::canonical::JsonObject;
    use crate::values::{AttemptStatus, EventStatus};

    /// Mostly plain text, sometimes what JSON must escape, sometimes not ASCII.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9_:/.-]{0,40}",
            "\\PC{0,12}",
            proptest::collection::vec(0u8..0x80, 0..12)
                .prop_map(|b| String::from_utf8(b).expect("ASCII")),
        ]
    }

    fn timestamp() -> impl Strategy<Value = Timestamp> {
        // Around the years 0-9999 and beyond them, where the fallback writes.
        prop_oneof![
            (-62_135_596_800_000_000i64..253_402_300_799_999_999).prop_map(Timestamp::from_micros),
            any::<i64>().prop_map(|m| Timestamp::from_micros(m / 1_000_000 * 1_000_000)),
        ]
    }

    fn delivery() -> impl Strategy<Value = DeliverySnapshot> {
        (
            (text(), text(), text(), text(), text()),
            (
                any::<u64>(),
                proptest::option::of(100u16..600),
                proptest::option::of(text()),
            ),
            (
                proptest::option::of(timestamp()),
                proptest::option::of(timestamp()),
                proptest::option::of(timestamp()),
                timestamp(),
                timestamp(),
            ),
            proptest::sample::select(AttemptStatus::ALL.to_vec()),
        )
            .prop_map(
                |(
                    (id, organization_id, endpoint_id, endpoint_name, endpoint_url),
                    (attempt_count, response_status_code, last_error),
                    (next_retry_at, attempted_at, delivered_at, created_at, updated_at),
                    status,
                )| DeliverySnapshot {
                    id,
                    organization_id,
                    endpoint_id,
                    endpoint_name,
                    endpoint_url,
                    attempt_count,
                    response_status_code,
                    last_error,
                    next_retry_at,
                    attempted_at,
                    delivered_at,
                    created_at,
                    updated_at,
                    status,
                },
            )
    }

    fn event() -> impl Strategy<Value = EventSnapshot> {
        // Kept, erased, and erased as the contract shapes it (`{}` and the flag).
        let payload = prop_oneof![
            Just(Body::Kept(JsonObject::empty())),
            text().prop_map(|t| Body::Kept(
                JsonObject::from_value(&serde_json::json!({"note": t, "n": [1, 2.5, null]}))
                    .expect("an object")
            )),
            Just(Body::Erased),
        ];
        (
            (text(), text(), text(), proptest::option::of(text())),
            proptest::sample::select(EventStatus::ALL.to_vec()),
            any::<u64>(),
            (payload, any::<bool>()),
            proptest::collection::vec(delivery(), 0..5),
            (timestamp(), timestamp()),
        )
            .prop_map(
                |(
                    (id, organization_id, event_type, source_key),
                    status,
                    endpoint_count,
                    (payload, for_contract),
                    deliveries,
                    (created_at, updated_at),
                )| {
                    let snapshot = EventSnapshot {
                        id,
                        organization_id,
                        event_type,
                        source_key,
                        status,
                        endpoint_count,
                        payload_erased: payload.is_erased(),
                        payload,
                        deliveries,
                        created_at,
                        updated_at,
                    };
                    if for_contract {
                        snapshot.for_contract()
                    } else {
                        snapshot
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn an_event_snapshot_is_written_as_serde_json_writes_it(snapshot in event()) {
            let expected = serde_json::to_vec(&snapshot).unwrap();
            prop_assert_eq!(
                String::from_utf8(snapshot.to_json()).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }

        #[test]
        fn an_erased_payload_is_written_as_serde_json_writes_it(
            snapshot in event().prop_filter("erased", |s| s.payload_erased),
        ) {
            let fast = String::from_utf8(snapshot.to_json()).unwrap();
            prop_assert_eq!(&fast, &String::from_utf8(serde_json::to_vec(&snapshot).unwrap()).unwrap());
            let payload = if snapshot.payload.is_erased() { "null" } else { "{}" };
            let expected = format!(r#""payload":{payload},"payloadErased":true,"deliveries":["#);
            prop_assert!(fast.contains(&expected), "{}", fast);
        }

        #[test]
        fn a_string_is_escaped_as_serde_json_escapes_it(s in "\\PC{0,20}|[\\x00-\\x7f]{0,20}") {
            let mut out = Vec::new();
            string(&mut out, &s);
            prop_assert_eq!(out, serde_json::to_vec(&s).unwrap());
        }
    }
}
