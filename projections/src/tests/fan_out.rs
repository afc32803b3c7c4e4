//! Accepting an event fans it out (`docs/DESIGN.md` §2): one delivery per enabled endpoint
//! subscribed to its type (empty `eventTypes` = all), each with the endpoint's
//! name and url as they stood; `skipped` when none matches.

use crate::body::SALT_LEN;
use crate::event::PlannedDelivery;
use crate::testing::*;
use crate::values::{AttemptStatus, EventStatus};

#[test]
fn one_delivery_per_enabled_subscribed_endpoint_in_endpoint_order() {
    let model = given([
        endpoint("ep_1", ORG, &["order.paid"]),
        endpoint("ep_2", ORG, &["order.refunded"]),
        endpoint("ep_3", ORG, &[]),
        disabled_endpoint("ep_4", ORG, &["order.paid"]),
        disabled_endpoint("ep_5", ORG, &[]),
        endpoint("ep_6", ORG, &["order.refunded", "order.paid"]),
    ])
    .when(accept("evt_1", ORG, "order.paid"))
    .then([accepted(
        "evt_1",
        ORG,
        "order.paid",
        [
            planned("dlv_0001", "ep_1"),
            planned("dlv_0002", "ep_3"),
            planned("dlv_0003", "ep_6"),
        ],
    )]);

    let event = model.event(ORG, "evt_1");
    assert_eq!(event.delivery_ids, ["dlv_0001", "dlv_0002", "dlv_0003"]);
    assert_eq!(event.status, EventStatus::Pending);
    let tenant = model.org(ORG);
    assert_eq!(tenant.deliveries.len(), 3);
    for (delivery, endpoint) in [
        ("dlv_0001", "ep_1"),
        ("dlv_0002", "ep_3"),
        ("dlv_0003", "ep_6"),
    ] {
        let d = tenant.delivery(delivery).unwrap();
        assert_eq!(d.endpoint_id, endpoint);
        assert_eq!(d.endpoint_name, endpoint_name(endpoint));
        assert_eq!(d.endpoint_url, endpoint_url(endpoint));
        assert_eq!(d.event_id, "evt_1");
        assert_eq!(d.organization_id, ORG);
        assert_eq!(d.status, AttemptStatus::Pending);
    }
}

#[test]
fn an_endpoint_with_no_event_types_receives_every_type() {
    given([endpoint("ep_1", ORG, &[])])
        .when(accept("evt_1", ORG, "anything.at.all"))
        .then([accepted(
            "evt_1",
            ORG,
            "anything.at.all",
            [planned("dlv_0001", "ep_1")],
        )]);
}

#[test]
fn event_types_match_exactly() {
    given([endpoint("ep_1", ORG, &["order"])])
        .when(accept("evt_1", ORG, "order.paid"))
        .then([accepted("evt_1", ORG, "order.paid", [])]);
}

#[test]
fn no_matching_endpoint_makes_the_event_skipped() {
    let model = given([
        endpoint("ep_1", ORG, &["invoice.sent"]),
        disabled_endpoint("ep_2", ORG, &[]),
    ])
    .when(accept("evt_1", ORG, "order.paid"))
    .then([accepted("evt_1", ORG, "order.paid", [])]);

    let event = model.event(ORG, "evt_1");
    assert_eq!(event.status, EventStatus::Skipped);
    assert!(model.org(ORG).deliveries.is_empty());
}

#[test]
fn disabling_an_endpoint_stops_its_fan_out_and_enabling_restores_it() {
    let disabled = given([endpoint("ep_1", ORG, &[]), endpoint("ep_2", ORG, &[])])
        .and(patch("ep_1", ORG).enabled(false));
    let model = disabled
        .when(accept("evt_1", ORG, "order.paid"))
        .then([accepted(
            "evt_1",
            ORG,
            "order.paid",
            [planned("dlv_0001", "ep_2")],
        )]);
    assert_eq!(model.event(ORG, "evt_1").delivery_ids, ["dlv_0001"]);

    given([disabled_endpoint("ep_1", ORG, &[])])
        .and(patch("ep_1", ORG).enabled(true))
        .when(accept("evt_1", ORG, "order.paid"))
        .then([accepted(
            "evt_1",
            ORG,
            "order.paid",
            [planned("dlv_0001", "ep_1")],
        )]);
}

