//! The app's service worker (`GET /sw.js`, issue 6: installable as a progressive web app): it
//! keeps the app shell and this version's assets on the device so that the app opens (and says
//! it is offline) without a network, and caches nothing else: no API answer, no DICOMweb answer,
//! no image (images stay in the page's memory only; docs/web.md, "Progressive web app").
//!
//! - Served at the root so that its scope covers every app page (`/worklist`, `/view/…`);
//!   `no-cache`, so a new binary's worker (a new asset version) replaces the old one at the next
//!   visit, and the old version's cache is deleted when it activates.
//! - Navigations to app pages: network first (the server stays the authority: the login
//!   redirect, a new shell); the cached shell only when the network fails.
//! - `/app/{version}/…` of this version: cache first (immutable anyway).
//! - Everything else passes through untouched.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::{ASSETS, version};

const TEMPLATE: &str = include_str!("../assets/sw.js");

/// The worker's script: [`TEMPLATE`] with this version and its asset list.
pub fn script() -> String {
    let assets: Vec<String> = ASSETS
        .iter()
        .map(|(path, _)| format!("\"/app/{}/{}\"", version(), path))
        .collect();
    TEMPLATE
        .replace("{{V}}", version())
        .replace("\"{{ASSETS}}\"", &assets.join(", "))
}

/// `GET /sw.js`.
pub(crate) async fn serve() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        script(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_lists_this_versions_assets_and_caches_no_data() {
        let s = script();
        assert!(s.contains(&format!("const VERSION = '{}';", version())));
        assert!(s.contains(&format!("\"/app/{}/js/main.js\"", version())));
        assert!(!s.contains("{{"));
        // Only the shell routes and the assets are ever put in the cache.
        assert!(!s.contains("/dicom-web") || s.contains("never cached"));
    }
}
