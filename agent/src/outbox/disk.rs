//! The outbox's whole contact with the file system, as one small interface, so that a
//! test can put a simulated disk under it ([`super::power_cut::PowerCutDisk`]: a disk
//! that loses whatever was not fsynced when the power goes) while the agent runs on
//! [`RealDisk`].
//!
//! Every call names a path; [`RealDisk`] keeps the segment being appended to open between
//! calls, so an append costs what it did with a bare `File`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What the outbox asks of a disk.
pub trait Disk: Send + Sync + std::fmt::Debug {
    /// Makes a directory and its parents.
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()>;
    /// The paths in a directory.
    fn list(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>>;
    /// A whole file.
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
    /// `buf.len()` bytes at `offset`.
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
    /// Creates an empty file if there is none; its length.
    fn create(&self, path: &Path) -> std::io::Result<u64>;
    /// Appends to a file.
    fn append(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()>;
    /// Cuts (or extends) a file to `len`.
    fn set_len(&self, path: &Path, len: u64) -> std::io::Result<()>;
    /// fsync: the file's data is durable.
    fn sync(&self, path: &Path) -> std::io::Result<()>;
    /// Creates or truncates a file and writes `bytes` into it.
    fn write(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()>;
    /// Renames (replacing `to`).
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()>;
    /// Unlinks a file.
    fn remove(&self, path: &Path) -> std::io::Result<()>;
    /// fsync of a directory: creations, renames and unlinks in it are durable.
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default)]
pub struct RealDisk {
    /// The file last appended to, kept open.
    open: Mutex<Option<(PathBuf, File)>>,
}

impl RealDisk {
    fn with_open<T>(
        &self,
        path: &Path,
        f: impl FnOnce(&mut File) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.as_ref().is_none_or(|(p, _)| p != path) {
            let file = OpenOptions::new().append(true).open(path)?;
            *open = Some((path.to_path_buf(), file));
        }
        f(&mut open.as_mut().expect("just opened").1)
    }

    fn forget(&self, path: &Path) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.as_ref().is_some_and(|(p, _)| p == path) {
            *open = None;
        }
    }
}

impl Disk for RealDisk {
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.path()))
            .collect()
    }

    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        File::open(path)?.read_to_end(&mut buf)?;
        Ok(buf)
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        File::open(path)?.read_exact_at(buf, offset)
    }

    fn create(&self, path: &Path) -> std::io::Result<u64> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = Some((path.to_path_buf(), file));
        Ok(len)
    }

    fn append(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        self.with_open(path, |f| f.write_all(bytes))
    }

    fn set_len(&self, path: &Path, len: u64) -> std::io::Result<()> {
        self.with_open(path, |f| f.set_len(len))
    }

    fn sync(&self, path: &Path) -> std::io::Result<()> {
        self.with_open(path, |f| f.sync_data())
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        self.forget(path);
        let mut f = File::create(path)?;
        f.write_all(bytes)?;
        // The next sync of this path opens it again (and fsyncs the same inode).
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.forget(from);
        self.forget(to);
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.forget(path);
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        attest::durable::sync_dir(dir)
    }
}