#[test]
fn changing_event_types_changes_who_receives_later_events() {
    given([endpoint("ep_1", ORG, &["order.paid"])])
        .and(patch("ep_1", ORG).event_types(&["invoice.sent"]))
        .when(accept("evt_1", ORG, "order.paid"))
        .then([accepted("evt_1", ORG, "order.paid", [])]);

    given([endpoint("ep_1", ORG, &["invoice.sent"])])
        .and(patch("ep_1", ORG).event_types(&[]))
        .when(accept("evt_1", ORG, "order.paid"))
        .then([accepted(
            "evt_1",
            ORG,
            "order.paid",
            [planned("dlv_0001", "ep_1")],
        )]);
}

#[test]
fn a_delivery_keeps_the_endpoint_name_and_url_it_was_planned_with() {
    let model = given([endpoint("ep_1", ORG, &[])])
        .and(accept("evt_1", ORG, "order.paid"))
        .and(
            patch("ep_1", ORG)
                .name("renamed")
                .url("https://moved.example/hook"),
        )
        .when(accept("evt_2", ORG, "order.paid"))
        .then([accepted(
            "evt_2",
            ORG,
            "order.paid",
            [PlannedDelivery {
                delivery_id: "dlv_0002".into(),
                endpoint_id: "ep_1".into(),
                endpoint_name: "renamed".into(),
                endpoint_url: "https://moved.example/hook".into(),
            }],
        )]);

    let old = model.delivery(ORG, "dlv_0001");
    assert_eq!(old.endpoint_name, endpoint_name("ep_1"));
    assert_eq!(old.endpoint_url, endpoint_url("ep_1"));
    let new = model.delivery(ORG, "dlv_0002");
    assert_eq!(new.endpoint_name, "renamed");
    assert_eq!(new.endpoint_url, "https://moved.example/hook");
}

#[test]
fn disabling_an_endpoint_leaves_its_existing_deliveries_alone() {
    let model = given([endpoint("ep_1", ORG, &[])])
        .and(accept("evt_1", ORG, "order.paid"))
        .and(patch("ep_1", ORG).enabled(false))
        .and(attempt("dlv_0001", ORG, AttemptStatus::Delivered))
        .model;

    assert_eq!(model.event(ORG, "evt_1").delivery_ids, ["dlv_0001"]);
    assert_eq!(
        model.delivery(ORG, "dlv_0001").status,
        AttemptStatus::Delivered
    );
}

#[test]
fn the_payload_is_kept_in_the_log_and_the_event_type_with_the_event() {
    let scenario = given([]).and(accept("evt_1", ORG, "order.paid"));
    let model = &scenario.model;

    let event = model.event(ORG, "evt_1");
    assert_eq!(event.event_type, "order.paid");
    assert_eq!(event.source_key, None);
    assert_eq!(event.organization_id, ORG);
    assert_eq!(event.erased_before, 0);
    // The log keeps it as canonical JSON (keys sorted, no whitespace) after
    // its salt, as the accepted event's content.
    let canonical = r#"{"order":{"id":42,"total":"9.99"},"tags":["a","b"]}"#;
    let accepted = &scenario.log.last().unwrap().event;
    let content = accepted.encode(&mut || [9; SALT_LEN]).content;
    assert_eq!(&content[..SALT_LEN], &[9; SALT_LEN]);
    assert_eq!(
        std::str::from_utf8(&content[SALT_LEN..]).unwrap(),
        canonical
    );
    assert_eq!(
        scenario.payload_in_log("evt_1").kept().unwrap().get(),
        canonical
    );
    // The read model holds no copy of it: erasing the log's leaves none.
    let rows = format!("{model:?}");
    assert!(rows.contains("order.paid"), "{rows}");
    assert!(!rows.contains("9.99"), "{rows}");
}
