use projections::{Command, Endpoint, Tenant, Timestamp};

use super::*;
use crate::store::MAX_EVENT_BYTES;

fn limits(fan_out: usize, endpoints: usize) -> Limits {
    Limits {
        fan_out,
        endpoints_per_organization: endpoints,
        ..Limits::default()
    }
}

fn endpoint(id: &str, enabled: bool, types: &[&str]) -> Endpoint {
    Endpoint {
        id: id.to_owned(),
        organization_id: "org".to_owned(),
        name: id.to_owned(),
        url: "https://example.com/".to_owned(),
        event_types: types.iter().map(|t| (*t).to_owned()).collect(),
        enabled,
        created_at: Timestamp::from_micros(0),
        updated_at: Timestamp::from_micros(0),
        version: 1,
        position: 1,
    }
}

fn tenant(endpoints: &[Endpoint]) -> Tenant {
    let mut tenant = Tenant::default();
    for e in endpoints {
        tenant.endpoints.insert(e.id.clone(), e.clone());
    }
    tenant
}

fn create(types: &[&str]) -> Command {
    Command::CreateEndpoint {
        endpoint_id: "ep_new".into(),
        organization_id: "org".into(),
        name: "n".into(),
        url: "https://example.com/".into(),
        event_types: types.iter().map(|t| (*t).to_owned()).collect(),
        enabled: true,
    }
}

fn patch(id: &str, types: Option<&[&str]>, enabled: Option<bool>) -> Command {
    Command::UpdateEndpoint {
        endpoint_id: id.into(),
        organization_id: "org".into(),
        name: None,
        url: None,
        event_types: types.map(|t| t.iter().map(|t| (*t).to_owned()).collect()),
        enabled,
    }
}

#[test]
fn the_endpoint_past_the_organizations_limit_is_refused() {
    let two = tenant(&[
        endpoint("ep_1", true, &["a"]),
        endpoint("ep_2", false, &["b"]),
    ]);
    assert!(limits(100, 3).check(Some(&two), &create(&["c"])).is_ok());
    let e = limits(100, 2)
        .check(Some(&two), &create(&["c"]))
        .unwrap_err();
    assert_eq!(e.limit, name::ENDPOINTS_PER_ORGANIZATION);
    assert!(limits(100, 1).check(None, &create(&["c"])).is_ok());
}

#[test]
fn an_endpoint_that_would_widen_a_fan_out_past_the_limit_is_refused() {
    let org = tenant(&[
        endpoint("ep_1", true, &["a"]),
        endpoint("ep_2", true, &["a", "b"]),
        endpoint("ep_3", false, &["b"]),
    ]);
    let two = limits(2, 100);
    let e = two.check(Some(&org), &create(&["a"])).unwrap_err();
    assert_eq!((e.limit, e.field), (name::FAN_OUT, "eventTypes"));
    assert!(e.message.contains("\"a\""), "{}", e.message);
    assert!(two.check(Some(&org), &create(&["b", "c"])).is_ok());
    // Every type: "a" would reach three.
    assert!(two.check(Some(&org), &create(&[])).is_err());
    assert!(limits(3, 100).check(Some(&org), &create(&[])).is_ok());
    // Disabled endpoints receive nothing.
    let Command::CreateEndpoint {
        endpoint_id,
        organization_id,
        name,
        url,
        event_types,
        ..
    } = create(&["a"])
    else {
        unreachable!()
    };
    let off = Command::CreateEndpoint {
        endpoint_id,
        organization_id,
        name,
        url,
        event_types,
        enabled: false,
    };
    assert!(two.check(Some(&org), &off).is_ok());
}

#[test]
fn a_patch_is_refused_only_when_it_adds_to_a_fan_out_past_the_limit() {
    let org = tenant(&[
        endpoint("ep_1", true, &["a"]),
        endpoint("ep_2", true, &["a", "b"]),
        endpoint("ep_3", false, &["a"]),
    ]);
    let two = limits(2, 100);
    // Enabling the third endpoint for "a".
    let e = two
        .check(Some(&org), &patch("ep_3", None, Some(true)))
        .unwrap_err();
    assert_eq!(e.field, "enabled");
    // Widening the first to every type: "b" would reach two, "a" it has already.
    assert!(
        two.check(Some(&org), &patch("ep_1", Some(&[]), None))
            .is_ok()
    );
    // Narrowing, renaming, disabling: never refused, even over a lowered limit.
    let one = limits(1, 100);
    assert!(
        one.check(Some(&org), &patch("ep_2", Some(&["a"]), None))
            .is_ok()
    );
    assert!(
        one.check(Some(&org), &patch("ep_2", None, Some(false)))
            .is_ok()
    );
    assert!(one.check(Some(&org), &patch("ep_2", None, None)).is_ok());
    // Widening into a type past the limit.
    assert!(
        two.check(Some(&org), &patch("ep_1", Some(&["a", "b"]), None))
            .is_ok()
    );
    assert!(
        one.check(Some(&org), &patch("ep_1", Some(&["a", "b"]), None))
            .is_err()
    );
    // An unknown endpoint is the decision's to refuse.
    assert!(
        one.check(Some(&org), &patch("ep_9", None, Some(true)))
            .is_ok()
    );
}

#[test]
fn the_largest_event_the_default_limits_allow_fits_in_one_stored_event() {
    let limits = Limits::default();
    let largest = limits.largest_event_bytes();
    assert!(largest <= MAX_EVENT_BYTES, "{largest} > {MAX_EVENT_BYTES}");
    // The measure is of a real event at the limits, not a guess: a body's worth.
    assert!(largest > MAX_BODY_BYTES + limits.fan_out * limits.url_length);
    assert!(limits.check_fits(MAX_EVENT_BYTES).is_ok());
    println!(
        "largest event {largest} bytes of {MAX_EVENT_BYTES}; largest attempt answer {} bytes",
        limits.largest_answer_bytes()
    );
}

#[test]
fn limits_whose_largest_event_would_not_fit_are_refused() {
    let wide = Limits {
        fan_out: 2000,
        ..Limits::default()
    };
    let e = wide.check_fits(MAX_EVENT_BYTES).unwrap_err();
    assert!(e.contains("--max-fan-out 2000"), "{e}");
    // The same fan-out fits once URLs and names are short.
    let short = Limits {
        url_length: 100,
        name_length: 20,
        ..wide
    };
    assert!(short.check_fits(MAX_EVENT_BYTES).is_ok());
}
