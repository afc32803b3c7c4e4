//! The projector against a store: a stored model trusted only when it matches
//! the log, tails replayed, damage rebuilt, and a stop on an event that cannot
//! be folded.

use super::*;
use crate::store::memory::MemoryStore;
use crate::store::{ExpectedVersion, NewEvent};
use projections::event::{EndpointCreated, EndpointUpdated};
use projections::{Event, Metadata};

pub(super) fn new_event(event: Event) -> NewEvent {
    let encoded = event.encode(&mut || [7; 16]);
    NewEvent {
        event_type: event.event_type().to_owned(),
        schema_version: event.schema_version(),
        data: encoded.data,
        metadata: Metadata::default().to_canonical_bytes(),
        content: encoded.content,
    }
}

/// An endpoint created and then renamed `renames` times.
pub(super) async fn endpoint_history(store: &dyn EventStore, id: &str, renames: usize) {
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

pub(super) fn on_disk(dir: &std::path::Path) -> Config {
    Config {
        file: Some(crate::model::file_in(dir)),
        cache_bytes: 4 << 20,
        payload_cache_bytes: 1 << 20,
        options: crate::model::Options::default(),
    }
}

/// Every row of a model, as the comparison of `projections rebuild --verify` sees it.
fn differences(a: &Model, b: &Model) -> Vec<String> {
    a.flush().unwrap();
    b.flush().unwrap();
    crate::model::compare::stores(
        a.snapshot().unwrap().as_ref(),
        b.snapshot().unwrap().as_ref(),
    )
    .unwrap()
}

/// The model a fresh projector folds the whole log into.
async fn rebuilt(store: Arc<dyn EventStore>) -> Arc<Projector> {
    let (projector, _) = Projector::open(store, Config::in_memory()).await.unwrap();
    projector.catch_up().await.unwrap();
    projector
}

#[tokio::test]
async fn a_restart_resumes_from_the_stored_position_and_replays_only_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    endpoint_history(store.as_ref(), "ep_1", 3).await;
    let (first, _) = Projector::open(store.clone(), on_disk(dir.path()))
        .await
        .unwrap();
    first.catch_up().await.unwrap();
    first.close().unwrap();
    drop(first);

    endpoint_history(store.as_ref(), "ep_2", 2).await;
    let (second, start) = Projector::open(store.clone(), on_disk(dir.path()))
        .await
        .unwrap();
    assert_eq!(start, Start::Resumed { position: 4 });
    assert_eq!(
        second.position(),
        4,
        "nothing before the stored position is replayed"
    );
    second.catch_up().await.unwrap();
    assert_eq!(second.position(), 7);
    let expected = rebuilt(store).await;
    assert_eq!(
        differences(&second.model(), &expected.model()),
        Vec::<String>::new()
    );
}

/// A log of an endpoint's history and a model of it on disk, written out
/// and closed: the directory, the log, and the model's file.
async fn closed_model_on_disk() -> (tempfile::TempDir, Arc<dyn EventStore>, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    endpoint_history(store.as_ref(), "ep_1", 2).await;
    let (first, _) = Projector::open(store.clone(), on_disk(dir.path()))
        .await
        .unwrap();
    first.catch_up().await.unwrap();
    first.close().unwrap();
    drop(first);
    let file = crate::model::file_in(dir.path());
    (dir, store, file)
}

#[tokio::test]
async fn a_damaged_model_file_is_set_aside_and_rebuilt_from_the_log() {
    let (dir, store, file) = closed_model_on_disk().await;
    let mut bytes = std::fs::read(&file).unwrap();
    let header = 4096.min(bytes.len() / 2);
    for b in &mut bytes[..header] {
        *b ^= 0x5a;
    }
    std::fs::write(&file, bytes).unwrap();

    let (second, start) = Projector::open(store.clone(), on_disk(dir.path()))
        .await
        .unwrap();
    assert!(
        matches!(&start, Start::Fresh { reason: Some(_) }),
        "{start:?}"
    );
    assert!(
        file.with_extension("redb.set-aside").exists(),
        "the damaged file is kept aside"
    );
    second.catch_up().await.unwrap();
    let expected = rebuilt(store).await;
    assert_eq!(
        differences(&second.model(), &expected.model()),
        Vec::<String>::new()
    );
}

