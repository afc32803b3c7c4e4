//! The JSON the API returns (`docs/DESIGN.md` §1): the record-attempt response is the parent
//! event's snapshot; every nullable field is present, as `null` when empty, and
//! every timestamp is RFC 3339 UTC with a literal `Z`.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{Value, json};

use crate::body::Body;
use crate::testing::*;
use crate::values::AttemptStatus;
use crate::view::{DeliverySnapshot, DeliveryView, EndpointView, EventSnapshot};

/// `OutboundWebhookDeliverySnapshot` as `docs/DESIGN.md` §1 lists it, plus `status`.
const DELIVERY_KEYS: [&str; 14] = [
    "id",
    "organizationId",
    "endpointId",
    "endpointName",
    "endpointUrl",
    "attemptCount",
    "responseStatusCode",
    "lastError",
    "nextRetryAt",
    "attemptedAt",
    "deliveredAt",
    "createdAt",
    "updatedAt",
    "status",
];

/// The record-attempt response as `docs/DESIGN.md` §1 lists it.
const EVENT_KEYS: [&str; 10] = [
    "id",
    "organizationId",
    "eventType",
    "sourceKey",
    "status",
    "endpointCount",
    "payload",
    "deliveries",
    "createdAt",
    "updatedAt",
];

/// Serialises as the API does: to text, then read back.
fn json_of(view: &impl Serialize) -> Value {
    serde_json::from_str(&serde_json::to_string(view).unwrap()).unwrap()
}

fn keys(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect()
}

