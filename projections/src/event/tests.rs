//! Writing and reading the events that carry bodies: the fast canonical
//! writers held to the generic path, sealed content opened against its
//! digest or found erased, and schema-1 data (bodies inline) upcast on read.

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::body::{self, ContentError};
use crate::canonical::JsonObject;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_]{1,30}",
        any::<String>(),
        Just("quote \" and backslash \\ and\nnewline".to_owned()),
        Just("ünïcødé ✓".to_owned()),
    ]
}

/// Bodies as clients send them, numbers beyond `f64` included.
fn object() -> impl Strategy<Value = JsonObject> {
    prop_oneof![
        Just(JsonObject::empty()),
        text().prop_map(
            |t| JsonObject::from_value(&json!({"note": t, "n": [1, 2.5, -3, null]}))
                .expect("an object")
        ),
        Just(
            JsonObject::parse(
                r#"{"z": {"b": true, "a": "x"}, "exact": [18446744073709551616, 1e-400, -0]}"#
            )
            .expect("an object")
        ),
    ]
}

fn accepted() -> impl Strategy<Value = WebhookEventAccepted> {
    (
        (text(), text(), text()),
        prop::option::of(text()),
        object(),
        prop::collection::vec((text(), text(), text(), text()), 0..4),
    )
        .prop_map(
            |((event_id, organization_id, event_type), source_key, payload, deliveries)| {
                WebhookEventAccepted {
                    event_id,
                    organization_id,
                    event_type,
                    source_key,
                    payload: Body::Kept(payload),
                    deliveries: deliveries
                        .into_iter()
                        .map(|(d, e, n, u)| PlannedDelivery {
                            delivery_id: d,
                            endpoint_id: e,
                            endpoint_name: n,
                            endpoint_url: u,
                        })
                        .collect(),
                }
            },
        )
}

fn attempt() -> impl Strategy<Value = AttemptRecorded> {
    (
        (text(), text(), text()),
        prop::sample::select(AttemptStatus::ALL.to_vec()),
        prop::option::of(100i64..=599),
        prop::option::of(object()),
        prop::option::of(text()),
        prop::option::of(prop::sample::select(vec![
            "2030-01-01T00:00:00Z",
            "2024-02-29T23:59:59.123456789Z",
            "2023-11-07T05:31Z",
        ])),
    )
        .prop_map(
            |((d, e, o), status, code, body, error, retry)| AttemptRecorded {
                delivery_id: d,
                event_id: e,
                organization_id: o,
                status,
                response_status_code: code.and_then(HttpStatusCode::parse),
                response_body: body.map(Body::Kept),
                last_error: error.and_then(NonEmptyString::parse),
                next_retry_at: retry.and_then(RetryAt::parse),
            },
        )
}

fn with_body() -> impl Strategy<Value = Event> {
    prop_oneof![
        accepted().prop_map(Event::WebhookEventAccepted),
        attempt().prop_map(Event::AttemptRecorded),
    ]
}

/// The body an event carries, if any.
fn body_of(event: &Event) -> Option<&Body> {
    match event {
        Event::WebhookEventAccepted(e) => Some(&e.payload),
        Event::AttemptRecorded(a) => a.response_body.as_ref(),
        _ => None,
    }
}

/// The event with its body erased, as a read without content gives it.
fn erased(event: &Event) -> Event {
    let mut event = event.clone();
    match &mut event {
        Event::WebhookEventAccepted(e) => e.payload = Body::Erased,
        Event::AttemptRecorded(a) if a.response_body.is_some() => {
            a.response_body = Some(Body::Erased)
        }
        _ => {}
    }
    event
}

/// The content as the store hands it back: none when there is none.
fn stored(content: &[u8]) -> Option<&[u8]> {
    (!content.is_empty()).then_some(content)
}

