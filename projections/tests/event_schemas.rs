//! The JSON Schemas in `schemas/events/` against the code that writes and reads the
//! log: every type and version has a file, every file is a version the decoder
//! reads, what the writer produces is valid, and what the decoder refuses the
//! schema refuses too. Events with bodies are checked at the version this build
//! writes (the salted digests) and at version 1 (the bodies inline), which old
//! logs hold and which must stay valid and readable.
//!
//! Uses only the crate's public API, as an auditor's tool would.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use jsonschema::Validator;
use proptest::prelude::*;
use serde_json::{Value, json};

use projections::body::SALT_LEN;
use projections::event::{
    ApiKeyIssued, ApiKeyRevoked, AttemptRecorded, ContentErased, DecodeError, EndpointCreated,
    EndpointUpdated, ErasureReason, Idempotency, PlannedDelivery, WebhookEventAccepted,
};
use projections::values::{AttemptStatus, HttpStatusCode, NonEmptyString, RetryAt, Timestamp};
use projections::{Body, Event, JsonObject, Metadata};

/// `nextRetryAt`'s pattern exactly as the record-attempt contract gives it
/// (`docs/DESIGN.md` §1).
const CONTRACT_PATTERN: &str = r"^(?:(?:\d\d[2468][048]|\d\d[13579][26]|\d\d0[48]|[02468][048]00|[13579][26]00)-02-29|\d{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12]\d|3[01])|(?:0[469]|11)-(?:0[1-9]|[12]\d|30)|(?:02)-(?:0[1-9]|1\d|2[0-8])))T(?:(?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d+)?)?(?:Z))$";

const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/events")
}

fn load(file: &str) -> Value {
    let path = schema_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file} is not JSON: {e}"))
}

fn file_name(event_type: &str, version: u32) -> String {
    format!("{event_type}.v{version}.json")
}

