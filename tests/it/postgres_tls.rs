//! PostgreSQL over TLS, as managed databases require: a throwaway cluster
//! serves a certificate for `localhost` signed by a certificate authority
//! made here, and the store and the binary connect with libpq's `sslmode`
//! settings. `verify-full` accepts it only by that authority and for that
//! name, `verify-ca` for any name, `require` without checking, and every
//! connection the store makes is encrypted.

use std::path::Path;
use std::sync::Arc;

use hookledger::store::postgres::PostgresStore;
use hookledger::store::{EventStore, ExpectedVersion, NewEvent};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use crate::binary::{hookledger, stderr};
use crate::support_postgres::{self, Server};

/// A certificate authority, as a PEM file in `dir`, and its issuer.
fn authority(dir: &Path, name: &str) -> (CertifiedIssuer<'static, KeyPair>, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, format!("hookledger test CA {name}"));
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let file = dir.join(format!("{name}.pem"));
    std::fs::write(&file, issuer.pem()).unwrap();
    (issuer, file.display().to_string())
}

fn event(id: &str) -> NewEvent {
    NewEvent {
        event_type: "AttemptRecorded".into(),
        schema_version: 1,
        data: format!(r#"{{"id":"{id}"}}"#).into_bytes(),
        metadata: b"{}".to_vec(),
        content: Vec::new(),
    }
}

/// Whether every connection to `database` but the asker's is encrypted, and how many there are.
async fn encrypted_connections(plain: &str, database: &str) -> (bool, i64) {
    let (client, connection) = tokio_postgres::connect(plain, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT coalesce(bool_and(s.ssl), false), count(*) FROM pg_stat_ssl s \
             JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = $1 AND a.pid <> pg_backend_pid()",
            &[&database],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_is_honoured_against_a_server_with_its_own_certificate_authority() {
    // Skips (or fails under HOOKLEDGER_REQUIRE_POSTGRES) where the binaries are missing.
    if support_postgres::database("postgres_tls::sslmode")
        .await
        .is_none()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ca, ca_file) = authority(dir.path(), "ca");
    let (_, other_ca_file) = authority(dir.path(), "other");
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let server = Server::with_tls(&server_cert.pem(), &server_key.serialize_pem())
        .expect("a cluster with TLS");
    server.create("tls").await.unwrap();
    let plain = format!("{} dbname=tls", server.base());
    let on = |host: &str, settings: &str| {
        let base = server
            .base()
            .replace("host=127.0.0.1", &format!("host={host}"));
        format!("{base} dbname=tls {settings}")
    };

    // verify-full, by the right authority and name: everything is encrypted.
    let url = on(
        "localhost",
        &format!("sslmode=verify-full sslrootcert={ca_file}"),
    );
    let store = Arc::new(PostgresStore::open(&url, Default::default()).await.unwrap());
    store
        .append("s-1", ExpectedVersion::NoStream, vec![event("a")])
        .await
        .unwrap();
    assert_eq!(store.read_stream("s-1", 0, 10).await.unwrap().len(), 1);
    // The listener connects on a task of its own: give it a moment to be there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (all_encrypted, connections) = loop {
        let (all_encrypted, connections) = encrypted_connections(&plain, "tls").await;
        if connections >= 2 || std::time::Instant::now() > deadline {
            break (all_encrypted, connections);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(connections >= 2, "the pool and the listener: {connections}");
    assert!(all_encrypted, "a connection of the store is not encrypted");
    drop(store);

    // By another authority: refused, whatever the name.
    let url = on(
        "localhost",
        &format!("sslmode=verify-full sslrootcert={other_ca_file}"),
    );
    let refused = PostgresStore::open(&url, Default::default())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("certificate"), "{refused}");
    let url = on(
        "localhost",
        &format!("sslmode=verify-ca sslrootcert={other_ca_file}"),
    );
    assert!(PostgresStore::open(&url, Default::default()).await.is_err());

    // The right authority, another name: verify-full refuses, verify-ca takes it.
    let url = on(
        "127.0.0.1",
        &format!("sslmode=verify-full sslrootcert={ca_file}"),
    );
    let refused = PostgresStore::open(&url, Default::default())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("certificate"), "{refused}");
    let url = on(
        "127.0.0.1",
        &format!("sslmode=verify-ca sslrootcert={ca_file}"),
    );
    PostgresStore::open(&url, Default::default()).await.unwrap();

    // require encrypts without checking.
    let url = on("127.0.0.1", "sslmode=require");
    PostgresStore::open(&url, Default::default()).await.unwrap();

    // The binary, with a URL as a managed database gives it, on a database of its own.
    server.create("tls_cli").await.unwrap();
    let port = server
        .base()
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("port="))
        .unwrap()
        .to_owned();
    let url = format!(
        "postgres://hookledger@localhost:{port}/tls_cli?sslmode=verify-full&sslrootcert={ca_file}"
    );
    let data = dir.path().join("data");
    let output = hookledger(
        &data,
        &[
            "--backend",
            "postgres",
            "--postgres-url",
            &url,
            "keys",
            "create",
            "--org",
            "org_tls",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let url = format!(
        "postgres://hookledger@localhost:{port}/tls_cli?sslmode=verify-full&sslrootcert={other_ca_file}"
    );
    let output = hookledger(
        &data,
        &[
            "--backend",
            "postgres",
            "--postgres-url",
            &url,
            "keys",
            "create",
            "--org",
            "org_tls",
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("certificate"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_refuses_a_server_without_tls() {
    let Some(url) = support_postgres::database("postgres_tls::require_without_tls").await else {
        return;
    };
    // The shared test cluster has no TLS.
    let refused = PostgresStore::open(&format!("{url} sslmode=require"), Default::default())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("TLS"), "{refused}");
    // prefer (the default) falls back to a plain connection, as libpq does.
    PostgresStore::open(&format!("{url} sslmode=prefer"), Default::default())
        .await
        .unwrap();
}
