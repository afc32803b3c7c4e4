//! The payloads answers carry: each the content of the event that accepted
//! it, read from the log, with a bounded cache of those read lately in front.
//!
//! Every attempt's answer is its webhook event with the payload, and a
//! sender's attempts come while their events are young, so the same few
//! payloads are asked for again and again. Without the cache each answer
//! reads and decodes the accepting event from the log on a blocking thread.
//!
//! The cache changes nothing about what may be served: a hit is still asked
//! whether an erasure covers it, exactly as a read from the log is, and an
//! erasure through this node empties the cache, so erased bodies do not stay
//! in memory until they are evicted.

use std::sync::Arc;

use projections::model::WebhookEvent;
use projections::{Body, JsonObject, Timestamp};
use quick_cache::Weighter;
use quick_cache::sync::Cache;

use super::{Error, Ledger};
use crate::model::{self, View};

/// Bytes a cached payload is counted for beyond its text: the entry, the key
/// and the text's allocation.
const ENTRY_OVERHEAD: u64 = 96;

/// A payload read from the log, and what deciding whether it may be served
/// needs.
#[derive(Debug)]
struct Cached {
    /// When the accepting event was recorded: a retention erasure covers
    /// bodies recorded before its cut-off.
    recorded_at: Timestamp,
    /// Schema-1 events hold their payload inside the hashed data, where no
    /// erasure reaches; only payloads kept as content can be erased.
    erasable: bool,
    payload: JsonObject,
}

#[derive(Debug, Clone, Copy)]
struct ByBytes;

impl Weighter<u64, Arc<Cached>> for ByBytes {
    fn weight(&self, _position: &u64, cached: &Arc<Cached>) -> u64 {
        cached.payload.get().len() as u64 + ENTRY_OVERHEAD
    }
}

/// Payloads by the position of the event that accepted them, bounded by bytes.
pub(super) struct PayloadCache {
    cache: Option<Cache<u64, Arc<Cached>, ByBytes>>,
}

impl std::fmt::Debug for PayloadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadCache")
            .field("bytes", &self.cache.as_ref().map_or(0, |c| c.weight()))
            .finish()
    }
}

impl PayloadCache {
    /// A cache of about `bytes`; 0 keeps none.
    pub(super) fn new(bytes: usize) -> PayloadCache {
        let bytes = bytes as u64;
        let cache = (bytes > 0).then(|| {
            // quick_cache sizes its tables for an estimate of the entries;
            // a payload of a kilobyte is the common case.
            let items = usize::try_from(bytes / 1024).unwrap_or(usize::MAX).max(16);
            Cache::with_weighter(items, bytes, ByBytes)
        });
        PayloadCache { cache }
    }

    /// Drops every payload held, after an erasure.
    pub(super) fn clear(&self) {
        if let Some(cache) = &self.cache {
            cache.clear();
        }
    }

    /// `event`'s payload if it is held, as `view` lets it be served.
    fn get(&self, view: &View, event: &WebhookEvent) -> Result<Option<Body>, model::Error> {
        let Some(cache) = &self.cache else {
            return Ok(None);
        };
        let Some(cached) = cache.get(&event.position) else {
            return Ok(None);
        };
        if cached.erasable
            && view.is_erased(
                &event.organization_id,
                &event.id,
                event.position,
                cached.recorded_at,
            )?
        {
            cache.remove(&event.position);
            return Ok(Some(Body::Erased));
        }
        Ok(Some(Body::Kept(cached.payload.clone())))
    }

    fn put(&self, position: u64, cached: Cached) {
        if let Some(cache) = &self.cache {
            cache.insert(position, Arc::new(cached));
        }
    }
}

impl Ledger {
    /// The payloads of `events`, in their order, as they may be served: an
    /// erased one is [`Body::Erased`], whether or not compaction has removed
    /// it from the disk yet. Those not in the cache are read from the log.
    pub async fn payloads(&self, events: &[WebhookEvent]) -> Result<Vec<Body>, Error> {
        let view = self.view()?;
        let mut payloads = Vec::with_capacity(events.len());
        let mut missing = Vec::new();
        for (i, event) in events.iter().enumerate() {
            let held = self.payload_cache.get(&view, event)?;
            if held.is_none() {
                missing.push(i);
            }
            payloads.push(held);
        }
        if !missing.is_empty() {
            self.read_payloads(events, &missing, &mut payloads).await?;
        }
        payloads
            .into_iter()
            .zip(events)
            .map(|(payload, event)| {
                payload.ok_or_else(|| {
                    model::Error::Inconsistent(format!(
                        "the acceptance of event {} was not read from the log",
                        event.id
                    ))
                    .into()
                })
            })
            .collect()
    }