/// What builds before salted digests wrote: the canonical data with each
/// body inline, as sent, where version 2 has its digest (`payload` and
/// `responseBody` sort where their digests do).
fn v1_data(event: &Event) -> Vec<u8> {
    let encoded = event.encode(&mut || [0; SALT_LEN]);
    let v2 = String::from_utf8(encoded.data).unwrap();
    let digest = body::digest(&encoded.content);
    let (from, to) = match event {
        Event::WebhookEventAccepted(e) => (
            format!(r#""payloadDigest":"{digest}""#),
            format!(r#""payload":{}"#, e.payload.kept().unwrap().get()),
        ),
        Event::AttemptRecorded(a) => match &a.response_body {
            Some(body) => (
                format!(r#""responseBodyDigest":"{digest}""#),
                format!(r#""responseBody":{}"#, body.kept().unwrap().get()),
            ),
            None => (
                r#""responseBodyDigest":null"#.to_owned(),
                r#""responseBody":null"#.to_owned(),
            ),
        },
        other => panic!("{} has no body", other.event_type()),
    };
    assert_eq!(v2.matches(&from).count(), 1, "{v2}");
    v2.replacen(&from, &to, 1).into_bytes()
}

fn decode(event: &Event, encoded: &Encoded, content: Option<&[u8]>) -> Result<Event, DecodeError> {
    Event::decode(
        event.event_type(),
        event.schema_version(),
        &encoded.data,
        content,
    )
}

proptest! {
    #[test]
    fn the_fast_canonical_writers_write_what_the_generic_path_writes(
        event in with_body(),
        salt in any::<[u8; SALT_LEN]>(),
    ) {
        let encoded = event.encode(&mut || salt);
        let digest = stored(&encoded.content).map(body::digest);
        prop_assert_eq!(
            String::from_utf8(encoded.data.clone()).unwrap(),
            String::from_utf8(sealed::generic(&event, digest.as_deref())).unwrap()
        );
        // The content is the salt, then the body's canonical text.
        match body_of(&event) {
            Some(body) => {
                prop_assert_eq!(&encoded.content[..SALT_LEN], &salt[..]);
                prop_assert_eq!(
                    &encoded.content[SALT_LEN..],
                    body.kept().unwrap().get().as_bytes()
                );
            }
            None => prop_assert!(encoded.content.is_empty()),
        }
    }

    #[test]
    fn an_encoded_event_decodes_to_itself_with_its_content_and_erased_without(
        event in with_body(),
        salt in any::<[u8; SALT_LEN]>(),
    ) {
        let encoded = event.encode(&mut || salt);
        prop_assert_eq!(event.schema_version(), 2);
        prop_assert_eq!(decode(&event, &encoded, stored(&encoded.content)).unwrap(), event.clone());
        prop_assert_eq!(decode(&event, &encoded, None).unwrap(), erased(&event));
    }

    #[test]
    fn the_hashed_data_holds_no_byte_of_the_body(
        note in "[a-z]{12}",
        salt in any::<[u8; SALT_LEN]>(),
    ) {
        let body = JsonObject::from_value(&json!({"email": note})).unwrap();
        let events = [
            Event::WebhookEventAccepted(WebhookEventAccepted {
                event_id: "evt_1".into(),
                organization_id: "org".into(),
                event_type: "t".into(),
                source_key: None,
                payload: Body::Kept(body.clone()),
                deliveries: vec![],
            }),
            Event::AttemptRecorded(AttemptRecorded {
                delivery_id: "dlv_1".into(),
                event_id: "evt_1".into(),
                organization_id: "org".into(),
                status: AttemptStatus::Delivered,
                response_status_code: None,
                response_body: Some(Body::Kept(body)),
                last_error: None,
                next_retry_at: None,
            }),
        ];
        for event in events {
            let data = String::from_utf8(event.encode(&mut || salt).data).unwrap();
            prop_assert!(!data.contains(&note), "{}", data);
        }
    }

    #[test]
    fn schema_1_data_decodes_to_the_same_event(event in with_body()) {
        let data = v1_data(&event);
        prop_assert_eq!(Event::decode(event.event_type(), 1, &data, None).unwrap(), event);
    }

    #[test]
    fn content_that_is_not_the_events_own_is_refused(
        event in with_body(),
        salt in any::<[u8; SALT_LEN]>(),
        other_salt in any::<[u8; SALT_LEN]>(),
    ) {
        prop_assume!(salt != other_salt && body_of(&event).is_some());
        let encoded = event.encode(&mut || salt);
        let resealed = event.encode(&mut || other_salt);
        let decoded = decode(&event, &encoded, Some(&resealed.content));
        prop_assert!(
            matches!(&decoded, Err(DecodeError::Content { source: ContentError::Digest, .. })),
            "{:?}",
            decoded
        );
    }
}

fn sample_attempt(body: Option<JsonObject>) -> AttemptRecorded {
    AttemptRecorded {
        delivery_id: "dlv_1".into(),
        event_id: "evt_1".into(),
        organization_id: "org_1".into(),
        status: AttemptStatus::RetryScheduled,
        response_status_code: HttpStatusCode::parse(503),
        response_body: body.map(Body::Kept),
        last_error: NonEmptyString::parse("busy"),
        next_retry_at: RetryAt::parse("2030-01-01T00:00Z"),
    }
}

#[test]
fn schema_1_data_as_written_is_upcast_on_read() {
    // Byte for byte as a build before salted digests stored them.
    let accepted = br#"{"deliveries":[{"deliveryId":"dlv_1","endpointId":"ep_1","endpointName":"n","endpointUrl":"https://r.example/"}],"eventId":"evt_1","eventType":"order.paid","organizationId":"org_1","payload":{"a":[1,2.5],"big":18446744073709551616},"sourceKey":null}"#;
    assert_eq!(
        Event::decode("WebhookEventAccepted", 1, accepted, None).unwrap(),
        Event::WebhookEventAccepted(WebhookEventAccepted {
            event_id: "evt_1".into(),
            organization_id: "org_1".into(),
            event_type: "order.paid".into(),
            source_key: None,
            payload: Body::Kept(
                JsonObject::parse(r#"{"a":[1,2.5],"big":18446744073709551616}"#).unwrap()
            ),
            deliveries: vec![PlannedDelivery {
                delivery_id: "dlv_1".into(),
                endpoint_id: "ep_1".into(),
                endpoint_name: "n".into(),
                endpoint_url: "https://r.example/".into(),
            }],
        })
    );
    let attempt = br#"{"deliveryId":"dlv_1","eventId":"evt_1","lastError":"busy","nextRetryAt":"2030-01-01T00:00Z","organizationId":"org_1","responseBody":{"error":"x"},"responseStatusCode":503,"status":"retry_scheduled"}"#;
    assert_eq!(
        Event::decode("AttemptRecorded", 1, attempt, None).unwrap(),
        Event::AttemptRecorded(sample_attempt(JsonObject::parse(r#"{"error":"x"}"#).ok()))
    );
}

#[test]
fn a_v2_attempt_with_content_but_no_digest_is_refused() {
    let no_body = Event::AttemptRecorded(sample_attempt(None));
    let encoded = no_body.encode(&mut || unreachable!("no body, no salt"));
    assert!(encoded.content.is_empty());
    assert!(
        String::from_utf8_lossy(&encoded.data).contains(r#""responseBodyDigest":null"#),
        "{}",
        String::from_utf8_lossy(&encoded.data)
    );
    assert_eq!(decode(&no_body, &encoded, None).unwrap(), no_body);

    // Content of the same attempt with a body, beside data that has none.
    let with_body = Event::AttemptRecorded(sample_attempt(Some(JsonObject::empty())));
    let content = with_body.encode(&mut || [5; SALT_LEN]).content;
    assert!(matches!(
        decode(&no_body, &encoded, Some(&content)),
        Err(DecodeError::Content {
            source: ContentError::Unexpected,
            schema_version: 2,
            ..
        })
    ));
}

#[test]
fn damaged_or_short_content_is_refused_and_the_digest_is_the_salted_one() {
    let event = Event::AttemptRecorded(sample_attempt(JsonObject::parse(r#"{"a":1}"#).ok()));
    let encoded = event.encode(&mut || [0; SALT_LEN]);
    let digest = body::digest(&encoded.content);
    assert!(
        String::from_utf8_lossy(&encoded.data)
            .contains(&format!(r#""responseBodyDigest":"{digest}""#))
    );
    let mut damaged = encoded.content.clone();
    *damaged.last_mut().unwrap() ^= 1;
    assert!(matches!(
        decode(&event, &encoded, Some(&damaged)),
        Err(DecodeError::Content {
            source: ContentError::Digest,
            ..
        })
    ));
    assert!(matches!(
        decode(&event, &encoded, Some(&encoded.content[..SALT_LEN])),
        Err(DecodeError::Content {
            source: ContentError::Short(SALT_LEN),
            ..
        })
    ));
}

#[test]
fn content_erased_is_written_and_read_at_version_1() {
    let cases = [
        ContentErased {
            organization_id: "org_1".into(),
            event_id: Some("evt_1".into()),
            recorded_before: None,
            reason: ErasureReason::Request,
        },
        ContentErased {
            organization_id: "org_1".into(),
            event_id: None,
            recorded_before: None,
            reason: ErasureReason::Offboarding,
        },
        ContentErased {
            organization_id: "org_1".into(),
            event_id: None,
            recorded_before: Some(Timestamp::from_micros(1_700_000_000_123_456)),
            reason: ErasureReason::Retention,
        },
    ];
    let expected = [
        r#"{"eventId":"evt_1","organizationId":"org_1","reason":"request","recordedBefore":null}"#,
        r#"{"eventId":null,"organizationId":"org_1","reason":"offboarding","recordedBefore":null}"#,
        r#"{"eventId":null,"organizationId":"org_1","reason":"retention","recordedBefore":"2023-11-14T22:13:20.123456Z"}"#,
    ];
    for (erasure, expected) in cases.into_iter().zip(expected) {
        let event = Event::ContentErased(erasure);
        assert_eq!(event.schema_version(), 1);
        assert!(Event::CURRENT.contains(&("ContentErased", 1)));
        let encoded = event.encode(&mut || unreachable!("no body, no salt"));
        assert_eq!(String::from_utf8(encoded.data.clone()).unwrap(), expected);
        assert!(encoded.content.is_empty());
        assert_eq!(decode(&event, &encoded, None).unwrap(), event);
    }
}
