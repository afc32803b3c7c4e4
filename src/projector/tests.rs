//! The projector against a store: snapshots trusted only when they match the log,
//! tails replayed, and a stop on an event that cannot be folded.

use super::*;
use crate::store::memory::MemoryStore;
use crate::store::{ExpectedVersion, NewEvent};
use projections::event::{EndpointCreated, EndpointUpdated};
use projections::{Event, Metadata};

fn new_event(event: Event) -> NewEvent {
    NewEvent {
        event_type: event.event_type().to_owned(),
        schema_version: event.schema_version(),
        data: event.to_canonical_bytes(),
        metadata: Metadata::default().to_canonical_bytes(),
    }
}

/// An endpoint created and then renamed `renames` times.
async fn endpoint_history(store: &dyn EventStore, id: &str, renames: usize) {
    let created = Event::EndpointCreated(EndpointCreated {
        endpoint_id: id.into(),
        organization_id: "org_1".into(),
        name: "first".into(),
        url: "https://example.com/hook".into(),
        event_types: vec![],
        enabled: true,
    });
    let stream = projections::event::stream::endpoint(id);
    store
        .append(&stream, ExpectedVersion::NoStream, vec![new_event(created)])
        .await
        .unwrap();
    for i in 0..renames {
        let renamed = Event::EndpointUpdated(EndpointUpdated {
            endpoint_id: id.into(),
            organization_id: "org_1".into(),
            name: Some(format!("name {i}")),
            url: None,
            event_types: None,
            enabled: None,
        });
        store
            .append(&stream, ExpectedVersion::Any, vec![new_event(renamed)])
            .await
            .unwrap();
    }
}

async fn rebuilt(store: Arc<dyn EventStore>) -> Snapshot {
    let (projector, _) = Projector::open(store, None).await;
    projector.catch_up().await.unwrap();
    projector.read().clone()
}

#[tokio::test]
async fn a_restart_loads_the_snapshot_and_replays_only_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let file = crate::snapshot::path_in(dir.path());
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    endpoint_history(store.as_ref(), "ep_1", 3).await;
    let (first, _) = Projector::open(store.clone(), Some(&file)).await;
    first.catch_up().await.unwrap();
    assert_eq!(first.save(&file).unwrap(), 4);

    endpoint_history(store.as_ref(), "ep_2", 2).await;
    let (second, start) = Projector::open(store.clone(), Some(&file)).await;
    assert_eq!(start, Start::Snapshot { position: 4 });
    assert_eq!(
        second.position(),
        4,
        "nothing before the snapshot is replayed"
    );
    second.catch_up().await.unwrap();
    assert_eq!(second.position(), 7);
    let expected = rebuilt(store).await;
    assert_eq!(*second.read(), expected);
}

#[tokio::test]
async fn a_damaged_snapshot_is_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let file = crate::snapshot::path_in(dir.path());
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    endpoint_history(store.as_ref(), "ep_1", 2).await;
    let (first, _) = Projector::open(store.clone(), Some(&file)).await;
    first.catch_up().await.unwrap();
    first.save(&file).unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&file, bytes).unwrap();

    let (second, start) = Projector::open(store.clone(), Some(&file)).await;
    assert!(
        matches!(&start, Start::Empty { reason } if reason.contains("unusable")),
        "{start:?}"
    );
    second.catch_up().await.unwrap();
    let expected = rebuilt(store).await;
    assert_eq!(*second.read(), expected);
}

#[tokio::test]
async fn a_snapshot_of_another_log_or_ahead_of_the_log_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let file = crate::snapshot::path_in(dir.path());
    let one: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    endpoint_history(one.as_ref(), "ep_1", 2).await;
    let (projector, _) = Projector::open(one, Some(&file)).await;
    projector.catch_up().await.unwrap();
    projector.save(&file).unwrap();

    let other: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    endpoint_history(other.as_ref(), "ep_9", 2).await;
    let (_, start) = Projector::open(other, Some(&file)).await;
    assert!(
        matches!(&start, Start::Empty { reason } if reason.contains("does not match")),
        "{start:?}"
    );

    let shorter: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    endpoint_history(shorter.as_ref(), "ep_1", 0).await;
    let (_, start) = Projector::open(shorter, Some(&file)).await;
    assert!(
        matches!(&start, Start::Empty { reason } if reason.contains("log ends at 1")),
        "{start:?}"
    );
}

#[tokio::test]
async fn an_event_that_cannot_be_folded_stops_the_projector_and_fails_waiters() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    store
        .append(
            "endpoint-ep_1",
            ExpectedVersion::Any,
            vec![NewEvent {
                event_type: "EndpointExploded".into(),
                schema_version: 1,
                data: b"{}".to_vec(),
                metadata: b"{}".to_vec(),
            }],
        )
        .await
        .unwrap();
    let (projector, _) = Projector::open(store, None).await;
    tokio::spawn(projector.clone().run());
    let waited = projector.wait_for(1).await;
    assert!(matches!(waited, Err(Error::Stopped(_))), "{waited:?}");
    assert!(projector.stopped().unwrap().contains("EndpointExploded"));
    assert!(!projector.caught_up());
}

#[tokio::test]
async fn a_replay_in_batches_equals_the_projector_folding_event_by_event() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    for e in 0..6 {
        endpoint_history(store.as_ref(), &format!("ep_{e}"), 5).await;
    }
    let expected = rebuilt(store.clone()).await;
    assert_eq!(expected.position(), 36);
    for batch in [1, 7, 36, 1000] {
        let replayed = replay(store.as_ref(), Snapshot::default(), batch, |_| {})
            .await
            .unwrap();
        assert_eq!(replayed, expected, "batch of {batch}");
    }
    // From a snapshot part of the way: only the tail is folded on.
    let mut part = Snapshot::default();
    for event in store.read_all(1, 20).await.unwrap() {
        part.apply(&event).unwrap();
    }
    let replayed = replay(store.as_ref(), part, 7, |_| {}).await.unwrap();
    assert_eq!(replayed, expected);
}

#[tokio::test]
async fn a_replay_fails_naming_the_first_event_that_cannot_be_folded() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    endpoint_history(store.as_ref(), "ep_1", 10).await;
    let bad = NewEvent {
        event_type: "EndpointExploded".into(),
        schema_version: 1,
        data: b"{}".to_vec(),
        metadata: b"{}".to_vec(),
    };
    store
        .append("endpoint-ep_2", ExpectedVersion::Any, vec![bad])
        .await
        .unwrap();
    endpoint_history(store.as_ref(), "ep_3", 10).await;
    for batch in [1, 4, 1000] {
        let failed = replay(store.as_ref(), Snapshot::default(), batch, |_| {}).await;
        assert!(
            matches!(&failed, Err(Error::Fold { position: 12, reason }) if reason.contains("EndpointExploded")),
            "batch of {batch}: {failed:?}"
        );
    }
}
