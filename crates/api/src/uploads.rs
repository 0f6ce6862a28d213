//! Chunked, resumable uploads through a guest upload link (issue 6): the web app's upload page
//! sends each Part 10 file in chunks, and a dropped connection costs only the chunk in flight.
//! The protocol borrows tus 1.0's headers (`Upload-Offset`, `Upload-Length`) with JSON bodies.
//!
//! - `GET /upload/{id}/{secret}/info`: the link's label, organisation, allowance (`max_bytes`,
//!   `used_bytes`, `reserved_bytes` by unfinished uploads, `remaining_bytes`), expiry, and the
//!   limits below.
//! - `POST /upload/{id}/{secret}/files` `{"name", "length", "sha256"?}` → 201 `{"id", "url",
//!   "offset": 0, "length", "state": "partial"}`. `length` must fit the link's remaining
//!   allowance minus what its unfinished uploads reserve (else 413) and the instance size limit.
//! - `HEAD`/`GET …/files/{upload}`: the current offset (`Upload-Offset` header, and the JSON
//!   `{"id", "name", "length", "offset", "state", "result"?}`), so a client resumes there.
//! - `PATCH …/files/{upload}` with `Upload-Offset: n` and the next bytes as the body: appended
//!   and fsync'd before the answer `{"offset", "length", "state"}`. A wrong offset is 409 with
//!   the current `offset` in the body; bytes past `length` are 413 (nothing appended). A body cut
//!   off half-way keeps what arrived (the next `HEAD` tells how much). When the last byte is
//!   there the file is ingested into the link's quarantine inbox exactly like the form upload
//!   (same limits, audited `upload`, its `length` counted against the link once) and the answer
//!   carries `"state": "done"` and `"result"`: `{"outcome": "stored"|"duplicate"|"replaced"|
//!   "rejected", "reason"?, "study_uid", "series_uid", "sop_instance_uid", "sha256"}`. The
//!   result is kept (an hour), so a client whose answer was lost asks again (`GET`, or the same
//!   `PATCH` at `offset == length`) and is told the same, without a second ingest. A declared
//!   `sha256` that does not match is `rejected` (`sha256-mismatch`), not ingested. A failure of
//!   the server (disk full, database unavailable) leaves the upload complete but not done: an
//!   empty `PATCH` at `offset == length` tries again. A client gone meanwhile does not cancel
//!   the ingest (it runs in a task of its own until its result is recorded).
//! - `DELETE …/files/{upload}`: abandons it (204).
//! - Users who may store into their organisation use the same protocol at `POST
//!   /api/v1/uploads` and `/api/v1/uploads/{upload}`: into the organisation itself (not the
//!   inbox), no allowance, each user's uploads seen only by that user.
//!
//! Every request checks the link (secret, revocation, expiry) again. Unknown uploads, and
//! uploads of another link, are 404.
//!
//! Bounds: the link's allowance is reserved when an upload is created (one creation at a time,
//! so concurrent ones cannot share the last bytes), and creation is refused (507) when the disk
//! is below the ingest watermark; at most [`MAX_PENDING_PER_LINK`] unfinished uploads per link and
//! [`MAX_PENDING`] on the node (429 beyond); an unfinished upload is swept
//! [`PARTIAL_TTL_MS`] after it was created, a finished one's record after [`DONE_TTL_MS`]; a body
//! that sends nothing for [`IDLE_MS`] is cut off. Partial uploads are never objects: nothing is
//! ingested before the last byte.
//!
//! On disk (`ApiOptions::upload_dir`, by default `{data_dir}/uploads`): `{upload}.json` (what
//! the upload is, written atomically by rename) and `{upload}.data` (the bytes so far, fsync'd
//! before each answer; its length is the offset). Both survive a restart; start-up reloads
//! them. A crash between the ingest and the record of its result leaves the upload complete
//! but not done: the client's next `PATCH` ingests again, which the archive answers as a
//! duplicate (the bytes are counted against the link a second time in that case).
//! Several nodes: the state is per node (the directory and an in-memory index of it), so a
//! load balancer must send one link's requests to one node (sticky by path), or a client that
//! lands on another node starts that file again (404 → a new upload).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use vesalius_auth::{Origin, Principal};
use vesalius_core::ErrorKind;
use vesalius_store::ingest::IngestContext;
use vesalius_store::model::inbox_org;

