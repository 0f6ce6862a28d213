//! The HTTP authentication layer (issue 4): turns a request's credentials into a
//! [`vesalius_auth::Caller`] request extension that every router below reads.
//!
//! - `Authorization: Bearer vsl_…` (API tokens) or the `vesalius_session` cookie (logins); a
//!   cookie-authenticated request that changes state (`POST`, `PUT`, `PATCH`, `DELETE`) must carry
//!   the session's CSRF token in `X-CSRF-Token`, or come from a same-origin page
//!   (`Sec-Fetch-Site: same-origin`, set by browsers and unforgeable by pages).
//! - `Authorization: Bearer vsu_{link}.{secret}`: a guest upload link (STOW-RS into the
//!   organisation's quarantine inbox), admitted only with a `Content-Length` it still accepts.
//! - The `vesalius_link` cookie: a share-link visitor whose link (and passcode) was checked.
//! - `Authorization: Vesalius-Peer <token>`: another Vesalius site (issue 5,
//!   [`vesalius_auth::peer`]). The token must be signed for this request's method and exact
//!   `uri.path_and_query()`; the caller is the peer's `Peer` principal, and a
//!   [`vesalius_auth::peer::PeerRequest`] extension carries the token's `jti` for handlers to
//!   sign their answer with. A refused token is a 401 whose message is the refusal's code
//!   (`wrong-key`, `expired`, …), on every path: there is no fallback to anonymous service.
//! - Invalid, expired or revoked credentials: 401 `{"error": "unauthorized"}`, never a fallback.
//! - No credentials: 401 as well when [`AuthnOptions::required`] (the default); open paths
//!   (`/healthz`, `/readyz`, `/metrics`, login and first-start set-up, and the paths
//!   [`AuthnOptions::app_paths`] names: the web app's shell and assets, which hold no data) are
//!   always served.
//!   `required = false` exists only for test suites that do not yet carry credentials: the
//!   request then acts as the server itself, and the start-up banner says so.
//! - The caller's [`vesalius_store::query::Access`] is resolved here once per request.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use vesalius_auth::{Authenticator, Caller, cookie};

/// Options of the authentication layer.
#[derive(Debug, Clone)]
pub struct AuthnOptions {
    /// Refuse requests without credentials (default true).
    pub required: bool,
    /// Further paths served without credentials: the web app's shell and static assets
    /// (issue 6, `vesalius_web::is_app_path`). Their handlers serve no data; a caller is still
    /// resolved when credentials come along. Default: none.
    pub app_paths: fn(&str) -> bool,
}

impl Default for AuthnOptions {
    fn default() -> Self {
        AuthnOptions {
            required: true,
            app_paths: |_| false,
        }
    }
}

/// State of the layer.
#[derive(Clone)]
pub struct Authn {
    auth: Arc<Authenticator>,
    opts: AuthnOptions,
}

impl Authn {
    /// The layer over `auth`.
    pub fn new(auth: Arc<Authenticator>, opts: AuthnOptions) -> Self {
        Authn { auth, opts }
    }

    /// Whether `path` is served without credentials.
    fn open(&self, path: &str) -> bool {
        open_path(path) || (self.opts.app_paths)(path)
    }
}

/// Paths served to anybody: health, login and set-up, and the capability URLs whose handlers
/// check a link's own secret (share links under `/s/`, guest upload links under `/upload/`).
fn open_path(path: &str) -> bool {
    matches!(
        path,
        "/healthz"
            | "/readyz"
            | "/metrics"
            | "/api/v1/auth/login"
            | "/api/v1/auth/logout"
            | "/api/v1/auth/setup"
            | "/api/v1/auth/methods"
            | "/api/v1/auth/oidc/login"
            | "/api/v1/auth/oidc/callback"
            | "/setup"
            | "/login"
    ) || path.starts_with("/s/")
        || path.starts_with("/upload/")
}

fn unauthorized(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({"error": "unauthorized", "message": message})),
    )
        .into_response()
}

