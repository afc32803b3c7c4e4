//! What an auditor checks the ledger with, without trusting the server: the
//! caller organization's signed tree head (`/v1/ledger/tree-head`), the
//! public keys that sign heads (`/v1/ledger/public-key`), and RFC 9162
//! inclusion and consistency proofs over the organization's Merkle tree
//! (`/v1/ledger/proofs/...`). Leaf `i` of the tree is the event with
//! sequence number `i + 1`.
//!
//! Each proof reads O(log n) rows of the tree (its edge, and a tile or two
//! a tile level); sizes are the caller's
//! own event counts, never the ledger's, so nothing here tells a tenant about
//! another one.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use projections::Timestamp;
use serde::Serialize;

use super::AppState;
use super::error::{ApiError, FieldError};
use super::extract::{Caller, Params};
use super::input::Errors;
use crate::model::Tree;
use crate::signing;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/ledger/tree-head", get(tree_head))
        .route("/v1/ledger/public-key", get(public_keys))
        .route("/v1/ledger/proofs/inclusion", get(inclusion))
        .route("/v1/ledger/proofs/consistency", get(consistency))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TreeHead {
    organization_id: String,
    tree_size: u64,
    root_hash: String,
    timestamp: Timestamp,
    key_id: String,
    signature: String,
}

async fn tree_head(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<TreeHead>, ApiError> {
    let org = caller.organization_id;
    let frontier = state.read(|v| v.tree(&Tree::Org(&org)))?;
    let root = frontier.root();
    let timestamp = Timestamp::from_datetime(chrono::Utc::now());
    let message = signing::head_bytes(&org, frontier.size, timestamp.micros(), &root);
    let (key_id, signature) = state.signing_keys().sign(&message);
    Ok(Json(TreeHead {
        tree_size: frontier.size,
        root_hash: hex::encode(root),
        timestamp,
        key_id: key_id.to_owned(),
        signature: hex::encode(signature),
        organization_id: org,
    }))
}

async fn public_keys(State(state): State<AppState>, _: Caller) -> Json<serde_json::Value> {
    Json(state.signing_keys().published_json())
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct InclusionProof {
    sequence: u64,
    tree_size: u64,
    leaf_hash: String,
    audit_path: Vec<String>,
}

async fn inclusion(
    State(state): State<AppState>,
    caller: Caller,
    params: Params,
) -> Result<Json<InclusionProof>, ApiError> {
    let mut errors = Errors::default();
    let sequence = errors.take(count(&params, "sequence"));
    let size = errors.take(count(&params, "treeSize"));
    errors.check()?;
    let (Some(sequence), Some(size)) = (sequence, size) else {
        return Err(ApiError::Internal("checked parameters missing".into()));
    };
    if sequence > size {
        return Err(ApiError::field(
            "sequence",
            format!("must be at most treeSize ({size})"),
        ));
    }
    let tree = Tree::Org(&caller.organization_id);
    let (leaf, path) = state.read(|v| {
        let current = v.tree(&tree)?.size;
        if size > current {
            return Ok(Err(beyond("treeSize", current)));
        }
        Ok(Ok(v.leaf_and_path(&tree, sequence - 1, size)?))
    })??;
    Ok(Json(InclusionProof {
        sequence,
        tree_size: size,
        leaf_hash: hex::encode(leaf),
        audit_path: path.iter().map(hex::encode).collect(),
    }))
}

#[derive(Debug, Serialize)]
struct ConsistencyProof {
    from: u64,
    to: u64,
    proof: Vec<String>,
}

async fn consistency(
    State(state): State<AppState>,
    caller: Caller,
    params: Params,
) -> Result<Json<ConsistencyProof>, ApiError> {
    let mut errors = Errors::default();
    let from = errors.take(count(&params, "from"));
    let to = errors.take(count(&params, "to"));
    errors.check()?;
    let (Some(from), Some(to)) = (from, to) else {
        return Err(ApiError::Internal("checked parameters missing".into()));
    };
    if from > to {
        return Err(ApiError::field(
            "from",
            format!("must be at most to ({to})"),
        ));
    }
    let tree = Tree::Org(&caller.organization_id);
    let proof = state.read(|v| {
        let current = v.tree(&tree)?.size;
        if to > current {
            return Ok(Err(beyond("to", current)));
        }
        Ok(Ok(v.consistency_proof(&tree, from, to)?))
    })??;
    Ok(Json(ConsistencyProof {
        from,
        to,
        proof: proof.iter().map(hex::encode).collect(),
    }))
}

/// A required tree size or sequence number: an integer from 1.
fn count(params: &Params, name: &str) -> Result<u64, FieldError> {
    let text = params
        .get(name)?
        .ok_or_else(|| FieldError::new(name, "is required"))?;
    text.parse::<u64>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| FieldError::new(name, "must be an integer from 1"))
}

/// A size past the organization's tree.
fn beyond(name: &str, current: u64) -> ApiError {
    ApiError::field(
        name,
        format!("must be at most the tree's current size ({current})"),
    )
}
