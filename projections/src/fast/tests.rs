//! The fast decoders held to the `serde_json` paths they stand in for, on
//! attempts at schema version 1 (the response body inline) and 2 (its salted
//! digest).

use super::*;
use crate::body::{Body, SALT_LEN};
use crate::canonical::JsonObject;
use crate::event::{Event, Metadata};
use proptest::prelude::*;

fn slow(data: &[u8], schema_version: u32) -> Option<AttemptRecorded> {
    // The serde path of `fold_decode::event`, response body dropped.
    match Event::decode("AttemptRecorded", schema_version, data, None).ok()? {
        Event::AttemptRecorded(a) => Some(AttemptRecorded {
            response_body: None,
            ..a
        }),
        _ => None,
    }
}

/// The attempt's data as this build writes it (version 2), or as builds
/// before salted digests did (version 1: the generic canonical form, the
/// response body inline).
fn data(a: AttemptRecorded, schema_version: u32, salt: u8) -> Vec<u8> {
    let event = Event::AttemptRecorded(a);
    match schema_version {
        1 => crate::canonical::to_vec(&event.to_value().unwrap()),
        _ => event.encode(&mut || [salt; SALT_LEN]).data,
    }
}

fn version() -> impl Strategy<Value = u32> {
    prop_oneof![Just(1u32), Just(2u32)]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_]{1,30}",
        any::<String>(),
        Just("quote \" and backslash \\ and\nnewline".to_owned()),
        Just("ünïcødé ✓".to_owned()),
    ]
}

fn attempt() -> impl Strategy<Value = AttemptRecorded> {
    (
        text(),
        text(),
        text(),
        prop::sample::select(AttemptStatus::ALL.to_vec()),
        prop::option::of(100i64..=599),
        prop::option::of(prop_oneof![
            Just(serde_json::json!({})),
            Just(serde_json::json!({"error": "a}b", "nested": {"x": [1, "]", null]}})),
            Just(serde_json::json!({"q": "\"{"})),
        ]),
        prop::option::of(text()),
        prop::option::of(prop::sample::select(vec![
            "2030-01-01T00:00:00Z",
            "2024-02-29T23:59:59.123456789Z",
            "2023-11-07T05:31Z",
        ])),
    )
        .prop_map(
            |(d, e, o, status, code, body, error, retry)| AttemptRecorded {
                delivery_id: d,
                event_id: e,
                organization_id: o,
                status,
                response_status_code: code.and_then(HttpStatusCode::parse),
                response_body: body.map(|b| Body::Kept(JsonObject::from_value(&b).unwrap())),
                last_error: error.and_then(NonEmptyString::parse),
                next_retry_at: retry.and_then(RetryAt::parse),
            },
        )
}

