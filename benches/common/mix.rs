//! The queries bench's ledger: one organization whose attempts give the
//! attempt filters and the retry queue the selectivity they meet in
//! production, unlike the scale mix (2 endpoints, every delivery the same).
//!
//! - 50 endpoints; each webhook event fans out to 3 of them, chosen by a hash
//!   of the event, so an endpoint holds about 6% of the attempts.
//! - Each delivery follows one of seven histories, chosen by a hash of the
//!   delivery, 20 deliveries to a cycle on average: 12 delivered on the first
//!   attempt, 3 on the second, 1 on the third; 1 failed after four attempts;
//!   2 still scheduled for a retry after one attempt, 1 after three. That is
//!   1.5 attempts per delivery: about 53% delivered, 43% retry_scheduled,
//!   3.3% failed.
//! - Response codes: 200, 201 or 204 for a delivery; a retry answered 503,
//!   500, 502, 429 or nothing (a timeout, no code); a failure 410, 400 or 500.
//!   So about 53% of the attempts are 2xx, 31% 5xx (17% 503), 7% 4xx, 9% none.
//! - A scheduled retry is due at a time spread evenly over [`RETRY_SPAN`] from
//!   [`RETRY_FROM`].
//!
//! The log is written in blocks of webhook events: a block's events, then its
//! attempts round by round (every delivery's first attempt, then the second
//! attempts of those that go on, ...), each round landing before the next so
//! that a delivery's attempts are in order and its last one decides its status.

use projections::event::{
    ApiKeyIssued, AttemptRecorded, EndpointCreated, PlannedDelivery, WebhookEventAccepted, stream,
};
use projections::values::{AttemptStatus, HttpStatusCode, NonEmptyString, RetryAt};
use projections::{Body, Event, JsonObject, Metadata, Timestamp};
use serde_json::json;

use super::workload::{delivery_id, endpoint_id, event_id, key_id, metadata, org, payload};
use hookledger::store::NewEvent;

/// Endpoints of the organization.
pub const ENDPOINTS: u64 = 50;
/// Deliveries per webhook event.
pub const FANOUT: u64 = 3;
/// Webhook events per block of the log.
const BLOCK: u64 = 2048;
/// The most attempts any delivery's history has.
const ROUNDS: u64 = 4;
/// Scheduled retries are due from this time (2030-01-01T00:00:00Z)...
pub const RETRY_FROM: i64 = 1_893_456_000_000_000;
/// ... over this many microseconds (30 days).
pub const RETRY_SPAN: i64 = 30 * 86_400 * 1_000_000;

/// What an attempt reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Delivered,
    Retry,
    Failed,
}

use Outcome::{Delivered, Failed, Retry};

/// The histories, each with how many of every 20 deliveries follow it.
const HISTORIES: [(u64, &[Outcome]); 6] = [
    (12, &[Delivered]),
    (3, &[Retry, Delivered]),
    (1, &[Retry, Retry, Delivered]),
    (1, &[Retry, Retry, Retry, Failed]),
    (2, &[Retry]),
    (1, &[Retry, Retry, Retry]),
];

/// The queries bench's ledger: `events` webhook events of organization 0.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub events: u64,
    /// Bytes of filler in each payload.
    pub filler: usize,
}

impl Mix {
    /// The smallest whole number of blocks holding at least `attempts` attempts
    /// (1.5 per delivery on average).
    pub fn with_attempts(attempts: u64) -> Mix {
        let per_block = BLOCK * FANOUT * 3 / 2;
        Mix {
            events: attempts.div_ceil(per_block).max(1) * BLOCK,
            filler: 256,
        }
    }

    pub fn deliveries(&self) -> u64 {
        self.events * FANOUT
    }

    /// Attempts in the ledger, counted from the histories.
    pub fn attempts(&self) -> u64 {
        (0..self.deliveries())
            .map(|d| history(d).len() as u64)
            .sum()
    }

    /// The organization the ledger belongs to.
    pub fn org(&self) -> String {
        org(0)
    }

    pub fn endpoint(&self, i: u64) -> String {
        endpoint_id(0, i)
    }

    pub fn event(&self, w: u64) -> String {
        event_id(w)
    }

    pub fn delivery(&self, d: u64) -> String {
        delivery_id(d)
    }

    /// Every log event in order, with its phase (a change of phase waits for
    /// all before it to land) and stream.
    pub fn log(self) -> impl Iterator<Item = (u64, String, NewEvent)> {
        let setup = std::iter::once((
            stream::api_keys(&org(0)),
            Event::ApiKeyIssued(ApiKeyIssued {
                key_id: key_id(0),
                organization_id: org(0),
                secret_sha256: format!("{:064x}", 1),
            }),
            Metadata::default(),
        ))
        .chain((0..ENDPOINTS).map(|i| {
            (
                stream::endpoint(&endpoint_id(0, i)),
                Event::EndpointCreated(EndpointCreated {
                    endpoint_id: endpoint_id(0, i),
                    organization_id: org(0),
                    name: format!("Customer webhook {i:02}"),
                    url: format!("https://hooks.example.com/v2/customers/{i:02}/webhooks"),
                    event_types: vec![],
                    enabled: true,
                }),
                Metadata {
                    key_id: Some(key_id(0)),
                    ..Metadata::default()
                },
            )
        }))
        .map(|(stream, event, meta)| (0, stream, encode(&event, &meta)));
        let mut n = 0u64;
        let blocks = (0..self.events / BLOCK).flat_map(move |b| {
            let first = b * BLOCK;
            let events = (first..first + BLOCK).map(move |w| (1 + b * (ROUNDS + 1), w, None));
            let attempts = (0..ROUNDS).flat_map(move |round| {
                (first * FANOUT..(first + BLOCK) * FANOUT)
                    .filter(move |&d| history(d).len() as u64 > round)
                    .map(move |d| (2 + b * (ROUNDS + 1) + round, d, Some(round)))
            });
            events.chain(attempts)
        });
        let body = blocks.map(move |(phase, i, round)| {
            n += 1;
            let meta = metadata(0, n);
            let (stream, event) = match round {
                None => self.accepted(i),
                Some(round) => attempt(i, round),
            };
            (phase, stream, encode(&event, &meta))
        });
        setup.chain(body)
    }

