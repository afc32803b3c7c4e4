//! The data directory holds every tenant's payloads and the hashes of every
//! API key, so only the user the server runs as may read it: directories are
//! made 0700 and files 0600, whatever the umask. Everything that creates a
//! file or directory there goes through here.
//!
//! A data directory made before this rule, with wider modes, is narrowed to
//! 0700 when it is opened; the files in it are then out of others' reach too.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of every directory made in the data directory.
pub const DIR_MODE: u32 = 0o700;
/// The mode of every file made there.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents with mode 0700, and narrows `dir`
/// itself to 0700 if it already existed with group or other bits.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::info!(dir = %dir.display(), mode = format!("{:o}", mode & 0o777), "making the data directory readable by its owner alone (0700)");
        std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// Options that create files with mode 0600.
pub fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// [`File::create`] with mode 0600.
pub fn create(path: &Path) -> io::Result<File> {
    options().write(true).create(true).truncate(true).open(path)
}

/// Syncs `dir`, making the entries created, renamed or removed in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_and_existing_directories_end_up_private() {
        let root = tempfile::tempdir().unwrap();
        let wide = root.path().join("wide");
        std::fs::create_dir(&wide).unwrap();
        std::fs::set_permissions(&wide, Permissions::from_mode(0o755)).unwrap();
        create_dir_all(&wide).unwrap();
        let fresh = wide.join("a/b");
        create_dir_all(&fresh).unwrap();
        for dir in [&wide, &wide.join("a"), &fresh] {
            let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, DIR_MODE, "{}", dir.display());
        }
        let file = fresh.join("f");
        create(&file).unwrap();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, FILE_MODE);
    }
}
