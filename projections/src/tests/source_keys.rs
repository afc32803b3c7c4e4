//! Event acceptance is idempotent on (organization, `sourceKey`) (`docs/DESIGN.md` §3): a
//! repeat is answered with the first event and appends nothing.

use crate::Rejection;
use crate::event::{Event, WebhookEventAccepted};
use crate::testing::*;

fn keyed_accepted(event_id: &str, org: &str, key: &str, deliveries: &[(&str, &str)]) -> Event {
    let Event::WebhookEventAccepted(e) = accepted(
        event_id,
        org,
        "order.paid",
        deliveries.iter().map(|(d, ep)| planned(d, ep)),
    ) else {
        unreachable!()
    };
    Event::WebhookEventAccepted(WebhookEventAccepted {
        source_key: Some(key.to_owned()),
        ..e
    })
}

#[test]
fn a_source_key_is_recorded_with_its_event() {
    let model = given([endpoint("ep_1", ORG, &[])])
        .when(accept_keyed("evt_1", ORG, "order.paid", "order-42"))
        .then([keyed_accepted(
            "evt_1",
            ORG,
            "order-42",
            &[("dlv_0001", "ep_1")],
        )]);

    let tenant = model.org(ORG);
    assert_eq!(tenant.source_keys["order-42"], "evt_1");
    assert_eq!(
        tenant.event("evt_1").unwrap().source_key.as_deref(),
        Some("order-42")
    );
}

#[test]
fn a_repeated_source_key_is_answered_with_the_first_event_and_appends_nothing() {
    let first = given([endpoint("ep_1", ORG, &[])]).and(accept_keyed(
        "evt_1",
        ORG,
        "order.paid",
        "order-42",
    ));
    let before = first.model.clone();

    let model = first
        .when(accept_keyed("evt_2", ORG, "order.paid", "order-42"))
        .then_err(Rejection::DuplicateSourceKey("evt_1".into()));

    assert_eq!(model, before);
    assert!(model.org(ORG).event("evt_2").is_none());
}

#[test]
fn the_repeat_is_refused_whatever_its_type_or_payload() {
    given([])
        .and(accept_keyed("evt_1", ORG, "order.paid", "k"))
        .when(accept_keyed("evt_2", ORG, "invoice.sent", "k"))
        .then_err(Rejection::DuplicateSourceKey("evt_1".into()));
}

#[test]
fn a_skipped_event_still_holds_its_source_key() {
    given([])
        .and(accept_keyed("evt_1", ORG, "order.paid", "k"))
        .when(accept_keyed("evt_2", ORG, "order.paid", "k"))
        .then_err(Rejection::DuplicateSourceKey("evt_1".into()));
}

#[test]
fn the_same_source_key_in_another_organization_is_independent() {
    let model = given([endpoint("ep_1", ORG, &[]), endpoint("ep_2", OTHER_ORG, &[])])
        .and(accept_keyed("evt_1", ORG, "order.paid", "order-42"))
        .when(accept_keyed("evt_2", OTHER_ORG, "order.paid", "order-42"))
        .then([keyed_accepted(
            "evt_2",
            OTHER_ORG,
            "order-42",
            &[("dlv_0002", "ep_2")],
        )]);

    assert_eq!(model.org(ORG).source_keys["order-42"], "evt_1");
    assert_eq!(model.org(OTHER_ORG).source_keys["order-42"], "evt_2");
}

#[test]
fn events_without_a_source_key_never_collide() {
    let model = given([])
        .and(accept("evt_1", ORG, "order.paid"))
        .when(accept("evt_2", ORG, "order.paid"))
        .then([accepted("evt_2", ORG, "order.paid", [])]);
    assert_eq!(model.org(ORG).events.len(), 2);
    assert!(model.org(ORG).source_keys.is_empty());
}

#[test]
fn different_source_keys_do_not_collide() {
    given([])
        .and(accept_keyed("evt_1", ORG, "order.paid", "a"))
        .when(accept_keyed("evt_2", ORG, "order.paid", "b"))
        .then([keyed_accepted("evt_2", ORG, "b", &[])]);
}