use crate::session::{agent, source};
use crate::{ApiError, Services};

/// Unfinished uploads one link may have at a time.
pub const MAX_PENDING_PER_LINK: usize = 16;
/// Unfinished uploads on this node at a time.
pub const MAX_PENDING: usize = 512;
/// An unfinished upload is removed this long after it was created (24 h).
pub const PARTIAL_TTL_MS: i64 = 24 * 3_600_000;
/// A finished upload's result is kept this long (1 h), for clients whose answer was lost.
pub const DONE_TTL_MS: i64 = 3_600_000;
/// A request body that sends nothing for this long is cut off (the bytes before are kept).
pub const IDLE_MS: u64 = 60_000;
/// How long a request waits for another request writing the same upload.
const LOCK_WAIT_MS: u64 = 15_000;
/// The chunk size the web app uses (a hint in `info`; any size is accepted).
pub const CHUNK_BYTES: u64 = 2 << 20;
/// The longest file name kept.
const MAX_NAME: usize = 255;

/// What an upload is: its `{id}.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    id: String,
    /// Whose upload it is: `link:{link id}` (a guest upload link: its allowance is reserved,
    /// the file goes to the organisation's inbox) or `user:{org}:{actor id}` (a user importing
    /// into their own organisation).
    owner: String,
    org: String,
    name: String,
    length: u64,
    #[serde(default)]
    sha256: Option<String>,
    created_ms: i64,
    /// The per-file result once done.
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    done_ms: Option<i64>,
}

impl Meta {
    /// The upload link's id, for a guest's upload.
    fn link_id(&self) -> Option<&str> {
        self.owner.strip_prefix("link:")
    }
}

struct Entry {
    meta: Meta,
    lock: Arc<tokio::sync::Mutex<()>>,
}

/// The node's resumable uploads: the directory and an index of it in memory.
pub(crate) struct Uploads {
    dir: Option<PathBuf>,
    entries: std::sync::Mutex<HashMap<String, Entry>>,
    last_sweep: AtomicI64,
    /// Held while an upload is created: the allowance check and the reservation are one step.
    creating: tokio::sync::Mutex<()>,
}

fn now_ms() -> i64 {
    vesalius_auth::now_ms()
}

