//! The checks every backend must pass, written against the `EventStore` trait
//! alone: records read back exactly, positions are gapless in commit order,
//! expected versions hold under concurrent writers, and hash chains link.
//! Each check takes a [`Backend`](crate::Backend) and opens its own fresh store;
//! this file holds what the checks share.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hookledger::store::sequencer::Sequencer;
use hookledger::store::{Error, EventStore, ExpectedVersion, NewEvent, RecordedEvent};

mod claims;
mod reads;
pub mod shared;
mod writes;

pub use claims::*;
pub use reads::*;
pub use writes::*;

/// Generous: a deadline only catches a hang, it never paces a check. The
/// KurrentDB client answers a call in about 45 ms on loopback (it leaves
/// Nagle's algorithm on), so the 32 racing writers of
/// `concurrent_writers_on_one_stream_lose_nothing` take half a minute there.
const DEADLINE: Duration = Duration::from_secs(120);

pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {DEADLINE:?}"))
}

/// An event whose data names it, so every stored event can be traced to its append.
pub fn event(id: &str) -> NewEvent {
    NewEvent {
        event_type: "AttemptRecorded".into(),
        schema_version: 1,
        data: format!(r#"{{"id":"{id}"}}"#).into_bytes(),
        metadata: br#"{"requestId":"req_1"}"#.to_vec(),
        content: Vec::new(),
    }
}

pub fn id_of(event: &RecordedEvent) -> String {
    let data = std::str::from_utf8(&event.data).expect("utf-8 data");
    data.trim_start_matches(r#"{"id":""#)
        .trim_end_matches(r#""}"#)
        .to_owned()
}

pub async fn everything(store: &impl EventStore) -> Vec<RecordedEvent> {
    store.read_all(1, usize::MAX).await.expect("read_all")
}

pub fn now_micros() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970");
    since.as_micros() as i64
}

#[track_caller]
pub fn assert_conflict<T: std::fmt::Debug>(
    result: Result<T, Error>,
    expected: ExpectedVersion,
    actual: Option<u64>,
) {
    match result {
        Err(Error::Conflict {
            expected: e,
            actual: a,
        }) => assert_eq!((e, a), (expected, actual)),
        other => panic!("expected a conflict at {actual:?}, got {other:?}"),
    }
}

/// The appends that made `stored` (consecutive events of one stream with one
/// time), made again at the same times through the sequencer the embedded and
/// memory stores use: a shared store's records must be exactly these.
pub fn replay_through_sequencer(stored: &[RecordedEvent]) -> Vec<RecordedEvent> {
    let mut sequencer = Sequencer::default();
    let mut replayed = Vec::new();
    let mut i = 0;
    while i < stored.len() {
        let first = &stored[i];
        let append: Vec<_> = stored[i..]
            .iter()
            .take_while(|e| e.stream == first.stream && e.recorded_at == first.recorded_at)
            .map(|e| NewEvent {
                event_type: e.event_type.clone(),
                schema_version: e.schema_version,
                data: e.data.clone(),
                metadata: e.metadata.clone(),
                content: Vec::new(),
            })
            .collect();
        let mut staging = sequencer.staging();
        staging
            .stage(
                &first.stream,
                ExpectedVersion::Any,
                append,
                first.recorded_at,
            )
            .expect("a replayed append");
        let (records, staged) = staging.finish();
        sequencer.commit(staged);
        i += records.len();
        replayed.extend(records);
    }
    replayed
}
