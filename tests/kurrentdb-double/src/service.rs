//! The double's gRPC services, generated from the client's `.proto` files:
//! `Streams.Read` (stream reads, `$all` reads and catch-up subscriptions to
//! `$all`, with stream-prefix filters), `Streams.Append`, and
//! `ServerFeatures.GetSupportedMethods`. Every other call answers
//! `UNIMPLEMENTED`, as a server without that feature would: hookledger's
//! backend makes none of them.

// tonic's `Status` is what every handler answers with, large as it is.
#![allow(clippy::result_large_err)]

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::log::{AllFrom, Expected, Filter, Outcome, Proposed, Stored, StreamFrom};
use crate::proto::event_store::client::server_features::{
    SupportedMethod, SupportedMethods, server_features_server::ServerFeatures,
};
use crate::proto::event_store::client::streams::{
    AppendReq, AppendResp, BatchAppendReq, BatchAppendResp, DeleteReq, DeleteResp, ReadReq,
    ReadResp, TombstoneReq, TombstoneResp, append_req, append_resp, read_req, read_resp,
    streams_server::Streams,
};
use crate::proto::event_store::client::{
    Empty, StreamIdentifier, Uuid as ProtoUuid, uuid as proto_uuid,
};
use crate::{HoldState, State};

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Events a subscription takes from the log at a time.
const SUBSCRIPTION_BATCH: usize = 256;

#[derive(Debug, Clone)]
pub struct StreamsService(pub Arc<State>);

#[derive(Debug, Clone)]
pub struct FeaturesService;

#[tonic::async_trait]
impl ServerFeatures for FeaturesService {
    async fn get_supported_methods(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<SupportedMethods>, Status> {
        let method = |name: &str| SupportedMethod {
            method_name: name.into(),
            service_name: "event_store.client.streams.streams".into(),
            features: Vec::new(),
        };
        Ok(Response::new(SupportedMethods {
            methods: vec![method("read"), method("append")],
            event_store_server_version: "25.0.0-double".into(),
        }))
    }
}

#[tonic::async_trait]
impl Streams for StreamsService {
    type ReadStream = Stream_<ReadResp>;
    type BatchAppendStream = Stream_<BatchAppendResp>;

    async fn read(&self, request: Request<ReadReq>) -> Result<Response<Self::ReadStream>, Status> {
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("a read without options"))?;
        let backwards =
            options.read_direction == read_req::options::ReadDirection::Backwards as i32;
        let filter = filter(options.filter_option)?;
        let count = match options.count_option {
            Some(read_req::options::CountOption::Count(n)) => {
                usize::try_from(n).unwrap_or(usize::MAX)
            }
            Some(read_req::options::CountOption::Subscription(_)) => {
                return self.subscribe(options.stream_option, filter);
            }
            None => return Err(Status::invalid_argument("a read without a count")),
        };
        self.0.counters.reads.fetch_add(1, Ordering::Relaxed);
        let replies: Vec<Result<ReadResp, Status>> = match options.stream_option {
            Some(read_req::options::StreamOption::Stream(stream)) => {
                let name = stream
                    .stream_identifier
                    .ok_or_else(|| Status::invalid_argument("a read without a stream"))?
                    .stream_name;
                use read_req::options::stream_options::RevisionOption;
                let from = match stream.revision_option {
                    Some(RevisionOption::Revision(r)) => StreamFrom::Revision(r),
                    Some(RevisionOption::Start(_)) => StreamFrom::Start,
                    Some(RevisionOption::End(_)) => StreamFrom::End,
                    None => return Err(Status::invalid_argument("a read without a revision")),
                };
                let log = self.0.log();
                match log.read_stream(&name, from, backwards, count) {
                    None => vec![Ok(content(read_resp::Content::StreamNotFound(
                        read_resp::StreamNotFound {
                            stream_identifier: Some(StreamIdentifier { stream_name: name }),
                        },
                    )))],
                    // A stream read carries each event's positions, but no
                    // position of the read itself.
                    Some(events) => events.iter().map(|e| Ok(event(e, false))).collect(),
                }
            }
            Some(read_req::options::StreamOption::All(all)) => {
                use read_req::options::all_options::AllOption;
                let from = match all.all_option {
                    Some(AllOption::Start(_)) => AllFrom::Start,
                    Some(AllOption::End(_)) => AllFrom::End,
                    Some(AllOption::Position(p)) => {
                        AllFrom::Position(p.commit_position, p.prepare_position)
                    }
                    None => return Err(Status::invalid_argument("a read without a position")),
                };
                let log = self.0.log();
                log.read_all(from, backwards, count, &filter)
                    .iter()
                    .map(|e| Ok(event(e, true)))
                    .collect()
            }
            None => {
                return Err(Status::invalid_argument(
                    "a read of neither a stream nor $all",
                ));
            }
        };
        Ok(Response::new(Box::pin(tokio_stream::iter(replies))))
    }

