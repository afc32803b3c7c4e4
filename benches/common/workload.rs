//! The ledger a bench replays or restarts: organizations with four endpoints
//! each, webhook events that fan out to all four, and attempts recorded in rounds
//! over every delivery (retries, then successes), so consecutive attempts touch
//! different deliveries as they do in production.
//!
//! Events are made here with the projections crate's own types; the attempt data,
//! written millions of times, is formatted directly and checked once against the
//! canonical encoder so that the shortcut cannot drift from the real bytes.

use std::sync::Arc;

use hookledger::store::embedded::EmbeddedStore;
use hookledger::store::{EventStore, ExpectedVersion, NewEvent};
use projections::event::Encoded;
use projections::event::{
    ApiKeyIssued, AttemptRecorded, EndpointCreated, PlannedDelivery, WebhookEventAccepted, stream,
};
use projections::values::{AttemptStatus, HttpStatusCode, NonEmptyString, RetryAt};
use projections::{Body, Event, JsonObject, Metadata, Recorded, Timestamp};
use serde_json::json;
use tokio::task::JoinSet;

pub const ORGS: u64 = 8;
/// Endpoints per organization in the benches' usual mix.
pub const ENDPOINTS: u64 = 4;
pub const T0: u64 = 1_750_000_000_000;

/// How big a ledger is, and what it is made of.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Webhook events; each fans out to `endpoints` deliveries.
    pub events: u64,
    /// Attempts over all deliveries, in rounds.
    pub attempts: u64,
    /// Endpoints per organization, all subscribed to every event.
    pub endpoints: u64,
    /// Bytes of filler in each event's payload, on top of a few fields.
    pub filler: usize,
    /// Events and their attempts in blocks of this many webhook events (each
    /// block's events, then its attempts, round by round), so that every
    /// prefix of whole blocks is a ledger of the same mix; 0: all events, then
    /// all attempts.
    pub block: u64,
}

impl Shape {
    /// The mix of the restart and rebuild benches: one webhook event per 40 log
    /// events, so 10 million log events hold 1 million deliveries with about ten
    /// attempts each.
    pub fn for_log_events(total: u64) -> Shape {
        let events = (total / 40).max(1);
        let shape = Shape {
            events,
            attempts: 0,
            endpoints: ENDPOINTS,
            filler: 0,
            block: 0,
        };
        Shape {
            attempts: total.saturating_sub(shape.setup_events() + events),
            ..shape
        }
    }

    /// The read model's scale workload: events with a 1 KiB payload, each
    /// fanned out to 2 endpoints, with 3 attempts per delivery, so 7 log
    /// events per webhook event.
    pub fn scale(total: u64) -> Shape {
        const BLOCK: u64 = 1024;
        let events = (total / 7 / BLOCK).max(1) * BLOCK;
        Shape {
            events,
            attempts: events * 2 * 3,
            endpoints: 2,
            filler: 1024 - 120,
            block: BLOCK,
        }
    }

    /// The usual mix with `events` webhook events and `attempts` attempts.
    pub fn of(events: u64, attempts: u64) -> Shape {
        Shape {
            events,
            attempts,
            endpoints: ENDPOINTS,
            filler: 0,
            block: 0,
        }
    }

    pub fn deliveries(&self) -> u64 {
        self.events * self.endpoints
    }

    pub fn log_events(&self) -> u64 {
        self.setup_events() + self.events + self.attempts
    }

    fn setup_events(&self) -> u64 {
        ORGS * (1 + self.endpoints)
    }

    /// The organization and id of webhook event `w`.
    pub fn event(&self, w: u64) -> (String, String) {
        (org(w % ORGS), event_id(w))
    }

    /// The organization and id of delivery `d`.
    pub fn delivery(&self, d: u64) -> (String, String) {
        (org(d / self.endpoints % ORGS), delivery_id(d))
    }
}

pub fn ulid(prefix: &str, ms: u64, n: u64) -> String {
    format!("{prefix}_{}", ulid::Ulid::from_parts(ms, u128::from(n)))
}

