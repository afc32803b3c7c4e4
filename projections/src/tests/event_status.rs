//! A webhook event's status follows from its deliveries (`docs/DESIGN.md` §3): none is
//! `skipped`, any `pending` or `retry_scheduled` is `pending`, all `delivered` is
//! `delivered`, anything else `failed`. `updatedAt` is its latest change.

use crate::testing::*;
use crate::values::{AttemptStatus, EventStatus};

use AttemptStatus::{Delivered, Failed, Pending, RetryScheduled};

/// Two endpoints for every type; `evt_1` fans out to `dlv_0001` and `dlv_0002`.
fn two_deliveries() -> Scenario {
    given([endpoint("ep_1", ORG, &[]), endpoint("ep_2", ORG, &[])]).and(accept(
        "evt_1",
        ORG,
        "order.paid",
    ))
}

#[test]
fn an_event_with_no_delivery_is_skipped() {
    let model = given([])
        .when(accept("evt_1", ORG, "order.paid"))
        .then([accepted("evt_1", ORG, "order.paid", [])]);

    let event = model.event(ORG, "evt_1");
    assert_eq!(event.status, EventStatus::Skipped);
    assert!(event.delivery_ids.is_empty());
    assert_eq!((event.created_at, event.updated_at), (at(1), at(1)));
}

#[test]
fn an_event_is_pending_before_any_attempt() {
    let model = two_deliveries().model;
    let event = model.event(ORG, "evt_1");
    assert_eq!(event.status, EventStatus::Pending);
    assert_eq!(event.delivery_ids, ["dlv_0001", "dlv_0002"]);
}

#[test]
fn the_event_status_follows_the_latest_attempt_of_each_delivery() {
    // (first delivery, second delivery) -> event, written out rather than derived.
    let cases = [
        (Delivered, Delivered, EventStatus::Delivered),
        (Delivered, Pending, EventStatus::Pending),
        (Delivered, RetryScheduled, EventStatus::Pending),
        (Delivered, Failed, EventStatus::Failed),
        (Failed, Failed, EventStatus::Failed),
        (Failed, Pending, EventStatus::Pending),
        (Failed, RetryScheduled, EventStatus::Pending),
        (Failed, Delivered, EventStatus::Failed),
        (RetryScheduled, RetryScheduled, EventStatus::Pending),
        (Pending, Pending, EventStatus::Pending),
        (RetryScheduled, Delivered, EventStatus::Pending),
    ];
    for (first, second, expected) in cases {
        let model = two_deliveries()
            .and(attempt("dlv_0001", ORG, first))
            .and(attempt("dlv_0002", ORG, second))
            .model;
        assert_eq!(
            model.event(ORG, "evt_1").status,
            expected,
            "{first:?} and {second:?}"
        );
    }
}

#[test]
fn one_delivery_attempted_and_the_other_untouched_keeps_the_event_pending() {
    let model = two_deliveries()
        .and(attempt("dlv_0001", ORG, Delivered).code(200))
        .model;
    assert_eq!(model.event(ORG, "evt_1").status, EventStatus::Pending);
}

#[test]
fn a_delivered_event_goes_back_to_pending_or_failed_with_a_later_attempt() {
    let delivered = two_deliveries()
        .and(attempt("dlv_0001", ORG, Delivered))
        .and(attempt("dlv_0002", ORG, Delivered));
    assert_eq!(
        delivered.model.event(ORG, "evt_1").status,
        EventStatus::Delivered
    );

    let pending = delivered.and(attempt("dlv_0002", ORG, Pending));
    assert_eq!(
        pending.model.event(ORG, "evt_1").status,
        EventStatus::Pending
    );

    let failed = pending.and(attempt("dlv_0002", ORG, Failed));
    assert_eq!(failed.model.event(ORG, "evt_1").status, EventStatus::Failed);
}

#[test]
fn the_event_status_equals_derive_over_its_deliveries() {
    let model = two_deliveries().and(attempt("dlv_0002", ORG, Failed)).model;
    let tenant = model.org(ORG);
    let event = model.event(ORG, "evt_1");
    let derived = EventStatus::derive(
        event
            .delivery_ids
            .iter()
            .map(|id| tenant.delivery(id).unwrap().status),
    );
    assert_eq!(event.status, derived);
}

#[test]
fn updated_at_is_the_time_of_the_latest_attempt_on_any_delivery() {
    // Positions: endpoints 1-2, accepted 3, attempts 4 and 5.
    let scenario = two_deliveries();
    assert_eq!(scenario.model.event(ORG, "evt_1").updated_at, at(3));

    let scenario = scenario.and(attempt("dlv_0002", ORG, Failed));
    let event = scenario.model.event(ORG, "evt_1");
    assert_eq!((event.created_at, event.updated_at), (at(3), at(4)));

    let scenario = scenario.and(attempt("dlv_0001", ORG, Delivered));
    let event = scenario.model.event(ORG, "evt_1");
    assert_eq!((event.created_at, event.updated_at), (at(3), at(5)));
}

#[test]
fn an_attempt_on_another_event_leaves_this_one_alone() {
    let model = given([endpoint("ep_1", ORG, &[])])
        .and(accept("evt_1", ORG, "order.paid"))
        .and(accept("evt_2", ORG, "order.paid"))
        .and(attempt("dlv_0002", ORG, Delivered))
        .model;

    let first = model.event(ORG, "evt_1");
    assert_eq!(first.status, EventStatus::Pending);
    assert_eq!(first.updated_at, at(2));
    let second = model.event(ORG, "evt_2");
    assert_eq!(second.status, EventStatus::Delivered);
    assert_eq!(second.updated_at, at(4));
}
