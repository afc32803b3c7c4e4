//! Recording attempts and folding them into a delivery (`docs/DESIGN.md` §3): the latest
//! attempt decides status, response code, error and retry time, absent fields
//! count as null, `attemptCount` counts, `attemptedAt` is the latest server time,
//! `deliveredAt` is the first success and stays set. Every attempt is appended,
//! whatever the delivery's status.

use serde_json::json;

use crate::Rejection;
use crate::testing::*;
use crate::values::{AttemptStatus, RetryAt};

use AttemptStatus::{Delivered, Failed, Pending, RetryScheduled};

/// One endpoint, one accepted event with its one delivery `dlv_0001`: positions 1
/// and 2, so the first attempt lands at position 3.
fn one_delivery() -> Scenario {
    given([endpoint("ep_1", ORG, &[])]).and(accept("evt_1", ORG, "order.paid"))
}

#[test]
fn a_new_delivery_is_pending_with_no_attempts_and_every_optional_field_null() {
    let model = given([endpoint("ep_1", ORG, &[])])
        .when(accept("evt_1", ORG, "order.paid"))
        .then([accepted(
            "evt_1",
            ORG,
            "order.paid",
            [planned("dlv_0001", "ep_1")],
        )]);

    let d = model.delivery(ORG, "dlv_0001");
    assert_eq!(d.status, Pending);
    assert_eq!(d.attempt_count, 0);
    assert_eq!(d.response_status_code, None);
    assert_eq!(d.last_error, None);
    assert_eq!(d.next_retry_at, None);
    assert_eq!(d.attempted_at, None);
    assert_eq!(d.delivered_at, None);
    assert_eq!(d.event_id, "evt_1");
    assert_eq!((d.created_at, d.updated_at), (at(2), at(2)));
    assert_eq!(d.version, 0);
}

#[test]
fn an_attempt_is_recorded_with_every_field_the_sender_gave() {
    let sent = attempt("dlv_0001", ORG, RetryScheduled)
        .code(503)
        .body(json!({"error": "busy"}))
        .error("upstream unavailable")
        .retry_at("2023-11-07T05:31:56.5Z");

    let model = one_delivery()
        .when(sent.clone())
        .then([sent.recorded("evt_1")]);

    let d = model.delivery(ORG, "dlv_0001");
    assert_eq!(d.status, RetryScheduled);
    assert_eq!(d.response_status_code, Some(503));
    assert_eq!(d.last_error.as_deref(), Some("upstream unavailable"));
    assert_eq!(
        d.next_retry_at,
        Some(RetryAt::parse("2023-11-07T05:31:56.5Z").unwrap().at())
    );
    assert_eq!(d.attempt_count, 1);
    assert_eq!(d.attempted_at, Some(at(3)));
    assert_eq!(d.updated_at, at(3));
    assert_eq!(d.version, 1);
}

#[test]
fn fields_absent_from_the_latest_attempt_become_null_again() {
    let model = one_delivery()
        .and(
            attempt("dlv_0001", ORG, RetryScheduled)
                .code(500)
                .error("boom")
                .retry_at("2030-01-01T00:00Z"),
        )
        .when(attempt("dlv_0001", ORG, Failed))
        .then([attempt("dlv_0001", ORG, Failed).recorded("evt_1")]);

    let d = model.delivery(ORG, "dlv_0001");
    assert_eq!(d.status, Failed);
    assert_eq!(d.response_status_code, None);
    assert_eq!(d.last_error, None);
    assert_eq!(d.next_retry_at, None);
}

#[test]
fn fields_present_in_the_latest_attempt_are_set_after_one_without_them() {
    let model = one_delivery()
        .and(attempt("dlv_0001", ORG, Pending))
        .and(
            attempt("dlv_0001", ORG, Failed)
                .code(404)
                .error("not found"),
        )
        .and(attempt("dlv_0001", ORG, RetryScheduled).retry_at("2031-02-28T12:00:00Z"))
        .model;

    let d = model.delivery(ORG, "dlv_0001");
    assert_eq!(d.status, RetryScheduled);
    // Code and error of the attempt before are not carried over.
    assert_eq!(d.response_status_code, None);
    assert_eq!(d.last_error, None);
    assert_eq!(
        d.next_retry_at.map(|t| t.to_rfc3339()),
        Some("2031-02-28T12:00:00.000000Z".to_owned())
    );
}