pub fn org(o: u64) -> String {
    format!("org_bench_{o:02}")
}

pub fn key_id(o: u64) -> String {
    ulid("key", T0, o)
}

pub fn endpoint_id(o: u64, i: u64) -> String {
    ulid("ep", T0, 100 + o * ENDPOINTS + i)
}

pub fn event_id(w: u64) -> String {
    ulid("evt", T0 + w / 64, w)
}

pub fn delivery_id(d: u64) -> String {
    ulid("dlv", T0 + d / 256, d)
}

const NAMES: [&str; 4] = ["Billing", "Fulfilment", "CRM sync", "Analytics"];

fn endpoint_name(i: u64) -> String {
    format!("{} webhook", NAMES[i as usize % 4])
}

fn endpoint_url(o: u64, i: u64) -> String {
    format!(
        "https://hooks.customer{o:02}.example.com/v2/webhooks/{}",
        NAMES[i as usize % 4].to_lowercase().replace(' ', "-")
    )
}

/// The log events in order, each with its stream and metadata.
pub fn events(shape: Shape) -> impl Iterator<Item = (String, Event, Metadata)> {
    events_from(shape, 0)
}

/// [`events`] from the `skip`-th on: a ledger grown from a smaller one of the
/// same mix, which holds the ones before.
pub fn events_from(shape: Shape, skip: u64) -> impl Iterator<Item = (String, Event, Metadata)> {
    all_events(shape).skip(usize::try_from(skip).unwrap_or(usize::MAX))
}

fn all_events(shape: Shape) -> impl Iterator<Item = (String, Event, Metadata)> {
    let mut setup = Vec::new();
    for o in 0..ORGS {
        setup.push((
            stream::api_keys(&org(o)),
            Event::ApiKeyIssued(ApiKeyIssued {
                key_id: key_id(o),
                organization_id: org(o),
                secret_sha256: format!("{:064x}", o + 1),
            }),
            Metadata::default(),
        ));
        for i in 0..shape.endpoints {
            setup.push((
                stream::endpoint(&endpoint_id(o, i)),
                Event::EndpointCreated(EndpointCreated {
                    endpoint_id: endpoint_id(o, i),
                    organization_id: org(o),
                    name: endpoint_name(i),
                    url: endpoint_url(o, i),
                    event_types: vec![],
                    enabled: true,
                }),
                Metadata {
                    key_id: Some(key_id(o)),
                    ..Metadata::default()
                },
            ));
        }
    }
    let accepted = move |w: u64| {
        let (stream, event) = accepted(shape, w);
        (stream, event, metadata(w % ORGS, w))
    };
    let body: Box<dyn Iterator<Item = (String, Event, Metadata)>> = if shape.block == 0 {
        Box::new((0..shape.events).map(accepted).chain(attempts(shape)))
    } else {
        let per_block = shape.block * shape.endpoints;
        let rounds = shape.attempts / shape.deliveries().max(1);
        Box::new((0..shape.events / shape.block).flat_map(move |b| {
            let events = (b * shape.block..(b + 1) * shape.block).map(accepted);
            let attempts = (0..rounds).flat_map(move |round| {
                (b * per_block..(b + 1) * per_block).map(move |d| {
                    let k = round * shape.deliveries() + d;
                    let (stream, a) = attempt(shape, k);
                    let n = shape.events + b * per_block * rounds + round * per_block + d;
                    let o = d / shape.endpoints % ORGS;
                    (stream, Event::AttemptRecorded(a), metadata(o, n))
                })
            });
            events.chain(attempts)
        }))
    };
    setup.into_iter().chain(body)
}

pub fn metadata(o: u64, n: u64) -> Metadata {
    Metadata {
        request_id: Some(format!("req_{n:012}")),
        key_id: Some(key_id(o)),
        idempotency: None,
    }
}

