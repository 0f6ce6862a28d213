//! DICOMweb services of Vesalius (PS3.18) as axum routers.
//!
//! [`router`] serves, relative to where the caller nests it (the binary nests it under
//! `/dicom-web`):
//!
//! - [`stow`]: STOW-RS, `POST /studies[/{study}]` (PS3.18 10.5): each part of a
//!   `multipart/related; type="application/dicom"` body streams into the ingest spool and goes
//!   through the one ingest path, so a 200 means every instance is durable.
//! - [`qido`]: QIDO-RS, `GET /studies`, `/series`, `/instances` and the nested forms
//!   (PS3.18 10.6), over the shared query engine of `vesalius-store`.
//! - [`wado`]: WADO-RS (PS3.18 10.4): instances streamed from the blob store as
//!   `multipart/related`, metadata from the JSON precomputed at ingest, frames and bulk data as
//!   range reads at stored offsets, transcoding through `vesalius-codec` only when asked.
//! - [`rendered`]: rendered and thumbnail resources (PS3.18 10.4.1.1.3, 10.4.1.1.4), cached.
//!
//! [`wado_uri_router`] serves WADO-URI at `/wado` (PS3.18 9), mounted by the binary at the root.
//!
//! Errors everywhere are [`DicomWebError`]: `{"error": code, "message": ...}` with the status of
//! the code's kind, mapped in one place ([`error`]).
//!
//! Absolute URLs (RetrieveURL, BulkDataURI) are built from [`DicomWebOptions::public_base_url`]
//! when set, otherwise from the request's `Host` (or `X-Forwarded-Host`/`-Proto`), followed by the
//! path prefix the router is nested under, taken from axum's `OriginalUri`.
//!
//! This crate depends on `vesalius-core`, the traits of `vesalius-store` and `vesalius-codec`
//! only: never on a storage backend.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod encoding;
pub mod error;
pub mod multipart;
pub mod qido;
pub mod rendered;
pub mod stow;
pub mod wado;
pub mod wado_uri;

mod blob_io;
mod caller;

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::routing::get;
use vesalius_store::Ingestor;

pub use error::DicomWebError;

/// Options of the DICOMweb services.
#[derive(Debug, Clone)]
pub struct DicomWebOptions {
    /// The organisation that owns what is stored through STOW-RS and whose data is served.
    pub org: String,
    /// The largest STOW-RS request body, in bytes (413 beyond; parts already stored stay).
    pub max_stow_bytes: u64,
    /// The most results one QIDO-RS response carries (the `limit` parameter is capped to it).
    pub max_query_results: usize,
    /// The URL clients reach this server at (`https://pacs.example.org`), used for RetrieveURL
    /// and BulkDataURI; `None`: from the request's `Host` header.
    pub public_base_url: Option<String>,
}

impl DicomWebOptions {
    /// Options for `org` with the defaults: 16 GiB STOW bodies, 1000 results per query, URLs
    /// from the `Host` header.
    pub fn new(org: impl Into<String>) -> Self {
        DicomWebOptions {
            org: org.into(),
            max_stow_bytes: 16 << 30,
            max_query_results: 1000,
            public_base_url: None,
        }
    }

    /// Sets the largest STOW-RS body.
    pub fn max_stow_bytes(mut self, n: u64) -> Self {
        self.max_stow_bytes = n;
        self
    }

    /// Sets the most results per query.
    pub fn max_query_results(mut self, n: usize) -> Self {
        self.max_query_results = n;
        self
    }

    /// Sets the public base URL.
    pub fn public_base_url(mut self, url: impl Into<String>) -> Self {
        self.public_base_url = Some(url.into());
        self
    }
}

impl Default for DicomWebOptions {
    fn default() -> Self {
        DicomWebOptions::new(vesalius_store::model::DEFAULT_ORG)
    }
}

/// What every handler sees.
#[derive(Clone)]
pub(crate) struct AppState {
    pub ingestor: Arc<Ingestor>,
    pub options: Arc<DicomWebOptions>,
    pub cache: Arc<rendered::RenderCache>,
    /// Audit trail and dedupe; `None` in tests that do not audit.
    pub auth: Option<Arc<vesalius_auth::Authenticator>>,
}

impl AppState {
    fn new(
        ingestor: Arc<Ingestor>,
        options: DicomWebOptions,
        auth: Option<Arc<vesalius_auth::Authenticator>>,
    ) -> Self {
        AppState {
            ingestor,
            options: Arc::new(options),
            cache: Arc::new(rendered::RenderCache::new(rendered::CACHE_BYTES)),
            auth,
        }
    }
}

