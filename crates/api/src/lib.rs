//! The JSON API under `/api/v1` and the health endpoints.
//!
//! - `POST /api/v1/instances`: one Part 10 object as the body (`application/dicom`), streamed to
//!   the spool and ingested; answers `{"outcome": "stored"|"duplicate"|"replaced", ...}`. Used by
//!   `vesalius import` so imports go through the server's group commit (and later, routing).
//! - `DELETE /api/v1/studies/{study}[/series/{series}[/instances/{sop}]]`: deletes every version
//!   in scope, index first, then blobs (a crash in between leaves orphan blobs, never dangling rows).
//! - `GET /api/v1/studies/{study}/versions`: prior versions kept when an instance was replaced.
//! - `GET /api/v1/stats`; `GET /healthz` (process up), `GET /readyz` (index answers, disk above its
//!   watermark).
//!
//! Errors are `{"error": "<kebab-case code>", "message": "..."}` with the status of the code's
//! [`ErrorKind`], mapped in [`ApiError`] only.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod alerts;
pub mod annotate;
pub mod authn;
pub mod device_cache;
pub mod events;
mod export;
mod guest;
mod inbox;
mod key_images;
mod links;
mod measurements;
pub mod oidc;
pub mod pages;
mod patients;
mod privacy;
pub mod session;
mod share;
pub mod uploads;

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use futures::StreamExt;
use serde_json::json;
use vesalius_core::ErrorKind;
use vesalius_store::Ingestor;
use vesalius_store::ingest::IngestContext;
use vesalius_store::model::IngestOutcome;
use vesalius_store::query::Scope;

/// An API error: a kind (status and code) and a message.
#[derive(Debug)]
pub struct ApiError {
    /// The kind.
    pub kind: ErrorKind,
    /// Human-readable detail.
    pub message: String,
}

impl From<vesalius_store::Error> for ApiError {
    fn from(e: vesalius_store::Error) -> Self {
        ApiError {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.kind == ErrorKind::Internal {
            tracing::error!(message = %self.message, "internal error");
        }
        let status = StatusCode::from_u16(self.kind.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            Json(json!({"error": self.kind.code(), "message": self.message})),
        )
            .into_response()
    }
}

impl ApiError {
    /// An error of `kind`.
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
        }
    }
}

/// The request's caller (put there by [`authn`]), or 401.
pub(crate) fn caller_of(
    caller: Option<axum::Extension<vesalius_auth::Caller>>,
) -> Result<vesalius_auth::Caller, ApiError> {
    caller
        .map(|axum::Extension(c)| c)
        .ok_or_else(|| ApiError::new(ErrorKind::Unauthorized, "credentials required"))
}

/// Whether the policy lets the caller do an organisation-level `action` (store, delete,
/// manage…) in its own organisation; such decisions need no grants.
pub(crate) fn allowed_in_own_org(c: &vesalius_auth::Caller, action: vesalius_auth::Action) -> bool {
    vesalius_auth::authorize(
        &c.principal,
        action,
        &vesalius_auth::Resource::org(c.org().to_owned()),
        &[],
        vesalius_auth::now_ms(),
    )
    .is_allowed()
}

/// Options of the API.
#[derive(Debug, Clone, Default)]
pub struct ApiOptions {
    /// The organisation new objects belong to.
    pub org: String,
    /// The site's external base URL (`https://pacs.example`), for the links handed out; the
    /// request's `Host` when unset.
    pub public_base_url: Option<String>,
    /// The label of the OpenID Connect login button on `/login`, when the site has a provider.
    pub oidc_button: Option<String>,
    /// Where resumable guest uploads keep their partial files (issue 6, `uploads.rs`):
    /// `{data_dir}/uploads` in `vesalius serve`; without it that API answers 503.
    pub upload_dir: Option<std::path::PathBuf>,
    /// The web app's shell page (issue 6), answered by `GET /upload/{id}/{secret}` and
    /// `GET /s/{id}` once the link is checked, so the app's upload and share pages run there;
    /// without it those addresses answer the server-rendered pages of issue 4.
    pub app_shell: Option<fn() -> &'static str>,
    /// Studies held at peers (issue 6): key images and measurement reports on a study viewed
    /// through the federation proxy are stored at the peer ([`annotate`]); without it
    /// `?peer=` on those endpoints answers 404.
    pub peer_studies: Option<annotate::PeerStudiesHook>,
}