impl Uploads {
    /// Opens (creating) `dir` and loads what a previous run left; without a directory the API
    /// answers 503.
    pub(crate) fn open(dir: Option<PathBuf>) -> Self {
        let up = Uploads {
            dir: dir.clone(),
            entries: Default::default(),
            last_sweep: AtomicI64::new(0),
            creating: Default::default(),
        };
        let Some(dir) = dir else { return up };
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::error!(dir = %dir.display(), error = %e, "resumable uploads unavailable");
            return Uploads { dir: None, ..up };
        }
        let mut map = HashMap::new();
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "json") {
                    match std::fs::read(&p)
                        .ok()
                        .and_then(|b| serde_json::from_slice::<Meta>(&b).ok())
                    {
                        Some(meta) if valid_id(&meta.id) => {
                            map.insert(
                                meta.id.clone(),
                                Entry {
                                    meta,
                                    lock: Default::default(),
                                },
                            );
                        }
                        _ => {
                            let _ = std::fs::remove_file(&p);
                        }
                    }
                }
            }
            // Data without a record: a crash between creating the two files.
            if let Ok(rd) = std::fs::read_dir(&dir) {
                for e in rd.flatten() {
                    let p = e.path();
                    let id = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                    if p.extension().is_some_and(|x| x == "data") && !map.contains_key(id) {
                        let _ = std::fs::remove_file(&p);
                    }
                }
            }
        }
        *up.entries.lock().expect("uploads") = map;
        up.sweep(now_ms());
        up
    }

    fn dir(&self) -> Result<&FsPath, ApiError> {
        self.dir.as_deref().ok_or_else(|| {
            ApiError::new(
                ErrorKind::Unavailable,
                "resumable uploads are not configured on this server",
            )
        })
    }

    fn data_path(&self, id: &str) -> Result<PathBuf, ApiError> {
        Ok(self.dir()?.join(format!("{id}.data")))
    }

    /// Removes expired uploads (records and data).
    fn sweep(&self, now: i64) {
        let Some(dir) = &self.dir else { return };
        self.last_sweep.store(now, Ordering::Relaxed);
        let mut gone = Vec::new();
        {
            let mut map = self.entries.lock().expect("uploads");
            map.retain(|id, e| {
                let keep = match e.meta.done_ms {
                    Some(d) => now - d < DONE_TTL_MS,
                    None => now - e.meta.created_ms < PARTIAL_TTL_MS,
                };
                // One being written is left for the next sweep.
                let keep = keep || e.lock.try_lock().is_err();
                if !keep {
                    gone.push(id.clone());
                }
                keep
            });
        }
        for id in gone {
            let _ = std::fs::remove_file(dir.join(format!("{id}.data")));
            let _ = std::fs::remove_file(dir.join(format!("{id}.json")));
        }
    }

    fn get(&self, id: &str) -> Option<(Meta, Arc<tokio::sync::Mutex<()>>)> {
        let map = self.entries.lock().expect("uploads");
        map.get(id).map(|e| (e.meta.clone(), e.lock.clone()))
    }

    /// Writes the record atomically (temporary file, fsync, rename) and updates the index.
    async fn save(&self, meta: &Meta) -> Result<(), ApiError> {
        let dir = self.dir()?.to_owned();
        let m = meta.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let tmp = dir.join(format!("{}.json.tmp", m.id));
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(&m).unwrap_or_default())?;
            f.sync_all()?;
            std::fs::rename(&tmp, dir.join(format!("{}.json", m.id)))?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(|e| internal(format!("saving an upload record: {e}")))?
        .map_err(|e| internal(format!("saving an upload record: {e}")))?;
        let mut map = self.entries.lock().expect("uploads");
        match map.get_mut(&meta.id) {
            Some(e) => e.meta = meta.clone(),
            None => {
                map.insert(
                    meta.id.clone(),
                    Entry {
                        meta: meta.clone(),
                        lock: Default::default(),
                    },
                );
            }
        }
        Ok(())
    }

    fn forget(&self, id: &str) {
        self.entries.lock().expect("uploads").remove(id);
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_file(dir.join(format!("{id}.data")));
            let _ = std::fs::remove_file(dir.join(format!("{id}.json")));
        }
    }

    /// Unfinished uploads: (of this owner, bytes they reserve, on the node).
    fn pending(&self, owner: &str) -> (usize, u64, usize) {
        let map = self.entries.lock().expect("uploads");
        let mut of_link = (0, 0);
        let mut all = 0;
        for e in map.values().filter(|e| e.meta.result.is_none()) {
            all += 1;
            if e.meta.owner == owner {
                of_link.0 += 1;
                of_link.1 += e.meta.length;
            }
        }
        (of_link.0, of_link.1, all)
    }
}

