//! Managing share links and guest upload links (issue 4), for users of an organisation.
//!
//! - `POST /api/v1/studies/{study}/share-links` `{"allow_download", "passcode", "birth_date",
//!   "ttl_hours"}` → 201 `{"id", "url", "expires_ms", "qr_svg", ...}`. The URL carries the
//!   link's secret and is shown **once** (the server keeps only its hash); `qr_svg` encodes it
//!   for handing to a patient.
//! - `GET /api/v1/share-links` (the caller's organisation), `DELETE /api/v1/share-links/{id}`.
//! - `POST /api/v1/upload-links` `{"label", "max_bytes", "ttl_hours"}` → 201 `{"id", "url"
//!   (the upload page), "token" (`Authorization: Bearer` for STOW-RS to `stow_url`), ...}`.
//! - `GET /api/v1/upload-links`, `DELETE /api/v1/upload-links/{id}`.
//!
//! Every decision is the policy's (`create-share-link`, `create-upload-link`, `manage-org`),
//! every change audited by the authenticator.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use vesalius_auth::policy::StudyRef;
use vesalius_auth::{Caller, Origin, ShareLinkOptions};
use vesalius_core::ErrorKind;
use vesalius_store::query::{Access, Key, Level, Matcher, Query};

use crate::session::error;
use crate::{ApiError, Services};

const HOUR_MS: i64 = 3_600_000;

/// The site's base URL for links: the configured public URL, else the request's `Host`.
pub(crate) fn base_url(sv: &Services, headers: &HeaderMap) -> String {
    if let Some(u) = &sv.options.public_base_url {
        return u.trim_end_matches('/').to_owned();
    }
    let host = crate::authn::header_str(headers, "host");
    let scheme = if sv.auth.options().secure_cookies {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}")
}

/// An SVG QR code of `text` (ECC level M), for printing or showing on a screen.
pub(crate) fn qr_svg(text: &str) -> String {
    match qrcode::QrCode::with_error_correction_level(text, qrcode::EcLevel::M) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color>()
            .min_dimensions(200, 200)
            .build(),
        Err(e) => {
            tracing::warn!(error = %e, "QR code");
            String::new()
        }
    }
}

/// 400 unless `uid` looks like a UID (digits and dots; no wildcard reaches a query).
pub(crate) fn check_uid(uid: &str) -> Result<(), ApiError> {
    if !uid.is_empty() && uid.len() <= 64 && uid.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        Ok(())
    } else {
        Err(ApiError {
            kind: ErrorKind::BadRequest,
            message: format!("{uid:?} is not a UID"),
        })
    }
}

/// The study `study_uid` of `org` as the policy needs it (with its patient), or 404.
pub(crate) async fn study_ref(
    sv: &Services,
    org: &str,
    study_uid: &str,
) -> Result<StudyRef, ApiError> {
    check_uid(study_uid)?;
    let mut q =
        Query::new(Level::Study).with(Key::StudyInstanceUid, Matcher::Single(study_uid.to_owned()));
    q.access = Some(Access::orgs([org]));
    q.limit = 1;
    let found = sv.ingestor.index().find(&q).await?;
    let Some(a) = found.first() else {
        return Err(ApiError {
            kind: ErrorKind::NotFound,
            message: format!("no study {study_uid} in organisation {org}"),
        });
    };
    let pid = a.first_str(Key::PatientId.tag()).unwrap_or_default();
    let issuer = a
        .first_str(Key::IssuerOfPatientId.tag())
        .unwrap_or_default();
    Ok(StudyRef {
        org: org.to_owned(),
        study_uid: study_uid.to_owned(),
        patient: (!pid.is_empty()).then_some((issuer, pid)),
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct NewShareLink {
    allow_download: bool,
    passcode: Option<String>,
    birth_date: Option<String>,
    ttl_hours: Option<f64>,
}

fn ttl_ms(hours: Option<f64>, default_hours: f64) -> i64 {
    (hours.unwrap_or(default_hours) * HOUR_MS as f64).round() as i64
}

pub(crate) async fn create_share_link(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    Path(study): Path<String>,
    Json(n): Json<NewShareLink>,
) -> Result<Response, ApiError> {
    let c = crate::caller_of(caller)?;
    let study = study_ref(&sv, c.org(), &study).await?;
    // Issue 4: a study of the organisation the caller may not see (a referrer's, an auditor's)
    // is answered like a missing one, not with a refusal that says it exists (found by the
    // access-matrix test).
    let visible = sv
        .auth
        .authorize(
            &c.principal,
            vesalius_auth::Action::Retrieve,
            &vesalius_auth::Resource::Study(study.clone()),
        )
        .await
        .map_err(|e| ApiError {
            kind: e.kind(),
            message: e.to_string(),
        })?;
    if !visible.is_allowed() {
        return Err(ApiError {
            kind: ErrorKind::NotFound,
            message: format!("no study {} in organisation {}", study.study_uid, study.org),
        });
    }
    let opts = ShareLinkOptions {
        allow_download: n.allow_download,
        passcode: n.passcode.as_deref().filter(|p| !p.is_empty()),
        birth_date: n.birth_date.as_deref().filter(|p| !p.is_empty()),
        ttl_ms: ttl_ms(n.ttl_hours, 72.0),
    };
    let (link, secret) = match sv
        .auth
        .create_share_link(
            &c.principal,
            &study,
            opts,
            Origin::new(&c.source, &c.user_agent),
        )
        .await
    {
        Ok(x) => x,
        Err(e) => return Ok(error(e)),
    };
    let url = format!("{}/s/{}/{}", base_url(&sv, &headers), link.id, secret);
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": link.id,
            "url": url,
            "study_uid": link.study_uid,
            "org": link.org,
            "allow_download": link.allow_download,
            "passcode": link.passcode_hash.is_some(),
            "birth_date_check": link.birth_date_check.is_some(),
            "expires_ms": link.expires_ms,
            "qr_svg": qr_svg(&url),
        })),
    )
        .into_response())
}