/// What the access-control endpoints work with.
#[derive(Clone)]
pub(crate) struct Services {
    pub(crate) auth: Arc<vesalius_auth::Authenticator>,
    pub(crate) ingestor: Arc<Ingestor>,
    pub(crate) options: ApiOptions,
    pub(crate) uploads: Arc<uploads::Uploads>,
}

/// The routes of issue 4 beyond login: share links and their pages, guest upload links and
/// their page, the quarantine inbox, break-glass and the privacy reports, exports (zip,
/// de-identified), login and password pages; and patient link, merge and split (issue 5).
/// Mount at the root.
pub fn access_router(
    auth: Arc<vesalius_auth::Authenticator>,
    ingestor: Arc<Ingestor>,
    options: ApiOptions,
) -> axum::Router {
    let sv_oidc = options.oidc_button.clone();
    let sv = Services {
        auth: auth.clone(),
        ingestor,
        uploads: Arc::new(uploads::Uploads::open(options.upload_dir.clone())),
        options,
    };
    axum::Router::new()
        .route(
            "/api/v1/studies/{study}/share-links",
            post(links::create_share_link),
        )
        .route("/api/v1/share-links", get(links::list_share_links))
        .route("/api/v1/share-links/{id}", delete(links::revoke_share_link))
        .route(
            "/api/v1/upload-links",
            post(links::create_upload_link).get(links::list_upload_links),
        )
        .route(
            "/api/v1/upload-links/{id}",
            delete(links::revoke_upload_link),
        )
        .route("/api/v1/inbox", get(inbox::list))
        .route("/api/v1/inbox/studies/{study}", delete(inbox::reject))
        .route("/api/v1/inbox/studies/{study}/accept", post(inbox::accept))
        .route("/api/v1/studies/{study}/link-patient", post(patients::link))
        .route(
            "/api/v1/studies/{study}/key-images",
            post(key_images::create),
        )
        .route(
            "/api/v1/studies/{study}/key-images/{sop}",
            delete(key_images::unmark),
        )
        .route(
            "/api/v1/studies/{study}/measurements",
            post(measurements::create),
        )
        .route("/api/v1/patients/merge", post(patients::merge))
        .route("/api/v1/patients/split", post(patients::split))
        .route(
            "/api/v1/studies/{study}/break-glass",
            post(privacy::break_glass),
        )
        .route("/api/v1/audit/who-saw", get(privacy::who_saw))
        .route(
            "/api/v1/audit/break-glass",
            get(privacy::break_glass_report),
        )
        .route("/api/v1/studies/{study}/archive", get(export::archive))
        .route("/api/v1/studies/{study}/export", post(export::export))
        .route("/s/{id}", get(share::view))
        .route("/s/{id}/images", get(share::images))
        .route("/s/{id}/info", get(share::info))
        .route("/s/{id}/download", get(share::download))
        .route(
            "/s/{id}/{secret}",
            get(share::open_get).post(share::open_post),
        )
        .route(
            "/upload/{id}/{secret}",
            get(guest::form).post(guest::upload),
        )
        .route("/api/v1/uploads", post(uploads::user_create))
        .route(
            "/api/v1/uploads/{upload}",
            get(uploads::user_status)
                .patch(uploads::user_append)
                .delete(uploads::user_cancel),
        )
        .route("/upload/{id}/{secret}/info", get(uploads::info))
        .route("/upload/{id}/{secret}/files", post(uploads::create))
        .route(
            "/upload/{id}/{secret}/files/{upload}",
            get(uploads::status)
                .patch(uploads::append)
                .delete(uploads::cancel),
        )
        .with_state(sv)
        .merge(pages::router(auth, sv_oidc))
}

#[derive(Clone)]
struct AppState {
    ingestor: Arc<Ingestor>,
    options: ApiOptions,
    audit: Option<Arc<dyn vesalius_store::AuditLog>>,
}

