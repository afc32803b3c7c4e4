//! What a handler leaves of a request body, and what becomes of the connection.
//!
//! A request refused before its body is read (401, 403, 404, 413) leaves the
//! body on the connection. hyper then reuses the connection only if the rest
//! of the body happens to be in its buffer already, and otherwise closes it
//! after the answer, without saying so: a keep-alive client sees its next
//! request fail. So the rest of a small body is read and dropped before the
//! answer goes out, and the connection stays usable; a large one, one sent
//! with `Expect: 100-continue` (the client is waiting to be asked for it), or
//! one that does not arrive within 5 s, gets `connection: close` on the answer.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;

/// The most of a body read and dropped to keep a connection.
pub const MAX_DRAINED: usize = 64 * 1024;
/// How long the rest of a body may take to arrive before the connection
/// closes: generous, since a client that sent a head sends its body at once,
/// and a short wait would close connections of clients that are merely slow.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the unread rest of a request's body ends up once the handler drops it.
#[derive(Debug, Default)]
pub struct Leftover {
    slot: Option<Arc<Mutex<Option<Body>>>>,
    expects_continue: bool,
}

/// Gives the handler a body that hands back whatever it leaves unread.
pub fn track(request: Request) -> (Request, Leftover) {
    if request.body().is_end_stream() {
        return (request, Leftover::default());
    }
    let expects_continue = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let (parts, body) = request.into_parts();
    let slot = Arc::new(Mutex::new(None));
    let tracked = Tracked {
        inner: Some(body),
        slot: slot.clone(),
    };
    let leftover = Leftover {
        slot: Some(slot),
        expects_continue,
    };
    (Request::from_parts(parts, Body::new(tracked)), leftover)
}

impl Leftover {
    /// Reads and drops what is left of the body if it is small and comes at
    /// once; else marks `response` to close the connection.
    pub async fn settle(self, response: &mut Response) {
        let Some(slot) = self.slot else {
            return;
        };
        let rest = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(rest) = rest else {
            return;
        };
        if self.expects_continue || !drain(rest).await {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
}

/// Reads `body` to its end unless it is over [`MAX_DRAINED`] or slow.
async fn drain(mut body: Body) -> bool {
    if body.size_hint().lower() > MAX_DRAINED as u64 {
        return false;
    }
    let read = async {
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    seen += frame.data_ref().map_or(0, Bytes::len);
                    if seen > MAX_DRAINED {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIMEOUT, read)
        .await
        .unwrap_or(false)
}

/// A request body that puts its unread rest in `slot` when dropped.
struct Tracked {
    inner: Option<Body>,
    slot: Arc<Mutex<Option<Body>>>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        match self.inner.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(body) = self.inner.take()
            && !body.is_end_stream()
        {
            *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(body);
        }
    }
}
