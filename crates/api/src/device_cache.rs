//! Images kept on devices (issue 6): an organisation may allow the browsers of its users to keep
//! the viewer's **images** for a bounded time (`device_image_cache`, off by default); without it
//! every answer stays `Cache-Control: no-store` (docs/security.md, "Security headers").
//!
//! - The setting is stored per organisation in the directory's settings
//!   (`org-device-image-cache:{org}` = the lifetime in hours, 1–[`MAX_HOURS`]; absent = not
//!   allowed), changed by its administrators (`PATCH /api/v1/orgs/{org}`, the console, `vesalius
//!   admin org device-cache`).
//! - [`layer`] marks a 200 answer to an **image** request of a **logged-in session** (rendered
//!   images, thumbnails, frames of a study held here: [`image_target`]) `Cache-Control: private,
//!   max-age=N` and `Vary: Cookie` when the organisation the session acts in **and** every
//!   organisation owning an instance in the request's scope allow it (a study seen through a grant
//!   is kept only when its owner allows it too). N is the smallest of their lifetimes, the
//!   session's remaining lifetime and the remaining lifetime of any grant the study is seen
//!   through; a study opened by **break-glass** is never kept. Metadata (patient data), searches,
//!   the API, studies at peers (`/dicom-web/peers/…`: their owner's setting is not known here),
//!   share links and API tokens are never marked: they stay `no-store`.
//! - Everything kept is deleted with `Clear-Site-Data: "cache"` (W3C Clear Site Data) on logout,
//!   on login, on an organisation switch and on any answer refusing a stale session cookie
//!   ([`CLEAR_SITE_DATA`]); `Vary: Cookie` keeps one session's entries from ever answering
//!   another's requests.
//!
//! The browser's own HTTP cache keeps the images (not the service worker): it honours the
//! lifetime by itself, the server decides per answer, and `Clear-Site-Data` empties it without
//! the page's help (docs/web.md, "Progressive web app").

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use vesalius_auth::{Authenticator, Caller, PrincipalKind};
use vesalius_store::Ingestor;
use vesalius_store::directory::Directory;
use vesalius_store::query::Scope;

/// The directory setting holding an organisation's lifetime (hours), after this prefix its id.
pub const SETTING_PREFIX: &str = "org-device-image-cache:";
/// The lifetime when an administrator allows it without saying how long.
pub const DEFAULT_HOURS: u32 = 12;
/// The longest lifetime an organisation may allow (a week).
pub const MAX_HOURS: u32 = 168;
/// The header value that empties the browser's HTTP cache for this site.
pub const CLEAR_SITE_DATA: &str = "\"cache\"";

/// An organisation's setting: `Some(hours)` when it allows images to be kept.
pub async fn hours(dir: &dyn Directory, org: &str) -> vesalius_store::Result<Option<u32>> {
    Ok(dir
        .setting(&format!("{SETTING_PREFIX}{org}"))
        .await?
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|h| (1..=MAX_HOURS).contains(h)))
}

/// The session's absolute expiry (ms), put into a request's extensions by the authentication
/// layer for requests authenticated by a session cookie.
#[derive(Debug, Clone, Copy)]
pub struct SessionExpiry(pub i64);

/// The scope of an image request of the viewer under `/dicom-web` (study, series, instance), or
/// `None` for anything else (metadata, searches, whole objects, bulk data, peers).
pub fn image_target(method: &Method, path: &str) -> Option<Scope> {
    if method != Method::GET {
        return None;
    }
    let rest = path.strip_prefix("/dicom-web/studies/")?;
    let seg: Vec<&str> = rest.split('/').collect();
    if seg.iter().any(|s| s.is_empty()) {
        return None;
    }
    let scope = |n: usize| Scope {
        access: None,
        study: Some(seg[0].to_owned()),
        series: (n > 1).then(|| seg[2].to_owned()),
        instance: (n > 2).then(|| seg[4].to_owned()),
    };
    match seg.as_slice() {
        [_, "thumbnail"] => Some(scope(1)),
        [_, "series", _, "thumbnail" | "frames"] => Some(scope(2)),
        [_, "series", _, "instances", _, "rendered" | "thumbnail"]
        | [_, "series", _, "instances", _, "frames", _]
        | [
            _,
            "series",
            _,
            "instances",
            _,
            "frames",
            _,
            "rendered" | "thumbnail",
        ] => Some(scope(3)),
        _ => None,
    }
}

/// What [`layer`] needs.
#[derive(Clone)]
pub struct DeviceCache {
    /// The directory (settings, grants).
    pub auth: Arc<Authenticator>,
    /// The index (who owns the instances of a request).
    pub ingestor: Arc<Ingestor>,
}