impl AppState {
    /// Appends events to the audit trail, if there is one (logged, never failing the request:
    /// the change is done by then).
    async fn audit(&self, events: Vec<vesalius_store::audit::AuditEvent>) {
        if let Some(log) = &self.audit
            && !events.is_empty()
            && let Err(e) = log.append(events).await
        {
            tracing::error!(error = %e, "audit events not written");
        }
    }
}

/// The API router (mount at the root: it serves `/api/v1/...`, `/healthz`, `/readyz`). With an
/// audit log, deletions and reads of prior versions are audited (issue 4).
pub fn router(
    ingestor: Arc<Ingestor>,
    options: ApiOptions,
    audit: Option<Arc<dyn vesalius_store::AuditLog>>,
) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/instances", post(upload))
        .route("/api/v1/studies/{study}", delete(delete_study))
        .route(
            "/api/v1/studies/{study}/series/{series}",
            delete(delete_series),
        )
        .route(
            "/api/v1/studies/{study}/series/{series}/instances/{sop}",
            delete(delete_instance),
        )
        .route("/api/v1/studies/{study}/versions", get(versions))
        .route("/api/v1/stats", get(stats))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .with_state(AppState {
            ingestor,
            options,
            audit,
        })
}

async fn upload(
    State(st): State<AppState>,
    caller: Option<axum::Extension<vesalius_auth::Caller>>,
    body: Body,
) -> Result<Response, ApiError> {
    // Issue 4: into the caller's organisation, if it may store there.
    let caller = caller.map(|c| c.0);
    let (org, actor, source_addr, user_agent) = match &caller {
        Some(c) if !c.principal.is_system() => {
            let org = c.org().to_owned();
            if !allowed_in_own_org(c, vesalius_auth::Action::Store) {
                return Err(ApiError::new(
                    ErrorKind::Forbidden,
                    format!("{} may not store into {org:?}", c.principal.actor.name),
                ));
            }
            let actor = Some(c.principal.actor.clone());
            (org, actor, c.source.clone(), c.user_agent.clone())
        }
        _ => (st.options.org.clone(), None, String::new(), String::new()),
    };
    let mut spool = st.ingestor.spool()?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError {
            kind: ErrorKind::BadRequest,
            message: format!("reading the request body: {e}"),
        })?;
        spool.write(&chunk)?;
    }
    if spool.size() == 0 {
        return Err(ApiError {
            kind: ErrorKind::InvalidDicom,
            message: "empty body".into(),
        });
    }
    let spooled = spool.finish()?;
    let ctx = IngestContext {
        org,
        source: "api".into(),
        actor,
        source_addr,
        user_agent,
        ..Default::default()
    };
    let done = st.ingestor.ingest(spooled, &ctx).await?;
    let status = match done.outcome {
        IngestOutcome::Stored | IngestOutcome::Replaced => StatusCode::CREATED,
        IngestOutcome::Duplicate => StatusCode::OK,
    };
    let i = &done.instance;
    Ok((
        status,
        Json(json!({
            "outcome": done.outcome,
            "studyInstanceUID": i.study_uid,
            "seriesInstanceUID": i.series_uid,
            "sopInstanceUID": i.sop_instance_uid,
            "sopClassUID": i.sop_class_uid,
            "transferSyntaxUID": i.transfer_syntax,
            "size": i.size,
            "sha256": i.sha256,
        })),
    )
        .into_response())
}