proptest! {
    #[test]
    fn the_word_scan_finds_the_first_special_byte(
        bytes in prop::collection::vec(prop_oneof![8 => 0x20u8..0x7f, 1 => any::<u8>()], 0..40),
    ) {
        let expected = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
        prop_assert_eq!(string_len(&bytes), expected);
    }

    #[test]
    fn the_fast_attempt_decoding_agrees_with_serde(a in attempt(), v in version(), salt in any::<u8>()) {
        let data = data(a.clone(), v, salt);
        let fast = attempt_for_fold(&data, v);
        let slow = slow(&data, v);
        prop_assert_eq!(
            slow.as_ref(),
            Some(&AttemptRecorded { response_body: None, ..a })
        );
        if let Some(fast) = fast {
            prop_assert_eq!(Some(fast), slow);
        }
    }

    #[test]
    fn the_fast_attempt_decoding_refuses_the_other_versions_shape(a in attempt(), v in version()) {
        let data = data(a, v, 0);
        let other = 3 - v;
        prop_assert_eq!(attempt_for_fold(&data, other), None);
        prop_assert_eq!(slow(&data, other), None);
        prop_assert_eq!(attempt_for_fold(&data, 3), None);
    }

    #[test]
    fn decoding_into_a_used_slot_gives_what_decoding_afresh_gives(
        a in attempt(),
        b in attempt(),
        (va, vb) in (version(), version()),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let first = data(a, va, 1);
        let mut second = data(b, vb, 2);
        if byte % 2 == 0 {
            let i = at.index(second.len());
            second[i] = byte;
        }
        let Some(mut slot) = attempt_for_fold(&first, va) else { return Ok(()) };
        let before = slot.clone();
        match attempt_for_fold(&second, vb) {
            Some(fresh) => {
                prop_assert!(attempt_for_fold_into(&second, vb, &mut slot).is_some());
                prop_assert_eq!(slot, fresh);
            }
            None => {
                prop_assert!(attempt_for_fold_into(&second, vb, &mut slot).is_none());
                prop_assert_eq!(slot, before);
            }
        }
    }

    #[test]
    fn damaged_attempt_bytes_are_never_accepted_where_serde_refuses(
        a in attempt(),
        v in version(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut data = data(a, v, 3);
        let i = at.index(data.len());
        data[i] = byte;
        if let Some(fast) = attempt_for_fold(&data, v) {
            prop_assert_eq!(Some(fast), slow(&data, v));
        }
    }

    #[test]
    fn the_fast_metadata_check_agrees_with_serde(
        request in prop::option::of(text()),
        key in prop::option::of(text()),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        damage in any::<bool>(),
    ) {
        let meta = Metadata { request_id: request, key_id: key, idempotency: None };
        let mut data = meta.to_canonical_bytes();
        if damage {
            let i = at.index(data.len());
            data[i] = byte;
        }
        if metadata_without_idempotency(&data).is_some() {
            let slow = Metadata::decode(&data);
            prop_assert!(slow.is_ok(), "{:?}", String::from_utf8_lossy(&data));
            prop_assert!(slow.unwrap().idempotency.is_none());
        }
    }
}

#[test]
fn the_canonical_forms_take_the_fast_path() {
    let a = AttemptRecorded {
        delivery_id: "dlv_1".into(),
        event_id: "evt_1".into(),
        organization_id: "org".into(),
        status: AttemptStatus::RetryScheduled,
        response_status_code: HttpStatusCode::parse(503),
        response_body: JsonObject::from_value(&serde_json::json!({"error": "unavailable"}))
            .map(Body::Kept),
        last_error: NonEmptyString::parse("upstream 503"),
        next_retry_at: RetryAt::parse("2030-01-01T00:00:00Z"),
    };
    for v in [1, 2] {
        let bytes = data(a.clone(), v, 4);
        assert!(attempt_for_fold(&bytes, v).is_some(), "v{v}");
        let without_body = data(
            AttemptRecorded {
                response_body: None,
                ..a.clone()
            },
            v,
            4,
        );
        assert!(attempt_for_fold(&without_body, v).is_some(), "v{v}");
    }
    for meta in [
        Metadata::default(),
        Metadata {
            request_id: Some("req_1".into()),
            key_id: Some("key_1".into()),
            idempotency: None,
        },
        Metadata {
            request_id: Some("req_1".into()),
            ..Metadata::default()
        },
        Metadata {
            key_id: Some("key_1".into()),
            ..Metadata::default()
        },
    ] {
        assert!(metadata_without_idempotency(&meta.to_canonical_bytes()).is_some());
    }
    for refused in [
        &b"{\"keyId\":1}"[..],
        b"{\"requestId\":\"a\",\"keyId\":\"b\"}",
        b"{,}",
        b"{\"keyId\":\"a\",}",
    ] {
        assert!(metadata_without_idempotency(refused).is_none());
    }
}

#[test]
fn a_digest_that_is_not_a_string_is_refused_as_serde_refuses_it() {
    let a = AttemptRecorded {
        delivery_id: "dlv_1".into(),
        event_id: "evt_1".into(),
        organization_id: "org".into(),
        status: AttemptStatus::Delivered,
        response_status_code: HttpStatusCode::parse(200),
        response_body: JsonObject::from_value(&serde_json::json!({"ok": true})).map(Body::Kept),
        last_error: None,
        next_retry_at: None,
    };
    let text = String::from_utf8(data(a, 2, 6)).unwrap();
    let start = text.find(r#""responseBodyDigest":""#).unwrap() + r#""responseBodyDigest":"#.len();
    let end = start + 66;
    assert!(text[start..end].starts_with('"') && text[start..end].ends_with('"'));
    for bad in ["7", r#"{"a":1}"#, "true", "[]", r#"{"ok":true}"#] {
        let damaged = format!("{}{bad}{}", &text[..start], &text[end..]);
        assert_eq!(slow(damaged.as_bytes(), 2), None, "{damaged}");
        assert_eq!(attempt_for_fold(damaged.as_bytes(), 2), None, "{damaged}");
    }
}
