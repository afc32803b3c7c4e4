//! Answers that need the log rather than the live model: a resource as it stood
//! at a past position or version, for idempotent replays and `asOfVersion`.

use projections::ReadModel;
use projections::event::stream;
use projections::view::{DeliveryView, EndpointView, EventSnapshot};

use super::{Error, Ledger};
use crate::projector;
use crate::store::{self, RecordedEvent};

impl Ledger {
    /// The webhook event with its deliveries as it stood at `position`.
    pub async fn event_as_of(
        &self,
        org: &str,
        event_id: &str,
        position: u64,
    ) -> Result<Option<EventSnapshot>, Error> {
        let delivery_ids = {
            let state = self.projector.read();
            match state.model.tenant(org).and_then(|t| t.event(event_id)) {
                Some(event) => event.delivery_ids.clone(),
                None => return Ok(None),
            }
        };
        let mut streams = vec![stream::event(event_id)];
        streams.extend(delivery_ids.iter().map(|id| stream::delivery(id)));
        let model = self
            .fold_streams(&streams, |e| e.position <= position)
            .await?;
        Ok(model.tenant(org).and_then(|t| t.event_snapshot(event_id)))
    }

    /// The endpoint as it stood at `position`.
    pub async fn endpoint_as_of(
        &self,
        org: &str,
        endpoint_id: &str,
        position: u64,
    ) -> Result<Option<EndpointView>, Error> {
        let model = self
            .fold_streams(&[stream::endpoint(endpoint_id)], |e| e.position <= position)
            .await?;
        Ok(model
            .tenant(org)
            .and_then(|t| t.endpoints.get(endpoint_id))
            .map(EndpointView::from))
    }

    /// The delivery as it stood after the first `version` events of its stream.
    pub async fn delivery_as_of_version(
        &self,
        org: &str,
        delivery_id: &str,
        version: u64,
    ) -> Result<Option<DeliveryView>, Error> {
        let event_id = {
            let state = self.projector.read();
            match state
                .model
                .tenant(org)
                .and_then(|t| t.delivery(delivery_id))
            {
                Some(d) if version <= d.version => d.event_id.clone(),
                _ => return Ok(None),
            }
        };
        let delivery_stream = stream::delivery(delivery_id);
        let streams = [stream::event(&event_id), delivery_stream.clone()];
        let model = self
            .fold_streams(&streams, |e| {
                e.stream != delivery_stream || e.version < version
            })
            .await?;
        Ok(model
            .tenant(org)
            .and_then(|t| t.delivery(delivery_id))
            .map(DeliveryView::from))
    }

    /// Every event of one stream, in version order.
    pub async fn read_stream(&self, stream: &str) -> Result<Vec<RecordedEvent>, Error> {
        Ok(store::read_whole_stream(self.store.as_ref(), stream).await?)
    }

    /// Folds the chosen events of some streams, in position order, into a fresh model.
    async fn fold_streams(
        &self,
        streams: &[String],
        keep: impl Fn(&RecordedEvent) -> bool,
    ) -> Result<ReadModel, Error> {
        let mut events = Vec::new();
        for name in streams {
            events.extend(self.read_stream(name).await?.into_iter().filter(&keep));
        }
        events.sort_by_key(|e| e.position);
        let mut model = ReadModel::default();
        for event in &events {
            model.apply(&projector::decode(event)?);
        }
        Ok(model)
    }
}
