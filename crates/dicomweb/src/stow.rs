//! STOW-RS: `POST /studies` and `POST /studies/{study}` (PS3.18 10.5).
//!
//! The body is `multipart/related; type="application/dicom"`. It is read with `multer` as a
//! stream, one chunk at a time: each part's bytes go into a spool file of the ingest pipeline as
//! they arrive (in 1 MiB writes on a blocking thread), never whole in memory. When a part ends it is handed to
//! [`Ingestor::ingest`](vesalius_store::Ingestor::ingest) on a task of its own while the next part
//! is being received, with at most [`MAX_IN_FLIGHT`] parts ingesting at once, so concurrent
//! commits share the index's group commit.
//!
//! Answers (PS3.18 10.5.3, Table 10.5.3-1), `application/dicom+json`:
//! - 200 when every instance was stored (duplicates of stored instances count as stored),
//! - 202 when some failed, 409 when all failed; each failure is an item of the Failed SOP
//!   Sequence (0008,1198) whose Failure Reason (0008,1197) is the C-STORE status of the error's
//!   kind ([`ErrorKind::store_status`]: 0xA700 out of resources, 0xA900 data set mismatch, e.g. an
//!   instance of another study than the target, 0xC000 cannot understand),
//! - each stored instance is an item of the Referenced SOP Sequence (0008,1199) with its
//!   RetrieveURL, and the top-level RetrieveURL (0008,1190) names the study when the stored
//!   instances belong to one.
//!
//! A body with `Content-Encoding: gzip` or `deflate` (RFC 9110 8.4) is decoded as it streams
//! ([`crate::encoding`]); every limit here and in ingest applies to the decoded bytes, so a
//! compressed body is stored byte for byte as if it had been sent plain.
//!
//! To a peer site (Vesalius-Peer authentication, issue 5) each Referenced SOP Sequence item also
//! carries the stored instance's SHA-256 in a private element ([`HASH_CREATOR`](vesalius_auth::peer::HASH_CREATOR) reserving
//! (0009,10xx), PS3.5 7.8.1; the hash in (0009,1001), LO: 64 hex digits), and the exchange
//! layer signs the answer: the sender completes its transfer on that signed statement without
//! asking again by manifest (docs/exchange.md).
//!
//! Request-level failures answer a JSON error instead, after the parts already handed to ingest
//! have finished (they stay stored): 415 for a body that is not `multipart/related` of
//! `application/dicom` or has an unknown content coding (with `Accept-Encoding`), 413 when the
//! decoded body exceeds `max_stow_bytes` (checked against `Content-Length` up front when the
//! body is not coded, and counted while streaming), 400 for a malformed, truncated or corrupt
//! body (the truncated part is discarded), 507 when the disk is below its free-space watermark.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::{Path, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{Stream, StreamExt};
use serde_json::{Map, Value as Json, json};
use vesalius_core::{ErrorKind, tag};
use vesalius_store::ingest::IngestContext;
use vesalius_store::key_objects::Rejections;
use vesalius_store::model::StoredInstance;
use vesalius_store::spool::{SpoolWriter, SpooledFile};

use vesalius_auth::peer::{HASH_CREATOR, HASH_CREATOR_TAG, HASH_TAG};

use crate::caller::Ctx;
use crate::encoding;
use crate::error::{DicomWebError, Result};
use crate::multipart::MediaType;
use crate::{ServiceUrl, check_uids};

/// The most parts being ingested at once per request.
pub const MAX_IN_FLIGHT: usize = 4;

/// Bytes gathered before one blocking write to the spool file.
const SPOOL_FLUSH: usize = 1 << 20;

/// Bytes of each part kept to name the instance (file meta group) if it fails.
const HEAD_BYTES: usize = 16 << 10;

/// `POST /studies`: stores instances of any study.
pub(crate) async fn store(st: Ctx, url: ServiceUrl, req: Request) -> Result<Response> {
    stow(st, url, None, req).await
}

