//! Checks of several stores sharing one log, each standing for a process
//! (several PostgreSQL stores on one database, several KurrentDB stores on one
//! ledger): what one appends, another reads in the same order, without a gap.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hookledger::chain::{Hashed, ZERO};
use hookledger::store::{Error, EventStore, ExpectedVersion, NewEvent};

use super::{claimed, event, everything, id_of, within};

/// Twelve writers on the first three stores append `appends` times each, to
/// four streams that every one of those stores writes to, while a reader on
/// the last store follows the log as a projector does: each read starts right
/// after the last position it saw and must continue from there. The reader
/// sees exactly the log read afterwards, every stream is gapless, and every
/// hash chain links, however the writers raced.
pub async fn a_tailing_reader_never_skips_a_position<S: EventStore + 'static>(
    stores: Vec<Arc<S>>,
    appends: usize,
) {
    const WRITERS: usize = 12;
    const STREAMS: usize = 4;
    let reader_store = stores[3].clone();
    let done = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn({
        let done = done.clone();
        async move {
            let mut seen = Vec::new();
            let mut reads = 0u64;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let batch = reader_store
                    .read_all(seen.len() as u64 + 1, 7)
                    .await
                    .unwrap();
                reads += 1;
                for e in &batch {
                    assert_eq!(
                        e.position,
                        seen.len() as u64 + 1,
                        "the reader skipped a position"
                    );
                    seen.push(e.clone());
                }
                if batch.is_empty() {
                    if finished {
                        return (seen, reads);
                    }
                    let _ = tokio::time::timeout(
                        Duration::from_millis(50),
                        reader_store.wait_beyond(seen.len() as u64),
                    )
                    .await;
                }
            }
        }
    });
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = stores[w % 3].clone();
            tokio::spawn(async move {
                for k in 0..appends {
                    let events: Vec<NewEvent> = (0..(w + k) % 3 + 1)
                        .map(|j| event(&format!("w{w}-{k}-{j}")))
                        .collect();
                    // Writers w, w + 4 and w + 8 share a stream, on three stores.
                    let stream = format!("s-{}", w % STREAMS);
                    store
                        .append(&stream, ExpectedVersion::Any, events)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        within("a writer", writer).await.unwrap();
    }
    // The reader's store has heard of every append before the reader stops.
    stores[3].sync_head().await.unwrap();
    done.store(true, Ordering::SeqCst);
    let (seen, reads) = within("the reader", reader).await.unwrap();
    stores[0].sync_head().await.unwrap();
    let all = everything(stores[0].as_ref()).await;
    assert_eq!(seen, all, "the tail differs from the log read afterwards");
    let expected: usize = (0..WRITERS)
        .map(|w| (0..appends).map(|k| (w + k) % 3 + 1).sum::<usize>())
        .sum();
    assert_eq!(all.len(), expected);
    assert!(reads > 1, "the reader never ran beside the writers");
    for s in 0..STREAMS {
        let stream: Vec<_> = all
            .iter()
            .filter(|e| e.stream == format!("s-{s}"))
            .collect();
        let versions: Vec<u64> = stream.iter().map(|e| e.version).collect();
        assert_eq!(versions, (0..versions.len() as u64).collect::<Vec<_>>());
        let mut prev = ZERO;
        for e in stream {
            assert_eq!(
                e.prev_hash, prev,
                "s-{s} version {} does not link",
                e.version
            );
            assert_eq!(
                e.hash,
                Hashed::from(e).hash(&e.prev_hash),
                "s-{s} version {}",
                e.version
            );
            prev = e.hash;
        }
    }
}

/// Expected versions and claims hold between stores `a` and `b` as within
/// one: B is checked against A's append before it may have heard of it; an
/// append without expectation chains on the other's; of eight appends racing
/// on the two with one claim, one wins and the others name its position.
pub async fn expected_versions_and_claims_hold_across<S: EventStore + 'static>(
    a: Arc<S>,
    b: Arc<S>,
) {
    a.append("shared", ExpectedVersion::NoStream, vec![event("a0")])
        .await
        .unwrap();
    // B may not have heard of A's append, and is checked against it all the same.
    match b
        .append("shared", ExpectedVersion::NoStream, vec![event("b0")])
        .await
    {
        Err(Error::Conflict { actual, .. }) => assert_eq!(actual, Some(0)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    b.append("shared", ExpectedVersion::Exact(0), vec![event("b1")])
        .await
        .unwrap();
    // A may remember the stream as A left it; an append without expectation
    // still chains on B's.
    a.append("shared", ExpectedVersion::Any, vec![event("a2")])
        .await
        .unwrap();

    let races: Vec<_> = (0..8)
        .map(|i| {
            let store = [&a, &b][i % 2].clone();
            tokio::spawn(async move {
                store
                    .append_claimed(
                        &format!("r-{i}"),
                        ExpectedVersion::NoStream,
                        vec![claimed(&format!("r{i}"), "one-of-eight")],
                        vec!["one-of-eight".into()],
                    )
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut named = Vec::new();
    for race in races {
        match within("a racer", race).await.unwrap() {
            Ok(appended) => winners.push(*appended.positions.end()),
            Err(Error::Duplicate { position, .. }) => named.push(position),
            Err(other) => panic!("append failed: {other}"),
        }
    }
    assert_eq!(winners.len(), 1);
    assert!(
        named.iter().all(|&p| p == winners[0]),
        "losers name the winner"
    );
    assert_eq!(a.sync_head().await.unwrap(), 4);
    let all = everything(a.as_ref()).await;
    let ids: Vec<_> = all.iter().map(id_of).collect();
    assert_eq!(&ids[..3], ["a0", "b1", "a2"]);
    assert_eq!(all[2].prev_hash, all[1].hash, "a2 chains on b1");
}