fn is_utc_timestamp(value: &Value) -> bool {
    let pattern =
        regex::Regex::new(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$")
            .unwrap();
    value.as_str().is_some_and(|text| pattern.is_match(text))
}

/// `evt_1` fans out to `dlv_0001` (ep_1) and `dlv_0002` (ep_2); one attempt on the first.
fn snapshot_after_one_attempt() -> Value {
    let scenario = given([endpoint("ep_1", ORG, &[]), endpoint("ep_2", ORG, &[])])
        .and(accept_keyed("evt_1", ORG, "order.paid", "order-42"))
        .and(
            attempt("dlv_0001", ORG, AttemptStatus::RetryScheduled)
                .code(503)
                .body(json!({"ignored": "by the view"}))
                .error("upstream busy")
                .retry_at("2023-11-15T00:00Z"),
        );
    json_of(&scenario.snapshot(ORG, "evt_1"))
}

#[test]
fn the_event_snapshot_has_exactly_the_contract_keys() {
    let snapshot = snapshot_after_one_attempt();
    assert_eq!(keys(&snapshot), BTreeSet::from(EVENT_KEYS));
    for delivery in snapshot["deliveries"].as_array().unwrap() {
        assert_eq!(keys(delivery), BTreeSet::from(DELIVERY_KEYS));
    }
}

#[test]
fn the_event_snapshot_is_exactly_as_folded() {
    assert_eq!(
        snapshot_after_one_attempt(),
        json!({
            "id": "evt_1",
            "organizationId": ORG,
            "eventType": "order.paid",
            "sourceKey": "order-42",
            "status": "pending",
            "endpointCount": 2,
            "payload": {"order": {"id": 42, "total": "9.99"}, "tags": ["a", "b"]},
            "deliveries": [
                {
                    "id": "dlv_0001",
                    "organizationId": ORG,
                    "endpointId": "ep_1",
                    "endpointName": endpoint_name("ep_1"),
                    "endpointUrl": endpoint_url("ep_1"),
                    "attemptCount": 1,
                    "responseStatusCode": 503,
                    "lastError": "upstream busy",
                    "nextRetryAt": "2023-11-15T00:00:00.000000Z",
                    "attemptedAt": "2023-11-14T22:13:24.000000Z",
                    "deliveredAt": null,
                    "createdAt": "2023-11-14T22:13:23.000000Z",
                    "updatedAt": "2023-11-14T22:13:24.000000Z",
                    "status": "retry_scheduled",
                },
                {
                    "id": "dlv_0002",
                    "organizationId": ORG,
                    "endpointId": "ep_2",
                    "endpointName": endpoint_name("ep_2"),
                    "endpointUrl": endpoint_url("ep_2"),
                    "attemptCount": 0,
                    "responseStatusCode": null,
                    "lastError": null,
                    "nextRetryAt": null,
                    "attemptedAt": null,
                    "deliveredAt": null,
                    "createdAt": "2023-11-14T22:13:23.000000Z",
                    "updatedAt": "2023-11-14T22:13:23.000000Z",
                    "status": "pending",
                },
            ],
            "createdAt": "2023-11-14T22:13:23.000000Z",
            "updatedAt": "2023-11-14T22:13:24.000000Z",
        })
    );
}

#[test]
fn nullable_fields_are_present_as_null_and_timestamps_are_utc() {
    let snapshot = json_of(
        &given([])
            .and(accept("evt_1", ORG, "order.paid"))
            .snapshot(ORG, "evt_1"),
    );
    assert_eq!(keys(&snapshot), BTreeSet::from(EVENT_KEYS));
    assert_eq!(snapshot["sourceKey"], Value::Null);
    assert_eq!(snapshot["status"], "skipped");
    assert_eq!(snapshot["endpointCount"], 0);
    assert_eq!(snapshot["deliveries"], json!([]));
    assert!(is_utc_timestamp(&snapshot["createdAt"]));
    assert!(is_utc_timestamp(&snapshot["updatedAt"]));

    let model = given([endpoint("ep_1", ORG, &[])])
        .and(accept("evt_1", ORG, "order.paid"))
        .model;
    let delivery = json_of(&DeliverySnapshot::from(model.delivery(ORG, "dlv_0001")));
    assert_eq!(keys(&delivery), BTreeSet::from(DELIVERY_KEYS));
    for field in [
        "responseStatusCode",
        "lastError",
        "nextRetryAt",
        "attemptedAt",
        "deliveredAt",
    ] {
        assert_eq!(delivery[field], Value::Null, "{field}");
    }
    assert!(is_utc_timestamp(&delivery["createdAt"]));
    assert!(is_utc_timestamp(&delivery["updatedAt"]));
}

#[test]
fn every_timestamp_of_a_delivered_delivery_is_utc() {
    let model = given([endpoint("ep_1", ORG, &[])])
        .and(accept("evt_1", ORG, "order.paid"))
        .and(
            attempt("dlv_0001", ORG, AttemptStatus::Delivered)
                .code(200)
                .retry_at("2023-11-07T05:31:56.1234567Z"),
        )
        .model;
    let delivery = json_of(&DeliverySnapshot::from(model.delivery(ORG, "dlv_0001")));
    for field in [
        "nextRetryAt",
        "attemptedAt",
        "deliveredAt",
        "createdAt",
        "updatedAt",
    ] {
        assert!(
            is_utc_timestamp(&delivery[field]),
            "{field}: {}",
            delivery[field]
        );
    }
    // Truncated to microseconds, the read model's precision.
    assert_eq!(delivery["nextRetryAt"], "2023-11-07T05:31:56.123456Z");
    assert_eq!(delivery["status"], "delivered");
}

#[test]
fn the_event_status_is_one_of_the_contract_values() {
    let cases = [
        (None, "pending"),
        (Some(AttemptStatus::Pending), "pending"),
        (Some(AttemptStatus::RetryScheduled), "pending"),
        (Some(AttemptStatus::Delivered), "delivered"),
        (Some(AttemptStatus::Failed), "failed"),
    ];
    for (status, expected) in cases {
        let mut scenario = given([endpoint("ep_1", ORG, &[])]).and(accept("evt_1", ORG, "t"));
        if let Some(status) = status {
            scenario = scenario.and(attempt("dlv_0001", ORG, status));
        }
        let snapshot = json_of(&scenario.snapshot(ORG, "evt_1"));
        assert_eq!(snapshot["status"], expected, "{status:?}");
    }
}

#[test]
fn a_delivery_view_adds_the_event_id_to_the_snapshot() {
    let model = given([endpoint("ep_1", ORG, &[])])
        .and(accept("evt_1", ORG, "order.paid"))
        .model;
    let view = json_of(&DeliveryView::from(model.delivery(ORG, "dlv_0001")));
    let mut expected = BTreeSet::from(DELIVERY_KEYS);
    expected.insert("eventId");
    assert_eq!(keys(&view), expected);
    assert_eq!(view["eventId"], "evt_1");
}

#[test]
fn an_endpoint_view_is_camel_case_with_utc_timestamps() {
    let model = given([endpoint("ep_1", ORG, &["order.paid"])]).model;
    let view = json_of(&EndpointView::from(&model.org(ORG).endpoints["ep_1"]));
    assert_eq!(
        view,
        json!({
            "id": "ep_1",
            "organizationId": ORG,
            "name": endpoint_name("ep_1"),
            "url": endpoint_url("ep_1"),
            "eventTypes": ["order.paid"],
            "enabled": true,
            "createdAt": "2023-11-14T22:13:21.000000Z",
            "updatedAt": "2023-11-14T22:13:21.000000Z",
        })
    );
}

#[test]
fn an_unknown_event_has_no_snapshot() {
    let model = given([]).and(accept("evt_1", ORG, "t")).model;
    let kept = || Body::Kept(payload());
    assert!(model.org(ORG).event_snapshot("evt_2", kept()).is_none());
    let known: Option<EventSnapshot> = model.org(ORG).event_snapshot("evt_1", kept());
    assert!(known.is_some());
}

#[test]
fn an_erased_payload_is_null_and_marked_and_the_contract_shape_is_an_empty_object() {
    let scenario = given([endpoint("ep_1", ORG, &[])])
        .and(accept("evt_1", ORG, "order.paid"))
        .and(erase_event("evt_1", ORG));
    let kept = scenario.snapshot(ORG, "evt_1");
    let erased = scenario
        .model
        .org(ORG)
        .event_snapshot("evt_1", Body::Erased)
        .unwrap();
    assert!(erased.payload_erased);

    let text = String::from_utf8(erased.to_json()).unwrap();
    assert!(
        text.contains(r#","payload":null,"payloadErased":true,"deliveries":["#),
        "{text}"
    );
    assert_eq!(text.as_bytes(), serde_json::to_vec(&erased).unwrap());
    let with_marker: BTreeSet<&str> = EVENT_KEYS.into_iter().chain(["payloadErased"]).collect();
    let value = json_of(&erased);
    assert_eq!(keys(&value), with_marker);

    // The contract requires an object: `{}`, still marked.
    let contract = erased.clone().for_contract();
    let text = String::from_utf8(contract.to_json()).unwrap();
    assert!(
        text.contains(r#","payload":{},"payloadErased":true,"deliveries":["#),
        "{text}"
    );
    assert_eq!(text.as_bytes(), serde_json::to_vec(&contract).unwrap());

    // Erasure changes nothing else in the snapshot.
    let mut rest = value.clone();
    let mut kept_rest = json_of(&kept);
    for v in [&mut rest, &mut kept_rest] {
        let o = v.as_object_mut().unwrap();
        o.remove("payload");
        o.remove("payloadErased");
    }
    assert_eq!(rest, kept_rest);

    // A kept payload has no marker, and the contract shape leaves it as it is.
    assert_eq!(keys(&json_of(&kept)), BTreeSet::from(EVENT_KEYS));
    assert_eq!(json_of(&kept.clone().for_contract()), json_of(&kept));
    assert_eq!(
        json_of(&kept)["payload"],
        json!({"order": {"id": 42, "total": "9.99"}, "tags": ["a", "b"]})
    );
}
