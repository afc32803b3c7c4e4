//! The read model as a function of the log (`docs/DESIGN.md` §4, §6): idempotency records
//! folded from metadata, positions applied once, rebuilds equal to live state, and
//! rkyv snapshots that restore the same model.

use serde_json::json;

use crate::body::Body;
use crate::decide::Command;
use crate::event::{Event, Idempotency, Metadata, stream};
use crate::model::{Settings, apply};
use crate::rows::MemoryRows;
use crate::testing::*;
use crate::values::AttemptStatus;

const ENDPOINTS: &str = "POST /v1/outbound-webhook-endpoints";
const EVENTS: &str = "POST /v1/outbound-webhook-events";
const ATTEMPTS: &str = "POST /v1/outbound-webhook-deliveries/dlv_0001/attempts";

fn sha(c: char) -> String {
    c.to_string().repeat(64)
}

fn keyed(route: &str, key: &str, body: char) -> Metadata {
    Metadata {
        request_id: Some(format!("req-{key}")),
        key_id: Some("key_1".into()),
        idempotency: Some(Idempotency {
            key: key.to_owned(),
            route: route.to_owned(),
            request_sha256: sha(body),
        }),
    }
}

/// A log that touches every kind of event and every optional field.
fn busy_day() -> Scenario {
    let mut scenario = given([
        endpoint("ep_1", ORG, &[]),
        endpoint("ep_2", ORG, &["order.paid"]),
        disabled_endpoint("ep_3", ORG, &[]),
        endpoint("ep_9", OTHER_ORG, &[]),
    ]);
    scenario.fold(
        Event::ApiKeyIssued(crate::event::ApiKeyIssued {
            key_id: "key_1".into(),
            organization_id: ORG.into(),
            secret_sha256: sha('a'),
        }),
        Metadata::default(),
    );
    scenario
        .and(accept_keyed("evt_1", ORG, "order.paid", "order-1"))
        .and(accept("evt_2", ORG, "invoice.sent"))
        .and(accept("evt_3", OTHER_ORG, "order.paid"))
        .and(
            attempt("dlv_0001", ORG, AttemptStatus::RetryScheduled)
                .code(503)
                .body(json!({"retry": true}))
                .error("busy")
                .retry_at("2024-02-29T23:59:59.999999Z"),
        )
        .and(attempt("dlv_0001", ORG, AttemptStatus::Delivered).code(200))
        .and(attempt("dlv_0002", ORG, AttemptStatus::Failed).error("refused"))
        .and(attempt("dlv_0004", OTHER_ORG, AttemptStatus::Pending))
        .and(patch("ep_1", ORG).name("renamed").enabled(false))
        // Every endpoint for the type is now disabled: skipped.
        .and(accept("evt_4", ORG, "invoice.sent"))
        .and(Command::RevokeApiKey {
            key_id: "key_1".into(),
        })
}

#[test]
fn idempotency_keys_are_recorded_with_position_and_resource() {
    let mut scenario = given([endpoint("ep_1", ORG, &[])]);
    scenario
        .fold(endpoint("ep_2", ORG, &[]), keyed(ENDPOINTS, "k-ep", '1'))
        .fold(
            accepted("evt_1", ORG, "order.paid", [planned("dlv_0001", "ep_1")]),
            keyed(EVENTS, "k-evt", '2'),
        )
        .fold(
            attempt("dlv_0001", ORG, AttemptStatus::Failed).recorded("evt_1"),
            keyed(ATTEMPTS, "k-att", '3'),
        )
        .fold(
            patch("ep_2", ORG).enabled(false).updated(),
            keyed("PATCH /v1/outbound-webhook-endpoints/ep_2", "k-patch", '4'),
        );

    let tenant = scenario.model.org(ORG);
    let record = tenant.idempotency(ENDPOINTS, "k-ep").expect("recorded");
    assert_eq!(record.position, 2);
    assert_eq!(record.resource_id, "ep_2");
    assert_eq!(record.request_sha256, sha('1'));
    assert_eq!(record.recorded_at, at(2));

    let record = tenant.idempotency(EVENTS, "k-evt").expect("recorded");
    assert_eq!((record.position, record.resource_id.as_str()), (3, "evt_1"));

    // The record-attempt response is the parent event's snapshot, so the
    // resource to answer a repeat with is the event.
    let record = tenant.idempotency(ATTEMPTS, "k-att").expect("recorded");
    assert_eq!((record.position, record.resource_id.as_str()), (4, "evt_1"));
    assert_eq!(record.request_sha256, sha('3'));

    let record = tenant
        .idempotency("PATCH /v1/outbound-webhook-endpoints/ep_2", "k-patch")
        .expect("recorded");
    assert_eq!((record.position, record.resource_id.as_str()), (5, "ep_2"));

    assert_eq!(tenant.idempotency.len(), 4);
}