/// `POST /studies/{study}`: stores instances that must belong to `study`.
pub(crate) async fn store_in_study(
    st: Ctx,
    url: ServiceUrl,
    Path(study): Path<String>,
    req: Request,
) -> Result<Response> {
    check_uids(&[&study])?;
    stow(st, url, Some(study), req).await
}

/// The study `uid` of organisation `org` as a resource to annotate, with its patient; 404 when
/// `org` holds no such study (a peer's user annotates studies held here, never creates them).
async fn annotated_study(st: &Ctx, org: &str, uid: &str) -> Result<vesalius_auth::Resource> {
    use vesalius_store::query::{Key, Level};
    let Some(a) = find_one(st, org, Level::Study, Key::StudyInstanceUid, uid).await? else {
        return Err(DicomWebError::new(
            ErrorKind::NotFound,
            format!("no study {uid} here"),
        ));
    };
    let pid = a.first_str(Key::PatientId.tag()).unwrap_or_default();
    let issuer = a
        .first_str(Key::IssuerOfPatientId.tag())
        .unwrap_or_default();
    Ok(if pid.is_empty() {
        vesalius_auth::Resource::study(org, uid)
    } else {
        vesalius_auth::Resource::study_of(org, uid, issuer, pid)
    })
}

/// The outcome of one part.
enum PartResult {
    Stored(StoredInstance),
    Failed {
        sop_class: Option<String>,
        sop_instance: Option<String>,
        reason: u16,
    },
}

