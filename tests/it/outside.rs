//! Proofs checked from outside: `tools/verify_proofs.py`, which imports
//! nothing of hookledger (hashlib and the `cryptography` package's Ed25519),
//! verifies a signed head, that every one of 1 000 events is included in it
//! (each event's hash recomputed from its fields), that a head 1 000 events
//! later is consistent with it, and fails when one character of an event, a
//! proof or a head is changed.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::helpers::spawn_app;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/verify_proofs.py")
}

/// Fails, saying what is missing, unless `python3` with `cryptography` runs.
fn require_python() {
    let probe = Command::new("python3")
        .args(["-c", "import hashlib, cryptography"])
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "the outside verifier needs the `cryptography` package for python3 \
             (pip install cryptography): {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("the outside verifier needs python3 on the PATH: {e}"),
    }
}

/// Runs the script; `(exit code, stdout + stderr)`.
fn verify(args: &[&str]) -> (i32, String) {
    let out = Command::new("python3")
        .arg(script())
        .args(args)
        .output()
        .expect("python3 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn write(dir: &Path, name: &str, value: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(value).unwrap()).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Changes the hex digit at `i` of the string at `value[key]`.
fn flip(value: &mut Value, i: usize) {
    let text = value.as_str().unwrap().to_owned();
    let mut chars: Vec<char> = text.chars().collect();
    chars[i] = if chars[i] == '0' { '1' } else { '0' };
    *value = Value::String(chars.into_iter().collect());
}

async fn head(app: &TestApp) -> Value {
    let reply = app.get("/v1/ledger/tree-head").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body
}

/// Records attempts round-robin on `deliveries` until the organization's
/// tree holds `size` events.
async fn grow_to(app: &TestApp, deliveries: &[String], size: u64) {
    let now = head(app).await["treeSize"].as_u64().unwrap();
    assert!(now <= size);
    for i in 0..(size - now) {
        let delivery = &deliveries[i as usize % deliveries.len()];
        let body = json!({"status": "retry_scheduled", "responseStatusCode": 503,
                          "lastError": format!("upstream said no, {i}"),
                          "nextRetryAt": "2030-01-01T00:00:00Z"});
        let reply = app.record_attempt(delivery, &body).await;
        assert!(reply.status.is_success(), "{}", reply.body);
    }
    assert_eq!(head(app).await["treeSize"], size);
}

/// Every raw event of the deliveries' streams, following the pages.
async fn events(app: &TestApp, deliveries: &[String]) -> Vec<Value> {
    let mut all = Vec::new();
    for delivery in deliveries {
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/outbound-webhook-deliveries/{delivery}/events?limit=250");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = app.get(&path).await;
            assert_eq!(page.status, 200, "{}", page.body);
            all.extend(page.body["data"].as_array().unwrap().iter().cloned());
            match page.body["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
    }
    all
}

#[tokio::test]
async fn an_outside_verifier_checks_heads_and_proofs_and_catches_one_changed_character() {
    require_python();
    let app = spawn_app().await;
    app.endpoint("receiver").await;
    let mut deliveries = Vec::new();
    for i in 0..4 {
        let event = app
            .accept_event(
                json!({"eventType": "invoice.paid", "payload": {"n": i, "amount": 12.50}}),
            )
            .await;
        deliveries.push(event["deliveries"][0]["id"].as_str().unwrap().to_owned());
    }
    grow_to(&app, &deliveries, 1000).await;
    let first = head(&app).await;
    let mut inclusion = Vec::new();
    for sequence in 1..=1000 {
        let proof = app
            .get(&format!(
                "/v1/ledger/proofs/inclusion?sequence={sequence}&treeSize=1000"
            ))
            .await;
        assert_eq!(proof.status, 200, "{}", proof.body);
        inclusion.push(proof.body);
    }
    let recorded = events(&app, &deliveries).await;
    assert!(
        recorded.len() > 990,
        "the attempts, {} of them",
        recorded.len()
    );
    grow_to(&app, &deliveries, 2000).await;
    let second = head(&app).await;
    let consistency = app
        .get("/v1/ledger/proofs/consistency?from=1000&to=2000")
        .await;
    assert_eq!(consistency.status, 200, "{}", consistency.body);
    let keys = app.get("/v1/ledger/public-key").await.body;
    let bundle = json!({
        "keys": keys,
        "heads": [first, second],
        "inclusion": inclusion,
        "consistency": [consistency.body],
        "events": recorded,
    });

    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "bundle.json", &bundle);
    let (code, out) = verify(&["bundle", "--complete", &file]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1000 of 1000 events proved included"), "{out}");
    assert!(
        out.contains("the head of size 2000 extends the head of size 1000"),
        "{out}"
    );

    // One changed character anywhere fails, naming what.
    let mut tampered: Vec<(&str, Value)> = Vec::new();
    let mut event = bundle.clone();
    let data = &mut event["events"][500]["data"]["lastError"];
    *data = json!(data.as_str().unwrap().replace("upstream", "upstreaM"));
    tampered.push(("does not hash", event));
    let mut event_hash = bundle.clone();
    flip(&mut event_hash["events"][7]["hash"], 10);
    tampered.push(("does not hash", event_hash));
    let mut path = bundle.clone();
    flip(&mut path["inclusion"][321]["auditPath"][3], 0);
    tampered.push(("sequence 322 is not proved", path));
    let mut leaf = bundle.clone();
    flip(&mut leaf["inclusion"][0]["leafHash"], 63);
    tampered.push(("sequence 1 is not proved", leaf));
    let mut root = bundle.clone();
    flip(&mut root["heads"][0]["rootHash"], 5);
    tampered.push(("signature of the head of size 1000", root));
    let mut time = bundle.clone();
    let stamp = time["heads"][1]["timestamp"].as_str().unwrap().to_owned();
    let changed = format!(
        "{}{}",
        &stamp[..stamp.len() - 2],
        if stamp.ends_with("0Z") { "1Z" } else { "0Z" }
    );
    time["heads"][1]["timestamp"] = json!(changed);
    tampered.push(("signature of the head of size 2000", time));
    let mut signature = bundle.clone();
    flip(&mut signature["heads"][1]["signature"], 100);
    tampered.push(("signature of the head of size 2000", signature));
    let mut step = bundle.clone();
    flip(&mut step["consistency"][0]["proof"][0], 20);
    tampered.push(("is not proved to extend", step));
    for (i, (reason, doc)) in tampered.into_iter().enumerate() {
        let file = write(dir.path(), &format!("tampered-{i}.json"), &doc);
        let (code, out) = verify(&["bundle", "--complete", &file]);
        assert_eq!(code, 1, "tampered bundle {i} must fail: {out}");
        assert!(
            out.contains(reason),
            "tampered bundle {i}: expected {reason:?}: {out}"
        );
    }

    // The auditor's walk-through in the README: one file per answer.
    let event = recorded.iter().find(|e| e["sequence"] == 700).unwrap();
    let args = [
        ("keys.json", &keys),
        ("head.json", &bundle["heads"][0]),
        ("later.json", &bundle["heads"][1]),
        ("proof.json", &bundle["inclusion"][699]),
        ("event.json", event),
        ("consistency.json", &bundle["consistency"][0]),
    ]
    .map(|(name, value)| write(dir.path(), name, value));
    let (code, out) = verify(&["head", "--keys", &args[0], &args[1]]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify(&[
        "inclusion",
        "--keys",
        &args[0],
        "--head",
        &args[1],
        "--proof",
        &args[3],
        "--event",
        &args[4],
    ]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify(&[
        "consistency",
        "--keys",
        &args[0],
        "--old",
        &args[1],
        "--new",
        &args[2],
        "--proof",
        &args[5],
    ]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify(&[
        "inclusion",
        "--keys",
        &args[0],
        "--head",
        &args[2],
        "--proof",
        &args[3],
    ]);
    assert_eq!(code, 1, "a proof against another head's size fails: {out}");
}
