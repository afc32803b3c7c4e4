//! Memory: resident bytes per delivery of the read model at 1 million deliveries,
//! against the bytes of the same deliveries as the API serves them (the JSON of
//! each delivery snapshot): how much the in-memory form costs over the data itself.
//!
//! Runs in its own process so the RSS it reads is the model's. `cargo bench
//! --bench memory`; `HOOKLEDGER_BENCH_DELIVERIES` sets the count (default 1 million).

mod common;

use common::workload::{ENDPOINTS, Shape, each_recorded};
use common::{Target, env_u64, figure, rss_bytes};
use projections::ReadModel;
use projections::view::DeliverySnapshot;

fn main() {
    common::machine("memory");
    let deliveries = env_u64("HOOKLEDGER_BENCH_DELIVERIES", 1_000_000);
    // One attempt per delivery: half the model's deliveries keep a last error.
    let shape = Shape {
        events: deliveries / ENDPOINTS,
        attempts: deliveries,
    };
    let before = rss_bytes();
    let mut model = ReadModel::default();
    each_recorded(shape, |recorded| model.apply(&recorded));
    let after = rss_bytes();
    let count: usize = model.tenants.values().map(|t| t.deliveries.len()).sum();
    assert_eq!(count as u64, shape.deliveries());
    let json: usize = model
        .tenants
        .values()
        .flat_map(|t| t.deliveries.values())
        .map(|d| {
            serde_json::to_vec(&DeliverySnapshot::from(d))
                .expect("json")
                .len()
        })
        .sum();
    let per_delivery = (after - before) as f64 / count as f64;
    println!(
        "read model: {count} deliveries, {} webhook events, RSS {} MB before, {} MB after",
        shape.events,
        before / 1_000_000,
        after / 1_000_000
    );
    figure(
        &format!("read-model RSS per delivery at {count} deliveries"),
        per_delivery,
        "bytes",
        "API JSON of one delivery snapshot",
        json as f64 / count as f64,
        Target::AtMost(1024.0),
    );
    std::hint::black_box(&model);
    common::done("memory");
}
