//! The read model's store, chosen by measuring the candidates on the read
//! model's own workload (`Shape::scale`: 1 KiB payloads, 2 endpoints, 3
//! attempts per delivery), each behind the same `kv::Kv` interface the server
//! uses, under the same folds and overlays:
//!
//! - **fold and commit**: the workload folded into the model and written out
//!   in batches, against folding it into memory alone (`MemoryRows`);
//! - **point reads**: random deliveries read back through the model, the
//!   store's cache a quarter of the data, against the same reads in memory;
//! - **open after SIGKILL**: a child process loads the workload with the
//!   server's settings and is killed while it writes; the time to open the
//!   store and read its position, against opening it again after a clean close.
//!
//! Candidates: redb (the server's) and fjall. LMDB (heed) is not among them:
//! its map is in the process's address space, so its resident memory grows
//! with the data the process touches, which no cache setting bounds, and
//! opening an environment is `unsafe`, which this workspace forbids.
//!
//! `cargo bench --bench model_store`. Knobs: `HOOKLEDGER_BENCH_STORE_EVENTS`
//! (log events folded, default 2 000 000), `HOOKLEDGER_BENCH_KILL_EVENTS` (log
//! events before the kill, default 16 000 000; 0 skips it).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use common::workload::{Shape, each_recorded};
use common::{Target, env_u64, figure};
use hookledger::kv::{self, Flow, Kv, KvRead, RedbKv, Table, WriteBatch};
use hookledger::model::{self, Chain, Decoded, Model};
use projections::{MemoryRows, Settings};

const CHILD: &str = "HOOKLEDGER_BENCH_MODEL_STORE_CHILD";
const BATCH: usize = 4096;

fn main() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    common::machine("model_store");
    let total = env_u64("HOOKLEDGER_BENCH_STORE_EVENTS", 2_000_000);
    let shape = Shape::scale(total);
    let work = tempfile::tempdir().expect("temp dir");

    // The baseline: the same folds into memory.
    let t = Instant::now();
    let mut memory = MemoryRows::default();
    let mut folded = 0u64;
    each_recorded(shape, |recorded| {
        let Ok(()) = projections::apply(&mut memory, &recorded, &Settings::default());
        folded += 1;
    });
    let in_memory = folded as f64 / t.elapsed().as_secs_f64();
    println!("folded {folded} events into memory: {in_memory:.0} events/s");
    let ids = sample_deliveries(shape, 100_000);
    let memory_reads = time_reads(&ids, |org, id| {
        std::hint::black_box(memory.tenant(org).and_then(|t| t.delivery(id)).is_some())
    });
    drop(memory);

    for engine in Engine::ALL {
        let dir = work.path().join(engine.name());
        let data = data_bytes(shape);
        let kv = engine.open(&dir, data / 4);
        let model = Model::start(
            kv,
            Chain::default(),
            None,
            // The overlay size `projections rebuild` gets with the default cache.
            model::Options::bulk(Settings::default(), model::Memory::of(192 << 20).overlay),
        )
        .expect("model");
        let t = Instant::now();
        fold_into(&model, shape);
        model.close().expect("close");
        let secs = t.elapsed().as_secs_f64();
        let disk = dir_bytes(&dir);
        figure(
            &format!("{}: fold and commit", engine.name()),
            folded as f64 / secs,
            "events/s",
            "the same folds into memory",
            in_memory,
            Target::None,
        );
        println!(
            "  {}: {} MB on disk, {:.0} bytes per delivery",
            engine.name(),
            disk / 1_000_000,
            disk as f64 / shape.deliveries() as f64
        );
        // Reads through a fresh open, so the cache holds only what they touch.
        drop(model);
        let kv = engine.open(&dir, data / 4);
        let view_model =
            Model::start(kv, Chain::default(), None, model::Options::default()).expect("model");
        let view = view_model.view();
        let reads = time_reads(&ids, |org, id| {
            std::hint::black_box(view.delivery(org, id).expect("read").is_some())
        });
        figure(
            &format!("{}: point read p50", engine.name()),
            reads.0,
            "us",
            "the same read in memory",
            memory_reads.0,
            Target::None,
        );
        figure(
            &format!("{}: point read p99", engine.name()),
            reads.1,
            "us",
            "the same read in memory",
            memory_reads.1,
            Target::None,
        );
        drop(view);
        drop(view_model);
    }

    let kill_events = env_u64("HOOKLEDGER_BENCH_KILL_EVENTS", 16_000_000);
    if kill_events > 0 {
        for engine in Engine::ALL {
            let dir = work.path().join(format!("{}-killed", engine.name()));
            let (after_kill, clean) = open_after_kill(engine, &dir, kill_events);
            figure(
                &format!(
                    "{}: open after SIGKILL at {kill_events} events",
                    engine.name()
                ),
                after_kill,
                "s",
                "open after a clean close",
                clean,
                Target::None,
            );
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    common::done("model_store");
}

/// The candidates.
#[derive(Debug, Clone, Copy)]
enum Engine {
    Redb,
    Fjall,
}

impl Engine {
    const ALL: [Engine; 2] = [Engine::Redb, Engine::Fjall];

    fn name(self) -> &'static str {
        match self {
            Engine::Redb => "redb",
            Engine::Fjall => "fjall",
        }
    }

    fn parse(name: &str) -> Engine {
        match name {
            "redb" => Engine::Redb,
            _ => Engine::Fjall,
        }
    }

    fn open(self, dir: &Path, cache: usize) -> Arc<dyn Kv> {
        std::fs::create_dir_all(dir).expect("dir");
        match self {
            Engine::Redb => Arc::new(
                RedbKv::open(&dir.join("model.redb"), &model::tables::ALL, cache).expect("redb"),
            ),
            Engine::Fjall => Arc::new(FjallKv::open(dir, cache).expect("fjall")),
        }
    }
}

