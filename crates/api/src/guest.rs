//! The guest upload page (issue 4): anyone holding an upload link sends images into the
//! organisation's quarantine inbox from a browser, no account needed. (STOW-RS clients use the
//! link's bearer token on `/dicom-web/studies` instead; both land in the same inbox.)
//!
//! - `GET /upload/{id}/{secret}`: the web app's upload page (issue 6, when the server has the
//!   app: `ApiOptions::app_shell`), which sends files in resumable chunks (`uploads.rs`); else,
//!   and with `?basic`, a form (no script) with the link's label and what it still accepts.
//! - `POST /upload/{id}/{secret}` (`multipart/form-data`, field `files`, Part 10 files): the
//!   declared `Content-Length` must fit the link's remaining allowance (refused before the body
//!   is read); each file is streamed to the spool and ingested into the inbox; the bytes are
//!   counted against the link and audited `upload`.

use std::net::SocketAddr;

use axum::Extension;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use vesalius_auth::Origin;
use vesalius_store::ingest::IngestContext;
use vesalius_store::model::inbox_org;

use crate::pages::{esc, page, page_status};
use crate::session::{agent, source};
use crate::{ApiError, Services};

fn mib(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

fn refused(e: vesalius_auth::Error) -> Response {
    let status = StatusCode::from_u16(e.kind().http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let msg = match &e {
        vesalius_auth::Error::Expired(_) => "This upload link has expired.".to_owned(),
        vesalius_auth::Error::Revoked(_) => "This upload link was withdrawn.".to_owned(),
        vesalius_auth::Error::TooLarge { remaining, .. } => {
            format!("Too large: this link accepts {} more.", mib(*remaining))
        }
        _ => "This upload link is not valid.".to_owned(),
    };
    page_status(
        status,
        "Send images",
        &format!("<p class=err role=alert>{}</p>", esc(&msg)),
    )
}

/// `GET /upload/{id}/{secret}`.
pub(crate) async fn form(
    State(sv): State<Services>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path((id, secret)): Path<(String, String)>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let (src, ua) = (source(&ci), agent(&headers).to_owned());
    if let Err(e) = sv
        .auth
        .upload_link_open(&id, &secret, 0, Origin::new(&src, &ua))
        .await
    {
        return refused(e);
    }
    if let Some(shell) = sv.options.app_shell
        && query.as_deref() != Some("basic")
    {
        return (
            [(header::CACHE_CONTROL, "no-store")],
            axum::response::Html(shell()),
        )
            .into_response();
    }
    let Ok(Some(link)) = sv.auth.directory().upload_link(&id).await else {
        return page_status(StatusCode::NOT_FOUND, "Send images", "<p>Not found.</p>");
    };
    let remaining = link.max_bytes.saturating_sub(link.used_bytes);
    page(
        "Send images",
        &format!(
            "<p>{}</p><p>The images go to a reception area of <b>{}</b>, where staff check them \
             before they join the patient's record. This link accepts {} more.</p>\
             <form method=post enctype=multipart/form-data action='/upload/{}/{}'>\
             <label>DICOM files <input type=file name=files multiple required></label>\
             <button>Send</button></form>",
            esc(&link.label),
            esc(&link.org),
            mib(remaining),
            esc(&id),
            esc(&secret)
        ),
    )
    .into_response()
}

/// `POST /upload/{id}/{secret}`.
pub(crate) async fn upload(
    State(sv): State<Services>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    Path((id, secret)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    let (src, ua) = (source(&ci), agent(req.headers()).to_owned());
    let origin = Origin::new(&src, &ua);
    let Some(len) = crate::authn::header_str(req.headers(), header::CONTENT_LENGTH.as_str())
        .parse::<u64>()
        .ok()
    else {
        return Ok(page_status(
            StatusCode::LENGTH_REQUIRED,
            "Send images",
            "<p class=err>The upload must declare its length.</p>",
        ));
    };
    let principal = match sv.auth.upload_link_open(&id, &secret, len, origin).await {
        Ok(p) => p,
        Err(e) => return Ok(refused(e)),
    };
    let ct = crate::authn::header_str(req.headers(), header::CONTENT_TYPE.as_str());
    let Ok(boundary) = multer::parse_boundary(ct) else {
        return Ok(page_status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Send images",
            "<p class=err>Expected a multipart/form-data upload.</p>",
        ));
    };
    let body: Body = req.into_body();
    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(len));
    let mut mp =
        multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let org = principal.org_str().to_owned();
    let (mut stored, mut failed, mut bytes) = (0usize, Vec::new(), 0u64);
    let mut first_study = None;
    loop {
        let mut field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                failed.push(format!("upload interrupted: {e}"));
                break;
            }
        };
        let name = field.file_name().unwrap_or("file").to_owned();
        if field.name() != Some("files") {
            continue;
        }
        let mut spool = sv.ingestor.spool()?;
        let mut refused = None;
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    bytes += chunk.len() as u64;
                    if refused.is_none()
                        && let Err(e) = spool.write(&chunk)
                    {
                        refused = Some(e.to_string());
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    refused = Some(format!("upload interrupted: {e}"));
                    break;
                }
            }
        }
        if let Some(why) = refused {
            failed.push(format!("{name}: {why}"));
            continue;
        }
        if spool.size() == 0 {
            continue;
        }
        let ctx = IngestContext {
            // A guest's rejection note hides nothing (`Rejections::Ignore`).
            rejections: vesalius_store::key_objects::Rejections::Ignore,
            org: inbox_org(&org),
            source: "upload-link".into(),
            actor: Some(principal.actor.clone()),
            source_addr: src.clone(),
            user_agent: ua.clone(),
            ..Default::default()
        };
        match sv.ingestor.ingest(spool.finish()?, &ctx).await {
            Ok(done) => {
                stored += 1;
                first_study.get_or_insert(done.instance.study_uid);
            }
            Err(e) => failed.push(format!("{name}: {e}")),
        }
    }
    if let Err(e) = sv
        .auth
        .record_upload(&principal, bytes, first_study.as_deref(), origin)
        .await
    {
        tracing::warn!(error = %e, "guest upload not counted against its link");
    }
    let mut body = format!(
        "<p>{stored} file(s) received. Thank you: staff will check them before they join the \
         patient's record.</p>"
    );
    if !failed.is_empty() {
        body.push_str("<p class=err>Not accepted:</p><ul>");
        for f in &failed {
            body.push_str(&format!("<li>{}</li>", esc(f)));
        }
        body.push_str("</ul>");
    }
    let status = if stored == 0 {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok(page_status(status, "Send images", &body))
}
