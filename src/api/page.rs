//! Lists and histories: `?limit=` (default 50, 1..=250) and an opaque `?cursor=`,
//! answered as `{data, nextCursor}`, and bounded by bytes as well as by items.
//!
//! A cursor names the last item of the previous page, so pages stay stable while
//! new items arrive at the front. It is hex so clients treat it as opaque and
//! cannot build one by hand; a cursor for another kind of list is refused.
//!
//! [`PageBody`] writes a page straight into its response body, item by item:
//! it stops at `limit` items, or before the item that would take the body past
//! its byte budget (`--max-page-bytes`), whichever comes first. A page always
//! takes one item if one is left, so a list of large items still moves on,
//! one at a time; `nextCursor` continues after the last item taken. Any list
//! can feed it from wherever its items come from, in whatever order it walks.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::FieldError;
use super::extract::Params;
use super::input::Errors;
use crate::model::Listed;

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 250;

/// Which page the client asked for: `after` is what the cursor named.
#[derive(Debug, Clone)]
pub struct Page {
    pub limit: usize,
    pub after: Option<String>,
}

impl Page {
    /// Reads `limit` and `cursor`; `kind` tags this list's cursors.
    pub fn read(params: &Params, kind: &str, errors: &mut Errors) -> Page {
        let limit = errors
            .take(
                params
                    .get("limit")
                    .and_then(|v| v.map(parse_limit).transpose()),
            )
            .flatten()
            .unwrap_or(DEFAULT_LIMIT);
        let after = errors
            .take(
                params
                    .get("cursor")
                    .and_then(|v| v.map(|c| decode(kind, c)).transpose()),
            )
            .flatten();
        Page { limit, after }
    }
}

pub fn parse_limit(text: &str) -> Result<usize, FieldError> {
    text.parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| {
            FieldError::new("limit", format!("must be an integer from 1 to {MAX_LIMIT}"))
        })
}

pub fn encode(kind: &str, value: &str) -> String {
    hex::encode(format!("{kind}:{value}"))
}

fn decode(kind: &str, cursor: &str) -> Result<String, FieldError> {
    let invalid = || FieldError::new("cursor", "is not a cursor this list gave out");
    let bytes = hex::decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let value = text
        .strip_prefix(kind)
        .and_then(|t| t.strip_prefix(':'))
        .filter(|v| !v.is_empty())
        .ok_or_else(invalid)?;
    Ok(value.to_owned())
}

/// Room kept for the closing `],"nextCursor":"…"}`: a cursor is the hex of
/// a list's kind and an id.
const CLOSING: usize = 256;

/// A page's response body, `{"data":[...],"nextCursor":...}`, being written.
#[derive(Debug)]
pub struct PageBody {
    out: Vec<u8>,
    taken: usize,
    limit: usize,
    budget: usize,
    /// The cursor value of the last item taken.
    last: Option<String>,
    full: bool,
    /// Where the list goes on when the page did not fill: the model stopped
    /// short of the page (it reads a bounded part of the store per request).
    resume: Option<String>,
}

impl PageBody {
    /// A page of at most `page.limit` items and, past its first, `budget` bytes.
    pub fn new(page: &Page, budget: usize) -> PageBody {
        let mut out = Vec::with_capacity(budget.min(64 * 1024));
        out.extend_from_slice(b"{\"data\":[");
        PageBody {
            out,
            taken: 0,
            limit: page.limit,
            budget,
            last: None,
            full: false,
            resume: None,
        }
    }

    /// Says the list goes on at `resume` (the id to continue below) if the
    /// page ends before filling.
    pub fn go_on_at(&mut self, resume: Option<String>) {
        self.resume = resume;
    }

    /// Offers the next item: `write` puts its JSON, and `cursor` is what a
    /// cursor after it names. `false` when the page is full: the item was not
    /// taken, and the next page starts with it.
    pub fn offer(&mut self, cursor: &str, write: impl FnOnce(&mut Vec<u8>)) -> bool {
        if self.full || self.taken == self.limit {
            self.full = true;
            return false;
        }
        let before = self.out.len();
        if self.taken > 0 {
            self.out.push(b',');
        }
        write(&mut self.out);
        if self.taken > 0 && self.out.len() + CLOSING > self.budget {
            self.out.truncate(before);
            self.full = true;
            return false;
        }
        self.taken += 1;
        self.last = Some(cursor.to_owned());
        true
    }

