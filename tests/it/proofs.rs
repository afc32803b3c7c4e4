//! Signed tree heads and Merkle proofs over HTTP: the head's root is the
//! RFC 9162 tree over the organization's event hashes in sequence order, its
//! signature verifies with a published key, every inclusion and consistency
//! proof checks against it, and every bad parameter is a 400 naming it.

use hookledger::merkle::{self, Frontier, Hash};
use hookledger::signing;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// Records an endpoint, `events` events and two attempts on each delivery.
async fn history(app: &TestApp, events: usize) {
    app.endpoint("receiver").await;
    for i in 0..events {
        let event = app
            .accept_event(json!({"eventType": "invoice.paid", "payload": {"n": i}}))
            .await;
        let delivery = event["deliveries"][0]["id"].as_str().unwrap().to_owned();
        for status in ["retry_scheduled", "delivered"] {
            let mut body = json!({"status": status, "responseStatusCode": 200});
            if status == "retry_scheduled" {
                body = json!({"status": status, "responseStatusCode": 503, "nextRetryAt": "2030-01-01T00:00:00Z"});
            }
            let reply = app.record_attempt(&delivery, &body).await;
            assert!(reply.status.is_success(), "{}", reply.body);
        }
    }
}

/// The organization's event hashes in sequence order, read from the log.
async fn org_hashes(app: &TestApp, org: &str) -> Vec<Hash> {
    app.node.ready().await.unwrap();
    let events = app.node.store.read_all(1, 100_000).await.unwrap();
    events
        .iter()
        .filter(|e| {
            hookledger::model::decode(e)
                .unwrap()
                .event
                .organization_id()
                == org
        })
        .map(|e| e.hash)
        .collect()
}

fn hash(value: &Value) -> Hash {
    hex::decode(value.as_str().expect("a hex string"))
        .expect("hex")
        .try_into()
        .expect("32 bytes")
}

fn path(value: &Value) -> Vec<Hash> {
    value.as_array().unwrap().iter().map(hash).collect()
}

/// Whether `head` is signed by one of `keys` over the README's bytes.
pub fn signed(head: &Value, keys: &Value) -> bool {
    let timestamp = chrono::DateTime::parse_from_rfc3339(head["timestamp"].as_str().unwrap())
        .unwrap()
        .timestamp_micros();
    let message = signing::head_bytes(
        head["organizationId"].as_str().unwrap(),
        head["treeSize"].as_u64().unwrap(),
        timestamp,
        &hash(&head["rootHash"]),
    );
    let signature = hex::decode(head["signature"].as_str().unwrap()).unwrap();
    keys["keys"].as_array().unwrap().iter().any(|k| {
        k["keyId"] == head["keyId"]
            && signing::PublicKey {
                key_id: k["keyId"].as_str().unwrap().to_owned(),
                key: hash(&k["publicKey"]),
            }
            .verifies(&message, &signature)
    })
}

#[tokio::test]
async fn the_head_is_signed_and_every_proof_checks_against_the_log() {
    let app = spawn_app().await;
    history(&app, 4).await;
    let old = app.get("/v1/ledger/tree-head").await;
    assert_eq!(old.status, StatusCode::OK, "{}", old.body);
    history(&app, 3).await;
    let head = app.get("/v1/ledger/tree-head").await;
    let keys = app.get("/v1/ledger/public-key").await;
    assert_eq!(keys.status, StatusCode::OK);
    assert!(
        signed(&head.body, &keys.body),
        "{} {}",
        head.body,
        keys.body
    );
    assert!(signed(&old.body, &keys.body));
    let mut forged = head.body.clone();
    forged["treeSize"] = json!(head.body["treeSize"].as_u64().unwrap() - 1);
    assert!(
        !signed(&forged, &keys.body),
        "a changed size must not verify"
    );

    let hashes = org_hashes(&app, &app.org).await;
    let size = hashes.len() as u64;
    assert_eq!(head.body["treeSize"], size);
    assert_eq!(head.body["organizationId"], app.org.as_str());
    let mut frontier = Frontier::default();
    for h in &hashes {
        frontier.push_leaf(merkle::leaf_hash(h));
    }
    let root = hash(&head.body["rootHash"]);
    assert_eq!(root, frontier.root(), "the root is RFC 9162's over the log");

    for (i, event_hash) in hashes.iter().enumerate() {
        let sequence = i as u64 + 1;
        let proof = app
            .get(&format!(
                "/v1/ledger/proofs/inclusion?sequence={sequence}&treeSize={size}"
            ))
            .await;
        assert_eq!(proof.status, StatusCode::OK, "{}", proof.body);
        let leaf = hash(&proof.body["leafHash"]);
        assert_eq!(leaf, merkle::leaf_hash(event_hash));
        assert!(
            merkle::verify_inclusion(
                &leaf,
                i as u64,
                size,
                &path(&proof.body["auditPath"]),
                &root
            ),
            "sequence {sequence}"
        );
    }
    let old_size = old.body["treeSize"].as_u64().unwrap();
    let proof = app
        .get(&format!(
            "/v1/ledger/proofs/consistency?from={old_size}&to={size}"
        ))
        .await;
    assert_eq!(proof.status, StatusCode::OK, "{}", proof.body);
    assert!(merkle::verify_consistency(
        old_size,
        size,
        &hash(&old.body["rootHash"]),
        &root,
        &path(&proof.body["proof"]),
    ));
    let same = app
        .get(&format!(
            "/v1/ledger/proofs/consistency?from={size}&to={size}"
        ))
        .await;
    assert_eq!(same.body["proof"], json!([]));
}

