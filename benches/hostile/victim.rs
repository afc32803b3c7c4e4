//! The victim of `benches/hostile.rs`: a well-behaved sender recording
//! attempts on its own deliveries from 16 keep-alive connections, back to
//! back, for the plan's length after two seconds of warm-up. It reports its
//! throughput, its p50 and p99 over the answers it got, and every answer that
//! was not a 2xx, by status.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Plan;
use crate::common::percentile_ms;

const CONNECTIONS: usize = 16;
const WARM_UP: Duration = Duration::from_secs(2);
const BODY: &str = r#"{"status":"retry_scheduled","responseStatusCode":503,"responseBody":{"error":"service unavailable"},"lastError":"upstream answered 503","nextRetryAt":"2030-01-01T00:00:00Z"}"#;

pub async fn run(plan: &Plan) -> Value {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a client");
    let measure_from = Instant::now() + WARM_UP;
    let stop_at = measure_from + Duration::from_secs(plan.seconds);
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let (client, plan) = (client.clone(), plan.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures: BTreeMap<String, u64> = BTreeMap::new();
            let mut i = c;
            loop {
                let sent = Instant::now();
                if sent >= stop_at {
                    return (latencies, failures);
                }
                let delivery = &plan.deliveries[i % plan.deliveries.len()];
                i += CONNECTIONS;
                let outcome = client
                    .post(format!(
                        "{}/v1/outbound-webhook-deliveries/{delivery}/attempts",
                        plan.base
                    ))
                    .bearer_auth(&plan.key)
                    .header("x-organization-id", &plan.org)
                    .header("content-type", "application/json")
                    .body(BODY)
                    .send()
                    .await;
                let status = match outcome {
                    Ok(response) => {
                        let status = response.status();
                        let _ = response.bytes().await;
                        status.as_u16().to_string()
                    }
                    Err(e) if e.is_timeout() => "timeout".to_owned(),
                    Err(_) => "connection error".to_owned(),
                };
                if sent < measure_from {
                    continue;
                }
                if status.starts_with('2') {
                    let micros = sent.elapsed().as_micros();
                    latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
                } else {
                    *failures.entry(status).or_default() += 1;
                }
            }
        }));
    }
    let mut latencies = Vec::new();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    for task in tasks {
        let (l, f) = task.await.expect("a connection task");
        latencies.extend(l);
        for (status, n) in f {
            *failures.entry(status).or_default() += n;
        }
    }
    latencies.sort_unstable();
    json!({
        "attempts": latencies.len(),
        "attempts_per_sec": (latencies.len() as f64 / plan.seconds as f64).round(),
        "p50_ms": percentile_ms(&latencies, 50.0),
        "p99_ms": percentile_ms(&latencies, 99.0),
        "failures": failures,
    })
}
