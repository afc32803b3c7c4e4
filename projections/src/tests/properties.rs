//! Property tests: for a random fan-out and a random sequence of attempts, the
//! folded deliveries and event equal a straightforward reference computation, and
//! a model restored from an rkyv snapshot mid-way ends equal to the live one.

use proptest::prelude::*;

use crate::model::{Settings, apply};
use crate::rows::MemoryRows;
use crate::testing::*;
use crate::values::{AttemptStatus, EventStatus, RetryAt, Timestamp};

const TYPES: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
struct EndpointSpec {
    enabled: bool,
    /// Indexes into `TYPES`; empty subscribes to every type.
    types: Vec<usize>,
}

#[derive(Debug, Clone)]
struct AttemptSpec {
    /// Taken modulo the number of deliveries.
    pick: usize,
    status: AttemptStatus,
    code: Option<i64>,
    error: Option<String>,
    retry_at: Option<String>,
}

fn endpoint_spec() -> impl Strategy<Value = EndpointSpec> {
    (
        any::<bool>(),
        proptest::collection::vec(0..TYPES.len(), 0..3),
    )
        .prop_map(|(enabled, types)| EndpointSpec { enabled, types })
}

fn retry_literal() -> impl Strategy<Value = String> {
    // Any second from 1970 to 2096, with or without seconds and a fraction.
    (0i64..4_000_000_000, 0u8..3, "[0-9]{1,9}").prop_map(|(secs, form, frac)| {
        let at = chrono::DateTime::from_timestamp(secs, 0).unwrap();
        match form {
            0 => at.format("%Y-%m-%dT%H:%MZ").to_string(),
            1 => at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            _ => format!("{}.{frac}Z", at.format("%Y-%m-%dT%H:%M:%S")),
        }
    })
}

fn attempt_spec() -> impl Strategy<Value = AttemptSpec> {
    (
        any::<usize>(),
        proptest::sample::select(AttemptStatus::ALL.to_vec()),
        proptest::option::of(100i64..=599),
        proptest::option::of("[a-z ]{1,12}"),
        proptest::option::of(retry_literal()),
    )
        .prop_map(|(pick, status, code, error, retry_at)| AttemptSpec {
            pick,
            status,
            code,
            error,
            retry_at,
        })
}

fn ep_id(i: usize) -> String {
    format!("ep_{i:02}")
}

/// Endpoints as specified, then `evt_1` of `event_type` accepted.
fn fan_out(endpoints: &[EndpointSpec], event_type: &str) -> Scenario {
    let mut scenario = given([]);
    for (i, spec) in endpoints.iter().enumerate() {
        let types: Vec<&str> = spec.types.iter().map(|&t| TYPES[t]).collect();
        let event = if spec.enabled {
            endpoint(&ep_id(i), ORG, &types)
        } else {
            disabled_endpoint(&ep_id(i), ORG, &types)
        };
        scenario.fold(event, Default::default());
    }
    scenario.and(accept("evt_1", ORG, event_type))
}

fn to_attempt(spec: &AttemptSpec, delivery_id: &str) -> Attempt {
    let mut a = attempt(delivery_id, ORG, spec.status);
    if let Some(code) = spec.code {
        a = a.code(code);
    }
    if let Some(error) = &spec.error {
        a = a.error(error);
    }
    if let Some(retry_at) = &spec.retry_at {
        a = a.retry_at(retry_at);
    }
    a
}

/// What a person would compute by hand for one delivery.
#[derive(Debug, Default, Clone)]
struct Expected {
    count: u64,
    last: Option<(AttemptSpec, Timestamp)>,
    first_delivered: Option<Timestamp>,
}

