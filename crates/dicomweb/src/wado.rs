//! WADO-RS: retrieve instances, metadata, frames and bulk data (PS3.18 10.4).
//!
//! - Instances (`/studies/{s}[/series/{se}[/instances/{i}]]`): `multipart/related;
//!   type="application/dicom"`, one part per instance, each streamed straight from the blob
//!   store (never the whole study in memory) with a `transfer-syntax` parameter on its
//!   `Content-Type`. `transfer-syntax=*` — and an `Accept` without one, our default — sends the
//!   object exactly as stored. An explicit syntax other than the stored one is produced by
//!   `vesalius-codec` (406 when it cannot). An instance may also be asked for as a bare
//!   `application/dicom` body.
//! - Metadata (`.../metadata`): a JSON array concatenated from the DICOM JSON precomputed at
//!   ingest, with BulkDataURIs made absolute; no blob is read and nothing is re-serialised.
//! - Frames (`.../instances/{i}/frames/{list}`): `multipart/related`, one part per frame, read
//!   at the offsets the index recorded at ingest: native pixels, or the encapsulated fragments
//!   as stored (`application/octet-stream`, or the compressed type such as `image/jpeg` when the
//!   client asks for it). A client that accepts only `transfer-syntax=1.2.840.10008.1.2.1` gets
//!   compressed frames decoded.
//! - Bulk data (`.../instances/{i}/bulkdata/{offset}-{length}` and `.../bulkdata/7FE00010` for
//!   encapsulated Pixel Data): range reads, `multipart/related` by default or a bare
//!   `application/octet-stream` body when that is what the client accepts.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use vesalius_core::json::absolutize_bulk_uris;
use vesalius_core::uid;
use vesalius_store::BlobStore;
use vesalius_store::model::{FrameIndex, StoredInstance};
use vesalius_store::query::Scope;

use crate::blob_io::{self, ByteStream};
use crate::caller::Ctx;
use crate::error::{DicomWebError, Result};
use crate::multipart::{MediaType, Multipart, parse_accept};
use crate::{AppState, ServiceUrl, check_uids};

/// The most frames one request may name.
const MAX_FRAMES_PER_REQUEST: usize = 10_000;

fn accept_entries(headers: &HeaderMap) -> Vec<MediaType> {
    parse_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()))
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// `GET /studies/{study}`.
pub(crate) async fn retrieve_study(
    st: Ctx,
    Path(study): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    check_uids(&[&study])?;
    retrieve(&st, st.scope(&study, None, None), &headers, false).await
}

/// `GET /studies/{study}/series/{series}`.
pub(crate) async fn retrieve_series(
    st: Ctx,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    check_uids(&[&study, &series])?;
    retrieve(&st, st.scope(&study, Some(&series), None), &headers, false).await
}

/// `GET /studies/{study}/series/{series}/instances/{sop}`.
pub(crate) async fn retrieve_instance(
    st: Ctx,
    Path((study, series, sop)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    check_uids(&[&study, &series, &sop])?;
    retrieve(
        &st,
        st.scope(&study, Some(&series), Some(&sop)),
        &headers,
        true,
    )
    .await
}

/// What the client accepts for instances: multipart or a bare body, and transfer syntaxes in
/// order of preference (`*`: as stored).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DicomAccept {
    /// Answer `multipart/related` (else a bare `application/dicom` body).
    pub multipart: bool,
    /// Acceptable transfer syntaxes, best first.
    pub syntaxes: Vec<String>,
}

/// Negotiates `application/dicom` (PS3.18 8.7.3.5).
pub(crate) fn negotiate_dicom(entries: &[MediaType]) -> Result<DicomAccept> {
    if entries.is_empty() {
        return Ok(DicomAccept {
            multipart: true,
            syntaxes: vec!["*".into()],
        });
    }
    let mut form = None;
    let mut syntaxes = Vec::new();
    for e in entries {
        let multipart = match e.essence.as_str() {
            "multipart/related" => {
                let t = e.related_type();
                if !t.as_deref().is_none_or(|t| {
                    MediaType::parse(t).is_some_and(|m| m.covers("application/dicom"))
                }) {
                    continue;
                }
                true
            }
            "application/dicom" => false,
            "*/*" | "multipart/*" | "application/*" => true,
            _ => continue,
        };
        form.get_or_insert(multipart);
        syntaxes.push(e.transfer_syntax().unwrap_or("*").to_owned());
    }
    match form {
        Some(multipart) => Ok(DicomAccept {
            multipart,
            syntaxes,
        }),
        None => Err(DicomWebError::not_acceptable(
            "instances are available as multipart/related; type=\"application/dicom\"",
        )),
    }
}

