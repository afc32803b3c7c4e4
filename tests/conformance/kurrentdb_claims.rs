//! Claims on one KurrentDB ledger shared by several nodes (see
//! `src/store/kurrentdb/claims.rs`): expected versions and claims hold across
//! nodes; a writer that crashes between taking a claim and appending loses
//! nothing and duplicates nothing; an expired claim is taken over once, and
//! only after its holder's append is complete; and an append's claims for
//! good stay held when one of its expiring claims passes on.
//!
//! Each runs on the test double unless `HOOKLEDGER_TEST_KURRENTDB_URL` names
//! a real server; the crash checks need the double (they hold an append
//! midway) and are skipped, saying so, on a real server.

use std::time::Duration;

use hookledger::store::kurrentdb::KurrentDbStore;
use hookledger::store::{Claim, Error, EventStore, ExpectedVersion, NewEvent};
use kurrentdb_double::Hold;

use crate::kurrentdb_checks::{node, nodes, options};
use crate::suite::{claimed, claimed_for, event, everything, id_of, shared};
use crate::support_kurrentdb::{Kurrent, fresh_prefix};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expected_versions_and_claims_hold_across_nodes() {
    let kurrent = Kurrent::start().await;
    let nodes = nodes(&kurrent.url(), &fresh_prefix(), 2).await;
    shared::expected_versions_and_claims_hold_across(
        nodes[0].store.clone(),
        nodes[1].store.clone(),
    )
    .await;
}

/// Node A, in a runtime of its own, appends `event` to `stream` taking
/// `claim`; once `hold` holds that append at the server, A is killed: its
/// runtime is shut down, and every task and connection of A with it, as a
/// crash would.
async fn crash_midway(
    url: &str,
    prefix: &str,
    hold: &Hold,
    stream: &'static str,
    expected: ExpectedVersion,
    event: NewEvent,
    claim: Claim,
) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (url, options) = (url.to_owned(), options(prefix, dir.path()));
    let in_flight = runtime.spawn(async move {
        let a = KurrentDbStore::open(&url, options).await.unwrap();
        a.append_claimed(stream, expected, vec![event], vec![claim])
            .await
    });
    assert!(
        hold.held(1, Duration::from_secs(30)).await,
        "A's append never reached the server"
    );
    runtime.shutdown_background();
    drop(in_flight);
}

/// How a crashed writer's held append ends: never written, or written after
/// the writer died.
#[derive(Debug, Clone, Copy)]
enum Fate {
    Lost,
    Landed,
}

