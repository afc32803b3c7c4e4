//! What one attempt costs as its delivery gathers attempts: the built
//! `hookledger` binary with its default settings (as the HTTP bench starts
//! it), three deliveries, brought to about 1, 1 000 and 100 000 attempts, then
//! 2 000 more attempts on each, one at a time over one keep-alive connection
//! from this process. For each: the latency per attempt (p50, p99) and the
//! server's CPU per attempt (from `/proc`). The baseline is the same
//! measurement on the delivery with one attempt, so the ratio says how the
//! cost grows with the stream: an attempt should cost the same at 100 000 as
//! at 1.
//!
//! The deliveries are brought up to their count by wrk (32 connections on the
//! one delivery, in bursts of a second) and then by this process's client.
//!
//! `cargo bench --bench attempt_cost`. Knobs: `HOOKLEDGER_BENCH_ATTEMPTS`
//! (the largest count, default 100 000), `HOOKLEDGER_BENCH_SAMPLES` (attempts
//! measured at each count, default 2 000).

mod common;

use std::time::{Duration, Instant};

use common::served::{self, Served, process_cpu};
use common::wrk::{self, Pick, Requests};
use common::{Target, env_u64, figure};

const ORG: &str = "org_bench";
const BODY: &str = r#"{"status":"retry_scheduled","responseStatusCode":503,"responseBody":{"error":"service unavailable","retryable":true},"lastError":"upstream answered 503 Service Unavailable","nextRetryAt":"2030-01-01T00:00:00Z"}"#;

fn main() {
    common::machine("attempt_cost");
    let largest = env_u64("HOOKLEDGER_BENCH_ATTEMPTS", 100_000);
    let samples = env_u64("HOOKLEDGER_BENCH_SAMPLES", 2_000);
    let counts = [1, 1_000, largest];
    let binary = served::binary();
    let served = Served::start(&binary, ORG, 1, counts.len());
    let wrk = wrk::require();
    let work = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = Client::new(&served);
    let mut measured = Vec::new();
    for (count, delivery) in counts.iter().zip(&served.deliveries) {
        let t = Instant::now();
        let path = noop_path(delivery);
        // wrk brings it close, in bursts; the client makes up the rest.
        while runtime.block_on(client.attempts(delivery)) + 5_000 < *count {
            let requests = Requests {
                method: "POST",
                paths: vec![path.clone()],
                pick: Pick::Cycle,
                headers: served.headers(),
                body: BODY.to_owned(),
            };
            let load = wrk::run(
                &wrk,
                work.path(),
                served.addr,
                &requests,
                32,
                Duration::from_secs(1),
            );
            assert_eq!(load.bad_status, 0, "answers other than 2xx while filling");
        }
        let mut have = runtime.block_on(client.attempts(delivery));
        while have < *count {
            runtime.block_on(client.record(&path));
            have += 1;
        }
        println!(
            "delivery {delivery}: {} attempts in {:.1} s",
            runtime.block_on(client.attempts(delivery)),
            t.elapsed().as_secs_f64()
        );
        let cpu = process_cpu(served.pid());
        let mut micros = Vec::with_capacity(samples as usize);
        let t = Instant::now();
        for _ in 0..samples {
            let one = Instant::now();
            runtime.block_on(client.record(&path));
            micros.push(u32::try_from(one.elapsed().as_micros()).unwrap_or(u32::MAX));
        }
        let wall = t.elapsed().as_secs_f64();
        let cpu = process_cpu(served.pid()) - cpu;
        micros.sort_unstable();
        let at = Measured {
            count: runtime.block_on(client.attempts(delivery)) - samples,
            p50: common::percentile_ms(&micros, 50.0),
            p99: common::percentile_ms(&micros, 99.0),
            cpu_us: cpu * 1e6 / samples as f64,
        };
        println!(
            "  from {} attempts on: p50 {:.3} ms, p99 {:.3} ms, server {:.1} us CPU per attempt ({:.0} attempts/s one at a time)",
            at.count,
            at.p50,
            at.p99,
            at.cpu_us,
            samples as f64 / wall
        );
        measured.push(at);
    }
    let first = &measured[0];
    for at in &measured[1..] {
        figure(
            &format!(
                "attempt latency p50 at {} attempts on the delivery",
                at.count
            ),
            at.p50,
            "ms",
            &format!("the same at {}", first.count),
            first.p50,
            Target::None,
        );
        figure(
            &format!(
                "server CPU per attempt at {} attempts on the delivery",
                at.count
            ),
            at.cpu_us,
            "us",
            &format!("the same at {}", first.count),
            first.cpu_us,
            Target::None,
        );
    }
    served.stop();
    common::done("attempt_cost");
}

struct Measured {
    count: u64,
    p50: f64,
    p99: f64,
    cpu_us: f64,
}

fn noop_path(delivery: &str) -> String {
    common::noop::ROUTE.replace("{id}", delivery)
}

/// One keep-alive connection to the server, one request at a time.
struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(served: &Served) -> Client {
        Client {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client"),
            base: format!("http://{}", served.addr),
            token: served.token.clone(),
        }
    }

    async fn record(&self, path: &str) {
        let answer = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("x-organization-id", ORG)
            .header("content-type", "application/json")
            .body(BODY)
            .send()
            .await
            .expect("the server answers");
        assert!(answer.status().is_success(), "{}", answer.status());
        answer.bytes().await.expect("the answer's body");
    }

    /// The delivery's attempt count, as the API shows it.
    async fn attempts(&self, delivery: &str) -> u64 {
        let answer: serde_json::Value = self
            .http
            .get(format!(
                "{}/v1/outbound-webhook-deliveries/{delivery}",
                self.base
            ))
            .bearer_auth(&self.token)
            .header("x-organization-id", ORG)
            .send()
            .await
            .expect("the server answers")
            .json()
            .await
            .expect("a JSON delivery");
        answer["attemptCount"]
            .as_u64()
            .unwrap_or_else(|| panic!("no attemptCount in {answer}"))
    }
}