    async fn append(
        &self,
        request: Request<Streaming<AppendReq>>,
    ) -> Result<Response<AppendResp>, Status> {
        let mut messages = request.into_inner();
        let Some(AppendReq {
            content: Some(append_req::Content::Options(options)),
        }) = messages.message().await?
        else {
            return Err(Status::invalid_argument(
                "an append must start with its options",
            ));
        };
        let stream = options
            .stream_identifier
            .ok_or_else(|| Status::invalid_argument("an append without a stream"))?
            .stream_name;
        use append_req::options::ExpectedStreamRevision;
        let expected = match options.expected_stream_revision {
            Some(ExpectedStreamRevision::Revision(r)) => Expected::Revision(r),
            Some(ExpectedStreamRevision::NoStream(_)) => Expected::NoStream,
            Some(ExpectedStreamRevision::Any(_)) => Expected::Any,
            Some(ExpectedStreamRevision::StreamExists(_)) => Expected::StreamExists,
            None => return Err(Status::invalid_argument("an append without an expectation")),
        };
        let mut events = Vec::new();
        while let Some(message) = messages.message().await? {
            let Some(append_req::Content::ProposedMessage(mut m)) = message.content else {
                return Err(Status::invalid_argument("options sent twice in one append"));
            };
            events.push(Proposed {
                id: event_id(m.id)?,
                event_type: m.metadata.remove("type").unwrap_or_default(),
                content_type: m
                    .metadata
                    .remove("content-type")
                    .unwrap_or_else(|| "application/octet-stream".into()),
                custom_metadata: m.custom_metadata,
                data: m.data,
            });
        }
        self.0.counters.appends.fetch_add(1, Ordering::Relaxed);
        // The append is decided in a task of its own: a hold can then keep it
        // past the client's disconnection, as a write that reached the server
        // just before its client died.
        let state = self.0.clone();
        let decided = tokio::spawn(async move {
            if let Some(hold) = state.hold_for(&stream) {
                hold.held.fetch_add(1, Ordering::SeqCst);
                hold.changed.notify_waiters();
                let mut watch = hold.state.subscribe();
                let released = watch.wait_for(|s| *s != HoldState::Holding).await;
                if released.map(|s| *s == HoldState::Discard).unwrap_or(true) {
                    return None;
                }
            }
            Some(state.append(&stream, expected, events))
        });
        let outcome = decided
            .await
            .map_err(|e| Status::internal(format!("the append task failed: {e}")))?
            .ok_or_else(|| Status::unavailable("the test double discarded this held append"))?;
        use append_resp::success::{CurrentRevisionOption, PositionOption};
        let success = |revision: Option<u64>, position: Option<(u64, u64)>| {
            append_resp::Result::Success(append_resp::Success {
                current_revision_option: Some(match revision {
                    Some(r) => CurrentRevisionOption::CurrentRevision(r),
                    None => CurrentRevisionOption::NoStream(Empty {}),
                }),
                position_option: Some(match position {
                    Some((commit, prepare)) => PositionOption::Position(append_resp::Position {
                        commit_position: commit,
                        prepare_position: prepare,
                    }),
                    None => PositionOption::NoPosition(Empty {}),
                }),
            })
        };
        let result = match outcome {
            Outcome::Written { revision, position } => success(Some(revision), Some(position)),
            Outcome::Idempotent { revision } => success(Some(revision), None),
            Outcome::Nothing { revision } => success(revision, None),
            Outcome::WrongExpectedVersion { current } => wrong_expected_version(current, expected),
            Outcome::TooLarge { size } => {
                let mut status = Status::invalid_argument(format!(
                    "Maximum Append Size of {} Exceeded ({size} bytes).",
                    self.0.max_append_size
                ));
                if let Ok(value) = "maximum-append-size-exceeded".parse() {
                    status.metadata_mut().insert("exception", value);
                }
                return Err(status);
            }
        };
        Ok(Response::new(AppendResp {
            result: Some(result),
        }))
    }

