//! An endpoint's health since an instant, answered from the counters the
//! fold keeps (`projections::health`) through the model's layers.
//!
//! The work is the plan's bucket rows (a few hundred at most, one more per
//! 360 days back) and, when the instant is not a whole second, the
//! endpoint's attempts of that one partial second, read from the endpoint's
//! attempt index by status: never a scan of the endpoint's history.

use std::ops::Bound;

use projections::Timestamp;
use projections::health::{self, Bucket, Span, Tallies, Tally};

use super::Error;
use super::attempt_list::{AttemptFilter, AttemptMark};
use super::tables::{self, key};
use super::view::View;
use crate::kv::Flow;

/// Attempts read per step of a recount.
const RECOUNT_PAGE: usize = 250;

impl View {
    /// The endpoint's attempts recorded at or after `since` (absent: all).
    pub fn endpoint_health(
        &self,
        org: &str,
        endpoint_id: &str,
        since: Option<Timestamp>,
    ) -> Result<Tally, Error> {
        health::since(
            &mut Counters {
                view: self,
                org,
                endpoint_id,
            },
            since,
        )
    }
}

struct Counters<'a> {
    view: &'a View,
    org: &'a str,
    endpoint_id: &'a str,
}

impl Tallies for Counters<'_> {
    type Error = Error;

    fn total(&mut self) -> Result<Tally, Error> {
        let key = key::tally(self.org, self.endpoint_id, Bucket::ALL);
        Ok(self
            .view
            .get(tables::ENDPOINT_TALLIES, &key, |o| &o.tallies)?
            .unwrap_or_default())
    }

    fn sum(&mut self, span: Span) -> Result<Tally, Error> {
        let prefix = key::tally_level(self.org, self.endpoint_id, span.level);
        let lower = prefix.clone().i64(span.from).into_bytes();
        let upper = match span.to {
            Some(to) => prefix.i64(to).into_bytes(),
            None => prefix.prefix_end(),
        };
        let mut sum = Tally::default();
        self.view.scan(
            tables::ENDPOINT_TALLIES,
            |o| &o.tallies,
            (Bound::Included(lower), Bound::Excluded(upper)),
            false,
            &mut |_, t| {
                sum.add(&t);
                Ok(Flow::Continue)
            },
        )?;
        Ok(sum)
    }

    fn recount(&mut self, from: i64, to: i64) -> Result<Tally, Error> {
        let filter = AttemptFilter {
            endpoint_id: Some(self.endpoint_id.to_owned()),
            recorded_after: from.checked_sub(1).map(Timestamp::from_micros),
            recorded_before: Some(Timestamp::from_micros(to)),
            ..AttemptFilter::default()
        };
        let mut sum = Tally::default();
        let mut before: Option<AttemptMark> = None;
        loop {
            let page = self
                .view
                .attempt_list(self.org, &filter, RECOUNT_PAGE, before)?;
            for a in &page.items {
                sum.count(a.status, a.response_status_code, a.recorded_at);
            }
            match page.next {
                Some(mark) => before = Some(mark),
                None => return Ok(sum),
            }
        }
    }
}
