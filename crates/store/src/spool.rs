//! Spool files: where an arriving instance is streamed before it is parsed and persisted.
//!
//! Bytes are written as they arrive (C-STORE PDVs, STOW parts, file copies) to a fresh file in the
//! spool directory, hashed (SHA-256) and counted on the way, so no instance is ever held whole in
//! memory. The size limit is enforced while writing. A spool file that is dropped before
//! [`SpoolWriter::finish`] is deleted; a crash leaves it behind, and start-up empties the spool
//! directory (nothing in it was ever acknowledged).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The lock file of a spool directory (see [`SpoolLock`]).
pub const LOCK_FILE: &str = ".lock";

/// An exclusive `flock` on a spool directory's [`LOCK_FILE`], held for a process's lifetime:
/// only its holder empties the spool at start-up, fills it with journal files and ingests
/// leftover journal files again (`crate::journal`). Another process opening the same data
/// directory while a server runs (`vesalius admin check`) gets none and leaves the spool alone.
pub struct SpoolLock {
    /// The open lock file: the lock lasts as long as it is open.
    _held: File,
}

impl SpoolLock {
    /// Takes the lock, or `None` when another process holds it.
    #[allow(unsafe_code)]
    pub fn try_acquire(dir: &Path) -> Result<Option<SpoolLock>> {
        use std::os::fd::AsRawFd;
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(Error::Spool)?;
        // SAFETY: a valid open descriptor; flock only changes the lock on its open file.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            return Ok(Some(SpoolLock { _held: f }));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(None)
        } else {
            Err(Error::Spool(e))
        }
    }
}

/// Streams one object to a spool file.
pub struct SpoolWriter {
    file: Option<std::io::BufWriter<File>>,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
    max_size: u64,
    /// Bytes already handed to the kernel's writeback (see [`WRITEBACK_CHUNK`]).
    written_back: u64,
    /// A journal file (see [`crate::journal`]) rather than a fresh spool file.
    journal: bool,
}

/// Every this many bytes, writeback of the spool file is started in the background
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so the fsync before the acknowledgement finds
/// most of the data already on its way to the disk instead of flushing it all at once.
pub const WRITEBACK_CHUNK: u64 = 256 << 10;

/// Starts asynchronous writeback of a byte range (Linux); a hint only, errors are ignored.
#[allow(unsafe_code)]
fn start_writeback(f: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor and plain integer arguments; the call only schedules I/O.
    unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

impl SpoolWriter {
    /// Creates a new spool file in `dir`, refusing to grow beyond `max_size` bytes.
    pub fn create(dir: &Path, max_size: u64) -> Result<Self> {
        let path = dir.join(format!("{}.part", uuid::Uuid::new_v4()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(Error::Spool)?;
        Ok(Self::over(file, path, max_size, false))
    }

    /// Writes into `path`, an empty journal file taken from the journal's pool
    /// ([`crate::journal::Journal::take`]); removed like a spool file when dropped unfinished.
    pub fn journal(path: PathBuf, max_size: u64) -> Result<Self> {
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(Error::Spool)?;
        Ok(Self::over(file, path, max_size, true))
    }

    fn over(file: File, path: PathBuf, max_size: u64, journal: bool) -> Self {
        SpoolWriter {
            file: Some(std::io::BufWriter::with_capacity(256 << 10, file)),
            path,
            hasher: Sha256::new(),
            size: 0,
            max_size,
            written_back: 0,
            journal,
        }
    }

    /// Appends bytes. Fails with [`Error::TooLarge`] past the limit (the file is then removed
    /// when the writer is dropped).
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.size += bytes.len() as u64;
        if self.size > self.max_size {
            return Err(Error::TooLarge(format!(
                "object larger than the limit of {} bytes",
                self.max_size
            )));
        }
        self.hasher.update(bytes);
        let w = self.file.as_mut().expect("spool writer used after finish");
        w.write_all(bytes).map_err(Error::Spool)?;
        if self.size - self.written_back >= WRITEBACK_CHUNK {
            w.flush().map_err(Error::Spool)?;
            start_writeback(
                w.get_ref(),
                self.written_back,
                self.size - self.written_back,
            );
            self.written_back = self.size;
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Flushes and closes the file (not yet synced: see [`SpooledFile::sync`]).
    pub fn finish(mut self) -> Result<SpooledFile> {
        let file = self
            .file
            .take()
            .expect("finish once")
            .into_inner()
            .map_err(|e| Error::Spool(e.into_error()))?;
        let hasher = std::mem::take(&mut self.hasher);
        Ok(SpooledFile {
            path: std::mem::take(&mut self.path),
            file: Some(file),
            size: self.size,
            sha256: hex::encode(hasher.finalize()),
            journal: self.journal,
            recovered: false,
        })
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A complete spooled object, deleted on drop unless persisted.
pub struct SpooledFile {
    path: PathBuf,
    file: Option<File>,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
    /// A journal file (see [`crate::journal`]).
    journal: bool,
    /// Found sealed at start-up: never removed on drop (a failed second ingest keeps it).
    recovered: bool,
}

impl SpooledFile {
    /// Adopts an existing local file as a spooled object (it will be moved into the store).
    pub fn from_parts(path: PathBuf, size: u64, sha256: String) -> Self {
        SpooledFile {
            path,
            file: None,
            size,
            sha256,
            journal: false,
            recovered: false,
        }
    }

    /// A journal file found sealed at start-up, to be ingested again (see [`crate::journal`]).
    pub fn from_journal(path: PathBuf, size: u64, sha256: String) -> Self {
        let mut f = Self::from_parts(path, size, sha256);
        f.journal = true;
        f.recovered = true;
        f
    }

    /// Whether this journal file was found sealed at start-up ([`SpooledFile::from_journal`]).
    pub fn is_recovered(&self) -> bool {
        self.recovered
    }

    /// Whether this is a journal file (see [`crate::journal`]).
    pub fn is_journal(&self) -> bool {
        self.journal
    }

    /// The open file, opened for writing when it is not (blocking).
    pub fn file(&mut self) -> Result<&File> {
        if self.file.is_none() {
            let f = OpenOptions::new()
                .write(true)
                .open(&self.path)
                .map_err(Error::Spool)?;
            self.file = Some(f);
        }
        Ok(self.file.as_ref().expect("just opened"))
    }

    /// The spool file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// fsyncs the file's data (blocking: call from a blocking thread).
    pub fn sync(&mut self) -> Result<()> {
        match &self.file {
            Some(f) => f.sync_all().map_err(Error::Spool),
            None => File::open(&self.path)
                .and_then(|f| f.sync_all())
                .map_err(Error::Spool),
        }
    }

    /// Marks the file as taken over by a store: it will not be deleted on drop.
    pub fn disarm(mut self) {
        self.path = PathBuf::new();
    }
}

impl Drop for SpooledFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() && !self.recovered {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spool_hashes_limits_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SpoolWriter::create(dir.path(), 10).unwrap();
        w.write(b"abc").unwrap();
        let f = w.finish().unwrap();
        assert_eq!(f.size, 3);
        assert_eq!(
            f.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let p = f.path().to_owned();
        assert!(p.exists());
        drop(f);
        assert!(!p.exists());
        let mut w = SpoolWriter::create(dir.path(), 4).unwrap();
        assert!(matches!(w.write(b"hello"), Err(Error::TooLarge(_))));
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
