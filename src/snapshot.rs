//! Read-model snapshots: the folded state with the position it reflects, so a
//! restart replays only the tail of the log.
//!
//! A snapshot is derived data and never trusted blindly: its checksum, format and
//! the hash of the event at its position are checked against the log on load, and
//! anything that does not match is rebuilt from the log. Writes are atomic: a temp
//! file is written and fsynced, then renamed over the old one and the directory
//! fsynced, so a crash leaves either the old snapshot or the new one.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use projections::ReadModel;

use crate::chain::{Hash, LedgerDigest};

const MAGIC: &[u8; 8] = b"HKLGSNAP";
/// Bump on any change to the archived form of the read model. 2: records boxed
/// in their maps, event status counts.
const FORMAT: u32 = 2;
/// Magic, format, CRC32C of the body, body length.
const HEADER_LEN: usize = 8 + 4 + 4 + 8;

/// What a snapshot holds: the read model, the ledger digest and the hash of the
/// event at the same position, which ties the snapshot to one particular log.
#[derive(Debug, Clone, Default, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Snapshot {
    pub model: ReadModel,
    pub digest: LedgerDigest,
    /// The hash of the event at `digest.position`; zeros for an empty log.
    pub last_hash: Hash,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no snapshot at {}", .0.display())]
    Missing(PathBuf),
    #[error("snapshot {} is unusable: {reason}", file.display())]
    Corrupt { file: PathBuf, reason: String },
    #[error("snapshot I/O failed on {}: {source}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The snapshot file of a data directory.
pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots").join("readmodel.snap")
}

impl Snapshot {
    pub fn position(&self) -> u64 {
        self.digest.position
    }

    /// Encodes the snapshot: a fixed header, then the rkyv body.
    pub fn encode(&self) -> Vec<u8> {
        let body =
            rkyv::to_bytes::<rkyv::rancor::Error>(self).expect("a read model always serialises");
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    pub fn decode(bytes: &[u8], file: &Path) -> Result<Snapshot, Error> {
        let Some(header) = bytes.first_chunk::<HEADER_LEN>() else {
            return Err(corrupt(
                file,
                "not a hookledger snapshot (bad magic or too short)".into(),
            ));
        };
        let (crc, len) = check_header(header, file)?;
        let body = &bytes[HEADER_LEN..];
        if body.len() as u64 != len {
            return Err(corrupt(
                file,
                format!("body is {} bytes, header says {len}", body.len()),
            ));
        }
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(body.len());
        aligned.extend_from_slice(body);
        decode_body(&aligned, crc, file)
    }

    /// Reads and decodes the snapshot in `file`. The body is read straight into
    /// aligned memory: a snapshot of a million deliveries is half a gigabyte,
    /// and a second copy of it was a tenth of a restart.
    pub fn load(file: &Path) -> Result<Snapshot, Error> {
        let io = |source| Error::Io {
            file: file.to_owned(),
            source,
        };
        let mut reader = match File::open(file) {
            Ok(reader) => reader,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Missing(file.to_owned()));
            }
            Err(source) => return Err(io(source)),
        };
        let size = reader.metadata().map_err(io)?.len();
        let mut header = [0u8; HEADER_LEN];
        if size < HEADER_LEN as u64 {
            return Err(corrupt(
                file,
                "not a hookledger snapshot (bad magic or too short)".into(),
            ));
        }
        reader.read_exact(&mut header).map_err(io)?;
        let (crc, len) = check_header(&header, file)?;
        let body_len = size - HEADER_LEN as u64;
        if body_len != len {
            return Err(corrupt(
                file,
                format!("body is {body_len} bytes, header says {len}"),
            ));
        }
        let len = usize::try_from(len).map_err(|_| corrupt(file, "too large".into()))?;
        let mut body = rkyv::util::AlignedVec::<16>::with_capacity(len);
        body.resize(len, 0);
        reader.read_exact(body.as_mut_slice()).map_err(io)?;
        decode_body(&body, crc, file)
    }

    /// Writes the snapshot atomically.
    pub fn save(&self, file: &Path) -> Result<(), Error> {
        write_atomically(file, &self.encode())
    }
}

fn corrupt(file: &Path, reason: String) -> Error {
    Error::Corrupt {
        file: file.to_owned(),
        reason,
    }
}

/// Checks the magic and format; returns the body's CRC and length.
fn check_header(header: &[u8; HEADER_LEN], file: &Path) -> Result<(u32, u64), Error> {
    if &header[..8] != MAGIC {
        return Err(corrupt(
            file,
            "not a hookledger snapshot (bad magic or too short)".into(),
        ));
    }
    let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let format = word(8);
    if format != FORMAT {
        return Err(corrupt(
            file,
            format!("format {format}; this build reads format {FORMAT}"),
        ));
    }
    let len = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
    Ok((word(12), len))
}

fn decode_body(
    body: &rkyv::util::AlignedVec<16>,
    crc: u32,
    file: &Path,
) -> Result<Snapshot, Error> {
    if crc32c::crc32c(body) != crc {
        return Err(corrupt(file, "checksum mismatch".into()));
    }
    rkyv::from_bytes::<Snapshot, rkyv::rancor::Error>(body)
        .map_err(|e| corrupt(file, format!("body does not decode: {e}")))
}

/// Writes `bytes` to `file` so that a crash leaves the old file or the new one:
/// temp file, fsync, rename, fsync of the directory.
pub fn write_atomically(file: &Path, bytes: &[u8]) -> Result<(), Error> {
    let io = |source| Error::Io {
        file: file.to_owned(),
        source,
    };
    let dir = file
        .parent()
        .expect("a snapshot path has a parent directory");
    crate::files::create_dir_all(dir).map_err(io)?;
    // One temp name per process: `projections rebuild` may save beside a server.
    let tmp = file.with_extension(format!("snap.tmp.{}", std::process::id()));
    let mut out = crate::files::create(&tmp).map_err(io)?;
    out.write_all(bytes).map_err(io)?;
    out.sync_all().map_err(io)?;
    drop(out);
    fs::rename(&tmp, file).map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        let mut digest = LedgerDigest::default();
        digest.fold(1, &[7; 32]);
        let model = ReadModel {
            position: 1,
            ..Default::default()
        };
        Snapshot {
            model,
            digest,
            last_hash: [7; 32],
        }
    }

    #[test]
    fn a_saved_snapshot_loads_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        let file = path_in(dir.path());
        sample().save(&file).unwrap();
        assert_eq!(Snapshot::load(&file).unwrap(), sample());
        let leftovers: Vec<_> = fs::read_dir(file.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("readmodel.snap")]);
    }

    #[test]
    fn any_flipped_byte_is_refused() {
        let bytes = sample().encode();
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x01;
            assert!(
                Snapshot::decode(&bad, Path::new("x")).is_err(),
                "a flip at byte {at} went unnoticed"
            );
        }
    }

    #[test]
    fn a_truncated_snapshot_is_refused() {
        let bytes = sample().encode();
        for len in [0, 7, HEADER_LEN, bytes.len() - 1] {
            assert!(Snapshot::decode(&bytes[..len], Path::new("x")).is_err());
        }
    }
}
