//! `spawn_app()` serves the real router over TCP on port 0 with a fresh node and
//! a fresh API key, and typed request helpers drive it with reqwest. Every
//! response a test receives passes through [`TestApp::send`], which checks it
//! against `schemas/openapi.json`.

use hookledger::api::{self, AppState};
use hookledger::ledger::{IssuedKey, new_id};
use hookledger::node::Node;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::schema::check_response;

/// A node under test with the data directory it lives in, and the server
/// its store is on when that lives in the test (see [`Backing`]).
pub struct TestNode {
    pub node: Node,
    pub dir: Option<tempfile::TempDir>,
    pub backing: Option<Backing>,
}

/// What a node's store needs kept alive beside it: the KurrentDB (the test
/// double) it runs on, if any.
#[cfg(feature = "kurrentdb")]
pub type Backing = crate::support_kurrentdb::Kurrent;
#[cfg(not(feature = "kurrentdb"))]
pub type Backing = ();

impl From<Node> for TestNode {
    fn from(node: Node) -> Self {
        TestNode {
            node,
            dir: None,
            backing: None,
        }
    }
}

/// The node under test: the durable embedded store in a fresh temp directory,
/// with its read model there. The one place that chooses the store: with
/// `HOOKLEDGER_TEST_BACKEND=postgres`, a fresh PostgreSQL database instead
/// (the read model still in the temp directory), which is how `postgres.rs`
/// runs these tests again on PostgreSQL; with `kurrentdb`, a fresh ledger
/// prefix on KurrentDB (`kurrentdb.rs`).
pub async fn new_node() -> TestNode {
    let dir = tempfile::tempdir().expect("a temp dir");
    #[cfg(feature = "kurrentdb")]
    if std::env::var("HOOKLEDGER_TEST_BACKEND").is_ok_and(|b| b == "kurrentdb") {
        return crate::kurrentdb::new_node(dir).await;
    }
    let store: std::sync::Arc<dyn hookledger::store::EventStore> =
        if std::env::var("HOOKLEDGER_TEST_BACKEND").is_ok_and(|b| b == "postgres") {
            let url = crate::support_postgres::database("it")
                .await
                .expect("HOOKLEDGER_TEST_BACKEND=postgres needs a PostgreSQL server");
            let store = hookledger::store::postgres::PostgresStore::open(&url, Default::default())
                .await
                .expect("open the PostgreSQL store");
            std::sync::Arc::new(store)
        } else {
            let store = hookledger::store::embedded::EmbeddedStore::open(dir.path())
                .expect("open the store");
            std::sync::Arc::new(store)
        };
    let node = Node::start(store, hookledger::projector::Config::in_dir(dir.path()))
        .await
        .expect("open the node");
    TestNode {
        node,
        dir: Some(dir),
        backing: None,
    }
}

/// With `RUST_LOG` set, what the in-process server logs goes to the test's
/// output, which libtest shows for a failing test or with `--nocapture`.
pub fn show_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

pub struct TestApp {
    pub base: String,
    pub node: Node,
    pub client: reqwest::Client,
    pub org: String,
    pub key: IssuedKey,
    _shutdown: oneshot::Sender<()>,
    _dir: Option<tempfile::TempDir>,
    _backing: Option<Backing>,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `field`s named in a problem's `errors`.
    pub fn error_fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Asserts a problem+json answer with `status`, naming `field` when given.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, field: Option<&str>) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "a {status} must be problem+json"
        );
        assert_eq!(self.body["status"], status);
        if let Some(field) = field {
            assert!(
                self.error_fields().iter().any(|f| f == field),
                "expected errors to name {field}: {}",
                self.body
            );
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(new_node().await, |state| state).await
}

/// Serves `node`, with the state adjusted by `configure` (e.g. store stats).
pub async fn spawn_app_with(
    node: impl Into<TestNode>,
    configure: impl FnOnce(AppState) -> AppState,
) -> TestApp {
    show_logs();
    let TestNode { node, dir, backing } = node.into();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let address = listener.local_addr().expect("local address");
    let (shutdown, stop) = oneshot::channel::<()>();
    let state = configure(AppState::new(node.clone()));
    tokio::spawn(api::serve(listener, state, async {
        let _ = stop.await;
    }));
    let org = new_id("org");
    let key = node.ledger.issue_key(&org).await.expect("issue a key");
    TestApp {
        base: format!("http://{address}"),
        node,
        client: reqwest::Client::new(),
        org,
        key,
        _shutdown: shutdown,
        _dir: dir,
        _backing: backing,
    }
}