proptest! {
    #[test]
    fn folded_deliveries_equal_a_reference_computation(
        endpoints in proptest::collection::vec(endpoint_spec(), 0..5),
        event_type in proptest::sample::select(TYPES.to_vec()),
        attempts in proptest::collection::vec(attempt_spec(), 0..25),
    ) {
        let mut scenario = fan_out(&endpoints, event_type);
        let accepted_at = at(scenario.position);

        // Fan-out: one delivery per enabled endpoint subscribed to the type, in order.
        let subscribed: Vec<String> = endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| e.enabled && (e.types.is_empty() || e.types.iter().any(|&t| TYPES[t] == event_type)))
            .map(|(i, _)| ep_id(i))
            .collect();
        let delivery_ids: Vec<String> = (1..=subscribed.len()).map(|n| format!("dlv_{n:04}")).collect();
        let event = scenario.model.event(ORG, "evt_1");
        prop_assert_eq!(&event.delivery_ids, &delivery_ids);
        for (id, ep) in delivery_ids.iter().zip(&subscribed) {
            prop_assert_eq!(&scenario.model.delivery(ORG, id).endpoint_id, ep);
        }

        let mut expected = vec![Expected::default(); delivery_ids.len()];
        let mut last_attempt_at = None;
        if !delivery_ids.is_empty() {
            for spec in &attempts {
                let index = spec.pick % delivery_ids.len();
                scenario = scenario.and(to_attempt(spec, &delivery_ids[index]));
                let now = at(scenario.position);
                let e = &mut expected[index];
                e.count += 1;
                e.last = Some((spec.clone(), now));
                if spec.status == AttemptStatus::Delivered && e.first_delivered.is_none() {
                    e.first_delivered = Some(now);
                }
                last_attempt_at = Some(now);
            }
        }

        let model = &scenario.model;
        for (id, e) in delivery_ids.iter().zip(&expected) {
            let d = model.delivery(ORG, id);
            prop_assert_eq!(d.attempt_count, e.count);
            prop_assert_eq!(d.version, e.count);
            prop_assert_eq!(d.delivered_at, e.first_delivered);
            prop_assert_eq!(d.created_at, accepted_at);
            match &e.last {
                None => {
                    prop_assert_eq!(d.status, AttemptStatus::Pending);
                    prop_assert_eq!(d.response_status_code, None);
                    prop_assert_eq!(&d.last_error, &None);
                    prop_assert_eq!(d.next_retry_at, None);
                    prop_assert_eq!(d.attempted_at, None);
                    prop_assert_eq!(d.updated_at, accepted_at);
                }
                Some((last, when)) => {
                    prop_assert_eq!(d.status, last.status);
                    prop_assert_eq!(d.response_status_code.map(i64::from), last.code);
                    prop_assert_eq!(&d.last_error, &last.error);
                    prop_assert_eq!(
                        d.next_retry_at,
                        last.retry_at.as_deref().map(|t| RetryAt::parse(t).unwrap().at())
                    );
                    prop_assert_eq!(d.attempted_at, Some(*when));
                    prop_assert_eq!(d.updated_at, *when);
                }
            }
        }

        let statuses: Vec<AttemptStatus> = delivery_ids
            .iter()
            .map(|id| model.delivery(ORG, id).status)
            .collect();
        let event = model.event(ORG, "evt_1");
        prop_assert_eq!(event.status, EventStatus::derive(statuses.iter().copied()));
        // And the rule of `docs/DESIGN.md` §3 read literally.
        let by_rule = if statuses.is_empty() {
            EventStatus::Skipped
        } else if statuses.iter().any(|s| matches!(s, AttemptStatus::Pending | AttemptStatus::RetryScheduled)) {
            EventStatus::Pending
        } else if statuses.iter().all(|s| *s == AttemptStatus::Delivered) {
            EventStatus::Delivered
        } else {
            EventStatus::Failed
        };
        prop_assert_eq!(event.status, by_rule);
        prop_assert_eq!(event.created_at, accepted_at);
        prop_assert_eq!(event.updated_at, last_attempt_at.unwrap_or(accepted_at));
    }

    #[test]
    fn the_live_model_answers_as_of_any_position_like_the_log_folded_up_to_it(
        endpoints in proptest::collection::vec(endpoint_spec(), 1..4),
        attempts in proptest::collection::vec(attempt_spec(), 0..12),
        split in any::<prop::sample::Index>(),
    ) {
        let mut scenario = fan_out(&endpoints, "a");
        let ids = scenario.model.event(ORG, "evt_1").delivery_ids.clone();
        if !ids.is_empty() {
            for spec in &attempts {
                scenario = scenario.and(to_attempt(spec, &ids[spec.pick % ids.len()]));
            }
        }
        let log = &scenario.log;
        let k = split.index(log.len() + 1);

        let mut before = MemoryRows::default();
        for recorded in &log[..k] {
            apply(&mut before, recorded, &Settings::default()).unwrap();
        }
        let live = scenario.model.org(ORG);
        let payload = scenario.payload_in_log("evt_1");
        let then = before.tenant(ORG).and_then(|t| t.event_snapshot("evt_1", payload.clone()));
        let as_of = live.event_snapshot_as_of("evt_1", payload, k as u64);
        prop_assert_eq!(
            then.map(|s| serde_json::to_value(s).unwrap()),
            as_of.map(|s| serde_json::to_value(s).unwrap())
        );
        for id in &ids {
            let then = before.tenant(ORG).and_then(|t| t.delivery(id)).cloned();
            let as_of = then.as_ref().and_then(|_| live.delivery_as_of(id, k as u64));
            prop_assert_eq!(then, as_of);
        }
    }
}
