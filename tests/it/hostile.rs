//! Hostile input against the real binary, over raw TCP: property tests send every
//! route arbitrary JSON, wrong types, huge numbers, 100k-deep nesting, invalid
//! UTF-8 in bodies, headers, paths and queries, and very long strings and header
//! values. The server never answers 5xx, never dies, answers every non-2xx from
//! the API as problem+json that `schemas/openapi.json` lists, and a refused
//! request never writes (the head in `/readyz` stays put).
//!
//! Slow clients: one that trickles its headers is disconnected, one that
//! trickles its body gets 408, and idle connections past the cap cannot keep a
//! normal request out.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

use crate::binary::{Client, Server, create_key, record_figures};
use crate::raw::{RawReply, RawRequest, connect, send_bytes};
use crate::schema::check_response;

const ORG: &str = "org_hostile";

/// A server on fresh data with one endpoint, one event and its delivery.
struct Target {
    _dir: tempfile::TempDir,
    server: Server,
    _runtime: tokio::runtime::Runtime,
    key: String,
    other_key: String,
    endpoint: String,
    event: String,
    delivery: String,
}

impl Target {
    fn start(args: &[&str]) -> Target {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let key = create_key(&data, ORG);
        let other_key = create_key(&data, "org_other");
        let server = runtime.block_on(Server::start_with(&data, args));
        let client = Client::new(&server, ORG, &key);
        let (endpoint, event) = runtime.block_on(async {
            let endpoint = client
                .post(
                    "/v1/outbound-webhook-endpoints",
                    json!({"name": "h", "url": "https://h.example.com/"}),
                )
                .await;
            let event = client
                .post(
                    "/v1/outbound-webhook-events",
                    json!({"eventType": "x", "payload": {}}),
                )
                .await;
            (endpoint, event)
        });
        Target {
            _dir: dir,
            key,
            other_key,
            endpoint: endpoint["id"].as_str().unwrap().to_owned(),
            delivery: event["deliveries"][0]["id"].as_str().unwrap().to_owned(),
            event: event["id"].as_str().unwrap().to_owned(),
            server,
            _runtime: runtime,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// Everything ever appended, as `/readyz` reports it.
    fn head(&self) -> u64 {
        let reply = RawRequest::new("GET", "/readyz")
            .send(self.addr())
            .expect("readyz answers");
        assert_eq!(reply.status, 200, "the server is not ready: {reply:?}");
        let body: Value = serde_json::from_slice(&reply.body).unwrap();
        body["head"].as_u64().unwrap()
    }

    /// Sends `request` and checks every rule a hostile request must not break.
    fn check(&self, request: &RawRequest) -> Result<RawReply, TestCaseError> {
        let before = self.head();
        let reply = request
            .send(self.addr())
            .map_err(|e| TestCaseError::fail(format!("the server did not answer: {e}")))?;
        prop_assert!(
            reply.status < 500,
            "a {} answer: {:?}",
            reply.status,
            text(&reply)
        );
        let from_api = reply.header("x-request-id").is_some();
        if from_api && reply.status >= 400 {
            prop_assert_eq!(
                reply.header("content-type"),
                Some("application/problem+json"),
                "a {} from the API is not a problem",
                reply.status
            );
        }
        let method = String::from_utf8_lossy(&request.method).into_owned();
        let target = String::from_utf8_lossy(&request.target).into_owned();
        let path = target.split('?').next().unwrap_or_default().to_owned();
        if from_api && ["GET", "POST", "PATCH"].contains(&method.as_str()) && path.starts_with('/')
        {
            let checked = std::panic::catch_unwind(|| {
                check_response(
                    &method,
                    &path,
                    reply.status,
                    reply.header("content-type"),
                    &reply.body,
                );
            });
            prop_assert!(checked.is_ok(), "the answer does not match openapi.json");
        }
        let after = self.head();
        if !(200..300).contains(&reply.status) || method == "GET" {
            prop_assert_eq!(
                after,
                before,
                "a {} to {} wrote {} event(s)",
                reply.status,
                target,
                after - before
            );
        }
        Ok(reply)
    }

    /// Fails unless the server is alive and logged no panic.
    fn assert_unharmed(&self) {
        self.head();
        let log = self.server.log();
        assert!(!log.contains("panicked"), "the server panicked:\n{log}");
    }
}

fn text(reply: &RawReply) -> String {
    String::from_utf8_lossy(&reply.body)
        .chars()
        .take(500)
        .collect()
}

/// Every operation in the API document, as (method, path template).
pub static OPERATIONS: LazyLock<Vec<(String, String)>> = LazyLock::new(|| {
    let doc: Value = serde_json::from_str(hookledger::api::ops::OPENAPI).unwrap();
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.push((method.to_ascii_uppercase(), path.clone()));
        }
    }
    ops
});