fn validator(file: &str) -> Validator {
    jsonschema::draft202012::new(&load(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The validator for each current `(type, version)`, by type.
fn validators() -> BTreeMap<&'static str, Validator> {
    Event::CURRENT
        .iter()
        .map(|&(t, v)| (t, validator(&file_name(t, v))))
        .collect()
}

fn version_of(event_type: &str) -> u32 {
    Event::CURRENT
        .iter()
        .find(|(t, _)| *t == event_type)
        .map(|&(_, v)| v)
        .unwrap_or_else(|| panic!("{event_type} is not a current type"))
}

/// Decodes `data` at the current version, without content: as the log reads
/// it once the bodies are erased, or where there are none.
fn decode(event_type: &str, data: &Value) -> Result<Event, DecodeError> {
    let bytes = serde_json::to_vec(data).unwrap();
    Event::decode(event_type, version_of(event_type), &bytes, None)
}

fn salt() -> [u8; SALT_LEN] {
    *b"0123456789abcdef"
}

/// The data the writer stores for `event`, the hashed part (its bodies'
/// digests in place of the bodies).
fn data_of(event: &Event) -> Value {
    serde_json::from_slice(&event.encode(&mut salt).data).unwrap()
}

/// The data a build before salted digests stored: version 1, each body inline
/// as sent where version 2 has its digest (`payload` and `responseBody` sort
/// where their digests do).
fn v1_bytes(event: &Event) -> Vec<u8> {
    let encoded = event.encode(&mut salt);
    let v2 = String::from_utf8(encoded.data).unwrap();
    let digest = projections::body::digest(&encoded.content);
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
        other => panic!("{} has no version 1 with a body", other.event_type()),
    };
    assert_eq!(v2.matches(&from).count(), 1, "{v2}");
    v2.replacen(&from, &to, 1).into_bytes()
}

fn v1_data_of(event: &Event) -> Value {
    serde_json::from_slice(&v1_bytes(event)).unwrap()
}

/// The types whose data held their bodies inline at version 1.
const WITH_BODIES: [&str; 2] = ["WebhookEventAccepted", "AttemptRecorded"];

fn errors(validator: &Validator, data: &Value) -> Vec<String> {
    validator.iter_errors(data).map(|e| e.to_string()).collect()
}

const DIGEST: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn attempt(status: AttemptStatus) -> AttemptRecorded {
    AttemptRecorded {
        delivery_id: "dlv_01HZX".into(),
        event_id: "evt_01HZX".into(),
        organization_id: "org_1".into(),
        status,
        response_status_code: None,
        response_body: None,
        last_error: None,
        next_retry_at: None,
    }
}

/// Events of every type as the writer makes them, with every optional and nullable
/// field both absent/null and present.
fn samples() -> Vec<Event> {
    let mut out = vec![
        Event::EndpointCreated(EndpointCreated {
            endpoint_id: "ep_01HZX".into(),
            organization_id: "org_1".into(),
            name: "Orders".into(),
            url: "https://receiver.example/hooks".into(),
            event_types: vec![],
            enabled: true,
        }),
        Event::EndpointCreated(EndpointCreated {
            endpoint_id: "ep_01HZY".into(),
            organization_id: "org_1".into(),
            name: "".into(),
            url: "http://10.0.0.1:8080/x?y=z".into(),
            event_types: vec!["order.paid".into(), "order.refunded".into()],
            enabled: false,
        }),
        Event::EndpointUpdated(EndpointUpdated {
            endpoint_id: "ep_01HZX".into(),
            organization_id: "org_1".into(),
            name: None,
            url: None,
            event_types: None,
            enabled: None,
        }),
        Event::EndpointUpdated(EndpointUpdated {
            endpoint_id: "ep_01HZX".into(),
            organization_id: "org_1".into(),
            name: Some("Renamed".into()),
            url: Some("https://moved.example/".into()),
            event_types: Some(vec![]),
            enabled: Some(false),
        }),
        Event::EndpointUpdated(EndpointUpdated {
            endpoint_id: "ep_01HZX".into(),
            organization_id: "org_1".into(),
            name: None,
            url: None,
            event_types: Some(vec!["a".into()]),
            enabled: Some(true),
        }),
        Event::WebhookEventAccepted(WebhookEventAccepted {
            event_id: "evt_01HZX".into(),
            organization_id: "org_1".into(),
            event_type: "order.paid".into(),
            source_key: None,
            payload: Body::Kept(JsonObject::empty()),
            deliveries: vec![],
        }),
        Event::WebhookEventAccepted(WebhookEventAccepted {
            event_id: "evt_01HZY".into(),
            organization_id: "org_1".into(),
            event_type: "order.paid".into(),
            source_key: Some("order-42".into()),
            payload: Body::Kept(
                JsonObject::parse(
                    r#"{"order": {"id": 42, "lines": [1, 2.5, null, "x", true]}, "é": "ü", "exact": [18446744073709551616, 1e-400, -0]}"#,
                )
                .unwrap(),
            ),
            deliveries: vec![
                PlannedDelivery {
                    delivery_id: "dlv_01HZX".into(),
                    endpoint_id: "ep_01HZX".into(),
                    endpoint_name: "Orders".into(),
                    endpoint_url: "https://receiver.example/hooks".into(),
                },
                PlannedDelivery {
                    delivery_id: "dlv_01HZY".into(),
                    endpoint_id: "ep_01HZY".into(),
                    endpoint_name: "".into(),
                    endpoint_url: "http://10.0.0.1:8080/x?y=z".into(),
                },
            ],
        }),
        Event::AttemptRecorded(attempt(AttemptStatus::Pending)),
        Event::ApiKeyIssued(ApiKeyIssued {
            key_id: "key_01HZX".into(),
            organization_id: "org_1".into(),
            secret_sha256: DIGEST.into(),
        }),
        Event::ApiKeyRevoked(ApiKeyRevoked {
            key_id: "key_01HZX".into(),
            organization_id: "org_1".into(),
        }),
    ];
    let full = [
        (
            AttemptStatus::RetryScheduled,
            503,
            json!({"error": "busy"}),
            "2023-11-07T05:31:56Z",
        ),
        (AttemptStatus::Failed, 100, json!({}), "2023-11-07T05:31Z"),
        (
            AttemptStatus::Delivered,
            599,
            json!({"a": [{"b": null}]}),
            "2024-02-29T23:59:59.123456789Z",
        ),
        (
            AttemptStatus::Failed,
            404,
            json!({"n": 1}),
            "2000-02-29T00:00:00.5Z",
        ),
    ];
    for (status, code, body, retry_at) in full {
        out.push(Event::AttemptRecorded(AttemptRecorded {
            response_status_code: HttpStatusCode::parse(code),
            response_body: JsonObject::from_value(&body).map(Body::Kept),
            last_error: NonEmptyString::parse("connection reset by peer"),
            next_retry_at: RetryAt::parse(retry_at),
            ..attempt(status)
        }));
    }
    // One field at a time, the others null.
    out.push(Event::AttemptRecorded(AttemptRecorded {
        last_error: NonEmptyString::parse("x"),
        ..attempt(AttemptStatus::Failed)
    }));
    out.push(Event::AttemptRecorded(AttemptRecorded {
        next_retry_at: RetryAt::parse("2031-12-31T23:59Z"),
        ..attempt(AttemptStatus::RetryScheduled)
    }));
    for (event_id, recorded_before, reason) in [
        (Some("evt_01HZX"), None, ErasureReason::Request),
        (None, None, ErasureReason::Offboarding),
        (
            None,
            Some(Timestamp::from_micros(1_700_000_000_123_456)),
            ErasureReason::Retention,
        ),
    ] {
        out.push(Event::ContentErased(ContentErased {
            organization_id: "org_1".into(),
            event_id: event_id.map(str::to_owned),
            recorded_before,
            reason,
        }));
    }
    out
}

fn metadata_samples() -> Vec<Metadata> {
    vec![
        Metadata::default(),
        Metadata {
            request_id: Some("req-1".into()),
            key_id: None,
            idempotency: None,
        },
        Metadata {
            request_id: Some("req-2".into()),
            key_id: Some("key_01HZX".into()),
            idempotency: Some(Idempotency {
                key: "idem-1".into(),
                route: "POST /v1/outbound-webhook-events".into(),
                request_sha256: DIGEST.into(),
            }),
        },
    ]
}

#[test]
fn every_current_event_type_has_a_draft_2020_12_schema() {
    let mut names = Event::CURRENT
        .iter()
        .map(|&(t, v)| file_name(t, v))
        .collect::<Vec<_>>();
    names.push("Metadata.v1.json".into());
    for name in names {
        let schema = load(&name);
        assert_eq!(schema["$schema"], DRAFT_2020_12, "{name}");
        if let Err(e) = jsonschema::draft202012::meta::validate(&schema) {
            panic!("{name} is not a valid 2020-12 schema: {e}");
        }
        assert_eq!(schema["type"], "object", "{name}");
        assert_eq!(schema["additionalProperties"], false, "{name}");
    }
}

#[test]
fn every_schema_file_is_a_version_the_decoder_reads() {
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(schema_dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(stem) = name.strip_suffix(".json") else {
            assert_eq!(name, "README.md", "unexpected file in schemas/events");
            continue;
        };
        let (event_type, version) = stem
            .rsplit_once(".v")
            .unwrap_or_else(|| panic!("{name} is not named Type.vN.json"));
        let version: u32 = version
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not named Type.vN.json"));
        found.insert((event_type.to_owned(), version));
        if event_type == "Metadata" {
            continue;
        }
        // Old versions stay readable: decode must know the pair, so it refuses
        // empty data as invalid rather than as an unknown type.
        match Event::decode(event_type, version, b"{}", None) {
            Err(DecodeError::Invalid { .. }) => {}
            other => panic!("{name}: decode does not read this version: {other:?}"),
        }
    }
    for (t, v) in Event::CURRENT {
        assert!(found.contains(&(t.to_owned(), v)), "no schema for {t} v{v}");
    }
    assert!(found.contains(&("Metadata".to_owned(), 1)));
}

#[test]
fn the_samples_cover_every_type_and_every_optional_and_nullable_field() {
    let samples = samples();
    let types: BTreeSet<&str> = samples.iter().map(Event::event_type).collect();
    let current: BTreeSet<&str> = Event::CURRENT.iter().map(|(t, _)| *t).collect();
    assert_eq!(types, current);

    for (event_type, version) in Event::CURRENT {
        let schema = load(&file_name(event_type, version));
        let required: BTreeSet<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        let values: Vec<Value> = samples
            .iter()
            .filter(|e| e.event_type() == event_type)
            .map(data_of)
            .collect();

        // The schema's shape is the writer's: required are the keys it always
        // writes, properties every key it ever writes.
        let key_sets: Vec<BTreeSet<&str>> = values
            .iter()
            .map(|v| v.as_object().unwrap().keys().map(String::as_str).collect())
            .collect();
        let always = key_sets
            .iter()
            .skip(1)
            .fold(key_sets[0].clone(), |acc, keys| &acc & keys);
        let ever: BTreeSet<&str> = key_sets.iter().flatten().copied().collect();
        let properties: BTreeSet<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(required, always, "{event_type}: required");
        assert_eq!(properties, ever, "{event_type}: properties");

        for (field, property) in schema["properties"].as_object().unwrap() {
            let nullable = property["type"]
                .as_array()
                .is_some_and(|types| types.contains(&json!("null")));
            let set = values
                .iter()
                .any(|v| v.get(field).is_some_and(|x| !x.is_null()));
            assert!(set, "{event_type}.{field} is never set in the samples");
            if nullable {
                let null = values.iter().any(|v| v.get(field) == Some(&Value::Null));
                assert!(null, "{event_type}.{field} is never null in the samples");
            }
            if !required.contains(field.as_str()) {
                let absent = values.iter().any(|v| v.get(field).is_none());
                assert!(
                    absent,
                    "{event_type}.{field} is never absent in the samples"
                );
            }
        }
    }
}

#[test]
fn a_planned_delivery_is_described_field_for_field() {
    for file in [
        "WebhookEventAccepted.v1.json",
        "WebhookEventAccepted.v2.json",
    ] {
        planned_delivery_is_described_in(file);
    }
}

fn planned_delivery_is_described_in(file: &str) {
    let schema = load(file);
    let planned = &schema["$defs"]["PlannedDelivery"];
    let described: BTreeSet<&String> = planned["properties"].as_object().unwrap().keys().collect();
    let required: BTreeSet<&str> = planned["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(planned["additionalProperties"], false);
    assert_eq!(
        schema["properties"]["deliveries"]["items"]["$ref"],
        "#/$defs/PlannedDelivery"
    );
    for event in samples() {
        if let Event::WebhookEventAccepted(_) = event {
            for delivery in data_of(&event)["deliveries"].as_array().unwrap() {
                let written: BTreeSet<&String> = delivery.as_object().unwrap().keys().collect();
                assert_eq!(written, described);
                assert_eq!(
                    written.iter().map(|k| k.as_str()).collect::<BTreeSet<_>>(),
                    required
                );
            }
        }
    }
}

#[test]
fn what_the_writer_produces_is_valid_and_decodes_to_the_same_event() {
    let validators = validators();
    for event in samples() {
        assert_eq!(event.schema_version(), version_of(event.event_type()));
        let data = data_of(&event);
        let validator = &validators[event.event_type()];
        let problems = errors(validator, &data);
        assert!(problems.is_empty(), "{data}: {problems:?}");

        let encoded = event.encode(&mut salt);
        let content = (!encoded.content.is_empty()).then_some(&encoded.content[..]);
        let decoded = Event::decode(
            event.event_type(),
            event.schema_version(),
            &encoded.data,
            content,
        )
        .unwrap_or_else(|e| panic!("{data}: {e}"));
        assert_eq!(decoded, event);
    }
}

/// The bodies of `event` erased, as the log reads it once its content is gone.
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

#[test]
fn the_data_without_its_content_decodes_with_the_bodies_erased() {
    for event in samples() {
        let data = data_of(&event);
        assert_eq!(
            decode(event.event_type(), &data).unwrap_or_else(|e| panic!("{data}: {e}")),
            erased(&event),
            "{data}"
        );
    }
}

#[test]
fn version_1_data_stays_valid_against_its_schema_and_is_upcast_on_read() {
    for event in samples() {
        let event_type = event.event_type();
        if !WITH_BODIES.contains(&event_type) {
            continue;
        }
        let data = v1_data_of(&event);
        let v1 = validator(&file_name(event_type, 1));
        let problems = errors(&v1, &data);
        assert!(problems.is_empty(), "{data}: {problems:?}");
        // Version 1 is not the current shape: the current schema refuses it.
        assert!(!validators()[event_type].is_valid(&data), "{data}");
        let decoded = Event::decode(event_type, 1, &v1_bytes(&event), None)
            .unwrap_or_else(|e| panic!("{data}: {e}"));
        assert_eq!(decoded, event);
    }
}

#[test]
fn metadata_the_writer_produces_is_valid_and_decodes_back() {
    let schema = load("Metadata.v1.json");
    let validator = validator("Metadata.v1.json");
    // Every metadata field is optional, left out when empty, never null.
    assert!(schema.get("required").is_none());
    let full = serde_json::to_value(&metadata_samples()[2]).unwrap();
    let written: BTreeSet<&String> = full.as_object().unwrap().keys().collect();
    let described: BTreeSet<&String> = schema["properties"].as_object().unwrap().keys().collect();
    assert_eq!(written, described);
    let idempotency = &schema["$defs"]["Idempotency"];
    let written: BTreeSet<&String> = full["idempotency"].as_object().unwrap().keys().collect();
    let described: BTreeSet<&String> = idempotency["properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(written, described);
    assert_eq!(
        idempotency["required"],
        json!(["key", "route", "requestSha256"])
    );
    assert_eq!(
        serde_json::to_value(Metadata::default()).unwrap(),
        json!({})
    );

    for metadata in metadata_samples() {
        let data: Value = serde_json::from_slice(&metadata.to_canonical_bytes()).unwrap();
        let problems = errors(&validator, &data);
        assert!(problems.is_empty(), "{data}: {problems:?}");
        assert_eq!(
            Metadata::decode(&metadata.to_canonical_bytes()).unwrap(),
            metadata
        );
    }
}

/// Asserts that both the schema and `Event::decode` refuse `data`.
#[track_caller]
fn both_refuse(validators: &BTreeMap<&str, Validator>, event_type: &str, data: &Value) {
    assert!(
        !validators[event_type].is_valid(data),
        "the {event_type} schema accepts {data}"
    );
    match decode(event_type, data) {
        Err(DecodeError::Invalid { .. }) => {}
        other => panic!("decode of {event_type} {data} gave {other:?}"),
    }
}

#[test]
fn a_missing_required_field_is_refused() {
    let validators = validators();
    for event in samples() {
        let event_type = event.event_type();
        let schema = load(&file_name(event_type, event.schema_version()));
        let data = data_of(&event);
        for field in schema["required"].as_array().unwrap() {
            let field = field.as_str().unwrap();
            let mut missing = data.clone();
            missing.as_object_mut().unwrap().remove(field);
            assert!(
                !validators[event_type].is_valid(&missing),
                "the schema accepts {event_type} without {field}"
            );
            let nullable = schema["properties"][field]["type"]
                .as_array()
                .is_some_and(|types| types.contains(&json!("null")));
            if nullable {
                // The writer always writes nullable fields; the decoder reads an
                // absent one as null (`docs/DESIGN.md` §3: absent fields count as null).
                let mut null = data.clone();
                null[field] = Value::Null;
                assert_eq!(
                    decode(event_type, &missing).unwrap(),
                    decode(event_type, &null).unwrap(),
                    "{event_type} without {field}"
                );
            } else {
                both_refuse(&validators, event_type, &missing);
            }
        }
    }
}

#[test]
fn an_unknown_field_is_refused_at_every_level() {
    let validators = validators();
    for event in samples() {
        let mut data = data_of(&event);
        data["unexpected"] = json!(1);
        both_refuse(&validators, event.event_type(), &data);
    }

    let accepted = samples()
        .into_iter()
        .find(|e| matches!(e, Event::WebhookEventAccepted(a) if !a.deliveries.is_empty()))
        .unwrap();
    let mut data = data_of(&accepted);
    data["deliveries"][1]["status"] = json!("pending");
    both_refuse(&validators, "WebhookEventAccepted", &data);

    let metadata = validator("Metadata.v1.json");
    let full = serde_json::to_value(&metadata_samples()[2]).unwrap();
    for path in [vec![], vec!["idempotency"]] {
        let mut data = full.clone();
        let mut target = &mut data;
        for key in path {
            target = &mut target[key];
        }
        target["hash"] = json!("x");
        assert!(!metadata.is_valid(&data), "{data}");
        assert!(
            Metadata::decode(&serde_json::to_vec(&data).unwrap()).is_err(),
            "{data}"
        );
    }
    let mut no_route = full.clone();
    no_route["idempotency"]
        .as_object_mut()
        .unwrap()
        .remove("route");
    assert!(!metadata.is_valid(&no_route));
    assert!(Metadata::decode(&serde_json::to_vec(&no_route).unwrap()).is_err());
}

fn full_attempt() -> Value {
    data_of(
        &samples()
            .into_iter()
            .find(|e| matches!(e, Event::AttemptRecorded(a) if a.response_status_code.is_some()))
            .unwrap(),
    )
}

#[test]
fn attempt_values_outside_the_contract_are_refused() {
    let validators = validators();
    let base = full_attempt();
    let bad: Vec<(&str, Value)> = vec![
        ("responseStatusCode", json!(600)),
        ("responseStatusCode", json!(99)),
        ("responseStatusCode", json!(-200)),
        ("responseStatusCode", json!(200.5)),
        ("responseStatusCode", json!("200")),
        ("nextRetryAt", json!("2023-02-30T00:00Z")),
        ("nextRetryAt", json!("2023-02-29T00:00:00Z")),
        ("nextRetryAt", json!("1900-02-29T00:00Z")),
        ("nextRetryAt", json!("2023-04-31T00:00Z")),
        ("nextRetryAt", json!("2023-11-07T24:00Z")),
        ("nextRetryAt", json!("2023-11-07T23:59:60Z")),
        ("nextRetryAt", json!("2023-11-07T05:31:56+00:00")),
        ("nextRetryAt", json!("2023-11-07T05:31:56z")),
        ("nextRetryAt", json!("2023-11-07T05:31:56.Z")),
        ("nextRetryAt", json!("2023-11-07")),
        (
            "nextRetryAt",
            json!("\u{ff12}\u{ff10}\u{ff12}\u{ff13}-11-07T05:31Z"),
        ),
        ("nextRetryAt", json!(1_699_334_316)),
        ("lastError", json!("")),
        ("lastError", json!(["boom"])),
        ("status", json!("delivering")),
        ("status", json!("DELIVERED")),
        ("status", json!(null)),
        ("deliveryId", json!(7)),
        ("deliveryId", json!(null)),
        ("responseBodyDigest", json!(7)),
        ("responseBodyDigest", json!({"a": 1})),
        ("responseBody", json!({"a": 1})),
    ];
    for (field, value) in bad {
        let mut data = base.clone();
        data[field] = value;
        both_refuse(&validators, "AttemptRecorded", &data);
    }
}

#[test]
fn other_wrong_types_are_refused() {
    let validators = validators();
    let cases: Vec<(&str, &str, Value)> = vec![
        ("EndpointCreated", "enabled", json!("yes")),
        ("EndpointCreated", "eventTypes", json!("order.paid")),
        ("EndpointCreated", "eventTypes", json!([1])),
        ("EndpointCreated", "name", json!(null)),
        ("EndpointUpdated", "enabled", json!(1)),
        ("WebhookEventAccepted", "deliveries", json!({})),
        ("WebhookEventAccepted", "sourceKey", json!(42)),
        ("WebhookEventAccepted", "payloadDigest", json!(null)),
        ("WebhookEventAccepted", "payloadDigest", json!(42)),
        (
            "WebhookEventAccepted",
            "payload",
            json!({"inline": "is version 1"}),
        ),
        ("ApiKeyIssued", "secretSha256", json!(null)),
        ("ApiKeyRevoked", "keyId", json!(["key_1"])),
        ("ContentErased", "organizationId", json!(null)),
        ("ContentErased", "eventId", json!(1)),
        ("ContentErased", "reason", json!("forgotten")),
        ("ContentErased", "reason", json!(null)),
        (
            "ContentErased",
            "recordedBefore",
            json!("2023-11-14T22:13:20Z"),
        ),
        (
            "ContentErased",
            "recordedBefore",
            json!("2023-11-14T22:13:20.123456+00:00"),
        ),
        (
            "ContentErased",
            "recordedBefore",
            json!("2023-02-29T00:00:00.000000Z"),
        ),
        ("ContentErased", "recordedBefore", json!(1_700_000_000)),
    ];
    for (event_type, field, value) in cases {
        let mut data = data_of(
            &samples()
                .into_iter()
                .find(|e| e.event_type() == event_type)
                .unwrap(),
        );
        data[field] = value;
        both_refuse(&validators, event_type, &data);
    }
}

/// Where the writer is stricter than the decoder's types, the schema follows the
/// writer: these the decoder would read, but no build of hookledger writes them.
#[test]
fn the_schema_holds_the_writer_to_its_documented_shapes() {
    let validators = validators();
    let cases: Vec<(&str, &str, Value)> = vec![
        ("ApiKeyIssued", "secretSha256", json!(DIGEST.to_uppercase())),
        ("ApiKeyIssued", "secretSha256", json!(&DIGEST[1..])),
        ("ApiKeyIssued", "secretSha256", json!("not a digest")),
        ("EndpointUpdated", "name", json!(null)),
        // A body's digest is read back without its content once erased, so
        // the decoder does not check its form; the writer writes only these.
        (
            "WebhookEventAccepted",
            "payloadDigest",
            json!(DIGEST.to_uppercase()),
        ),
        ("WebhookEventAccepted", "payloadDigest", json!(&DIGEST[1..])),
        (
            "WebhookEventAccepted",
            "payloadDigest",
            json!("not a digest"),
        ),
        (
            "AttemptRecorded",
            "responseBodyDigest",
            json!(DIGEST.to_uppercase()),
        ),
        (
            "AttemptRecorded",
            "responseBodyDigest",
            json!(format!("{DIGEST}0")),
        ),
        ("AttemptRecorded", "responseBodyDigest", json!("")),
    ];
    for (event_type, field, value) in cases {
        let mut data = data_of(
            &samples()
                .into_iter()
                .rfind(|e| e.event_type() == event_type)
                .unwrap(),
        );
        data[field] = value;
        assert!(
            !validators[event_type].is_valid(&data),
            "the {event_type} schema accepts {data}"
        );
    }
    // Version 1: a body is always an object.
    let cases: Vec<(&str, &str, Value)> = vec![
        ("WebhookEventAccepted", "payload", json!([1, 2])),
        ("WebhookEventAccepted", "payload", json!("text")),
        ("AttemptRecorded", "responseBody", json!([])),
        ("AttemptRecorded", "responseBody", json!("ok")),
    ];
    for (event_type, field, value) in cases {
        let mut data = v1_data_of(
            &samples()
                .into_iter()
                .rfind(|e| e.event_type() == event_type)
                .unwrap(),
        );
        data[field] = value;
        assert!(
            !validator(&file_name(event_type, 1)).is_valid(&data),
            "the {event_type} v1 schema accepts {data}"
        );
    }
}

#[test]
fn next_retry_at_uses_the_contracts_pattern_verbatim() {
    for file in ["AttemptRecorded.v1.json", "AttemptRecorded.v2.json"] {
        attempt_fields_follow_the_contract_in(file);
    }
}

fn attempt_fields_follow_the_contract_in(file: &str) {
    let schema = load(file);
    assert_eq!(
        schema["properties"]["nextRetryAt"]["pattern"],
        CONTRACT_PATTERN
    );
    let range = &schema["properties"]["responseStatusCode"];
    assert_eq!(
        (&range["minimum"], &range["maximum"]),
        (&json!(HttpStatusCode::MIN), &json!(HttpStatusCode::MAX))
    );
    let statuses: Vec<Value> = AttemptStatus::ALL
        .iter()
        .map(|s| json!(s.as_str()))
        .collect();
    assert_eq!(schema["properties"]["status"]["enum"], json!(statuses));
}

fn date_time_like() -> impl Strategy<Value = String> {
    (
        0u32..10000,
        0u32..14,
        0u32..33,
        0u32..26,
        0u32..62,
        proptest::option::of(0u32..62),
        proptest::option::of("[0-9]{0,3}"),
        prop_oneof![Just("Z"), Just("z"), Just("+00:00"), Just("")],
    )
        .prop_map(|(y, mo, d, h, mi, s, frac, zone)| {
            let mut text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}");
            if let Some(s) = s {
                text.push_str(&format!(":{s:02}"));
                if let Some(frac) = frac {
                    text.push('.');
                    text.push_str(&frac);
                }
            }
            text.push_str(zone);
            text
        })
}

static ATTEMPT_RECORDED: LazyLock<Validator> =
    LazyLock::new(|| validator(&file_name("AttemptRecorded", version_of("AttemptRecorded"))));

static CONTENT_ERASED: LazyLock<Validator> =
    LazyLock::new(|| validator(&file_name("ContentErased", version_of("ContentErased"))));

fn retention_erasure() -> Value {
    data_of(
        &samples()
            .into_iter()
            .find(|e| matches!(e, Event::ContentErased(c) if c.recorded_before.is_some()))
            .unwrap(),
    )
}

/// Around the ledger's own time form (seconds, six fraction digits, `Z`):
/// the date and time as [`date_time_like`] varies them.
fn ledger_time_like() -> impl Strategy<Value = String> {
    (
        (0u32..10000, 0u32..14, 0u32..33),
        (0u32..26, 0u32..62, 0u32..62),
        prop_oneof![3 => Just(6usize), 1 => 0usize..10],
        "[0-9]{9}",
        prop_oneof![4 => Just("Z"), 1 => Just("z"), 1 => Just("+00:00"), 1 => Just("")],
    )
        .prop_map(|((y, mo, d), (h, mi, s), digits, fraction, zone)| {
            let mut text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
            if digits > 0 {
                text.push('.');
                text.push_str(&fraction[..digits]);
            }
            text.push_str(zone);
            text
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn schema_and_decoder_agree_on_next_retry_at(text in date_time_like()) {
        let mut data = full_attempt();
        data["nextRetryAt"] = json!(text);
        prop_assert_eq!(
            ATTEMPT_RECORDED.is_valid(&data),
            decode("AttemptRecorded", &data).is_ok(),
            "{}", text
        );
    }

    #[test]
    fn schema_and_decoder_agree_on_recorded_before(text in ledger_time_like()) {
        let mut data = retention_erasure();
        data["recordedBefore"] = json!(text);
        prop_assert_eq!(
            CONTENT_ERASED.is_valid(&data),
            decode("ContentErased", &data).is_ok(),
            "{}", text
        );
    }

    #[test]
    fn schema_and_decoder_agree_on_response_status_code(code in -1000i64..2000) {
        let mut data = full_attempt();
        data["responseStatusCode"] = json!(code);
        let valid = ATTEMPT_RECORDED.is_valid(&data);
        prop_assert_eq!(valid, decode("AttemptRecorded", &data).is_ok(), "{}", code);
        prop_assert_eq!(valid, (100..=599).contains(&code), "{}", code);
    }
}