/// A fresh ledger on the double where writer A crashed while its append of
/// `event` to `event-evt_a`, taking `claim`, was held at the server, and that
/// append then met `fate`: the server (to outlive the check) and the ledger's
/// prefix. `None`, having said so, on a real server.
async fn crashed_while_held(
    check: &str,
    fate: Fate,
    event: NewEvent,
    claim: Claim,
) -> Option<(Kurrent, String)> {
    let kurrent = Kurrent::start().await;
    let double = kurrent.double(check)?;
    let prefix = fresh_prefix();
    // Appends to the ledger's streams are held; the claim streams are not.
    let hold = double.hold_appends(&format!("{prefix}:"));
    let stream = "event-evt_a";
    let (url, expected) = (kurrent.url(), ExpectedVersion::NoStream);
    crash_midway(&url, &prefix, &hold, stream, expected, event, claim).await;
    match fate {
        Fate::Lost => hold.discard(),
        Fate::Landed => hold.release(),
    }
    drop(hold);
    Some((kurrent, prefix))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_between_claim_and_append_loses_nothing_and_duplicates_nothing() {
    for fate in [Fate::Lost, Fate::Landed] {
        let event = claimed("from A", "sourceKey-1");
        let check = "a_crash_between_claim_and_append";
        let Some((kurrent, prefix)) =
            crashed_while_held(check, fate, event, "sourceKey-1".into()).await
        else {
            return;
        };
        let url = kurrent.url();

        // Node B wants the same claim for another event.
        let b = node(&url, &prefix).await;
        let answer = b
            .store
            .append_claimed(
                "event-evt_b",
                ExpectedVersion::NoStream,
                vec![claimed("from B", "sourceKey-1")],
                vec!["sourceKey-1".into()],
            )
            .await;
        match answer {
            Err(Error::Duplicate { claim, position }) => {
                assert_eq!((claim.as_str(), position), ("sourceKey-1", 1), "{fate:?}")
            }
            other => panic!("{fate:?}: expected the claim taken by A's append, got {other:?}"),
        }
        b.store.sync_head().await.unwrap();
        let all = everything(b.store.as_ref()).await;
        let ids: Vec<_> = all.iter().map(|e| (e.stream.as_str(), id_of(e))).collect();
        assert_eq!(ids, [("event-evt_a", "from A".to_owned())], "{fate:?}");
        // Asked again, the answer is the same and nothing more is written.
        let again = b
            .store
            .append_claimed(
                "event-evt_c",
                ExpectedVersion::Any,
                vec![claimed("again", "sourceKey-1")],
                vec!["sourceKey-1".into()],
            )
            .await;
        assert!(
            matches!(again, Err(Error::Duplicate { position: 1, .. })),
            "{again:?}"
        );
        assert_eq!(b.store.sync_head().await.unwrap(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashed_writers_claim_whose_stream_moved_on_is_released_and_taken_once() {
    let kurrent = Kurrent::start().await;
    let Some(double) = kurrent.double("a_crashed_writers_claim_whose_stream_moved_on") else {
        return;
    };
    let prefix = fresh_prefix();
    let url = kurrent.url();
    let b = node(&url, &prefix).await;
    b.store
        .append(
            "delivery-d",
            ExpectedVersion::NoStream,
            vec![event("first")],
        )
        .await
        .unwrap();
    let hold = double.hold_appends(&format!("{prefix}:delivery-d"));
    crash_midway(
        &url,
        &prefix,
        &hold,
        "delivery-d",
        ExpectedVersion::Any,
        claimed("A's attempt", "idempotency-1"),
        "idempotency-1".into(),
    )
    .await;
    hold.discard();
    // Another attempt lands where A's would have: A's plan can never complete.
    b.store
        .append("delivery-d", ExpectedVersion::Any, vec![event("second")])
        .await
        .unwrap();
    // The same request, retried on B: A's dead claim is released and B takes it.
    let retried = b
        .store
        .append_claimed(
            "delivery-d",
            ExpectedVersion::Any,
            vec![claimed("B's attempt", "idempotency-1")],
            vec!["idempotency-1".into()],
        )
        .await
        .expect("the claim of a plan that cannot complete is free again");
    assert_eq!(retried.positions, 3..=3);
    let ids: Vec<_> = b
        .store
        .read_stream("delivery-d", 0, 10)
        .await
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(ids, ["first", "second", "B's attempt"]);
    // Taken for good now.
    let again = b
        .store
        .append_claimed(
            "delivery-d",
            ExpectedVersion::Any,
            vec![claimed("again", "idempotency-1")],
            vec!["idempotency-1".into()],
        )
        .await;
    assert!(
        matches!(again, Err(Error::Duplicate { position: 3, .. })),
        "{again:?}"
    );
}

/// How long the expiring claims below hold, in microseconds: long enough for
/// racers planned at one moment to find the winner's claim held, short enough
/// to wait out.
const TTL: i64 = 1_000_000;

fn expiring(name: &str) -> Claim {
    Claim {
        name: name.to_owned(),
        ttl: Some(TTL),
    }
}

async fn wait_out_the_ttl() {
    tokio::time::sleep(Duration::from_micros(TTL as u64 + 100_000)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_claim_is_taken_over_once_by_racing_nodes() {
    let kurrent = Kurrent::start().await;
    let nodes = nodes(&kurrent.url(), &fresh_prefix(), 2).await;
    let first = nodes[0]
        .store
        .append_claimed(
            "event-first",
            ExpectedVersion::NoStream,
            vec![claimed_for("first", "idempotency-1", TTL)],
            vec![expiring("idempotency-1")],
        )
        .await
        .unwrap();
    assert_eq!(first.positions, 1..=1);
    wait_out_the_ttl().await;
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let store = nodes[i % 2].store.clone();
            tokio::spawn(async move {
                store
                    .append_claimed(
                        &format!("event-{i}"),
                        ExpectedVersion::NoStream,
                        vec![claimed_for(&format!("racer {i}"), "idempotency-1", TTL)],
                        vec![expiring("idempotency-1")],
                    )
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut refused = Vec::new();
    for racer in racers {
        match racer.await.unwrap() {
            Ok(appended) => winners.push(appended),
            Err(Error::Duplicate { claim, position }) => refused.push((claim, position)),
            Err(e) => panic!("a racer failed: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(winners[0].positions, 2..=2);
    assert_eq!(refused, vec![("idempotency-1".to_owned(), 2); 7]);
    nodes[1].store.sync_head().await.unwrap();
    let ids: Vec<_> = everything(nodes[1].store.as_ref())
        .await
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0], "first");
    assert!(ids[1].starts_with("racer "), "{ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashed_writers_expired_claim_is_taken_over_only_once_its_append_is_complete() {
    for fate in [Fate::Lost, Fate::Landed] {
        let event = claimed_for("from A", "idempotency-1", TTL);
        let check = "a_crashed_writers_expired_claim";
        let Some((kurrent, prefix)) =
            crashed_while_held(check, fate, event, expiring("idempotency-1")).await
        else {
            return;
        };
        let url = kurrent.url();
        wait_out_the_ttl().await;
        // B wants the claim after it expired: A's append is completed first,
        // then B takes the claim over.
        let b = node(&url, &prefix).await;
        let taken = b
            .store
            .append_claimed(
                "event-evt_b",
                ExpectedVersion::NoStream,
                vec![claimed_for("from B", "idempotency-1", TTL)],
                vec![expiring("idempotency-1")],
            )
            .await
            .unwrap_or_else(|e| panic!("{fate:?}: the expired claim was not taken over: {e}"));
        assert_eq!(taken.positions, 2..=2, "{fate:?}");
        b.store.sync_head().await.unwrap();
        let ids: Vec<_> = everything(b.store.as_ref())
            .await
            .iter()
            .map(|e| (e.stream.clone(), id_of(e)))
            .collect();
        assert_eq!(
            ids,
            [
                ("event-evt_a".to_owned(), "from A".to_owned()),
                ("event-evt_b".to_owned(), "from B".to_owned())
            ],
            "{fate:?}"
        );
        // Held anew by B's append.
        let again = b
            .store
            .append_claimed(
                "event-evt_c",
                ExpectedVersion::NoStream,
                vec![claimed_for("again", "idempotency-1", TTL)],
                vec![expiring("idempotency-1")],
            )
            .await;
        assert!(
            matches!(again, Err(Error::Duplicate { position: 2, .. })),
            "{fate:?}: {again:?}"
        );
    }
}

/// An append that takes a claim for a time and one for good (an event with
/// an `Idempotency-Key` and a `sourceKey`): once the first expires and passes
/// on, the second stays with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_for_good_stays_held_when_its_appends_expired_claim_passes_on() {
    let kurrent = Kurrent::start().await;
    let nodes = nodes(&kurrent.url(), &fresh_prefix(), 2).await;
    let (a, b) = (&nodes[0].store, &nodes[1].store);
    a.append_claimed(
        "event-a",
        ExpectedVersion::NoStream,
        vec![claimed("a", "sourceKey-1")],
        vec![expiring("idempotency-1"), "sourceKey-1".into()],
    )
    .await
    .unwrap();
    wait_out_the_ttl().await;
    let taken = b
        .append_claimed(
            "event-b",
            ExpectedVersion::NoStream,
            vec![claimed_for("b", "idempotency-1", TTL)],
            vec![expiring("idempotency-1")],
        )
        .await
        .expect("the expired claim is taken over");
    assert_eq!(taken.positions, 2..=2);
    for node in [a, b] {
        let answer = node
            .append_claimed(
                "event-c",
                ExpectedVersion::NoStream,
                vec![claimed("c", "sourceKey-1")],
                vec!["sourceKey-1".into()],
            )
            .await;
        match answer {
            Err(Error::Duplicate { claim, position }) => {
                assert_eq!((claim.as_str(), position), ("sourceKey-1", 1))
            }
            other => panic!("expected the claim for good still held by a, got {other:?}"),
        }
    }
    b.sync_head().await.unwrap();
    let ids: Vec<_> = everything(b.as_ref()).await.iter().map(id_of).collect();
    assert_eq!(ids, ["a", "b"]);
}
