//! The web app (issue 6): a worklist and a viewer written as plain ES modules and CSS, embedded
//! in the binary at compile time (`include_bytes!`: no build step, nothing fetched from a CDN).
//! The app talks to the server over HTTP only (`/api/v1`, `/dicom-web`), like any other client;
//! this crate depends on no other Vesalius crate (docs/architecture.md).
//!
//! - `GET /`, `/worklist`, `/view/{study}`, `/alerts` (the user's alerts and subscriptions),
//!   `/admin`, `/admin/{section}` (the admin console) and `/viewer` (IHE Invoke Image Display:
//!   `?requestType=STUDY&studyUID=…`, `?requestType=PATIENT&patientID=…`) answer the same
//!   shell page; the app's own router (`js/main.js`) picks the screen from the URL. So do the
//!   screens a visitor without a session sees (issue 6, `js/login.js`): `/login?next=…` (local
//!   login and OpenID Connect), `/setup?token=…` (the first start's administrator, or a
//!   password link) and `/account` (changing one's password).
//! - `GET /app/{version}/{*file}`: the assets. `{version}` is a hash of every asset, so the URLs
//!   change whenever an asset does and the assets can be cached for a year (`immutable`); an
//!   asset of another version is 404. The shell is revalidated (`no-cache` with an `ETag`).
//! - `GET /app/pages.css`: the stylesheet of the server-rendered pages of issue 4 (login,
//!   share and upload links), at a fixed address those pages link (`no-cache`, `ETag`).
//! - Nothing here is private: the shell and the assets are served without credentials (the
//!   authentication layer lets [`is_app_path`] through). Every piece of data the app shows comes
//!   from the API, which refuses requests without a session; the app sends a visitor without
//!   one to `/login`.
//! - The shell carries no inline script or style, so the strict Content-Security-Policy the
//!   server puts on every HTML page (`default-src 'self'`, no `unsafe-inline`) holds; the
//!   browser tests (tests/browser) check that an injected inline script does not run.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod ohif;
mod sw;

use std::borrow::Cow;
use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Where the assets are served: `/app/{version}/…`.
pub const ASSET_PREFIX: &str = "/app/";

/// The shell page; `{{V}}` becomes the asset version.
const SHELL: &str = include_str!("../assets/index.html");

/// Every asset, by its path under `assets/` (the shell excluded).
const ASSETS: &[(&str, &[u8])] = &[
    ("app.css", include_bytes!("../assets/app.css")),
    ("pages.css", include_bytes!("../assets/pages.css")),
    ("alerts.css", include_bytes!("../assets/alerts.css")),
    ("favicon.svg", include_bytes!("../assets/favicon.svg")),
    (
        "manifest.webmanifest",
        include_bytes!("../assets/manifest.webmanifest"),
    ),
    ("js/main.js", include_bytes!("../assets/js/main.js")),
    ("js/api.js", include_bytes!("../assets/js/api.js")),
    ("js/dom.js", include_bytes!("../assets/js/dom.js")),
    ("js/worklist.js", include_bytes!("../assets/js/worklist.js")),
    ("js/alerts.js", include_bytes!("../assets/js/alerts.js")),
    // The alerts page (`/alerts`), loaded by `main.js` there only.
    (
        "js/alertspage.js",
        include_bytes!("../assets/js/alertspage.js"),
    ),
    ("js/viewer.js", include_bytes!("../assets/js/viewer.js")),
    ("js/pixels.js", include_bytes!("../assets/js/pixels.js")),
    // The viewer's frame fetching worker (module worker, same origin: the CSP allows it).
    ("js/frames.js", include_bytes!("../assets/js/frames.js")),
    ("js/viewport.js", include_bytes!("../assets/js/viewport.js")),
    ("js/volume.js", include_bytes!("../assets/js/volume.js")),
    ("js/measure.js", include_bytes!("../assets/js/measure.js")),
    (
        "js/keyimages.js",
        include_bytes!("../assets/js/keyimages.js"),
    ),
    ("js/reports.js", include_bytes!("../assets/js/reports.js")),
    ("viewer.css", include_bytes!("../assets/viewer.css")),
    // The admin console (issue 6), loaded by `main.js` on `/admin` only.
    ("admin.css", include_bytes!("../assets/admin.css")),
    (
        "js/admin/console.js",
        include_bytes!("../assets/js/admin/console.js"),
    ),
    ("js/admin/ui.js", include_bytes!("../assets/js/admin/ui.js")),
    (
        "js/admin/directory.js",
        include_bytes!("../assets/js/admin/directory.js"),
    ),
    (
        "js/admin/exchange.js",
        include_bytes!("../assets/js/admin/exchange.js"),
    ),
    (
        "js/admin/records.js",
        include_bytes!("../assets/js/admin/records.js"),
    ),
    (
        "js/admin/alerts.js",
        include_bytes!("../assets/js/admin/alerts.js"),
    ),
    // Issue 6: the guest upload and share-link pages.
    ("guest.css", include_bytes!("../assets/guest.css")),
    ("js/upload.js", include_bytes!("../assets/js/upload.js")),
    (
        "js/dicomscan.js",
        include_bytes!("../assets/js/dicomscan.js"),
    ),
    ("js/unzip.js", include_bytes!("../assets/js/unzip.js")),
    ("js/dicomdir.js", include_bytes!("../assets/js/dicomdir.js")),
    ("js/charset.js", include_bytes!("../assets/js/charset.js")),
    ("js/sha256.js", include_bytes!("../assets/js/sha256.js")),
    ("js/share.js", include_bytes!("../assets/js/share.js")),
    // Issue 6: logging in, first start and password links, the password screen.
    ("js/login.js", include_bytes!("../assets/js/login.js")),
];

