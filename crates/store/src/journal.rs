//! The ingest journal: one flush before each acknowledgement instead of three
//! (docs/architecture.md, "Ingest journal").
//!
//! Without the journal an acknowledgement waits for three syncs in a row: the spool file's data,
//! the directory entry of its final blob key, and the index's WAL. With it, it waits for one:
//!
//! 1. Instances are spooled into **journal files**: empty files created ahead of time in the
//!    spool directory, whose directory entries were made durable in a batch (one directory fsync
//!    for many files), so filling one needs no directory sync.
//! 2. Before the acknowledgement the journal file is **sealed**: the extended attribute
//!    `user.vesalius.journal` records the ingest context, the size and the SHA-256 of the bytes,
//!    and one `fsync` makes data, size and attribute durable together. The file is then
//!    hard-linked to its final blob key and the index row committed, both **without** a sync
//!    ([`crate::BlobStore::persist_unsynced`], [`crate::Index::commit_unsynced`]).
//! 3. A **checkpoint** fsyncs the directories of those keys, makes the index durable
//!    ([`crate::Index::sync`]: one WAL fsync covers every commit before it) and only then
//!    removes the journal files: until then each is the redo record of its instance. It runs
//!    when [`JournalConfig::checkpoint_ms`] has passed since the oldest waiting file, when half
//!    the pool waits, before every deletion (a redo after a deletion would bring the instance
//!    back) and at shutdown.
//! 4. At start-up ([`crate::Ingestor::recover`]) every sealed journal file whose bytes hash to
//!    its recorded SHA-256 is ingested again with its recorded context before the server
//!    serves: links and index commits are idempotent (keys end in the content hash; an
//!    identical instance is a duplicate). A file that is unsealed, or whose bytes do not match
//!    its seal, was never acknowledged (the seal's fsync had not returned) and is removed.
//!
//! Invariants: an acknowledged instance has a sealed, synced journal file or is checkpointed
//! (blob entry and index row durable); a journal file is removed only after the checkpoint that
//! covers it; a journal file's directory entry is durable before the file is handed out.
//!
//! Where the journal cannot be used the ingest takes the three syncs: no journal file free
//! (a burst larger than the pool), a blob store that is not on the local filesystem, or a
//! filesystem without user extended attributes (checked once at start-up).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::index::Index;
use crate::ingest::IngestContext;

/// The extension of journal files in the spool directory.
pub const JOURNAL_EXT: &str = "journal";
/// The extended attribute that seals a journal file.
const SEAL_XATTR: &str = "user.vesalius.journal";
/// Seals longer than this are not written (ext4 keeps all of an inode's attributes in one
/// block): the ingest then takes the three syncs.
const MAX_SEAL: usize = 3072;

/// Settings of the journal (`[storage]` in the configuration).
#[derive(Debug, Clone, Copy)]
pub struct JournalConfig {
    /// Journal files kept ready (each ingest in flight or waiting for a checkpoint holds one).
    pub files: usize,
    /// Longest wait of a sealed file for its checkpoint.
    pub checkpoint_ms: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            files: 128,
            checkpoint_ms: 100,
        }
    }
}

/// What a seal records about the instance in a journal file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Seal {
    /// Sealing order (replayed in this order).
    pub seq: u64,
    /// Size of the bytes.
    pub size: u64,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
    /// Who sent it and how.
    pub ctx: IngestContext,
}

/// One sealed file waiting for its checkpoint.
struct Waiting {
    file: PathBuf,
    dirs: Vec<PathBuf>,
}

#[derive(Default)]
struct State {
    free: VecDeque<PathBuf>,
    waiting: Vec<Waiting>,
    oldest: Option<Instant>,
    seq: u64,
}

/// The journal of one spool directory.
pub struct Journal {
    dir: PathBuf,
    config: JournalConfig,
    index: Arc<dyn Index>,
    state: Mutex<State>,
    wake: tokio::sync::Notify,
    /// One checkpoint at a time (the async lock is held across its awaits).
    checkpointing: tokio::sync::Mutex<()>,
}

impl Journal {
    /// A journal in `dir` (the spool directory) over `index`, or `None` when the filesystem
    /// has no user extended attributes. Fills the pool; journal files already there are left
    /// for [`crate::Ingestor::recover`].
    pub fn open(dir: &Path, index: Arc<dyn Index>, config: JournalConfig) -> Result<Option<Self>> {
        std::fs::create_dir_all(dir).map_err(Error::Spool)?;
        if !xattrs_supported(dir) {
            tracing::info!(dir = %dir.display(), "no user extended attributes here: ingest journal off (three syncs per instance)");
            return Ok(None);
        }
        let j = Journal {
            dir: dir.to_owned(),
            config: JournalConfig {
                files: config.files.max(2),
                ..config
            },
            index,
            state: Mutex::new(State {
                seq: now_us(),
                ..State::default()
            }),
            wake: tokio::sync::Notify::new(),
            checkpointing: tokio::sync::Mutex::new(()),
        };
        j.refill()?;
        Ok(Some(j))
    }

