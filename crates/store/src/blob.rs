//! [`BlobStore`]: where the bytes of instances live.
//!
//! Invariants every implementation keeps:
//! - `persist` returns only when the blob is durable under its key (file and directory entries
//!   synced, or the object store acknowledged it).
//! - A key is written once: keys end in the content hash, so the same key means the same bytes
//!   and persisting an existing key is a no-op success.
//! - Blobs are never visible half-written under their final key.

use std::ops::Range;
use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::error::Result;

/// A blob key: `{org}/{study_uid}/{series_uid}/{sop_uid}.{sha256}`.
///
/// DESIGN.md puts each instance in a directory of its own (`.../{sop_uid}/{sha256}`); we keep one
/// directory per series instead, because a new directory costs two more synchronous metadata
/// writes before every acknowledgement (docs/architecture.md). Versions of an instance still
/// differ by their hash suffix.
pub type BlobKey = String;

/// Builds the key of an instance blob.
pub fn instance_key(org: &str, study: &str, series: &str, sop: &str, sha256: &str) -> BlobKey {
    format!("{org}/{study}/{series}/{sop}.{sha256}")
}

/// Whether `persist` created the blob or found it already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persisted {
    /// The blob was written.
    Created,
    /// A blob with this key (hence these bytes) already existed.
    AlreadyExisted,
}

/// A stored blob as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    /// The key.
    pub key: BlobKey,
    /// Size in bytes.
    pub size: u64,
}

/// Durable storage of immutable blobs.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Makes the local, already-synced spool file durable under `key`. The spool file is moved
    /// (local stores) or uploaded and then removed (remote stores).
    async fn persist(&self, spool: &Path, key: &str) -> Result<Persisted>;

    /// Reads a byte range of a blob.
    async fn read_range(&self, key: &str, range: Range<u64>) -> Result<Bytes>;

    /// Streams a whole blob in chunks.
    async fn read(&self, key: &str) -> Result<BoxStream<'static, Result<Bytes>>>;

    /// The size of a blob.
    async fn size(&self, key: &str) -> Result<u64>;

    /// Deletes a blob; deleting a missing blob is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Lists every blob (for consistency checks and sweeping orphans).
    async fn list(&self) -> Result<Vec<BlobEntry>>;

    /// Links the already-synced local spool file to `key` **without** syncing any directory
    /// (blocking: call from a blocking thread), for the ingest journal ([`crate::journal`]):
    /// returns the directories whose entries the journal's checkpoint must fsync (the key's
    /// directory, and every directory that had to be created with the one holding it). `None`
    /// when the store does not keep blobs as local files; the caller then uses
    /// [`BlobStore::persist`].
    fn persist_unsynced(
        &self,
        _spool: &Path,
        _key: &str,
    ) -> Option<Result<(Persisted, Vec<std::path::PathBuf>)>> {
        None
    }

    /// A local file path for the blob when the store keeps blobs as local files (lets callers
    /// hand it to decoders or sendfile); `None` for remote stores.
    fn local_path(&self, _key: &str) -> Option<std::path::PathBuf> {
        None
    }
}
