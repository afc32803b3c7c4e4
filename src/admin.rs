//! The admin socket: how `hookledger keys` and `hookledger erase` reach a
//! running server.
//!
//! Only one process can hold the embedded log for writing, so while `serve` runs,
//! the key commands send their request to it over a Unix socket in the data
//! directory instead. The socket is created with mode 0600: whoever may read the
//! data directory may already do anything to the ledger, and nobody else may
//! connect. One JSON request line, one JSON response line.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use projections::Command;
use projections::event::ErasureReason;

use crate::ledger::{Context, Ledger};

/// The socket of a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.sock")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Request {
    #[serde(rename = "keys.create")]
    CreateKey { org: String },
    #[serde(rename = "keys.revoke")]
    RevokeKey {
        #[serde(rename = "keyId")]
        key_id: String,
    },
    /// Erases every body of an organization recorded so far.
    #[serde(rename = "erase.organization")]
    EraseOrganization { org: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Response {
    KeyCreated {
        key_id: String,
        organization_id: String,
        token: String,
    },
    KeyRevoked {
        key_id: String,
    },
    Erased {
        organization_id: String,
        /// The erasure's position in the log.
        position: u64,
    },
    Failed {
        error: String,
    },
}

/// Listens on the data directory's socket until the task is dropped. The caller
/// must hold the store's write lock, which makes any socket file there stale.
pub fn listen(
    data_dir: &Path,
    ledger: Arc<Ledger>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let path = socket_path(data_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(answer(stream, ledger.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }))
}

async fn answer(stream: UnixStream, ledger: Arc<Ledger>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    // One request of bounded size per connection.
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, 64 * 1024));
    if reader.read_line(&mut line).await.is_err() {
        return;
    }
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(request) => handle(&ledger, request).await,
        Err(e) => Response::Failed {
            error: format!("bad request: {e}"),
        },
    };
    let mut bytes = serde_json::to_vec(&response).expect("responses serialise");
    bytes.push(b'\n');
    let _ = write.write_all(&bytes).await;
}

/// Carries out one request on a ledger this process holds.
pub async fn handle(ledger: &Ledger, request: Request) -> Response {
    match request {
        Request::CreateKey { org } => match ledger.issue_key(&org).await {
            Ok(key) => {
                tracing::info!(key_id = %key.key_id, organization_id = %key.organization_id, "issued an API key");
                Response::KeyCreated {
                    key_id: key.key_id,
                    organization_id: key.organization_id,
                    token: key.token,
                }
            }
            Err(e) => Response::Failed {
                error: e.to_string(),
            },
        },
        Request::RevokeKey { key_id } => match ledger.revoke_key(&key_id).await {
            Ok(()) => {
                tracing::info!(%key_id, "revoked an API key");
                Response::KeyRevoked { key_id }
            }
            Err(e) => Response::Failed {
                error: e.to_string(),
            },
        },
        Request::EraseOrganization { org } => {
            let command = Command::EraseContent {
                organization_id: org.clone(),
                event_id: None,
                recorded_before: None,
                reason: ErasureReason::Offboarding,
            };
            let ctx = Context {
                organization_id: org.clone(),
                ..Context::default()
            };
            match ledger.execute(command, &ctx, None).await {
                Ok(written) => {
                    tracing::info!(organization_id = %org, position = written.position, "erased an organization's bodies");
                    Response::Erased {
                        organization_id: org,
                        position: written.position,
                    }
                }
                Err(e) => Response::Failed {
                    error: e.to_string(),
                },
            }
        }
    }
}

/// Sends one request to the server running on `data_dir`.
pub async fn call(data_dir: &Path, request: &Request) -> std::io::Result<Response> {
    let stream = UnixStream::connect(socket_path(data_dir)).await?;
    let (read, mut write) = stream.into_split();
    let mut bytes = serde_json::to_vec(request).expect("requests serialise");
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    serde_json::from_str(&line).map_err(std::io::Error::other)
}
