//! A small Server-Sent Events client of our own, as the HTML standard's
//! `EventSource` reads a stream: lines of `field: value`, `data` lines joined,
//! `id` remembered, `:` comments, an empty line dispatching the event. It
//! reads the body chunk by chunk from a real HTTP connection (reqwest), so
//! what it sees is what a browser would, and reconnects with `Last-Event-ID`
//! only when told to.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::Reply;
use crate::schema::check_response;

/// Longer than the server's heartbeat: a stream silent for this long is broken.
const SILENCE: Duration = Duration::from_secs(20);

/// What the stream carried, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A dispatched event: its `id` (the last one set) and its data.
    Event { id: Option<String>, data: String },
    /// A `:` comment line.
    Comment(String),
    /// A `retry:` reconnection time, in milliseconds.
    Retry(u64),
}

/// One open event stream.
#[derive(Debug)]
pub struct EventStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
    /// Fields of the event being read.
    data: Option<String>,
    /// The last event id set, which `EventSource` keeps across events.
    pub last_id: Option<String>,
    pending: std::collections::VecDeque<Frame>,
}

/// Opens `GET {url}` as an event stream for `org` with `token`, resuming
/// after `last_id` if given. A refusal comes back as the problem reply,
/// checked against the API document.
pub async fn open(
    client: &reqwest::Client,
    url: &str,
    org: &str,
    token: &str,
    last_id: Option<&str>,
) -> Result<EventStream, Reply> {
    let mut request = client
        .get(url)
        .bearer_auth(token)
        .header("x-organization-id", org)
        .header("accept", "text/event-stream")
        .header("cache-control", "no-cache");
    if let Some(id) = last_id {
        request = request.header("last-event-id", id);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let path = response.url().path().to_owned();
    if status != StatusCode::OK {
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("a body").to_vec();
        check_response(
            "GET",
            &path,
            status.as_u16(),
            content_type.as_deref(),
            &bytes,
        );
        let body = serde_json::from_slice(&bytes).unwrap_or_default();
        return Err(Reply {
            status,
            headers,
            bytes,
            body,
        });
    }
    assert_eq!(
        content_type.as_deref(),
        Some("text/event-stream"),
        "an event stream answers text/event-stream"
    );
    check_response("GET", &path, 200, content_type.as_deref(), b"");
    Ok(EventStream {
        response,
        buffer: Vec::new(),
        data: None,
        last_id: last_id.map(str::to_owned),
        pending: Default::default(),
    })
}

impl EventStream {
    /// The next frame; `None` once the server ended the stream (or the
    /// connection broke, which a client treats alike: it reconnects).
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return Some(frame);
            }
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let line = String::from_utf8(line).expect("an event stream is UTF-8");
                let line = line.trim_end_matches('\n').trim_end_matches('\r');
                self.line(line);
                continue;
            }
            // A live stream sends a heartbeat at least every 15 s.
            let chunk = tokio::time::timeout(SILENCE, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("the stream sent nothing for {SILENCE:?}"));
            match chunk {
                Ok(Some(bytes)) => self.buffer.extend_from_slice(&bytes),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The next event, skipping comments and `retry`; `None` at the end.
    /// Called when an event is due: fails the test if none comes within
    /// [`SILENCE`].
    pub async fn next_event(&mut self) -> Option<(Option<String>, String)> {
        let next = async {
            loop {
                match self.next().await? {
                    Frame::Event { id, data } => return Some((id, data)),
                    Frame::Comment(_) | Frame::Retry(_) => {}
                }
            }
        };
        tokio::time::timeout(SILENCE, next)
            .await
            .unwrap_or_else(|_| panic!("no event came within {SILENCE:?}"))
    }

    fn line(&mut self, line: &str) {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                self.pending.push_back(Frame::Event {
                    id: self.last_id.clone(),
                    data,
                });
            }
            return;
        }
        if let Some(comment) = line.strip_prefix(':') {
            self.pending.push_back(Frame::Comment(comment.to_owned()));
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            "retry" => {
                if let Ok(ms) = value.parse() {
                    self.pending.push_back(Frame::Retry(ms));
                }
            }
            _ => {}
        }
    }
}