/// The middleware: `axum::middleware::from_fn_with_state(Authn, authenticate)`.
pub async fn authenticate(State(a): State<Authn>, mut req: Request, next: Next) -> Response {
    let source = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let user_agent = header_str(req.headers(), header::USER_AGENT.as_str()).to_owned();
    let origin = vesalius_auth::Origin::new(&source, &user_agent);
    let authorization = header_str(req.headers(), header::AUTHORIZATION.as_str());
    if let Some(token) = vesalius_auth::peer::peer_token(authorization).map(str::to_owned) {
        // The path exactly as the peer signed it: no decoding, no normalisation.
        let path_and_query = req
            .uri()
            .path_and_query()
            .map_or("", |p| p.as_str())
            .to_owned();
        let method = req.method().as_str().to_owned();
        return match peer(&a, &token, &method, &path_and_query, origin).await {
            Ok((caller, peer)) => {
                req.extensions_mut().insert(caller);
                req.extensions_mut().insert(peer);
                next.run(req).await
            }
            Err(r) => r,
        };
    }
    let resolved = match credentials(&a, req.headers(), req.method(), origin).await {
        Ok(Some((p, expiry))) => {
            if let Some(e) = expiry {
                req.extensions_mut()
                    .insert(crate::device_cache::SessionExpiry(e));
            }
            Some(p)
        }
        Ok(None) => None,
        // A stale session cookie or an expired link pass must not lock anybody out of the
        // login pages and the link URLs, which serve themselves without a caller.
        // (A CSRF refusal stands: it is not stale credentials.)
        Err(r) if r.status() == StatusCode::UNAUTHORIZED && a.open(req.uri().path()) => {
            let stale = r.headers().get("clear-site-data").cloned();
            let mut res = next.run(req).await;
            if let Some(v) = stale {
                res.headers_mut().insert("clear-site-data", v);
            }
            return res;
        }
        Err(r) => return r,
    };
    let principal = match resolved {
        Some(p) => p,
        None if a.open(req.uri().path()) => return next.run(req).await,
        None if !a.opts.required => vesalius_auth::Principal::system(),
        None => return unauthorized("credentials required: a bearer token or a session"),
    };
    let access = match a.auth.access(&principal).await {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(error = %e, "resolving access");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "unavailable", "message": "access control unavailable"})),
            )
                .into_response();
        }
    };
    req.extensions_mut().insert(Caller {
        principal,
        access,
        source,
        user_agent,
    });
    next.run(req).await
}

/// A peer site's request (`Authorization: Vesalius-Peer …`): its caller and token, or the
/// response refusing it.
async fn peer(
    a: &Authn,
    token: &str,
    method: &str,
    path_and_query: &str,
    origin: vesalius_auth::Origin<'_>,
) -> Result<(Caller, vesalius_auth::peer::PeerRequest), Response> {
    match a
        .auth
        .authenticate_peer(token, method, path_and_query, origin)
        .await
    {
        Ok(x) => Ok(x),
        Err(vesalius_auth::Error::Peer(e)) => Err((
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, vesalius_auth::peer::AUTH_SCHEME)],
            Json(json!({"error": "unauthorized", "message": e.code()})),
        )
            .into_response()),
        Err(e) => {
            tracing::error!(error = %e, "authenticating a peer");
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "unavailable", "message": "access control unavailable"})),
            )
                .into_response())
        }
    }
}