impl TestApp {
    /// A request with this test's key and organization.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.bare(method, path)
            .bearer_auth(&self.key.token)
            .header("x-organization-id", &self.org)
    }

    /// A request with no credentials.
    pub fn bare(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    /// Sends, reads the whole response and checks it against the API document.
    pub async fn send(&self, request: RequestBuilder) -> Reply {
        let request = request.build().expect("a well-formed request");
        let method = request.method().to_string();
        let path = request.url().path().to_owned();
        let response = self
            .client
            .execute(request)
            .await
            .expect("the server answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("a body").to_vec();
        let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        check_response(&method, &path, status.as_u16(), content_type, &bytes);
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            bytes,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Reply {
        self.send(self.request(Method::PATCH, path).json(body))
            .await
    }

    /// Registers an endpoint and returns it.
    pub async fn create_endpoint(&self, body: Value) -> Value {
        let reply = self.post("/v1/outbound-webhook-endpoints", &body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body
    }

    /// An enabled endpoint for every event type.
    pub async fn endpoint(&self, name: &str) -> Value {
        self.create_endpoint(
            json!({"name": name, "url": format!("https://{name}.example.com/hook")}),
        )
        .await
    }

    /// Accepts an event and returns its snapshot.
    pub async fn accept_event(&self, body: Value) -> Value {
        let reply = self.post("/v1/outbound-webhook-events", &body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body
    }

    /// An endpoint and one event fanned out to it; returns the delivery id.
    pub async fn delivery(&self) -> String {
        self.endpoint("receiver").await;
        let event = self
            .accept_event(json!({"eventType": "invoice.paid", "payload": {"n": 1}}))
            .await;
        event["deliveries"][0]["id"]
            .as_str()
            .expect("one delivery")
            .to_owned()
    }

    pub async fn record_attempt(&self, delivery_id: &str, body: &Value) -> Reply {
        self.post(&attempts_path(delivery_id), body).await
    }

    pub async fn get_delivery(&self, delivery_id: &str) -> Reply {
        self.get(&format!("/v1/outbound-webhook-deliveries/{delivery_id}"))
            .await
    }

    /// The delivery's attempt count, read over HTTP.
    pub async fn attempt_count(&self, delivery_id: &str) -> u64 {
        let reply = self.get_delivery(delivery_id).await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.body["attemptCount"].as_u64().expect("attemptCount")
    }

    /// The delivery's attempt history, oldest first (one page of 250).
    pub async fn history(&self, delivery_id: &str) -> Vec<Value> {
        let reply = self
            .get(&format!("{}?limit=250", attempts_path(delivery_id)))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["data"].as_array().cloned().unwrap_or_default()
    }

    /// Every page of the list at `path`, following `nextCursor` to its end;
    /// each page's body, every one asserted 200.
    pub async fn every_page(&self, path: &str) -> Vec<Value> {
        let mut pages = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let url = match &next {
                Some(cursor) => format!("{path}{sep}cursor={cursor}"),
                None => path.to_owned(),
            };
            let reply = self.get(&url).await;
            assert_eq!(reply.status, StatusCode::OK, "{url}: {}", reply.body);
            next = reply.body["nextCursor"].as_str().map(str::to_owned);
            pages.push(reply.body);
            if next.is_none() {
                return pages;
            }
        }
    }

    /// The store's head: everything ever appended.
    pub fn head(&self) -> u64 {
        self.node.store.head()
    }

    /// Another organization with its own key on the same server, as a
    /// client of its own.
    pub async fn another_organization(&self) -> TestApp {
        let org = new_id("org");
        let key = self.node.ledger.issue_key(&org).await.expect("issue a key");
        let (shutdown, _) = oneshot::channel();
        TestApp {
            base: self.base.clone(),
            node: self.node.clone(),
            client: self.client.clone(),
            org,
            key,
            _shutdown: shutdown,
            _dir: None,
            _backing: None,
        }
    }

    /// `/metrics`, as text.
    pub async fn metrics(&self) -> String {
        let reply = self.send(self.bare(Method::GET, "/metrics")).await;
        assert_eq!(reply.status, StatusCode::OK);
        String::from_utf8(reply.bytes).expect("metrics are text")
    }

    /// A second organization with its own key: `(org, token)`.
    pub async fn other_org(&self) -> (String, String) {
        let org = new_id("org");
        let key = self.node.ledger.issue_key(&org).await.expect("issue a key");
        (org, key.token)
    }
}

pub fn attempts_path(delivery_id: &str) -> String {
    format!("/v1/outbound-webhook-deliveries/{delivery_id}/attempts")
}