#[test]
fn the_first_write_with_an_idempotency_key_wins() {
    let mut scenario = given([]);
    scenario
        .fold(endpoint("ep_1", ORG, &[]), keyed(ENDPOINTS, "k", '1'))
        .fold(endpoint("ep_2", ORG, &[]), keyed(ENDPOINTS, "k", '2'));

    let record = scenario.model.org(ORG).idempotency(ENDPOINTS, "k").unwrap();
    assert_eq!(record.position, 1);
    assert_eq!(record.resource_id, "ep_1");
    assert_eq!(record.request_sha256, sha('1'));
    assert_eq!(record.recorded_at, at(1));
}

#[test]
fn idempotency_keys_are_per_route_and_per_organization() {
    let mut scenario = given([]);
    scenario
        .fold(endpoint("ep_1", ORG, &[]), keyed(ENDPOINTS, "k", '1'))
        .fold(accepted("evt_1", ORG, "t", []), keyed(EVENTS, "k", '2'))
        .fold(endpoint("ep_2", OTHER_ORG, &[]), keyed(ENDPOINTS, "k", '3'));

    let a = scenario.model.org(ORG);
    assert_eq!(a.idempotency(ENDPOINTS, "k").unwrap().resource_id, "ep_1");
    assert_eq!(a.idempotency(EVENTS, "k").unwrap().resource_id, "evt_1");
    assert!(a.idempotency(ENDPOINTS, "other").is_none());
    let b = scenario.model.org(OTHER_ORG);
    assert_eq!(b.idempotency(ENDPOINTS, "k").unwrap().resource_id, "ep_2");
    assert!(b.idempotency(EVENTS, "k").is_none());
}

#[test]
fn events_without_an_idempotency_key_record_none() {
    let model = busy_day().model;
    assert!(model.org(ORG).idempotency.is_empty());
    assert!(model.org(OTHER_ORG).idempotency.is_empty());
}

#[test]
fn two_fresh_models_fed_the_same_events_are_equal() {
    let day = busy_day();
    let mut first = MemoryRows::default();
    let mut second = MemoryRows::default();
    for recorded in &day.log {
        apply(&mut first, recorded, &Settings::default()).unwrap();
    }
    for recorded in &day.log {
        apply(&mut second, recorded, &Settings::default()).unwrap();
    }
    assert_eq!(first, second);
    assert_eq!(first, day.model);
}

