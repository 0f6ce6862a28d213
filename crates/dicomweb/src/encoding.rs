//! HTTP content codings of request bodies (RFC 9110 8.4): a STOW-RS body may arrive with
//! `Content-Encoding: gzip` (RFC 9110 8.4.1.3, RFC 1952), `deflate` (8.4.1.2: the zlib format
//! of RFC 1950) or `identity`, or a list of them in the order they were applied.
//!
//! The body is decoded while it streams, in chunks of at most [`DECODED_CHUNK`] bytes, so memory
//! stays bounded whatever the compression ratio: a "gzip bomb" is cut by the limits that apply
//! to the **decoded** bytes (the STOW-RS body limit, the per-instance and parsing limits of
//! ingest), which see exactly what they would see uncompressed. The coded bytes are counted too
//! and held to the same limit ([`BodyTooLarge`]).
//!
//! An unknown coding is refused before any byte is read, with 415 and `Accept-Encoding` naming
//! what is accepted (RFC 9110 15.5.16).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_compression::tokio::bufread::{GzipDecoder, ZlibDecoder};
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt};
use tokio_util::io::{ReaderStream, StreamReader};
use vesalius_core::ErrorKind;

use crate::error::DicomWebError;

/// The codings accepted in requests, for `Accept-Encoding` answers.
pub const ACCEPTED: &str = "gzip, deflate, identity";

/// Most decoded bytes handed on at once (and so held by one decoder at a time).
pub const DECODED_CHUNK: usize = 64 << 10;

/// Most codings stacked on one body (`Content-Encoding: gzip, gzip` is legal but pointless).
const MAX_CODINGS: usize = 2;

/// A request body as a stream of byte chunks.
pub type BodyStream = BoxStream<'static, io::Result<Bytes>>;

/// A content coding this server decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentCoding {
    /// `gzip` (or the old alias `x-gzip`, RFC 9110 8.4.1.3).
    Gzip,
    /// `deflate`: zlib-wrapped DEFLATE (RFC 9110 8.4.1.2).
    Deflate,
}

impl ContentCoding {
    /// Parses one coding token (case-insensitive); `Ok(None)` for `identity`.
    pub fn parse(token: &str) -> Result<Option<ContentCoding>, String> {
        match token.trim().to_ascii_lowercase().as_str() {
            "gzip" | "x-gzip" => Ok(Some(ContentCoding::Gzip)),
            "deflate" => Ok(Some(ContentCoding::Deflate)),
            "identity" | "" => Ok(None),
            other => Err(other.to_owned()),
        }
    }
}

/// The codings of a request's `Content-Encoding` (every field line), in the order they were
/// applied, `identity` dropped. An unknown or excessive coding is a 415.
pub fn request_codings(headers: &HeaderMap) -> Result<Vec<ContentCoding>, DicomWebError> {
    let mut out = Vec::new();
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let text = value.to_str().map_err(|_| unsupported("(not text)"))?;
        for token in text.split(',') {
            if let Some(c) = ContentCoding::parse(token).map_err(|t| unsupported(&t))? {
                out.push(c);
            }
        }
    }
    if out.len() > MAX_CODINGS {
        return Err(DicomWebError::new(
            ErrorKind::UnsupportedMediaType,
            format!("at most {MAX_CODINGS} content codings are decoded on one request"),
        ));
    }
    Ok(out)
}

fn unsupported(coding: &str) -> DicomWebError {
    DicomWebError::new(
        ErrorKind::UnsupportedMediaType,
        format!("content coding {coding:?} is not supported; accepted: {ACCEPTED}"),
    )
}

/// Decodes `body`, coded with `codings` in that order, as it streams: the last coding applied
/// is undone first. At most `max_coded` bytes of the coded body are read ([`BodyTooLarge`]
/// beyond).
pub fn decode(body: BodyStream, codings: &[ContentCoding], max_coded: u64) -> BodyStream {
    let mut s: BodyStream = Counted {
        inner: body,
        seen: 0,
        max: max_coded,
    }
    .boxed();
    for c in codings.iter().rev() {
        let reader = StreamReader::new(s);
        s = match c {
            ContentCoding::Gzip => {
                let mut d = GzipDecoder::new(reader);
                // RFC 1952 2.2: a gzip file is a series of members.
                d.multiple_members(true);
                ReaderStream::with_capacity(d, DECODED_CHUNK).boxed()
            }
            ContentCoding::Deflate => {
                ReaderStream::with_capacity(ZlibDecoder::new(reader), DECODED_CHUNK).boxed()
            }
        };
    }
    s
}

