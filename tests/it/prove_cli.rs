//! `hookledger audit prove`, `audit check-proof` and `audit verify --root`
//! on the real binary: proofs made from the log alone agree with the ones the
//! server serves from its stored nodes, check offline against heads kept in
//! files (signed ones with the published keys), and a changed character in a
//! proof, a head or a kept root fails naming what.

use std::path::Path;
use std::process::Output;

use serde_json::{Value, json};

use crate::binary::{Client, Server, create_key, hookledger, stderr, stdout, succeeds};

const ORG: &str = "org_prove";

fn json_of(output: Output) -> Value {
    serde_json::from_str(succeeds(output).trim()).expect("one JSON line")
}

fn save(dir: &Path, name: &str, value: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, value.to_string()).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Changes the first hex digit of the string at `value`.
fn flip(value: &mut Value) {
    let text = value.as_str().unwrap();
    let first = if text.starts_with('0') { "1" } else { "0" };
    *value = json!(format!("{first}{}", &text[1..]));
}

#[track_caller]
fn fails_with(output: Output, code: i32, says: &str) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        stderr(&output).contains(says),
        "expected {says:?}: {}",
        stderr(&output)
    );
}

#[tokio::test]
async fn proofs_from_the_log_match_the_servers_and_check_offline() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data).await;
    let key = create_key(&data, ORG);
    let client = Client::new(&server, ORG, &key);
    let delivery = client.one_delivery().await;
    let attempts = format!("/v1/outbound-webhook-deliveries/{delivery}/attempts");
    for i in 0..3 {
        client
            .post(&attempts, json!({"status": "retry_scheduled", "responseStatusCode": 500 + i, "nextRetryAt": "2030-01-01T00:00:00Z"}))
            .await;
    }
    // Another organization's events between this one's: not in its tree.
    let other_key = create_key(&data, "org_other");
    Client::new(&server, "org_other", &other_key)
        .one_delivery()
        .await;
    let old = client.get("/v1/ledger/tree-head").await;
    for i in 0..4 {
        client
            .post(&attempts, json!({"status": "retry_scheduled", "responseStatusCode": 510 + i, "nextRetryAt": "2030-01-01T00:00:00Z"}))
            .await;
    }
    let head = client.get("/v1/ledger/tree-head").await;
    let keys = client.get("/v1/ledger/public-key").await;
    let (m, n) = (
        old["treeSize"].as_u64().unwrap(),
        head["treeSize"].as_u64().unwrap(),
    );
    assert_eq!(n, m + 4);
    let served = client
        .get(&format!(
            "/v1/ledger/proofs/inclusion?sequence=3&treeSize={n}"
        ))
        .await;
    let served_step = client
        .get(&format!("/v1/ledger/proofs/consistency?from={m}&to={n}"))
        .await;

    // Beside the running server, from the log alone.
    let (m_s, n_s) = (m.to_string(), n.to_string());
    let proved = json_of(hookledger(
        &data,
        &[
            "audit",
            "prove",
            "--org",
            ORG,
            "--sequence",
            "3",
            "--size",
            &n_s,
        ],
    ));
    assert_eq!(proved["rootHash"], head["rootHash"]);
    assert_eq!(proved["leafHash"], served["leafHash"]);
    assert_eq!(proved["auditPath"], served["auditPath"]);
    let step = json_of(hookledger(
        &data,
        &["audit", "prove", "--org", ORG, "--from", &m_s, "--to", &n_s],
    ));
    assert_eq!(step["proof"], served_step["proof"]);
    assert_eq!(step["fromRoot"], old["rootHash"]);
    server.stop();

    // The tenant's files, checked offline: no data directory needed.
    let files = dir.path();
    let nowhere = files.join("no-data-here");
    let keys_file = save(files, "keys.json", &keys);
    let head_file = save(files, "head.json", &head);
    let old_file = save(files, "old.json", &old);
    let proof_file = save(files, "proof.json", &served);
    let step_file = save(files, "step.json", &served_step);
    let check = |proof: &str, heads: &[&str], with_keys: bool| {
        let mut args = vec!["audit", "check-proof", "--proof", proof];
        for h in heads {
            args.extend(["--head", h]);
        }
        if with_keys {
            args.extend(["--keys", &keys_file]);
        }
        hookledger(&nowhere, &args)
    };
    let ok = succeeds(check(&proof_file, &[&head_file], true));
    assert!(
        ok.contains("sequence 3 is included in the head of size"),
        "{ok}"
    );
    assert!(ok.contains("signature verifies"), "{ok}");
    succeeds(check(&step_file, &[&old_file, &head_file], true));
    assert!(!nowhere.exists(), "check-proof made no data directory");
    fails_with(check(&proof_file, &[&head_file], false), 2, "give --keys");

    let mut path = served.clone();
    flip(&mut path["auditPath"][0]);
    let bad = save(files, "bad-path.json", &path);
    fails_with(
        check(&bad, &[&head_file], true),
        1,
        "sequence 3 is not proved included",
    );
    let mut root = head.clone();
    flip(&mut root["rootHash"]);
    let bad = save(files, "bad-head.json", &root);
    fails_with(
        check(&proof_file, &[&bad], true),
        1,
        "`signature` does not verify",
    );
    let mut step = served_step.clone();
    flip(&mut step["proof"][0]);
    let bad = save(files, "bad-step.json", &step);
    fails_with(
        check(&bad, &[&old_file, &head_file], true),
        1,
        "is not proved to extend",
    );

    // The operator's side: the whole ledger's tree, a head kept, checked later.
    let ledger_head = json_of(hookledger(
        &data,
        &["audit", "prove", "--head", "--size", "4"],
    ));
    assert_eq!(ledger_head["tree"], "ledger");
    let kept = save(files, "ledger-head.json", &ledger_head);
    let proof = json_of(hookledger(
        &data,
        &["audit", "prove", "--position", "2", "--size", "4"],
    ));
    let proof_file = save(files, "ledger-proof.json", &proof);
    let ok = succeeds(check(&proof_file, &[&kept], false));
    assert!(
        ok.contains("position 2 is included in the head of size 4"),
        "{ok}"
    );
    let root = ledger_head["rootHash"].as_str().unwrap().to_owned();
    let ok = succeeds(hookledger(
        &data,
        &["audit", "verify", "--root", &root, "--size", "4"],
    ));
    assert!(ok.contains("the Merkle root at size 4 matches"), "{ok}");
    let mut changed = json!(root);
    flip(&mut changed);
    let out = hookledger(
        &data,
        &[
            "audit",
            "verify",
            "--root",
            changed.as_str().unwrap(),
            "--size",
            "4",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("FAILED at position 4: the ledger's Merkle root at size 4"),
        "{}",
        stdout(&out)
    );
    let out = hookledger(
        &data,
        &["audit", "verify", "--root", &root, "--size", "100000"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("the expected Merkle root is for size 100000"),
        "{}",
        stdout(&out)
    );
    fails_with(
        hookledger(
            &data,
            &["audit", "prove", "--position", "100000", "--size", "100000"],
        ),
        2,
        "fewer than the size 100000",
    );
}
