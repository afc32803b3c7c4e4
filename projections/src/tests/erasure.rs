//! Erasing bodies: `EraseContent` is decided only for an event of the caller's
//! organization, and the `ContentErased` fold records what it covers (one
//! event, an organization before a position, bodies recorded before a time),
//! which [`Erasures::covers`] answers for every body a read serves.

use serde_json::json;

use crate::Rejection;
use crate::event::{Metadata, stream};
use crate::model::{Erasures, Settings, apply};
use crate::rows::MemoryRows;
use crate::testing::*;
use crate::values::{AttemptStatus, Timestamp};

/// One microsecond before `at`.
fn just_before(at: Timestamp) -> Timestamp {
    Timestamp::from_micros(at.micros() - 1)
}

/// ep_1 (1), evt_1 with dlv_0001 (2), an attempt with a body (3), ep_2 in
/// the other organization (4), evt_2 there with dlv_0002 (5).
fn two_orgs() -> Scenario {
    let mut scenario = given([endpoint("ep_1", ORG, &[])])
        .and(accept("evt_1", ORG, "order.paid"))
        .and(
            attempt("dlv_0001", ORG, AttemptStatus::RetryScheduled)
                .code(503)
                .body(json!({"email": "a@example.com"})),
        );
    scenario.fold(endpoint("ep_2", OTHER_ORG, &[]), Metadata::default());
    scenario.and(accept("evt_2", OTHER_ORG, "order.paid"))
}

#[test]
fn erasing_one_event_marks_it_erased_before_the_erasure() {
    let command = erase_event("evt_1", ORG);
    let model = two_orgs()
        .when(command.clone())
        .then([content_erased(&command)]);

    // The erasure is the sixth event.
    let event = model.event(ORG, "evt_1");
    assert_eq!(event.erased_before, 6);
    let covers = |position: u64| {
        model
            .org(ORG)
            .erasures
            .covers(position, at(position), event.erased_before)
    };
    // Its payload (2) and its attempt's response body (3) are covered, up to
    // the position just before the erasure; what comes at it or after is not.
    assert!(covers(2));
    assert!(covers(3));
    assert!(covers(5));
    assert!(!covers(6));
    assert!(!covers(7));
    // The organization's record says where one event's erasure may reach
    // (so a body after it needs no look at its event), and nothing else is
    // erased.
    let erasures = &model.org(ORG).erasures;
    assert!(erasures.one_event_may_cover(5));
    assert!(!erasures.one_event_may_cover(6));
    assert_eq!(
        erasures,
        &Erasures {
            events_before: 6,
            ..Erasures::default()
        }
    );
    assert_eq!(model.org(OTHER_ORG).erasures, Erasures::default());
    assert_eq!(model.event(OTHER_ORG, "evt_2").erased_before, 0);
    assert!(!model.org(OTHER_ORG).erasures.covers(
        4,
        at(4),
        model.event(OTHER_ORG, "evt_2").erased_before
    ));
}

#[test]
fn an_attempt_after_an_erasure_keeps_its_body_and_a_second_erasure_moves_the_mark() {
    let scenario = two_orgs()
        .and(erase_event("evt_1", ORG))
        .and(attempt("dlv_0001", ORG, AttemptStatus::Failed).body(json!({"late": true})));
    assert_eq!(scenario.model.event(ORG, "evt_1").erased_before, 6);
    let erasures = &scenario.model.org(ORG).erasures;
    assert!(!erasures.covers(7, at(7), 6));

    let again = scenario.and(erase_event("evt_1", ORG));
    assert_eq!(again.model.event(ORG, "evt_1").erased_before, 8);
    assert!(again.model.org(ORG).erasures.covers(7, at(7), 8));
}