/// The coded body went past its limit (carried inside an [`io::Error`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTooLarge(pub u64);

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body is larger than {} bytes", self.0)
    }
}

impl std::error::Error for BodyTooLarge {}

impl BodyTooLarge {
    /// Finds this error inside a stream error (as `multer` boxes it).
    pub fn find(e: &(dyn std::error::Error + 'static)) -> Option<BodyTooLarge> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = cur {
            if let Some(t) = err.downcast_ref::<BodyTooLarge>() {
                return Some(*t);
            }
            if let Some(t) = err
                .downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|i| i.downcast_ref::<BodyTooLarge>())
            {
                return Some(*t);
            }
            cur = err.source();
        }
        None
    }
}

/// Counts the bytes of a stream and fails it past `max`.
struct Counted {
    inner: BodyStream,
    seen: u64,
    max: u64,
}

impl Stream for Counted {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let r = self.inner.poll_next_unpin(cx);
        if let Poll::Ready(Some(Ok(b))) = &r {
            self.seen += b.len() as u64;
            if self.seen > self.max {
                return Poll::Ready(Some(Err(io::Error::other(BodyTooLarge(self.max)))));
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use futures::TryStreamExt;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn chunks(data: Vec<u8>, size: usize) -> BodyStream {
        let parts: Vec<io::Result<Bytes>> = data
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures::stream::iter(parts).boxed()
    }

    #[test]
    fn codings_are_parsed_in_order() {
        let mut h = HeaderMap::new();
        assert!(request_codings(&h).unwrap().is_empty());
        h.insert(header::CONTENT_ENCODING, "Identity".parse().unwrap());
        assert!(request_codings(&h).unwrap().is_empty());
        h.insert(header::CONTENT_ENCODING, "deflate, X-GZIP".parse().unwrap());
        assert_eq!(
            request_codings(&h).unwrap(),
            [ContentCoding::Deflate, ContentCoding::Gzip]
        );
        h.insert(header::CONTENT_ENCODING, "br".parse().unwrap());
        let e = request_codings(&h).unwrap_err();
        assert_eq!(e.kind, ErrorKind::UnsupportedMediaType);
        assert!(e.message.contains("\"br\""), "{}", e.message);
        h.insert(
            header::CONTENT_ENCODING,
            "gzip, gzip, gzip".parse().unwrap(),
        );
        assert_eq!(
            request_codings(&h).unwrap_err().kind,
            ErrorKind::UnsupportedMediaType
        );
    }

    #[tokio::test]
    async fn gzip_and_deflate_decode_in_bounded_chunks() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let coded = gzip(&data);
        let out: Vec<Bytes> = decode(chunks(coded, 1000), &[ContentCoding::Gzip], u64::MAX)
            .try_collect()
            .await
            .unwrap();
        assert!(out.iter().all(|c| c.len() <= DECODED_CHUNK));
        assert_eq!(out.concat(), data);
        // Two gzip members back to back are one body (RFC 1952 2.2).
        let mut two = gzip(&data[..10]);
        two.extend(gzip(&data[10..20]));
        let out: Vec<Bytes> = decode(chunks(two, 7), &[ContentCoding::Gzip], u64::MAX)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(out.concat(), &data[..20]);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&data).unwrap();
        let out: Vec<Bytes> = decode(
            chunks(gzip(&z.finish().unwrap()), 4096),
            &[ContentCoding::Deflate, ContentCoding::Gzip],
            u64::MAX,
        )
        .try_collect()
        .await
        .unwrap();
        assert_eq!(out.concat(), data);
    }

    #[tokio::test]
    async fn corrupt_and_oversized_coded_bodies_fail() {
        let r: io::Result<Vec<Bytes>> = decode(
            chunks(b"not gzip at all".to_vec(), 4),
            &[ContentCoding::Gzip],
            u64::MAX,
        )
        .try_collect()
        .await;
        assert!(r.is_err());
        let coded = gzip(&[7u8; 100_000]);
        let e = decode(chunks(coded, 10), &[ContentCoding::Gzip], 50)
            .try_collect::<Vec<Bytes>>()
            .await
            .unwrap_err();
        assert_eq!(BodyTooLarge::find(&e), Some(BodyTooLarge(50)));
    }
}
