//! [`BlobStore`] over the `object_store` crate.
//!
//! ## Local filesystem (the embedded default)
//! Blobs live at `{root}/{org}/{study}/{series}/{sop}.{sha256}` and the spool directory is
//! `{root}/.spool`, on the same filesystem. `object_store`'s `LocalFileSystem` is built
//! `with_fsync(true)` (it does **not** sync otherwise): persisting a blob is
//! 1. the caller fsyncs the spool file (`SpooledFile::sync`);
//! 2. `copy_if_not_exists(.spool/x, key)`: a hard link to the final key that fails if the key
//!    exists, with every newly created parent directory and the final directory fsync'd; then the
//!    spool entry is removed (unsynced: a resurrected spool entry is deleted at start-up).
//!
//! Keys end in the content hash, so an existing key means identical bytes: persisting it again is
//! a no-op. A crash after step 2 but before the index commit leaves an orphan blob that
//! `admin check` reports and sweeps; a crash during step 2 leaves only the spool file, which the
//! next start empties.
//!
//! Reads of a local store go straight to the file with large chunks (`object_store` streams local
//! files in 8 KiB blocking reads, too slow for whole-study retrieval).

#![deny(unsafe_code)]
#![warn(missing_docs)]

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use vesalius_store::blob::{BlobEntry, BlobStore, Persisted};
use vesalius_store::error::{Error, Result};

/// The name of the spool directory inside a local store's root.
pub const SPOOL_DIR: &str = ".spool";

/// Read chunk size for local files.
const READ_CHUNK: usize = 1 << 20;

/// A blob store backed by an `object_store` implementation.
pub struct ObjectBlobStore {
    store: Arc<dyn ObjectStore>,
    local_root: Option<PathBuf>,
}

fn os_err(key: &str, e: object_store::Error) -> Error {
    match e {
        object_store::Error::NotFound { .. } => Error::NotFound(format!("blob {key}")),
        e => Error::blob(key, std::io::Error::other(e.to_string())),
    }
}

impl ObjectBlobStore {
    /// A durable local-filesystem store rooted at `root` (created if missing).
    pub fn local(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root.join(SPOOL_DIR)).map_err(Error::Spool)?;
        let root = root.canonicalize().map_err(Error::Spool)?;
        let fs = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| os_err("root", e))?
            .with_fsync(true)
            .with_automatic_cleanup(false);
        Ok(ObjectBlobStore {
            store: Arc::new(fs),
            local_root: Some(root),
        })
    }

    /// A store over any `object_store` backend (S3, memory).
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        ObjectBlobStore {
            store,
            local_root: None,
        }
    }

    /// The spool directory to give the ingest pipeline (inside the root for local stores).
    pub fn spool_dir(&self) -> Option<PathBuf> {
        self.local_root.as_ref().map(|r| r.join(SPOOL_DIR))
    }

    fn path(key: &str) -> Result<ObjectPath> {
        ObjectPath::parse(key)
            .map_err(|e| Error::BadRequest(format!("invalid blob key {key:?}: {e}")))
    }

    async fn upload(&self, spool: &Path, key: &str) -> Result<Persisted> {
        // Remote stores: stream the spool file up in parts, then remove it.
        let location = Self::path(key)?;
        if self.store.head(&location).await.is_ok() {
            let _ = tokio::fs::remove_file(spool).await;
            return Ok(Persisted::AlreadyExisted);
        }
        let mut upload = self
            .store
            .put_multipart(&location)
            .await
            .map_err(|e| os_err(key, e))?;
        let mut f = tokio::fs::File::open(spool).await.map_err(Error::Spool)?;
        loop {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 8 << 20];
            let mut filled = 0;
            while filled < buf.len() {
                let n = f.read(&mut buf[filled..]).await.map_err(Error::Spool)?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            buf.truncate(filled);
            upload
                .put_part(Bytes::from(buf).into())
                .await
                .map_err(|e| os_err(key, e))?;
        }
        upload.complete().await.map_err(|e| os_err(key, e))?;
        let _ = tokio::fs::remove_file(spool).await;
        Ok(Persisted::Created)
    }
}