/// A model written by a build of an older format (its indexes and values
/// laid out otherwise) is never read: it is set aside, saying which format
/// it is and which this build reads, and rebuilt from the log.
#[tokio::test]
async fn a_model_of_an_older_format_is_set_aside_and_rebuilt_from_the_log() {
    let (dir, store, file) = closed_model_on_disk().await;
    let older = crate::model::tables::FORMAT - 1;
    {
        let stored = crate::model::open(&file, 1 << 20).unwrap();
        assert_eq!(stored.format, Some(crate::model::tables::FORMAT));
        let mut batch = crate::kv::WriteBatch::default();
        // The meta row the model's format is kept in (`model::flush`).
        batch.put(
            crate::model::tables::META,
            b"format".to_vec(),
            older.to_be_bytes().to_vec(),
        );
        crate::kv::Kv::write(stored.kv.as_ref(), &batch, true).unwrap();
    }

    let (second, start) = Projector::open(store.clone(), on_disk(dir.path()))
        .await
        .unwrap();
    let said = format!(
        "it is of format {older}; this build reads format {}",
        crate::model::tables::FORMAT
    );
    assert!(
        matches!(&start, Start::Fresh { reason: Some(reason) } if *reason == said),
        "{start:?}"
    );
    assert!(file.with_extension("redb.set-aside").exists());
    second.catch_up().await.unwrap();
    let expected = rebuilt(store).await;
    assert_eq!(
        differences(&second.model(), &expected.model()),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_model_of_another_log_or_ahead_of_the_log_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let one: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    endpoint_history(one.as_ref(), "ep_1", 2).await;
    let (projector, _) = Projector::open(one, on_disk(dir.path())).await.unwrap();
    projector.catch_up().await.unwrap();
    projector.close().unwrap();
    drop(projector);

    let other: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    endpoint_history(other.as_ref(), "ep_9", 2).await;
    let (again, start) = Projector::open(other, on_disk(dir.path())).await.unwrap();
    assert!(
        matches!(&start, Start::Fresh { reason: Some(reason) } if reason.contains("another log")),
        "{start:?}"
    );
    again.catch_up().await.unwrap();
    again.close().unwrap();
    drop(again);

    let shorter: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    endpoint_history(shorter.as_ref(), "ep_9", 0).await;
    let (_, start) = Projector::open(shorter, on_disk(dir.path())).await.unwrap();
    assert!(
        matches!(&start, Start::Fresh { reason: Some(reason) } if reason.contains("log ends at 1")),
        "{start:?}"
    );
}

#[tokio::test]
async fn a_second_process_cannot_open_a_model_that_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let (_first, _) = Projector::open(store.clone(), on_disk(dir.path()))
        .await
        .unwrap();
    let second = Projector::open(store, on_disk(dir.path())).await;
    assert!(matches!(second, Err(Error::Locked(_))), "{second:?}");
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
                content: Vec::new(),
            }],
        )
        .await
        .unwrap();
    let (projector, _) = Projector::open(store, Config::in_memory()).await.unwrap();
    tokio::spawn(projector.clone().run());
    let waited = projector.wait_for(1).await;
    assert!(matches!(waited, Err(Error::Stopped(_))), "{waited:?}");
    assert!(projector.stopped().unwrap().contains("EndpointExploded"));
    assert!(!projector.caught_up());
    assert!(
        projector.view().is_err(),
        "a stopped model is not read from"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_in_batches_equals_the_projector_folding_batch_by_batch() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    for e in 0..6 {
        endpoint_history(store.as_ref(), &format!("ep_{e}"), 5).await;
    }
    let expected = rebuilt(store.clone()).await;
    assert_eq!(expected.position(), 36);
    for batch in [1, 7, 36, 1000] {
        let (fresh, _) = Projector::open(store.clone(), Config::in_memory())
            .await
            .unwrap();
        let model = fresh.model();
        replay(store.as_ref(), model.clone(), batch, |_| {})
            .await
            .unwrap();
        assert_eq!(model.applied(), 36);
        assert_eq!(model.tip(), expected.model().tip(), "batch of {batch}");
        assert_eq!(
            differences(&model, &expected.model()),
            Vec::<String>::new(),
            "batch of {batch}"
        );
    }
    // From part of the way: only the tail is folded on.
    let (part, _) = Projector::open(store.clone(), Config::in_memory())
        .await
        .unwrap();
    let model = part.model();
    let first = store.read_all(1, 20).await.unwrap();
    let decoded: Vec<_> = first
        .iter()
        .map(|e| crate::model::Decoded::new(&EventRef::from(e)).unwrap())
        .collect();
    model.apply(&decoded).unwrap();
    replay(store.as_ref(), model.clone(), 7, |_| {})
        .await
        .unwrap();
    assert_eq!(differences(&model, &expected.model()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_fails_naming_the_first_event_that_cannot_be_folded() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    endpoint_history(store.as_ref(), "ep_1", 10).await;
    let bad = NewEvent {
        event_type: "EndpointExploded".into(),
        schema_version: 1,
        data: b"{}".to_vec(),
        metadata: b"{}".to_vec(),
        content: Vec::new(),
    };
    store
        .append("endpoint-ep_2", ExpectedVersion::Any, vec![bad])
        .await
        .unwrap();
    endpoint_history(store.as_ref(), "ep_3", 10).await;
    for batch in [1, 4, 1000] {
        let (fresh, _) = Projector::open(store.clone(), Config::in_memory())
            .await
            .unwrap();
        let failed = replay(store.as_ref(), fresh.model(), batch, |_| {}).await;
        assert!(
            matches!(&failed, Err(Error::Model(crate::model::Error::Fold { position: 12, reason })) if reason.contains("EndpointExploded")),
            "batch of {batch}: {failed:?}"
        );
    }
}

// One thread: the follower cannot start the rebuild before the test has
// seen the model refuse reads.
#[tokio::test]
async fn a_model_found_damaged_while_serving_is_rebuilt_from_the_log() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    endpoint_history(store.as_ref(), "ep_1", 3).await;
    let (projector, _) = Projector::open(store.clone(), Config::in_memory())
        .await
        .unwrap();
    tokio::spawn(projector.clone().run());
    projector.wait_for(4).await.unwrap();
    let before = projector.model();

    projector.report(&crate::model::Error::Kv(crate::kv::Error::Corrupt {
        file: "readmodel.redb".into(),
        reason: "a planted fault".into(),
    }));
    assert!(
        projector.view().is_err(),
        "a damaged model is not read from while it is rebuilt"
    );
    // The rebuild ends with a new model caught up with the log.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while projector.rebuilding().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the rebuild did not end"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !Arc::ptr_eq(&before, &projector.model()),
        "a fresh model took its place"
    );
    let view = projector.view().unwrap();
    assert_eq!(
        view.endpoint("org_1", "ep_1").unwrap().unwrap().name,
        "name 2"
    );
    let expected = rebuilt(store).await;
    assert_eq!(
        differences(&projector.model(), &expected.model()),
        Vec::<String>::new()
    );
}
