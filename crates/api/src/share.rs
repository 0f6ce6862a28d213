//! The share-link pages (issue 4): what a patient or an outside clinician opens.
//!
//! - `GET /s/{id}/{secret}`: a link without passcode or birth-date check opens at once; one
//!   with a check shows a form (`POST` to the same URL). A successful open sets the
//!   `vesalius_link` pass cookie (2 h at most, never past the link's expiry; revoking the link
//!   ends it) and redirects to the viewer page.
//! - `GET /s/{id}`: with the web app (`ApiOptions::app_shell`, issue 6) its share page: the
//!   app's viewer on this one study (DICOMweb, which the pass opens for this study only), and a
//!   download button when the link allows download. Without the app, the page below.
//! - `GET /s/{id}/images`: the study's series with their images (server-rendered JPEGs from
//!   `/dicom-web/…/rendered`), and a download button when allowed: no script.
//! - `GET /s/{id}/info`: `{"study_uid", "allow_download", "expires_ms", "download_url"}` for
//!   the app's share page.
//! - `GET /s/{id}/download`: the study as a zip (audited `export`).
//!
//! Wrong passcodes and birth dates are counted per link and lock it ([`Authenticator`]); every
//! open and every refusal is audited `link-use`.
//!
//! [`Authenticator`]: vesalius_auth::Authenticator

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;
use vesalius_auth::secret::{constant_time_eq, sha256_hex};
use vesalius_auth::{Caller, Origin, PrincipalKind, cookie};
use vesalius_store::query::{Key, Level, Matcher, Query, Scope};

use crate::pages::{esc, page, page_status};
use crate::session::agent;
use crate::{ApiError, Services};

/// Images shown per series at most (evenly spaced through it).
const MAX_IMAGES_PER_SERIES: usize = 12;

fn form_body(
    id: &str,
    secret: &str,
    passcode: bool,
    birth_date: bool,
    error: Option<&str>,
) -> String {
    let err = error
        .map(|e| format!("<p class=err role=alert>{}</p>", esc(e)))
        .unwrap_or_default();
    let mut fields = String::new();
    if passcode {
        fields.push_str(
            "<label>Passcode <input type=password name=passcode required \
             autocomplete=one-time-code autofocus></label>",
        );
    }
    if birth_date {
        fields.push_str(
            "<label>Patient's date of birth <input type=date name=birth_date required></label>",
        );
    }
    format!(
        "<p>Someone shared medical images with you. Please confirm to see them.</p>{err}\
         <form method=post action='/s/{}/{}'>{fields}<button>Open</button></form>",
        esc(id),
        esc(secret)
    )
}

/// Whether the link needs answers (passcode, birth date) — only told to holders of the secret.
async fn needs_answers(sv: &Services, id: &str, secret: &str) -> Option<(bool, bool)> {
    let link = sv.auth.directory().share_link(id).await.ok()??;
    let genuine = secret.len() <= 128 && constant_time_eq(sha256_hex(secret), &link.secret_hash);
    let needs = (
        link.passcode_hash.is_some(),
        link.birth_date_check.is_some(),
    );
    (genuine && (needs.0 || needs.1)).then_some(needs)
}

/// `GET /s/{id}/{secret}`.
pub(crate) async fn open_get(
    State(sv): State<Services>,
    ci: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    Path((id, secret)): Path<(String, String)>,
) -> Response {
    if let Some((p, b)) = needs_answers(&sv, &id, &secret).await {
        return page("Shared images", &form_body(&id, &secret, p, b, None)).into_response();
    }
    open(
        &sv,
        &crate::session::source(&ci),
        agent(&headers),
        &id,
        &secret,
        None,
        None,
    )
    .await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct Answers {
    passcode: String,
    birth_date: String,
}

/// `POST /s/{id}/{secret}`.
pub(crate) async fn open_post(
    State(sv): State<Services>,
    ci: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    Path((id, secret)): Path<(String, String)>,
    Form(a): Form<Answers>,
) -> Response {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let (p, b) = (some(&a.passcode), some(&a.birth_date));
    open(
        &sv,
        &crate::session::source(&ci),
        agent(&headers),
        &id,
        &secret,
        p.as_deref(),
        b.as_deref(),
    )
    .await
}

async fn open(
    sv: &Services,
    src: &str,
    ua: &str,
    id: &str,
    secret: &str,
    passcode: Option<&str>,
    birth_date: Option<&str>,
) -> Response {
    let origin = Origin::new(src, ua);
    match sv
        .auth
        .share_link_open(id, secret, passcode, birth_date, origin)
        .await
    {
        Ok(p) => match sv.auth.share_link_pass(&p).await {
            Ok(Some((pass, secs))) => (
                [(
                    header::SET_COOKIE,
                    cookie::link_cookie(&pass, sv.auth.options().secure_cookies, secs),
                )],
                Redirect::to(&format!("/s/{id}")),
            )
                .into_response(),
            Ok(None) => page_status(StatusCode::NOT_FOUND, "Shared images", "<p>Not found.</p>"),
            Err(e) => crate::session::error(e),
        },
        Err(e) => {
            let status =
                StatusCode::from_u16(e.kind().http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
            let msg = match &e {
                vesalius_auth::Error::Locked { .. } => {
                    "Too many wrong answers: this link is locked for a while.".to_owned()
                }
                vesalius_auth::Error::Expired(_) => "This link has expired.".to_owned(),
                vesalius_auth::Error::Revoked(_) => "This link was withdrawn.".to_owned(),
                _ => "The link or the answers are not right.".to_owned(),
            };
            let body = match needs_answers(sv, id, secret).await {
                Some((p, b)) if !matches!(e, vesalius_auth::Error::Locked { .. }) => {
                    form_body(id, secret, p, b, Some(&msg))
                }
                _ => format!("<p class=err role=alert>{}</p>", esc(&msg)),
            };
            page_status(status, "Shared images", &body)
        }
    }
}

/// The share-link principal of this request for link `id`, if its pass is present.
fn link_caller(caller: Option<Extension<Caller>>, id: &str) -> Option<(Caller, String, bool)> {
    let Extension(c) = caller?;
    match &c.principal.kind {
        PrincipalKind::ShareLink {
            link_id,
            study_uid,
            allow_download,
        } if link_id == id => {
            let (s, d) = (study_uid.clone(), *allow_download);
            Some((c, s, d))
        }
        _ => None,
    }
}

fn no_pass() -> Response {
    page_status(
        StatusCode::UNAUTHORIZED,
        "Shared images",
        "<p>Please open the full link you were given (it may have expired).</p>",
    )
}

/// `GET /s/{id}`: the app's share page, or the page of images without the app.
pub(crate) async fn view(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let Some(shell) = sv.options.app_shell else {
        return images(State(sv), caller, Path(id)).await;
    };
    if link_caller(caller, &id).is_none() {
        return Ok(no_pass());
    }
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        axum::response::Html(shell()),
    )
        .into_response())
}