#[test]
fn erasing_an_organization_covers_every_position_before_it_and_no_other_organization() {
    let command = erase_org(ORG);
    let model = two_orgs()
        .when(command.clone())
        .then([content_erased(&command)]);

    let erasures = &model.org(ORG).erasures;
    assert_eq!(
        erasures,
        &Erasures {
            all_before: 6,
            ..Erasures::default()
        }
    );
    assert!(erasures.covers(1, at(1), 0));
    assert!(erasures.covers(5, at(5), 0));
    assert!(!erasures.covers(6, at(6), 0));
    assert!(!erasures.covers(7, at(7), 0));
    // Not an event's own erasure: the event rows are unchanged.
    assert_eq!(model.event(ORG, "evt_1").erased_before, 0);
    assert_eq!(model.org(OTHER_ORG).erasures, Erasures::default());
}

#[test]
fn retention_covers_bodies_recorded_before_the_latest_cut_off_and_keeps_the_latest() {
    let scenario = two_orgs().and(erase_before(ORG, at(3)));
    let erasures = scenario.model.org(ORG).erasures.clone();
    assert_eq!(erasures.recorded_before, Some(at(3)));
    assert_eq!(erasures.all_before, 0);
    assert_eq!(erasures.retention_position, 6);
    assert_eq!(
        scenario.model.org(ORG).feed[&erasures.retention_sequence],
        6,
        "the sequence number is the erasure's own"
    );
    // Recorded before the cut-off: covered, whatever the position.
    assert!(erasures.covers(100, just_before(at(3)), 0));
    assert!(erasures.covers(2, at(2), 0));
    assert!(!erasures.covers(3, at(3), 0));
    assert!(!erasures.covers(2, Timestamp::from_micros(at(3).micros() + 1), 0));

    // An earlier cut-off later in the log does not bring bodies back.
    let scenario = scenario.and(erase_before(ORG, at(2)));
    let erasures = &scenario.model.org(ORG).erasures;
    assert_eq!(erasures.recorded_before, Some(at(3)));
    assert_eq!(erasures.retention_position, 7);
    assert_eq!(
        scenario.model.org(ORG).feed[&erasures.retention_sequence],
        7
    );
    assert!(erasures.covers(2, just_before(at(3)), 0));

    // A later one moves it on.
    let scenario = scenario.and(erase_before(ORG, at(5)));
    let erasures = &scenario.model.org(ORG).erasures;
    assert_eq!(erasures.recorded_before, Some(at(5)));
    assert!(erasures.covers(4, at(4), 0));
    assert!(!erasures.covers(5, at(5), 0));
    assert_eq!(scenario.model.org(OTHER_ORG).erasures, Erasures::default());
}

#[test]
fn an_event_of_another_organization_or_none_cannot_be_erased() {
    two_orgs()
        .when(erase_event("evt_2", ORG))
        .then_err(Rejection::EventNotFound("evt_2".into()));
    two_orgs()
        .when(erase_event("evt_9", ORG))
        .then_err(Rejection::EventNotFound("evt_9".into()));
    // An organization's erasures need no event.
    let command = erase_org("org_without_events");
    given([])
        .when(command.clone())
        .then([content_erased(&command)]);
}

#[test]
fn an_erasure_appends_to_the_events_stream_or_to_the_organizations() {
    let model = two_orgs().model;
    assert_eq!(erase_event("evt_1", ORG).stream(&model), "event-evt_1");
    assert_eq!(erase_org(ORG).stream(&model), stream::erasures(ORG));
    assert_eq!(
        erase_before(ORG, at(1)).stream(&model),
        format!("erasures-{ORG}")
    );
}

#[test]
fn a_rebuild_from_the_log_gives_the_same_erasures() {
    let day = two_orgs()
        .and(erase_event("evt_1", ORG))
        .and(erase_before(OTHER_ORG, at(4)))
        .and(erase_org(ORG))
        .and(attempt("dlv_0002", OTHER_ORG, AttemptStatus::Delivered).code(200));
    let mut rebuilt = MemoryRows::default();
    for recorded in &day.log {
        apply(&mut rebuilt, recorded, &Settings::default()).unwrap();
    }
    assert_eq!(rebuilt, day.model);
    assert_eq!(rebuilt.org(ORG).erasures.all_before, 8);
    assert_eq!(rebuilt.org(OTHER_ORG).erasures.recorded_before, Some(at(4)));
}
