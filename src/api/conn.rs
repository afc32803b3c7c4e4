//! The byte stream of one client connection, as hyper reads and writes it.
//!
//! Two things hyper does not do, done here on the bytes:
//!
//! - **Slow readers.** A client that sends a request and never reads the
//!   answer would hold the answer's memory until TCP gives up. A write (or
//!   flush) that makes no progress for the client timeout fails the
//!   connection instead, and hyper drops it with everything it holds.
//! - **Requests hyper cannot parse.** For a request line or headers it cannot
//!   parse (a bad version, conflicting `Content-Length`), a request target
//!   over its 64 KB limit or too many headers, hyper writes its own answer —
//!   a bare status with an empty body — and closes. That answer is recognised
//!   as the last bytes hyper writes and replaced with the same status as
//!   `application/problem+json`, so no answer from this server is bare.
//!
//! It must not change anything else: every other byte passes through as hyper
//! wrote it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::error::{ApiError, PROBLEM_JSON};

/// A connection whose writes time out and whose unparsable requests get a problem.
#[derive(Debug)]
pub struct ClientIo<S> {
    inner: S,
    timeout: Duration,
    /// Running while the write side makes no progress.
    stalled: Option<Pin<Box<Sleep>>>,
    /// The problem that replaces hyper's bare answer, and how much of it is written.
    replacement: Option<(Vec<u8>, usize)>,
}

impl<S> ClientIo<S> {
    pub fn new(inner: S, timeout: Duration) -> Self {
        ClientIo {
            inner,
            timeout,
            stalled: None,
            replacement: None,
        }
    }
}

impl<S: AsyncWrite + Unpin> ClientIo<S> {
    /// Runs `op` on the inner stream, failing once it has made no progress
    /// for the timeout.
    fn progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match op(Pin::new(&mut self.inner), cx) {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let stalled = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match stalled.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client read nothing of the answer within the client timeout",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    /// Writes out what is left of the replacement answer.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = self.replacement.take() {
            if written == bytes.len() {
                return Poll::Ready(Ok(()));
            }
            match self.progress(cx, |inner, cx| inner.poll_write(cx, &bytes[written..])) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.replacement = Some((bytes, written + n)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    self.replacement = Some((bytes, written));
                    return Poll::Pending;
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ClientIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ClientIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_replacement(cx))?;
        let Some((start, status)) = bare_answer(buf) else {
            return this.progress(cx, |inner, cx| inner.poll_write(cx, buf));
        };
        if start > 0 {
            // What comes before it (an earlier answer) goes out unchanged.
            return this.progress(cx, |inner, cx| inner.poll_write(cx, &buf[..start]));
        }
        tracing::debug!(
            status = status.as_u16(),
            "answering a request hyper could not parse"
        );
        this.replacement = Some((problem_answer(status), 0));
        ready!(this.poll_replacement(cx))?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_replacement(cx))?;
        this.progress(cx, |inner, cx| inner.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_replacement(cx))?;
        this.progress(cx, |inner, cx| inner.poll_shutdown(cx))
    }

    // Not vectored: hyper then flattens each message into one buffer, so its
    // own answer always arrives whole, at the end of one write.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// The statuses hyper answers by itself, for requests it cannot parse.
const BARE: [StatusCode; 3] = [
    StatusCode::BAD_REQUEST,
    StatusCode::URI_TOO_LONG,
    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
];

/// Where hyper's own answer starts in `buf`, if `buf` ends with one: a head
/// with one of the [`BARE`] statuses and no header but `content-length: 0`,
/// `date` and `connection`. None of this server's answers looks like that
/// (each has a content type), and no body it writes holds a raw line break,
/// so these bytes can only be a head hyper wrote.
fn bare_answer(buf: &[u8]) -> Option<(usize, StatusCode)> {
    const LONGEST: usize = 256;
    if !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let window = buf.len().saturating_sub(LONGEST);
    let start = window + find_last(&buf[window..], b"HTTP/1.")?;
    let head = std::str::from_utf8(&buf[start..buf.len() - 4]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let code = status_line.get(9..12)?.parse::<u16>().ok()?;
    let status = StatusCode::from_u16(code).ok()?;
    if !BARE.contains(&status) {
        return None;
    }
    let mut empty = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => empty = value.trim() == "0",
            "date" | "connection" => {}
            _ => return None,
        }
    }
    empty.then_some((start, status))
}

fn find_last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// The whole answer, head and problem body, that replaces hyper's.
fn problem_answer(status: StatusCode) -> Vec<u8> {
    let error = match status {
        StatusCode::URI_TOO_LONG => ApiError::UriTooLong,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ApiError::HeaderFieldsTooLarge,
        _ => ApiError::field(
            "request",
            "is not a well-formed HTTP/1.1 request: its request line, version or \
             headers (such as Content-Length) cannot be read",
        ),
    };
    let body = error.problem_body();
    let mut answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {PROBLEM_JSON}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error"),
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "date: Tue, 03 Nov 2026 10:00:00 GMT";

    #[test]
    fn hypers_own_answers_are_recognised_at_the_end_of_a_write() {
        let bare = format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n{DATE}\r\n\r\n");
        assert_eq!(
            bare_answer(bare.as_bytes()),
            Some((0, StatusCode::BAD_REQUEST))
        );
        let earlier =
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        let both = format!("{earlier}{bare}");
        assert_eq!(
            bare_answer(both.as_bytes()),
            Some((earlier.len(), StatusCode::BAD_REQUEST))
        );
        let long = format!("HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n{DATE}\r\n\r\n");
        assert_eq!(
            bare_answer(long.as_bytes()),
            Some((0, StatusCode::URI_TOO_LONG))
        );
    }

    #[test]
    fn the_servers_own_answers_pass_unchanged() {
        for head in [
            format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 0\r\n{DATE}\r\n\r\n"
            ),
            format!("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n{DATE}\r\n\r\n"),
            format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n{DATE}\r\n\r\n"),
            "0\r\n\r\n".to_owned(),
        ] {
            assert_eq!(bare_answer(head.as_bytes()), None, "{head:?}");
        }
    }

    #[test]
    fn the_replacement_is_a_problem_that_closes() {
        let answer = String::from_utf8(problem_answer(StatusCode::URI_TOO_LONG)).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"));
        assert!(head.contains("content-type: application/problem+json"));
        assert!(head.contains("connection: close"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["status"], 414);
    }
}