/// Client routes answered with the shell (besides `/view/{study}`).
const SHELL_PATHS: &[&str] = &[
    "/",
    "/worklist",
    "/viewer",
    "/alerts",
    "/admin",
    "/login",
    "/setup",
    "/account",
];

/// The asset version: 16 hex digits of a 64-bit FNV-1a hash over every asset's path and bytes
/// and the shell (a cache key, not a security measure).
pub fn version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        eat(SHELL.as_bytes());
        for (path, bytes) in ASSETS {
            eat(path.as_bytes());
            eat(&[0]);
            eat(bytes);
        }
        format!("{h:016x}")
    })
}

/// The shell page with the asset version filled in: the API answers it at the guest upload and
/// share-link addresses once it has checked the link (`vesalius_api::ApiOptions::app_shell`).
pub fn shell_page() -> &'static str {
    static S: OnceLock<String> = OnceLock::new();
    S.get_or_init(|| SHELL.replace("{{V}}", version()))
}

/// Whether `path` is the app's (its shell routes and assets), served without credentials.
pub fn is_app_path(path: &str) -> bool {
    SHELL_PATHS.contains(&path)
        || path == "/sw.js"
        || ohif::is_ohif_path(path)
        || ["/view/", "/admin/"].iter().any(|p| {
            path.strip_prefix(p)
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
        })
        || path.starts_with(ASSET_PREFIX)
}

/// What the app is served with.
#[derive(Debug, Clone, Default)]
pub struct WebOptions {
    /// OHIF's prepared `dist/` (`scripts/ohif`): served at `/ohif/` ([`ohif`]), and the worklist
    /// offers "Open in OHIF".
    pub ohif_dir: Option<std::path::PathBuf>,
}

/// The app's routes (mount at the root), without OHIF.
pub fn router() -> Router {
    router_with(WebOptions::default())
}

/// The app's routes (mount at the root).
pub fn router_with(opts: WebOptions) -> Router {
    let ohif = opts.ohif_dir.is_some();
    let page = move |headers: HeaderMap| async move { shell(headers, ohif).await };
    let app = Router::new()
        .route("/", get(page))
        .route("/worklist", get(page))
        .route("/viewer", get(page))
        .route(
            "/view/{study}",
            get(
                move |Path(study): Path<String>, uri: Uri, headers: HeaderMap| async move {
                    view_page(&study, &uri, headers, ohif).await
                },
            ),
        )
        .route("/alerts", get(page))
        .route("/login", get(page))
        .route("/setup", get(page))
        .route("/account", get(page))
        .route("/admin", get(page))
        .route("/admin/{section}", get(page))
        .route("/app/{version}/{*file}", get(asset))
        .route("/app/pages.css", get(pages_css))
        .route("/sw.js", get(sw::serve));
    match opts.ohif_dir {
        Some(dir) => app.merge(ohif::ohif_router(dir)),
        None => app,
    }
}