/// For one stored syntax: `Some(None)` to send as stored, `Some(Some(ts))` to transcode,
/// `None` when nothing acceptable can be produced.
pub(crate) fn choose_syntax(stored: &str, acceptable: &[String]) -> Option<Option<String>> {
    acceptable.iter().find_map(|ts| {
        if ts == "*" || ts == stored {
            Some(None)
        } else if vesalius_codec::can_transcode(stored, ts) {
            Some(Some(ts.clone()))
        } else {
            None
        }
    })
}

async fn retrieve(
    st: &AppState,
    scope: Scope,
    headers: &HeaderMap,
    single_allowed: bool,
) -> Result<Response> {
    let accept = negotiate_dicom(&accept_entries(headers))?;
    let instances = st.ingestor.index().instances(&scope).await?;
    if instances.is_empty() {
        return Err(DicomWebError::not_found(describe(&scope)));
    }
    let mut plan = Vec::with_capacity(instances.len());
    for i in instances {
        let target = choose_syntax(&i.transfer_syntax, &accept.syntaxes).ok_or_else(|| {
            DicomWebError::not_acceptable(format!(
                "instance {} is stored in {} and cannot be converted to {}",
                i.sop_instance_uid,
                i.transfer_syntax,
                accept.syntaxes.join(", ")
            ))
        })?;
        plan.push((i, target));
    }
    let blobs = st.ingestor.blobs().clone();
    if !accept.multipart && single_allowed && plan.len() == 1 {
        let (i, target) = plan.pop().expect("one instance");
        let ts = target.clone().unwrap_or_else(|| i.transfer_syntax.clone());
        let body = instance_body(blobs, i, target);
        return Ok(response(
            &format!("application/dicom; transfer-syntax={ts}"),
            body,
        ));
    }
    let mp = Multipart::new("application/dicom");
    let content_type = mp.content_type();
    let framing = mp.clone();
    let count = plan.len();
    let body = stream::iter(plan.into_iter().enumerate())
        .flat_map(move |(n, (i, target))| {
            let ts = target.clone().unwrap_or_else(|| i.transfer_syntax.clone());
            let head = framing.part_header(
                n == 0,
                &format!("application/dicom; transfer-syntax={ts}"),
                None,
            );
            stream::once(async move { Ok(head) }).chain(instance_body(blobs.clone(), i, target))
        })
        .chain(stream::once(async move { Ok(mp.closing(count == 0)) }))
        .boxed();
    Ok(response(&content_type, body))
}

pub(crate) fn response(content_type: &str, body: ByteStream) -> Response {
    (
        [(header::CONTENT_TYPE, content_type.to_owned())],
        Body::from_stream(body),
    )
        .into_response()
}

/// One instance's bytes: the blob as stored, or transcoded (decoded and encoded in memory, one
/// instance at a time).
pub(crate) fn instance_body(
    blobs: Arc<dyn BlobStore>,
    i: StoredInstance,
    target: Option<String>,
) -> ByteStream {
    match target {
        None => blob_io::whole(blobs, i.blob_key),
        Some(ts) => stream::once(async move {
            let f = blob_io::local_file(&blobs, &i.blob_key)
                .await
                .map_err(io_err)?;
            let out = tokio::task::spawn_blocking(move || {
                vesalius_codec::transcode_file(f.path(), &ts)
            })
            .await
            .map_err(io_err)?
            .map_err(|e| {
                tracing::error!(sop = %i.sop_instance_uid, error = %e, "transcoding failed mid-response");
                io_err(e)
            })?;
            Ok(Bytes::from(out))
        })
        .boxed(),
    }
}

