//! Lists and histories: `?limit=` (default 50, 1..=250) and an opaque `?cursor=`,
//! answered as `{data, nextCursor}`.
//!
//! A cursor names the last item of the previous page, so pages stay stable while
//! new items arrive at the front. It is hex so clients treat it as opaque and
//! cannot build one by hand; a cursor for another kind of list is refused.

use serde::Serialize;

use super::error::FieldError;
use super::extract::Params;
use super::input::Errors;
use crate::model::Listed;

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

impl Page {
    /// The page as the read model's lists take it.
    pub fn to_model(&self) -> crate::model::Page {
        crate::model::Page {
            limit: self.limit,
            before: self.after.clone(),
        }
    }
}

/// A page of the read model as the API answers it: each row through `view`,
/// and a cursor of this list's `kind` if the list goes on.
pub fn list<R, T>(kind: &str, listed: Listed<R>, view: impl FnMut(R) -> T) -> List<T> {
    List {
        data: listed.items.into_iter().map(view).collect(),
        next_cursor: listed.next.map(|id| encode(kind, &id)),
    }
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
    fn a_page_of_the_model_keeps_its_order_and_goes_on_with_a_cursor_of_its_kind() {
        let listed = Listed {
            items: vec![3, 2],
            next: Some("ep_2".to_owned()),
        };
        let page = list("ep", listed, |n| n * 10);
        assert_eq!(page.data, vec![30, 20]);
        let next = page.next_cursor.expect("the list goes on");
        assert_eq!(decode("ep", &next).unwrap(), "ep_2");
        let last = list("ep", Listed { items: vec![1], next: None }, |n: i32| n);
        assert_eq!(last.next_cursor, None);
    }
}