fn percent_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

/// Bytes for a request target or header value: anything but CR and LF, which
/// would end the line and turn one request into another.
fn line_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        any::<u8>().prop_filter("no line ends", |b| *b != b'\r' && *b != b'\n'),
        0..max,
    )
}

fn json_value() -> impl Strategy<Value = Value> {
    let names = [
        "status",
        "responseStatusCode",
        "responseBody",
        "lastError",
        "nextRetryAt",
        "name",
        "url",
        "eventTypes",
        "enabled",
        "eventType",
        "sourceKey",
        "payload",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
        prop::sample::select(vec![
            "pending",
            "delivered",
            "2030-02-29T00:00:00Z",
            "https://x.example/"
        ])
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(4, 40, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        prop::sample::select(names.to_vec()).prop_map(str::to_owned),
                        ".{0,8}"
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// Bodies no client library would send.
fn nasty_bodies() -> Vec<Vec<u8>> {
    let deep = 100_000;
    let mut bodies = vec![
        format!("{}{}", "[".repeat(deep), "]".repeat(deep)).into_bytes(),
        format!("{}1{}", r#"{"a":"#.repeat(deep), "}".repeat(deep)).into_bytes(),
        format!(r#"{{"status":"failed","responseBody":{}{}}}"#, r#"{"a":"#.repeat(deep), "}".repeat(deep)).into_bytes(),
        format!(r#"{{"eventType":"x","payload":{}{}}}"#, r#"{"a":["#.repeat(deep / 2), "]}".repeat(deep / 2)).into_bytes(),
        b"{\"status\":\"\xff\xfe\",\"lastError\":\"\xc3\x28\"}".to_vec(),
        b"{\"eventType\":\"\xed\xa0\x80\",\"payload\":{}}".to_vec(),
        br#"{"status":"failed","lastError":"\ud800"}"#.to_vec(),
        br#"{"status":"failed","responseStatusCode":1e400}"#.to_vec(),
        br#"{"status":"failed","responseStatusCode":123456789012345678901234567890}"#.to_vec(),
        br#"{"status":"failed","responseStatusCode":-9223372036854775809}"#.to_vec(),
        br#"{"status":"failed","responseStatusCode":200.0000000000000001}"#.to_vec(),
        br#"{"status":"failed","responseStatusCode":1e2}"#.to_vec(),
        br#"{"eventType":"x","payload":{"n":1e308,"m":-1e-308,"z":-0.0,"big":123456789012345678901234567890}}"#.to_vec(),
        br#"{"name":"n","url":"https://a.example.com","enabled":1e400}"#.to_vec(),
        format!(r#"{{"status":"failed","lastError":"{}"}}"#, "\u{1F600}".repeat(200_000)).into_bytes(),
        format!(r#"{{"eventType":"{}","payload":{{}}}}"#, "e".repeat(900_000)).into_bytes(),
        format!(r#"{{"name":"n","url":"https://a.example.com/{}"}}"#, "%".repeat(900_000)).into_bytes(),
        vec![b'{'; 2 * 1024 * 1024],
        b"\xef\xbb\xbf{\"status\":\"failed\"}".to_vec(),
        b"{\"status\":\"failed\"}\x00".to_vec(),
        b"{\"status\":\"failed\",\"status\":\"delivered\"}".to_vec(),
        Vec::new(),
    ];
    bodies.push(format!("{}{}", "[".repeat(127), "]".repeat(127)).into_bytes());
    bodies
}

#[derive(Debug, Clone)]
struct Case {
    method: String,
    template: String,
    id: String,
    odd_path: Option<Vec<u8>>,
    query: Vec<(Vec<u8>, Vec<u8>)>,
    auth: Option<Vec<u8>>,
    org: Option<Vec<u8>>,
    content_type: Option<Vec<u8>>,
    extra: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Case {
    fn request(&self) -> RawRequest {
        let mut target = match &self.odd_path {
            Some(path) => path.clone(),
            None => self
                .template
                .replace("{id}", &self.id)
                .replace("{outboundWebhookDeliveryId}", &self.id)
                .into_bytes(),
        };
        for (i, (name, value)) in self.query.iter().enumerate() {
            target.push(if i == 0 { b'?' } else { b'&' });
            target.extend_from_slice(name);
            target.push(b'=');
            target.extend_from_slice(value);
        }
        let mut request = RawRequest::new(&self.method, "");
        request.target = target;
        for (name, value) in [
            ("authorization", &self.auth),
            ("x-organization-id", &self.org),
            ("content-type", &self.content_type),
        ] {
            if let Some(value) = value {
                request = request.header(name, value);
            }
        }
        for (name, value) in &self.extra {
            request = request.header(name, value);
        }
        request.body(self.body.clone())
    }
}

fn cases(target: &Target) -> impl Strategy<Value = Case> + use<> {
    let bearer = |key: &str| format!("Bearer {key}").into_bytes();
    let ids = vec![
        target.endpoint.clone(),
        target.event.clone(),
        target.delivery.clone(),
        "dlv_01J00000000000000000000000".to_owned(),
    ];
    let id = prop_oneof![
        4 => prop::sample::select(ids),
        2 => "[A-Za-z0-9_.~-]{0,40}",
        1 => line_bytes(40).prop_map(|b| percent_encode(&b)),
        1 => prop::sample::select(vec![
            "%FF%FE".to_owned(), "%00".to_owned(), "..".to_owned(), "%2F..%2F".to_owned(),
            "%C3%28".to_owned(), "x".repeat(10_000), "%F0%9F%98%80".to_owned(),
        ]),
    ];
    let odd_path = prop_oneof![
        6 => Just(None),
        1 => prop::sample::select(vec![
            b"//v1//outbound-webhook-endpoints".to_vec(), b"/v1/outbound-webhook-endpoints/".to_vec(),
            b"/V1/OUTBOUND-WEBHOOK-ENDPOINTS".to_vec(), b"*".to_vec(),
            b"http://localhost/v1/outbound-webhook-deliveries".to_vec(),
            b"/v1/../v1/outbound-webhook-events".to_vec(), b"/v1/outbound-webhook-deliveries/\xff\xfe/attempts".to_vec(),
            b"/%".to_vec(), b"/v1/ledger/digest/".to_vec(), format!("/{}", "a/".repeat(5000)).into_bytes(),
        ]).prop_map(Some),
        1 => line_bytes(60).prop_map(|mut b| { b.insert(0, b'/'); Some(b) }),
    ];
    let names = prop_oneof![
        4 => prop::sample::select(vec![
            "limit", "cursor", "status", "eventType", "createdAfter", "createdBefore",
            "endpointId", "eventId", "asOfVersion",
        ]).prop_map(|s| s.as_bytes().to_vec()),
        1 => line_bytes(10).prop_map(|b| percent_encode(&b).into_bytes()),
    ];
    let values = prop_oneof![
        prop::sample::select(vec![
            "0",
            "1",
            "250",
            "251",
            "-1",
            "18446744073709551616",
            "1e3",
            "",
            "delivered",
            "2023-11-07T05:31:56Z",
            "2023-02-29T00:00:00Z",
            "%FF",
            "%00",
            "abc%",
            "00ff",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        "[A-Za-z0-9:._-]{0,30}".prop_map(String::into_bytes),
        line_bytes(30).prop_map(|b| b.into_iter().filter(|c| !b" #&".contains(c)).collect()),
        Just("v".repeat(20_000).into_bytes()),
    ];
    let query = prop::collection::vec((names, values), 0..4);
    let auth = prop_oneof![
        6 => Just(Some(bearer(&target.key))),
        1 => Just(Some(bearer(&target.other_key))),
        1 => Just(None),
        1 => line_bytes(80).prop_map(Some),
        1 => line_bytes(80).prop_map(move |b| { let mut v = b"Bearer hlk_".to_vec(); v.extend(b); Some(v) }),
        1 => Just(Some(format!("Bearer {}", "k".repeat(20_000)).into_bytes())),
    ];
    let org = prop_oneof![
        6 => Just(Some(ORG.as_bytes().to_vec())),
        1 => Just(Some(b"org_other".to_vec())),
        1 => Just(None),
        1 => line_bytes(40).prop_map(Some),
    ];
    let content_type = prop_oneof![
        6 => Just(Some(b"application/json".to_vec())),
        1 => Just(None),
        1 => prop::sample::select(vec![
            "text/plain", "application/merge-patch+json", "application/json; charset=\u{0}",
            "APPLICATION/JSON ; x=y", "multipart/form-data; boundary=x",
        ]).prop_map(|s| Some(s.as_bytes().to_vec())),
        1 => line_bytes(40).prop_map(Some),
    ];
    let extra = prop_oneof![
        4 => Just(Vec::new()),
        1 => prop::collection::vec(
            (
                prop::sample::select(vec!["idempotency-key", "if-match", "x-request-id", "accept", "x-junk"]).prop_map(str::to_owned),
                prop_oneof![line_bytes(40), Just(b"\"0\"".to_vec()), Just(b"99999999999999999999999".to_vec())],
            ),
            1..4,
        ),
        1 => Just(vec![("x-long".to_owned(), vec![b'v'; 70_000])]),
        1 => Just((0..150).map(|i| (format!("x-h{i}"), b"v".to_vec())).collect()),
    ];
    let valid = vec![
        json!({"status": "failed", "responseStatusCode": 500, "lastError": "e", "nextRetryAt": "2030-01-01T00:00:00Z", "responseBody": {}}),
        json!({"eventType": "x", "sourceKey": "s", "payload": {"a": 1}}),
        json!({"name": "n", "url": "https://n.example.com/", "eventTypes": ["a"], "enabled": true}),
    ];
    let mutated = (
        prop::sample::select(valid),
        any::<prop::sample::Index>(),
        json_value(),
    )
        .prop_map(|(mut body, field, value)| {
            let fields: Vec<String> = body.as_object().unwrap().keys().cloned().collect();
            body[&fields[field.index(fields.len())]] = value;
            serde_json::to_vec(&body).unwrap()
        });
    let body = prop_oneof![
        3 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        3 => mutated,
        1 => prop::collection::vec(any::<u8>(), 0..200),
        1 => prop::sample::select(nasty_bodies()),
    ];
    let method = prop_oneof![
        8 => Just(None),
        1 => prop::sample::select(vec!["PUT", "DELETE", "HEAD", "OPTIONS", "TRACE", "CONNECT", "BREW", "get"])
            .prop_map(|m| Some(m.to_owned())),
    ];
    (
        prop::sample::select(OPERATIONS.clone()),
        method,
        id,
        odd_path,
        query,
        (auth, org, content_type, extra),
        body,
    )
        .prop_map(
            |(
                (op_method, template),
                method,
                id,
                odd_path,
                query,
                (auth, org, content_type, extra),
                body,
            )| Case {
                method: method.unwrap_or(op_method),
                template,
                id,
                odd_path,
                query,
                auth,
                org,
                content_type,
                extra,
                body,
            },
        )
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 64,
        ..Config::default()
    })
}

#[test]
fn every_route_survives_arbitrary_requests_and_a_refused_one_writes_nothing() {
    let target = Target::start(&[]);
    let statuses = std::cell::RefCell::new(std::collections::BTreeMap::<u16, usize>::new());
    let mut runner = runner(400);
    let result = runner.run(&cases(&target), |case| {
        let reply = target.check(&case.request())?;
        *statuses.borrow_mut().entry(reply.status).or_default() += 1;
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    target.assert_unharmed();
    let statuses = statuses.into_inner();
    let ok = statuses.range(200..300).map(|(_, n)| n).sum::<usize>();
    assert!(
        ok > 0 && statuses.len() > 5,
        "the inputs hardly vary: {statuses:?}"
    );
    record_figures(
        "hostile-routes",
        &format!(
            "hostile: {} requests (with shrinking) over {} operations, answers by status {statuses:?}; no 5xx, no write on refusal",
            statuses.values().sum::<usize>(),
            OPERATIONS.len()
        ),
    );
}

#[test]
fn nasty_bodies_on_every_write_route_are_refused_without_a_write() {
    let target = Target::start(&[]);
    let mut tried = 0;
    for (method, template) in OPERATIONS.iter().filter(|(m, _)| m != "GET") {
        let path = template
            .replace("{id}", &target.endpoint)
            .replace("{outboundWebhookDeliveryId}", &target.delivery);
        for body in nasty_bodies() {
            let request = RawRequest::new(method, &path)
                .header("authorization", format!("Bearer {}", target.key))
                .header("x-organization-id", ORG)
                .header("content-type", "application/json")
                .body(body.clone());
            let reply = target.check(&request).unwrap_or_else(|e| {
                panic!(
                    "{method} {path} with {:?}…: {e}",
                    String::from_utf8_lossy(&body[..body.len().min(80)])
                )
            });
            // Only the plain 127-deep array and the duplicated field are well-formed objects' kin;
            // nothing here is a valid command except possibly the big-number payload.
            tried += 1;
            let _ = reply;
        }
    }
    target.assert_unharmed();
    record_figures(
        "hostile-bodies",
        &format!("hostile bodies: {tried} nasty bodies on the write routes"),
    );
}

/// The record-attempt contract (`docs/DESIGN.md` §1) as a predicate, to hold the
/// server's answers to.
fn contract_allows(body: &serde_json::Map<String, Value>) -> Vec<&'static str> {
    static RETRY: LazyLock<regex::Regex> = LazyLock::new(|| {
        let doc: Value = serde_json::from_str(hookledger::api::ops::OPENAPI).unwrap();
        let pattern = doc["components"]["schemas"]["RecordOutboundWebhookDeliveryAttempt"]["properties"]
            ["nextRetryAt"]["pattern"]
            .as_str()
            .unwrap()
            .to_owned();
        regex::Regex::new(&pattern).unwrap()
    });
    let integer_in = |v: &Value| match v.as_f64() {
        Some(f) => f.fract() == 0.0 && (100.0..=599.0).contains(&f),
        None => false,
    };
    let mut bad = Vec::new();
    match body.get("status") {
        Some(Value::String(s))
            if ["pending", "retry_scheduled", "delivered", "failed"].contains(&s.as_str()) => {}
        _ => bad.push("status"),
    }
    match body.get("responseStatusCode") {
        None | Some(Value::Null) => {}
        Some(v) if integer_in(v) => {}
        Some(_) => bad.push("responseStatusCode"),
    }
    match body.get("responseBody") {
        None | Some(Value::Object(_)) => {}
        Some(_) => bad.push("responseBody"),
    }
    match body.get("lastError") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if !s.is_empty() => {}
        Some(_) => bad.push("lastError"),
    }
    match body.get("nextRetryAt") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if RETRY.is_match(s) => {}
        Some(_) => bad.push("nextRetryAt"),
    }
    bad
}

#[test]
fn record_attempt_accepts_exactly_what_the_contract_allows() {
    let target = Target::start(&[]);
    let field = |name: &'static str, good: Vec<Value>| {
        prop_oneof![
            3 => Just(None),
            8 => prop::sample::select(good).prop_map(Some),
            1 => json_value().prop_map(Some),
        ]
        .prop_map(move |v| v.map(|v| (name, v)))
    };
    let body = (
        field(
            "status",
            vec![
                json!("pending"),
                json!("retry_scheduled"),
                json!("delivered"),
                json!("failed"),
                json!("Failed"),
            ],
        ),
        field(
            "responseStatusCode",
            vec![
                json!(100),
                json!(599),
                json!(99),
                json!(600),
                json!(200.0),
                json!(200.5),
                json!(null),
                json!("200"),
            ],
        ),
        field(
            "responseBody",
            vec![
                json!({}),
                json!({"a": [1]}),
                json!([]),
                json!(null),
                json!("x"),
            ],
        ),
        field(
            "lastError",
            vec![json!("boom"), json!(""), json!(null), json!(7)],
        ),
        field(
            "nextRetryAt",
            vec![
                json!("2023-11-07T05:31:56Z"),
                json!("2024-02-29T00:00Z"),
                json!("2023-02-29T00:00:00Z"),
                json!("2023-04-31T00:00:00Z"),
                json!("2023-11-07T05:31:56+00:00"),
                json!("2023-11-07T05:31:56.123456Z"),
                json!(null),
            ],
        ),
    )
        .prop_map(|fields| {
            let (a, b, c, d, e) = fields;
            [a, b, c, d, e]
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.to_owned(), v))
                .collect::<serde_json::Map<String, Value>>()
        });
    let path = format!(
        "/v1/outbound-webhook-deliveries/{}/attempts",
        target.delivery
    );
    let mut runner = runner(300);
    let (accepted, refused) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    let result = runner.run(&body, |body| {
        let bad = contract_allows(&body);
        let request = RawRequest::new("POST", &path)
            .header("authorization", format!("Bearer {}", target.key))
            .header("x-organization-id", ORG)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap());
        let before = target.head();
        let reply = target.check(&request)?;
        if bad.is_empty() {
            prop_assert_eq!(
                reply.status,
                200,
                "{} was refused: {}",
                Value::Object(body.clone()),
                text(&reply)
            );
            prop_assert_eq!(target.head(), before + 1);
            accepted.set(accepted.get() + 1);
        } else {
            prop_assert_eq!(
                reply.status,
                400,
                "{} was not refused",
                Value::Object(body.clone())
            );
            let problem: Value = serde_json::from_slice(&reply.body).unwrap();
            let mut named: Vec<&str> = problem["errors"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|e| e["field"].as_str())
                .collect();
            named.sort();
            let mut expected = bad.clone();
            expected.sort();
            prop_assert_eq!(named, expected, "for {}", Value::Object(body.clone()));
            refused.set(refused.get() + 1);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    target.assert_unharmed();
    let (accepted, refused) = (accepted.get(), refused.get());
    assert!(
        accepted >= 5 && refused >= 100,
        "{accepted} accepted, {refused} refused"
    );
    record_figures(
        "hostile-contract",
        &format!(
            "contract: 300 generated attempt bodies, {accepted} accepted and {refused} refused exactly as the contract says"
        ),
    );
}

/// Whether the server has closed `stream`, without waiting.
fn closed_now(stream: &mut std::net::TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let closed = match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// Reads until the server closes the connection or `limit` passes; true if it closed.
fn closed_within(stream: &mut std::net::TcpStream, limit: Duration) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn a_client_that_trickles_its_headers_is_disconnected() {
    let target = Target::start(&["--client-timeout", "1"]);
    let mut stream = connect(target.addr());
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .unwrap();
    // One more header byte every 100 ms: it never finishes the head.
    let addr = target.addr();
    let trickle = std::thread::spawn({
        let mut stream = stream.try_clone().unwrap();
        move || {
            for _ in 0..150 {
                if stream.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    assert!(
        closed_within(&mut stream, Duration::from_secs(10)),
        "a client trickling its headers kept its connection for 10 s with a 1 s client timeout"
    );
    let _ = trickle.join();
    // An idle keep-alive connection is closed after as long.
    let mut idle = connect(addr);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    assert!(
        closed_within(&mut idle, Duration::from_secs(10)),
        "an idle connection was kept"
    );
    target.assert_unharmed();
}

#[test]
fn a_body_that_does_not_arrive_in_time_is_408_and_writes_nothing() {
    let target = Target::start(&["--client-timeout", "1"]);
    let before = target.head();
    let body = br#"{"status":"failed","lastError":"slow"}"#;
    let mut stream = connect(target.addr());
    let head = format!(
        "POST /v1/outbound-webhook-deliveries/{}/attempts HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
         x-organization-id: {ORG}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        target.delivery,
        target.key,
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let writer = std::thread::spawn({
        let mut stream = stream.try_clone().unwrap();
        move || {
            for byte in body.iter().take(body.len() - 1) {
                if stream.write_all(&[*byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    let mut response = Vec::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let _ = stream.read_to_end(&mut response);
    let reply = crate::raw::parse(&response).expect("an answer");
    assert_eq!(reply.status, 408, "{}", text(&reply));
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json")
    );
    let _ = writer.join();
    assert_eq!(target.head(), before, "the slow request wrote something");
    target.assert_unharmed();
}

#[test]
fn idle_slow_connections_do_not_keep_a_normal_request_out() {
    let target = Target::start(&["--client-timeout", "1", "--max-connections", "16"]);
    let addr = target.addr();
    let stall = |n: usize| -> Vec<std::net::TcpStream> {
        (0..n)
            .map(|_| {
                let mut s = connect(addr);
                s.write_all(b"GET /healthz HTTP/1.1\r\nhost:").unwrap();
                s
            })
            .collect()
    };
    // Below the cap, a normal request is served while the stalled ones are still open.
    let mut below = stall(10);
    let reply = send_bytes(
        addr,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(reply.status, 200);
    let still_open = below
        .iter_mut()
        .map(closed_now)
        .filter(|closed| !closed)
        .count();
    assert_eq!(
        still_open, 10,
        "the normal request had to wait for the stalled ones to time out"
    );
    drop(below);

    // Three times the cap: stalled connections time out and free their slots.
    let _above = stall(48);
    let started = Instant::now();
    let reply = send_bytes(
        addr,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(reply.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "48 stalled connections kept a request out for {:?}",
        started.elapsed()
    );
    target.assert_unharmed();
}
