//! API keys: issued per organization with only the SHA-256 of the secret kept,
//! revoked once.

use crate::Rejection;
use crate::decide::Command;
use crate::event::{ApiKeyIssued, ApiKeyRevoked, Event};
use crate::testing::*;

const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn issue(key_id: &str, org: &str) -> Command {
    Command::IssueApiKey {
        key_id: key_id.to_owned(),
        organization_id: org.to_owned(),
        secret_sha256: DIGEST.to_owned(),
    }
}

fn issued(key_id: &str, org: &str) -> Event {
    Event::ApiKeyIssued(ApiKeyIssued {
        key_id: key_id.to_owned(),
        organization_id: org.to_owned(),
        secret_sha256: DIGEST.to_owned(),
    })
}

fn revoke(key_id: &str) -> Command {
    Command::RevokeApiKey {
        key_id: key_id.to_owned(),
    }
}

#[test]
fn an_issued_key_is_kept_as_its_digest() {
    let model = given([])
        .when(issue("key_1", ORG))
        .then([issued("key_1", ORG)]);

    let key = &model.api_keys["key_1"];
    assert_eq!(key.id, "key_1");
    assert_eq!(key.organization_id, ORG);
    assert_eq!(key.secret_sha256[..4], [0x9f, 0x86, 0xd0, 0x81]);
    assert_eq!(key.secret_sha256[31], 0x08);
    assert_eq!(key.created_at, at(1));
    assert_eq!(key.revoked_at, None);
    // Keys are global, looked up before the organization is known; the
    // organization's own rows hold only its feed's entry for the event.
    let tenant = model
        .tenant(ORG)
        .expect("the event is in the organization's feed");
    assert_eq!(tenant.feed.keys().copied().collect::<Vec<_>>(), [1]);
    assert!(tenant.endpoints.is_empty() && tenant.events.is_empty());
}

#[test]
fn revoking_a_key_records_its_organization() {
    let model = given([issued("key_1", ORG)])
        .when(revoke("key_1"))
        .then([Event::ApiKeyRevoked(ApiKeyRevoked {
            key_id: "key_1".into(),
            organization_id: ORG.into(),
        })]);
    assert_eq!(model.api_keys["key_1"].revoked_at, Some(at(2)));
}

#[test]
fn revoking_twice_is_rejected() {
    let scenario = given([issued("key_1", ORG)]).and(revoke("key_1"));
    let before = scenario.model.clone();
    let model = scenario
        .when(revoke("key_1"))
        .then_err(Rejection::ApiKeyAlreadyRevoked("key_1".into()));
    assert_eq!(model, before);
}

#[test]
fn revoking_an_unknown_key_is_rejected() {
    given([issued("key_1", ORG)])
        .when(revoke("key_2"))
        .then_err(Rejection::ApiKeyNotFound("key_2".into()));
}

#[test]
fn revoking_one_key_leaves_the_others_working() {
    let model = given([
        issued("key_1", ORG),
        issued("key_2", ORG),
        issued("key_3", OTHER_ORG),
    ])
    .and(revoke("key_2"))
    .model;
    assert_eq!(model.api_keys["key_1"].revoked_at, None);
    assert_eq!(model.api_keys["key_2"].revoked_at, Some(at(4)));
    assert_eq!(model.api_keys["key_3"].revoked_at, None);
}

#[test]
fn a_key_with_a_malformed_digest_is_unusable() {
    // The decoder only checks the field is a string; the fold must not turn a bad
    // digest into a key anyone could match.
    let bad = Event::ApiKeyIssued(ApiKeyIssued {
        key_id: "key_1".into(),
        organization_id: ORG.into(),
        secret_sha256: "not hex".into(),
    });
    let model = given([bad])
        .when(revoke("key_1"))
        .then_err(Rejection::ApiKeyAlreadyRevoked("key_1".into()));
    assert_eq!(model.api_keys["key_1"].revoked_at, Some(at(1)));
}