#[async_trait]
impl BlobStore for ObjectBlobStore {
    async fn persist(&self, spool: &Path, key: &str) -> Result<Persisted> {
        let rel = self
            .local_root
            .as_ref()
            .and_then(|root| spool.strip_prefix(root).ok())
            .and_then(|p| p.to_str())
            .map(str::to_owned);
        let Some(rel) = rel else {
            return self.upload(spool, key).await;
        };
        let from = Self::path(&rel)?;
        let to = Self::path(key)?;
        // A hard link to the final key that fails if it exists; object_store fsyncs the new
        // directory entry and every directory it had to create. The spool entry is then removed
        // without a sync: if that removal is lost in a crash, start-up empties the spool anyway.
        let r = match self.store.copy_if_not_exists(&from, &to).await {
            Ok(()) => Ok(Persisted::Created),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Persisted::AlreadyExisted),
            Err(e) => Err(os_err(key, e)),
        };
        let _ = tokio::fs::remove_file(spool).await;
        r
    }

    async fn read_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        if let Some(path) = self.local_path(key) {
            let key = key.to_owned();
            return tokio::task::spawn_blocking(move || {
                use std::io::{Read, Seek, SeekFrom};
                let mut f = std::fs::File::open(&path).map_err(|e| not_found_or(&key, e))?;
                f.seek(SeekFrom::Start(range.start))
                    .map_err(|e| Error::blob(&key, e))?;
                let mut buf = vec![0u8; (range.end - range.start) as usize];
                f.read_exact(&mut buf).map_err(|e| Error::blob(&key, e))?;
                Ok(Bytes::from(buf))
            })
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        }
        self.store
            .get_range(&Self::path(key)?, range)
            .await
            .map_err(|e| os_err(key, e))
    }

    async fn read(&self, key: &str) -> Result<BoxStream<'static, Result<Bytes>>> {
        if let Some(path) = self.local_path(key) {
            let f = std::fs::File::open(&path).map_err(|e| not_found_or(key, e))?;
            // A small blob is read in one piece (sized to the file); big ones in READ_CHUNK pieces.
            let size = f.metadata().map(|m| m.len() as usize).unwrap_or(READ_CHUNK);
            let chunk = if size <= 2 * READ_CHUNK {
                size + 1
            } else {
                READ_CHUNK
            };
            let key = key.to_owned();
            let s = tokio_util_like::file_stream(f, chunk).map_err(move |e| Error::blob(&key, e));
            return Ok(s.boxed());
        }
        let key_owned = key.to_owned();
        let r = self
            .store
            .get(&Self::path(key)?)
            .await
            .map_err(|e| os_err(key, e))?;
        Ok(r.into_stream()
            .map_err(move |e| os_err(&key_owned, e))
            .boxed())
    }

    async fn size(&self, key: &str) -> Result<u64> {
        if let Some(path) = self.local_path(key) {
            return tokio::fs::metadata(&path)
                .await
                .map(|m| m.len())
                .map_err(|e| not_found_or(key, e));
        }
        Ok(self
            .store
            .head(&Self::path(key)?)
            .await
            .map_err(|e| os_err(key, e))?
            .size)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&Self::path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(os_err(key, e)),
        }
    }

    async fn list(&self) -> Result<Vec<BlobEntry>> {
        let mut out = Vec::new();
        let mut s = self.store.list(None);
        while let Some(m) = s.next().await {
            let m = m.map_err(|e| os_err("list", e))?;
            let key = m.location.to_string();
            if key.starts_with(SPOOL_DIR) {
                continue;
            }
            out.push(BlobEntry { key, size: m.size });
        }
        Ok(out)
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.local_root.as_ref().map(|r| r.join(key))
    }

    fn persist_unsynced(
        &self,
        spool: &Path,
        key: &str,
    ) -> Option<Result<(Persisted, Vec<PathBuf>)>> {
        let root = self.local_root.as_ref()?;
        Some(link_unsynced(root, spool, key))
    }
}

