//! `GET /v1/ledger/feed`: the caller's organization's events in sequence
//! order (1, 2, 3… with no gaps, the same on every node and every rebuild),
//! each as its raw stored event with its `sequence` and never its global
//! position, so no tenant learns another's volume.
//!
//! Three ways to follow it:
//!
//! - **Pages.** `?after=SEQ&limit=N` answers `{data, nextAfter}` at once;
//!   `nextAfter` is the sequence of the last event given (or `after` when none
//!   is), to pass as the next `after`. The feed never ends, so there is no
//!   null: an empty page means nothing newer yet.
//! - **Long-poll.** `&wait=30s` (at most [`MAX_WAIT`], and `serve
//!   --feed-max-wait`) holds an empty answer until an event after `after` is
//!   folded, then answers at once; at the deadline it answers empty.
//! - **Server-Sent Events.** `Accept: text/event-stream` streams each event
//!   as `id: SEQ` and `data: {json}`; a reconnecting client's `Last-Event-ID`
//!   resumes exactly after it. A comment (`: heartbeat`) goes out after
//!   [`HEARTBEAT`] without an event, so proxies keep the connection.
//!
//! Nothing waits by polling: followers sleep until [`hub`] says their
//! organization moved. A stream reads the next event from the log only when
//! the client has taken the last one (the body is pulled as the connection
//! can write), so a slow client holds one event and the connection's buffers,
//! and one that stops reading is cut off after the client timeout, as every
//! answer is. Long-polls and streams are bounded per organization and per
//! server ([`hub::FeedLimits`], 429 past them), and end when the server shuts
//! down; a stream's client reconnects with `Last-Event-ID`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use projections::Timestamp;
use serde::Serialize;
use serde_json::value::RawValue;

use super::AppState;
use super::content::{self, ContentView};
use super::error::{ApiError, FieldError};
use super::extract::{Caller, Params};
use super::input::Errors;
use super::page::{DEFAULT_LIMIT, Page, PageBody, parse_limit, write_json};
use crate::model::View;
use crate::store::RecordedEvent;

pub mod hub;

pub use hub::{FeedLimits, Feeds};
use hub::{Mode, Subscription};

/// The longest `wait` a long-poll may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Silence after which an event stream sends a comment.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Feed entries a stream reads from the model at a time (the events
/// themselves are read one by one, as the client takes them).
const STREAM_BATCH: usize = 64;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/ledger/feed", get(follow))
}

/// What the client asked for.
#[derive(Debug)]
struct Request {
    after: u64,
    limit: usize,
    wait: Option<Duration>,
    stream: bool,
}

impl Request {
    fn read(params: &Params, headers: &HeaderMap) -> Result<Request, ApiError> {
        let mut errors = Errors::default();
        let stream = wants_event_stream(headers);
        let mut after = errors
            .take(
                params
                    .get("after")
                    .and_then(|v| v.map(sequence("after")).transpose()),
            )
            .flatten()
            .unwrap_or(0);
        let limit = errors
            .take(
                params
                    .get("limit")
                    .and_then(|v| v.map(parse_limit).transpose()),
            )
            .flatten()
            .unwrap_or(DEFAULT_LIMIT);
        let wait = errors
            .take(params.get("wait").and_then(|v| v.map(wait).transpose()))
            .flatten();
        if stream {
            // A reconnecting EventSource sends the same URL and the last id
            // it received: that id is where it resumes.
            if let Some(last) = headers.get("last-event-id") {
                let resumed = last
                    .to_str()
                    .map_err(|_| FieldError::new("Last-Event-ID", "must be a sequence number"))
                    .and_then(sequence("Last-Event-ID"));
                if let Some(last) = errors.take(resumed) {
                    after = last;
                }
            }
        }
        errors.check()?;
        Ok(Request {
            after,
            limit,
            wait,
            stream,
        })
    }
}

fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            media
                .split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// A sequence number as a parameter or header: a non-negative integer.
fn sequence(name: &'static str) -> impl Fn(&str) -> Result<u64, FieldError> {
    move |text| {
        let text = text.trim();
        text.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| text.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| {
                FieldError::new(
                    name,
                    "must be a sequence number: an integer from 0 to 18446744073709551615",
                )
            })
    }
}

/// `wait`: whole seconds, `30` or `30s`, from 0 to [`MAX_WAIT`].
fn wait(text: &str) -> Result<Duration, FieldError> {
    let digits = text.strip_suffix('s').unwrap_or(text);
    digits
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| digits.parse::<u64>().ok())
        .flatten()
        .map(Duration::from_secs)
        .filter(|d| *d <= MAX_WAIT)
        .ok_or_else(|| {
            FieldError::new(
                "wait",
                format!(
                    "must be whole seconds from 0 to {}, like 30s",
                    MAX_WAIT.as_secs()
                ),
            )
        })
}