/// The server-rendered pages' stylesheet, at its fixed address.
async fn pages_css(headers: HeaderMap) -> Response {
    if not_modified(&headers) {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag()), (header::CACHE_CONTROL, no_cache())],
        )
            .into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/css; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, no_cache()),
            (header::ETAG, etag()),
        ],
        asset_bytes("pages.css").unwrap_or_default(),
    )
        .into_response()
}

/// The ETag of everything of this version, and of the shell: `"{version}"`, or
/// `"{version}-ohif"` for the shell that offers OHIF (the page differs).
fn tag(ohif: bool) -> &'static str {
    static TAGS: OnceLock<[String; 2]> = OnceLock::new();
    let [plain, with_ohif] = TAGS.get_or_init(|| {
        [
            format!("\"{}\"", version()),
            format!("\"{}-ohif\"", version()),
        ]
    });
    if ohif { with_ohif } else { plain }
}

/// [`tag`] as a header value.
fn etag_of(ohif: bool) -> HeaderValue {
    HeaderValue::from_static(tag(ohif))
}

/// The ETag of everything of this version.
fn etag() -> HeaderValue {
    etag_of(false)
}

/// Whether the request's `If-None-Match` names `tag`.
fn names(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag))
}

fn not_modified(headers: &HeaderMap) -> bool {
    names(headers, tag(false))
}

/// The shell page, with `<body data-ohif>` when OHIF is served (the worklist's "Open in OHIF").
fn shell_variant(ohif: bool) -> &'static str {
    static WITH_OHIF: OnceLock<String> = OnceLock::new();
    if ohif {
        WITH_OHIF.get_or_init(|| shell_page().replacen("<body>", "<body data-ohif=\"/ohif/\">", 1))
    } else {
        shell_page()
    }
}

/// The shell; its ETag tells the page with OHIF apart from the one without.
async fn shell(headers: HeaderMap, ohif: bool) -> Response {
    html_page(&headers, ohif, || Cow::Borrowed(shell_variant(ohif)))
}

/// A page of the shell (`page` makes the shell or a variant of it, unless the browser's copy is
/// current), revalidated by the shell's ETag.
fn html_page(
    headers: &HeaderMap,
    ohif: bool,
    page: impl FnOnce() -> Cow<'static, str>,
) -> Response {
    let etag = etag_of(ohif);
    if names(headers, tag(ohif)) {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag), (header::CACHE_CONTROL, no_cache())],
        )
            .into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, no_cache()),
            (header::ETAG, etag),
        ],
        page(),
    )
        .into_response()
}

/// `/view/{study}`: the shell with the study's first image in it: an `<img>` of the study's
/// thumbnail at natural size (PS3.18 10.4.1.1.4, the server's representative image: the middle
/// slice of the largest series), which the browser fetches and paints while it is still
/// loading the app's modules. The viewer draws the same image into its canvas and removes this
/// one (js/viewport.js). Not for a study held at a peer (`?peer=`), nor for a path that is not
/// a UID (nothing is echoed into the page).
async fn view_page(study: &str, uri: &Uri, headers: HeaderMap, ohif: bool) -> Response {
    let remote = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("peer=")));
    let uid = !study.is_empty()
        && study.len() <= 64
        && study.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if remote || !uid {
        return shell(headers, ohif).await;
    }
    html_page(&headers, ohif, || {
        // `elementtiming` (W3C Element Timing): when the image was painted, for the benchmark.
        let img = format!(
            "<img id=\"preview\" class=\"preview\" src=\"{}\" alt=\"\" elementtiming=\"first-image\" fetchpriority=\"high\">\n<main id=\"app\"",
            preview_url(study)
        );
        Cow::Owned(shell_variant(ohif).replacen("<main id=\"app\"", &img, 1))
    })
}

/// Where the viewer finds a study's first image (js/viewer.js `PREVIEW` names the same URL, so
/// the app's own request at boot finds it in the browser's memory cache or the server's render
/// cache): the study thumbnail at its natural size (`viewport` larger than
/// any image: thumbnails never enlarge) and the quality of `/rendered`.
pub fn preview_url(study: &str) -> String {
    format!("/dicom-web/studies/{study}/thumbnail?viewport=8192,8192&quality=90")
}

fn no_cache() -> HeaderValue {
    HeaderValue::from_static("no-cache")
}

