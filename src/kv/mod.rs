//! An ordered key-value store on disk, as the read model and the embedded
//! log's index use it: named tables of byte keys and values, consistent
//! snapshots to read from, and atomic batches of writes. [`RedbKv`] is the one
//! the server uses (redb; BENCHMARKS.md says why it was chosen).
//!
//! Every value is stored with a CRC32C over its table, key and bytes, checked
//! on every read: the engine checks its page checksums only when it repairs,
//! so a byte that changed on the disk would otherwise be served. What fails
//! its check is refused as [`Error::Corrupt`], never returned.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{ReadableDatabase, TableDefinition};

pub mod layered;

/// A table of a store; every table a store uses is named when it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Table(pub &'static str);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value failed its checksum, or the engine found its file damaged.
    #[error("{} is damaged: {reason}", file.display())]
    Corrupt { file: PathBuf, reason: String },
    /// Another process has the file open.
    #[error("{} is open in another process", .0.display())]
    Locked(PathBuf),
    /// The engine failed to read or write.
    #[error("{} failed: {reason}", file.display())]
    Storage { file: PathBuf, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a scan calls with each key and value it passes.
pub type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<Flow> + 'a;

/// A table of redb as this module opens it: byte keys to byte values.
type WriteTable<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;
type ReadTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// Whether a scan goes on after an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// A consistent view of everything committed before it was taken.
pub trait KvRead: Send + Sync {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Calls `each` with the entries whose keys lie between `from` and `to`,
    /// in ascending key order, or descending with `reverse`, until it says stop.
    fn scan(
        &self,
        table: Table,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
        each: &mut Visit<'_>,
    ) -> Result<()>;
}

/// A store: snapshots to read, atomic batches to write.
pub trait Kv: Send + Sync + std::fmt::Debug {
    fn read(&self) -> Result<Arc<dyn KvRead>>;

    /// Applies `batch` atomically. A batch that is not `durable` may be lost
    /// in a crash, with every batch after it, back to the last durable one;
    /// never in part.
    fn write(&self, batch: &WriteBatch, durable: bool) -> Result<()>;

    /// The file, for messages.
    fn path(&self) -> &Path;
}

/// Writes to apply together.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    ops: Vec<(Table, Vec<u8>, Option<Vec<u8>>)>,
    bytes: usize,
}

impl WriteBatch {
    pub fn put(&mut self, table: Table, key: Vec<u8>, value: Vec<u8>) {
        self.bytes += key.len() + value.len();
        self.ops.push((table, key, Some(value)));
    }

    pub fn delete(&mut self, table: Table, key: Vec<u8>) {
        self.bytes += key.len();
        self.ops.push((table, key, None));
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Bytes of keys and values.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The writes, in the order they were added; a later write of a key wins.
    pub fn ops(&self) -> impl Iterator<Item = (Table, &[u8], Option<&[u8]>)> {
        self.ops
            .iter()
            .map(|(t, k, v)| (*t, k.as_slice(), v.as_deref()))
    }
}

/// `value` as stored: the bytes, then the CRC32C of table, key and bytes.
pub fn seal(table: Table, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 4);
    out.extend_from_slice(value);
    out.extend_from_slice(&checksum(table, key, value).to_le_bytes());
    out
}

/// The value inside what [`seal`] stored, if its checksum holds.
pub fn unseal<'a>(table: Table, key: &[u8], stored: &'a [u8]) -> Option<&'a [u8]> {
    let (value, crc) = stored.split_last_chunk::<4>()?;
    (checksum(table, key, value) == u32::from_le_bytes(*crc)).then_some(value)
}

fn checksum(table: Table, key: &[u8], value: &[u8]) -> u32 {
    let crc = crc32c::crc32c(table.0.as_bytes());
    let crc = crc32c::crc32c_append(crc, &(key.len() as u32).to_le_bytes());
    let crc = crc32c::crc32c_append(crc, key);
    crc32c::crc32c_append(crc, value)
}

fn unsealed(file: &Path, table: Table, key: &[u8], stored: &[u8]) -> Result<Vec<u8>> {
    unseal(table, key, stored)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| corrupt_value(file, table, key))
}

fn corrupt_value(file: &Path, table: Table, key: &[u8]) -> Error {
    Error::Corrupt {
        file: file.to_owned(),
        reason: format!(
            "a value in table {} (key {}) fails its checksum",
            table.0,
            String::from_utf8_lossy(key).escape_debug()
        ),
    }
}

/// The redb store.
pub struct RedbKv {
    db: redb::Database,
    path: PathBuf,
    tables: Vec<Table>,
}