async fn follow(
    State(state): State<AppState>,
    caller: Caller,
    params: Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let request = Request::read(&params, &headers)?;
    let org = caller.organization_id;
    if request.stream {
        let subscription = subscribe(&state, &org, Mode::Stream)?;
        return Ok(event_stream(state, org, request.after, subscription));
    }
    let wait = request
        .wait
        .map(|w| w.min(state.feeds().limits().max_wait))
        .filter(|w| !w.is_zero());
    let page = Page {
        limit: request.limit,
        after: None,
    };
    let Some(wait) = wait else {
        let (body, _) = read_page(&state, &org, request.after, &page).await?;
        return Ok(body);
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut subscription = subscribe(&state, &org, Mode::LongPoll)?;
    loop {
        let (body, sent) = read_page(&state, &org, request.after, &page).await?;
        if sent > 0 {
            subscription.sent(sent);
            return Ok(body);
        }
        if subscription
            .changed_after(request.after, Some(deadline))
            .await
            .is_err()
        {
            return Ok(body);
        }
    }
}

fn subscribe(state: &AppState, org: &str, mode: Mode) -> Result<Subscription, ApiError> {
    state.feeds().subscribe(org, mode, &state.node().projector)
}

/// One event of the feed, bytes as hashed, with the organization's sequence.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FeedEvent<'a> {
    sequence: u64,
    stream: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    schema_version: u32,
    version: u64,
    recorded_at: Timestamp,
    data: &'a RawValue,
    metadata: &'a RawValue,
    prev_hash: String,
    hash: String,
    content: Option<ContentView<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    content_erased: bool,
}

/// Writes the stored event at `sequence` as a [`FeedEvent`], its content as
/// `view` lets it be served.
fn write_event(
    view: &View,
    sequence: u64,
    e: &RecordedEvent,
    out: &mut Vec<u8>,
) -> Result<(), ApiError> {
    fn raw(bytes: &[u8], sequence: u64) -> Result<&RawValue, ApiError> {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| serde_json::from_str::<&RawValue>(text).ok())
            .ok_or_else(|| ApiError::Unavailable(format!("feed event {sequence} is not JSON")))
    }
    let shown = view
        .shown_content(e)
        .map_err(|err| ApiError::Unavailable(err.to_string()))?;
    let (content, content_erased) = content::fields(shown, e.position)?;
    write_json(
        out,
        &FeedEvent {
            content,
            content_erased,
            sequence,
            stream: &e.stream,
            event_type: &e.event_type,
            schema_version: e.schema_version,
            version: e.version,
            recorded_at: Timestamp::from_micros(e.recorded_at),
            data: raw(&e.data, sequence)?,
            metadata: raw(&e.metadata, sequence)?,
            prev_hash: hex::encode(e.prev_hash),
            hash: hex::encode(e.hash),
        },
    );
    Ok(())
}

/// The event at global `position`, read from the log.
async fn read_event(state: &AppState, position: u64) -> Result<RecordedEvent, ApiError> {
    let mut events = state.node().store.read_all(position, 1).await?;
    match events.pop() {
        Some(event) if event.position == position => Ok(event),
        _ => Err(ApiError::Unavailable(format!(
            "the feed names position {position}, which the log does not hold"
        ))),
    }
}

/// A page of the feed after `after`, and how many events it holds. Events
/// are read one at a time until the page's items or bytes run out.
async fn read_page(
    state: &AppState,
    org: &str,
    after: u64,
    page: &Page,
) -> Result<(Response, u64), ApiError> {
    let entries = state.read(|v| v.feed(org, after, page.limit))?;
    let mut body = PageBody::new(page, state.limits().page_bytes);
    let mut next_after = after;
    for (sequence, position) in entries {
        let event = read_event(state, position).await?;
        let view = state.view()?;
        let mut failed = None;
        let taken = body.offer(&sequence.to_string(), |out| {
            failed = write_event(&view, sequence, &event, out).err();
        });
        if let Some(e) = failed {
            return Err(e);
        }
        if !taken {
            break;
        }
        next_after = sequence;
    }
    let sent = body.len() as u64;
    let json = HeaderValue::from_static("application/json");
    let bytes = body.close_with("nextAfter", &next_after.to_string());
    Ok((
        ([(header::CONTENT_TYPE, json)], bytes).into_response(),
        sent,
    ))
}