    fn accepted(&self, w: u64) -> (String, Event) {
        let deliveries = (0..FANOUT)
            .map(|i| {
                let e = endpoint_of(w, i);
                PlannedDelivery {
                    delivery_id: delivery_id(w * FANOUT + i),
                    endpoint_id: endpoint_id(0, e),
                    endpoint_name: format!("Customer webhook {e:02}"),
                    endpoint_url: format!("https://hooks.example.com/v2/customers/{e:02}/webhooks"),
                }
            })
            .collect();
        let event = WebhookEventAccepted {
            event_id: event_id(w),
            organization_id: org(0),
            event_type: ["invoice.paid", "order.shipped", "customer.updated"][(w % 3) as usize]
                .into(),
            source_key: None,
            payload: Body::Kept(payload(w, self.filler)),
            deliveries,
        };
        (
            stream::event(&event.event_id),
            Event::WebhookEventAccepted(event),
        )
    }
}

/// The `i`th endpoint (of [`FANOUT`]) webhook event `w` goes to: distinct
/// endpoints, spread by a hash.
fn endpoint_of(w: u64, i: u64) -> u64 {
    let h = mix64(w ^ 0x5eed);
    let start = h % ENDPOINTS;
    let step = 1 + (h / ENDPOINTS) % 16;
    (start + i * step) % ENDPOINTS
}

/// Delivery `d`'s history.
fn history(d: u64) -> &'static [Outcome] {
    let mut slot = mix64(d) % 20;
    for (share, outcomes) in HISTORIES {
        if slot < share {
            return outcomes;
        }
        slot -= share;
    }
    unreachable!("the shares add up to 20")
}

/// Attempt `round` of delivery `d`.
fn attempt(d: u64, round: u64) -> (String, Event) {
    let h = mix64(d.wrapping_mul(31).wrapping_add(round) ^ 0xa77e);
    let pct = h % 100;
    let outcome = history(d)[round as usize];
    let (status, code) = match outcome {
        Delivered => (
            AttemptStatus::Delivered,
            Some(match pct {
                0..80 => 200,
                80..90 => 201,
                _ => 204,
            }),
        ),
        Retry => (
            AttemptStatus::RetryScheduled,
            match pct {
                0..40 => Some(503),
                40..55 => Some(500),
                55..70 => Some(502),
                70..80 => Some(429),
                _ => None,
            },
        ),
        Failed => (
            AttemptStatus::Failed,
            Some(match pct {
                0..50 => 410,
                50..75 => 400,
                _ => 500,
            }),
        ),
    };
    let due = RETRY_FROM + ((h >> 8) % RETRY_SPAN as u64) as i64;
    let next_retry_at = (outcome == Retry)
        .then(|| RetryAt::parse(&Timestamp::from_micros(due).to_string()).expect("a retry time"));
    let last_error = match (outcome, code) {
        (Delivered, _) => None,
        (_, None) => Some("no answer within 30 s"),
        (_, Some(_)) => Some("the endpoint answered with an error"),
    }
    .map(|e| NonEmptyString::parse(e).expect("non-empty"));
    let response_body = code.map(|c| {
        JsonObject::from_value(&if outcome == Delivered {
            json!({"ok": true})
        } else {
            json!({"error": format!("upstream answered {c}")})
        })
        .expect("an object")
    });
    let w = d / FANOUT;
    let attempt = AttemptRecorded {
        delivery_id: delivery_id(d),
        event_id: event_id(w),
        organization_id: org(0),
        status,
        response_status_code: code.and_then(|c| HttpStatusCode::parse(i64::from(c))),
        response_body: response_body.map(Body::Kept),
        last_error,
        next_retry_at,
    };
    (
        stream::delivery(&attempt.delivery_id),
        Event::AttemptRecorded(attempt),
    )
}

/// The event as the ledger writes it; salts are drawn from a fixed
/// sequence, so every run writes the same bytes.
fn encode(event: &Event, meta: &Metadata) -> NewEvent {
    static SALTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let encoded = event.encode(&mut || {
        let n = mix64(SALTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let mut salt = [0; 16];
        salt[..8].copy_from_slice(&n.to_le_bytes());
        salt[8..].copy_from_slice(&mix64(n).to_le_bytes());
        salt
    });
    NewEvent {
        event_type: event.event_type().to_owned(),
        schema_version: event.schema_version(),
        data: encoded.data,
        metadata: meta.to_canonical_bytes(),
        content: encoded.content,
    }
}

/// A 64-bit mix (splitmix64's finaliser): a fixed hash, the same every run.
pub fn mix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce5_e9b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