async fn stow(st: Ctx, url: ServiceUrl, study: Option<String>, req: Request) -> Result<Response> {
    // Issue 4: instances go into the caller's organisation, if it may store there; a guest
    // upload link's go into its organisation's quarantine inbox instead.
    let guest = matches!(
        st.caller.principal.kind,
        vesalius_auth::PrincipalKind::UploadLink { .. }
    );
    // Issue 5: a peer site (delivering, or writing for one of its users).
    let from_peer = matches!(
        st.caller.principal.kind,
        vesalius_auth::PrincipalKind::Peer { .. }
    );
    // `?org=`: a user who belongs to several organisations names the one to store into (a
    // session acting in another of the user's organisations; refused otherwise).
    let asked = req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "org")
            .map(|(_, v)| v.to_owned())
    });
    let mut principal = st.caller.principal.clone();
    if let Some(o) = asked.filter(|o| !guest && !principal.is_system() && o != st.caller.org()) {
        let auth = st.auth.as_ref().ok_or_else(|| {
            DicomWebError::forbidden("?org= needs the access-control layer".to_owned())
        })?;
        principal = auth.act_in(&principal, &o).await.map_err(|e| {
            DicomWebError::forbidden(format!("cannot store into organisation {o:?}: {e}"))
        })?;
    }
    let (org, action) = if principal.is_system() {
        (st.options.org.clone(), vesalius_auth::Action::Store)
    } else if guest {
        (st.caller.org().to_owned(), vesalius_auth::Action::Upload)
    } else {
        (principal.org_str().to_owned(), vesalius_auth::Action::Store)
    };
    // Issue 6: a peer writing for one of its users (a key image or measurement report saved
    // on a study held here) annotates an existing study of its organisation, named in the
    // path; it does not deliver new studies.
    let for_user = matches!(
        principal.kind,
        vesalius_auth::PrincipalKind::Peer { for_user: true, .. }
    );
    let (action, resource) = if for_user {
        let Some(uid) = study.as_deref() else {
            return Err(DicomWebError::forbidden(
                "a peer storing for one of its users names the study (POST /studies/{study})"
                    .to_owned(),
            ));
        };
        let resource = annotated_study(&st, &org, uid).await?;
        (vesalius_auth::Action::Annotate, resource)
    } else {
        (action, vesalius_auth::Resource::org(org.clone()))
    };
    let decision =
        vesalius_auth::authorize(&principal, action, &resource, &[], vesalius_auth::now_ms());
    if !decision.is_allowed() {
        st.append(st.caller.event(
            "store",
            vesalius_store::audit::Outcome::Denied,
            &org,
            study.as_deref(),
            serde_json::json!({ "reason": format!("{decision:?}"), "action": action.as_str() }),
        ));
        return Err(DicomWebError::forbidden(if for_user {
            format!(
                "{} may not annotate this study here (the site's registration of the peer \
                 does not allow its users to read and annotate)",
                st.caller.principal.actor.name
            )
        } else {
            format!(
                "{} may not store into organisation {org:?}",
                st.caller.principal.actor.name
            )
        }));
    }
    let boundary = boundary(req.headers())?;
    // RFC 9110 8.4: a coded body is decoded as it streams; every limit below applies to the
    // decoded bytes. An unknown coding is refused with the accepted ones named (15.5.16).
    let codings = match encoding::request_codings(req.headers()) {
        Ok(c) => c,
        Err(e) => return Ok(([(header::ACCEPT_ENCODING, encoding::ACCEPTED)], e).into_response()),
    };
    let max = st.options.max_stow_bytes;
    if codings.is_empty()
        && let Some(len) = content_length(req.headers())
        && len > max
    {
        return Err(too_large(max));
    }
    let raw: encoding::BodyStream = req
        .into_body()
        .into_data_stream()
        .map(|r| r.map_err(std::io::Error::other))
        .boxed();
    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(max));
    let mut body = multer::Multipart::with_constraints(
        OneChunkPerPoll {
            inner: encoding::decode(raw, &codings, max),
            yielded: false,
        },
        boundary,
        constraints,
    );
    let org = if guest {
        vesalius_store::model::inbox_org(&org)
    } else {
        org
    };
    let mut rx = Receiver {
        org,
        annotating: for_user,
        from_peer,
        st,
        study,
        in_flight: FuturesOrdered::new(),
        results: Vec::new(),
        bytes: 0,
    };
    let outcome = loop {
        match body.next_field().await {
            Ok(Some(field)) => {
                if let Err(e) = rx.receive(field).await {
                    break Err(e);
                }
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(multipart_error(e, max)),
        }
    };
    // Whatever happened to the rest of the body, parts handed to ingest finish (and stay).
    while let Some(r) = rx.in_flight.next().await {
        rx.results.push(r);
    }
    let stored = rx
        .results
        .iter()
        .filter(|r| matches!(r, PartResult::Stored(_)))
        .count();
    metrics::counter!("vesalius_stow_instances_total").increment(stored as u64);
    metrics::counter!("vesalius_stow_bytes_total").increment(rx.bytes);
    if guest && let Some(auth) = &rx.st.auth {
        // Counted against the link's limit (and audited `upload`) whatever the outcome.
        let c = &rx.st.caller;
        if let Err(e) = auth
            .record_upload(
                &c.principal,
                rx.bytes,
                rx.study.as_deref(),
                vesalius_auth::Origin::new(&c.source, &c.user_agent),
            )
            .await
        {
            tracing::warn!(error = %e, "guest upload not counted against its link");
        }
    }
    if let Err(mut e) = outcome {
        if stored > 0 {
            e.message.push_str(&format!(
                "; {stored} instance(s) received before it were stored"
            ));
        }
        return Err(e);
    }
    response(&url, rx.study.as_deref(), rx.results, from_peer)
}

/// Receives the parts of one request.
struct Receiver {
    org: String,
    /// A peer writing for one of its users: each part must be a new document about the study's
    /// images (a Key Object Selection or a Structured Report), never an image nor a new version
    /// of an instance held here.
    annotating: bool,
    /// The caller is a peer site: its rejection notes hide nothing here.
    from_peer: bool,
    st: Ctx,
    study: Option<String>,
    in_flight: FuturesOrdered<BoxFuture<'static, PartResult>>,
    results: Vec<PartResult>,
    bytes: u64,
}

