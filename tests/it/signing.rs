//! The tree-head signing key on the real binary: made at first start in the
//! data directory with mode 0600, rotated by `hookledger signing-key rotate`
//! with the old public key still published (so an old head still verifies),
//! and shared between servers through `--signing-key` or its variable.

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

use crate::binary::{Client, Server, create_key, hookledger, succeeds};
use crate::proofs::signed;

const ORG: &str = "org_signing";

fn current(keys: &Value) -> String {
    let current: Vec<&Value> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["current"] == true)
        .collect();
    assert_eq!(current.len(), 1, "one key signs: {keys}");
    current[0]["keyId"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_head_signed_before_a_rotation_still_verifies_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data).await;
    let file = data.join("signing-keys");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key file is the owner's alone");
    let key = create_key(&data, ORG);
    let client = Client::new(&server, ORG, &key);
    client.one_delivery().await;
    let old_head = client.get("/v1/ledger/tree-head").await;
    let old_keys = client.get("/v1/ledger/public-key").await;
    assert!(signed(&old_head, &old_keys));
    server.stop();

    let printed: Value =
        serde_json::from_str(&succeeds(hookledger(&data, &["signing-key", "rotate"]))).unwrap();
    assert_eq!(printed["keys"].as_array().unwrap().len(), 2, "{printed}");
    let server = Server::start(&data).await;
    let client = Client::new(&server, ORG, &key);
    let keys = client.get("/v1/ledger/public-key").await;
    assert_eq!(keys, printed, "the server publishes what the file holds");
    assert_ne!(current(&keys), current(&old_keys), "a new key signs");
    assert!(signed(&old_head, &keys), "the old head still verifies");
    let head = client.get("/v1/ledger/tree-head").await;
    assert_eq!(head["keyId"], current(&keys).as_str());
    assert!(signed(&head, &keys));
    assert!(
        !signed(&head, &old_keys),
        "the old keys alone cannot verify it"
    );
    assert_eq!(head["rootHash"], old_head["rootHash"]);
    server.stop();
}

#[tokio::test]
async fn servers_given_one_key_file_sign_with_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared-signing-key");
    let shown = hookledger(
        &dir.path().join("unused"),
        &[
            "signing-key",
            "show",
            "--signing-key",
            shared.to_str().unwrap(),
        ],
    );
    assert_eq!(shown.status.code(), Some(2), "no file to show yet");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let first = Server::start_with(&a, &["--signing-key", shared.to_str().unwrap()]).await;
    let second = Server::spawn(
        &b,
        &[],
        &[("HOOKLEDGER_SIGNING_KEY", shared.to_str().unwrap())],
    )
    .wait_ready()
    .await;
    assert!(!a.join("signing-keys").exists() && !b.join("signing-keys").exists());
    let (key_a, key_b) = (create_key(&a, ORG), create_key(&b, ORG));
    let keys_a = Client::new(&first, ORG, &key_a)
        .get("/v1/ledger/public-key")
        .await;
    let keys_b = Client::new(&second, ORG, &key_b)
        .get("/v1/ledger/public-key")
        .await;
    assert_eq!(keys_a, keys_b);
    let head_b = Client::new(&second, ORG, &key_b)
        .get("/v1/ledger/tree-head")
        .await;
    assert!(signed(&head_b, &keys_a));
    first.stop();
    second.stop();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = hookledger(
        &a,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--signing-key",
            shared.to_str().unwrap(),
        ],
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("chmod 600"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