fn accepted(shape: Shape, w: u64) -> (String, Event) {
    let o = w % ORGS;
    let deliveries = (0..shape.endpoints)
        .map(|i| PlannedDelivery {
            delivery_id: delivery_id(w * shape.endpoints + i),
            endpoint_id: endpoint_id(o, i),
            endpoint_name: endpoint_name(i),
            endpoint_url: endpoint_url(o, i),
        })
        .collect();
    let event = WebhookEventAccepted {
        event_id: event_id(w),
        organization_id: org(o),
        event_type: if w.is_multiple_of(3) {
            "invoice.paid"
        } else {
            "order.shipped"
        }
        .into(),
        source_key: None,
        payload: Body::Kept(payload(w, shape.filler)),
        deliveries,
    };
    (
        stream::event(&event.event_id),
        Event::WebhookEventAccepted(event),
    )
}

/// The payload of webhook event `w`: a few fields and `filler` bytes of note.
pub fn payload(w: u64, filler: usize) -> JsonObject {
    JsonObject::from_value(&json!({
        "invoiceId": format!("inv_{w:010}"),
        "amount": 1200 + w % 1000,
        "currency": "EUR",
        "customer": {"id": format!("cus_{:06}", w % 50_000), "country": "DE"},
        "note": "n".repeat(filler),
    }))
    .expect("an object")
}

/// Attempt `k` overall: round `k / deliveries` over delivery `k % deliveries`.
fn attempt(shape: Shape, k: u64) -> (String, AttemptRecorded) {
    let d = k % shape.deliveries();
    let round = k / shape.deliveries();
    let w = d / shape.endpoints;
    let delivered = round % 4 == 3;
    let attempt = AttemptRecorded {
        delivery_id: delivery_id(d),
        event_id: event_id(w),
        organization_id: org(w % ORGS),
        status: if delivered {
            AttemptStatus::Delivered
        } else {
            AttemptStatus::RetryScheduled
        },
        response_status_code: HttpStatusCode::parse(if delivered { 200 } else { 503 }),
        response_body: JsonObject::from_value(&if delivered {
            json!({"ok": true})
        } else {
            json!({"error": "unavailable"})
        })
        .map(Body::Kept),
        last_error: (!delivered).then(|| {
            NonEmptyString::parse("upstream answered 503 Service Unavailable").expect("non-empty")
        }),
        next_retry_at: (!delivered).then(|| RetryAt::parse("2030-01-01T00:00:00Z").expect("valid")),
    };
    (stream::delivery(&attempt.delivery_id), attempt)
}

fn attempts(shape: Shape) -> impl Iterator<Item = (String, Event, Metadata)> {
    (0..shape.attempts).map(move |k| {
        let (stream, a) = attempt(shape, k);
        let o = (k % shape.deliveries()) / shape.endpoints % ORGS;
        (
            stream,
            Event::AttemptRecorded(a),
            metadata(o, shape.events + k),
        )
    })
}

/// The salt of the `n`-th body the generator writes: a fixed sequence, so
/// every run writes the same log.
fn salt(n: u64) -> [u8; 16] {
    let mut salt = [0; 16];
    salt[..8].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    salt[8..].copy_from_slice(&(!n).to_le_bytes());
    salt
}

/// An attempt as the ledger stores it (data and content), formatted
/// directly: the log generator writes millions of them.
fn attempt_encoded(a: &AttemptRecorded, salt: [u8; 16]) -> Encoded {
    let opt = |s: Option<String>| s.map_or("null".to_owned(), |s| format!("\"{s}\""));
    let body = a.response_body.as_ref().and_then(Body::kept);
    let content = body.map_or_else(Vec::new, |b| projections::body::seal(b, salt).content);
    let digest = body.map(|_| projections::body::digest(&content));
    let data = format!(
        r#"{{"deliveryId":"{}","eventId":"{}","lastError":{},"nextRetryAt":{},"organizationId":"{}","responseBodyDigest":{},"responseStatusCode":{},"status":"{}"}}"#,
        a.delivery_id,
        a.event_id,
        opt(a.last_error.as_ref().map(|e| e.as_str().to_owned())),
        opt(a.next_retry_at.as_ref().map(|_| "2030-01-01T00:00:00Z".to_owned())),
        a.organization_id,
        opt(digest),
        a.response_status_code.map_or("null".to_owned(), |c| c.get().to_string()),
        a.status.as_str(),
    )
    .into_bytes();
    Encoded { data, content }
}