impl std::fmt::Debug for RedbKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbKv")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn open_error(path: &Path, e: redb::DatabaseError) -> Error {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => Error::Locked(path.to_owned()),
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(reason)) => Error::Corrupt {
            file: path.to_owned(),
            reason,
        },
        other => {
            let reason = other.to_string();
            if reason.contains("orrupt") || reason.contains("invalid") {
                Error::Corrupt {
                    file: path.to_owned(),
                    reason,
                }
            } else {
                Error::Storage {
                    file: path.to_owned(),
                    reason,
                }
            }
        }
    }
}

fn definition(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(table.0)
}

impl RedbKv {
    /// Opens the store at `path`, creating it with `tables` if it does not
    /// exist; `cache` bytes of its pages are kept in memory.
    pub fn open(path: &Path, tables: &[Table], cache: usize) -> Result<RedbKv> {
        let mut builder = redb::Builder::new();
        builder.set_cache_size(cache);
        // Made through `files`, so only the server's user can read it.
        let file = crate::files::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::Storage {
                file: path.to_owned(),
                reason: e.to_string(),
            })?;
        let backend = redb::backends::FileBackend::new(file).map_err(|e| open_error(path, e))?;
        let db = builder
            .create_with_backend(backend)
            .map_err(|e| open_error(path, e))?;
        RedbKv::with_tables(db, path.to_owned(), tables)
    }

    /// A store that lives in memory only, for tests and tools.
    pub fn in_memory(tables: &[Table]) -> Result<RedbKv> {
        let path = PathBuf::from("(in memory)");
        let db = redb::Builder::new()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| open_error(&path, e))?;
        RedbKv::with_tables(db, path, tables)
    }

    fn with_tables(db: redb::Database, path: PathBuf, tables: &[Table]) -> Result<RedbKv> {
        let kv = RedbKv {
            db,
            path,
            tables: tables.to_vec(),
        };
        // Every table exists from the start, so a snapshot can open them all.
        let mut tx = kv.db.begin_write().map_err(|e| kv.storage(e))?;
        tx.set_quick_repair(true);
        for &table in tables {
            tx.open_table(definition(table))
                .map_err(|e| kv.storage(e))?;
        }
        tx.commit().map_err(|e| kv.storage(e))?;
        Ok(kv)
    }

    fn storage(&self, e: impl std::fmt::Display) -> Error {
        let reason = e.to_string();
        if reason.contains("orrupt") {
            Error::Corrupt {
                file: self.path.clone(),
                reason,
            }
        } else {
            Error::Storage {
                file: self.path.clone(),
                reason,
            }
        }
    }
}

impl Kv for RedbKv {
    fn read(&self) -> Result<Arc<dyn KvRead>> {
        let tx = self.db.begin_read().map_err(|e| self.storage(e))?;
        let mut tables = Vec::with_capacity(self.tables.len());
        for &table in &self.tables {
            let opened = tx
                .open_table(definition(table))
                .map_err(|e| self.storage(e))?;
            tables.push((table, opened));
        }
        Ok(Arc::new(RedbRead {
            tables,
            path: self.path.clone(),
        }))
    }

