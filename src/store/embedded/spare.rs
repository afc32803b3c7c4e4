//! The spare segment: the file the next segment will be, made of written
//! zeros on a thread of its own while the active segment fills.
//!
//! Appends go into written zeros so that the sync after them flushes data and
//! no inode (see [`LogFile::allocate`]). Writing and syncing those zeros takes
//! the device a while, and every append waiting on the writer waits with it;
//! under steady load that pause came every couple of MiB of log and held every
//! request in flight. With a spare ready, starting a segment costs the writer
//! a header, a sync, a rename and a directory sync, as creating one did, and
//! the segment is zeros to its end.
//!
//! The first spare is asked for once the log holds a little (the less of a
//! megabyte and half a segment), so a store that stays small never writes a
//! segment of zeros it does not need.
//!
//! The spare lives at `DIR/log/next.spare` and is never part of the log: it is
//! named as a segment only once its header is written and synced, and an open
//! removes a spare a crash or a stop left behind. When a spare cannot be made
//! (a full disk, say) the writer starts segments as before, and the next
//! segment start asks for a spare again.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::store::embedded::fs::{Fs, LogFile};

/// The spare's name in the log's directory; not a segment's (`*.seg`).
pub const FILE_NAME: &str = "next.spare";

/// Zeros written and synced at a time while a spare is made.
const STEP: u64 = 1 << 20;

/// A spare ready to become a segment: zeros written and synced up to `size`.
#[derive(Debug)]
pub struct Ready {
    pub file: Box<dyn LogFile>,
    pub path: PathBuf,
    pub size: u64,
}

/// Where the spare is. Only the spare's thread touches its file while it is
/// `Making`; only the writer once it is `Taken`.
#[derive(Debug, Default)]
enum State {
    /// None is ready and none is asked for (one could not be made).
    #[default]
    Idle,
    Wanted,
    Making,
    Ready(Ready),
    /// The writer took it and is making it a segment.
    Taken,
    Stop,
}

#[derive(Debug, Default)]
struct Control {
    state: Mutex<State>,
    wake: Condvar,
}

impl Control {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Keeps one spare segment ready. Its thread stops when it is dropped.
#[derive(Debug)]
pub struct Spare {
    control: Arc<Control>,
    thread: Option<JoinHandle<()>>,
}

impl Spare {
    /// Starts the thread that makes spares of `size` bytes in `log_dir`; the
    /// first is made when [`Spare::renew`] first asks for one.
    pub fn start(fs: Arc<dyn Fs>, log_dir: &Path, size: u64) -> io::Result<Spare> {
        let control = Arc::new(Control::default());
        let path = log_dir.join(FILE_NAME);
        let thread = std::thread::Builder::new()
            .name("log-spare".into())
            .spawn({
                let control = control.clone();
                move || make_spares(&control, fs.as_ref(), &path, size)
            })?;
        Ok(Spare {
            control,
            thread: Some(thread),
        })
    }

    /// Whether a spare is ready to be taken.
    pub fn is_ready(&self) -> bool {
        matches!(*self.control.lock(), State::Ready(_))
    }

    /// The spare, if one is ready. Never waits for one being made.
    pub fn take(&self) -> Option<Ready> {
        let mut state = self.control.lock();
        match std::mem::take(&mut *state) {
            State::Ready(ready) => {
                *state = State::Taken;
                Some(ready)
            }
            other => {
                *state = other;
                None
            }
        }
    }

    /// Asks for the next spare once the one taken has left the spare's name,
    /// or after one could not be made; while one is being made, it waits for that.
    pub fn renew(&self) {
        let mut state = self.control.lock();
        if matches!(*state, State::Taken | State::Idle) {
            *state = State::Wanted;
            drop(state);
            self.control.wake.notify_one();
        }
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        *self.control.lock() = State::Stop;
        self.control.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn make_spares(control: &Control, fs: &dyn Fs, path: &Path, size: u64) {
    let mut warned = false;
    loop {
        let mut state = control.lock();
        loop {
            match *state {
                State::Stop => return,
                State::Wanted => break,
                _ => state = control.wake.wait(state).unwrap_or_else(|e| e.into_inner()),
            }
        }
        *state = State::Making;
        drop(state);
        let made = fs.create(path).and_then(|mut file| {
            // A step at a time, each synced: the device never holds much of
            // the spare unwritten, so a sync of the log never waits behind it.
            let mut done = 0;
            while done < size {
                done = (done + STEP).min(size);
                file.allocate(done)?;
            }
            Ok(file)
        });
        let next = match made {
            Ok(file) => {
                warned = false;
                State::Ready(Ready {
                    file,
                    path: path.to_owned(),
                    size,
                })
            }
            Err(e) => {
                // Give the space back; the next segment start asks again.
                let _ = fs.remove(path);
                if !warned {
                    tracing::warn!(file = %path.display(), error = %e,
                        "cannot make the next log segment ahead; segments are made as they are needed");
                }
                warned = true;
                State::Idle
            }
        };
        let mut state = control.lock();
        if matches!(*state, State::Stop) {
            return;
        }
        *state = next;
    }
}

/// Removes a spare a crash or a stop left in `log_dir`: it may be half made,
/// and it holds nothing of the log.
pub fn remove_leftover(log_dir: &Path, fs: &dyn Fs) -> io::Result<()> {
    let path = log_dir.join(FILE_NAME);
    match fs.remove(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