impl Receiver {
    /// Streams one part into a spool file and starts its ingest. An `Err` ends the request.
    async fn receive(&mut self, mut field: multer::Field<'static>) -> Result<()> {
        let max = self.st.options.max_stow_bytes;
        if let Some(ct) = field.content_type()
            && !ct.essence_str().eq_ignore_ascii_case("application/dicom")
        {
            tracing::warn!(content_type = %ct, "STOW-RS part that is not application/dicom");
            while field
                .chunk()
                .await
                .map_err(|e| multipart_error(e, max))?
                .is_some()
            {}
            return self
                .push(failed(ErrorKind::UnsupportedMediaType, &[]))
                .await;
        }
        let mut spool = BufferedSpool::new(self.st.ingestor.spool()?);
        let mut head = Vec::with_capacity(HEAD_BYTES);
        let mut refused: Option<vesalius_store::Error> = None;
        while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, max))? {
            self.bytes += chunk.len() as u64;
            if head.len() < HEAD_BYTES {
                let n = (HEAD_BYTES - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..n]);
            }
            // After a refusal (instance too large) the rest of the part is read and dropped.
            if refused.is_none()
                && let Err(e) = spool.write(&chunk).await
            {
                refused = Some(e);
            }
        }
        if let Some(e) = refused {
            tracing::warn!(error = %e, "STOW-RS part refused");
            return self.push(failed(e.kind(), &head)).await;
        }
        if spool.size == 0 {
            return self.push(failed(ErrorKind::InvalidDicom, &head)).await;
        }
        let (mut expected_sop_class, mut expected_sop_instance) = (None, None);
        if self.annotating {
            let (class, instance) = sniff_uids(&head);
            if !class.as_deref().is_some_and(is_annotation_class) {
                tracing::warn!(sop_class = ?class, "a peer writing for a user sent no KO or SR");
                return self.push(failed(ErrorKind::Forbidden, &head)).await;
            }
            let Some(sop) = instance else {
                return self.push(failed(ErrorKind::InvalidDicom, &head)).await;
            };
            if held(&self.st, &self.org, &sop).await? {
                tracing::warn!(sop, "a peer writing for a user sent an instance held here");
                return self.push(failed(ErrorKind::Conflict, &head)).await;
            }
            // The ingest checks the data set against what the header declared (0xA900).
            (expected_sop_class, expected_sop_instance) = (class, Some(sop));
        }
        let spooled = match spool.finish().await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "STOW-RS spool");
                return self.push(failed(e.kind(), &head)).await;
            }
        };
        let ingestor = self.st.ingestor.clone();
        let ctx = IngestContext {
            org: self.org.clone(),
            source: "stow".into(),
            expected_study: self.study.clone(),
            expected_sop_class,
            expected_sop_instance,
            actor: (!self.st.caller.principal.is_system())
                .then(|| self.st.caller.principal.actor.clone()),
            source_addr: self.st.caller.source.clone(),
            user_agent: self.st.caller.user_agent.clone(),
            // Issue 5: a peer's unqualified Patient IDs are its own, not ours.
            default_issuer: peer_issuer(&self.st.caller.principal),
            // Issue 6: a peer writing for a user may withdraw (IOCM rejection note) only the key
            // image documents it stored here for that same user, and may not make one in
            // another's name (`vesalius_store::key_objects`): never hide an image.
            rejections: if self.annotating {
                Rejections::KeyImagesOf(Some(self.st.caller.principal.actor.id.clone()))
            } else if vesalius_store::model::inbox_owner(&self.org).is_some() || self.from_peer {
                // A guest upload link's STOW-RS, or a peer site's delivery: a rejection note is
                // kept and hides nothing (neither may withdraw what this site holds).
                Rejections::Ignore
            } else {
                Rejections::Honour
            },
            ..Default::default()
        };
        // A task of its own: ingest goes on while the next part arrives, and finishes even if the
        // client goes away (the instance is then stored but unacknowledged, which is harmless).
        let task = tokio::spawn(async move { ingestor.ingest(spooled, &ctx).await });
        self.push(Box::pin(async move {
            match task.await {
                Ok(Ok(done)) => PartResult::Stored(done.instance),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "STOW-RS instance not stored");
                    failed_now(e.kind(), &head)
                }
                Err(e) => {
                    tracing::error!(error = %e, "STOW-RS ingest task");
                    failed_now(ErrorKind::Internal, &head)
                }
            }
        }))
        .await
    }

    /// Queues a part's result, waiting for the oldest when too many are in flight.
    async fn push(&mut self, f: BoxFuture<'static, PartResult>) -> Result<()> {
        self.in_flight.push_back(f);
        while self.in_flight.len() >= MAX_IN_FLIGHT {
            if let Some(r) = self.in_flight.next().await {
                self.results.push(r);
            }
        }
        Ok(())
    }
}