fn metadata_bytes(m: &Metadata) -> Vec<u8> {
    match (&m.key_id, &m.request_id, &m.idempotency) {
        (Some(k), Some(r), None) => format!(r#"{{"keyId":"{k}","requestId":"{r}"}}"#).into_bytes(),
        _ => m.to_canonical_bytes(),
    }
}

fn new_event(event: &Event, meta: &Metadata, n: u64) -> NewEvent {
    let encoded = match event {
        Event::AttemptRecorded(a) => attempt_encoded(a, salt(n)),
        other => other.encode(&mut || salt(n)),
    };
    NewEvent {
        event_type: event.event_type().to_owned(),
        schema_version: event.schema_version(),
        data: encoded.data,
        metadata: metadata_bytes(meta),
        content: encoded.content,
    }
}

/// Panics unless the directly formatted bytes are the canonical ones.
pub fn check_formatting() {
    for (n, (_, event, meta)) in (0..).zip(attempts(Shape::of(4, 64))) {
        let fast = new_event(&event, &meta, n);
        let encoded = event.encode(&mut || salt(n));
        assert_eq!(fast.data, encoded.data, "attempt bytes drifted");
        assert_eq!(fast.content, encoded.content, "attempt content drifted");
        assert_eq!(
            fast.metadata,
            meta.to_canonical_bytes(),
            "metadata bytes drifted"
        );
    }
}

/// Appends the whole ledger of `shape` to `store`, many appends in flight so
/// that the writer commits them in large batches. Returns the head.
pub async fn fill(store: &Arc<EmbeddedStore>, shape: Shape) -> u64 {
    grow(store, shape).await
}

/// Appends what the ledger of `shape` holds beyond what `store` holds already
/// (a smaller ledger of the same mix). Returns the head.
pub async fn grow(store: &Arc<EmbeddedStore>, shape: Shape) -> u64 {
    check_formatting();
    let have = store.head();
    // A ledger of a blocked mix holds a smaller one's events first.
    let events = (have..)
        .zip(events_from(shape, have))
        .map(|(n, (stream, event, meta))| {
            // Webhook events must land before their attempts, endpoints before both.
            let phase = match event {
                Event::ApiKeyIssued(_) | Event::EndpointCreated(_) => 0,
                Event::WebhookEventAccepted(_) => 1,
                _ => 2,
            };
            (phase, stream, new_event(&event, &meta, n))
        });
    append_phased(store, events).await
}

/// Appends `events` in their order, many appends in flight so that the writer
/// commits them in large batches; all of one phase may be in flight together,
/// and a change of phase waits until everything before it has landed (an
/// event's attempts after the event, a delivery's attempts in their order).
/// Returns the head.
pub async fn append_phased(
    store: &Arc<EmbeddedStore>,
    events: impl Iterator<Item = (u64, String, NewEvent)>,
) -> u64 {
    const IN_FLIGHT: usize = 8192;
    let mut tasks = JoinSet::new();
    let mut phase = 0;
    for (this_phase, stream, new) in events {
        if this_phase != phase {
            while tasks.join_next().await.is_some() {}
            phase = this_phase;
        }
        while tasks.len() >= IN_FLIGHT {
            tasks.join_next().await;
        }
        let store = store.clone();
        tasks.spawn(async move {
            store
                .append(&stream, ExpectedVersion::Any, vec![new])
                .await
                .expect("append while filling the bench log");
        });
    }
    while tasks.join_next().await.is_some() {}
    store.head()
}

/// The ledger of `shape` as the folds receive it, without a store: what the
/// memory bench feeds a read model.
pub fn each_recorded(shape: Shape, mut f: impl FnMut(Recorded)) {
    for (position, (_, event, metadata)) in (1u64..).zip(events(shape)) {
        f(Recorded {
            position,
            version: 0,
            recorded_at: Timestamp::from_micros((T0 * 1000 + position) as i64),
            metadata,
            event,
        });
    }
}
