//! When the ledger cannot serve: a failing store and a stopped projector answer
//! 503 problems with `Retry-After`, never leak the cause, and append nothing.
//!
//! The I/O-fault tests put a fault-injecting file layer under the real embedded
//! store and serve it over TCP: ENOSPC and EIO on write, and EIO on fsync, answer
//! 503 problem+json, leave no partial frame in the log, and the server recovers
//! by itself once writes succeed again. A failed fsync is never followed by an
//! acknowledgement of the bytes it failed to sync: the writer cuts them off and
//! reports the append failed, even though a later fsync succeeds.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use hookledger::node::Node;
use hookledger::store::embedded::{self, EmbeddedStore, Fs, LogFile, Options, RealFs};
use hookledger::store::memory::MemoryStore;
use hookledger::store::{self, Appended, EventStore, ExpectedVersion, NewEvent, RecordedEvent};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{TestApp, TestNode, spawn_app, spawn_app_with};

/// A memory store whose appends fail while `failing` is set.
#[derive(Debug, Default)]
struct FlakyStore {
    inner: MemoryStore,
    failing: AtomicBool,
}

#[async_trait::async_trait]
impl EventStore for FlakyStore {
    async fn append_claimed(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        claims: Vec<hookledger::store::Claim>,
    ) -> store::Result<Appended> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(store::Error::io(
                "appending",
                std::io::Error::other("disk on fire"),
            ));
        }
        self.inner
            .append_claimed(stream, expected, events, claims)
            .await
    }

    async fn read_stream(
        &self,
        stream: &str,
        from: u64,
        max: usize,
    ) -> store::Result<Vec<RecordedEvent>> {
        self.inner.read_stream(stream, from, max).await
    }

    async fn read_all(&self, from: u64, max: usize) -> store::Result<Vec<RecordedEvent>> {
        self.inner.read_all(from, max).await
    }

    async fn wait_beyond(&self, after: u64) -> store::Result<u64> {
        self.inner.wait_beyond(after).await
    }

    fn head(&self) -> u64 {
        self.inner.head()
    }
}

#[tokio::test]
async fn a_failing_store_is_503_with_retry_after_and_no_cause() {
    let store = Arc::new(FlakyStore::default());
    let node = Node::start(store.clone(), hookledger::projector::Config::in_memory())
        .await
        .expect("the node opens");
    let app = spawn_app_with(node, |state| state).await;
    let d = app.delivery().await;
    let head = app.head();

    store.failing.store(true, Ordering::SeqCst);
    let reply = app
        .record_attempt(&d, &json!({"status": "delivered"}))
        .await;

    reply.assert_problem(503, None);
    assert!(reply.header("retry-after").is_some());
    assert!(
        !reply.body.to_string().contains("disk on fire"),
        "the cause is only logged"
    );
    assert_eq!(app.head(), head);
    store.failing.store(false, Ordering::SeqCst);
    let retried = app
        .record_attempt(&d, &json!({"status": "delivered"}))
        .await;
    assert_eq!(retried.status, StatusCode::OK);
    assert_eq!(app.attempt_count(&d).await, 1);
}

#[tokio::test]
async fn a_stopped_projector_makes_the_api_unavailable() {
    let app = spawn_app().await;
    let d = app.delivery().await;
    // An event no fold understands stops the projector.
    let bogus = NewEvent {
        event_type: "NoSuchEvent".into(),
        schema_version: 1,
        data: b"{}".to_vec(),
        metadata: b"{}".to_vec(),
        content: Vec::new(),
    };
    app.node
        .store
        .append("bogus-1", ExpectedVersion::Any, vec![bogus])
        .await
        .unwrap();
    let stopped = app.node.projector.wait_for(app.head()).await;
    assert!(
        stopped.is_err(),
        "the projector stops on an event it cannot fold"
    );
    let head = app.head();

    let ready = app.send(app.bare(Method::GET, "/readyz")).await;
    ready.assert_problem(503, None);
    assert!(ready.header("retry-after").is_some());
    app.get("/v1/outbound-webhook-endpoints")
        .await
        .assert_problem(503, None);
    app.record_attempt(&d, &json!({"status": "delivered"}))
        .await
        .assert_problem(503, None);
    assert_eq!(
        app.head(),
        head,
        "no write is decided against a stale model"
    );
    let health = app.send(app.bare(Method::GET, "/healthz")).await;
    assert_eq!(health.status, StatusCode::OK, "the process itself is alive");
}

