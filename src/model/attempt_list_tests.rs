//! The attempt lists against a filter over the rows themselves, on a store
//! written as the model writes one (`tables::attempt_index`): an endpoint's
//! pages, built from its status ranges merged and from entries alone, give
//! the items and the order the rows give, page after page, however the
//! visit budget cuts them.

use std::sync::Arc;

use projections::model::Attempt;
use projections::{AttemptStatus, Timestamp};

use super::*;
use crate::kv::{Kv, RedbKv, WriteBatch};
use crate::model::tables::{ATTEMPT_STATUSES, Row};
use crate::model::{Chain, Model, Options};

const ORG: &str = "org_1";
const ENDPOINTS: [&str; 3] = ["ep_a", "ep_b", "ep_c"];
/// More than the visit budget at one endpoint, so a sparse filter's walk
/// is cut by the budget part way through the merge.
const ATTEMPTS: u64 = 3 * VISIT_BUDGET as u64;

/// A small deterministic mixer: which status, code and endpoint each
/// attempt has.
fn mix(n: u64) -> u64 {
    let mut x = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The organization's attempts, every status interleaved at every
/// endpoint; several share a recorded time, so the sequence orders them.
/// Another organization's attempts sit beside them, at the same endpoints.
fn attempts() -> Vec<Attempt> {
    let mut all = Vec::new();
    for (org, count) in [(ORG, ATTEMPTS), ("org_2", 200)] {
        for n in 0..count {
            let r = mix(n);
            let status = ATTEMPT_STATUSES[(r % 4) as usize];
            // 503 is rare: about one attempt in 150.
            let code = match (r >> 8) % 150 {
                0 => Some(503),
                1..=40 => None,
                41..=90 => Some(200),
                _ => Some(404),
            };
            let delivery = n / 3;
            all.push(Attempt {
                organization_id: org.to_owned(),
                delivery_id: format!("dlv_{delivery:06}"),
                event_id: format!("evt_{:06}", delivery / 2),
                endpoint_id: ENDPOINTS[((r >> 20) % 3) as usize].to_owned(),
                version: n % 3,
                position: 1_000 + 2 * n,
                sequence: n + 1,
                recorded_at: Timestamp::from_micros(1_700_000_000_000_000 + (n / 4) as i64),
                status,
                response_status_code: code,
                last_error: (status != AttemptStatus::Delivered).then(|| format!("error {n}")),
                next_retry_at: (status == AttemptStatus::RetryScheduled)
                    .then(|| Timestamp::from_micros(1_800_000_000_000_000)),
            });
        }
    }
    all
}

/// A model whose store holds `attempts` as the model writes them out.
fn model_of(attempts: &[Attempt]) -> Model {
    let kv = RedbKv::in_memory(&tables::ALL).unwrap();
    let mut batch = WriteBatch::default();
    for a in attempts {
        let row_key = key::attempt(&a.organization_id, &a.delivery_id, a.version);
        batch.put(tables::ATTEMPTS, row_key, a.encode());
        for (table, entry, value) in tables::attempt_index(a) {
            batch.put(table, entry, value);
        }
    }
    kv.write(&batch, true).unwrap();
    let kv: Arc<dyn Kv> = Arc::new(kv);
    Model::start(kv, Chain::default(), None, Options::default()).unwrap()
}

/// What the list must give: the organization's rows the filter accepts,
/// newest first.
fn expected(attempts: &[Attempt], filter: &AttemptFilter) -> Vec<AttemptItem> {
    let mut rows: Vec<AttemptItem> = attempts
        .iter()
        .filter(|a| a.organization_id == ORG && filter.keep_row(a))
        .cloned()
        .map(AttemptItem::from)
        .collect();
    rows.sort_by_key(|a| std::cmp::Reverse(AttemptMark::of(a)));
    rows
}

/// Every page of the list, each cursor the last one's: the items in order,
/// and how many pages the visit budget cut short.
fn walk(view: &View, filter: &AttemptFilter, limit: usize) -> (Vec<AttemptItem>, usize) {
    let (mut all, mut before, mut short) = (Vec::new(), None, 0);
    for _ in 0..10_000 {
        let page = view.attempt_list(ORG, filter, limit, before).unwrap();
        assert!(page.items.len() <= limit, "a page of {}", page.items.len());
        if page.next.is_some() && page.items.len() < limit {
            short += 1;
        }
        if let (Some(next), Some(last)) = (page.next, page.items.last()) {
            assert!(
                next <= AttemptMark::of(last),
                "the cursor skips past an item"
            );
        }
        all.extend(page.items);
        match page.next {
            Some(next) => before = Some(next),
            None => return (all, short),
        }
    }
    panic!("the list does not end");
}

fn endpoint(id: &str) -> AttemptFilter {
    AttemptFilter {
        endpoint_id: Some(id.to_owned()),
        ..AttemptFilter::default()
    }
}

#[test]
fn an_endpoints_attempts_of_every_status_merge_newest_first_across_pages() {
    let attempts = attempts();
    let model = model_of(&attempts);
    let view = model.view();
    for id in ENDPOINTS {
        let want = expected(&attempts, &endpoint(id));
        let statuses: std::collections::BTreeSet<u8> = want
            .iter()
            .map(|a| tables::attempt_status_byte(a.status))
            .collect();
        assert_eq!(statuses.len(), 4, "every status at {id}");
        for limit in [1, 7, 50, 250] {
            let (got, _) = walk(&view, &endpoint(id), limit);
            assert_eq!(got.len(), want.len(), "{id}, limit {limit}");
            assert!(
                got == want,
                "{id}, limit {limit}: not the rows' items in order"
            );
        }
    }
    model.close().unwrap();
}

#[test]
fn a_sparse_filter_over_the_merge_is_cut_by_the_budget_and_goes_on_exactly() {
    let attempts = attempts();
    let model = model_of(&attempts);
    let view = model.view();
    let t = |n: i64| Some(Timestamp::from_micros(1_700_000_000_000_000 + n));
    let filters = [
        AttemptFilter {
            response_status_code: Some(503),
            ..endpoint("ep_a")
        },
        AttemptFilter {
            status_class: Some(5),
            ..endpoint("ep_b")
        },
        AttemptFilter {
            recorded_after: t(500),
            recorded_before: t(2_000),
            ..endpoint("ep_c")
        },
        AttemptFilter {
            recorded_before: t(1_000),
            response_status_code: Some(200),
            ..endpoint("ep_a")
        },
        AttemptFilter {
            event_id: Some("evt_000100".into()),
            ..endpoint("ep_b")
        },
    ];
    let mut cut = 0;
    for filter in &filters {
        let want = expected(&attempts, filter);
        assert!(!want.is_empty(), "{filter:?} matches some attempts");
        for limit in [1, 3, 50] {
            let (got, short) = walk(&view, filter, limit);
            assert!(
                got == want,
                "{filter:?}, limit {limit}: not the rows' items"
            );
            cut += short;
        }
    }
    assert!(cut > 0, "no walk was cut by the visit budget");
    model.close().unwrap();
}

#[test]
fn an_endpoints_attempts_of_one_status_are_built_from_entries_as_from_rows() {
    let attempts = attempts();
    let model = model_of(&attempts);
    let view = model.view();
    for id in ENDPOINTS {
        for status in ATTEMPT_STATUSES {
            let filter = AttemptFilter {
                status: Some(status),
                ..endpoint(id)
            };
            let want = expected(&attempts, &filter);
            assert!(!want.is_empty());
            for limit in [1, 50] {
                let (got, _) = walk(&view, &filter, limit);
                assert!(
                    got == want,
                    "{filter:?}, limit {limit}: not the rows' items"
                );
            }
        }
    }
    model.close().unwrap();
}

#[test]
fn the_other_attempt_lists_still_read_their_rows() {
    let attempts = attempts();
    let model = model_of(&attempts);
    let view = model.view();
    let filters = [
        AttemptFilter::default(),
        AttemptFilter {
            status: Some(AttemptStatus::Failed),
            ..AttemptFilter::default()
        },
        AttemptFilter {
            status_class: Some(4),
            ..AttemptFilter::default()
        },
        AttemptFilter {
            delivery_id: Some("dlv_000042".into()),
            ..AttemptFilter::default()
        },
        AttemptFilter {
            event_id: Some("evt_000042".into()),
            ..AttemptFilter::default()
        },
    ];
    for filter in &filters {
        let want = expected(&attempts, filter);
        let (got, _) = walk(&view, filter, 50);
        assert!(got == want, "{filter:?}: not the rows' items");
    }
    model.close().unwrap();
}