fn internal(message: String) -> ApiError {
    ApiError::new(ErrorKind::Internal, message)
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn random_upload_id() -> String {
    vesalius_auth::secret::random_id(24)
}

/// The link's principal and its record, or the refusal (JSON, with the auth error's status).
async fn open_link(
    sv: &Services,
    id: &str,
    secret: &str,
    bytes: u64,
    origin: Origin<'_>,
) -> Result<(Principal, vesalius_store::directory::UploadLink), Response> {
    let p = match sv.auth.upload_link_open(id, secret, bytes, origin).await {
        Ok(p) => p,
        Err(e) => return Err(crate::session::error(e)),
    };
    match sv.auth.directory().upload_link(id).await {
        Ok(Some(l)) => Ok((p, l)),
        Ok(None) => Err(ApiError::new(ErrorKind::NotFound, "no such upload link").into_response()),
        Err(e) => Err(ApiError::from(e).into_response()),
    }
}

fn no_store() -> (header::HeaderName, HeaderValue) {
    (header::CACHE_CONTROL, HeaderValue::from_static("no-store"))
}

fn offset_header(n: u64) -> (&'static str, HeaderValue) {
    ("upload-offset", HeaderValue::from(n))
}

/// `GET /upload/{id}/{secret}/info`.
pub(crate) async fn info(
    State(sv): State<Services>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path((id, secret)): Path<(String, String)>,
) -> Response {
    let (src, ua) = (source(&ci), agent(&headers).to_owned());
    let (_, link) = match open_link(&sv, &id, &secret, 0, Origin::new(&src, &ua)).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (_, reserved, _) = sv.uploads.pending(&format!("link:{}", link.id));
    let remaining = link
        .max_bytes
        .saturating_sub(link.used_bytes)
        .saturating_sub(reserved);
    (
        [no_store()],
        Json(json!({
            "label": link.label,
            "org": link.org,
            "max_bytes": link.max_bytes,
            "used_bytes": link.used_bytes,
            "reserved_bytes": reserved,
            "remaining_bytes": remaining,
            "expires_ms": link.expires_ms,
            "chunk_bytes": CHUNK_BYTES,
            "max_file_bytes": sv.ingestor.limits().max_instance_bytes,
            "max_pending": MAX_PENDING_PER_LINK,
            "resumable": sv.uploads.dir.is_some(),
        })),
    )
        .into_response()
}

/// The body of `POST …/files`.
#[derive(Deserialize)]
pub(crate) struct NewUpload {
    #[serde(default)]
    name: String,
    length: u64,
    #[serde(default)]
    sha256: Option<String>,
}

/// `POST /upload/{id}/{secret}/files`.
pub(crate) async fn create(
    State(sv): State<Services>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path((id, secret)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let (src, ua) = (source(&ci), agent(&headers).to_owned());
    let origin = Origin::new(&src, &ua);
    let n: NewUpload = match serde_json::from_slice(&body) {
        Ok(n) => n,
        Err(e) => {
            // The link is still checked first: a wrong secret learns nothing else.
            if let Err(r) = open_link(&sv, &id, &secret, 0, origin).await {
                return r;
            }
            return ApiError::new(
                ErrorKind::BadRequest,
                format!("expected {{\"name\", \"length\", \"sha256\"?}}: {e}"),
            )
            .into_response();
        }
    };
    sweep_now_and_then(&sv);
    // Two uploads created at once must not both take the allowance's last bytes.
    let _creating = sv.uploads.creating.lock().await;
    let owner = format!("link:{id}");
    let (_, reserved, _) = sv.uploads.pending(&owner);
    let (principal, _) =
        match open_link(&sv, &id, &secret, n.length.saturating_add(reserved), origin).await {
            Ok(x) => x,
            Err(r) => return r,
        };
    let prefix = format!("/upload/{id}/{secret}/files");
    create_for(&sv, &owner, principal.org_str(), n, &prefix).await
}

fn sweep_now_and_then(sv: &Services) {
    let now = now_ms();
    if now - sv.uploads.last_sweep.load(Ordering::Relaxed) > 60_000 {
        sv.uploads.sweep(now);
    }
}

/// Creates an upload of `owner` into `org` (the caller holds `creating` and checked the
/// allowance); `prefix`: the uploads' URL.
async fn create_for(sv: &Services, owner: &str, org: &str, n: NewUpload, prefix: &str) -> Response {
    let (count, _, all) = sv.uploads.pending(owner);
    if let Err(e) = sv.uploads.dir() {
        return e.into_response();
    }
    // Partial files live on the data disk too: refused below its watermark (507).
    if let Err(e) = sv.ingestor.check_free_space() {
        return ApiError::from(e).into_response();
    }
    if n.length == 0 {
        return ApiError::new(ErrorKind::BadRequest, "an empty file is not a DICOM file")
            .into_response();
    }
    let max = sv.ingestor.limits().max_instance_bytes;
    if n.length > max {
        return ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("a file may have at most {max} bytes"),
        )
        .into_response();
    }
    if count >= MAX_PENDING_PER_LINK || all >= MAX_PENDING {
        return ApiError::new(
            ErrorKind::TooManyRequests,
            format!("at most {MAX_PENDING_PER_LINK} unfinished uploads at a time"),
        )
        .into_response();
    }
    let sha256 = match n.sha256.map(|s| s.to_ascii_lowercase()) {
        Some(s) if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) => Some(s),
        Some(_) => {
            return ApiError::new(ErrorKind::BadRequest, "sha256 must be 64 hex digits")
                .into_response();
        }
        None => None,
    };
    let meta = Meta {
        id: random_upload_id(),
        owner: owner.to_owned(),
        org: org.to_owned(),
        name: n.name.chars().take(MAX_NAME).collect(),
        length: n.length,
        sha256,
        created_ms: now_ms(),
        result: None,
        done_ms: None,
    };
    let data = match sv.uploads.data_path(&meta.id) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = tokio::fs::File::create(&data).await {
        return internal(format!("creating an upload: {e}")).into_response();
    }
    if let Err(e) = sv.uploads.save(&meta).await {
        let _ = tokio::fs::remove_file(&data).await;
        return e.into_response();
    }
    let url = format!("{prefix}/{}", meta.id);
    (
        StatusCode::CREATED,
        [
            (
                header::LOCATION,
                HeaderValue::from_str(&url).unwrap_or(HeaderValue::from_static("/")),
            ),
            no_store(),
        ],
        Json(json!({
            "id": meta.id, "url": url, "name": meta.name, "offset": 0, "length": meta.length,
            "state": "partial",
        })),
    )
        .into_response()
}