/// About what the workload's rows hold, to size the caches against.
fn data_bytes(shape: Shape) -> usize {
    (shape.events * 1200 + shape.deliveries() * 300 + shape.attempts * 150) as usize
}

fn fold_into(model: &Model, shape: Shape) {
    let mut batch = Vec::with_capacity(BATCH);
    each_recorded(shape, |recorded| {
        let hash = position_hash(recorded.position);
        batch.push(Decoded { recorded, hash });
        if batch.len() == BATCH {
            model.apply(&batch).expect("fold");
            batch.clear();
        }
    });
    model.apply(&batch).expect("fold");
}

/// A stand-in for an event's hash: the digest folds it like any other.
fn position_hash(position: u64) -> [u8; 32] {
    let mut hash = [0; 32];
    hash[..8].copy_from_slice(&position.to_be_bytes());
    hash
}

fn sample_deliveries(shape: Shape, n: usize) -> Vec<(String, String)> {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            shape.delivery(seed % shape.deliveries())
        })
        .collect()
}

/// p50 and p99 of `read` over `ids`, in microseconds.
fn time_reads(ids: &[(String, String)], mut read: impl FnMut(&str, &str) -> bool) -> (f64, f64) {
    let mut micros: Vec<u32> = ids
        .iter()
        .map(|(org, id)| {
            let t = Instant::now();
            assert!(read(org, id), "delivery {id} not found");
            t.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32
        })
        .collect();
    micros.sort_unstable();
    let at = |p: f64| micros[((micros.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    (at(0.5), at(0.99))
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let path = e.path();
                    if path.is_dir() {
                        dir_bytes(&path)
                    } else {
                        e.metadata().map_or(0, |m| m.len())
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Loads `events` in a child process with the server's settings, kills it
/// while it writes, and times opening the store after the kill and again
/// after a clean close.
fn open_after_kill(engine: Engine, dir: &Path, events: u64) -> (f64, f64) {
    let mut child = Command::new(std::env::current_exe().expect("the bench"))
        .env(
            CHILD,
            format!("{}:{}:{events}", engine.name(), dir.display()),
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("the loading child");
    let lines = BufReader::new(child.stdout.take().expect("stdout"));
    let t = Instant::now();
    for line in lines.lines() {
        let line = line.expect("a line");
        if line.starts_with("loaded") {
            break;
        }
    }
    println!(
        "  {}: the child loaded {events} events in {:.0} s; killing it as it writes",
        engine.name(),
        t.elapsed().as_secs_f64()
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let _ = child.wait();
    let open = |dir: &Path| {
        let t = Instant::now();
        let kv = engine.open(dir, 64 << 20);
        let position = kv
            .read()
            .expect("read")
            .get(model::tables::META, b"tip")
            .expect("meta")
            .map_or(0, |tip| {
                u64::from_be_bytes(tip[..8].try_into().unwrap_or_default())
            });
        (t.elapsed().as_secs_f64(), position, kv)
    };
    let (after_kill, position, kv) = open(dir);
    println!(
        "  {}: opened after the kill in {after_kill:.3} s at position {position} of {events}",
        engine.name()
    );
    drop(kv);
    let (clean, _, kv) = open(dir);
    drop(kv);
    (after_kill, clean)
}

/// The child: loads the workload with the server's settings, says so, and
/// goes on writing until it is killed.
fn child(spec: &str) {
    let mut parts = spec.splitn(3, ':');
    let engine = Engine::parse(parts.next().expect("engine"));
    let dir = PathBuf::from(parts.next().expect("dir"));
    let events: u64 = parts.next().expect("events").parse().expect("a number");
    let shape = Shape::scale(events);
    let kv = engine.open(&dir, 256 << 20);
    let model = Model::start(kv, Chain::default(), None, model::Options::default()).expect("model");
    let mut batch = Vec::with_capacity(BATCH);
    let mut said = false;
    let mut position = 0;
    loop {
        each_recorded(shape, |recorded| {
            position += 1;
            let mut recorded = recorded;
            recorded.position = position;
            let hash = position_hash(position);
            batch.push(Decoded { recorded, hash });
            if batch.len() == BATCH {
                model.apply(&batch).expect("fold");
                batch.clear();
            }
            if !said && position >= events {
                said = true;
                println!("loaded");
                let _ = std::io::stdout().flush();
            }
        });
    }
}

/// fjall behind the store interface, for the comparison alone.
struct FjallKv {
    db: fjall::Database,
    keyspaces: Vec<(Table, fjall::Keyspace)>,
    path: PathBuf,
}

impl std::fmt::Debug for FjallKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallKv")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn fjall_error(path: &Path, e: impl std::fmt::Display) -> kv::Error {
    kv::Error::Storage {
        file: path.to_owned(),
        reason: e.to_string(),
    }
}

impl FjallKv {
    fn open(dir: &Path, cache: usize) -> Result<FjallKv, kv::Error> {
        let db = fjall::Database::builder(dir)
            .cache_size(cache as u64)
            .open()
            .map_err(|e| fjall_error(dir, e))?;
        let mut keyspaces = Vec::new();
        for table in model::tables::ALL {
            let ks = db
                .keyspace(table.0, fjall::KeyspaceCreateOptions::default)
                .map_err(|e| fjall_error(dir, e))?;
            keyspaces.push((table, ks));
        }
        Ok(FjallKv {
            db,
            keyspaces,
            path: dir.to_owned(),
        })
    }

    fn keyspace(&self, table: Table) -> &fjall::Keyspace {
        &self
            .keyspaces
            .iter()
            .find(|(t, _)| *t == table)
            .expect("a table of the model")
            .1
    }
}

impl Kv for FjallKv {
    fn read(&self) -> Result<Arc<dyn KvRead>, kv::Error> {
        Ok(Arc::new(FjallRead {
            snapshot: self.db.snapshot(),
            keyspaces: self.keyspaces.clone(),
            path: self.path.clone(),
        }))
    }

    fn write(&self, batch: &WriteBatch, durable: bool) -> Result<(), kv::Error> {
        let mut b = self.db.batch();
        for (table, key, value) in batch.ops() {
            let ks = self.keyspace(table);
            match value {
                Some(value) => b.insert(ks, key.to_vec(), kv::seal(table, key, value)),
                None => b.remove(ks, key.to_vec()),
            }
        }
        b.commit().map_err(|e| fjall_error(&self.path, e))?;
        if durable {
            self.db
                .persist(fjall::PersistMode::SyncAll)
                .map_err(|e| fjall_error(&self.path, e))?;
        }
        Ok(())
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

struct FjallRead {
    snapshot: fjall::Snapshot,
    keyspaces: Vec<(Table, fjall::Keyspace)>,
    path: PathBuf,
}

impl FjallRead {
    fn keyspace(&self, table: Table) -> &fjall::Keyspace {
        &self
            .keyspaces
            .iter()
            .find(|(t, _)| *t == table)
            .expect("a table of the model")
            .1
    }
}

impl KvRead for FjallRead {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, kv::Error> {
        use fjall::Readable;
        let found = self
            .snapshot
            .get(self.keyspace(table), key)
            .map_err(|e| fjall_error(&self.path, e))?;
        found
            .map(|stored| {
                kv::unseal(table, key, &stored)
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| fjall_error(&self.path, "a value fails its checksum"))
            })
            .transpose()
    }

    fn scan(
        &self,
        table: Table,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
        each: &mut kv::Visit<'_>,
    ) -> Result<(), kv::Error> {
        use fjall::Readable;
        let owned = |b: Bound<&[u8]>| match b {
            Bound::Included(k) => Bound::Included(k.to_vec()),
            Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let range = self
            .snapshot
            .range::<Vec<u8>, _>(self.keyspace(table), (owned(from), owned(to)));
        let mut visit = |guard: fjall::Guard| -> Result<Flow, kv::Error> {
            let (key, stored) = guard.into_inner().map_err(|e| fjall_error(&self.path, e))?;
            let value = kv::unseal(table, &key, &stored)
                .ok_or_else(|| fjall_error(&self.path, "a value fails its checksum"))?;
            each(&key, value)
        };
        if reverse {
            for guard in range.rev() {
                if visit(guard)? == Flow::Stop {
                    break;
                }
            }
        } else {
            for guard in range {
                if visit(guard)? == Flow::Stop {
                    break;
                }
            }
        }
        Ok(())
    }
}
