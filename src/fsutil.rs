//! Small file-system steps shared by the stores: directories only their
//! owner can read, and syncing a directory so a rename or a new file in it
//! survives a crash.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// Creates `dir` and any missing parents with mode 0700: the data directory
/// holds every tenant's payloads and key hashes.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Syncs `dir`, making the entries created, renamed or removed in it durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