#[test]
fn attempt_count_counts_and_attempted_at_is_the_latest_attempt() {
    let mut scenario = one_delivery();
    for n in 1..=5u64 {
        scenario = scenario.and(attempt("dlv_0001", ORG, Failed).code(500));
        let d = scenario.model.delivery(ORG, "dlv_0001");
        assert_eq!(d.attempt_count, n);
        // Attempt n is folded at position 2 + n.
        assert_eq!(d.attempted_at, Some(at(2 + n)));
        assert_eq!(d.updated_at, at(2 + n));
        assert_eq!(d.version, n);
        assert_eq!(d.created_at, at(2));
    }
}

#[test]
fn delivered_at_is_the_first_delivered_attempt_and_stays_set() {
    let model = one_delivery()
        .and(attempt("dlv_0001", ORG, Failed).code(500)) // 3
        .and(attempt("dlv_0001", ORG, Delivered).code(200)) // 4
        .and(attempt("dlv_0001", ORG, Failed).code(502)) // 5
        .and(attempt("dlv_0001", ORG, Pending)) // 6
        .and(attempt("dlv_0001", ORG, RetryScheduled)) // 7
        .and(attempt("dlv_0001", ORG, Delivered).code(204)) // 8
        .model;

    let d = model.delivery(ORG, "dlv_0001");
    assert_eq!(d.delivered_at, Some(at(4)));
    assert_eq!(d.attempted_at, Some(at(8)));
    assert_eq!(d.status, Delivered);
    assert_eq!(d.response_status_code, Some(204));
    assert_eq!(d.attempt_count, 6);
}

#[test]
fn delivered_at_stays_set_while_the_latest_attempt_is_not_delivered() {
    let model = one_delivery()
        .and(attempt("dlv_0001", ORG, Delivered).code(200))
        .when(attempt("dlv_0001", ORG, Failed).error("receiver said it lost it"))
        .then([attempt("dlv_0001", ORG, Failed)
            .error("receiver said it lost it")
            .recorded("evt_1")]);

    let d = model.delivery(ORG, "dlv_0001");
    assert_eq!(d.status, Failed);
    assert_eq!(d.delivered_at, Some(at(3)));
}

#[test]
fn every_status_is_accepted_after_every_status() {
    for before in AttemptStatus::ALL {
        for after in AttemptStatus::ALL {
            let sent = attempt("dlv_0001", ORG, after);
            let model = one_delivery()
                .and(attempt("dlv_0001", ORG, before))
                .when(sent.clone())
                .then([sent.recorded("evt_1")]);
            let d = model.delivery(ORG, "dlv_0001");
            assert_eq!(d.status, after, "{before:?} then {after:?}");
            assert_eq!(d.attempt_count, 2);
        }
    }
}

#[test]
fn pending_after_delivered_is_recorded() {
    let sent = attempt("dlv_0001", ORG, Pending);
    let model = one_delivery()
        .and(attempt("dlv_0001", ORG, Delivered).code(200))
        .when(sent.clone())
        .then([sent.recorded("evt_1")]);

    let d = model.delivery(ORG, "dlv_0001");
    assert_eq!(d.status, Pending);
    assert_eq!(d.response_status_code, None);
    assert_eq!(d.delivered_at, Some(at(3)));
}

#[test]
fn an_attempt_on_an_unknown_delivery_is_rejected_and_appends_nothing() {
    let before = one_delivery().model;
    let model = one_delivery()
        .when(attempt("dlv_9999", ORG, Delivered))
        .then_err(Rejection::DeliveryNotFound("dlv_9999".into()));
    assert_eq!(model, before);
}

#[test]
fn attempts_on_one_delivery_leave_its_siblings_alone() {
    let model = given([endpoint("ep_1", ORG, &[]), endpoint("ep_2", ORG, &[])])
        .and(accept("evt_1", ORG, "order.paid"))
        .and(attempt("dlv_0002", ORG, Delivered).code(200))
        .model;

    let untouched = model.delivery(ORG, "dlv_0001");
    assert_eq!(untouched.status, Pending);
    assert_eq!(untouched.attempt_count, 0);
    assert_eq!(untouched.attempted_at, None);
    let touched = model.delivery(ORG, "dlv_0002");
    assert_eq!(touched.status, Delivered);
    assert_eq!(touched.endpoint_id, "ep_2");
}
