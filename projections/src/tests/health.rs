//! Endpoint health: for random attempts at random times (bursts within a
//! second, gaps of minutes to years, clocks that step back), the counters'
//! answer for a random `since` equals a direct count over the attempts.

use proptest::prelude::*;

use crate::event::{Event, Metadata, Recorded};
use crate::health::{self, Tally};
use crate::model::{Settings, apply};
use crate::rows::MemoryRows;
use crate::testing::*;
use crate::values::{AttemptStatus, Timestamp};

const ENDPOINTS: [&str; 3] = ["ep_0", "ep_1", "ep_2"];
const EVENTS: usize = 3;
const SECOND: i64 = 1_000_000;
const DAY: i64 = 86_400 * SECOND;

#[derive(Debug, Clone)]
struct AttemptSpec {
    /// Taken modulo the number of deliveries.
    pick: usize,
    /// The other organization's delivery instead, to the endpoint of the same id.
    other_org: bool,
    status: AttemptStatus,
    code: Option<i64>,
    /// Microseconds after the previous attempt; negative when a clock stepped back.
    step: i64,
}

fn step() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0),
        1..SECOND,
        SECOND..60 * SECOND,
        60 * SECOND..3_600 * SECOND,
        3_600 * SECOND..DAY,
        DAY..40 * DAY,
        40 * DAY..800 * DAY,
        -100 * SECOND..0,
        -3 * DAY..-100 * SECOND,
    ]
}

fn attempt_spec() -> impl Strategy<Value = AttemptSpec> {
    (
        any::<usize>(),
        proptest::bool::weighted(0.2),
        proptest::sample::select(AttemptStatus::ALL.to_vec()),
        proptest::option::of(100i64..=599),
        step(),
    )
        .prop_map(|(pick, other_org, status, code, step)| AttemptSpec {
            pick,
            other_org,
            status,
            code,
            step,
        })
}

/// An instant to ask from: an attempt's time shifted by a random amount, at
/// every scale from a microsecond to years, or none (all time).
fn since_spec() -> impl Strategy<Value = Option<(usize, i64)>> {
    proptest::option::weighted(
        0.9,
        (
            any::<usize>(),
            prop_oneof![
                Just(0),
                Just(1),
                Just(-1),
                -SECOND..SECOND,
                -DAY..DAY,
                -2_000 * DAY..2_000 * DAY,
            ],
        ),
    )
}

/// Folds the endpoints, the events fanned out to every endpoint, and the
/// attempts, each at the time its step leads to.
fn fold(attempts: &[AttemptSpec]) -> MemoryRows {
    let mut rows = MemoryRows::default();
    let mut position = 0;
    let mut fold_at = |rows: &mut MemoryRows, event: Event, at: i64| {
        position += 1;
        let recorded = Recorded {
            position,
            version: 0,
            recorded_at: Timestamp::from_micros(at),
            metadata: Metadata::default(),
            event,
        };
        let Ok(()) = apply(rows, &recorded, &Settings::default());
    };
    for org in [ORG, OTHER_ORG] {
        for id in ENDPOINTS {
            fold_at(&mut rows, endpoint(id, org, &[]), T0);
        }
        for e in 0..EVENTS {
            let deliveries = ENDPOINTS.map(|ep| planned(&delivery_id(org, e, ep), ep));
            fold_at(&mut rows, accepted(&event_id(e), org, "a", deliveries), T0);
        }
    }
    let mut now = T0;
    for spec in attempts {
        now += spec.step;
        let org = if spec.other_org { OTHER_ORG } else { ORG };
        let pick = spec.pick % (EVENTS * ENDPOINTS.len());
        let (e, ep) = (pick / ENDPOINTS.len(), ENDPOINTS[pick % ENDPOINTS.len()]);
        let mut a = attempt(&delivery_id(org, e, ep), org, spec.status);
        if let Some(code) = spec.code {
            a = a.code(code);
        }
        fold_at(&mut rows, a.recorded(&event_id(e)), now);
    }
    rows
}

fn delivery_id(org: &str, event: usize, endpoint: &str) -> String {
    format!("dlv_{org}_{event}_{endpoint}")
}

fn event_id(event: usize) -> String {
    format!("evt_{event}")
}

/// The reference: every attempt of the endpoint at or after `since`, counted one by one.
fn recount(rows: &MemoryRows, org: &str, endpoint_id: &str, since: Option<Timestamp>) -> Tally {
    let mut tally = Tally::default();
    for a in rows
        .tenant(org)
        .into_iter()
        .flat_map(|t| t.attempts.values())
    {
        if a.endpoint_id == endpoint_id && since.is_none_or(|s| a.recorded_at >= s) {
            tally.count(a.status, a.response_status_code, a.recorded_at);
        }
    }
    tally
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn counters_agree_with_a_recount(
        attempts in proptest::collection::vec(attempt_spec(), 0..80),
        asked in proptest::collection::vec(since_spec(), 1..12),
    ) {
        let rows = fold(&attempts);
        let times: Vec<i64> = attempts
            .iter()
            .scan(T0, |now, a| {
                *now += a.step;
                Some(*now)
            })
            .collect();
        for ask in asked {
            let since = ask.map(|(pick, shift)| {
                let base = if times.is_empty() { T0 } else { times[pick % times.len()] };
                Timestamp::from_micros(base + shift)
            });
            for org in [ORG, OTHER_ORG] {
                let tenant = rows.tenant(org).expect("endpoints were created");
                for ep in ENDPOINTS {
                    let Ok(answer) = health::since(&mut tenant.tallies(ep), since);
                    prop_assert_eq!(
                        answer,
                        recount(&rows, org, ep, since),
                        "{} {} since {:?}", org, ep, since
                    );
                }
            }
        }
    }
}

#[test]
fn attempts_count_for_their_endpoint_and_nowhere_else() {
    let a = |status, code, step| AttemptSpec {
        pick: 0,
        other_org: false,
        status,
        code,
        step,
    };
    let attempts = [
        a(AttemptStatus::RetryScheduled, Some(503), SECOND),
        a(AttemptStatus::Delivered, Some(204), SECOND),
    ];
    let rows = fold(&attempts);
    let ours = rows.tenant(ORG).unwrap();
    let Ok(total) = health::since(&mut ours.tallies("ep_0"), None);
    assert_eq!(
        (total.retry_scheduled, total.delivered, total.classes),
        (1, 1, [0, 1, 0, 0, 1])
    );
    assert_eq!(total.last_success_at, Some(Timestamp(T0 + 2 * SECOND)));
    assert_eq!(total.last_failure_at, Some(Timestamp(T0 + SECOND)));
    let Ok(later) = health::since(&mut ours.tallies("ep_0"), Some(Timestamp(T0 + 2 * SECOND)));
    assert_eq!((later.attempts(), later.last_failure_at), (1, None));
    let Ok(other) = health::since(&mut ours.tallies("ep_1"), None);
    assert_eq!(other, Tally::default());
    let theirs = rows.tenant(OTHER_ORG).unwrap();
    let Ok(other_org) = health::since(&mut theirs.tallies("ep_0"), None);
    assert_eq!(other_org, Tally::default());
}
