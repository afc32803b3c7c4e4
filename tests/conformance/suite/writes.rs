//! Checks of what a backend lets in: expected versions, malformed appends, and
//! 32 writers racing on one stream with nothing lost, duplicated or torn apart.

use std::collections::HashSet;
use std::sync::Arc;

use hookledger::store::{Appended, Error, EventStore, ExpectedVersion, MAX_EVENT_BYTES};

use super::{assert_conflict, event, id_of, within};
use crate::Backend;

pub async fn expected_version_is_enforced(mut backend: impl Backend) {
    use ExpectedVersion::{Any, Exact, NoStream};
    let store = backend.open().await;
    let appended = store.append("s", NoStream, vec![event("0")]).await.unwrap();
    assert_eq!(appended.last_version, 0);

    assert_conflict(
        store.append("s", NoStream, vec![event("x")]).await,
        NoStream,
        Some(0),
    );
    assert_conflict(
        store.append("s", Exact(5), vec![event("x")]).await,
        Exact(5),
        Some(0),
    );
    assert_conflict(
        store.append("t", Exact(0), vec![event("x")]).await,
        Exact(0),
        None,
    );
    assert_eq!(store.head(), 1, "a conflicting append wrote something");

    let appended = store
        .append("s", Exact(0), vec![event("1"), event("2")])
        .await
        .unwrap();
    assert_eq!((appended.positions, appended.last_version), (2..=3, 2));
    assert_conflict(
        store.append("s", Exact(0), vec![event("x")]).await,
        Exact(0),
        Some(2),
    );
    let appended = store.append("s", Any, vec![event("3")]).await.unwrap();
    assert_eq!((appended.positions, appended.last_version), (4..=4, 3));
    let appended = store.append("t", Any, vec![event("t0")]).await.unwrap();
    assert_eq!((appended.positions, appended.last_version), (5..=5, 0));

    let ids: Vec<_> = store
        .read_stream("s", 0, 10)
        .await
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(ids, ["0", "1", "2", "3"]);
}

pub async fn malformed_appends_are_refused(mut backend: impl Backend) {
    let store = backend.open().await;
    let invalid = |r: Result<Appended, Error>| matches!(r, Err(Error::Invalid(_)));
    assert!(invalid(
        store
            .append("", ExpectedVersion::Any, vec![event("x")])
            .await
    ));
    assert!(invalid(
        store.append("s", ExpectedVersion::Any, vec![]).await
    ));
    let mut oversized = event("x");
    // Each store names its own limit; none may take more than the shared one.
    let limit = store.max_event_bytes();
    assert!(limit <= MAX_EVENT_BYTES);
    oversized.data = vec![b'x'; limit + 1];
    assert!(invalid(
        store
            .append("s", ExpectedVersion::Any, vec![oversized])
            .await
    ));
    assert_eq!(store.head(), 0);

    let mut largest = event("x");
    largest.data = vec![b'7'; limit - largest.metadata.len() - largest.event_type.len()];
    store
        .append("s", ExpectedVersion::NoStream, vec![largest.clone()])
        .await
        .expect("the largest valid event is accepted");
    let stored = store.read_stream("s", 0, 1).await.unwrap();
    assert_eq!(stored[0].data, largest.data);
}

pub async fn concurrent_writers_on_one_stream_lose_nothing(mut backend: impl Backend) {
    const WRITERS: usize = 32;
    const APPENDS: usize = 4;
    let store = Arc::new(backend.open().await);
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut done = Vec::new();
                let mut conflicts = Vec::new();
                let mut known = 0u64;
                for k in 0..APPENDS {
                    let ids: Vec<_> = (0..(w + k) % 3 + 1)
                        .map(|j| format!("w{w}-a{k}-e{j}"))
                        .collect();
                    loop {
                        known += store
                            .read_stream("shared", known, usize::MAX)
                            .await
                            .unwrap()
                            .len() as u64;
                        let expected = ExpectedVersion::count(known);
                        let events = ids.iter().map(|id| event(id)).collect();
                        match store.append("shared", expected, events).await {
                            Ok(appended) => {
                                done.push((appended, ids));
                                break;
                            }
                            Err(Error::Conflict {
                                expected: e,
                                actual,
                            }) => {
                                assert_eq!(e, expected);
                                conflicts.push((known, actual));
                            }
                            Err(other) => panic!("append failed: {other}"),
                        }
                    }
                }
                (done, conflicts)
            })
        })
        .collect();
    let mut done = Vec::new();
    let mut conflicts = Vec::new();
    for task in tasks {
        let (d, c) = within("a writer", task).await.unwrap();
        done.extend(d);
        conflicts.extend(c);
    }

    let stream = store.read_stream("shared", 0, usize::MAX).await.unwrap();
    let total: usize = done.iter().map(|(_, ids)| ids.len()).sum();
    assert_eq!(stream.len(), total);
    let versions: Vec<_> = stream.iter().map(|e| e.version).collect();
    assert_eq!(versions, (0..total as u64).collect::<Vec<_>>());
    let ids: Vec<_> = stream.iter().map(id_of).collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        total,
        "a duplicated event"
    );
    // Each append's events sit together, in its order, at the versions it was told.
    let mut tips = HashSet::new();
    for (appended, mine) in &done {
        let last = appended.last_version as usize;
        assert_eq!(&ids[last + 1 - mine.len()..=last], mine.as_slice());
        tips.insert(appended.last_version);
    }
    // A conflict reports the stream as it truly was: at the end of some append,
    // past what the writer had read.
    for (known, actual) in conflicts {
        let actual = actual.expect("a conflict on a stream that exists reports its version");
        assert!(
            actual >= known,
            "actual {actual} is behind the {known} events already read"
        );
        assert!(
            tips.contains(&actual),
            "actual {actual} is not where any append ended"
        );
    }
}
