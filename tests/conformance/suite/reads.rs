//! Checks of what a backend gives back: exact records, gapless positions in
//! commit order, bounded pages, wake-ups, hash chains, and the same history
//! after a reopen.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use hookledger::chain::{Hashed, ZERO};
use hookledger::store::{Appended, Batch, EventStore, ExpectedVersion, NewEvent, RecordedEvent};

use super::{assert_conflict, event, everything, id_of, now_micros, within};
use crate::{Backend, Durable};

pub async fn appends_read_back_byte_for_byte(mut backend: impl Backend) {
    let store = backend.open().await;
    let unusual = NewEvent {
        event_type: "WebhookEventAccepted".into(),
        schema_version: 2,
        data: format!(
            r#"{{"text":"h\u00e9 \"quoted\" ✓","pad":"{}"}}"#,
            "x".repeat(70_000)
        )
        .into_bytes(),
        metadata: br#"{"idempotencyKey":"k-\u0000","keyId":"key_1"}"#.to_vec(),
        content: Vec::new(),
    };
    let inputs = [
        ("delivery-dlv_1", vec![event("a"), event("b")]),
        ("event-evt_1", vec![unusual]),
        ("delivery-dlv_1", vec![event("c")]),
    ];
    let before = now_micros();
    let mut appended = Vec::new();
    for (stream, events) in &inputs {
        let result = store
            .append(stream, ExpectedVersion::Any, events.clone())
            .await
            .expect("append");
        appended.push(result);
    }
    let after = now_micros();

    let all = everything(&store).await;
    assert_eq!(all.len(), 4);
    assert_eq!(store.head(), 4);
    let mut next = 0;
    let mut versions = HashMap::new();
    for ((stream, events), appended) in inputs.iter().zip(&appended) {
        assert!((before..=after).contains(&appended.recorded_at));
        let first = all[next].position;
        assert_eq!(appended.positions, first..=first + events.len() as u64 - 1);
        for new in events {
            let got = &all[next];
            let version = versions.entry(*stream).or_insert(0);
            assert_eq!(got.position, next as u64 + 1);
            assert_eq!(got.stream, *stream);
            assert_eq!(got.version, *version);
            assert_eq!(got.event_type, new.event_type);
            assert_eq!(got.schema_version, new.schema_version);
            assert_eq!(got.recorded_at, appended.recorded_at);
            assert_eq!(got.data, new.data);
            assert_eq!(got.metadata, new.metadata);
            *version += 1;
            next += 1;
        }
        assert_eq!(appended.last_version, versions[stream] - 1);
    }

    let stream = store.read_stream("delivery-dlv_1", 0, 100).await.unwrap();
    let expected: Vec<_> = all
        .iter()
        .filter(|e| e.stream == "delivery-dlv_1")
        .cloned()
        .collect();
    assert_eq!(stream, expected);
    assert_eq!(
        store.read_stream("delivery-dlv_1", 1, 1).await.unwrap(),
        expected[1..2]
    );
    assert_eq!(
        store.read_stream("event-evt_1", 0, 1).await.unwrap(),
        all[2..3]
    );
    assert!(
        store
            .read_stream("delivery-dlv_1", 3, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .read_stream("no-such-stream", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn positions_are_gapless_in_commit_order(mut backend: impl Backend) {
    let store = Arc::new(backend.open().await);
    // One writer: each append starts right after the one before it.
    let mut end = 0;
    for n in 1..=4u64 {
        let events = (0..n).map(|i| event(&format!("seq-{n}-{i}"))).collect();
        let appended = store
            .append(&format!("seq-{n}"), ExpectedVersion::NoStream, events)
            .await
            .unwrap();
        assert_eq!(appended.positions, end + 1..=end + n);
        end += n;
    }
    // Many writers: their appends tile the positions after that, with no gap.
    let tasks: Vec<_> = (0..16)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine: Vec<(Appended, Vec<String>)> = Vec::new();
                for k in 0..5 {
                    let ids: Vec<_> = (0..(w + k) % 3 + 1)
                        .map(|j| format!("w{w}-{k}-{j}"))
                        .collect();
                    let events = ids.iter().map(|id| event(id)).collect();
                    let appended = store
                        .append(&format!("writer-{w}"), ExpectedVersion::Any, events)
                        .await
                        .unwrap();
                    if let Some((last, _)) = mine.last() {
                        assert!(appended.positions.start() > last.positions.end());
                    }
                    mine.push((appended, ids));
                }
                mine
            })
        })
        .collect();
    let mut appends = Vec::new();
    for task in tasks {
        appends.extend(within("a writer", task).await.unwrap());
    }
    appends.sort_by_key(|(a, _)| *a.positions.start());
    let all = everything(store.as_ref()).await;
    for (appended, ids) in &appends {
        assert_eq!(*appended.positions.start(), end + 1, "a gap or an overlap");
        end = *appended.positions.end();
        let stored: Vec<_> = all[*appended.positions.start() as usize - 1..end as usize]
            .iter()
            .map(id_of)
            .collect();
        assert_eq!(&stored, ids, "an append's events are not where it was told");
    }
    assert_eq!(store.head(), end);
    let positions: Vec<_> = all.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=end).collect::<Vec<_>>());
}

