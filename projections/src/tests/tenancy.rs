//! Organizations are isolated (`docs/DESIGN.md` §3): another organization's resource does
//! not exist for you, and its endpoints never see your events.

use crate::Rejection;
use crate::testing::*;
use crate::values::AttemptStatus;

#[test]
fn a_delivery_of_one_organization_is_not_found_for_another() {
    let scenario = given([endpoint("ep_1", ORG, &[])]).and(accept("evt_1", ORG, "order.paid"));
    let before = scenario.model.clone();

    let model = scenario
        .when(attempt("dlv_0001", OTHER_ORG, AttemptStatus::Delivered))
        .then_err(Rejection::DeliveryNotFound("dlv_0001".into()));

    assert_eq!(model, before);
    assert_eq!(model.delivery(ORG, "dlv_0001").attempt_count, 0);
    assert!(model.tenant(OTHER_ORG).is_none());
}

#[test]
fn endpoints_of_another_organization_never_receive_an_event() {
    let model = given([
        endpoint("ep_b1", OTHER_ORG, &[]),
        endpoint("ep_a1", ORG, &["order.paid"]),
        endpoint("ep_b2", OTHER_ORG, &["order.paid"]),
    ])
    .when(accept("evt_1", ORG, "order.paid"))
    .then([accepted(
        "evt_1",
        ORG,
        "order.paid",
        [planned("dlv_0001", "ep_a1")],
    )]);

    assert!(model.org(OTHER_ORG).deliveries.is_empty());
    assert!(model.org(OTHER_ORG).events.is_empty());
}

#[test]
fn an_organization_with_endpoints_only_elsewhere_gets_a_skipped_event() {
    given([endpoint("ep_b1", OTHER_ORG, &[])])
        .when(accept("evt_1", ORG, "order.paid"))
        .then([accepted("evt_1", ORG, "order.paid", [])]);
}

#[test]
fn an_endpoint_of_another_organization_cannot_be_updated() {
    let scenario = given([endpoint("ep_1", ORG, &[])]);
    let before = scenario.model.clone();

    let model = scenario
        .when(patch("ep_1", OTHER_ORG).name("hijacked"))
        .then_err(Rejection::EndpointNotFound("ep_1".into()));

    assert_eq!(model, before);
    assert_eq!(model.org(ORG).endpoints["ep_1"].name, endpoint_name("ep_1"));
}

#[test]
fn each_organization_folds_into_its_own_tenant() {
    let model = given([endpoint("ep_a", ORG, &[]), endpoint("ep_b", OTHER_ORG, &[])])
        .and(accept("evt_a", ORG, "order.paid"))
        .and(accept("evt_b", OTHER_ORG, "order.paid"))
        .and(attempt("dlv_0002", OTHER_ORG, AttemptStatus::Failed))
        .model;

    let a = model.org(ORG);
    assert_eq!(a.endpoints.keys().collect::<Vec<_>>(), ["ep_a"]);
    assert_eq!(a.events.keys().collect::<Vec<_>>(), ["evt_a"]);
    assert_eq!(a.deliveries.keys().collect::<Vec<_>>(), ["dlv_0001"]);
    assert_eq!(
        a.delivery("dlv_0001").unwrap().status,
        AttemptStatus::Pending
    );

    let b = model.org(OTHER_ORG);
    assert_eq!(b.endpoints.keys().collect::<Vec<_>>(), ["ep_b"]);
    assert_eq!(b.events.keys().collect::<Vec<_>>(), ["evt_b"]);
    assert_eq!(b.deliveries.keys().collect::<Vec<_>>(), ["dlv_0002"]);
    assert_eq!(
        b.delivery("dlv_0002").unwrap().status,
        AttemptStatus::Failed
    );
    assert_eq!(b.delivery("dlv_0002").unwrap().organization_id, OTHER_ORG);
}

#[test]
fn each_organization_numbers_its_own_events_from_one_without_gaps() {
    let model = given([
        endpoint("ep_a1", ORG, &[]),
        endpoint("ep_b1", OTHER_ORG, &[]),
        endpoint("ep_b2", OTHER_ORG, &[]),
    ])
    .and(accept("evt_1", ORG, "order.paid"))
    .when(attempt("dlv_0001", ORG, AttemptStatus::Delivered))
    .then([attempt("dlv_0001", ORG, AttemptStatus::Delivered).recorded("evt_1")]);

    // Global positions 1, 2, 3 went to the endpoints, 4 to the event, 5 to
    // the attempt: each organization sees only its own, numbered from 1.
    let feed = |org: &str| -> Vec<(u64, u64)> {
        let tenant = model.tenant(org).expect("the organization has events");
        tenant.feed.iter().map(|(s, p)| (*s, *p)).collect()
    };
    assert_eq!(feed(ORG), [(1, 1), (2, 4), (3, 5)]);
    assert_eq!(feed(OTHER_ORG), [(1, 2), (2, 3)]);
    let attempt = model.org(ORG).attempt("dlv_0001", 0).expect("recorded");
    assert_eq!((attempt.sequence, attempt.position), (3, 5));
    assert_eq!(attempt.endpoint_id, "ep_a1");
    assert_eq!(attempt.event_id, "evt_1");
}