/// The upload `up` of `owner`, or 404.
fn find(
    sv: &Services,
    owner: &str,
    up: &str,
) -> Result<(Meta, Arc<tokio::sync::Mutex<()>>), ApiError> {
    let not_found = || ApiError::new(ErrorKind::NotFound, format!("no upload {up} of yours"));
    if !valid_id(up) {
        return Err(not_found());
    }
    match sv.uploads.get(up) {
        Some((m, l)) if m.owner == owner => Ok((m, l)),
        _ => Err(not_found()),
    }
}

async fn offset_of(sv: &Services, meta: &Meta) -> Result<u64, ApiError> {
    if meta.result.is_some() {
        return Ok(meta.length);
    }
    let p = sv.uploads.data_path(&meta.id)?;
    match tokio::fs::metadata(&p).await {
        Ok(m) => Ok(m.len()),
        Err(e) => Err(internal(format!("upload {} lost its data: {e}", meta.id))),
    }
}

fn state_json(meta: &Meta, offset: u64) -> Value {
    let mut v = json!({
        "id": meta.id, "name": meta.name, "length": meta.length, "offset": offset,
        "state": if meta.result.is_some() { "done" } else { "partial" },
    });
    if let Some(r) = &meta.result {
        v["result"] = r.clone();
    }
    v
}

fn state_response(status: StatusCode, meta: &Meta, offset: u64) -> Response {
    (
        status,
        [
            offset_header(offset),
            ("upload-length", HeaderValue::from(meta.length)),
        ],
        [no_store()],
        Json(state_json(meta, offset)),
    )
        .into_response()
}

/// `GET`/`HEAD /upload/{id}/{secret}/files/{upload}`.
pub(crate) async fn status(
    State(sv): State<Services>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path((id, secret, up)): Path<(String, String, String)>,
) -> Response {
    let (src, ua) = (source(&ci), agent(&headers).to_owned());
    if let Err(r) = open_link(&sv, &id, &secret, 0, Origin::new(&src, &ua)).await {
        return r;
    }
    status_of(&sv, &format!("link:{id}"), &up).await
}