    /// Reads the payloads of `events[i]` for each `i` in `missing` from the
    /// log into `payloads[i]`, and keeps those that may be served.
    async fn read_payloads(
        &self,
        events: &[WebhookEvent],
        missing: &[usize],
        payloads: &mut [Option<Body>],
    ) -> Result<(), Error> {
        let positions: Vec<u64> = missing.iter().map(|&i| events[i].position).collect();
        let records = self.store.read_positions(&positions).await?;
        if records.len() != missing.len() {
            return Err(model::Error::Inconsistent(format!(
                "{} of {} accepted events read from the log",
                records.len(),
                missing.len()
            ))
            .into());
        }
        let view = self.view()?;
        for (&i, record) in missing.iter().zip(&records) {
            let event = &events[i];
            let recorded = view.decode_servable(record)?;
            let payload = match recorded.event {
                projections::Event::WebhookEventAccepted(e) if e.event_id == event.id => e.payload,
                _ => {
                    return Err(model::Error::Inconsistent(format!(
                        "position {} does not hold the acceptance of event {}",
                        record.position, event.id
                    ))
                    .into());
                }
            };
            if let Body::Kept(kept) = &payload {
                self.payload_cache.put(
                    record.position,
                    Cached {
                        recorded_at: Timestamp::from_micros(record.recorded_at),
                        erasable: !record.content.is_empty(),
                        payload: kept.clone(),
                    },
                );
            }
            payloads[i] = Some(payload);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use projections::event::ErasureReason;
    use projections::{AttemptStatus, Command, JsonObject, Settings};

    use super::*;
    use crate::ledger::{Answer, Context};
    use crate::node::Node;

    const ORG: &str = "org_1";

    fn ctx() -> Context {
        Context {
            organization_id: ORG.into(),
            ..Context::default()
        }
    }

    async fn attempt(ledger: &Ledger, delivery_id: &str) -> Body {
        let command = Command::RecordAttempt {
            delivery_id: delivery_id.into(),
            organization_id: ORG.into(),
            status: AttemptStatus::Failed,
            response_status_code: None,
            response_body: None,
            last_error: None,
            next_retry_at: None,
        };
        match ledger.execute(command, &ctx(), None).await.unwrap().answer {
            Answer::Event { snapshot, .. } => snapshot.payload,
            other => panic!("an attempt answers with its event, not {other:?}"),
        }
    }

    /// Accepts event `event_id` with `payload` for the organization's one
    /// endpoint (created with the first event): its delivery's id.
    async fn accepted_with_a_delivery(ledger: &Ledger, event_id: &str, payload: &str) -> String {
        let view = ledger.view().unwrap();
        if view.endpoint(ORG, "ep_1").unwrap().is_none() {
            let create = Command::CreateEndpoint {
                endpoint_id: "ep_1".into(),
                organization_id: ORG.into(),
                name: "receiver".into(),
                url: "https://example.com/hook".into(),
                event_types: vec![],
                enabled: true,
            };
            ledger.execute(create, &ctx(), None).await.unwrap();
        }
        let accept = Command::AcceptEvent {
            event_id: event_id.into(),
            organization_id: ORG.into(),
            event_type: "invoice.paid".into(),
            source_key: None,
            payload: JsonObject::parse(payload).unwrap(),
        };
        match ledger.execute(accept, &ctx(), None).await.unwrap().answer {
            Answer::Event { snapshot, .. } => snapshot.deliveries[0].id.clone(),
            other => panic!("accepting answers with the event, not {other:?}"),
        }
    }

    /// Erases event `event_id`'s bodies through `ledger`, as a DELETE does.
    async fn erase(ledger: &Ledger, event_id: &str) {
        let erase = Command::EraseContent {
            organization_id: ORG.into(),
            event_id: Some(event_id.into()),
            recorded_before: None,
            reason: ErasureReason::Request,
        };
        ledger.execute(erase, &ctx(), None).await.unwrap();
    }

    /// A payload held in the cache is still asked whether an erasure covers
    /// it: here the erasure comes through another ledger on the same store
    /// (as from another process sharing it), so this one's cache is not
    /// emptied, and only the check keeps the erased payload from being served.
    #[tokio::test]
    async fn a_cached_payload_erased_elsewhere_is_served_as_erased() {
        let node = Node::in_memory().await;
        let ledger = &node.ledger;
        let payload = JsonObject::parse(r#"{"customer":"cus_cached"}"#).unwrap();
        let delivery = accepted_with_a_delivery(ledger, "evt_1", payload.get()).await;
        // The acceptance's answer read the payload from the log; these are
        // served from the cache.
        assert_eq!(
            attempt(ledger, &delivery).await,
            Body::Kept(payload.clone())
        );
        assert_eq!(attempt(ledger, &delivery).await, Body::Kept(payload));
        assert!(!ledger.payload_cache.cache.as_ref().unwrap().is_empty());

        let elsewhere = Ledger::new(
            node.store.clone(),
            node.projector.clone(),
            Settings::default(),
            1 << 20,
        );
        erase(&elsewhere, "evt_1").await;

        assert_eq!(attempt(ledger, &delivery).await, Body::Erased);
        let event = ledger.view().unwrap().event(ORG, "evt_1").unwrap().unwrap();
        assert_eq!(ledger.payloads(&[event]).await.unwrap(), vec![Body::Erased]);
        assert_eq!(ledger.payload_cache.cache.as_ref().unwrap().len(), 0);
    }

    /// An erasure through this ledger empties its cache at once, so erased
    /// payloads do not linger in memory until they are evicted.
    #[tokio::test]
    async fn an_erasure_through_this_ledger_empties_the_cache() {
        let node = Node::in_memory().await;
        let ledger = &node.ledger;
        let delivery = accepted_with_a_delivery(ledger, "evt_1", r#"{"n":1}"#).await;
        accepted_with_a_delivery(ledger, "evt_2", r#"{"n":2}"#).await;
        attempt(ledger, &delivery).await;
        assert_eq!(ledger.payload_cache.cache.as_ref().unwrap().len(), 2);
        erase(ledger, "evt_1").await;
        assert_eq!(ledger.payload_cache.cache.as_ref().unwrap().len(), 0);
        assert_eq!(attempt(ledger, &delivery).await, Body::Erased);
    }
}