/// The content type of an asset, by its extension.
pub fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("html") => "text/html; charset=utf-8",
        Some("json") => "application/json",
        // W3C Web Application Manifest, section 1.2 (media type).
        Some("webmanifest") => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

/// The bytes of the asset at `path` (under `assets/`), if there is one.
pub fn asset_bytes(path: &str) -> Option<&'static [u8]> {
    ASSETS.iter().find(|(p, _)| *p == path).map(|(_, b)| *b)
}

async fn asset(Path((v, file)): Path<(String, String)>, headers: HeaderMap) -> Response {
    let found = (v == version()).then(|| asset_bytes(&file)).flatten();
    let Some(bytes) = found else {
        return (
            StatusCode::NOT_FOUND,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            // The requested name is not echoed: the body stays valid JSON whatever was asked.
            format!(
                "{{\"error\":\"not-found\",\"message\":\"no such asset in version {}\"}}",
                version()
            ),
        )
            .into_response();
    };
    let immutable = HeaderValue::from_static("public, max-age=31536000, immutable");
    if not_modified(&headers) {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag()), (header::CACHE_CONTROL, immutable)],
        )
            .into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(&file)),
            ),
            (header::CACHE_CONTROL, immutable),
            (header::ETAG, etag()),
        ],
        bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(path: &str, inm: Option<&str>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut rq = Request::get(path);
        if let Some(t) = inm {
            rq = rq.header(header::IF_NONE_MATCH, t);
        }
        let r = router()
            .oneshot(rq.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = r.into_parts();
        let b = body.collect().await.unwrap().to_bytes().to_vec();
        (parts.status, parts.headers, b)
    }

    #[tokio::test]
    async fn shell_routes_answer_the_shell_with_versioned_assets() {
        for path in [
            "/",
            "/worklist",
            "/viewer?requestType=STUDY",
            "/view/1.2.3",
            "/alerts",
            "/admin",
            "/admin/users",
            "/admin/alerts",
        ] {
            let (status, h, body) = get(path, None).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
            assert_eq!(h[header::CACHE_CONTROL], "no-cache");
            let text = String::from_utf8(body).unwrap();
            assert!(text.contains(&format!("/app/{}/js/main.js", version())));
            assert!(!text.contains("{{V}}"));
            // No inline script or style: the CSP forbids them.
            assert!(!text.contains("<script>") && !text.contains("<style"));
            assert!(!text.contains(" style="));
        }
        let (status, _, _) = get("/", Some(&format!("\"{}\"", version()))).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
    }

    #[tokio::test]
    async fn the_viewer_page_carries_the_studys_first_image() {
        let (_, _, body) = get("/view/1.2.3", None).await;
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains(
            "<img id=\"preview\" class=\"preview\" src=\"/dicom-web/studies/1.2.3/thumbnail?viewport=8192,8192&quality=90\""
        ));
        // Not for a study held at a peer, nor for what is not a UID (nothing echoed).
        for path in ["/view/1.2.3?peer=hub", "/view/1.2.%3Cb%3E"] {
            let (status, _, body) = get(path, None).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            let text = String::from_utf8(body).unwrap();
            assert!(
                !text.contains("id=\"preview\"") && !text.contains("<b>"),
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn with_ohif_the_shell_says_so_under_another_etag() {
        let dist = tempfile::tempdir().unwrap();
        std::fs::write(dist.path().join("index.html"), "ohif").unwrap();
        let app = router_with(WebOptions {
            ohif_dir: Some(dist.path().to_owned()),
        });
        let res = app
            .clone()
            .oneshot(Request::get("/worklist").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let tag = res.headers()[header::ETAG].to_str().unwrap().to_owned();
        assert_eq!(tag, format!("\"{}-ohif\"", version()));
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("<body data-ohif=\"/ohif/\">"));
        // The page without OHIF is not taken for this one (nor the other way round).
        let (status, _, body) = get("/", Some(&tag)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!String::from_utf8_lossy(&body).contains("data-ohif"));
        let res = app
            .oneshot(Request::get("/ohif/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn assets_have_their_types_and_are_immutable_per_version() {
        let v = version();
        for (file, ty) in [
            ("js/main.js", "text/javascript; charset=utf-8"),
            ("js/pixels.js", "text/javascript; charset=utf-8"),
            ("js/upload.js", "text/javascript; charset=utf-8"),
            ("js/dicomscan.js", "text/javascript; charset=utf-8"),
            ("js/dicomdir.js", "text/javascript; charset=utf-8"),
            ("js/charset.js", "text/javascript; charset=utf-8"),
            ("js/sha256.js", "text/javascript; charset=utf-8"),
            ("app.css", "text/css; charset=utf-8"),
            ("guest.css", "text/css; charset=utf-8"),
            ("pages.css", "text/css; charset=utf-8"),
            ("alerts.css", "text/css; charset=utf-8"),
            ("js/alerts.js", "text/javascript; charset=utf-8"),
            ("favicon.svg", "image/svg+xml"),
            ("manifest.webmanifest", "application/manifest+json"),
        ] {
            let (status, h, body) = get(&format!("/app/{v}/{file}"), None).await;
            assert_eq!(status, StatusCode::OK, "{file}");
            assert_eq!(h[header::CONTENT_TYPE], ty);
            assert!(
                h[header::CACHE_CONTROL]
                    .to_str()
                    .unwrap()
                    .contains("immutable")
            );
            assert_eq!(body, asset_bytes(file).unwrap());
        }
        let (status, h, body) = get("/app/pages.css", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h[header::CONTENT_TYPE], "text/css; charset=utf-8");
        assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        assert_eq!(body, asset_bytes("pages.css").unwrap());
        // Another version, a missing file, a path escaping the folder: 404.
        for path in [
            "/app/0000000000000000/js/main.js".to_owned(),
            format!("/app/{v}/js/nope.js"),
            format!("/app/{v}/../src/lib.rs"),
        ] {
            let (status, h, _) = get(&path, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(h[header::CONTENT_TYPE], "application/json");
        }
    }

    #[test]
    fn app_paths_are_the_shell_and_the_assets_only() {
        for p in [
            "/",
            "/worklist",
            "/viewer",
            "/view/1.2.3",
            "/alerts",
            "/admin",
            "/admin/peers",
            "/login",
            "/setup",
            "/account",
            "/app/x/js/main.js",
        ] {
            assert!(is_app_path(p), "{p}");
        }
        for p in [
            "/view/",
            "/view/1.2/metadata",
            "/dicom-web/studies",
            "/api/v1/search",
            "/worklist/x",
            "/alerts/x",
            "/admin/",
            "/admin/users/x",
            "/account/password",
            "/appx",
        ] {
            assert!(!is_app_path(p), "{p}");
        }
    }

    #[test]
    fn modules_import_only_modules_that_exist() {
        // Relative imports resolve under the same version: each must name an embedded asset.
        // Static imports (`import … from './x.js'`) and dynamic ones (`import('./x.js')`),
        // relative to the importing module's folder (`../` climbs one).
        let resolve = |from: &str, spec: &str| -> String {
            let mut dir: Vec<&str> = from.split('/').collect();
            dir.pop();
            for part in spec.split('/') {
                match part {
                    "." => {}
                    ".." => {
                        dir.pop();
                    }
                    p => dir.push(p),
                }
            }
            dir.join("/")
        };
        let mut dynamic = 0;
        for (path, bytes) in ASSETS.iter().filter(|(p, _)| p.ends_with(".js")) {
            let text = std::str::from_utf8(bytes).unwrap();
            for line in text.lines() {
                let spec = if line.starts_with("import ") {
                    line.split(['\'', '"'])
                        .nth(1)
                        .unwrap_or_else(|| panic!("{path}: {line}"))
                } else if let Some((_, rest)) = line.split_once("import('") {
                    dynamic += 1;
                    rest.split('\'').next().unwrap_or_default()
                } else {
                    continue;
                };
                assert!(
                    spec.starts_with("./") || spec.starts_with("../"),
                    "{path}: {spec}"
                );
                let full = resolve(path, spec);
                assert!(
                    asset_bytes(&full).is_some(),
                    "{path} imports {spec} ({full})"
                );
            }
        }
        assert!(dynamic >= 1, "main.js loads the admin console on demand");
        assert_eq!(resolve("js/admin/ui.js", "../api.js"), "js/api.js");
        assert_eq!(
            resolve("js/main.js", "./admin/console.js"),
            "js/admin/console.js"
        );
    }
}