    async fn delete(&self, _: Request<DeleteReq>) -> Result<Response<DeleteResp>, Status> {
        Err(not_in_the_double("Streams.Delete"))
    }

    async fn tombstone(&self, _: Request<TombstoneReq>) -> Result<Response<TombstoneResp>, Status> {
        Err(not_in_the_double("Streams.Tombstone"))
    }

    async fn batch_append(
        &self,
        _: Request<Streaming<BatchAppendReq>>,
    ) -> Result<Response<Self::BatchAppendStream>, Status> {
        Err(not_in_the_double("Streams.BatchAppend"))
    }
}

impl StreamsService {
    /// A catch-up subscription to `$all`: every event after the start that
    /// passes the filter, in `$all` order, then each new one as it is written,
    /// until the client goes away.
    fn subscribe(
        &self,
        stream_option: Option<read_req::options::StreamOption>,
        filter: Filter,
    ) -> Result<Response<Stream_<ReadResp>>, Status> {
        use read_req::options::all_options::AllOption;
        let Some(read_req::options::StreamOption::All(all)) = stream_option else {
            return Err(not_in_the_double("a subscription to one stream"));
        };
        let state = self.0.clone();
        let mut cursor = match all.all_option {
            Some(AllOption::Start(_)) => None,
            Some(AllOption::End(_)) => state.log().end(),
            Some(AllOption::Position(p)) => Some((p.commit_position, p.prepare_position)),
            None => return Err(Status::invalid_argument("a subscription without a start")),
        };
        state.counters.subscriptions.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = mpsc::channel(SUBSCRIPTION_BATCH);
        tokio::spawn(async move {
            let confirmation =
                read_resp::Content::Confirmation(read_resp::SubscriptionConfirmation {
                    subscription_id: format!(
                        "subscription-{}",
                        state.counters.subscriptions.load(Ordering::Relaxed)
                    ),
                });
            if sender.send(Ok(content(confirmation))).await.is_err() {
                return;
            }
            let mut written = state.written.subscribe();
            loop {
                written.borrow_and_update();
                let (events, reached) = state.log().after(cursor, SUBSCRIPTION_BATCH, &filter);
                cursor = reached;
                if events.is_empty() {
                    tokio::select! {
                        changed = written.changed() => if changed.is_err() { return },
                        () = sender.closed() => return,
                    }
                    continue;
                }
                for e in &events {
                    if sender.send(Ok(event(e, true))).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }
}

fn content(content: read_resp::Content) -> ReadResp {
    ReadResp {
        content: Some(content),
    }
}

/// An event as a read answers it; `of_all` for a read of `$all`, which also
/// gives the event's commit position as the read's own.
fn event(e: &Stored, of_all: bool) -> ReadResp {
    use read_resp::read_event::{Position, RecordedEvent};
    let metadata = [
        ("type", e.event_type.clone()),
        ("content-type", e.content_type.clone()),
        ("created", e.created_ticks.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    content(read_resp::Content::Event(read_resp::ReadEvent {
        event: Some(RecordedEvent {
            id: Some(ProtoUuid {
                value: Some(proto_uuid::Value::String(e.id.to_string())),
            }),
            stream_identifier: Some(StreamIdentifier {
                stream_name: e.stream.clone(),
            }),
            stream_revision: e.revision,
            prepare_position: e.prepare,
            commit_position: e.commit,
            metadata,
            custom_metadata: e.custom_metadata.clone(),
            data: e.data.clone(),
        }),
        link: None,
        position: Some(if of_all {
            Position::CommitPosition(e.commit)
        } else {
            Position::NoPosition(Empty {})
        }),
    }))
}

fn event_id(id: Option<ProtoUuid>) -> Result<::uuid::Uuid, Status> {
    match id.and_then(|u| u.value) {
        Some(proto_uuid::Value::Structured(s)) => {
            let high = (s.most_significant_bits as u64 as u128) << 64;
            Ok(::uuid::Uuid::from_u128(
                high | s.least_significant_bits as u64 as u128,
            ))
        }
        Some(proto_uuid::Value::String(s)) => s
            .parse()
            .map_err(|e| Status::invalid_argument(format!("a bad event id {s:?}: {e}"))),
        None => Err(Status::invalid_argument("an event without an id")),
    }
}

fn filter(option: Option<read_req::options::FilterOption>) -> Result<Filter, Status> {
    use read_req::options::FilterOption;
    use read_req::options::filter_options::Filter as Kind;
    match option {
        None | Some(FilterOption::NoFilter(_)) => Ok(Filter::default()),
        Some(FilterOption::Filter(options)) => match options.filter {
            Some(Kind::StreamIdentifier(expression)) if expression.regex.is_empty() => Ok(Filter {
                prefixes: Some(
                    expression
                        .prefix
                        .into_iter()
                        .map(String::into_bytes)
                        .collect(),
                ),
            }),
            Some(Kind::StreamIdentifier(_)) => {
                Err(not_in_the_double("a regular-expression filter"))
            }
            Some(Kind::EventType(_)) => Err(not_in_the_double("an event-type filter")),
            None => Err(Status::invalid_argument("a filter without an expression")),
        },
    }
}

fn wrong_expected_version(current: Option<u64>, expected: Expected) -> append_resp::Result {
    use append_resp::wrong_expected_version::{
        CurrentRevisionOption, CurrentRevisionOption2060, ExpectedRevisionOption,
        ExpectedRevisionOption2060,
    };
    let (current_now, current_old) = match current {
        Some(r) => (
            CurrentRevisionOption::CurrentRevision(r),
            CurrentRevisionOption2060::CurrentRevision2060(r),
        ),
        None => (
            CurrentRevisionOption::CurrentNoStream(Empty {}),
            CurrentRevisionOption2060::NoStream2060(Empty {}),
        ),
    };
    let (expected_now, expected_old) = match expected {
        Expected::Revision(r) => (
            ExpectedRevisionOption::ExpectedRevision(r),
            Some(ExpectedRevisionOption2060::ExpectedRevision2060(r)),
        ),
        Expected::Any => (
            ExpectedRevisionOption::ExpectedAny(Empty {}),
            Some(ExpectedRevisionOption2060::Any2060(Empty {})),
        ),
        Expected::StreamExists => (
            ExpectedRevisionOption::ExpectedStreamExists(Empty {}),
            Some(ExpectedRevisionOption2060::StreamExists2060(Empty {})),
        ),
        Expected::NoStream => (ExpectedRevisionOption::ExpectedNoStream(Empty {}), None),
    };
    append_resp::Result::WrongExpectedVersion(append_resp::WrongExpectedVersion {
        current_revision_option_20_6_0: Some(current_old),
        expected_revision_option_20_6_0: expected_old,
        current_revision_option: Some(current_now),
        expected_revision_option: Some(expected_now),
    })
}

fn not_in_the_double(what: &str) -> Status {
    Status::unimplemented(format!(
        "{what} is not part of the KurrentDB test double: hookledger's backend does not use it"
    ))
}
