//! What an operator sees of the binary on the machine: a data directory no
//! other local user can read, whatever the umask; `keys create` that asks a
//! running server straight away instead of waiting on the log it holds; and a
//! PostgreSQL that cannot be reached, reported as such.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::binary::{Client, Server, create_key, hookledger, stderr, walk};

/// Runs `hookledger ARGS` on `data` under umask 000.
fn under_open_umask(data: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("sh");
    command
        .args(["-c", "umask 000 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_hookledger"))
        .args(args)
        .env("HOOKLEDGER_DATA", data)
        .env("HOOKLEDGER_LOG_FORMAT", "json");
    command
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_private_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let created = under_open_umask(&data, &["keys", "create", "--org", "org_perm"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", stderr(&created));
    let key = String::from_utf8_lossy(&created.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut serve = under_open_umask(&data, &["serve", "--listen", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://{port}");
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..500 {
        if http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ready, "serve did not become ready");
    let created = http
        .post(format!("{base}/v1/outbound-webhook-events"))
        .bearer_auth(&key)
        .header("x-organization-id", "org_perm")
        .json(&serde_json::json!({"eventType": "x", "payload": {"secret": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let socket = data.join("admin.sock");
    assert!(std::fs::metadata(&socket).unwrap().file_type().is_socket());
    assert_eq!(mode(&socket), 0o600, "the admin socket");
    // SIGTERM writes the read model and the log's index out.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(serve.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(serve.wait().unwrap().success());

    let files = walk(&data);
    for wanted in ["log/index.redb", "model/readmodel.redb"] {
        assert!(
            files.iter().any(|f| f.to_string_lossy().contains(wanted)),
            "no {wanted} among {files:?}"
        );
    }
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "seg"))
    );
    assert_eq!(mode(&data), 0o700, "the data directory");
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
        let mut parent = file.parent().unwrap();
        while parent.starts_with(&data) {
            assert_eq!(mode(parent), 0o700, "{}", parent.display());
            parent = parent.parent().unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_made_before_is_narrowed_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    create_key(&data, "org_perm");
    assert_eq!(mode(&data), 0o700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_create_asks_a_running_server_without_waiting_on_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = create_key(&data, "org_keys");
    let server = Server::start(&data).await;
    // Any attempt to take the log's lock opens its LOCK file; watch for that.
    let watch = Inotify::init(InitFlags::IN_NONBLOCK).unwrap();
    watch
        .add_watch(&data.join("LOCK"), AddWatchFlags::IN_OPEN)
        .unwrap();
    let second = create_key(&data, "org_keys");
    let opened = match watch.read_events() {
        Ok(events) => events.len(),
        Err(nix::errno::Errno::EAGAIN) => 0,
        Err(e) => panic!("reading inotify events: {e}"),
    };
    assert_eq!(
        opened, 0,
        "keys create tried the lock of the log a running server holds"
    );
    let client = Client::new(&server, "org_keys", &second);
    client.get("/v1/outbound-webhook-endpoints").await;
    assert_ne!(first, second);
}

#[test]
fn an_unreachable_postgresql_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1.
    let url = "postgres://hookledger@127.0.0.1:1/hookledger";
    for args in [
        &["keys", "create", "--org", "org_pg"][..],
        &["keys", "revoke", "key_01ABC"][..],
    ] {
        let mut all = vec!["--backend", "postgres", "--postgres-url", url];
        all.extend_from_slice(args);
        let output = hookledger(&dir.path().join("data"), &all);
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        let message = stderr(&output);
        assert!(
            message.contains("PostgreSQL") && message.contains("connect"),
            "{message}"
        );
        assert!(!message.contains("held by another process"), "{message}");
        assert!(
            !message.contains(url),
            "the URL is never printed: {message}"
        );
    }
}

#[test]
fn a_negative_duration_is_refused_naming_the_option() {
    let data = tempfile::tempdir().unwrap();
    for (option, value) in [("--retention", "-5m"), ("--idempotency-ttl", "-7d")] {
        let output = hookledger(data.path(), &["serve", option, value]);
        assert_eq!(output.status.code(), Some(2), "{option} {value}");
        let said = stderr(&output);
        assert!(
            said.contains(option) && said.contains("is negative"),
            "{option} {value}: {said}"
        );
    }
    // Nothing was served or made on the way to the refusal.
    assert!(!data.path().join("log").exists());
}