/// A hard link from the synced spool file to the key's path, creating directories as needed,
/// without any sync (the ingest journal's checkpoint syncs the directories returned: the key's
/// directory and, when directories were created, each of them and the one that holds the first).
/// The spool entry itself is kept: it is the journal file.
fn link_unsynced(root: &Path, spool: &Path, key: &str) -> Result<(Persisted, Vec<PathBuf>)> {
    ObjectBlobStore::path(key)?;
    let to = root.join(key);
    let parent = to.parent().unwrap_or(root).to_owned();
    let mut dirs = Vec::new();
    if !parent.is_dir() {
        // The directories to create, from the deepest up to the first that exists.
        let mut missing = Vec::new();
        let mut d = parent.as_path();
        while !d.is_dir() && d != root {
            missing.push(d.to_owned());
            d = d.parent().unwrap_or(root);
        }
        dirs.push(d.to_owned());
        std::fs::create_dir_all(&parent).map_err(|e| Error::blob(key, e))?;
        dirs.extend(missing.into_iter().rev());
    } else {
        dirs.push(parent);
    }
    let persisted = match std::fs::hard_link(spool, &to) {
        Ok(()) => Persisted::Created,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Persisted::AlreadyExisted,
        Err(e) => return Err(Error::blob(key, e)),
    };
    Ok((persisted, dirs))
}

fn not_found_or(key: &str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::NotFound(format!("blob {key}"))
    } else {
        Error::blob(key, e)
    }
}

/// A file read as a stream of large chunks, each read straight into its buffer on the blocking
/// pool (tokio's `File` reads into an internal buffer first and copies: one memcpy more per byte).
mod tokio_util_like {
    use std::io::Read;

    use bytes::Bytes;
    use futures::Stream;

    pub fn file_stream(
        f: std::fs::File,
        chunk: usize,
    ) -> impl Stream<Item = std::io::Result<Bytes>> {
        futures::stream::try_unfold(Some(f), move |f| async move {
            let Some(mut f) = f else { return Ok(None) };
            let (f, buf) = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; chunk];
                let mut filled = 0;
                while filled < chunk {
                    let n = f.read(&mut buf[filled..])?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                buf.truncate(filled);
                Ok::<_, std::io::Error>((f, buf))
            })
            .await
            .map_err(std::io::Error::other)??;
            if buf.is_empty() {
                return Ok(None);
            }
            let more = buf.len() == chunk;
            Ok(Some((Bytes::from(buf), more.then_some(f))))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vesalius_store::spool::SpoolWriter;

    #[tokio::test(flavor = "multi_thread")]
    async fn persist_read_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectBlobStore::local(dir.path()).unwrap();
        let spool = store.spool_dir().unwrap();
        let mut w = SpoolWriter::create(&spool, 1 << 20).unwrap();
        w.write(b"hello blob").unwrap();
        let mut f = w.finish().unwrap();
        f.sync().unwrap();
        let key = "default/1.2/1.2.3/1.2.3.4/abc";
        assert_eq!(
            store.persist(f.path(), key).await.unwrap(),
            Persisted::Created
        );
        f.disarm();
        // Same key again (same bytes): a no-op.
        let mut w = SpoolWriter::create(&spool, 1 << 20).unwrap();
        w.write(b"hello blob").unwrap();
        let f = w.finish().unwrap();
        assert_eq!(
            store.persist(f.path(), key).await.unwrap(),
            Persisted::AlreadyExisted
        );
        f.disarm();
        assert_eq!(
            std::fs::read_dir(&spool).unwrap().count(),
            0,
            "spool emptied"
        );
        assert_eq!(&store.read_range(key, 6..10).await.unwrap()[..], b"blob");
        let all: Vec<Bytes> = store.read(key).await.unwrap().try_collect().await.unwrap();
        assert_eq!(all.concat(), b"hello blob");
        assert_eq!(store.size(key).await.unwrap(), 10);
        let list = store.list().await.unwrap();
        assert_eq!(
            list,
            vec![BlobEntry {
                key: key.into(),
                size: 10
            }]
        );
        store.delete(key).await.unwrap();
        store.delete(key).await.unwrap();
        assert!(matches!(store.read(key).await, Err(Error::NotFound(_))));
    }
}