/// The middleware (inside the authentication layer): see the module documentation.
pub async fn layer(State(dc): State<DeviceCache>, req: Request, next: Next) -> Response {
    let target = image_target(req.method(), req.uri().path());
    let caller = req.extensions().get::<Caller>().cloned();
    let expiry = req.extensions().get::<SessionExpiry>().copied();
    let mut res = next.run(req).await;
    let (Some(scope), Some(caller), Some(SessionExpiry(expires_ms))) = (target, caller, expiry)
    else {
        return res;
    };
    if res.status() != StatusCode::OK || res.headers().contains_key(header::CACHE_CONTROL) {
        return res;
    }
    match dc.lifetime(&caller, scope, expires_ms).await {
        Ok(Some(secs)) => {
            let h = res.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&format!("private, max-age={secs}")) {
                h.insert(header::CACHE_CONTROL, v);
                h.append(header::VARY, HeaderValue::from_static("Cookie"));
            }
        }
        Ok(None) => {}
        // The safe answer: kept nowhere (the security headers' `no-store`).
        Err(e) => tracing::warn!(error = %e, "device image cache: deciding"),
    }
    res
}

impl DeviceCache {
    /// How long (seconds) the caller's browser may keep the answer of `scope`, or `None`.
    async fn lifetime(
        &self,
        c: &Caller,
        mut scope: Scope,
        session_expires_ms: i64,
    ) -> vesalius_store::Result<Option<u64>> {
        if !matches!(c.principal.kind, PrincipalKind::Session { .. }) || c.access.is_none() {
            return Ok(None);
        }
        let dir = self.auth.directory();
        let Some(own) = hours(dir.as_ref(), c.org()).await? else {
            return Ok(None);
        };
        let now = self.auth.now_ms();
        let mut until_ms = session_expires_ms.min(now.saturating_add(i64::from(own) * 3_600_000));
        let access = c.access.clone().unwrap_or_default();
        scope.access = Some(access.clone());
        let mut owners: Vec<String> = self
            .ingestor
            .index()
            .instances(&scope)
            .await?
            .into_iter()
            .map(|i| i.org)
            .collect();
        owners.sort();
        owners.dedup();
        if owners.is_empty() {
            return Ok(None);
        }
        let mut grants = None;
        for owner in &owners {
            if owner != c.org() {
                let Some(h) = hours(dir.as_ref(), owner).await? else {
                    return Ok(None);
                };
                until_ms = until_ms.min(now.saturating_add(i64::from(h) * 3_600_000));
            }
            if access.orgs.iter().any(|o| o == owner) {
                continue;
            }
            // Seen through a grant: never after it ends, never by break-glass.
            if grants.is_none() {
                grants = Some(
                    self.auth
                        .grants(&c.principal)
                        .await
                        .map_err(|e| vesalius_store::Error::Index(e.to_string()))?,
                );
            }
            for g in grants.iter().flatten() {
                if g.owner_org != *owner || g.revoked {
                    continue;
                }
                if g.break_glass {
                    return Ok(None);
                }
                if let Some(end) = g.expires_ms {
                    until_ms = until_ms.min(end);
                }
            }
        }
        let secs = (until_ms - now) / 1000;
        Ok(u64::try_from(secs).ok().filter(|s| *s > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_targets() {
        let get = |p: &str| image_target(&Method::GET, p);
        let s = "/dicom-web/studies/1.2";
        assert_eq!(
            get(&format!("{s}/thumbnail")).unwrap().study.as_deref(),
            Some("1.2")
        );
        let t = get(&format!("{s}/series/3/frames")).unwrap();
        assert_eq!((t.series.as_deref(), t.instance), (Some("3"), None));
        for tail in [
            "rendered",
            "thumbnail",
            "frames/1",
            "frames/1,2",
            "frames/1/rendered",
            "frames/1/thumbnail",
        ] {
            let t = get(&format!("{s}/series/3/instances/4/{tail}")).unwrap();
            assert_eq!(t.instance.as_deref(), Some("4"), "{tail}");
        }
        for no in [
            "/dicom-web/studies".to_owned(),
            format!("{s}/metadata"),
            format!("{s}/series/3/metadata"),
            format!("{s}/series/3/instances/4"),
            format!("{s}/series/3/instances/4/metadata"),
            format!("{s}/series/3/instances/4/bulkdata/x"),
            format!("{s}//thumbnail"),
            "/dicom-web/peers/p/studies/1/thumbnail".to_owned(),
            "/api/v1/studies/1.2/thumbnail".to_owned(),
        ] {
            assert!(get(&no).is_none(), "{no}");
        }
        assert!(image_target(&Method::POST, &format!("{s}/thumbnail")).is_none());
    }
}
