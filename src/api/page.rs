//! Lists and histories: `?limit=` (default 50, 1..=250) and an opaque `?cursor=`,
//! answered as `{data, nextCursor}`.
//!
//! A cursor names the last item of the previous page, so pages stay stable while
//! new items arrive at the front. It is hex so clients treat it as opaque and
//! cannot build one by hand; a cursor for another kind of list is refused.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::Serialize;

use super::error::FieldError;
use super::extract::Params;
use super::input::Errors;

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 250;

/// One page of a list. `next_cursor` is `None` on the last page.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct List<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

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

fn parse_limit(text: &str) -> Result<usize, FieldError> {
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

/// Newest first by id: the items of `map` that `keep` accepts, after the cursor.
pub fn newest_first<K, V, T>(
    map: &BTreeMap<K, V>,
    page: &Page,
    kind: &str,
    keep: impl Fn(&V) -> bool,
    view: impl Fn(&V) -> T,
) -> List<T>
where
    K: Ord + AsRef<str> + for<'a> From<&'a str>,
{
    let upper = match &page.after {
        Some(id) => Bound::Excluded(K::from(id.as_str())),
        None => Bound::Unbounded,
    };
    let mut items = map
        .range((Bound::Unbounded, upper))
        .rev()
        .filter(|(_, v)| keep(v))
        .take(page.limit + 1);
    let mut data = Vec::with_capacity(page.limit.min(64));
    let mut last = None;
    for (id, value) in items.by_ref().take(page.limit) {
        data.push(view(value));
        last = Some(id);
    }
    let next_cursor = match (items.next(), last) {
        (Some(_), Some(last)) => Some(encode(kind, last.as_ref())),
        _ => None,
    };
    List { data, next_cursor }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn pages_walk_newest_first_to_the_end() {
        let map: BTreeMap<String, u32> = (1..=5).map(|i| (format!("ep_{i}"), i)).collect();
        let mut page = Page {
            limit: 2,
            after: None,
        };
        let mut seen = Vec::new();
        loop {
            let list = newest_first(&map, &page, "ep", |_| true, |v| *v);
            seen.extend(list.data);
            match list.next_cursor {
                Some(c) => page.after = Some(decode("ep", &c).unwrap()),
                None => break,
            }
        }
        assert_eq!(seen, vec![5, 4, 3, 2, 1]);
    }
}