pub async fn read_all_pages_in_bounded_batches(mut backend: impl Backend) {
    let store = backend.open().await;
    for i in 0..23 {
        let stream = format!("s-{}", i % 4);
        store
            .append(&stream, ExpectedVersion::Any, vec![event(&i.to_string())])
            .await
            .unwrap();
    }
    let all = everything(&store).await;
    assert_eq!(all.len(), 23);
    let mut paged = Vec::new();
    let mut from = 1;
    loop {
        let page = store.read_all(from, 5).await.unwrap();
        assert!(page.len() <= 5);
        let Some(last) = page.last() else { break };
        from = last.position + 1;
        paged.extend(page);
    }
    assert_eq!(paged, all);
    assert_eq!(store.read_all(23, 5).await.unwrap(), all[22..]);
    assert!(store.read_all(24, 5).await.unwrap().is_empty());
    assert!(store.read_all(3, 0).await.unwrap().is_empty());

    // Scattered positions, in the order asked, as a page across streams reads them.
    let wanted = [17, 2, 3, 23, 9];
    let scattered = store.read_positions(&wanted).await.unwrap();
    let expected: Vec<_> = wanted
        .iter()
        .map(|p| all[*p as usize - 1].clone())
        .collect();
    assert_eq!(scattered, expected);
    assert!(store.read_positions(&[]).await.unwrap().is_empty());
    assert!(
        store.read_positions(&[5, 24]).await.is_err(),
        "position 24 is past the head"
    );
}

/// Every event from `from` through `read_batch`, `max` at a time, each
/// batch's buffers handed back for the next.
async fn batched(store: &impl EventStore, mut from: u64, max: usize) -> Vec<RecordedEvent> {
    let (mut events, mut spent) = (Vec::new(), Batch::default());
    loop {
        let batch = store.read_batch(from, max, spent).await.unwrap();
        assert!(batch.len() <= max);
        let Some(last) = batch.last_position() else {
            return events;
        };
        events.extend(batch.iter().map(|e| e.unwrap().to_owned()));
        from = last + 1;
        spent = batch;
    }
}

pub async fn read_batch_gives_what_read_all_gives(mut backend: impl Backend) {
    let store = backend.open().await;
    for i in 0..23 {
        let stream = format!("s-{}", i % 4);
        store
            .append(&stream, ExpectedVersion::Any, vec![event(&i.to_string())])
            .await
            .unwrap();
    }
    let all = everything(&store).await;
    assert_eq!(batched(&store, 1, 5).await, all);
    assert_eq!(batched(&store, 20, 1000).await, all[19..]);
    assert!(batched(&store, 24, 5).await.is_empty());
}

/// [`read_batch_gives_what_read_all_gives`] after a reopen, when nothing is
/// in memory any more and the events come from storage.
pub async fn read_batch_after_reopen_gives_what_read_all_gives(mut backend: impl Durable) {
    let store = backend.open().await;
    for i in 0..40 {
        let stream = format!("s-{}", i % 4);
        store
            .append(&stream, ExpectedVersion::Any, vec![event(&i.to_string())])
            .await
            .unwrap();
    }
    let all = everything(&store).await;
    let store = backend.reopen(store).await;
    assert_eq!(batched(&store, 1, 7).await, all);
    assert_eq!(batched(&store, 38, 7).await, all[37..]);
}