#[tokio::test]
async fn every_bad_proof_parameter_is_a_400_naming_it() {
    let app = spawn_app().await;
    history(&app, 1).await;
    let size = app.get("/v1/ledger/tree-head").await.body["treeSize"]
        .as_u64()
        .unwrap();
    let past = size + 1;
    let cases = [
        ("inclusion?treeSize=1", "sequence"),
        ("inclusion?sequence=1", "treeSize"),
        ("inclusion?sequence=0&treeSize=1", "sequence"),
        ("inclusion?sequence=1&treeSize=0", "treeSize"),
        ("inclusion?sequence=x&treeSize=1", "sequence"),
        ("inclusion?sequence=-1&treeSize=1", "sequence"),
        ("inclusion?sequence=1&treeSize=1&treeSize=1", "treeSize"),
        (
            "inclusion?sequence=99999999999999999999&treeSize=1",
            "sequence",
        ),
        ("inclusion?sequence=2&treeSize=1", "sequence"),
        (&format!("inclusion?sequence=1&treeSize={past}"), "treeSize"),
        ("consistency?to=1", "from"),
        ("consistency?from=1", "to"),
        ("consistency?from=0&to=1", "from"),
        ("consistency?from=1&to=0", "to"),
        ("consistency?from=2&to=1", "from"),
        ("consistency?from=1&to=1.5", "to"),
        (&format!("consistency?from=1&to={past}"), "to"),
    ];
    for (query, field) in cases {
        let reply = app.get(&format!("/v1/ledger/proofs/{query}")).await;
        reply.assert_problem(400, Some(field));
    }
}

#[tokio::test]
async fn an_organization_sees_its_own_tree_alone() {
    let app = spawn_app().await;
    history(&app, 3).await;
    let (org, token) = app.other_org().await;
    let as_other = |path: &str| {
        app.bare(Method::GET, path)
            .bearer_auth(&token)
            .header("x-organization-id", &org)
    };
    let head = app.send(as_other("/v1/ledger/tree-head")).await;
    assert_eq!(head.status, StatusCode::OK);
    // Its one event is the issue of its key.
    let theirs = org_hashes(&app, &org).await;
    assert_eq!(theirs.len(), 1);
    assert_eq!(head.body["treeSize"], 1, "{}", head.body);
    assert_eq!(
        head.body["rootHash"],
        hex::encode(merkle::leaf_hash(&theirs[0]))
    );
    let mine = app.get("/v1/ledger/tree-head").await.body["treeSize"]
        .as_u64()
        .unwrap();
    assert!(mine > 2);
    let proof = app
        .send(as_other(
            "/v1/ledger/proofs/inclusion?sequence=2&treeSize=2",
        ))
        .await;
    proof.assert_problem(400, Some("treeSize"));
    for path in [
        "/v1/ledger/tree-head",
        "/v1/ledger/public-key",
        "/v1/ledger/proofs/inclusion?sequence=1&treeSize=1",
        "/v1/ledger/proofs/consistency?from=1&to=1",
    ] {
        let reply = app.send(app.bare(Method::GET, path)).await;
        reply.assert_problem(401, None);
    }
}