/// `GET /s/{id}/info`: what the app's share page needs (JSON).
pub(crate) async fn info(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let Some((_, study, download)) = link_caller(caller, &id) else {
        return Err(ApiError::new(
            vesalius_core::ErrorKind::Unauthorized,
            "open the full link you were given (it may have expired)",
        ));
    };
    let expires = sv
        .auth
        .directory()
        .share_link(&id)
        .await?
        .map(|l| l.expires_ms);
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({
            "study_uid": study,
            "allow_download": download,
            "expires_ms": expires,
            "download_url": download.then(|| format!("/s/{id}/download")),
        })),
    )
        .into_response())
}

/// `GET /s/{id}/images`: the page of server-rendered images (no script).
pub(crate) async fn images(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let Some((c, study, download)) = link_caller(caller, &id) else {
        return Ok(no_pass());
    };
    let index = sv.ingestor.index();
    let mut q =
        Query::new(Level::Study).with(Key::StudyInstanceUid, Matcher::Single(study.clone()));
    q.access = c.access.clone();
    let studies = index.find(&q).await?;
    let Some(st) = studies.first() else {
        return Ok(page_status(
            StatusCode::NOT_FOUND,
            "Shared images",
            "<p>The study is no longer available.</p>",
        ));
    };
    let text = |k: Key| st.first_str(k.tag()).unwrap_or_default();
    let mut body = format!(
        "<table><tr><th>Patient</th><td>{}</td></tr><tr><th>Study</th><td>{}</td></tr>\
         <tr><th>Date</th><td>{}</td></tr></table>",
        esc(&text(Key::PatientName).replace('^', " ")),
        esc(&text(Key::StudyDescription)),
        esc(&fmt_date(&text(Key::StudyDate))),
    );
    if download {
        body.push_str(&format!(
            "<p><a href='/s/{}/download' download><button>Download the study (zip)</button></a></p>",
            esc(&id)
        ));
    }
    let instances = index
        .instances(&Scope {
            access: c.access.clone(),
            ..Scope::study(study.clone())
        })
        .await?;
    let mut q =
        Query::new(Level::Series).with(Key::StudyInstanceUid, Matcher::Single(study.clone()));
    q.access = c.access.clone();
    let series = index.find(&q).await?;
    for s in &series {
        let uid = s
            .first_str(Key::SeriesInstanceUid.tag())
            .unwrap_or_default();
        let of: Vec<_> = instances.iter().filter(|i| i.series_uid == uid).collect();
        if of.is_empty() {
            continue;
        }
        body.push_str(&format!(
            "<h2>{} {}</h2><div class=grid>",
            esc(&s.first_str(Key::Modality.tag()).unwrap_or_default()),
            esc(&s
                .first_str(Key::SeriesDescription.tag())
                .unwrap_or_default())
        ));
        let step = of.len().div_ceil(MAX_IMAGES_PER_SERIES).max(1);
        for i in of.iter().step_by(step) {
            let src = format!(
                "/dicom-web/studies/{}/series/{}/instances/{}/rendered",
                i.study_uid, i.series_uid, i.sop_instance_uid
            );
            body.push_str(&format!(
                "<figure><a href='{src}'><img loading=lazy src='{src}' alt='image {}'></a></figure>",
                i.number.map(|n| n.to_string()).unwrap_or_default()
            ));
        }
        body.push_str("</div>");
    }
    Ok(page("Shared images", &body).into_response())
}

fn fmt_date(d: &str) -> String {
    if d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()) {
        format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..])
    } else {
        d.to_owned()
    }
}

/// `GET /s/{id}/download`.
pub(crate) async fn download(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let Some((c, study, _)) = link_caller(caller, &id) else {
        return Ok(no_pass());
    };
    let found = crate::export::exportable(&sv, &c, &study).await?;
    crate::export::zip_response(&sv, &c, found, None, &study).await
}
