//! Claims: the uniqueness a command asks the store to enforce across every
//! process that shares it, and how to recognise them again in recorded events.

use std::sync::Arc;

use projections::{Command, Metadata, Settings};

use super::Context;
use crate::store::{self, Claim, RecordedEvent};

/// The claims a command takes in the store (see
/// [`EventStore::append_claimed`](crate::store::EventStore::append_claimed)):
/// its `Idempotency-Key` per organization and route, for as long as keys are
/// kept, and an accepted event's `sourceKey` per organization, for good. The
/// store makes them unique across every process that shares it, which the
/// in-process locks in [`Ledger::execute`](super::Ledger::execute) cannot.
pub fn claims(command: &Command, ctx: &Context, settings: &Settings) -> Vec<Claim> {
    let org = &ctx.organization_id;
    let mut claims = Vec::new();
    if let Some(i) = &ctx.idempotency {
        claims.push(idempotency_claim(org, &i.route, &i.key, settings));
    }
    if let Command::AcceptEvent {
        source_key: Some(key),
        organization_id,
        ..
    } = command
    {
        claims.push(source_key_claim(organization_id, key));
    }
    claims
}

fn idempotency_claim(org: &str, route: &str, key: &str, settings: &Settings) -> Claim {
    Claim {
        name: format!("idempotency\n{org}\n{route}\n{key}"),
        ttl: Some(settings.idempotency_ttl),
    }
}

fn source_key_claim(org: &str, key: &str) -> Claim {
    Claim::forever(format!("sourceKey\n{org}\n{key}"))
}

/// The claims [`claims`] gave the append that recorded `event`, recognised from
/// the event itself, so a store that keeps no claims can rebuild them on open.
pub fn claims_of(event: &RecordedEvent, settings: &Settings) -> Vec<Claim> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Owner {
        organization_id: String,
        #[serde(default)]
        source_key: Option<String>,
    }
    let accepted = event.event_type == "WebhookEventAccepted";
    // Most events carry neither: skip them without parsing anything.
    let keyed = memchr_find(&event.metadata, b"\"idempotency\"");
    if !accepted && !keyed {
        return Vec::new();
    }
    let Ok(owner) = serde_json::from_slice::<Owner>(&event.data) else {
        return Vec::new();
    };
    let mut claims = Vec::new();
    if keyed
        && let Ok(Metadata {
            idempotency: Some(i),
            ..
        }) = Metadata::decode(&event.metadata)
    {
        claims.push(idempotency_claim(
            &owner.organization_id,
            &i.route,
            &i.key,
            settings,
        ));
    }
    if accepted && let Some(key) = &owner.source_key {
        claims.push(source_key_claim(&owner.organization_id, key));
    }
    claims
}

fn memchr_find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// [`claims_of`] in the form the embedded store's options take.
pub fn store_claims_of(settings: Settings) -> store::ClaimsOf {
    store::ClaimsOf(Arc::new(move |event| claims_of(event, &settings)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Context;
    use crate::node::Node;
    use projections::event::Idempotency;

    /// The embedded log rebuilds claims with `claims_of` from the records alone:
    /// it must find exactly the claims the command took when it was appended.
    #[tokio::test]
    async fn claims_of_a_recorded_event_are_the_claims_its_command_took() {
        let node = Node::in_memory().await;
        let ctx = Context {
            organization_id: "org_1".into(),
            idempotency: Some(Idempotency {
                key: "k-1".into(),
                route: "POST /v1/outbound-webhook-events".into(),
                request_sha256: "0".repeat(64),
            }),
            ..Context::default()
        };
        let command = Command::AcceptEvent {
            event_id: "evt_1".into(),
            organization_id: "org_1".into(),
            event_type: "invoice.paid".into(),
            source_key: Some("order-42".into()),
            payload: projections::JsonObject::parse(r#"{"n":1}"#).unwrap(),
        };
        let settings = Settings::default();
        let taken = claims(&command, &ctx, &settings);
        assert_eq!(taken.len(), 2);
        node.ledger.execute(command, &ctx, None).await.unwrap();
        let recorded = node.ledger.read_stream("event-evt_1").await.unwrap();
        assert_eq!(claims_of(&recorded[0], &settings), taken);

        // Without either key, nothing is claimed and nothing is recognised.
        let plain = Context {
            organization_id: "org_1".into(),
            ..Context::default()
        };
        let command = Command::AcceptEvent {
            event_id: "evt_2".into(),
            organization_id: "org_1".into(),
            event_type: "invoice.paid".into(),
            source_key: None,
            payload: projections::JsonObject::parse(r#"{"n":2}"#).unwrap(),
        };
        assert!(claims(&command, &plain, &settings).is_empty());
        node.ledger.execute(command, &plain, None).await.unwrap();
        let recorded = node.ledger.read_stream("event-evt_2").await.unwrap();
        assert!(claims_of(&recorded[0], &settings).is_empty());
    }
}
