//! The group-commit writer: one thread that owns the active segment.
//!
//! Appends queue up on a channel while the previous fsync runs; the writer then
//! takes all of them, looks up the tips and claims they touch in the index,
//! stages them in one [`Staging`](crate::store::sequencer::Staging), writes their
//! frames in one write (all but the last marked as continuing, so a crash
//! mid-write drops the whole batch), syncs once, and only after the sync
//! succeeds extends the index, publishes the head and replies. A failed write
//! or sync fails every append of the batch and cuts the file back to its last
//! durable length before anything else is written; nothing is ever
//! acknowledged that a sync did not cover. Starting segments is in
//! [`segments`].

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Instant;

use crate::store::embedded::fs::Fs;
use crate::store::embedded::index::Place;
use crate::store::embedded::spare::Spare;
use crate::store::embedded::{Shared, frame, segment};
use crate::store::sequencer::{Sequencer, now_micros};
use crate::store::{Appended, Error, Held, Result};

mod segments;

use segments::ALLOCATE_LOW;
pub use segments::Active;

/// Event bytes one batch takes at most; later appends wait for the next batch.
const BATCH_BYTES: usize = 16 * 1024 * 1024;

/// One append waiting for the writer.
pub use crate::store::sequencer::Pending as Request;

/// What the writer is asked to do.
#[derive(Debug)]
pub enum Command {
    Append(Request),
    /// Start a new segment now if the active one holds any frame, so that
    /// every frame written so far lies in a sealed segment, which a
    /// compaction may rewrite. Answered once the new segment is durable.
    Seal(tokio::sync::oneshot::Sender<io::Result<()>>),
}

#[derive(Debug)]
pub struct Writer {
    pub fs: Arc<dyn Fs>,
    pub log_dir: PathBuf,
    pub segment_size: u64,
    /// The last durable position.
    head: u64,
    /// The latest time stamped on an event.
    clock: i64,
    pub active: Option<Active>,
    pub shared: Arc<Shared>,
    /// The active file may hold bytes past `active.len` from a failed write.
    damaged: bool,
    /// Why the index stopped taking batches: appends are refused until a
    /// restart indexes the log's tail again.
    broken: Option<String>,
    pending: VecDeque<Request>,
    /// The last allocation failed; it is tried again all the same.
    allocate_failing: bool,
    /// The next segment's file, made ahead of need.
    spare: Option<Spare>,
    /// The last segment start failed.
    roll_failed: bool,
    /// The first spare was asked for (see [`spare`](crate::store::embedded::spare)).
    spare_asked: bool,
}

impl Writer {
    pub fn new(
        fs: Arc<dyn Fs>,
        log_dir: PathBuf,
        segment_size: u64,
        head: u64,
        clock: i64,
        active: Option<Active>,
        shared: Arc<Shared>,
    ) -> Writer {
        Writer {
            fs,
            log_dir,
            segment_size,
            head,
            clock,
            active,
            shared,
            damaged: false,
            broken: None,
            pending: VecDeque::new(),
            allocate_failing: false,
            spare: None,
            roll_failed: false,
            spare_asked: false,
        }
    }

    /// Starts segments from `spare` when it has one ready.
    pub fn with_spare(mut self, spare: Option<Spare>) -> Writer {
        self.spare = spare;
        self
    }

    /// Serves appends until every sender is gone.
    pub fn run(mut self, commands: Receiver<Command>) {
        loop {
            if self.pending.is_empty() {
                match commands.recv() {
                    Ok(command) => self.take(command),
                    Err(_) => return,
                }
            }
            for command in commands.try_iter() {
                self.take(command);
            }
            if self.pending.is_empty() {
                continue;
            }
            let mut size = 0;
            let mut batch = Vec::new();
            while let Some(request) = self.pending.pop_front() {
                size += request.size();
                batch.push(request);
                if size >= BATCH_BYTES {
                    break;
                }
            }
            self.commit(batch);
            for command in commands.try_iter() {
                self.take(command);
            }
            // Allocate in a lull too, so a batch under steady load rarely waits
            // for it; unless a spare is ready to take over when the zeros run low.
            if self.pending.is_empty()
                && !self.damaged
                && !self.spare_ready()
                && let Some(active) = self.active.as_mut()
            {
                let need = active.len + ALLOCATE_LOW;
                active.allocate_ahead(need, self.segment_size, &mut self.allocate_failing);
            }
        }
    }

    /// Queues an append, or seals the active segment at once.
    fn take(&mut self, command: Command) {
        match command {
            Command::Append(request) => self.pending.push_back(request),
            Command::Seal(reply) => {
                let _ = reply.send(self.seal());
            }
        }
    }

    fn seal(&mut self) -> io::Result<()> {
        if let Some(reason) = &self.broken {
            return Err(io::Error::other(reason.clone()));
        }
        self.recover()?;
        let holds_frames = self
            .active
            .as_ref()
            .is_some_and(|a| a.len > segment::HEADER_LEN as u64);
        if holds_frames { self.roll() } else { Ok(()) }
    }

