//! The same request gets the same answer on every backend. A property test
//! puts arbitrary text (NUL, line breaks, controls, any Unicode scalar) in
//! every string field a client can send (and in `Idempotency-Key`, as raw
//! bytes), sends each request to a server on
//! the embedded log and to one on PostgreSQL, and compares the status codes;
//! where both accept it, each must give back exactly the text that was sent.

use std::cell::Cell;
use std::sync::Arc;

use hookledger::node::Node;
use hookledger::store::postgres::PostgresStore;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestNode, attempts_path, new_node, spawn_app_with};
use crate::support_postgres;

/// Every string field of a request body a client controls.
#[derive(Debug, Clone, Copy)]
enum Field {
    EndpointName,
    EndpointUrlPath,
    EndpointEventType,
    PatchedName,
    EventType,
    SourceKey,
    PayloadKey,
    PayloadValue,
    LastError,
    ResponseBodyKey,
    ResponseBodyValue,
    /// Sent as raw bytes: a header a client library would refuse to build.
    IdempotencyKey,
}

const FIELDS: [Field; 12] = [
    Field::EndpointName,
    Field::EndpointUrlPath,
    Field::EndpointEventType,
    Field::PatchedName,
    Field::EventType,
    Field::SourceKey,
    Field::PayloadKey,
    Field::PayloadValue,
    Field::LastError,
    Field::ResponseBodyKey,
    Field::ResponseBodyValue,
    Field::IdempotencyKey,
];

/// Text with the characters a database is likeliest to refuse mixed in.
fn text() -> impl Strategy<Value = String> {
    let odd = prop::sample::select(vec![
        '\0', '\n', '\r', '\t', '\u{7f}', '\u{85}', '\u{2028}', '\u{feff}', '\u{fffd}', '\\', '"',
    ]);
    prop::collection::vec(prop_oneof![any::<char>(), odd], 0..12)
        .prop_map(|chars| chars.into_iter().collect())
}

/// One server under test and what it already holds.
struct Side {
    app: TestApp,
    endpoint: String,
    delivery: String,
}

impl Side {
    async fn new(node: TestNode) -> Side {
        let app = spawn_app_with(node, |s| s).await;
        let endpoint = app.endpoint("all").await["id"].as_str().unwrap().to_owned();
        let delivery = app.delivery().await;
        Side {
            app,
            endpoint,
            delivery,
        }
    }

    /// Sends `text` in `field`; the status, and whether the text came back whole.
    async fn send(&self, field: Field, text: &str, n: usize) -> (StatusCode, Result<(), String>) {
        let app = &self.app;
        let endpoints = "/v1/outbound-webhook-endpoints";
        let events = "/v1/outbound-webhook-events";
        let (reply, sent, pointer) = match field {
            Field::EndpointName => (
                app.post(
                    endpoints,
                    &json!({"name": text, "url": "https://a.example/"}),
                )
                .await,
                json!(text),
                "/name",
            ),
            Field::EndpointUrlPath => {
                let url = format!("https://a.example/{text}");
                let reply = app.post(endpoints, &json!({"name": "u", "url": url})).await;
                (reply, json!(url), "/url")
            }
            Field::EndpointEventType => (
                app.post(
                    endpoints,
                    &json!({"name": "t", "url": "https://a.example/", "eventTypes": [text]}),
                )
                .await,
                json!(text),
                "/eventTypes/0",
            ),
            Field::PatchedName => (
                app.patch(
                    &format!("{endpoints}/{}", self.endpoint),
                    &json!({"name": text}),
                )
                .await,
                json!(text),
                "/name",
            ),
            Field::EventType => (
                app.post(events, &json!({"eventType": text, "payload": {}}))
                    .await,
                json!(text),
                "/eventType",
            ),
            Field::SourceKey => {
                // Unique per case, so each is a new event on both sides.
                let key = format!("{text}-{n}");
                let body = json!({"eventType": "x", "sourceKey": key, "payload": {}});
                (app.post(events, &body).await, json!(key), "/sourceKey")
            }
            Field::PayloadKey | Field::PayloadValue => {
                let payload = match field {
                    Field::PayloadKey => json!({ text: 1 }),
                    _ => json!({ "v": text }),
                };
                let body = json!({"eventType": "x", "payload": payload});
                (app.post(events, &body).await, payload, "/payload")
            }
            Field::IdempotencyKey => {
                let body = br#"{"eventType":"x","payload":{}}"#;
                let mut request = format!(
                    "POST {events} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
                     x-organization-id: {}\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\nidempotency-key: ",
                    app.key.token,
                    app.org,
                    body.len()
                )
                .into_bytes();
                request.extend_from_slice(text.as_bytes());
                request.extend_from_slice(b"\r\n\r\n");
                request.extend_from_slice(body);
                let addr = app.base.trim_start_matches("http://").parse().unwrap();
                let reply = crate::raw::send_bytes(addr, &request).unwrap();
                let status = StatusCode::from_u16(reply.status).unwrap();
                return (status, Ok(()));
            }
            Field::LastError => (
                app.record_attempt(
                    &self.delivery,
                    &json!({"status": "failed", "lastError": text}),
                )
                .await,
                json!(text),
                "/deliveries/0/lastError",
            ),
            Field::ResponseBodyKey | Field::ResponseBodyValue => {
                let response_body = match field {
                    Field::ResponseBodyKey => json!({ text: true }),
                    _ => json!({ "v": text }),
                };
                let body = json!({"status": "delivered", "responseBody": response_body});
                let reply = app.record_attempt(&self.delivery, &body).await;
                if !reply.status.is_success() {
                    return (reply.status, Ok(()));
                }
                let history = app
                    .get(&format!("{}?limit=250", attempts_path(&self.delivery)))
                    .await;
                let last = history.body["data"]
                    .as_array()
                    .and_then(|d| d.last())
                    .cloned()
                    .unwrap_or(Value::Null);
                let kept = last["responseBody"] == response_body;
                return (
                    reply.status,
                    kept.then_some(())
                        .ok_or_else(|| format!("kept {}", last["responseBody"])),
                );
            }
        };
        let kept = match reply.body.pointer(pointer) {
            _ if !reply.status.is_success() => Ok(()),
            Some(value) if *value == sent => Ok(()),
            other => Err(format!("sent {sent}, kept {other:?}")),
        };
        (reply.status, kept)
    }
}