    fn write(&self, batch: &WriteBatch, durable: bool) -> Result<()> {
        let mut tx = self.db.begin_write().map_err(|e| self.storage(e))?;
        let durability = if durable {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        };
        tx.set_durability(durability).map_err(|e| self.storage(e))?;
        tx.set_quick_repair(true);
        {
            let mut open: Vec<(Table, WriteTable<'_>)> = Vec::new();
            for (table, key, value) in batch.ops() {
                let index = match open.iter().position(|(t, _)| *t == table) {
                    Some(index) => index,
                    None => {
                        let opened = tx
                            .open_table(definition(table))
                            .map_err(|e| self.storage(e))?;
                        open.push((table, opened));
                        open.len() - 1
                    }
                };
                let target = &mut open[index].1;
                match value {
                    Some(value) => {
                        let sealed = seal(table, key, value);
                        target
                            .insert(key, sealed.as_slice())
                            .map_err(|e| self.storage(e))?;
                    }
                    None => {
                        target.remove(key).map_err(|e| self.storage(e))?;
                    }
                }
            }
        }
        tx.commit().map_err(|e| self.storage(e))
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

struct RedbRead {
    tables: Vec<(Table, ReadTable)>,
    path: PathBuf,
}

impl RedbRead {
    fn table(&self, table: Table) -> Result<&ReadTable> {
        self.tables
            .iter()
            .find(|(t, _)| *t == table)
            .map(|(_, opened)| opened)
            .ok_or_else(|| Error::Storage {
                file: self.path.clone(),
                reason: format!("no table {} in this store", table.0),
            })
    }

    fn storage(&self, e: impl std::fmt::Display) -> Error {
        Error::Storage {
            file: self.path.clone(),
            reason: e.to_string(),
        }
    }
}

impl KvRead for RedbRead {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let found = self.table(table)?.get(key).map_err(|e| self.storage(e))?;
        found
            .map(|stored| unsealed(&self.path, table, key, stored.value()))
            .transpose()
    }

    fn scan(
        &self,
        table: Table,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
        each: &mut Visit<'_>,
    ) -> Result<()> {
        let opened = self.table(table)?;
        let range = opened
            .range::<&[u8]>((from, to))
            .map_err(|e| self.storage(e))?;
        let mut visit = |entry: Result<_, redb::StorageError>| -> Result<Flow> {
            let (key, stored): (redb::AccessGuard<&[u8]>, redb::AccessGuard<&[u8]>) =
                entry.map_err(|e| self.storage(e))?;
            let key = key.value();
            let value = unseal(table, key, stored.value())
                .ok_or_else(|| corrupt_value(&self.path, table, key))?;
            each(key, value)
        };
        if reverse {
            for entry in range.rev() {
                if visit(entry)? == Flow::Stop {
                    break;
                }
            }
        } else {
            for entry in range {
                if visit(entry)? == Flow::Stop {
                    break;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROWS: Table = Table("rows");
    const OTHER: Table = Table("other");

    fn open(dir: &Path) -> RedbKv {
        RedbKv::open(&dir.join("kv.redb"), &[ROWS, OTHER], 1 << 20).unwrap()
    }

    #[test]
    fn a_batch_is_read_back_and_a_snapshot_does_not_see_later_writes() {
        let dir = tempfile::tempdir().unwrap();
        let kv = open(dir.path());
        let mut batch = WriteBatch::default();
        for key in ["b", "a", "c"] {
            batch.put(ROWS, key.as_bytes().to_vec(), key.repeat(3).into_bytes());
        }
        batch.put(OTHER, b"a".to_vec(), b"other".to_vec());
        kv.write(&batch, false).unwrap();
        let before = kv.read().unwrap();
        let mut next = WriteBatch::default();
        next.delete(ROWS, b"a".to_vec());
        next.put(ROWS, b"d".to_vec(), b"ddd".to_vec());
        kv.write(&next, true).unwrap();
        let after = kv.read().unwrap();

        assert_eq!(
            before.get(ROWS, b"a").unwrap().as_deref(),
            Some(&b"aaa"[..])
        );
        assert_eq!(before.get(ROWS, b"d").unwrap(), None);
        assert_eq!(after.get(ROWS, b"a").unwrap(), None);
        assert_eq!(
            after.get(OTHER, b"a").unwrap().as_deref(),
            Some(&b"other"[..])
        );

        let mut seen = Vec::new();
        after
            .scan(
                ROWS,
                Bound::Unbounded,
                Bound::Excluded(b"d"),
                true,
                &mut |k, v| {
                    seen.push((k.to_vec(), v.to_vec()));
                    Ok(Flow::Continue)
                },
            )
            .unwrap();
        assert_eq!(
            seen,
            [
                (b"c".to_vec(), b"ccc".to_vec()),
                (b"b".to_vec(), b"bbb".to_vec())
            ]
        );
    }

    #[test]
    fn a_changed_byte_in_a_value_is_refused_not_returned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.redb");
        {
            let kv = open(dir.path());
            let mut batch = WriteBatch::default();
            batch.put(ROWS, b"key".to_vec(), b"the original value".to_vec());
            kv.write(&batch, true).unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes
            .windows(8)
            .position(|w| w == b"original")
            .expect("the value is in the file");
        bytes[at] = b'O';
        std::fs::write(&path, bytes).unwrap();

        let kv = open(dir.path());
        let error = kv.read().unwrap().get(ROWS, b"key").unwrap_err();
        assert!(matches!(error, Error::Corrupt { .. }), "{error}");
    }

    #[test]
    fn a_second_open_of_the_same_file_is_refused_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(dir.path());
        let second = RedbKv::open(&dir.path().join("kv.redb"), &[ROWS], 1 << 20);
        assert!(matches!(second, Err(Error::Locked(_))));
    }

    #[test]
    fn a_value_sealed_under_another_key_or_table_does_not_unseal() {
        let sealed = seal(ROWS, b"k1", b"v");
        assert_eq!(unseal(ROWS, b"k1", &sealed), Some(&b"v"[..]));
        assert_eq!(unseal(ROWS, b"k2", &sealed), None);
        assert_eq!(unseal(OTHER, b"k1", &sealed), None);
        assert_eq!(unseal(ROWS, b"k1", &sealed[..2]), None);
    }
}