    /// A free journal file, or `None` when every one is in use.
    pub fn take(&self) -> Option<PathBuf> {
        self.state.lock().expect("journal state").free.pop_front()
    }

    /// Whether `file` is a free journal file of this pool (not yet handed out).
    pub fn is_free(&self, file: &Path) -> bool {
        self.state
            .lock()
            .expect("journal state")
            .free
            .iter()
            .any(|f| f == file)
    }

    /// Gives back a journal file that was taken but not sealed (the ingest failed before it):
    /// it is removed (its bytes are not wanted) and replaced at the next refill.
    pub fn discard(&self, file: &Path) {
        let _ = std::fs::remove_file(file);
    }

    /// The next seal for an instance (blocking callers: the file is then fsync'd by the caller).
    pub fn seal(&self, file: &File, size: u64, sha256: &str, ctx: &IngestContext) -> Result<bool> {
        let seq = {
            let mut s = self.state.lock().expect("journal state");
            s.seq += 1;
            s.seq
        };
        let seal = Seal {
            seq,
            size,
            sha256: sha256.to_owned(),
            ctx: ctx.clone(),
        };
        let text = serde_json::to_vec(&seal).map_err(|e| Error::Index(e.to_string()))?;
        if text.len() > MAX_SEAL {
            return Ok(false);
        }
        set_xattr(file, SEAL_XATTR, &text).map_err(Error::Spool)?;
        Ok(true)
    }

    /// Records a sealed, synced, linked and committed journal file until its checkpoint;
    /// `dirs` are the directories whose entries the link left unsynced.
    pub fn committed(&self, file: PathBuf, dirs: Vec<PathBuf>) {
        let due = {
            let mut s = self.state.lock().expect("journal state");
            s.waiting.push(Waiting { file, dirs });
            s.oldest.get_or_insert_with(Instant::now);
            s.waiting.len() * 2 >= self.config.files
        };
        if due {
            self.wake.notify_one();
        }
        metrics::gauge!("vesalius_journal_waiting").increment(1.0);
    }

    /// Files waiting for a checkpoint.
    pub fn waiting(&self) -> usize {
        self.state.lock().expect("journal state").waiting.len()
    }