/// Whether organisation `org` holds an instance `sop`.
async fn held(st: &Ctx, org: &str, sop: &str) -> Result<bool> {
    use vesalius_store::query::{Key, Level};
    Ok(find_one(st, org, Level::Image, Key::SopInstanceUid, sop)
        .await?
        .is_some())
}

/// The first answer at `level` of organisation `org` whose `key` is `uid`.
async fn find_one(
    st: &Ctx,
    org: &str,
    level: vesalius_store::query::Level,
    key: vesalius_store::query::Key,
    uid: &str,
) -> Result<Option<vesalius_store::query::Answer>> {
    use vesalius_store::query::{Access, Matcher, Query};
    let mut q = Query::new(level).with(key, Matcher::Single(uid.into()));
    q.access = Some(Access::orgs([org]));
    q.limit = 1;
    Ok(st.ingestor.index().find(&q).await?.into_iter().next())
}

/// Whether `class` is a Structured Report or Key Object Selection Document storage SOP Class
/// (PS3.4 B.5: `1.2.840.10008.5.1.4.1.1.88.*`; KO is `.88.59`; PS3.3 A.35).
fn is_annotation_class(class: &str) -> bool {
    class.starts_with("1.2.840.10008.5.1.4.1.1.88.")
}

fn failed(kind: ErrorKind, head: &[u8]) -> BoxFuture<'static, PartResult> {
    let r = failed_now(kind, head);
    Box::pin(async move { r })
}

fn failed_now(kind: ErrorKind, head: &[u8]) -> PartResult {
    let (sop_class, sop_instance) = sniff_uids(head);
    PartResult::Failed {
        sop_class,
        sop_instance,
        reason: kind.store_status(),
    }
}

/// Spool writes gathered into large blocking writes (the spool file is a plain file).
struct BufferedSpool {
    writer: Option<SpoolWriter>,
    buf: Vec<u8>,
    size: u64,
}

