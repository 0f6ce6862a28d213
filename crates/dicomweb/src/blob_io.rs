//! Reading blobs for responses: whole-blob and ranged streams, and local files for the codecs.
//!
//! Ranged reads are split into pieces of at most [`RANGE_PIECE`] bytes so that a large bulk data
//! value or frame is never held whole in memory. The codecs of `vesalius-codec` work on file
//! paths: a local blob store hands out its file; for any other store the blob is copied to a
//! temporary file first, removed when the [`LocalFile`] is dropped.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;
use vesalius_store::BlobStore;

use crate::error::{DicomWebError, Result};

/// The largest piece of a ranged read.
pub const RANGE_PIECE: u64 = 1 << 20;

/// A response body chunk stream.
pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Streams a whole blob; opening happens when the stream is first polled, so a response can be
/// a chain of many blobs without opening them all up front.
pub fn whole(blobs: Arc<dyn BlobStore>, key: String) -> ByteStream {
    stream::once(async move {
        let s = blobs.read(&key).await.map_err(|e| {
            tracing::error!(key = %key, error = %e, "blob vanished while streaming a response");
            io_err(e)
        })?;
        Ok::<_, io::Error>(s.map_err(io_err))
    })
    .try_flatten()
    .boxed()
}

/// Streams byte ranges `(offset, length)` of a blob, in order, in pieces of at most
/// [`RANGE_PIECE`] bytes.
pub fn ranges(blobs: Arc<dyn BlobStore>, key: String, ranges: Vec<(u64, u64)>) -> ByteStream {
    let pieces: Vec<Range<u64>> = ranges
        .into_iter()
        .flat_map(|(off, len)| {
            (0..len.div_ceil(RANGE_PIECE)).map(move |i| {
                let start = off + i * RANGE_PIECE;
                start..(start + RANGE_PIECE).min(off + len)
            })
        })
        .collect();
    stream::iter(pieces)
        .then(move |r| {
            let (blobs, key) = (blobs.clone(), key.clone());
            async move { blobs.read_range(&key, r).await.map_err(io_err) }
        })
        .boxed()
}

/// A blob as a local file, for the codecs.
pub enum LocalFile {
    /// The store's own file.
    Store(PathBuf),
    /// A temporary copy, deleted on drop.
    Temp(tempfile::TempPath),
}

impl LocalFile {
    /// The path.
    pub fn path(&self) -> &Path {
        match self {
            LocalFile::Store(p) => p,
            LocalFile::Temp(p) => p,
        }
    }
}

/// The blob `key` as a local file: the store's own when it keeps local files, else a copy.
pub async fn local_file(blobs: &Arc<dyn BlobStore>, key: &str) -> Result<LocalFile> {
    if let Some(p) = blobs.local_path(key)
        && tokio::fs::metadata(&p).await.is_ok()
    {
        return Ok(LocalFile::Store(p));
    }
    let tmp = tempfile::Builder::new()
        .prefix("vesalius-dicomweb-")
        .suffix(".dcm")
        .tempfile()
        .map_err(|e| DicomWebError::internal(format!("temporary file: {e}")))?;
    let (file, path) = tmp.into_parts();
    let mut out = tokio::fs::File::from_std(file);
    let mut s = blobs.read(key).await?;
    while let Some(chunk) = s.next().await {
        out.write_all(&chunk?)
            .await
            .map_err(|e| DicomWebError::internal(format!("temporary file: {e}")))?;
    }
    out.flush()
        .await
        .map_err(|e| DicomWebError::internal(format!("temporary file: {e}")))?;
    Ok(LocalFile::Temp(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vesalius_store::memory::MemoryBlobStore;

    #[tokio::test]
    async fn ranges_are_split_and_ordered() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("x");
        let data: Vec<u8> = (0..3 * RANGE_PIECE as usize + 10)
            .map(|i| i as u8)
            .collect();
        std::fs::write(&spool, &data).unwrap();
        let store: Arc<dyn BlobStore> = Arc::new(MemoryBlobStore::default());
        store.persist(&spool, "k").await.unwrap();
        let chunks: Vec<Bytes> = ranges(
            store.clone(),
            "k".into(),
            vec![(5, 2 * RANGE_PIECE + 1), (0, 3)],
        )
        .try_collect()
        .await
        .unwrap();
        assert_eq!(chunks.len(), 4);
        let joined: Vec<u8> = chunks.concat();
        let mut want = data[5..5 + 2 * RANGE_PIECE as usize + 1].to_vec();
        want.extend_from_slice(&data[..3]);
        assert_eq!(joined, want);
        let f = local_file(&store, "k").await.unwrap();
        assert_eq!(std::fs::read(f.path()).unwrap(), data);
        let p = f.path().to_owned();
        drop(f);
        assert!(!p.exists());
    }
}