/// What the fault layer does to the next writes and syncs of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// A full disk: half of each write lands, then ENOSPC.
    EnospcOnWrite,
    /// A failing device: a quarter of each write lands, then EIO.
    EioOnWrite,
    /// The next fsync fails with EIO after the bytes reached the file; later ones
    /// succeed, as on Linux, where the failed pages may be dropped in between.
    EioOnNextFsync,
}

/// Every operation the store made on its log files, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Write { offset: u64, len: usize, ok: bool },
    Sync { ok: bool },
    Truncate { len: u64 },
    Allocate { len: u64 },
}

#[derive(Debug)]
struct Faults {
    fault: Mutex<Fault>,
    ops: Mutex<Vec<Op>>,
}

impl Faults {
    fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap().clone()
    }

    fn log(&self, op: Op) {
        self.ops.lock().unwrap().push(op);
    }
}

#[derive(Debug)]
struct FaultyFs(Arc<Faults>);

#[derive(Debug)]
struct FaultyFile(Box<dyn LogFile>, Arc<Faults>);

impl Fs for FaultyFs {
    fn open(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        Ok(Box::new(FaultyFile(RealFs.open(path)?, self.0.clone())))
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        Ok(Box::new(FaultyFile(RealFs.create(path)?, self.0.clone())))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        RealFs.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        RealFs.sync_dir(dir)
    }
}

const ENOSPC: i32 = 28;
const EIO: i32 = 5;

impl LogFile for FaultyFile {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let fault = *self.1.fault.lock().unwrap();
        let (landed, errno) = match fault {
            Fault::EnospcOnWrite => (buf.len() / 2, ENOSPC),
            Fault::EioOnWrite => (buf.len() / 4, EIO),
            Fault::None | Fault::EioOnNextFsync => {
                self.1.log(Op::Write {
                    offset,
                    len: buf.len(),
                    ok: true,
                });
                return self.0.write_at(offset, buf);
            }
        };
        self.1.log(Op::Write {
            offset,
            len: buf.len(),
            ok: false,
        });
        self.0.write_at(offset, &buf[..landed])?;
        Err(io::Error::from_raw_os_error(errno))
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut fault = self.1.fault.lock().unwrap();
        if *fault == Fault::EioOnNextFsync {
            *fault = Fault::None;
            drop(fault);
            self.1.log(Op::Sync { ok: false });
            return Err(io::Error::from_raw_os_error(EIO));
        }
        drop(fault);
        self.1.log(Op::Sync { ok: true });
        self.0.sync()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.1.log(Op::Truncate { len });
        self.0.truncate(len)
    }

    fn allocate(&mut self, len: u64) -> io::Result<()> {
        self.1.log(Op::Allocate { len });
        self.0.allocate(len)
    }
}

/// The API on the embedded store in `dir`, every log write through the fault layer.
async fn faulty_app(dir: &Path) -> (TestApp, Arc<Faults>) {
    let faults = Arc::new(Faults {
        fault: Mutex::new(Fault::None),
        ops: Mutex::new(Vec::new()),
    });
    let options = Options {
        fs: Arc::new(FaultyFs(faults.clone())),
        // One fault for every file, and one record of every operation: the
        // spare segment, made on a thread of its own, would take the writer's
        // fault or interleave its operations with the writer's.
        spare_segment: false,
        ..Options::default()
    };
    let store = EmbeddedStore::open_with(dir, options).expect("the store opens");
    let node = Node::start(Arc::new(store), hookledger::projector::Config::in_dir(dir))
        .await
        .expect("the node opens");
    let app = spawn_app_with(TestNode::from(node), |state| state).await;
    (app, faults)
}