/// A header's value as text ("" when absent or not text).
pub(crate) fn header_str<'h>(h: &'h HeaderMap, name: &str) -> &'h str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The principal the request's credentials name (with its session's expiry, ms, for a session
/// cookie), `None` without credentials, or the 401 to send.
async fn credentials(
    a: &Authn,
    headers: &HeaderMap,
    method: &Method,
    origin: vesalius_auth::Origin<'_>,
) -> Result<Option<(vesalius_auth::Principal, Option<i64>)>, Response> {
    if let Some(token) = cookie::bearer_token(header_str(headers, header::AUTHORIZATION.as_str())) {
        if let Some((id, secret)) = vesalius_auth::parse_upload_token(token) {
            let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
            return upload_link(a, headers, safe, id, secret, origin)
                .await
                .map(|p| Some((p, None)));
        }
        return match a.auth.from_bearer(token).await {
            Ok(p) => Ok(Some((p, None))),
            Err(e) => Err(unauthorized(&e.to_string())),
        };
    }
    if let Some(secret) = cookie::session_secret(header_str(headers, header::COOKIE.as_str())) {
        let (p, session) = match a.auth.from_session(secret).await {
            Ok(x) => x,
            Err(e) => {
                // Issue 6: a stale session (expired, logged out elsewhere, its user gone) may
                // have left images in the browser's cache (crate::device_cache): emptied.
                let mut r = unauthorized(&e.to_string());
                r.headers_mut().insert(
                    "clear-site-data",
                    HeaderValue::from_static(crate::device_cache::CLEAR_SITE_DATA),
                );
                return Err(r);
            }
        };
        let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        // A browser says where a request comes from in `Sec-Fetch-Site`, which no page can
        // forge: a same-origin form post (the server-rendered pages, which run no script and
        // so cannot set X-CSRF-Token) is not a cross-site forgery.
        let same_origin = header_str(headers, "sec-fetch-site") == "same-origin";
        if !safe
            && !same_origin
            && let Err(e) = a.auth.check_csrf(
                &session,
                headers.get("x-csrf-token").and_then(|v| v.to_str().ok()),
            )
        {
            return Err((
                StatusCode::FORBIDDEN,
                Json(json!({"error": "forbidden", "message": e.to_string()})),
            )
                .into_response());
        }
        return Ok(Some((p, Some(session.expires_ms))));
    }
    if let Some(pass) = cookie::link_pass(header_str(headers, header::COOKIE.as_str())) {
        // A share-link visitor's pass: only reads follow (the policy gives links nothing else).
        return match a.auth.from_share_link_pass(pass).await {
            Ok(p) => Ok(Some((p, None))),
            Err(e) => Err(unauthorized(&e.to_string())),
        };
    }
    Ok(None)
}

/// A guest upload (`Authorization: Bearer vsu_…`): the declared `Content-Length` must fit what
/// the link still accepts, so a too-large upload is refused before its first byte is read.
async fn upload_link(
    a: &Authn,
    headers: &HeaderMap,
    safe: bool,
    id: &str,
    secret: &str,
    origin: vesalius_auth::Origin<'_>,
) -> Result<vesalius_auth::Principal, Response> {
    let declared = header_str(headers, header::CONTENT_LENGTH.as_str())
        .parse::<u64>()
        .ok();
    let Some(len) = declared.or(safe.then_some(0)) else {
        return Err((
            StatusCode::LENGTH_REQUIRED,
            Json(json!({
                "error": "length-required",
                "message": "uploads through a link must declare their Content-Length"
            })),
        )
            .into_response());
    };
    a.auth
        .upload_link_open(id, secret, len, origin)
        .await
        .map_err(crate::session::error)
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::extract::Extension;
    use axum::routing::any;
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    use vesalius_auth::AuthOptions;
    use vesalius_auth::audit_chain::SiteKey;
    use vesalius_auth::peer::{PeerRequest, SiteIdentity};
    use vesalius_store::Registry;
    use vesalius_store::memory_directory::{MemoryAuditLog, MemoryDirectory};
    use vesalius_store::registry::{MemoryRegistry, Peer, RegistryChange};

    use super::*;

    /// A site `clinic` that registered `hub`; the router answers who called and the token's jti.
    async fn setup() -> (Router, SiteIdentity, SiteIdentity) {
        let log = Arc::new(MemoryAuditLog::new());
        let dir = Arc::new(MemoryDirectory::new(log.clone()));
        let registry = Arc::new(MemoryRegistry::new(log.clone()));
        let hub = SiteIdentity::from_site_key("hub", &SiteKey::generate());
        let here = SiteIdentity::from_site_key("clinic", &SiteKey::generate());
        let peer = Peer {
            name: "hub".into(),
            base_url: "https://hub.example.org".into(),
            public_key: hub.public_key(),
            kind: vesalius_store::registry::PeerKind::Vesalius,
            auth: vesalius_store::registry::PeerAuth::None,
            org: "a".into(),
            remote_org: None,
            may_query: true,
            description: String::new(),
            managed: false,
            created_ms: 0,
        };
        registry
            .apply(vec![RegistryChange::PutPeer(peer)], vec![])
            .await
            .unwrap();
        let auth = Authenticator::new(dir, log, AuthOptions::new())
            .with_registry(registry)
            .with_peer_identity(here.clone());
        let authn = Authn::new(Arc::new(auth), AuthnOptions::default());
        let app = Router::new()
            .fallback(any(
                |Extension(c): Extension<Caller>, Extension(p): Extension<PeerRequest>| async move {
                    Json(json!({"actor": c.principal.actor.name, "org": c.org(), "jti": p.jti}))
                },
            ))
            .layer(axum::middleware::from_fn_with_state(authn, authenticate));
        (app, hub, here)
    }

    async fn call(
        app: &Router,
        method: &str,
        uri: &str,
        auth: &str,
    ) -> (StatusCode, serde_json::Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, auth)
            .body(Body::empty())
            .unwrap();
        let r = app.clone().oneshot(req).await.unwrap();
        let status = r.status();
        let b = r.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&b).unwrap())
    }

    #[tokio::test]
    async fn peer_tokens_authenticate_exactly_their_request() {
        let (app, hub, here) = setup().await;
        let uri = "/dicomweb/studies?PatientID=p%201&org=a";
        let token = hub.sign_request(
            &here.public_key(),
            "GET",
            uri,
            None,
            vesalius_auth::now_ms(),
        );
        let scheme = format!("Vesalius-Peer {token}");
        let (status, body) = call(&app, "GET", uri, &scheme).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["actor"], "peer:hub");
        assert_eq!(body["org"], "a");
        assert_eq!(
            body["jti"].as_str(),
            vesalius_auth::peer::token_jti(&token).as_deref()
        );
        // Another query string, another method, another path: refused, with the code.
        for (m, u) in [
            ("GET", "/dicomweb/studies?PatientID=p%201&org=b"),
            ("POST", uri),
            ("GET", "/healthz"),
        ] {
            let (status, body) = call(&app, m, u, &scheme).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{m} {u}");
            assert_eq!(
                body,
                json!({"error": "unauthorized", "message": "wrong-request"})
            );
        }
        let (status, body) = call(&app, "GET", uri, "Vesalius-Peer nonsense").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["message"], "malformed");
        // A token for another site.
        let stray = hub.sign_request(&hub.public_key(), "GET", uri, None, vesalius_auth::now_ms());
        let (status, body) = call(&app, "GET", uri, &format!("Vesalius-Peer {stray}")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["message"], "wrong-audience");
    }
}