fn describe(scope: &Scope) -> String {
    match (&scope.study, &scope.series, &scope.instance) {
        (Some(s), None, None) => format!("study {s}"),
        (Some(s), Some(se), None) => format!("series {se} of study {s}"),
        (_, _, Some(i)) => format!("instance {i}"),
        _ => "nothing in scope".into(),
    }
}

/// `GET /studies/{study}/metadata`.
pub(crate) async fn study_metadata(
    st: Ctx,
    url: ServiceUrl,
    Path(study): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    check_uids(&[&study])?;
    metadata(&st, &url, st.scope(&study, None, None), &headers).await
}

/// `GET /studies/{study}/series/{series}/metadata`.
pub(crate) async fn series_metadata(
    st: Ctx,
    url: ServiceUrl,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    check_uids(&[&study, &series])?;
    metadata(&st, &url, st.scope(&study, Some(&series), None), &headers).await
}

/// `GET /studies/{study}/series/{series}/instances/{sop}/metadata`.
pub(crate) async fn instance_metadata(
    st: Ctx,
    url: ServiceUrl,
    Path((study, series, sop)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    check_uids(&[&study, &series, &sop])?;
    metadata(
        &st,
        &url,
        st.scope(&study, Some(&series), Some(&sop)),
        &headers,
    )
    .await
}

async fn metadata(
    st: &AppState,
    url: &ServiceUrl,
    scope: Scope,
    headers: &HeaderMap,
) -> Result<Response> {
    let entries = accept_entries(headers);
    if !entries.is_empty()
        && !entries
            .iter()
            .any(|m| m.covers("application/dicom+json") || m.covers("application/json"))
    {
        return Err(DicomWebError::not_acceptable(
            "metadata is available as application/dicom+json",
        ));
    }
    let items = st.ingestor.index().metadata(&scope).await?;
    if items.is_empty() {
        return Err(DicomWebError::not_found(describe(&scope)));
    }
    let mut body =
        String::with_capacity(items.iter().map(|m| m.json.len() + 64).sum::<usize>() + 2);
    body.push('[');
    for (n, m) in items.iter().enumerate() {
        if n > 0 {
            body.push(',');
        }
        let i = &m.instance;
        let base = url.instance(&i.study_uid, &i.series_uid, &i.sop_instance_uid);
        body.push_str(&with_available_transfer_syntax(
            &absolutize_bulk_uris(&m.json, &base),
            &i.transfer_syntax,
        ));
    }
    body.push(']');
    Ok(([(header::CONTENT_TYPE, "application/dicom+json")], body).into_response())
}

/// An instance's DICOM JSON with Available Transfer Syntax UID (0008,3002): the transfer
/// syntax it is stored in (PS3.18 10.6.3.3.1 lists it among the instance's attributes), so a
/// client knows what frames asked for uncompressed will be (the web viewer reads from it
/// which colour space decoded frames arrive in). Added when absent; the stored JSON is kept.
fn with_available_transfer_syntax(json: &str, ts: &str) -> String {
    let ts = ts.trim_end_matches(['\0', ' ']);
    let uid = !ts.is_empty() && ts.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if !uid || json.contains("\"00083002\"") || !json.starts_with('{') {
        return json.to_owned();
    }
    let rest = &json[1..];
    let sep = if rest.trim_start().starts_with('}') {
        ""
    } else {
        ","
    };
    format!("{{\"00083002\":{{\"vr\":\"UI\",\"Value\":[\"{ts}\"]}}{sep}{rest}")
}

/// The media type of the compressed bit streams of a transfer syntax (PS3.18 Table 8.7.3-2).
pub(crate) fn frame_media_type(ts: &str) -> Option<&'static str> {
    Some(match ts {
        uid::JPEG_BASELINE | uid::JPEG_EXTENDED | uid::JPEG_LOSSLESS | uid::JPEG_LOSSLESS_SV1 => {
            "image/jpeg"
        }
        uid::JPEG_LS_LOSSLESS | uid::JPEG_LS_NEAR_LOSSLESS => "image/jls",
        uid::JPEG_2000_LOSSLESS | uid::JPEG_2000 => "image/jp2",
        uid::HTJ2K_LOSSLESS | uid::HTJ2K_LOSSLESS_RPCL | uid::HTJ2K => "image/jphc",
        uid::RLE_LOSSLESS => "image/dicom-rle",
        _ => return None,
    })
}