/// The DICOMweb router (STOW-RS, QIDO-RS, WADO-RS); nest it where clients expect it
/// (`/dicom-web`). Every request must carry a [`vesalius_auth::Caller`] extension (put there by
/// the binary's authentication layer; tests add one), or it is refused with 401. Without `auth`
/// nothing is audited.
pub fn router(
    ingestor: Arc<Ingestor>,
    options: DicomWebOptions,
    auth: Option<Arc<vesalius_auth::Authenticator>>,
) -> Router {
    let base = "/studies/{study}/series/{series}/instances/{sop}";
    Router::new()
        .route("/studies", get(qido::studies).post(stow::store))
        .route("/series", get(qido::series))
        .route("/instances", get(qido::instances))
        .route(
            "/studies/{study}",
            get(wado::retrieve_study).post(stow::store_in_study),
        )
        .route("/studies/{study}/metadata", get(wado::study_metadata))
        .route("/studies/{study}/series", get(qido::study_series))
        .route("/studies/{study}/instances", get(qido::study_instances))
        .route("/studies/{study}/thumbnail", get(rendered::study_thumbnail))
        .route(
            "/studies/{study}/series/{series}",
            get(wado::retrieve_series),
        )
        .route(
            "/studies/{study}/series/{series}/metadata",
            get(wado::series_metadata),
        )
        .route(
            "/studies/{study}/series/{series}/instances",
            get(qido::series_instances),
        )
        .route(
            "/studies/{study}/series/{series}/frames",
            get(wado::series_frames),
        )
        .route(
            "/studies/{study}/series/{series}/thumbnail",
            get(rendered::series_thumbnail),
        )
        .route(base, get(wado::retrieve_instance))
        .route(&format!("{base}/metadata"), get(wado::instance_metadata))
        .route(
            &format!("{base}/rendered"),
            get(rendered::instance_rendered),
        )
        .route(
            &format!("{base}/thumbnail"),
            get(rendered::instance_thumbnail),
        )
        .route(&format!("{base}/frames/{{frames}}"), get(wado::frames))
        .route(
            &format!("{base}/frames/{{frames}}/rendered"),
            get(rendered::frame_rendered),
        )
        .route(
            &format!("{base}/frames/{{frames}}/thumbnail"),
            get(rendered::frame_thumbnail),
        )
        .route(&format!("{base}/bulkdata/{{spec}}"), get(wado::bulkdata))
        .with_state(AppState::new(ingestor, options, auth))
}

/// The WADO-URI router (PS3.18 9): serves `GET /wado`; merge it at the root.
pub fn wado_uri_router(
    ingestor: Arc<Ingestor>,
    options: DicomWebOptions,
    auth: Option<Arc<vesalius_auth::Authenticator>>,
) -> Router {
    Router::new()
        .route("/wado", get(wado_uri::wado))
        .with_state(AppState::new(ingestor, options, auth))
}

/// The absolute URL of the DICOMweb service as the client reached it, e.g.
/// `http://host:8080/dicom-web`, without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceUrl(pub String);

impl ServiceUrl {
    /// `{service}/studies/{study}`.
    pub fn study(&self, study: &str) -> String {
        format!("{}/studies/{study}", self.0)
    }

    /// `{service}/studies/{study}/series/{series}`.
    pub fn series(&self, study: &str, series: &str) -> String {
        format!("{}/studies/{study}/series/{series}", self.0)
    }

    /// `{service}/studies/{study}/series/{series}/instances/{sop}`.
    pub fn instance(&self, study: &str, series: &str, sop: &str) -> String {
        format!("{}/studies/{study}/series/{series}/instances/{sop}", self.0)
    }

    fn from_parts(parts: &Parts, public_base_url: Option<&str>) -> Self {
        let inner = parts.uri.path();
        let original = parts
            .extensions
            .get::<OriginalUri>()
            .map(|o| o.0.path().to_owned())
            .unwrap_or_else(|| inner.to_owned());
        let prefix = original
            .strip_suffix(inner)
            .filter(|p| is_url_safe(p))
            .unwrap_or("")
            .trim_end_matches('/')
            .to_owned();
        let origin = match public_base_url {
            Some(u) if is_url_safe(u) => u.trim_end_matches('/').to_owned(),
            _ => {
                let header = |name: &str| {
                    parts
                        .headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(|v| v.split(',').next().unwrap_or("").trim().to_owned())
                        .filter(|v| !v.is_empty() && is_url_safe(v))
                };
                let host = header("x-forwarded-host")
                    .or_else(|| header("host"))
                    .or_else(|| parts.uri.authority().map(|a| a.to_string()))
                    .unwrap_or_else(|| "localhost".to_owned());
                let scheme = header("x-forwarded-proto")
                    .filter(|s| s == "http" || s == "https")
                    .or_else(|| parts.uri.scheme_str().map(str::to_owned))
                    .unwrap_or_else(|| "http".to_owned());
                format!("{scheme}://{host}")
            }
        };
        ServiceUrl(format!("{origin}{prefix}"))
    }
}

/// URLs end up inside JSON text that is assembled without re-serialisation (metadata): only
/// characters that need no escaping there are accepted from the request.
fn is_url_safe(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=%".contains(&b))
}

impl FromRequestParts<AppState> for ServiceUrl {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Infallible> {
        Ok(ServiceUrl::from_parts(
            parts,
            st.options.public_base_url.as_deref(),
        ))
    }
}

/// Checks the UIDs of a request path (PS3.5 9.1), so a malformed one is a 400, not a 404.
pub(crate) fn check_uids(uids: &[&str]) -> error::Result<()> {
    match uids.iter().find(|u| !vesalius_core::uid::is_valid_uid(u)) {
        Some(bad) => Err(DicomWebError::bad_request(format!(
            "{bad:?} is not a valid UID"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod url_tests {
    use super::*;
    use axum::http::Request;

    fn parts(uri: &str, original: &str, host: &str) -> Parts {
        let (mut p, _) = Request::builder()
            .uri(uri)
            .header("host", host)
            .body(())
            .unwrap()
            .into_parts();
        p.extensions.insert(OriginalUri(original.parse().unwrap()));
        p
    }

    #[test]
    fn service_url_from_host_and_prefix() {
        let p = parts("/studies/1.2", "/dicom-web/studies/1.2", "pacs:8080");
        assert_eq!(
            ServiceUrl::from_parts(&p, None).0,
            "http://pacs:8080/dicom-web"
        );
        assert_eq!(
            ServiceUrl::from_parts(&p, Some("https://x.org/")).0,
            "https://x.org/dicom-web"
        );
        let p = parts("/studies", "/studies", "evil\"host");
        assert_eq!(ServiceUrl::from_parts(&p, None).0, "http://localhost");
    }
}