async fn postgres_node(url: &str) -> TestNode {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = PostgresStore::open(url, Default::default())
        .await
        .expect("open the PostgreSQL store");
    let node = Node::start(
        Arc::new(store),
        hookledger::projector::Config::in_dir(dir.path()),
    )
    .await
    .expect("open the node");
    TestNode {
        node,
        dir: Some(dir),
        backing: None,
    }
}

#[test]
fn every_string_field_gets_the_same_answer_on_every_backend() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let Some(url) = runtime.block_on(support_postgres::database(
        "backends::every_string_field_gets_the_same_answer_on_every_backend",
    )) else {
        return;
    };
    let (embedded, postgres) = runtime.block_on(async {
        (
            Side::new(new_node().await).await,
            Side::new(postgres_node(&url).await).await,
        )
    });
    let mut runner = TestRunner::new(Config {
        cases: 192,
        failure_persistence: None,
        ..Config::default()
    });
    let n = Cell::new(0);
    let accepted = Cell::new(0);
    runner
        .run(
            &(prop::sample::select(FIELDS.to_vec()), text()),
            |(field, text)| {
                n.set(n.get() + 1);
                let n = n.get();
                let (on_embedded, on_postgres) = runtime.block_on(async {
                    (
                        embedded.send(field, &text, n).await,
                        postgres.send(field, &text, n).await,
                    )
                });
                prop_assert_eq!(
                    on_embedded.0,
                    on_postgres.0,
                    "{:?} = {:?}: embedded and PostgreSQL disagree",
                    field,
                    text
                );
                on_embedded
                    .1
                    .map_err(|e| TestCaseError::fail(format!("embedded, {field:?}: {e}")))?;
                on_postgres
                    .1
                    .map_err(|e| TestCaseError::fail(format!("PostgreSQL, {field:?}: {e}")))?;
                accepted.set(accepted.get() + usize::from(on_embedded.0.is_success()));
                Ok(())
            },
        )
        .unwrap();
    // About half of the generated text is valid input (how much varies with
    // the run's random cases: 93 of 192 was seen): the comparison must not be
    // only, or mostly, of refusals.
    let (n, accepted) = (n.get(), accepted.get());
    crate::binary::record_figures(
        "backends",
        &format!("{n} cases, {accepted} accepted by both, the rest refused alike"),
    );
    assert!(
        accepted * 4 > n,
        "only {accepted} of {n} cases were accepted"
    );
}
