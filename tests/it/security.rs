//! Security against the real binary: every operation of the API document walked
//! with another organization's key answers 404, 403 or an empty list, never a
//! byte of the owner's data; a key revoked beside a running server is refused
//! from the next request on; no key appears in plain text in the data directory
//! or in any log, even at debug level; and the key check compares in constant time.

use std::path::Path;

use reqwest::Method;
use serde_json::json;

use crate::binary::{
    Client, Server, hookledger, key_id, log_path, record_figures, stderr, succeeds, walk,
};
use crate::hostile::OPERATIONS;

const OWNER: &str = "org_owner";
const INTRUDER: &str = "org_intruder";

/// Issues a key and returns it with everything the command wrote to stderr.
fn issue(data: &Path, org: &str) -> (String, String) {
    let out = hookledger(data, &["keys", "create", "--org", org]);
    let logs = stderr(&out);
    let key = succeeds(out).lines().last().unwrap().trim().to_owned();
    (key, logs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_organizations_key_never_sees_data_and_keys_are_never_stored_or_logged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (owner_key, mut cli_logs) = issue(&data, OWNER);
    let server = Server::spawn(&data, &[], &[("RUST_LOG", "debug")])
        .wait_ready()
        .await;
    // Issued beside the running server, through its admin socket.
    let (intruder_key, logs) = issue(&data, INTRUDER);
    cli_logs.push_str(&logs);
    let owner = Client::new(&server, OWNER, &owner_key);
    let endpoint = owner
        .post(
            "/v1/outbound-webhook-endpoints",
            json!({"name": "secret-endpoint", "url": "https://owner.example.com/"}),
        )
        .await;
    let event = owner
        .post(
            "/v1/outbound-webhook-events",
            json!({"eventType": "owner.secret", "sourceKey": "owner-source", "payload": {"owner": "payload"}}),
        )
        .await;
    let delivery = event["deliveries"][0]["id"].as_str().unwrap().to_owned();
    owner
        .post(
            &format!("/v1/outbound-webhook-deliveries/{delivery}/attempts"),
            json!({"status": "failed", "lastError": "owner-attempt"}),
        )
        .await;
    let owned = [
        endpoint["id"].as_str().unwrap().to_owned(),
        event["id"].as_str().unwrap().to_owned(),
        delivery.clone(),
        OWNER.to_owned(),
        "secret-endpoint".to_owned(),
        "owner-source".to_owned(),
        "owner-attempt".to_owned(),
    ];
    let path_of = |template: &str| {
        let id = if template.starts_with("/v1/outbound-webhook-endpoints") {
            &owned[0]
        } else if template.starts_with("/v1/outbound-webhook-events") {
            &owned[1]
        } else {
            &owned[2]
        };
        // The proofs' required parameters: the caller's first event, which
        // every organization with a key has (the key's issue).
        let query = match template {
            "/v1/ledger/proofs/inclusion" => "?sequence=1&treeSize=1",
            "/v1/ledger/proofs/consistency" => "?from=1&to=1",
            _ => "",
        };
        template
            .replace("{id}", id)
            .replace("{outboundWebhookDeliveryId}", id)
            + query
    };
    let body_for = |template: &str| {
        if template.contains("attempts") {
            json!({"status": "delivered"})
        } else if template.contains("events") {
            json!({"eventType": "intruder", "payload": {}})
        } else {
            json!({"name": "x", "url": "https://x.example.com/"})
        }
    };
    let intruder = Client::new(&server, INTRUDER, &intruder_key);
    // The intruder's key with the owner's organization in the header.
    let impostor = Client::new(&server, OWNER, &intruder_key);
    let mut walked = 0;
    for (method, template) in OPERATIONS.iter() {
        if !template.starts_with("/v1/") {
            continue; // health, readiness, metrics and the document hold no tenant data
        }
        let method: Method = method.parse().unwrap();
        let path = path_of(template);
        // Reads and erasures take no body (an erasure refuses one).
        let body = (method != Method::GET && method != Method::DELETE).then(|| body_for(template));
        let (status, answer) = intruder.send(method.clone(), &path, body.clone()).await;
        let text = answer.to_string();
        // A 404 may echo the id the intruder sent; nothing else of the owner's.
        for secret in owned.iter().filter(|s| !path.contains(s.as_str())) {
            assert!(
                !text.contains(secret.as_str()),
                "{method} {path} showed the intruder {secret}: {text}"
            );
        }
        let item = template.contains('{');
        if item {
            assert_eq!(
                status, 404,
                "{method} {path} as another organization: {text}"
            );
        } else {
            assert!(
                [200, 201].contains(&status),
                "{method} {path} as another organization: {status} {text}"
            );
            if path == "/v1/ledger/feed" {
                // The feed holds the intruder's own events (its key's), only.
                for event in answer["data"].as_array().unwrap() {
                    assert_eq!(event["data"]["organizationId"], INTRUDER, "{path}: {event}");
                }
            } else if method == Method::GET && answer.get("data").is_some() {
                assert_eq!(answer["data"], json!([]), "{method} {path}");
            }
        }
        let (status, answer) = impostor.send(method.clone(), &path, body).await;
        assert_eq!(
            status, 403,
            "{method} {path} with another organization's key: {answer}"
        );
        walked += 1;
    }

    // Revoked beside the running server: refused from the next request on.
    succeeds(hookledger(&data, &["keys", "revoke", &key_id(&owner_key)]));
    for (method, template) in OPERATIONS.iter().filter(|(_, t)| t.starts_with("/v1/")) {
        let method: Method = method.parse().unwrap();
        let path = path_of(template);
        // Reads and erasures take no body (an erasure refuses one).
        let body = (method != Method::GET && method != Method::DELETE).then(|| body_for(template));
        let (status, _) = owner.send(method.clone(), &path, body).await;
        assert_eq!(status, 401, "{method} {path} with a revoked key");
    }
    server.stop();

    let mut searched = 0;
    let mut haystacks: Vec<(String, Vec<u8>)> = walk(&data)
        .into_iter()
        .map(|f| {
            (
                f.display().to_string(),
                std::fs::read(&f).unwrap_or_default(),
            )
        })
        .collect();
    haystacks.push((
        "the server log".into(),
        std::fs::read(log_path(&data)).unwrap(),
    ));
    haystacks.push(("the keys commands' logs".into(), cli_logs.into_bytes()));
    for key in [&owner_key, &intruder_key] {
        let secret = key.rsplit('_').next().unwrap();
        for (name, bytes) in &haystacks {
            for needle in [key.as_str(), secret] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "a key is in plain text in {name}"
                );
            }
            searched += 1;
        }
    }
    assert!(
        haystacks.iter().any(|(n, _)| n.ends_with(".seg")) && haystacks.len() > 4,
        "nothing much was searched: {:?}",
        haystacks.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    record_figures(
        "security",
        &format!(
            "security: {walked} operations walked as another organization (404/empty/403), revoked key refused on each; \
             2 keys searched for in {searched} files and logs"
        ),
    );
}

/// The secret's hash is compared with `subtle`'s constant-time equality and
/// nowhere with `==`: a timing test would be flaky, so this guard reads the code.
#[test]
fn key_secrets_are_only_compared_in_constant_time() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut uses = 0;
    for file in walk(&src) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if !line.contains("secret_sha256") && !line.contains("presented") {
                continue;
            }
            let compares = [" == ", " != ", ".eq(", ".ne(", "starts_with", "cmp("]
                .iter()
                .any(|op| line.contains(op));
            assert!(
                !compares,
                "{}:{}: a key secret compared without constant time: {line}",
                file.strip_prefix(env!("CARGO_MANIFEST_DIR"))
                    .unwrap()
                    .display(),
                n + 1
            );
            if line.contains("ct_eq(") {
                uses += 1;
            }
        }
    }
    assert_eq!(uses, 1, "authenticate compares the secret with ct_eq once");
}