    /// [`PageBody::offer`] for an item `serde_json` writes.
    pub fn offer_serialized<T: Serialize>(&mut self, cursor: &str, item: &T) -> bool {
        self.offer(cursor, |out| write_json(out, item))
    }

    /// Items taken so far.
    pub fn len(&self) -> usize {
        self.taken
    }

    pub fn is_empty(&self) -> bool {
        self.taken == 0
    }

    /// Whether the page stopped taking items (an offer was refused).
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// The body, with a `nextCursor` after the last item taken if the page
    /// filled before the list ended.
    pub fn finish(self, kind: &str) -> Vec<u8> {
        let next = if self.full { &self.last } else { &self.resume };
        let next = match next {
            Some(last) => format!("\"{}\"", encode(kind, last)),
            None => "null".to_owned(),
        };
        self.close_with("nextCursor", &next)
    }

    /// The body, closed with `"field":json` instead of a cursor, for a list
    /// that says where it goes on in a field of its own.
    pub fn close_with(mut self, field: &str, json: &str) -> Vec<u8> {
        self.out.extend_from_slice(b"],\"");
        self.out.extend_from_slice(field.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out.extend_from_slice(json.as_bytes());
        self.out.push(b'}');
        self.out
    }

    /// [`PageBody::finish`] as a 200 JSON response.
    pub fn into_response(self, kind: &str) -> Response {
        let json = HeaderValue::from_static("application/json");
        ([(header::CONTENT_TYPE, json)], self.finish(kind)).into_response()
    }
}

/// Writes `item` as JSON into `out`.
pub fn write_json<T: Serialize>(out: &mut Vec<u8>, item: &T) {
    // Writing a view into a Vec fails only for a map with non-string keys,
    // which no view has.
    if let Err(e) = serde_json::to_writer(&mut *out, item) {
        tracing::error!(error = %e, "a list item did not serialise");
        out.extend_from_slice(b"null");
    }
}

impl Page {
    /// The page as the read model's lists take it.
    pub fn to_model(&self) -> crate::model::Page {
        crate::model::Page {
            limit: self.limit,
            before: self.after.clone(),
        }
    }
}

/// A page of the read model as the API answers it: the rows of `listed`, each
/// written by `write`, until the page's items or bytes run out. The list goes
/// on after the last row taken if the page filled, else where the model says.
pub fn of_listed<R>(
    page: &Page,
    budget: usize,
    listed: Listed<R>,
    id_of: impl Fn(&R) -> &str,
    mut write: impl FnMut(&R, &mut Vec<u8>),
) -> PageBody {
    let mut body = PageBody::new(page, budget);
    for row in &listed.items {
        if !body.offer(id_of(row), |out| write(row, out)) {
            return body;
        }
    }
    body.go_on_at(listed.next);
    body
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::ops::Bound;

    use super::*;

    fn page(params: &[(&str, &str)]) -> Result<Page, Vec<FieldError>> {
        let params = Params::from_pairs(params);
        let mut errors = Errors::default();
        let page = Page::read(&params, "ep", &mut errors);
        if errors.is_empty() {
            Ok(page)
        } else {
            Err(errors.into_vec())
        }
    }

    #[test]
    fn limits_are_one_to_250() {
        assert_eq!(page(&[]).unwrap().limit, 50);
        assert_eq!(page(&[("limit", "1")]).unwrap().limit, 1);
        assert_eq!(page(&[("limit", "250")]).unwrap().limit, 250);
        for bad in ["0", "251", "-1", "x", ""] {
            assert_eq!(page(&[("limit", bad)]).unwrap_err()[0].field, "limit");
        }
    }

    #[test]
    fn cursors_round_trip_and_refuse_others() {
        let cursor = encode("ep", "ep_1");
        assert_eq!(
            page(&[("cursor", &cursor)]).unwrap().after.as_deref(),
            Some("ep_1")
        );
        assert!(page(&[("cursor", &encode("dlv", "dlv_1"))]).is_err());
        assert!(page(&[("cursor", "zz")]).is_err());
    }

    /// Walks `map` to its end, page by page, as a list of the model would
    /// hand its rows over; each page's body, parsed.
    fn walk(map: &BTreeMap<String, String>, limit: usize, budget: usize) -> Vec<serde_json::Value> {
        let mut page = Page { limit, after: None };
        let mut pages = Vec::new();
        loop {
            let upper = match &page.after {
                Some(id) => Bound::Excluded(id.clone()),
                None => Bound::Unbounded,
            };
            let rows: Vec<(String, String)> = map
                .range((Bound::Unbounded, upper))
                .rev()
                .take(limit + 1)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let more = rows.len() > limit;
            let mut items = rows;
            items.truncate(limit);
            let next = more.then(|| items.last().map(|(k, _)| k.clone())).flatten();
            let body = of_listed(
                &page,
                budget,
                Listed { items, next },
                |(k, _)| k,
                |(_, v), out| serde_json::to_writer(out, v).unwrap(),
            );
            let bytes = body.finish("ep");
            let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert!(
                bytes.len() <= budget || parsed["data"].as_array().unwrap().len() <= 1,
                "a page of {} bytes past a budget of {budget}",
                bytes.len()
            );
            let next = parsed["nextCursor"]
                .as_str()
                .map(|c| decode("ep", c).unwrap());
            pages.push(parsed);
            match next {
                Some(after) => page.after = Some(after),
                None => return pages,
            }
        }
    }

    fn items(pages: &[serde_json::Value]) -> Vec<String> {
        pages
            .iter()
            .flat_map(|p| p["data"].as_array().unwrap().clone())
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn pages_walk_newest_first_to_the_end_by_items() {
        let map: BTreeMap<String, String> = (1..=5)
            .map(|i| (format!("ep_{i}"), format!("v{i}")))
            .collect();
        let pages = walk(&map, 2, 1 << 20);
        assert_eq!(pages.len(), 3);
        assert_eq!(items(&pages), ["v5", "v4", "v3", "v2", "v1"]);
    }

    #[test]
    fn pages_stop_before_the_item_that_passes_the_budget_and_always_take_one() {
        // Items of about 100 bytes, one of 1 000: a budget of 256 bytes of
        // closing and 250 of items takes two small ones a page, the big one alone.
        let map: BTreeMap<String, String> = (1..=7)
            .map(|i| {
                let size = if i == 4 { 1000 } else { 100 };
                (format!("ep_{i}"), format!("{i}{}", "x".repeat(size)))
            })
            .collect();
        let pages = walk(&map, 250, CLOSING + 250);
        let sizes: Vec<usize> = pages
            .iter()
            .map(|p| p["data"].as_array().unwrap().len())
            .collect();
        assert_eq!(sizes, [2, 1, 1, 2, 1]);
        let firsts: Vec<char> = items(&pages)
            .iter()
            .map(|v| v.chars().next().unwrap())
            .collect();
        assert_eq!(firsts, ['7', '6', '5', '4', '3', '2', '1']);
    }

    #[test]
    fn an_empty_list_is_one_empty_page() {
        let map = BTreeMap::<String, String>::new();
        let pages = walk(&map, 10, 10);
        assert_eq!(pages, [serde_json::json!({"data": [], "nextCursor": null})]);
    }

    #[test]
    fn a_page_cut_short_by_the_model_goes_on_where_the_model_says() {
        let listed = Listed {
            items: vec!["ep_9".to_owned()],
            next: Some("ep_7".to_owned()),
        };
        let page = Page {
            limit: 10,
            after: None,
        };
        let body = of_listed(
            &page,
            1 << 20,
            listed,
            |id| id,
            |id, out| write_json(out, id),
        );
        let parsed: serde_json::Value = serde_json::from_slice(&body.finish("ep")).unwrap();
        assert_eq!(parsed["data"], serde_json::json!(["ep_9"]));
        assert_eq!(
            decode("ep", parsed["nextCursor"].as_str().unwrap()).unwrap(),
            "ep_7"
        );
    }
}