/// How frames are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameMode {
    /// The stored bytes, each part of this media type.
    AsStored(&'static str),
    /// Decoded to native little endian pixels.
    Decode,
}

/// Negotiates frame media types (PS3.18 8.7.3.3, 8.7.3.5.2) for an instance stored in `stored`.
pub(crate) fn negotiate_frames(entries: &[MediaType], stored: &str) -> Result<FrameMode> {
    let enc = uid::encoding_of(stored);
    let compressed = enc.is_some_and(|e| e.encapsulated);
    // Native pixels in any little endian syntax are the Explicit VR Little Endian bytes.
    let native_le = enc.is_some_and(|e| !e.encapsulated && !e.big_endian && !e.deflated);
    let as_stored_ok = compressed || native_le;
    let octet = "application/octet-stream";
    if entries.is_empty() {
        return Ok(if as_stored_ok {
            FrameMode::AsStored(octet)
        } else {
            FrameMode::Decode
        });
    }
    for e in entries {
        let (media, ts) = match e.essence.as_str() {
            "multipart/related" => (
                e.related_type().unwrap_or_else(|| octet.to_owned()),
                e.transfer_syntax(),
            ),
            other => (other.to_owned(), e.transfer_syntax()),
        };
        let any_ts = ts.is_none_or(|t| t == "*");
        match media.as_str() {
            "*/*" | "multipart/*" | "application/*" | "application/octet-stream" => {
                if as_stored_ok && (any_ts || ts == Some(stored)) {
                    return Ok(FrameMode::AsStored(octet));
                }
                if ts == Some(uid::EXPLICIT_VR_LE) || (any_ts && !as_stored_ok) {
                    return Ok(if native_le {
                        FrameMode::AsStored(octet)
                    } else {
                        FrameMode::Decode
                    });
                }
            }
            m => {
                if let Some(mt) = frame_media_type(stored)
                    && MediaType::parse(m).is_some_and(|r| r.covers(mt))
                    && (any_ts || ts == Some(stored))
                {
                    return Ok(FrameMode::AsStored(mt));
                }
            }
        }
    }
    Err(DicomWebError::not_acceptable(format!(
        "frames of this instance ({stored}) are available as application/octet-stream \
         (as stored, or decoded with transfer-syntax={})",
        uid::EXPLICIT_VR_LE
    )))
}

/// Parses a frame list `1,3,5` (PS3.18 10.4.1.1.5); numbers are 1-based.
pub(crate) fn parse_frame_list(list: &str) -> Result<Vec<u32>> {
    let nums: Option<Vec<u32>> = list
        .split(',')
        .map(|s| s.trim().parse::<u32>().ok().filter(|n| *n >= 1))
        .collect();
    match nums {
        Some(v) if !v.is_empty() && v.len() <= MAX_FRAMES_PER_REQUEST => Ok(v),
        _ => Err(DicomWebError::bad_request(format!(
            "{list:?} is not a list of frame numbers (1-based, comma-separated)"
        ))),
    }
}

/// The instance in `scope`, its frame index and how its frames `nums` are sent to a client
/// accepting `accept`: 404 for an unknown instance or a frame past its last.
async fn frames_of(
    st: &Ctx,
    scope: &Scope,
    accept: &[MediaType],
    sop: &str,
    nums: &[u32],
) -> Result<(StoredInstance, FrameIndex, FrameMode)> {
    let (inst, index) = st
        .ingestor
        .index()
        .frames(scope)
        .await?
        .ok_or_else(|| DicomWebError::not_found(describe(scope)))?;
    let mut mode = negotiate_frames(accept, &inst.transfer_syntax)?;
    if index.frames.is_empty() {
        // Not indexed (deflated data sets): decode, which also finds out whether there are pixels.
        mode = FrameMode::Decode;
    } else if let Some(&bad) = nums.iter().find(|n| **n as usize > index.frames.len()) {
        return Err(DicomWebError::not_found(format!(
            "frame {bad} of instance {sop}, which has {} frame(s)",
            index.frames.len()
        )));
    }
    Ok((inst, index, mode))
}

