//! The Merkle trees the projector keeps, read back from the model it
//! stores: roots, leaves and proofs equal the trees built from the log's
//! event hashes, from stored tiles, the edge, or both, across a restart.

use super::tests::{endpoint_history, new_event, on_disk};
use super::*;
use crate::merkle::{self, Frontier, leaf_hash, verify_consistency, verify_inclusion};
use crate::model::Tree;
use crate::store::ExpectedVersion;
use crate::store::memory::MemoryStore;
use projections::Event;
use projections::event::EndpointCreated;

/// The root a tree of these event hashes has, built leaf by leaf.
fn root_of<'a>(hashes: impl IntoIterator<Item = &'a [u8; 32]>) -> [u8; 32] {
    let mut frontier = Frontier::default();
    for h in hashes {
        frontier.push_leaf(leaf_hash(h));
    }
    frontier.root()
}

#[tokio::test]
async fn the_merkle_trees_cover_each_organizations_events_and_the_ledger_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    endpoint_history(store.as_ref(), "ep_1", 2).await;
    let other = Event::EndpointCreated(EndpointCreated {
        endpoint_id: "ep_9".into(),
        organization_id: "org_2".into(),
        name: "theirs".into(),
        url: "https://example.com/theirs".into(),
        event_types: vec![],
        enabled: true,
    });
    store
        .append(
            "endpoint-ep_9",
            ExpectedVersion::NoStream,
            vec![new_event(other)],
        )
        .await
        .unwrap();
    let first = caught_up(&store, dir.path()).await;
    first.close().unwrap();
    drop(first);
    // More of org_1 after a restart: its frontier was kept on disk.
    endpoint_history(store.as_ref(), "ep_2", 3).await;
    let second = caught_up(&store, dir.path()).await;

    let log = store.read_all(1, 100).await.unwrap();
    let view = second.view().unwrap();
    let ledger = view.tree(&Tree::Ledger).unwrap();
    assert_eq!(ledger.size, 8);
    assert_eq!(ledger.root(), root_of(log.iter().map(|e| &e.hash)));
    assert_eq!(view.tree_root(&Tree::Ledger, 8).unwrap(), ledger.root());
    assert_eq!(
        view.tree_root(&Tree::Ledger, 3).unwrap(),
        root_of(log[..3].iter().map(|e| &e.hash))
    );

    let ours: Vec<&[u8; 32]> = log
        .iter()
        .filter(|e| e.stream != "endpoint-ep_9")
        .map(|e| &e.hash)
        .collect();
    let org = view.tree(&Tree::Org("org_1")).unwrap();
    assert_eq!(org.size, 7);
    assert_eq!(org.root(), root_of(ours.iter().copied()));
    for (i, hash) in ours.iter().enumerate() {
        let path = view
            .inclusion_proof(&Tree::Org("org_1"), i as u64, 7)
            .unwrap();
        let leaf = leaf_hash(hash);
        assert!(verify_inclusion(&leaf, i as u64, 7, &path, &org.root()));
    }
    let proof = view.consistency_proof(&Tree::Org("org_1"), 3, 7).unwrap();
    let old = root_of(ours[..3].iter().copied());
    assert!(verify_consistency(3, 7, &old, &org.root(), &proof));
    assert_eq!(view.tree(&Tree::Org("org_2")).unwrap().size, 1);
}

/// Checks the org_1 tree of `view` against the event hashes `hashes` at
/// each of `sizes`: its root, every leaf and audit path, and consistency
/// from every smaller size of `sizes`.
fn check_org_tree(view: &crate::model::View, hashes: &[[u8; 32]], sizes: &[u64]) {
    let tree = Tree::Org("org_1");
    assert_eq!(view.tree(&tree).unwrap().size, hashes.len() as u64);
    assert_eq!(view.tree(&tree).unwrap().root(), root_of(hashes));
    for &size in sizes {
        let root = root_of(&hashes[..size as usize]);
        assert_eq!(view.tree_root(&tree, size).unwrap(), root, "root at {size}");
        for m in 0..size {
            let (leaf, path) = view.leaf_and_path(&tree, m, size).unwrap();
            assert_eq!(leaf, leaf_hash(&hashes[m as usize]), "leaf {m}");
            assert!(
                verify_inclusion(&leaf, m, size, &path, &root),
                "path {m} of {size}"
            );
        }
        for &old in sizes.iter().filter(|old| **old < size) {
            let proof = view.consistency_proof(&tree, old, size).unwrap();
            let old_root = root_of(&hashes[..old as usize]);
            assert!(
                verify_consistency(old, size, &old_root, &root, &proof),
                "consistency {old} -> {size}"
            );
        }
    }
}

/// A projector on the model in `dir`, caught up with the log.
async fn caught_up(store: &Arc<dyn EventStore>, dir: &std::path::Path) -> Arc<Projector> {
    let (projector, _) = Projector::open(store.clone(), on_disk(dir)).await.unwrap();
    projector.catch_up().await.unwrap();
    projector
}

/// Every event hash in the log, in position order.
async fn event_hashes(store: &dyn EventStore) -> Vec<[u8; 32]> {
    let log = store.read_all(1, 1000).await.unwrap();
    log.iter().map(|e| e.hash).collect()
}

#[tokio::test]
async fn proofs_read_leaves_and_nodes_from_stored_tiles_and_the_edge_across_a_restart() {
    let width = merkle::tiles::WIDTH as u64;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    // 300 events: tile level 0's first 18 tiles complete (the 18th at
    // 288), tile level 1's first too (at 256), 12 leaves on the edge.
    endpoint_history(store.as_ref(), "ep_1", 299).await;
    let first = caught_up(&store, dir.path()).await;
    first.close().unwrap();
    drop(first);

    // Opened again with nothing new: every tile and the edge come from disk.
    let second = caught_up(&store, dir.path()).await;
    let hashes = event_hashes(store.as_ref()).await;
    assert_eq!(hashes.len(), 300);
    let sizes = [1, width - 1, width, width + 1, 255, 256, 257, 288, 289, 300];
    check_org_tree(&second.view().unwrap(), &hashes, &sizes);

    // 40 more: tiles completed after the restart beside those stored before.
    endpoint_history(store.as_ref(), "ep_2", 39).await;
    second.catch_up().await.unwrap();
    let hashes = event_hashes(store.as_ref()).await;
    check_org_tree(
        &second.view().unwrap(),
        &hashes,
        &[1, 17, 256, 300, 320, 337, 340],
    );
}
