//! OHIF as a second viewer (issue 6, "OHIF compatibility"): the prebuilt OHIF app (npm
//! `@ohif/app`, its `dist/` prepared by `scripts/ohif`) served at `/ohif/` by this server, so
//! that it reads this server's DICOMweb from the same origin, under the user's session cookie.
//!
//! - `GET /ohif/app-config.js`: the configuration, generated here (not the dist's own): one
//!   DICOMweb data source at `{origin}/dicom-web` (QIDO-RS, WADO-RS metadata and frames), WADO-URI
//!   at `{origin}/wado`, router under `/ohif`.
//! - `GET /ohif/vesalius-init.js`: what the dist's two inline scripts did (`PUBLIC_URL`, the
//!   `browserImportFunction` OHIF loads its extensions with) plus a session check that sends a
//!   visitor without a session to `/login?next=…` and back.
//! - `GET /ohif/{*path}`: the dist's files; a path without a file extension that names no file
//!   (OHIF's client routes: `/ohif/viewer?StudyInstanceUIDs=…`, `/ohif/`) answers `index.html`;
//!   a missing file is 404.
//!
//! The files hold no data (served without credentials, like the app's own assets); OHIF's
//! requests for data go to `/dicom-web`, which needs the session. Every answer here carries
//! [`OHIF_CSP`]: OHIF needs WebAssembly (its image codecs), workers from its own origin and
//! `blob:`, and inline styles (React); it still runs no inline script and no `eval`.

use std::path::PathBuf;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

/// Where OHIF is served.
pub const OHIF_PREFIX: &str = "/ohif";

/// The Content-Security-Policy of every `/ohif/` answer (pages and workers alike: a worker's
/// policy is the one its script was served with).
pub const OHIF_CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
                            worker-src 'self' blob:; style-src 'self' 'unsafe-inline'; \
                            img-src 'self' data: blob:; font-src 'self' data:; \
                            connect-src 'self' data: blob:; object-src 'none'; \
                            base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

const CONFIG_JS: &str = include_str!("../assets/ohif/app-config.js");
const INIT_JS: &str = include_str!("../assets/ohif/vesalius-init.js");

/// Whether `path` is OHIF's (served without credentials).
pub fn is_ohif_path(path: &str) -> bool {
    path == OHIF_PREFIX || path.starts_with("/ohif/")
}

/// The OHIF routes, serving the prepared `dist` folder (mount at the root).
pub fn ohif_router(dist: PathBuf) -> Router {
    let index = dist.join("index.html");
    let files = ServeDir::new(&dist);
    // The dist's files, looked up without the `/ohif` prefix. A client route (no extension in
    // its last segment) that names no file gets the app; a missing file stays missing (a stale
    // chunk name must not be answered with HTML).
    let file = move |req: Request| {
        let (files, index) = (files.clone(), index.clone());
        async move {
            let (mut parts, body) = req.into_parts();
            let rest = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
            let stripped = rest.strip_prefix(OHIF_PREFIX).unwrap_or(rest).to_owned();
            match stripped.parse() {
                Ok(uri) => parts.uri = uri,
                Err(_) => return not_found(),
            }
            let client_route = !parts
                .uri
                .path()
                .rsplit('/')
                .next()
                .unwrap_or("")
                .contains('.');
            let res = match files.oneshot(Request::from_parts(parts, body)).await {
                Ok(res) => res.map(Body::new),
                Err(e) => match e {},
            };
            if res.status() != StatusCode::NOT_FOUND {
                return res;
            }
            if !client_route {
                return not_found();
            }
            match ServeFile::new(index)
                .oneshot(Request::new(Body::empty()))
                .await
            {
                Ok(res) => {
                    let mut res = res.map(Body::new);
                    res.headers_mut()
                        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                    res
                }
                Err(e) => match e {},
            }
        }
    };
    Router::new()
        .route("/ohif", get(|| async { Redirect::permanent("/ohif/") }))
        .route("/ohif/", get(file.clone()))
        .route("/ohif/app-config.js", get(|| script(CONFIG_JS)))
        .route("/ohif/vesalius-init.js", get(|| script(INIT_JS)))
        .route("/ohif/{*path}", get(file))
        .layer(axum::middleware::map_response(ohif_headers))
}

async fn script(body: &'static str) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        "{\"error\":\"not-found\",\"message\":\"no such OHIF file\"}",
    )
        .into_response()
}

/// OHIF's policy on every answer; `X-Frame-Options` and the rest come from the server's layer.
async fn ohif_headers(mut res: Response) -> Response {
    res.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(OHIF_CSP),
    );
    // OHIF's own files hold no data: kept and revalidated by their ETag (the server's default
    // for everything else is `no-store`, crates/vesalius/src/tls.rs).
    res.headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-cache"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn dist() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("index.html"), "<!doctype html><p>ohif").unwrap();
        std::fs::write(d.path().join("app.bundle.1.js"), "var a=1;").unwrap();
        std::fs::write(d.path().join("x.wasm"), b"\0asm").unwrap();
        d
    }

    async fn get(app: &Router, path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let res = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    #[tokio::test]
    async fn serves_files_client_routes_and_the_generated_config() {
        let d = dist();
        let app = ohif_router(d.path().to_owned());
        let (s, h, body) = get(&app, "/ohif/app.bundle.1.js").await;
        assert_eq!(s, StatusCode::OK);
        assert!(
            h[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .contains("javascript")
        );
        assert_eq!(body, "var a=1;");
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], OHIF_CSP);
        let (s, h, _) = get(&app, "/ohif/x.wasm").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h[header::CONTENT_TYPE], "application/wasm");
        for route in [
            "/ohif/",
            "/ohif/viewer?StudyInstanceUIDs=1.2.3",
            "/ohif/viewer",
        ] {
            let (s, h, body) = get(&app, route).await;
            assert_eq!(s, StatusCode::OK, "{route}");
            assert!(body.contains("<p>ohif"), "{route}");
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], OHIF_CSP);
        }
        let (s, _, body) = get(&app, "/ohif/9999.bundle.gone.js").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert!(body.contains("not-found"));
        let (s, _, _) = get(&app, "/ohif/../Cargo.toml").await;
        assert_ne!(s, StatusCode::OK);
        let (s, h, body) = get(&app, "/ohif/app-config.js").await;
        assert_eq!(s, StatusCode::OK);
        assert!(body.contains("/dicom-web"));
        assert!(body.contains("routerBasename: '/ohif'"));
        assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        let (s, _, body) = get(&app, "/ohif/vesalius-init.js").await;
        assert_eq!(s, StatusCode::OK);
        assert!(body.contains("PUBLIC_URL = '/ohif/'"));
        let (s, h, _) = get(&app, "/ohif").await;
        assert_eq!(s, StatusCode::PERMANENT_REDIRECT);
        assert_eq!(h[header::LOCATION], "/ohif/");
    }

    #[test]
    fn ohif_paths() {
        assert!(is_ohif_path("/ohif"));
        assert!(is_ohif_path("/ohif/viewer"));
        assert!(!is_ohif_path("/ohifx"));
        assert!(!is_ohif_path("/dicom-web/ohif/"));
        assert!(!OHIF_CSP.contains("unsafe-eval'") || OHIF_CSP.contains("wasm-unsafe-eval"));
        assert!(!OHIF_CSP.contains("script-src 'self' 'unsafe-inline'"));
    }
}