pub async fn wait_beyond_wakes_on_a_later_append(mut backend: impl Backend) {
    let store = Arc::new(backend.open().await);
    let waiter = tokio::spawn({
        let store = store.clone();
        async move { store.wait_beyond(0).await }
    });
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "woke with nothing appended");
    store
        .append("s", ExpectedVersion::NoStream, vec![event("1")])
        .await
        .unwrap();
    assert_eq!(within("wait_beyond(0)", waiter).await.unwrap().unwrap(), 1);
    // Already beyond: no wait at all.
    assert_eq!(
        within("wait_beyond(0)", store.wait_beyond(0))
            .await
            .unwrap(),
        1
    );

    let waiter = tokio::spawn({
        let store = store.clone();
        async move { store.wait_beyond(1).await }
    });
    store
        .append("s", ExpectedVersion::Exact(0), vec![event("2"), event("3")])
        .await
        .unwrap();
    assert_eq!(within("wait_beyond(1)", waiter).await.unwrap().unwrap(), 3);
}

pub async fn hash_chains_link_and_recompute(mut backend: impl Backend) {
    let store = backend.open().await;
    for i in 0..12u64 {
        let stream = ["a", "b", "c"][(i % 3) as usize];
        let events = (0..i % 2 + 1).map(|j| event(&format!("{i}-{j}"))).collect();
        store
            .append(stream, ExpectedVersion::Any, events)
            .await
            .unwrap();
    }
    let mut tips: BTreeMap<String, [u8; 32]> = BTreeMap::new();
    let mut hashes = HashSet::new();
    for e in everything(&store).await {
        let prev = tips.get(&e.stream).copied().unwrap_or(ZERO);
        assert_eq!(e.prev_hash, prev, "position {} does not link", e.position);
        assert_eq!(
            e.hash,
            Hashed::from(&e).hash(&e.prev_hash),
            "position {}",
            e.position
        );
        assert!(hashes.insert(e.hash));
        tips.insert(e.stream.clone(), e.hash);
    }
    assert_eq!(tips.len(), 3);
    for (stream, tip) in tips {
        let events = store.read_stream(&stream, 0, usize::MAX).await.unwrap();
        assert_eq!(events[0].prev_hash, ZERO);
        assert_eq!(events.last().unwrap().hash, tip);
    }
}

pub async fn reopen_keeps_everything_and_continues(mut backend: impl Durable) {
    let store = backend.open().await;
    for i in 0..40u64 {
        let stream = format!("s-{}", i % 5);
        store
            .append(&stream, ExpectedVersion::Any, vec![event(&i.to_string())])
            .await
            .unwrap();
    }
    let before = everything(&store).await;
    let s1 = store.read_stream("s-1", 0, usize::MAX).await.unwrap();

    let store = backend.reopen(store).await;
    assert_eq!(store.head(), 40);
    assert_eq!(everything(&store).await, before);
    assert_eq!(store.read_stream("s-1", 0, usize::MAX).await.unwrap(), s1);

    let last = s1.last().unwrap();
    assert_conflict(
        store
            .append("s-1", ExpectedVersion::NoStream, vec![event("x")])
            .await,
        ExpectedVersion::NoStream,
        Some(last.version),
    );
    let appended = store
        .append(
            "s-1",
            ExpectedVersion::Exact(last.version),
            vec![event("after")],
        )
        .await
        .unwrap();
    assert_eq!(
        (appended.positions, appended.last_version),
        (41..=41, last.version + 1)
    );
    assert!(appended.recorded_at >= before.last().unwrap().recorded_at);
    let new = &store.read_all(41, 10).await.unwrap()[0];
    assert_eq!(new.prev_hash, last.hash);
    assert_eq!(
        within("wait_beyond(40)", store.wait_beyond(40))
            .await
            .unwrap(),
        41
    );

    let store = backend.reopen(store).await;
    let after = everything(&store).await;
    assert_eq!(after[..40], before[..]);
    assert_eq!(after[40], *new);
}
