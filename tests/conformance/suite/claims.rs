//! Checks of claims: a name an append takes, for good or for a time to live,
//! so that a request that must not run twice stays single even across
//! processes. A claim is taken only by an append that succeeds, atomically
//! with it; of racing appends with one claim exactly one wins; an expired
//! claim is free again; and a durable store keeps its claims.

use std::sync::Arc;

use hookledger::store::{
    Claim, ClaimsOf, Error, EventStore, ExpectedVersion, NewEvent, RecordedEvent,
};

use super::{assert_conflict, event, within};
use crate::{Backend, Durable};

/// An event whose metadata names the claim its append takes, so a store that
/// rebuilds claims from its records (see [`test_claims_of`]) can find it.
pub fn claimed(id: &str, claim: &str) -> NewEvent {
    NewEvent {
        metadata: format!(r#"{{"claim":"{claim}"}}"#).into_bytes(),
        ..event(id)
    }
}

/// [`claimed`] for a claim that holds `ttl` microseconds.
pub fn claimed_for(id: &str, claim: &str, ttl: i64) -> NewEvent {
    NewEvent {
        metadata: format!(r#"{{"claim":"{claim}","ttl":{ttl}}}"#).into_bytes(),
        ..event(id)
    }
}

/// How the suite's stores recognise the claims of the events [`claimed`] and
/// [`claimed_for`] make.
pub fn test_claims_of() -> ClaimsOf {
    ClaimsOf(Arc::new(|event: &RecordedEvent| {
        let metadata: serde_json::Value =
            serde_json::from_slice(&event.metadata).unwrap_or_default();
        metadata["claim"]
            .as_str()
            .map(|c| {
                vec![Claim {
                    name: c.to_owned(),
                    ttl: metadata["ttl"].as_i64(),
                }]
            })
            .unwrap_or_default()
    }))
}

#[track_caller]
fn assert_duplicate<T: std::fmt::Debug>(result: Result<T, Error>, claim: &str, position: u64) {
    match result {
        Err(Error::Duplicate {
            claim: c,
            position: p,
        }) => assert_eq!((c.as_str(), p), (claim, position)),
        other => panic!("expected the claim {claim:?} taken at {position}, got {other:?}"),
    }
}

pub async fn claims_are_taken_once(mut backend: impl Backend) {
    use ExpectedVersion::{Any, Exact, NoStream};
    let store = backend.open().await;
    store.append("s", NoStream, vec![event("0")]).await.unwrap();
    let first = store
        .append_claimed(
            "a",
            NoStream,
            vec![claimed("a0", "k1"), claimed("a1", "k1")],
            vec!["k1".into()],
        )
        .await
        .unwrap();
    assert_eq!(first.positions, 2..=3);

    // Another stream, another expectation: the claim alone refuses it.
    assert_duplicate(
        store
            .append_claimed("b", Any, vec![claimed("b0", "k1")], vec!["k1".into()])
            .await,
        "k1",
        3,
    );
    // One taken claim among several refuses the whole append, and takes none.
    assert_duplicate(
        store
            .append_claimed("b", Any, vec![event("b0")], vec!["k2".into(), "k1".into()])
            .await,
        "k1",
        3,
    );
    // A conflicting append takes no claim either.
    assert_conflict(
        store
            .append_claimed("s", Exact(7), vec![claimed("s1", "k3")], vec!["k3".into()])
            .await,
        Exact(7),
        Some(0),
    );
    assert_eq!(store.head(), 3, "a refused append wrote something");

    let later = store
        .append_claimed("b", NoStream, vec![claimed("b0", "k2")], vec!["k2".into()])
        .await
        .expect("k2 is still free");
    assert_eq!(later.positions, 4..=4);
    store
        .append_claimed("s", Exact(0), vec![claimed("s1", "k3")], vec!["k3".into()])
        .await
        .expect("k3 is still free");
    // Appends without claims are untouched by all this.
    store.append("a", Any, vec![event("a2")]).await.unwrap();
    assert_eq!(store.head(), 6);
}

pub async fn racing_claims_have_one_winner(mut backend: impl Backend) {
    const RACERS: usize = 16;
    let store = Arc::new(backend.open().await);
    let tasks: Vec<_> = (0..RACERS)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append_claimed(
                        &format!("racer-{i}"),
                        ExpectedVersion::NoStream,
                        vec![claimed(&format!("r{i}"), "once")],
                        vec!["once".into()],
                    )
                    .await
            })
        })
        .collect();
    let mut won = Vec::new();
    let mut lost = Vec::new();
    for task in tasks {
        match within("a racer", task).await.unwrap() {
            Ok(appended) => won.push(appended),
            Err(Error::Duplicate { claim, position }) => {
                assert_eq!(claim, "once");
                lost.push(position);
            }
            Err(other) => panic!("append failed: {other}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one append takes the claim");
    assert_eq!(lost.len(), RACERS - 1);
    let winner = *won[0].positions.end();
    assert!(lost.iter().all(|&p| p == winner), "losers name the winner");
    assert_eq!(store.head(), 1);
}

pub async fn claims_survive_reopen(mut backend: impl Durable) {
    let store = backend.open().await;
    store
        .append_claimed(
            "s",
            ExpectedVersion::NoStream,
            vec![event("0"), claimed("1", "kept")],
            vec!["kept".into()],
        )
        .await
        .unwrap();
    store
        .append("s", ExpectedVersion::Any, vec![event("2")])
        .await
        .unwrap();

    let store = backend.reopen(store).await;
    assert_duplicate(
        store
            .append_claimed(
                "t",
                ExpectedVersion::Any,
                vec![claimed("t0", "kept")],
                vec!["kept".into()],
            )
            .await,
        "kept",
        2,
    );
    store
        .append_claimed(
            "t",
            ExpectedVersion::Any,
            vec![claimed("t0", "new")],
            vec!["new".into()],
        )
        .await
        .expect("an untaken claim");
    assert_eq!(
        within("wait_beyond(3)", store.wait_beyond(3))
            .await
            .unwrap(),
        4
    );
}

/// A claim with a time to live holds until it has passed, and is then free
/// for the next append that names it, which holds it anew; after a reopen too.
pub async fn an_expired_claim_is_free_again(mut backend: impl Durable) {
    // Long enough to hold across the appends below, short enough to wait out.
    const TTL: i64 = 300_000;
    let short = |name: &str| Claim {
        name: name.to_owned(),
        ttl: Some(TTL),
    };
    let store = backend.open().await;
    let first = store
        .append_claimed(
            "a",
            ExpectedVersion::Any,
            vec![claimed_for("a0", "k", TTL)],
            vec![short("k")],
        )
        .await
        .unwrap();
    let taken_at = first.recorded_at;
    assert_duplicate(
        store
            .append_claimed(
                "b",
                ExpectedVersion::Any,
                vec![claimed_for("b0", "k", TTL)],
                vec![short("k")],
            )
            .await,
        "k",
        1,
    );
    // A claim for good next to it never expires.
    store
        .append_claimed(
            "g",
            ExpectedVersion::Any,
            vec![claimed("g0", "kept")],
            vec!["kept".into()],
        )
        .await
        .unwrap();
    let store = backend.reopen(store).await;
    tokio::time::sleep(std::time::Duration::from_micros(TTL as u64 + 50_000)).await;
    let again = store
        .append_claimed(
            "b",
            ExpectedVersion::Any,
            vec![claimed_for("b0", "k", TTL)],
            vec![short("k")],
        )
        .await
        .expect("the claim expired");
    assert!(again.recorded_at > taken_at + TTL, "{again:?}");
    // Taken anew: it holds again for its time to live.
    assert_duplicate(
        store
            .append_claimed(
                "c",
                ExpectedVersion::Any,
                vec![claimed_for("c0", "k", TTL)],
                vec![short("k")],
            )
            .await,
        "k",
        *again.positions.end(),
    );
    assert_duplicate(
        store
            .append_claimed(
                "h",
                ExpectedVersion::Any,
                vec![claimed("h0", "kept")],
                vec!["kept".into()],
            )
            .await,
        "kept",
        2,
    );
}

/// Claims hold client text (an `Idempotency-Key`, a `sourceKey`): any string,
/// a NUL or a line break included, is taken once like any other, and a NUL is
/// not dropped (`k` and `k\0` are two claims).
pub async fn any_text_is_a_claim(mut backend: impl Backend) {
    use ExpectedVersion::{Any, NoStream};
    let store = backend.open().await;
    let claims = ["k\u{0}", "\u{0}", "line\nbreak\r", "\u{1F600}\u{0}x", "k"];
    for (i, claim) in claims.iter().enumerate() {
        let event = NewEvent {
            metadata: serde_json::to_vec(&serde_json::json!({ "claim": claim })).unwrap(),
            ..event(&format!("e{i}"))
        };
        store
            .append_claimed(
                &format!("s{i}"),
                NoStream,
                vec![event],
                vec![(*claim).into()],
            )
            .await
            .unwrap_or_else(|e| panic!("taking the claim {claim:?}: {e}"));
    }
    for (i, claim) in claims.iter().enumerate() {
        let again = store
            .append_claimed("other", Any, vec![event("x")], vec![(*claim).into()])
            .await;
        assert_duplicate(again, claim, i as u64 + 1);
    }
}