/// An answer about the past (an idempotent repeat, an attempt whose delivery
/// moved on since) is computed from the live rows; it must equal the rows
/// folded only up to that position, at every position.
#[test]
fn every_event_as_of_any_position_equals_the_log_folded_up_to_it() {
    let mut day = busy_day()
        .and(attempt("dlv_0002", ORG, AttemptStatus::Delivered).code(200))
        .and(attempt("dlv_0001", ORG, AttemptStatus::Failed).error("gone"))
        .and(attempt("dlv_0002", ORG, AttemptStatus::Failed));
    day.fold(endpoint("ep_5", ORG, &[]), Metadata::default());
    let live = &day.model;
    let events = ["evt_1", "evt_2", "evt_3", "evt_4"];
    let mut checked = 0;
    for cut in 0..=day.log.len() {
        let mut past = MemoryRows::default();
        for recorded in &day.log[..cut] {
            apply(&mut past, recorded, &Settings::default()).unwrap();
        }
        for org in [ORG, OTHER_ORG] {
            for id in events {
                let kept = || Body::Kept(payload());
                let then = past.tenant(org).and_then(|t| t.event_snapshot(id, kept()));
                let as_of = live
                    .tenant(org)
                    .and_then(|t| t.event_snapshot_as_of(id, kept(), cut as u64));
                assert_eq!(
                    then.as_ref().map(serde_json::to_value).map(Result::unwrap),
                    as_of.as_ref().map(serde_json::to_value).map(Result::unwrap),
                    "{org}/{id} at position {cut}"
                );
                checked += usize::from(then.is_some());
            }
        }
    }
    assert!(checked > 40, "only {checked} answers were compared");
}

#[test]
fn every_command_names_the_one_stream_it_appends_to() {
    let model = busy_day().model;
    let cases: [(Command, String); 6] = [
        (
            Command::CreateEndpoint {
                endpoint_id: "ep_7".into(),
                organization_id: ORG.into(),
                name: "n".into(),
                url: "u".into(),
                event_types: vec![],
                enabled: true,
            },
            stream::endpoint("ep_7"),
        ),
        (
            patch("ep_1", ORG).name("x").into(),
            stream::endpoint("ep_1"),
        ),
        (accept("evt_7", ORG, "t"), stream::event("evt_7")),
        (
            attempt("dlv_0001", ORG, AttemptStatus::Failed).into(),
            stream::delivery("dlv_0001"),
        ),
        (
            Command::IssueApiKey {
                key_id: "key_2".into(),
                organization_id: OTHER_ORG.into(),
                secret_sha256: sha('b'),
            },
            stream::api_keys(OTHER_ORG),
        ),
        (
            Command::RevokeApiKey {
                key_id: "key_1".into(),
            },
            stream::api_keys(ORG),
        ),
    ];
    for (command, expected) in cases {
        assert_eq!(command.stream(&model), expected, "{command:?}");
    }
    assert_eq!(stream::delivery("dlv_1"), "delivery-dlv_1");
    assert_eq!(stream::api_keys("org_a"), "apikeys-org_a");
}

#[test]
fn an_idempotency_record_stands_for_its_ttl_and_a_later_use_starts_anew() {
    // Events are one second apart; keys live two seconds here.
    let settings = Settings {
        idempotency_ttl: 2_000_000,
    };
    let mut rows = MemoryRows::default();
    let keyed_endpoint = |n: u64, id: &str, body: char| crate::event::Recorded {
        position: n,
        version: 0,
        recorded_at: at(n),
        metadata: keyed(ENDPOINTS, "k", body),
        event: endpoint(id, ORG, &[]),
    };
    let record = |rows: &MemoryRows| rows.org(ORG).idempotency(ENDPOINTS, "k").cloned().unwrap();
    apply(&mut rows, &keyed_endpoint(1, "ep_1", 'a'), &settings).unwrap();
    // Within the TTL (up to and including its last microsecond) the first use stands.
    apply(&mut rows, &keyed_endpoint(3, "ep_2", 'b'), &settings).unwrap();
    assert_eq!(record(&rows).resource_id, "ep_1");
    assert!(record(&rows).live_at(at(3), &settings));
    // After it, the key is new: the next use is recorded in its place.
    assert!(!record(&rows).live_at(at(4), &settings));
    apply(&mut rows, &keyed_endpoint(4, "ep_3", 'c'), &settings).unwrap();
    assert_eq!(record(&rows).resource_id, "ep_3");
    assert_eq!(record(&rows).request_sha256, sha('c'));
    assert_eq!(record(&rows).position, 4);
}