/// A stream of the organization's events after `after`, one SSE event each,
/// until the client goes or the server shuts down.
fn event_stream(state: AppState, org: String, after: u64, subscription: Subscription) -> Response {
    let follower = Follower {
        state,
        org,
        after,
        pending: VecDeque::new(),
        subscription,
        greeted: false,
    };
    let events = futures_util::stream::unfold(follower, |mut follower| async move {
        let event = follower.next().await?;
        Some((Ok::<_, Infallible>(event), follower))
    });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"))
        .into_response();
    // Proxies that buffer answers (nginx) would hold the events back.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// One event stream's place in the feed.
struct Follower {
    state: AppState,
    org: String,
    /// The sequence of the last event sent (or the resume point).
    after: u64,
    /// Feed entries read from the model and not yet sent: `(sequence, position)`.
    pending: VecDeque<(u64, u64)>,
    subscription: Subscription,
    greeted: bool,
}

impl Follower {
    /// The next SSE event, waiting for one if need be; `None` ends the stream.
    async fn next(&mut self) -> Option<Event> {
        if !self.greeted {
            // Sent at once, so the client knows the stream is open, and told
            // how soon to reconnect once it ends.
            self.greeted = true;
            return Some(Event::default().retry(Duration::from_secs(1)));
        }
        loop {
            if let Some((sequence, position)) = self.pending.pop_front() {
                return match self.event(sequence, position).await {
                    Ok(event) => {
                        self.after = sequence;
                        self.subscription.sent(1);
                        Some(event)
                    }
                    Err(e) => self.end(&e),
                };
            }
            let (org, after) = (&self.org, self.after);
            match self.state.read(|v| v.feed(org, after, STREAM_BATCH)) {
                Ok(entries) if !entries.is_empty() => {
                    self.pending = entries.into();
                    continue;
                }
                Ok(_) => {}
                Err(e) => return self.end(&e),
            }
            // Without a deadline, only the server shutting down ends the wait.
            if self
                .subscription
                .changed_after(self.after, None)
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    async fn event(&self, sequence: u64, position: u64) -> Result<Event, ApiError> {
        let stored = read_event(&self.state, position).await?;
        let view = self.state.view()?;
        let mut out = Vec::new();
        write_event(&view, sequence, &stored, &mut out)?;
        let data = String::from_utf8(out)
            .map_err(|_| ApiError::Internal("a feed event is not UTF-8".into()))?;
        Ok(Event::default().id(sequence.to_string()).data(data))
    }

    /// Ends the stream after a failed read: the client reconnects with its
    /// `Last-Event-ID` and resumes where it was.
    fn end(&self, e: &ApiError) -> Option<Event> {
        tracing::warn!(error = %e, after = self.after, "ending an event stream: the feed could not be read");
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(params: &[(&str, &str)], headers: &[(&str, &str)]) -> Result<Request, Vec<String>> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        Request::read(&Params::from_pairs(params), &map).map_err(|e| match e {
            ApiError::Invalid(errors) => errors.into_iter().map(|e| e.field).collect(),
            other => vec![other.to_string()],
        })
    }

    #[test]
    fn parameters_default_and_refuse_what_is_out_of_range() {
        let r = request(&[], &[]).unwrap();
        assert_eq!((r.after, r.limit, r.wait, r.stream), (0, 50, None, false));
        let r = request(&[("after", "7"), ("limit", "250"), ("wait", "60s")], &[]).unwrap();
        assert_eq!((r.after, r.limit, r.wait), (7, 250, Some(MAX_WAIT)));
        assert_eq!(
            request(&[("wait", "0")], &[]).unwrap().wait,
            Some(Duration::ZERO)
        );
        for (name, bad) in [
            ("after", "-1"),
            ("after", "+1"),
            ("after", "18446744073709551616"),
            ("after", "x"),
            ("limit", "0"),
            ("limit", "251"),
            ("wait", "61s"),
            ("wait", "30m"),
            ("wait", "s"),
            ("wait", "-1"),
        ] {
            assert_eq!(
                request(&[(name, bad)], &[]).unwrap_err(),
                [name],
                "{name}={bad}"
            );
        }
    }

    #[test]
    fn an_event_stream_resumes_after_its_last_event_id() {
        let accept = ("accept", "text/html, text/event-stream;q=0.9");
        let r = request(&[("after", "3")], &[accept]).unwrap();
        assert!(r.stream);
        assert_eq!(r.after, 3);
        let r = request(&[("after", "3")], &[accept, ("last-event-id", "41")]).unwrap();
        assert_eq!(r.after, 41);
        assert_eq!(
            request(&[], &[accept, ("last-event-id", "4x")]).unwrap_err(),
            ["Last-Event-ID"]
        );
        // Without the event-stream media type, Last-Event-ID means nothing.
        let r = request(&[], &[("last-event-id", "41")]).unwrap();
        assert_eq!((r.stream, r.after), (false, 0));
    }
}