async fn remove(
    st: &AppState,
    caller: Option<axum::Extension<vesalius_auth::Caller>>,
    mut scope: Scope,
) -> Result<Json<serde_json::Value>, ApiError> {
    // Issue 4: only who may delete in their organisation deletes, and only what they can see.
    let caller = caller_of(caller)?;
    if !caller.principal.is_system() {
        let org = caller.org().to_owned();
        if !allowed_in_own_org(&caller, vesalius_auth::Action::Delete) {
            return Err(ApiError::new(
                ErrorKind::Forbidden,
                format!("{} may not delete in {org:?}", caller.principal.actor.name),
            ));
        }
        scope.access = Some(vesalius_store::query::Access::orgs([org]));
    }
    // Issue 4: one `delete` event per study touched, committed in the deletion's transaction
    // when the index keeps the audit trail (SQLite); otherwise appended right after.
    let (c2, details) = (
        caller.clone(),
        json!({ "series": scope.series, "instance": scope.instance }),
    );
    let make = move |gone: &[vesalius_store::model::StoredInstance]| {
        let mut per_study: std::collections::BTreeMap<(String, String), usize> = Default::default();
        for g in gone {
            *per_study
                .entry((g.org.clone(), g.study_uid.clone()))
                .or_default() += 1;
        }
        per_study
            .into_iter()
            .map(|((org, study), n)| {
                let mut d = details.clone();
                d["instances"] = json!(n);
                c2.event(
                    "delete",
                    vesalius_store::audit::Outcome::Success,
                    &org,
                    Some(&study),
                    d,
                )
            })
            .collect::<Vec<_>>()
    };
    let gone = match st
        .ingestor
        .delete_audited(&scope, Box::new(make.clone()))
        .await
    {
        Err(vesalius_store::Error::Unavailable(_)) => {
            let gone = st.ingestor.delete(&scope).await?;
            st.audit(make(&gone)).await;
            gone
        }
        r => r?,
    };
    if gone.is_empty() {
        return Err(ApiError {
            kind: ErrorKind::NotFound,
            message: "nothing matches".into(),
        });
    }
    // Blobs after the index commit: a crash here leaves orphans for `admin check`, never rows
    // without blobs.
    let mut keys: Vec<&str> = gone.iter().map(|g| g.blob_key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    for k in &keys {
        if let Err(e) = st.ingestor.blobs().delete(k).await {
            tracing::warn!(key = %k, error = %e, "blob left behind after delete");
        }
    }
    tracing::info!(instances = gone.len(), ?scope, "deleted");
    Ok(Json(json!({"deleted": gone.len()})))
}

async fn delete_study(
    State(st): State<AppState>,
    caller: Option<axum::Extension<vesalius_auth::Caller>>,
    Path(study): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    remove(&st, caller, Scope::study(study)).await
}

async fn delete_series(
    State(st): State<AppState>,
    caller: Option<axum::Extension<vesalius_auth::Caller>>,
    Path((study, series)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    remove(&st, caller, Scope::series(study, series)).await
}

async fn delete_instance(
    State(st): State<AppState>,
    caller: Option<axum::Extension<vesalius_auth::Caller>>,
    Path((study, series, sop)): Path<(String, String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    remove(&st, caller, Scope::instance(study, series, sop)).await
}

async fn versions(
    State(st): State<AppState>,
    caller: Option<axum::Extension<vesalius_auth::Caller>>,
    Path(study): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    // Issue 4: only versions of what the caller may see; a hidden study lists nothing, like a
    // missing one (found by the access-matrix test: any caller listed any study's versions).
    let caller = caller_of(caller)?;
    let scope = Scope {
        access: caller.access.clone(),
        ..Scope::study(study.clone())
    };
    let v = st.ingestor.index().prior_versions(&scope).await?;
    if let Some(first) = v.first() {
        let ev = caller.event(
            "retrieve",
            vesalius_store::audit::Outcome::Success,
            &first.instance.org,
            Some(&study),
            json!({ "versions": v.len() }),
        );
        st.audit(vec![ev]).await;
    }
    Ok(Json(serde_json::to_value(v).unwrap_or_default()))
}

async fn stats(
    State(st): State<AppState>,
    caller: Option<axum::Extension<vesalius_auth::Caller>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    // Site-wide counts: for the server itself and administrators (manage-org), not for every
    // authenticated caller (found by the access matrix: links and referrers saw them).
    if !allowed_in_own_org(&caller_of(caller)?, vesalius_auth::Action::ManageOrg) {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "site statistics are for administrators",
        ));
    }
    let s = st.ingestor.index().stats().await?;
    Ok(Json(json!({
        "studies": s.studies, "series": s.series, "instances": s.instances, "bytes": s.bytes,
    })))
}

async fn ready(State(st): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    st.ingestor.index().ping().await?;
    st.ingestor.check_free_space()?;
    Ok(Json(json!({"status": "ready"})))
}
