//! Appends through the KurrentDB store against the **test double** of
//! KurrentDB's gRPC API, with 1, 16 and 256 concurrent writers, beside a
//! baseline measured in the same run: the same number of plain appends
//! through the official client, by as many writers, to the same double.
//!
//! This checks one thing: that the store's group commit maps to batched
//! KurrentDB appends (writers on one hot stream share appends; writers on
//! separate streams are written concurrently). The double keeps everything
//! in memory and syncs nothing, so no figure here says anything about
//! KurrentDB's own speed. `cargo bench --features kurrentdb --bench
//! kurrentdb`; `HOOKLEDGER_BENCH_APPENDS_PER_WRITER` (default 32, at least 256
//! appends a run) resizes it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hookledger::store::kurrentdb::{KurrentDbStore, Options};
use hookledger::store::{EventStore, ExpectedVersion, NewEvent};
use kurrentdb_double::KurrentDbDouble;

mod common;

fn event(i: usize) -> NewEvent {
    NewEvent {
        event_type: "AttemptRecorded".into(),
        schema_version: 1,
        data: format!(
            r#"{{"attemptNumber":{i},"status":"failed","responseStatusCode":503,"lastError":"upstream timeout"}}"#
        )
        .into_bytes(),
        metadata: br#"{"requestId":"req_bench"}"#.to_vec(),
        content: Vec::new(),
    }
}

/// Where the writers append.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// Every writer on one stream: the hot delivery.
    OneStream,
    /// Each writer on a stream of its own.
    OwnStreams,
}

/// What one run did.
struct Run {
    elapsed: Duration,
    appends: usize,
    /// KurrentDB appends the double served.
    server_appends: u64,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.appends as f64 / self.elapsed.as_secs_f64()
    }
}

/// `total` appends by `writers` writers through the store.
async fn through_store(shape: Shape, writers: usize, total: usize) -> Run {
    let double = KurrentDbDouble::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        KurrentDbStore::open(&double.url(), Options::new(dir.path()))
            .await
            .unwrap(),
    );
    let before = double.stats().appends;
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let stream = match shape {
                    Shape::OneStream => "delivery-hot".to_owned(),
                    Shape::OwnStreams => format!("delivery-{w}"),
                };
                for i in (w..total).step_by(writers) {
                    store
                        .append(&stream, ExpectedVersion::Any, vec![event(i)])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    store.close().await;
    Run {
        elapsed,
        appends: total,
        server_appends: double.stats().appends - before,
    }
}

/// The baseline: `total` plain appends through the official client, by
/// `writers` writers each on a stream of its own, to a fresh double.
async fn through_client(writers: usize, total: usize) -> Run {
    let double = KurrentDbDouble::start().await;
    let client = kurrentdb::Client::new(double.url().parse().unwrap()).unwrap();
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in (w..total).step_by(writers) {
                    let e = event(i);
                    let data: serde_json::Value = serde_json::from_slice(&e.data).unwrap();
                    let event = kurrentdb::EventData::json(&e.event_type, &data)
                        .unwrap()
                        .metadata(e.metadata.into());
                    client
                        .append_to_stream(format!("plain-{w}"), &Default::default(), event)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    Run {
        elapsed: started.elapsed(),
        appends: total,
        server_appends: double.stats().appends,
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    common::machine("kurrentdb");
    let per_writer: usize = std::env::var("HOOKLEDGER_BENCH_APPENDS_PER_WRITER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    println!(
        "{per_writer} appends per writer (at least 256 a run); the double keeps everything in \
         memory and syncs nothing: these figures check batching, not KurrentDB's speed"
    );
    println!();
    println!(
        "| writers | shape | appends | appends/s | plain client appends/s (baseline) | ratio | appends per KurrentDB append |"
    );
    println!("|---|---|---|---|---|---|---|");
    for writers in [1, 16, 256] {
        let total = (writers * per_writer).max(256);
        let baseline = through_client(writers, total).await;
        for shape in [Shape::OneStream, Shape::OwnStreams] {
            let run = through_store(shape, writers, total).await;
            println!(
                "| {writers} | {} | {total} | {:.0} | {:.0} | {:.2} | {:.2} |",
                match shape {
                    Shape::OneStream => "one stream",
                    Shape::OwnStreams => "own streams",
                },
                run.per_second(),
                baseline.per_second(),
                run.per_second() / baseline.per_second(),
                run.appends as f64 / run.server_appends.max(1) as f64,
            );
        }
        assert_eq!(baseline.server_appends as usize, baseline.appends);
    }
    common::done("kurrentdb");
}