/// The head of the log on disk, failing if it ends in a partial frame.
fn on_disk(dir: &Path) -> u64 {
    let report = embedded::scan(dir).expect("the log scans");
    assert_eq!(report.torn_tail, None, "the log holds a partial frame");
    report.head
}

/// The `lastError` of every attempt in the history.
async fn recorded(app: &TestApp, delivery: &str) -> Vec<String> {
    app.history(delivery)
        .await
        .iter()
        .map(|a| a["lastError"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn attempt(app: &TestApp, delivery: &str, marker: &str) -> crate::helpers::Reply {
    app.record_attempt(delivery, &json!({"status": "failed", "lastError": marker}))
        .await
}

#[tokio::test]
async fn enospc_and_eio_on_write_are_503_with_no_partial_frame_and_recover_by_themselves() {
    for fault in [Fault::EnospcOnWrite, Fault::EioOnWrite] {
        let dir = tempfile::tempdir().unwrap();
        let (app, faults) = faulty_app(dir.path()).await;
        let d = app.delivery().await;
        assert_eq!(attempt(&app, &d, "before").await.status, StatusCode::OK);
        let head = app.head();

        faults.set(fault);
        for i in 0..3 {
            let reply = attempt(&app, &d, &format!("refused {i}")).await;
            reply.assert_problem(503, None);
            assert!(reply.header("retry-after").is_some(), "{fault:?}");
            assert_eq!(app.head(), head, "{fault:?}: a failed write moved the head");
            assert_eq!(on_disk(dir.path()), head, "{fault:?}");
        }
        let ready = app.send(app.bare(Method::GET, "/readyz")).await;
        assert_eq!(
            ready.status,
            StatusCode::OK,
            "{fault:?}: reads and readiness go on"
        );

        faults.set(Fault::None);
        let reply = attempt(&app, &d, "after").await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{fault:?}: no recovery without a restart"
        );
        assert_eq!(recorded(&app, &d).await, ["before", "after"], "{fault:?}");
        assert_eq!(on_disk(dir.path()), head + 1, "{fault:?}");
        assert!(
            faults
                .ops()
                .iter()
                .any(|op| matches!(op, Op::Write { ok: false, .. })),
            "{fault:?}: the fault was never hit"
        );
    }
}

#[tokio::test]
async fn a_failed_fsync_is_never_acknowledged_even_when_the_next_one_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let (app, faults) = faulty_app(dir.path()).await;
    let d = app.delivery().await;
    assert_eq!(attempt(&app, &d, "before").await.status, StatusCode::OK);
    let head = app.head();
    let ops_before = faults.ops().len();

    faults.set(Fault::EioOnNextFsync);
    let reply = attempt(&app, &d, "unsynced").await;

    reply.assert_problem(503, None);
    assert!(reply.header("retry-after").is_some());
    assert_eq!(app.head(), head);
    assert_eq!(
        on_disk(dir.path()),
        head,
        "the unsynced frame was left in the log"
    );
    // What the writer did: wrote, failed to sync, then cut the bytes off and
    // made the cut durable before anything else; it did not sync again and
    // call the write good.
    let ops = faults.ops()[ops_before..].to_vec();
    let Some(Op::Write {
        offset, ok: true, ..
    }) = ops.first().cloned()
    else {
        panic!("the attempt was not written first: {ops:?}");
    };
    assert_eq!(
        ops[..3],
        [
            ops[0].clone(),
            Op::Sync { ok: false },
            Op::Truncate { len: offset }
        ],
        "{ops:?}"
    );
    assert_eq!(ops[3], Op::Sync { ok: true }, "the cut is synced: {ops:?}");

    let reply = attempt(&app, &d, "after").await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the server recovers by itself"
    );
    assert_eq!(recorded(&app, &d).await, ["before", "after"]);
    let reader = EmbeddedStore::open_read_only(dir.path()).unwrap();
    let everything = reader.read_all(1, usize::MAX).await.unwrap();
    assert!(
        !everything
            .iter()
            .any(|e| String::from_utf8_lossy(&e.data).contains("unsynced")),
        "the unsynced attempt is on disk"
    );
    assert_eq!(everything.len() as u64, head + 1);
}