/// `GET /studies/{s}/series/{se}/instances/{i}/frames/{list}`.
pub(crate) async fn frames(
    st: Ctx,
    Path((study, series, sop, list)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    check_uids(&[&study, &series, &sop])?;
    let nums = parse_frame_list(&list)?;
    let scope = st.scope(&study, Some(&series), Some(&sop));
    let (inst, index, mode) =
        frames_of(&st, &scope, &accept_entries(&headers), &sop, &nums).await?;
    let blobs = st.ingestor.blobs().clone();
    let body = match mode {
        FrameMode::AsStored(media) => {
            let ts = if uid::encoding_of(&inst.transfer_syntax).is_some_and(|e| e.encapsulated) {
                inst.transfer_syntax.clone()
            } else {
                uid::EXPLICIT_VR_LE.to_owned()
            };
            let parts = nums
                .iter()
                .map(|n| frame_ranges(&index, *n))
                .collect::<Vec<_>>();
            let mp = Multipart::new(media);
            let ct = mp.content_type();
            (
                ct,
                ranged_parts(
                    blobs,
                    inst.blob_key,
                    mp,
                    &format!("{media}; transfer-syntax={ts}"),
                    parts,
                ),
            )
        }
        FrameMode::Decode => {
            let mp = Multipart::new("application/octet-stream");
            let ct = mp.content_type();
            (ct, decoded_parts(blobs, inst.blob_key, mp, nums))
        }
    };
    Ok(response(&body.0, body.1))
}

/// The most instances one series frames request may name.
pub(crate) const MAX_INSTANCES_PER_REQUEST: usize = 500;

/// Parses the `instances` list of a series frames request: `{sop}` (frame 1) or
/// `{sop}:{frame}`, comma-separated.
pub(crate) fn parse_instance_frames(list: &str) -> Result<Vec<(String, u32)>> {
    let bad = || {
        DicomWebError::bad_request(format!(
            "{list:?} is not a list of instances ({{sop}} or {{sop}}:{{frame}}, comma-separated, \
             at most {MAX_INSTANCES_PER_REQUEST})"
        ))
    };
    let mut out = Vec::new();
    for item in list.split(',') {
        let (sop, frame) = match item.trim().split_once(':') {
            Some((sop, f)) => (
                sop,
                f.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(bad)?,
            ),
            None => (item.trim(), 1),
        };
        check_uids(&[sop])?;
        out.push((sop.to_owned(), frame));
    }
    if out.is_empty() || out.len() > MAX_INSTANCES_PER_REQUEST {
        return Err(bad());
    }
    Ok(out)
}

/// One part of a series frames answer.
enum FramePart {
    /// Stored bytes at these ranges of a blob.
    Ranged(String, Vec<(u64, u64)>),
    /// Frame `n` of a blob, decoded.
    Decoded(String, u32),
}

/// `GET /studies/{s}/series/{se}/frames?instances={sop}[:{frame}],…` (a Vesalius extension of
/// WADO-RS, docs/api-dicomweb.md): the frames of several instances of one series in one
/// `multipart/related; type="application/octet-stream"` answer, in the order asked, each part
/// with the `Content-Location` of its frame (`…/instances/{sop}/frames/{n}`). Saves a viewer
/// one request per slice. Negotiation as for one instance's frames; only
/// `application/octet-stream` parts (as stored when native, else decoded).
pub(crate) async fn series_frames(
    st: Ctx,
    url: ServiceUrl,
    Path((study, series)): Path<(String, String)>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response> {
    check_uids(&[&study, &series])?;
    let list = params
        .iter()
        .find(|(k, _)| k == "instances")
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| {
            DicomWebError::bad_request("the instances parameter is missing (instances={sop},…)")
        })?;
    let wanted = parse_instance_frames(list)?;
    let accept = accept_entries(&headers);
    let octet = "application/octet-stream";
    let mut plan = Vec::with_capacity(wanted.len());
    for (sop, n) in wanted {
        let scope = st.scope(&study, Some(&series), Some(&sop));
        let (inst, index, mode) = frames_of(&st, &scope, &accept, &sop, &[n]).await?;
        let native = !uid::encoding_of(&inst.transfer_syntax).is_some_and(|e| e.encapsulated);
        let location = format!("{}/frames/{n}", url.instance(&study, &series, &sop));
        let part = match mode {
            FrameMode::AsStored(m) if m == octet && native => {
                FramePart::Ranged(inst.blob_key.clone(), frame_ranges(&index, n))
            }
            FrameMode::Decode => FramePart::Decoded(inst.blob_key.clone(), n),
            FrameMode::AsStored(_) => {
                return Err(DicomWebError::not_acceptable(format!(
                    "instance {sop} is stored in {}: frames of several instances are sent as \
                     application/octet-stream with transfer-syntax={} only",
                    inst.transfer_syntax,
                    uid::EXPLICIT_VR_LE
                )));
            }
        };
        plan.push((location, part));
    }
    let blobs = st.ingestor.blobs().clone();
    let mp = Multipart::new(octet);
    let ct = mp.content_type();
    let framing = mp.clone();
    let count = plan.len();
    let part_type = format!("{octet}; transfer-syntax={}", uid::EXPLICIT_VR_LE);
    let body = stream::iter(plan.into_iter().enumerate())
        .flat_map(move |(i, (location, part))| {
            let head = framing.part_header(i == 0, &part_type, Some(&location));
            let bytes = match part {
                FramePart::Ranged(key, ranges) => blob_io::ranges(blobs.clone(), key, ranges),
                FramePart::Decoded(key, n) => decoded_frame(blobs.clone(), key, n),
            };
            stream::once(async move { Ok(head) }).chain(bytes).boxed()
        })
        .chain(stream::once(async move { Ok(mp.closing(count == 0)) }))
        .boxed();
    Ok(response(&ct, body))
}

/// Frame `n` of a blob decoded to native little endian (one part's bytes).
fn decoded_frame(blobs: Arc<dyn BlobStore>, key: String, n: u32) -> ByteStream {
    stream::once(async move {
        let f = blob_io::local_file(&blobs, &key).await.map_err(io_err)?;
        let decoded =
            tokio::task::spawn_blocking(move || vesalius_codec::decode_frame(f.path(), n))
                .await
                .map_err(io_err)?
                .map_err(|e| {
                    tracing::warn!(frame = n, error = %e, "frame decoding failed mid-response");
                    io_err(e)
                })?;
        Ok(Bytes::from(decoded.data))
    })
    .boxed()
}

fn frame_ranges(index: &FrameIndex, n: u32) -> Vec<(u64, u64)> {
    index.frames[n as usize - 1]
        .iter()
        .map(|&(off, len)| (off, u64::from(len)))
        .collect()
}

/// Parts of stored byte ranges, each part the concatenation of its ranges.
fn ranged_parts(
    blobs: Arc<dyn BlobStore>,
    key: String,
    mp: Multipart,
    part_type: &str,
    parts: Vec<Vec<(u64, u64)>>,
) -> ByteStream {
    let count = parts.len();
    let framing = mp.clone();
    let part_type = part_type.to_owned();
    stream::iter(parts.into_iter().enumerate())
        .flat_map(move |(n, ranges)| {
            let head = framing.part_header(n == 0, &part_type, None);
            stream::once(async move { Ok(head) }).chain(blob_io::ranges(
                blobs.clone(),
                key.clone(),
                ranges,
            ))
        })
        .chain(stream::once(async move { Ok(mp.closing(count == 0)) }))
        .boxed()
}

/// Parts of decoded frames (native little endian, interleaved), decoded one at a time.
fn decoded_parts(
    blobs: Arc<dyn BlobStore>,
    key: String,
    mp: Multipart,
    nums: Vec<u32>,
) -> ByteStream {
    let framing = mp.clone();
    let count = nums.len();
    let file = Arc::new(tokio::sync::OnceCell::new());
    stream::iter(nums.into_iter().enumerate())
        .then(move |(n, frame)| {
            let (blobs, key, file, framing) =
                (blobs.clone(), key.clone(), file.clone(), framing.clone());
            async move {
                let f = file
                    .get_or_try_init(|| async {
                        blob_io::local_file(&blobs, &key).await.map(Arc::new)
                    })
                    .await
                    .map_err(io_err)?
                    .clone();
                let decoded = tokio::task::spawn_blocking(move || {
                    vesalius_codec::decode_frame(f.path(), frame)
                })
                .await
                .map_err(io_err)?
                .map_err(|e| {
                    tracing::warn!(frame, error = %e, "frame decoding failed mid-response");
                    io_err(e)
                })?;
                let head = framing.part_header(
                    n == 0,
                    &format!(
                        "application/octet-stream; transfer-syntax={}",
                        uid::EXPLICIT_VR_LE
                    ),
                    None,
                );
                Ok::<_, std::io::Error>(stream::iter([Ok(head), Ok(Bytes::from(decoded.data))]))
            }
        })
        .flat_map(|r| match r {
            Ok(s) => s.boxed(),
            Err(e) => stream::once(async move { Err(e) }).boxed(),
        })
        .chain(stream::once(async move { Ok(mp.closing(count == 0)) }))
        .boxed()
}

/// `GET /studies/{s}/series/{se}/instances/{i}/bulkdata/{spec}` where `spec` is
/// `{offset}-{length}` or `7FE00010` (the BulkDataURIs the metadata carries).
pub(crate) async fn bulkdata(
    st: Ctx,
    Path((study, series, sop, spec)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    check_uids(&[&study, &series, &sop])?;
    let scope = st.scope(&study, Some(&series), Some(&sop));
    let (inst, index) = st
        .ingestor
        .index()
        .frames(&scope)
        .await?
        .ok_or_else(|| DicomWebError::not_found(describe(&scope)))?;
    let single = bulk_single(&accept_entries(&headers))?;
    let octet = "application/octet-stream";
    let (part_type, parts): (String, Vec<Vec<(u64, u64)>>) =
        if spec.eq_ignore_ascii_case("7FE00010") {
            if index.frames.is_empty() {
                return Err(DicomWebError::not_found(format!(
                    "no indexed pixel data in instance {sop}"
                )));
            }
            let ts = &inst.transfer_syntax;
            let parts = (1..=index.frames.len() as u32)
                .map(|n| frame_ranges(&index, n))
                .collect();
            (format!("{octet}; transfer-syntax={ts}"), parts)
        } else {
            let (off, len) = spec
                .split_once('-')
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
                .ok_or_else(|| {
                    DicomWebError::bad_request(format!("{spec:?} is not a bulk data reference"))
                })?;
            if off.checked_add(len).is_none_or(|end| end > inst.size) {
                return Err(DicomWebError::not_found(format!(
                    "bytes {off}+{len} are outside instance {sop} ({} bytes)",
                    inst.size
                )));
            }
            (octet.to_owned(), vec![vec![(off, len)]])
        };
    let blobs = st.ingestor.blobs().clone();
    if single {
        if parts.len() != 1 {
            return Err(DicomWebError::not_acceptable(
                "multi-frame pixel data is available as multipart/related only",
            ));
        }
        let ranges = parts.into_iter().next().unwrap_or_default();
        return Ok(response(
            octet,
            blob_io::ranges(blobs, inst.blob_key, ranges),
        ));
    }
    let mp = Multipart::new(octet);
    let ct = mp.content_type();
    Ok(response(
        &ct,
        ranged_parts(blobs, inst.blob_key, mp, &part_type, parts),
    ))
}

/// Bulk data form: `true` for a bare `application/octet-stream` body.
fn bulk_single(entries: &[MediaType]) -> Result<bool> {
    if entries.is_empty() {
        return Ok(false);
    }
    for e in entries {
        match e.essence.as_str() {
            "multipart/related" => {
                let t = e.related_type();
                if t.as_deref().is_none_or(|t| {
                    MediaType::parse(t).is_some_and(|m| m.covers("application/octet-stream"))
                }) {
                    return Ok(false);
                }
            }
            "application/octet-stream" => return Ok(true),
            "*/*" | "multipart/*" | "application/*" => return Ok(false),
            _ => {}
        }
    }
    Err(DicomWebError::not_acceptable(
        "bulk data is available as application/octet-stream",
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn metadata_names_the_stored_transfer_syntax() {
        use super::with_available_transfer_syntax as with;
        let ts = "1.2.840.10008.1.2.4.50";
        let j: serde_json::Value = serde_json::from_str(&with(
            r#"{"00280004":{"vr":"CS","Value":["YBR_FULL_422"]}}"#,
            ts,
        ))
        .unwrap();
        assert_eq!(j["00083002"]["Value"][0], ts);
        assert_eq!(j["00280004"]["Value"][0], "YBR_FULL_422");
        assert_eq!(
            with("{}", ts),
            format!(r#"{{"00083002":{{"vr":"UI","Value":["{ts}"]}}}}"#)
        );
        let given = r#"{"00083002":{"vr":"UI","Value":["1.2.840.10008.1.2"]}}"#;
        assert_eq!(with(given, ts), given);
        assert_eq!(with("{}", "1.2\"x"), "{}");
    }

    use super::*;

    fn acc(s: &str) -> Vec<MediaType> {
        parse_accept(Some(s))
    }

    #[test]
    fn dicom_negotiation() {
        let a = negotiate_dicom(&acc(
            "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.4.50, \
             multipart/related; type=\"application/dicom\"; transfer-syntax=*;q=0.5",
        ))
        .unwrap();
        assert!(a.multipart);
        assert_eq!(a.syntaxes, ["1.2.840.10008.1.2.4.50", "*"]);
        assert!(
            !negotiate_dicom(&acc("application/dicom"))
                .unwrap()
                .multipart
        );
        assert!(negotiate_dicom(&acc("application/zip")).is_err());
        assert!(negotiate_dicom(&acc("multipart/related; type=\"image/jpeg\"")).is_err());
        assert_eq!(negotiate_dicom(&[]).unwrap().syntaxes, ["*"]);
        assert_eq!(
            choose_syntax("1.2.840.10008.1.2.1", &["*".into()]),
            Some(None)
        );
        assert_eq!(
            choose_syntax("1.2.840.10008.1.2.1", &["1.2.840.10008.1.2.1".into()]),
            Some(None)
        );
    }

    #[test]
    fn frame_negotiation() {
        let jpeg = uid::JPEG_BASELINE;
        let ex = uid::EXPLICIT_VR_LE;
        let octet = FrameMode::AsStored("application/octet-stream");
        assert_eq!(negotiate_frames(&[], ex).unwrap(), octet);
        assert_eq!(negotiate_frames(&[], jpeg).unwrap(), octet);
        assert_eq!(
            negotiate_frames(&[], uid::EXPLICIT_VR_BE).unwrap(),
            FrameMode::Decode
        );
        let want_native = acc(&format!(
            "multipart/related; type=\"application/octet-stream\"; transfer-syntax={ex}"
        ));
        assert_eq!(
            negotiate_frames(&want_native, jpeg).unwrap(),
            FrameMode::Decode
        );
        assert_eq!(
            negotiate_frames(&want_native, uid::IMPLICIT_VR_LE).unwrap(),
            octet
        );
        assert_eq!(
            negotiate_frames(&acc("multipart/related; type=\"image/jpeg\""), jpeg).unwrap(),
            FrameMode::AsStored("image/jpeg")
        );
        assert!(negotiate_frames(&acc("multipart/related; type=\"image/jpeg\""), ex).is_err());
        assert_eq!(
            negotiate_frames(
                &acc("multipart/related; type=\"application/octet-stream\"; transfer-syntax=*"),
                jpeg
            )
            .unwrap(),
            octet
        );
    }

    #[test]
    fn frame_lists() {
        assert_eq!(parse_frame_list("1,3, 2").unwrap(), [1, 3, 2]);
        for bad in ["", "0", "1,,2", "x", "-1"] {
            assert!(parse_frame_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bulk_forms() {
        assert!(!bulk_single(&[]).unwrap());
        assert!(bulk_single(&acc("application/octet-stream")).unwrap());
        assert!(
            !bulk_single(&acc("multipart/related; type=\"application/octet-stream\"")).unwrap()
        );
        assert!(bulk_single(&acc("image/png")).is_err());
    }
}