pub(crate) async fn list_share_links(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
) -> Result<Response, ApiError> {
    let c = crate::caller_of(caller)?;
    let org = c.org().to_owned();
    // Managers of the organisation see every link; others the links they made.
    let manager = crate::allowed_in_own_org(&c, vesalius_auth::Action::ManageOrg);
    if !manager && c.principal.role.is_none() {
        return Err(ApiError {
            kind: ErrorKind::Forbidden,
            message: "only members of an organisation list its links".into(),
        });
    }
    let mut links = sv.auth.directory().share_links(&org).await?;
    links.retain(|l| manager || l.created_by == c.principal.actor.id);
    let out: Vec<_> = links
        .iter()
        .map(|l| {
            json!({
                "id": l.id, "study_uid": l.study_uid, "allow_download": l.allow_download,
                "passcode": l.passcode_hash.is_some(),
                "birth_date_check": l.birth_date_check.is_some(),
                "created_by": l.created_by, "created_ms": l.created_ms,
                "expires_ms": l.expires_ms, "revoked": l.revoked,
            })
        })
        .collect();
    Ok(Json(json!({ "share_links": out })).into_response())
}

pub(crate) async fn revoke_share_link(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let c = crate::caller_of(caller)?;
    Ok(
        match sv
            .auth
            .revoke_share_link(&c.principal, &id, Origin::new(&c.source, &c.user_agent))
            .await
        {
            Ok(()) => Json(json!({"id": id, "revoked": true})).into_response(),
            Err(e) => error(e),
        },
    )
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct NewUploadLink {
    label: String,
    max_bytes: Option<u64>,
    ttl_hours: Option<f64>,
}

/// Default size limit of an upload link: 2 GiB.
const DEFAULT_UPLOAD_BYTES: u64 = 2 << 30;

pub(crate) async fn create_upload_link(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    Json(n): Json<NewUploadLink>,
) -> Result<Response, ApiError> {
    let c = crate::caller_of(caller)?;
    let label = n.label.trim();
    if label.chars().count() > 200 {
        return Err(ApiError {
            kind: ErrorKind::BadRequest,
            message: "labels have at most 200 characters".into(),
        });
    }
    let (link, secret) = match sv
        .auth
        .create_upload_link(
            &c.principal,
            c.org(),
            label,
            n.max_bytes.unwrap_or(DEFAULT_UPLOAD_BYTES),
            ttl_ms(n.ttl_hours, 7.0 * 24.0),
            Origin::new(&c.source, &c.user_agent),
        )
        .await
    {
        Ok(x) => x,
        Err(e) => return Ok(error(e)),
    };
    let base = base_url(&sv, &headers);
    let url = format!("{base}/upload/{}/{secret}", link.id);
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": link.id,
            "url": url,
            "token": vesalius_auth::upload_token(&link.id, &secret),
            "stow_url": format!("{base}/dicom-web/studies"),
            "org": link.org,
            "label": link.label,
            "max_bytes": link.max_bytes,
            "expires_ms": link.expires_ms,
            "qr_svg": qr_svg(&url),
        })),
    )
        .into_response())
}

pub(crate) async fn list_upload_links(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
) -> Result<Response, ApiError> {
    let c = crate::caller_of(caller)?;
    let org = c.org().to_owned();
    if !crate::allowed_in_own_org(&c, vesalius_auth::Action::CreateUploadLink) {
        return Err(crate::ApiError::new(
            ErrorKind::Forbidden,
            format!("{} may not create-upload-link here", c.principal.actor.name),
        ));
    }
    let manager = crate::allowed_in_own_org(&c, vesalius_auth::Action::ManageOrg);
    let mut links = sv.auth.directory().upload_links(&org).await?;
    links.retain(|l| manager || l.created_by == c.principal.actor.id);
    let out: Vec<_> = links
        .iter()
        .map(|l| {
            json!({
                "id": l.id, "label": l.label, "max_bytes": l.max_bytes,
                "used_bytes": l.used_bytes, "created_by": l.created_by,
                "created_ms": l.created_ms, "expires_ms": l.expires_ms, "revoked": l.revoked,
            })
        })
        .collect();
    Ok(Json(json!({ "upload_links": out })).into_response())
}

pub(crate) async fn revoke_upload_link(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let c = crate::caller_of(caller)?;
    Ok(
        match sv
            .auth
            .revoke_upload_link(&c.principal, &id, Origin::new(&c.source, &c.user_agent))
            .await
        {
            Ok(()) => Json(json!({"id": id, "revoked": true})).into_response(),
            Err(e) => error(e),
        },
    )
}