impl BufferedSpool {
    fn new(w: SpoolWriter) -> Self {
        BufferedSpool {
            writer: Some(w),
            buf: Vec::with_capacity(SPOOL_FLUSH),
            size: 0,
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> vesalius_store::Result<()> {
        self.size += bytes.len() as u64;
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= SPOOL_FLUSH {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> vesalius_store::Result<()> {
        let mut w = self.writer.take().ok_or_else(lost)?;
        let buf = std::mem::replace(&mut self.buf, Vec::with_capacity(SPOOL_FLUSH));
        let (w, r) = tokio::task::spawn_blocking(move || {
            let r = w.write(&buf);
            (w, r)
        })
        .await
        .map_err(|_| lost())?;
        self.writer = Some(w);
        r
    }

    async fn finish(mut self) -> vesalius_store::Result<SpooledFile> {
        self.flush().await?;
        let w = self.writer.take().ok_or_else(lost)?;
        tokio::task::spawn_blocking(move || w.finish())
            .await
            .map_err(|_| lost())?
    }
}

fn lost() -> vesalius_store::Error {
    vesalius_store::Error::Unavailable("spool writer task failed".into())
}

/// The SOP Class and Instance UIDs from the file meta group (PS3.10 7.1) at the start of a
/// part, to name a failed instance; `None` when the part does not start with one.
fn sniff_uids(head: &[u8]) -> (Option<String>, Option<String>) {
    let (mut class, mut instance) = (None, None);
    if head.len() < 132 || &head[128..132] != b"DICM" {
        return (class, instance);
    }
    let mut pos = 132;
    while pos + 8 <= head.len() {
        let u16_at = |p: usize| u16::from_le_bytes([head[p], head[p + 1]]);
        if u16_at(pos) != 0x0002 {
            break;
        }
        let element = u16_at(pos + 2);
        let vr = &head[pos + 4..pos + 6];
        let long = matches!(
            vr,
            b"OB" | b"OW" | b"OF" | b"SQ" | b"UT" | b"UN" | b"UC" | b"UR"
        );
        let (len, start) = if long {
            if pos + 12 > head.len() {
                break;
            }
            let l =
                u32::from_le_bytes([head[pos + 8], head[pos + 9], head[pos + 10], head[pos + 11]]);
            (l as usize, pos + 12)
        } else {
            (u16_at(pos + 6) as usize, pos + 8)
        };
        let Some(value) = head.get(start..start.saturating_add(len)) else {
            break;
        };
        let text = || {
            let s = String::from_utf8_lossy(value)
                .trim_end_matches(['\0', ' '])
                .to_owned();
            vesalius_core::uid::is_valid_uid(&s).then_some(s)
        };
        match element {
            0x0002 => class = text(),
            0x0003 => instance = text(),
            _ => {}
        }
        pos = start + len;
    }
    (class, instance)
}

/// The boundary of a `multipart/related; type="application/dicom"` request.
fn boundary(headers: &HeaderMap) -> Result<String> {
    let unsupported = |detail: &str| {
        DicomWebError::new(
            ErrorKind::UnsupportedMediaType,
            format!("STOW-RS takes multipart/related; type=\"application/dicom\" bodies: {detail}"),
        )
    };
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unsupported("the request has no Content-Type"))?;
    let m = MediaType::parse(ct).ok_or_else(|| unsupported(&format!("got {ct:?}")))?;
    if m.essence != "multipart/related" {
        return Err(unsupported(&format!("got {}", m.essence)));
    }
    if let Some(t) = m.related_type()
        && t != "application/dicom"
    {
        return Err(unsupported(&format!("parts of type {t} are not supported")));
    }
    m.param("boundary")
        .filter(|b| !b.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| DicomWebError::bad_request("multipart/related without a boundary"))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn too_large(max: u64) -> DicomWebError {
    DicomWebError::new(
        ErrorKind::PayloadTooLarge,
        format!("the STOW-RS body is larger than the limit of {max} bytes"),
    )
}

fn multipart_error(e: multer::Error, max: u64) -> DicomWebError {
    match e {
        multer::Error::StreamSizeExceeded { .. } => too_large(max),
        multer::Error::StreamReadFailed(e)
            if encoding::BodyTooLarge::find(e.as_ref()).is_some() =>
        {
            too_large(max)
        }
        multer::Error::StreamReadFailed(e) => {
            DicomWebError::bad_request(format!("unreadable request body: {e}"))
        }
        e => DicomWebError::bad_request(format!("malformed multipart body: {e}")),
    }
}

/// Hands `multer` one chunk per poll. `multer` reads its input until the stream is pending,
/// so a body that is always ready (a fast client on loopback) would otherwise be buffered whole
/// before any part is consumed; one chunk at a time keeps its buffer at about one chunk and makes
/// the size limit trip where the body really crosses it.
struct OneChunkPerPoll<S> {
    inner: S,
    yielded: bool,
}

impl<S: Stream + Unpin> Stream for OneChunkPerPoll<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if self.yielded {
            self.yielded = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let r = Pin::new(&mut self.inner).poll_next(cx);
        self.yielded = matches!(r, Poll::Ready(Some(_)));
        r
    }
}

fn seq(items: Vec<Json>) -> Json {
    json!({"vr": "SQ", "Value": items})
}

fn ui(uid: &str) -> Json {
    json!({"vr": "UI", "Value": [uid]})
}

fn ur(url: &str) -> Json {
    json!({"vr": "UR", "Value": [url]})
}

fn key(t: u32) -> String {
    format!("{t:08X}")
}

/// The STOW-RS response (PS3.18 10.5.3).
/// The answer; `hashes`: each stored instance's SHA-256 in its item (to a peer site).
fn response(
    url: &ServiceUrl,
    study: Option<&str>,
    results: Vec<PartResult>,
    hashes: bool,
) -> Result<Response> {
    if results.is_empty() {
        return Err(DicomWebError::bad_request(
            "the multipart body holds no parts",
        ));
    }
    let mut referenced = Vec::new();
    let mut failures = Vec::new();
    let mut studies: Vec<String> = study.map(str::to_owned).into_iter().collect();
    for r in results {
        match r {
            PartResult::Stored(i) => {
                let mut item = Map::new();
                item.insert(key(tag::REFERENCED_SOP_CLASS_UID), ui(&i.sop_class_uid));
                item.insert(
                    key(tag::REFERENCED_SOP_INSTANCE_UID),
                    ui(&i.sop_instance_uid),
                );
                item.insert(
                    key(tag::RETRIEVE_URL),
                    ur(&url.instance(&i.study_uid, &i.series_uid, &i.sop_instance_uid)),
                );
                if hashes {
                    item.insert(
                        HASH_CREATOR_TAG.into(),
                        json!({"vr": "LO", "Value": [HASH_CREATOR]}),
                    );
                    item.insert(HASH_TAG.into(), json!({"vr": "LO", "Value": [i.sha256]}));
                }
                if !studies.contains(&i.study_uid) {
                    studies.push(i.study_uid);
                }
                referenced.push(Json::Object(item));
            }
            PartResult::Failed {
                sop_class,
                sop_instance,
                reason,
            } => {
                let mut item = Map::new();
                if let Some(c) = sop_class {
                    item.insert(key(tag::REFERENCED_SOP_CLASS_UID), ui(&c));
                }
                if let Some(i) = sop_instance {
                    item.insert(key(tag::REFERENCED_SOP_INSTANCE_UID), ui(&i));
                }
                item.insert(
                    key(tag::FAILURE_REASON),
                    json!({"vr": "US", "Value": [reason]}),
                );
                failures.push(Json::Object(item));
            }
        }
    }
    let status = match (referenced.is_empty(), failures.is_empty()) {
        (false, true) => StatusCode::OK,
        (false, false) => StatusCode::ACCEPTED,
        _ => StatusCode::CONFLICT,
    };
    let mut body = Map::new();
    if let [only] = studies.as_slice() {
        body.insert(key(tag::RETRIEVE_URL), ur(&url.study(only)));
    }
    if !failures.is_empty() {
        body.insert(key(tag::FAILED_SOP_SEQUENCE), seq(failures));
    }
    if !referenced.is_empty() {
        body.insert(key(tag::REFERENCED_SOP_SEQUENCE), seq(referenced));
    }
    Ok((
        status,
        [(header::CONTENT_TYPE, "application/dicom+json")],
        Json::Object(body).to_string(),
    )
        .into_response())
}

/// The Issuer of Patient ID a peer site's deliveries without one are indexed under:
/// `peer:NAME` (docs/patients.md); `None` for every other caller.
pub(crate) fn peer_issuer(p: &vesalius_auth::Principal) -> Option<String> {
    (p.actor.kind == vesalius_store::audit::ActorKind::Peer).then(|| format!("peer:{}", p.actor.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_sniffed_from_the_meta_group() {
        let meta = vesalius_store::ingest::file_meta(
            "1.2.840.10008.5.1.4.1.1.7",
            "1.2.3.4",
            "1.2.840.10008.1.2.1",
            None,
        );
        let (c, i) = sniff_uids(&meta);
        assert_eq!(c.as_deref(), Some("1.2.840.10008.5.1.4.1.1.7"));
        assert_eq!(i.as_deref(), Some("1.2.3.4"));
        assert_eq!(sniff_uids(b"garbage"), (None, None));
        assert_eq!(sniff_uids(&meta[..140]), (None, None));
    }

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "multipart/related; type=\"application/dicom\"; boundary=xyz"
                .parse()
                .unwrap(),
        );
        assert_eq!(boundary(&h).unwrap(), "xyz");
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert_eq!(
            boundary(&h).unwrap_err().kind,
            ErrorKind::UnsupportedMediaType
        );
        h.insert(
            header::CONTENT_TYPE,
            "multipart/related; type=\"application/dicom+json\"; boundary=x"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            boundary(&h).unwrap_err().kind,
            ErrorKind::UnsupportedMediaType
        );
    }
}