    fn commit(&mut self, mut requests: Vec<Request>) {
        if let Some(reason) = &self.broken {
            let e = io::Error::other(reason.clone());
            return fail(
                requests,
                "the log's index failed; restart to index the log again",
                &e,
            );
        }
        if let Err(e) = self.recover().and_then(|()| self.roll_if_full()) {
            return fail(requests, "log not writable", &e);
        }
        let sequencer = match self.sequencer_for(&requests) {
            Ok(sequencer) => sequencer,
            Err(e) => {
                let results = requests.iter().map(|_| Err(copy_error(&e))).collect();
                return reply(requests, results);
            }
        };
        let mut batch = sequencer.staging();
        let mut results = batch.stage_pending(&mut requests, now_micros());
        let (records, staged) = batch.finish();
        if records.is_empty() {
            return reply(requests, results);
        }
        let mut buf = Vec::new();
        let mut places = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            // From the batch's start, until its segment is known.
            let at = buf.len() as u64;
            let continues = i + 1 < records.len();
            match frame::encode(record, continues, &mut buf) {
                Ok(len) => places.push(Place {
                    position: record.position,
                    offset: at,
                    len: len as u64,
                }),
                Err(reason) => {
                    let e = io::Error::new(io::ErrorKind::InvalidData, reason);
                    return fail(requests, "encoding a frame", &e);
                }
            }
        }
        // A spare ready is cheaper than zeros written while the batch waits.
        if self.needs_zeros(buf.len())
            && self.spare_ready()
            && let Err(e) = self.roll()
        {
            return fail(requests, "starting a segment", &e);
        }
        let Some(active) = self.active.as_mut() else {
            return fail(
                requests,
                "log not writable",
                &io::Error::other("no active segment"),
            );
        };
        for place in &mut places {
            place.offset += active.len;
        }
        let end = active.len + buf.len() as u64;
        active.allocate_ahead(end, self.segment_size, &mut self.allocate_failing);
        let started = Instant::now();
        let written = active
            .file
            .write_at(active.len, &buf)
            .map_err(|e| ("writing", e))
            .and_then(|()| active.file.sync().map_err(|e| ("syncing", e)));
        self.shared.count_fsync();
        let took = started.elapsed();
        if let Err((what, e)) = written {
            self.damaged = true;
            // Cut the failed bytes off now; if that fails too, the next batch retries.
            let _ = self.recover();
            let context = format!("{what} {}", active_path(&self.active));
            for result in results.iter_mut().filter(|r| r.is_ok()) {
                *result = Err(io_error(&context, &e));
            }
            return reply(requests, results);
        }
        self.shared.commit_clock.record(took);
        active.len = end;
        active.size = active.size.max(end);
        self.ask_for_a_spare();
        self.head = staged.head();
        self.clock = staged.clock();
        let claims: Vec<(String, Held)> = staged.claims().map(|(c, h)| (c.to_owned(), h)).collect();
        if let Err(e) = self.shared.publish(records, &places, &claims) {
            tracing::error!(error = %e, "the log's index stopped taking batches; appends are refused until a restart");
            self.broken = Some(e.to_string());
        }
        let acknowledged = results.iter().filter(|r| r.is_ok()).count() as u64;
        self.shared.count_batch(acknowledged);
        reply(requests, results);
    }

    /// The state `requests` are decided against: the head and clock, and the
    /// tips and claims they touch, from the index.
    fn sequencer_for(&self, requests: &[Request]) -> Result<Sequencer> {
        let lookup = self.shared.index.lookup();
        let mut tips = HashMap::new();
        let mut claims = HashMap::new();
        for request in requests {
            if !tips.contains_key(&request.stream)
                && let Some(tip) = lookup.tip(&request.stream)?
            {
                tips.insert(request.stream.clone(), tip);
            }
            for claim in &request.claims {
                if !claims.contains_key(&claim.name)
                    && let Some(held) = lookup.claim(&claim.name)?
                {
                    claims.insert(claim.name.clone(), held);
                }
            }
        }
        Ok(Sequencer::resume(self.head, self.clock, tips, claims))
    }

    /// Cuts the active file back to its durable length after a failed write.
    fn recover(&mut self) -> io::Result<()> {
        if !self.damaged {
            return Ok(());
        }
        let Some(active) = self.active.as_mut() else {
            self.damaged = false;
            return Ok(());
        };
        tracing::warn!(file = %active.path.display(), len = active.len, "cutting back a failed write");
        active.file.truncate(active.len)?;
        active.size = active.len;
        self.shared.count_fsync();
        active.file.sync()?;
        self.damaged = false;
        Ok(())
    }
}

fn active_path(active: &Option<Active>) -> String {
    active
        .as_ref()
        .map_or_else(String::new, |a| a.path.display().to_string())
}

/// An error for each append of a batch: the store's error type is not Clone.
fn copy_error(e: &Error) -> Error {
    Error::Unavailable(e.to_string())
}

fn io_error(context: &str, e: &io::Error) -> Error {
    // io::Error is not Clone; every failed append gets its own copy.
    Error::io(context, io::Error::new(e.kind(), e.to_string()))
}

fn fail(requests: Vec<Request>, context: &str, e: &io::Error) {
    let results = requests.iter().map(|_| Err(io_error(context, e))).collect();
    reply(requests, results);
}

fn reply(requests: Vec<Request>, results: Vec<Result<Appended>>) {
    for (request, result) in requests.into_iter().zip(results) {
        // The caller may have gone away; its append stands all the same.
        let _ = request.reply.send(result);
    }
}
