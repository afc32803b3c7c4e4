//! Registering and changing endpoints: an update records only what changes, and a
//! patch that changes nothing appends nothing.

use crate::Rejection;
use crate::decide::Command;
use crate::testing::*;

fn create(id: &str, enabled: bool) -> Command {
    Command::CreateEndpoint {
        endpoint_id: id.to_owned(),
        organization_id: ORG.to_owned(),
        name: endpoint_name(id),
        url: endpoint_url(id),
        event_types: vec!["order.paid".into()],
        enabled,
    }
}

#[test]
fn creating_an_endpoint_records_it_as_given() {
    let model = given([])
        .when(create("ep_1", true))
        .then([endpoint("ep_1", ORG, &["order.paid"])]);

    let ep = &model.org(ORG).endpoints["ep_1"];
    assert_eq!(ep.id, "ep_1");
    assert_eq!(ep.organization_id, ORG);
    assert_eq!(ep.name, endpoint_name("ep_1"));
    assert_eq!(ep.url, endpoint_url("ep_1"));
    assert_eq!(ep.event_types, ["order.paid"]);
    assert!(ep.enabled);
    assert_eq!((ep.created_at, ep.updated_at), (at(1), at(1)));
    assert_eq!(ep.version, 1);
}

#[test]
fn an_endpoint_can_be_created_disabled() {
    let model = given([])
        .when(create("ep_1", false))
        .then([disabled_endpoint("ep_1", ORG, &["order.paid"])]);
    assert!(!model.org(ORG).endpoints["ep_1"].enabled);
}

#[test]
fn an_update_changing_every_field_records_every_field() {
    let change = patch("ep_1", ORG)
        .name("new name")
        .url("https://new.example/")
        .event_types(&["a", "b"])
        .enabled(false);

    let model = given([endpoint("ep_1", ORG, &[])])
        .when(change.clone())
        .then([change.updated()]);

    let ep = &model.org(ORG).endpoints["ep_1"];
    assert_eq!(ep.name, "new name");
    assert_eq!(ep.url, "https://new.example/");
    assert_eq!(ep.event_types, ["a", "b"]);
    assert!(!ep.enabled);
    assert_eq!((ep.created_at, ep.updated_at), (at(1), at(2)));
    assert_eq!(ep.version, 2);
}

#[test]
fn an_update_records_only_the_fields_that_change() {
    // Name and enabled are sent as they already are; only the url changes.
    let sent = patch("ep_1", ORG)
        .name(&endpoint_name("ep_1"))
        .url("https://moved.example/")
        .event_types(&["order.paid"])
        .enabled(true);

    let model = given([endpoint("ep_1", ORG, &["order.paid"])])
        .when(sent)
        .then([patch("ep_1", ORG).url("https://moved.example/").updated()]);

    let ep = &model.org(ORG).endpoints["ep_1"];
    assert_eq!(ep.name, endpoint_name("ep_1"));
    assert_eq!(ep.url, "https://moved.example/");
    assert_eq!(ep.event_types, ["order.paid"]);
    assert!(ep.enabled);
}

#[test]
fn fields_absent_from_an_update_are_unchanged() {
    let model = given([endpoint("ep_1", ORG, &["order.paid"])])
        .when(patch("ep_1", ORG).enabled(false))
        .then([patch("ep_1", ORG).enabled(false).updated()]);

    let ep = &model.org(ORG).endpoints["ep_1"];
    assert_eq!(ep.name, endpoint_name("ep_1"));
    assert_eq!(ep.url, endpoint_url("ep_1"));
    assert_eq!(ep.event_types, ["order.paid"]);
    assert!(!ep.enabled);
}

#[test]
fn a_patch_that_changes_nothing_appends_nothing() {
    let scenario = given([endpoint("ep_1", ORG, &["order.paid"])]);
    let before = scenario.model.clone();

    let same_values = patch("ep_1", ORG)
        .name(&endpoint_name("ep_1"))
        .url(&endpoint_url("ep_1"))
        .event_types(&["order.paid"])
        .enabled(true);
    let model = scenario.when(same_values).then([]);
    assert_eq!(model, before);

    let model = given([endpoint("ep_1", ORG, &["order.paid"])])
        .when(patch("ep_1", ORG))
        .then([]);
    assert_eq!(model, before);
}

#[test]
fn an_unknown_endpoint_cannot_be_updated() {
    given([endpoint("ep_1", ORG, &[])])
        .when(patch("ep_2", ORG).name("x"))
        .then_err(Rejection::EndpointNotFound("ep_2".into()));

    // Not even with an empty patch: the caller learns it does not exist.
    given([])
        .when(patch("ep_2", ORG))
        .then_err(Rejection::EndpointNotFound("ep_2".into()));
}

#[test]
fn successive_updates_apply_in_order() {
    let model = given([endpoint("ep_1", ORG, &[])])
        .and(patch("ep_1", ORG).name("one"))
        .and(patch("ep_1", ORG).name("two").enabled(false))
        .and(patch("ep_1", ORG).enabled(true))
        .model;

    let ep = &model.org(ORG).endpoints["ep_1"];
    assert_eq!(ep.name, "two");
    assert!(ep.enabled);
    assert_eq!(ep.version, 4);
    assert_eq!(ep.updated_at, at(4));
}