async fn status_of(sv: &Services, owner: &str, up: &str) -> Response {
    let run = async {
        let (meta, _) = find(sv, owner, up)?;
        let off = offset_of(sv, &meta).await?;
        Ok::<_, ApiError>(state_response(StatusCode::OK, &meta, off))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE /upload/{id}/{secret}/files/{upload}`.
pub(crate) async fn cancel(
    State(sv): State<Services>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path((id, secret, up)): Path<(String, String, String)>,
) -> Response {
    let (src, ua) = (source(&ci), agent(&headers).to_owned());
    if let Err(r) = open_link(&sv, &id, &secret, 0, Origin::new(&src, &ua)).await {
        return r;
    }
    cancel_of(&sv, &format!("link:{id}"), &up).await
}

async fn cancel_of(sv: &Services, owner: &str, up: &str) -> Response {
    match find(sv, owner, up) {
        Ok((_, lock)) => {
            let _held = lock.lock().await;
            sv.uploads.forget(up);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => e.into_response(),
    }
}

fn conflict(offset: u64, message: &str) -> Response {
    (
        StatusCode::CONFLICT,
        [offset_header(offset)],
        Json(json!({"error": "conflict", "message": message, "offset": offset})),
    )
        .into_response()
}

/// `PATCH /upload/{id}/{secret}/files/{upload}`.
pub(crate) async fn append(
    State(sv): State<Services>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    Path((id, secret, up)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    let (src, ua) = (source(&ci), agent(req.headers()).to_owned());
    let origin = Origin::new(&src, &ua);
    let principal = match open_link(&sv, &id, &secret, 0, origin).await {
        Ok((p, _)) => p,
        Err(r) => return r,
    };
    append_to(
        &sv,
        &format!("link:{id}"),
        &up,
        &principal,
        (&src, &ua),
        req,
    )
    .await
}

/// Appends a `PATCH`'s bytes to `owner`'s upload `up`, and finishes it at the last byte.
async fn append_to(
    sv: &Services,
    owner: &str,
    up: &str,
    principal: &Principal,
    (src, ua): (&str, &str),
    req: Request,
) -> Response {
    let (_, lock) = match find(sv, owner, up) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let Ok(_held) =
        tokio::time::timeout(Duration::from_millis(LOCK_WAIT_MS), lock.lock_owned()).await
    else {
        let off = match find(sv, owner, up) {
            Ok((m, _)) => offset_of(sv, &m).await.unwrap_or(0),
            Err(e) => return e.into_response(),
        };
        return conflict(off, "another request is writing this upload");
    };
    // Read again under the lock: the request before may have finished it.
    let meta = match find(sv, owner, up) {
        Ok((m, _)) => m,
        Err(e) => return e.into_response(),
    };
    let current = match offset_of(sv, &meta).await {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let h = req.headers();
    let Some(at) = crate::authn::header_str(h, "upload-offset")
        .parse::<u64>()
        .ok()
    else {
        return ApiError::new(
            ErrorKind::BadRequest,
            "Upload-Offset (a byte count) is required",
        )
        .into_response();
    };
    if at != current {
        return conflict(
            current,
            &format!("the upload is at byte {current}, not {at}"),
        );
    }
    if meta.result.is_some() {
        // The last chunk's answer was lost: the same answer again, no second ingest.
        return state_response(StatusCode::OK, &meta, current);
    }
    let declared = crate::authn::header_str(h, header::CONTENT_LENGTH.as_str())
        .parse::<u64>()
        .ok();
    if declared.is_some_and(|n| at.saturating_add(n) > meta.length) {
        return ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!(
                "the upload has {} bytes, this chunk goes past them",
                meta.length
            ),
        )
        .into_response();
    }
    let path = match sv.uploads.data_path(&meta.id) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let written = match write_chunk(&path, req.into_body(), at, meta.length).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    if written < meta.length {
        return state_response(StatusCode::OK, &meta, written);
    }
    // The ingest runs to its end in a task of its own, holding the upload's lock: a client that
    // goes away meanwhile (a page reloaded while its last chunk was being answered: the server
    // drops the request's future) must not cancel it between the ingest and the record of its
    // result, or the resumed upload would find the file complete but not done and ingest it
    // again (a duplicate, its bytes counted twice). A resumed request waits for the lock and is
    // told the result.
    let task = tokio::spawn({
        let (sv, principal, src, ua) =
            (sv.clone(), principal.clone(), src.to_owned(), ua.to_owned());
        async move {
            let _held = _held;
            finish(&sv, meta, &principal, &src, &ua).await
        }
    });
    match task.await {
        Ok(Ok(done)) => state_response(StatusCode::OK, &done, done.length),
        Ok(Err(e)) => e.into_response(),
        Err(e) => internal(format!("finishing an upload: {e}")).into_response(),
    }
}

/// Appends the body at `at` (the file's length), at most up to `length`; fsyncs; returns the
/// new length. A body past `length` is truncated back and refused (413). A body cut off keeps
/// what arrived.
async fn write_chunk(path: &FsPath, body: Body, at: u64, length: u64) -> Result<u64, Response> {
    let io = |e: std::io::Error| internal(format!("writing an upload: {e}")).into_response();
    let mut f = tokio::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .await
        .map_err(io)?;
    let mut stream = body.into_data_stream();
    let mut n = at;
    let mut too_large = false;
    loop {
        match tokio::time::timeout(Duration::from_millis(IDLE_MS), stream.next()).await {
            Ok(Some(Ok(chunk))) => {
                if n + chunk.len() as u64 > length {
                    too_large = true;
                    break;
                }
                f.write_all(&chunk).await.map_err(io)?;
                n += chunk.len() as u64;
            }
            Ok(None) => break,
            // Cut off or idle: keep what arrived; the client asks where to resume.
            Ok(Some(Err(_))) | Err(_) => break,
        }
    }
    if too_large {
        f.set_len(at).await.map_err(io)?;
    }
    f.flush().await.map_err(io)?;
    f.sync_all().await.map_err(io)?;
    if too_large {
        return Err(ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("the upload has {length} bytes, this chunk goes past them"),
        )
        .into_response());
    }
    Ok(n)
}

/// Ingests a complete upload into the link's inbox, counts it against the link, and records the
/// result. Server failures leave it complete but not done (retried by the next `PATCH`).
async fn finish(
    sv: &Services,
    mut meta: Meta,
    principal: &Principal,
    src: &str,
    ua: &str,
) -> Result<Meta, ApiError> {
    let path = sv.uploads.data_path(&meta.id)?;
    // A copy into the spool (hashed on the way): the data stays until the result is recorded.
    let mut spool = sv.ingestor.spool()?;
    let spooled = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        use std::io::Read;
        let mut f = std::fs::File::open(&path).map_err(|e| internal(format!("{e}")))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let k = f.read(&mut buf).map_err(|e| internal(format!("{e}")))?;
            if k == 0 {
                break;
            }
            spool.write(&buf[..k])?;
        }
        Ok(spool.finish()?)
    })
    .await
    .map_err(|e| internal(format!("{e}")))??;
    let sha = spooled.sha256.clone();
    let result = if meta.sha256.as_ref().is_some_and(|want| *want != sha) {
        json!({"outcome": "rejected", "reason": "sha256-mismatch",
               "message": "the bytes received do not have the SHA-256 the client declared",
               "sha256": sha})
    } else {
        let (org, source) = match meta.link_id() {
            Some(_) => (inbox_org(&meta.org), "upload-link"),
            None => (meta.org.clone(), "api-upload"),
        };
        let ctx = IngestContext {
            rejections: if meta.link_id().is_some() {
                // A guest's rejection note hides nothing (`Rejections::Ignore`).
                vesalius_store::key_objects::Rejections::Ignore
            } else {
                Default::default()
            },
            org,
            source: source.into(),
            actor: Some(principal.actor.clone()),
            source_addr: src.to_owned(),
            user_agent: ua.to_owned(),
            ..Default::default()
        };
        match sv.ingestor.ingest(spooled, &ctx).await {
            Ok(done) => {
                let i = &done.instance;
                json!({"outcome": done.outcome, "study_uid": i.study_uid, "series_uid": i.series_uid,
                       "sop_instance_uid": i.sop_instance_uid, "sha256": i.sha256})
            }
            Err(e) => match e.kind() {
                ErrorKind::InvalidDicom
                | ErrorKind::DataSetMismatch
                | ErrorKind::PayloadTooLarge
                | ErrorKind::BadRequest
                | ErrorKind::UnsupportedMediaType
                | ErrorKind::Conflict => {
                    json!({"outcome": "rejected", "reason": e.kind().code(),
                           "message": e.to_string(), "sha256": sha})
                }
                _ => return Err(e.into()),
            },
        }
    };
    let study = result["study_uid"].as_str().map(str::to_owned);
    if meta.link_id().is_some()
        && let Err(e) = sv
            .auth
            .record_upload(
                principal,
                meta.length,
                study.as_deref(),
                Origin::new(src, ua),
            )
            .await
    {
        tracing::warn!(error = %e, "resumable upload not counted against its link");
    }
    meta.result = Some(result);
    meta.done_ms = Some(now_ms());
    sv.uploads.save(&meta).await?;
    let _ = tokio::fs::remove_file(sv.uploads.data_path(&meta.id)?).await;
    Ok(meta)
}

// --- users' uploads into their own organisation ----------------------------------------------

/// The caller as the owner of uploads, if it may store into its organisation (else 403).
fn user_owner(
    caller: Option<Extension<vesalius_auth::Caller>>,
) -> Result<(vesalius_auth::Caller, String), ApiError> {
    let c = crate::caller_of(caller)?;
    if c.principal.is_system() || !crate::allowed_in_own_org(&c, vesalius_auth::Action::Store) {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            format!(
                "{} may not store into {:?}",
                c.principal.actor.name,
                c.org()
            ),
        ));
    }
    let owner = format!("user:{}:{}", c.org(), c.principal.actor.id);
    Ok((c, owner))
}

/// `POST /api/v1/uploads`: a user's resumable upload into their own organisation.
pub(crate) async fn user_create(
    State(sv): State<Services>,
    caller: Option<Extension<vesalius_auth::Caller>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let (c, owner) = user_owner(caller)?;
    let n: NewUpload = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorKind::BadRequest,
            format!("expected {{\"name\", \"length\", \"sha256\"?}}: {e}"),
        )
    })?;
    sweep_now_and_then(&sv);
    let _creating = sv.uploads.creating.lock().await;
    Ok(create_for(&sv, &owner, c.org(), n, "/api/v1/uploads").await)
}

/// `GET`/`HEAD /api/v1/uploads/{upload}`.
pub(crate) async fn user_status(
    State(sv): State<Services>,
    caller: Option<Extension<vesalius_auth::Caller>>,
    Path(up): Path<String>,
) -> Result<Response, ApiError> {
    let (_, owner) = user_owner(caller)?;
    Ok(status_of(&sv, &owner, &up).await)
}

/// `PATCH /api/v1/uploads/{upload}`.
pub(crate) async fn user_append(
    State(sv): State<Services>,
    caller: Option<Extension<vesalius_auth::Caller>>,
    Path(up): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let (c, owner) = user_owner(caller)?;
    let origin = (c.source.as_str(), c.user_agent.as_str());
    Ok(append_to(&sv, &owner, &up, &c.principal, origin, req).await)
}

/// `DELETE /api/v1/uploads/{upload}`.
pub(crate) async fn user_cancel(
    State(sv): State<Services>,
    caller: Option<Extension<vesalius_auth::Caller>>,
    Path(up): Path<String>,
) -> Result<Response, ApiError> {
    let (_, owner) = user_owner(caller)?;
    Ok(cancel_of(&sv, &owner, &up).await)
}