    /// Makes every committed instance durable without its journal file (see the module doc),
    /// removes those files and refills the pool.
    pub async fn checkpoint(&self) -> Result<()> {
        let _one = self.checkpointing.lock().await;
        let waiting = {
            let mut s = self.state.lock().expect("journal state");
            s.oldest = None;
            std::mem::take(&mut s.waiting)
        };
        if waiting.is_empty() {
            return self.refill_async().await;
        }
        let started = Instant::now();
        let mut dirs: Vec<PathBuf> = waiting.iter().flat_map(|w| w.dirs.clone()).collect();
        dirs.sort();
        dirs.dedup();
        let synced = tokio::task::spawn_blocking(move || -> Result<()> {
            for d in &dirs {
                sync_dir(d).map_err(Error::Spool)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Unavailable(format!("journal checkpoint: {e}")))
        .and_then(|r| r);
        let synced = match synced {
            Ok(()) => self.index.sync().await,
            Err(e) => Err(e),
        };
        if let Err(e) = synced {
            // Nothing removed: the files wait for the next checkpoint.
            let mut s = self.state.lock().expect("journal state");
            let mut again = waiting;
            again.append(&mut s.waiting);
            s.waiting = again;
            s.oldest.get_or_insert_with(Instant::now);
            tracing::error!(error = %e, "journal checkpoint failed; retrying");
            return Err(e);
        }
        let n = waiting.len();
        tokio::task::spawn_blocking(move || {
            for w in waiting {
                let _ = std::fs::remove_file(&w.file);
            }
        })
        .await
        .map_err(|e| Error::Unavailable(format!("journal checkpoint: {e}")))?;
        metrics::gauge!("vesalius_journal_waiting").decrement(n as f64);
        tracing::debug!(
            files = n,
            us = started.elapsed().as_micros() as u64,
            "journal checkpoint"
        );
        self.refill_async().await
    }

    /// Checkpoints whenever one is due, until the journal is dropped by everyone else.
    pub fn spawn_checkpointer(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let period = Duration::from_millis(self.config.checkpoint_ms.max(1));
        tokio::spawn(async move {
            loop {
                let Some(j) = weak.upgrade() else { return };
                let due_in = {
                    let s = j.state.lock().expect("journal state");
                    s.oldest.map(|t| period.saturating_sub(t.elapsed()))
                };
                match due_in {
                    Some(d) if d.is_zero() => {
                        let _ = j.checkpoint().await;
                    }
                    Some(d) => {
                        let _ = tokio::time::timeout(d, j.wake.notified()).await;
                        if j.waiting() * 2 >= j.config.files {
                            let _ = j.checkpoint().await;
                        }
                    }
                    None => {
                        // Re-checked at least every period, so a dropped journal ends the task.
                        let _ = tokio::time::timeout(period, j.wake.notified()).await;
                    }
                }
            }
        })
    }

    /// Journal files to create to bring the free and waiting ones back to the pool's size.
    fn missing(&self) -> usize {
        let s = self.state.lock().expect("journal state");
        self.config
            .files
            .saturating_sub(s.free.len() + s.waiting.len())
    }

    async fn refill_async(&self) -> Result<()> {
        let missing = self.missing();
        if missing == 0 {
            return Ok(());
        }
        let dir = self.dir.clone();
        let made = tokio::task::spawn_blocking(move || create_files(&dir, missing))
            .await
            .map_err(|e| Error::Unavailable(format!("journal refill: {e}")))??;
        self.state.lock().expect("journal state").free.extend(made);
        Ok(())
    }

    fn refill(&self) -> Result<()> {
        let made = create_files(&self.dir, self.missing())?;
        self.state.lock().expect("journal state").free.extend(made);
        Ok(())
    }
}

/// Creates `n` empty journal files in `dir` and makes their entries durable (one dir fsync).
fn create_files(dir: &Path, n: usize) -> Result<Vec<PathBuf>> {
    let mut made = Vec::with_capacity(n);
    for _ in 0..n {
        let p = dir.join(format!("{}.{JOURNAL_EXT}", uuid::Uuid::new_v4()));
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
            .map_err(Error::Spool)?;
        made.push(p);
    }
    if !made.is_empty() {
        sync_dir(dir).map_err(Error::Spool)?;
    }
    Ok(made)
}

/// A journal file found at start-up.
pub enum Found {
    /// Sealed and intact: to be ingested again.
    Sealed(PathBuf, Box<Seal>),
    /// Never sealed, or torn: never acknowledged.
    Unsealed(PathBuf),
}

/// The journal files in `dir`, sealed ones in sealing order (blocking).
pub fn scan(dir: &Path) -> Vec<Found> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut sealed = Vec::new();
    let mut out = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) != Some(JOURNAL_EXT) {
            continue;
        }
        match read_seal(&p) {
            Some(seal) => sealed.push((p, seal)),
            None => out.push(Found::Unsealed(p)),
        }
    }
    sealed.sort_by_key(|(_, s)| s.seq);
    out.extend(
        sealed
            .into_iter()
            .map(|(p, s)| Found::Sealed(p, Box::new(s))),
    );
    out
}

/// The seal of `path` when present, parseable and matching the bytes (size and SHA-256).
fn read_seal(path: &Path) -> Option<Seal> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = File::open(path).ok()?;
    let text = get_xattr(&f, SEAL_XATTR).ok()??;
    let seal: Seal = serde_json::from_slice(&text).ok()?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    (size == seal.size && hex::encode(h.finalize()) == seal.sha256).then_some(seal)
}

/// fsyncs a directory (its entries).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Whether files in `dir` take user extended attributes.
fn xattrs_supported(dir: &Path) -> bool {
    let p = dir.join(format!(".xattr-probe-{}", uuid::Uuid::new_v4()));
    let ok = File::create(&p)
        .and_then(|f| set_xattr(&f, "user.vesalius.probe", b"1"))
        .is_ok();
    let _ = std::fs::remove_file(&p);
    ok
}

#[allow(unsafe_code)]
fn set_xattr(f: &File, name: &str, value: &[u8]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let name = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
    // SAFETY: a valid descriptor, a NUL-terminated name and a buffer of the given length.
    let r = unsafe {
        libc::fsetxattr(
            f.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The attribute's value, `None` when the file has none of that name.
#[allow(unsafe_code)]
fn get_xattr(f: &File, name: &str) -> std::io::Result<Option<Vec<u8>>> {
    use std::os::fd::AsRawFd;
    let name = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: a valid descriptor, a NUL-terminated name and a writable buffer of that length.
    let r = unsafe {
        libc::fgetxattr(
            f.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if r >= 0 {
        buf.truncate(r as usize);
        return Ok(Some(buf));
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENODATA) {
        Ok(None)
    } else {
        Err(e)
    }
}
